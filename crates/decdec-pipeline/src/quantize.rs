//! `decdec quantize`: calibration, base quantization (rtn / awq / lut, 2-8 bits or 3.5 = mixed 3/4
//! bits per layer), DEC residuals and thresholds, in memory. [`crate::artifact`] writes the result.
//!
//! Order of work:
//! 1. `rtn`, `lut`: one calibration pass over the original model gives every statistic.
//!    `awq`: a short first pass (`awq_samples` windows) gives mean |x| and a strided subsample of the
//!    inputs of every linear; the scales are searched and folded per layer; then the full pass runs
//!    on the *scaled* model, so thresholds and statistics are those of the scaled inputs `x / s` that
//!    the deployed linears see.
//! 2. Every decoder-layer linear is quantized (AWQ: clip search on the scaled weight, except q/k as in
//!    llm-awq); `--bits 3.5` quantizes each layer at 3 and at 4 bits and keeps 4 bits for the half of
//!    the layers with the largest measured sensitivity (KL(original ‖ layer at 3 bits) minus
//!    KL(original ‖ layer at 4 bits) of the next-token distribution on calibration text, as the
//!    original's `kl` bit-width map).
//! 3. Residual `R = W_ref − dequant(Q)` (W_ref = the scaled, unclipped weight for AWQ), encoded to
//!    `residual_bits`.

use crate::awq::{self, ScaleSearch};
use crate::calib::{self, Calibration};
use anyhow::{bail, ensure, Context, Result};
use decdec_core::quant::{
    clip_search, quantize_clipped, quantize_lut, quantize_rtn, QuantMethod, QuantWeight,
};
use decdec_core::residual::Residual;
use decdec_model::linear::{Linear, LinearWeight, Proj, ProjGroup};
use decdec_model::model::{KvCache, Layer, Logits, Model};
use decdec_model::Tokenizer;
use rayon::prelude::*;
use serde_json::json;
use std::str::FromStr;
use std::time::Instant;

/// Bits of the base weights: one width for every layer, or 3.5 (half the layers at 3, half at 4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BitsSpec {
    Uniform(u32),
    Mixed35,
}

impl BitsSpec {
    pub fn as_f64(self) -> f64 {
        match self {
            BitsSpec::Uniform(b) => b as f64,
            BitsSpec::Mixed35 => 3.5,
        }
    }
    /// Widths each layer is quantized at before the per-layer choice.
    pub fn options(self) -> Vec<u32> {
        match self {
            BitsSpec::Uniform(b) => vec![b],
            BitsSpec::Mixed35 => vec![3, 4],
        }
    }
}

impl FromStr for BitsSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "2" => Ok(BitsSpec::Uniform(2)),
            "3" => Ok(BitsSpec::Uniform(3)),
            "4" => Ok(BitsSpec::Uniform(4)),
            "8" => Ok(BitsSpec::Uniform(8)),
            "3.5" => Ok(BitsSpec::Mixed35),
            _ => bail!("--bits {s:?}: expected 2, 3, 3.5, 4 or 8"),
        }
    }
}

impl std::fmt::Display for BitsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BitsSpec::Uniform(b) => write!(f, "{b}"),
            BitsSpec::Mixed35 => f.write_str("3.5"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub method: QuantMethod,
    pub bits: BitsSpec,
    pub group_size: usize,
    pub residual_bits: u32,
    pub calib_samples: usize,
    pub calib_seq: usize,
    pub seed: u64,
    /// Windows of the short AWQ search pass.
    pub awq_samples: usize,
    /// Input rows per linear kept for the AWQ scale and clip searches.
    pub awq_rows: usize,
    /// Tokens of the 3.5-bit sensitivity measurement.
    pub sens_tokens: usize,
    pub progress: bool,
    /// Output projection quantized at load time (`--head-bits`; recorded in the manifest).
    pub head_bits: Option<u32>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            method: QuantMethod::Awq,
            bits: BitsSpec::Uniform(3),
            group_size: 128,
            residual_bits: 4,
            calib_samples: 128,
            calib_seq: 512,
            seed: 42,
            awq_samples: 16,
            awq_rows: 512,
            sens_tokens: 256,
            progress: true,
            head_bits: None,
        }
    }
}

