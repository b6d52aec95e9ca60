//! decdec-model: loading models (Hugging Face safetensors directories, GGUF files, decdec quantized
//! directories), the tokenizer, the supported families, the CPU reference forward pass, and the
//! generation and perplexity drivers that run over any [`engine::Engine`].

pub mod config;
pub mod engine;
pub mod generate;
pub mod linear;
pub mod loader;
pub mod model;
pub mod options;
pub mod output;
pub mod ppl;
pub mod progress;
pub mod quantized;
pub mod sampling;
pub mod tensors;
pub mod tokenizer;

pub use config::{Family, ModelConfig};
pub use engine::{CpuEngine, Engine};
pub use loader::{open, LoadOptions, LoadedModel};
pub use model::{Logits, Model};
pub use tokenizer::{ChatMessage, Tokenizer};
