//! Dense f32 kernels of the CPU reference engine.
//!
//! Everything here is plain f32 with f32 accumulation. The hot loops (`dot`, `axpy`) are compiled twice,
//! once for AVX2+FMA selected at run time, so one binary runs on any x86-64 and is fast where it can be.

use rayon::prelude::*;

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler can keep a full vector of partial sums.
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = 0.0f32;
    for i in chunks * 16..n {
        s = a[i].mul_add(b[i], s);
    }
    let mut t = 0.0f32;
    for v in acc {
        t += v;
    }
    t + s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product of two equal-length slices (extra elements of the longer one are ignored).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_generic(a, b)
}

#[inline(always)]
fn axpy_generic(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = xi.mul_add(alpha, *yi);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_generic(alpha, x, y)
}

/// y += alpha * x
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { axpy_avx2(alpha, x, y) };
    }
    axpy_generic(alpha, x, y)
}

/// Output rows per rayon task in matrix-vector products: large enough to amortize scheduling,
/// small enough to balance two to many cores.
const GEMV_ROWS_PER_TASK: usize = 64;

/// out[n] = dot(w[n, :], x) for a row-major `w: [n, k]`.
pub fn gemv(w: &[f32], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    assert_eq!(w.len(), out.len() * k, "gemv: weight is not [n, k]");
    out.par_chunks_mut(GEMV_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(c, o)| {
            let base = c * GEMV_ROWS_PER_TASK;
            for (i, oi) in o.iter_mut().enumerate() {
                let r = base + i;
                *oi = dot(&w[r * k..(r + 1) * k], x);
            }
        });
}

/// Y[t, n] = sum_k X[t, k] * W[n, k]  (i.e. X · Wᵀ) for row-major X `[t, k]`, W `[n, k]`, Y `[t, n]`.
/// One row uses the GEMV path; more rows use a blocked SGEMM split over output columns.
pub fn matmul_xwt(x: &[f32], w: &[f32], t: usize, k: usize, n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), t * k, "matmul: x is not [t, k]");
    assert_eq!(w.len(), n * k, "matmul: w is not [n, k]");
    assert_eq!(y.len(), t * n, "matmul: y is not [t, n]");
    if t == 1 {
        return gemv(w, x, y);
    }
    // Split the output columns into one slab per thread; each slab is an independent SGEMM.
    let threads = rayon::current_num_threads().max(1);
    let slab = n.div_ceil(threads * 2).max(16);
    let y_ptr = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(slab)).into_par_iter().for_each(|s| {
        let n0 = s * slab;
        let n1 = (n0 + slab).min(n);
        let yp = y_ptr;
        // SAFETY: slabs write disjoint column ranges of y; all pointers stay inside their slices.
        unsafe {
            matrixmultiply::sgemm(
                t,
                k,
                n1 - n0,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr().add(n0 * k),
                1,
                k as isize,
                0.0,
                yp.0.add(n0),
                n as isize,
                1,
            );
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output regions to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// RMSNorm of each row of `x` (`[rows, d]`) into `out`: x / sqrt(mean(x²) + eps) * weight.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let inv = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for i in 0..d {
            or[i] = xr[i] * inv * weight[i];
        }
    }
}

/// Rotary embedding in the Hugging Face half-split layout: for each head, pairs (i, i + d/2).
/// `x` is one token's `[heads, head_dim]`.
pub fn rope_half_split(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let angle = pos as f32 * inv_freq[i];
            let (s, c) = angle.sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * c - b * s;
            head[i + half] = b * c + a * s;
        }
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// log(sum(exp(x))) computed stably in f64.
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    m + s.ln()
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// gate <- silu(gate) * up
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    #[test]
    fn matmul_matches_naive() {
        let mut s = 7u64;
        for &(t, k, n) in &[(1, 37, 19), (3, 64, 130), (17, 100, 33), (5, 576, 192)] {
            let x: Vec<f32> = (0..t * k).map(|_| lcg(&mut s)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut s)).collect();
            let mut y = vec![f32::NAN; t * n];
            matmul_xwt(&x, &w, t, k, n, &mut y);
            for i in 0..t {
                for j in 0..n {
                    let r: f64 = (0..k)
                        .map(|q| x[i * k + q] as f64 * w[j * k + q] as f64)
                        .sum();
                    assert!((y[i * n + j] as f64 - r).abs() < 1e-4, "t={t} k={k} n={n}");
                }
            }
        }
    }

    #[test]
    fn rope_preserves_norm_and_position_zero_is_identity() {
        let mut s = 3u64;
        let x: Vec<f32> = (0..16).map(|_| lcg(&mut s)).collect();
        let inv: Vec<f32> = (0..4)
            .map(|i| 1.0 / 10000f32.powf(i as f32 / 4.0))
            .collect();
        let mut y = x.clone();
        rope_half_split(&mut y, 8, 0, &inv);
        assert_eq!(x, y);
        rope_half_split(&mut y, 8, 5, &inv);
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
        assert_ne!(x, y);
    }

    #[test]
    fn softmax_and_lse_agree() {
        let mut x = vec![1.0f32, 2.0, -3.0, 0.5];
        let lse = log_sum_exp(&x);
        let orig = x.clone();
        softmax(&mut x);
        for (p, o) in x.iter().zip(&orig) {
            assert!(((*p as f64).ln() - (*o as f64 - lse)).abs() < 1e-5);
        }
    }
}
