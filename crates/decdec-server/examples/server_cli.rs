//! `decdec serve` / `decdec chat` without the rest of the CLI, for trying the server crate alone:
//! `cargo run --release -p decdec-server --example server_cli -- serve --model models/stories260K`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "decdec",
    about = "OpenAI-compatible server and terminal chat for decdec models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// OpenAI-compatible HTTP server.
    Serve(decdec_server::ServeArgs),
    /// Interactive terminal chat.
    Chat(decdec_server::ChatArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Serve(a) => decdec_server::run_serve(a),
        Command::Chat(a) => decdec_server::run_chat(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
