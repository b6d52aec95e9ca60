//! Dynamic error compensation math (CPU twin of the DEC kernels).
//!
//! For one input vector `x` of a quantized linear: select the salient channels `S(x)` (per 1024-channel
//! chunk, [`crate::selection`]), gather their activations, and add
//! `out[n] += Σ_{r ∈ S(x)} x[r] · R_hat[r, n]` to the base GEMV output ([`Residual::add_rows`]).
//! [`dense_reference`] is the same product written densely (`x` masked to the selected channels, times
//! `R_hatᵀ`), used to check the fetch path.

use crate::residual::Residual;
use crate::selection::Selector;

/// Reusable buffers of one compensation call (no allocation per token once warm).
#[derive(Clone, Debug, Default)]
pub struct DecScratch {
    /// Selected input channels, chunk 0 first, ascending inside each chunk.
    pub rows: Vec<u32>,
    /// `x[rows[i]]`.
    pub acts: Vec<f32>,
}

impl DecScratch {
    pub fn new() -> DecScratch {
        DecScratch::default()
    }
}

/// `acts = x[rows]`.
pub fn gather_acts(x: &[f32], rows: &[u32], acts: &mut Vec<f32>) {
    acts.clear();
    acts.extend(rows.iter().map(|&r| x[r as usize]));
}

/// Adds the compensation of precomputed `rows` to `out` (the original's `unfused_dec`).
pub fn compensate_rows(
    x: &[f32],
    rows: &[u32],
    residual: &Residual,
    out: &mut [f32],
    acts: &mut Vec<f32>,
) {
    assert_eq!(
        x.len(),
        residual.k,
        "compensate: input has {} channels, residual K = {}",
        x.len(),
        residual.k
    );
    gather_acts(x, rows, acts);
    residual.add_rows(rows, acts, out);
}

/// Selects the salient channels of `x` and adds their residual contribution to `out` (length N).
/// The selection is left in `scratch.rows` (for recall statistics).
pub fn compensate(
    x: &[f32],
    selector: &mut Selector,
    residual: &Residual,
    out: &mut [f32],
    scratch: &mut DecScratch,
) {
    selector.select(x, &mut scratch.rows);
    compensate_rows(x, &scratch.rows, residual, out, &mut scratch.acts);
}

/// `x` with every channel outside `rows` zeroed.
pub fn masked_input(x: &[f32], rows: &[u32]) -> Vec<f32> {
    let mut m = vec![0f32; x.len()];
    for &r in rows {
        m[r as usize] = x[r as usize];
    }
    m
}

