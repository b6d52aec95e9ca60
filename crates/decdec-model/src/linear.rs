//! The linear layer: one abstraction that dense weights, quantized base weights and dynamic error
//! compensation (DEC) plug into.

use decdec_core::ops;
use decdec_core::quant::QuantWeight;
use decdec_core::residual::Residual;
use decdec_core::selection::{self, SelectMethod, StaticSelection};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which projection of a decoder layer a linear is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub fn group(self) -> ProjGroup {
        match self {
            Proj::Q | Proj::K | Proj::V => ProjGroup::Qkv,
            Proj::O => ProjGroup::O,
            Proj::Gate | Proj::Up => ProjGroup::GateUp,
            Proj::Down => ProjGroup::Down,
        }
    }
}

/// Projections that share one input vector. DecDEC selects salient channels and sets k_chunk per group
/// (the original fuses q/k/v and gate/up into one linear each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjGroup {
    Qkv,
    O,
    GateUp,
    Down,
}

impl ProjGroup {
    pub const ALL: [ProjGroup; 4] = [
        ProjGroup::Qkv,
        ProjGroup::O,
        ProjGroup::GateUp,
        ProjGroup::Down,
    ];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        match self {
            ProjGroup::Qkv => "qkv",
            ProjGroup::O => "o",
            ProjGroup::GateUp => "gu",
            ProjGroup::Down => "d",
        }
    }
}

pub enum LinearWeight {
    /// `[out, in]` row-major f32.
    Dense(Vec<f32>),
    /// A quantized base weight. `dense` caches its dequantization so the CPU engine runs prefill and
    /// decode through the same f32 matmul (GPU backends read `q` itself).
    Quantized { q: QuantWeight, dense: Vec<f32> },
}

/// How salient channels are chosen and how many (per 1024-channel chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecConfig {
    pub method: SelectMethod,
    pub k_chunk: usize,
    /// Seed of the `random` ablation.
    pub seed: u64,
}

impl Default for DecConfig {
    fn default() -> Self {
        DecConfig {
            method: SelectMethod::Bucket,
            k_chunk: 0,
            seed: 0,
        }
    }
}

/// Counters of one linear's compensation.
#[derive(Debug, Default)]
pub struct DecStats {
    pub calls: AtomicU64,
    pub rows: AtomicU64,
    /// Sum over calls of |selected ∩ exact top-k| and of |exact top-k| (when recall tracking is on).
    pub recall_hits: AtomicU64,
    pub recall_total: AtomicU64,
}

/// Dynamic error compensation state of one quantized linear.
pub struct DecLinear {
    /// R̂ᵀ, one row per input channel.
    pub residual: Residual,
    /// t[j] = largest (j+1)-th largest |x| seen in calibration.
    pub thresholds: Vec<f32>,
    /// Mean |x| per input channel in calibration (static selection).
    pub act_mean: Vec<f32>,
    pub config: DecConfig,
    static_rows: Option<StaticSelection>,
    /// Also run exact top-k and count how much of it the selection caught.
    pub track_recall: bool,
    pub stats: DecStats,
}

impl DecLinear {
    pub fn new(residual: Residual, thresholds: Vec<f32>, act_mean: Vec<f32>) -> Self {
        DecLinear {
            residual,
            thresholds,
            act_mean,
            config: DecConfig::default(),
            static_rows: None,
            track_recall: false,
            stats: DecStats::default(),
        }
    }

    pub fn configure(&mut self, config: DecConfig) -> anyhow::Result<()> {
        if config.k_chunk > selection::CHUNK {
            anyhow::bail!(
                "--k-chunk {} is larger than the chunk size {}",
                config.k_chunk,
                selection::CHUNK
            );
        }
        self.static_rows = if config.method == SelectMethod::Static && config.k_chunk > 0 {
            Some(StaticSelection::new(&self.act_mean, config.k_chunk)?)
        } else {
            None
        };
        self.config = config;
        Ok(())
    }

    /// Select salient channels of one input row, into `rows`.
    pub fn select(&self, x: &[f32], position: usize, rows: &mut Vec<u32>) {
        rows.clear();
        let kc = self.config.k_chunk;
        match self.config.method {
            SelectMethod::Bucket => selection::select_bucket(x, &self.thresholds, kc, rows),
            SelectMethod::Exact => selection::select_exact(x, kc, rows),
            SelectMethod::Static => {
                if let Some(s) = &self.static_rows {
                    rows.extend_from_slice(&s.rows);
                }
            }
            SelectMethod::Random => {
                selection::select_random(self.config.seed, position as u64, x.len(), kc, rows)
            }
        }
    }

