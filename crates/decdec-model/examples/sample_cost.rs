//! Cost of drawing one token from a Llama-3-sized vocabulary (128256 logits) on the CPU, which
//! `generate`/`serve` pay per token at temperature > 0 on every device:
//! `cargo run --release -p decdec-model --example sample_cost`. The checksums identify the drawn
//! tokens (equal before and after a change of the sampler's internals means equal draws).

use decdec_model::sampling::{Sampler, SamplingParams};

/// `n` logits: uniform in [-spread/2, spread/2), plus `peak` on every 9973rd token.
fn logits(n: usize, seed: u64, spread: f32, peak: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.5) * spread + if i % 9973 == 0 { peak } else { 0.0 }
        })
        .collect()
}

fn main() {
    let cases = [
        // a language model's shape: a few strong tokens over a broad background
        ("peaked", logits(128_256, 777, 8.0, 14.0)),
        // the worst case: no token stands out, the nucleus is most of the vocabulary
        ("flat", logits(128_256, 12345, 20.0, 0.0)),
    ];
    for (name, l) in &cases {
        for (t, k, p) in [(0.7f32, 0usize, 0.9f32), (0.7, 40, 0.9), (1.0, 0, 1.0)] {
            let params = SamplingParams {
                temperature: t,
                top_k: k,
                top_p: p,
                seed: 1,
            };
            let mut s = Sampler::new(params);
            let t0 = std::time::Instant::now();
            let draws = 50;
            let sum: u64 = (0..draws).map(|_| s.sample(l) as u64).sum();
            println!(
                "{name:<7} temperature {t} top_k {k:>2} top_p {p}: {:.3} ms per token (checksum {sum})",
                t0.elapsed().as_secs_f64() * 1e3 / draws as f64
            );
        }
    }
}
