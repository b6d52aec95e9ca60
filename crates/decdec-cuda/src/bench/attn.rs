//! `decdec bench attention`: the decode step's attention kernels at given context lengths, the
//! way `bench kernels` times the GEMVs: median of CUDA-graph replays of 20 calls, each call on
//! its own copy of the K/V caches (copies totalling at least 3x the L2), random data, the bytes
//! that must be read (every K and V row of the context once) per second and against the copy
//! bandwidth. Kernels: the one-block kernel (`attn_decode`, while its scores fit), the CUDA-core
//! split kernel with one query head per block and with the automatic heads per block, and the
//! tensor-core split kernel (experiment 81); the one-block and tensor-core kernels also with RoPE
//! and the KV append inside, as the decode step runs them (`+rope`: compare those with the
//! CUDA-core kernel plus a rope_kv launch).

use anyhow::Result;
use serde::Serialize;

use super::{copies_for, time_graph};
use crate::engine::attn::{launch_single, single_plan, SplitAttn, SplitKind};
use crate::gpu::{DevBuf, Dtype, Gpu};
use crate::linear::{fill_act, SelArgs};

/// One timed kernel at one context length.
#[derive(Clone, Debug, Serialize)]
pub struct AttnRow {
    pub kernel: String,
    /// positions attended (the context, this step's included)
    pub len: usize,
    pub us: f64,
    /// K and V bytes of the context (each row once)
    pub bytes: usize,
    pub gbps: f64,
    pub pct_copy_bw: f64,
}

/// Attention shape: query heads, kv heads, head dimension.
pub type AttnShape = (usize, usize, usize);

/// The shape of a model name (`llama3-8b`, `phi3-medium`, `llama2-7b`) or `HEADS,KV,HEAD_DIM`.
pub fn parse_attn_shape(spec: &str) -> Result<AttnShape> {
    match spec {
        "llama3-8b" => Ok((32, 8, 128)),
        "phi3-medium" => Ok((40, 10, 128)),
        "llama2-7b" => Ok((32, 32, 128)),
        s => {
            let v: Vec<usize> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!("--shape '{s}': a model name or HEADS,KV_HEADS,HEAD_DIM")
                })?;
            match v[..] {
                [h, kv, d] if h > 0 && kv > 0 && h % kv == 0 && d > 0 && d % 2 == 0 => {
                    Ok((h, kv, d))
                }
                _ => anyhow::bail!(
                    "--shape '{s}': heads a positive multiple of kv heads, an even head dimension"
                ),
            }
        }
    }
}

/// The K/V caches of one call (`len` positions).
struct Caches {
    kc: DevBuf,
    vc: DevBuf,
}

