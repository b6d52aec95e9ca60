//! Calibration: run a model over windows of a text corpus and collect, for the input of every
//! projection group (qkv, o, gate-up, down) of every layer:
//! * `mean |x|` per channel (AWQ scales, static selection),
//! * `Σ x²` per channel (LUT sensitivity),
//! * the DEC thresholds `t[j]` = max over tokens of the (j+1)-th largest `|x|` (non-increasing),
//! * optionally a strided subsample of the input rows themselves (AWQ scale and clip search).

use anyhow::{bail, Result};
use decdec_model::linear::ProjGroup;
use decdec_model::model::{KvCache, LinearObserver, Logits, Model};
use decdec_model::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

/// Statistics of one linear input (length K each).
#[derive(Clone, Debug, PartialEq)]
pub struct InputStats {
    pub k: usize,
    pub tokens: u64,
    pub abs_sum: Vec<f64>,
    pub sq_sum: Vec<f64>,
    /// Empty when thresholds were not collected.
    pub thresholds: Vec<f32>,
}

impl InputStats {
    pub fn new(k: usize, thresholds: bool) -> Self {
        InputStats {
            k,
            tokens: 0,
            abs_sum: vec![0.0; k],
            sq_sum: vec![0.0; k],
            thresholds: if thresholds { vec![0.0; k] } else { Vec::new() },
        }
    }

    /// Mean |x| per channel.
    pub fn act_mean(&self) -> Vec<f32> {
        let t = self.tokens.max(1) as f64;
        self.abs_sum.iter().map(|v| (v / t) as f32).collect()
    }

    /// Σ x² per channel.
    pub fn act_sq(&self) -> Vec<f32> {
        self.sq_sum.iter().map(|&v| v as f32).collect()
    }

    /// Adds `rows` input rows `x: [rows, k]`.
    pub fn add(&mut self, x: &[f32], rows: usize) {
        let k = self.k;
        let want_t = !self.thresholds.is_empty();
        // Blocks of rows in parallel, merged afterwards (the per-row sort dominates).
        let part = x
            .par_chunks(k * 32)
            .map(|blk| {
                let mut s = InputStats::new(k, want_t);
                let mut bits = vec![0u32; k];
                for row in blk.chunks_exact(k) {
                    for (c, &v) in row.iter().enumerate() {
                        s.abs_sum[c] += v.abs() as f64;
                        s.sq_sum[c] += (v as f64) * (v as f64);
                    }
                    if want_t {
                        // For non-negative floats the IEEE bit pattern orders like the value.
                        for (b, &v) in bits.iter_mut().zip(row) {
                            *b = v.abs().to_bits();
                        }
                        bits.sort_unstable();
                        for (t, &b) in s.thresholds.iter_mut().zip(bits.iter().rev()) {
                            *t = t.max(f32::from_bits(b));
                        }
                    }
                }
                s
            })
            .reduce_with(|mut a, b| {
                a.merge(&b);
                a
            });
        if let Some(p) = part {
            self.merge(&p);
        }
        self.tokens += rows as u64;
    }

    pub fn merge(&mut self, o: &InputStats) {
        for (a, b) in self.abs_sum.iter_mut().zip(&o.abs_sum) {
            *a += b;
        }
        for (a, b) in self.sq_sum.iter_mut().zip(&o.sq_sum) {
            *a += b;
        }
        for (a, b) in self.thresholds.iter_mut().zip(&o.thresholds) {
            *a = a.max(*b);
        }
        self.tokens += o.tokens;
    }
}

/// Calibration result for a whole model: `layers[i][group.index()]`.
pub struct Calibration {
    pub layers: Vec<[InputStats; 4]>,
    /// Subsampled input rows `[rows, K]` per layer and group (empty when not requested).
    pub sample: Vec<[Vec<f32>; 4]>,
    pub tokens: usize,
}

impl Calibration {
    pub fn stats(&self, layer: usize, g: ProjGroup) -> &InputStats {
        &self.layers[layer][g.index()]
    }
    pub fn sample_rows(&self, layer: usize, g: ProjGroup) -> (&[f32], usize) {
        let x = &self.sample[layer][g.index()];
        let k = self.layers[layer][g.index()].k;
        (x, x.len() / k.max(1))
    }
}

struct Collector {
    cal: Calibration,
    keep_every: usize,
    keep: bool,
    /// Index of the current window (to stagger the kept positions across windows).
    window: usize,
}

