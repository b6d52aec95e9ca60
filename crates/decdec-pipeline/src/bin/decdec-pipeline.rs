//! Stand-alone runner of the pipeline commands (the `decdec` binary wires the same entry points).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "decdec-pipeline",
    about = "decdec quantize / quality / inspect (pipeline crate runner)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Calibrate, quantize, compute residuals and thresholds; write one directory.
    Quantize(decdec_pipeline::cli::QuantizeArgs),
    /// Quality sweep behind docs/quality.md.
    Quality(decdec_pipeline::cli::QualityArgs),
    /// JSON summary of a quantized directory.
    Inspect { dir: PathBuf },
}

fn main() {
    let r = match Cli::parse().command {
        Cmd::Quantize(a) => decdec_pipeline::cli::run_quantize(a),
        Cmd::Quality(a) => decdec_pipeline::cli::run_quality(a),
        Cmd::Inspect { dir } => decdec_pipeline::artifact::inspect(&dir)
            .map(|v| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
