//! `decdec gpu-test`: every kernel against its CPU twin (decdec-core) on fresh random inputs,
//! poisoned outputs, shapes with tails, f16 and bf16. Runs on a GPU machine, never in CI.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use decdec_core::quant::{pack, LutQuant, UniformQuant};
use decdec_core::residual::Residual;
use decdec_core::selection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::attn::launch_single;
use crate::gpu::{DevBuf, Dtype, Gpu};
use crate::kargs;
use crate::linear::{DecMode, GpuLinear, OutMode, Schedule, SelArgs};
use crate::repack::{LutRef, ResidualRef, UniformRef};

pub(crate) mod attn;
mod prefill;
mod select;
pub(crate) mod timeline;

/// A CPU twin `y = W x` of one linear.
type CpuGemv = dyn Fn(&[f32], &mut [f32]);

pub struct Check {
    pub name: String,
    pub err: f64,
    pub tol: f64,
    pub pass: bool,
}

#[derive(Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn add_check(&mut self, name: String, err: f64, tol: f64) {
        self.add(name, err, tol)
    }
    pub(crate) fn add(&mut self, name: String, err: f64, tol: f64) {
        let pass = err.is_finite() && err <= tol;
        println!(
            "{} {:<64} err {:.3e} (tol {:.0e})",
            if pass { "PASS" } else { "FAIL" },
            name,
            err,
            tol
        );
        self.checks.push(Check {
            name,
            err,
            tol,
            pass,
        });
    }
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.pass).count()
    }
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let _ = writeln!(
                s,
                "{} {:<64} err {:.3e} (tol {:.0e})",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.err,
                c.tol
            );
        }
        let _ = writeln!(
            s,
            "{} checks, {} failed",
            self.checks.len(),
            self.failures()
        );
        s
    }
}

/// ||a - b|| / ||b|| (NaN anywhere -> inf).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Random inputs of an attention check: `rows` fused qkv rows, K/V caches of `max_seq` positions,
/// RoPE frequencies (base 10000); device buffers with their activation-dtype-rounded values.
struct AttnInputs {
    qkv: Vec<f32>,
    kc_init: Vec<f32>,
    vc_init: Vec<f32>,
    qkvb: DevBuf,
    qkvr: Vec<f32>,
    kcb: DevBuf,
    kcr: Vec<f32>,
    vcb: DevBuf,
    vcr: Vec<f32>,
    inv_freq: Vec<f32>,
    fb: DevBuf,
}

#[allow(clippy::too_many_arguments)]
fn attn_inputs(
    gpu: &Gpu,
    dt: Dtype,
    rng: &mut StdRng,
    nh: usize,
    nkv: usize,
    hd: usize,
    rows: usize,
    max_seq: usize,
) -> Result<AttnInputs> {
    let inv_freq: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let qkv: Vec<f32> = (0..rows * (nh + 2 * nkv) * hd)
        .map(|_| randn(rng))
        .collect();
    let kc_init: Vec<f32> = (0..max_seq * nkv * hd).map(|_| randn(rng)).collect();
    let vc_init: Vec<f32> = (0..max_seq * nkv * hd).map(|_| randn(rng)).collect();
    let (qkvb, qkvr) = upload_act(gpu, dt, &qkv)?;
    let (kcb, kcr) = upload_act(gpu, dt, &kc_init)?;
    let (vcb, vcr) = upload_act(gpu, dt, &vc_init)?;
    let fb = gpu.upload(&inv_freq)?;
    Ok(AttnInputs {
        qkv,
        kc_init,
        vc_init,
        qkvb,
        qkvr,
        kcb,
        kcr,
        vcb,
        vcr,
        inv_freq,
        fb,
    })
}

/// CPU twin of GQA attention: query rows `q` ([rows][nh * hd]), row r over cache positions
/// 0..=pos[r] of `kc`/`vc` ([max_seq][nkv][hd]), scores scaled by 1/sqrt(hd).
fn cpu_attention(
    q: &[f32],
    pos: &[usize],
    kc: &[f32],
    vc: &[f32],
    nh: usize,
    nkv: usize,
    hd: usize,
) -> Vec<f32> {
    let (dim, scale) = (nh * hd, 1.0 / (hd as f32).sqrt());
    let mut out = vec![0f32; pos.len() * dim];
    for (r, &p) in pos.iter().enumerate() {
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let qh = &q[r * dim + h * hd..r * dim + (h + 1) * hd];
            let mut s: Vec<f32> = (0..=p)
                .map(|j| {
                    (0..hd)
                        .map(|i| qh[i] * kc[(j * nkv + kvh) * hd + i])
                        .sum::<f32>()
                        * scale
                })
                .collect();
            decdec_core::ops::softmax(&mut s);
            for i in 0..hd {
                out[r * dim + h * hd + i] =
                    (0..=p).map(|j| s[j] * vc[(j * nkv + kvh) * hd + i]).sum();
            }
        }
    }
    out
}

/// An activation-dtype output and the f32 copy the kernel wrote beside it, against one twin.
fn add_act_and_f32(
    rep: &mut Report,
    label: String,
    got: &[f32],
    got32: &[f32],
    want: &[f32],
    dt: Dtype,
) {
    rep.add(format!("{label} (f32 copy)"), rel_err(got32, want), 1e-6);
    rep.add(label, rel_err(got, want), tol(dt));
}

fn tol(dt: Dtype) -> f64 {
    match dt {
        Dtype::F16 => 2e-3,
        Dtype::Bf16 => 8e-3,
    }
}

/// Upload activations rounded to `dt`; returns the buffer and the rounded values.
fn upload_act(gpu: &Gpu, dt: Dtype, v: &[f32]) -> Result<(DevBuf, Vec<f32>)> {
    let bits: Vec<u16> = v.iter().map(|&x| dt.to_bits(x)).collect();
    let rounded = bits.iter().map(|&b| dt.from_bits(b)).collect();
    // pad to 16 bytes so vector loads of the tail stay inside the allocation
    let mut padded = bits.clone();
    padded.resize(v.len().div_ceil(8) * 8 + 8, 0);
    Ok((gpu.upload(&padded)?, rounded))
}

