//! decdec-pipeline
