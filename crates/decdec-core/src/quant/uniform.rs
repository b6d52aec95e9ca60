//! Uniform group-wise asymmetric quantization (`rtn`, `awq`), AWQ's pseudo-quantizer.
//!
//! Per output row and group of `group_size` input channels (the last group may be partial):
//! `s = max(max - min, 1e-5) / (2^b - 1)`, `z = clamp(-round(min / s), 0, 2^b - 1)`,
//! `q = clamp(round(w / s) + z, 0, 2^b - 1)`, `ŵ = (q - z) * s`, with round-half-to-even (torch.round).
//! When a group contains both signs (always the case for real weights), every element satisfies
//! `|w - ŵ| <= s/2` and zeros are reproduced exactly.
//!
//! [`clip_search`] is AWQ's `auto_clip`: per (row, group) it shrinks the clamp range
//! `m = max|w| * (1 - i/20)`, `i = 0..10`, and keeps the one that minimizes the mean over calibration
//! tokens of `(Σ_group x · (Q(clamp(w, -m, m)) - w))^2`. The objective is evaluated through the group's
//! Gram matrix `XᵀX / T` (one small GEMM per group and row batch), so its cost does not grow with the
//! number of tokens.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

use super::pack::{self, BLOCK};
use super::round_clamped;

/// Largest number of calibration tokens `clip_search` uses (strided subsample, as AWQ does).
pub const CLIP_MAX_TOKENS: usize = 512;
/// Number of clamp ranges tried per (row, group): `m0 * (1 - i/20)` for `i` in `0..CLIP_GRID`.
pub const CLIP_GRID: usize = 10;

/// A uniformly quantized linear weight in the canonical format (docs/formats.md).
#[derive(Clone, Debug, PartialEq)]
pub struct UniformQuant {
    pub bits: u32,
    pub group_size: usize,
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// `u32[n, words_per_row(k, bits)]`.
    pub qweight: Vec<u32>,
    /// `f32[n, n_groups]`.
    pub scales: Vec<f32>,
    /// `u8[n, n_groups]`, integer zero points in `[0, 2^bits - 1]`.
    pub zeros: Vec<u8>,
}

/// Number of groups of `group_size` covering `k` channels (last one partial).
pub fn n_groups(k: usize, group_size: usize) -> usize {
    k.div_ceil(group_size)
}

/// AWQ group parameters `(s, z)` from the group's min and max.
#[inline]
pub fn group_params(min: f32, max: f32, bits: u32) -> (f32, f32) {
    let maxq = ((1u32 << bits) - 1) as f32;
    let s = (max - min).max(1e-5) / maxq;
    let z = (-(min / s).round_ties_even()).clamp(0.0, maxq);
    (s, z)
}

/// Integer code of `w` for group parameters `(s, z)`.
#[inline]
pub fn quant_code(w: f32, s: f32, z: f32, maxq: f32) -> f32 {
    round_clamped(w / s + z, 0.0, maxq)
}

fn check_shape(w: &[f32], n: usize, k: usize, bits: u32, group_size: usize) -> Result<()> {
    pack::check_bits(bits)?;
    ensure!(group_size > 0, "group size must be positive");
    ensure!(
        w.len() == n * k,
        "weight has {} elements, expected [{n}, {k}]",
        w.len()
    );
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        bail!(
            "weight element [{}, {}] is not finite ({})",
            i / k.max(1),
            i % k.max(1),
            w[i]
        );
    }
    Ok(())
}

