//! GPU vs CPU perplexity parity on a real model: the model as loaded (dense), then quantized in
//! process (RTN 3-bit g128, 4-bit residuals, calibrated thresholds) with and without compensation,
//! and with the head quantized at load time (`--head-bits 8`, `--head-bits 4`).

use anyhow::{bail, Result};
use decdec_core::quant::{quantize_rtn, QuantWeight};
use decdec_core::residual::Residual;
use decdec_core::selection::SelectMethod;
use decdec_model::linear::{DecLinear, ProjGroup};
use decdec_model::model::{LinearObserver, Logits, Model};
use decdec_model::{CpuEngine, Engine};

use crate::engine::{CudaEngine, CudaOptions};
use crate::gpu::Dtype;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityRow {
    pub variant: String,
    pub cpu_ppl: f64,
    pub gpu_ppl: f64,
    pub rel_diff: f64,
}

/// Largest (j+1)-th largest |x| per linear-group input, over the calibration tokens.
struct Thresholds {
    /// [layer][group] -> thresholds
    t: Vec<[Vec<f32>; 4]>,
}

impl LinearObserver for Thresholds {
    fn observe(&mut self, layer: usize, group: ProjGroup, x: &[f32], rows: usize) {
        let k = x.len() / rows;
        let slot = &mut self.t[layer][group.index()];
        if slot.is_empty() {
            slot.resize(k, 0.0);
        }
        for r in x.chunks_exact(k) {
            let mut a: Vec<f32> = r.iter().map(|v| v.abs()).collect();
            a.sort_by(|p, q| q.total_cmp(p));
            for (s, v) in slot.iter_mut().zip(a) {
                *s = s.max(v);
            }
        }
    }
}

/// Quantize every decoder linear in place (RTN, `bits`, g128) and attach 4-bit residuals and
/// thresholds calibrated on `calib` tokens.
pub fn quantize_in_process(model: &mut Model, calib: &[u32], bits: u32) -> Result<()> {
    let mut th = Thresholds {
        t: (0..model.layers.len())
            .map(|_| Default::default())
            .collect(),
    };
    let mut kv = decdec_model::model::KvCache::new(&model.config, calib.len());
    model.forward(calib, &mut kv, Logits::None, Some(&mut th))?;
    for (li, layer) in model.layers.iter_mut().enumerate() {
        for lin in layer.linears_mut() {
            let (n, k) = (lin.out_features, lin.in_features);
            let w = lin.dense_weight().to_vec();
            let q = quantize_rtn(&w, n, k, bits, 128)?;
            let deq = q.dequantize();
            let r: Vec<f32> = w.iter().zip(&deq).map(|(a, b)| a - b).collect();
            let res = Residual::encode(&r, n, k, 4)?;
            let t = th.t[li][lin.proj.group().index()].clone();
            if t.len() != k {
                bail!("calibration saw no input for {}", lin.name);
            }
            lin.set_quantized(QuantWeight::Uniform(q))?;
            lin.dec = Some(DecLinear::new(res, t, vec![1.0; k]));
        }
    }
    Ok(())
}

/// Perplexity of `ids` in `chunks` non-overlapping windows of `ctx` tokens (fresh cache per window).
pub fn ppl_of(engine: &mut dyn Engine, ids: &[u32], ctx: usize, chunks: usize) -> Result<f64> {
    let vocab = engine.config().vocab_size;
    let parts = decdec_model::ppl::chunks(ids, ctx, Some(chunks));
    if parts.is_empty() {
        bail!("text too short for one chunk of {ctx} tokens");
    }
    let (mut nll, mut n) = (0f64, 0usize);
    for c in parts {
        engine.truncate(0);
        let logits = engine.forward(c, Logits::All)?;
        nll += decdec_model::ppl::chunk_nll(&logits, c, vocab);
        n += c.len() - 1;
    }
    Ok((nll / n as f64).exp())
}

