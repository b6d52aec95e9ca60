//! Token sampling: greedy, temperature, top-k, top-p (nucleus), seeded.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            anyhow::bail!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        // NaN never wins; ties keep the lowest index.
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    /// Whether every draw is the argmax (no randomness consumed).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 || self.params.top_k == 1
    }

    /// One token from `logits`: greedy when the temperature is 0, else a draw from the softmax of
    /// `logits / temperature`, restricted to the `top_k` most likely tokens and then to the
    /// smallest prefix (by decreasing probability, ties by lower id) whose probability reaches
    /// `top_p`. Only the part of the vocabulary the draw can reach is sorted (a 128k-token
    /// vocabulary sorted in full costs ~5 ms per token, more than a GPU decode step).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let t = p.temperature;
        let (mut m, mut n_finite) = (f32::NEG_INFINITY, 0usize);
        for &v in logits {
            if v.is_finite() {
                m = m.max(v / t);
                n_finite += 1;
            }
        }
        if n_finite == 0 {
            return argmax(logits);
        }
        // Tokens more than 37 nats below the best have exp(v - m) < 2^-53: they vanish from an f64
        // sum that holds the best's 1.0 (as in a sum in rank order), so the sum skips them.
        let e = |v: f32| ((v - m) as f64).exp();
        let (mut ranked, sum) = if p.top_k > 0 && p.top_k < n_finite {
            let (mut hi, mut lo): (Vec<Cand>, Vec<Cand>) = logits
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as u32, v / t))
                .partition(|&(_, v)| v - m >= -37.0);
            if p.top_k <= hi.len() {
                top_n(&mut hi, p.top_k);
                lo.clear();
            } else {
                top_n(&mut lo, p.top_k - hi.len());
            }
            let sum: f64 = hi.iter().map(|&(_, v)| e(v)).sum();
            (Ranked::new(hi, Lo::Ready(lo)), sum)
        } else {
            // f64 exponentials of the whole vocabulary: in parallel, partial sums of fixed chunks
            // added in chunk order (deterministic)
            let sum: f64 = logits
                .par_chunks(8192)
                .map(|c| {
                    c.iter()
                        .map(|&v| v / t)
                        .filter(|&v| v.is_finite() && v - m >= -37.0)
                        .map(e)
                        .sum::<f64>()
                })
                .collect::<Vec<f64>>()
                .iter()
                .sum();
            // Tokens of probability below 2^-20 are read only by the draws that reach the tail
            // they make up (rare for a language model's peaked distribution): they are gathered
            // (and sorted) only then.
            let cut = (m + sum.ln() as f32 - 20.0 * std::f32::consts::LN_2).max(m - 37.0);
            let (mut hi, mut below) = (Vec::new(), 0usize);
            for (i, c) in scaled(logits, t) {
                if c >= cut {
                    hi.push((i, c));
                } else {
                    below += 1;
                }
            }
            (Ranked::new(hi, Lo::Pending(logits, t, cut, below)), sum)
        };
        let n = ranked.len();
        // probabilities in rank order, each computed once, as far as the nucleus and the draw read
        let mut probs: Vec<f64> = Vec::new();
        let mut prob = |ranked: &mut Ranked, i: usize| {
            while probs.len() <= i {
                probs.push(e(ranked.get(probs.len()).1) / sum);
            }
            probs[i]
        };
        // nucleus: the first `keep` tokens in rank order reach top_p
        let (keep, kept) = if p.top_p < 1.0 {
            let (mut acc, mut keep) = (0.0f64, n);
            for i in 0..n {
                acc += prob(&mut ranked, i);
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            let kept: f64 = (0..keep).map(|i| prob(&mut ranked, i)).sum();
            (keep, Some(kept))
        } else {
            (n, None)
        };
        let r: f64 = self.rng.random();
        let mut acc = 0.0;
        for i in 0..keep {
            let q = prob(&mut ranked, i);
            acc += kept.map_or(q, |s| q / s);
            if r < acc {
                return ranked.get(i).0;
            }
        }
        ranked.get(keep - 1).0
    }
}

/// A candidate token: id and logit / temperature.
type Cand = (u32, f32);

/// Decreasing logit, then lower token id: the rank order of sampling.
fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keep the `n` best of `c` (unordered).
fn top_n(c: &mut Vec<(u32, f32)>, n: usize) {
    if n < c.len() {
        c.select_nth_unstable_by(n - 1, rank_order);
        c.truncate(n);
    }
}

/// The finite values of `logits / t` with their token ids.
fn scaled(logits: &[f32], t: f32) -> impl Iterator<Item = Cand> + '_ {
    logits
        .iter()
        .enumerate()
        .map(move |(i, &v)| (i as u32, v / t))
        .filter(|&(_, v)| v.is_finite())
}

/// The candidates ranked after every `hi` one: given, or the `count` finite values of
/// `logits / t` below `cut`, gathered when first read.
enum Lo<'a> {
    Ready(Vec<Cand>),
    Pending(&'a [f32], f32, f32, usize),
}

/// Candidates in rank order, sorted lazily: every `hi` token ranks before every `lo` token, and
/// each part is sorted in growing prefixes as far as it is read.
struct Ranked<'a> {
    parts: [Vec<Cand>; 2],
    sorted: [usize; 2],
    lo_pending: Option<(&'a [f32], f32, f32)>,
    n: usize,
}