impl QuantizeOptions {
    pub fn validate(&self) -> Result<()> {
        for b in self.bits.options() {
            decdec_core::quant::pack::check_bits(b).context("--bits")?;
        }
        if self.method == QuantMethod::Lut {
            ensure!(
                self.bits.options().iter().all(|b| (2..=4).contains(b)),
                "--method lut supports --bits 2, 3, 3.5 and 4 (a 2^bits-entry codebook per output channel)"
            );
        } else {
            ensure!(self.group_size > 0, "--group-size must be positive");
        }
        decdec_core::residual::check_residual_bits(self.residual_bits)
            .context("--residual-bits")?;
        ensure!(self.calib_samples > 0, "--calib-samples must be at least 1");
        ensure!(self.calib_seq >= 2, "--calib-seq must be at least 2");
        Ok(())
    }
}

/// One quantized linear with everything DEC needs.
pub struct QLinear {
    pub name: String,
    pub proj: Proj,
    pub q: QuantWeight,
    pub residual: Residual,
    pub bias: Option<Vec<f32>>,
    pub thresholds: Vec<f32>,
    pub act_mean: Vec<f32>,
    pub act_sq: Vec<f32>,
}

pub struct QLayer {
    pub bits: u32,
    pub input_norm: Vec<f32>,
    pub post_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down.
    pub linears: Vec<QLinear>,
}

pub struct QuantizedModel {
    pub layers: Vec<QLayer>,
    pub calib_tokens: usize,
    /// AWQ ratios and losses, 3.5-bit sensitivities, phase timings.
    pub details: serde_json::Value,
}

/// One layer quantized at one width, before residuals.
struct LayerCand {
    bits: u32,
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// Reference weights (scaled for AWQ), in `Layer::linears` order.
    w_ref: Vec<Vec<f32>>,
    q: Vec<QuantWeight>,
    info: serde_json::Value,
}

fn dense_of(l: &Linear) -> &[f32] {
    l.dense_weight()
}

fn quantize_uniform_linear(
    name: &str,
    w: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    g: usize,
    clip_rows: Option<(&[f32], usize)>,
) -> Result<QuantWeight> {
    let q = match clip_rows {
        Some((x, t)) if t > 0 => {
            let clip = clip_search(w, n, k, bits, g, x, t)
                .with_context(|| format!("{name}: clip search"))?;
            quantize_clipped(w, n, k, bits, g, &clip)?
        }
        _ => quantize_rtn(w, n, k, bits, g)?,
    };
    Ok(q.into())
}

/// q/k are not clipped (llm-awq skips query/key: their errors are amplified by the softmax).
fn clips(proj: Proj) -> bool {
    !matches!(proj, Proj::Q | Proj::K)
}

