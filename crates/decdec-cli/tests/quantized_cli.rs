//! The main job end to end through the binary: quantize the bundled model, inspect it, and check that
//! error compensation lowers perplexity and that generation runs with it.

mod common;
use common::*;

#[test]
fn quantize_inspect_and_compensate_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("nested/stories-rtn3");
    let calib = repo().join("data/tinyshakespeare.txt");
    let o = decdec(&[
        "quantize",
        "--model",
        stories().to_str().unwrap(),
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
    ]);
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

    let text = repo().join("data/tinystories-sample.txt");
    let ppl = |k: &str| {
        let o = decdec(&[
            "ppl",
            "--model",
            out.to_str().unwrap(),
            "--text",
            text.to_str().unwrap(),
            "--ctx",
            "256",
            "--max-chunks",
            "8",
            "--k-chunk",
            k,
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        last_json(&o)["ppl"].as_f64().unwrap()
    };
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
