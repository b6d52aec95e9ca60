//! `decdec bench kernels`: per-kernel timings on random data with the reference harness idea
//! (weights rotated over copies beyond L2, CUDA-graph replays of 20 calls, median).

pub mod attn;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::gpu::{median, DevBuf, Dtype, Gpu};
use crate::kargs;
use crate::linear::{
    dec_total_rows, dense_gemv, fill_act, DecMode, Format, GpuLinear, OutMode, Schedule,
};

pub const CALLS_PER_GRAPH: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct Shape {
    pub name: String,
    pub k: usize,
    pub n: usize,
}

pub fn parse_shapes(spec: &str) -> Result<Vec<Shape>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part {
            "llama3-8b" => out.extend(model_shapes(4096, 32, 8, 128, 14336)),
            "phi3-medium" => out.extend(model_shapes(5120, 40, 10, 128, 17920)),
            "llama2-7b" => out.extend(model_shapes(4096, 32, 32, 128, 11008)),
            s => {
                let (k, n) = s.split_once('x').ok_or_else(|| {
                    anyhow!("shape '{s}' is not a model name or KxN (e.g. 4096x6144)")
                })?;
                let k: usize = k.parse().map_err(|_| anyhow!("bad K in shape '{s}'"))?;
                let n: usize = n.parse().map_err(|_| anyhow!("bad N in shape '{s}'"))?;
                if k == 0 || n == 0 {
                    bail!("shape '{s}' is empty");
                }
                out.push(Shape {
                    name: s.to_string(),
                    k,
                    n,
                });
            }
        }
    }
    if out.is_empty() {
        bail!("no shapes given");
    }
    Ok(out)
}

/// The four decoder-layer projections (fused qkv and gate-up) of a Llama-like model.
pub fn model_shapes(
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
) -> Vec<Shape> {
    vec![
        Shape {
            name: "qkv".into(),
            k: hidden,
            n: (heads + 2 * kv_heads) * head_dim,
        },
        Shape {
            name: "o".into(),
            k: heads * head_dim,
            n: hidden,
        },
        Shape {
            name: "gate-up".into(),
            k: hidden,
            n: 2 * ffn,
        },
        Shape {
            name: "down".into(),
            k: ffn,
            n: hidden,
        },
    ]
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub kernel: String,
    pub shape: String,
    pub k: usize,
    pub n: usize,
    pub us: f64,
    pub bytes: usize,
    pub gbps: f64,
    pub pct_copy_bw: f64,
    /// DEC rows: time over the same base kernel's time
    pub slowdown: Option<f64>,
    pub k_chunk: Option<usize>,
    pub n_dec: Option<usize>,
    /// residual bytes fetched over PCIe per call
    pub residual_bytes: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub sms: i32,
    pub l2_bytes: i32,
    pub copy_gbps: f64,
    pub zero_copy_gbps: f64,
    pub zero_copy_gbps_32_blocks: f64,
    pub rows: Vec<Row>,
    pub layer_sums: Vec<(String, f64)>,
}

pub struct Opts {
    pub shapes: Vec<Shape>,
    pub bits: Vec<u32>,
    pub k_chunks: Vec<usize>,
    pub n_dec: Vec<usize>,
    pub lut: bool,
    pub coop: bool,
    pub reps: usize,
    pub dtype: Dtype,
    /// also time every split-K factor of the uniform base GEMV
    pub split_sweep: bool,
}

/// Median microseconds per call of `CALLS_PER_GRAPH` calls captured in one graph.
pub fn time_graph(
    gpu: &Gpu,
    reps: usize,
    mut call: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let graph = gpu.capture(|| {
        for i in 0..CALLS_PER_GRAPH {
            call(i)?;
        }
        Ok(())
    })?;
    let t = gpu.time_us(3, reps, || gpu.replay(&graph))?;
    gpu.check()?;
    Ok(median(&t) / CALLS_PER_GRAPH as f64)
}

/// Large device-to-device copy, bytes read + written per second (GB/s).
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let bytes = 1usize << 30;
    let (a, b) = (gpu.alloc(bytes)?, gpu.alloc(bytes)?);
    crate::linear::fill_u32(gpu, &a, 1)?;
    let n = (bytes / 16) as u64;
    let grid = (gpu.sms * 8) as u32;
    let t = gpu.time_us(2, 10, || unsafe {
        gpu.launch("copy_u4", grid, 256, 0, kargs![&a.ptr, &b.ptr, &n])
    })?;
    Ok(2.0 * bytes as f64 / (median(&t) * 1e-6) / 1e9)
}

