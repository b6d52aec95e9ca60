//! Compiles every kernel with NVRTC for every arch CI cares about (no GPU needed, only libnvrtc and
//! the CUDA headers). Fails when `DECDEC_REQUIRE_NVRTC=1` and the library is missing.

use decdec_cuda::compile;

/// Whether libnvrtc is here; its absence fails the test when `DECDEC_REQUIRE_NVRTC=1` (CI).
fn nvrtc_here() -> bool {
    if compile::nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var("DECDEC_REQUIRE_NVRTC").as_deref() != Ok("1"),
        "DECDEC_REQUIRE_NVRTC=1 but libnvrtc could not be loaded (LD_LIBRARY_PATH?)"
    );
    eprintln!("libnvrtc not found: NVRTC compile test not run (set DECDEC_REQUIRE_NVRTC=1 to make this fatal)");
    false
}

/// `cubin`'s symbol table holds `name` (as a NUL-terminated string).
fn has_symbol(cubin: &[u8], name: &str) -> bool {
    cubin
        .windows(name.len() + 1)
        .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
}

#[test]
fn every_kernel_compiles_for_every_arch() {
    if !nvrtc_here() {
        return;
    }
    // DECDEC_NVRTC_ARCHES=sm_90,... narrows the list for a quick local check (CI sets nothing)
    let only = std::env::var("DECDEC_NVRTC_ARCHES").unwrap_or_default();
    for arch in compile::CI_ARCHES
        .iter()
        .filter(|a| only.is_empty() || only.split(',').any(|o| o == **a))
    {
        for (name, _) in compile::SOURCES {
            let cubin = compile::compile_cubin(name, arch).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(
                cubin.starts_with(b"\x7fELF"),
                "{name} for {arch} is not an ELF cubin"
            );
            // every kernel the host side looks up must be in the image's symbol table
            for k in compile::kernel_names(name) {
                assert!(
                    has_symbol(&cubin, &k),
                    "kernel {k} missing from the {name} cubin for {arch}"
                );
            }
        }
    }
}

/// The step-timeline build (`bench decode --timeline`): every kernel with its stamps, for the
/// arch of the GPUs it is meant for (sm_90; the stamps use nothing newer than sm_80).
#[test]
fn every_kernel_compiles_with_the_timeline_stamps() {
    if !nvrtc_here() {
        return;
    }
    for (name, _) in compile::SOURCES {
        let cubin =
            compile::compile_cubin_with(name, "sm_90", true).unwrap_or_else(|e| panic!("{e:#}"));
        for k in compile::kernel_names(name) {
            assert!(
                has_symbol(&cubin, &k),
                "kernel {k} missing from the instrumented {name} cubin"
            );
        }
        // the host finds the timeline's state by this symbol
        assert!(
            has_symbol(&cubin, "g_tl"),
            "g_tl missing from the instrumented {name} cubin"
        );
    }
}

#[test]
fn kernel_names_are_found_in_sources() {
    let gemv = compile::kernel_names("gemv");
    assert!(gemv.iter().any(|k| k == "gemv_u3_g128_f16"));
    assert!(gemv.iter().any(|k| k == "dec_coop_bf16"));
    let ops = compile::kernel_names("ops");
    assert!(ops.iter().any(|k| k == "rmsnorm_f16"));
    assert!(ops.iter().any(|k| k == "argmax_f32"));
    for k in ["attn_split_tc128_bf16", "attn_rope_split_tc64_f16"] {
        assert!(ops.iter().any(|n| n == k), "{k}");
    }
    assert!(!ops.iter().any(|k| k.contains('(') || k.is_empty()));
}
