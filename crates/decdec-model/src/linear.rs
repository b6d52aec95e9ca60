//! The linear layer: one abstraction that dense weights, quantized base weights and dynamic error
//! compensation (DEC) plug into.

use decdec_core::ops;

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
    pub const ALL: [ProjGroup; 4] = [ProjGroup::Qkv, ProjGroup::O, ProjGroup::GateUp, ProjGroup::Down];
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
        }
    }

    /// The weight as a dense `[out, in]` matrix (dequantized for quantized layers).
    pub fn dense_weight(&self) -> &[f32] {
        match &self.weight {
            LinearWeight::Dense(w) => w,
        }
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias)`; `start_pos` is the absolute position of row 0.
    pub fn forward(&self, x: &[f32], rows: usize, _start_pos: usize, y: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        ops::matmul_xwt(x, self.dense_weight(), rows, k, n, y);
        if let Some(b) = &self.bias {
            for r in y.chunks_exact_mut(n) {
                ops::add_inplace(r, b);
            }
        }
    }
}