/// CPU and GPU perplexity of `model_dir` on `text` for: dense, 3-bit, 3-bit + DEC at `k_chunk`.
pub fn run(
    model_dir: &std::path::Path,
    text: &str,
    ctx: usize,
    chunks: usize,
    k_chunk: usize,
    dtype: Dtype,
) -> Result<Vec<ParityRow>> {
    let loaded = decdec_model::open(model_dir, &Default::default())?;
    let ids = loaded.tokenizer.encode(text, true)?;
    let mut model = loaded.model;
    let mut rows = Vec::new();
    let opts = CudaOptions {
        dtype,
        max_seq: ctx,
        ..Default::default()
    };
    let mut compare = |name: &str, model: std::sync::Arc<Model>| -> Result<()> {
        let mut cpu = CpuEngine::new(model.clone(), Some(ctx));
        let cpu_ppl = ppl_of(&mut cpu, &ids, ctx, chunks)?;
        let mut gpu = CudaEngine::from_model(&model, opts.clone())?;
        let gpu_ppl = ppl_of(&mut gpu, &ids, ctx, chunks)?;
        let again = ppl_of(&mut gpu, &ids, ctx, chunks)?;
        // the same chunks through the decode step, token by token (no batched prefill)
        let mut stepwise = CudaEngine::from_model(
            &model,
            CudaOptions {
                prefill_chunk: 0,
                ..opts.clone()
            },
        )?;
        let step_ppl = ppl_of(&mut stepwise, &ids, ctx, chunks)?;
        let rel = (gpu_ppl - cpu_ppl).abs() / cpu_ppl;
        let rel_step = (step_ppl - cpu_ppl).abs() / cpu_ppl;
        println!("ppl {name:<34} cpu {cpu_ppl:.4}  gpu {gpu_ppl:.4}  rel diff {rel:.2e}  (gpu rerun {again:.6}; token by token {step_ppl:.4}, rel diff {rel_step:.2e})");
        rows.push(ParityRow {
            variant: format!("{name} (batched prefill)"),
            cpu_ppl,
            gpu_ppl,
            rel_diff: rel,
        });
        rows.push(ParityRow {
            variant: format!("{name} (token by token)"),
            cpu_ppl,
            gpu_ppl: step_ppl,
            rel_diff: rel_step,
        });
        rows.push(ParityRow {
            variant: format!("{name}: GPU rerun bit-identical"),
            cpu_ppl: gpu_ppl,
            gpu_ppl: again,
            rel_diff: if again == gpu_ppl { 0.0 } else { 1.0 },
        });
        Ok(())
    };
    // dense model as loaded
    let dense = std::sync::Arc::new(std::mem::replace(
        &mut model,
        decdec_model::open(model_dir, &Default::default())?.model,
    ));
    compare("dense", dense)?;
    // `--head-bits 8`: the head through `head_u8_gemv` (decode step and prefill rows)
    let mut head8 = decdec_model::open(model_dir, &Default::default())?.model;
    head8.quantize_head(8)?;
    compare("dense, 8-bit head", std::sync::Arc::new(head8))?;
    let calib: Vec<u32> = ids.iter().copied().take(ctx.min(ids.len())).collect();
    quantize_in_process(&mut model, &calib, 3)?;
    model.configure_dec([0; 4], SelectMethod::Bucket, 0)?;
    let model = std::sync::Arc::new(model);
    compare("rtn 3-bit g128", model.clone())?;
    let mut m2 =
        std::sync::Arc::try_unwrap(model).map_err(|_| anyhow::anyhow!("model still shared"))?;
    m2.configure_dec([k_chunk; 4], SelectMethod::Bucket, 0)?;
    let m2 = std::sync::Arc::new(m2);
    compare(
        &format!("rtn 3-bit g128 + DEC k_chunk={k_chunk}"),
        m2.clone(),
    )?;
    let mut m3 =
        std::sync::Arc::try_unwrap(m2).map_err(|_| anyhow::anyhow!("model still shared"))?;
    m3.configure_dec([k_chunk / 4; 4], SelectMethod::Bucket, 0)?;
    let m3 = std::sync::Arc::new(m3);
    compare(
        &format!("rtn 3-bit g128 + DEC k_chunk={}", k_chunk / 4),
        m3.clone(),
    )?;
    // `--head-bits 4`: the head as the uniform GEMV (decode step) and per prefill row
    let mut m4 =
        std::sync::Arc::try_unwrap(m3).map_err(|_| anyhow::anyhow!("model still shared"))?;
    m4.quantize_head(4)?;
    compare(
        &format!("rtn 3-bit, 4-bit head + DEC k_chunk={}", k_chunk / 4),
        std::sync::Arc::new(m4),
    )?;
    Ok(rows)
}
