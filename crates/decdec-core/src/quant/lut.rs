//! Non-uniform per-output-channel LUT quantization (`lut`), SqueezeLLM-style.
//!
//! Each output row gets its own codebook of `2^bits` centroids, found by 1-D k-means weighted by the
//! sensitivity of each input channel (`sensitivity[k]`, e.g. the calibration `Σ x²`), so that the
//! objective is `Σ_k a_k (w[n,k] - lut[n, q[n,k]])²` — the expected output error for inputs with that
//! second moment. `W[n, k] = lut[n, q[n, k]]`, `lut: f32[N, 2^bits]`, codes packed as in [`super::pack`].
//!
//! Per row the weights are sorted once; with prefix sums of `a` and `a·w` a Lloyd step costs
//! `O(2^bits · log K)` (cluster boundaries by binary search, means by prefix differences). Two starts
//! are run and the better one kept: weighted quantiles, and the row's uniform min-max grid (the levels of
//! per-channel RTN), which guarantees the result is never worse than per-channel RTN on the weighted
//! objective. Rows with at most `2^bits` distinct values are reproduced exactly. Centroids are sorted.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

use super::pack::{self, BLOCK};
use super::uniform::{group_params, quant_code};

/// Lloyd iterations per start (stops earlier once the assignment is stable).
pub const LLOYD_ITERS: usize = 30;

/// A LUT-quantized linear weight in the canonical format (docs/formats.md).
#[derive(Clone, Debug, PartialEq)]
pub struct LutQuant {
    pub bits: u32,
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// `u32[n, words_per_row(k, bits)]`.
    pub qweight: Vec<u32>,
    /// `f32[n, 2^bits]`, sorted ascending per row.
    pub lut: Vec<f32>,
}

/// Per-row scratch of the k-means.
struct RowScratch {
    /// (value, original column), sorted by value.
    sorted: Vec<(f32, u32)>,
    /// Prefix sums of the weights and weight·value over `sorted` (length k + 1).
    pw: Vec<f64>,
    pwx: Vec<f64>,
    codes: Vec<u8>,
}

/// Cluster boundaries in the sorted row: cluster j is `sorted[splits[j]..splits[j+1]]`; a value equal to
/// the midpoint of two centroids goes to the lower one.
fn splits_for(sorted: &[(f32, u32)], c: &[f32], splits: &mut [usize]) {
    let l = c.len();
    splits[0] = 0;
    for j in 1..l {
        let m = c[j - 1] + (c[j] - c[j - 1]) * 0.5;
        splits[j] = sorted.partition_point(|&(v, _)| v <= m).max(splits[j - 1]);
    }
    splits[l] = sorted.len();
}

/// Weighted squared error of the assignment given by `splits`.
fn weighted_sse(sorted: &[(f32, u32)], sens: &[f32], eps: f32, c: &[f32], splits: &[usize]) -> f64 {
    let mut e = 0f64;
    for j in 0..c.len() {
        for &(v, col) in &sorted[splits[j]..splits[j + 1]] {
            let d = (v - c[j]) as f64;
            e += (sens[col as usize] + eps) as f64 * d * d;
        }
    }
    e
}

/// Lloyd iterations from `c` (sorted); returns the final centroids, boundaries and weighted error.
fn lloyd(s: &RowScratch, sens: &[f32], eps: f32, mut c: Vec<f32>) -> (Vec<f32>, Vec<usize>, f64) {
    let l = c.len();
    let mut splits = vec![0usize; l + 1];
    let mut prev = vec![usize::MAX; l + 1];
    for _ in 0..LLOYD_ITERS {
        splits_for(&s.sorted, &c, &mut splits);
        if splits == prev {
            break;
        }
        for j in 0..l {
            let (lo, hi) = (splits[j], splits[j + 1]);
            let wsum = s.pw[hi] - s.pw[lo];
            if hi > lo && wsum > 0.0 {
                let mean = ((s.pwx[hi] - s.pwx[lo]) / wsum) as f32;
                // Keep the mean inside the cluster's range despite rounding of the prefix sums.
                c[j] = mean.clamp(s.sorted[lo].0, s.sorted[hi - 1].0);
            }
        }
        c.sort_by(f32::total_cmp);
        std::mem::swap(&mut prev, &mut splits);
    }
    splits_for(&s.sorted, &c, &mut splits);
    let e = weighted_sse(&s.sorted, sens, eps, &c, &splits);
    (c, splits, e)
}

