//! Quantized linear layers on the GPU: tiled weights, optional DEC residual store in mapped pinned
//! host memory, and the launches of the GEMV kernels (`kernels/gemv.cu`).

use anyhow::{bail, Result};

use crate::gpu::{DevBuf, Dtype, Gpu, HostMapped};
use crate::kargs;
use crate::repack::{self, LutRef, ResidualRef, TiledShape, UniformRef};

pub const NTHREADS: u32 = 256;
pub const SLICE_COLS: usize = 256;
pub const SLICE_WORDS: usize = 32;

/// Kernel argument block, must match `GemvArgs` in gemv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GemvArgs {
    pub qw: u64,
    pub sz: u64,
    pub lut: u64,
    pub x: u64,
    pub y: u64,
    pub n: i32,
    pub k: i32,
    pub kc: i32,
    pub gp: i32,
    pub out_mode: i32,
    pub split: i32,
    /// xmode 1: RMSNorm weight (f32 [K])
    pub nw: u64,
    pub eps: f32,
    /// 0: x is the activation vector; 1: x is the f32 residual stream, normalized in the kernel;
    /// 2: the activation vector, staged whole in shared memory (tile kernel, long K)
    pub xmode: i32,
    /// stream schedule: per-warp partial rows [n_tiles][maxnc][16] (f32)
    pub part: u64,
    /// stream schedule: arrivals per tile (i32 [n_tiles], zero between calls)
    pub tile_cnt: u64,
    pub maxnc: i32,
    /// tile kernel: 1 = trigger the dependent launch after the prologue, 0 = after the main loop
    pub early: i32,
}

/// Ints of shared memory a block's selection uses (`SEL_SH` in select.cuh).
const SEL_SH: usize = 8 * 32;

/// Kernel argument block, must match `DecArgs` in gemv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DecArgs {
    pub res: u64,
    pub rscale: u64,
    pub dvec: u64,
    pub sel_sync: u64,
    pub sel_idx: u64,
    pub sel_val: u64,
    pub a: f32,
    pub b: f32,
    pub k_chunk: i32,
    pub n_dec: i32,
    pub dbg_t: u64,
    pub x32: u64,
    pub presel: i32,
}

/// Selection request handed to a producer kernel (`rmsnorm_sel`, `silu_sel`, `select_only`);
/// must match `SelArgs` in gemv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SelArgs {
    pub sel_idx: u64,
    pub sel_val: u64,
    pub a: f32,
    pub b: f32,
    pub k_chunk: i32,
}

/// Where the GEMV writes its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutMode {
    /// y: activation dtype [N]
    Store = 0,
    /// y: f32 [N], y += W x (residual-stream add)
    AddF32 = 1,
    /// y: f32 [N]
    StoreF32 = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Uniform,
    Lut,
}

/// The DEC state of one linear: residual rows in mapped pinned host memory + device scratch.
pub struct DecStore {
    pub host: HostMapped,
    pub rscale: DevBuf,
    /// compensation per output, handed from the DEC blocks to the GEMV blocks; all-ones
    /// ("empty") between calls
    pub dvec: DevBuf,
    pub sel_sync: DevBuf,
    /// selected channels / activations of the last call (chunk-major, ascending within a chunk)
    pub sel_idx: DevBuf,
    pub sel_val: DevBuf,
    /// grid barrier of the cooperative variant
    pub bar: DevBuf,
    /// ablation: a device-memory copy of the residual used instead of the mapped host copy
    pub res_dev: Option<DevBuf>,
    /// phase timestamps (clock64) of the fused kernel, when enabled
    pub dbg_t: Option<DevBuf>,
    /// calibrated thresholds, length K (non-increasing)
    pub thresholds: Vec<f32>,
    pub words_per_row: usize,
}

impl DecStore {
    pub fn n_slices(n: usize) -> usize {
        n.div_ceil(8).div_ceil(SLICE_WORDS)
    }
}

/// How DEC runs for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecMode {
    /// No compensation.
    Off,
    /// Selection + fetch as extra blocks of the GEMV launch (`n_dec` blocks).
    Fused { k_chunk: usize, n_dec: usize },
    /// As `Fused`, but the kernel that produced x already wrote the selection ([`GpuLinear::sel_args`]):
    /// the DEC blocks start fetching at once.
    FusedPresel { k_chunk: usize, n_dec: usize },
    /// The original's structure: a cooperative select / grid-sync / fetch kernel on a second stream
    /// concurrent with the GEMV, then an add kernel (`n_tb` blocks).
    Coop { k_chunk: usize, n_tb: usize },
}

/// How a GEMV launch spreads the weight stream over the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One block per (8 / split) row tiles, `split` warps per tile (several waves on large shapes).
    Tiles,
    /// The (tile, chunk) units split evenly over one wave of resident warps (`gemv_stream`).
    Stream,
}

/// Device state of the stream schedule of one linear.
pub struct StreamState {
    /// per-warp partial rows of tiles shared by several warps
    pub part: DevBuf,
    /// arrivals per tile, zero between calls
    pub tile_cnt: DevBuf,
    /// partial slots per tile (bound for every grid up to `per_sm` blocks per SM)
    pub maxnc: usize,
    /// resident GEMV blocks per SM (occupancy of the stream kernel)
    pub per_sm: u32,
}

/// cp.async ring depth of the stream-schedule kernels (`gemv_u*_g128_*_st3`).
pub const STREAM_STAGES: usize = 3;

