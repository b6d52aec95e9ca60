//! Salient-channel selection: which input channels' residual rows DEC fetches for one input vector.
//!
//! The input of a linear (`K` channels) is split into chunks of [`CHUNK`] = 1024 channels (the last may
//! be partial, size `s`); chunk `c` gets the budget `floor(k_chunk * s / 1024)` ([`chunk_budgets`]).
//! Every method returns the rows of chunk 0 first, then chunk 1, ..., and **inside a chunk in ascending
//! channel order**, so results are comparable and deterministic.
//!
//! ## Bucket method (DecDEC's approximate top-k, [`select_bucket`])
//! With the calibrated thresholds of the linear (`thresholds[j]` = the largest (j+1)-th largest |x|
//! seen in calibration), `kk = floor(k_chunk * K / 1024)` (global), `a = thresholds[0]`,
//! `b = thresholds[kk - 1]`, 32 bucket floors are, in f32 and in this evaluation order,
//! ```text
//! floor[i] = a + ((b - a) * i) / 15        i in 0..16   (a ... b)
//! floor[i] = (b * (31 - i)) / 16           i in 16..32  (15/16 b ... 0)
//! floor[i] = min(floor[i], floor[i - 1])   i in 1..32   (running min: a no-op for valid thresholds)
//! ```
//! and `bucket(v) = min{ i : |v| >= floor[i] }` (= the number of floors `> |v|`); every finite value has
//! a bucket because `floor[31] = 0`, NaN goes to bucket 31. Per chunk, whole buckets 0, 1, 2, ... are
//! taken while they fit the budget; inside the boundary bucket the lowest channel indices are taken
//! first (the original kernel used atomic order there, which is not reproducible).
//! Equivalently: the chunk's channels ordered by `(bucket, index)`, first `budget` of them.
//!
//! ## Other methods
//! * exact — top-`budget` per chunk by |x|, ties to the lower index (NaN counts as smallest);
//! * static — per chunk the channels with the largest calibration mean |x| (fixed set);
//! * random — uniform without replacement per chunk, from a splitmix64 stream keyed by (seed, step, chunk).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Result};

/// Channels per selection chunk.
pub const CHUNK: usize = 1024;
/// Buckets of the approximate top-k.
pub const NUM_BUCKETS: usize = 32;

/// Per-chunk budgets: `floor(k_chunk * s / 1024)` for each chunk of size `s` (last may be partial).
pub fn chunk_budgets(k_total: usize, k_chunk: usize) -> Vec<usize> {
    (0..k_total.div_ceil(CHUNK))
        .map(|c| k_chunk * CHUNK.min(k_total - c * CHUNK) / CHUNK)
        .collect()
}

/// Rows selected per call: the sum of [`chunk_budgets`].
pub fn total_rows(k_total: usize, k_chunk: usize) -> usize {
    chunk_budgets(k_total, k_chunk).iter().sum()
}

/// The global row count `floor(k_chunk * K / 1024)` that indexes the lower bucket anchor.
pub fn global_k(k_total: usize, k_chunk: usize) -> usize {
    k_chunk * k_total / CHUNK
}

/// Bucket floors for anchors `a = thresholds[0]`, `b = thresholds[kk - 1]` (see module docs).
pub fn bucket_floors(a: f32, b: f32) -> [f32; NUM_BUCKETS] {
    let mut f = [0f32; NUM_BUCKETS];
    for (i, v) in f.iter_mut().enumerate() {
        *v = if i < 16 {
            a + (b - a) * i as f32 / 15.0
        } else {
            b * (31 - i) as f32 / 16.0
        };
    }
    for i in 1..NUM_BUCKETS {
        f[i] = f[i].min(f[i - 1]);
    }
    f
}

