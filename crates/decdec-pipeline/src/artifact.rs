//! The quantized model directory (layout in `decdec_model::quantized`): atomic writing, hashing,
//! and the `inspect` summary.
//!
//! Writing: everything goes to a hidden temporary directory beside the target that carries an
//! "incomplete" marker; files are fsynced, the marker is removed, and the directory is renamed into
//! place. An existing target is refused unless `force`, in which case it is renamed aside first and
//! deleted only after the new one is in place, so at every instant the target path is either the old
//! complete directory, absent, or the new complete one.

use crate::quantize::{QuantizeOptions, QuantizedModel};
use anyhow::{bail, ensure, Context, Result};
use decdec_core::quant::QuantWeight;
use decdec_model::quantized::{
    self, tensor_name, CalibrationInfo, Manifest, SourceInfo, FORMAT, FORMAT_VERSION,
    INCOMPLETE_MARKER, MANIFEST, WEIGHTS_FILE,
};
use decdec_model::Model;
use safetensors::Dtype;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// An owned tensor for safetensors serialization.
pub struct OwnedTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> Self {
        OwnedTensor {
            dtype: Dtype::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn u32(shape: Vec<usize>, v: &[u32]) -> Self {
        OwnedTensor {
            dtype: Dtype::U32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn u8(shape: Vec<usize>, v: &[u8]) -> Self {
        OwnedTensor {
            dtype: Dtype::U8,
            shape,
            data: v.to_vec(),
        }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// SHA-256 of files, in order, as lowercase hex.
pub fn sha256_files(files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file = File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", f.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The tensors of a quantized model: non-quantized tensors from `model` (embedding, final norm,
/// untied head), per-layer norms and linears from `qm`.
pub fn collect_tensors(model: &Model, qm: &QuantizedModel) -> Vec<(String, OwnedTensor)> {
    let c = &model.config;
    let (h, v) = (c.hidden_size, c.vocab_size);
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_string(),
            OwnedTensor::f32(vec![v, h], &model.embed),
        ),
        (
            "model.norm.weight".to_string(),
            OwnedTensor::f32(vec![h], &model.norm),
        ),
    ];
    if let Some(head) = &model.lm_head {
        out.push((
            "lm_head.weight".to_string(),
            OwnedTensor::f32(vec![v, h], head),
        ));
    }
    for (i, l) in qm.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((
            format!("{p}.input_layernorm.weight"),
            OwnedTensor::f32(vec![h], &l.input_norm),
        ));
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            OwnedTensor::f32(vec![h], &l.post_norm),
        ));
        for ql in &l.linears {
            let name = |w: &str| tensor_name(&ql.name, w);
            let (n, k) = (ql.q.n(), ql.q.k());
            let wpr = ql.q.qweight().len() / n.max(1);
            out.push((
                name("qweight"),
                OwnedTensor::u32(vec![n, wpr], ql.q.qweight()),
            ));
            match &ql.q {
                QuantWeight::Uniform(u) => {
                    let ng = u.n_groups();
                    out.push((name("scales"), OwnedTensor::f32(vec![n, ng], &u.scales)));
                    out.push((name("zeros"), OwnedTensor::u8(vec![n, ng], &u.zeros)));
                }
                QuantWeight::Lut(lq) => {
                    out.push((name("lut"), OwnedTensor::f32(vec![n, lq.levels()], &lq.lut)));
                }
            }
            let r = &ql.residual;
            out.push((
                name("residual"),
                OwnedTensor::u32(vec![k, r.words_per_row], &r.codes),
            ));
            out.push((
                name("residual_scales"),
                OwnedTensor::f32(vec![n], &r.scales),
            ));
            out.push((
                name("thresholds"),
                OwnedTensor::f32(vec![k], &ql.thresholds),
            ));
            out.push((name("act_mean"), OwnedTensor::f32(vec![k], &ql.act_mean)));
            out.push((name("act_sq"), OwnedTensor::f32(vec![k], &ql.act_sq)));
            if let Some(b) = &ql.bias {
                out.push((name("bias"), OwnedTensor::f32(vec![n], b)));
            }
        }
    }
    out
}

/// Where a write may be made to fail, for tests of the atomicity guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPoint {
    None,
    /// Error after the weights are written, before the rename (the temporary directory is cleaned).
    BeforeRename,
    /// Stop as a killed process would: leave the temporary directory as it is.
    CrashBeforeRename,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", path.display()))
}

/// Everything a directory holds besides the tensors.
pub struct ArtifactMeta {
    pub manifest: Manifest,
    pub config_json: serde_json::Value,
    /// (file name in the directory, source path).
    pub copy_files: Vec<(String, PathBuf)>,
}