fn quantize_layer(
    layer: &Layer,
    bits: u32,
    opts: &QuantizeOptions,
    cal: &Calibration,
    li: usize,
) -> Result<LayerCand> {
    let lins = layer.linears();
    let mut w_ref: Vec<Vec<f32>> = lins.iter().map(|l| dense_of(l).to_vec()).collect();
    let mut input_norm = layer.input_norm.clone();
    let mut post_norm = layer.post_norm.clone();
    let g = opts.group_size;
    let mut info = json!({});
    // RTN and LUT quantize the weights as they are; AWQ rescales them first (below).
    let plain = match opts.method {
        QuantMethod::Rtn => Some(
            lins.iter()
                .zip(&w_ref)
                .map(|(l, w)| {
                    quantize_uniform_linear(
                        &l.name,
                        w,
                        l.out_features,
                        l.in_features,
                        bits,
                        g,
                        None,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        QuantMethod::Lut => Some(
            lins.iter()
                .zip(&w_ref)
                .map(|(l, w)| {
                    let sens = cal.stats(li, l.proj.group()).act_sq();
                    quantize_lut(w, l.out_features, l.in_features, bits, &sens)
                        .map(QuantWeight::from)
                        .with_context(|| l.name.clone())
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        QuantMethod::Awq => None,
    };
    if let Some(q) = plain {
        return Ok(LayerCand {
            bits,
            input_norm,
            post_norm,
            w_ref,
            q,
            info,
        });
    }
    // AWQ: search every group's scales on the original weights, then fold them all.
    let search = |group: ProjGroup, idx: &[usize]| -> Result<ScaleSearch> {
        let (x, t) = cal.sample_rows(li, group);
        let k = lins[idx[0]].in_features;
        let ws: Vec<(&[f32], usize)> = idx
            .iter()
            .map(|&i| (dense_of(lins[i]), lins[i].out_features))
            .collect();
        awq::search_scales(&ws, k, x, t, &cal.stats(li, group).act_mean(), bits, g)
            .with_context(|| format!("layer {li}: AWQ scale search for {}", group.name()))
    };
    let s_qkv = search(ProjGroup::Qkv, &[0, 1, 2])?;
    let s_gu = search(ProjGroup::GateUp, &[4, 5])?;
    let s_d = search(ProjGroup::Down, &[6])?;
    // v -> o only when v's outputs are o's inputs one to one (not with grouped-query attention).
    let s_o = if layer.v.out_features == layer.o.in_features {
        Some(search(ProjGroup::O, &[3])?)
    } else {
        None
    };
    let h = layer.q.in_features;
    for (a, s) in input_norm.iter_mut().zip(&s_qkv.scales) {
        *a /= s;
    }
    for w in &mut w_ref[..3] {
        awq::scale_columns(w, h, &s_qkv.scales);
    }
    for (a, s) in post_norm.iter_mut().zip(&s_gu.scales) {
        *a /= s;
    }
    awq::scale_columns(&mut w_ref[4], h, &s_gu.scales);
    awq::scale_columns(&mut w_ref[5], h, &s_gu.scales);
    awq::divide_rows(&mut w_ref[5], h, &s_d.scales);
    awq::scale_columns(&mut w_ref[6], layer.down.in_features, &s_d.scales);
    if let Some(so) = &s_o {
        awq::divide_rows(&mut w_ref[2], h, &so.scales);
        awq::scale_columns(&mut w_ref[3], layer.o.in_features, &so.scales);
    }
    let scales_of = |grp: ProjGroup| -> Option<&Vec<f32>> {
        match grp {
            ProjGroup::Qkv => Some(&s_qkv.scales),
            ProjGroup::GateUp => Some(&s_gu.scales),
            ProjGroup::Down => Some(&s_d.scales),
            ProjGroup::O => s_o.as_ref().map(|s| &s.scales),
        }
    };
    let mut q = Vec::with_capacity(7);
    for (l, w) in lins.iter().zip(&w_ref) {
        let grp = l.proj.group();
        let (x, t) = cal.sample_rows(li, grp);
        let xs;
        let rows = if clips(l.proj) {
            xs = match scales_of(grp) {
                Some(s) => awq::divide_columns(x, l.in_features, s),
                None => x.to_vec(),
            };
            Some((&xs[..], t))
        } else {
            None
        };
        q.push(quantize_uniform_linear(
            &l.name,
            w,
            l.out_features,
            l.in_features,
            bits,
            g,
            rows,
        )?);
    }
    let desc = |s: &ScaleSearch| json!({"ratio": s.ratio, "loss": s.loss, "loss_rtn": s.loss_rtn});
    info = json!({
        "qkv": desc(&s_qkv),
        "gate_up": desc(&s_gu),
        "down": desc(&s_d),
        "o": s_o.as_ref().map(desc),
    });
    Ok(LayerCand {
        bits,
        input_norm,
        post_norm,
        w_ref,
        q,
        info,
    })
}

/// Replaces a layer's norms and dense weights, returning the previous ones.
fn swap_layer(
    layer: &mut Layer,
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    weights: Vec<Vec<f32>>,
) -> (Vec<f32>, Vec<f32>, Vec<LinearWeight>) {
    let a = std::mem::replace(&mut layer.input_norm, input_norm);
    let b = std::mem::replace(&mut layer.post_norm, post_norm);
    let old = layer
        .linears_mut()
        .into_iter()
        .zip(weights)
        .map(|(l, w)| std::mem::replace(&mut l.weight, LinearWeight::Dense(w)))
        .collect();
    (a, b, old)
}

fn restore_layer(layer: &mut Layer, saved: (Vec<f32>, Vec<f32>, Vec<LinearWeight>)) {
    layer.input_norm = saved.0;
    layer.post_norm = saved.1;
    for (l, w) in layer.linears_mut().into_iter().zip(saved.2) {
        l.weight = w;
    }
}

fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    out.par_chunks_mut(vocab).for_each(|row| {
        let lse = decdec_core::ops::log_sum_exp(row) as f32;
        for v in row {
            *v -= lse;
        }
    });
    out
}

/// KL(original ‖ model with only layer `i` replaced by candidate `o`), for every layer and option.
fn kl_sensitivity(
    model: &mut Model,
    tokens: &[u32],
    cands: &[Vec<LayerCand>],
    progress: bool,
) -> Result<Vec<Vec<f64>>> {
    let vocab = model.config.vocab_size;
    let mut kv = KvCache::new(&model.config, tokens.len());
    let ref_lp = log_softmax_rows(&model.forward(tokens, &mut kv, Logits::All, None)?, vocab);
    let nl = model.layers.len();
    let bar = if progress {
        decdec_model::progress::bar((nl * cands.len()) as u64, "sensitivity")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut out = vec![vec![0f64; nl]; cands.len()];
    for (oi, opt) in cands.iter().enumerate() {
        for (li, c) in opt.iter().enumerate() {
            let deq: Vec<Vec<f32>> = c.q.iter().map(QuantWeight::dequantize).collect();
            let saved = swap_layer(
                &mut model.layers[li],
                c.input_norm.clone(),
                c.post_norm.clone(),
                deq,
            );
            kv.truncate(0);
            let res = model.forward(tokens, &mut kv, Logits::All, None);
            restore_layer(&mut model.layers[li], saved);
            let lp = log_softmax_rows(&res?, vocab);
            let kl: f64 = ref_lp
                .par_chunks(vocab)
                .zip(lp.par_chunks(vocab))
                .map(|(p, q)| {
                    p.iter()
                        .zip(q)
                        .map(|(&a, &b)| (a.exp() as f64) * (a as f64 - b as f64))
                        .sum::<f64>()
                })
                .sum();
            out[oi][li] = kl / tokens.len() as f64;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Quantizes `model` (which must hold the original dense weights). For AWQ the model is left holding
/// the scaled dense weights. `pre` may supply a full calibration of this same model with thresholds
/// (used by `rtn` and `lut` only; quality sweeps share one).
pub fn quantize_model(
    model: &mut Model,
    tokenizer: &Tokenizer,
    corpus: &str,
    opts: &QuantizeOptions,
    pre: Option<&Calibration>,
) -> Result<QuantizedModel> {
    opts.validate()?;
    let t0 = Instant::now();
    let mut timings = serde_json::Map::new();
    fn lap(timings: &mut serde_json::Map<String, serde_json::Value>, name: &str, t: &mut Instant) {
        timings.insert(name.to_string(), json!(t.elapsed().as_secs_f64()));
        *t = Instant::now();
    }
    let mut t = Instant::now();
    let windows = calib::windows(
        tokenizer,
        corpus,
        opts.calib_samples,
        opts.calib_seq,
        opts.seed,
    )?;
    let nl = model.layers.len();
    let awq = opts.method == QuantMethod::Awq;
    let own;
    let first: &Calibration = if awq {
        let n = opts.awq_samples.min(windows.len()).max(1);
        own = calib::calibrate(
            model,
            &windows[..n],
            false,
            opts.awq_rows,
            "awq calib",
            opts.progress,
        )?;
        &own
    } else if let Some(p) = pre {
        ensure!(
            p.layers.len() == nl && p.layers[0][0].thresholds.len() == model.config.hidden_size,
            "the shared calibration does not belong to this model"
        );
        p
    } else {
        own = calib::calibrate(model, &windows, true, 0, "calibrate", opts.progress)?;
        &own
    };
    lap(&mut timings, "calibration_pass1_s", &mut t);
    let options = opts.bits.options();
    let bar = if opts.progress {
        decdec_model::progress::bar((nl * options.len()) as u64, "quantize")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut cands: Vec<Vec<LayerCand>> = Vec::new();
    for &b in &options {
        let mut per = Vec::with_capacity(nl);
        for li in 0..nl {
            per.push(quantize_layer(&model.layers[li], b, opts, first, li)?);
            bar.inc(1);
        }
        cands.push(per);
    }
    bar.finish_and_clear();
    lap(&mut timings, "quantize_s", &mut t);
    // Choose the width of every layer.
    let mut choice = vec![0usize; nl];
    let mut sens_info = serde_json::Value::Null;
    if cands.len() == 2 {
        let seq = windows[0].len().min(opts.sens_tokens.max(2));
        let kl = kl_sensitivity(model, &windows[0][..seq], &cands, opts.progress)?;
        let gain: Vec<f64> = (0..nl).map(|i| kl[0][i] - kl[1][i]).collect();
        let mut order: Vec<usize> = (0..nl).collect();
        order.sort_by(|&a, &b| gain[b].total_cmp(&gain[a]).then(a.cmp(&b)));
        for &i in order.iter().take(nl / 2) {
            choice[i] = 1;
        }
        sens_info = json!({"kl_3bit": kl[0], "kl_4bit": kl[1], "tokens": seq,
            "rule": "4 bits for the floor(layers/2) layers with the largest KL(3-bit) - KL(4-bit)"});
        lap(&mut timings, "sensitivity_s", &mut t);
    }
    let mut chosen: Vec<LayerCand> = Vec::with_capacity(nl);
    for (li, c) in choice.iter().enumerate() {
        let cand = std::mem::replace(
            &mut cands[*c][li],
            LayerCand {
                bits: 0,
                input_norm: vec![],
                post_norm: vec![],
                w_ref: vec![],
                q: vec![],
                info: json!(null),
            },
        );
        chosen.push(cand);
    }
    drop(cands);
    // Statistics of the inputs the deployed linears see.
    let full_own;
    let full: &Calibration = if awq {
        for (li, c) in chosen.iter().enumerate() {
            let _ = swap_layer(
                &mut model.layers[li],
                c.input_norm.clone(),
                c.post_norm.clone(),
                c.w_ref.clone(),
            );
        }
        full_own = calib::calibrate(model, &windows, true, 0, "thresholds", opts.progress)?;
        lap(&mut timings, "calibration_pass2_s", &mut t);
        &full_own
    } else {
        first
    };
    let bar = if opts.progress {
        decdec_model::progress::bar(nl as u64, "residuals")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut layers = Vec::with_capacity(nl);
    let mut layer_info = Vec::with_capacity(nl);
    for (li, c) in chosen.into_iter().enumerate() {
        let src = &model.layers[li];
        let mut linears = Vec::with_capacity(7);
        for ((l, w), q) in src.linears().iter().zip(c.w_ref).zip(c.q) {
            let (n, k) = (l.out_features, l.in_features);
            let mut r = q.dequantize();
            for (a, b) in r.iter_mut().zip(&w) {
                *a = b - *a;
            }
            let residual = Residual::encode(&r, n, k, opts.residual_bits)
                .with_context(|| format!("{}: residual", l.name))?;
            let st = full.stats(li, l.proj.group());
            linears.push(QLinear {
                name: l.name.clone(),
                proj: l.proj,
                q,
                residual,
                bias: l.bias.clone(),
                thresholds: st.thresholds.clone(),
                act_mean: st.act_mean(),
                act_sq: st.act_sq(),
            });
        }
        layer_info.push(json!({"bits": c.bits, "awq": c.info}));
        layers.push(QLayer {
            bits: c.bits,
            input_norm: c.input_norm,
            post_norm: c.post_norm,
            linears,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    lap(&mut timings, "residuals_s", &mut t);
    timings.insert("total_s".into(), json!(t0.elapsed().as_secs_f64()));
    Ok(QuantizedModel {
        layers,
        calib_tokens: full.tokens,
        details: json!({
            "layers": layer_info,
            "mixed_precision": sens_info,
            "timings": timings,
            "awq_search_windows": if awq { json!(opts.awq_samples.min(windows.len()).max(1)) } else { json!(null) },
            "awq_search_rows": if awq { json!(opts.awq_rows) } else { json!(null) },
        }),
    })
}