pub struct GpuLinear {
    pub format: Format,
    pub shape: TiledShape,
    pub qw: DevBuf,
    /// uniform: scale|zero words; LUT: f32 [N][2^bits]
    pub params: DevBuf,
    pub dec: Option<DecStore>,
    /// Force the warps per row tile (1, 2, 4, 8) instead of the automatic choice (tests, tuning).
    pub split_override: Option<usize>,
    /// Force the schedule instead of the automatic choice (tests, tuning).
    pub sched_override: Option<Schedule>,
    pub stream: Option<StreamState>,
    /// resident blocks per SM of the tile-schedule kernel (f16) of compensated launches
    pub tile_per_sm: u32,
}

/// DEC blocks of a tile-schedule launch: at most the free slots of the GEMV's last wave, when
/// there are a few, so that no GEMV block waits for a DEC block to finish (on the H200 the down
/// projection, 256 blocks at 2 per SM, has 8 free slots: 8 DEC blocks cost +2.8 us per layer in the
/// decode step, 16 cost +6.7; docs/performance.md, experiment 21). `DECDEC_NO_WAVE_FIT=1` turns
/// this off.
pub fn wave_fit_n_dec(blocks: usize, resident: usize, n_dec: usize) -> usize {
    let resident = resident.max(1);
    let free = blocks.div_ceil(resident) * resident - blocks;
    if free >= 4 {
        n_dec.min(free)
    } else {
        n_dec
    }
}

/// Name of the uniform tile-schedule GEMV kernel (gemv.cu entries).
pub fn uniform_gemv_kernel(
    bits: u32,
    group_size: usize,
    dt: Dtype,
    stages: usize,
    b4: bool,
) -> String {
    format!(
        "gemv_u{bits}_g{group_size}_{}{}{}",
        dt.suffix(),
        if stages == 2 { "_s2" } else { "" },
        if b4 { "_b4" } else { "" }
    )
}

/// Rows the DEC fetches for K input channels at `k_chunk` per 1024.
pub fn dec_total_rows(k: usize, k_chunk: usize) -> usize {
    (k / 1024) * k_chunk + (k_chunk * (k % 1024)) / 1024
}

impl GpuLinear {
    pub fn from_uniform(gpu: &Gpu, q: &UniformRef) -> Result<GpuLinear> {
        let (shape, qw, sz) = repack::tile_uniform(q)?;
        GpuLinear {
            format: Format::Uniform,
            shape,
            qw: gpu.upload(&qw)?,
            params: gpu.upload(&sz)?,
            dec: None,
            split_override: None,
            sched_override: None,
            stream: None,
            tile_per_sm: 1,
        }
        .with_stream(gpu)
    }

    pub fn from_lut(gpu: &Gpu, q: &LutRef) -> Result<GpuLinear> {
        let (shape, qw) = repack::tile_lut(q)?;
        Ok(GpuLinear {
            format: Format::Lut,
            shape,
            qw: gpu.upload(&qw)?,
            params: gpu.upload(q.lut)?,
            dec: None,
            split_override: None,
            sched_override: None,
            stream: None,
            tile_per_sm: 1,
        })
    }

    /// A linear with random codes and parameters generated on the GPU (benchmarks, synthetic models).
    pub fn random(
        gpu: &Gpu,
        format: Format,
        bits: u32,
        n: usize,
        k: usize,
        group_size: usize,
        seed: u64,
    ) -> Result<GpuLinear> {
        let gs = if format == Format::Lut {
            256
        } else {
            group_size
        };
        let shape = TiledShape::new(bits, n, k, gs)?;
        let qw = gpu.alloc(shape.qw_words() * 4)?;
        fill_u32(gpu, &qw, seed)?;
        let params = match format {
            Format::Uniform => {
                let b = gpu.alloc(shape.sz_words() * 4)?;
                let (n32, lo, hi, bits_i) = ((b.bytes / 4) as u64, 0.002f32, 0.02f32, bits as i32);
                let seed2 = seed ^ 0x5555;
                unsafe {
                    gpu.launch(
                        "fill_scale_zero",
                        1024,
                        256,
                        0,
                        kargs![&b.ptr, &n32, &seed2, &lo, &hi, &bits_i],
                    )?
                };
                b
            }
            Format::Lut => {
                let b = gpu.alloc(n * (1 << bits) * 4)?;
                fill_f32(gpu, &b, seed ^ 0x7777, -0.05, 0.05)?;
                b
            }
        };
        GpuLinear {
            format,
            shape,
            qw,
            params,
            dec: None,
            split_override: None,
            sched_override: None,
            stream: None,
            tile_per_sm: 1,
        }
        .with_stream(gpu)
    }

    /// Occupancy of the tile kernel; for uniform g128 also the stream schedule: occupancy, and partial
    /// slots per tile for the widest grid. A tile's contributors other than the first and last lie
    /// inside it with at least m = floor(units / warps) units each, so at most (KC - 2) / m + 2.
    fn with_stream(mut self, gpu: &Gpu) -> Result<GpuLinear> {
        self.tile_per_sm = gpu.blocks_per_sm(
            &self.kernel_name(Dtype::F16, false),
            NTHREADS,
            self.smem_bytes(0),
        )?;
        // the stream kernels exist for uniform g128 (a 3-stage ring); others use the tile schedule
        if self.format != Format::Uniform || self.shape.group_size != 128 {
            return Ok(self);
        }
        let smem = self.stream_smem(0);
        let mut per_sm = u32::MAX;
        for dt in [Dtype::F16, Dtype::Bf16] {
            let name = self.stream_kernel_name(dt);
            per_sm = per_sm.min(gpu.blocks_per_sm(&name, NTHREADS, smem)?);
        }
        let (kc, tiles) = (self.shape.kc.max(1), self.shape.n_tiles);
        let units = tiles * kc;
        let warps = (per_sm as usize * gpu.sms.max(1) as usize * 8)
            .min(units)
            .max(1);
        let m = (units / warps).max(1);
        let maxnc = if kc <= 1 { 1 } else { kc.min((kc - 2) / m + 2) };
        self.stream = Some(StreamState {
            part: gpu.alloc(tiles * maxnc * 16 * 4)?,
            tile_cnt: gpu.alloc_zeroed(tiles * 4)?,
            maxnc,
            per_sm,
        });
        Ok(self)
    }

