//! `CudaEngine`: the decoder on the GPU, implementing `decdec_model::Engine`.
//!
//! One decode step (embedding -> every layer -> final norm -> logits -> argmax) is captured once as a
//! CUDA graph and replayed per token; token and position come from mapped pinned host memory (or from
//! the previous step's argmax, for greedy benchmark loops), so a replay needs no other host work.
//! Prompts and perplexity chunks of at least `CudaOptions::prefill_min` tokens run as a batched
//! prefill (`prefill`: dequantize + cuBLAS GEMM per linear, error compensation still per position
//! as on the CPU); shorter inputs, `prefill_chunk` <= 1 or weights the prefill cannot dequantize go
//! through the decode step token by token.

pub mod attn;
pub(crate) mod head;
mod prefill;

use head::Head;
pub use prefill::pf_attn_launch;

use anyhow::{anyhow, bail, Context, Result};
use decdec_core::quant::{LutQuant, QuantWeight, UniformQuant};
use decdec_core::residual::Residual;
use decdec_core::selection::SelectMethod;
use decdec_model::engine::{DecCounters, Engine};
use decdec_model::linear::Linear;
use decdec_model::model::{Logits, Model};
use decdec_model::ModelConfig;

use crate::gpu::{DevBuf, Dtype, Gpu, Graph, HostMapped};
use crate::kargs;
use crate::linear::{
    dec_total_rows, dense_gemv, fill_act, DecMode, Format, GpuLinear, OutMode, SelArgs,
};
use crate::repack::{LutRef, ResidualRef, UniformRef};

/// Options of the CUDA engine.
#[derive(Clone, Debug)]
pub struct CudaOptions {
    pub dtype: Dtype,
    /// KV cache capacity (positions).
    pub max_seq: usize,
    /// DEC blocks per compensated GEMV launch (fused design).
    pub n_dec: usize,
    /// Tokens per batched prefill chunk (<= 1: prompts run token by token through the decode step).
    /// Every chunk dequantizes every weight again, so longer chunks pay off on long prompts
    /// (experiment 47: 1024 instead of 512 is +20% prefill tokens/s at 1024-2048 prompt tokens on
    /// an 8B model) at ~0.3 MB of activation buffers per row for an 8B model.
    pub prefill_chunk: usize,
    /// Shorter inputs run token by token: the prefill's fixed cost (every weight dequantized and
    /// read twice, ~21 ms for an 8B model on the H200) buys ~11 decode steps there.
    pub prefill_min: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            dtype: Dtype::F16,
            max_seq: 4096,
            n_dec: 64,
            prefill_chunk: 1024,
            prefill_min: 16,
        }
    }
}

enum ProjKind {
    Quant(Box<GpuLinear>),
    /// activation-dtype weights `[n, k]`
    Dense(DevBuf),
}

/// One GEMV of a decoder layer (possibly several fused linears), writing rows `row_off..` of its
/// group's output buffer.
struct Proj {
    kind: ProjKind,
    n: usize,
    k: usize,
    row_off: usize,
    bias: Option<DevBuf>,
    k_chunk: usize,
}

struct GpuLayer {
    in_norm: DevBuf,
    post_norm: DevBuf,
    qkv: Vec<Proj>,
    o: Proj,
    gate_up: Vec<Proj>,
    down: Proj,
    kc: DevBuf,
    vc: DevBuf,
}

impl GpuLayer {
    /// The layer's projections in execution order.
    fn projs(&self) -> impl Iterator<Item = &Proj> {
        self.qkv
            .iter()
            .chain(std::iter::once(&self.o))
            .chain(self.gate_up.iter())
            .chain(std::iter::once(&self.down))
    }
}

/// Shapes of the decoder the engine runs.
#[derive(Clone, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub eps: f32,
}

