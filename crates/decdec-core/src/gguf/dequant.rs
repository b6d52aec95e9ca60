//! Dequantization of ggml blocks to f32, following ggml's `dequantize_row_*`
//! (ggml-quants.c) and the block layouts of ggml-common.h.

use super::types::{GgmlType, QK_K};
use anyhow::{bail, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// Below this many elements a tensor is dequantized on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per rayon task (a multiple of every block size).
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// Dequantizes `n_elements` values of type `ty` stored in `bytes` (exactly
/// `n_elements / block_size * type_size` bytes) to f32, in ggml element order.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    let bs = ty.block_size();
    let ts = ty.type_size();
    if !n_elements.is_multiple_of(bs) {
        bail!("{n_elements} elements of type {ty} are not a whole number of {bs}-element blocks");
    }
    let need = (n_elements / bs).checked_mul(ts);
    if need != Some(bytes.len()) {
        bail!(
            "{n_elements} elements of type {ty} need {} bytes, got {}",
            need.map_or_else(|| "an overflowing number of".to_string(), |n| n.to_string()),
            bytes.len()
        );
    }
    let mut out = vec![0f32; n_elements];
    match ty {
        GgmlType::F32 => run::<1, 4>(bytes, &mut out, |b, y| y[0] = f32::from_le_bytes(*b)),
        GgmlType::F16 => run::<1, 2>(bytes, &mut out, |b, y| {
            y[0] = f16::from_le_bytes(*b).to_f32()
        }),
        GgmlType::Bf16 => run::<1, 2>(bytes, &mut out, |b, y| {
            y[0] = bf16::from_le_bytes(*b).to_f32()
        }),
        GgmlType::F64 => run::<1, 8>(bytes, &mut out, |b, y| y[0] = f64::from_le_bytes(*b) as f32),
        GgmlType::I8 => run::<1, 1>(bytes, &mut out, |b, y| y[0] = b[0] as i8 as f32),
        GgmlType::I16 => run::<1, 2>(bytes, &mut out, |b, y| y[0] = i16::from_le_bytes(*b) as f32),
        GgmlType::I32 => run::<1, 4>(bytes, &mut out, |b, y| y[0] = i32::from_le_bytes(*b) as f32),
        GgmlType::Q4_0 => run::<32, 18>(bytes, &mut out, block_q4_0),
        GgmlType::Q4_1 => run::<32, 20>(bytes, &mut out, block_q4_1),
        GgmlType::Q5_0 => run::<32, 22>(bytes, &mut out, block_q5_0),
        GgmlType::Q5_1 => run::<32, 24>(bytes, &mut out, block_q5_1),
        GgmlType::Q8_0 => run::<32, 34>(bytes, &mut out, block_q8_0),
        GgmlType::Q8_1 => run::<32, 36>(bytes, &mut out, block_q8_1),
        GgmlType::Q2K => run::<QK_K, 84>(bytes, &mut out, block_q2_k),
        GgmlType::Q3K => run::<QK_K, 110>(bytes, &mut out, block_q3_k),
        GgmlType::Q4K => run::<QK_K, 144>(bytes, &mut out, block_q4_k),
        GgmlType::Q5K => run::<QK_K, 176>(bytes, &mut out, block_q5_k),
        GgmlType::Q6K => run::<QK_K, 210>(bytes, &mut out, block_q6_k),
        _ => bail!("dequantizing ggml type {ty} is not supported"),
    }
    Ok(out)
}

/// Applies `f` to every (block bytes, block output) pair, over rayon tasks when the
/// tensor is large. `BS`/`TS` are the block's element count and byte size.
fn run<const BS: usize, const TS: usize>(
    bytes: &[u8],
    out: &mut [f32],
    f: impl Fn(&[u8; TS], &mut [f32; BS]) + Sync,
) {
    let blocks = |bytes: &[u8], out: &mut [f32]| {
        for (b, y) in bytes.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
            // chunks_exact guarantees the lengths, so these conversions cannot fail.
            if let (Ok(b), Ok(y)) = (<&[u8; TS]>::try_from(b), <&mut [f32; BS]>::try_from(y)) {
                f(b, y);
            }
        }
    };
    if out.len() < PARALLEL_MIN_ELEMENTS {
        blocks(bytes, out);
    } else {
        let task_blocks = ELEMENTS_PER_TASK / BS;
        out.par_chunks_mut(task_blocks * BS)
            .zip(bytes.par_chunks(task_blocks * TS))
            .for_each(|(y, b)| blocks(b, y));
    }
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

// block_q4_0 { half d; u8 qs[16] }: low nibbles are elements 0..16, high nibbles 16..32.
fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

// block_q4_1 { half d; half m; u8 qs[16] }: x = q * d + m.
fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

// block_q5_0 { half d; u8 qh[4]; u8 qs[16] }: bit j of qh is the 5th bit of element j.
fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

// block_q5_1 { half d; half m; u8 qh[4]; u8 qs[16] }: x = q * d + m.
fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
    }
}

// block_q8_0 { half d; i8 qs[32] }.
fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        y[j] = b[2 + j] as i8 as f32 * d;
    }
}

// block_q8_1 { half d; half s; i8 qs[32] }: s = d * sum(qs) is only used by dot
// products, the value is q * d.
fn block_q8_1(b: &[u8; 36], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        y[j] = b[4 + j] as i8 as f32 * d;
    }
}

// block_q2_K { u8 scales[16]; u8 qs[64]; half d; half dmin }: 16 sub-blocks of 16,
// scales[i] = scale (low nibble) | min (high nibble); 2-bit quants packed 4 per byte.
fn block_q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = half_at(b, 80);
    let dmin = half_at(b, 82);
    let mut is = 0;
    let mut out = 0;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0f) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[half * 16 + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d }: 16 sub-blocks of 16
// with 6-bit signed scales (offset 32); the 3rd quant bit lives in hmask, set meaning
// "no -4".
fn block_q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d_all = half_at(b, 108);
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0f } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i32 - 32;
    }
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let idx = half * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let sub = if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12-byte packed 6-bit scales of
/// Q4_K/Q5_K (ggml's `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128] }: 8 sub-blocks of 32;
// each 32-byte chunk of qs holds sub-block 2k (low nibbles) and 2k+1 (high nibbles).
fn block_q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for k in 0..4 {
        let q = &qs[k * 32..k * 32 + 32];
        let (s1, m1) = scale_min_k4(2 * k, scales);
        let (s2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let base = k * 64;
        for l in 0..32 {
            y[base + l] = d1 * (q[l] & 0x0f) as f32 - m1;
            y[base + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

// block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: like Q4_K
// with the 5th bit of sub-block s at bit s of qh[l].
fn block_q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for k in 0..4 {
        let q = &qs[k * 32..k * 32 + 32];
        let (s1, m1) = scale_min_k4(2 * k, scales);
        let (s2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * k), 1u8 << (2 * k + 1));
        let base = k * 64;
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[base + l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
            y[base + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d }: 16 sub-blocks of 16,
// 6-bit quants offset by 32 (low 4 bits in ql, high 2 bits in qh).
fn block_q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = half_at(b, 208);
    for n in 0..2 {
        let ql = &ql_all[n * 64..n * 64 + 64];
        let qh = &qh_all[n * 32..n * 32 + 32];
        let sc = &sc_all[n * 8..n * 8 + 8];
        let base = n * 128;
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[base + l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[base + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[base + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[base + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