    /// The schedule a launch uses: `sched_override`, else `DECDEC_SCHED=tiles|stream`, else the
    /// tile schedule (the stream schedule measured slower on the H200: docs/performance.md,
    /// experiment 17; it exists for uniform g128 only).
    pub fn schedule(&self) -> Schedule {
        if self.stream.is_none() {
            return Schedule::Tiles;
        }
        if let Some(s) = self.sched_override {
            return s;
        }
        match std::env::var("DECDEC_SCHED").as_deref() {
            Ok("stream") => Schedule::Stream,
            _ => Schedule::Tiles,
        }
    }

    fn stream_kernel_name(&self, dt: Dtype) -> String {
        format!(
            "gemv_u{}_g{}_{}_st{STREAM_STAGES}",
            self.shape.bits,
            self.shape.group_size,
            dt.suffix()
        )
    }

    /// Shared memory of a stream-schedule launch (x, rings, reduction; or the DEC blocks' needs).
    fn stream_smem(&self, dec_rows: usize) -> u32 {
        let gemv = 8 * 16 * 4 + self.shape.kc * 256 * 2 + self.ring_bytes_for(STREAM_STAGES);
        gemv.max(Self::dec_smem(dec_rows)) as u32
    }

    /// GEMV blocks of a stream launch that leaves `n_dec` resident slots to the DEC blocks.
    fn stream_blocks(&self, gpu: &Gpu, n_dec: usize) -> u32 {
        let st = self.stream.as_ref().expect("stream schedule set up");
        let resident = st.per_sm as usize * gpu.sms.max(1) as usize;
        let units = self.shape.n_tiles * self.shape.kc.max(1);
        resident.saturating_sub(n_dec).min(units.div_ceil(8)).max(1) as u32
    }

    /// Attach a canonical 4-bit residual (copied into mapped pinned host memory) and thresholds.
    pub fn attach_residual(
        &mut self,
        gpu: &Gpu,
        r: &ResidualRef,
        thresholds: &[f32],
    ) -> Result<()> {
        if r.bits != 4 {
            bail!(
                "the GPU DEC kernels read 4-bit residuals, not {}-bit",
                r.bits
            );
        }
        if r.n != self.shape.n || r.k != self.shape.k {
            bail!(
                "residual is {}x{} but the linear is {}x{}",
                r.n,
                r.k,
                self.shape.n,
                self.shape.k
            );
        }
        let wpr = (r.n * 4).div_ceil(32);
        if r.residual.len() != r.k * wpr || r.scales.len() != r.n {
            bail!(
                "residual has {} words / {} scales, expected {} / {}",
                r.residual.len(),
                r.scales.len(),
                r.k * wpr,
                r.n
            );
        }
        if thresholds.len() != r.k {
            bail!(
                "thresholds have {} entries, expected K = {}",
                thresholds.len(),
                r.k
            );
        }
        let mut host = gpu.host_mapped(r.residual.len() * 4)?;
        host.as_mut_slice::<u32>()[..r.residual.len()].copy_from_slice(r.residual);
        self.install_dec(gpu, host, gpu.upload(r.scales)?, thresholds.to_vec())
    }

