//! Packed code storage (`qweight`) shared by the uniform and LUT formats.
//!
//! Layout (docs/formats.md, "Packed codes"): every output row holds `k_pad = ceil(K/32)*32` codes
//! (padding codes are 0), grouped in 32-code blocks. A block is `bits` consecutive `u32` words that form a
//! little-endian bit stream of `32*bits` bits; code `i` of the block sits at stream bits
//! `[i*bits, (i+1)*bits)`, LSB first, so for 3 bits a code may straddle two words.
//! `qweight` is `u32[N, words_per_row]` with `words_per_row = (k_pad/32) * bits`.

use anyhow::{bail, ensure, Result};

/// Codes per block: one block is `bits` words.
pub const BLOCK: usize = 32;

/// Code widths the packed format supports.
pub const SUPPORTED_BITS: [u32; 4] = [2, 3, 4, 8];

/// Error unless `bits` is one of [`SUPPORTED_BITS`].
pub fn check_bits(bits: u32) -> Result<()> {
    if !SUPPORTED_BITS.contains(&bits) {
        bail!("unsupported weight bit width {bits} (supported: 2, 3, 4, 8)");
    }
    Ok(())
}

/// `K` rounded up to a whole number of 32-code blocks.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

/// `u32` words per packed output row.
pub fn words_per_row(k: usize, bits: u32) -> usize {
    k.div_ceil(BLOCK) * bits as usize
}

/// Packs one row of `codes.len()` codes into `out` (exactly `words_per_row(codes.len(), bits)` words).
/// Codes must be `< 2^bits` (only the low `bits` bits are kept).
pub fn pack_row(codes: &[u8], bits: u32, out: &mut [u32]) {
    assert_eq!(
        out.len(),
        words_per_row(codes.len(), bits),
        "pack_row: output length"
    );
    out.fill(0);
    let b = bits as usize;
    let mask = (1u32 << bits) - 1;
    for (i, &c) in codes.iter().enumerate() {
        let c = c as u32 & mask;
        let p = (i % BLOCK) * b; // bit position inside the block's stream
        let w = (i / BLOCK) * b + p / 32;
        let o = p % 32;
        out[w] |= c << o;
        if o + b > 32 {
            out[w + 1] |= c >> (32 - o);
        }
    }
}

/// Unpacks the 32 codes of one block (`words` holds at least `bits` words).
#[inline]
pub fn unpack_block(words: &[u32], bits: u32, out: &mut [u8; BLOCK]) {
    match bits {
        2 => unpack_block_n::<2>(words, out),
        3 => unpack_block_n::<3>(words, out),
        4 => unpack_block_n::<4>(words, out),
        _ => unpack_block_n::<8>(words, out),
    }
}

/// [`unpack_block`] for a bit width known at compile time (`B` in 2, 3, 4, 8), fully unrolled.
#[inline(always)]
pub fn unpack_block_n<const B: usize>(words: &[u32], out: &mut [u8; BLOCK]) {
    let words = &words[..B];
    let mask = (1u32 << B) - 1;
    if 32 % B == 0 {
        // No code straddles a word.
        for (i, o) in out.iter_mut().enumerate() {
            *o = ((words[i * B / 32] >> ((i * B) % 32)) & mask) as u8;
        }
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            let p = i * B;
            let (w, sh) = (p / 32, p % 32);
            let mut v = words[w] >> sh;
            if sh + B > 32 {
                v |= words[w + 1] << (32 - sh);
            }
            *o = (v & mask) as u8;
        }
    }
}