/// Quantizes one row given optional per-group clamp limits.
fn quantize_row(
    w: &[f32],
    bits: u32,
    group_size: usize,
    clip: Option<&[f32]>,
    codes: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [u8],
) {
    let maxq = ((1u32 << bits) - 1) as f32;
    for (gi, wg) in w.chunks(group_size).enumerate() {
        let m = clip.map(|c| c[gi]);
        let clamp = |v: f32| match m {
            Some(m) => v.clamp(-m, m),
            None => v,
        };
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in wg {
            let v = clamp(v);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let (s, z) = group_params(lo, hi, bits);
        scales[gi] = s;
        zeros[gi] = z as u8;
        for (j, &v) in wg.iter().enumerate() {
            codes[gi * group_size + j] = quant_code(clamp(v), s, z, maxq) as u8;
        }
    }
}

fn quantize_impl(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
    clip: Option<&[f32]>,
) -> UniformQuant {
    let ng = n_groups(k, group_size);
    let wpr = pack::words_per_row(k, bits);
    let mut qweight = vec![0u32; n * wpr];
    let mut scales = vec![0f32; n * ng];
    let mut zeros = vec![0u8; n * ng];
    if k > 0 && n > 0 {
        qweight
            .par_chunks_mut(wpr)
            .zip(scales.par_chunks_mut(ng))
            .zip(zeros.par_chunks_mut(ng))
            .enumerate()
            .for_each_init(
                || vec![0u8; k],
                |codes, (r, ((qw, sc), ze))| {
                    let c = clip.map(|c| &c[r * ng..(r + 1) * ng]);
                    quantize_row(&w[r * k..(r + 1) * k], bits, group_size, c, codes, sc, ze);
                    pack::pack_row(codes, bits, qw);
                },
            );
    }
    UniformQuant {
        bits,
        group_size,
        k,
        n,
        qweight,
        scales,
        zeros,
    }
}

/// Round-to-nearest group-wise quantization of `w: f32[n, k]` (AWQ pseudo-quantizer).
pub fn quantize_rtn(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
) -> Result<UniformQuant> {
    check_shape(w, n, k, bits, group_size)?;
    Ok(quantize_impl(w, n, k, bits, group_size, None))
}

/// Fake quantization `dequant(quantize_rtn(w))` as `f32[n, k]` without packing (AWQ's scale search
/// evaluates many candidate scalings this way).
pub fn pseudo_quantize(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
) -> Result<Vec<f32>> {
    check_shape(w, n, k, bits, group_size)?;
    let maxq = ((1u32 << bits) - 1) as f32;
    let mut out = w.to_vec();
    if k > 0 {
        out.par_chunks_mut(k).for_each(|row| {
            for g in row.chunks_mut(group_size) {
                let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let (s, z) = group_params(lo, hi, bits);
                for v in g.iter_mut() {
                    *v = (quant_code(*v, s, z, maxq) - z) * s;
                }
            }
        });
    }
    Ok(out)
}

/// Like [`quantize_rtn`] after clamping every group to `[-clip, clip]`; `clip: f32[n, n_groups]`
/// (as returned by [`clip_search`]).
pub fn quantize_clipped(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
    clip: &[f32],
) -> Result<UniformQuant> {
    check_shape(w, n, k, bits, group_size)?;
    let ng = n_groups(k, group_size);
    ensure!(
        clip.len() == n * ng,
        "clip has {} values, expected [{n}, {ng}]",
        clip.len()
    );
    ensure!(
        clip.iter().all(|c| *c >= 0.0),
        "clip values must be non-negative (and not NaN)"
    );
    Ok(quantize_impl(w, n, k, bits, group_size, Some(clip)))
}

/// Pseudo-quantization error `Q(clamp(w, -m, m)) - w` of one group, written into `d`.
fn clipped_error(wg: &[f32], m: f32, bits: u32, d: &mut [f32]) {
    let maxq = ((1u32 << bits) - 1) as f32;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in wg {
        let v = v.clamp(-m, m);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (s, z) = group_params(lo, hi, bits);
    for (o, &v) in d.iter_mut().zip(wg) {
        let q = quant_code(v.clamp(-m, m), s, z, maxq);
        *o = (q - z) * s - v;
    }
}

/// The calibration tokens `clip_search` uses: a strided subsample of at most [`CLIP_MAX_TOKENS`].
pub fn clip_tokens(t: usize) -> Vec<usize> {
    let stride = t.div_ceil(CLIP_MAX_TOKENS).max(1);
    (0..t).step_by(stride).collect()
}

/// Rows of `w` handled by one clip-search task (bounds the scratch memory per task).
const CLIP_ROW_BATCH: usize = 128;

/// AWQ `auto_clip`: the best clamp limit per (row, group), `f32[n, n_groups]`.
///
/// `x: f32[t, k]` are calibration inputs of this linear (for AWQ: already divided by the AWQ scales).
/// Ties keep the larger limit, so the result is never worse than no clipping on the objective.
pub fn clip_search(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
    x: &[f32],
    t: usize,
) -> Result<Vec<f32>> {
    check_shape(w, n, k, bits, group_size)?;
    ensure!(
        x.len() == t * k,
        "calibration inputs have {} values, expected [{t}, {k}]",
        x.len()
    );
    ensure!(
        x.iter().all(|v| v.is_finite()),
        "calibration inputs contain non-finite values"
    );
    let ng = n_groups(k, group_size);
    let tokens = clip_tokens(t);
    let tn = tokens.len();
    let mut clip = vec![0f32; n * ng];
    // Start from "no clipping": m0 = max |w| per (row, group).
    for r in 0..n {
        for (gi, wg) in w[r * k..(r + 1) * k].chunks(group_size).enumerate() {
            clip[r * ng + gi] = wg.iter().fold(0f32, |a, v| a.max(v.abs()));
        }
    }
    if tn == 0 || n == 0 || k == 0 {
        return Ok(clip);
    }
    // Gram matrix per group: G = Xgᵀ Xg / T.
    let grams: Vec<Vec<f32>> = (0..ng)
        .into_par_iter()
        .map(|gi| {
            let c0 = gi * group_size;
            let gs = group_size.min(k - c0);
            let mut xg = vec![0f32; tn * gs];
            for (i, &tok) in tokens.iter().enumerate() {
                xg[i * gs..(i + 1) * gs].copy_from_slice(&x[tok * k + c0..tok * k + c0 + gs]);
            }
            let mut g = vec![0f32; gs * gs];
            // SAFETY: xg is [tn, gs] row-major, g is [gs, gs]; strides describe exactly those buffers.
            unsafe {
                matrixmultiply::sgemm(
                    gs,
                    tn,
                    gs,
                    1.0 / tn as f32,
                    xg.as_ptr(),
                    1,
                    gs as isize,
                    xg.as_ptr(),
                    gs as isize,
                    1,
                    0.0,
                    g.as_mut_ptr(),
                    gs as isize,
                    1,
                );
            }
            g
        })
        .collect();
    let tasks: Vec<(usize, usize)> = (0..ng)
        .flat_map(|gi| (0..n).step_by(CLIP_ROW_BATCH).map(move |r0| (gi, r0)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(gi, r0)| {
            let c0 = gi * group_size;
            let gs = group_size.min(k - c0);
            let rows = CLIP_ROW_BATCH.min(n - r0);
            let cand = rows * CLIP_GRID;
            let mut d = vec![0f32; cand * gs];
            let mut m0s = vec![0f32; rows];
            for (ri, m0_out) in m0s.iter_mut().enumerate() {
                let r = r0 + ri;
                let wg = &w[r * k + c0..r * k + c0 + gs];
                let m0 = wg.iter().fold(0f32, |a, v| a.max(v.abs()));
                *m0_out = m0;
                for i in 0..CLIP_GRID {
                    let m = m0 * (1.0 - i as f32 / 20.0);
                    let ci = ri * CLIP_GRID + i;
                    clipped_error(wg, m, bits, &mut d[ci * gs..(ci + 1) * gs]);
                }
            }
            let mut e = vec![0f32; cand * gs];
            // SAFETY: d is [cand, gs], grams[gi] is [gs, gs], e is [cand, gs], all row-major.
            unsafe {
                matrixmultiply::sgemm(
                    cand,
                    gs,
                    gs,
                    1.0,
                    d.as_ptr(),
                    gs as isize,
                    1,
                    grams[gi].as_ptr(),
                    gs as isize,
                    1,
                    0.0,
                    e.as_mut_ptr(),
                    gs as isize,
                    1,
                );
            }
            let best: Vec<f32> = (0..rows)
                .map(|ri| {
                    let mut best_i = 0;
                    let mut best_err = f64::INFINITY;
                    for i in 0..CLIP_GRID {
                        let ci = ri * CLIP_GRID + i;
                        let err: f64 = d[ci * gs..(ci + 1) * gs]
                            .iter()
                            .zip(&e[ci * gs..(ci + 1) * gs])
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum();
                        if err < best_err {
                            best_err = err;
                            best_i = i;
                        }
                    }
                    m0s[ri] * (1.0 - best_i as f32 / 20.0)
                })
                .collect();
            (gi, r0, best)
        })
        .collect();
    for (gi, r0, best) in results {
        for (ri, m) in best.into_iter().enumerate() {
            clip[(r0 + ri) * ng + gi] = m;
        }
    }
    Ok(clip)
}

impl UniformQuant {
    /// Number of groups per row.
    pub fn n_groups(&self) -> usize {
        n_groups(self.k, self.group_size)
    }

    /// `u32` words per packed row.
    pub fn words_per_row(&self) -> usize {
        pack::words_per_row(self.k, self.bits)
    }

    /// Checks that the tensors have the shapes the header fields promise (for loaded artifacts).
    pub fn validate(&self) -> Result<()> {
        pack::check_bits(self.bits)?;
        ensure!(self.group_size > 0, "group size must be positive");
        let (n, ng) = (self.n, self.n_groups());
        ensure!(
            self.qweight.len() == n * self.words_per_row(),
            "qweight has {} words, expected [{n}, {}]",
            self.qweight.len(),
            self.words_per_row()
        );
        ensure!(
            self.scales.len() == n * ng,
            "scales has {} values, expected [{n}, {ng}]",
            self.scales.len()
        );
        ensure!(
            self.zeros.len() == n * ng,
            "zeros has {} values, expected [{n}, {ng}]",
            self.zeros.len()
        );
        let maxq = (1u32 << self.bits) - 1;
        ensure!(
            self.zeros.iter().all(|&z| z as u32 <= maxq),
            "zero point out of range for {} bits",
            self.bits
        );
        Ok(())
    }

    /// Dequantizes one row into `out` (length k).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let (k, g, b, ng) = (self.k, self.group_size, self.bits as usize, self.n_groups());
        assert_eq!(out.len(), k, "dequantize_row: output length");
        let words = &self.qweight[row * self.words_per_row()..(row + 1) * self.words_per_row()];
        let sc = &self.scales[row * ng..(row + 1) * ng];
        let ze = &self.zeros[row * ng..(row + 1) * ng];
        let mut codes = [0u8; BLOCK];
        for (bi, chunk) in out.chunks_mut(BLOCK).enumerate() {
            pack::unpack_block(&words[bi * b..(bi + 1) * b], self.bits, &mut codes);
            for (j, o) in chunk.iter_mut().enumerate() {
                let gi = (bi * BLOCK + j) / g;
                *o = (codes[j] as f32 - ze[gi] as f32) * sc[gi];
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

    /// Base GEMV from the packed codes: `out[n] = Σ_k ŵ[n, k] x[k]`, f32 accumulation.
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
        let (g, ng, wpr) = (self.group_size, self.n_groups(), self.words_per_row());
        // Groups made of whole blocks: one (scale, zero) per block, scale applied once per block.
        let aligned = g % BLOCK == 0;
        out.par_iter_mut()
            .enumerate()
            .with_min_len(16)
            .for_each(|(r, o)| {
                let words = &self.qweight[r * wpr..(r + 1) * wpr];
                let sc = &self.scales[r * ng..(r + 1) * ng];
                let ze = &self.zeros[r * ng..(r + 1) * ng];
                let mut codes = [0u8; BLOCK];
                let mut acc = 0f32;
                for (bi, xc) in x.chunks(BLOCK).enumerate() {
                    pack::unpack_block_n::<B>(&words[bi * B..(bi + 1) * B], &mut codes);
                    if aligned {
                        let gi = bi * BLOCK / g;
                        let z = ze[gi] as f32;
                        let mut lanes = [0f32; 8];
                        for (j, (&xv, &c)) in xc.iter().zip(&codes).enumerate() {
                            lanes[j % 8] += (c as f32 - z) * xv;
                        }
                        acc += lanes.iter().sum::<f32>() * sc[gi];
                    } else {
                        for (j, (&xv, &c)) in xc.iter().zip(&codes).enumerate() {
                            let gi = (bi * BLOCK + j) / g;
                            acc += (c as f32 - ze[gi] as f32) * sc[gi] * xv;
                        }
                    }
                }
                *o = acc;
            });
    }

    /// Bytes of the canonical tensors (qweight u32, scales f32, zeros u8).
    pub fn gpu_bytes(&self) -> usize {
        self.qweight.len() * 4 + self.scales.len() * 4 + self.zeros.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::normal;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Random weights where every group holds both signs (true of real weights).
    fn two_sided(rng: &mut StdRng, n: usize, k: usize, g: usize) -> Vec<f32> {
        let mut w: Vec<f32> = (0..n * k).map(|_| normal(rng)).collect();
        for r in 0..n {
            for c0 in (0..k).step_by(g) {
                let len = g.min(k - c0);
                if len >= 2 {
                    w[r * k + c0] = w[r * k + c0].abs() + 0.01;
                    w[r * k + c0 + 1] = -w[r * k + c0 + 1].abs() - 0.01;
                }
            }
        }
        w
    }

    #[test]
    fn rtn_error_bound_and_exact_zeros() {
        let mut rng = StdRng::seed_from_u64(1);
        for &bits in &[2u32, 3, 4, 8] {
            for &(n, k, g) in &[
                (8usize, 576usize, 128usize),
                (3, 100, 32),
                (5, 70, 64),
                (2, 33, 7),
            ] {
                let mut w = two_sided(&mut rng, n, k, g);
                // Sprinkle exact zeros.
                for i in (5..n * k).step_by(11) {
                    w[i] = 0.0;
                }
                let q = quantize_rtn(&w, n, k, bits, g).unwrap();
                q.validate().unwrap();
                let ng = n_groups(k, g);
                assert_eq!(q.scales.len(), n * ng);
                let deq = q.dequantize();
                assert_eq!(pseudo_quantize(&w, n, k, bits, g).unwrap(), deq);
                for r in 0..n {
                    for c in 0..k {
                        let s = q.scales[r * ng + c / g];
                        let (wv, dv) = (w[r * k + c], deq[r * k + c]);
                        assert!(
                            (wv - dv).abs() <= s * 0.5 * (1.0 + 1e-4) + 1e-6,
                            "bits {bits} [{r},{c}] {wv} vs {dv} (s {s})"
                        );
                        if wv == 0.0 {
                            assert_eq!(dv, 0.0, "zero not exact at bits {bits} [{r},{c}]");
                        }
                    }
                }
                // Against an independent scalar transcription of the formulas.
                let maxq = ((1u32 << bits) - 1) as f32;
                for r in 0..n {
                    for gi in 0..ng {
                        let grp = &w[r * k + gi * g..r * k + (gi * g + g).min(k)];
                        let mn = grp.iter().cloned().fold(f32::INFINITY, f32::min);
                        let mx = grp.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let s = (mx - mn).max(1e-5) / maxq;
                        let z = (-(mn / s).round_ties_even()).clamp(0.0, maxq);
                        assert_eq!(q.scales[r * ng + gi], s);
                        assert_eq!(q.zeros[r * ng + gi] as f32, z);
                        for (j, &v) in grp.iter().enumerate() {
                            let qq = ((v / s).round_ties_even() + z).clamp(0.0, maxq);
                            assert_eq!(deq[r * k + gi * g + j], (qq - z) * s);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemv_matches_dense_dequant() {
        let mut rng = StdRng::seed_from_u64(2);
        for &bits in &[2u32, 3, 4, 8] {
            let (n, k, g) = (37, 300, 128);
            let w: Vec<f32> = (0..n * k).map(|_| normal(&mut rng)).collect();
            let x: Vec<f32> = (0..k).map(|_| normal(&mut rng)).collect();
            let q = quantize_rtn(&w, n, k, bits, g).unwrap();
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

    /// The clip objective computed directly over tokens (independent of the Gram formulation).
    #[allow(clippy::too_many_arguments)]
    fn objective(
        w: &[f32],
        q: &[f32],
        k: usize,
        g: usize,
        x: &[f32],
        tokens: &[usize],
        r: usize,
        gi: usize,
    ) -> f64 {
        let c0 = gi * g;
        let c1 = (c0 + g).min(k);
        tokens
            .iter()
            .map(|&t| {
                let e: f64 = (c0..c1)
                    .map(|c| x[t * k + c] as f64 * (q[r * k + c] as f64 - w[r * k + c] as f64))
                    .sum();
                e * e
            })
            .sum::<f64>()
            / tokens.len() as f64
    }

    #[test]
    fn clip_search_never_worse_than_no_clip() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, k, g, t) = (40, 200, 64, 1100);
        // Heavy-tailed weights so that clipping helps on some groups.
        let w: Vec<f32> = (0..n * k)
            .map(|_| {
                let v = normal(&mut rng);
                if rng.random::<f32>() < 0.02 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect();
        let x: Vec<f32> = (0..t * k).map(|_| normal(&mut rng)).collect();
        let tokens = clip_tokens(t);
        assert!(tokens.len() <= CLIP_MAX_TOKENS && tokens.len() >= CLIP_MAX_TOKENS / 2);
        for &bits in &[3u32, 4] {
            let clip = clip_search(&w, n, k, bits, g, &x, t).unwrap();
            let plain = quantize_rtn(&w, n, k, bits, g).unwrap().dequantize();
            let clipped = quantize_clipped(&w, n, k, bits, g, &clip)
                .unwrap()
                .dequantize();
            let ng = n_groups(k, g);
            let mut improved = 0;
            for r in 0..n {
                for gi in 0..ng {
                    let m0 = w[r * k + gi * g..r * k + ((gi + 1) * g).min(k)]
                        .iter()
                        .fold(0f32, |a, v| a.max(v.abs()));
                    let m = clip[r * ng + gi];
                    assert!(
                        m <= m0 && m >= m0 * 0.55 - 1e-6,
                        "clip {m} outside the grid for m0 {m0}"
                    );
                    let e_plain = objective(&w, &plain, k, g, &x, &tokens, r, gi);
                    let e_clip = objective(&w, &clipped, k, g, &x, &tokens, r, gi);
                    assert!(
                        e_clip <= e_plain * (1.0 + 1e-3) + 1e-9,
                        "bits {bits} [{r},{gi}]: {e_clip} > {e_plain}"
                    );
                    if e_clip < e_plain * 0.999 {
                        improved += 1;
                    }
                }
            }
            assert!(
                improved > 0,
                "clip search never found a better clamp on heavy-tailed data"
            );
        }
    }

    #[test]
    fn rejects_bad_input() {
        let w = vec![0f32; 12];
        assert!(quantize_rtn(&w, 3, 4, 5, 2).is_err());
        assert!(quantize_rtn(&w, 3, 4, 4, 0).is_err());
        assert!(quantize_rtn(&w, 3, 5, 4, 2).is_err());
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        assert!(quantize_rtn(&bad, 3, 4, 4, 2).is_err());
        assert!(quantize_clipped(&w, 3, 4, 4, 2, &[1.0; 5]).is_err());
    }
}