    /// Random residual (benchmarks, synthetic models): random codes, scales and thresholds spanning
    /// [0, a] so that bucket selection behaves like on calibrated data.
    pub fn attach_random_residual(
        &mut self,
        gpu: &Gpu,
        seed: u64,
        thresholds: Vec<f32>,
    ) -> Result<()> {
        let (n, k) = (self.shape.n, self.shape.k);
        let wpr = (n * 4).div_ceil(32);
        let mut host = gpu.host_mapped(k * wpr * 4)?;
        let words = host.as_mut_slice::<u32>();
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        for w in words.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *w = (s >> 16) as u32;
        }
        let rs = gpu.alloc(n * 4)?;
        fill_f32(gpu, &rs, seed ^ 0x1234, 0.0005, 0.002)?;
        self.install_dec(gpu, host, rs, thresholds)
    }

    fn install_dec(
        &mut self,
        gpu: &Gpu,
        host: HostMapped,
        rscale: DevBuf,
        thresholds: Vec<f32>,
    ) -> Result<()> {
        let n = self.shape.n;
        let max_rows = dec_total_rows(self.shape.k, 1024).max(1);
        let padded = n.div_ceil(SLICE_COLS) * SLICE_COLS * 4;
        // every compensation word starts empty (DEC_EMPTY = all ones, gemv.cu)
        let dvec = gpu.alloc(padded)?;
        gpu.memset(&dvec, 0xff)?;
        self.dec = Some(DecStore {
            host,
            rscale,
            dvec,
            sel_sync: gpu.alloc_zeroed(16)?,
            sel_idx: gpu.alloc_zeroed(max_rows * 4)?,
            sel_val: gpu.alloc_zeroed(max_rows * 4)?,
            bar: gpu.alloc_zeroed(16)?,
            res_dev: None,
            dbg_t: None,
            thresholds,
            words_per_row: (n * 4).div_ceil(32),
        });
        Ok(())
    }

    /// Where a producer kernel writes this linear's selection at `k_chunk` (None: no DEC rows).
    pub fn sel_args(&self, k_chunk: usize) -> Option<SelArgs> {
        let d = self.dec.as_ref()?;
        if dec_total_rows(self.shape.k, k_chunk) == 0 {
            return None;
        }
        Some(SelArgs {
            sel_idx: d.sel_idx.ptr,
            sel_val: d.sel_val.ptr,
            a: d.thresholds[0],
            b: d.thresholds[(k_chunk * self.shape.k / 1024).max(1) - 1],
            k_chunk: k_chunk as i32,
        })
    }

    /// Entries per row of the selection lists of [`GpuLinear::compensate_rows`]: k_chunk slots
    /// per 1024-channel chunk (as the decode step's list).
    pub fn sel_row_stride(&self, k_chunk: usize) -> usize {
        self.shape.k.div_ceil(1024) * k_chunk
    }

    /// Compensation of `t` rows at once (the batched prefill), each as if decoded alone: row r's
    /// salient channels selected from its f32 input `x32 + r K` into `sel_idx`/`sel_val + r
    /// stride` (`pf_select`, stride [`GpuLinear::sel_row_stride`]), its residual rows gathered
    /// into the f32 compensation `comp + r N` (`pf_dec_gather`). False, with nothing launched,
    /// when the linear has no residuals or `k_chunk` selects no rows.
    #[allow(clippy::too_many_arguments)]
    pub fn compensate_rows(
        &self,
        gpu: &Gpu,
        x32: u64,
        t: usize,
        k_chunk: usize,
        sel_idx: u64,
        sel_val: u64,
        comp: u64,
    ) -> Result<bool> {
        let Some(sa) = self.sel_args(k_chunk) else {
            return Ok(false);
        };
        let sa = SelArgs {
            sel_idx,
            sel_val,
            ..sa
        };
        let da = DecArgs {
            sel_idx,
            sel_val,
            ..self.dec_args(k_chunk, 1)?
        };
        let (n, k) = (self.shape.n, self.shape.k);
        let (n_i, k_i) = (n as i32, k as i32);
        let stride = self.sel_row_stride(k_chunk) as i32;
        let smem = Self::dec_smem(dec_total_rows(k, k_chunk)) as u32;
        unsafe {
            gpu.launch(
                "pf_select",
                (t * k.div_ceil(1024)) as u32,
                NTHREADS,
                0,
                kargs![&x32, &k_i, &sa, &stride],
            )?;
            gpu.launch(
                "pf_dec_gather",
                (t * DecStore::n_slices(n)) as u32,
                NTHREADS,
                smem,
                kargs![&da, &n_i, &k_i, &stride, &comp],
            )?;
        }
        Ok(true)
    }

    /// Ablation: read the residual from a device-memory copy (no PCIe) instead of pinned host memory.
    pub fn residual_on_device(&mut self, gpu: &Gpu, on: bool) -> Result<()> {
        let d = self
            .dec
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no DEC state"))?;
        d.res_dev = if on {
            let b = gpu.alloc(d.host.bytes)?;
            unsafe {
                crate::gpu::ck(
                    cudarc::driver::sys::cuMemcpyHtoD_v2(
                        b.ptr,
                        d.host.host as *const std::ffi::c_void,
                        d.host.bytes,
                    ),
                    "cuMemcpyHtoD",
                )?
            };
            Some(b)
        } else {
            None
        };
        Ok(())
    }

    /// Record clock64 phase stamps of the fused kernel (DEC block 0: start, selected, synced,
    /// first slice fetched, first slice handed over; GEMV block 0: start, end).
    pub fn enable_stamps(&mut self, gpu: &Gpu) -> Result<()> {
        let d = self
            .dec
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no DEC state"))?;
        d.dbg_t = Some(gpu.alloc_zeroed(16 * 8)?);
        Ok(())
    }

    pub fn read_stamps(&self, gpu: &Gpu) -> Result<Vec<i64>> {
        let d = self
            .dec
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no DEC state"))?;
        match &d.dbg_t {
            Some(b) => gpu.read(b),
            None => Ok(Vec::new()),
        }
    }

    /// Selected channels of the last DEC call (`rows` entries).
    pub fn last_selection(&self, gpu: &Gpu, rows: usize) -> Result<Vec<u32>> {
        let d = self
            .dec
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no DEC state"))?;
        gpu.read_raw(d.sel_idx.ptr, rows)
    }

    /// Warps per row tile (split-K inside a block), from the H200 sweeps (docs/performance.md):
    /// long K gets 8 (down: 56 chunks); many tiles get 4 (gate-up: 896 blocks, ~2.3 even waves);
    /// at least 384 tiles get 8 (qkv: 384 blocks, one full wave at 3 blocks per SM); fewer get 4
    /// (o: 128 blocks, one per SM). Never more warps than chunks.
    pub fn split_for(&self, _sms: i32) -> usize {
        if self.format == Format::Lut {
            return 8;
        }
        if let Some(s) = self.split_override {
            return s;
        }
        let (tiles, kc) = (self.shape.n_tiles, self.shape.kc.max(1));
        // H200 sweeps (docs/performance.md, experiments 12 and 16): long K and small grids
        // want all 8 warps on one tile; gate-up-sized grids 4
        let want: usize = if kc >= 32 || tiles < 1024 { 8 } else { 4 };
        let mut s = 1;
        while s < want && s * 2 <= kc {
            s *= 2;
        }
        s
    }

    /// cp.async ring depth of the tile kernel (H200 sweeps, experiments 16 and 30); 3 for the LUT
    /// kernels.
    pub fn stages(&self) -> usize {
        // experiment knob: `DECDEC_STAGES=2|3` for every uniform tile launch
        if let Some(st) = std::env::var("DECDEC_STAGES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|st| (2..=3).contains(st))
        {
            if self.format == Format::Uniform {
                return st;
            }
        }
        // 2 stages for K <= 4096 (shorter prologue, less shared memory), 3 for longer K. 4-bit
        // gate-up / down are faster alone with 3 / 2 stages, but not in the decode step with DEC
        // (experiment 30)
        if self.format == Format::Uniform && self.shape.kc <= 16 {
            2
        } else {
            3
        }
    }

    /// `b4`: the variant compiled for 4 resident blocks per SM (64 registers, see [`Self::b4_for`]).
    fn kernel_name(&self, dt: Dtype, b4: bool) -> String {
        match self.format {
            Format::Uniform => uniform_gemv_kernel(
                self.shape.bits,
                self.shape.group_size,
                dt,
                self.stages(),
                b4,
            ),
            Format::Lut => format!("gemv_l{}_{}", self.shape.bits, dt.suffix()),
        }
    }

    /// Whether a `_b4` kernel exists for this format (uniform g128, 2-stage ring).
    fn has_b4(&self) -> bool {
        self.format == Format::Uniform && self.shape.group_size == 128 && self.stages() == 2
    }

    /// Launch the `_b4` variant (4 blocks per SM, 64 registers) where it measured faster
    /// (experiment 31): wide short-K matrices (gate-up: more warps hide more latency), with or
    /// without compensation. Compensated launches kept 3 blocks per SM until experiment 66: with
    /// experiment 64's leaner loop the compensated gate-up on `_b4` decodes 2-4% faster at k_chunk 4
    /// (qkv and o on `_b4`, compensated or not, still lose). `DECDEC_B4=off|nodec|all`
    /// (experiments): never, the old rule (not for compensated launches), or also the narrow
    /// matrices.
    fn b4_for(&self, dec: bool) -> bool {
        let knob = std::env::var("DECDEC_B4").unwrap_or_default();
        let wide = self.shape.n_tiles >= 1024 || knob == "all";
        let dec_ok = !dec || knob != "nodec";
        self.has_b4() && wide && dec_ok && knob != "off"
    }

    /// Whether a tile launch of `grid` blocks lets the next kernel of the stream launch right after
    /// its prologue instead of after its main loop (experiment 51, `DECDEC_EARLY=none|wave|all`):
    /// "wave" = only grids that fit in one wave of resident blocks, whose dependents can take
    /// only the slots freed by finished blocks (experiment 11 saw a trigger at kernel start speed
    /// up qkv but slow down gate-up, whose later waves then compete with the next kernel).
    fn early_trigger(&self, gpu: &Gpu, grid: u32) -> i32 {
        let resident = self.tile_per_sm as u64 * gpu.sms.max(1) as u64;
        match std::env::var("DECDEC_EARLY").as_deref() {
            Ok("all") => 1,
            Ok("wave") => (grid as u64 <= resident) as i32,
            _ => 0,
        }
    }

    /// Launch a GEMV of `grid` blocks (DEC blocks included) with its launch-order flag set.
    fn launch_gemv(
        &self,
        gpu: &Gpu,
        name: &str,
        grid: u32,
        smem: u32,
        g: GemvArgs,
        d: DecArgs,
    ) -> Result<()> {
        let g = GemvArgs {
            early: self.early_trigger(gpu, grid),
            ..g
        };
        // SAFETY: GemvArgs / DecArgs mirror the kernels' parameter structs (gemv.cu)
        unsafe { gpu.launch(name, grid, NTHREADS, smem, kargs![&g, &d]) }
    }

    /// Kernel, GEMV blocks and shared memory of a launch that hosts `n_dec` DEC blocks (in front)
    /// fetching `dec_rows` residual rows.
    fn launch_plan(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        split: usize,
        n_dec: usize,
        dec_rows: usize,
    ) -> (String, u32, u32) {
        match self.schedule() {
            Schedule::Stream => (
                self.stream_kernel_name(dt),
                self.stream_blocks(gpu, n_dec),
                self.stream_smem(dec_rows),
            ),
            Schedule::Tiles => (
                self.kernel_name(dt, self.b4_for(n_dec > 0)),
                self.shape.n_tiles.div_ceil(8 / split) as u32,
                self.smem_bytes(dec_rows),
            ),
        }
    }

    fn gemv_args(&self, x: u64, y: u64, out: OutMode, split: usize) -> GemvArgs {
        let s = &self.shape;
        GemvArgs {
            qw: self.qw.ptr,
            sz: if self.format == Format::Uniform {
                self.params.ptr
            } else {
                0
            },
            lut: if self.format == Format::Lut {
                self.params.ptr
            } else {
                0
            },
            x,
            y,
            n: s.n as i32,
            k: s.k as i32,
            kc: s.kc as i32,
            gp: s.gp as i32,
            out_mode: out as i32,
            split: split as i32,
            nw: 0,
            eps: 0.0,
            xmode: if self.x_staged() && self.schedule() == Schedule::Tiles {
                2
            } else {
                0
            },
            part: self.stream.as_ref().map(|st| st.part.ptr).unwrap_or(0),
            tile_cnt: self.stream.as_ref().map(|st| st.tile_cnt.ptr).unwrap_or(0),
            maxnc: self.stream.as_ref().map(|st| st.maxnc as i32).unwrap_or(0),
            early: 0,
        }
    }

    /// `y = W T(rmsnorm(h) * w)` in one launch: every GEMV block normalizes the f32 residual
    /// stream `h` [K] itself (bit-identical to `rmsnorm_sel` + [`GpuLinear::forward`]), so the
    /// decode step needs no separate norm launch when this projection is not compensated.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rmsnorm(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        h: u64,
        w: u64,
        eps: f32,
        y: u64,
        out: OutMode,
    ) -> Result<()> {
        let split = self.split_for(gpu.sms);
        let g = GemvArgs {
            nw: w,
            eps,
            xmode: 1,
            ..self.gemv_args(h, y, out, split)
        };
        let (name, blocks, mut smem) = self.launch_plan(gpu, dt, split, 0, 0);
        if self.schedule() == Schedule::Tiles && !self.x_staged() {
            // the tile kernel stages the normalized x behind its rings
            smem += (self.shape.kc * 256 * 2) as u32;
        }
        self.launch_gemv(gpu, &name, blocks, smem, g, DecArgs::default())
    }

    pub(crate) fn dec_args(&self, k_chunk: usize, n_dec: usize) -> Result<DecArgs> {
        let d = self
            .dec
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("DEC requested on a linear without residuals"))?;
        let ktot = dec_total_rows(self.shape.k, k_chunk);
        if ktot == 0 {
            return Ok(DecArgs::default());
        }
        if k_chunk > 1024 {
            bail!("k_chunk {k_chunk} > 1024");
        }
        Ok(DecArgs {
            res: d.res_dev.as_ref().map(|b| b.ptr).unwrap_or(d.host.dev),
            dbg_t: d.dbg_t.as_ref().map(|b| b.ptr).unwrap_or(0),
            x32: 0,
            presel: 0,
            rscale: d.rscale.ptr,
            dvec: d.dvec.ptr,
            sel_sync: d.sel_sync.ptr,
            sel_idx: d.sel_idx.ptr,
            sel_val: d.sel_val.ptr,
            a: d.thresholds[0],
            // the lower anchor is indexed by the global count floor(k_chunk * K / 1024)
            b: d.thresholds[(k_chunk * self.shape.k / 1024).max(1) - 1],
            k_chunk: k_chunk as i32,
            n_dec: n_dec.min(DecStore::n_slices(self.shape.n)).max(1) as i32,
        })
    }

    fn smem_bytes(&self, dec_rows: usize) -> u32 {
        let gemv = 8 * 16 * 4
            + match self.format {
                Format::Lut => 16 * (1usize << (2 * self.shape.bits)) * 4,
                Format::Uniform => 0,
            }
            + self.ring_bytes_for(self.stages())
            // each stage of the tile kernel's rings also holds the chunk's x (512 bytes per warp)
            + 8 * self.stages() * 512
            + if self.x_staged() { self.shape.kc * 256 * 2 } else { 0 };
        gemv.max(Self::dec_smem(dec_rows)) as u32
    }

    /// Whether the tile kernel stages all of x in shared memory (xmode 2) rather than copying each
    /// chunk's x into its rings: for long K, where the ring copies measured slower (experiment 29).
    fn x_staged(&self) -> bool {
        self.shape.kc > 16
    }

    /// Shared memory of the DEC blocks of a fused launch (reduction, selection, row lists).
    fn dec_smem(dec_rows: usize) -> usize {
        if dec_rows > 0 {
            8 * SLICE_COLS * 4 + SEL_SH * 4 + dec_rows * 8
        } else {
            0
        }
    }

    /// Shared memory of the per-warp cp.async rings, `stages` deep.
    fn ring_bytes_for(&self, stages: usize) -> usize {
        let u4 = self.shape.u4();
        let szn = match self.format {
            Format::Lut => 1,
            Format::Uniform => 2 * (256 / self.shape.group_size),
        };
        8 * stages * (u4 * 32 * 16 + szn * 32 * 4)
    }

    /// y = W x (+ DEC), queued on the main stream. `x`, `y` are raw device addresses.
    pub fn forward(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        x: u64,
        y: u64,
        out: OutMode,
        dec: DecMode,
    ) -> Result<()> {
        self.forward_x32(gpu, dt, x, 0, y, out, dec)
    }

    /// As [`GpuLinear::forward`]; `x32` (0 or an f32 copy of x) is what DEC selects on and
    /// multiplies with, as the CPU reference does.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_x32(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        x: u64,
        x32: u64,
        y: u64,
        out: OutMode,
        dec: DecMode,
    ) -> Result<()> {
        // a compensated launch also hosts the DEC blocks: keep the GEMV grid below a full wave
        let split = match dec {
            DecMode::Fused { .. } | DecMode::FusedPresel { .. }
                if self.split_override.is_none()
                    && (384..1024).contains(&self.shape.n_tiles)
                    && self.shape.kc < 32 =>
            {
                4
            }
            _ => self.split_for(gpu.sms),
        };
        let g = self.gemv_args(x, y, out, split);
        match dec {
            DecMode::Off => {
                let (name, blocks, smem) = self.launch_plan(gpu, dt, split, 0, 0);
                self.launch_gemv(gpu, &name, blocks, smem, g, DecArgs::default())
            }
            DecMode::Fused { k_chunk, n_dec } | DecMode::FusedPresel { k_chunk, n_dec } => {
                let presel = matches!(dec, DecMode::FusedPresel { .. }) as i32;
                let d = DecArgs {
                    x32,
                    presel,
                    ..self.dec_args(k_chunk, n_dec)?
                };
                let rows = dec_total_rows(self.shape.k, k_chunk);
                let (name, blocks, smem) = self.launch_plan(gpu, dt, split, d.n_dec as usize, rows);
                let d = match self.schedule() {
                    Schedule::Tiles if std::env::var_os("DECDEC_NO_WAVE_FIT").is_none() => {
                        let resident = self.tile_per_sm as usize * gpu.sms.max(1) as usize;
                        DecArgs {
                            n_dec: wave_fit_n_dec(blocks as usize, resident, d.n_dec as usize)
                                as i32,
                            ..d
                        }
                    }
                    _ => d,
                };
                self.launch_gemv(gpu, &name, blocks + d.n_dec as u32, smem, g, d)
            }
            DecMode::Coop { k_chunk, n_tb } => {
                let rows = dec_total_rows(self.shape.k, k_chunk);
                if rows == 0 {
                    return self.forward_x32(gpu, dt, x, x32, y, out, DecMode::Off);
                }
                if out != OutMode::Store {
                    bail!("the cooperative DEC variant only supports OutMode::Store");
                }
                let nd = DecArgs {
                    n_dec: 0,
                    x32,
                    ..self.dec_args(k_chunk, 0)?
                };
                let bar = self.dec.as_ref().expect("dec_args checked").bar.ptr;
                let (n, k) = (self.shape.n as i32, self.shape.k as i32);
                gpu.fork()?;
                unsafe {
                    gpu.launch_cooperative_on(
                        gpu.stream2,
                        &format!("dec_coop_{}", dt.suffix()),
                        n_tb as u32,
                        NTHREADS,
                        Self::dec_smem(rows) as u32,
                        kargs![&x, &n, &k, &nd, &bar],
                    )?;
                    let off = DecArgs::default();
                    let (name, blocks, smem) = self.launch_plan(gpu, dt, split, 0, 0);
                    gpu.launch(&name, blocks, NTHREADS, smem, kargs![&g, &off])?;
                }
                gpu.join()?;
                let dvec = nd.dvec;
                unsafe {
                    gpu.launch(
                        &format!("add_dvec_{}", dt.suffix()),
                        (n as u32).div_ceil(256),
                        256,
                        0,
                        kargs![&y, &dvec, &n],
                    )
                }
            }
        }
    }

    /// Ablation kernels of the 3-bit g128 f16 GEMV: `variant` = "memonly" (loads, no decode/mma),
    /// "computeonly" (decode/mma, no weight loads), "decodeonly" (no loads, no mma) or "mmaonly"
    /// (no loads, no decode; tile schedule only).
    pub fn forward_ablation(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        x: u64,
        y: u64,
        variant: &str,
    ) -> Result<()> {
        if self.format != Format::Uniform
            || self.shape.bits != 3
            || self.shape.group_size != 128
            || dt != Dtype::F16
        {
            bail!("ablation kernels exist for uniform 3-bit g128 f16 only");
        }
        let split = self.split_for(gpu.sms);
        let g = self.gemv_args(x, y, OutMode::Store, split);
        let (_, blocks, smem) = self.launch_plan(gpu, dt, split, 0, 0);
        let name = match self.schedule() {
            Schedule::Stream => format!("gemv_u3_g128_f16_{variant}_st{STREAM_STAGES}"),
            Schedule::Tiles => format!(
                "gemv_u3_g128_f16_{variant}{}",
                if self.stages() == 2 { "_s2" } else { "" }
            ),
        };
        let d = DecArgs::default();
        unsafe { gpu.launch(&name, blocks, NTHREADS, smem, kargs![&g, &d]) }
    }

    /// Whether [`GpuLinear::dequantize_into`] handles this weight (the batched prefill's GEMMs).
    pub fn can_dequantize(&self) -> bool {
        self.format == Format::Lut || self.shape.group_size == 128
    }

    /// Dequantize into a dense row-major `[N][K]` activation-dtype matrix at `out` (prefill).
    /// Uniform g128 and LUT weights.
    /// With `lo != 0` the remainder `w - out` goes there too (see [`gemm_xwt_split`]).
    pub fn dequantize_into(&self, gpu: &Gpu, dt: Dtype, out: u64, lo: u64) -> Result<()> {
        let name = match self.format {
            Format::Uniform if self.shape.group_size == 128 => {
                format!("dequant_u{}_g128_{}", self.shape.bits, dt.suffix())
            }
            Format::Lut => format!("dequant_l{}_{}", self.shape.bits, dt.suffix()),
            Format::Uniform => bail!(
                "prefill dequantization supports group size 128, not {}",
                self.shape.group_size
            ),
        };
        let g = self.gemv_args(0, 0, OutMode::Store, 8);
        let smem = match self.format {
            Format::Lut => (16usize << (2 * self.shape.bits)) * 4,
            Format::Uniform => 0,
        } as u32;
        unsafe {
            gpu.launch(
                &name,
                self.shape.n_tiles as u32,
                NTHREADS,
                smem,
                kargs![&g, &out, &lo],
            )
        }
    }

    /// Batched `y[t, :] = W x[t, :]` for `t` tokens (prefill, no compensation): dequantize into
    /// `scratch` (>= N*K activation-dtype elements) and one cuBLAS GEMM with f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_batch(
        &self,
        gpu: &Gpu,
        dt: Dtype,
        x: u64,
        y: u64,
        tokens: usize,
        scratch: u64,
    ) -> Result<()> {
        self.dequantize_into(gpu, dt, scratch, 0)?;
        gemm_xwt_to(
            gpu,
            dt,
            x,
            scratch,
            y,
            tokens,
            self.shape.k,
            self.shape.n,
            false,
            false,
        )
    }

    /// Bytes of weights (codes + parameters) one call streams from device memory.
    pub fn weight_bytes(&self) -> usize {
        self.shape.stream_bytes(self.format == Format::Lut)
    }
}

