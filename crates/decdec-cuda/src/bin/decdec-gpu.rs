//! Stand-alone GPU tool (the same front ends the `decdec` binary exposes), so the CUDA backend can be
//! benchmarked and tested on a GPU machine with one small binary.

use clap::{Parser, Subcommand};
use decdec_cuda::cli;

#[derive(Parser)]
#[command(
    name = "decdec-gpu",
    about = "decdec CUDA backend: kernel tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every kernel against its CPU twin on fresh random inputs.
    GpuTest(cli::GpuTestArgs),
    /// Kernel timings (CUDA-graph replays, weights rotated beyond L2).
    BenchKernels(cli::BenchKernelsArgs),
    /// Decode tokens/s of a model or a synthetic model generated on the GPU.
    BenchDecode(cli::BenchDecodeArgs),
    /// Compile a kernel source with NVRTC and write the cubin (for disassembly), no GPU needed.
    DumpCubin {
        /// gemv or ops
        #[arg(long, default_value = "gemv")]
        source: String,
        #[arg(long, default_value = "sm_90")]
        arch: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::GpuTest(a) => cli::run_gpu_test(&a),
        Cmd::BenchKernels(a) => cli::run_bench_kernels(&a),
        Cmd::BenchDecode(a) => cli::run_bench_decode(&a),
        Cmd::DumpCubin { source, arch, out } => {
            let cubin = decdec_cuda::compile::compile_cubin(&source, &arch)?;
            std::fs::write(&out, cubin)?;
            Ok(())
        }
    }
}
