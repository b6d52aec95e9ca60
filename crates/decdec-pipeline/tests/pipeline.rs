//! End-to-end tests of `decdec quantize` on the bundled stories260K model (and one SmolLM2 check):
//! artifact round trip, atomicity, named errors for corrupt artifacts, and perplexity behaviour of
//! error compensation.

use decdec_core::quant::QuantMethod;
use decdec_core::selection::SelectMethod;
use decdec_model::{CpuEngine, LoadOptions};
use decdec_pipeline::artifact::{self, ArtifactMeta, FailPoint, OwnedTensor};
use decdec_pipeline::cli::{quantize_to_dir, QuantizeArgs};
use decdec_pipeline::quantize::{quantize_model, BitsSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
fn stories() -> PathBuf {
    root().join("models/stories260K")
}
fn shakespeare() -> PathBuf {
    root().join("../shared/corpora/tinyshakespeare.txt")
}
fn tinystories() -> PathBuf {
    root().join("../shared/corpora/tinystories-sample.txt")
}

/// Quick calibration settings for tests (the statistics code is the same at any size).
fn args(out: &Path, method: QuantMethod, bits: BitsSpec) -> QuantizeArgs {
    let mut a = QuantizeArgs::new(&stories(), out, &shakespeare());
    a.method = method;
    a.bits = bits;
    a.calib_samples = 32;
    a.calib_seq = 256;
    a.awq_samples = 8;
    a
}

fn ppl(model: &Path, k: usize, select: SelectMethod, text: &Path, chunks: Option<usize>) -> f64 {
    let mut lm = decdec_model::open(model, &LoadOptions::default()).unwrap();
    if lm.model.has_dec() {
        lm.model.configure_dec([k; 4], select, 0).unwrap();
    } else {
        assert_eq!(k, 0);
    }
    let text = decdec_model::ppl::read_text(text).unwrap();
    let mut eng = CpuEngine::new(Arc::new(lm.model), Some(512));
    decdec_model::ppl::perplexity(&mut eng, &lm.tokenizer, &text, 512, chunks, false)
        .unwrap()
        .ppl
}

#[test]
fn artifact_round_trip_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, bits) in [
        (QuantMethod::Rtn, BitsSpec::Uniform(3)),
        (QuantMethod::Awq, BitsSpec::Uniform(4)),
        (QuantMethod::Lut, BitsSpec::Mixed35),
    ] {
        let out = tmp.path().join(format!("{method}-{bits}"));
        let a = args(&out, method, bits);
        let mut lm = decdec_model::open(&a.model, &LoadOptions::default()).unwrap();
        let corpus = decdec_model::ppl::read_text(&a.calib).unwrap();
        let qm = quantize_model(&mut lm.model, &lm.tokenizer, &corpus, &a.options(), None).unwrap();
        let manifest =
            artifact::manifest_for(&qm, &a.options(), &a.model, "huggingface", &a.calib).unwrap();
        let meta = ArtifactMeta {
            manifest,
            config_json: lm.model.config.raw.clone(),
            copy_files: artifact::tokenizer_files(&a.model, None),
        };
        let tensors = artifact::collect_tensors(&lm.model, &qm);
        artifact::write_artifact(&out, false, &meta, &tensors, FailPoint::None).unwrap();

        let loaded = decdec_model::open(&out, &LoadOptions::default()).unwrap();
        assert_eq!(loaded.kind, decdec_model::loader::SourceKind::Quantized);
        let m = &loaded.model;
        assert_eq!(m.embed, lm.model.embed);
        assert_eq!(m.norm, lm.model.norm);
        for (li, (ql, l)) in qm.layers.iter().zip(&m.layers).enumerate() {
            assert_eq!(ql.input_norm, l.input_norm);
            assert_eq!(ql.post_norm, l.post_norm);
            for (a, b) in ql.linears.iter().zip(l.linears()) {
                assert_eq!(a.name, b.name);
                let q = b.quantized().expect("quantized linear");
                assert_eq!(&a.q, q, "{}", a.name);
                assert_eq!(a.q.bits(), meta.manifest.layer_bits[li]);
                assert_eq!(a.q.dequantize(), b.dense_weight(), "{}", a.name);
                let d = b.dec.as_ref().expect("residuals attached");
                assert_eq!(a.residual, d.residual, "{}", a.name);
                assert_eq!(a.residual.decode_dense(), d.residual.decode_dense());
                assert_eq!(a.thresholds, d.thresholds);
                assert_eq!(a.act_mean, d.act_mean);
            }
        }
        if bits == BitsSpec::Mixed35 {
            let fours = meta.manifest.layer_bits.iter().filter(|&&b| b == 4).count();
            assert_eq!(fours, m.layers.len() / 2, "{:?}", meta.manifest.layer_bits);
            assert!(meta.manifest.layer_bits.iter().all(|&b| b == 3 || b == 4));
        }
        // The recorded hashes are those of the files.
        assert_eq!(
            meta.manifest.calibration.sha256,
            artifact::sha256_files(&[shakespeare()]).unwrap()
        );
        let info = artifact::inspect(&out).unwrap();
        let res_bytes: usize = qm
            .layers
            .iter()
            .flat_map(|l| &l.linears)
            .map(|l| l.residual.host_bytes())
            .sum();
        assert_eq!(
            info["bytes"]["pinned_host_residuals"].as_u64().unwrap() as usize,
            res_bytes
        );
        let qbytes: usize = qm
            .layers
            .iter()
            .flat_map(|l| &l.linears)
            .map(|l| l.q.gpu_bytes())
            .sum();
        assert_eq!(
            info["bytes"]["quantized_weights"].as_u64().unwrap() as usize,
            qbytes
        );
        // K = 172 is not a multiple of 128: inspect says what was done.
        if method != QuantMethod::Lut {
            let groups = info["groups"].to_string();
            assert!(groups.contains("partial group of 44"), "{groups}");
        }
    }
}

