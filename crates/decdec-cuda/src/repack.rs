//! Repacking of the canonical quantized formats (docs/formats.md) into the tiled GPU layout that
//! `kernels/gemv.cu` decodes (layout described at the top of that file).
//!
//! The mapping of a (row, column) of W to its place in the tiled layout is defined once here, in
//! [`slot_of`]; [`code_from_tiled`] is its inverse, used by the round-trip tests.

use anyhow::{bail, Result};
use rayon::prelude::*;

pub const TILE: usize = 16;
pub const CHUNK: usize = 256;

/// Canonical uniform group-wise weights (see docs/formats.md), borrowed.
#[derive(Clone, Copy)]
pub struct UniformRef<'a> {
    pub bits: u32,
    pub group_size: usize,
    pub n: usize,
    pub k: usize,
    pub qweight: &'a [u32],
    pub scales: &'a [f32],
    pub zeros: &'a [u8],
}

/// Canonical per-output-channel LUT weights, borrowed.
#[derive(Clone, Copy)]
pub struct LutRef<'a> {
    pub bits: u32,
    pub n: usize,
    pub k: usize,
    pub qweight: &'a [u32],
    pub lut: &'a [f32],
}

/// Canonical 4-bit DEC residual, borrowed.
#[derive(Clone, Copy)]
pub struct ResidualRef<'a> {
    pub bits: u32,
    pub n: usize,
    pub k: usize,
    /// `[K, words_per_row]`, one input channel's row contiguous across output channels
    pub residual: &'a [u32],
    pub scales: &'a [f32],
}

pub fn canonical_words_per_row(k: usize, bits: u32) -> usize {
    k.div_ceil(32) * bits as usize
}

/// Code of W[row, col] in the canonical packed stream.
#[inline]
pub fn canonical_code(qweight: &[u32], k: usize, bits: u32, row: usize, col: usize) -> u32 {
    let wpr = canonical_words_per_row(k, bits);
    let base = row * wpr + (col / 32) * bits as usize;
    let bit = (col % 32) * bits as usize;
    let (w, o) = (base + bit / 32, bit % 32);
    let mask = (1u32 << bits) - 1;
    let mut v = qweight[w] >> o;
    if o + bits as usize > 32 {
        v |= qweight[w + 1] << (32 - o);
    }
    v & mask
}

/// Geometry of a tiled matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledShape {
    pub bits: u32,
    pub n: usize,
    pub k: usize,
    /// row tiles of 16
    pub n_tiles: usize,
    /// 256-column chunks
    pub kc: usize,
    /// group size (uniform) or 256 (LUT: one "group" per chunk)
    pub group_size: usize,
    /// groups per tile row, padded to whole chunks
    pub gp: usize,
}

impl TiledShape {
    pub fn new(bits: u32, n: usize, k: usize, group_size: usize) -> Result<TiledShape> {
        if bits != 3 && bits != 4 {
            bail!("the GPU GEMV supports 3- and 4-bit weights, not {bits}-bit");
        }
        if ![32, 64, 128, 256].contains(&group_size) {
            bail!("the GPU GEMV supports group sizes 32, 64, 128 and 256, not {group_size}");
        }
        if n == 0 || k == 0 {
            bail!("empty matrix {n}x{k}");
        }
        let kc = k.div_ceil(CHUNK);
        Ok(TiledShape {
            bits,
            n,
            k,
            n_tiles: n.div_ceil(TILE),
            kc,
            group_size,
            gp: kc * CHUNK / group_size,
        })
    }
    /// u32 words per (lane, chunk)
    pub fn lane_words(&self) -> usize {
        if self.bits == 4 {
            16
        } else {
            12
        }
    }
    /// uint4 per (lane, chunk)
    pub fn u4(&self) -> usize {
        self.lane_words() / 4
    }
    pub fn qw_words(&self) -> usize {
        self.n_tiles * self.kc * self.lane_words() * 32
    }
    pub fn sz_words(&self) -> usize {
        self.n_tiles * self.gp * TILE
    }
    /// Bytes the GEMV streams per call (codes + scale/zero words).
    pub fn stream_bytes(&self, lut: bool) -> usize {
        4 * self.qw_words()
            + if lut {
                self.n * (1 << self.bits) * 4
            } else {
                4 * self.sz_words()
            }
    }
}

/// Where code (row, col) of a tile lives: (lane, word index within the lane's chunk words, bit
/// positions of its bits). Returns (lane, [(word, bit)] for each of the `bits` code bits).
#[inline]
pub fn slot_of(bits: u32, r: usize, kk: usize) -> (usize, [(usize, usize); 4]) {
    // kk = column inside the 256-chunk, r = row inside the 16-row tile
    let sp = kk / 32;
    let rem = kk % 32;
    let tq = rem / 8;
    let q = rem % 8;
    let s = 2 * sp + q / 4;
    let j = q % 4;
    let e = j % 2; // low (0) or high (1) half of the register pair
    let g = r % 8;
    let reg = (r / 8) + 2 * (j / 2);
    let lane = g * 4 + tq;
    let mut out = [(0usize, 0usize); 4];
    if bits == 4 {
        let pos = reg * 4 + 16 * e;
        for (b, o) in out.iter_mut().enumerate() {
            *o = (s, pos + b);
        }
    } else {
        let unit = s / 4;
        let p = 4 * (s % 4) + reg;
        if p < 15 {
            let pos = 3 * (p % 5) + 16 * e;
            for (b, o) in out.iter_mut().take(3).enumerate() {
                *o = (3 * unit + p / 5, pos + b);
            }
        } else {
            for (b, o) in out.iter_mut().take(3).enumerate() {
                *o = (3 * unit + b, 15 + 16 * e);
            }
        }
    }
    (lane, out)
}