fn temp_name(out: &Path, what: &str) -> Result<PathBuf> {
    let parent = out
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .with_context(|| format!("--out {}: not a directory name", out.display()))?
        .to_string_lossy()
        .to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ok(parent.join(format!(
        ".{name}.decdec-{what}-{}-{nanos}",
        std::process::id()
    )))
}

/// Refuses an existing `out` unless `force` (checked before any expensive work, and again at the end).
pub fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        bail!(
            "--out {} already exists; pass --force to replace it (the old directory stays intact until the new one is complete)",
            out.display()
        );
    }
    if let Some(p) = out.parent() {
        // Like `mkdir -p`: missing parents are created (they hold nothing a user could lose).
        if !p.as_os_str().is_empty() && !p.is_dir() {
            std::fs::create_dir_all(p).with_context(|| {
                format!(
                    "--out {}: cannot create parent directory {}",
                    out.display(),
                    p.display()
                )
            })?;
        }
    }
    Ok(())
}

/// Writes a quantized directory atomically.
pub fn write_artifact(
    out: &Path,
    force: bool,
    meta: &ArtifactMeta,
    tensors: &[(String, OwnedTensor)],
    fail: FailPoint,
) -> Result<()> {
    check_out(out, force)?;
    let tmp = temp_name(out, "tmp")?;
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let res = (|| -> Result<()> {
        write_file(
            &tmp.join(INCOMPLETE_MARKER),
            b"decdec quantize in progress\n",
        )?;
        write_file(
            &tmp.join("config.json"),
            serde_json::to_string_pretty(&meta.config_json)?.as_bytes(),
        )?;
        for (name, src) in &meta.copy_files {
            let bytes =
                std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
            write_file(&tmp.join(name), &bytes)?;
        }
        let mut info = std::collections::HashMap::new();
        info.insert("format".to_string(), FORMAT.to_string());
        let bytes =
            safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
                .map_err(|e| anyhow::anyhow!("cannot serialize tensors: {e}"))?;
        write_file(&tmp.join(WEIGHTS_FILE), &bytes)?;
        write_file(
            &tmp.join(MANIFEST),
            serde_json::to_string_pretty(&meta.manifest)?.as_bytes(),
        )?;
        if fail != FailPoint::None {
            bail!("injected failure before the final rename");
        }
        std::fs::remove_file(tmp.join(INCOMPLETE_MARKER))?;
        sync_dir(&tmp)?;
        if out.exists() {
            check_out(out, force)?;
            let old = temp_name(out, "old")?;
            std::fs::rename(out, &old)
                .with_context(|| format!("cannot move the old {} aside", out.display()))?;
            if let Err(e) = std::fs::rename(&tmp, out) {
                let _ = std::fs::rename(&old, out);
                return Err(e).with_context(|| format!("cannot rename into {}", out.display()));
            }
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the replaced {}", old.display()))?;
        } else {
            std::fs::rename(&tmp, out)
                .with_context(|| format!("cannot rename into {}", out.display()))?;
        }
        if let Some(p) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(p)?;
        }
        Ok(())
    })();
    if res.is_err() && fail != FailPoint::CrashBeforeRename {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

/// Tokenizer and related files copied from beside the source model.
pub fn tokenizer_files(source: &Path, tokenizer: Option<&Path>) -> Vec<(String, PathBuf)> {
    let dir = if source.is_dir() {
        source.to_path_buf()
    } else {
        source.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut out = Vec::new();
    match tokenizer {
        Some(t) => out.push(("tokenizer.json".to_string(), t.to_path_buf())),
        None => out.push(("tokenizer.json".to_string(), dir.join("tokenizer.json"))),
    }
    let tdir = tokenizer
        .and_then(|t| t.parent().map(Path::to_path_buf))
        .unwrap_or(dir);
    for f in [
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        if tdir.join(f).is_file() {
            out.push((f.to_string(), tdir.join(f)));
        }
    }
    out
}

/// Weight files of the source model (what its hash covers).
pub fn source_files(source: &Path) -> Result<Vec<PathBuf>> {
    if source.is_dir() {
        decdec_model::tensors::safetensors_files(source)
    } else {
        Ok(vec![source.to_path_buf()])
    }
}

/// Builds the manifest of a quantization run.
pub fn manifest_for(
    qm: &QuantizedModel,
    opts: &QuantizeOptions,
    source: &Path,
    source_kind: &str,
    corpus: &Path,
) -> Result<Manifest> {
    Ok(Manifest {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        method: opts.method.to_string(),
        bits: opts.bits.as_f64(),
        layer_bits: qm.layers.iter().map(|l| l.bits).collect(),
        group_size: (opts.method != decdec_core::quant::QuantMethod::Lut)
            .then_some(opts.group_size),
        residual_bits: opts.residual_bits,
        weights_file: WEIGHTS_FILE.to_string(),
        calibration: CalibrationInfo {
            corpus: corpus
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            sha256: sha256_files(&[corpus.to_path_buf()])?,
            samples: opts.calib_samples,
            seq_len: opts.calib_seq,
            tokens: qm.calib_tokens,
        },
        source: SourceInfo {
            path: source.display().to_string(),
            sha256: sha256_files(&source_files(source)?)?,
            kind: source_kind.to_string(),
        },
        details: qm.details.clone(),
        head_bits: opts.head_bits,
    })
}

fn describe_groups(k: usize, g: usize) -> String {
    if k.is_multiple_of(g) {
        format!("K={k}: {} groups of {g}", k / g)
    } else {
        format!(
            "K={k}: {} groups of {g} and a last partial group of {} (scales/zeros per group as usual)",
            k / g,
            k % g
        )
    }
}

/// Summary of a quantized directory for `decdec inspect` (reads the header, not the tensor data).
pub fn inspect(dir: &Path) -> Result<serde_json::Value> {
    let m = quantized::read_manifest(dir)?;
    let config = decdec_model::ModelConfig::from_file(&dir.join("config.json"))?;
    ensure!(
        m.layer_bits.len() == config.num_layers,
        "{}: layer_bits does not match config.json",
        dir.display()
    );
    quantized::with_tensors(dir, &m, |tf| {
        let bytes_of =
            |name: &str| -> usize { tf.st.tensor(name).map(|v| v.data().len()).unwrap_or(0) };
        let (mut qbytes, mut rbytes, mut thr_bytes, mut stat_bytes) =
            (0usize, 0usize, 0usize, 0usize);
        let mut dense_params = 0usize;
        let mut ks = std::collections::BTreeSet::new();
        let mut per_layer = Vec::new();
        for i in 0..config.num_layers {
            let (mut lq, mut lr) = (0usize, 0usize);
            for (name, _, _, k) in quantized::layer_linears(&config, i) {
                ks.insert(k);
                let t = |w: &str| tensor_name(&name, w);
                lq += bytes_of(&t("qweight"))
                    + bytes_of(&t("scales"))
                    + bytes_of(&t("zeros"))
                    + bytes_of(&t("lut"));
                lr += bytes_of(&t("residual")) + bytes_of(&t("residual_scales"));
                thr_bytes += bytes_of(&t("thresholds"));
                stat_bytes += bytes_of(&t("act_mean")) + bytes_of(&t("act_sq"));
                dense_params += bytes_of(&t("bias")) / 4;
            }
            let p = format!("model.layers.{i}");
            dense_params += (bytes_of(&format!("{p}.input_layernorm.weight"))
                + bytes_of(&format!("{p}.post_attention_layernorm.weight")))
                / 4;
            per_layer.push(json!({"layer": i, "bits": m.layer_bits[i], "weight_bytes": lq, "residual_bytes": lr}));
            qbytes += lq;
            rbytes += lr;
        }
        for n in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
        ] {
            dense_params += bytes_of(n) / 4;
        }
        let groups = match m.group_size {
            Some(g) => ks
                .iter()
                .map(|&k| describe_groups(k, g))
                .collect::<Vec<_>>(),
            None => {
                vec!["lut: one 2^bits-entry codebook per output channel (no groups)".to_string()]
            }
        };
        let gpu = qbytes + thr_bytes + 2 * dense_params;
        Ok(json!({
            "format": m.format,
            "format_version": m.format_version,
            "method": m.method,
            "bits": m.bits,
            "layer_bits": m.layer_bits,
            "group_size": m.group_size,
            "groups": groups,
            "residual_bits": m.residual_bits,
            "head_bits": m.head_bits,
            "calibration": m.calibration,
            "source": m.source,
            "bytes": {
                "quantized_weights": qbytes,
                "thresholds": thr_bytes,
                "dense_params": dense_params,
                "dense_f16": 2 * dense_params,
                "gpu_resident": gpu,
                "gpu_resident_note": "quantized weights + thresholds + non-quantized tensors (embedding, norms, head) at f16",
                "pinned_host_residuals": rbytes,
                "calibration_stats_not_loaded": stat_bytes,
            },
            "layers": per_layer,
            "file_bytes": std::fs::metadata(&tf.file).map(|md| md.len()).unwrap_or(0),
        }))
    })
}
