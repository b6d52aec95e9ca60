//! The main job end to end through the binary: quantize the bundled model, inspect it, and check that
//! error compensation lowers perplexity and that generation runs with it.

mod common;
use common::*;

/// `decdec quantize` of the bundled model, RTN 3-bit, into `out` with `extra` flags.
fn quantize_rtn3(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let (model, calib) = (stories(), repo().join("data/tinyshakespeare.txt"));
    let mut args = vec![
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--method",
        "rtn",
        "--bits",
        "3",
        "--calib",
        calib.to_str().unwrap(),
        "--calib-samples",
        "16",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    decdec(&args)
}

/// `decdec ppl --json` of `dir` on 8 chunks of 256 tokens of the TinyStories sample.
fn ppl_of(dir: &std::path::Path, extra: &[&str]) -> f64 {
    let text = repo().join("data/tinystories-sample.txt");
    let mut args = vec![
        "ppl",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--ctx",
        "256",
        "--max-chunks",
        "8",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = decdec(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    last_json(&o)["ppl"].as_f64().unwrap()
}

#[test]
fn quantize_inspect_and_compensate_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("nested/stories-rtn3");
    let calib = repo().join("data/tinyshakespeare.txt");
    let o = quantize_rtn3(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A second quantize into the same directory is refused without --force.
    let again = decdec(&[
        "quantize",
        "--model",
        stories().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--quiet",
    ]);
    assert_fails_naming(&again, &["--force"]);

    let o = decdec(&["inspect", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["quantized"]["method"], "rtn");
    assert_eq!(
        j["quantized"]["layer_bits"],
        serde_json::json!([3, 3, 3, 3, 3])
    );
    assert!(
        j["quantized"]["bytes"]["pinned_host_residuals"]
            .as_u64()
            .unwrap()
            > 0
    );

    let ppl = |k: &str| ppl_of(&out, &["--k-chunk", k]);
    let (p0, p64, p1024) = (ppl("0"), ppl("64"), ppl("1024"));
    assert!(
        p64 < p0,
        "k_chunk 64 ({p64}) must beat no compensation ({p0})"
    );
    assert!(p1024 < p64, "k_chunk 1024 ({p1024}) must beat 64 ({p64})");

    let o = decdec(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "16",
        "--k-chunk",
        "8,8,16,32",
        "--select",
        "exact",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).len() > "Once upon a time".len());
}

/// `decdec quantize --head-bits 8` records the head quantization in the manifest: the directory
/// then runs with the 8-bit head by default (the same perplexity as `--head-bits 8` on a
/// directory quantized without it), and `--head-bits 16` restores the full-precision head.
#[test]
fn quantize_records_the_head_bits() {
    let d = tempfile::tempdir().unwrap();
    let quantize = |out: &std::path::Path, extra: &[&str]| {
        let o = quantize_rtn3(out, extra);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let (with, plain) = (d.path().join("head8"), d.path().join("plain"));
    quantize(&with, &["--head-bits", "8"]);
    quantize(&plain, &[]);
    let o = decdec(&["inspect", with.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["quantized"]["head_bits"], 8);
    let ppl = ppl_of;
    let recorded = ppl(&with, &[]);
    assert_eq!(recorded, ppl(&plain, &["--head-bits", "8"]));
    let full = ppl(&with, &["--head-bits", "16"]);
    assert_eq!(full, ppl(&plain, &[]));
    assert_ne!(recorded, full, "the recorded 8-bit head changed nothing");
}
