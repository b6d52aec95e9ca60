//! Prefill: a prompt or a perplexity chunk as batched GEMMs instead of one decode step per token.
//!
//! Every linear runs as dequantize + cuBLAS GEMM with f32 output (`GpuLinear::dequantize_into`,
//! `gemm_xwt_to`); error compensation stays per row, exactly as the CPU engine applies it (each
//! row selected from its own f32 input, its residual rows gathered from mapped pinned memory,
//! `pf_select` / `pf_dec_gather`); `pf_finish` then adds compensation and bias to the unrounded
//! sums and stores the activation or adds to the f32 residual stream, as the decode step's GEMV
//! does. Norms, RoPE + KV append, causal attention and SiLU·up are the row-batched twins of the
//! decode-step kernels (kernels/ops.cu, `pf_*`). Rows are processed in chunks of
//! `CudaOptions::prefill_chunk` tokens, each attending to the cache written by the chunks before it.

use anyhow::{anyhow, bail, Result};
use decdec_model::model::Logits;

use super::{ablate_skip, CudaEngine, Proj, ProjKind};
use crate::gpu::DevBuf;
use crate::kargs;
use crate::linear::{gemm_xwt_split, gemm_xwt_to};

/// Query rows per block of `pf_attn` (kernels/ops.cu `PF_ROWS`).
const PF_ROWS: usize = 16;

/// Cache positions per shared-memory tile of `pf_attn` (kernels/ops.cu `PF_KT`).
const PF_KT: usize = 64;

/// Dynamic shared memory of `pf_attn`: the block's queries and one tile of keys and values (f32).
fn pf_attn_smem(head_dim: usize) -> u32 {
    ((PF_ROWS * head_dim + PF_KT * (head_dim + 1) + PF_KT * head_dim) * 4) as u32
}

/// Query rows per block of the tensor-core attention `pf_attn_tc{64,128}` (kernels/ops.cu
/// `PF_TC_ROWS`).
const PF_TC_ROWS: usize = 64;

/// One launch of the prefill attention: kernel name, grid, block and dynamic shared memory.
pub struct AttnLaunch {
    pub kernel: String,
    pub grid: u32,
    pub block: u32,
    pub smem: u32,
}

/// The prefill attention for `rows` query rows of `heads` heads: the tensor-core kernel for head
/// dimensions 64 and 128 (unless `cuda_cores`), the CUDA-core kernel for any other.
pub fn pf_attn_launch(
    head_dim: usize,
    rows: usize,
    heads: usize,
    sfx: &str,
    cuda_cores: bool,
) -> AttnLaunch {
    if !cuda_cores && (head_dim == 64 || head_dim == 128) {
        AttnLaunch {
            kernel: format!("pf_attn_tc{head_dim}_{sfx}"),
            grid: (rows.div_ceil(PF_TC_ROWS) * heads) as u32,
            block: 128,
            smem: 0,
        }
    } else {
        AttnLaunch {
            kernel: format!("pf_attn_{sfx}"),
            grid: (rows.div_ceil(PF_ROWS) * heads) as u32,
            block: 256,
            smem: pf_attn_smem(head_dim),
        }
    }
}

/// Device buffers of the prefill, sized for `rows` tokens per chunk.
pub(super) struct PrefillBufs {
    rows: usize,
    toks: DevBuf,
    /// residual stream, f32 [rows][hidden]
    h: DevBuf,
    /// GEMM input, activation dtype [rows][max_k], and its f32 copy (selection, compensation)
    x: DevBuf,
    x32: DevBuf,
    qkv: DevBuf,
    attn: DevBuf,
    gu: DevBuf,
    /// f32 GEMM output and compensation [rows][max_n]
    y32: DevBuf,
    comp: DevBuf,
    /// selected channels / activations [rows][max_k]
    sel_idx: DevBuf,
    sel_val: DevBuf,
    /// dequantized weight of the running linear, activation dtype [n][k], and its remainder
    wscratch: DevBuf,
    wscratch_lo: DevBuf,
    /// logits, f32 [logit_rows][vocab]
    logits: DevBuf,
    logit_rows: usize,
}

