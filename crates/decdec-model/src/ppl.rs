//! Perplexity, with exactly the protocol of DESIGN.md: encode the whole text once (the tokenizer's
//! post-processor decides BOS), split into non-overlapping `ctx`-token chunks, drop the partial tail,
//! score tokens 1..ctx-1 of every chunk, PPL = exp(mean NLL).

use crate::engine::Engine;
use crate::model::Logits;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use decdec_core::ops;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct PplResult {
    pub ppl: f64,
    pub nll_mean: f64,
    pub tokens_scored: usize,
    pub chunks: usize,
    pub ctx: usize,
    pub seconds: f64,
    pub text_tokens: usize,
}

/// Read a text file for evaluation or calibration. Line endings are normalized to `\n` (CRLF and lone
/// CR), as Python's text mode does: the published reference perplexities were computed that way, and a
/// stray `\r` token per line would otherwise shift every chunk.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read text file {}: {e}", path.display()))?;
    Ok(normalize_newlines(&text))
}

pub fn normalize_newlines(text: &str) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_string()
    }
}

/// Split `ids` into the protocol's chunks.
pub fn chunks(ids: &[u32], ctx: usize, max_chunks: Option<usize>) -> Vec<&[u32]> {
    let n = ids.len() / ctx;
    let n = max_chunks.map_or(n, |m| m.min(n));
    (0..n).map(|i| &ids[i * ctx..(i + 1) * ctx]).collect()
}

/// Sum of negative log-likelihoods of `chunk[1..]` given `logits[t]` for t in 0..len-1.
pub fn chunk_nll(logits: &[f32], chunk: &[u32], vocab: usize) -> f64 {
    (0..chunk.len() - 1)
        .map(|t| {
            let row = &logits[t * vocab..(t + 1) * vocab];
            ops::log_sum_exp(row) - row[chunk[t + 1] as usize] as f64
        })
        .sum()
}

pub fn perplexity(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    text: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    progress: bool,
) -> Result<PplResult> {
    if ctx < 2 {
        bail!("--ctx must be at least 2, got {ctx}");
    }
    if ctx > engine.max_seq_len() {
        bail!(
            "--ctx {ctx} exceeds what the engine holds ({})",
            engine.max_seq_len()
        );
    }
    let ids = tokenizer.encode(text, true)?;
    let parts = chunks(&ids, ctx, max_chunks);
    if parts.is_empty() {
        bail!(
            "the text has only {} tokens, fewer than one chunk of --ctx {ctx}",
            ids.len()
        );
    }
    let vocab = engine.config().vocab_size;
    let bar = if progress {
        crate::progress::bar(parts.len() as u64, "perplexity")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let mut nll = 0.0f64;
    let mut scored = 0usize;
    for chunk in &parts {
        engine.truncate(0);
        let logits = engine.forward(chunk, Logits::All)?;
        nll += chunk_nll(&logits, chunk, vocab);
        scored += chunk.len() - 1;
        bar.set_message(format!("ppl {:.4}", (nll / scored as f64).exp()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let nll_mean = nll / scored as f64;
    Ok(PplResult {
        ppl: nll_mean.exp(),
        nll_mean,
        tokens_scored: scored,
        chunks: parts.len(),
        ctx,
        seconds: t0.elapsed().as_secs_f64(),
        text_tokens: ids.len(),
    })
}