/// The bucket floors a linear uses at `k_chunk` (`None` when `floor(k_chunk*K/1024) == 0`, i.e. nothing is
/// selected). They depend only on the calibrated thresholds and k_chunk, so a backend can compute them
/// once on the host and upload 32 floats instead of re-deriving them per call.
pub fn floors_for(thresholds: &[f32], k_chunk: usize) -> Option<[f32; NUM_BUCKETS]> {
    let kk = global_k(thresholds.len(), k_chunk).min(thresholds.len());
    (kk > 0).then(|| bucket_floors(thresholds[0], thresholds[kk - 1]))
}

/// Bucket of `v` given non-increasing `floors`: `min{ i : |v| >= floors[i] }`, NaN → 31.
#[inline]
pub fn bucket_of(v: f32, floors: &[f32; NUM_BUCKETS]) -> usize {
    let av = v.abs();
    if av.is_nan() {
        return NUM_BUCKETS - 1;
    }
    // Counting form (branch-free, vectorizable); equal to the min-form for non-increasing floors.
    let n = floors.iter().map(|&f| (f > av) as usize).sum::<usize>();
    n.min(NUM_BUCKETS - 1)
}

/// DecDEC's 32-bucket approximate top-k (module docs). Appends nothing when `k_chunk == 0`.
///
/// Panics if `thresholds.len() != x.len()` or `k_chunk > 1024` (checked by [`Selector`]).
pub fn select_bucket(x: &[f32], thresholds: &[f32], k_chunk: usize, out: &mut Vec<u32>) {
    out.clear();
    assert_eq!(
        thresholds.len(),
        x.len(),
        "select_bucket: thresholds length"
    );
    assert!(
        k_chunk <= CHUNK,
        "select_bucket: k_chunk {k_chunk} > {CHUNK}"
    );
    // No floors means kk == 0, and then every chunk budget is 0 too.
    let Some(floors) = floors_for(thresholds, k_chunk) else {
        return;
    };
    select_bucket_with_floors(x, &floors, k_chunk, out);
}

/// [`select_bucket`] with precomputed floors ([`floors_for`]).
pub fn select_bucket_with_floors(
    x: &[f32],
    floors: &[f32; NUM_BUCKETS],
    k_chunk: usize,
    out: &mut Vec<u32>,
) {
    out.clear();
    assert!(
        k_chunk <= CHUNK,
        "select_bucket: k_chunk {k_chunk} > {CHUNK}"
    );
    let mut buckets = [0u8; CHUNK];
    for (c, budget) in chunk_budgets(x.len(), k_chunk).into_iter().enumerate() {
        if budget == 0 {
            continue;
        }
        let lo = c * CHUNK;
        let xs = &x[lo..x.len().min(lo + CHUNK)];
        let mut counts = [0usize; NUM_BUCKETS];
        for (bk, &v) in buckets.iter_mut().zip(xs) {
            let b = bucket_of(v, floors);
            *bk = b as u8;
            counts[b] += 1;
        }
        // Whole buckets while they fit; `boundary` is the first bucket that does not.
        let mut taken = 0;
        let mut boundary = 0;
        while boundary < NUM_BUCKETS && taken + counts[boundary] <= budget {
            taken += counts[boundary];
            boundary += 1;
        }
        let mut rest = budget - taken;
        for (i, &bk) in buckets[..xs.len()].iter().enumerate() {
            let bk = bk as usize;
            if bk < boundary || (bk == boundary && rest > 0) {
                if bk == boundary {
                    rest -= 1;
                }
                out.push((lo + i) as u32);
            }
        }
    }
}

/// Sort key of the exact method: |x|, with NaN below everything.
#[inline]
fn magnitude(v: f32) -> f32 {
    if v.is_nan() {
        -1.0
    } else {
        v.abs()
    }
}

