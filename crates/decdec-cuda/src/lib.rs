//! decdec-cuda: the CUDA backend of decdec.
//!
//! * [`gpu`]     — context, buffers, mapped pinned host memory, launches, events, CUDA graphs.
//! * [`compile`] — NVRTC compilation of the embedded kernels for the device's arch, disk cache.

pub mod compile;
pub mod gpu;
