//! Command-line entry points (wired into the `decdec` binary by decdec-cli).

use crate::artifact::{self, ArtifactMeta, FailPoint};
use crate::calib::Calibration;
use crate::quantize::{self, BitsSpec, QuantizeOptions};
use anyhow::{Context, Result};
use clap::Args;
use decdec_core::quant::QuantMethod;
use decdec_model::loader::SourceKind;
use decdec_model::LoadOptions;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `decdec quantize`: calibrate, quantize, compute residuals and thresholds, write one directory.
#[derive(Args, Clone, Debug)]
pub struct QuantizeArgs {
    /// Original model: a Hugging Face directory or a .gguf file.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// tokenizer.json to use instead of the one beside the model (copied into the output).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output directory (created atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Base quantizer: rtn, awq or lut.
    #[arg(long, default_value = "awq")]
    pub method: QuantMethod,
    /// Bits per weight: 2, 3, 4, 8, or 3.5 (half the layers at 3 bits, half at 4).
    #[arg(long, default_value = "3")]
    pub bits: BitsSpec,
    /// Group size of rtn/awq (a last partial group covers input widths it does not divide).
    #[arg(long, default_value_t = 128)]
    pub group_size: usize,
    /// Calibration text file.
    #[arg(long)]
    pub calib: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub calib_samples: usize,
    #[arg(long, default_value_t = 512)]
    pub calib_seq: usize,
    /// Residual bits: 2, 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub residual_bits: u32,
    /// Windows of the short AWQ scale-search pass (the full --calib-samples pass follows on the
    /// scaled model for thresholds and statistics).
    #[arg(long, default_value_t = 16)]
    pub awq_samples: usize,
    /// Input rows per linear used by the AWQ scale and clip searches.
    #[arg(long, default_value_t = 512)]
    pub awq_rows: usize,
    /// Seed of the calibration window choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize the output projection to 8, 4 or 3 bits whenever the result is loaded (recorded
    /// in the manifest; the head is stored in full precision and `--head-bits 16` at run time
    /// overrides). 8 bits costs ~1e-4 relative perplexity and halves the head's GPU bytes.
    #[arg(long, value_parser = decdec_model::options::parse_head_bits)]
    pub head_bits: Option<u32>,
    /// Print a JSON summary as the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl QuantizeArgs {
    pub fn options(&self) -> QuantizeOptions {
        QuantizeOptions {
            method: self.method,
            bits: self.bits,
            group_size: self.group_size,
            residual_bits: self.residual_bits,
            calib_samples: self.calib_samples,
            calib_seq: self.calib_seq,
            seed: self.seed,
            awq_samples: self.awq_samples,
            awq_rows: self.awq_rows,
            sens_tokens: QuantizeOptions::default().sens_tokens,
            progress: !self.quiet,
            head_bits: decdec_model::options::head_quant_bits(self.head_bits),
        }
    }

    /// Arguments with every default, for library callers and tests.
    pub fn new(model: &Path, out: &Path, calib: &Path) -> Self {
        QuantizeArgs {
            model: model.to_path_buf(),
            tokenizer: None,
            out: out.to_path_buf(),
            method: QuantMethod::Awq,
            bits: BitsSpec::Uniform(3),
            group_size: 128,
            calib: calib.to_path_buf(),
            calib_samples: 128,
            calib_seq: 512,
            residual_bits: 4,
            awq_samples: 16,
            awq_rows: 512,
            seed: 42,
            force: false,
            threads: None,
            head_bits: None,
            json: false,
            quiet: true,
        }
    }
}

fn init_threads(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // A second initialization (library use) is harmless: keep the existing pool.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    Ok(())
}

/// Quantizes `a.model` into `a.out`; `pre` optionally shares a calibration of the original model
/// (rtn/lut). Returns a JSON summary.
pub fn quantize_to_dir(
    a: &QuantizeArgs,
    pre: Option<&Calibration>,
    fail: FailPoint,
) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    let opts = a.options();
    opts.validate()?;
    artifact::check_out(&a.out, a.force)?;
    let mut lm = decdec_model::open(
        &a.model,
        &LoadOptions {
            tokenizer: a.tokenizer.clone(),
        },
    )?;
    let kind = match lm.kind {
        SourceKind::HuggingFace => "huggingface",
        SourceKind::Gguf => "gguf",
        SourceKind::Quantized => anyhow::bail!(
            "--model {} is already a decdec quantized directory; quantize the original model",
            a.model.display()
        ),
    };
    if lm
        .model
        .layers
        .iter()
        .any(|l| l.linears().iter().any(|x| x.quantized().is_some()))
    {
        anyhow::bail!(
            "--model {}: the model holds quantized linears",
            a.model.display()
        );
    }
    if opts.head_bits.is_some() {
        lm.model.head_group()?;
    }
    let corpus = decdec_model::ppl::read_text(&a.calib).context("--calib")?;
    let qm = quantize::quantize_model(&mut lm.model, &lm.tokenizer, &corpus, &opts, pre)?;
    let manifest = artifact::manifest_for(&qm, &opts, &a.model, kind, &a.calib)?;
    let meta = ArtifactMeta {
        manifest,
        config_json: lm.model.config.raw.clone(),
        copy_files: artifact::tokenizer_files(&a.model, a.tokenizer.as_deref()),
    };
    let tensors = artifact::collect_tensors(&lm.model, &qm);
    artifact::write_artifact(&a.out, a.force, &meta, &tensors, fail)?;
    Ok(serde_json::json!({
        "out": a.out.display().to_string(),
        "method": opts.method.to_string(),
        "bits": opts.bits.as_f64(),
        "layer_bits": meta.manifest.layer_bits,
        "residual_bits": opts.residual_bits,
        "head_bits": opts.head_bits,
        "calibration_tokens": qm.calib_tokens,
        "seconds": t0.elapsed().as_secs_f64(),
        "timings": qm.details["timings"],
    }))
}

/// `decdec quantize`.
pub fn run_quantize(a: QuantizeArgs) -> Result<()> {
    init_threads(a.threads)?;
    let summary = quantize_to_dir(&a, None, FailPoint::None)?;
    eprintln!(
        "wrote {} ({} {}-bit, residuals {}-bit) in {:.1} s",
        a.out.display(),
        a.method,
        a.bits,
        a.residual_bits,
        summary["seconds"].as_f64().unwrap_or(0.0)
    );
    if a.json {
        println!("{summary}");
    }
    Ok(())
}

pub use crate::quality::{run_quality, QualityArgs};