impl Dims {
    fn from_config(c: &ModelConfig) -> Dims {
        Dims {
            hidden: c.hidden_size,
            inter: c.intermediate_size,
            layers: c.num_layers,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            vocab: c.vocab_size,
            eps: c.rms_norm_eps,
        }
    }
    fn qkv(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

pub struct CudaEngine {
    pub gpu: Gpu,
    config: ModelConfig,
    dims: Dims,
    opts: CudaOptions,
    layers: Vec<GpuLayer>,
    embed: DevBuf,
    head: Head,
    final_norm: DevBuf,
    inv_freq: DevBuf,
    // activations
    h: DevBuf,
    xn: DevBuf,
    qkv: DevBuf,
    attn: DevBuf,
    gu: DevBuf,
    act: DevBuf,
    logits: DevBuf,
    argmax: DevBuf,
    /// f32 copies of the GEMV inputs for error compensation (selection on the CPU's values)
    x32: DevBuf,
    /// per 1024-channel chunk of the attention output: head blocks done (selection for o)
    attn_cnt: DevBuf,
    /// decode-step attention per context tier: (from position, split-KV plan or None for
    /// `attn_decode`), ascending, the first from 0 (`attn::tier_plan`)
    attn_tiers: Vec<(usize, Option<attn::SplitAttn>)>,
    /// device [token, position] of the running step
    tp: DevBuf,
    /// mapped host [token, position] written before each replay
    host_tp: HostMapped,
    /// captured decode steps, one per attention tier
    graph: Vec<Option<Graph>>,
    graph_feedback: Vec<Option<Graph>>,
    /// buffers of the batched prefill (allocated on first use)
    prefill: Option<prefill::PrefillBufs>,
    pos: usize,
    dec_enabled: bool,
    rows_per_step: u64,
    bytes_per_step: u64,
    counters: DecCounters,
}

// SAFETY: the engine owns its CUDA objects; every method binds the context to the calling thread
// before use, and the trait's &mut self receivers serialize access.
unsafe impl Send for CudaEngine {}

/// `DECDEC_FUSE=norm` turns on the decode-step fusion that measured slower on the H200
/// (docs/performance.md, experiments 14, 59, 77): RMSNorm inside the consumer GEMV.
fn fusion_on(what: &str) -> bool {
    std::env::var("DECDEC_FUSE")
        .map(|v| v.split(',').any(|w| w == what || w == "all"))
        .unwrap_or(false)
}

/// An experiment knob's value (0 when unset or not a number: the default).
fn env_usize(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The split-KV kernel asked for by `DECDEC_ATTN_KERNEL=cuda|tc` and `DECDEC_ATTN_GB=N` (heads
/// per block of the CUDA-core kernel, which it implies); None: the default plan.
fn attn_kind_knob() -> Option<attn::SplitKind> {
    let gb = env_usize("DECDEC_ATTN_GB");
    match std::env::var("DECDEC_ATTN_KERNEL").ok().as_deref() {
        Some("tc") => Some(attn::SplitKind::TensorCores),
        Some("cuda") => Some(attn::SplitKind::Cuda(gb)),
        _ if gb > 0 => Some(attn::SplitKind::Cuda(gb)),
        _ => None,
    }
}

/// `DECDEC_ROPE_LAUNCH=1`: RoPE and the KV append in their own launch (`rope_kv`) before the
/// one-block attention and the tensor-core split kernel too, as before experiments 78 and 81
/// (A/B knob).
fn rope_launch() -> bool {
    std::env::var_os("DECDEC_ROPE_LAUNCH").is_some()
}

/// `DECDEC_ATTN_VROWS=N`: value rows the one-block decode attention stages in shared memory
/// before its PDL wait (experiment 76; unset: `attn::single_plan`'s default).
fn attn_vrows() -> Option<usize> {
    std::env::var("DECDEC_ATTN_VROWS")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// `DECDEC_SEL_IN_GEMV=qkv,o,gu,d`: those groups' salient channels are selected by the DEC
/// blocks of their GEMV instead of by the kernel that produces x (experiment knob).
fn sel_in_gemv(group: &str) -> bool {
    std::env::var("DECDEC_SEL_IN_GEMV")
        .map(|v| v.split(',').any(|w| w == group || w == "all"))
        .unwrap_or(false)
}

/// `DECDEC_ABLATE_SKIP=norm,attn,silu`: leave those launches out of the decode step; `sel`: the
/// producers of x do not select (the DEC blocks fetch the rows of a stale selection); `pf_attn`,
/// `pf_dequant`, `pf_gemm`: leave those out of the batched prefill. Timing
/// ablations only: the results are wrong; never set outside `bench decode`.
pub(crate) fn ablate_skip(what: &str) -> bool {
    std::env::var("DECDEC_ABLATE_SKIP")
        .map(|v| v.split(',').any(|w| w == what))
        .unwrap_or(false)
}

/// The selection request a producer of x gets (see `ablate_skip`).
fn producer_sel(sa: Option<SelArgs>) -> SelArgs {
    if ablate_skip("sel") {
        SelArgs::default()
    } else {
        sa.unwrap_or_default()
    }
}

fn upload_act(gpu: &Gpu, dt: Dtype, v: &[f32]) -> Result<DevBuf> {
    let mut bits: Vec<u16> = v.iter().map(|&x| dt.to_bits(x)).collect();
    bits.resize(v.len().div_ceil(8) * 8, 0);
    gpu.upload(&bits)
}

fn act_buf(gpu: &Gpu, n: usize) -> Result<DevBuf> {
    gpu.alloc_zeroed((n.div_ceil(8) * 8 + 8) * 2)
}

/// Rows of several canonical quantized weights with the same input, stacked (q,k,v or gate,up).
fn concat_quant(parts: &[&QuantWeight]) -> Option<QuantWeight> {
    match parts[0] {
        QuantWeight::Uniform(first) => {
            let mut out = UniformQuant {
                bits: first.bits,
                group_size: first.group_size,
                k: first.k,
                n: 0,
                qweight: Vec::new(),
                scales: Vec::new(),
                zeros: Vec::new(),
            };
            for p in parts {
                match p {
                    QuantWeight::Uniform(q)
                        if q.bits == first.bits
                            && q.group_size == first.group_size
                            && q.k == first.k =>
                    {
                        out.n += q.n;
                        out.qweight.extend_from_slice(&q.qweight);
                        out.scales.extend_from_slice(&q.scales);
                        out.zeros.extend_from_slice(&q.zeros);
                    }
                    _ => return None,
                }
            }
            Some(QuantWeight::Uniform(out))
        }
        QuantWeight::Lut(first) => {
            let mut out = LutQuant {
                bits: first.bits,
                k: first.k,
                n: 0,
                qweight: Vec::new(),
                lut: Vec::new(),
            };
            for p in parts {
                match p {
                    QuantWeight::Lut(q) if q.bits == first.bits && q.k == first.k => {
                        out.n += q.n;
                        out.qweight.extend_from_slice(&q.qweight);
                        out.lut.extend_from_slice(&q.lut);
                    }
                    _ => return None,
                }
            }
            Some(QuantWeight::Lut(out))
        }
    }
}

fn gpu_linear_of(gpu: &Gpu, q: &QuantWeight) -> Result<GpuLinear> {
    match q {
        QuantWeight::Uniform(u) => GpuLinear::from_uniform(
            gpu,
            &UniformRef {
                bits: u.bits,
                group_size: u.group_size,
                n: u.n,
                k: u.k,
                qweight: &u.qweight,
                scales: &u.scales,
                zeros: &u.zeros,
            },
        ),
        QuantWeight::Lut(l) => GpuLinear::from_lut(
            gpu,
            &LutRef {
                bits: l.bits,
                n: l.n,
                k: l.k,
                qweight: &l.qweight,
                lut: &l.lut,
            },
        ),
    }
}

/// Upload one projection group (linears sharing their input) as few GEMVs as possible.
fn build_group(gpu: &Gpu, dt: Dtype, lins: &[&Linear]) -> Result<Vec<Proj>> {
    let k = lins[0].in_features;
    let n_total: usize = lins.iter().map(|l| l.out_features).sum();
    let any_bias = lins.iter().any(|l| l.bias.is_some());
    let bias = if any_bias {
        let mut b = Vec::with_capacity(n_total);
        for l in lins {
            match &l.bias {
                Some(v) => b.extend_from_slice(v),
                None => b.extend(std::iter::repeat_n(0.0, l.out_features)),
            }
        }
        Some(b)
    } else {
        None
    };
    let all_quant: Option<Vec<&QuantWeight>> = lins.iter().map(|l| l.quantized()).collect();
    let fused = all_quant.as_ref().and_then(|qs| concat_quant(qs));
    let mut out = Vec::new();
    if let Some(q) = fused {
        let mut lin = gpu_linear_of(gpu, &q)?;
        let k_chunk = attach_dec(gpu, &mut lin, lins)?;
        out.push(Proj {
            kind: ProjKind::Quant(Box::new(lin)),
            n: n_total,
            k,
            row_off: 0,
            bias: None,
            k_chunk,
        });
    } else if all_quant.is_none() && lins.iter().all(|l| l.quantized().is_none()) {
        let mut w = Vec::with_capacity(n_total * k);
        for l in lins {
            w.extend_from_slice(l.dense_weight());
        }
        out.push(Proj {
            kind: ProjKind::Dense(upload_act(gpu, dt, &w)?),
            n: n_total,
            k,
            row_off: 0,
            bias: None,
            k_chunk: 0,
        });
    } else {
        // mixed formats: one GEMV per linear into its rows
        let mut off = 0;
        for l in lins {
            let p = match l.quantized() {
                Some(q) => {
                    let mut lin = gpu_linear_of(gpu, q)?;
                    let k_chunk = attach_dec(gpu, &mut lin, std::slice::from_ref(l))?;
                    Proj {
                        kind: ProjKind::Quant(Box::new(lin)),
                        n: l.out_features,
                        k,
                        row_off: off,
                        bias: None,
                        k_chunk,
                    }
                }
                None => Proj {
                    kind: ProjKind::Dense(upload_act(gpu, dt, l.dense_weight())?),
                    n: l.out_features,
                    k,
                    row_off: off,
                    bias: None,
                    k_chunk: 0,
                },
            };
            off += l.out_features;
            out.push(p);
        }
    }
    if let Some(b) = bias {
        // the bias covers the whole group; it is added once after all parts
        out[0].bias = Some(gpu.upload(&b)?);
    }
    Ok(out)
}

/// Move the residuals of `lins` (fused along outputs) into mapped pinned memory; returns k_chunk.
fn attach_dec(gpu: &Gpu, lin: &mut GpuLinear, lins: &[&Linear]) -> Result<usize> {
    let decs: Vec<_> = lins.iter().map(|l| l.dec.as_ref()).collect();
    if decs.iter().all(|d| d.is_none()) {
        return Ok(0);
    }
    let decs: Vec<_> = decs
        .into_iter()
        .map(|d| {
            d.ok_or_else(|| {
                anyhow!(
                    "{}: some linears of a group have residuals and some do not",
                    lins[0].name
                )
            })
        })
        .collect::<Result<_>>()?;
    let k_chunk = decs[0].config.k_chunk;
    if decs.iter().any(|d| d.config.k_chunk != k_chunk) {
        bail!(
            "{}: linears sharing an input must use one k_chunk on the GPU",
            lins[0].name
        );
    }
    if k_chunk > 0 && decs[0].config.method != SelectMethod::Bucket {
        bail!(
            "the CUDA engine implements the bucket selection only (got {:?})",
            decs[0].config.method
        );
    }
    let parts: Vec<&Residual> = decs.iter().map(|d| &d.residual).collect();
    let fused = if parts.len() == 1 {
        parts[0].clone()
    } else {
        Residual::concat_outputs(&parts)?
    };
    let r = ResidualRef {
        bits: fused.bits,
        n: fused.n,
        k: fused.k,
        residual: &fused.codes,
        scales: &fused.scales,
    };
    lin.attach_residual(gpu, &r, &decs[0].thresholds)
        .with_context(|| format!("residuals of {}", lins[0].name))?;
    Ok(k_chunk)
}

impl CudaEngine {
    /// Upload a (quantized or dense) CPU model.
    pub fn from_model(model: &Model, opts: CudaOptions) -> Result<CudaEngine> {
        let gpu = Gpu::new()?;
        let dt = opts.dtype;
        let c = &model.config;
        let dims = Dims::from_config(c);
        let mut layers = Vec::new();
        for l in &model.layers {
            if l.o.bias.is_some()
                || l.gate.bias.is_some()
                || l.up.bias.is_some()
                || l.down.bias.is_some()
            {
                bail!(
                    "{}: biases outside q/k/v are not supported by the CUDA engine",
                    l.o.name
                );
            }
            let mut o = build_group(&gpu, dt, &[&l.o])?;
            let mut down = build_group(&gpu, dt, &[&l.down])?;
            layers.push(GpuLayer {
                in_norm: gpu.upload(&l.input_norm)?,
                post_norm: gpu.upload(&l.post_norm)?,
                qkv: build_group(&gpu, dt, &[&l.q, &l.k, &l.v])?,
                o: o.remove(0),
                gate_up: build_group(&gpu, dt, &[&l.gate, &l.up])?,
                down: down.remove(0),
                kc: act_buf(&gpu, opts.max_seq * c.kv_dim())?,
                vc: act_buf(&gpu, opts.max_seq * c.kv_dim())?,
            });
        }
        let embed = upload_act(&gpu, dt, &model.embed)?;
        let head = Head::of_model(
            &gpu,
            dt,
            model.head_quant.as_ref(),
            model.lm_head.as_deref(),
        )?;
        let final_norm = gpu.upload(&model.norm)?;
        let inv_freq = gpu.upload(&model.inv_freq)?;
        let mut e = Self::assemble(
            gpu,
            c.clone(),
            dims,
            opts,
            layers,
            embed,
            head,
            final_norm,
            inv_freq,
        )?;
        e.warm_up()?;
        Ok(e)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        gpu: Gpu,
        config: ModelConfig,
        dims: Dims,
        opts: CudaOptions,
        layers: Vec<GpuLayer>,
        embed: DevBuf,
        head: Head,
        final_norm: DevBuf,
        inv_freq: DevBuf,
    ) -> Result<CudaEngine> {
        if dims.head_dim > 256 || !dims.head_dim.is_multiple_of(2) {
            bail!(
                "head_dim {} is not supported by the attention kernel (even, <= 256)",
                dims.head_dim
            );
        }
        // experiment knobs: `DECDEC_ATTN=single|split|N`, `DECDEC_ATTN_KERNEL=cuda|tc`,
        // `DECDEC_ATTN_GB=heads per block` (CUDA-core kernel), `DECDEC_ATTN_SPLITS=S`
        // (docs/performance.md, experiments 53 and 81)
        let plan = attn::tier_plan(
            dims.head_dim,
            dims.heads / dims.kv_heads.max(1),
            std::env::var("DECDEC_ATTN").ok().as_deref(),
            attn_kind_knob(),
            env_usize("DECDEC_ATTN_SPLITS"),
            gpu.smem_optin,
        );
        let mut attn_tiers = Vec::new();
        for (i, &(from, split)) in plan.iter().enumerate() {
            if from >= opts.max_seq {
                break;
            }
            let upto = attn::tier_end(&plan, i, opts.max_seq);
            let sp = match split {
                Some((kind, splits)) => Some(attn::SplitAttn::new(
                    &gpu,
                    dims.heads,
                    dims.kv_heads,
                    dims.head_dim,
                    upto,
                    splits,
                    kind,
                )?),
                // the one-block-per-head kernel keeps every score of a step in shared memory
                None => {
                    attn::single_plan(dims.head_dim, upto, gpu.smem_optin, attn_vrows())?;
                    None
                }
            };
            attn_tiers.push((from, sp));
        }
        let n_tiers = attn_tiers.len();
        let host_tp = gpu.host_mapped(16)?;
        let (h, xn, qkv, attn, gu, act) = (
            gpu.alloc_zeroed(dims.hidden * 4)?,
            act_buf(&gpu, dims.hidden.max(dims.inter))?,
            act_buf(&gpu, dims.qkv())?,
            act_buf(&gpu, dims.heads * dims.head_dim)?,
            act_buf(&gpu, 2 * dims.inter)?,
            act_buf(&gpu, dims.inter)?,
        );
        let logits = gpu.alloc_zeroed(dims.vocab * 4)?;
        let x32 =
            gpu.alloc_zeroed(dims.hidden.max(dims.inter).max(dims.heads * dims.head_dim) * 4)?;
        let attn_cnt = gpu.alloc_zeroed((dims.heads * dims.head_dim).div_ceil(1024) * 4 + 16)?;
        let argmax = gpu.alloc_zeroed(16)?;
        let tp = gpu.alloc_zeroed(16)?;
        let mut e = CudaEngine {
            gpu,
            config,
            dims,
            opts,
            layers,
            embed,
            head,
            final_norm,
            inv_freq,
            h,
            xn,
            qkv,
            attn,
            gu,
            act,
            logits,
            argmax,
            x32,
            attn_cnt,
            attn_tiers,
            tp,
            host_tp,
            graph: (0..n_tiers).map(|_| None).collect(),
            graph_feedback: (0..n_tiers).map(|_| None).collect(),
            prefill: None,
            pos: 0,
            dec_enabled: true,
            rows_per_step: 0,
            bytes_per_step: 0,
            counters: DecCounters::default(),
        };
        e.count_dec();
        Ok(e)
    }

    /// One short prefill at load time (then forgotten): buffers, cuBLAS's lazily loaded GEMM
    /// kernels and the cache of compiled kernels are ready before the first prompt, so that its
    /// time to first token does not include them.
    fn warm_up(&mut self) -> Result<()> {
        let n = self.opts.prefill_min.max(2);
        if !self.prefills(n) || n > self.opts.max_seq {
            return Ok(());
        }
        self.forward(&vec![0; n], Logits::Last)?;
        self.truncate(0);
        self.counters = DecCounters::default();
        Ok(())
    }

    fn count_dec(&mut self) {
        let (mut rows, mut bytes) = (0u64, 0u64);
        for l in &self.layers {
            for p in l.projs() {
                if self.dec_enabled && p.k_chunk > 0 {
                    let r = dec_total_rows(p.k, p.k_chunk) as u64;
                    rows += r;
                    bytes += r * ((p.n * 4).div_ceil(32) * 4) as u64;
                }
            }
        }
        self.rows_per_step = rows;
        self.bytes_per_step = bytes;
    }

    /// Forget the captured steps (recaptured on the next step that needs one).
    fn drop_graphs(&mut self) {
        self.graph.iter_mut().for_each(|g| *g = None);
        self.graph_feedback.iter_mut().for_each(|g| *g = None);
    }

    /// Turn compensation on or off (the graph is recaptured on the next step).
    pub fn set_dec(&mut self, on: bool) {
        self.dec_enabled = on;
        self.drop_graphs();
        self.count_dec();
    }

    /// Set k_chunk of every compensated projection group [qkv, o, gate-up, down].
    pub fn set_k_chunks(&mut self, k: [usize; 4]) {
        fn set(p: &mut Proj, kc: usize) {
            if matches!(&p.kind, ProjKind::Quant(q) if q.dec.is_some()) {
                p.k_chunk = kc;
            }
        }
        for l in &mut self.layers {
            l.qkv.iter_mut().for_each(|p| set(p, k[0]));
            set(&mut l.o, k[1]);
            l.gate_up.iter_mut().for_each(|p| set(p, k[2]));
            set(&mut l.down, k[3]);
        }
        self.drop_graphs();
        self.count_dec();
    }

    /// The selection request a producer kernel fulfils for a group's DEC, when one fused GEMV
    /// compensates it (None: no DEC, or the GEMV's DEC blocks select themselves).
    fn sel_for(&self, ps: &[Proj], group: &str) -> Option<SelArgs> {
        if !self.dec_enabled || ps.len() != 1 || ps[0].k_chunk == 0 || sel_in_gemv(group) {
            return None;
        }
        match &ps[0].kind {
            ProjKind::Quant(l) => l.sel_args(ps[0].k_chunk),
            ProjKind::Dense(_) => None,
        }
    }

    fn proj(&self, p: &Proj, x: u64, y: u64, out: OutMode, presel: bool) -> Result<()> {
        let dt = self.opts.dtype;
        let esz = if out == OutMode::Store { 2 } else { 4 };
        let y = y + (p.row_off * esz) as u64;
        match &p.kind {
            ProjKind::Quant(lin) => {
                let mode = if self.dec_enabled && p.k_chunk > 0 && lin.dec.is_some() {
                    if presel {
                        DecMode::FusedPresel {
                            k_chunk: p.k_chunk,
                            n_dec: self.opts.n_dec,
                        }
                    } else {
                        DecMode::Fused {
                            k_chunk: p.k_chunk,
                            n_dec: self.opts.n_dec,
                        }
                    }
                } else {
                    DecMode::Off
                };
                lin.forward_x32(&self.gpu, dt, x, self.x32.ptr, y, out, mode)?;
            }
            ProjKind::Dense(w) => {
                dense_gemv(&self.gpu, dt, w.ptr, x, y, p.n, p.k, out)?;
            }
        }
        Ok(())
    }

    /// A group fed by RMSNorm of the residual stream: uncompensated quantized projections
    /// normalize h inside the GEMV (no norm launch); otherwise `rmsnorm_sel` produces x (and the
    /// salient channels for the compensation) first.
    fn normed_group(
        &self,
        ps: &[Proj],
        group: &str,
        norm_w: u64,
        y: u64,
        n_total: usize,
    ) -> Result<()> {
        let d = &self.dims;
        let sfx = self.opts.dtype.suffix();
        let sa = self.sel_for(ps, group);
        let all_quant = ps.iter().all(|p| matches!(p.kind, ProjKind::Quant(_)));
        let dec_on = self.dec_enabled && ps.iter().any(|p| p.k_chunk > 0);
        if !dec_on && all_quant && fusion_on("norm") {
            for p in ps {
                if let ProjKind::Quant(lin) = &p.kind {
                    let yo = y + (p.row_off * 2) as u64;
                    lin.forward_rmsnorm(
                        &self.gpu,
                        self.opts.dtype,
                        self.h.ptr,
                        norm_w,
                        d.eps,
                        yo,
                        OutMode::Store,
                    )?;
                }
            }
            return self.bias(ps, y, n_total);
        }
        let sargs = producer_sel(sa);
        let hid = d.hidden as i32;
        if !ablate_skip("norm") {
            unsafe {
                self.gpu.launch(
                    &format!("rmsnorm_sel_{sfx}"),
                    (d.hidden as u32).div_ceil(1024),
                    256,
                    0,
                    kargs![
                        &self.h.ptr,
                        &norm_w,
                        &self.xn.ptr,
                        &self.x32.ptr,
                        &hid,
                        &d.eps,
                        &sargs
                    ],
                )?;
            }
        }
        self.group(ps, self.xn.ptr, y, n_total, sa.is_some())
    }

    fn group(&self, ps: &[Proj], x: u64, y: u64, n_total: usize, presel: bool) -> Result<()> {
        for p in ps {
            self.proj(p, x, y, OutMode::Store, presel)?;
        }
        self.bias(ps, y, n_total)
    }

    fn bias(&self, ps: &[Proj], y: u64, n_total: usize) -> Result<()> {
        if let Some(b) = ps.first().and_then(|p| p.bias.as_ref()) {
            let n = n_total as i32;
            unsafe {
                self.gpu.launch(
                    &format!("add_bias_{}", self.opts.dtype.suffix()),
                    (n_total as u32).div_ceil(256),
                    256,
                    0,
                    kargs![&y, &b.ptr, &n],
                )?
            };
        }
        Ok(())
    }

    /// Queue one decode step (everything after the token/position are known), with the attention
    /// of tier `tier` (`attn_tiers`).
    fn queue_step(&self, feedback: bool, tier: usize) -> Result<()> {
        let g = &self.gpu;
        let d = &self.dims;
        let sfx = self.opts.dtype.suffix();
        let fb = feedback as i32;
        let tok = self.tp.ptr;
        let pos = self.tp.ptr + 4;
        g.timeline_tag(-1, "embed");
        unsafe {
            g.launch(
                "step_begin",
                1,
                32,
                0,
                kargs![&self.host_tp.dev, &self.argmax.ptr, &tok, &fb],
            )?;
            let hd = d.hidden as i32;
            g.launch(
                &format!("embed_{sfx}"),
                (d.hidden as u32).div_ceil(256),
                256,
                0,
                kargs![&self.embed.ptr, &tok, &self.h.ptr, &hd],
            )?;
        }
        let (nh, nkv, hdim) = (d.heads as i32, d.kv_heads as i32, d.head_dim as i32);
        let scale = 1.0 / (d.head_dim as f32).sqrt();
        let hid = d.hidden as i32;
        let inter = d.inter as i32;
        // the one-block attention and the tensor-core split kernel apply RoPE and append to the
        // KV cache themselves (experiments 78, 81); the CUDA-core split kernel's tiers keep the
        // rope_kv launch. The one-block kernel's shared-memory plan is its tier's, the same for
        // every layer.
        let single = self.attn_tiers[tier].1.is_none();
        let fuse_rope = !rope_launch()
            && self.attn_tiers[tier]
                .1
                .as_ref()
                .is_none_or(|sp| sp.fuses_rope());
        let (vcap, attn_smem) = if single {
            attn::single_plan(d.head_dim, self.tier_upto(tier), g.smem_optin, attn_vrows())?
        } else {
            (0, 0)
        };
        for (li, l) in self.layers.iter().enumerate() {
            let li = li as i32;
            // RMSNorm (in the GEMV, or a launch that also selects for the qkv compensation)
            g.timeline_tag(li, "qkv");
            self.normed_group(&l.qkv, "qkv", l.in_norm.ptr, self.qkv.ptr, d.qkv())?;
            g.timeline_tag(li, "attention");
            if !fuse_rope {
                unsafe {
                    g.launch(
                        &format!("rope_kv_{sfx}"),
                        (d.heads + 2 * d.kv_heads) as u32,
                        64,
                        0,
                        kargs![
                            &self.qkv.ptr,
                            &self.inv_freq.ptr,
                            &l.kc.ptr,
                            &l.vc.ptr,
                            &pos,
                            &nh,
                            &nkv,
                            &hdim
                        ],
                    )?;
                }
            }
            // the last head block of each 1024-channel chunk selects for the o GEMV's compensation
            // (when heads tile the chunks: head_dim divides 1024)
            let sa_o = self
                .sel_for(std::slice::from_ref(&l.o), "o")
                .filter(|_| d.head_dim <= 1024 && 1024 % d.head_dim == 0);
            let sargs_o = producer_sel(sa_o);
            let attn_on = !ablate_skip("attn");
            if let (true, Some(sp)) = (attn_on, &self.attn_tiers[tier].1) {
                unsafe {
                    sp.launch(
                        g,
                        sfx,
                        self.qkv.ptr,
                        l.kc.ptr,
                        l.vc.ptr,
                        self.attn.ptr,
                        self.x32.ptr,
                        pos,
                        (nh, nkv, hdim),
                        scale,
                        &sargs_o,
                        self.attn_cnt.ptr,
                        fuse_rope.then_some(self.inv_freq.ptr),
                    )?;
                }
            } else if attn_on {
                // one block per query head; with fuse_rope, RoPE + KV append + attention run in
                // one launch
                unsafe {
                    attn::launch_single(
                        g,
                        sfx,
                        self.qkv.ptr,
                        l.kc.ptr,
                        l.vc.ptr,
                        (self.attn.ptr, self.x32.ptr),
                        pos,
                        (nh, nkv, hdim),
                        scale,
                        &sargs_o,
                        self.attn_cnt.ptr,
                        (vcap, attn_smem),
                        fuse_rope.then_some(self.inv_freq.ptr),
                    )?;
                }
            }
            g.timeline_tag(li, "o");
            self.proj(
                &l.o,
                self.attn.ptr,
                self.h.ptr,
                OutMode::AddF32,
                sa_o.is_some(),
            )?;
            g.timeline_tag(li, "gate_up");
            self.normed_group(&l.gate_up, "gu", l.post_norm.ptr, self.gu.ptr, 2 * d.inter)?;
            g.timeline_tag(li, "down");
            let sa = self.sel_for(std::slice::from_ref(&l.down), "d");
            let sargs = producer_sel(sa);
            if !ablate_skip("silu") {
                unsafe {
                    g.launch(
                        &format!("silu_sel_{sfx}"),
                        (d.inter as u32).div_ceil(1024),
                        256,
                        0,
                        kargs![&self.gu.ptr, &self.act.ptr, &self.x32.ptr, &inter, &sargs],
                    )?;
                }
            }
            self.proj(
                &l.down,
                self.act.ptr,
                self.h.ptr,
                OutMode::AddF32,
                sa.is_some(),
            )?;
        }
        g.timeline_tag(-1, "head");
        unsafe {
            let null = 0u64;
            g.launch(
                &format!("rmsnorm_{sfx}"),
                1,
                1024,
                0,
                kargs![
                    &self.h.ptr,
                    &self.final_norm.ptr,
                    &self.xn.ptr,
                    &null,
                    &hid,
                    &d.eps
                ],
            )?;
        }
        self.head_gemv(self.xn.ptr, self.logits.ptr)?;
        let vocab = d.vocab as i32;
        unsafe {
            g.launch(
                "argmax_f32",
                1,
                1024,
                0,
                kargs![&self.logits.ptr, &vocab, &self.argmax.ptr],
            )?;
        }
        Ok(())
    }

    /// f32 logits = head x for one activation-dtype row `x` (decode step; prefill rows with a
    /// quantized head).
    fn head_gemv(&self, x: u64, logits: u64) -> Result<()> {
        self.head.forward(
            &self.gpu,
            self.opts.dtype,
            &self.dims,
            self.embed.ptr,
            x,
            logits,
        )
    }

    /// `DECDEC_ABLATE_SKIP=sel`: give every compensated linear a stale selection of distinct
    /// channels (as many as the largest k_chunk asks), so that the DEC blocks fetch as many
    /// different residual rows as with a real selection.
    fn ablate_fill_selections(&self) -> Result<()> {
        for l in &self.layers {
            for p in l.projs() {
                if let ProjKind::Quant(lin) = &p.kind {
                    if let Some(d) = &lin.dec {
                        let rows = dec_total_rows(p.k, 1024).max(1);
                        let idx: Vec<i32> = (0..rows).map(|i| ((i * 37) % p.k) as i32).collect();
                        self.gpu.write(&d.sel_idx, 0, &idx)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The decode attention kernels that serve positions `from..to` (`bench decode` rows): the
    /// tiers' kernels joined by `+` (`one-block`, `split-cuda(heads/block)xS`, `split-tcxS`).
    pub fn attention_kernels(&self, from: usize, to: usize) -> String {
        attn::tiers_serving(&self.attn_tiers, from, to, self.opts.max_seq)
            .map(|i| match &self.attn_tiers[i].1 {
                None => "one-block".to_string(),
                Some(sp) => sp.label(),
            })
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Which captured step (attention tier) runs at position `pos`.
    fn graph_slot(&self, pos: usize) -> usize {
        self.attn_tiers
            .iter()
            .rposition(|t| t.0 <= pos)
            .unwrap_or(0)
    }

    /// Positions up to which tier `i` runs (the next tier's start, or the KV cache's length).
    fn tier_upto(&self, i: usize) -> usize {
        attn::tier_end(&self.attn_tiers, i, self.opts.max_seq)
    }

    fn ensure_graph(&mut self, feedback: bool, slot: usize) -> Result<()> {
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(|e| anyhow!("{e:?}"))?;
        let slot_empty = if feedback {
            self.graph_feedback[slot].is_none()
        } else {
            self.graph[slot].is_none()
        };
        if slot_empty {
            if ablate_skip("sel") {
                self.ablate_fill_selections()?;
            }
            let g = self.gpu.capture(|| self.queue_step(feedback, slot))?;
            if feedback {
                self.graph_feedback[slot] = Some(g);
            } else {
                self.graph[slot] = Some(g);
            }
        }
        Ok(())
    }

    /// Run one token at the current position (graph replay); logits stay on the device.
    pub fn step(&mut self, token: u32) -> Result<()> {
        if self.pos >= self.opts.max_seq {
            bail!(
                "context overflow: the KV cache holds {} positions",
                self.opts.max_seq
            );
        }
        if token as usize >= self.dims.vocab {
            bail!(
                "token id {token} is outside the vocabulary ({})",
                self.dims.vocab
            );
        }
        let slot = self.graph_slot(self.pos);
        self.ensure_graph(false, slot)?;
        // the previous replay has finished reading the mapped token/position (callers synchronize)
        self.gpu.sync()?;
        let tp = self.host_tp.as_mut_slice::<i32>();
        tp[0] = token as i32;
        tp[1] = self.pos as i32;
        self.gpu
            .replay(self.graph[slot].as_ref().expect("graph captured"))?;
        self.pos += 1;
        self.counters.rows_fetched += self.rows_per_step;
        self.counters.bytes_fetched += self.bytes_per_step;
        Ok(())
    }

    /// Greedy decoding entirely on the GPU: `n` steps from `first`, each step's argmax feeding the
    /// next without host round trips (benchmarks). The last token is at [`CudaEngine::read_argmax`].
    pub fn greedy_steps(&mut self, first: u32, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.pos + n > self.opts.max_seq {
            bail!(
                "context overflow: {} + {n} positions exceed the KV cache ({})",
                self.pos,
                self.opts.max_seq
            );
        }
        self.step(first)?;
        // replay i runs at position self.pos + i - 1
        for i in 1..n {
            let slot = self.graph_slot(self.pos + i - 1);
            self.ensure_graph(true, slot)?;
            let g = self.graph_feedback[slot].as_ref().expect("graph captured");
            self.gpu.replay(g)?;
        }
        self.pos += n - 1;
        self.counters.rows_fetched += self.rows_per_step * (n as u64 - 1);
        self.counters.bytes_fetched += self.bytes_per_step * (n as u64 - 1);
        Ok(())
    }

    /// The step timeline of `n` greedy decode steps after `first` (kernels built with
    /// `compile::set_timeline(true)`): every block's stamps, matched to the captured launches.
    pub fn timeline_steps(&mut self, first: u32, n: usize) -> Result<crate::timeline::Timeline> {
        if n == 0 || self.pos + 1 + n > self.opts.max_seq {
            bail!(
                "timeline: {n} steps after position {} do not fit the KV cache ({})",
                self.pos,
                self.opts.max_seq
            );
        }
        self.step(first)?;
        let slots: Vec<usize> = (0..n).map(|i| self.graph_slot(self.pos + i)).collect();
        let mut records = 0;
        for &slot in &slots {
            self.ensure_graph(true, slot)?;
            let g = self.graph_feedback[slot].as_ref().expect("graph captured");
            records += g.launches.iter().map(|l| l.grid as usize).sum::<usize>();
        }
        self.gpu.timeline_arm(records)?;
        let first_pos = self.pos;
        for &slot in &slots {
            let g = self.graph_feedback[slot].as_ref().expect("graph captured");
            self.gpu.replay(g)?;
        }
        self.pos += n;
        self.counters.rows_fetched += self.rows_per_step * n as u64;
        self.counters.bytes_fetched += self.bytes_per_step * n as u64;
        let recs = self.gpu.timeline_records()?;
        let steps: Vec<&[crate::gpu::Launch]> = slots
            .iter()
            .map(|&s| {
                self.graph_feedback[s]
                    .as_ref()
                    .expect("graph captured")
                    .launches
                    .as_slice()
            })
            .collect();
        crate::timeline::Timeline::build(&recs, &steps, first_pos, self.gpu.clock_khz)
    }

    pub fn read_logits(&self) -> Result<Vec<f32>> {
        self.gpu.read_raw(self.logits.ptr, self.dims.vocab)
    }

    pub fn read_argmax(&self) -> Result<u32> {
        Ok(self.gpu.read_raw::<i32>(self.argmax.ptr, 1)?[0] as u32)
    }

    /// Weight bytes one decode step streams (quantized codes + parameters, dense weights, lm_head).
    pub fn weight_bytes_per_step(&self) -> usize {
        let mut b = 0;
        for l in &self.layers {
            for p in l
                .qkv
                .iter()
                .chain(std::iter::once(&l.o))
                .chain(l.gate_up.iter())
                .chain(std::iter::once(&l.down))
            {
                b += match &p.kind {
                    ProjKind::Quant(q) => q.weight_bytes(),
                    ProjKind::Dense(_) => p.n * p.k * 2,
                };
            }
        }
        b + self.head.weight_bytes(&self.dims)
    }

    /// Bits of the output projection when it is quantized (`--head-bits`).
    pub fn head_bits(&self) -> Option<u32> {
        self.head.bits()
    }

    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    pub fn residual_bytes_per_step(&self) -> u64 {
        self.bytes_per_step
    }
}

impl Engine for CudaEngine {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn backend(&self) -> &'static str {
        "cuda"
    }
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("forward: no tokens");
        }
        if self.pos + tokens.len() > self.opts.max_seq {
            bail!(
                "context overflow: {} tokens exceed the KV cache capacity of {}",
                self.pos + tokens.len(),
                self.opts.max_seq
            );
        }
        if self.prefills(tokens.len()) {
            return self.prefill(tokens, logits);
        }
        let mut out = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            self.step(t)?;
            let want = match logits {
                Logits::All => true,
                Logits::Last => i + 1 == tokens.len(),
                Logits::None => false,
            };
            if want {
                out.extend(self.read_logits()?);
            }
        }
        self.gpu.check()?;
        Ok(out)
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }
    fn max_seq_len(&self) -> usize {
        self.opts.max_seq
    }
    fn dec_counters(&self) -> DecCounters {
        self.counters
    }
    fn forward_greedy(&mut self, token: u32) -> Result<Option<u32>> {
        // `step` refuses a position past the KV cache and a token outside the vocabulary
        self.step(token)?;
        // the step's argmax (kernels/ops.cu argmax_f32: lowest index among the largest logits)
        let next = self.read_argmax()?;
        self.gpu.check()?;
        Ok(Some(next))
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic models generated on the GPU (benchmarks): random weights with real shapes.
// ---------------------------------------------------------------------------------------------

/// Shapes of a synthetic model by name.
pub fn synthetic_dims(name: &str) -> Result<Dims> {
    Ok(match name {
        "llama3-8b" => Dims {
            hidden: 4096,
            inter: 14336,
            layers: 32,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            vocab: 128256,
            eps: 1e-5,
        },
        "llama2-7b" => Dims {
            hidden: 4096,
            inter: 11008,
            layers: 32,
            heads: 32,
            kv_heads: 32,
            head_dim: 128,
            vocab: 32000,
            eps: 1e-5,
        },
        "phi3-medium" => Dims {
            hidden: 5120,
            inter: 17920,
            layers: 40,
            heads: 40,
            kv_heads: 10,
            head_dim: 128,
            vocab: 32064,
            eps: 1e-5,
        },
        "tiny" => Dims {
            hidden: 512,
            inter: 1536,
            layers: 4,
            heads: 8,
            kv_heads: 2,
            head_dim: 64,
            vocab: 1000,
            eps: 1e-5,
        },
        _ => bail!("unknown synthetic model '{name}' (llama3-8b, llama2-7b, phi3-medium, tiny)"),
    })
}

impl CudaEngine {
    /// A random model with real shapes: `bits` 3/4 (uniform g128, random residuals and thresholds
    /// for DEC at `k_chunks` [qkv, o, gate-up, down]) or 16 (dense activation-dtype weights); the
    /// head dense, or uniform g128 at `head_bits`.
    pub fn synthetic(
        name: &str,
        bits: u32,
        k_chunks: [usize; 4],
        head_bits: Option<u32>,
        opts: CudaOptions,
    ) -> Result<CudaEngine> {
        let dims = synthetic_dims(name)?;
        let gpu = Gpu::new()?;
        let dt = opts.dtype;
        let d = &dims;
        let mut seed = 1u64;
        let mut next = || {
            seed += 1;
            seed
        };
        let mk = |n: usize, k: usize, k_chunk: usize, seed: u64| -> Result<Proj> {
            let kind = if bits == 16 {
                let w = gpu.alloc((n * k).div_ceil(8) * 16)?;
                let lim = 1.0 / (k as f32).sqrt();
                fill_act(&gpu, dt, w.ptr, n * k, seed, -lim, lim)?;
                ProjKind::Dense(w)
            } else {
                let mut lin = GpuLinear::random(&gpu, Format::Uniform, bits, n, k, 128, seed)?;
                if k_chunk > 0 {
                    // thresholds on the scale of RMS-normalized activations; any non-increasing
                    // thresholds give exactly the per-chunk budget
                    let th: Vec<f32> = (0..k).map(|j| 4.0 * (1.0 - j as f32 / k as f32)).collect();
                    lin.attach_random_residual(&gpu, seed ^ 0xabc, th)?;
                }
                ProjKind::Quant(Box::new(lin))
            };
            Ok(Proj {
                kind,
                n,
                k,
                row_off: 0,
                bias: None,
                k_chunk: if bits == 16 { 0 } else { k_chunk },
            })
        };
        let mut layers = Vec::new();
        for _ in 0..d.layers {
            let ones = gpu.upload(&vec![1.0f32; d.hidden])?;
            let ones2 = gpu.upload(&vec![1.0f32; d.hidden])?;
            layers.push(GpuLayer {
                in_norm: ones,
                post_norm: ones2,
                qkv: vec![mk(d.qkv(), d.hidden, k_chunks[0], next())?],
                o: mk(d.hidden, d.heads * d.head_dim, k_chunks[1], next())?,
                gate_up: vec![mk(2 * d.inter, d.hidden, k_chunks[2], next())?],
                down: mk(d.hidden, d.inter, k_chunks[3], next())?,
                kc: act_buf(&gpu, opts.max_seq * d.kv_heads * d.head_dim)?,
                vc: act_buf(&gpu, opts.max_seq * d.kv_heads * d.head_dim)?,
            });
        }
        let embed = gpu.alloc((d.vocab * d.hidden).div_ceil(8) * 16)?;
        fill_act(&gpu, dt, embed.ptr, d.vocab * d.hidden, 7, -1.0, 1.0)?;
        let head = Head::random(&gpu, dt, d, head_bits)?;
        let final_norm = gpu.upload(&vec![1.0f32; d.hidden])?;
        let inv_freq: Vec<f32> = (0..d.head_dim / 2)
            .map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / d.head_dim as f32))
            .collect();
        let inv_freq = gpu.upload(&inv_freq)?;
        let config = ModelConfig::from_json(serde_json::json!({
            "model_type": "llama",
            "hidden_size": d.hidden,
            "intermediate_size": d.inter,
            "num_hidden_layers": d.layers,
            "num_attention_heads": d.heads,
            "num_key_value_heads": d.kv_heads,
            "vocab_size": d.vocab,
            "rms_norm_eps": d.eps,
            "max_position_embeddings": opts.max_seq,
        }))
        .context("synthetic config")?;
        gpu.check()?;
        Self::assemble(
            gpu, config, dims, opts, layers, embed, head, final_norm, inv_freq,
        )
    }
}

/// The `--device cuda` factory registered with decdec-model: f16 activations, the fused DEC design.
pub fn create_engine(model: Model, max_seq: usize) -> Result<Box<dyn decdec_model::Engine>> {
    let opts = CudaOptions {
        max_seq,
        ..CudaOptions::default()
    };
    Ok(Box::new(CudaEngine::from_model(&model, opts)?))
}
