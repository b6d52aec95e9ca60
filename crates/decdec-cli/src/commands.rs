//! Subcommands of the `decdec` binary. Each one is a thin layer over the library crates.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use decdec_model::generate::{generate, GenerateParams};
use decdec_model::options::ModelArgs;
use decdec_model::sampling::SamplingParams;
use decdec_model::{ChatMessage, LoadOptions};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "decdec",
    version,
    about = "Quantized LLMs with dynamic error compensation (DecDEC)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Perplexity of a text file (non-overlapping chunks of --ctx tokens).
    Ppl(PplArgs),
    /// Show a model's architecture, dimensions, parameters and tensors.
    Inspect(InspectArgs),
    /// Calibrate, quantize (rtn/awq/lut), compute DEC residuals and thresholds; write one directory.
    Quantize(decdec_pipeline::cli::QuantizeArgs),
    /// Quality sweep behind docs/quality.md (run | report).
    Quality(decdec_pipeline::cli::QualityArgs),
    /// OpenAI-compatible HTTP server (chat and text completions, streaming, /metrics).
    Serve(decdec_server::ServeArgs),
    /// Interactive terminal chat with history (/reset, /exit).
    Chat(decdec_server::ChatArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Every GPU kernel against its CPU twin on fresh random inputs (and GPU vs CPU perplexity).
    GpuTest(decdec_cuda::cli::GpuTestArgs),
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// CPU decode tokens/s against the bound implied by weight bytes / measured memory bandwidth.
    Cpu(BenchCpuArgs),
    /// GPU kernels: base GEMV and GEMV + compensation per shape (CUDA-graph replays, weights rotated
    /// beyond L2), copy and zero-copy PCIe bandwidth.
    Kernels(decdec_cuda::cli::BenchKernelsArgs),
    /// GPU decode tokens/s with and without compensation (a model, or synthetic:llama3-8b built on the GPU).
    Decode(decdec_cuda::cli::BenchDecodeArgs),
    /// GPU decode-attention kernels per context length (CUDA-graph replays, KV caches rotated
    /// beyond L2): microseconds, GB/s of K/V read, % of the copy bandwidth.
    Attention(decdec_cuda::cli::BenchAttentionArgs),
}

#[derive(Args)]
pub struct BenchCpuArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode steps to time.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, short = 'p')]
    pub prompt: String,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wrap the prompt in the model's chat template (as one user message).
    #[arg(long)]
    pub chat: bool,
}

#[derive(Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(long)]
    pub text: PathBuf,
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Model path.
    pub model: PathBuf,
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    decdec_model::engine::register_cuda_backend(decdec_cuda::engine::create_engine);
    match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Ppl(a) => cmd_ppl(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Quantize(a) => decdec_pipeline::cli::run_quantize(a),
        Command::Quality(a) => decdec_pipeline::cli::run_quality(a),
        Command::Serve(a) => decdec_server::run_serve(a),
        Command::Chat(a) => decdec_server::run_chat(a),
        Command::Bench(BenchCommand::Cpu(a)) => cmd_bench_cpu(a),
        Command::Bench(BenchCommand::Kernels(a)) => decdec_cuda::cli::run_bench_kernels(&a),
        Command::Bench(BenchCommand::Decode(a)) => decdec_cuda::cli::run_bench_decode(&a),
        Command::Bench(BenchCommand::Attention(a)) => decdec_cuda::cli::run_bench_attention(&a),
        Command::GpuTest(a) => decdec_cuda::cli::run_gpu_test(&a),
    }
}

fn open_model(a: &ModelArgs) -> Result<decdec_model::LoadedModel> {
    a.open()
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        bail!(
            "invalid value for --temperature: {} (must be a number >= 0)",
            a.temperature
        );
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("invalid value for --top-p: {} (must be in (0, 1])", a.top_p);
    }
    if a.max_tokens == 0 {
        bail!("invalid value for --max-tokens: 0 (must be at least 1)");
    }
    let lm = open_model(&a.model)?;
    let prompt_text = if a.chat {
        lm.tokenizer
            .apply_chat_template(&[ChatMessage::new("user", &a.prompt)], true)?
    } else {
        a.prompt.clone()
    };
    // Chat templates spell out their special tokens; plain prompts get the tokenizer's BOS rule.
    let ids = lm.tokenizer.encode(&prompt_text, !a.chat)?;
    let tokenizer = lm.tokenizer;
    let mut engine = a.model.engine(lm.model, None)?;
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling,
        stop: Vec::new(),
    };
    let stdout = std::io::stdout();
    if !a.chat {
        print!("{}", a.prompt);
    }
    let out = generate(engine.as_mut(), &tokenizer, &ids, &params, &mut |t| {
        let mut lock = stdout.lock();
        let _ = lock.write_all(t.as_bytes());
        let _ = lock.flush();
        true
    })?;
    println!();
    eprintln!(
        "[{}] prompt: {} tokens, {:.1} tokens/s | decode: {} tokens, {:.1} tokens/s | finish: {}",
        engine.backend(),
        out.prompt_tokens,
        out.prompt_tps(),
        out.completion_tokens(),
        out.decode_tps(),
        out.finish_reason.as_str()
    );
    Ok(())
}

