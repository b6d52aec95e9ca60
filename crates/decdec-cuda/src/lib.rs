//! decdec-cuda: the CUDA backend of decdec.
//!
//! * [`gpu`]     — context, buffers, mapped pinned host memory, launches, events, CUDA graphs.
//! * [`compile`] — NVRTC compilation of the embedded kernels (`kernels/*.cu`) for the device's arch,
//!   cached on disk.
//! * [`repack`]  — canonical quantized formats (docs/formats.md) -> the tiled GPU layout.
//! * [`linear`]  — quantized linear layers on the GPU, DEC residual store, GEMV(+DEC) launches.
//! * [`engine`]  — `CudaEngine` (decdec_model::Engine): the decode step as a CUDA graph; synthetic models.
//! * [`bench`], [`gputest`], [`cli`] — `decdec bench kernels`, `decdec gpu-test`.

pub mod bench;
pub mod cli;
pub mod compile;
pub mod engine;
pub mod gpu;
pub mod gputest;
pub mod linear;
pub mod parity;
pub mod repack;
pub mod timeline;
