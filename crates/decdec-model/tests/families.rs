//! The supported families on tiny random models: one forward pass serves them all, so a Llama model
//! re-expressed as Mistral, Phi-3 (fused qkv / gate-up) or Qwen2 (q/k/v bias) must give the same logits;
//! incremental decode over the KV cache must equal a full prefill.

use decdec_model::{open, CpuEngine, Engine, LoadOptions, Logits};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const H: usize = 32;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = H / HEADS;
const INTER: usize = 48;
const VOCAB: usize = 512;
const LAYERS: usize = 2;

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn rand_t(rng: &mut StdRng, shape: &[usize], scale: f32) -> (Vec<usize>, Vec<f32>) {
    let n: usize = shape.iter().product();
    (
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    )
}

fn llama_tensors(seed: u64, bias: bool) -> Tensors {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = Tensors::new();
    t.insert(
        "model.embed_tokens.weight".into(),
        rand_t(&mut rng, &[VOCAB, H], 1.0),
    );
    t.insert("model.norm.weight".into(), rand_t(&mut rng, &[H], 1.0));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [HEADS * HD, H]),
            ("self_attn.k_proj", [KV * HD, H]),
            ("self_attn.v_proj", [KV * HD, H]),
            ("self_attn.o_proj", [H, HEADS * HD]),
            ("mlp.gate_proj", [INTER, H]),
            ("mlp.up_proj", [INTER, H]),
            ("mlp.down_proj", [H, INTER]),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand_t(&mut rng, &shape, 0.3));
            if bias && name.starts_with("self_attn.") && name != "self_attn.o_proj" {
                t.insert(
                    format!("{p}.{name}.bias"),
                    rand_t(&mut rng, &shape[..1], 0.3),
                );
            }
        }
        t.insert(
            format!("{p}.input_layernorm.weight"),
            rand_t(&mut rng, &[H], 1.0),
        );
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            rand_t(&mut rng, &[H], 1.0),
        );
    }
    t
}

fn concat_rows(parts: &[&(Vec<usize>, Vec<f32>)]) -> (Vec<usize>, Vec<f32>) {
    let cols = parts[0].0[1];
    let rows: usize = parts.iter().map(|p| p.0[0]).sum();
    let data = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
    (vec![rows, cols], data)
}

