//! Text generation over any [`Engine`]: prefill, decode loop, sampling, stop conditions, streaming.

use crate::engine::Engine;
use crate::model::Logits;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use anyhow::{bail, Result};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains any of these; the stop string is not returned.
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The caller asked to stop (e.g. a client disconnected).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerationOutput {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
    pub prompt_seconds: f64,
    pub decode_seconds: f64,
    /// Seconds from start to the first generated token.
    pub first_token_seconds: f64,
}

impl GenerationOutput {
    pub fn completion_tokens(&self) -> usize {
        self.tokens.len()
    }
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
    /// Decode tokens/s (tokens after the first, over the decode time).
    pub fn decode_tps(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// Generate after `prompt`. `on_text` receives each text delta as soon as it is final and returns
/// `false` to cancel. The engine's KV cache is reset first.
pub fn generate(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<GenerationOutput> {
    params.sampling.validate()?;
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens)");
    }
    if prompt.len() >= engine.max_seq_len() {
        bail!(
            "the prompt has {} tokens; the context holds {}",
            prompt.len(),
            engine.max_seq_len()
        );
    }
    engine.truncate(0);
    let t0 = Instant::now();
    let mut logits = engine.forward(prompt, Logits::Last)?;
    let prompt_seconds = t0.elapsed().as_secs_f64();
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut decoder = StreamDecoder::new();
    let mut out = GenerationOutput {
        text: String::new(),
        tokens: Vec::new(),
        prompt_tokens: prompt.len(),
        finish_reason: FinishReason::Length,
        prompt_seconds,
        decode_seconds: 0.0,
        first_token_seconds: 0.0,
    };
    // Text withheld because it might be the start of a stop string.
    let mut pending = String::new();
    let t1 = Instant::now();
    // the next token when the engine already chose it greedily (no logits read back)
    let mut chosen: Option<u32> = None;
    while out.tokens.len() < params.max_tokens {
        let next = match chosen.take() {
            Some(t) => t,
            None => sampler.sample(&logits),
        };
        if out.tokens.is_empty() {
            out.first_token_seconds = t0.elapsed().as_secs_f64();
        }
        if tokenizer.is_eos(next) {
            out.finish_reason = FinishReason::Stop;
            break;
        }
        out.tokens.push(next);
        pending.push_str(&decoder.push(tokenizer, next)?);
        if let Some(pos) = params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| pending.find(s.as_str()))
            .min()
        {
            pending.truncate(pos);
            out.text.push_str(&pending);
            if !pending.is_empty() {
                on_text(&pending);
            }
            out.finish_reason = FinishReason::Stop;
            pending.clear();
            break;
        }
        let hold = stop_prefix_len(&pending, &params.stop);
        let emit_to = pending.len() - hold;
        if emit_to > 0 {
            let emit: String = pending.drain(..emit_to).collect();
            out.text.push_str(&emit);
            if !on_text(&emit) {
                out.finish_reason = FinishReason::Cancelled;
                break;
            }
        }
        if out.tokens.len() >= params.max_tokens || engine.position() + 1 >= engine.max_seq_len() {
            break;
        }
        if sampler.is_greedy() {
            chosen = engine.forward_greedy(next)?;
            if chosen.is_some() {
                continue;
            }
        }
        logits = engine.forward(&[next], Logits::Last)?;
    }
    if !pending.is_empty() && out.finish_reason != FinishReason::Cancelled {
        out.text.push_str(&pending);
        on_text(&pending);
    }
    out.decode_seconds = t1.elapsed().as_secs_f64();
    Ok(out)
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string.
fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                best = best.max(i);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::stop_prefix_len;

    #[test]
    fn holds_back_partial_stop_strings() {
        let stops = vec!["\nUser:".to_string()];
        assert_eq!(stop_prefix_len("hello\nUs", &stops), 3);
        assert_eq!(stop_prefix_len("hello", &stops), 0);
        assert_eq!(stop_prefix_len("a\n", &stops), 1);
    }
}