fn quantize_row(w: &[f32], bits: u32, sens: &[f32], eps: f32, s: &mut RowScratch, lut: &mut [f32]) {
    let l = 1usize << bits;
    let k = w.len();
    s.sorted.clear();
    s.sorted
        .extend(w.iter().enumerate().map(|(i, &v)| (v, i as u32)));
    s.sorted
        .sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // Distinct values; if they fit, the codebook is exact.
    let mut distinct: Vec<f32> = Vec::with_capacity(l);
    for &(v, _) in &s.sorted {
        if distinct.last() != Some(&v) {
            if distinct.len() == l {
                distinct.clear();
                break;
            }
            distinct.push(v);
        }
    }
    let (c, splits) = if !distinct.is_empty() {
        let mut c = distinct;
        let last = *c.last().unwrap();
        c.resize(l, last);
        let mut splits = vec![0usize; l + 1];
        splits_for(&s.sorted, &c, &mut splits);
        (c, splits)
    } else {
        s.pw.clear();
        s.pwx.clear();
        s.pw.push(0.0);
        s.pwx.push(0.0);
        let (mut aw, mut awx) = (0f64, 0f64);
        for &(v, col) in &s.sorted {
            let a = (sens[col as usize] + eps) as f64;
            aw += a;
            awx += a * v as f64;
            s.pw.push(aw);
            s.pwx.push(awx);
        }
        // Start 1: weighted quantiles (cluster j starts at the (j + 0.5)/L quantile).
        let quant: Vec<f32> = (0..l)
            .map(|j| {
                let target = aw * (j as f64 + 0.5) / l as f64;
                let p = s.pw[1..].partition_point(|&x| x < target).min(k - 1);
                s.sorted[p].0
            })
            .collect();
        // Start 2: the per-channel RTN grid (asymmetric min-max, integer zero point).
        let (mn, mx) = (s.sorted[0].0, s.sorted[k - 1].0);
        let (sc, z) = group_params(mn, mx, bits);
        let grid: Vec<f32> = (0..l).map(|q| (q as f32 - z) * sc).collect();
        let (c1, s1, e1) = lloyd(s, sens, eps, quant);
        let (c2, s2, e2) = lloyd(s, sens, eps, grid);
        if e2 < e1 {
            (c2, s2)
        } else {
            (c1, s1)
        }
    };
    s.codes.resize(k, 0);
    for j in 0..l {
        for &(_, col) in &s.sorted[splits[j]..splits[j + 1]] {
            s.codes[col as usize] = j as u8;
        }
    }
    lut.copy_from_slice(&c);
}

/// Weighted 1-D k-means quantization of `w: f32[n, k]` with per-input-channel weights `sensitivity`
/// (length k, non-negative; a tiny epsilon is added so that zero-sensitivity channels still count).
pub fn quantize_lut(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    sensitivity: &[f32],
) -> Result<LutQuant> {
    pack::check_bits(bits)?;
    ensure!(
        w.len() == n * k,
        "weight has {} elements, expected [{n}, {k}]",
        w.len()
    );
    ensure!(
        sensitivity.len() == k,
        "sensitivity has {} values, expected K = {k}",
        sensitivity.len()
    );
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        bail!(
            "weight element [{}, {}] is not finite ({})",
            i / k,
            i % k,
            w[i]
        );
    }
    if let Some(i) = sensitivity
        .iter()
        .position(|v| !(v.is_finite() && *v >= 0.0))
    {
        bail!(
            "sensitivity[{i}] = {} is not a finite non-negative number",
            sensitivity[i]
        );
    }
    let l = 1usize << bits;
    let mean = sensitivity.iter().map(|&v| v as f64).sum::<f64>() / k.max(1) as f64;
    let eps = if mean > 0.0 {
        (mean * 1e-6) as f32
    } else {
        1.0
    };
    let wpr = pack::words_per_row(k, bits);
    let mut qweight = vec![0u32; n * wpr];
    let mut lut = vec![0f32; n * l];
    if k > 0 && n > 0 {
        qweight
            .par_chunks_mut(wpr)
            .zip(lut.par_chunks_mut(l))
            .enumerate()
            .for_each_init(
                || RowScratch {
                    sorted: Vec::new(),
                    pw: Vec::new(),
                    pwx: Vec::new(),
                    codes: Vec::new(),
                },
                |s, (r, (qw, lt))| {
                    quantize_row(&w[r * k..(r + 1) * k], bits, sensitivity, eps, s, lt);
                    pack::pack_row(&s.codes, bits, qw);
                },
            );
    }
    Ok(LutQuant {
        bits,
        k,
        n,
        qweight,
        lut,
    })
}