/// Llama tensors in Phi-3's fused layout.
fn to_phi3(t: &Tensors) -> Tensors {
    let fused = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"];
    let mut out: Tensors = t
        .iter()
        .filter(|(k, _)| !fused.iter().any(|f| k.contains(f)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let g = |n: &str| &t[&format!("{p}.{n}.weight")];
        out.insert(
            format!("{p}.self_attn.qkv_proj.weight"),
            concat_rows(&[
                g("self_attn.q_proj"),
                g("self_attn.k_proj"),
                g("self_attn.v_proj"),
            ]),
        );
        out.insert(
            format!("{p}.mlp.gate_up_proj.weight"),
            concat_rows(&[g("mlp.gate_proj"), g("mlp.up_proj")]),
        );
    }
    out
}

fn write_model(dir: &Path, model_type: &str, tensors: &Tensors, extra: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = serde_json::json!({
        "model_type": model_type,
        "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": true, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                s.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K/tokenizer.json");
    std::fs::copy(tok, dir.join("tokenizer.json")).unwrap();
}

const TOKENS: [u32; 9] = [1, 45, 300, 7, 99, 412, 3, 250, 18];

fn prefill_logits(dir: &Path) -> Vec<f32> {
    let lm = open(dir, &LoadOptions::default()).unwrap();
    let mut e = CpuEngine::new(Arc::new(lm.model), Some(32));
    e.forward(&TOKENS, Logits::All).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn incremental_decode_equals_prefill() {
    let d = tempfile::tempdir().unwrap();
    write_model(
        d.path(),
        "llama",
        &llama_tensors(1, false),
        serde_json::json!({}),
    );
    let full = prefill_logits(d.path());
    let lm = open(d.path(), &LoadOptions::default()).unwrap();
    let mut e = CpuEngine::new(Arc::new(lm.model), Some(32));
    // Prefill 4, then one token at a time; compare each step's logits with the full pass.
    let first = e.forward(&TOKENS[..4], Logits::All).unwrap();
    assert!(max_diff(&first, &full[..4 * VOCAB]) < 1e-4);
    for (i, &t) in TOKENS.iter().enumerate().skip(4) {
        let step = e.forward(&[t], Logits::Last).unwrap();
        assert!(
            max_diff(&step, &full[i * VOCAB..(i + 1) * VOCAB]) < 1e-4,
            "position {i}"
        );
    }
    assert_eq!(e.position(), TOKENS.len());
    // Rewinding the cache and replaying gives the same numbers.
    e.truncate(4);
    let again = e.forward(&[TOKENS[4]], Logits::Last).unwrap();
    assert!(max_diff(&again, &full[4 * VOCAB..5 * VOCAB]) < 1e-4);
}

#[test]
fn mistral_and_phi3_layouts_compute_the_same_function_as_llama() {
    let t = llama_tensors(2, false);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    write_model(a.path(), "llama", &t, serde_json::json!({}));
    write_model(b.path(), "mistral", &t, serde_json::json!({}));
    write_model(c.path(), "phi3", &to_phi3(&t), serde_json::json!({}));
    let la = prefill_logits(a.path());
    assert!(la.iter().all(|v| v.is_finite()));
    assert!(max_diff(&la, &prefill_logits(b.path())) < 1e-5);
    assert!(max_diff(&la, &prefill_logits(c.path())) < 1e-4);
}

#[test]
fn qwen2_uses_qkv_bias_and_requires_it() {
    let (a, b, plain) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    write_model(
        a.path(),
        "qwen2",
        &llama_tensors(3, true),
        serde_json::json!({}),
    );
    write_model(
        b.path(),
        "qwen2",
        &llama_tensors(3, false),
        serde_json::json!({}),
    );
    write_model(
        plain.path(),
        "llama",
        &llama_tensors(3, false),
        serde_json::json!({}),
    );
    // Same weights without the biases: the biases must change the output.
    assert!(max_diff(&prefill_logits(a.path()), &prefill_logits(plain.path())) > 1e-3);
    let err = open(b.path(), &LoadOptions::default())
        .err()
        .expect("missing bias must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("model.layers.0.self_attn.q_proj.bias"),
        "{msg}"
    );
}

#[test]
fn llama3_rope_scaling_follows_the_reference_formula() {
    let d = tempfile::tempdir().unwrap();
    write_model(
        d.path(),
        "llama",
        &llama_tensors(4, false),
        serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
    );
    let lm = open(d.path(), &LoadOptions::default()).unwrap();
    let inv = lm.model.config.rope_inv_freq();
    assert_eq!(inv.len(), HD / 2);
    let mut scaled = 0;
    for (i, &f) in inv.iter().enumerate() {
        let base = 1.0 / 500000f64.powf(2.0 * i as f64 / HD as f64);
        let wavelen = 2.0 * std::f64::consts::PI / base;
        let expect = if wavelen < 8192.0 / 4.0 {
            base
        } else if wavelen > 8192.0 {
            scaled += 1;
            base / 8.0
        } else {
            let s = (8192.0 / wavelen - 1.0) / 3.0;
            (1.0 - s) * base / 8.0 + s * base
        };
        assert!(
            ((f as f64) - expect).abs() <= 1e-6 * expect,
            "freq {i}: {f} vs {expect}"
        );
    }
    assert!(scaled > 0, "some frequencies must be scaled by the factor");
    assert!(
        (inv[0] as f64 - 1.0).abs() < 1e-9,
        "the highest frequency is untouched"
    );
}

/// The same model saved as two bf16/f16 shards with an index loads as the rounded weights.
#[test]
fn sharded_half_precision_checkpoints_load() {
    let t = llama_tensors(5, false);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_model(a.path(), "llama", &t, serde_json::json!({}));
    // Reference: f32 weights rounded through bf16 / f16 exactly as the shards store them.
    let names: Vec<&String> = t.keys().collect();
    let half = names.len() / 2;
    let mut rounded = Tensors::new();
    let mut weight_map = serde_json::Map::new();
    for (i, shard_names) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let mut bufs = Vec::new();
        for &name in shard_names.iter() {
            let (shape, data) = &t[name];
            let (dtype, bytes, back): (_, Vec<u8>, Vec<f32>) = if i == 0 {
                let h: Vec<half::bf16> = data.iter().map(|&v| half::bf16::from_f32(v)).collect();
                (
                    safetensors::Dtype::BF16,
                    h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    h.iter().map(|v| v.to_f32()).collect(),
                )
            } else {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                (
                    safetensors::Dtype::F16,
                    h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    h.iter().map(|v| v.to_f32()).collect(),
                )
            };
            rounded.insert(name.clone(), (shape.clone(), back));
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
            bufs.push((name.clone(), dtype, shape.clone(), bytes));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &b.path().join(&file)).unwrap();
    }
    write_model(a.path(), "llama", &rounded, serde_json::json!({}));
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(a.path().join(f), b.path().join(f)).unwrap();
    }
    std::fs::write(
        b.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let lm = open(b.path(), &LoadOptions::default()).unwrap();
    assert!(lm.dtypes.values().any(|d| d == "BF16"));
    assert!(lm.dtypes.values().any(|d| d == "F16"));
    assert!(max_diff(&prefill_logits(a.path()), &prefill_logits(b.path())) < 1e-5);
}
