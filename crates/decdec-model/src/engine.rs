//! The backend trait: what generation, perplexity and the server need from an inference engine.
//! The CPU engine here is the reference; the CUDA engine (decdec-cuda) implements the same trait.

use crate::config::ModelConfig;
use crate::model::{KvCache, Logits, Model};
use anyhow::{Context, Result};
use std::sync::{Arc, OnceLock};

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
    /// Run one token and return the greedy next token (the lowest id among the largest logits)
    /// without handing the logits over, where the backend can (`None`: use `forward`). The CUDA
    /// engine takes it from its on-GPU argmax instead of copying the vocabulary's logits back.
    fn forward_greedy(&mut self, _token: u32) -> Result<Option<u32>> {
        Ok(None)
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

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The reference engine (always available).
    Cpu,
    /// The CUDA engine (decdec-cuda), registered by the binary at start-up.
    Cuda,
}

/// Builds an engine for a model with a KV cache of `max_seq` positions.
pub type BackendFactory = fn(Model, usize) -> Result<Box<dyn Engine>>;

// Backends above this crate register themselves here, so commands can pick a device without this
// crate depending on them.
static CUDA_BACKEND: OnceLock<BackendFactory> = OnceLock::new();

pub fn register_cuda_backend(factory: BackendFactory) {
    let _ = CUDA_BACKEND.set(factory);
}

/// An engine for `model` on `device`; `max_seq` defaults to the model's positions capped at 4096.
pub fn create_engine(
    device: Device,
    model: Model,
    max_seq: Option<usize>,
) -> Result<Box<dyn Engine>> {
    let cap = max_seq.unwrap_or(model.config.max_position_embeddings.min(4096));
    match device {
        Device::Cpu => Ok(Box::new(CpuEngine::new(Arc::new(model), Some(cap)))),
        Device::Cuda => {
            let factory = CUDA_BACKEND
                .get()
                .context("--device cuda: this build has no CUDA backend")?;
            factory(model, cap).context("--device cuda")
        }
    }
}
