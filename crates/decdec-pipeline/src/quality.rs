//! Quality sweep (docs/quality.md).
use anyhow::Result;
use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct QualityArgs {}

pub fn run_quality(_a: QualityArgs) -> Result<()> {
    Ok(())
}
