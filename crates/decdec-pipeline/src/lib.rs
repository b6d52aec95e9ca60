//! decdec-pipeline: the DecDEC setup pipeline.
//!
//! * [`calib`]    — calibration statistics of every linear input (mean |x|, Σx², DEC thresholds).
//! * [`awq`]      — AWQ activation-aware scale search and folding.
//! * [`quantize`] — rtn / awq / lut base quantization (2-8 bits, 3.5 = mixed), residuals, thresholds.
//! * [`artifact`] — the self-contained quantized directory: atomic write, hashes, `inspect` summary.
//! * [`quality`]  — the quality sweep behind docs/quality.md (perplexity vs k_chunk, recall, bytes).
//! * [`cli`]      — clap arguments and entry points of `decdec quantize` and `decdec quality`.

pub mod artifact;
pub mod awq;
pub mod calib;
pub mod cli;
pub mod quality;
pub mod quantize;