    /// out += Σ_{r ∈ S(x)} x[r] · R̂[r, :]
    pub fn compensate(&self, x: &[f32], position: usize, out: &mut [f32]) {
        if self.config.k_chunk == 0 {
            return;
        }
        let mut rows = Vec::new();
        self.select(x, position, &mut rows);
        let acts: Vec<f32> = rows.iter().map(|&r| x[r as usize]).collect();
        self.residual.add_rows(&rows, &acts, out);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        if self.track_recall {
            let mut exact = Vec::new();
            selection::select_exact(x, self.config.k_chunk, &mut exact);
            let hits = (selection::recall(&rows, &exact) * exact.len() as f64).round() as u64;
            self.stats.recall_hits.fetch_add(hits, Ordering::Relaxed);
            self.stats
                .recall_total
                .fetch_add(exact.len() as u64, Ordering::Relaxed);
        }
    }
}

pub struct Linear {
    /// Hugging Face module name, e.g. `model.layers.3.self_attn.q_proj`.
    pub name: String,
    pub layer: usize,
    pub proj: Proj,
    pub in_features: usize,
    pub out_features: usize,
    pub weight: LinearWeight,
    pub bias: Option<Vec<f32>>,
    pub dec: Option<DecLinear>,
}

impl Linear {
    pub fn dense(
        name: &str,
        layer: usize,
        proj: Proj,
        n: usize,
        k: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Self {
        debug_assert_eq!(w.len(), n * k);
        Linear {
            name: name.to_string(),
            layer,
            proj,
            in_features: k,
            out_features: n,
            weight: LinearWeight::Dense(w),
            bias,
            dec: None,
        }
    }

    /// A quantized linear (shape taken from the quantized weight).
    pub fn new_quantized(
        name: &str,
        layer: usize,
        proj: Proj,
        q: QuantWeight,
        bias: Option<Vec<f32>>,
    ) -> Self {
        let dense = q.dequantize();
        Linear {
            name: name.to_string(),
            layer,
            proj,
            in_features: q.k(),
            out_features: q.n(),
            weight: LinearWeight::Quantized { q, dense },
            bias,
            dec: None,
        }
    }

    /// Replace the weight by a quantized one (keeps name, bias and shape).
    pub fn set_quantized(&mut self, q: QuantWeight) -> anyhow::Result<()> {
        if q.k() != self.in_features || q.n() != self.out_features {
            anyhow::bail!(
                "{}: quantized weight is [{}, {}], the layer is [{}, {}]",
                self.name,
                q.n(),
                q.k(),
                self.out_features,
                self.in_features
            );
        }
        let dense = q.dequantize();
        self.weight = LinearWeight::Quantized { q, dense };
        Ok(())
    }

    pub fn quantized(&self) -> Option<&QuantWeight> {
        match &self.weight {
            LinearWeight::Quantized { q, .. } => Some(q),
            LinearWeight::Dense(_) => None,
        }
    }

    /// The weight as a dense `[out, in]` matrix (dequantized for quantized layers).
    pub fn dense_weight(&self) -> &[f32] {
        match &self.weight {
            LinearWeight::Dense(w) => w,
            LinearWeight::Quantized { dense, .. } => dense,
        }
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias)`; `start_pos` is the absolute position of row 0.
    /// With error compensation, every row is compensated as if decoded one token at a time.
    pub fn forward(&self, x: &[f32], rows: usize, start_pos: usize, y: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        ops::matmul_xwt(x, self.dense_weight(), rows, k, n, y);
        if let Some(dec) = &self.dec {
            if dec.config.k_chunk > 0 {
                use rayon::prelude::*;
                y.par_chunks_exact_mut(n)
                    .zip(x.par_chunks_exact(k))
                    .enumerate()
                    .for_each(|(i, (yr, xr))| dec.compensate(xr, start_pos + i, yr));
            }
        }
        if let Some(b) = &self.bias {
            for r in y.chunks_exact_mut(n) {
                ops::add_inplace(r, b);
            }
        }
    }
}
