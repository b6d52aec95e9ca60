//! Tensor sources: Hugging Face safetensors (single or sharded, memory-mapped) and GGUF files,
//! converted to f32 by name. Every error names the file and the tensor.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A dense f32 tensor with a row-major shape.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where each tensor came from, so errors can name the file.
pub struct TensorMap {
    pub tensors: BTreeMap<String, Tensor>,
    /// Source dtype per tensor (for `inspect`).
    pub dtypes: BTreeMap<String, String>,
    pub files: Vec<PathBuf>,
}

impl TensorMap {
    pub fn take(&mut self, name: &str, expect: &[usize]) -> Result<Tensor> {
        let t = self.tensors.remove(name).with_context(|| {
            format!(
                "tensor '{name}' is missing from {}",
                display_files(&self.files)
            )
        })?;
        if t.shape != expect {
            bail!(
                "tensor '{name}' in {} has shape {:?}, but the config implies {:?}",
                display_files(&self.files),
                t.shape,
                expect
            );
        }
        Ok(t)
    }

    pub fn take_opt(&mut self, name: &str, expect: &[usize]) -> Result<Option<Tensor>> {
        if self.tensors.contains_key(name) {
            self.take(name, expect).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

pub fn display_files(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the file is opened read-only; we never write through the map. A concurrent truncation by
    // another process is outside what any mmap-based loader can defend against.
    unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot mmap {}", path.display()))
}

/// Safetensors files of a Hugging Face directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing 'weight_map'", index.display()))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    bail!(
        "{}: no model.safetensors or model.safetensors.index.json",
        dir.display()
    )
}

/// Read one safetensors tensor as f32 (F32, F16, BF16 accepted).
pub fn safetensor_to_f32(
    view: &safetensors::tensor::TensorView<'_>,
    name: &str,
    file: &Path,
) -> Result<Vec<f32>> {
    use safetensors::Dtype;
    let bytes = view.data();
    let out = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!(
            "{}: tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 weights are supported",
            file.display()
        ),
    };
    Ok(out)
}

/// Load every floating-point tensor of the given safetensors files as f32.
pub fn load_safetensors(files: &[PathBuf]) -> Result<TensorMap> {
    let mut map = TensorMap {
        tensors: BTreeMap::new(),
        dtypes: BTreeMap::new(),
        files: files.to_vec(),
    };
    for file in files {
        let mm = map_file(file)?;
        let st = safetensors::SafeTensors::deserialize(&mm).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid safetensors file (truncated or corrupt header/offsets): {e}",
                file.display()
            )
        })?;
        for (name, view) in st.tensors() {
            let data = safetensor_to_f32(&view, &name, file)?;
            map.dtypes
                .insert(name.clone(), format!("{:?}", view.dtype()));
            map.tensors.insert(
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
    }
    Ok(map)
}
