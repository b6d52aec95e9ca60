//! `decdec bench cpu`: CPU decode speed against the memory-bandwidth bound.
//!
//! Batch-1 decode streams every weight once per token, so tokens/s can be at most
//! (read bandwidth) / (weight bytes per token). We measure the read bandwidth with a multi-threaded sum
//! over a buffer far larger than the caches, then time greedy decode steps.

use anyhow::Result;
use decdec_model::{CpuEngine, Engine, Logits, Model};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Read bandwidth in GB/s: median of several parallel sums over `bytes` of f32.
pub fn measure_read_bandwidth(bytes: usize) -> f64 {
    let n = bytes / 4;
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut rates = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let s: f32 = buf
            .par_chunks(1 << 16)
            .map(|c| decdec_core::ops::dot(c, c))
            .sum();
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        rates.push(bytes as f64 / dt / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Bytes of weights a decode step reads (every linear, the LM head, embedding row and norms).
pub fn weight_bytes_per_token(m: &Model) -> usize {
    let c = &m.config;
    let linears: usize = m
        .layers
        .iter()
        .flat_map(|l| l.linears())
        .map(|l| l.in_features * l.out_features * 4)
        .sum();
    linears + m.lm_head().len() * 4 + (2 * c.num_layers + 1) * c.hidden_size * 4
}

#[derive(serde::Serialize)]
pub struct CpuBench {
    pub threads: usize,
    pub read_bandwidth_gbs: f64,
    pub weight_bytes_per_token: usize,
    pub bound_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub fraction_of_bound: f64,
}

pub fn run(model: Model, tokens: usize) -> Result<CpuBench> {
    let wb = weight_bytes_per_token(&model);
    let bw = measure_read_bandwidth(1 << 30);
    let mut engine = CpuEngine::new(Arc::new(model), Some(tokens + 8));
    // Warm up (page in the weights), then time `tokens` single-token decode steps.
    let mut tok = engine.config().bos_token_id.unwrap_or(1);
    engine.forward(&[tok], Logits::Last)?;
    let t = Instant::now();
    for _ in 0..tokens {
        let logits = engine.forward(&[tok], Logits::Last)?;
        tok = decdec_model::sampling::argmax(&logits);
    }
    let tps = tokens as f64 / t.elapsed().as_secs_f64();
    let bound = bw * 1e9 / wb as f64;
    Ok(CpuBench {
        threads: rayon::current_num_threads(),
        read_bandwidth_gbs: bw,
        weight_bytes_per_token: wb,
        bound_tokens_per_s: bound,
        decode_tokens_per_s: tps,
        fraction_of_bound: tps / bound,
    })
}
