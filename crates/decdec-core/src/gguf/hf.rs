//! Mapping llama-family GGUF checkpoints back to Hugging Face names, shapes,
//! RoPE row order and config.json.
//!
//! Which converters permute q/k (checked in llama.cpp's `convert_hf_to_gguf.py`,
//! now split into `conversion/*.py`): `LlamaModel` (registered for
//! `LlamaForCausalLM`, `MistralForCausalLM`, `MixtralForCausalLM`, ...) sets
//! `undo_permute = True` and its `modify_tensors` applies
//! `permute(w, n_head, n_head)` to `q_proj.weight`/`q_proj.bias` and
//! `permute(w, n_head, n_kv_head)` to `k_proj.*`; the native-Mistral path
//! (`MistralModel`, `undo_permute = False`) starts from weights already in that
//! interleaved order, so every `llama` GGUF holds permuted q/k rows.
//! `Qwen2Model` and `Phi3MiniModel` derive from `TextModel` and only rename
//! tensors, so their q/k/qkv rows are stored in HF order.

use super::{GgufFile, GgufTensorInfo};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Map, Value};

/// One weight in Hugging Face form: (HF name, row-major HF shape, f32 values).
pub type HfTensor = (String, Vec<usize>, Vec<f32>);

/// `general.architecture` values [`hf_config_from_gguf`] and [`load_hf_tensors`] accept.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "phi3"];

/// Whether llama.cpp's converter permuted the q/k rows of this architecture.
pub fn rope_permuted_by_converter(arch: &str) -> bool {
    matches!(arch, "llama" | "mistral")
}

/// GGUF tensors that carry RoPE parameters rather than weights; they are folded
/// into the config (`rope_scaling`) instead of being returned as tensors.
const ROPE_PARAM_TENSORS: &[&str] = &[
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
];

/// The Hugging Face name of a GGUF tensor of a llama-family model, or `None` when
/// the name has no HF counterpart. `arch` matters only for phi3, whose `ffn_up`
/// is the fused `gate_up_proj`.
pub fn hf_tensor_name(arch: &str, gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        "output.bias" => return Some("lm_head.bias".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output_norm.bias" => return Some("model.norm.bias".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf_module = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_module}.{suffix}"))
}

fn check_rope_shape(len: usize, rows: usize, cols: usize, n_head: usize) -> Result<usize> {
    ensure!(
        rows.checked_mul(cols) == Some(len),
        "RoPE row permutation: {len} values are not {rows} x {cols}"
    );
    ensure!(
        n_head
            .checked_mul(2)
            .is_some_and(|h2| h2 > 0 && rows.is_multiple_of(h2)),
        "RoPE row permutation: {rows} rows do not split into {n_head} heads of an even size"
    );
    Ok(rows / n_head / 2)
}

/// llama.cpp's convert permutation of q/k rows (HF -> GGUF):
/// `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
/// `w` is row-major `rows x cols` (a bias is `cols = 1`).
pub fn permute_rope_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Result<Vec<f32>> {
    let half = check_rope_shape(w.len(), rows, cols, n_head)?;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                // Output row (h, i, j) of the swapped view is input row (h, j, i).
                let dst = (h * half + i) * 2 + j;
                let src = (h * 2 + j) * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// Inverse of [`permute_rope_rows`] (GGUF -> HF): within each head, GGUF row
/// `2i + j` goes back to HF row `j * head_dim/2 + i`. Use `n_head` for q and
/// `n_kv_head` for k.
pub fn unpermute_rope_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Result<Vec<f32>> {
    let half = check_rope_shape(w.len(), rows, cols, n_head)?;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * half + i) * 2 + j;
                let dst = (h * 2 + j) * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

fn architecture<'f>(file: &'f GgufFile) -> Result<&'f str> {
    let arch = file
        .architecture()
        .ok_or_else(|| anyhow!("GGUF metadata has no 'general.architecture'"))?;
    ensure!(
        SUPPORTED_ARCHITECTURES.contains(&arch),
        "unsupported GGUF architecture '{arch}' (supported: {})",
        SUPPORTED_ARCHITECTURES.join(", ")
    );
    Ok(arch)
}

