//! The backend trait: what generation, perplexity and the server need from an inference engine.
//! The CPU engine here is the reference; the CUDA engine (decdec-cuda) implements the same trait.

use crate::config::ModelConfig;
use crate::model::{KvCache, Logits, Model};
use anyhow::Result;
use std::sync::Arc;

/// Counters of error compensation work (for `/metrics` and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecCounters {
    /// Residual rows fetched (summed over linears and positions).
    pub rows_fetched: u64,
    /// Residual bytes read from host memory.
    pub bytes_fetched: u64,
}

pub trait Engine: Send {
    fn config(&self) -> &ModelConfig;
    /// Short backend name ("cpu", "cuda").
    fn backend(&self) -> &'static str;
    /// Run `tokens` after the current position; returns logits as `logits` asks.
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>>;
    /// Number of tokens in the KV cache.
    fn position(&self) -> usize;
    /// Drop cached positions beyond `len` (0 resets).
    fn truncate(&mut self, len: usize);
    /// Largest number of positions the engine can hold.
    fn max_seq_len(&self) -> usize;
    fn dec_counters(&self) -> DecCounters {
        DecCounters::default()
    }
}

pub struct CpuEngine {
    pub model: Arc<Model>,
    kv: KvCache,
}

impl CpuEngine {
    /// `max_seq` bounds the KV cache (defaults to the model's max position embeddings, capped at 4096).
    pub fn new(model: Arc<Model>, max_seq: Option<usize>) -> Self {
        let cap = max_seq.unwrap_or(model.config.max_position_embeddings.min(4096));
        let kv = KvCache::new(&model.config, cap);
        CpuEngine { model, kv }
    }
}

impl Engine for CpuEngine {
    fn config(&self) -> &ModelConfig {
        &self.model.config
    }
    fn backend(&self) -> &'static str {
        "cpu"
    }
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        self.model.forward(tokens, &mut self.kv, logits, None)
    }
    fn position(&self) -> usize {
        self.kv.len
    }
    fn truncate(&mut self, len: usize) {
        self.kv.truncate(len)
    }
    fn max_seq_len(&self) -> usize {
        self.kv.capacity
    }
    fn dec_counters(&self) -> DecCounters {
        self.model.dec_counters()
    }
}
