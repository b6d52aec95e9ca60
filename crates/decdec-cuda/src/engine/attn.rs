//! Decode-step attention: which kernel runs at which context length, and its launch plan.
//!
//! Short contexts run the one-block-per-query-head kernel (`attn_decode`, kernels/ops.cu): its
//! dependency chain is the shortest. Longer ones run the split-KV kernel (`attn_split_decode`):
//! blocks of one kv head's query heads (sharing every K/V row load) over one range of cache
//! positions, merged in split order, so a long context spreads over the whole GPU; on request
//! (`SplitKind::TensorCores`, 64/96/128-dim heads) a version on the tensor cores
//! (`attn_split_tc*`, experiment 81) takes the whole GQA group of a kv head in one block. Each tier
//! is a separately captured decode graph; the engine picks one per step by position
//! (experiment 53).

use anyhow::{bail, Result};

use crate::gpu::{DevBuf, Gpu};
use crate::kargs;
use crate::linear::SelArgs;

/// Which split-KV kernel: `Cuda(heads per block)` (0 = automatic) is `attn_split_decode` on the
/// CUDA cores, `TensorCores` is `attn_split_tc{64,96,128}` (the kv head's whole GQA group per
/// block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    Cuda(usize),
    TensorCores,
}

/// One decode-step variant: the attention used from position `from` on (None: `attn_decode`;
/// Some((kind, splits)), splits 0 = automatic: a split-KV kernel).
pub type TierSpec = (usize, Option<(SplitKind, usize)>);

/// End (exclusive) of the positions tier `i` of `tiers` (ascending start positions) serves: the
/// next tier's start, or `max_seq` for the last.
pub fn tier_end<T>(tiers: &[(usize, T)], i: usize, max_seq: usize) -> usize {
    tiers.get(i + 1).map_or(max_seq, |t| t.0.min(max_seq))
}

/// Indices of the tiers that serve some position of `from..to` (at least position `from`).
pub fn tiers_serving<T>(
    tiers: &[(usize, T)],
    from: usize,
    to: usize,
    max_seq: usize,
) -> impl Iterator<Item = usize> + '_ {
    let to = to.min(max_seq).max(from + 1);
    (0..tiers.len()).filter(move |&i| tiers[i].0 < to && tier_end(tiers, i, max_seq) > from)
}

