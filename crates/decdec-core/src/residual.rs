//! The DEC residual codec (docs/formats.md, "DEC residual").
//!
//! `R = W_ref - dequant(Q)` (`[N, K]`) is quantized symmetrically to `r` bits (2, 4 or 8) with one scale
//! per output channel, chosen from the 32-point grid `s_i = smax * (i+1)/32`, `smax = max|R[n,:]| / L`,
//! `L = 2^(r-1) - 1`, minimizing the row's mean squared error (the first minimum wins). Levels are
//! `clamp(round_half_even(R / s), -L, L)`, stored as `level + 2^(r-1)`.
//!
//! Storage is transposed so that **one input channel's residual row is contiguous across output
//! channels** (what the DEC fetch reads over PCIe): `codes: u32[K, words_per_row]`,
//! `words_per_row = ceil(N*r/32)`, output n at bits `[(n*r) % 32, +r)` of word `n*r/32`; padding codes
//! are `2^(r-1)` (value 0). `R_hat[k, n] = (code - 2^(r-1)) * scales[n]`.
//!
//! [`Residual::add_rows`] is the CPU twin of the DEC fetch kernel.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

use crate::quant::round_clamped;

/// Residual bit widths the codec supports.
pub const RESIDUAL_BITS: [u32; 3] = [2, 4, 8];
/// Candidate scales per output channel.
pub const SCALE_GRID: usize = 32;

/// Quantized, transposed DEC residual of one linear.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    pub bits: u32,
    /// Input channels (rows of `codes`).
    pub k: usize,
    /// Output channels.
    pub n: usize,
    pub words_per_row: usize,
    /// `u32[k, words_per_row]`.
    pub codes: Vec<u32>,
    /// `f32[n]`, one per output channel.
    pub scales: Vec<f32>,
}

/// Error unless `bits` is one of [`RESIDUAL_BITS`].
pub fn check_residual_bits(bits: u32) -> Result<()> {
    if !RESIDUAL_BITS.contains(&bits) {
        bail!("unsupported residual bit width {bits} (supported: 2, 4, 8)");
    }
    Ok(())
}

