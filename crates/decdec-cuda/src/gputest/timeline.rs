//! gpu-test of the step timeline (`bench decode --timeline`): the instrumented kernels compute
//! exactly what the plain ones do, and their records line up with the captured launches.

use anyhow::Result;

use super::Report;
use crate::compile;
use crate::engine::{CudaEngine, CudaOptions};
use crate::gpu::Dtype;

/// `synthetic:tiny`, 3-bit with DEC at k_chunk 4: a 40-token context, then greedy steps with
/// the plain kernels and with the stamped ones.
pub(crate) fn timeline_checks(dt: Dtype, rep: &mut Report) -> Result<()> {
    use decdec_model::model::Logits;
    use decdec_model::Engine;
    let context: Vec<u32> = (0..40u32).map(|i| (i * 7919 + 13) % 1000).collect();
    let steps = 12;
    let make = || -> Result<CudaEngine> {
        let opts = CudaOptions {
            dtype: dt,
            max_seq: 256,
            ..Default::default()
        };
        let mut e = CudaEngine::synthetic("tiny", 3, [4; 4], None, opts)?;
        e.set_k_chunks([4; 4]);
        e.set_dec(true);
        e.forward(&context, Logits::Last)?;
        Ok(e)
    };
    let mut plain = make()?;
    plain.greedy_steps(1, steps + 1)?;
    let want = plain.read_logits()?;
    drop(plain);
    compile::set_timeline(true);
    let stamped = (|| {
        let mut e = make()?;
        let tl = e.timeline_steps(1, steps)?;
        Ok::<_, anyhow::Error>((tl, e.read_logits()?))
    })();
    compile::set_timeline(false);
    let sfx = dt.suffix();
    // a failure here is this check's, not the whole run's
    let (tl, got) = match stamped {
        Ok(v) => v,
        Err(e) => {
            println!("timeline {sfx}: {e:#}");
            rep.add(
                format!("timeline {sfx}: recorded and matched (error above)"),
                1.0,
                0.0,
            );
            return Ok(());
        }
    };
    let mism = want
        .iter()
        .zip(&got)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    rep.add(
        format!("timeline build: logits after {steps} steps == plain kernels' {sfx} (mismatches)"),
        mism as f64,
        0.0,
    );
    rep.add(
        format!("timeline {sfx}: steps recorded of {steps}"),
        (steps - tl.steps) as f64,
        0.0,
    );
    // every launch ends after it starts and is released after it starts
    let disorder = tl
        .launches
        .iter()
        .map(|l| {
            let w = l.wait_us.map_or(0.0, |w| l.start_us - w);
            (l.start_us - l.end_us).max(w).max(0.0)
        })
        .fold(0.0, f64::max);
    rep.add(
        format!("timeline {sfx}: worst start after end / wait (us)"),
        disorder,
        0.0,
    );
    // a PDL wait releases only once the previous grid has finished: a negative hand-over
    // means the SMs' clocks are misaligned (tolerance: about the fit's error)
    let early = tl
        .launches
        .iter()
        .filter_map(|l| l.handoff_us)
        .fold(0.0, |m: f64, h| m.max(-h));
    rep.add(
        format!("timeline {sfx}: worst wait release before the previous end (us)"),
        early,
        0.2,
    );
    println!("{}", tl.render());
    Ok(())
}
