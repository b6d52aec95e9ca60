//! GPU checks of the split-KV decode attention (`attn_split_decode` and the tensor-core
//! `attn_split_tc*` in kernels/ops.cu) against the CPU twin of GQA attention: short and long
//! contexts (one split and many), every heads-per-block case, outputs poisoned first, the o
//! projection's selection, counters left at zero, and a rerun that must be bit-identical whatever
//! order the splits arrive in.

use anyhow::Result;
use rand::rngs::StdRng;

use super::{
    attn_inputs, cpu_attention, randn, raw_mismatches, read_act, rel_err, sel_request,
    selection_mismatches, thresholds_like, tol, upload_act, Report,
};
use crate::engine::attn::{SplitAttn, SplitKind};
use crate::gpu::{Dtype, Gpu};
use crate::kargs;
use crate::linear::dec_total_rows;

pub(super) fn split_checks(gpu: &Gpu, dt: Dtype, rng: &mut StdRng, rep: &mut Report) -> Result<()> {
    let sfx = dt.suffix();
    use SplitKind::{Cuda, TensorCores as Tc};
    // (heads, kv heads, head_dim, pos, max_seq, splits (0 = the engine's choice), kernel: CUDA
    // cores with n heads per block (0 = the engine's choice) or tensor cores)
    for (nh, nkv, hd, pos, max_seq, splits, kind) in [
        (
            32usize,
            8usize,
            128usize,
            200usize,
            256usize,
            0usize,
            Cuda(0),
        ),
        (32, 8, 128, 3000, 4096, 0, Cuda(0)),
        (32, 8, 128, 1000, 1536, 0, Cuda(1)),
        (8, 4, 64, 37, 256, 3, Cuda(0)),
        (9, 3, 64, 700, 1024, 0, Cuda(0)),
        (28, 4, 128, 1500, 2048, 0, Cuda(0)),
        (16, 2, 64, 511, 512, 5, Cuda(0)),
        (16, 2, 64, 900, 1024, 0, Cuda(2)),
        (6, 6, 48, 0, 256, 0, Cuda(0)),
        (4, 2, 8, 1000, 1024, 64, Cuda(0)),
        (8, 8, 256, 130, 256, 2, Cuda(0)),
        // the tensor-core kernel: GQA groups 1 to 16, one split and many, tail tiles, fewer
        // tiles than warps and rings that wrap
        (32, 8, 128, 200, 256, 0, Tc),
        (32, 8, 128, 3000, 4096, 0, Tc),
        (32, 8, 128, 4095, 4096, 0, Tc),
        (9, 3, 64, 700, 1024, 0, Tc),
        (28, 4, 128, 1500, 2048, 0, Tc),
        (16, 2, 64, 511, 512, 5, Tc),
        (32, 2, 128, 1000, 1024, 0, Tc),
        (8, 8, 128, 0, 256, 0, Tc),
        (16, 2, 64, 17, 256, 3, Tc),
        (32, 8, 128, 100, 256, 1, Tc),
        (4, 4, 64, 300, 512, 1, Tc),
        (12, 12, 64, 777, 1024, 7, Tc),
        (32, 32, 96, 1200, 2048, 0, Tc),
        (12, 4, 96, 40, 256, 2, Tc),
    ] {
        let sp = SplitAttn::new(gpu, nh, nkv, hd, max_seq, splits, kind)?;
        let active = (pos + 1).div_ceil(sp.range(pos + 1));
        let label = format!(
            "split attention{} nh={nh} nkv={nkv} hd={hd} len={} splits {active}/{} heads/block {} {sfx}",
            if sp.tensor_cores { " (tensor cores)" } else { "" },
            pos + 1,
            sp.splits,
            sp.heads_per_block
        );
        let dim = nh * hd;
        let q: Vec<f32> = (0..dim).map(|_| randn(rng)).collect();
        // whole caches random: rows past pos must not be read
        let kc: Vec<f32> = (0..max_seq * nkv * hd).map(|_| randn(rng)).collect();
        let vc: Vec<f32> = (0..max_seq * nkv * hd).map(|_| randn(rng)).collect();
        let (qb, qr) = upload_act(gpu, dt, &q)?;
        let (kb, kr) = upload_act(gpu, dt, &kc)?;
        let (vb, vr) = upload_act(gpu, dt, &vc)?;
        let pb = gpu.upload(&[pos as i32])?;
        let k_chunk = 64usize;
        let th = thresholds_like(rng, dim, 1.0);
        let rows_n = dec_total_rows(dim, k_chunk);
        let scale = 1.0 / (hd as f32).sqrt();
        let cnt = gpu.alloc_zeroed(dim.div_ceil(1024) * 4 + 16)?;
        // two runs on fresh outputs: the second must repeat the first bit for bit
        let mut runs = Vec::new();
        for _ in 0..2 {
            let out = gpu.alloc(dim * 2 + 16)?;
            let out32 = gpu.alloc(dim * 4)?;
            let (si, _sv, sa) = sel_request(gpu, &th, k_chunk)?;
            for b in [&out, &out32] {
                gpu.memset(b, 0xff)?;
            }
            unsafe {
                sp.launch(
                    gpu,
                    sfx,
                    qb.ptr,
                    kb.ptr,
                    vb.ptr,
                    out.ptr,
                    out32.ptr,
                    pb.ptr,
                    (nh as i32, nkv as i32, hd as i32),
                    scale,
                    &sa,
                    cnt.ptr,
                    None,
                )?
            };
            gpu.check()?;
            runs.push((out, out32, si));
        }
        let want = cpu_attention(&qr, &[pos], &kr, &vr, nh, nkv, hd);
        let (out, out32, si) = &runs[0];
        rep.add(
            label.clone(),
            rel_err(&read_act(gpu, dt, out, dim)?, &want),
            tol(dt),
        );
        let o32: Vec<f32> = gpu.read(out32)?;
        rep.add(format!("{label} (f32 copy)"), rel_err(&o32, &want), 2e-5);
        let mism = raw_mismatches::<u16>(gpu, &runs[0].0, &runs[1].0, dim)?
            + raw_mismatches::<u32>(gpu, &runs[0].1, &runs[1].1, dim)?;
        rep.add(
            format!("{label} rerun bit-identical (mismatches)"),
            mism as f64,
            0.0,
        );
        if rows_n > 0 {
            rep.add(
                format!("{label} selection for o == select_bucket (mismatches)"),
                selection_mismatches(gpu, si.ptr, &o32, &th, k_chunk)? as f64,
                0.0,
            );
        }
        if sp.fuses_rope() {
            rope_fused_check(gpu, dt, rng, rep, &sp, (nh, nkv, hd), pos, max_seq, &label)?;
        }
        let left: Vec<i32> = gpu.read_raw(cnt.ptr, dim.div_ceil(1024))?;
        let left_g = sp.group_counters(gpu)?;
        rep.add(
            format!("{label} counters back at zero (nonzero)"),
            (left.iter().chain(&left_g).filter(|&&c| c != 0).count()) as f64,
            0.0,
        );
    }
    Ok(())
}

