//! Helpers shared by the CLI integration tests: run the real `decdec` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bundled stories260K model.
pub fn stories() -> PathBuf {
    repo().join("models/stories260K")
}

/// `../shared` beside the repository (real models and corpora).
pub fn shared() -> PathBuf {
    repo().join("../shared")
}

pub fn smollm2_gguf() -> PathBuf {
    shared().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn decdec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decdec"))
        .args(args)
        .output()
        .expect("cannot run the decdec binary")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last stdout line parsed as JSON.
pub fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out.lines().last().expect("no stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// Asserts a clean failure: non-zero exit, no panic, and stderr mentioning every `needle`.
pub fn assert_fails_naming(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "the binary panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr does not mention {n:?}: {err}");
    }
}

/// Copy a model directory into `dst` (files only).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}
