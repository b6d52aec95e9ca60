//! decdec quantized model directories (written by `decdec quantize`, crate decdec-pipeline).
//!
//! A directory holds `config.json` and the tokenizer files of the source model, the manifest
//! `decdec.json` ([`Manifest`]) and one `model.safetensors` with, per decoder-layer linear
//! `<module>` (Hugging Face module name, e.g. `model.layers.3.self_attn.q_proj`; Phi-3's fused
//! projections are stored split into q/k/v and gate/up):
//!
//! | tensor                        | dtype | shape                 | meaning (docs/formats.md)             |
//! |-------------------------------|-------|-----------------------|---------------------------------------|
//! | `<module>.qweight`            | U32   | `[N, words_per_row]`  | packed codes                          |
//! | `<module>.scales`, `.zeros`   | F32/U8| `[N, n_groups]`       | uniform (`rtn`, `awq`) only           |
//! | `<module>.lut`                | F32   | `[N, 2^bits]`         | `lut` only                            |
//! | `<module>.residual`           | U32   | `[K, ceil(N*r/32)]`   | DEC residual, one row per input chan. |
//! | `<module>.residual_scales`    | F32   | `[N]`                 | residual scale per output channel     |
//! | `<module>.thresholds`         | F32   | `[K]`                 | t[j], non-increasing                  |
//! | `<module>.act_mean`           | F32   | `[K]`                 | calibration mean abs(x)               |
//! | `<module>.act_sq`             | F32   | `[K]`                 | calibration sum of x^2                |
//! | `<module>.bias`               | F32   | `[N]`                 | when the source has one               |
//!
//! plus the non-quantized tensors under their Hugging Face names (F32): `model.embed_tokens.weight`,
//! `model.norm.weight`, `lm_head.weight` (untied models), and per layer `input_layernorm.weight`,
//! `post_attention_layernorm.weight` (with AWQ scales already folded in).
//!
//! The writer creates the directory under a temporary name with an [`INCOMPLETE_MARKER`] file and
//! renames it into place only when complete; a directory with the marker never loads.

use crate::config::ModelConfig;
use crate::linear::{DecLinear, Linear, Proj};
use crate::loader::{LoadOptions, LoadedModel, SourceKind};
use crate::model::{Layer, Model};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, ensure, Context, Result};
use decdec_core::quant::{LutQuant, QuantMethod, QuantWeight, UniformQuant};
use decdec_core::residual::Residual;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` field of `decdec.json`.
pub const FORMAT: &str = "decdec-quantized";
/// Current layout version; loaders refuse other versions.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "decdec.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Present while a directory is being written; such a directory is never loaded.
pub const INCOMPLETE_MARKER: &str = ".decdec-incomplete";

/// Provenance of the calibration data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CalibrationInfo {
    /// File name of the corpus.
    pub corpus: String,
    /// SHA-256 of the corpus bytes.
    pub sha256: String,
    pub samples: usize,
    pub seq_len: usize,
    /// Tokens observed per linear input.
    pub tokens: usize,
}

/// Provenance of the source (original) model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub path: String,
    /// SHA-256 over the source's weight files (in order).
    pub sha256: String,
    /// "huggingface" or "gguf".
    pub kind: String,
}

/// `decdec.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// Base quantizer: rtn, awq or lut.
    pub method: String,
    /// Requested average bits (3.5 = half the layers at 3 bits, half at 4).
    pub bits: f64,
    /// Bits of each decoder layer's linears.
    pub layer_bits: Vec<u32>,
    /// Group size of the uniform formats (`None` for lut).
    pub group_size: Option<usize>,
    pub residual_bits: u32,
    pub weights_file: String,
    pub calibration: CalibrationInfo,
    pub source: SourceInfo,
    /// Free-form details of the quantizer (AWQ chosen ratios, 3.5-bit sensitivities, timings).
    #[serde(default)]
    pub details: serde_json::Value,
    /// `decdec quantize --head-bits`: the output projection is quantized to these bits when the
    /// model is loaded (stored in full precision; `--head-bits 16` at run time overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_bits: Option<u32>,
}

/// Tensor names of one quantized linear.
pub fn tensor_name(module: &str, what: &str) -> String {
    format!("{module}.{what}")
}

/// Whether `path` is a decdec quantized directory (complete or not).
pub fn is_quantized_dir(path: &Path) -> bool {
    path.is_dir() && (path.join(MANIFEST).exists() || path.join(INCOMPLETE_MARKER).exists())
}

