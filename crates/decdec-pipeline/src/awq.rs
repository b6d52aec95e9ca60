//! AWQ activation-aware scale search (llm-awq `auto_scale`, decdec-original.md §5.1).
//!
//! For the linears that read one input (q/k/v, gate/up, down, and o when v and o are square to each
//! other), per input channel `s = max(mean|x|^r, 1e-4)`, normalized by `sqrt(max(s)·min(s))`, for
//! the 20 exponents `r = 0, 0.05, …, 0.95`. The loss of a candidate is the mean squared error of the
//! outputs of those linears on calibration inputs, `‖(x/s)·(Q(W·s) − W·s)ᵀ‖² / (T·N)`, which equals
//! the error of the deployed `Q(W·s)` applied to `x/s`. `r = 0` is plain RTN, so the chosen scaling
//! is never worse than RTN on this loss. The scales are folded into the preceding RMSNorm (q/k/v,
//! gate/up), the rows of `up_proj` (down) or of `v_proj` (o), so the model computes the same function.

use anyhow::{ensure, Result};
use decdec_core::ops;
use decdec_core::quant::pseudo_quantize;

/// Exponents tried: `r = i / AWQ_GRID`.
pub const AWQ_GRID: usize = 20;

/// Result of one scale search.
#[derive(Clone, Debug)]
pub struct ScaleSearch {
    /// Chosen exponent.
    pub ratio: f32,
    pub scales: Vec<f32>,
    /// Loss of the chosen scaling and of plain RTN (r = 0).
    pub loss: f64,
    pub loss_rtn: f64,
}

/// The candidate scales of exponent `r`.
pub fn candidate_scales(act_mean: &[f32], r: f32) -> Vec<f32> {
    let mut s: Vec<f32> = act_mean.iter().map(|&m| m.powf(r).max(1e-4)).collect();
    let mx = s.iter().copied().fold(f32::MIN, f32::max);
    let mn = s.iter().copied().fold(f32::MAX, f32::min);
    let norm = (mx * mn).sqrt();
    for v in &mut s {
        *v /= norm;
    }
    s
}

/// Output MSE of quantizing `W·s` for inputs `x/s`, summed over the weights of `ws` (each `[n, k]`).
fn scaled_loss(
    ws: &[(&[f32], usize)],
    k: usize,
    x: &[f32],
    t: usize,
    s: &[f32],
    bits: u32,
    group_size: usize,
) -> Result<f64> {
    let xs: Vec<f32> = x
        .chunks_exact(k)
        .flat_map(|row| row.iter().zip(s).map(|(a, b)| a / b))
        .collect();
    let mut total = 0f64;
    let mut count = 0usize;
    for &(w, n) in ws {
        let wsc: Vec<f32> = w
            .chunks_exact(k)
            .flat_map(|row| row.iter().zip(s).map(|(a, b)| a * b))
            .collect();
        let mut e = pseudo_quantize(&wsc, n, k, bits, group_size)?;
        for (a, b) in e.iter_mut().zip(&wsc) {
            *a -= b;
        }
        let mut y = vec![0f32; t * n];
        ops::matmul_xwt(&xs, &e, t, k, n, &mut y);
        total += y.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        count += t * n;
    }
    Ok(total / count.max(1) as f64)
}

/// Searches the per-input-channel scales of the linears `ws` (each `(weight [n, k], n)`) that read
/// the inputs `x: [t, k]` with calibration mean |x| `act_mean`.
pub fn search_scales(
    ws: &[(&[f32], usize)],
    k: usize,
    x: &[f32],
    t: usize,
    act_mean: &[f32],
    bits: u32,
    group_size: usize,
) -> Result<ScaleSearch> {
    ensure!(
        act_mean.len() == k,
        "act_mean has {} values, expected {k}",
        act_mean.len()
    );
    ensure!(x.len() == t * k, "calibration rows are not [{t}, {k}]");
    ensure!(t > 0, "AWQ needs calibration rows");
    let mut best: Option<ScaleSearch> = None;
    let mut loss_rtn = f64::NAN;
    for i in 0..AWQ_GRID {
        let r = i as f32 / AWQ_GRID as f32;
        let s = candidate_scales(act_mean, r);
        let loss = scaled_loss(ws, k, x, t, &s, bits, group_size)?;
        if i == 0 {
            loss_rtn = loss;
        }
        if best.as_ref().is_none_or(|b| loss < b.loss) {
            best = Some(ScaleSearch {
                ratio: r,
                scales: s,
                loss,
                loss_rtn: f64::NAN,
            });
        }
    }
    let mut b = best.expect("grid is not empty");
    b.loss_rtn = loss_rtn;
    Ok(b)
}

/// `w[:, c] *= s[c]` for a `[n, k]` weight.
pub fn scale_columns(w: &mut [f32], k: usize, s: &[f32]) {
    for row in w.chunks_exact_mut(k) {
        for (a, b) in row.iter_mut().zip(s) {
            *a *= b;
        }
    }
}

/// `w[r, :] /= s[r]` for a `[n, k]` weight (the producer side of a linear→linear scaling).
pub fn divide_rows(w: &mut [f32], k: usize, s: &[f32]) {
    for (row, &d) in w.chunks_exact_mut(k).zip(s) {
        for a in row {
            *a /= d;
        }
    }
}

/// `x[:, c] /= s[c]` for rows `[t, k]`.
pub fn divide_columns(x: &[f32], k: usize, s: &[f32]) -> Vec<f32> {
    x.chunks_exact(k)
        .flat_map(|row| row.iter().zip(s).map(|(a, b)| a / b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn scaling_is_exact_in_full_precision_and_search_beats_rtn() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, k, t) = (48, 96, 64);
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        // A few channels with large activations, as in real models.
        let x: Vec<f32> = (0..t * k)
            .map(|i| {
                let c = i % k;
                let amp = if c % 17 == 3 { 20.0 } else { 1.0 };
                amp * rng.random_range(-1.0f32..1.0)
            })
            .collect();
        let mean: Vec<f32> = (0..k)
            .map(|c| (0..t).map(|r| x[r * k + c].abs()).sum::<f32>() / t as f32)
            .collect();
        let res = search_scales(&[(&w, n)], k, &x, t, &mean, 3, 32).unwrap();
        assert!(res.loss <= res.loss_rtn);
        // The r = 0 candidate is the identity scaling, whose loss is plain RTN's.
        let rtn = pseudo_quantize(&w, n, k, 3, 32).unwrap();
        let e: Vec<f32> = rtn.iter().zip(&w).map(|(a, b)| a - b).collect();
        let mut y = vec![0f32; t * n];
        ops::matmul_xwt(&x, &e, t, k, n, &mut y);
        let direct = y.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / (t * n) as f64;
        assert!((direct - res.loss_rtn).abs() <= 1e-9 * direct.max(1e-12) + 1e-12);
        // Folding: (W·s)(x/s) = W x.
        let mut ws = w.clone();
        scale_columns(&mut ws, k, &res.scales);
        let xs = divide_columns(&x, k, &res.scales);
        let (mut y0, mut y1) = (vec![0f32; t * n], vec![0f32; t * n]);
        ops::matmul_xwt(&x, &w, t, k, n, &mut y0);
        ops::matmul_xwt(&xs, &ws, t, k, n, &mut y1);
        for (a, b) in y0.iter().zip(&y1) {
            assert!((a - b).abs() < 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
        // With salient channels, activation-aware scaling must find a real improvement.
        assert!(res.ratio > 0.0 && res.loss < res.loss_rtn * 0.95, "{res:?}");
    }
}
