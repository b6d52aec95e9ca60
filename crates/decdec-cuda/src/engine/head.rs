//! The output projection (logits): f16/bf16 as loaded (or the tied embedding table), or quantized at
//! load time (`--head-bits`): 3/4 bits through the uniform tile GEMV, 8 bits through the
//! CUDA-core `head_u8_gemv` (kernels/ops.cu; the tile GEMV has no 8-bit layout), which costs
//! almost no perplexity and reads half the f16 head's bytes (docs/performance.md, experiment 58).

use anyhow::{bail, Result};
use decdec_core::quant::pack::padded_k;
use decdec_core::quant::{QuantWeight, UniformQuant};

use super::{gpu_linear_of, upload_act, Dims};
use crate::gpu::{DevBuf, Dtype, Gpu};
use crate::kargs;
use crate::linear::{
    dense_gemv, fill_act, fill_f32, fill_u32, DecMode, Format, GpuLinear, OutMode,
};

/// Codes, scales and zero points of an 8-bit head on the device (the canonical uniform layout).
pub(crate) struct U8Head {
    codes: DevBuf,
    scales: DevBuf,
    zeros: DevBuf,
    n: usize,
    k: usize,
    /// bytes per row of `codes` (K rounded up to 32)
    k_pad: usize,
    group: usize,
    /// blocks of the f16 / bf16 kernel resident per SM (rows are grid-strided over one wave)
    per_sm: [u32; 2],
}

impl U8Head {
    /// Whether the kernel takes K input channels (16 per lane load; x staged in 48 KB of shared
    /// memory).
    pub(crate) fn supports(k: usize) -> bool {
        k.is_multiple_of(16) && k * 4 <= 48 * 1024
    }

    /// Checks the shape and measures the kernels' occupancy once (the launch reuses it).
    fn per_sm(gpu: &Gpu, n: usize, k: usize, group: usize) -> Result<[u32; 2]> {
        if !Self::supports(k) {
            bail!("8-bit head: hidden size {k} is not a multiple of 16 or exceeds the kernel's 12288 (x staged in shared memory)");
        }
        if !group.is_power_of_two() || group < 16 {
            bail!("8-bit head: the group size {group} must be a power of two >= 16");
        }
        if n == 0 {
            bail!("8-bit head: no output rows");
        }
        let smem = (k * 4) as u32;
        Ok([
            gpu.blocks_per_sm(&Self::kernel(Dtype::F16), 256, smem)?,
            gpu.blocks_per_sm(&Self::kernel(Dtype::Bf16), 256, smem)?,
        ])
    }

    fn kernel(dt: Dtype) -> String {
        format!("head_u8_gemv_{}", dt.suffix())
    }

    pub(crate) fn upload(gpu: &Gpu, q: &UniformQuant) -> Result<U8Head> {
        let per_sm = Self::per_sm(gpu, q.n, q.k, q.group_size)?;
        Ok(U8Head {
            codes: gpu.upload(&q.qweight)?,
            scales: gpu.upload(&q.scales)?,
            zeros: gpu.upload(&q.zeros)?,
            n: q.n,
            k: q.k,
            k_pad: padded_k(q.k),
            group: q.group_size,
            per_sm,
        })
    }

    /// Random codes, zero points and scales (synthetic models).
    pub(crate) fn random(gpu: &Gpu, n: usize, k: usize, group: usize, seed: u64) -> Result<U8Head> {
        let per_sm = Self::per_sm(gpu, n, k, group)?;
        let k_pad = padded_k(k);
        let ng = k.div_ceil(group);
        let codes = gpu.alloc(n * k_pad)?;
        fill_u32(gpu, &codes, seed)?;
        let zeros = gpu.alloc((n * ng).div_ceil(4) * 4)?;
        fill_u32(gpu, &zeros, seed ^ 0x5a5a)?;
        let scales = gpu.alloc(n * ng * 4)?;
        fill_f32(gpu, &scales, seed ^ 0xa5a5, 1e-4, 2e-4)?;
        Ok(U8Head {
            codes,
            scales,
            zeros,
            n,
            k,
            k_pad,
            group,
            per_sm,
        })
    }

