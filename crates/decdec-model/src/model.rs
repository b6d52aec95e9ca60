//! The decoder model on the CPU: weights by layer and the reference forward pass
//! (prefill and incremental decode over a KV cache, GQA, tied embeddings, f32 compute).

use crate::config::{Family, ModelConfig};
use crate::linear::{Linear, ProjGroup};
use crate::tensors::{Tensor, TensorMap};
use anyhow::{bail, Result};
use decdec_core::ops;
use rayon::prelude::*;

pub struct Layer {
    pub input_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub post_norm: Vec<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Layer {
    /// The seven linears in a fixed order (q, k, v, o, gate, up, down).
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

pub struct Model {
    pub config: ModelConfig,
    /// `[vocab, hidden]`
    pub embed: Vec<f32>,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// `[vocab, hidden]`; `None` when tied to `embed`. After [`Model::quantize_head`] it holds the
    /// dequantized head, so the CPU engine computes exactly what the quantized GEMV does.
    pub lm_head: Option<Vec<f32>>,
    /// The head quantized at load time (`--head-bits`); GPU engines stream it instead of f16.
    pub head_quant: Option<decdec_core::quant::QuantWeight>,
    pub inv_freq: Vec<f32>,
}

/// Sees the input of every linear group during a forward pass (calibration).
pub trait LinearObserver {
    fn observe(&mut self, layer: usize, group: ProjGroup, x: &[f32], rows: usize);
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logits {
    /// Only the last position: `[vocab]`.
    Last,
    /// Every position: `[tokens, vocab]`.
    All,
    /// None (calibration passes).
    None,
}

pub struct KvCache {
    /// Per layer `[capacity, kv_dim]`.
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub len: usize,
    pub capacity: usize,
    kv_dim: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Self {
        let kv_dim = cfg.kv_dim();
        KvCache {
            k: (0..cfg.num_layers)
                .map(|_| vec![0.0; capacity * kv_dim])
                .collect(),
            v: (0..cfg.num_layers)
                .map(|_| vec![0.0; capacity * kv_dim])
                .collect(),
            len: 0,
            capacity,
            kv_dim,
        }
    }
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }
}

fn take_vec(map: &mut TensorMap, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(map.take(name, shape)?.data)
}

fn take_linear(
    map: &mut TensorMap,
    name: &str,
    n: usize,
    k: usize,
    bias: bool,
    layer: usize,
    proj: crate::linear::Proj,
) -> Result<Linear> {
    let w = map.take(&format!("{name}.weight"), &[n, k])?;
    let b = if bias {
        Some(take_vec(map, &format!("{name}.bias"), &[n])?)
    } else {
        map.take_opt(&format!("{name}.bias"), &[n])?.map(|t| t.data)
    };
    Ok(Linear::dense(name, layer, proj, n, k, w.data, b))
}

/// Split rows [a, b) out of a `[n, k]` tensor (for Phi-3's fused projections).
fn rows(t: &Tensor, a: usize, b: usize) -> Vec<f32> {
    let k = t.shape[1];
    t.data[a * k..b * k].to_vec()
}

impl Model {
    /// Build the model from HF-named tensors, validating every shape against the config.
    pub fn from_tensors(config: ModelConfig, mut map: TensorMap) -> Result<Self> {
        use crate::linear::Proj;
        let c = &config;
        let (h, inter, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let embed = take_vec(&mut map, "model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let input_norm = take_vec(&mut map, &format!("{p}.input_layernorm.weight"), &[h])?;
            let post_norm = take_vec(
                &mut map,
                &format!("{p}.post_attention_layernorm.weight"),
                &[h],
            )?;
            let bias = c.family.has_qkv_bias();
            let (q, k, vv) = if c.family == Family::Phi3 {
                let name = format!("{p}.self_attn.qkv_proj");
                let t = map.take(&format!("{name}.weight"), &[qd + 2 * kvd, h])?;
                (
                    Linear::dense(
                        &format!("{p}.self_attn.q_proj"),
                        i,
                        Proj::Q,
                        qd,
                        h,
                        rows(&t, 0, qd),
                        None,
                    ),
                    Linear::dense(
                        &format!("{p}.self_attn.k_proj"),
                        i,
                        Proj::K,
                        kvd,
                        h,
                        rows(&t, qd, qd + kvd),
                        None,
                    ),
                    Linear::dense(
                        &format!("{p}.self_attn.v_proj"),
                        i,
                        Proj::V,
                        kvd,
                        h,
                        rows(&t, qd + kvd, qd + 2 * kvd),
                        None,
                    ),
                )
            } else {
                (
                    take_linear(
                        &mut map,
                        &format!("{p}.self_attn.q_proj"),
                        qd,
                        h,
                        bias,
                        i,
                        Proj::Q,
                    )?,
                    take_linear(
                        &mut map,
                        &format!("{p}.self_attn.k_proj"),
                        kvd,
                        h,
                        bias,
                        i,
                        Proj::K,
                    )?,
                    take_linear(
                        &mut map,
                        &format!("{p}.self_attn.v_proj"),
                        kvd,
                        h,
                        bias,
                        i,
                        Proj::V,
                    )?,
                )
            };
            let o = take_linear(
                &mut map,
                &format!("{p}.self_attn.o_proj"),
                h,
                qd,
                false,
                i,
                Proj::O,
            )?;
            let (gate, up) = if c.family == Family::Phi3 {
                let name = format!("{p}.mlp.gate_up_proj");
                let t = map.take(&format!("{name}.weight"), &[2 * inter, h])?;
                (
                    Linear::dense(
                        &format!("{p}.mlp.gate_proj"),
                        i,
                        Proj::Gate,
                        inter,
                        h,
                        rows(&t, 0, inter),
                        None,
                    ),
                    Linear::dense(
                        &format!("{p}.mlp.up_proj"),
                        i,
                        Proj::Up,
                        inter,
                        h,
                        rows(&t, inter, 2 * inter),
                        None,
                    ),
                )
            } else {
                (
                    take_linear(
                        &mut map,
                        &format!("{p}.mlp.gate_proj"),
                        inter,
                        h,
                        false,
                        i,
                        Proj::Gate,
                    )?,
                    take_linear(
                        &mut map,
                        &format!("{p}.mlp.up_proj"),
                        inter,
                        h,
                        false,
                        i,
                        Proj::Up,
                    )?,
                )
            };
            let down = take_linear(
                &mut map,
                &format!("{p}.mlp.down_proj"),
                h,
                inter,
                false,
                i,
                Proj::Down,
            )?;
            layers.push(Layer {
                input_norm,
                q,
                k,
                v: vv,
                o,
                post_norm,
                gate,
                up,
                down,
            });
        }
        let norm = take_vec(&mut map, "model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings {
            // Some checkpoints ship the tied head anyway; it must then equal the embedding's shape.
            map.take_opt("lm_head.weight", &[v, h])?;
            None
        } else {
            match map.take_opt("lm_head.weight", &[v, h])? {
                Some(t) => Some(t.data),
                // Checkpoints that omit the head even though the config does not say "tied".
                None => None,
            }
        };
        let leftovers: Vec<&String> = map
            .tensors
            .keys()
            .filter(|k| k.starts_with("model.layers.") && !k.contains("rotary_emb"))
            .collect();
        if let Some(extra) = leftovers.first() {
            bail!(
                "tensor '{extra}' in {} does not belong to a {}-layer {} model",
                crate::tensors::display_files(&map.files),
                c.num_layers,
                c.family.name()
            );
        }
        let inv_freq = config.rope_inv_freq();
        Ok(Model {
            config,
            embed,
            layers,
            norm,
            lm_head,
            head_quant: None,
            inv_freq,
        })
    }

    /// Configure error compensation of every quantized linear: `k_chunks` per projection group
    /// (qkv, o, gate-up, down). Linears without residuals are left alone.
    pub fn configure_dec(
        &mut self,
        k_chunks: [usize; 4],
        method: decdec_core::selection::SelectMethod,
        seed: u64,
    ) -> Result<()> {
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                let k_chunk = k_chunks[lin.proj.group().index()];
                if let Some(dec) = &mut lin.dec {
                    dec.configure(crate::linear::DecConfig {
                        method,
                        k_chunk,
                        seed,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Whether any linear carries residuals.
    pub fn has_dec(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.linears().iter().any(|x| x.dec.is_some()))
    }

    /// Turn exact-top-k recall tracking on or off for every compensated linear.
    pub fn track_recall(&mut self, on: bool) {
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                if let Some(dec) = &mut lin.dec {
                    dec.track_recall = on;
                }
            }
        }
    }

    /// Compensation counters summed over all linears.
    pub fn dec_counters(&self) -> crate::engine::DecCounters {
        use std::sync::atomic::Ordering::Relaxed;
        let mut c = crate::engine::DecCounters::default();
        for layer in &self.layers {
            for lin in layer.linears() {
                if let Some(dec) = &lin.dec {
                    let rows = dec.stats.rows.load(Relaxed);
                    c.rows_fetched += rows;
                    c.bytes_fetched += rows * dec.residual.row_bytes() as u64;
                }
            }
        }
        c
    }

    /// Quantize the output projection (round to nearest, asymmetric, groups of 128 input
    /// channels, or 64/32 when the hidden size needs it) at `bits` 3, 4 or 8. Not compensated:
    /// the head has no residuals. For a tied head the embedding table stays full precision.
    pub fn quantize_head(&mut self, bits: u32) -> Result<()> {
        if !matches!(bits, 3 | 4 | 8) {
            bail!("--head-bits {bits}: the GPU has a GEMV for 3, 4 or 8 bits");
        }
        if self.head_quant.is_some() {
            bail!("--head-bits: the head is already quantized");
        }
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let group = self.head_group()?;
        let q = decdec_core::quant::uniform::quantize_rtn(self.lm_head(), v, h, bits, group)
            .map_err(|e| anyhow::anyhow!("quantizing lm_head: {e}"))?;
        let q = decdec_core::quant::QuantWeight::Uniform(q);
        self.lm_head = Some(q.dequantize());
        self.head_quant = Some(q);
        Ok(())
    }

    /// Quantization group of the head: 128 input channels, or 64/32 when the hidden size needs it.
    pub fn head_group(&self) -> Result<usize> {
        let h = self.config.hidden_size;
        match [128, 64, 32].into_iter().find(|g| h.is_multiple_of(*g)) {
            Some(g) => Ok(g),
            None => bail!(
                "--head-bits: hidden size {h} is not a multiple of 32 (the quantization group)"
            ),
        }
    }

    pub fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// Number of parameters (embedding counted once when tied).
    pub fn num_params(&self) -> usize {
        let c = &self.config;
        let per_layer: usize = self.layers[0]
            .linears()
            .iter()
            .map(|l| l.in_features * l.out_features + l.bias.as_ref().map_or(0, |b| b.len()))
            .sum::<usize>()
            + 2 * c.hidden_size;
        self.embed.len()
            + per_layer * c.num_layers
            + c.hidden_size
            + self.lm_head.as_ref().map_or(0, |h| h.len())
    }

    /// Run `tokens` at positions `kv.len ..`, appending to the KV cache.
    pub fn forward(
        &self,
        tokens: &[u32],
        kv: &mut KvCache,
        logits: Logits,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, t) = (c.hidden_size, tokens.len());
        let start = kv.len;
        if t == 0 {
            bail!("forward: no tokens");
        }
        if start + t > kv.capacity {
            bail!(
                "context overflow: {} tokens exceed the KV cache capacity of {}",
                start + t,
                kv.capacity
            );
        }
        let mut x = vec![0.0f32; t * h];
        for (i, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= c.vocab_size {
                bail!(
                    "token id {tok} is outside the vocabulary ({})",
                    c.vocab_size
                );
            }
            x[i * h..(i + 1) * h].copy_from_slice(&self.embed[tok * h..(tok + 1) * h]);
        }
        let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let inter = c.intermediate_size;
        let mut xn = vec![0.0f32; t * h];
        let mut q = vec![0.0f32; t * qd];
        let mut kbuf = vec![0.0f32; t * kvd];
        let mut vbuf = vec![0.0f32; t * kvd];
        let mut attn = vec![0.0f32; t * qd];
        let mut o = vec![0.0f32; t * h];
        let mut g = vec![0.0f32; t * inter];
        let mut u = vec![0.0f32; t * inter];
        for (li, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.input_norm, c.rms_norm_eps, &mut xn);
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(li, ProjGroup::Qkv, &xn, t);
            }
            layer.q.forward(&xn, t, start, &mut q);
            layer.k.forward(&xn, t, start, &mut kbuf);
            layer.v.forward(&xn, t, start, &mut vbuf);
            for i in 0..t {
                ops::rope_half_split(&mut q[i * qd..(i + 1) * qd], hd, start + i, &self.inv_freq);
                ops::rope_half_split(
                    &mut kbuf[i * kvd..(i + 1) * kvd],
                    hd,
                    start + i,
                    &self.inv_freq,
                );
            }
            kv.k[li][start * kvd..(start + t) * kvd].copy_from_slice(&kbuf);
            kv.v[li][start * kvd..(start + t) * kvd].copy_from_slice(&vbuf);
            self.attention(&q, &kv.k[li], &kv.v[li], start, &mut attn);
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(li, ProjGroup::O, &attn, t);
            }
            layer.o.forward(&attn, t, start, &mut o);
            ops::add_inplace(&mut x, &o);
            ops::rms_norm(&x, &layer.post_norm, c.rms_norm_eps, &mut xn);
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(li, ProjGroup::GateUp, &xn, t);
            }
            layer.gate.forward(&xn, t, start, &mut g);
            layer.up.forward(&xn, t, start, &mut u);
            ops::silu_mul(&mut g, &u);
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(li, ProjGroup::Down, &g, t);
            }
            layer.down.forward(&g, t, start, &mut o);
            ops::add_inplace(&mut x, &o);
        }
        kv.len = start + t;
        let v = c.vocab_size;
        match logits {
            Logits::None => Ok(Vec::new()),
            Logits::Last => {
                ops::rms_norm(&x[(t - 1) * h..], &self.norm, c.rms_norm_eps, &mut xn[..h]);
                let mut out = vec![0.0f32; v];
                ops::gemv(self.lm_head(), &xn[..h], &mut out);
                Ok(out)
            }
            Logits::All => {
                ops::rms_norm(&x, &self.norm, c.rms_norm_eps, &mut xn);
                let mut out = vec![0.0f32; t * v];
                ops::matmul_xwt(&xn, self.lm_head(), t, h, v, &mut out);
                Ok(out)
            }
        }
    }

    /// Causal attention of `t` new query rows against the cache (positions 0 .. start + t), with GQA.
    fn attention(&self, q: &[f32], kc: &[f32], vc: &[f32], start: usize, out: &mut [f32]) {
        let c = &self.config;
        let (nh, hd, kvd) = (c.num_heads, c.head_dim, c.kv_dim());
        let group = c.num_heads / c.num_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
            let (i, head) = (idx / nh, idx % nh);
            let kvh = head / group;
            let qrow = &q[i * c.q_dim() + head * hd..i * c.q_dim() + (head + 1) * hd];
            let len = start + i + 1;
            let mut scores: Vec<f32> = (0..len)
                .map(|j| ops::dot(qrow, &kc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd]) * scale)
                .collect();
            ops::softmax(&mut scores);
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                ops::axpy(p, &vc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd], o);
            }
        });
    }
}