/// The tiers for a model (ascending `from`, the first from 0). Default, from the H200 measurements
/// of experiments 53 and 80: one block per head below 512 positions (since experiments 76/78 the
/// split kernel from 256 is 7% slower there), the CUDA-core split kernel with one query head per
/// block (most blocks) up to 1536, then with the GQA group's heads sharing K/V loads (fewest
/// bytes). (512 also keeps the 512-token perplexity check of `gpu-test` on one kernel: its
/// compensated token-by-token parity sits at the noise floor of experiment 52.) The tensor-core
/// split kernel (experiment 81: 64/96/128-dim heads, GQA groups up to 16, a device whose blocks may
/// opt in to `smem_optin` >= ~143 KB of shared memory for 128-dim heads: sm_80 and sm_90, not
/// sm_86/89) is opt-in until it has been measured on the GPU; asked for where it does not apply,
/// the CUDA-core kernel runs.
/// `knob` is `DECDEC_ATTN` (A/B): `single`, `split` (from 0) or N (split from N); `kind`
/// (`DECDEC_ATTN_KERNEL=cuda|tc`, `DECDEC_ATTN_GB`) and `splits` (0 = automatic) then set the
/// split kernel's plan. Head dimensions no split kernel takes leave only the first tier.
pub fn tier_plan(
    head_dim: usize,
    group: usize,
    knob: Option<&str>,
    kind: Option<SplitKind>,
    splits: usize,
    smem_optin: usize,
) -> Vec<TierSpec> {
    if !SplitAttn::supports(head_dim) {
        return vec![(0, None)];
    }
    let tc = SplitAttn::supports_tc(head_dim, group)
        && SplitAttn::tc_smem(head_dim, group) + SPLIT_STATIC_SMEM <= smem_optin;
    let kind = match kind {
        Some(SplitKind::TensorCores) if !tc => None,
        k => k,
    };
    // the split kernel of the knob's tiers
    let knob_kind = kind.unwrap_or(SplitKind::Cuda(0));
    match (knob, kind) {
        (Some("single"), _) => vec![(0, None)],
        (Some("split"), _) => vec![(0, Some((knob_kind, splits)))],
        (Some(v), _) => vec![
            (0, None),
            (v.parse().unwrap_or(512), Some((knob_kind, splits))),
        ],
        (None, Some(k)) => vec![(0, None), (512, Some((k, splits)))],
        (None, None) if heads_per_block(group) > 1 => vec![
            (0, None),
            (512, Some((SplitKind::Cuda(1), 0))),
            (1536, Some((SplitKind::Cuda(0), 0))),
        ],
        (None, None) => vec![(0, None), (512, Some((SplitKind::Cuda(1), 0)))],
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

/// Launch the one-block-per-query-head kernel over positions 0..=*pos_p for `dims` (heads, kv
/// heads, head_dim): `attn_decode`, or with `rope` (the frequencies) `attn_rope_decode`, which
/// takes `q` as the fused qkv output before RoPE and applies RoPE and the KV append itself
/// (experiment 78); `plan` = `single_plan`'s (value rows staged, dynamic shared memory bytes);
/// `sa` selects the o projection's salient channels with the counters `chunk_cnt`.
///
/// # Safety
/// Every pointer must be a live device allocation of the sizes `SplitAttn::launch` names.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_single(
    gpu: &Gpu,
    sfx: &str,
    q: u64,
    kc: u64,
    vc: u64,
    (out, out32): (u64, u64),
    pos_p: u64,
    (nh, nkv, hd): (i32, i32, i32),
    scale: f32,
    sa: &SelArgs,
    chunk_cnt: u64,
    (vcap, smem): (usize, u32),
    rope: Option<u64>,
) -> Result<()> {
    let vcap = vcap as i32;
    let freq = rope.unwrap_or(0);
    let args = kargs![
        &q, &kc, &vc, &out, &out32, &pos_p, &nh, &nkv, &hd, &scale, sa, &chunk_cnt, &vcap, &freq
    ];
    // attn_decode takes every argument but the frequencies
    let (kernel, nargs) = match rope {
        Some(_) => ("attn_rope_decode", args.len()),
        None => ("attn_decode", args.len() - 1),
    };
    gpu.launch(
        &format!("{kernel}_{sfx}"),
        nh as u32,
        THREADS,
        smem,
        &mut args[..nargs],
    )
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

/// Positions per split of the tensor-core kernel (kernels/ops.cu `attn_tc_range`).
pub fn tc_range(n: usize, splits: usize) -> usize {
    16.max(n.div_ceil(splits).div_ceil(16) * 16)
}

/// Static shared memory of the split kernels (reductions, merge factors, the o selection's
/// histograms), rounded up.
const SPLIT_STATIC_SMEM: usize = 4096;

/// Stages of a warp's K/V ring in the tensor-core kernel (kernels/ops.cu `ATTN_TC_STAGES`).
const TC_STAGES: usize = 2;

/// The split-KV kernels' launch plan and scratch.
pub struct SplitAttn {
    pub splits: usize,
    pub heads_per_block: usize,
    /// the tensor-core kernel (`attn_split_tc*`) rather than `attn_split_decode`
    pub tensor_cores: bool,
    head_groups: usize,
    smem: u32,
    /// per query head and split: max, sum of exponentials, unnormalized output [head_dim]
    part: DevBuf,
    /// per head group: splits finished (the last one merges and resets it)
    grp_cnt: DevBuf,
}

impl SplitAttn {
    /// The CUDA-core split kernel takes head dimensions that are multiples of 8 up to 256.
    pub fn supports(head_dim: usize) -> bool {
        head_dim.is_multiple_of(8) && head_dim <= 256
    }

    /// The tensor-core kernel takes 64-, 96- and 128-dim heads and GQA groups of up to 16 query
    /// heads (the rows of one mma tile).
    pub fn supports_tc(head_dim: usize, group: usize) -> bool {
        matches!(head_dim, 64 | 96 | 128) && (1..=16).contains(&group)
    }

    /// Dynamic shared memory of the tensor-core kernel: the warps' K/V rings (16 rows of
    /// head_dim + 8 two-byte elements per tile), reused for the merge of the warps' states.
    pub fn tc_smem(head_dim: usize, group: usize) -> usize {
        let ring = NWARP * TC_STAGES * 2 * 16 * (head_dim + 8) * 2;
        let merge = 4 * (2 * NWARP * 16 + NWARP * group * head_dim);
        ring.max(merge)
    }

    /// Plan for `heads` query heads over `kv_heads` kv heads of `head_dim`, up to `max_seq`
    /// positions; `splits` = 0 picks about two blocks per SM at the longest context for the
    /// CUDA-core kernel (experiment 53e) and what fits one wave for the tensor-core one; kind
    /// `Cuda(0)` takes the largest divisor of the GQA group up to 4 as heads per block.
    pub fn new(
        gpu: &Gpu,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
        splits: usize,
        kind: SplitKind,
    ) -> Result<SplitAttn> {
        if !Self::supports(head_dim) || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("split attention: unsupported heads {heads} / kv heads {kv_heads} / head_dim {head_dim}");
        }
        let g = heads / kv_heads;
        let sms = gpu.sms.max(1) as usize;
        let (gb, tensor_cores) = match kind {
            SplitKind::TensorCores if Self::supports_tc(head_dim, g) => (g, true),
            SplitKind::TensorCores => bail!(
                "split attention on the tensor cores: head_dim {head_dim} / GQA group {g} not supported (64, 96 or 128, at most 16)"
            ),
            SplitKind::Cuda(0) => (self::heads_per_block(g), false),
            SplitKind::Cuda(n) if n <= 4 && g.is_multiple_of(n) => (n, false),
            SplitKind::Cuda(n) => {
                bail!("split attention: {n} heads per block do not divide the GQA group of {g} (at most 4)")
            }
        };
        let head_groups = heads / gb;
        let (splits, smem) = if tensor_cores {
            let smem = Self::tc_smem(head_dim, g);
            let per_sm = (gpu.smem_optin / smem).clamp(1, 2);
            let splits = if splits == 0 {
                (per_sm * sms / head_groups).clamp(1, 64)
            } else {
                splits
            };
            (splits, smem)
        } else {
            let splits = if splits == 0 {
                (2 * sms / head_groups).clamp(1, 64)
            } else {
                splits
            };
            let pmax = split_range(max_seq, splits);
            (splits, 4 * (gb * head_dim * NWARP + gb * pmax))
        };
        if tensor_cores && smem + SPLIT_STATIC_SMEM > gpu.smem_optin {
            bail!(
                "the tensor-core split attention needs {} bytes of shared memory per block for head_dim {head_dim}, this GPU allows {}",
                smem + SPLIT_STATIC_SMEM,
                gpu.smem_optin
            );
        }
        if smem + SPLIT_STATIC_SMEM > gpu.smem_optin {
            bail!(
                "max_seq {max_seq} is too long for the decode attention kernel ({smem} bytes of shared memory, {} available)",
                gpu.smem_optin
            );
        }
        Ok(SplitAttn {
            splits,
            heads_per_block: gb,
            tensor_cores,
            head_groups,
            smem: smem as u32,
            part: gpu.alloc_zeroed(heads * splits * (head_dim + 2) * 4)?,
            grp_cnt: gpu.alloc_zeroed(head_groups * 4 + 16)?,
        })
    }

    /// Short name of the kernel and its plan: `split-tcxS` or `split-cuda(heads per block)xS`.
    pub fn label(&self) -> String {
        if self.tensor_cores {
            format!("split-tcx{}", self.splits)
        } else {
            format!("split-cuda({})x{}", self.heads_per_block, self.splits)
        }
    }

    /// Positions per split for a context of `n` positions.
    pub fn range(&self, n: usize) -> usize {
        if self.tensor_cores {
            tc_range(n, self.splits)
        } else {
            split_range(n, self.splits)
        }
    }

    /// The per-head-group counters (all zero between launches).
    pub fn group_counters(&self, gpu: &Gpu) -> Result<Vec<i32>> {
        gpu.read_raw(self.grp_cnt.ptr, self.head_groups)
    }

    /// Launch over positions 0..=*pos_p (device int): `q` [heads][head_dim], caches
    /// [max_seq][kv_heads][head_dim], output `out` (and `out32` unless 0); `sa` selects the o
    /// projection's salient channels per 1024-channel chunk with the counters `chunk_cnt`.
    /// `rope` (the frequencies, tensor-core kernel only): `q` is the fused qkv output before
    /// RoPE, and the kernel rotates q and k and appends this position's k and v to the caches
    /// itself, as rope_kv would (`fuses_rope`).
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
        rope: Option<u64>,
    ) -> Result<()> {
        let (nh, nkv, hd) = dims;
        let (s, gb) = (self.splits as i32, self.heads_per_block as i32);
        if rope.is_some() && !self.fuses_rope() {
            bail!("split attention: RoPE inside the kernel needs the tensor-core kernel");
        }
        let kernel = match (self.tensor_cores, rope.is_some()) {
            (true, false) => format!("attn_split_tc{hd}_{sfx}"),
            (true, true) => format!("attn_rope_split_tc{hd}_{sfx}"),
            _ => format!("attn_split_decode_{sfx}"),
        };
        let freq = rope.unwrap_or(0);
        let args = kargs![
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
            &gb,
            &freq
        ];
        // attn_split_decode takes every argument but the frequencies
        let nargs = if self.tensor_cores {
            args.len()
        } else {
            args.len() - 1
        };
        gpu.launch(
            &kernel,
            (self.head_groups * self.splits) as u32,
            THREADS,
            self.smem,
            &mut args[..nargs],
        )
    }

    /// Whether the kernel can apply RoPE and the KV append itself (the tensor-core one).
    pub fn fuses_rope(&self) -> bool {
        self.tensor_cores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// opt-in shared memory per block of sm_90 (H200)
    const OPTIN: usize = 232_448;

    #[test]
    fn tiers_start_at_zero_ascend_and_honour_the_knobs() {
        use SplitKind::{Cuda, TensorCores as Tc};
        let cuda_tiers: Vec<TierSpec> = vec![
            (0, None),
            (512, Some((Cuda(1), 0))),
            (1536, Some((Cuda(0), 0))),
        ];
        assert_eq!(tier_plan(128, 4, None, None, 0, OPTIN), cuda_tiers);
        // MHA: one head per block is already the automatic plan, so two tiers
        assert_eq!(tier_plan(64, 1, None, None, 0, OPTIN).len(), 2);
        // the tensor-core kernel when asked for, from 512
        assert_eq!(
            tier_plan(128, 4, None, Some(Tc), 0, OPTIN),
            vec![(0, None), (512, Some((Tc, 0)))]
        );
        assert_eq!(
            tier_plan(64, 1, None, Some(Tc), 7, OPTIN)[1],
            (512, Some((Tc, 7)))
        );
        // ... and where it does not apply (head_dim, GQA groups over 16), the CUDA-core tiers
        assert_eq!(tier_plan(80, 4, None, Some(Tc), 0, OPTIN), cuda_tiers);
        assert_eq!(tier_plan(128, 32, None, Some(Tc), 0, OPTIN), cuda_tiers);
        assert_eq!(
            tier_plan(80, 4, Some("split"), Some(Tc), 0, OPTIN),
            vec![(0, Some((Cuda(0), 0)))]
        );
        for knob in [None, Some("single"), Some("split"), Some("700"), Some("x")] {
            for kind in [None, Some(Cuda(2)), Some(Tc)] {
                let t = tier_plan(128, 4, knob, kind, 9, OPTIN);
                assert_eq!(t[0].0, 0, "{knob:?}");
                assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{knob:?}");
            }
        }
        assert_eq!(
            tier_plan(128, 4, Some("single"), None, 0, OPTIN),
            vec![(0, None)]
        );
        assert_eq!(
            tier_plan(128, 4, Some("split"), Some(Cuda(2)), 9, OPTIN),
            vec![(0, Some((Cuda(2), 9)))]
        );
        assert_eq!(
            tier_plan(128, 4, Some("700"), Some(Cuda(0)), 0, OPTIN)[1],
            (700, Some((Cuda(0), 0)))
        );
        assert_eq!(
            tier_plan(128, 4, Some("256"), Some(Tc), 0, OPTIN)[1],
            (256, Some((Tc, 0)))
        );
        assert_eq!(
            tier_plan(128, 4, Some("256"), None, 0, OPTIN)[1],
            (256, Some((Cuda(0), 0)))
        );
        // devices whose blocks cannot hold its rings (sm_86/89: ~99 KB) keep the CUDA-core tiers
        assert_eq!(tier_plan(128, 4, None, Some(Tc), 0, 101_376), cuda_tiers);
        assert_eq!(
            tier_plan(64, 4, None, Some(Tc), 0, 101_376)[1].1,
            Some((Tc, 0))
        );
        // head dimensions no split kernel takes keep the one-block kernel only
        assert_eq!(tier_plan(20, 4, None, None, 0, OPTIN), vec![(0, None)]);
    }

    #[test]
    fn a_tier_ends_where_the_next_starts_or_at_the_cache_length() {
        let plan = tier_plan(128, 4, None, None, 0, OPTIN);
        let starts: Vec<usize> = plan.iter().map(|t| t.0).collect();
        assert_eq!(starts, vec![0, 512, 1536]);
        assert_eq!(tier_end(&plan, 0, 8192), 512);
        assert_eq!(tier_end(&plan, 1, 8192), 1536);
        assert_eq!(tier_end(&plan, 2, 8192), 8192);
        // the tiers a run of positions crosses
        let serving = |a, b, m| tiers_serving(&plan, a, b, m).collect::<Vec<_>>();
        assert_eq!(serving(0, 256, 8192), vec![0]);
        assert_eq!(serving(256, 512, 8192), vec![0]);
        assert_eq!(serving(256, 513, 8192), vec![0, 1]);
        assert_eq!(serving(1024, 1280, 8192), vec![1]);
        assert_eq!(serving(0, 8192, 8192), vec![0, 1, 2]);
        assert_eq!(serving(4096, 4096, 8192), vec![2]);
        assert_eq!(serving(300, 9000, 1000), vec![0, 1]);
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
                // the tensor-core kernel's ranges: whole 16-position tiles
                let p = tc_range(n, splits);
                assert!(p >= 16 && p.is_multiple_of(16));
                assert!(n.div_ceil(p) <= splits, "n {n} splits {splits} p {p}");
            }
        }
    }

    #[test]
    fn the_tensor_core_kernel_fits_its_ring_and_its_merge() {
        // 128-dim heads: 8 warps x 2 stages x (K + V) x 16 rows of 136 halves
        assert_eq!(SplitAttn::tc_smem(128, 4), 8 * 2 * 2 * 16 * 136 * 2);
        assert_eq!(SplitAttn::tc_smem(64, 3), 8 * 2 * 2 * 16 * 72 * 2);
        // the merge of 16 heads' outputs in f32 fits in the ring of 128-dim heads
        assert!(4 * (2 * 8 * 16 + 8 * 16 * 128) <= SplitAttn::tc_smem(128, 16));
        assert!(SplitAttn::supports_tc(128, 16) && !SplitAttn::supports_tc(128, 17));
        assert!(SplitAttn::supports_tc(96, 1) && SplitAttn::supports_tc(64, 3));
        assert!(!SplitAttn::supports_tc(80, 4) && !SplitAttn::supports_tc(256, 1));
    }
}