    /// f32 `y = W x` for one activation-dtype row `x`.
    pub(crate) fn forward(&self, gpu: &Gpu, dt: Dtype, x: u64, y: u64) -> Result<()> {
        let (n, k, kp, g, mode) = (
            self.n as i32,
            self.k as i32,
            self.k_pad as i32,
            self.group.trailing_zeros() as i32,
            OutMode::StoreF32 as i32,
        );
        // rows are grid-strided: exactly the blocks that are resident at once (one wave)
        let per_sm = self.per_sm[usize::from(dt == Dtype::Bf16)];
        let blocks = (self.n.div_ceil(8) as u32).min(gpu.sms as u32 * per_sm);
        unsafe {
            gpu.launch(
                &Self::kernel(dt),
                blocks,
                256,
                (self.k * 4) as u32,
                kargs![
                    &self.codes.ptr,
                    &self.scales.ptr,
                    &self.zeros.ptr,
                    &x,
                    &y,
                    &n,
                    &k,
                    &kp,
                    &g,
                    &mode
                ],
            )
        }
    }

    /// Bytes one call streams: codes, scales and zero points.
    pub(crate) fn weight_bytes(&self) -> usize {
        self.n * (self.k_pad + self.k.div_ceil(self.group) * 5)
    }
}

/// The output projection of a [`super::CudaEngine`].
pub(crate) enum Head {
    /// tied: the embedding table, read as an activation-dtype [vocab][hidden] matrix
    Tied,
    /// its own activation-dtype [vocab][hidden] matrix
    Dense(DevBuf),
    /// 3/4-bit uniform (`--head-bits 3|4`): the tile GEMV
    Quant(Box<GpuLinear>),
    /// 8-bit uniform (`--head-bits 8`)
    U8(U8Head),
}

impl Head {
    /// The model's head: quantized at load time, its own matrix, or tied to the embedding.
    pub(crate) fn of_model(
        gpu: &Gpu,
        dt: Dtype,
        quant: Option<&QuantWeight>,
        dense: Option<&[f32]>,
    ) -> Result<Head> {
        Ok(match (quant, dense) {
            (Some(QuantWeight::Uniform(u)), _) if u.bits == 8 => Head::U8(U8Head::upload(gpu, u)?),
            (Some(q), _) => Head::Quant(Box::new(gpu_linear_of(gpu, q)?)),
            (None, Some(w)) => Head::Dense(upload_act(gpu, dt, w)?),
            (None, None) => Head::Tied,
        })
    }

    /// A random head of a synthetic model: dense (`bits` None) or uniform g128 at `bits`.
    pub(crate) fn random(gpu: &Gpu, dt: Dtype, d: &Dims, bits: Option<u32>) -> Result<Head> {
        Ok(match bits {
            Some(8) => Head::U8(U8Head::random(gpu, d.vocab, d.hidden, 128, 8)?),
            Some(b) => Head::Quant(Box::new(GpuLinear::random(
                gpu,
                Format::Uniform,
                b,
                d.vocab,
                d.hidden,
                128,
                8,
            )?)),
            None => {
                let lm = gpu.alloc((d.vocab * d.hidden).div_ceil(8) * 16)?;
                fill_act(gpu, dt, lm.ptr, d.vocab * d.hidden, 8, -0.02, 0.02)?;
                Head::Dense(lm)
            }
        })
    }

    /// f32 logits = head x for one activation-dtype row `x`; `embed` is the tied table.
    pub(crate) fn forward(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        d: &Dims,
        embed: u64,
        x: u64,
        logits: u64,
    ) -> Result<()> {
        let w = match self {
            Head::Quant(lin) => {
                return lin.forward(gpu, dt, x, logits, OutMode::StoreF32, DecMode::Off)
            }
            Head::U8(h) => return h.forward(gpu, dt, x, logits),
            Head::Dense(w) => w.ptr,
            Head::Tied => embed,
        };
        dense_gemv(gpu, dt, w, x, logits, d.vocab, d.hidden, OutMode::StoreF32)
    }

    /// The activation-dtype matrix a batched prefill can multiply by with cuBLAS, if any.
    pub(crate) fn dense_ptr(&self, embed: u64) -> Option<u64> {
        match self {
            Head::Dense(w) => Some(w.ptr),
            Head::Tied => Some(embed),
            Head::Quant(_) | Head::U8(_) => None,
        }
    }

    /// Bits of a quantized head (`None`: activation dtype).
    pub(crate) fn bits(&self) -> Option<u32> {
        match self {
            Head::Quant(q) => Some(q.shape.bits),
            Head::U8(_) => Some(8),
            Head::Dense(_) | Head::Tied => None,
        }
    }

    /// Bytes one decode step streams for the head.
    pub(crate) fn weight_bytes(&self, d: &Dims) -> usize {
        match self {
            Head::Quant(q) => q.weight_bytes(),
            Head::U8(h) => h.weight_bytes(),
            Head::Dense(_) | Head::Tied => d.vocab * d.hidden * 2,
        }
    }
}