fn require_usize(file: &GgufFile, key: &str) -> Result<usize> {
    match file.metadata(key) {
        None => bail!("GGUF metadata '{key}' is missing"),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| anyhow!("GGUF metadata '{key}' is {v:?}, expected an unsigned integer")),
    }
}

fn optional_usize(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    match file.metadata(key) {
        None => Ok(None),
        Some(_) => require_usize(file, key).map(Some),
    }
}

fn optional_f64(file: &GgufFile, key: &str) -> Result<Option<f64>> {
    match file.metadata(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| anyhow!("GGUF metadata '{key}' is {v:?}, expected a number")),
    }
}

/// Attention head counts of layer 0 (some converters store per-layer arrays).
fn head_count(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    match file.metadata(key) {
        None => Ok(None),
        Some(v) => {
            let first = match v.as_array() {
                Some(items) => {
                    let first = items
                        .first()
                        .ok_or_else(|| anyhow!("GGUF metadata '{key}' is an empty array"))?;
                    ensure!(
                        items.iter().all(|x| x == first),
                        "GGUF metadata '{key}' varies per layer, which is not supported"
                    );
                    first
                }
                None => v,
            };
            first
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    anyhow!("GGUF metadata '{key}' is {v:?}, expected an unsigned integer")
                })
        }
    }
}