/// Zero-copy reads of mapped pinned host memory by `blocks` blocks (GB/s).
pub fn zero_copy_bandwidth(gpu: &Gpu, blocks: u32) -> Result<f64> {
    let bytes = 256usize << 20;
    let mut h = gpu.host_mapped(bytes)?;
    for (i, w) in h.as_mut_slice::<u32>().iter_mut().enumerate() {
        *w = (i as u32).wrapping_mul(2654435761);
    }
    let sink = gpu.alloc(4)?;
    let n = (bytes / 16) as u64;
    let t = gpu.time_us(1, 5, || unsafe {
        gpu.launch(
            "zero_copy_read",
            blocks,
            256,
            0,
            kargs![&h.dev, &n, &sink.ptr],
        )
    })?;
    Ok(bytes as f64 / (median(&t) * 1e-6) / 1e9)
}

fn copies_for(gpu: &Gpu, bytes: usize) -> usize {
    // enough copies that one graph streams at least 3x the L2 (and at least 2 copies)
    (3 * gpu.l2_bytes as usize)
        .div_ceil(bytes.max(1))
        .clamp(2, 20)
}

struct Xs {
    bufs: Vec<DevBuf>,
}

/// Median graph-replay time of `forward` (stored output) over the rotated weight copies `lins`.
/// `time` with every linear forced to `sched` (and `split`), the automatic choice restored after.
fn time_overridden(
    lins: &mut [GpuLinear],
    sched: Schedule,
    split: Option<usize>,
    time: impl FnOnce(&[GpuLinear]) -> Result<f64>,
) -> Result<f64> {
    for l in lins.iter_mut() {
        l.sched_override = Some(sched);
        l.split_override = split;
    }
    let us = time(lins);
    for l in lins.iter_mut() {
        l.sched_override = None;
        l.split_override = None;
    }
    us
}

fn time_forward(
    gpu: &Gpu,
    reps: usize,
    lins: &[GpuLinear],
    dt: Dtype,
    xs: &Xs,
    y_at: &dyn Fn(usize) -> u64,
    mode: DecMode,
) -> Result<f64> {
    time_graph(gpu, reps, |i| {
        lins[i % lins.len()].forward(gpu, dt, xs.bufs[i].ptr, y_at(i), OutMode::Store, mode)
    })
}

impl Xs {
    fn new(gpu: &Gpu, dt: Dtype, k: usize, seed: u64) -> Result<Xs> {
        let mut bufs = Vec::new();
        for i in 0..CALLS_PER_GRAPH {
            let b = gpu.alloc(k.div_ceil(8) * 16 + 16)?;
            gpu.memset(&b, 0)?;
            fill_act(gpu, dt, b.ptr, k, seed * 131 + i as u64, -1.0, 1.0)?;
            bufs.push(b);
        }
        Ok(Xs { bufs })
    }
}

