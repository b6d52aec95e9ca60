//! Run-time compilation of the CUDA C++ kernels with NVRTC, cached on disk.
//!
//! The kernel sources are embedded in the binary (`include_str!`), so the crate builds without CUDA;
//! on first use they are compiled for the device's exact arch (`sm_XY` cubin, no driver JIT) and the
//! cubin is stored under `~/.cache/decdec/kernels/` keyed by a hash of source, options and NVRTC
//! version.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use cudarc::nvrtc::{result as nvrtc, sys as nsys};

pub const COMMON: &str = include_str!("../kernels/common.cuh");
/// Salient-channel selection, shared by every source.
pub const SELECT: &str = include_str!("../kernels/select.cuh");

/// (name, source) of every kernel file.
pub const SOURCES: &[(&str, &str)] = &[
    ("gemv", include_str!("../kernels/gemv.cu")),
    ("ops", include_str!("../kernels/ops.cu")),
];

/// Arches the CI compile test covers.
pub const CI_ARCHES: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90"];

static TIMELINE: AtomicBool = AtomicBool::new(false);

/// Compile the kernels with the step-timeline stamps (`bench decode --timeline`): every kernel
/// body opens with `TL_SCOPE()` and `-DDECDEC_TIMELINE` is set (common.cuh). Call before
/// [`crate::gpu::Gpu::new`]; the instrumented cubins are cached under their own key.
pub fn set_timeline(on: bool) {
    TIMELINE.store(on, Ordering::Relaxed);
}

pub fn timeline() -> bool {
    TIMELINE.load(Ordering::Relaxed)
}

/// `src` with ` TL_SCOPE("name");` after the opening brace of every `extern "C" __global__`
/// kernel (`TL_SCOPE(#NAME)` in the entry macros), on the same line, so that the `#line`
/// numbering and the macros' continuations hold.
pub fn instrument(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 8192);
    let mut rest = src;
    while let Some(i) = rest.find(KERNEL) {
        let after = &rest[i + KERNEL.len()..];
        let body = i + KERNEL.len() + after.find('{').unwrap_or(0);
        let name = match kernel_ident(after) {
            "NAME" => "#NAME".to_string(),
            n => format!("\"{n}\""),
        };
        out.push_str(&rest[..=body]);
        out.push_str(&format!(" TL_SCOPE({name});"));
        rest = &rest[body + 1..];
    }
    out.push_str(rest);
    out
}

pub fn source(name: &str) -> Result<String> {
    source_with(name, timeline())
}

/// The source NVRTC compiles, with the timeline stamps or without.
pub fn source_with(name: &str, timeline: bool) -> Result<String> {
    let (_, src) = SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow!("no kernel source {name}"))?;
    let src = if timeline {
        instrument(src)
    } else {
        src.to_string()
    };
    Ok(format!(
        "{COMMON}\n#line 1 \"select.cuh\"\n{SELECT}\n#line 1 \"{name}.cu\"\n{src}"
    ))
}

/// Every `extern "C"` kernel defined in a source file (directly or through an entry macro,
/// `GEMV_ENTRY*(name, ...)` / `DEQUANT_ENTRY(name, ...)` / `PF_ATTN_TC_ENTRY(name, ...)`).
pub fn kernel_names(name: &str) -> Vec<String> {
    let src = SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or("");
    let mut out = Vec::new();
    for line in src.lines() {
        let l = line.trim_start();
        let is_entry = (l.starts_with("GEMV_ENTRY")
            || l.starts_with("DEQUANT_ENTRY")
            || l.starts_with("PF_ATTN_TC_ENTRY")
            || l.starts_with("ATTN_SPLIT_ENTRY")
            || l.starts_with("ATTN_SPLIT_TC_ENTRY"))
            && l.split('(').next().is_some_and(|m| {
                m.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
        if let Some(rest) = l.split_once('(').map(|(_, r)| r).filter(|_| is_entry) {
            if let Some(n) = rest.split(',').next() {
                out.push(n.trim().to_string());
            }
        }
    }
    // extern "C" kernels (entry macros name theirs NAME)
    let mut rest = src;
    while let Some(i) = rest.find(KERNEL) {
        rest = &rest[i + KERNEL.len()..];
        let ident = kernel_ident(rest);
        if !ident.is_empty() && !ident.contains("NAME") {
            out.push(ident.to_string());
        }
    }
    out
}

const KERNEL: &str = "extern \"C\" __global__";

/// The name a kernel definition declares: the identifier before the first '(' of `after` (the
/// text after `extern "C" __global__`) that is not `__launch_bounds__`.
fn kernel_ident(after: &str) -> &str {
    let mut scan = after;
    while let Some(p) = scan.find('(') {
        let ident = scan[..p].split_whitespace().last().unwrap_or("");
        if ident != "__launch_bounds__" {
            return ident;
        }
        // skip the launch bounds' own parenthesis
        scan = &scan[p + 1..];
        scan = scan.find(')').map(|q| &scan[q + 1..]).unwrap_or("");
    }
    ""
}

/// FNV-1a of a kernel's name: the id a timeline record carries (common.cuh `tl_hash`).
pub fn name_hash(name: &str) -> u32 {
    name.bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619))
}

