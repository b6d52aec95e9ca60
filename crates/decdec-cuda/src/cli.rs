//! Command-line front ends of the CUDA backend; the `decdec` binary wires these in:
//! `decdec bench kernels` -> [`run_bench_kernels`], `decdec bench decode` -> [`run_bench_decode`],
//! `decdec gpu-test` -> [`run_gpu_test`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::bench;
use crate::gpu::{Dtype, Gpu};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F16,
    Bf16,
}

impl From<DtypeArg> for Dtype {
    fn from(d: DtypeArg) -> Dtype {
        match d {
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::Bf16 => Dtype::Bf16,
        }
    }
}

/// `decdec bench kernels`
#[derive(Args, Debug, Clone)]
pub struct BenchKernelsArgs {
    /// Model names (llama3-8b, phi3-medium, llama2-7b) or KxN shapes, comma separated.
    #[arg(long, default_value = "llama3-8b")]
    pub shapes: String,
    /// Base weight bit widths.
    #[arg(long, value_delimiter = ',', default_value = "3,4")]
    pub bits: Vec<u32>,
    /// Salient channels per 1024 for the compensation rows (0 = base only).
    #[arg(long = "k-chunk", value_delimiter = ',', default_value = "0,2,4,8,16,32")]
    pub k_chunk: Vec<usize>,
    /// DEC block counts swept for the fused design.
    #[arg(long = "n-dec", value_delimiter = ',', default_value = "8,16,32,64,132")]
    pub n_dec: Vec<usize>,
    /// Activation dtype.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: DtypeArg,
    /// Graph replays per measurement (median taken).
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Skip the LUT kernels.
    #[arg(long)]
    pub no_lut: bool,
    /// Skip the original-structure (cooperative) DEC variant.
    #[arg(long)]
    pub no_coop: bool,
    /// Also time every split-K factor of the uniform base GEMV.
    #[arg(long)]
    pub split_sweep: bool,
    /// Write the full results (sweeps included) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run_bench_kernels(a: &BenchKernelsArgs) -> Result<()> {
    if a.bits.iter().any(|&b| b != 3 && b != 4) {
        bail!("--bits: the GPU kernels support 3 and 4");
    }
    if a.k_chunk.iter().any(|&k| k > 1024) {
        bail!("--k-chunk values must be <= 1024");
    }
    if a.n_dec.iter().any(|&n| n == 0) {
        bail!("--n-dec values must be positive");
    }
    let gpu = Gpu::new()?;
    let opts = bench::Opts {
        shapes: bench::parse_shapes(&a.shapes)?,
        bits: a.bits.clone(),
        k_chunks: a.k_chunk.clone(),
        n_dec: a.n_dec.clone(),
        lut: !a.no_lut,
        coop: !a.no_coop,
        reps: a.reps.max(3),
        dtype: a.dtype.into(),
        split_sweep: a.split_sweep,
    };
    let rep = bench::run(&gpu, &opts)?;
    println!("\n{}", bench::print_table(&rep));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rep)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// `decdec gpu-test`
#[derive(Args, Debug, Clone)]
pub struct GpuTestArgs {
    /// Seed of the random inputs (default: fresh every run, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_gpu_test(a: &GpuTestArgs) -> Result<()> {
    let gpu = Gpu::new()?;
    let rep = crate::gputest::run_all(&gpu, a.seed)?;
    let text = rep.to_text();
    println!("{} checks, {} failed", rep.checks.len(), rep.failures());
    if let Some(p) = &a.out {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if rep.failures() > 0 {
        bail!("{} GPU checks failed", rep.failures());
    }
    Ok(())
}