/// `y = W x` by the dense GEMV kernel (kernels/ops.cu `dense_gemv`: activation-dtype `W`
/// [n][k] row-major at `w`, one warp per row, f32 accumulation): the lm_head, the 16-bit
/// baseline and projections that are not quantized.
#[allow(clippy::too_many_arguments)]
pub fn dense_gemv(
    gpu: &Gpu,
    dt: Dtype,
    w: u64,
    x: u64,
    y: u64,
    n: usize,
    k: usize,
    out: OutMode,
) -> Result<()> {
    let (ni, ki, mode) = (n as i32, k as i32, out as i32);
    unsafe {
        gpu.launch(
            &format!("dense_gemv_{}", dt.suffix()),
            (n as u32).div_ceil(8),
            256,
            0,
            kargs![&w, &x, &y, &ni, &ki, &mode],
        )
    }
}

pub fn fill_u32(gpu: &Gpu, b: &DevBuf, seed: u64) -> Result<()> {
    let n = (b.bytes / 4) as u64;
    unsafe { gpu.launch("fill_random_u32", 2048, 256, 0, kargs![&b.ptr, &n, &seed]) }
}

pub fn fill_f32(gpu: &Gpu, b: &DevBuf, seed: u64, lo: f32, hi: f32) -> Result<()> {
    let n = (b.bytes / 4) as u64;
    unsafe {
        gpu.launch(
            "fill_uniform_f32",
            2048,
            256,
            0,
            kargs![&b.ptr, &n, &seed, &lo, &hi],
        )
    }
}