/// Dense reference: `masked_input(x, rows) · R_denseᵀ` for `r_dense: f32[n, k]` (weight layout,
/// e.g. [`Residual::decode_dense`]), accumulated in f64.
pub fn dense_reference(x: &[f32], rows: &[u32], r_dense: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(r_dense.len(), n * k, "dense_reference: residual shape");
    let xm = masked_input(x, rows);
    (0..n)
        .map(|col| {
            r_dense[col * k..(col + 1) * k]
                .iter()
                .zip(&xm)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_lut, quantize_rtn, QuantWeight};
    use crate::selection::{chunk_budgets, select_exact, SelectMethod};
    use crate::test_util::normal;
    use rand::{rngs::StdRng, SeedableRng};

    fn matvec(w: &[f32], x: &[f32], n: usize, k: usize) -> Vec<f64> {
        (0..n)
            .map(|r| (0..k).map(|c| w[r * k + c] as f64 * x[c] as f64).sum())
            .collect()
    }

    fn activations(rng: &mut StdRng, k: usize) -> Vec<f32> {
        let mut x: Vec<f32> = (0..k).map(|_| normal(rng)).collect();
        for o in [3usize, 700, 1100, 2000] {
            if o < k {
                x[o] = 30.0 + normal(rng);
            }
        }
        x
    }

    #[test]
    fn dec_matches_dense_masked_product() {
        let mut rng = StdRng::seed_from_u64(41);
        for &(n, k, bits) in &[(96usize, 576usize, 4u32), (50, 2100, 2), (130, 1024, 8)] {
            let r: Vec<f32> = (0..n * k).map(|_| normal(&mut rng) * 0.01).collect();
            let res = Residual::encode(&r, n, k, bits).unwrap();
            let dense = res.decode_dense();
            let calib: Vec<Vec<f32>> = (0..32).map(|_| activations(&mut rng, k)).collect();
            let mut thresholds = vec![0f32; k];
            for x in &calib {
                let mut v: Vec<f32> = x.iter().map(|a| a.abs()).collect();
                v.sort_by(|a, b| b.total_cmp(a));
                thresholds
                    .iter_mut()
                    .zip(v)
                    .for_each(|(t, v)| *t = t.max(v));
            }
            let act_mean: Vec<f32> = (0..k)
                .map(|c| calib.iter().map(|x| x[c].abs()).sum::<f32>() / 32.0)
                .collect();
            for method in [
                SelectMethod::Bucket,
                SelectMethod::Exact,
                SelectMethod::Static,
                SelectMethod::Random,
            ] {
                for &k_chunk in &[0usize, 8, 64] {
                    let mut sel =
                        Selector::new(method, k, k_chunk, Some(&thresholds), Some(&act_mean), 77)
                            .unwrap();
                    let mut scratch = DecScratch::new();
                    for _ in 0..3 {
                        let x = activations(&mut rng, k);
                        let base: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
                        let mut out = base.clone();
                        compensate(&x, &mut sel, &res, &mut out, &mut scratch);
                        assert_eq!(
                            scratch.rows.len(),
                            chunk_budgets(k, k_chunk).iter().sum::<usize>()
                        );
                        let want = dense_reference(&x, &scratch.rows, &dense, n, k);
                        for c in 0..n {
                            let d = (out[c] - base[c] - want[c]).abs();
                            assert!(
                                d <= 1e-5 * (1.0 + want[c].abs()),
                                "{method} k_chunk {k_chunk} col {c}: {d}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn full_compensation_recovers_original_output() {
        let mut rng = StdRng::seed_from_u64(42);
        let (n, k) = (64, 1300);
        let w: Vec<f32> = (0..n * k).map(|_| normal(&mut rng) * 0.05).collect();
        let x = activations(&mut rng, k);
        let exact = matvec(&w, &x, n, k);
        let sens: Vec<f32> = (0..k).map(|_| 1.0).collect();
        let bases: Vec<QuantWeight> = vec![
            quantize_rtn(&w, n, k, 3, 128).unwrap().into(),
            quantize_lut(&w, n, k, 3, &sens).unwrap().into(),
        ];
        for q in bases {
            let deq = q.dequantize();
            let r: Vec<f32> = w.iter().zip(&deq).map(|(a, b)| a - b).collect();
            let res = Residual::encode(&r, n, k, 8).unwrap();
            let mut y = vec![0f32; n];
            q.gemv(&x, &mut y);
            let err = |y: &[f32]| {
                y.iter()
                    .zip(&exact)
                    .map(|(a, b)| (*a as f64 - b).powi(2))
                    .sum::<f64>()
                    .sqrt()
            };
            let base_err = err(&y);
            let mut sel = Selector::exact(k, 1024).unwrap();
            let mut scratch = DecScratch::new();
            compensate(&x, &mut sel, &res, &mut y, &mut scratch);
            assert_eq!(scratch.rows.len(), k);
            let dec_err = err(&y);
            let norm = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
            // 8-bit residuals leave ~1/60 (LUT: wide outer clusters) to ~1/200 (uniform) of the error.
            assert!(
                dec_err < base_err / 20.0,
                "{}: base {base_err} -> dec {dec_err}",
                q.format_name()
            );
            assert!(
                dec_err < 5e-3 * norm,
                "{}: dec {dec_err} vs |y| {norm}",
                q.format_name()
            );
        }
    }

    #[test]
    fn partial_compensation_helps_most_on_salient_channels() {
        // With outlier activations, compensating a few top channels removes most of the error,
        // and more than compensating the same number of random channels.
        let mut rng = StdRng::seed_from_u64(43);
        let (n, k) = (128, 2048);
        let w: Vec<f32> = (0..n * k).map(|_| normal(&mut rng) * 0.05).collect();
        let q = quantize_rtn(&w, n, k, 3, 128).unwrap();
        let r: Vec<f32> = w.iter().zip(q.dequantize()).map(|(a, b)| a - b).collect();
        let res = Residual::encode(&r, n, k, 4).unwrap();
        let (mut e_top, mut e_rand, mut e_base) = (0f64, 0f64, 0f64);
        for _ in 0..10 {
            let x = activations(&mut rng, k);
            let exact = matvec(&w, &x, n, k);
            let mut base = vec![0f32; n];
            q.gemv(&x, &mut base);
            let err = |y: &[f32]| {
                y.iter()
                    .zip(&exact)
                    .map(|(a, b)| (*a as f64 - b).powi(2))
                    .sum::<f64>()
            };
            e_base += err(&base);
            for (method, acc) in [
                (SelectMethod::Exact, &mut e_top),
                (SelectMethod::Random, &mut e_rand),
            ] {
                let mut y = base.clone();
                let mut sel = Selector::new(method, k, 32, None, None, 5).unwrap();
                compensate(&x, &mut sel, &res, &mut y, &mut DecScratch::new());
                *acc += err(&y);
            }
            let mut top = vec![];
            select_exact(&x, 32, &mut top);
            assert!(top.contains(&700) && top.contains(&1100));
        }
        assert!(e_top < 0.8 * e_base, "top {e_top} vs base {e_base}");
        assert!(e_top < e_rand, "top {e_top} vs random {e_rand}");
    }
}