/// Words per residual row for `n` output channels at `bits`.
pub fn residual_words_per_row(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Largest level magnitude `L = 2^(r-1) - 1`.
fn max_level(bits: u32) -> f32 {
    ((1u32 << (bits - 1)) - 1) as f32
}

/// Chooses the scale of one output channel and writes its levels (in `-L..=L`).
fn encode_row(r: &[f32], bits: u32, levels: &mut [i8]) -> f32 {
    let lmax = max_level(bits);
    let amax = r.iter().fold(0f32, |a, v| a.max(v.abs()));
    if amax == 0.0 {
        levels.fill(0);
        return 0.0;
    }
    let smax = amax / lmax;
    let mut best = (f64::INFINITY, smax);
    for i in 0..SCALE_GRID {
        let s = smax * (i + 1) as f32 / SCALE_GRID as f32;
        // f32 sums per 64-element chunk (vectorizable), f64 across chunks (accurate).
        let mut total = 0f64;
        for chunk in r.chunks(64) {
            let mut err = 0f32;
            for &v in chunk {
                let d = v - round_clamped(v / s, -lmax, lmax) * s;
                err += d * d;
            }
            total += err as f64;
        }
        if total < best.0 {
            best = (total, s);
        }
    }
    let s = best.1;
    for (l, &v) in levels.iter_mut().zip(r) {
        *l = round_clamped(v / s, -lmax, lmax) as i8;
    }
    s
}

impl Residual {
    /// Quantizes `r: f32[n, k]` (row-major, `R = W_ref - dequant(Q)`) to `bits` per element.
    pub fn encode(r: &[f32], n: usize, k: usize, bits: u32) -> Result<Residual> {
        check_residual_bits(bits)?;
        ensure!(
            r.len() == n * k,
            "residual has {} elements, expected [{n}, {k}]",
            r.len()
        );
        if let Some(i) = r.iter().position(|v| !v.is_finite()) {
            bail!(
                "residual element [{}, {}] is not finite ({})",
                i / k,
                i % k,
                r[i]
            );
        }
        let mut levels = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        if k > 0 {
            levels
                .par_chunks_mut(k)
                .zip(scales.par_iter_mut())
                .enumerate()
                .for_each(|(row, (lv, s))| *s = encode_row(&r[row * k..(row + 1) * k], bits, lv));
        }
        let wpr = residual_words_per_row(n, bits);
        let mut codes = vec![0u32; k * wpr];
        let off = 1i32 << (bits - 1);
        let per_word = 32 / bits as usize;
        if wpr > 0 {
            codes.par_chunks_mut(wpr).enumerate().for_each(|(kk, dst)| {
                for (wi, word) in dst.iter_mut().enumerate() {
                    let mut v = 0u32;
                    for t in 0..per_word {
                        let nn = wi * per_word + t;
                        let code = if nn < n {
                            levels[nn * k + kk] as i32 + off
                        } else {
                            off
                        };
                        v |= (code as u32) << (t * bits as usize);
                    }
                    *word = v;
                }
            });
        }
        Ok(Residual {
            bits,
            k,
            n,
            words_per_row: wpr,
            codes,
            scales,
        })
    }

    /// Checks that the tensors have the shapes the header fields promise (for loaded artifacts).
    pub fn validate(&self) -> Result<()> {
        check_residual_bits(self.bits)?;
        let wpr = residual_words_per_row(self.n, self.bits);
        ensure!(
            self.words_per_row == wpr,
            "residual words_per_row {} != {wpr}",
            self.words_per_row
        );
        ensure!(
            self.codes.len() == self.k * wpr,
            "residual has {} words, expected [{}, {wpr}]",
            self.codes.len(),
            self.k
        );
        ensure!(
            self.scales.len() == self.n,
            "residual_scales has {} values, expected {}",
            self.scales.len(),
            self.n
        );
        Ok(())
    }

    /// Stored code of (input channel `row`, output channel `col`).
    #[inline]
    pub fn code(&self, row: usize, col: usize) -> u32 {
        let b = self.bits as usize;
        let word = self.codes[row * self.words_per_row + col * b / 32];
        (word >> ((col * b) % 32)) & ((1u32 << b) - 1)
    }

    /// `R_hat[row, col]` for input channel `row`, output channel `col`.
    #[inline]
    pub fn value(&self, row: usize, col: usize) -> f32 {
        (self.code(row, col) as i32 - (1i32 << (self.bits - 1))) as f32 * self.scales[col]
    }

    /// Decoded residual in the weight layout, `f32[n, k]`.
    pub fn decode_dense(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut out = vec![0f32; n * k];
        if k > 0 {
            out.par_chunks_mut(k).enumerate().for_each(|(col, o)| {
                for (row, v) in o.iter_mut().enumerate() {
                    *v = self.value(row, col);
                }
            });
        }
        out
    }

    /// DEC fetch twin: `out[n] += Σ_i acts[i] * R_hat[rows[i], n]`.
    ///
    /// Levels are accumulated per output channel and scaled once at the end (the scale is per column).
    pub fn add_rows(&self, rows: &[u32], acts: &[f32], out: &mut [f32]) {
        assert_eq!(
            rows.len(),
            acts.len(),
            "add_rows: rows and acts differ in length"
        );
        assert_eq!(out.len(), self.n, "add_rows: output length");
        if rows.is_empty() || self.n == 0 {
            return;
        }
        match self.bits {
            2 => self.add_rows_n::<2>(rows, acts, out),
            4 => self.add_rows_n::<4>(rows, acts, out),
            _ => self.add_rows_n::<8>(rows, acts, out),
        }
    }

    fn add_rows_n<const B: usize>(&self, rows: &[u32], acts: &[f32], out: &mut [f32]) {
        let per_word = 32 / B;
        let off = (1u32 << (B - 1)) as f32;
        let mask = (1u32 << B) - 1;
        let wpr = self.words_per_row;
        let mut acc = vec![0f32; wpr * per_word];
        // Columns are independent: big calls split them across threads in word-aligned spans.
        let parallel = rows.len() * wpr >= 1 << 16;
        let span_words = if parallel { 64 } else { wpr };
        let fill = |(si, a): (usize, &mut [f32])| {
            let w0 = si * span_words;
            let nw = a.len() / per_word;
            for (&r, &x) in rows.iter().zip(acts) {
                let base = r as usize * wpr + w0;
                for (&word, dst) in self.codes[base..base + nw]
                    .iter()
                    .zip(a.chunks_exact_mut(per_word))
                {
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d += x * (((word >> (t * B)) & mask) as f32 - off);
                    }
                }
            }
        };
        if parallel {
            acc.par_chunks_mut(span_words * per_word)
                .enumerate()
                .for_each(fill);
        } else {
            acc.chunks_mut(span_words * per_word)
                .enumerate()
                .for_each(fill);
        }
        for ((o, a), s) in out.iter_mut().zip(&acc).zip(&self.scales) {
            *o += a * s;
        }
    }

    /// Fuses residuals of linears that share their input (q,k,v or gate,up) along the output axis,
    /// keeping every part's per-channel scales in plain output order.
    pub fn concat_outputs(parts: &[&Residual]) -> Result<Residual> {
        ensure!(!parts.is_empty(), "concat_outputs: no residuals given");
        let (bits, k) = (parts[0].bits, parts[0].k);
        for (i, p) in parts.iter().enumerate() {
            ensure!(
                p.bits == bits && p.k == k,
                "concat_outputs: part {i} has {} bits and K = {}, expected {bits} bits and K = {k}",
                p.bits,
                p.k
            );
        }
        let n: usize = parts.iter().map(|p| p.n).sum();
        let wpr = residual_words_per_row(n, bits);
        let b = bits as usize;
        let off = 1u32 << (bits - 1);
        let mut codes = vec![0u32; k * wpr];
        if wpr > 0 {
            codes
                .par_chunks_mut(wpr)
                .enumerate()
                .for_each(|(row, dst)| {
                    let mut col = 0usize;
                    for p in parts {
                        for c in 0..p.n {
                            dst[col * b / 32] |= p.code(row, c) << ((col * b) % 32);
                            col += 1;
                        }
                    }
                    for c in col..wpr * 32 / b {
                        dst[c * b / 32] |= off << ((c * b) % 32);
                    }
                });
        }
        let scales = parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect();
        Ok(Residual {
            bits,
            k,
            n,
            words_per_row: wpr,
            codes,
            scales,
        })
    }

    /// Bytes held in (pinned) host memory: codes and scales.
    pub fn host_bytes(&self) -> usize {
        self.codes.len() * 4 + self.scales.len() * 4
    }

    /// Bytes one fetched row moves over the bus.
    pub fn row_bytes(&self) -> usize {
        self.words_per_row * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::normal;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random_r(rng: &mut StdRng, n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|_| normal(rng) * rng.random_range(0.001f32..0.05))
            .collect()
    }

    /// Independent transcription of the per-channel grid search.
    fn reference_scale(row: &[f32], bits: u32) -> f32 {
        let l = ((1i32 << (bits - 1)) - 1) as f64;
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let smax = amax / l as f32;
        let mut best = (f64::INFINITY, 0f32);
        for i in 0..32 {
            let s = smax * (i + 1) as f32 / 32.0;
            let mse: f64 = row
                .iter()
                .map(|&v| {
                    let q = ((v / s).round_ties_even() as f64).clamp(-l, l);
                    (v as f64 - q * s as f64).powi(2)
                })
                .sum::<f64>()
                / row.len() as f64;
            if mse < best.0 {
                best = (mse, s);
            }
        }
        best.1
    }

    #[test]
    fn layout_and_error_bound() {
        let mut rng = StdRng::seed_from_u64(21);
        for &bits in &RESIDUAL_BITS {
            for &(n, k) in &[(8usize, 16usize), (13, 37), (130, 70), (1, 5)] {
                let r = random_r(&mut rng, n, k);
                let res = Residual::encode(&r, n, k, bits).unwrap();
                res.validate().unwrap();
                assert_eq!(res.words_per_row, (n * bits as usize).div_ceil(32));
                let l = (1i32 << (bits - 1)) - 1;
                let off = 1u32 << (bits - 1);
                let dense = res.decode_dense();
                for col in 0..n {
                    let row_r = &r[col * k..(col + 1) * k];
                    let s = res.scales[col];
                    // The chosen scale is the grid's MSE argmin (compared by error, not bit pattern).
                    let sref = reference_scale(row_r, bits);
                    let mse = |s: f32| -> f64 {
                        row_r
                            .iter()
                            .map(|&v| {
                                (v as f64
                                    - ((v / s).round_ties_even().clamp(-l as f32, l as f32) * s)
                                        as f64)
                                    .powi(2)
                            })
                            .sum()
                    };
                    assert!(
                        mse(s) <= mse(sref) * (1.0 + 1e-5) + 1e-20,
                        "bits {bits} col {col}"
                    );
                    for kk in 0..k {
                        let code = res.code(kk, col);
                        assert!(code >= 1 && code < 2 * off, "code {code} out of range");
                        // Bit-level layout from the format definition.
                        let word = res.codes[kk * res.words_per_row + col * bits as usize / 32];
                        assert_eq!(
                            (word >> ((col * bits as usize) % 32)) & ((1 << bits) - 1),
                            code
                        );
                        let v = r[col * k + kk];
                        let vh = dense[col * k + kk];
                        assert_eq!(vh, res.value(kk, col));
                        if v.abs() <= (l as f32 + 0.5) * s {
                            assert!(
                                (v - vh).abs() <= s * 0.5 * (1.0 + 1e-5),
                                "bits {bits} [{col},{kk}] {v} vs {vh} s {s}"
                            );
                        } else {
                            assert_eq!(vh, v.signum() * l as f32 * s);
                        }
                    }
                }
                // Padding codes encode zero.
                let per_word = 32 / bits as usize;
                for kk in 0..k {
                    for c in n..res.words_per_row * per_word {
                        let word = res.codes[kk * res.words_per_row + c / per_word];
                        assert_eq!(
                            (word >> ((c % per_word) * bits as usize)) & ((1 << bits) - 1),
                            off
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn eight_bits_much_better_than_four() {
        let mut rng = StdRng::seed_from_u64(22);
        let (n, k) = (64, 512);
        let r = random_r(&mut rng, n, k);
        let err = |bits| {
            let d = Residual::encode(&r, n, k, bits).unwrap().decode_dense();
            r.iter()
                .zip(&d)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let (e2, e4, e8) = (err(2), err(4), err(8));
        let total: f64 = r.iter().map(|v| (*v as f64).powi(2)).sum();
        assert!(e4 < 0.1 * total, "4-bit error {e4} vs energy {total}");
        assert!(
            e8 < e4 / 100.0,
            "8-bit {e8} not much better than 4-bit {e4}"
        );
        assert!(e4 < e2, "4-bit {e4} not better than 2-bit {e2}");
    }

    #[test]
    fn zero_rows_and_add_rows() {
        let mut rng = StdRng::seed_from_u64(23);
        for &bits in &RESIDUAL_BITS {
            let (n, k) = (300, 90);
            let mut r = random_r(&mut rng, n, k);
            r[5 * k..6 * k].fill(0.0); // an all-zero output channel
            let res = Residual::encode(&r, n, k, bits).unwrap();
            assert_eq!(res.scales[5], 0.0);
            let dense = res.decode_dense();
            let rows: Vec<u32> = vec![3, 0, 89, 40, 3];
            let acts: Vec<f32> = (0..rows.len()).map(|_| normal(&mut rng)).collect();
            let base: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
            let mut out = base.clone();
            res.add_rows(&rows, &acts, &mut out);
            for col in 0..n {
                let want: f64 = base[col] as f64
                    + rows
                        .iter()
                        .zip(&acts)
                        .map(|(&rr, &a)| a as f64 * dense[col * k + rr as usize] as f64)
                        .sum::<f64>();
                assert!(
                    (out[col] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "bits {bits} col {col}"
                );
            }
        }
    }

    #[test]
    fn concat_keeps_plain_output_order() {
        let mut rng = StdRng::seed_from_u64(24);
        for &bits in &RESIDUAL_BITS {
            let k = 33;
            let ns = [24usize, 9, 17];
            let parts: Vec<Residual> = ns
                .iter()
                .map(|&n| Residual::encode(&random_r(&mut rng, n, k), n, k, bits).unwrap())
                .collect();
            let refs: Vec<&Residual> = parts.iter().collect();
            let fused = Residual::concat_outputs(&refs).unwrap();
            fused.validate().unwrap();
            assert_eq!(fused.n, 50);
            let mut col = 0;
            for p in &parts {
                for c in 0..p.n {
                    assert_eq!(fused.scales[col], p.scales[c]);
                    for row in 0..k {
                        assert_eq!(fused.value(row, col), p.value(row, c));
                    }
                    col += 1;
                }
            }
            let off = 1u32 << (bits - 1);
            let per_word = 32 / bits as usize;
            for row in 0..k {
                for c in 50..fused.words_per_row * per_word {
                    let word = fused.codes[row * fused.words_per_row + c / per_word];
                    assert_eq!(
                        (word >> ((c % per_word) * bits as usize)) & ((1 << bits) - 1),
                        off
                    );
                }
            }
        }
        let a = Residual::encode(&[0.1; 8], 2, 4, 4).unwrap();
        let b = Residual::encode(&[0.1; 8], 2, 4, 8).unwrap();
        assert!(Residual::concat_outputs(&[&a, &b]).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Residual::encode(&[0.0; 4], 2, 2, 3).is_err());
        assert!(Residual::encode(&[0.0; 4], 2, 3, 4).is_err());
        assert!(Residual::encode(&[0.0, f32::NAN, 0.0, 0.0], 2, 2, 4).is_err());
    }
}
