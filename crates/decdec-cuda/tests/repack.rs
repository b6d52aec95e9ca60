//! The tiled GPU layout is a bijection of the canonical codes (CPU-only, runs in CI).

use decdec_cuda::repack::{self, TiledShape, UniformRef};
use rand::{Rng, SeedableRng};

#[test]
fn tiled_slots_are_a_bijection() {
    for bits in [3u32, 4] {
        let shape = TiledShape::new(bits, 16, 256, 128).unwrap();
        let mut seen = std::collections::HashSet::new();
        for r in 0..16 {
            for kk in 0..256 {
                let (lane, slots) = repack::slot_of(bits, r, kk);
                for &(w, bit) in slots.iter().take(bits as usize) {
                    assert!(w < shape.lane_words() && bit < 32);
                    assert!(
                        seen.insert((lane, w, bit)),
                        "bit ({lane},{w},{bit}) used twice"
                    );
                }
            }
        }
        // every bit of the lane words is used exactly once
        assert_eq!(seen.len(), 32 * shape.lane_words() * 32);
    }
}

#[test]
fn uniform_round_trips_through_the_tiled_layout() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (bits, n, k, gs) in [
        (3u32, 37usize, 600usize, 128usize),
        (4, 16, 256, 64),
        (3, 50, 1000, 32),
        (4, 9, 70, 256),
    ] {
        let codes: Vec<u8> = (0..n * k)
            .map(|_| rng.random_range(0..(1u32 << bits)) as u8)
            .collect();
        let qweight = decdec_core::quant::pack::pack(&codes, n, k, bits).unwrap();
        let ng = k.div_ceil(gs);
        let scales: Vec<f32> = (0..n * ng)
            .map(|_| rng.random_range(0.001f32..0.1))
            .collect();
        let zeros: Vec<u8> = (0..n * ng)
            .map(|_| rng.random_range(0..(1u32 << bits)) as u8)
            .collect();
        let q = UniformRef {
            bits,
            group_size: gs,
            n,
            k,
            qweight: &qweight,
            scales: &scales,
            zeros: &zeros,
        };
        let (shape, qw, sz) = repack::tile_uniform(&q).unwrap();
        for row in 0..n {
            for col in 0..k {
                assert_eq!(
                    repack::canonical_code(&qweight, k, bits, row, col),
                    codes[row * k + col] as u32
                );
                assert_eq!(
                    repack::code_from_tiled(&shape, &qw, row, col),
                    codes[row * k + col] as u32,
                    "({row},{col})"
                );
            }
            for g in 0..ng {
                let w = sz[repack::sz_index(&shape, row / 16, g, row % 16)];
                assert_eq!(w & 0xF, zeros[row * ng + g] as u32);
                let s = repack::unpack_scale(w);
                assert!((s - scales[row * ng + g]).abs() <= scales[row * ng + g] * 1e-5);
            }
        }
        // padding rows and columns hold code 0
        for row in n..shape.n_tiles * 16 {
            for col in 0..shape.kc * 256 {
                assert_eq!(repack::code_from_tiled(&shape, &qw, row, col), 0);
            }
        }
    }
}