/// Unpacks the first `out.len()` codes of one packed row.
pub fn unpack_row(words: &[u32], bits: u32, out: &mut [u8]) {
    let b = bits as usize;
    assert!(
        words.len() >= words_per_row(out.len(), bits),
        "unpack_row: row too short"
    );
    let mut block = [0u8; BLOCK];
    for (bi, chunk) in out.chunks_mut(BLOCK).enumerate() {
        unpack_block(&words[bi * b..(bi + 1) * b], bits, &mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Packs `codes: u8[n, k]` (row-major) into `qweight: u32[n, words_per_row(k, bits)]`.
pub fn pack(codes: &[u8], n: usize, k: usize, bits: u32) -> Result<Vec<u32>> {
    check_bits(bits)?;
    ensure!(
        codes.len() == n * k,
        "pack: {} codes given for a [{n}, {k}] matrix",
        codes.len()
    );
    let maxq = (1u32 << bits) - 1;
    if let Some(c) = codes.iter().find(|&&c| c as u32 > maxq) {
        bail!("pack: code {c} does not fit in {bits} bits");
    }
    let wpr = words_per_row(k, bits);
    let mut out = vec![0u32; n * wpr];
    if k > 0 {
        for (row, dst) in codes.chunks(k).zip(out.chunks_mut(wpr)) {
            pack_row(row, bits, dst);
        }
    }
    Ok(out)
}

/// Unpacks `qweight: u32[n, words_per_row(k, bits)]` into `u8[n, k]` codes.
pub fn unpack(qweight: &[u32], n: usize, k: usize, bits: u32) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let wpr = words_per_row(k, bits);
    ensure!(
        qweight.len() == n * wpr,
        "unpack: qweight has {} words, expected [{n}, {wpr}] for K = {k} at {bits} bits",
        qweight.len()
    );
    let mut out = vec![0u8; n * k];
    if k > 0 {
        for (row, dst) in qweight.chunks(wpr).zip(out.chunks_mut(k)) {
            unpack_row(row, bits, dst);
        }
    }
    Ok(out)
}

/// The code at (`row`, `col`) of a packed matrix with `words_per_row` words per row.
#[inline]
pub fn code_at(qweight: &[u32], words_per_row: usize, bits: u32, row: usize, col: usize) -> u8 {
    let b = bits as usize;
    let p = (col % BLOCK) * b;
    let w = row * words_per_row + (col / BLOCK) * b + p / 32;
    let o = p % 32;
    let mut v = qweight[w] >> o;
    if o + b > 32 {
        v |= qweight[w + 1] << (32 - o);
    }
    (v & ((1u32 << bits) - 1)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Independent reference: builds the bit stream bit by bit.
    fn reference_bit(codes_row: &[u8], bits: u32, word: usize, bit: usize) -> u32 {
        let b = bits as usize;
        let block = word / b;
        let stream_bit = (word % b) * 32 + bit;
        let i = block * BLOCK + stream_bit / b;
        let c = codes_row.get(i).copied().unwrap_or(0) as u32;
        (c >> (stream_bit % b)) & 1
    }

    #[test]
    fn round_trip_all_widths_and_odd_shapes() {
        let mut rng = StdRng::seed_from_u64(7);
        for &bits in &SUPPORTED_BITS {
            for &(n, k) in &[
                (1usize, 1usize),
                (3, 31),
                (5, 32),
                (7, 33),
                (9, 100),
                (13, 1057),
                (2, 0),
            ] {
                let maxq = (1u32 << bits) - 1;
                let codes: Vec<u8> = (0..n * k)
                    .map(|_| rng.random_range(0..=maxq) as u8)
                    .collect();
                let q = pack(&codes, n, k, bits).unwrap();
                let wpr = words_per_row(k, bits);
                assert_eq!(q.len(), n * wpr);
                assert_eq!(wpr * 32, padded_k(k) * bits as usize);
                // Bit-exact against the stream definition, including zero padding.
                for r in 0..n {
                    for w in 0..wpr {
                        for bit in 0..32 {
                            let got = (q[r * wpr + w] >> bit) & 1;
                            let want = reference_bit(&codes[r * k..(r + 1) * k], bits, w, bit);
                            assert_eq!(
                                got, want,
                                "bits {bits} n {n} k {k} row {r} word {w} bit {bit}"
                            );
                        }
                    }
                }
                assert_eq!(unpack(&q, n, k, bits).unwrap(), codes);
                for r in 0..n {
                    for c in 0..k {
                        assert_eq!(code_at(&q, wpr, bits, r, c), codes[r * k + c]);
                    }
                }
            }
        }
    }

    #[test]
    fn three_bit_codes_straddle_words() {
        // Code 10 of a 3-bit block covers stream bits 30..33: bits 30-31 of word 0 and bit 0 of word 1.
        let mut codes = vec![0u8; 32];
        codes[10] = 0b101;
        let q = pack(&codes, 1, 32, 3).unwrap();
        assert_eq!(q, vec![0b01 << 30, 0b1, 0]);
        assert_eq!(code_at(&q, 3, 3, 0, 10), 0b101);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pack(&[0; 4], 1, 4, 5).is_err());
        assert!(pack(&[4], 1, 1, 2).is_err());
        assert!(pack(&[0; 3], 1, 4, 2).is_err());
        assert!(unpack(&[0; 3], 1, 32, 4).is_err());
    }
}