/// Time every applicable kernel at every length of `lens` (`copy_gbps`: the device's copy
/// bandwidth, for the percentage).
pub fn run(
    gpu: &Gpu,
    dt: Dtype,
    (nh, nkv, hd): AttnShape,
    lens: &[usize],
    reps: usize,
    copy_gbps: f64,
) -> Result<Vec<AttnRow>> {
    let sfx = dt.suffix();
    let mut rows = Vec::new();
    let qkv_n = (nh + 2 * nkv) * hd;
    let qkv = gpu.alloc(qkv_n * 2 + 16)?;
    fill_act(gpu, dt, qkv.ptr, qkv_n, 7, -1.0, 1.0)?;
    let out = gpu.alloc(nh * hd * 2 + 16)?;
    let out32 = gpu.alloc(nh * hd * 4)?;
    let inv_freq: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let freq = gpu.upload(&inv_freq)?;
    let (nhi, nkvi, hdi) = (nh as i32, nkv as i32, hd as i32);
    let scale = 1.0 / (hd as f32).sqrt();
    let no_sel = SelArgs::default();
    let null = 0u64;
    for &len in lens {
        let len = len.max(1);
        let bytes = 2 * len * nkv * hd * 2;
        let copies = copies_for(gpu, bytes);
        let caches = (0..copies)
            .map(|c| -> Result<Caches> {
                let (kc, vc) = (gpu.alloc(bytes / 2 + 16)?, gpu.alloc(bytes / 2 + 16)?);
                fill_act(gpu, dt, kc.ptr, bytes / 4, 11 + 2 * c as u64, -1.0, 1.0)?;
                fill_act(gpu, dt, vc.ptr, bytes / 4, 12 + 2 * c as u64, -1.0, 1.0)?;
                Ok(Caches { kc, vc })
            })
            .collect::<Result<Vec<_>>>()?;
        let pos = gpu.upload(&[len as i32 - 1])?;
        let mut push = |kernel: String, us: f64| {
            let gbps = bytes as f64 / (us * 1e-6) / 1e9;
            println!(
                "attention {nh}/{nkv}x{hd} len {len:>6}  {kernel:<24} {us:>8.2} us  {gbps:>6.0} GB/s  {:>5.1}% of copy",
                100.0 * gbps / copy_gbps
            );
            rows.push(AttnRow {
                kernel,
                len,
                us,
                bytes,
                gbps,
                pct_copy_bw: 100.0 * gbps / copy_gbps,
            });
        };
        // the one-block kernel, while every score fits in its shared memory
        if let Ok(plan) = single_plan(hd, len, gpu.smem_optin, None) {
            for rope in [false, true] {
                let us = time_graph(gpu, reps, |i| {
                    let c = &caches[i % copies];
                    unsafe {
                        launch_single(
                            gpu,
                            sfx,
                            qkv.ptr,
                            c.kc.ptr,
                            c.vc.ptr,
                            (out.ptr, 0),
                            pos.ptr,
                            (nhi, nkvi, hdi),
                            scale,
                            &no_sel,
                            null,
                            plan,
                            rope.then_some(freq.ptr),
                        )
                    }
                })?;
                push(format!("one-block{}", if rope { "+rope" } else { "" }), us);
            }
        }
        if !SplitAttn::supports(hd) {
            continue;
        }
        let g = nh / nkv;
        let mut kinds = vec![SplitKind::Cuda(1)];
        if crate::engine::attn::heads_per_block(g) > 1 {
            kinds.push(SplitKind::Cuda(0));
        }
        if SplitAttn::supports_tc(hd, g) {
            kinds.push(SplitKind::TensorCores);
        }
        for kind in kinds {
            let sp = match SplitAttn::new(gpu, nh, nkv, hd, len, 0, kind) {
                Ok(sp) => sp,
                Err(e) => {
                    println!("attention len {len}: {kind:?} skipped: {e:#}");
                    continue;
                }
            };
            let ropes: &[bool] = if sp.fuses_rope() {
                &[false, true]
            } else {
                &[false]
            };
            for &rope in ropes {
                let us = time_graph(gpu, reps, |i| {
                    let c = &caches[i % copies];
                    unsafe {
                        sp.launch(
                            gpu,
                            sfx,
                            qkv.ptr,
                            c.kc.ptr,
                            c.vc.ptr,
                            out.ptr,
                            out32.ptr,
                            pos.ptr,
                            (nhi, nkvi, hdi),
                            scale,
                            &no_sel,
                            null,
                            rope.then_some(freq.ptr),
                        )
                    }
                })?;
                push(
                    format!("{}{}", sp.label(), if rope { "+rope" } else { "" }),
                    us,
                );
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_by_name_or_numbers_and_clear_errors() {
        assert_eq!(parse_attn_shape("llama3-8b").unwrap(), (32, 8, 128));
        assert_eq!(parse_attn_shape("9,3,64").unwrap(), (9, 3, 64));
        for bad in ["9,4,64", "8,2", "x", "8,2,7", "0,0,64"] {
            let e = parse_attn_shape(bad).unwrap_err().to_string();
            assert!(e.contains("--shape"), "{bad}: {e}");
        }
    }
}