/// Reads and checks `decdec.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    if dir.join(INCOMPLETE_MARKER).exists() {
        bail!(
            "{} is an incomplete decdec directory (an interrupted `decdec quantize`); delete it and quantize again",
            dir.display()
        );
    }
    let p = dir.join(MANIFEST);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?;
    match v.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        other => bail!(
            "{}: 'format' is {other:?}, expected {FORMAT:?}",
            p.display()
        ),
    }
    let version = v.get("format_version").and_then(|f| f.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        bail!(
            "{}: format_version {version:?} is not supported (this build reads version {FORMAT_VERSION}); re-run `decdec quantize`",
            p.display()
        );
    }
    let m: Manifest = serde_json::from_value(v)
        .with_context(|| format!("{}: malformed manifest", p.display()))?;
    let method: QuantMethod = m
        .method
        .parse()
        .with_context(|| format!("{}: field 'method'", p.display()))?;
    if method != QuantMethod::Lut {
        ensure!(
            m.group_size.is_some_and(|g| g > 0),
            "{}: method {} needs a positive 'group_size'",
            p.display(),
            m.method
        );
    }
    decdec_core::residual::check_residual_bits(m.residual_bits)
        .with_context(|| format!("{}: field 'residual_bits'", p.display()))?;
    Ok(m)
}

/// Typed access to the safetensors file with errors that name file and tensor.
pub struct TensorFile<'a> {
    pub st: safetensors::SafeTensors<'a>,
    pub file: PathBuf,
}