/// Exact top-`budget` per chunk by |x| (ties to the lower index), ascending within each chunk.
pub fn select_exact(x: &[f32], k_chunk: usize, out: &mut Vec<u32>) {
    out.clear();
    assert!(
        k_chunk <= CHUNK,
        "select_exact: k_chunk {k_chunk} > {CHUNK}"
    );
    let mut idx: Vec<u32> = Vec::with_capacity(CHUNK);
    for (c, budget) in chunk_budgets(x.len(), k_chunk).into_iter().enumerate() {
        if budget == 0 {
            continue;
        }
        let lo = c * CHUNK;
        let hi = x.len().min(lo + CHUNK);
        idx.clear();
        idx.extend(lo as u32..hi as u32);
        let order = |a: &u32, b: &u32| {
            magnitude(x[*b as usize])
                .total_cmp(&magnitude(x[*a as usize]))
                .then(a.cmp(b))
        };
        if budget < idx.len() {
            idx.select_nth_unstable_by(budget - 1, order);
        }
        let sel = &mut idx[..budget];
        sel.sort_unstable();
        out.extend_from_slice(sel);
    }
}

/// splitmix64 step (the random method's only source of randomness, so runs are reproducible).
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random channels per chunk (uniform without replacement), a pure function of (seed, step, chunk).
pub fn select_random(seed: u64, step: u64, k_total: usize, k_chunk: usize, out: &mut Vec<u32>) {
    out.clear();
    assert!(
        k_chunk <= CHUNK,
        "select_random: k_chunk {k_chunk} > {CHUNK}"
    );
    let mut idx: Vec<u32> = Vec::with_capacity(CHUNK);
    for (c, budget) in chunk_budgets(k_total, k_chunk).into_iter().enumerate() {
        if budget == 0 {
            continue;
        }
        let lo = c * CHUNK;
        let size = CHUNK.min(k_total - lo);
        let mut state = seed
            ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (c as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        idx.clear();
        idx.extend(lo as u32..(lo + size) as u32);
        // Partial Fisher-Yates: the first `budget` slots become a uniform sample.
        for i in 0..budget {
            let j = i + (splitmix64(&mut state) % (size - i) as u64) as usize;
            idx.swap(i, j);
        }
        let sel = &mut idx[..budget];
        sel.sort_unstable();
        out.extend_from_slice(sel);
    }
}

/// Fraction of `exact` that `selected` also contains (1.0 when `exact` is empty).
pub fn recall(selected: &[u32], exact: &[u32]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let mut s = selected.to_vec();
    s.sort_unstable();
    s.dedup();
    let hits = exact.iter().filter(|e| s.binary_search(e).is_ok()).count();
    hits as f64 / exact.len() as f64
}

/// A fixed selection: per chunk the channels with the largest calibration mean |x|.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticSelection {
    pub k_chunk: usize,
    pub rows: Vec<u32>,
}

impl StaticSelection {
    /// `act_mean[c]` = mean |x[c]| over calibration tokens (length K).
    pub fn new(act_mean: &[f32], k_chunk: usize) -> Result<StaticSelection> {
        check_k_chunk(k_chunk)?;
        if let Some(i) = act_mean.iter().position(|v| !v.is_finite()) {
            bail!("act_mean[{i}] = {} is not finite", act_mean[i]);
        }
        let mut rows = Vec::new();
        select_exact(act_mean, k_chunk, &mut rows);
        Ok(StaticSelection { k_chunk, rows })
    }
}

fn check_k_chunk(k_chunk: usize) -> Result<()> {
    ensure!(
        k_chunk <= CHUNK,
        "k_chunk {k_chunk} is larger than the chunk size {CHUNK}"
    );
    Ok(())
}

/// Checks calibrated thresholds: length K, finite, non-negative, non-increasing.
pub fn validate_thresholds(thresholds: &[f32], k: usize) -> Result<()> {
    ensure!(
        thresholds.len() == k,
        "thresholds have {} values, expected K = {k}",
        thresholds.len()
    );
    if let Some(i) = thresholds
        .iter()
        .position(|v| !(v.is_finite() && *v >= 0.0))
    {
        bail!(
            "thresholds[{i}] = {} is not a finite non-negative number",
            thresholds[i]
        );
    }
    if let Some(i) = thresholds.windows(2).position(|p| p[1] > p[0]) {
        bail!(
            "thresholds are not non-increasing: [{i}] = {} < [{}] = {}",
            thresholds[i],
            i + 1,
            thresholds[i + 1]
        );
    }
    Ok(())
}