/// Fill a buffer of `n` activation-dtype values with uniform [lo, hi).
pub fn fill_act(
    gpu: &Gpu,
    dt: Dtype,
    ptr: u64,
    n: usize,
    seed: u64,
    lo: f32,
    hi: f32,
) -> Result<()> {
    let n = n as u64;
    unsafe {
        gpu.launch(
            &format!("fill_uniform_{}", dt.suffix()),
            1024,
            256,
            0,
            kargs![&ptr, &n, &seed, &lo, &hi],
        )
    }
}

/// `y[t, n] = sum_k x[t, k] * (w_hi + w_lo)[n, k]` in f32: the weight split in two activation-dtype
/// parts ([`GpuLinear::dequantize_into`] with `lo`), two GEMMs into the same f32 output. The
/// prefill's linears: w_hi alone would round every weight to the activation dtype, which the
/// decode step's GEMV never does.
#[allow(clippy::too_many_arguments)]
pub fn gemm_xwt_split(
    gpu: &Gpu,
    dt: Dtype,
    x: u64,
    w_hi: u64,
    w_lo: u64,
    y32: u64,
    t: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    gemm_xwt_to(gpu, dt, x, w_hi, y32, t, k, n, true, false)?;
    gemm_xwt_to(gpu, dt, x, w_lo, y32, t, k, n, true, true)
}