impl<'a> TensorFile<'a> {
    fn view(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
        shape: &[usize],
    ) -> Result<safetensors::tensor::TensorView<'a>> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| anyhow::anyhow!("{}: tensor '{name}' is missing", self.file.display()))?;
        if v.dtype() != dtype {
            bail!(
                "{}: tensor '{name}' has dtype {:?}, expected {dtype:?}",
                self.file.display(),
                v.dtype()
            );
        }
        if v.shape() != shape {
            bail!(
                "{}: tensor '{name}' has shape {:?}, expected {shape:?}",
                self.file.display(),
                v.shape()
            );
        }
        Ok(v)
    }

    pub fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| anyhow::anyhow!("{}: tensor '{name}' is missing", self.file.display()))?;
        Ok(v.shape().to_vec())
    }

    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let v = self.view(name, safetensors::Dtype::F32, shape)?;
        let out: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: tensor '{name}' holds a non-finite value at element {i}",
                self.file.display()
            );
        }
        Ok(out)
    }

    pub fn u32(&self, name: &str, shape: &[usize]) -> Result<Vec<u32>> {
        let v = self.view(name, safetensors::Dtype::U32, shape)?;
        Ok(v.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn u8(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let v = self.view(name, safetensors::Dtype::U8, shape)?;
        Ok(v.data().to_vec())
    }
}

/// Everything stored for one quantized linear.
pub struct StoredLinear {
    pub q: QuantWeight,
    pub residual: Residual,
    pub thresholds: Vec<f32>,
    pub act_mean: Vec<f32>,
    pub act_sq: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// Reads one linear's tensors, checking every dtype and shape against (`n`, `k`, `bits`).
pub fn read_linear(
    tf: &TensorFile<'_>,
    m: &Manifest,
    module: &str,
    n: usize,
    k: usize,
    bits: u32,
) -> Result<StoredLinear> {
    use decdec_core::quant::pack;
    let method: QuantMethod = m.method.parse()?;
    let t = |w: &str| tensor_name(module, w);
    let wpr = pack::words_per_row(k, bits);
    let qweight = tf.u32(&t("qweight"), &[n, wpr])?;
    let q: QuantWeight = match method {
        QuantMethod::Lut => {
            let lut = tf.f32(&t("lut"), &[n, 1usize << bits])?;
            QuantWeight::Lut(LutQuant {
                bits,
                k,
                n,
                qweight,
                lut,
            })
        }
        QuantMethod::Rtn | QuantMethod::Awq => {
            let g = m.group_size.unwrap_or(0);
            let ng = k.div_ceil(g);
            let scales = tf.f32(&t("scales"), &[n, ng])?;
            let zeros = tf.u8(&t("zeros"), &[n, ng])?;
            QuantWeight::Uniform(UniformQuant {
                bits,
                group_size: g,
                k,
                n,
                qweight,
                scales,
                zeros,
            })
        }
    };
    q.validate()
        .with_context(|| format!("{}: tensors of '{module}'", tf.file.display()))?;
    let r = m.residual_bits;
    let rwpr = decdec_core::residual::residual_words_per_row(n, r);
    let residual = Residual {
        bits: r,
        k,
        n,
        words_per_row: rwpr,
        codes: tf.u32(&t("residual"), &[k, rwpr])?,
        scales: tf.f32(&t("residual_scales"), &[n])?,
    };
    residual
        .validate()
        .with_context(|| format!("{}: tensor '{}'", tf.file.display(), t("residual")))?;
    let thresholds = tf.f32(&t("thresholds"), &[k])?;
    decdec_core::selection::validate_thresholds(&thresholds, k)
        .with_context(|| format!("{}: tensor '{}'", tf.file.display(), t("thresholds")))?;
    let act_mean = tf.f32(&t("act_mean"), &[k])?;
    let act_sq = tf.f32(&t("act_sq"), &[k])?;
    let bias = if tf.has(&t("bias")) {
        Some(tf.f32(&t("bias"), &[n])?)
    } else {
        None
    };
    Ok(StoredLinear {
        q,
        residual,
        thresholds,
        act_mean,
        act_sq,
        bias,
    })
}

/// `(module name, proj, out, in)` of the seven linears of layer `i`, in [`Layer::linears`] order.
pub fn layer_linears(c: &ModelConfig, i: usize) -> [(String, Proj, usize, usize); 7] {
    let (h, inter, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let p = format!("model.layers.{i}");
    [
        (format!("{p}.self_attn.q_proj"), Proj::Q, qd, h),
        (format!("{p}.self_attn.k_proj"), Proj::K, kvd, h),
        (format!("{p}.self_attn.v_proj"), Proj::V, kvd, h),
        (format!("{p}.self_attn.o_proj"), Proj::O, h, qd),
        (format!("{p}.mlp.gate_proj"), Proj::Gate, inter, h),
        (format!("{p}.mlp.up_proj"), Proj::Up, inter, h),
        (format!("{p}.mlp.down_proj"), Proj::Down, h, inter),
    ]
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: read-only map of a file we never write through.
    unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot mmap {}", path.display()))
}

/// Opens the safetensors file of a quantized directory.
pub fn with_tensors<T>(
    dir: &Path,
    m: &Manifest,
    f: impl FnOnce(&TensorFile<'_>) -> Result<T>,
) -> Result<T> {
    let file = dir.join(&m.weights_file);
    let mm = map_file(&file)?;
    let st = safetensors::SafeTensors::deserialize(&mm).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid safetensors file (truncated or corrupt header/offsets): {e}",
            file.display()
        )
    })?;
    f(&TensorFile { st, file })
}

/// Builds the model of a quantized directory: quantized linears with their residuals, thresholds and
/// calibration statistics attached (compensation off until `Model::configure_dec`).
pub fn load_model(dir: &Path) -> Result<(Manifest, Model)> {
    let m = read_manifest(dir)?;
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    ensure!(
        m.layer_bits.len() == config.num_layers,
        "{}: 'layer_bits' has {} entries but config.json has {} layers",
        dir.join(MANIFEST).display(),
        m.layer_bits.len(),
        config.num_layers
    );
    let model = with_tensors(dir, &m, |tf| {
        let c = &config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let embed = tf.f32("model.embed_tokens.weight", &[v, h])?;
        let norm = tf.f32("model.norm.weight", &[h])?;
        let lm_head = if tf.has("lm_head.weight") && !c.tie_word_embeddings {
            Some(tf.f32("lm_head.weight", &[v, h])?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let input_norm = tf.f32(&format!("{p}.input_layernorm.weight"), &[h])?;
            let post_norm = tf.f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?;
            let bits = m.layer_bits[i];
            let mut lins: Vec<Linear> = Vec::with_capacity(7);
            for (name, proj, n, k) in layer_linears(c, i) {
                let s = read_linear(tf, &m, &name, n, k, bits)?;
                let mut lin = Linear::new_quantized(&name, i, proj, s.q, s.bias);
                lin.dec = Some(DecLinear::new(s.residual, s.thresholds, s.act_mean));
                lins.push(lin);
            }
            let mut it = lins.into_iter();
            let mut next = || it.next().expect("seven linears");
            layers.push(Layer {
                input_norm,
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                post_norm,
                gate: next(),
                up: next(),
                down: next(),
            });
        }
        let inv_freq = c.rope_inv_freq();
        Ok(Model {
            config: config.clone(),
            embed,
            layers,
            norm,
            lm_head,
            head_quant: None,
            inv_freq,
        })
    })?;
    Ok((m, model))
}

/// `open()` for quantized directories.
pub fn open(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let (m, model) = load_model(dir)
        .with_context(|| format!("cannot load quantized model {}", dir.display()))?;
    let tok_path = opts
        .tokenizer
        .clone()
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let mut tokenizer = Tokenizer::from_file(&tok_path)?;
    tokenizer.add_eos_ids(&model.config.eos_token_ids);
    if tokenizer.vocab_size() > model.config.vocab_size {
        bail!(
            "tokenizer {} has {} tokens but the model's vocabulary is {}",
            tok_path.display(),
            tokenizer.vocab_size(),
            model.config.vocab_size
        );
    }
    let mut dtypes = BTreeMap::new();
    dtypes.insert("*".to_string(), format!("{} {}-bit", m.method, m.bits));
    Ok(LoadedModel {
        model,
        tokenizer,
        path: dir.to_path_buf(),
        kind: SourceKind::Quantized,
        dtypes,
        head_bits: m.head_bits,
    })
}