/// Per-channel RTN (one group per row) reconstruction of one row: the baseline that
/// [`quantize_lut`] never loses to on its weighted objective.
pub fn rtn_row_levels(w: &[f32], bits: u32) -> Vec<f32> {
    let maxq = ((1u32 << bits) - 1) as f32;
    let mn = w.iter().cloned().fold(f32::INFINITY, f32::min);
    let mx = w.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let (s, z) = group_params(mn, mx, bits);
    w.iter()
        .map(|&v| (quant_code(v, s, z, maxq) - z) * s)
        .collect()
}

impl LutQuant {
    /// Codebook entries per row.
    pub fn levels(&self) -> usize {
        1 << self.bits
    }

    /// `u32` words per packed row.
    pub fn words_per_row(&self) -> usize {
        pack::words_per_row(self.k, self.bits)
    }

    /// Checks that the tensors have the shapes the header fields promise (for loaded artifacts).
    pub fn validate(&self) -> Result<()> {
        pack::check_bits(self.bits)?;
        ensure!(
            self.qweight.len() == self.n * self.words_per_row(),
            "qweight has {} words, expected [{}, {}]",
            self.qweight.len(),
            self.n,
            self.words_per_row()
        );
        ensure!(
            self.lut.len() == self.n * self.levels(),
            "lut has {} values, expected [{}, {}]",
            self.lut.len(),
            self.n,
            self.levels()
        );
        Ok(())
    }