fn read_act(gpu: &Gpu, dt: Dtype, b: &DevBuf, n: usize) -> Result<Vec<f32>> {
    let v: Vec<u16> = gpu.read_raw(b.ptr, n)?;
    Ok(v.into_iter().map(|x| dt.from_bits(x)).collect())
}

fn randn(rng: &mut StdRng) -> f32 {
    // Irwin-Hall approximation of a standard normal (enough for test data)
    (0..4).map(|_| rng.random::<f32>()).sum::<f32>() * 1.732 - 3.464
}

pub fn random_uniform(
    rng: &mut StdRng,
    bits: u32,
    n: usize,
    k: usize,
    group_size: usize,
) -> Result<UniformQuant> {
    let codes: Vec<u8> = (0..n * k)
        .map(|_| rng.random_range(0..(1u32 << bits)) as u8)
        .collect();
    let ng = k.div_ceil(group_size);
    Ok(UniformQuant {
        bits,
        group_size,
        k,
        n,
        qweight: pack::pack(&codes, n, k, bits)?,
        scales: (0..n * ng)
            .map(|_| rng.random_range(0.002f32..0.03))
            .collect(),
        zeros: (0..n * ng)
            .map(|_| rng.random_range(0..(1u32 << bits)) as u8)
            .collect(),
    })
}

pub fn random_lut(rng: &mut StdRng, bits: u32, n: usize, k: usize) -> Result<LutQuant> {
    let codes: Vec<u8> = (0..n * k)
        .map(|_| rng.random_range(0..(1u32 << bits)) as u8)
        .collect();
    let mut lut: Vec<f32> = (0..n << bits).map(|_| randn(rng) * 0.03).collect();
    for row in lut.chunks_mut(1 << bits) {
        row.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    Ok(LutQuant {
        bits,
        k,
        n,
        qweight: pack::pack(&codes, n, k, bits)?,
        lut,
    })
}

pub fn random_residual(rng: &mut StdRng, n: usize, k: usize) -> Residual {
    let wpr = (n * 4).div_ceil(32);
    let mut codes = vec![0u32; k * wpr];
    for r in 0..k {
        for c in 0..wpr * 8 {
            let code = if c < n { rng.random_range(1u32..16) } else { 8 };
            codes[r * wpr + c / 8] |= code << (4 * (c % 8));
        }
    }
    Residual {
        bits: 4,
        k,
        n,
        words_per_row: wpr,
        codes,
        scales: (0..n).map(|_| rng.random_range(0.0005f32..0.003)).collect(),
    }
}

/// Elements (of type T) that differ bit for bit between the first `n` of two device buffers.
fn raw_mismatches<T: bytemuck::Pod + Default + Clone + PartialEq>(
    gpu: &Gpu,
    a: &DevBuf,
    b: &DevBuf,
    n: usize,
) -> Result<usize> {
    let x: Vec<T> = gpu.read_raw(a.ptr, n)?;
    let y: Vec<T> = gpu.read_raw(b.ptr, n)?;
    Ok(x.iter().zip(&y).filter(|(p, q)| p != q).count())
}

/// A producer's selection request for `k_chunk` over the channels of `th` (thresholds): index and
/// value buffers (indices poisoned) and the `SelArgs` that point at them.
fn sel_request(gpu: &Gpu, th: &[f32], k_chunk: usize) -> Result<(DevBuf, DevBuf, SelArgs)> {
    let dim = th.len();
    let rows_n = crate::linear::dec_total_rows(dim, k_chunk).max(1);
    let (si, sv) = (gpu.alloc(rows_n * 4)?, gpu.alloc(rows_n * 4)?);
    gpu.memset(&si, 0xff)?;
    let sa = SelArgs {
        sel_idx: si.ptr,
        sel_val: sv.ptr,
        a: th[0],
        b: th[(k_chunk * dim / 1024).max(1) - 1],
        k_chunk: k_chunk as i32,
    };
    Ok((si, sv, sa))
}

/// Selected channel indices the GPU wrote at `sel_idx` that differ from `select_bucket` of the
/// same f32 values (the CPU twin of every selection kernel).
fn selection_mismatches(
    gpu: &Gpu,
    sel_idx: u64,
    x: &[f32],
    th: &[f32],
    k_chunk: usize,
) -> Result<usize> {
    let mut rows = Vec::new();
    selection::select_bucket(x, th, k_chunk, &mut rows);
    let gsel: Vec<u32> = gpu.read_raw(sel_idx, rows.len())?;
    Ok(gsel.iter().zip(&rows).filter(|(a, b)| a != b).count())
}

/// Thresholds like calibration would give: t[j] = (j+1)-th largest |v| over a few random vectors.
fn thresholds_like(rng: &mut StdRng, k: usize, spread: f32) -> Vec<f32> {
    let mut best = vec![0f32; k];
    for _ in 0..4 {
        let mut v: Vec<f32> = (0..k).map(|_| (randn(rng) * spread).abs()).collect();
        v.sort_by(|a, b| b.partial_cmp(a).unwrap());
        for (b, x) in best.iter_mut().zip(v) {
            *b = b.max(x);
        }
    }
    best
}

fn uref(q: &UniformQuant) -> UniformRef<'_> {
    UniformRef {
        bits: q.bits,
        group_size: q.group_size,
        n: q.n,
        k: q.k,
        qweight: &q.qweight,
        scales: &q.scales,
        zeros: &q.zeros,
    }
}

fn lref(q: &LutQuant) -> LutRef<'_> {
    LutRef {
        bits: q.bits,
        n: q.n,
        k: q.k,
        qweight: &q.qweight,
        lut: &q.lut,
    }
}

fn rref(r: &Residual) -> ResidualRef<'_> {
    ResidualRef {
        bits: r.bits,
        n: r.n,
        k: r.k,
        residual: &r.codes,
        scales: &r.scales,
    }
}

