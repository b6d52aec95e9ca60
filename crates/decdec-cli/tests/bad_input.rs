//! Bad input: every case exits non-zero with a message naming the file, tensor or flag; none panics.

mod common;
use common::*;
use std::io::Write;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn ppl_args(model: &str) -> Vec<String> {
    let text = stories().join("LICENSE");
    vec![
        "ppl".into(),
        "--model".into(),
        model.into(),
        "--text".into(),
        text.to_str().unwrap().into(),
        "--ctx".into(),
        "16".into(),
    ]
}

fn run(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    decdec(&refs)
}

#[test]
fn truncated_safetensors() {
    let d = tmp();
    copy_dir(&stories(), d.path());
    let f = d.path().join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = run(&ppl_args(d.path().to_str().unwrap()));
    assert_fails_naming(&o, &["model.safetensors"]);
}

/// Rewrite the safetensors header so one tensor claims bytes beyond the data section.
#[test]
fn safetensors_header_lies_about_offsets() {
    let d = tmp();
    copy_dir(&stories(), d.path());
    let f = d.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let victim = "model.layers.2.mlp.up_proj.weight";
    let offs = header[victim]["data_offsets"].as_array().unwrap().clone();
    let start = offs[0].as_u64().unwrap();
    header[victim]["data_offsets"] = serde_json::json!([start, start + 10_000_000]);
    let new_header = serde_json::to_vec(&header).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&(new_header.len() as u64).to_le_bytes());
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&f, out).unwrap();
    let o = run(&ppl_args(d.path().to_str().unwrap()));
    assert_fails_naming(&o, &["model.safetensors"]);
}

#[test]
fn gguf_with_bad_magic() {
    let d = tmp();
    let f = d.path().join("model.gguf");
    let mut w = std::fs::File::create(&f).unwrap();
    w.write_all(b"GGUX\x03\x00\x00\x00").unwrap();
    w.write_all(&[0u8; 64]).unwrap();
    drop(w);
    std::fs::copy(
        stories().join("tokenizer.json"),
        d.path().join("tokenizer.json"),
    )
    .unwrap();
    let o = run(&ppl_args(f.to_str().unwrap()));
    assert_fails_naming(&o, &["model.gguf", "magic"]);
}

#[test]
fn gguf_with_truncated_tensor_data() {
    let d = tmp();
    let f = d.path().join("smol.gguf");
    let src = std::fs::read(smollm2_gguf()).expect("../shared SmolLM2 GGUF");
    std::fs::write(&f, &src[..src.len() * 3 / 5]).unwrap();
    let o = run(&ppl_args(f.to_str().unwrap()));
    assert_fails_naming(&o, &["smol.gguf", "truncated", "tensor '"]);
}

#[test]
fn config_with_unknown_architecture() {
    let d = tmp();
    copy_dir(&stories(), d.path());
    let cfg = d.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&ppl_args(d.path().to_str().unwrap()));
    assert_fails_naming(&o, &["config.json", "unsupported architecture 'gpt_neox'"]);
}

#[test]
fn tensor_shape_does_not_match_config() {
    let d = tmp();
    copy_dir(&stories(), d.path());
    let cfg = d.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"intermediate_size\": 172", "\"intermediate_size\": 176");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&ppl_args(d.path().to_str().unwrap()));
    assert_fails_naming(
        &o,
        &[
            "model.layers.0.mlp.gate_proj.weight",
            "[172, 64]",
            "[176, 64]",
        ],
    );
}

#[test]
fn missing_tokenizer() {
    let d = tmp();
    copy_dir(&stories(), d.path());
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let o = run(&ppl_args(d.path().to_str().unwrap()));
    assert_fails_naming(&o, &["tokenizer.json", "--tokenizer"]);
}

#[test]
fn bad_flag_values() {
    let m = stories();
    let m = m.to_str().unwrap();
    for (args, flag) in [
        (
            vec!["generate", "-m", m, "-p", "hi", "--temperature", "-1"],
            "--temperature",
        ),
        (
            vec!["generate", "-m", m, "-p", "hi", "--top-p", "0"],
            "--top-p",
        ),
        (
            vec!["generate", "-m", m, "-p", "hi", "--max-tokens", "abc"],
            "--max-tokens",
        ),
        (
            vec!["generate", "-m", m, "-p", "hi", "--max-tokens", "0"],
            "--max-tokens",
        ),
        (vec!["ppl", "-m", m, "--text", "/nonexistent.txt"], "--text"),
        (
            vec!["ppl", "-m", m, "--text", "Cargo.toml", "--ctx", "1"],
            "--ctx",
        ),
        (
            vec!["ppl", "-m", m, "--text", "Cargo.toml", "--k-chunk", "1,2"],
            "--k-chunk",
        ),
        (
            vec!["ppl", "-m", m, "--text", "Cargo.toml", "--k-chunk", "8"],
            "--k-chunk",
        ),
        (
            vec!["ppl", "-m", m, "--text", "Cargo.toml", "--select", "best"],
            "--select",
        ),
        (
            vec!["ppl", "-m", m, "--text", "Cargo.toml", "--head-bits", "5"],
            "--head-bits",
        ),
    ] {
        let o = decdec(&args);
        assert_fails_naming(&o, &[flag]);
    }
}

#[test]
fn nonexistent_model_path() {
    let o = run(&ppl_args("/definitely/not/a/model"));
    assert_fails_naming(&o, &["/definitely/not/a/model"]);
}
