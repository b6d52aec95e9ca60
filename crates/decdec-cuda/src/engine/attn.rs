//! Decode-step attention: which kernel runs and its launch plan.
//!
//! The default is the split-KV kernel (`attn_split_decode`, kernels/ops.cu): blocks of one kv head's
//! query heads (up to 4 at once, sharing every K/V row load) over one range of cache positions,
//! merged in split order, so a long context spreads over the whole GPU. The one-block-per-query-head
//! kernel (`attn_decode`) stays for head dimensions the split kernel does not take, for RoPE fused
//! into attention (`DECDEC_FUSE=rope`), and as the A/B baseline (`DECDEC_ATTN=single`).

use anyhow::{bail, Result};

use crate::gpu::{DevBuf, Gpu};
use crate::kargs;
use crate::linear::SelArgs;

/// Positions per split at least (kernels/ops.cu `ATTN_PMIN`).
const PMIN: usize = 64;
/// Threads per attention block (kernels/ops.cu `OPS_THREADS`).
const THREADS: u32 = 256;
/// Warps per attention block (kernels/ops.cu `NWARP_ATTN`).
const NWARP: usize = 8;

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
    /// positions; `splits` = 0 picks about two blocks per SM at the longest context (experiment 53e).
    pub fn new(
        gpu: &Gpu,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
        splits: usize,
    ) -> Result<SplitAttn> {
        if !Self::supports(head_dim) || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("split attention: unsupported heads {heads} / kv heads {kv_heads} / head_dim {head_dim}");
        }
        let gb = heads_per_block(heads / kv_heads);
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