/// The kernel with RoPE and the KV append inside (the decode step's form) against rope_kv followed
/// by the kernel, on fresh copies of the same raw qkv and caches: outputs (f16/bf16 and f32),
/// both caches and the o selection bit for bit.
#[allow(clippy::too_many_arguments)]
fn rope_fused_check(
    gpu: &Gpu,
    dt: Dtype,
    rng: &mut StdRng,
    rep: &mut Report,
    sp: &SplitAttn,
    (nh, nkv, hd): (usize, usize, usize),
    pos: usize,
    max_seq: usize,
    label: &str,
) -> Result<()> {
    let sfx = dt.suffix();
    let inputs = attn_inputs(gpu, dt, rng, nh, nkv, hd, 1, max_seq)?;
    let pb = gpu.upload(&[pos as i32])?;
    let dim = nh * hd;
    let k_chunk = 64usize;
    let th = thresholds_like(rng, dim, 1.0);
    let rows_n = dec_total_rows(dim, k_chunk);
    let scale = 1.0 / (hd as f32).sqrt();
    let (nhi, nkvi, hdi) = (nh as i32, nkv as i32, hd as i32);
    let mut runs = Vec::new();
    for fused in [false, true] {
        let (qkv, _) = upload_act(gpu, dt, &inputs.qkv)?;
        let (kc, _) = upload_act(gpu, dt, &inputs.kc_init)?;
        let (vc, _) = upload_act(gpu, dt, &inputs.vc_init)?;
        let out = gpu.alloc(dim * 2 + 16)?;
        let out32 = gpu.alloc(dim * 4)?;
        for b in [&out, &out32] {
            gpu.memset(b, 0xff)?;
        }
        let (si, _sv, sa) = sel_request(gpu, &th, k_chunk)?;
        let cnt = gpu.alloc_zeroed(dim.div_ceil(1024) * 4 + 16)?;
        unsafe {
            if !fused {
                gpu.launch(
                    &format!("rope_kv_{sfx}"),
                    (nh + 2 * nkv) as u32,
                    64,
                    0,
                    kargs![
                        &qkv.ptr,
                        &inputs.fb.ptr,
                        &kc.ptr,
                        &vc.ptr,
                        &pb.ptr,
                        &nhi,
                        &nkvi,
                        &hdi
                    ],
                )?;
            }
            sp.launch(
                gpu,
                sfx,
                qkv.ptr,
                kc.ptr,
                vc.ptr,
                out.ptr,
                out32.ptr,
                pb.ptr,
                (nhi, nkvi, hdi),
                scale,
                &sa,
                cnt.ptr,
                fused.then_some(inputs.fb.ptr),
            )?;
        }
        gpu.check()?;
        runs.push((out, out32, kc, vc, si));
    }
    let (a, b) = (&runs[0], &runs[1]);
    let cache = max_seq * nkv * hd;
    let mut mism = raw_mismatches::<u16>(gpu, &a.0, &b.0, dim)?
        + raw_mismatches::<u32>(gpu, &a.1, &b.1, dim)?
        + raw_mismatches::<u16>(gpu, &a.2, &b.2, cache)?
        + raw_mismatches::<u16>(gpu, &a.3, &b.3, cache)?;
    if rows_n > 0 {
        mism += raw_mismatches::<u32>(gpu, &a.4, &b.4, rows_n)?;
    }
    rep.add(
        format!("{label} with fused RoPE/KV append == rope_kv + the kernel (mismatches)"),
        mism as f64,
        0.0,
    );
    Ok(())
}

