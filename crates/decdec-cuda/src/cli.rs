//! Command-line front ends of the CUDA backend; the `decdec` binary wires these in:
//! `decdec bench kernels` -> [`run_bench_kernels`], `decdec bench decode` -> [`run_bench_decode`],
//! `decdec bench attention` -> [`run_bench_attention`], `decdec gpu-test` -> [`run_gpu_test`].

use std::path::PathBuf;

use anyhow::{bail, Result};
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
    #[arg(
        long = "k-chunk",
        value_delimiter = ',',
        default_value = "0,2,4,8,16,32"
    )]
    pub k_chunk: Vec<usize>,
    /// DEC block counts swept for the fused design.
    #[arg(
        long = "n-dec",
        value_delimiter = ',',
        default_value = "8,16,32,64,132"
    )]
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

/// `decdec bench attention`
#[derive(Args, Debug, Clone)]
pub struct BenchAttentionArgs {
    /// Attention shape: a model name (llama3-8b, phi3-medium, llama2-7b) or HEADS,KV_HEADS,HEAD_DIM.
    #[arg(long, default_value = "llama3-8b")]
    pub shape: String,
    /// Context lengths (positions attended, this step's included).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,512,1024,2048,4096,8192"
    )]
    pub lengths: Vec<usize>,
    /// Activation dtype.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: DtypeArg,
    /// Graph replays per measurement (median taken).
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run_bench_attention(a: &BenchAttentionArgs) -> Result<()> {
    let shape = bench::attn::parse_attn_shape(&a.shape)?;
    if a.lengths.is_empty() || a.lengths.contains(&0) {
        bail!("--lengths: positive context lengths");
    }
    let gpu = Gpu::new()?;
    let copy = bench::copy_bandwidth(&gpu)?;
    println!(
        "device: {} ({} SMs, L2 {} MB); copy bandwidth {copy:.0} GB/s",
        gpu.name,
        gpu.sms,
        gpu.l2_bytes >> 20
    );
    let rows = bench::attn::run(&gpu, a.dtype.into(), shape, &a.lengths, a.reps.max(3), copy)?;
    if let Some(p) = &a.json {
        decdec_model::output::write_atomic(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}

pub fn run_bench_kernels(a: &BenchKernelsArgs) -> Result<()> {
    if a.bits.iter().any(|&b| b != 3 && b != 4) {
        bail!("--bits: the GPU kernels support 3 and 4");
    }
    if a.k_chunk.iter().any(|&k| k > 1024) {
        bail!("--k-chunk values must be <= 1024");
    }
    if a.n_dec.contains(&0) {
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
        decdec_model::output::write_atomic(p, serde_json::to_string_pretty(&rep)?.as_bytes())?;
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
    /// Also check GPU vs CPU perplexity on this model directory (dense, RTN 3-bit, 3-bit + DEC).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Text for the perplexity parity check.
    #[arg(long)]
    pub text: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    #[arg(long, default_value_t = 4)]
    pub chunks: usize,
    /// k_chunk of the compensated parity run (a quarter of it is checked too).
    #[arg(long = "k-chunk", default_value_t = 64)]
    pub k_chunk: usize,
    /// Largest relative perplexity difference GPU vs CPU that passes with f16 activations.
    #[arg(long, default_value_t = 1e-3)]
    pub ppl_tol: f64,
    /// The same for bf16 activations (8-bit mantissas: the GPU's linear inputs are coarser).
    #[arg(long, default_value_t = 5e-3)]
    pub ppl_tol_bf16: f64,
    /// bf16 with compensation: the bf16 drift of the hidden state moves channels across bucket
    /// floors, and each such flip adds or drops a whole residual row (measured on stories260K at
    /// k_chunk 64: 1.2e-3 to 6.2e-3 over the batched and token-by-token paths).
    #[arg(long, default_value_t = 1e-2)]
    pub ppl_tol_bf16_dec: f64,
}

pub fn run_gpu_test(a: &GpuTestArgs) -> Result<()> {
    let mut rep = {
        let gpu = Gpu::new()?;
        crate::gputest::run_all(&gpu, a.seed)?
    };
    // the decode step's attention tiers end to end (a synthetic model: head_dim 64)
    for dt in [Dtype::F16, Dtype::Bf16] {
        crate::gputest::attn::engine_tier_checks(dt, &mut rep)?;
        crate::gputest::timeline::timeline_checks(dt, &mut rep)?;
    }
    if let Some(dir) = &a.model {
        let text_path = a
            .text
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--model needs --text"))?;
        let text = decdec_model::ppl::read_text(text_path)?;
        for dt in [Dtype::F16, Dtype::Bf16] {
            for row in crate::parity::run(dir, &text, a.ctx, a.chunks, a.k_chunk, dt)? {
                let tol = if row.variant.contains("rerun") {
                    0.0
                } else if dt == Dtype::Bf16 && row.variant.contains("DEC") {
                    a.ppl_tol_bf16_dec
                } else if dt == Dtype::Bf16 {
                    a.ppl_tol_bf16
                } else {
                    a.ppl_tol
                };
                rep.add_check(
                    format!(
                        "ppl parity {} ({}) cpu {:.4} gpu {:.4}",
                        row.variant,
                        dt.suffix(),
                        row.cpu_ppl,
                        row.gpu_ppl
                    ),
                    row.rel_diff,
                    tol,
                );
            }
        }
    }
    let text = rep.to_text();
    println!("{} checks, {} failed", rep.checks.len(), rep.failures());
    if let Some(p) = &a.out {
        decdec_model::output::write_atomic(p, text.as_bytes())?;
    }
    if rep.failures() > 0 {
        bail!("{} GPU checks failed", rep.failures());
    }
    Ok(())
}

/// `decdec bench decode`
#[derive(Args, Debug, Clone)]
pub struct BenchDecodeArgs {
    /// A model directory (HF or quantized) or `synthetic:NAME` (llama3-8b, llama2-7b, phi3-medium,
    /// tiny), generated on the GPU.
    #[arg(long)]
    pub model: String,
    /// Weight bits of a synthetic model: 3, 4 (uniform g128 + residuals) or 16 (dense).
    #[arg(long, default_value_t = 3)]
    pub bits: u32,
    /// k_chunk values to measure (same on every projection group; 0 = no compensation).
    #[arg(long = "k-chunk", value_delimiter = ',', default_value = "0,4,8")]
    pub k_chunk: Vec<usize>,
    /// Tokens decoded per measurement.
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Prompt tokens of the batched-prefill measurement (0 = skip it).
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Context depths: each decode measurement starts after a prefill of this many tokens
    /// (tokens/s at a long context, where attention reads the whole KV cache every step).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub depth: Vec<usize>,
    /// Tokens per batched prefill chunk (<= 1: the prompt runs token by token).
    #[arg(long = "prefill-chunk", default_value_t = 1024)]
    pub prefill_chunk: usize,
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: DtypeArg,
    /// DEC blocks per compensated GEMV.
    #[arg(long = "n-dec", default_value_t = 64)]
    pub n_dec: usize,
    /// Projection groups compensated at k_chunk > 0 (qkv, o, gu, d): per-group cost attribution.
    #[arg(
        long = "dec-groups",
        value_delimiter = ',',
        default_value = "qkv,o,gu,d"
    )]
    pub dec_groups: Vec<String>,
    /// Quantize the output projection to 8, 4 or 3 bits (uniform g128; a synthetic head is random,
    /// a real model's is quantized at load time); 16: full precision. Default: f16 head (a
    /// quantized directory's manifest may ask for another).
    #[arg(long, value_parser = decdec_model::options::parse_head_bits)]
    pub head_bits: Option<u32>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Build the kernels with the step-timeline stamps and, after each measurement, record
    /// `--timeline-steps` steps block by block: prints where a step's time goes per kind of launch
    /// and one layer launch by launch, and writes every launch's times here as JSON. The
    /// tokens/s of such a run are those of the instrumented kernels.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Steps recorded per timeline.
    #[arg(long = "timeline-steps", default_value_t = 32)]
    pub timeline_steps: usize,
    /// With `--timeline`: also draw each recording's middle layer, launch by launch, as an SVG
    /// (one panel per k_chunk and depth).
    #[arg(long = "timeline-svg", requires = "timeline")]
    pub timeline_svg: Option<PathBuf>,
}

/// One `--timeline` recording, with the measurement it follows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineRow {
    pub k_chunk: usize,
    pub depth: usize,
    /// tokens/s of the timed run just before, with the instrumented kernels
    pub tokens_per_s_instrumented: f64,
    pub timeline: crate::timeline::Timeline,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeRow {
    pub model: String,
    pub bits: u32,
    /// bits of the quantized head (`None`: f16)
    pub head_bits: Option<u32>,
    pub k_chunk: usize,
    /// tokens in the KV cache before the measured decode
    pub depth: usize,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub ms_per_token: f64,
    pub weight_gbps: f64,
    pub residual_kb_per_token: f64,
    pub slowdown_vs_no_dec: Option<f64>,
    /// prompt tokens per second of the batched prefill (`--prompt` tokens, logits of the last)
    pub prefill_tokens_per_s: Option<f64>,
    /// the decode attention kernels of the measured positions (`CudaEngine::attention_kernels`)
    pub attention: String,
}

/// `n` token ids spread over the vocabulary: the prompts and contexts of `bench decode`.
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

pub fn run_bench_decode(a: &BenchDecodeArgs) -> Result<()> {
    if let Some(g) = a
        .dec_groups
        .iter()
        .find(|g| !["qkv", "o", "gu", "d"].contains(&g.as_str()))
    {
        bail!("--dec-groups: unknown group '{g}' (qkv, o, gu, d)");
    }
    use crate::engine::{CudaEngine, CudaOptions};
    use decdec_model::Engine;
    if a.tokens == 0 {
        bail!("--tokens must be positive");
    }
    let max_k = a.k_chunk.iter().copied().max().unwrap_or(0);
    if max_k > 1024 {
        bail!("--k-chunk values must be <= 1024");
    }
    let max_depth = a.depth.iter().copied().max().unwrap_or(0);
    if a.timeline.is_some() {
        if a.timeline_steps == 0 {
            bail!("--timeline-steps must be positive");
        }
        // before the first Gpu: the kernels are compiled (or taken from the cache) with the stamps
        crate::compile::set_timeline(true);
        println!("timeline build: the kernels carry the timeline stamps; the tokens/s below are the instrumented kernels'");
    }
    let opts = CudaOptions {
        dtype: a.dtype.into(),
        max_seq: (a.tokens.max(a.prompt).max(a.timeline_steps + 1) + max_depth + 40)
            .next_power_of_two()
            .max(256),
        n_dec: a.n_dec,
        prefill_chunk: a.prefill_chunk,
        ..CudaOptions::default()
    };
    let mut engine = if let Some(name) = a.model.strip_prefix("synthetic:") {
        if ![3, 4, 16].contains(&a.bits) {
            bail!("--bits must be 3, 4 or 16");
        }
        // residuals are generated for the largest k_chunk asked for (k_chunk = 0 runs skip them)
        let head_bits = decdec_model::options::head_quant_bits(a.head_bits);
        CudaEngine::synthetic(name, a.bits, [max_k; 4], head_bits, opts)?
    } else {
        let mut loaded = decdec_model::open(std::path::Path::new(&a.model), &Default::default())?;
        loaded.apply_head_bits(a.head_bits)?;
        CudaEngine::from_model(&loaded.model, opts)?
    };
    println!(
        "device: {}; model {} ({} bits, head {}), {} weight MB per token",
        engine.gpu.name,
        a.model,
        a.bits,
        engine
            .head_bits()
            .map_or("f16".to_string(), |b| format!("{b}-bit")),
        engine.weight_bytes_per_step() >> 20
    );
    let mut rows: Vec<DecodeRow> = Vec::new();
    let mut timelines: Vec<TimelineRow> = Vec::new();
    let mut base_tps = std::collections::HashMap::new();
    for &k in &a.k_chunk {
        let on = |g: &str| {
            if a.dec_groups.iter().any(|x| x == g) {
                k
            } else {
                0
            }
        };
        engine.set_k_chunks([on("qkv"), on("o"), on("gu"), on("d")]);
        engine.set_dec(k > 0);
        // prefill: a warm-up (buffers, cuBLAS) and the median of 3 timed runs from position 0
        let prefill_tps = if a.prompt > 0 {
            let prompt = bench_tokens(a.prompt, engine.dims().vocab);
            let mut times = Vec::new();
            for rep in 0..4 {
                engine.truncate(0);
                let t0 = std::time::Instant::now();
                engine.forward(&prompt, decdec_model::model::Logits::Last)?;
                if rep > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            Some(a.prompt as f64 / crate::gpu::median(&times))
        } else {
            None
        };
        // warm-up (graph capture, clocks), then per depth: the context prefilled (not timed)
        // and the measured decode after it
        engine.truncate(0);
        engine.greedy_steps(1, 16.min(a.tokens))?;
        engine.gpu.check()?;
        for &depth in &a.depth {
            engine.truncate(0);
            if depth > 0 {
                let context = bench_tokens(depth, engine.dims().vocab);
                engine.forward(&context, decdec_model::model::Logits::Last)?;
                // capture this context's step graph outside the timed run
                engine.greedy_steps(1, 8)?;
            }
            engine.gpu.check()?;
            let t0 = std::time::Instant::now();
            engine.greedy_steps(1, a.tokens)?;
            engine.gpu.check()?;
            let secs = t0.elapsed().as_secs_f64();
            let tps = a.tokens as f64 / secs;
            if k == 0 {
                base_tps.insert(depth, tps);
            }
            let row = DecodeRow {
                model: a.model.clone(),
                bits: a.bits,
                head_bits: engine.head_bits(),
                k_chunk: k,
                depth,
                tokens: a.tokens,
                tokens_per_s: tps,
                ms_per_token: 1000.0 / tps,
                weight_gbps: engine.weight_bytes_per_step() as f64 * tps / 1e9,
                residual_kb_per_token: engine.residual_bytes_per_step() as f64 / 1024.0,
                slowdown_vs_no_dec: base_tps.get(&depth).map(|b| b / tps),
                prefill_tokens_per_s: prefill_tps,
                attention: engine.attention_kernels(depth, depth + a.tokens),
            };
            println!(
                "k_chunk {:>3}{}: {:>8.1} tokens/s  {:>7.3} ms/token  {:>6.0} GB/s weights  {:>7.0} KB residual/token{}{}  attention {}",
                k,
                if depth > 0 {
                    format!(" depth {depth:>6}")
                } else {
                    String::new()
                },
                row.tokens_per_s,
                row.ms_per_token,
                row.weight_gbps,
                row.residual_kb_per_token,
                row.slowdown_vs_no_dec.map(|s| format!("  x{s:.3} vs no DEC")).unwrap_or_default(),
                row.prefill_tokens_per_s
                    .map(|p| format!("  prefill {p:.0} tokens/s ({} prompt tokens)", a.prompt))
                    .unwrap_or_default(),
                row.attention
            );
            if a.timeline.is_some() {
                // the same positions again, block by block
                engine.truncate(depth);
                let tl = engine.timeline_steps(1, a.timeline_steps)?;
                println!("{}", tl.render());
                timelines.push(TimelineRow {
                    k_chunk: k,
                    depth,
                    tokens_per_s_instrumented: tps,
                    timeline: tl,
                });
            }
            rows.push(row);
        }
    }
    if let Some(p) = &a.timeline {
        decdec_model::output::write_atomic(
            p,
            serde_json::to_string_pretty(&timelines)?.as_bytes(),
        )?;
    }
    if let Some(p) = &a.timeline_svg {
        let panels: Vec<(String, &crate::timeline::Timeline)> = timelines
            .iter()
            .map(|t| {
                (
                    format!(
                        "{} {}-bit, k_chunk {}, depth {}: {:.0} us per step (instrumented)",
                        a.model, a.bits, t.k_chunk, t.depth, t.timeline.step_us
                    ),
                    &t.timeline,
                )
            })
            .collect();
        let svg = crate::timeline::render_svg(&panels)?;
        decdec_model::output::write_atomic(p, svg.as_bytes())?;
    }
    if let Some(p) = &a.json {
        decdec_model::output::write_atomic(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}