impl LinearObserver for Collector {
    fn observe(&mut self, layer: usize, group: ProjGroup, x: &[f32], rows: usize) {
        self.cal.layers[layer][group.index()].add(x, rows);
        if self.keep {
            let k = x.len() / rows;
            let dst = &mut self.cal.sample[layer][group.index()];
            for r in 0..rows {
                if (r + self.window).is_multiple_of(self.keep_every) {
                    dst.extend_from_slice(&x[r * k..(r + 1) * k]);
                }
            }
        }
    }
}

/// Input width of each projection group.
pub fn group_widths(m: &Model) -> [usize; 4] {
    let c = &m.config;
    [c.hidden_size, c.q_dim(), c.hidden_size, c.intermediate_size]
}

/// Runs `model` over `windows` and collects statistics (thresholds only when `thresholds`), keeping
/// about `keep_rows` evenly strided input rows per linear input (0: none).
pub fn calibrate(
    model: &Model,
    windows: &[Vec<u32>],
    thresholds: bool,
    keep_rows: usize,
    label: &str,
    progress: bool,
) -> Result<Calibration> {
    let widths = group_widths(model);
    let nl = model.config.num_layers;
    let total: usize = windows.iter().map(Vec::len).sum();
    let keep_every = total
        .checked_div(keep_rows)
        .map_or(usize::MAX, |e| e.max(1));
    let mut col = Collector {
        cal: Calibration {
            layers: (0..nl)
                .map(|_| widths.map(|k| InputStats::new(k, thresholds)))
                .collect(),
            sample: (0..nl).map(|_| Default::default()).collect(),
            tokens: total,
        },
        keep_every,
        keep: keep_rows > 0,
        window: 0,
    };
    let bar = if progress {
        decdec_model::progress::bar(windows.len() as u64, label)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let max_len = windows.iter().map(Vec::len).max().unwrap_or(0);
    let mut kv = KvCache::new(&model.config, max_len.max(1));
    for (i, w) in windows.iter().enumerate() {
        kv.truncate(0);
        col.window = i;
        model.forward(w, &mut kv, Logits::None, Some(&mut col))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(col.cal)
}

/// Calibration windows: the corpus is encoded once (the tokenizer decides BOS) and cut into
/// non-overlapping `seq_len`-token windows; `samples` of them are drawn with a seeded shuffle (with
/// overlapping random windows only when the corpus is too short).
pub fn windows(
    tokenizer: &Tokenizer,
    text: &str,
    samples: usize,
    seq_len: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    if samples == 0 || seq_len < 2 {
        bail!("--calib-samples must be >= 1 and --calib-seq >= 2 (got {samples} and {seq_len})");
    }
    let ids = tokenizer.encode(text, true)?;
    if ids.len() < seq_len {
        bail!(
            "the calibration corpus has only {} tokens, fewer than --calib-seq {seq_len}",
            ids.len()
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = ids.len() / seq_len;
    let starts: Vec<usize> = if n >= samples {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        idx.truncate(samples);
        idx.sort_unstable();
        idx.into_iter().map(|i| i * seq_len).collect()
    } else {
        use rand::Rng;
        (0..samples)
            .map(|_| rng.random_range(0..=ids.len() - seq_len))
            .collect()
    };
    Ok(starts
        .into_iter()
        .map(|s| ids[s..s + seq_len].to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_brute_force() {
        let (k, rows) = (37, 70);
        let x: Vec<f32> = (0..k * rows)
            .map(|i| (((i * 7919) % 1009) as f32 - 500.0) / 97.0)
            .collect();
        let mut s = InputStats::new(k, true);
        s.add(&x[..k * 33], 33);
        s.add(&x[k * 33..], rows - 33);
        assert_eq!(s.tokens, rows as u64);
        for c in 0..k {
            let col: Vec<f32> = (0..rows).map(|r| x[r * k + c]).collect();
            let mean = col.iter().map(|v| v.abs() as f64).sum::<f64>() / rows as f64;
            let sq = col.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
            assert!((s.act_mean()[c] as f64 - mean).abs() < 1e-5);
            assert!((s.sq_sum[c] - sq).abs() < 1e-6 * sq.max(1.0));
        }
        // t[j] = max over rows of the (j+1)-th largest |x|.
        for j in 0..k {
            let want = (0..rows)
                .map(|r| {
                    let mut v: Vec<f32> = x[r * k..(r + 1) * k].iter().map(|a| a.abs()).collect();
                    v.sort_by(|a, b| b.partial_cmp(a).unwrap());
                    v[j]
                })
                .fold(0f32, f32::max);
            assert_eq!(s.thresholds[j], want, "j = {j}");
        }
        assert!(s.thresholds.windows(2).all(|p| p[0] >= p[1]));
    }
}