#[test]
fn full_compensation_with_8bit_residuals_reproduces_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = ppl(&stories(), 0, SelectMethod::Bucket, &tinystories(), None);
    for method in [QuantMethod::Rtn, QuantMethod::Awq] {
        let out = tmp.path().join(format!("{method}"));
        let mut a = args(&out, method, BitsSpec::Uniform(3));
        a.residual_bits = 8;
        quantize_to_dir(&a, None, FailPoint::None).unwrap();
        let q0 = ppl(&out, 0, SelectMethod::Bucket, &tinystories(), None);
        let full = ppl(&out, 1024, SelectMethod::Bucket, &tinystories(), None);
        assert!(
            q0 > orig * 1.2,
            "{method}: 3-bit should be clearly worse ({q0} vs {orig})"
        );
        assert!(
            (full - orig).abs() <= 0.005 * orig,
            "{method}: k_chunk 1024 with 8-bit residuals gives {full}, original {orig}"
        );
    }
}

#[test]
fn awq3_perplexity_is_non_increasing_in_k_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("awq3");
    quantize_to_dir(
        &args(&out, QuantMethod::Awq, BitsSpec::Uniform(3)),
        None,
        FailPoint::None,
    )
    .unwrap();
    let ks = [0, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
    let ppls: Vec<f64> = ks
        .iter()
        .map(|&k| ppl(&out, k, SelectMethod::Bucket, &tinystories(), None))
        .collect();
    for i in 1..ks.len() {
        assert!(
            ppls[i] <= ppls[i - 1] * 1.002,
            "k_chunk {} -> {}: ppl {} -> {} ({ppls:?})",
            ks[i - 1],
            ks[i],
            ppls[i - 1],
            ppls[i]
        );
    }
    assert!(ppls[ks.len() - 1] < ppls[0] * 0.8, "{ppls:?}");
}

