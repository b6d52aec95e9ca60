//! decdec-core: the pure math and formats of decdec.
//!
//! No file or GPU access lives here (only bytes in, numbers out), so every
//! piece can be unit-tested and serves as the CPU twin of the GPU kernels.
//!
//! * [`ops`]       — dense f32 kernels of the CPU reference engine (matmul, RMSNorm, RoPE, softmax, ...).
//! * [`gguf`]      — GGUF v2/v3 parsing and dequantization to f32.
//! * [`quant`]     — base quantizers (uniform RTN/AWQ group-wise, non-uniform LUT) and their packed formats.
//! * [`residual`]  — the DEC residual codec (R = W - dequant(Q), quantized to 2/4/8 bits, row per input channel).
//! * [`selection`] — salient-channel selection (32-bucket, exact top-k, static, random).
//! * [`dec`]       — dynamic error compensation math: out += sum over selected r of x[r] * R[r, :].

pub mod dec;
pub mod gguf;
pub mod ops;
pub mod quant;
pub mod residual;
pub mod selection;

/// Random data shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use rand::{rngs::StdRng, Rng};

    /// One standard normal draw (Box-Muller).
    pub fn normal(rng: &mut StdRng) -> f32 {
        let u1: f32 = rng.random_range(1e-7..1.0);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}
