//! decdec-server: an OpenAI-compatible HTTP server (`decdec serve`) and a terminal chat
//! (`decdec chat`) over any [`decdec_model::Engine`]. One model instance runs on a dedicated thread
//! behind a bounded FIFO queue; the HTTP layer only validates, tokenizes, queues and relays.

pub mod api;
pub mod chat;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod server;
pub mod worker;

pub use cli::{run_chat, run_serve, serve_blocking, ChatArgs, ServeArgs};
pub use error::ApiError;
pub use server::{start, ServerHandle, ServerOptions};