#[test]
fn failed_or_interrupted_writes_leave_nothing_that_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let a = args(&out, QuantMethod::Rtn, BitsSpec::Uniform(3));
    // A failure before the rename cleans up and leaves no output.
    let e = quantize_to_dir(&a, None, FailPoint::BeforeRename).unwrap_err();
    assert!(format!("{e:#}").contains("injected"), "{e:#}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temporary directory left behind"
    );
    // A killed process leaves only a hidden, marked directory, which never loads.
    quantize_to_dir(&a, None, FailPoint::CrashBeforeRename).unwrap_err();
    assert!(!out.exists());
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left.len(), 1);
    let e = decdec_model::open(&left[0], &LoadOptions::default())
        .err()
        .expect("must not load");
    assert!(format!("{e:#}").contains("incomplete"), "{e:#}");
    std::fs::remove_dir_all(&left[0]).unwrap();
    // A complete directory is refused without --force, and survives a failed --force replacement.
    quantize_to_dir(&a, None, FailPoint::None).unwrap();
    let e = quantize_to_dir(&a, None, FailPoint::None).unwrap_err();
    assert!(format!("{e:#}").contains("--force"), "{e:#}");
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut b = args(&out, QuantMethod::Lut, BitsSpec::Uniform(4));
    b.force = true;
    quantize_to_dir(&b, None, FailPoint::BeforeRename).unwrap_err();
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    decdec_model::open(&out, &LoadOptions::default()).unwrap();
    quantize_to_dir(&b, None, FailPoint::None).unwrap();
    let m = decdec_model::quantized::read_manifest(&out).unwrap();
    assert_eq!((m.method.as_str(), m.bits), ("lut", 4.0));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "replaced directory left behind"
    );
}

/// Rewrites the artifact's tensors through `edit`.
fn rewrite(dir: &Path, edit: impl Fn(&str, &mut OwnedTensor) -> bool) {
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, OwnedTensor)> = Vec::new();
    for (name, v) in st.tensors() {
        let mut t = OwnedTensor {
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            data: v.data().to_vec(),
        };
        if edit(&name, &mut t) {
            out.push((name, t));
        }
    }
    let data = safetensors::serialize(out.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(&file, data).unwrap();
}

