//! `decdec`: run aggressively quantized LLMs with dynamic error compensation.

mod bench_cpu;
mod commands;

use clap::Parser;

fn main() {
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
