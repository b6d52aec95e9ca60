//! Base quantizers and their packed formats (docs/formats.md).
//!
//! * [`pack`]    — the shared `qweight` bit layout (2/3/4/8-bit codes, rows padded to 32 codes).
//! * [`uniform`] — group-wise asymmetric quantization with integer zero points (`rtn`, `awq`), AWQ clip search.
//! * [`lut`]     — per-output-channel non-uniform codebooks from sensitivity-weighted 1-D k-means (`lut`).
//!
//! [`QuantWeight`] wraps either format behind one interface (dequantize, base GEMV, sizes); the CPU
//! GEMVs here are the twins the GPU base GEMV kernels are checked against.

pub mod lut;
pub mod pack;
pub mod uniform;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

pub use lut::{quantize_lut, LutQuant};
pub use uniform::{clip_search, pseudo_quantize, quantize_clipped, quantize_rtn, UniformQuant};

/// `round_ties_even(x).clamp(lo, hi)` for small integer bounds (|lo|, |hi| < 2^21), vectorizable:
/// `x` is clamped first so the add-and-subtract of 1.5·2^23 rounds exactly (to even on ties, like
/// torch.round) without a libm call.
#[inline(always)]
pub(crate) fn round_clamped(x: f32, lo: f32, hi: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let y = x.clamp(lo - 1.0, hi + 1.0);
    ((y + MAGIC) - MAGIC).clamp(lo, hi)
}

/// How the base weights are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMethod {
    /// Uniform group-wise round-to-nearest.
    Rtn,
    /// Uniform group-wise after AWQ scaling and clip search.
    Awq,
    /// Non-uniform per-output-channel LUT (weighted k-means).
    Lut,
}

impl QuantMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            QuantMethod::Rtn => "rtn",
            QuantMethod::Awq => "awq",
            QuantMethod::Lut => "lut",
        }
    }
}

impl fmt::Display for QuantMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuantMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rtn" => Ok(QuantMethod::Rtn),
            "awq" => Ok(QuantMethod::Awq),
            "lut" => Ok(QuantMethod::Lut),
            _ => bail!("unknown quantization method {s:?} (expected rtn, awq or lut)"),
        }
    }
}

/// A quantized linear weight in either canonical format.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantWeight {
    Uniform(UniformQuant),
    Lut(LutQuant),
}

impl QuantWeight {
    pub fn bits(&self) -> u32 {
        match self {
            QuantWeight::Uniform(q) => q.bits,
            QuantWeight::Lut(q) => q.bits,
        }
    }

    /// Input channels.
    pub fn k(&self) -> usize {
        match self {
            QuantWeight::Uniform(q) => q.k,
            QuantWeight::Lut(q) => q.k,
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        match self {
            QuantWeight::Uniform(q) => q.n,
            QuantWeight::Lut(q) => q.n,
        }
    }

    /// Group size of the uniform format (`None` for LUT).
    pub fn group_size(&self) -> Option<usize> {
        match self {
            QuantWeight::Uniform(q) => Some(q.group_size),
            QuantWeight::Lut(_) => None,
        }
    }

    /// Packed codes `u32[n, words_per_row]`.
    pub fn qweight(&self) -> &[u32] {
        match self {
            QuantWeight::Uniform(q) => &q.qweight,
            QuantWeight::Lut(q) => &q.qweight,
        }
    }

    /// Format name: `"uniform"` or `"lut"`.
    pub fn format_name(&self) -> &'static str {
        match self {
            QuantWeight::Uniform(_) => "uniform",
            QuantWeight::Lut(_) => "lut",
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            QuantWeight::Uniform(q) => q.validate(),
            QuantWeight::Lut(q) => q.validate(),
        }
    }

    /// Dequantized weight `f32[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            QuantWeight::Uniform(q) => q.dequantize(),
            QuantWeight::Lut(q) => q.dequantize(),
        }
    }

    pub fn dequantize_into(&self, out: &mut [f32]) {
        match self {
            QuantWeight::Uniform(q) => q.dequantize_into(out),
            QuantWeight::Lut(q) => q.dequantize_into(out),
        }
    }

    /// Base GEMV `out = Ŵ x` from the packed codes (f32 accumulation).
    pub fn gemv(&self, x: &[f32], out: &mut [f32]) {
        match self {
            QuantWeight::Uniform(q) => q.gemv(x, out),
            QuantWeight::Lut(q) => q.gemv(x, out),
        }
    }

    /// Bytes of the canonical tensors.
    pub fn gpu_bytes(&self) -> usize {
        match self {
            QuantWeight::Uniform(q) => q.gpu_bytes(),
            QuantWeight::Lut(q) => q.gpu_bytes(),
        }
    }

    /// Average storage bits per weight including scales/zeros/codebooks.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.gpu_bytes() as f64 / (self.n() * self.k()).max(1) as f64
    }
}

impl From<UniformQuant> for QuantWeight {
    fn from(q: UniformQuant) -> Self {
        QuantWeight::Uniform(q)
    }
}

impl From<LutQuant> for QuantWeight {
    fn from(q: LutQuant) -> Self {
        QuantWeight::Lut(q)
    }
}

/// Fills `out: f32[n, k]` row by row in parallel (shared by every packed format's `dequantize_into`).
pub(crate) fn dequantize_rows(
    n: usize,
    k: usize,
    out: &mut [f32],
    row: impl Fn(usize, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    assert_eq!(out.len(), n * k, "dequantize_into: output length");
    if k == 0 {
        return;
    }
    out.par_chunks_mut(k)
        .enumerate()
        .for_each(|(r, o)| row(r, o));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_clamped_matches_round_ties_even() {
        let mut x = -20.0f32;
        while x <= 20.0 {
            for &(lo, hi) in &[(0.0f32, 7.0f32), (-7.0, 7.0), (0.0, 255.0), (-127.0, 127.0)] {
                assert_eq!(
                    round_clamped(x, lo, hi),
                    x.round_ties_even().clamp(lo, hi),
                    "x = {x}"
                );
            }
            x += 0.125;
        }
        assert_eq!(round_clamped(1e30, 0.0, 15.0), 15.0);
        assert_eq!(round_clamped(-1e30, 0.0, 15.0), 0.0);
        assert_eq!(round_clamped(2.4999998, 0.0, 15.0), 2.0);
    }

    #[test]
    fn method_parse_display() {
        for m in [QuantMethod::Rtn, QuantMethod::Awq, QuantMethod::Lut] {
            assert_eq!(m.to_string().parse::<QuantMethod>().unwrap(), m);
        }
        assert_eq!("AWQ".parse::<QuantMethod>().unwrap(), QuantMethod::Awq);
        let e = "gptq".parse::<QuantMethod>().unwrap_err().to_string();
        assert!(e.contains("gptq") && e.contains("rtn"), "{e}");
    }
}