/// Reconstructs the `rope_scaling` of a Llama-3.x model from the `rope_freqs`
/// tensor llama.cpp's converter writes instead of metadata: search the
/// parameter grid Meta uses and accept only an exact reproduction of the
/// stored factors (anything else is an error, never a silently wrong RoPE).
fn llama3_rope_scaling(
    factors: &[f32],
    rope_theta: f64,
    rope_dim: usize,
    orig_ctx_hint: Option<usize>,
) -> Result<Option<Value>> {
    ensure!(
        rope_dim == 2 * factors.len(),
        "rope_freqs.weight has {} factors, expected rope dimension / 2 = {}",
        factors.len(),
        rope_dim / 2
    );
    if factors.iter().all(|&f| f == 1.0) {
        return Ok(None);
    }
    let factor = factors.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
    let freqs: Vec<f64> = (0..factors.len())
        .map(|i| 1.0 / rope_theta.powf((2 * i) as f64 / rope_dim as f64))
        .collect();
    let expected = |old: f64, low: f64, high: f64| -> Vec<f64> {
        let low_wl = old / low;
        let high_wl = old / high;
        freqs
            .iter()
            .map(|&f| {
                let wl = 2.0 * std::f64::consts::PI / f;
                if wl < high_wl {
                    1.0
                } else if wl > low_wl {
                    factor
                } else {
                    let smooth = (old / wl - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect()
    };
    let mut olds: Vec<usize> = orig_ctx_hint.into_iter().collect();
    olds.extend([8192, 4096, 2048, 16384, 32768, 65536, 131072]);
    for &old in &olds {
        for (low, high) in [(1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 4.0), (2.0, 8.0)] {
            let e = expected(old as f64, low, high);
            let ok = e
                .iter()
                .zip(factors)
                .all(|(&e, &f)| (e - f as f64).abs() <= 1e-4 * e.abs().max(1.0));
            if ok {
                return Ok(Some(json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": old,
                })));
            }
        }
    }
    bail!("rope_freqs.weight does not match any llama3 rope scaling (factor {factor}); unsupported RoPE variant")
}

/// A Hugging Face `config.json` object for a llama / mistral / qwen2 / phi3 GGUF.
pub fn hf_config_from_gguf(file: &GgufFile) -> Result<Value> {
    let arch = architecture(file)?;
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = require_usize(file, &key("embedding_length"))?;
    let n_layers = require_usize(file, &key("block_count"))?;
    let ffn = require_usize(file, &key("feed_forward_length"))?;
    let n_head = head_count(file, &key("attention.head_count"))?
        .ok_or_else(|| anyhow!("GGUF metadata '{}' is missing", key("attention.head_count")))?;
    ensure!(
        n_head > 0,
        "GGUF metadata '{}' is 0",
        key("attention.head_count")
    );
    let n_kv_head = head_count(file, &key("attention.head_count_kv"))?.unwrap_or(n_head);
    ensure!(
        n_kv_head > 0,
        "GGUF metadata '{}' is 0",
        key("attention.head_count_kv")
    );
    let eps = optional_f64(file, &key("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
        anyhow!(
            "GGUF metadata '{}' is missing",
            key("attention.layer_norm_rms_epsilon")
        )
    })?;
    let rope_theta = optional_f64(file, &key("rope.freq_base"))?.unwrap_or(10000.0);
    let max_pos = optional_usize(file, &key("context_length"))?;
    let head_dim = optional_usize(file, &key("attention.key_length"))?.unwrap_or(hidden / n_head);

    // The embedding's row count is what the weights really hold.
    let embd_rows = file.tensor("token_embd.weight").map(|t| t.hf_shape()[0]);
    let vocab = match (optional_usize(file, &key("vocab_size"))?, embd_rows) {
        (Some(v), Some(rows)) if v != rows => bail!(
            "GGUF metadata '{}' = {v} disagrees with token_embd.weight's {rows} rows",
            key("vocab_size")
        ),
        (Some(v), _) => v,
        (None, Some(rows)) => rows,
        (None, None) => file
            .get_array("tokenizer.ggml.tokens")
            .map(|t| t.len())
            .ok_or_else(|| anyhow!("cannot tell the vocabulary size: no '{}', no token_embd.weight, no tokenizer.ggml.tokens", key("vocab_size")))?,
    };

    let (model_type, class) = match arch {
        "llama" => ("llama", "LlamaForCausalLM"),
        "mistral" => ("mistral", "MistralForCausalLM"),
        "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
        "phi3" => ("phi3", "Phi3ForCausalLM"),
        other => bail!("unsupported GGUF architecture '{other}'"),
    };
    let mut cfg = Map::new();
    cfg.insert("model_type".into(), json!(model_type));
    cfg.insert("architectures".into(), json!([class]));
    cfg.insert("hidden_size".into(), json!(hidden));
    cfg.insert("intermediate_size".into(), json!(ffn));
    cfg.insert("num_hidden_layers".into(), json!(n_layers));
    cfg.insert("num_attention_heads".into(), json!(n_head));
    cfg.insert("num_key_value_heads".into(), json!(n_kv_head));
    cfg.insert("head_dim".into(), json!(head_dim));
    cfg.insert("rms_norm_eps".into(), json!(eps));
    cfg.insert("rope_theta".into(), json!(rope_theta));
    cfg.insert("vocab_size".into(), json!(vocab));
    if let Some(m) = max_pos {
        cfg.insert("max_position_embeddings".into(), json!(m));
    }
    cfg.insert(
        "tie_word_embeddings".into(),
        json!(file.tensor("output.weight").is_none()),
    );
    cfg.insert("hidden_act".into(), json!("silu"));
    cfg.insert("torch_dtype".into(), json!("float32"));
    if arch == "llama" || arch == "mistral" {
        cfg.insert(
            "attention_bias".into(),
            json!(file.tensor("blk.0.attn_q.bias").is_some()),
        );
    }
    if let Some(w) = optional_usize(file, &key("attention.sliding_window"))? {
        if w > 0 {
            cfg.insert("sliding_window".into(), json!(w));
        }
    }
    for (gguf_key, hf_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = optional_usize(file, gguf_key)? {
            cfg.insert(hf_key.into(), json!(id));
        }
    }

    let orig_ctx = optional_usize(file, &key("rope.scaling.original_context_length"))?;
    let rope_dim = optional_usize(file, &key("rope.dimension_count"))?.unwrap_or(head_dim);
    let mut rope_scaling = None;
    if let Some(kind) = file.get_str(&key("rope.scaling.type")) {
        match kind {
            "none" => {}
            "linear" | "yarn" => {
                let factor = optional_f64(file, &key("rope.scaling.factor"))?.ok_or_else(|| {
                    anyhow!("GGUF metadata '{}' is missing", key("rope.scaling.factor"))
                })?;
                let mut s = json!({ "rope_type": kind, "type": kind, "factor": factor });
                if let Some(o) = orig_ctx {
                    s["original_max_position_embeddings"] = json!(o);
                }
                rope_scaling = Some(s);
            }
            other => bail!("unsupported GGUF rope scaling type '{other}'"),
        }
    }
    if let Some(t) = file.tensor("rope_freqs.weight") {
        ensure!(
            rope_scaling.is_none(),
            "GGUF has both '{}' metadata and a rope_freqs.weight tensor",
            key("rope.scaling.type")
        );
        let factors = file.tensor_f32(t)?;
        rope_scaling = llama3_rope_scaling(&factors, rope_theta, rope_dim, orig_ctx)?;
    }
    if let (Some(long), Some(short)) = (
        file.tensor("rope_factors_long.weight"),
        file.tensor("rope_factors_short.weight"),
    ) {
        ensure!(
            rope_scaling.is_none(),
            "GGUF has both rope scaling metadata and rope_factors tensors"
        );
        let mut s = json!({
            "rope_type": "longrope",
            "type": "longrope",
            "long_factor": file.tensor_f32(long)?,
            "short_factor": file.tensor_f32(short)?,
        });
        if let Some(o) = orig_ctx {
            s["original_max_position_embeddings"] = json!(o);
            cfg.insert("original_max_position_embeddings".into(), json!(o));
        }
        rope_scaling = Some(s);
    }
    cfg.insert("rope_scaling".into(), rope_scaling.unwrap_or(Value::Null));
    Ok(Value::Object(cfg))
}

/// Heads used by the converter's q (`n_head`) and k (`n_kv_head`) permutation.
fn rope_heads(file: &GgufFile, arch: &str) -> Result<(usize, usize)> {
    let n_head = head_count(file, &format!("{arch}.attention.head_count"))?
        .ok_or_else(|| anyhow!("GGUF metadata '{arch}.attention.head_count' is missing"))?;
    let n_kv = head_count(file, &format!("{arch}.attention.head_count_kv"))?.unwrap_or(n_head);
    Ok((n_head, n_kv))
}

/// One GGUF tensor as (HF name, HF shape, f32 values), q/k rows un-permuted for
/// llama/mistral; `Ok(None)` for tensors that hold RoPE parameters (see
/// [`hf_config_from_gguf`]). Unknown tensor names are an error.
pub fn load_hf_tensor(file: &GgufFile, info: &GgufTensorInfo) -> Result<Option<HfTensor>> {
    let arch = architecture(file)?;
    if ROPE_PARAM_TENSORS.contains(&info.name.as_str()) {
        return Ok(None);
    }
    let hf_name = hf_tensor_name(arch, &info.name).ok_or_else(|| {
        anyhow!(
            "tensor '{}' has no Hugging Face equivalent for architecture '{arch}'",
            info.name
        )
    })?;
    let shape = info.hf_shape();
    let mut values = file.tensor_f32(info)?;
    if rope_permuted_by_converter(arch) {
        let is_q = info.name.ends_with(".attn_q.weight") || info.name.ends_with(".attn_q.bias");
        let is_k = info.name.ends_with(".attn_k.weight") || info.name.ends_with(".attn_k.bias");
        if is_q || is_k {
            let (n_head, n_kv) = rope_heads(file, arch)?;
            let heads = if is_q { n_head } else { n_kv };
            let rows = shape.first().copied().unwrap_or(1);
            let cols = shape.iter().skip(1).product::<usize>();
            values = unpermute_rope_rows(&values, rows, cols, heads)
                .with_context(|| format!("tensor '{}'", info.name))?;
        }
    }
    Ok(Some((hf_name, shape, values)))
}

/// Every weight of a llama / mistral / qwen2 / phi3 GGUF as (HF name, HF shape,
/// f32 values), in file order. See [`load_hf_tensor`].
pub fn load_hf_tensors(file: &GgufFile) -> Result<Vec<HfTensor>> {
    architecture(file)?;
    let mut out = Vec::with_capacity(file.tensors().len());
    for info in file.tensors() {
        if let Some(t) = load_hf_tensor(file, info)? {
            out.push(t);
        }
    }
    Ok(out)
}