/// Include directories for the CUDA headers NVRTC needs (`cuda_fp16.h`, `cuda_bf16.h`).
/// `DECDEC_CUDA_INCLUDE` (':'-separated) wins; otherwise the usual toolkit locations.
pub fn include_paths() -> Vec<String> {
    if let Ok(v) = std::env::var("DECDEC_CUDA_INCLUDE") {
        return v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    let mut roots = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(v) = std::env::var(var) {
            roots.push(PathBuf::from(v));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    let mut out = Vec::new();
    for r in roots {
        let inc = r.join("include");
        if inc.join("cuda_fp16.h").exists() {
            out.push(inc.to_string_lossy().into_owned());
            let cccl = inc.join("cccl");
            if cccl.exists() {
                out.push(cccl.to_string_lossy().into_owned());
            }
            break;
        }
    }
    out
}

pub fn nvrtc_available() -> bool {
    unsafe { nsys::is_culib_present() }
}

fn options(arch: &str, timeline: bool) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    for p in include_paths() {
        o.push(format!("--include-path={p}"));
    }
    // tuning experiments: resident GEMV blocks per SM the registers are sized for (gemv.cu)
    o.push(format!("-DGEMV_MINB={}", gemv_minb()));
    if timeline {
        o.push("-DDECDEC_TIMELINE".to_string());
    }
    // experiments: DECDEC_DEFINES=NAME=VALUE,NAME2 adds -D options to every kernel source
    if let Ok(v) = std::env::var("DECDEC_DEFINES") {
        for d in v.split(',').filter(|d| !d.is_empty()) {
            o.push(format!("-D{d}"));
        }
    }
    o
}

/// Resident GEMV blocks per SM for the register allocation: `DECDEC_GEMV_MINB` (experiments;
/// default 3).
pub fn gemv_minb() -> usize {
    std::env::var("DECDEC_GEMV_MINB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|m| (1..=8).contains(m))
        .unwrap_or(3)
}

/// Compile one source file to a cubin for `arch` (e.g. "sm_90").
pub fn compile_cubin(name: &str, arch: &str) -> Result<Vec<u8>> {
    compile_cubin_with(name, arch, timeline())
}

/// [`compile_cubin`] with the timeline stamps or without, whatever [`set_timeline`] says.
pub fn compile_cubin_with(name: &str, arch: &str, timeline: bool) -> Result<Vec<u8>> {
    if !nvrtc_available() {
        bail!("libnvrtc was not found (install the CUDA toolkit or `pip install nvidia-cuda-nvrtc` and add its lib dir to LD_LIBRARY_PATH)");
    }
    let src = source_with(name, timeline)?;
    let prog = nvrtc::create_program(
        &std::ffi::CString::new(src)?,
        Some(&std::ffi::CString::new(format!("{name}.cu"))?),
    )
    .map_err(|e| anyhow!("nvrtcCreateProgram: {e:?}"))?;
    let opts = options(arch, timeline);
    let res = unsafe { nvrtc::compile_program(prog, &opts) };
    let log = unsafe { nvrtc::get_program_log(prog) }
        .map(|l| {
            unsafe { std::ffi::CStr::from_ptr(l.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if let Err(e) = res {
        unsafe {
            let _ = nvrtc::destroy_program(prog);
        }
        bail!("NVRTC failed to compile {name}.cu for {arch} ({e:?}) with {opts:?}:\n{log}");
    }
    let mut size = 0usize;
    let cubin = unsafe {
        let r = nsys::nvrtcGetCUBINSize(prog, &mut size);
        if r != nsys::nvrtcResult::NVRTC_SUCCESS {
            let _ = nvrtc::destroy_program(prog);
            bail!("nvrtcGetCUBINSize: {r:?}");
        }
        let mut buf = vec![0u8; size];
        let r = nsys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _);
        let _ = nvrtc::destroy_program(prog);
        if r != nsys::nvrtcResult::NVRTC_SUCCESS {
            bail!("nvrtcGetCUBIN: {r:?}");
        }
        buf
    };
    Ok(cubin)
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn nvrtc_version() -> (i32, i32) {
    let (mut a, mut b) = (0, 0);
    unsafe {
        let _ = nsys::nvrtcVersion(&mut a, &mut b);
    }
    (a, b)
}

pub fn cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DECDEC_CACHE_DIR") {
        return PathBuf::from(d).join("kernels");
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join("decdec").join("kernels")
}

/// The cubin of `name` for `arch`, from the disk cache or freshly compiled (and then cached).
pub fn cached_cubin(name: &str, arch: &str) -> Result<Vec<u8>> {
    let src = source(name)?;
    let (ma, mi) = nvrtc_version();
    let key = fnv1a(&[
        src.as_bytes(),
        options(arch, timeline()).join(" ").as_bytes(),
        format!("{ma}.{mi}").as_bytes(),
    ]);
    let dir = cache_dir();
    let path = dir.join(format!("{name}-{arch}-{key:016x}.cubin"));
    if let Ok(b) = std::fs::read(&path) {
        if !b.is_empty() {
            return Ok(b);
        }
    }
    let cubin = compile_cubin(name, arch)?;
    // Best effort: a read-only cache directory only costs a recompile next time.
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(
            ".{name}-{arch}-{key:016x}.{}.tmp",
            std::process::id()
        ));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, &path).context("cache rename");
        }
    }
    Ok(cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instrument_opens_every_kernel_body_with_the_timeline_scope() {
        for (name, src) in SOURCES {
            let kernels = src.matches(KERNEL).count();
            let out = instrument(src);
            assert!(kernels > 10, "{name}");
            assert_eq!(out.matches(" TL_SCOPE(").count(), kernels, "{name}");
            assert_eq!(
                out.lines().count(),
                src.lines().count(),
                "{name}: lines moved"
            );
            // the rewrite only inserts, right after a kernel's opening brace, the kernel's name
            let mut stripped = out.clone();
            let mut named = Vec::new();
            while let Some(i) = stripped.find(" TL_SCOPE(") {
                assert!(
                    stripped[..i].ends_with('{'),
                    "{name}: scope not after a brace"
                );
                let head = &stripped[stripped[..i].rfind(KERNEL).unwrap()..i];
                assert_eq!(
                    head.matches('{').count(),
                    1,
                    "{name}: not the kernel's own brace"
                );
                let end = i + stripped[i..].find(");").unwrap() + 2;
                let arg = stripped[i + 10..end - 2].to_string();
                if arg != "#NAME" {
                    named.push(arg.trim_matches('"').to_string());
                }
                stripped.replace_range(i..end, "");
            }
            assert_eq!(stripped, *src, "{name}");
            // every plainly defined kernel is stamped with its own name
            let names = kernel_names(name);
            for k in &named {
                assert!(names.contains(k), "{name}: stamped '{k}' is no kernel");
            }
            assert!(named.len() > 10, "{name}");
        }
    }

    #[test]
    fn name_hash_is_fnv1a_32() {
        // the published FNV-1a 32 test vectors; common.cuh's tl_hash is the same recursion
        assert_eq!(name_hash(""), 0x811c9dc5);
        assert_eq!(name_hash("a"), 0xe40c292c);
        assert_eq!(name_hash("foobar"), 0xbf9cf968);
    }
}
