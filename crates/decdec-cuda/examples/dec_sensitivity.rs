//! How sensitive is the CPU reference's perplexity with compensation to tiny changes of the
//! activations? (docs/performance.md, experiment 52.) DEC's salient-channel selection is a
//! discontinuous function of x: a channel that crosses a bucket floor adds or drops a whole residual
//! row. This scales every RMSNorm weight by (1 + delta * u), u uniform in [-1, 1] (a change of the
//! linears' inputs of the size of the f16 rounding the GPU engine applies), and prints the relative
//! change of the CPU perplexity at each k_chunk: the noise floor of any GPU/CPU parity with DEC.
//!
//! `cargo run --release -p decdec-cuda --example dec_sensitivity -- MODEL TEXT CTX CHUNKS DELTA`
//! MODEL: a .gguf / Hugging Face model (quantized in process, RTN 3-bit g128 + 4-bit residuals, as
//! `gpu-test` does) or a `decdec quantize` directory. Env: `KCS=0,16,64` (k_chunk values), `SEED`.

use anyhow::{bail, Context, Result};
use decdec_core::selection::SelectMethod;
use decdec_cuda::parity::ppl_of;
use decdec_model::CpuEngine;
use std::path::Path;
use std::sync::Arc;

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        bail!("usage: dec_sensitivity MODEL TEXT CTX CHUNKS DELTA");
    }
    let path = Path::new(&a[1]);
    let text = decdec_model::ppl::read_text(Path::new(&a[2]))?;
    let ctx: usize = a[3].parse().context("CTX")?;
    let chunks: usize = a[4].parse().context("CHUNKS")?;
    let delta: f32 = a[5].parse().context("DELTA")?;
    let kcs: Vec<usize> = std::env::var("KCS")
        .unwrap_or_else(|_| "0,16,64".into())
        .split(',')
        .map(|v| v.parse().context("KCS"))
        .collect::<Result<_>>()?;
    let mut seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12345);
    let loaded = decdec_model::open(path, &Default::default())?;
    let ids = loaded.tokenizer.encode(&text, true)?;
    let mut model = loaded.model;
    if !decdec_model::quantized::is_quantized_dir(path) {
        let calib: Vec<u32> = ids.iter().copied().take(ctx.min(ids.len())).collect();
        decdec_cuda::parity::quantize_in_process(&mut model, &calib, 3)?;
    }
    let mut base = Vec::new();
    for pass in 0..2 {
        if pass == 1 {
            for l in model.layers.iter_mut() {
                for w in l.input_norm.iter_mut().chain(l.post_norm.iter_mut()) {
                    let u = (decdec_core::selection::splitmix64(&mut seed) >> 40) as f32
                        / (1u64 << 24) as f32;
                    *w *= 1.0 + delta * (2.0 * u - 1.0);
                }
            }
        }
        for (i, &kc) in kcs.iter().enumerate() {
            model.configure_dec([kc; 4], SelectMethod::Bucket, 0)?;
            let m = Arc::new(model);
            let v = ppl_of(&mut CpuEngine::new(m.clone(), Some(ctx)), &ids, ctx, chunks)?;
            model = Arc::try_unwrap(m).map_err(|_| anyhow::anyhow!("model still shared"))?;
            if pass == 0 {
                println!("k_chunk {kc:>3}: ppl {v:.4}");
                base.push(v);
            } else {
                let rel = (v - base[i]).abs() / base[i];
                println!("k_chunk {kc:>3}: ppl {v:.4} with norms x(1 +- {delta:e}): rel change {rel:.2e}");
            }
        }
    }
    Ok(())
}