/// Index (in u32 words) of lane word `w` of (tile, chunk) in the interleaved uint4 layout
/// (chunk-major: the warps streaming chunk c of many tiles read one contiguous region).
#[inline]
pub fn word_index(shape: &TiledShape, tile: usize, chunk: usize, lane: usize, w: usize) -> usize {
    let u4 = shape.u4();
    (((chunk * shape.n_tiles + tile) * u4 + w / 4) * 32 + lane) * 4 + w % 4
}

/// Index of the scale|zero word of (tile, group, row in tile): group-major, so that the warps
/// streaming one chunk of many tiles read one contiguous region.
#[inline]
pub fn sz_index(shape: &TiledShape, tile: usize, group: usize, r: usize) -> usize {
    (group * shape.n_tiles + tile) * TILE + r
}

/// Tiled codes: `code(row, col)` gives the code of any in-range element.
pub fn tile_codes(shape: &TiledShape, code: impl Fn(usize, usize) -> u32 + Sync) -> Vec<u32> {
    // chunk-major: chunk c of every tile is one contiguous block of the buffer
    let chunk_words = shape.n_tiles * shape.lane_words() * 32;
    let mut qw = vec![0u32; shape.qw_words()];
    qw.par_chunks_mut(chunk_words)
        .enumerate()
        .for_each(|(c, out)| {
            for t in 0..shape.n_tiles {
                for r in 0..TILE {
                    let row = t * TILE + r;
                    if row >= shape.n {
                        continue;
                    }
                    for kk in 0..CHUNK {
                        let col = c * CHUNK + kk;
                        if col >= shape.k {
                            break;
                        }
                        let v = code(row, col);
                        let (lane, slots) = slot_of(shape.bits, r, kk);
                        for (b, &(w, bit)) in slots.iter().take(shape.bits as usize).enumerate() {
                            if (v >> b) & 1 == 1 {
                                out[word_index(shape, t, 0, lane, w)] |= 1 << bit;
                            }
                        }
                    }
                }
            }
        });
    qw
}

/// Inverse of [`tile_codes`] for one element (used by tests).
pub fn code_from_tiled(shape: &TiledShape, qw: &[u32], row: usize, col: usize) -> u32 {
    let (t, r) = (row / TILE, row % TILE);
    let (c, kk) = (col / CHUNK, col % CHUNK);
    let (lane, slots) = slot_of(shape.bits, r, kk);
    let mut v = 0;
    for (b, &(w, bit)) in slots.iter().take(shape.bits as usize).enumerate() {
        v |= ((qw[word_index(shape, t, c, lane, w)] >> bit) & 1) << b;
    }
    v
}

/// Scale word of the tiled layout: f32 scale with its low 4 mantissa bits replaced by the zero point.
#[inline]
pub fn pack_scale_zero(scale: f32, zero: u8) -> u32 {
    (scale.to_bits() & !0xF) | (zero as u32 & 0xF)
}

/// The scale the GPU actually uses for a packed word.
#[inline]
pub fn unpack_scale(w: u32) -> f32 {
    f32::from_bits(w & !0xF)
}

/// Uniform canonical -> (shape, tiled codes, tiled scale|zero words).
pub fn tile_uniform(q: &UniformRef) -> Result<(TiledShape, Vec<u32>, Vec<u32>)> {
    let shape = TiledShape::new(q.bits, q.n, q.k, q.group_size)?;
    let ng = q.k.div_ceil(q.group_size);
    let wpr = canonical_words_per_row(q.k, q.bits);
    if q.qweight.len() != q.n * wpr {
        bail!(
            "qweight has {} words, expected {} for {}x{} at {} bits",
            q.qweight.len(),
            q.n * wpr,
            q.n,
            q.k,
            q.bits
        );
    }
    if q.scales.len() != q.n * ng || q.zeros.len() != q.n * ng {
        bail!(
            "scales/zeros have {}/{} entries, expected {}",
            q.scales.len(),
            q.zeros.len(),
            q.n * ng
        );
    }
    if let Some(z) = q.zeros.iter().find(|&&z| z as u32 >= 1 << q.bits) {
        bail!("zero point {z} out of range for {} bits", q.bits);
    }
    let qw = tile_codes(&shape, |row, col| {
        canonical_code(q.qweight, q.k, q.bits, row, col)
    });
    let mut sz = vec![0u32; shape.sz_words()];
    for t in 0..shape.n_tiles {
        for gi in 0..ng.min(shape.gp) {
            for r in 0..TILE {
                let row = t * TILE + r;
                if row < q.n {
                    sz[sz_index(&shape, t, gi, r)] =
                        pack_scale_zero(q.scales[row * ng + gi], q.zeros[row * ng + gi]);
                }
            }
        }
    }
    Ok((shape, qw, sz))
}

/// LUT canonical -> (shape, tiled codes). The LUT itself is used as is (`[N][2^bits]` f32).
pub fn tile_lut(q: &LutRef) -> Result<(TiledShape, Vec<u32>)> {
    let shape = TiledShape::new(q.bits, q.n, q.k, 256)?;
    let wpr = canonical_words_per_row(q.k, q.bits);
    if q.qweight.len() != q.n * wpr {
        bail!(
            "qweight has {} words, expected {} for {}x{} at {} bits",
            q.qweight.len(),
            q.n * wpr,
            q.n,
            q.k,
            q.bits
        );
    }
    if q.lut.len() != q.n << q.bits {
        bail!(
            "lut has {} entries, expected {}",
            q.lut.len(),
            q.n << q.bits
        );
    }
    let qw = tile_codes(&shape, |row, col| {
        canonical_code(q.qweight, q.k, q.bits, row, col)
    });
    Ok((shape, qw))
}