    /// Dequantizes one row into `out` (length k).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.k, "dequantize_row: output length");
        let (b, wpr, l) = (self.bits as usize, self.words_per_row(), self.levels());
        let words = &self.qweight[row * wpr..(row + 1) * wpr];
        let lut = &self.lut[row * l..(row + 1) * l];
        let mut codes = [0u8; BLOCK];
        for (bi, chunk) in out.chunks_mut(BLOCK).enumerate() {
            pack::unpack_block(&words[bi * b..(bi + 1) * b], self.bits, &mut codes);
            for (o, &c) in chunk.iter_mut().zip(&codes) {
                *o = lut[c as usize];
            }
        }
    }

    /// Dequantizes into `out: f32[n, k]`.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        super::dequantize_rows(self.n, self.k, out, |r, o| self.dequantize_row(r, o));
    }

    /// Dequantized weight `f32[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        self.dequantize_into(&mut out);
        out
    }

    /// Base GEMV from the packed codes: `out[n] = Σ_k lut[n, q[n, k]] x[k]`, f32 accumulation.
    pub fn gemv(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), self.k, "gemv: input length");
        assert_eq!(out.len(), self.n, "gemv: output length");
        match self.bits {
            2 => self.gemv_n::<2>(x, out),
            3 => self.gemv_n::<3>(x, out),
            4 => self.gemv_n::<4>(x, out),
            _ => self.gemv_n::<8>(x, out),
        }
    }

    fn gemv_n<const B: usize>(&self, x: &[f32], out: &mut [f32]) {
        let (wpr, l) = (self.words_per_row(), self.levels());
        out.par_iter_mut()
            .enumerate()
            .with_min_len(16)
            .for_each(|(r, o)| {
                let words = &self.qweight[r * wpr..(r + 1) * wpr];
                let lut = &self.lut[r * l..(r + 1) * l];
                let mut codes = [0u8; BLOCK];
                let mut lanes = [0f32; 8];
                for (bi, xc) in x.chunks(BLOCK).enumerate() {
                    pack::unpack_block_n::<B>(&words[bi * B..(bi + 1) * B], &mut codes);
                    for (j, (&xv, &c)) in xc.iter().zip(&codes).enumerate() {
                        lanes[j % 8] += lut[c as usize] * xv;
                    }
                }
                *o = lanes.iter().sum();
            });
    }

    /// Bytes of the canonical tensors (qweight u32, lut f32).
    pub fn gpu_bytes(&self) -> usize {
        self.qweight.len() * 4 + self.lut.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::normal;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Student-t-like heavy tails: normal / sqrt(chi2_3 / 3).
    fn heavy(rng: &mut StdRng) -> f32 {
        let chi: f32 = (0..3).map(|_| normal(rng).powi(2)).sum::<f32>() / 3.0;
        normal(rng) / chi.sqrt().max(0.05)
    }

    fn werr(w: &[f32], q: &[f32], sens: &[f32]) -> f64 {
        w.iter()
            .zip(q)
            .zip(sens)
            .map(|((a, b), s)| *s as f64 * ((a - b) as f64).powi(2))
            .sum()
    }

    #[test]
    fn kmeans_beats_per_channel_rtn_on_heavy_tails() {
        let mut rng = StdRng::seed_from_u64(11);
        let (n, k) = (24, 700);
        let w: Vec<f32> = (0..n * k).map(|_| heavy(&mut rng) * 0.02).collect();
        let weighted: Vec<f32> = (0..k).map(|_| normal(&mut rng).powi(2) + 0.01).collect();
        let flat = vec![1f32; k];
        for &bits in &[2u32, 3, 4] {
            for sens in [&flat, &weighted] {
                let q = quantize_lut(&w, n, k, bits, sens).unwrap();
                q.validate().unwrap();
                let deq = q.dequantize();
                let (mut e_lut, mut e_rtn) = (0f64, 0f64);
                for r in 0..n {
                    let row = &w[r * k..(r + 1) * k];
                    let lut = &q.lut[r * q.levels()..(r + 1) * q.levels()];
                    assert!(
                        lut.windows(2).all(|p| p[0] <= p[1]),
                        "centroids not sorted: {lut:?}"
                    );
                    let rtn = rtn_row_levels(row, bits);
                    let (el, er) = (
                        werr(row, &deq[r * k..(r + 1) * k], sens),
                        werr(row, &rtn, sens),
                    );
                    assert!(
                        el <= er * (1.0 + 1e-5),
                        "bits {bits} row {r}: lut {el} > rtn {er}"
                    );
                    e_lut += el;
                    e_rtn += er;
                }
                // On heavy tails k-means is much better than a uniform grid, not just equal.
                assert!(
                    e_lut < 0.8 * e_rtn,
                    "bits {bits}: lut {e_lut} vs rtn {e_rtn}"
                );
            }
        }
    }

    #[test]
    fn codes_are_nearest_centroids() {
        let mut rng = StdRng::seed_from_u64(12);
        let (n, k) = (5, 333);
        let w: Vec<f32> = (0..n * k).map(|_| heavy(&mut rng)).collect();
        let q = quantize_lut(&w, n, k, 3, &vec![1.0; k]).unwrap();
        let codes = pack::unpack(&q.qweight, n, k, 3).unwrap();
        for r in 0..n {
            let lut = &q.lut[r * 8..(r + 1) * 8];
            for c in 0..k {
                let v = w[r * k + c];
                let got = (v - lut[codes[r * k + c] as usize]).abs();
                let best = lut
                    .iter()
                    .map(|l| (v - l).abs())
                    .fold(f32::INFINITY, f32::min);
                assert!(got <= best + 1e-6 * v.abs().max(1.0), "row {r} col {c}");
            }
        }
    }

    #[test]
    fn exact_when_few_distinct_values() {
        let mut rng = StdRng::seed_from_u64(13);
        for &bits in &[2u32, 3, 4, 8] {
            let l = 1usize << bits;
            let (n, k) = (4, 97);
            let mut w = vec![0f32; n * k];
            for r in 0..n {
                let nd = if r == n - 1 { l } else { (r + 1).min(l) };
                let vals: Vec<f32> = (0..nd).map(|_| normal(&mut rng)).collect();
                for c in 0..k {
                    w[r * k + c] = vals[rng.random_range(0..nd)];
                }
            }
            let sens: Vec<f32> = (0..k).map(|_| rng.random::<f32>()).collect();
            let q = quantize_lut(&w, n, k, bits, &sens).unwrap();
            assert_eq!(q.dequantize(), w, "bits {bits}");
        }
    }

    #[test]
    fn gemv_matches_dense_dequant() {
        let mut rng = StdRng::seed_from_u64(14);
        for &bits in &[2u32, 3, 4, 8] {
            let (n, k) = (19, 250);
            let w: Vec<f32> = (0..n * k).map(|_| normal(&mut rng)).collect();
            let x: Vec<f32> = (0..k).map(|_| normal(&mut rng)).collect();
            let q = quantize_lut(&w, n, k, bits, &vec![1.0; k]).unwrap();
            let deq = q.dequantize();
            let mut y = vec![f32::NAN; n];
            q.gemv(&x, &mut y);
            for r in 0..n {
                let want: f64 = (0..k).map(|c| deq[r * k + c] as f64 * x[c] as f64).sum();
                let mag: f64 = (0..k)
                    .map(|c| (deq[r * k + c] as f64 * x[c] as f64).abs())
                    .sum();
                assert!(
                    (y[r] as f64 - want).abs() <= 1e-5 * mag + 1e-6,
                    "bits {bits} row {r}"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let w = vec![0.5f32; 8];
        assert!(quantize_lut(&w, 2, 4, 5, &[1.0; 4]).is_err());
        assert!(quantize_lut(&w, 2, 4, 3, &[1.0; 3]).is_err());
        assert!(quantize_lut(&w, 2, 4, 3, &[1.0, -1.0, 1.0, 1.0]).is_err());
        let mut bad = w.clone();
        bad[0] = f32::INFINITY;
        assert!(quantize_lut(&bad, 2, 4, 3, &[1.0; 4]).is_err());
    }
}
