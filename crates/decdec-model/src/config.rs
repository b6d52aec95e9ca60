//! Model configuration: the subset of a Hugging Face `config.json` that the supported families need.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// Supported decoder families. They share one forward pass; the differences are data (biases, fused
/// projections, RoPE scaling), captured by the fields of [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Phi3,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            "qwen2" => Some(Family::Qwen2),
            "phi3" => Some(Family::Phi3),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Phi3 => "phi3",
        }
    }
    /// Qwen2 carries biases on q/k/v.
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Family::Qwen2)
    }
}

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama-3.1 "llama3" scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Plain linear position interpolation.
    Linear {
        factor: f32,
    },
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// Fraction of head_dim rotated (Phi-3 uses 1.0; kept for completeness).
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The raw JSON, kept so quantized artifacts can copy it verbatim.
    pub raw: Value,
}

fn get_usize(v: &Value, key: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .with_context(|| format!("config.json: missing or non-integer field '{key}'"))
}

fn get_f32_or(v: &Value, key: &str, default: f32) -> Result<f32> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .map(|f| f as f32)
            .with_context(|| format!("config.json: field '{key}' is not a number")),
    }
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        Self::from_json(v).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(v: Value) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .context("config.json: missing 'model_type'")?;
        let Some(family) = Family::from_model_type(model_type) else {
            bail!(
                "unsupported architecture '{model_type}' (supported: llama, mistral, qwen2, phi3)"
            );
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                bail!("config.json: unsupported hidden_act '{act}' (only silu)");
            }
        }
        let hidden_size = get_usize(&v, "hidden_size")?;
        let num_heads = get_usize(&v, "num_attention_heads")?;
        let num_kv_heads = match v.get("num_key_value_heads") {
            Some(Value::Null) | None => num_heads,
            _ => get_usize(&v, "num_key_value_heads")?,
        };
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            bail!("config.json: num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}");
        }
        let head_dim = match v.get("head_dim").and_then(Value::as_u64) {
            Some(d) => d as usize,
            None => {
                if hidden_size % num_heads != 0 {
                    bail!("config.json: hidden_size {hidden_size} not divisible by num_attention_heads {num_heads}");
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            bail!("config.json: head_dim {head_dim} must be even for RoPE");
        }
        let rope_scaling = match v.get("rope_scaling") {
            None | Some(Value::Null) => RopeScaling::None,
            Some(rs) => {
                let kind = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match kind {
                    "llama3" => RopeScaling::Llama3 {
                        factor: get_f32_or(rs, "factor", 8.0)?,
                        low_freq_factor: get_f32_or(rs, "low_freq_factor", 1.0)?,
                        high_freq_factor: get_f32_or(rs, "high_freq_factor", 4.0)?,
                        original_max_position_embeddings: get_f32_or(
                            rs,
                            "original_max_position_embeddings",
                            8192.0,
                        )?,
                    },
                    "linear" => RopeScaling::Linear {
                        factor: get_f32_or(rs, "factor", 1.0)?,
                    },
                    "default" => RopeScaling::None,
                    other => bail!("config.json: unsupported rope_scaling type '{other}'"),
                }
            }
        };
        let cfg = ModelConfig {
            family,
            hidden_size,
            intermediate_size: get_usize(&v, "intermediate_size")?,
            num_layers: get_usize(&v, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: get_usize(&v, "vocab_size")?,
            rms_norm_eps: get_f32_or(&v, "rms_norm_eps", 1e-5)?,
            rope_theta: get_f32_or(&v, "rope_theta", 10000.0)?,
            rope_scaling,
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            raw: v,
        };
        Ok(cfg)
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Inverse frequencies for RoPE, with the family's scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / (self.rope_theta as f64).powf(2.0 * i as f64 / d as f64))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base.iter().map(|&f| f as f32).collect(),
            RopeScaling::Linear { factor } => {
                base.iter().map(|&f| (f / *factor as f64) as f32).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, lff, hff, old) = (
                    *factor as f64,
                    *low_freq_factor as f64,
                    *high_freq_factor as f64,
                    *original_max_position_embeddings as f64,
                );
                let low_wavelen = old / lff;
                let high_wavelen = old / hff;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let out = if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - lff) / (hff - lff);
                            (1.0 - smooth) * f / factor + smooth * f
                        };
                        out as f32
                    })
                    .collect()
            }
        }
    }
}