pub fn run(gpu: &Gpu, o: &Opts) -> Result<Report> {
    let dt = o.dtype;
    println!(
        "device: {} ({} SMs, L2 {} MB, sm_{}{})",
        gpu.name,
        gpu.sms,
        gpu.l2_bytes >> 20,
        gpu.cc.0,
        gpu.cc.1
    );
    let copy = copy_bandwidth(gpu)?;
    let zc = zero_copy_bandwidth(gpu, (gpu.sms * 4) as u32)?;
    let zc32 = zero_copy_bandwidth(gpu, 32)?;
    println!("copy bandwidth (read+write): {copy:.0} GB/s; zero-copy PCIe read: {zc:.1} GB/s ({} blocks), {zc32:.1} GB/s (32 blocks)", gpu.sms * 4);
    let mut rows: Vec<Row> = Vec::new();
    let mk = |kernel: String, s: &Shape, us: f64, bytes: usize| Row {
        kernel,
        shape: s.name.clone(),
        k: s.k,
        n: s.n,
        us,
        bytes,
        gbps: bytes as f64 / (us * 1e-6) / 1e9,
        pct_copy_bw: 100.0 * (bytes as f64 / (us * 1e-6) / 1e9) / copy,
        slowdown: None,
        k_chunk: None,
        n_dec: None,
        residual_bytes: None,
    };
    // A compensated row: slowdown over `base`, k_chunk, block count and residual bytes set, and
    // its progress line printed (`what` padded to `w`, `tag` = "n_dec" or "n_tb ").
    #[allow(clippy::too_many_arguments)]
    let dec_row = |r: Row,
                   what: &str,
                   w: usize,
                   tag: &str,
                   base: f64,
                   k_chunk: usize,
                   nb: usize,
                   rbytes: Option<usize>| {
        println!(
            "  {:<8} {:<w$} k_chunk {:>2} {tag} {:>3}: {:>8.2} us  x{:.3}",
            r.shape,
            what,
            k_chunk,
            nb,
            r.us,
            r.us / base
        );
        Row {
            slowdown: Some(r.us / base),
            k_chunk: Some(k_chunk),
            n_dec: Some(nb),
            residual_bytes: rbytes,
            ..r
        }
    };
    for (si, s) in o.shapes.iter().enumerate() {
        let xs = Xs::new(gpu, dt, s.k, 1000 + si as u64)?;
        let ys = gpu.alloc(CALLS_PER_GRAPH * s.n.div_ceil(8) * 16)?;
        let y_at = |i: usize| ys.at(i * s.n.div_ceil(8) * 16);
        // fp16 cuBLAS GEMV and our dense GEMV
        {
            let bytes = s.n * s.k * 2;
            let nc = copies_for(gpu, bytes);
            let mut ws = Vec::new();
            for c in 0..nc {
                let w = gpu.alloc(bytes)?;
                fill_act(gpu, dt, w.ptr, s.n * s.k, 77 + c as u64, -0.05, 0.05)?;
                ws.push(w);
            }
            if gpu.cublas.is_some() {
                // one-row cuBLAS GEMM = the cuBLAS GEMV baseline
                let r = time_graph(gpu, o.reps, |i| {
                    crate::linear::gemm_xwt_to(
                        gpu,
                        dt,
                        xs.bufs[i].ptr,
                        ws[i % nc].ptr,
                        y_at(i),
                        1,
                        s.k,
                        s.n,
                        false,
                        false,
                    )
                });
                match r {
                    Ok(us) => rows.push(mk(format!("{} cuBLAS GEMV", dt.suffix()), s, us, bytes)),
                    Err(e) => println!("cuBLAS GEMV {}: {e:#}", s.name),
                }
            }
            if s.k % 8 == 0 {
                let us = time_graph(gpu, o.reps, |i| {
                    let (wp, xp, yp) = (ws[i % nc].ptr, xs.bufs[i].ptr, y_at(i));
                    dense_gemv(gpu, dt, wp, xp, yp, s.n, s.k, OutMode::Store)
                })?;
                rows.push(mk(
                    format!("{} dense GEMV (ours)", dt.suffix()),
                    s,
                    us,
                    bytes,
                ));
            }
        }
        // the 8-bit head's CUDA-core GEMV (`--head-bits 8`; f32 output), on its own rotated copies
        use crate::engine::head::U8Head;
        if U8Head::supports(s.k) {
            let one = U8Head::random(gpu, s.n, s.k, 128, 91)?;
            let bytes = one.weight_bytes();
            let nc = copies_for(gpu, bytes);
            let mut hs = vec![one];
            for c in 1..nc {
                hs.push(U8Head::random(gpu, s.n, s.k, 128, 91 + c as u64)?);
            }
            let ys32 = gpu.alloc(CALLS_PER_GRAPH * s.n * 4)?;
            let us = time_graph(gpu, o.reps, |i| {
                hs[i % nc].forward(gpu, dt, xs.bufs[i].ptr, ys32.at(i * s.n * 4))
            })?;
            rows.push(mk("8-bit g128 GEMV (--head-bits 8)".into(), s, us, bytes));
        }
        for &bits in &o.bits {
            for format in [Format::Uniform, Format::Lut] {
                if format == Format::Lut && !o.lut {
                    continue;
                }
                let probe = GpuLinear::random(gpu, format, bits, s.n, s.k, 128, 5)?;
                let bytes = probe.weight_bytes();
                drop(probe);
                let nc = copies_for(gpu, bytes);
                let mut lins = Vec::new();
                for c in 0..nc {
                    lins.push(GpuLinear::random(
                        gpu,
                        format,
                        bits,
                        s.n,
                        s.k,
                        128,
                        100 + c as u64,
                    )?);
                }
                let label = match format {
                    Format::Uniform => format!("uniform {bits}-bit g128"),
                    Format::Lut => format!("LUT {bits}-bit"),
                };
                let base = time_forward(gpu, o.reps, &lins, dt, &xs, &y_at, DecMode::Off)?;
                rows.push(mk(label.clone(), s, base, bytes));
                if format == Format::Uniform && bits == 3 && dt == Dtype::F16 {
                    for variant in ["memonly", "computeonly", "decodeonly", "mmaonly"] {
                        let us = time_graph(gpu, o.reps, |i| {
                            lins[i % nc].forward_ablation(gpu, dt, xs.bufs[i].ptr, y_at(i), variant)
                        })?;
                        println!("  {:<8} {:<28} {variant}: {:>8.2} us", s.name, label, us);
                        let mut r = mk(format!("{label} ablation: {variant}"), s, us, bytes);
                        r.n_dec = None;
                        rows.push(r);
                    }
                }
                if let Some(st) = &lins[0].stream {
                    println!(
                        "  {:<8} {:<28} stream schedule: {} blocks/SM, {} partial slots per tile, ring {}",
                        s.name, label, st.per_sm, st.maxnc, crate::linear::STREAM_STAGES
                    );
                }
                if lins[0].stream.is_some() && lins[0].schedule() == Schedule::Tiles {
                    // the stream schedule (experiment 17) for comparison
                    let us = time_overridden(&mut lins, Schedule::Stream, None, |lins| {
                        time_forward(gpu, o.reps, lins, dt, &xs, &y_at, DecMode::Off)
                    })?;
                    println!(
                        "  {:<8} {:<28} stream schedule: {:>8.2} us",
                        s.name, label, us
                    );
                    let mut r = mk(format!("{label} stream schedule"), s, us, bytes);
                    r.n_dec = None;
                    rows.push(r);
                }
                if o.split_sweep && format == Format::Uniform {
                    for split in [1usize, 2, 4, 8] {
                        let us =
                            time_overridden(&mut lins, Schedule::Tiles, Some(split), |lins| {
                                time_forward(gpu, o.reps, lins, dt, &xs, &y_at, DecMode::Off)
                            })?;
                        println!(
                            "  {:<8} {:<28} split {split}: {:>8.2} us",
                            s.name, label, us
                        );
                        let mut r = mk(format!("{label} split-K {split}"), s, us, bytes);
                        r.n_dec = Some(split);
                        rows.push(r);
                    }
                }
                println!(
                    "  {:<8} {:<28} {:>8.2} us  {:>6.0} GB/s",
                    s.name,
                    label,
                    base,
                    bytes as f64 / base / 1e3
                );
                if format == Format::Lut || o.k_chunks.iter().all(|&k| k == 0) {
                    continue;
                }
                // DEC: random residuals, thresholds matching |x| ~ U[0, 1]
                let th: Vec<f32> = (0..s.k).map(|j| 1.0 - j as f32 / s.k as f32).collect();
                for (c, l) in lins.iter_mut().enumerate() {
                    l.attach_random_residual(gpu, 900 + c as u64, th.clone())?;
                }
                for &k_chunk in o.k_chunks.iter().filter(|&&k| k > 0) {
                    let rows_fetched = dec_total_rows(s.k, k_chunk);
                    let rbytes = rows_fetched * (s.n * 4).div_ceil(32) * 4;
                    let mut best: Option<Row> = None;
                    for &n_dec in &o.n_dec {
                        let mode = DecMode::Fused { k_chunk, n_dec };
                        let us = time_forward(gpu, o.reps, &lins, dt, &xs, &y_at, mode)?;
                        let r = dec_row(
                            mk(format!("{label} + DEC fused"), s, us, bytes),
                            "+ DEC fused",
                            28,
                            "n_dec",
                            base,
                            k_chunk,
                            n_dec,
                            Some(rbytes),
                        );
                        if best.as_ref().is_none_or(|b| r.us < b.us) {
                            best = Some(r.clone());
                        }
                        rows.push(r);
                    }
                    if let Some(mut b) = best {
                        b.kernel = format!("{label} + DEC fused (best n_dec)");
                        let n_dec = b.n_dec.unwrap_or(32);
                        rows.push(b);
                        // selection made where x is produced: (a) a separate select launch counted,
                        // (b) not counted (in the decode step it rides in RMSNorm / SiLU*up)
                        let sel: Vec<_> = lins
                            .iter()
                            .map(|l| l.sel_args(k_chunk).expect("rows"))
                            .collect();
                        let nchunks = s.k.div_ceil(1024) as u32;
                        let kk = s.k as i32;
                        let mode = DecMode::FusedPresel { k_chunk, n_dec };
                        let sel_name = format!("select_only_{}", dt.suffix());
                        let with_sel = time_graph(gpu, o.reps, |i| {
                            unsafe {
                                gpu.launch(
                                    &sel_name,
                                    nchunks,
                                    256,
                                    0,
                                    kargs![&xs.bufs[i].ptr, &kk, &sel[i % nc]],
                                )?
                            };
                            lins[i % nc].forward(
                                gpu,
                                dt,
                                xs.bufs[i].ptr,
                                y_at(i),
                                OutMode::Store,
                                mode,
                            )
                        })?;
                        let presel = time_forward(gpu, o.reps, &lins, dt, &xs, &y_at, mode)?;
                        for (name, us) in [
                            ("+ DEC, selection in a separate launch", with_sel),
                            ("+ DEC, selection by the producer of x", presel),
                        ] {
                            rows.push(dec_row(
                                mk(format!("{label} {name}"), s, us, bytes),
                                name,
                                40,
                                "n_dec",
                                base,
                                k_chunk,
                                n_dec,
                                Some(rbytes),
                            ));
                        }
                        // ablation: the same kernel reading the residual from device memory
                        for l in lins.iter_mut() {
                            l.residual_on_device(gpu, true)?;
                        }
                        let mode = DecMode::Fused { k_chunk, n_dec };
                        let us = time_forward(gpu, o.reps, &lins, dt, &xs, &y_at, mode)?;
                        for l in lins.iter_mut() {
                            l.residual_on_device(gpu, false)?;
                        }
                        rows.push(dec_row(
                            mk(
                                format!("{label} + DEC fused, residual in HBM (ablation)"),
                                s,
                                us,
                                bytes,
                            ),
                            "+ DEC residual in HBM",
                            28,
                            "n_dec",
                            base,
                            k_chunk,
                            n_dec,
                            None,
                        ));
                        // phase stamps of one call (outside a graph)
                        lins[0].enable_stamps(gpu)?;
                        for _ in 0..3 {
                            lins[0].forward(
                                gpu,
                                dt,
                                xs.bufs[0].ptr,
                                y_at(0),
                                OutMode::Store,
                                mode,
                            )?;
                        }
                        gpu.check()?;
                        let t = lins[0].read_stamps(gpu)?;
                        let us_of =
                            |a: i64, b: i64| (b - a) as f64 / (gpu.clock_khz as f64 / 1000.0);
                        println!(
                            "  {:<8} select of chunk 0: start {:.2}, x+buckets {:.2}, histogram+boundary {:.2}, ranks+write {:.2}",
                            s.name,
                            us_of(t[0], t[10]),
                            us_of(t[10], t[11]),
                            us_of(t[11], t[12]),
                            us_of(t[12], t[13])
                        );
                        println!(
                            "  {:<8} phases (us, DEC block 0): select {:.2}, wait {:.2}, fetch {:.2}, hand-over {:.2}; GEMV block 0 lifetime {:.2}",
                            s.name,
                            us_of(t[0], t[1]),
                            us_of(t[1], t[2]),
                            us_of(t[2], t[3]),
                            us_of(t[3], t[4]),
                            us_of(t[8], t[9])
                        );
                    }
                    if o.coop {
                        let mut bestc: Option<Row> = None;
                        for n_tb in [16usize, 32, 66] {
                            let mode = DecMode::Coop { k_chunk, n_tb };
                            match time_graph(gpu, o.reps, |i| {
                                lins[i % nc].forward(
                                    gpu,
                                    dt,
                                    xs.bufs[i].ptr,
                                    y_at(i),
                                    OutMode::Store,
                                    mode,
                                )
                            }) {
                                Ok(us) => {
                                    let r = dec_row(
                                        mk(
                                            format!("{label} + DEC coop (original structure)"),
                                            s,
                                            us,
                                            bytes,
                                        ),
                                        "+ DEC coop",
                                        28,
                                        "n_tb ",
                                        base,
                                        k_chunk,
                                        n_tb,
                                        Some(rbytes),
                                    );
                                    if bestc.as_ref().is_none_or(|b| r.us < b.us) {
                                        bestc = Some(r.clone());
                                    }
                                    rows.push(r);
                                }
                                Err(e) => println!("  coop DEC {}: {e:#}", s.name),
                            }
                        }
                        if let Some(mut b) = bestc {
                            b.kernel = format!("{label} + DEC coop (best n_tb)");
                            rows.push(b);
                        }
                    }
                }
            }
        }
    }
    // layer sums over shapes for kernels present on every shape
    let mut layer_sums = Vec::new();
    if o.shapes.len() > 1 {
        let mut kernels: Vec<(String, Option<usize>)> = Vec::new();
        for r in &rows {
            let key = (r.kernel.clone(), r.k_chunk);
            let best_only = r.kernel.contains("(best") || r.kernel.contains("selection");
            let plain = r.k_chunk.is_none()
                && !r.kernel.contains("split-K")
                && !r.kernel.contains("ablation");
            if (best_only || plain) && !kernels.contains(&key) {
                kernels.push(key);
            }
        }
        for (kern, kc) in kernels {
            let per: Vec<&Row> = rows
                .iter()
                .filter(|r| r.kernel == kern && r.k_chunk == kc)
                .collect();
            if per.len() == o.shapes.len() {
                let name = match kc {
                    Some(k) => format!("{kern} k_chunk={k}"),
                    None => kern.clone(),
                };
                layer_sums.push((name, per.iter().map(|r| r.us).sum()));
            }
        }
    }
    Ok(Report {
        device: gpu.name.clone(),
        sms: gpu.sms,
        l2_bytes: gpu.l2_bytes,
        copy_gbps: copy,
        zero_copy_gbps: zc,
        zero_copy_gbps_32_blocks: zc32,
        rows,
        layer_sums,
    })
}