/// One base-GEMV check: fresh random x (rounded to `dt` for the twin too), poisoned output, the GPU
/// result against the CPU twin `twin(x, y)`.
#[allow(clippy::too_many_arguments)]
fn check_gemv(
    gpu: &Gpu,
    rep: &mut Report,
    rng: &mut StdRng,
    lin: &GpuLinear,
    dt: Dtype,
    (k, n): (usize, usize),
    label: String,
    twin: impl Fn(&[f32], &mut [f32]),
) -> Result<()> {
    let xs: Vec<f32> = (0..k).map(|_| randn(rng)).collect();
    let (xb, xr) = upload_act(gpu, dt, &xs)?;
    let mut want = vec![0f32; n];
    twin(&xr, &mut want);
    let y = gpu.alloc(n * 2 + 16)?;
    gpu.memset(&y, 0xff)?;
    lin.forward(gpu, dt, xb.ptr, y.ptr, OutMode::Store, DecMode::Off)?;
    gpu.check()?;
    let got = read_act(gpu, dt, &y, n)?;
    rep.add(label, rel_err(&got, &want), tol(dt));
    Ok(())
}

/// Run every check. `seed` = None draws a fresh seed (printed).
pub fn run_all(gpu: &Gpu, seed: Option<u64>) -> Result<Report> {
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!(
        "gpu-test on {} (sm_{}{}), seed {seed}",
        gpu.name, gpu.cc.0, gpu.cc.1
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rep = Report::default();
    let dts = [Dtype::F16, Dtype::Bf16];

    // ---------------- base GEMV: uniform ----------------
    let shapes: &[(usize, usize)] = &[
        (4096, 1024),
        (576, 200),
        (2000, 77),
        (1000, 33),
        (14336, 48),
        (32, 16),
        // >= 1024 row tiles: the 4-blocks-per-SM (`_b4`) kernels
        (300, 16400),
    ];
    for &(k, n) in shapes {
        for bits in [3u32, 4] {
            for dt in dts {
                let q = random_uniform(&mut rng, bits, n, k, 128)?;
                let lin = GpuLinear::from_uniform(gpu, &uref(&q))?;
                let label = format!("gemv uniform {bits}-bit g128 {k}x{n} {}", dt.suffix());
                check_gemv(gpu, &mut rep, &mut rng, &lin, dt, (k, n), label, |x, y| {
                    q.gemv(x, y)
                })?;
            }
        }
    }
    // every split-K factor (row tiles per block 8, 4, 2, 1), with and without DEC; and a wide
    // matrix (>= 1024 row tiles) whose compensated launch runs the `_b4` kernels (experiment 66)
    let all_splits: &[usize] = &[0, 1, 2, 4, 8];
    for &(k, n, bits, splits) in &[
        (4096usize, 1000usize, 3u32, all_splits),
        (1300, 600, 3, all_splits),
        (1024, 16400, 3, &[4][..]),
        (1024, 16400, 4, &[4][..]),
    ] {
        let dt = Dtype::F16;
        let q = random_uniform(&mut rng, bits, n, k, 128)?;
        let mut lin = GpuLinear::from_uniform(gpu, &uref(&q))?;
        let res = random_residual(&mut rng, n, k);
        let th = thresholds_like(&mut rng, k, 1.0);
        lin.attach_residual(gpu, &rref(&res), &th)?;
        // split 0: the stream schedule (units spread over one wave of warps)
        for &split in splits {
            lin.split_override = (split > 0).then_some(split);
            lin.sched_override = Some(if split == 0 {
                Schedule::Stream
            } else {
                Schedule::Tiles
            });
            for k_chunk in [0usize, 16] {
                let xs: Vec<f32> = (0..k).map(|_| randn(&mut rng)).collect();
                let (xb, xr) = upload_act(gpu, dt, &xs)?;
                let mut want = vec![0f32; n];
                q.gemv(&xr, &mut want);
                let mode = if k_chunk == 0 {
                    DecMode::Off
                } else {
                    let mut rows = Vec::new();
                    selection::select_bucket(&xr, &th, k_chunk, &mut rows);
                    let acts: Vec<f32> = rows.iter().map(|&r| xr[r as usize]).collect();
                    res.add_rows(&rows, &acts, &mut want);
                    DecMode::Fused { k_chunk, n_dec: 3 }
                };
                let y = gpu.alloc(n * 2 + 16)?;
                gpu.memset(&y, 0xff)?;
                lin.forward(gpu, dt, xb.ptr, y.ptr, OutMode::Store, mode)?;
                gpu.check()?;
                let got = read_act(gpu, dt, &y, n)?;
                let sched = if split == 0 {
                    "stream".to_string()
                } else {
                    format!("split-K {split}")
                };
                rep.add(
                    format!("gemv {bits}-bit {sched} k_chunk={k_chunk} {k}x{n} f16"),
                    rel_err(&got, &want),
                    tol(dt),
                );
            }
        }
    }
    // RMSNorm fused into the GEMV (decode step without compensation): bit-identical to
    // rmsnorm_sel + GEMV, and equal to the CPU twin of norm-then-GEMV; x normalized in registers
    // (K <= 4096), by the loops (long K), and on the 4-blocks-per-SM kernel (1024 row tiles)
    for &(k, n) in &[
        (4096usize, 1000usize),
        (1000, 77),
        (14336, 48),
        (1024, 16400),
    ] {
        for bits in [3u32, 4] {
            for dt in dts {
                let sfx = dt.suffix();
                let q = random_uniform(&mut rng, bits, n, k, 128)?;
                let lin = GpuLinear::from_uniform(gpu, &uref(&q))?;
                let h: Vec<f32> = (0..k).map(|_| randn(&mut rng) * 3.0).collect();
                let w: Vec<f32> = (0..k).map(|_| 0.5 + rng.random::<f32>()).collect();
                let eps = 1e-5f32;
                let (hb, wb) = (gpu.upload(&h)?, gpu.upload(&w)?);
                let xn = gpu.alloc(k * 2 + 16)?;
                let x32 = gpu.alloc(k * 4)?;
                let (ki, sa) = (k as i32, SelArgs::default());
                unsafe {
                    gpu.launch(
                        &format!("rmsnorm_sel_{sfx}"),
                        k.div_ceil(1024) as u32,
                        256,
                        0,
                        kargs![&hb.ptr, &wb.ptr, &xn.ptr, &x32.ptr, &ki, &eps, &sa],
                    )?
                };
                let y1 = gpu.alloc(n * 2 + 16)?;
                let y2 = gpu.alloc(n * 2 + 16)?;
                gpu.memset(&y1, 0xff)?;
                gpu.memset(&y2, 0xff)?;
                lin.forward(gpu, dt, xn.ptr, y1.ptr, OutMode::Store, DecMode::Off)?;
                lin.forward_rmsnorm(gpu, dt, hb.ptr, wb.ptr, eps, y2.ptr, OutMode::Store)?;
                gpu.check()?;
                let a: Vec<u16> = gpu.read_raw(y1.ptr, n)?;
                let b: Vec<u16> = gpu.read_raw(y2.ptr, n)?;
                rep.add(
                    format!("gemv {bits}-bit with fused RMSNorm == rmsnorm_sel + gemv {k}x{n} {sfx} (mismatches)"),
                    a.iter().zip(&b).filter(|(x, y)| x != y).count() as f64,
                    0.0,
                );
                let ss: f64 = h.iter().map(|&v| (v as f64) * (v as f64)).sum();
                let inv = 1.0 / ((ss / k as f64) as f32 + eps).sqrt();
                let xr: Vec<f32> = h
                    .iter()
                    .zip(&w)
                    .map(|(&a, &b)| dt.round(a * inv * b))
                    .collect();
                let mut want = vec![0f32; n];
                q.gemv(&xr, &mut want);
                rep.add(
                    format!("gemv {bits}-bit with fused RMSNorm {k}x{n} {sfx} vs CPU"),
                    rel_err(&read_act(gpu, dt, &y2, n)?, &want),
                    tol(dt),
                );
            }
        }
    }
    // other group sizes and the f32 output modes
    for (gs, k, n) in [(64usize, 704usize, 96usize), (32, 300, 40), (256, 1280, 64)] {
        for bits in [3u32, 4] {
            let dt = Dtype::F16;
            let q = random_uniform(&mut rng, bits, n, k, gs)?;
            let lin = GpuLinear::from_uniform(gpu, &uref(&q))?;
            let xs: Vec<f32> = (0..k).map(|_| randn(&mut rng)).collect();
            let (xb, xr) = upload_act(gpu, dt, &xs)?;
            let mut want = vec![0f32; n];
            q.gemv(&xr, &mut want);
            let base: Vec<f32> = (0..n).map(|_| randn(&mut rng)).collect();
            let y = gpu.upload(&base)?;
            lin.forward(gpu, dt, xb.ptr, y.ptr, OutMode::AddF32, DecMode::Off)?;
            let got: Vec<f32> = gpu.read(&y)?;
            let got: Vec<f32> = got.iter().zip(&base).map(|(a, b)| a - b).collect();
            rep.add(
                format!("gemv uniform {bits}-bit g{gs} {k}x{n} f16 (f32 += mode)"),
                rel_err(&got, &want),
                1e-4,
            );
            gpu.memset(&y, 0xff)?;
            lin.forward(gpu, dt, xb.ptr, y.ptr, OutMode::StoreF32, DecMode::Off)?;
            let got: Vec<f32> = gpu.read(&y)?;
            rep.add(
                format!("gemv uniform {bits}-bit g{gs} {k}x{n} f16 (f32 store)"),
                rel_err(&got, &want),
                1e-4,
            );
        }
    }

    // ---------------- base GEMV: LUT ----------------
    for &(k, n) in &[(4096usize, 512usize), (576, 200), (1000, 33)] {
        for bits in [3u32, 4] {
            for dt in dts {
                let q = random_lut(&mut rng, bits, n, k)?;
                let lin = GpuLinear::from_lut(gpu, &lref(&q))?;
                let label = format!("gemv LUT {bits}-bit {k}x{n} {}", dt.suffix());
                check_gemv(gpu, &mut rep, &mut rng, &lin, dt, (k, n), label, |x, y| {
                    q.gemv(x, y)
                })?;
            }
        }
    }

    // ---------------- prefill: dequantize + cuBLAS GEMM ----------------
    for &(k, n, t) in &[(576usize, 200usize, 5usize), (1000, 64, 3), (300, 40, 2)] {
        for (lut, bits) in [(false, 3u32), (false, 4), (true, 3), (true, 4)] {
            for dt in dts {
                let (lin, twin): (GpuLinear, Box<CpuGemv>) = if lut {
                    let q = random_lut(&mut rng, bits, n, k)?;
                    let l = GpuLinear::from_lut(gpu, &lref(&q))?;
                    (l, Box::new(move |x: &[f32], y: &mut [f32]| q.gemv(x, y)))
                } else {
                    let q = random_uniform(&mut rng, bits, n, k, 128)?;
                    let l = GpuLinear::from_uniform(gpu, &uref(&q))?;
                    (l, Box::new(move |x: &[f32], y: &mut [f32]| q.gemv(x, y)))
                };
                let xs: Vec<f32> = (0..t * k).map(|_| randn(&mut rng)).collect();
                let (xb, xr) = upload_act(gpu, dt, &xs)?;
                let mut want = vec![0f32; t * n];
                for (xrow, yrow) in xr.chunks_exact(k).zip(want.chunks_exact_mut(n)) {
                    twin(xrow, yrow);
                }
                let scratch = gpu.alloc(n * k * 2)?;
                gpu.memset(&scratch, 0xff)?;
                let y = gpu.alloc(t * n * 2 + 16)?;
                gpu.memset(&y, 0xff)?;
                lin.forward_batch(gpu, dt, xb.ptr, y.ptr, t, scratch.ptr)?;
                gpu.check()?;
                let got = read_act(gpu, dt, &y, t * n)?;
                let kind = if lut { "LUT" } else { "uniform g128" };
                rep.add(
                    format!(
                        "prefill dequant+cuBLAS {kind} {bits}-bit {t}x{k}x{n} {}",
                        dt.suffix()
                    ),
                    rel_err(&got, &want),
                    tol(dt),
                );
            }
        }
    }

    // ---------------- DEC: selection + fetch, both designs ----------------
    // (1000, 6160): 385 row tiles, the compensated launch with its own split-K 4
    for &(k, n) in &[
        (4096usize, 1024usize),
        (2500, 600),
        (14336, 512),
        (1000, 6160),
    ] {
        for dt in dts {
            let q = random_uniform(&mut rng, 3, n, k, 128)?;
            let mut lin = GpuLinear::from_uniform(gpu, &uref(&q))?;
            let res = random_residual(&mut rng, n, k);
            let th = thresholds_like(&mut rng, k, 1.0);
            lin.attach_residual(gpu, &rref(&res), &th)?;
            for k_chunk in [4usize, 8, 32] {
                for variant in 0..3 {
                    let xs: Vec<f32> = (0..k).map(|_| randn(&mut rng)).collect();
                    let (xb, xr) = upload_act(gpu, dt, &xs)?;
                    let mut want = vec![0f32; n];
                    q.gemv(&xr, &mut want);
                    let mut rows = Vec::new();
                    selection::select_bucket(&xr, &th, k_chunk, &mut rows);
                    let acts: Vec<f32> = rows.iter().map(|&r| xr[r as usize]).collect();
                    res.add_rows(&rows, &acts, &mut want);
                    let (mode, label) = match variant {
                        0 => (DecMode::Fused { k_chunk, n_dec: 4 }, "fused n_dec=4"),
                        1 => (DecMode::Fused { k_chunk, n_dec: 64 }, "fused n_dec=64"),
                        _ => (DecMode::Coop { k_chunk, n_tb: 32 }, "coop n_tb=32"),
                    };
                    let y = gpu.alloc(n * 2 + 16)?;
                    gpu.memset(&y, 0xff)?;
                    gpu.memset(&lin.dec.as_ref().unwrap().sel_idx, 0xff)?;
                    lin.forward(gpu, dt, xb.ptr, y.ptr, OutMode::Store, mode)?;
                    gpu.check()?;
                    let got = read_act(gpu, dt, &y, n)?;
                    rep.add(
                        format!("dec {label} k_chunk={k_chunk} {k}x{n} {}", dt.suffix()),
                        rel_err(&got, &want),
                        tol(dt),
                    );
                    if !rows.is_empty() {
                        let gsel = lin.last_selection(gpu, rows.len())?;
                        let mism = gsel.iter().zip(&rows).filter(|(a, b)| a != b).count();
                        rep.add(
                            format!(
                                "dec {label} selection == select_bucket k_chunk={k_chunk} {k} {}",
                                dt.suffix()
                            ),
                            mism as f64,
                            0.0,
                        );
                    }
                }
            }
            // selection made by the producer kernels (rmsnorm_sel / silu_sel), then the GEMV with
            // DEC blocks that only fetch
            for (producer, k_chunk) in [("rmsnorm_sel", 8usize), ("silu_sel", 32)] {
                let sa: SelArgs = lin.sel_args(k_chunk).expect("rows at this k_chunk");
                let xb = gpu.alloc(k.div_ceil(8) * 16 + 16)?;
                let x32 = gpu.alloc(k * 4)?;
                gpu.memset(&xb, 0xff)?;
                gpu.memset(&x32, 0xff)?;
                gpu.memset(&lin.dec.as_ref().unwrap().sel_idx, 0xff)?;
                let ki = k as i32;
                if producer == "rmsnorm_sel" {
                    let h: Vec<f32> = (0..k).map(|_| randn(&mut rng) * 2.0).collect();
                    let w: Vec<f32> = (0..k).map(|_| 0.5 + rng.random::<f32>()).collect();
                    let (hb, wb) = (gpu.upload(&h)?, gpu.upload(&w)?);
                    let eps = 1e-5f32;
                    unsafe {
                        gpu.launch(
                            &format!("rmsnorm_sel_{}", dt.suffix()),
                            (k as u32).div_ceil(1024),
                            256,
                            0,
                            kargs![&hb.ptr, &wb.ptr, &xb.ptr, &x32.ptr, &ki, &eps, &sa],
                        )?
                    };
                } else {
                    let gu: Vec<f32> = (0..2 * k).map(|_| randn(&mut rng) * 2.0).collect();
                    let (gb, _) = upload_act(gpu, dt, &gu)?;
                    unsafe {
                        gpu.launch(
                            &format!("silu_sel_{}", dt.suffix()),
                            (k as u32).div_ceil(1024),
                            256,
                            0,
                            kargs![&gb.ptr, &xb.ptr, &x32.ptr, &ki, &sa],
                        )?
                    };
                }
                let y = gpu.alloc(n * 2 + 16)?;
                gpu.memset(&y, 0xff)?;
                lin.forward_x32(
                    gpu,
                    dt,
                    xb.ptr,
                    x32.ptr,
                    y.ptr,
                    OutMode::Store,
                    DecMode::FusedPresel { k_chunk, n_dec: 16 },
                )?;
                gpu.check()?;
                let xr = read_act(gpu, dt, &xb, k)?;
                let xv: Vec<f32> = gpu.read(&x32)?;
                let mut want = vec![0f32; n];
                q.gemv(&xr, &mut want);
                let mut rows = Vec::new();
                selection::select_bucket(&xv, &th, k_chunk, &mut rows);
                let acts: Vec<f32> = rows.iter().map(|&r| xv[r as usize]).collect();
                res.add_rows(&rows, &acts, &mut want);
                let got = read_act(gpu, dt, &y, n)?;
                rep.add(
                    format!(
                        "dec selected by {producer} k_chunk={k_chunk} {k}x{n} {}",
                        dt.suffix()
                    ),
                    rel_err(&got, &want),
                    tol(dt),
                );
                let gsel = lin.last_selection(gpu, rows.len())?;
                let mism = gsel.iter().zip(&rows).filter(|(a, b)| a != b).count();
                rep.add(
                    format!(
                        "{producer} selection == select_bucket k_chunk={k_chunk} {k} {}",
                        dt.suffix()
                    ),
                    mism as f64,
                    0.0,
                );
            }
            // graph replays with new inputs in the same buffers (flags reset between calls)
            let k_chunk = 8;
            let (xb, _) = upload_act(gpu, dt, &vec![0.0; k])?;
            let y = gpu.alloc(n * 2 + 16)?;
            let graph = gpu.capture(|| {
                lin.forward(
                    gpu,
                    dt,
                    xb.ptr,
                    y.ptr,
                    OutMode::Store,
                    DecMode::Fused { k_chunk, n_dec: 16 },
                )
            })?;
            let mut worst = 0f64;
            for _ in 0..3 {
                let xs: Vec<f32> = (0..k).map(|_| randn(&mut rng)).collect();
                let bits: Vec<u16> = xs.iter().map(|&v| dt.to_bits(v)).collect();
                let xr: Vec<f32> = bits.iter().map(|&b| dt.from_bits(b)).collect();
                gpu.write(&xb, 0, &bits)?;
                gpu.memset(&y, 0xff)?;
                gpu.replay(&graph)?;
                gpu.check()?;
                let mut want = vec![0f32; n];
                q.gemv(&xr, &mut want);
                let mut rows = Vec::new();
                selection::select_bucket(&xr, &th, k_chunk, &mut rows);
                let acts: Vec<f32> = rows.iter().map(|&r| xr[r as usize]).collect();
                res.add_rows(&rows, &acts, &mut want);
                worst = worst.max(rel_err(&read_act(gpu, dt, &y, n)?, &want));
            }
            rep.add(
                format!(
                    "dec fused in a CUDA graph, 3 replays {k}x{n} {}",
                    dt.suffix()
                ),
                worst,
                tol(dt),
            );
        }
    }

    // ---------------- decoder-step ops, and their batched prefill twins ----------------
    for dt in dts {
        select::selection_checks(gpu, dt, &mut rng, &mut rep)?;
        ops_checks(gpu, dt, &mut rng, &mut rep)?;
        prefill::prefill_checks(gpu, dt, &mut rng, &mut rep)?;
    }
    Ok(rep)
}

fn ops_checks(gpu: &Gpu, dt: Dtype, rng: &mut StdRng, rep: &mut Report) -> Result<()> {
    let sfx = dt.suffix();
    // RMSNorm
    for d in [288usize, 4096, 1000] {
        let h: Vec<f32> = (0..d).map(|_| randn(rng) * 3.0).collect();
        let w: Vec<f32> = (0..d).map(|_| 0.5 + rng.random::<f32>()).collect();
        let mut want = vec![0f32; d];
        decdec_core::ops::rms_norm(&h, &w, 1e-5, &mut want);
        let (hb, wb) = (gpu.upload(&h)?, gpu.upload(&w)?);
        let out = gpu.alloc(d * 2 + 16)?;
        gpu.memset(&out, 0xff)?;
        let (di, eps) = (d as i32, 1e-5f32);
        let o32 = gpu.alloc(d * 4)?;
        gpu.memset(&o32, 0xff)?;
        unsafe {
            gpu.launch(
                &format!("rmsnorm_{sfx}"),
                1,
                1024,
                0,
                kargs![&hb.ptr, &wb.ptr, &out.ptr, &o32.ptr, &di, &eps],
            )?
        };
        let got = read_act(gpu, dt, &out, d)?;
        add_act_and_f32(
            rep,
            format!("rmsnorm d={d} {sfx}"),
            &got,
            &gpu.read(&o32)?,
            &want,
            dt,
        );
    }
    // RoPE + KV append, attention (GQA)
    for (nh, nkv, hd, pos) in [
        (8usize, 4usize, 64usize, 37usize),
        (32, 8, 128, 200),
        (6, 6, 48, 0),
        (8, 4, 8, 255),
        (4, 2, 20, 100),
        (8, 2, 128, 383),
        // many heads at several positions: ~12k rotated pairs, so that a different rounding of
        // the rotation in the fused kernel (experiment 78) shows as mismatches
        (64, 8, 128, 17),
        (64, 8, 128, 300),
        (32, 8, 128, 511),
    ] {
        // past 256 positions: the score loop's second round, value rows past the staged ones
        let max_seq = (pos + 1).next_power_of_two().max(256);
        let AttnInputs {
            qkv,
            kc_init,
            vc_init,
            qkvb,
            qkvr,
            kcb,
            mut kcr,
            vcb,
            mut vcr,
            inv_freq,
            fb,
        } = attn_inputs(gpu, dt, rng, nh, nkv, hd, 1, max_seq)?;
        let pb = gpu.upload(&[pos as i32])?;
        let (nhi, nkvi, hdi) = (nh as i32, nkv as i32, hd as i32);
        unsafe {
            gpu.launch(
                &format!("rope_kv_{sfx}"),
                (nh + 2 * nkv) as u32,
                64,
                0,
                kargs![&qkvb.ptr, &fb.ptr, &kcb.ptr, &vcb.ptr, &pb.ptr, &nhi, &nkvi, &hdi],
            )?
        };
        // CPU twin
        let mut q = qkvr[..nh * hd].to_vec();
        let mut kk = qkvr[nh * hd..(nh + nkv) * hd].to_vec();
        decdec_core::ops::rope_half_split(&mut q, hd, pos, &inv_freq);
        decdec_core::ops::rope_half_split(&mut kk, hd, pos, &inv_freq);
        let q: Vec<f32> = q.iter().map(|&v| dt.round(v)).collect();
        let got_q = read_act(gpu, dt, &qkvb, nh * hd)?;
        rep.add(
            format!("rope q nh={nh} hd={hd} pos={pos} {sfx}"),
            rel_err(&got_q, &q),
            tol(dt),
        );
        let base = pos * nkv * hd;
        for i in 0..nkv * hd {
            kcr[base + i] = dt.round(kk[i]);
            vcr[base + i] = qkvr[(nh + nkv) * hd + i];
        }
        let got_k = read_act(gpu, dt, &kcb, max_seq * nkv * hd)?;
        rep.add(
            format!("rope k -> cache nkv={nkv} pos={pos} {sfx}"),
            rel_err(&got_k, &kcr),
            tol(dt),
        );
        let got_v = read_act(gpu, dt, &vcb, max_seq * nkv * hd)?;
        rep.add(
            format!("v -> cache nkv={nkv} pos={pos} {sfx}"),
            rel_err(&got_v, &vcr),
            0.0,
        );
        // attention over positions 0..=pos with the rotated q from the GPU
        let scale = 1.0 / (hd as f32).sqrt();
        let out = gpu.alloc(nh * hd * 2 + 16)?;
        gpu.memset(&out, 0xff)?;
        // with the selection of the o projection's salient channels by the last head block of each
        // 1024-channel chunk
        let dim = nh * hd;
        let k_chunk = 64usize;
        let th = thresholds_like(rng, dim, 1.0);
        let rows_n = crate::linear::dec_total_rows(dim, k_chunk);
        let (si, _sv, sa) = sel_request(gpu, &th, k_chunk)?;
        let cnt = gpu.alloc_zeroed(dim.div_ceil(1024) * 4 + 16)?;
        let out32 = gpu.alloc(dim * 4)?;
        gpu.memset(&out32, 0xff)?;
        // value rows staged in shared memory as the decode step stages them
        let plan = crate::engine::attn::single_plan(hd, max_seq, gpu.smem_optin, None)?;
        let vcap = plan.0;
        unsafe {
            launch_single(
                gpu,
                sfx,
                qkvb.ptr,
                kcb.ptr,
                vcb.ptr,
                (out.ptr, out32.ptr),
                pb.ptr,
                (nhi, nkvi, hdi),
                scale,
                &sa,
                cnt.ptr,
                plan,
                None,
            )?
        };
        let got = read_act(gpu, dt, &out, nh * hd)?;
        // fewer staged rows (none, or 16: the rest read from global memory) sum in the same order
        for rows in [0usize, 16] {
            let plan_r = crate::engine::attn::single_plan(hd, max_seq, gpu.smem_optin, Some(rows))?;
            let vc_r = plan_r.0;
            let out_r = gpu.alloc(nh * hd * 2 + 16)?;
            gpu.memset(&out_r, 0xff)?;
            unsafe {
                launch_single(
                    gpu,
                    sfx,
                    qkvb.ptr,
                    kcb.ptr,
                    vcb.ptr,
                    (out_r.ptr, 0),
                    pb.ptr,
                    (nhi, nkvi, hdi),
                    scale,
                    &SelArgs::default(),
                    0,
                    plan_r,
                    None,
                )?
            };
            rep.add(
                format!("attention with {vc_r} of {vcap} value rows staged == all staged nh={nh} hd={hd} pos={pos} {sfx} (mismatches)"),
                raw_mismatches::<u16>(gpu, &out, &out_r, nh * hd)? as f64,
                0.0,
            );
        }
        // RoPE + KV append + attention fused (the decode step's kernel) on fresh copies of the
        // inputs: outputs, caches and selection bit-identical to rope_kv + attn_decode, with all,
        // none or 16 of the value rows staged
        for rows in [None, Some(0usize), Some(16)] {
            let plan_r = crate::engine::attn::single_plan(hd, max_seq, gpu.smem_optin, rows)?;
            let vc_r = plan_r.0;
            let (qkv2, _) = upload_act(gpu, dt, &qkv)?;
            let (kc2, _) = upload_act(gpu, dt, &kc_init)?;
            let (vc2, _) = upload_act(gpu, dt, &vc_init)?;
            let out2 = gpu.alloc(nh * hd * 2 + 16)?;
            let o32b = gpu.alloc(dim * 4)?;
            gpu.memset(&out2, 0xff)?;
            gpu.memset(&o32b, 0xff)?;
            let (si2, _sv2, sa2) = sel_request(gpu, &th, k_chunk)?;
            let cnt2 = gpu.alloc_zeroed(dim.div_ceil(1024) * 4 + 16)?;
            unsafe {
                launch_single(
                    gpu,
                    sfx,
                    qkv2.ptr,
                    kc2.ptr,
                    vc2.ptr,
                    (out2.ptr, o32b.ptr),
                    pb.ptr,
                    (nhi, nkvi, hdi),
                    scale,
                    &sa2,
                    cnt2.ptr,
                    plan_r,
                    Some(fb.ptr),
                )?
            };
            gpu.check()?;
            let mut mism = 0usize;
            for (x, y, len) in [
                (&out, &out2, nh * hd),
                (&kcb, &kc2, max_seq * nkv * hd),
                (&vcb, &vc2, max_seq * nkv * hd),
            ] {
                mism += raw_mismatches::<u16>(gpu, x, y, len)?;
            }
            mism += raw_mismatches::<u32>(gpu, &out32, &o32b, dim)?;
            if rows_n > 0 && 1024 % hd == 0 {
                mism += raw_mismatches::<u32>(gpu, &si, &si2, rows_n)?;
            }
            rep.add(
                format!("attention with fused RoPE/KV append ({vc_r} value rows staged) == rope_kv + attn_decode nh={nh} hd={hd} pos={pos} {sfx} (mismatches)"),
                mism as f64,
                0.0,
            );
        }
        if rows_n > 0 && 1024 % hd == 0 {
            let o32: Vec<f32> = gpu.read(&out32)?;
            rep.add(
                format!("attention selection for o == select_bucket nh={nh} hd={hd} {sfx}"),
                selection_mismatches(gpu, si.ptr, &o32, &th, k_chunk)? as f64,
                0.0,
            );
            let cnt_after: Vec<i32> = gpu.read_raw(cnt.ptr, dim.div_ceil(1024))?;
            rep.add(
                format!("attention chunk counters reset nh={nh} hd={hd} {sfx}"),
                cnt_after.iter().filter(|&&c| c != 0).count() as f64,
                0.0,
            );
        }
        let want = cpu_attention(&got_q, &[pos], &kcr, &vcr, nh, nkv, hd);
        rep.add(
            format!("attention nh={nh} nkv={nkv} hd={hd} len={} {sfx}", pos + 1),
            rel_err(&got, &want),
            tol(dt),
        );
    }
    // the decode step's split-KV attention
    attn::split_checks(gpu, dt, rng, rep)?;
    // SiLU * up
    for f in [768usize, 1000] {
        let gu: Vec<f32> = (0..2 * f).map(|_| randn(rng) * 2.0).collect();
        let (gb, gr) = upload_act(gpu, dt, &gu)?;
        let out = gpu.alloc(f * 2 + 16)?;
        gpu.memset(&out, 0xff)?;
        let fi = f as i32;
        let null = 0u64;
        unsafe {
            gpu.launch(
                &format!("silu_mul_{sfx}"),
                (f as u32).div_ceil(256),
                256,
                0,
                kargs![&gb.ptr, &out.ptr, &null, &fi],
            )?
        };
        let mut g = gr[..f].to_vec();
        decdec_core::ops::silu_mul(&mut g, &gr[f..]);
        rep.add(
            format!("silu*up f={f} {sfx}"),
            rel_err(&read_act(gpu, dt, &out, f)?, &g),
            tol(dt),
        );
    }
    // embedding
    {
        let (vocab, d) = (50usize, 96usize);
        let e: Vec<f32> = (0..vocab * d).map(|_| randn(rng)).collect();
        let (eb, er) = upload_act(gpu, dt, &e)?;
        let tok = 17i32;
        let tb = gpu.upload(&[tok])?;
        let h = gpu.alloc(d * 4)?;
        gpu.memset(&h, 0xff)?;
        let di = d as i32;
        unsafe {
            gpu.launch(
                &format!("embed_{sfx}"),
                1,
                128,
                0,
                kargs![&eb.ptr, &tb.ptr, &h.ptr, &di],
            )?
        };
        let got: Vec<f32> = gpu.read(&h)?;
        rep.add(
            format!("embedding {sfx}"),
            rel_err(&got, &er[17 * d..18 * d]),
            0.0,
        );
    }
    // dense GEMV (lm_head / 16-bit baseline)
    for (k, n) in [(288usize, 512usize), (4096, 1000), (1000, 7)] {
        let w: Vec<f32> = (0..n * k).map(|_| randn(rng) * 0.05).collect();
        let xs: Vec<f32> = (0..k).map(|_| randn(rng)).collect();
        let (wb, wr) = upload_act(gpu, dt, &w)?;
        let (xb, xr) = upload_act(gpu, dt, &xs)?;
        let mut want = vec![0f32; n];
        decdec_core::ops::gemv(&wr, &xr, &mut want);
        let y = gpu.alloc(n * 4)?;
        gpu.memset(&y, 0xff)?;
        if k % 8 != 0 {
            bail!("dense GEMV test shape needs K % 8 == 0");
        }
        crate::linear::dense_gemv(gpu, dt, wb.ptr, xb.ptr, y.ptr, n, k, OutMode::StoreF32)?;
        let got: Vec<f32> = gpu.read(&y)?;
        rep.add(
            format!("dense gemv {k}x{n} {sfx} (f32 out)"),
            rel_err(&got, &want),
            1e-5,
        );
    }
    // 8-bit head GEMV (`--head-bits 8`) against the packed-code CPU GEMV; N past one grid pass
    // (rows per warp > 1), group sizes 32/64/128, K with a partial last group
    for (k, n, g) in [
        (576usize, 1000usize, 64usize),
        (4096, 20003, 128),
        (64, 77, 32),
        (4096, 7, 128),
        (480, 300, 128),
    ] {
        let w: Vec<f32> = (0..n * k).map(|_| randn(rng) * 0.05).collect();
        let q = decdec_core::quant::quantize_rtn(&w, n, k, 8, g)?;
        let xs: Vec<f32> = (0..k).map(|_| randn(rng)).collect();
        let (xb, xr) = upload_act(gpu, dt, &xs)?;
        let mut want = vec![0f32; n];
        q.gemv(&xr, &mut want);
        let y = gpu.alloc(n * 4)?;
        gpu.memset(&y, 0xff)?;
        crate::engine::head::U8Head::upload(gpu, &q)?.forward(gpu, dt, xb.ptr, y.ptr)?;
        let got: Vec<f32> = gpu.read(&y)?;
        rep.add(
            format!("8-bit head gemv {k}x{n} g{g} {sfx} (f32 out)"),
            rel_err(&got, &want),
            1e-5,
        );
    }
    // argmax with a tie (lowest index must win)
    {
        let n = 128_256usize;
        let mut v: Vec<f32> = (0..n).map(|_| randn(rng)).collect();
        let i1 = rng.random_range(0..n / 2);
        let i2 = i1 + rng.random_range(1..n / 2);
        v[i1] = 100.0;
        v[i2] = 100.0;
        let vb = gpu.upload(&v)?;
        let ob = gpu.upload(&[-1i32])?;
        let ni = n as i32;
        unsafe { gpu.launch("argmax_f32", 1, 1024, 0, kargs![&vb.ptr, &ni, &ob.ptr])? };
        let got: Vec<i32> = gpu.read(&ob)?;
        rep.add(
            format!("argmax n={n} (tie -> lowest index) {sfx}"),
            if got[0] as usize == i1 { 0.0 } else { 1.0 },
            0.0,
        );
    }
    Ok(())
}