/// Where a linear of the prefill delivers its rows.
#[derive(Clone, Copy)]
enum Dest {
    /// activation dtype at `ptr + (t * ld + col) * 2`
    Act { ptr: u64, ld: usize, col: usize },
    /// added to the f32 residual stream [rows][n]
    AddH(u64),
}

impl CudaEngine {
    /// Whether the batched prefill can run this model: every quantized weight must dequantize
    /// (uniform g128 or LUT); otherwise prompts run token by token through the decode step.
    fn prefill_supported(&self) -> bool {
        self.opts.prefill_chunk > 1
            && self.gpu.cublas.is_some()
            && self.layers.iter().all(|l| {
                l.projs().all(|p| match &p.kind {
                    ProjKind::Quant(q) => q.can_dequantize(),
                    ProjKind::Dense(_) => true,
                })
            })
    }

    /// Whether `n` input tokens go through the batched prefill (else the decode step).
    pub(super) fn prefills(&self, n: usize) -> bool {
        n >= self.opts.prefill_min.max(2) && self.prefill_supported()
    }

    fn ensure_prefill_bufs(&mut self, rows: usize, logit_rows: usize) -> Result<()> {
        if let Some(b) = &self.prefill {
            if b.rows >= rows && b.logit_rows >= logit_rows {
                return Ok(());
            }
        }
        self.prefill = None; // free the old buffers first
        let d = &self.dims;
        let dim = d.heads * d.head_dim;
        let max_k = d.hidden.max(d.inter).max(dim);
        let max_n = d.qkv().max(d.hidden).max(2 * d.inter);
        let max_w = self
            .layers
            .iter()
            .flat_map(|l| l.projs())
            .filter(|p| matches!(p.kind, ProjKind::Quant(_)))
            .map(|p| p.n * p.k)
            .max()
            .unwrap_or(0);
        let g = &self.gpu;
        let act = |n: usize| g.alloc((n + 8) * 2);
        self.prefill = Some(PrefillBufs {
            rows,
            toks: g.alloc(rows * 4)?,
            h: g.alloc(rows * d.hidden * 4)?,
            x: act(rows * max_k)?,
            x32: g.alloc(rows * max_k * 4)?,
            qkv: act(rows * d.qkv())?,
            attn: act(rows * dim)?,
            gu: act(rows * 2 * d.inter)?,
            y32: g.alloc(rows * max_n * 4)?,
            comp: g.alloc(rows * max_n * 4)?,
            sel_idx: g.alloc(rows * max_k * 4)?,
            sel_val: g.alloc(rows * max_k * 4)?,
            wscratch: act(max_w)?,
            wscratch_lo: act(max_w)?,
            logits: g.alloc(logit_rows.max(1) * d.vocab * 4)?,
            logit_rows,
        });
        Ok(())
    }

