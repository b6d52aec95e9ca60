//! Decode-step attention: which kernel runs at which context length, and its launch plan.
//!
//! Short contexts run the one-block-per-query-head kernel (`attn_decode`, kernels/ops.cu): its
//! dependency chain is the shortest. Longer ones run the split-KV kernel (`attn_split_decode`):
//! blocks of one kv head's query heads (sharing every K/V row load) over one range of cache
//! positions, merged in split order, so a long context spreads over the whole GPU. Each tier is a
//! separately captured decode graph; the engine picks one per step by position (experiment 53).

use anyhow::{bail, Result};

use crate::gpu::{DevBuf, Gpu};
use crate::kargs;
use crate::linear::SelArgs;

/// One decode-step variant: the attention used from position `from` on (None: `attn_decode`;
/// Some((heads per block, splits)), 0 = automatic: the split-KV kernel).
pub type TierSpec = (usize, Option<(usize, usize)>);

/// End (exclusive) of the positions tier `i` of `tiers` (ascending start positions) serves: the
/// next tier's start, or `max_seq` for the last.
pub fn tier_end<T>(tiers: &[(usize, T)], i: usize, max_seq: usize) -> usize {
    tiers.get(i + 1).map_or(max_seq, |t| t.0.min(max_seq))
}

/// The tiers for a model (ascending `from`, the first from 0). Default, from the H200 measurements
/// of experiments 53 and 80: one block per head below 512 positions (since experiments 76/78 the
/// split kernel from 256 is 7% slower there), the split kernel with one query head per block
/// (most blocks) up to 1536, then with the GQA group's heads sharing K/V loads (fewest bytes).
/// (512 also keeps the 512-token perplexity check of `gpu-test` on one kernel: its compensated
/// token-by-token parity sits at the noise floor of experiment 52.) `knob` is
/// `DECDEC_ATTN` (A/B): `single`, `split` (from 0) or N (split from N); `gb` and `splits`
/// (0 = automatic) then set the split kernel's plan. Head dimensions the split kernel
/// does not take leave only the first tier.
pub fn tier_plan(
    head_dim: usize,
    group: usize,
    knob: Option<&str>,
    gb: usize,
    splits: usize,
) -> Vec<TierSpec> {
    if !SplitAttn::supports(head_dim) {
        return vec![(0, None)];
    }
    match knob {
        Some("single") => vec![(0, None)],
        Some("split") => vec![(0, Some((gb, splits)))],
        Some(v) => vec![(0, None), (v.parse().unwrap_or(512), Some((gb, splits)))],
        None if heads_per_block(group) == 1 => vec![(0, None), (512, Some((1, 0)))],
        None => vec![(0, None), (512, Some((1, 0))), (1536, Some((0, 0)))],
    }
}

/// Positions per split at least (kernels/ops.cu `ATTN_PMIN`).
const PMIN: usize = 64;
/// Threads per attention block (kernels/ops.cu `OPS_THREADS`).
const THREADS: u32 = 256;
/// Warps per attention block (kernels/ops.cu `NWARP_ATTN`).
const NWARP: usize = 8;

/// Bytes of value rows the one-block kernel copies into shared memory before its PDL wait
/// (experiments 76, 80): 512 positions of a 128-dim head, every row of its tier (the 130 KB block
/// measured no slower than a 66 KB one at short contexts, and 1.8% faster after 256 positions).
const V_STAGE_BYTES: usize = 128 * 1024;
/// Static shared memory of `attn_decode` (reductions, q, the warps' partial sums, the o
/// selection's histograms), rounded up.
const SINGLE_STATIC_SMEM: usize = 12 * 1024;

/// Launch plan of the one-block-per-head kernel (`attn_decode`) for positions below `upto` on a
/// device whose blocks may opt in to `smem_optin` bytes of shared memory: (value rows staged in
/// shared memory, dynamic shared memory bytes). The scores of every position must fit; value rows
/// are staged up to `V_STAGE_BYTES` (or `rows`, the `DECDEC_ATTN_VROWS` knob) in what is left, and
/// not at all when the head dimension is not a multiple of 8 (16-byte copies).
pub fn single_plan(
    head_dim: usize,
    upto: usize,
    smem_optin: usize,
    rows: Option<usize>,
) -> Result<(usize, u32)> {
    let dyn_max = smem_optin.saturating_sub(SINGLE_STATIC_SMEM);
    let scores = upto * 4;
    if scores > dyn_max {
        bail!(
            "max_seq {upto} is too long for the decode attention kernel on this GPU (scores of \
             {scores} bytes in shared memory, {dyn_max} available)"
        );
    }
    let row = head_dim * 2;
    let vcap = if !head_dim.is_multiple_of(8) {
        0
    } else {
        let want = rows.map_or(V_STAGE_BYTES, |r| r * row);
        (want.min(dyn_max - scores) / row).min(upto)
    };
    Ok((vcap, (vcap * row + scores) as u32))
}

