//! Command-line options shared by every command that opens a model (`generate`, `ppl`, `serve`,
//! `chat`, `bench`): the model path, tokenizer, threads and the error-compensation settings.

use crate::engine::{create_engine, Device, Engine};
use crate::loader::{open, LoadOptions, LoadedModel};
use crate::model::Model;
use anyhow::{bail, Context, Result};
use decdec_core::selection::SelectMethod;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a Hugging Face directory, a .gguf file, or a decdec quantized directory.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// tokenizer.json to use instead of the one beside the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Error compensation budget: salient channels per 1024 input channels, one value for all
    /// projections or four as qkv,o,gu,d (quantized models only; 0 = off).
    #[arg(long, value_parser = parse_k_chunk)]
    pub k_chunk: Option<[usize; 4]>,
    /// Salient-channel selection: bucket (the paper's 32-bucket method), exact (top-k), static, random.
    #[arg(long, default_value = "bucket")]
    pub select: SelectMethod,
    /// Quantize the output projection (lm_head) to 8, 4 or 3 bits at load time (round to nearest,
    /// groups of 128): on the GPU the head is then a quantized GEMV instead of an f16 one (an 8B
    /// Llama-3 streams 0.53 / 0.28 / 0.21 GB per token instead of 1.05 GB). 8 bits costs almost no
    /// perplexity, 4 and 3 bits a visible amount. 16: full precision. Default: what a quantized
    /// directory's manifest says (`decdec quantize --head-bits`), else full precision, as the
    /// original DecDEC keeps it.
    #[arg(long, value_parser = parse_head_bits)]
    pub head_bits: Option<u32>,
    /// Where to run: cpu (reference engine) or cuda.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

/// `8` or `4,4,8,8` (qkv, o, gate-up, down); each at most the chunk size 1024.
pub fn parse_k_chunk(s: &str) -> Result<[usize; 4], String> {
    let vals: Vec<usize> = s
        .split(',')
        .map(str::trim)
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| format!("'{p}' is not a non-negative integer"))
        })
        .collect::<Result<_, _>>()?;
    let out = match vals.as_slice() {
        [v] => [*v; 4],
        [a, b, c, d] => [*a, *b, *c, *d],
        _ => {
            return Err(format!(
                "expected one value or four (qkv,o,gu,d), got {}",
                vals.len()
            ))
        }
    };
    if let Some(v) = out.iter().find(|&&v| v > 1024) {
        return Err(format!("{v} exceeds the chunk size 1024"));
    }
    Ok(out)
}

/// `--head-bits`: 3, 4 or 8 (the widths the GPU has a GEMV for), or 16 (full precision).
pub fn parse_head_bits(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(b @ (3 | 4 | 8 | 16)) => Ok(b),
        _ => Err(format!("'{s}' is not one of 3, 4, 8, 16")),
    }
}

/// The width a `--head-bits` value quantizes the head to: `None` for 16 (full precision).
pub fn head_quant_bits(head_bits: Option<u32>) -> Option<u32> {
    head_bits.filter(|&b| b != 16)
}

/// Size the global thread pool once (`--threads`).
pub fn init_threads(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        if n == 0 {
            bail!("invalid value for --threads: 0 (must be at least 1)");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    Ok(())
}

impl ModelArgs {
    /// Set up threads, open the model and apply `--k-chunk` / `--select` to its compensated linears.
    pub fn open(&self) -> Result<LoadedModel> {
        init_threads(self.threads)?;
        let mut lm = open(
            &self.model,
            &LoadOptions {
                tokenizer: self.tokenizer.clone(),
            },
        )?;
        if let Some(k) = self.k_chunk {
            if !lm.model.has_dec() && k.iter().any(|&v| v > 0) {
                bail!(
                    "--k-chunk: {} has no residuals; error compensation needs a model made by `decdec quantize`",
                    self.model.display()
                );
            }
            lm.model
                .configure_dec(k, self.select, 0)
                .context("--k-chunk")?;
        }
        lm.apply_head_bits(self.head_bits)?;
        Ok(lm)
    }

    /// The engine for `--device`, with a KV cache of `max_seq` positions (default: the model's, capped).
    pub fn engine(&self, model: Model, max_seq: Option<usize>) -> Result<Box<dyn Engine>> {
        create_engine(self.device, model, max_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_k_chunk;

    #[test]
    fn k_chunk_takes_one_or_four_values() {
        assert_eq!(parse_k_chunk("8"), Ok([8; 4]));
        assert_eq!(parse_k_chunk("4, 4,8,16"), Ok([4, 4, 8, 16]));
        assert!(parse_k_chunk("1,2").is_err());
        assert!(parse_k_chunk("-1").is_err());
        assert!(parse_k_chunk("2048").unwrap_err().contains("1024"));
    }

    #[test]
    fn head_bits_are_the_gpu_widths() {
        use super::parse_head_bits;
        assert_eq!(parse_head_bits("8"), Ok(8));
        assert_eq!(parse_head_bits("3"), Ok(3));
        assert_eq!(parse_head_bits("16"), Ok(16));
        for bad in ["2", "5", "32", "x", ""] {
            assert!(parse_head_bits(bad).is_err(), "{bad}");
        }
    }
}
