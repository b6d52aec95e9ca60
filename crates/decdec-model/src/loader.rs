//! Opening a model path: a Hugging Face directory, a GGUF file, or a decdec quantized directory.

use crate::config::ModelConfig;
use crate::model::Model;
use crate::tensors::{self, TensorMap};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Explicit tokenizer.json (otherwise: beside the model).
    pub tokenizer: Option<PathBuf>,
}

/// What kind of thing a model path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    HuggingFace,
    Gguf,
    Quantized,
}

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub kind: SourceKind,
    /// Source dtype per tensor.
    pub dtypes: std::collections::BTreeMap<String, String>,
    /// Head quantization a quantized directory asks for (its manifest's `head_bits`).
    pub head_bits: Option<u32>,
}

impl LoadedModel {
    /// Quantize the head as `flag` (`--head-bits`; 16 keeps it in full precision) or, without
    /// the flag, as the directory's manifest asks.
    pub fn apply_head_bits(&mut self, flag: Option<u32>) -> Result<()> {
        match crate::options::head_quant_bits(flag.or(self.head_bits)) {
            None => Ok(()),
            Some(b) => self.model.quantize_head(b),
        }
    }
}

fn find_tokenizer(path: &Path, opts: &LoadOptions) -> PathBuf {
    if let Some(t) = &opts.tokenizer {
        return t.clone();
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    dir.join("tokenizer.json")
}

/// Open a model. Errors name the file, tensor or field at fault.
pub fn open(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    if !path.exists() {
        bail!("model path {} does not exist", path.display());
    }
    if crate::quantized::is_quantized_dir(path) {
        return crate::quantized::open(path, opts);
    }
    let (config, map, kind) = if path.is_dir() {
        let cfg_path = path.join("config.json");
        let config = ModelConfig::from_file(&cfg_path)?;
        let files = tensors::safetensors_files(path)?;
        let map = tensors::load_safetensors(&files)?;
        (config, map, SourceKind::HuggingFace)
    } else if path.extension().and_then(|e| e.to_str()) == Some("gguf") {
        let (config, map) = load_gguf(path)?;
        (config, map, SourceKind::Gguf)
    } else {
        bail!(
            "{}: not a model directory (config.json + *.safetensors) or a .gguf file",
            path.display()
        );
    };
    let tok_path = find_tokenizer(path, opts);
    let mut tokenizer = Tokenizer::from_file(&tok_path)?;
    tokenizer.add_eos_ids(&config.eos_token_ids);
    let dtypes = map.dtypes.clone();
    let model = Model::from_tensors(config, map)
        .with_context(|| format!("cannot build the model from {}", path.display()))?;
    if tokenizer.vocab_size() > model.config.vocab_size {
        bail!(
            "tokenizer {} has {} tokens but the model's vocabulary is {}",
            tok_path.display(),
            tokenizer.vocab_size(),
            model.config.vocab_size
        );
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
        kind,
        dtypes,
        head_bits: None,
    })
}

/// A GGUF file as the original model: every tensor dequantized to f32 under its Hugging Face name
/// (q/k un-permuted back to the half-split RoPE layout), and a config.json equivalent from metadata.
fn load_gguf(path: &Path) -> Result<(ModelConfig, TensorMap)> {
    use decdec_core::gguf;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: read-only map of a file we do not modify.
    let mm = unsafe { memmap2::Mmap::map(&f) }
        .with_context(|| format!("cannot mmap {}", path.display()))?;
    let file = gguf::GgufFile::parse(&mm).with_context(|| format!("{}", path.display()))?;
    let cfg_json =
        gguf::hf_config_from_gguf(&file).with_context(|| format!("{}", path.display()))?;
    let config = ModelConfig::from_json(cfg_json).with_context(|| {
        format!(
            "{}: metadata does not describe a supported model",
            path.display()
        )
    })?;
    let mut map = TensorMap {
        tensors: Default::default(),
        dtypes: Default::default(),
        files: vec![path.to_path_buf()],
    };
    for info in file.tensors() {
        let t = gguf::load_hf_tensor(&file, info).with_context(|| format!("{}", path.display()))?;
        if let Some((name, shape, data)) = t {
            map.dtypes
                .insert(name.clone(), format!("{:?}", info.ggml_type));
            map.tensors.insert(name, tensors::Tensor { shape, data });
        }
    }
    Ok((config, map))
}