pub fn print_table(r: &Report) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "device: {} ({} SMs, L2 {} MB)",
        r.device,
        r.sms,
        r.l2_bytes >> 20
    );
    let _ = writeln!(
        s,
        "measured copy bandwidth (read+write): {:.0} GB/s; zero-copy PCIe read: {:.1} GB/s (4 blocks/SM), {:.1} GB/s (32 blocks)",
        r.copy_gbps, r.zero_copy_gbps, r.zero_copy_gbps_32_blocks
    );
    let _ = writeln!(
        s,
        "{:<44} {:<8} {:>13} {:>6} {:>6} {:>9} {:>8} {:>7} {:>7}",
        "kernel", "shape", "KxN", "k_ch", "n_dec", "us", "GB/s", "%copy", "slow"
    );
    for row in &r.rows {
        if (row.k_chunk.is_some()
            && !row.kernel.contains("(best")
            && !row.kernel.contains("selection"))
            || row.kernel.contains("split-K")
            || row.kernel.contains("ablation")
        {
            continue; // the sweep is in the JSON
        }
        let _ = writeln!(
            s,
            "{:<44} {:<8} {:>13} {:>6} {:>6} {:>9.2} {:>8.0} {:>6.1}% {:>7}",
            row.kernel,
            row.shape,
            format!("{}x{}", row.k, row.n),
            row.k_chunk.map(|v| v.to_string()).unwrap_or_default(),
            row.n_dec.map(|v| v.to_string()).unwrap_or_default(),
            row.us,
            row.gbps,
            row.pct_copy_bw,
            row.slowdown.map(|v| format!("x{v:.3}")).unwrap_or_default()
        );
    }
    if !r.layer_sums.is_empty() {
        let _ = writeln!(s, "\nlayer sums (us):");
        for (k, v) in &r.layer_sums {
            let _ = writeln!(s, "  {:<64} {:>8.2}", k, v);
        }
    }
    s
}