    /// Run `tokens` at positions `pos..` (KV cache appended); returns the logits `logits` asks for.
    pub(super) fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        // callers may be on any thread (the server's workers)
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(|e| anyhow!("{e:?}"))?;
        let cap = self.opts.prefill_chunk;
        let rows = cap.min(tokens.len());
        let logit_rows = match logits {
            Logits::All => rows,
            Logits::Last => 1,
            Logits::None => 0,
        };
        self.ensure_prefill_bufs(rows, logit_rows)?;
        let mut out = Vec::new();
        let n_chunks = tokens.len().div_ceil(cap);
        for (i, chunk) in tokens.chunks(cap).enumerate() {
            let want = match logits {
                Logits::All => Logits::All,
                Logits::Last if i + 1 == n_chunks => Logits::Last,
                _ => Logits::None,
            };
            self.prefill_chunk(chunk, want, &mut out)?;
        }
        self.gpu.check()?;
        Ok(out)
    }

    fn prefill_chunk(&mut self, tokens: &[u32], logits: Logits, out: &mut Vec<f32>) -> Result<()> {
        let (t, pos0) = (tokens.len(), self.pos);
        let d = &self.dims;
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= d.vocab) {
            bail!("token id {bad} is outside the vocabulary ({})", d.vocab);
        }
        let b = self.prefill.as_ref().expect("prefill buffers");
        let g = &self.gpu;
        let sfx = self.opts.dtype.suffix();
        let toks: Vec<i32> = tokens.iter().map(|&x| x as i32).collect();
        g.write(&b.toks, 0, &toks)?;
        let (hid, inter) = (d.hidden as i32, d.inter as i32);
        let (nh, nkv, hd) = (d.heads as i32, d.kv_heads as i32, d.head_dim as i32);
        let (pos0_i, rows_i) = (pos0 as i32, t as i32);
        let scale = 1.0 / (d.head_dim as f32).sqrt();
        let blocks = |n: usize| (t * n).div_ceil(256) as u32;
        unsafe {
            g.launch(
                &format!("pf_embed_{sfx}"),
                (t * d.hidden.div_ceil(256)) as u32,
                256,
                0,
                kargs![&self.embed.ptr, &b.toks.ptr, &b.h.ptr, &hid],
            )?;
        }
        // the same attention kernel for every layer (DECDEC_PF_ATTN=fma: the CUDA-core one, A/B timing)
        let fma = std::env::var("DECDEC_PF_ATTN").is_ok_and(|v| v == "fma");
        let a = pf_attn_launch(d.head_dim, t, d.heads, sfx, fma);
        for l in &self.layers {
            self.pf_norm(b, l.in_norm.ptr, t)?;
            self.pf_group(b, &l.qkv, b.x.ptr, t, b.qkv.ptr, d.qkv())?;
            unsafe {
                g.launch(
                    &format!("pf_rope_kv_{sfx}"),
                    (t * (d.heads + 2 * d.kv_heads)) as u32,
                    64,
                    0,
                    kargs![
                        &b.qkv.ptr,
                        &self.inv_freq.ptr,
                        &l.kc.ptr,
                        &l.vc.ptr,
                        &pos0_i,
                        &nh,
                        &nkv,
                        &hd
                    ],
                )?;
                if !ablate_skip("pf_attn") {
                    g.launch(
                        &a.kernel,
                        a.grid,
                        a.block,
                        a.smem,
                        kargs![
                            &b.qkv.ptr,
                            &l.kc.ptr,
                            &l.vc.ptr,
                            &b.attn.ptr,
                            &b.x32.ptr,
                            &pos0_i,
                            &rows_i,
                            &nh,
                            &nkv,
                            &hd,
                            &scale
                        ],
                    )?;
                }
            }
            self.pf_linear(b, &l.o, b.attn.ptr, t, Dest::AddH(b.h.ptr), None)?;
            self.pf_norm(b, l.post_norm.ptr, t)?;
            self.pf_group(b, &l.gate_up, b.x.ptr, t, b.gu.ptr, 2 * d.inter)?;
            unsafe {
                g.launch(
                    &format!("pf_silu_{sfx}"),
                    blocks(d.inter),
                    256,
                    0,
                    kargs![&b.gu.ptr, &b.x.ptr, &b.x32.ptr, &inter, &rows_i],
                )?;
            }
            self.pf_linear(b, &l.down, b.x.ptr, t, Dest::AddH(b.h.ptr), None)?;
        }
        // logits of the rows asked for, from the final norm
        let first = match logits {
            Logits::All => Some(0),
            Logits::Last => Some(t - 1),
            Logits::None => None,
        };
        if let Some(first) = first {
            self.pf_norm(b, self.final_norm.ptr, t)?;
            let n_rows = t - first;
            let x = b.x.ptr + (first * d.hidden * 2) as u64;
            match self.head.dense_ptr(self.embed.ptr) {
                Some(lm) => gemm_xwt_to(
                    g,
                    self.opts.dtype,
                    x,
                    lm,
                    b.logits.ptr,
                    n_rows,
                    d.hidden,
                    d.vocab,
                    true,
                    false,
                )?,
                // a quantized head runs the decode step's GEMV per row: no dequantized copy of
                // the largest matrix in device memory, the same arithmetic as decoding
                None => {
                    for r in 0..n_rows {
                        self.head_gemv(
                            x + (r * d.hidden * 2) as u64,
                            b.logits.ptr + (r * d.vocab * 4) as u64,
                        )?;
                    }
                }
            }
            out.extend(g.read_raw::<f32>(b.logits.ptr, n_rows * d.vocab)?);
        }
        self.pos += t;
        self.counters.rows_fetched += self.rows_per_step * t as u64;
        self.counters.bytes_fetched += self.bytes_per_step * t as u64;
        Ok(())
    }

    /// x, x32 = RMSNorm(h) with weight `w`, every row.
    fn pf_norm(&self, b: &PrefillBufs, w: u64, t: usize) -> Result<()> {
        let hid = self.dims.hidden as i32;
        unsafe {
            self.gpu.launch(
                &format!("pf_rmsnorm_{}", self.opts.dtype.suffix()),
                t as u32,
                1024,
                0,
                kargs![&b.h.ptr, &w, &b.x.ptr, &b.x32.ptr, &hid, &self.dims.eps],
            )
        }
    }

    /// The linears of a group (sharing input x) into their columns of `y` ([t][n_total]); the
    /// group's bias (kept by its first part) is added per part.
    fn pf_group(
        &self,
        b: &PrefillBufs,
        ps: &[Proj],
        x: u64,
        t: usize,
        y: u64,
        n_total: usize,
    ) -> Result<()> {
        let bias = ps.first().and_then(|p| p.bias.as_ref()).map(|b| b.ptr);
        for p in ps {
            let dest = Dest::Act {
                ptr: y,
                ld: n_total,
                col: p.row_off,
            };
            let pb = bias.map(|ptr| ptr + (p.row_off * 4) as u64);
            self.pf_linear(b, p, x, t, dest, pb)?;
        }
        Ok(())
    }

    /// One linear over t rows: GEMM (f32), the rows' compensation, then `pf_finish`.
    fn pf_linear(
        &self,
        b: &PrefillBufs,
        p: &Proj,
        x: u64,
        t: usize,
        dest: Dest,
        bias: Option<u64>,
    ) -> Result<()> {
        let g = &self.gpu;
        let dt = self.opts.dtype;
        match &p.kind {
            ProjKind::Quant(lin) => {
                let (hi, lo) = (b.wscratch.ptr, b.wscratch_lo.ptr);
                if !ablate_skip("pf_dequant") {
                    lin.dequantize_into(g, dt, hi, lo)?;
                }
                if !ablate_skip("pf_gemm") {
                    gemm_xwt_split(g, dt, x, hi, lo, b.y32.ptr, t, p.k, p.n)?;
                }
            }
            ProjKind::Dense(w) => {
                if !ablate_skip("pf_gemm") {
                    gemm_xwt_to(g, dt, x, w.ptr, b.y32.ptr, t, p.k, p.n, true, false)?
                }
            }
        }
        let compensated = match &p.kind {
            ProjKind::Quant(lin) if self.dec_enabled && p.k_chunk > 0 => lin.compensate_rows(
                g,
                b.x32.ptr,
                t,
                p.k_chunk,
                b.sel_idx.ptr,
                b.sel_val.ptr,
                b.comp.ptr,
            )?,
            _ => false,
        };
        let comp = if compensated { b.comp.ptr } else { 0 };
        let (out, ldo, h) = match dest {
            Dest::Act { ptr, ld, col } => (ptr + (col * 2) as u64, ld as i32, 0u64),
            Dest::AddH(h) => (0u64, 0, h),
        };
        let (n_i, rows_i) = (p.n as i32, t as i32);
        let bias = bias.unwrap_or(0);
        unsafe {
            g.launch(
                &format!("pf_finish_{}", dt.suffix()),
                (t * p.n).div_ceil(256) as u32,
                256,
                0,
                kargs![&b.y32.ptr, &comp, &bias, &n_i, &rows_i, &out, &ldo, &h],
            )
        }
    }
}