/// `y[t, n] = sum_k x[t, k] * w[n, k]` (row-major x `[t, k]`, w `[n, k]`, y `[t, n]`, activation
/// dtype, f32 accumulation) through cuBLAS; with `y_f32` the result is stored in f32 (prefill: compensation, bias and the
/// residual-stream add come after, on the unrounded sums, as in the decode step's GEMV); with
/// `accumulate` it is added to y.
#[allow(clippy::too_many_arguments)]
pub fn gemm_xwt_to(
    gpu: &Gpu,
    dt: Dtype,
    x: u64,
    w: u64,
    y: u64,
    t: usize,
    k: usize,
    n: usize,
    y_f32: bool,
    accumulate: bool,
) -> Result<()> {
    use cudarc::cublas::sys as cb;
    let h = gpu
        .cublas
        .ok_or_else(|| anyhow::anyhow!("cuBLAS is not available on this machine"))?;
    let ty = match dt {
        Dtype::F16 => cb::cudaDataType::CUDA_R_16F,
        Dtype::Bf16 => cb::cudaDataType::CUDA_R_16BF,
    };
    let (alpha, beta) = (1f32, if accumulate { 1f32 } else { 0f32 });
    // column-major view: Y^T (n x t) = W (k x n)^T * X^T (k x t)
    unsafe {
        cudarc::cublas::result::gemm_ex(
            h,
            cb::cublasOperation_t::CUBLAS_OP_T,
            cb::cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            t as i32,
            k as i32,
            &alpha as *const f32 as *const std::ffi::c_void,
            w as *const std::ffi::c_void,
            ty,
            k as i32,
            x as *const std::ffi::c_void,
            ty,
            k as i32,
            &beta as *const f32 as *const std::ffi::c_void,
            y as *mut std::ffi::c_void,
            if y_f32 {
                cb::cudaDataType::CUDA_R_32F
            } else {
                ty
            },
            n as i32,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| anyhow::anyhow!("cublasGemmEx: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::wave_fit_n_dec;

    #[test]
    fn dec_blocks_fill_the_last_wave_only() {
        // down on the H200: 256 GEMV blocks, 264 resident -> 8 free slots
        assert_eq!(wave_fit_n_dec(256, 264, 64), 8);
        assert_eq!(wave_fit_n_dec(256, 264, 6), 6);
        // gate-up: 896 blocks in 3 waves of 396 -> 292 free, the request stands
        assert_eq!(wave_fit_n_dec(896, 396, 64), 64);
        // a full last wave (no free slot worth using): the request stands
        assert_eq!(wave_fit_n_dec(792, 396, 32), 32);
        assert_eq!(wave_fit_n_dec(394, 396, 32), 32);
    }
}