/// Selection method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectMethod {
    Bucket,
    Exact,
    Static,
    Random,
}

impl SelectMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectMethod::Bucket => "bucket",
            SelectMethod::Exact => "exact",
            SelectMethod::Static => "static",
            SelectMethod::Random => "random",
        }
    }
}

impl fmt::Display for SelectMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SelectMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bucket" => Ok(SelectMethod::Bucket),
            "exact" => Ok(SelectMethod::Exact),
            "static" => Ok(SelectMethod::Static),
            "random" => Ok(SelectMethod::Random),
            _ => bail!("unknown selection method {s:?} (expected bucket, exact, static or random)"),
        }
    }
}

/// Per-linear selection state: method, k_chunk and the calibration data the method needs.
#[derive(Clone, Debug)]
pub struct Selector {
    method: SelectMethod,
    k: usize,
    k_chunk: usize,
    thresholds: Vec<f32>,
    /// Bucket floors for the current k_chunk (bucket method; `None` when nothing is selected).
    floors: Option<[f32; NUM_BUCKETS]>,
    act_mean: Vec<f32>,
    static_rows: Vec<u32>,
    seed: u64,
    step: u64,
}

impl Selector {
    /// Generic constructor: `thresholds` is required for `bucket`, `act_mean` for `static`
    /// (both length `k`); `seed` is used by `random`.
    pub fn new(
        method: SelectMethod,
        k: usize,
        k_chunk: usize,
        thresholds: Option<&[f32]>,
        act_mean: Option<&[f32]>,
        seed: u64,
    ) -> Result<Selector> {
        check_k_chunk(k_chunk)?;
        let mut s = Selector {
            method,
            k,
            k_chunk,
            thresholds: Vec::new(),
            floors: None,
            act_mean: Vec::new(),
            static_rows: Vec::new(),
            seed,
            step: 0,
        };
        match method {
            SelectMethod::Bucket => {
                let t = thresholds.ok_or_else(|| {
                    anyhow::anyhow!("bucket selection needs calibrated thresholds")
                })?;
                validate_thresholds(t, k)?;
                s.thresholds = t.to_vec();
                s.floors = floors_for(t, k_chunk);
            }
            SelectMethod::Static => {
                let m = act_mean.ok_or_else(|| {
                    anyhow::anyhow!("static selection needs calibration act_mean")
                })?;
                ensure!(
                    m.len() == k,
                    "act_mean has {} values, expected K = {k}",
                    m.len()
                );
                s.static_rows = StaticSelection::new(m, k_chunk)?.rows;
                s.act_mean = m.to_vec();
            }
            SelectMethod::Exact | SelectMethod::Random => {}
        }
        Ok(s)
    }

    pub fn bucket(thresholds: &[f32], k_chunk: usize) -> Result<Selector> {
        Selector::new(
            SelectMethod::Bucket,
            thresholds.len(),
            k_chunk,
            Some(thresholds),
            None,
            0,
        )
    }

    pub fn exact(k: usize, k_chunk: usize) -> Result<Selector> {
        Selector::new(SelectMethod::Exact, k, k_chunk, None, None, 0)
    }

    pub fn from_static(act_mean: &[f32], k_chunk: usize) -> Result<Selector> {
        Selector::new(
            SelectMethod::Static,
            act_mean.len(),
            k_chunk,
            None,
            Some(act_mean),
            0,
        )
    }

    pub fn random(k: usize, k_chunk: usize, seed: u64) -> Result<Selector> {
        Selector::new(SelectMethod::Random, k, k_chunk, None, None, seed)
    }

