//! GPU checks of the salient-channel selection (`select_chunk_vals` in kernels/select.cuh, run
//! through `select_only`) against `select_bucket` on inputs built to stress it: whole chunks in one
//! bucket (the boundary bucket decides by channel order alone), a few repeated magnitudes, NaN,
//! values above the top anchor, zeros, and short last chunks; budgets from 1 to 64. Indices and
//! values must match exactly.

use anyhow::Result;
use decdec_core::selection;
use rand::rngs::StdRng;
use rand::Rng;

use super::{randn, sel_request, thresholds_like, upload_act, Report};
use crate::gpu::{Dtype, Gpu};
use crate::kargs;

/// The test vectors: (name, values) for `k` channels.
fn cases(rng: &mut StdRng, k: usize) -> Vec<(&'static str, Vec<f32>)> {
    let normal: Vec<f32> = (0..k).map(|_| randn(rng)).collect();
    let ties: Vec<f32> = (0..k)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let levels = [0.0f32, 0.25, 0.5, 1.0, 2.0, 40.0];
    let few: Vec<f32> = (0..k)
        .map(|_| {
            let v = levels[rng.random_range(0..levels.len())];
            if rng.random::<bool>() {
                -v
            } else {
                v
            }
        })
        .collect();
    let mut odd: Vec<f32> = (0..k).map(|_| randn(rng) * 0.1).collect();
    for _ in 0..k / 50 {
        let i = rng.random_range(0..k);
        odd[i] = match rng.random_range(0..3) {
            0 => f32::NAN,
            1 => 500.0 * randn(rng).signum(),
            _ => 0.0,
        };
    }
    vec![
        ("normal", normal),
        ("one magnitude", ties),
        ("few magnitudes", few),
        ("NaN/huge/zero", odd),
    ]
}

pub(super) fn selection_checks(
    gpu: &Gpu,
    dt: Dtype,
    rng: &mut StdRng,
    rep: &mut Report,
) -> Result<()> {
    let sfx = dt.suffix();
    for k in [1024usize, 2500, 4096] {
        let th = thresholds_like(rng, k, 1.0);
        for (name, x) in cases(rng, k) {
            let (xb, xr) = upload_act(gpu, dt, &x)?;
            let (mut idx_bad, mut val_bad, mut n_checked) = (0usize, 0usize, 0usize);
            for k_chunk in [1usize, 2, 3, 4, 5, 8, 15, 16, 17, 32, 64] {
                let (si, sv, sa) = sel_request(gpu, &th, k_chunk)?;
                let ki = k as i32;
                unsafe {
                    gpu.launch(
                        &format!("select_only_{sfx}"),
                        (k as u32).div_ceil(1024),
                        256,
                        0,
                        kargs![&xb.ptr, &ki, &sa],
                    )?
                };
                gpu.check()?;
                let mut rows = Vec::new();
                selection::select_bucket(&xr, &th, k_chunk, &mut rows);
                let gidx: Vec<u32> = gpu.read_raw(si.ptr, rows.len())?;
                let gval: Vec<f32> = gpu.read_raw(sv.ptr, rows.len())?;
                idx_bad += gidx.iter().zip(&rows).filter(|(a, b)| a != b).count();
                // the value of a selected channel, bit for bit (NaN included)
                val_bad += gval
                    .iter()
                    .zip(&rows)
                    .filter(|(v, &r)| v.to_bits() != xr[r as usize].to_bits())
                    .count();
                n_checked += rows.len();
            }
            rep.add(
                format!("selection {name} K={k} k_chunk 1..64 == select_bucket ({n_checked} channels) {sfx}"),
                (idx_bad + val_bad) as f64,
                0.0,
            );
        }
    }
    Ok(())
}
