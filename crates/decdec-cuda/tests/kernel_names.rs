//! Every GEMV kernel the host side can launch is declared in gemv.cu (no GPU or NVRTC needed;
//! `nvrtc_compile` then checks that each declared name is in the compiled image).

use decdec_cuda::compile;
use decdec_cuda::gpu::Dtype;
use decdec_cuda::linear::uniform_gemv_kernel;

#[test]
fn every_uniform_gemv_variant_is_declared() {
    let names = compile::kernel_names("gemv");
    let mut wanted = Vec::new();
    for bits in [3u32, 4] {
        for gs in [32usize, 64, 128, 256] {
            for dt in [Dtype::F16, Dtype::Bf16] {
                for stages in [2usize, 3] {
                    wanted.push(uniform_gemv_kernel(bits, gs, dt, stages, false));
                }
                // the 4-blocks-per-SM variants exist for g128 with a 2-stage ring
                if gs == 128 {
                    wanted.push(uniform_gemv_kernel(bits, gs, dt, 2, true));
                }
            }
        }
    }
    let missing: Vec<_> = wanted.iter().filter(|w| !names.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "kernels not declared in gemv.cu: {missing:?}"
    );
    assert!(names.contains(&"gemv_u3_g128_f16_s2_b4".to_string()));
}

#[test]
fn entry_macro_names_are_found_and_macro_definitions_are_not() {
    let names = compile::kernel_names("gemv");
    assert!(names.iter().any(|n| n == "dequant_u3_g128_f16"));
    assert!(names.iter().any(|n| n == "gemv_u3_g128_f16_st3"));
    assert!(!names.iter().any(|n| n.contains("NAME") || n.is_empty()));
}