/// The decode step's attention tiers end to end on `synthetic:tiny` (head_dim 64, GQA groups of
/// 4, 4 layers, 3-bit): the same 600-token context (batched prefill), then six decode steps in
/// the split tier (positions 600-605), with the default tiers, with the tensor-core kernel
/// (`DECDEC_ATTN_KERNEL=tc`, RoPE and the KV append inside) and with the tensor-core kernel after
/// a rope_kv launch (`DECDEC_ROPE_LAUNCH=1`). The tensor-core logits must be close to the
/// default's (the attention sums in another order) and its two forms bit-identical. The knobs
/// are set only while each engine is built and run, then restored.
pub(crate) fn engine_tier_checks(dt: Dtype, rep: &mut Report) -> Result<()> {
    use crate::engine::{CudaEngine, CudaOptions};
    use decdec_model::model::Logits;
    use decdec_model::Engine;
    let context: Vec<u32> = (0..600u32).map(|i| (i * 7919 + 13) % 1000).collect();
    let steps = [17u32, 300, 999, 5, 512, 64];
    let run = |env: &[(&str, &str)]| -> Result<(String, Vec<Vec<f32>>)> {
        let saved: Vec<(String, Option<std::ffi::OsString>)> = [
            "DECDEC_ATTN",
            "DECDEC_ATTN_KERNEL",
            "DECDEC_ATTN_GB",
            "DECDEC_ATTN_SPLITS",
            "DECDEC_ROPE_LAUNCH",
        ]
        .iter()
        .map(|k| (k.to_string(), std::env::var_os(k)))
        .collect();
        for (k, _) in &saved {
            std::env::remove_var(k);
        }
        for (k, v) in env {
            std::env::set_var(k, v);
        }
        let res = (|| {
            let opts = CudaOptions {
                dtype: dt,
                max_seq: 1024,
                ..Default::default()
            };
            let mut e = CudaEngine::synthetic("tiny", 3, [0; 4], None, opts)?;
            e.forward(&context, Logits::Last)?;
            let kernels = e.attention_kernels(context.len(), context.len() + steps.len());
            let mut logits = Vec::new();
            for &t in &steps {
                e.step(t)?;
                logits.push(e.read_logits()?);
            }
            e.gpu.check()?;
            Ok((kernels, logits))
        })();
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(&k, v),
                None => std::env::remove_var(&k),
            }
        }
        res
    };
    let sfx = dt.suffix();
    let (k_base, base) = run(&[])?;
    let (k_tc, tc) = run(&[("DECDEC_ATTN_KERNEL", "tc")])?;
    let (_, tc_launch) = run(&[("DECDEC_ATTN_KERNEL", "tc"), ("DECDEC_ROPE_LAUNCH", "1")])?;
    let worst = base
        .iter()
        .zip(&tc)
        .map(|(b, t)| rel_err(t, b))
        .fold(0f64, f64::max);
    rep.add(
        format!("decode steps 600-605 synthetic:tiny, {k_tc} vs {k_base}: logits {sfx}"),
        worst,
        2e-2,
    );
    let mism: usize = tc
        .iter()
        .zip(&tc_launch)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        })
        .sum();
    rep.add(
        format!("decode steps 600-605 synthetic:tiny, {k_tc}: RoPE inside == rope_kv launch {sfx} (mismatches)"),
        mism as f64,
        0.0,
    );
    Ok(())
}
