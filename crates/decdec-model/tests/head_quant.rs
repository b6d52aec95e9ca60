//! `Model::quantize_head` (`--head-bits`) on the bundled stories260K: the CPU engine's logits come
//! from exactly the dequantized head the GPU streams, close to the full-precision ones at 8 bits,
//! and bad requests are refused with the flag named.

use decdec_model::{open, CpuEngine, Engine, LoadOptions, Logits};
use std::path::Path;
use std::sync::Arc;

fn stories() -> decdec_model::Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K");
    open(&dir, &LoadOptions::default()).unwrap().model
}

fn logits(model: decdec_model::Model, tokens: &[u32]) -> Vec<f32> {
    let mut e = CpuEngine::new(Arc::new(model), Some(64));
    e.forward(tokens, Logits::Last).unwrap()
}

#[test]
fn quantized_head_logits_are_the_dequantized_heads() {
    let tokens = [1u32, 403, 407, 261, 378, 500];
    let full = logits(stories(), &tokens);
    let mut m = stories();
    let (v, h) = (m.config.vocab_size, m.config.hidden_size);
    m.quantize_head(8).unwrap();
    let q = m.head_quant.clone().expect("quantized head");
    assert_eq!(
        (q.bits(), q.n(), q.k(), q.group_size()),
        (8, v, h, Some(64))
    );
    // the CPU head is exactly the dequantized codes (what the GPU kernels multiply by)
    assert_eq!(m.lm_head(), q.dequantize().as_slice());
    let got = logits(m, &tokens);
    let scale = full.iter().map(|x| x.abs()).fold(0f32, f32::max);
    let worst = full
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst > 0.0, "8-bit head changed no logit");
    assert!(
        worst < 2e-2 * scale,
        "8-bit head moved a logit by {worst} (max |logit| {scale})"
    );
    // 3 bits moves them much more
    let mut m3 = stories();
    m3.quantize_head(3).unwrap();
    let got3 = logits(m3, &tokens);
    let worst3 = full
        .iter()
        .zip(&got3)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst3 > 10.0 * worst, "3-bit {worst3} vs 8-bit {worst}");
}

#[test]
fn bad_head_requests_are_refused() {
    let mut m = stories();
    let e = m.quantize_head(5).unwrap_err().to_string();
    assert!(e.contains("--head-bits 5"), "{e}");
    assert!(m.head_quant.is_none());
    m.quantize_head(4).unwrap();
    let e = m.quantize_head(8).unwrap_err().to_string();
    assert!(e.contains("already quantized"), "{e}");
}