fn cmd_ppl(a: PplArgs) -> Result<()> {
    let text = decdec_model::ppl::read_text(&a.text).context("--text")?;
    if a.max_chunks == Some(0) {
        bail!("invalid value for --max-chunks: 0 (must be at least 1)");
    }
    if a.ctx < 2 {
        bail!("invalid value for --ctx: {} (must be at least 2)", a.ctx);
    }
    let lm = open_model(&a.model)?;
    let tokenizer = lm.tokenizer;
    let mut engine = a.model.engine(lm.model, Some(a.ctx))?;
    let r = decdec_model::ppl::perplexity(
        engine.as_mut(),
        &tokenizer,
        &text,
        a.ctx,
        a.max_chunks,
        true,
    )?;
    println!(
        "ppl {:.4} | nll {:.5} | {} tokens scored in {} chunks of {} | {:.1} s",
        r.ppl, r.nll_mean, r.tokens_scored, r.chunks, r.ctx, r.seconds
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let lm = decdec_model::open(
        &a.model,
        &LoadOptions {
            tokenizer: a.tokenizer.clone(),
        },
    )?;
    let c = &lm.model.config;
    let mut dtype_counts = std::collections::BTreeMap::<String, usize>::new();
    for d in lm.dtypes.values() {
        *dtype_counts.entry(d.clone()).or_default() += 1;
    }
    let mut info = serde_json::json!({
        "path": lm.path.display().to_string(),
        "source": format!("{:?}", lm.kind),
        "architecture": c.family.name(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_layers": c.num_layers,
        "num_heads": c.num_heads,
        "num_kv_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta,
        "rope_scaling": format!("{:?}", c.rope_scaling),
        "tie_word_embeddings": c.tie_word_embeddings,
        "parameters": lm.model.num_params(),
        "tensor_dtypes": dtype_counts,
        "tensors": lm.dtypes.len(),
    });
    let quantized = if lm.kind == decdec_model::loader::SourceKind::Quantized {
        let q = decdec_pipeline::artifact::inspect(&a.model)?;
        info["quantized"] = q.clone();
        Some(q)
    } else {
        None
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("model        {}", lm.path.display());
    println!("source       {:?}", lm.kind);
    println!("architecture {}", c.family.name());
    println!(
        "dims         hidden {} | ffn {} | layers {} | heads {} (kv {}) x {} | vocab {}",
        c.hidden_size,
        c.intermediate_size,
        c.num_layers,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size
    );
    println!(
        "rope         theta {} | scaling {:?} | max positions {}",
        c.rope_theta, c.rope_scaling, c.max_position_embeddings
    );
    println!(
        "parameters   {} ({:.1} M){}",
        lm.model.num_params(),
        lm.model.num_params() as f64 / 1e6,
        if c.tie_word_embeddings {
            ", tied embeddings"
        } else {
            ""
        }
    );
    println!("tensors      {} ({:?})", lm.dtypes.len(), dtype_counts);
    if let Some(q) = quantized {
        print_quantized_summary(&q);
    }
    Ok(())
}

fn cmd_bench_cpu(a: BenchCpuArgs) -> Result<()> {
    if a.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    let lm = open_model(&a.model)?;
    let r = crate::bench_cpu::run(lm.model, a.tokens)?;
    println!(
        "threads {} | read bandwidth {:.2} GB/s | weights {:.1} MB/token | bound {:.1} tokens/s | decode {:.1} tokens/s ({:.0}% of bound)",
        r.threads,
        r.read_bandwidth_gbs,
        r.weight_bytes_per_token as f64 / 1e6,
        r.bound_tokens_per_s,
        r.decode_tokens_per_s,
        100.0 * r.fraction_of_bound
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

/// Human-readable lines of a quantized directory's summary (`--json` gives all of it).
fn print_quantized_summary(q: &serde_json::Value) {
    let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    let bits: Vec<String> = q["layer_bits"]
        .as_array()
        .map(|a| a.iter().map(|b| b.to_string()).collect())
        .unwrap_or_default();
    println!(
        "quantized    {} {} bits (per layer: {}) | group {} | residuals {} bits",
        q["method"].as_str().unwrap_or("?"),
        q["bits"],
        bits.join(","),
        q["group_size"],
        q["residual_bits"]
    );
    if let Some(b) = q["head_bits"].as_u64() {
        println!("             head quantized to {b} bits when loaded (--head-bits 16 keeps it full precision)");
    }
    if let Some(groups) = q["groups"].as_array() {
        for g in groups {
            println!("             {}", g.as_str().unwrap_or(""));
        }
    }
    let b = &q["bytes"];
    println!(
        "memory       GPU-resident {:.2} MiB (quantized weights {:.2} MiB) | pinned-host residuals {:.2} MiB",
        mib(&b["gpu_resident"]),
        mib(&b["quantized_weights"]),
        mib(&b["pinned_host_residuals"])
    );
    let c = &q["calibration"];
    let sha = c["sha256"].as_str().unwrap_or("?");
    println!(
        "calibration  {} ({} samples x {} tokens, sha256 {})",
        c["corpus"].as_str().unwrap_or("?"),
        c["samples"],
        c["seq_len"],
        sha.get(..12).unwrap_or(sha)
    );
}