impl<'a> Ranked<'a> {
    fn new(hi: Vec<Cand>, lo: Lo<'a>) -> Ranked<'a> {
        let (lo, pending, n) = match lo {
            Lo::Ready(lo) => {
                let n = hi.len() + lo.len();
                (lo, None, n)
            }
            Lo::Pending(logits, t, cut, count) => {
                (Vec::new(), Some((logits, t, cut)), hi.len() + count)
            }
        };
        Ranked {
            parts: [hi, lo],
            sorted: [0, 0],
            lo_pending: pending,
            n,
        }
    }

    fn len(&self) -> usize {
        self.n
    }

    /// The `i`-th candidate in rank order.
    fn get(&mut self, i: usize) -> (u32, f32) {
        let (part, j) = if i < self.parts[0].len() {
            (0, i)
        } else {
            if let Some((logits, t, cut)) = self.lo_pending.take() {
                self.parts[1] = scaled(logits, t).filter(|&(_, v)| v < cut).collect();
            }
            (1, i - self.parts[0].len())
        };
        let (c, done) = (&mut self.parts[part], &mut self.sorted[part]);
        if j >= *done {
            // the next prefix: at least double what is sorted (and 64), from the unsorted rest
            let upto = (2 * *done).max(64).max(j + 1).min(c.len());
            let rest = &mut c[*done..];
            let k = upto - *done;
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, rank_order);
            }
            rest[..k].sort_unstable_by(rank_order);
            *done = upto;
        }
        c[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward sampler (the whole vocabulary sorted, the sum in rank order): the
    /// lazily sorted one must draw exactly the same tokens from the same seed.
    fn reference_draw(p: &SamplingParams, rng: &mut StdRng, logits: &[f32]) -> u32 {
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v / p.temperature))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        cand.sort_by(rank_order);
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let m = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|&(_, v)| ((v - m) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= s);
        }
        let r: f64 = rng.random();
        let mut acc = 0.0;
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }

    #[test]
    fn lazy_ranking_draws_what_a_full_sort_draws() {
        let mut gen = StdRng::seed_from_u64(5);
        for case in 0..60 {
            let n = [3usize, 70, 1000, 40_000][case % 4];
            let spread = [0.5f32, 4.0, 30.0][case % 3];
            let mut logits: Vec<f32> = (0..n)
                .map(|_| (gen.random::<f32>() - 0.5) * spread)
                .collect();
            // ties, a few strong tokens, and entries that are never candidates
            for i in (0..n).step_by(7) {
                logits[i] = logits[i / 2];
            }
            for i in (0..n).step_by(997) {
                logits[i] += 25.0;
            }
            if n > 10 {
                logits[3] = f32::NEG_INFINITY;
                logits[5] = f32::NAN;
            }
            for (t, k, tp) in [
                (1.0f32, 0usize, 1.0f32),
                (0.7, 40, 0.9),
                (1.3, 0, 0.5),
                (0.5, 5, 1.0),
            ] {
                let p = SamplingParams {
                    temperature: t,
                    top_k: k,
                    top_p: tp,
                    seed: case as u64,
                };
                let mut s = Sampler::new(p.clone());
                let mut rng = StdRng::seed_from_u64(p.seed);
                for _ in 0..40 {
                    assert_eq!(
                        s.sample(&logits),
                        reference_draw(&p, &mut rng, &logits),
                        "case {case} n {n} spread {spread} t {t} top_k {k} top_p {tp}"
                    );
                }
            }
        }
    }

    #[test]
    fn draws_into_the_lazily_gathered_tail_match_too() {
        // one strong token and 40000 tied ones, each below 2^-20 but 3% of the mass together:
        // about one draw in 30 reaches the tail gathered on demand
        let mut logits = vec![0.0f32; 40_001];
        logits[17] = 14.0;
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 3,
        };
        let mut s = Sampler::new(p.clone());
        let mut rng = StdRng::seed_from_u64(p.seed);
        let mut tail = 0;
        for _ in 0..400 {
            let got = s.sample(&logits);
            assert_eq!(got, reference_draw(&p, &mut rng, &logits));
            tail += usize::from(got != 17);
        }
        assert!(tail > 0, "no draw reached the tail");
    }

    #[test]
    fn greedy_is_argmax_and_sampling_respects_top_k() {
        let logits = vec![0.1, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&logits), 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 2,
            top_p: 1.0,
            seed: 9,
        });
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample(&logits) as usize] += 1;
        }
        assert_eq!(seen[0] + seen[3], 0);
        assert!(seen[1] > 500 && seen[2] > 500);
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_seed_repeats() {
        let logits = vec![10.0, 0.0, 0.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 1,
        };
        let mut s = Sampler::new(p.clone());
        assert!((0..200).all(|_| s.sample(&logits) == 0));
        let flat = vec![1.0f32; 50];
        let q = SamplingParams { top_p: 1.0, ..p };
        let a: Vec<u32> = {
            let mut s = Sampler::new(q.clone());
            (0..20).map(|_| s.sample(&flat)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(q);
            (0..20).map(|_| s.sample(&flat)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|&t| t != a[0]));
    }
}
