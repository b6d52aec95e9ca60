//! `decdec serve` without the rest of the CLI: `cargo run --release -p decdec-server --example serve -- --model M`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "decdec-serve",
    about = "OpenAI-compatible server for a decdec model"
)]
struct Cli {
    #[command(flatten)]
    serve: decdec_server::ServeArgs,
}

fn main() {
    if let Err(e) = decdec_server::run_serve(Cli::parse().serve) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