/// Query heads per block: the largest divisor of the GQA group size `g` that is at most 4 (every
/// block then covers the same number of heads, so head groups tile the output evenly).
pub fn heads_per_block(g: usize) -> usize {
    (1..=4.min(g.max(1)))
        .rev()
        .find(|d| g.is_multiple_of(*d))
        .unwrap_or(1)
}

/// Positions per split for `n` positions over `splits` splits (kernels/ops.cu `attn_split_range`).
pub fn split_range(n: usize, splits: usize) -> usize {
    PMIN.max(n.div_ceil(splits).div_ceil(32) * 32)
}

/// The split-KV kernel's launch plan and scratch.
pub struct SplitAttn {
    pub splits: usize,
    pub heads_per_block: usize,
    head_groups: usize,
    smem: u32,
    /// per query head and split: max, sum of exponentials, unnormalized output [head_dim]
    part: DevBuf,
    /// per head group: splits finished (the last one merges and resets it)
    grp_cnt: DevBuf,
}

impl SplitAttn {
    /// The split kernel takes head dimensions that are multiples of 8 up to 256.
    pub fn supports(head_dim: usize) -> bool {
        head_dim.is_multiple_of(8) && head_dim <= 256
    }

    /// Plan for `heads` query heads over `kv_heads` kv heads of `head_dim`, up to `max_seq`
    /// positions; `splits` = 0 picks about two blocks per SM at the longest context (experiment 53e),
    /// `heads_per_block` = 0 the largest divisor of the GQA group up to 4.
    pub fn new(
        gpu: &Gpu,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
        splits: usize,
        heads_per_block: usize,
    ) -> Result<SplitAttn> {
        if !Self::supports(head_dim) || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("split attention: unsupported heads {heads} / kv heads {kv_heads} / head_dim {head_dim}");
        }
        let g = heads / kv_heads;
        let gb = if heads_per_block == 0 {
            self::heads_per_block(g)
        } else if heads_per_block <= 4 && g.is_multiple_of(heads_per_block) {
            heads_per_block
        } else {
            bail!("split attention: {heads_per_block} heads per block do not divide the GQA group of {g} (at most 4)");
        };
        let head_groups = heads / gb;
        let splits = if splits == 0 {
            (2 * gpu.sms.max(1) as usize / head_groups).clamp(1, 64)
        } else {
            splits
        };
        let pmax = split_range(max_seq, splits);
        let smem = 4 * (gb * head_dim * NWARP + gb * pmax);
        if smem > 200 * 1024 {
            bail!(
                "max_seq {max_seq} is too long for the decode attention kernel ({smem} bytes of shared memory)"
            );
        }
        Ok(SplitAttn {
            splits,
            heads_per_block: gb,
            head_groups,
            smem: smem as u32,
            part: gpu.alloc_zeroed(heads * splits * (head_dim + 2) * 4)?,
            grp_cnt: gpu.alloc_zeroed(head_groups * 4 + 16)?,
        })
    }

    /// The per-head-group counters (all zero between launches).
    pub fn group_counters(&self, gpu: &Gpu) -> Result<Vec<i32>> {
        gpu.read_raw(self.grp_cnt.ptr, self.head_groups)
    }

    /// Launch over positions 0..=*pos_p (device int): `q` [heads][head_dim], caches
    /// [max_seq][kv_heads][head_dim], output `out` (and `out32` unless 0); `sa` selects the o
    /// projection's salient channels per 1024-channel chunk with the counters `chunk_cnt`.
    ///
    /// # Safety
    /// Every pointer must be a live device allocation of the sizes above.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn launch(
        &self,
        gpu: &Gpu,
        sfx: &str,
        q: u64,
        kc: u64,
        vc: u64,
        out: u64,
        out32: u64,
        pos_p: u64,
        dims: (i32, i32, i32),
        scale: f32,
        sa: &SelArgs,
        chunk_cnt: u64,
    ) -> Result<()> {
        let (nh, nkv, hd) = dims;
        let (s, gb) = (self.splits as i32, self.heads_per_block as i32);
        gpu.launch(
            &format!("attn_split_decode_{sfx}"),
            (self.head_groups * self.splits) as u32,
            THREADS,
            self.smem,
            kargs![
                &q,
                &kc,
                &vc,
                &out,
                &out32,
                &pos_p,
                &nh,
                &nkv,
                &hd,
                &scale,
                sa,
                &chunk_cnt,
                &self.part.ptr,
                &self.grp_cnt.ptr,
                &s,
                &gb
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_start_at_zero_ascend_and_honour_the_knobs() {
        let default = tier_plan(128, 4, None, 0, 0);
        assert_eq!(
            default,
            vec![(0, None), (512, Some((1, 0))), (1536, Some((0, 0)))]
        );
        // MHA: one head per block is already the automatic plan, so two tiers
        assert_eq!(tier_plan(64, 1, None, 0, 0).len(), 2);
        for knob in [None, Some("single"), Some("split"), Some("700"), Some("x")] {
            let t = tier_plan(128, 4, knob, 2, 9);
            assert_eq!(t[0].0, 0, "{knob:?}");
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{knob:?}");
        }
        assert_eq!(tier_plan(128, 4, Some("single"), 0, 0), vec![(0, None)]);
        assert_eq!(
            tier_plan(128, 4, Some("split"), 2, 9),
            vec![(0, Some((2, 9)))]
        );
        assert_eq!(tier_plan(128, 4, Some("700"), 0, 0)[1], (700, Some((0, 0))));
        // head dimensions the split kernel does not take keep the one-block kernel only
        assert_eq!(tier_plan(20, 4, None, 0, 0), vec![(0, None)]);
    }

    #[test]
    fn a_tier_ends_where_the_next_starts_or_at_the_cache_length() {
        let plan = tier_plan(128, 4, None, 0, 0);
        let starts: Vec<usize> = plan.iter().map(|t| t.0).collect();
        assert_eq!(starts, vec![0, 512, 1536]);
        assert_eq!(tier_end(&plan, 0, 8192), 512);
        assert_eq!(tier_end(&plan, 1, 8192), 1536);
        assert_eq!(tier_end(&plan, 2, 8192), 8192);
        // a cache shorter than a later tier's start ends every tier there
        assert_eq!(tier_end(&plan, 0, 300), 300);
        assert_eq!(tier_end(&plan, 1, 1000), 1000);
    }

    #[test]
    fn the_one_block_kernel_stages_value_rows_within_the_devices_shared_memory() {
        const H200: usize = 232_448; // opt-in bytes per block of sm_90
        const SM86: usize = 101_376;
        // 128-dim heads: every value row below 256 (64 KB) or 512 positions (128 KB), and every
        // score
        assert_eq!(
            single_plan(128, 256, H200, None).unwrap(),
            (256, 256 * 256 + 256 * 4)
        );
        assert_eq!(
            single_plan(128, 512, H200, None).unwrap(),
            (512, 512 * 256 + 512 * 4)
        );
        // never more rows than positions, nor than 128 KB; 64-dim heads take twice as many rows
        assert_eq!(single_plan(128, 100, H200, None).unwrap().0, 100);
        assert_eq!(single_plan(128, 1024, H200, None).unwrap().0, 512);
        assert_eq!(single_plan(64, 2048, H200, None).unwrap().0, 1024);
        // the knob sets the rows (0: none)
        assert_eq!(single_plan(128, 512, H200, Some(0)).unwrap(), (0, 2048));
        assert_eq!(single_plan(128, 512, H200, Some(32)).unwrap().0, 32);
        // no 16-byte copies for head dimensions that are not multiples of 8
        assert_eq!(single_plan(20, 256, H200, None).unwrap(), (0, 1024));
        // a long single tier leaves the rows what its scores do not take, on every device
        for (optin, upto) in [(H200, 40_000), (SM86, 4096), (SM86, 20_000), (H200, 54_000)] {
            let (vcap, bytes) = single_plan(128, upto, optin, None).unwrap();
            assert!(
                bytes as usize + SINGLE_STATIC_SMEM <= optin,
                "{optin} {upto}"
            );
            assert_eq!(bytes as usize, vcap * 256 + upto * 4);
        }
        // scores that do not fit are an error naming the cache length
        let e = single_plan(128, 60_000, H200, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_seq 60000"), "{e}");
        assert!(single_plan(128, 30_000, SM86, None).is_err());
    }

    #[test]
    fn heads_per_block_divides_the_group() {
        for (g, want) in [
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 4),
            (5, 1),
            (6, 3),
            (7, 1),
            (8, 4),
            (12, 4),
        ] {
            assert_eq!(heads_per_block(g), want, "group {g}");
        }
    }

    #[test]
    fn split_ranges_cover_every_position_with_at_most_splits_ranges() {
        for splits in [1usize, 3, 33, 64] {
            for n in [1usize, 63, 64, 65, 200, 4096, 5000, 131072] {
                let p = split_range(n, splits);
                assert!(p >= PMIN && p.is_multiple_of(32));
                assert!(n.div_ceil(p) <= splits, "n {n} splits {splits} p {p}");
            }
        }
    }
}