#[test]
fn corrupt_or_mismatched_artifacts_give_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    quantize_to_dir(
        &args(&good, QuantMethod::Rtn, BitsSpec::Uniform(3)),
        None,
        FailPoint::None,
    )
    .unwrap();
    let copy = |name: &str| -> PathBuf {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
        }
        d
    };
    let err = |d: &Path| -> String {
        format!(
            "{:#}",
            decdec_model::open(d, &LoadOptions::default())
                .err()
                .expect("must fail")
        )
    };
    let target = "model.layers.2.mlp.down_proj";
    // Missing tensor.
    let d = copy("missing");
    rewrite(&d, |n, _| n != format!("{target}.residual"));
    let e = err(&d);
    assert!(
        e.contains(&format!("'{target}.residual'")) && e.contains("missing"),
        "{e}"
    );
    // Wrong shape.
    let d = copy("shape");
    rewrite(&d, |n, t| {
        if n == format!("{target}.residual_scales") {
            t.shape = vec![t.shape[0] - 1];
            t.data.truncate(t.data.len() - 4);
        }
        true
    });
    let e = err(&d);
    assert!(
        e.contains(&format!("'{target}.residual_scales'")) && e.contains("shape"),
        "{e}"
    );
    // Wrong dtype.
    let d = copy("dtype");
    rewrite(&d, |n, t| {
        if n == format!("{target}.qweight") {
            t.dtype = safetensors::Dtype::F32;
        }
        true
    });
    let e = err(&d);
    assert!(
        e.contains(&format!("'{target}.qweight'")) && e.contains("dtype"),
        "{e}"
    );
    // Thresholds that are not non-increasing.
    let d = copy("thresholds");
    rewrite(&d, |n, t| {
        if n == format!("{target}.thresholds") {
            t.data[..4].copy_from_slice(&0f32.to_le_bytes());
        }
        true
    });
    let e = err(&d);
    assert!(e.contains(&format!("'{target}.thresholds'")), "{e}");
    // Zero points out of range for the bit width.
    let d = copy("zeros");
    rewrite(&d, |n, t| {
        if n == format!("{target}.zeros") {
            t.data[0] = 200;
        }
        true
    });
    let e = err(&d);
    assert!(
        e.contains(&format!("'{target}'")) && e.contains("zero point"),
        "{e}"
    );
    // Truncated file.
    let d = copy("truncated");
    let f = d.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..(len / 2) as usize]).unwrap();
    let e = err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // Unknown format version.
    let d = copy("version");
    let mpath = d.join("decdec.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["format_version"] = serde_json::json!(99);
    std::fs::write(&mpath, m.to_string()).unwrap();
    let e = err(&d);
    assert!(e.contains("format_version") && e.contains("99"), "{e}");
    // Layer bits that do not match the packed codes.
    let d = copy("bits");
    let mpath = d.join("decdec.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["layer_bits"][1] = serde_json::json!(4);
    std::fs::write(&mpath, m.to_string()).unwrap();
    let e = err(&d);
    assert!(
        e.contains("model.layers.1.self_attn.q_proj.qweight") && e.contains("shape"),
        "{e}"
    );
    // The untouched copy still loads.
    decdec_model::open(&good, &LoadOptions::default()).unwrap();
}

/// The numpy prototype on SmolLM2 (RTN asymmetric 3-bit, group 64, 4-bit residuals, exact
/// top-k per token; WikiText-2, ctx 512, first 4 chunks): 3-bit 111.7, k_chunk 8: 59.0, 32: 46.0,
/// 128: 36.0. Our RTN 3-bit model measures about 9% *lower* than the prototype's without compensation
/// (101.2; bf16 rounding of weights, scales or outputs moves it by < 1%, so the prototype's quantizer
/// must differ in a detail the issue does not give), and the difference shrinks as compensation grows.
/// Checked: at k_chunk 128 within 3% of the prototype; at every k_chunk not worse than the prototype by
/// more than 3%; compensation strictly improves the perplexity. Exact selection and RTN do not read the
/// calibration statistics, so a one-window calibration keeps this test cheap.
#[test]
fn smollm2_rtn3_g64_exact_topk_matches_the_numpy_prototype() {
    let model =
        root().join("../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let wiki = root().join("../shared/corpora/wikitext2-test-nonempty.txt");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rtn3g64");
    let mut a = QuantizeArgs::new(&model, &out, &shakespeare());
    a.method = QuantMethod::Rtn;
    a.bits = BitsSpec::Uniform(3);
    a.group_size = 64;
    a.calib_samples = 1;
    a.calib_seq = 64;
    quantize_to_dir(&a, None, FailPoint::None).unwrap();
    let lm = decdec_model::open(&out, &LoadOptions::default()).unwrap();
    let text = decdec_model::ppl::read_text(&wiki).unwrap();
    let mut model = Arc::new(lm.model);
    let mut last = f64::INFINITY;
    for (k, want) in [(0, 111.7), (8, 59.0), (32, 46.0), (128, 36.0)] {
        Arc::get_mut(&mut model)
            .expect("no engine holds the model")
            .configure_dec([k; 4], SelectMethod::Exact, 0)
            .unwrap();
        let mut eng = CpuEngine::new(model.clone(), Some(512));
        let got =
            decdec_model::ppl::perplexity(&mut eng, &lm.tokenizer, &text, 512, Some(4), false)
                .unwrap()
                .ppl;
        drop(eng);
        assert!(
            got <= want * 1.03,
            "k_chunk {k}: ppl {got:.2}, prototype {want}"
        );
        if k == 128 {
            assert!(
                (got - want).abs() <= 0.03 * want,
                "k_chunk {k}: ppl {got:.2}, prototype {want}"
            );
        }
        assert!(
            got < last,
            "k_chunk {k}: ppl {got:.2} does not improve on {last:.2}"
        );
        last = got;
    }
}