    pub fn method(&self) -> SelectMethod {
        self.method
    }

    /// Input channels K.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn k_chunk(&self) -> usize {
        self.k_chunk
    }

    /// Calibrated thresholds (empty unless the method is bucket).
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Rows every call selects (sum of the chunk budgets).
    pub fn num_rows(&self) -> usize {
        total_rows(self.k, self.k_chunk)
    }

    /// Changes k_chunk (e.g. from tuning); the static order is recomputed.
    pub fn set_k_chunk(&mut self, k_chunk: usize) -> Result<()> {
        check_k_chunk(k_chunk)?;
        self.k_chunk = k_chunk;
        if self.method == SelectMethod::Bucket {
            self.floors = floors_for(&self.thresholds, k_chunk);
        }
        if self.method == SelectMethod::Static {
            self.static_rows = StaticSelection::new(&self.act_mean, k_chunk)?.rows;
        }
        Ok(())
    }

    /// Calls of `select` so far (the random method's step).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Selects the salient channels of `x` (length K) into `out` (cleared first).
    pub fn select(&mut self, x: &[f32], out: &mut Vec<u32>) {
        assert_eq!(
            x.len(),
            self.k,
            "Selector::select: input has {} channels, expected {}",
            x.len(),
            self.k
        );
        match self.method {
            SelectMethod::Bucket => match &self.floors {
                Some(f) => select_bucket_with_floors(x, f, self.k_chunk, out),
                None => out.clear(),
            },
            SelectMethod::Exact => select_exact(x, self.k_chunk, out),
            SelectMethod::Static => {
                out.clear();
                out.extend_from_slice(&self.static_rows);
            }
            SelectMethod::Random => select_random(self.seed, self.step, self.k, self.k_chunk, out),
        }
        self.step += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::normal;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Thresholds from calibration tokens, straight from the definition.
    fn thresholds_of(tokens: &[Vec<f32>]) -> Vec<f32> {
        let k = tokens[0].len();
        let mut t = vec![0f32; k];
        for x in tokens {
            let mut v: Vec<f32> = x.iter().map(|a| a.abs()).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            for (ti, vi) in t.iter_mut().zip(v) {
                *ti = ti.max(vi);
            }
        }
        t
    }

    /// Brute-force bucket selection: floors by formula, bucket by the min-definition (linear scan),
    /// per chunk sort channels by (bucket, index) and take the budget, then ascending.
    fn reference_bucket(x: &[f32], t: &[f32], k_chunk: usize) -> Vec<u32> {
        let k = x.len();
        let kk = k_chunk * k / 1024;
        if kk == 0 {
            return vec![];
        }
        let (a, b) = (t[0], t[kk - 1]);
        let mut floors: Vec<f32> = (0..16).map(|i| a + (b - a) * i as f32 / 15.0).collect();
        floors.extend((16..32).map(|i| b * (31 - i) as f32 / 16.0));
        for i in 1..32 {
            floors[i] = floors[i].min(floors[i - 1]);
        }
        let bucket = |v: f32| (0..32).find(|&i| v.abs() >= floors[i]).unwrap_or(31);
        let mut out = vec![];
        let mut lo = 0;
        while lo < k {
            let hi = (lo + 1024).min(k);
            let budget = k_chunk * (hi - lo) / 1024;
            let mut ch: Vec<usize> = (lo..hi).collect();
            ch.sort_by_key(|&i| (bucket(x[i]), i));
            let mut sel: Vec<u32> = ch[..budget].iter().map(|&i| i as u32).collect();
            sel.sort();
            out.extend(sel);
            lo = hi;
        }
        out
    }

    /// Brute-force exact top-k per chunk: full sort by (|x| desc, index asc).
    fn reference_exact(x: &[f32], k_chunk: usize) -> Vec<u32> {
        let mut out = vec![];
        for (c, budget) in chunk_budgets(x.len(), k_chunk).into_iter().enumerate() {
            let lo = c * 1024;
            let hi = (lo + 1024).min(x.len());
            let mut ch: Vec<usize> = (lo..hi).collect();
            ch.sort_by(|&i, &j| {
                magnitude(x[j])
                    .partial_cmp(&magnitude(x[i]))
                    .unwrap()
                    .then(i.cmp(&j))
            });
            let mut sel: Vec<u32> = ch[..budget].iter().map(|&i| i as u32).collect();
            sel.sort();
            out.extend(sel);
        }
        out
    }

    /// Activations with a few massive fixed channels plus Gaussian noise.
    fn activations(rng: &mut StdRng, k: usize, outliers: &[usize]) -> Vec<f32> {
        let mut x: Vec<f32> = (0..k).map(|_| normal(rng)).collect();
        for &o in outliers {
            x[o] = (20.0 + 10.0 * normal(rng)) * if o % 2 == 0 { 1.0 } else { -1.0 };
        }
        x
    }

    fn check_chunked(sel: &[u32], k: usize, k_chunk: usize) {
        let budgets = chunk_budgets(k, k_chunk);
        assert_eq!(sel.len(), budgets.iter().sum::<usize>());
        let mut pos = 0;
        for (c, b) in budgets.into_iter().enumerate() {
            let part = &sel[pos..pos + b];
            assert!(
                part.iter().all(|&r| (r as usize) / 1024 == c),
                "row outside chunk {c}"
            );
            assert!(
                part.windows(2).all(|p| p[0] < p[1]),
                "chunk {c} not strictly ascending"
            );
            pos += b;
        }
    }

    #[test]
    fn budgets() {
        assert_eq!(chunk_budgets(4096, 8), vec![8; 4]);
        assert_eq!(chunk_budgets(2500, 32), vec![32, 32, 14]); // 32 * 452 / 1024 = 14.1
        assert_eq!(chunk_budgets(576, 32), vec![18]);
        assert_eq!(chunk_budgets(576, 1), vec![0]);
        assert_eq!(chunk_budgets(0, 32), Vec::<usize>::new());
        assert_eq!(total_rows(14336, 16), 224);
        assert_eq!(global_k(2500, 32), 78);
    }

    #[test]
    fn bucket_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(31);
        for &k in &[576usize, 1024, 1536, 2500, 4096] {
            let outliers: Vec<usize> = (0..6).map(|i| (i * 397 + 11) % k).collect();
            let calib: Vec<Vec<f32>> = (0..64)
                .map(|_| activations(&mut rng, k, &outliers))
                .collect();
            let t = thresholds_of(&calib);
            validate_thresholds(&t, k).unwrap();
            for &k_chunk in &[0usize, 1, 4, 8, 16, 32, 64, 100, 512, 1024] {
                for trial in 0..6 {
                    let mut x = activations(&mut rng, k, &outliers);
                    match trial {
                        // Many repeated values: ties inside the boundary bucket.
                        1 => x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
                        2 => x.iter_mut().step_by(3).for_each(|v| *v = 0.7),
                        // Values above the calibration maximum, zeros, a NaN and an infinity.
                        3 => {
                            x[0] = t[0] * 3.0;
                            x[k / 2] = f32::NAN;
                            x[k - 1] = f32::NEG_INFINITY;
                            x[1..20].iter_mut().for_each(|v| *v = 0.0);
                        }
                        4 => x.iter_mut().for_each(|v| *v = 1.0),
                        _ => {}
                    }
                    let mut sel = vec![];
                    select_bucket(&x, &t, k_chunk, &mut sel);
                    if let Some(f) = floors_for(&t, k_chunk) {
                        let mut again = vec![];
                        select_bucket_with_floors(&x, &f, k_chunk, &mut again);
                        assert_eq!(again, sel);
                    }
                    assert_eq!(
                        sel,
                        reference_bucket(&x, &t, k_chunk),
                        "K {k} k_chunk {k_chunk} trial {trial}"
                    );
                    check_chunked(&sel, k, k_chunk);
                    if k_chunk == 0 {
                        assert!(sel.is_empty());
                    }
                    if k_chunk == 1024 {
                        assert_eq!(sel, (0..k as u32).collect::<Vec<_>>());
                    }
                }
            }
        }
    }

    #[test]
    fn bucket_values_and_floors() {
        let f = bucket_floors(10.0, 2.0);
        assert_eq!(f[0], 10.0);
        assert_eq!(f[15], 2.0);
        assert_eq!(f[16], 2.0 * 15.0 / 16.0);
        assert_eq!(f[31], 0.0);
        assert!(f.windows(2).all(|p| p[0] >= p[1]));
        assert_eq!(bucket_of(11.0, &f), 0);
        assert_eq!(bucket_of(f32::INFINITY, &f), 0);
        assert_eq!(bucket_of(-10.0, &f), 0);
        assert_eq!(bucket_of(9.99, &f), 1);
        assert_eq!(bucket_of(2.0, &f), 15);
        assert_eq!(bucket_of(1.9, &f), 16);
        assert_eq!(bucket_of(0.0, &f), 31);
        assert_eq!(bucket_of(f32::NAN, &f), 31);
    }

    #[test]
    fn bucket_recall_is_high() {
        let mut rng = StdRng::seed_from_u64(32);
        let k = 4096;
        let outliers = [7usize, 900, 1500, 2049, 3000, 4000];
        let calib: Vec<Vec<f32>> = (0..256)
            .map(|_| activations(&mut rng, k, &outliers))
            .collect();
        let t = thresholds_of(&calib);
        for &k_chunk in &[8usize, 32, 128] {
            let (mut rb, mut rr) = (0.0, 0.0);
            let trials = 50;
            for _ in 0..trials {
                let x = activations(&mut rng, k, &outliers);
                let (mut sb, mut se, mut sr) = (vec![], vec![], vec![]);
                select_bucket(&x, &t, k_chunk, &mut sb);
                select_exact(&x, k_chunk, &mut se);
                select_random(5, 0, k, k_chunk, &mut sr);
                rb += recall(&sb, &se);
                rr += recall(&sr, &se);
            }
            let (rb, rr) = (rb / trials as f64, rr / trials as f64);
            assert!(rb >= 0.85, "k_chunk {k_chunk}: bucket recall {rb}");
            assert!(
                rb > rr + 0.3,
                "k_chunk {k_chunk}: bucket {rb} not far above random {rr}"
            );
        }
    }

    #[test]
    fn exact_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(33);
        for &k in &[100usize, 1024, 2500] {
            for &k_chunk in &[0usize, 1, 7, 32, 1024] {
                let mut x: Vec<f32> = (0..k).map(|_| (normal(&mut rng) * 3.0).round()).collect();
                x[k / 3] = f32::NAN;
                let mut sel = vec![];
                select_exact(&x, k_chunk, &mut sel);
                assert_eq!(sel, reference_exact(&x, k_chunk), "K {k} k_chunk {k_chunk}");
                check_chunked(&sel, k, k_chunk);
            }
        }
    }

    #[test]
    fn static_and_random() {
        let mut rng = StdRng::seed_from_u64(34);
        let k = 2100;
        let act_mean: Vec<f32> = (0..k).map(|_| rng.random::<f32>()).collect();
        let st = StaticSelection::new(&act_mean, 16).unwrap();
        assert_eq!(st.rows, reference_exact(&act_mean, 16));
        let mut s = Selector::from_static(&act_mean, 16).unwrap();
        let mut out = vec![];
        s.select(&vec![0.0; k], &mut out);
        assert_eq!(out, st.rows);
        s.set_k_chunk(64).unwrap();
        s.select(&vec![0.0; k], &mut out);
        assert_eq!(out, reference_exact(&act_mean, 64));

        let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
        select_random(9, 3, k, 64, &mut a);
        select_random(9, 3, k, 64, &mut b);
        select_random(9, 4, k, 64, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        check_chunked(&a, k, 64);
        check_chunked(&c, k, 64);
        let mut all = vec![];
        select_random(1, 0, k, 1024, &mut all);
        assert_eq!(all, (0..k as u32).collect::<Vec<_>>());
        // Uniformity: every channel of a chunk is hit about equally often.
        let mut hits = vec![0usize; 1024];
        for step in 0..2000 {
            select_random(2, step, 1024, 64, &mut a);
            a.iter().for_each(|&r| hits[r as usize] += 1);
        }
        let expect = 2000.0 * 64.0 / 1024.0;
        assert!(
            hits.iter()
                .all(|&h| (h as f64 - expect).abs() < 0.5 * expect),
            "{hits:?}"
        );

        let mut r = Selector::random(k, 8, 9).unwrap();
        r.select(&vec![0.0; k], &mut out);
        select_random(9, 0, k, 8, &mut a);
        assert_eq!(out, a);
        r.select(&vec![0.0; k], &mut out);
        select_random(9, 1, k, 8, &mut a);
        assert_eq!(out, a);
        assert_eq!(r.step(), 2);
    }

    #[test]
    fn recall_counts_intersection() {
        assert_eq!(recall(&[1, 2, 3, 4], &[2, 4, 6, 8]), 0.5);
        assert_eq!(recall(&[], &[]), 1.0);
        assert_eq!(recall(&[5], &[5]), 1.0);
    }

    #[test]
    fn method_parse_and_selector_errors() {
        for m in [
            SelectMethod::Bucket,
            SelectMethod::Exact,
            SelectMethod::Static,
            SelectMethod::Random,
        ] {
            assert_eq!(m.to_string().parse::<SelectMethod>().unwrap(), m);
        }
        let e = "topk".parse::<SelectMethod>().unwrap_err().to_string();
        assert!(
            e.contains("topk") && e.contains("bucket") && e.contains("random"),
            "{e}"
        );
        assert!(Selector::exact(100, 1025).is_err());
        assert!(Selector::new(SelectMethod::Bucket, 4, 8, None, None, 0).is_err());
        assert!(Selector::new(SelectMethod::Static, 4, 8, None, None, 0).is_err());
        assert!(Selector::bucket(&[3.0, 4.0, 1.0], 8).is_err());
        assert!(Selector::bucket(&[3.0, f32::NAN, 1.0], 8).is_err());
        assert!(
            Selector::new(SelectMethod::Bucket, 4, 8, Some(&[3.0, 2.0, 1.0]), None, 0).is_err()
        );
        let mut rng = StdRng::seed_from_u64(35);
        let k = 1600;
        let calib: Vec<Vec<f32>> = (0..16)
            .map(|_| activations(&mut rng, k, &[5, 1200]))
            .collect();
        let t = thresholds_of(&calib);
        let mut sel = Selector::bucket(&t, 0).unwrap();
        for k_chunk in [0usize, 16, 200, 1024] {
            sel.set_k_chunk(k_chunk).unwrap();
            let x = activations(&mut rng, k, &[5, 1200]);
            let (mut a, mut b) = (vec![7], vec![]);
            sel.select(&x, &mut a);
            select_bucket(&x, &t, k_chunk, &mut b);
            assert_eq!(a, b, "k_chunk {k_chunk}");
            assert_eq!(a.len(), sel.num_rows());
        }
        let mut s = Selector::bucket(&[3.0, 2.0, 1.0, 0.5], 512).unwrap();
        assert_eq!(s.num_rows(), 2);
        let mut out = vec![];
        s.select(&[0.1, 5.0, 0.2, 2.5], &mut out);
        assert_eq!(out, vec![1, 3]);
    }
}
