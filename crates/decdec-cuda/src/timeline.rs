//! The decode step's timeline on the GPU's own clocks (`bench decode --timeline`).
//!
//! With the stamps compiled in (`compile::set_timeline`), every block of every kernel records
//! when it started, when its first PDL wait released it, when it first triggered its dependents
//! and when its last warp left (common.cuh `TlScope`), on its SM's cycle counter, plus one
//! global-timer reading. This module aligns the SMs' counters to the global timer, matches the
//! records to the launches the step's graph captured, and says where a step's time goes: how far
//! each launch moved the step's finish, and how long each hand-over from one kernel to the next
//! took. Nsight Systems is not available on the GPU machines; this is the stand-in.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::gpu::{Launch, TlRec};

/// A block that never waited or triggered leaves its stamp at this value.
const NONE: u64 = u64::MAX;

/// Cycles of one SM to nanoseconds of the global timer: `ns = a * (cycles - c0) + b`.
#[derive(Debug, Clone, Copy)]
struct SmClock {
    a: f64,
    b: f64,
    c0: u64,
}

impl SmClock {
    fn ns(&self, c: u64) -> f64 {
        self.a * (c.wrapping_sub(self.c0) as i64 as f64) + self.b
    }
}

/// Least-squares fit of every SM's counter against the global timer over its blocks' start
/// stamps (thousands per SM, so the fit is much finer than the timer's tick). SMs with too few
/// blocks take `ns_per_cycle` from the device's clock rate.
fn fit_clocks(recs: &[TlRec], ns_per_cycle: f64) -> (BTreeMap<u32, SmClock>, f64) {
    let g0 = recs.iter().map(|r| r.gtime).min().unwrap_or(0);
    let mut by_sm: BTreeMap<u32, Vec<(u64, f64)>> = BTreeMap::new();
    for r in recs {
        by_sm
            .entry(r.smid)
            .or_default()
            .push((r.c_start, (r.gtime - g0) as f64));
    }
    let mut fits = BTreeMap::new();
    let (mut sq, mut n) = (0.0, 0usize);
    for (sm, pts) in by_sm {
        let c0 = pts.iter().map(|p| p.0).min().unwrap_or(0);
        let xs: Vec<f64> = pts.iter().map(|p| (p.0 - c0) as f64).collect();
        let m = pts.len() as f64;
        let (mx, my) = (
            xs.iter().sum::<f64>() / m,
            pts.iter().map(|p| p.1).sum::<f64>() / m,
        );
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (x, p) in xs.iter().zip(&pts) {
            sxy += (x - mx) * (p.1 - my);
            sxx += (x - mx) * (x - mx);
        }
        // a fit needs blocks spread over at least ~100 us of the SM's cycles
        let a = if pts.len() >= 8 && sxx > 0.0 && (xs.iter().cloned().fold(0.0, f64::max) > 1e5) {
            sxy / sxx
        } else {
            ns_per_cycle
        };
        let b = my - a * mx;
        for (x, p) in xs.iter().zip(&pts) {
            let e = a * x + b - p.1;
            sq += e * e;
            n += 1;
        }
        fits.insert(sm, SmClock { a, b, c0 });
    }
    (fits, (sq / n.max(1) as f64).sqrt())
}

/// One launch of the step, in microseconds from the step's first block start (means over the
/// steps measured).
#[derive(Debug, Clone, Serialize)]
pub struct LaunchTimes {
    pub index: usize,
    /// decoder layer (-1: before or after the layers)
    pub layer: i32,
    pub role: String,
    pub kernel: String,
    pub grid: u32,
    /// first block started (the prologue before the PDL wait runs from here)
    pub start_us: f64,
    /// first block released by its PDL wait (`None`: the kernel does not wait)
    pub wait_us: Option<f64>,
    /// first block triggered its dependents
    pub trigger_us: Option<f64>,
    /// last block left
    pub end_us: f64,
    /// how far the step's finish front moved while this launch was the last to end
    pub advance_us: f64,
    /// the previous launch's end to this launch's first wait release
    pub handoff_us: Option<f64>,
}

/// What one kind of launch (role and kernel) costs a step, summed over the layers.
#[derive(Debug, Clone, Serialize)]
pub struct RoleCost {
    pub role: String,
    pub kernel: String,
    pub launches: usize,
    /// sum of the launches' advances: the step's time this kind of launch accounts for
    pub advance_us: f64,
    pub mean_duration_us: f64,
    pub mean_handoff_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// position of the first measured step
    pub first_position: usize,
    /// steps whose graph matched the first one's (the means are over these)
    pub steps: usize,
    /// steps left out: their position ran another attention tier's graph
    pub other_steps: usize,
    /// first block start to last block end, mean over the steps (instrumented kernels)
    pub step_us: f64,
    /// fitted SM clocks (MHz): lowest and highest over the SMs
    pub sm_clock_mhz: (f64, f64),
    /// RMS of the clock fit's residuals against the global timer (ns); about the timer's tick
    /// over sqrt(12) when the fit is sound
    pub clock_fit_rms_ns: f64,
    pub launches: Vec<LaunchTimes>,
    pub roles: Vec<RoleCost>,
}

/// A launch's stamps in global nanoseconds: start, first wait, first trigger, end.
type Span = (f64, Option<f64>, Option<f64>, f64);

impl Timeline {
    /// Match `recs` (every block of `steps`' launches, in any order) to the launches: %gridid
    /// numbers the launches of a context in order, so the recorded grids, sorted, are the
    /// captured launches one after another; every block's kernel id and every grid's block count
    /// must agree with its launch.
    pub fn build(
        recs: &[TlRec],
        steps: &[&[Launch]],
        first_position: usize,
        clock_khz: i32,
    ) -> Result<Timeline> {
        let mut grids: BTreeMap<u64, Vec<&TlRec>> = BTreeMap::new();
        for r in recs {
            grids.entry(r.grid).or_default().push(r);
        }
        let expected: Vec<&Launch> = steps.iter().flat_map(|s| s.iter()).collect();
        if grids.len() != expected.len() {
            bail!(
                "timeline: {} launches recorded, {} captured ({} block records): %gridid does not \
                 number the graph's launches one by one on this driver",
                grids.len(),
                expected.len(),
                recs.len()
            );
        }
        for (i, ((_, blocks), l)) in grids.iter().zip(&expected).enumerate() {
            let want = crate::compile::name_hash(&l.name);
            if let Some(r) = blocks.iter().find(|r| r.kernel != want) {
                bail!(
                    "timeline: launch {i} should be {} (id {want:#010x}), a block of it recorded \
                     kernel id {:#010x}: the grid ids do not follow the launch order",
                    l.name,
                    r.kernel
                );
            }
            if blocks.len() != l.grid as usize {
                bail!(
                    "timeline: launch {i} ({}) recorded {} blocks, its grid has {}",
                    l.name,
                    blocks.len(),
                    l.grid
                );
            }
        }
        let ns_per_cycle = 1e6 / clock_khz.max(1) as f64;
        let (clocks, rms) = fit_clocks(recs, ns_per_cycle);
        let at = |r: &TlRec, c: u64| clocks[&r.smid].ns(c);
        let spans: Vec<Span> = grids
            .values()
            .map(|blocks| {
                let min_of = |f: &dyn Fn(&TlRec) -> u64| {
                    blocks
                        .iter()
                        .filter(|r| f(r) != NONE)
                        .map(|r| at(r, f(r)))
                        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
                };
                let start = min_of(&|r| r.c_start).unwrap_or(0.0);
                let end = blocks
                    .iter()
                    .map(|r| at(r, r.c_end))
                    .fold(f64::MIN, f64::max);
                (start, min_of(&|r| r.c_wait), min_of(&|r| r.c_trig), end)
            })
            .collect();
        let mhz: Vec<f64> = clocks.values().map(|c| 1e3 / c.a).collect();
        let mut tl = Timeline {
            first_position,
            steps: 0,
            other_steps: 0,
            step_us: 0.0,
            sm_clock_mhz: (
                mhz.iter().cloned().fold(f64::MAX, f64::min),
                mhz.iter().cloned().fold(0.0, f64::max),
            ),
            clock_fit_rms_ns: rms,
            launches: Vec::new(),
            roles: Vec::new(),
        };
        let model = steps.first().copied().unwrap_or(&[]);
        let mut off = 0;
        for s in steps {
            let step = &spans[off..off + s.len()];
            off += s.len();
            if *s != model {
                tl.other_steps += 1;
                continue;
            }
            tl.add_step(s, step);
        }
        tl.finish();
        Ok(tl)
    }

    /// Add one step's launches to the sums (divided by the step count in `finish`).
    fn add_step(&mut self, launches: &[Launch], spans: &[Span]) {
        let t0 = spans.iter().map(|s| s.0).fold(f64::MAX, f64::min);
        let t_end = spans.iter().map(|s| s.3).fold(f64::MIN, f64::max);
        let us = |t: f64| (t - t0) / 1e3;
        if self.launches.is_empty() {
            self.launches = launches
                .iter()
                .enumerate()
                .map(|(i, l)| LaunchTimes {
                    index: i,
                    layer: l.layer,
                    role: l.role.to_string(),
                    kernel: l.name.clone(),
                    grid: l.grid,
                    start_us: 0.0,
                    wait_us: spans[i].1.map(|_| 0.0),
                    trigger_us: spans[i].2.map(|_| 0.0),
                    end_us: 0.0,
                    advance_us: 0.0,
                    handoff_us: (i > 0 && spans[i].1.is_some()).then_some(0.0),
                })
                .collect();
        }
        let mut front = t0;
        for (i, (lt, s)) in self.launches.iter_mut().zip(spans).enumerate() {
            lt.start_us += us(s.0);
            lt.end_us += us(s.3);
            if let (Some(acc), Some(w)) = (lt.wait_us.as_mut(), s.1) {
                *acc += us(w);
            }
            if let (Some(acc), Some(t)) = (lt.trigger_us.as_mut(), s.2) {
                *acc += us(t);
            }
            if let (Some(acc), Some(w)) = (lt.handoff_us.as_mut(), s.1) {
                *acc += (w - spans[i - 1].3) / 1e3;
            }
            lt.advance_us += (s.3 - front).max(0.0) / 1e3;
            front = front.max(s.3);
        }
        self.step_us += us(t_end);
        self.steps += 1;
    }

    fn finish(&mut self) {
        let n = self.steps.max(1) as f64;
        self.step_us /= n;
        for l in &mut self.launches {
            for v in [&mut l.start_us, &mut l.end_us, &mut l.advance_us] {
                *v /= n;
            }
            for v in [&mut l.wait_us, &mut l.trigger_us, &mut l.handoff_us]
                .into_iter()
                .flatten()
            {
                *v /= n;
            }
        }
        let mut roles: Vec<RoleCost> = Vec::new();
        let mut handoffs: Vec<usize> = Vec::new();
        for l in &self.launches {
            let i = match roles
                .iter()
                .position(|r| r.role == l.role && r.kernel == l.kernel)
            {
                Some(i) => i,
                None => {
                    roles.push(RoleCost {
                        role: l.role.clone(),
                        kernel: l.kernel.clone(),
                        launches: 0,
                        advance_us: 0.0,
                        mean_duration_us: 0.0,
                        mean_handoff_us: None,
                    });
                    handoffs.push(0);
                    roles.len() - 1
                }
            };
            let r = &mut roles[i];
            r.launches += 1;
            r.advance_us += l.advance_us;
            r.mean_duration_us += l.end_us - l.start_us;
            if let Some(h) = l.handoff_us {
                *r.mean_handoff_us.get_or_insert(0.0) += h;
                handoffs[i] += 1;
            }
        }
        for (r, h) in roles.iter_mut().zip(handoffs) {
            r.mean_duration_us /= r.launches as f64;
            if let Some(v) = r.mean_handoff_us.as_mut() {
                *v /= h as f64;
            }
        }
        self.roles = roles;
    }

    /// The report `bench decode --timeline` prints: the cost of each kind of launch, then one
    /// layer in the middle of the model launch by launch.
    pub fn render(&self) -> String {
        let mut s = format!(
            "timeline: {} steps from position {} ({} steps of another attention tier left out); \
             step {:.1} us first block start to last block end (instrumented kernels); SM clocks \
             {:.0}-{:.0} MHz, clock fit RMS {:.0} ns\n",
            self.steps,
            self.first_position,
            self.other_steps,
            self.step_us,
            self.sm_clock_mhz.0,
            self.sm_clock_mhz.1,
            self.clock_fit_rms_ns
        );
        s.push_str(&format!(
            "  {:<10} {:<32} {:>8} {:>12} {:>7} {:>13} {:>13}\n",
            "role", "kernel", "launches", "advance us", "% step", "mean dur us", "handoff us"
        ));
        for r in &self.roles {
            s.push_str(&format!(
                "  {:<10} {:<32} {:>8} {:>12.1} {:>6.1}% {:>13.2} {:>13}\n",
                r.role,
                r.kernel,
                r.launches,
                r.advance_us,
                100.0 * r.advance_us / self.step_us.max(1e-9),
                r.mean_duration_us,
                r.mean_handoff_us
                    .map_or("-".to_string(), |h| format!("{h:.2}"))
            ));
        }
        let layers = self.launches.iter().map(|l| l.layer).max().unwrap_or(-1);
        let mid = (layers + 1) / 2;
        let of_mid: Vec<&LaunchTimes> = self.launches.iter().filter(|l| l.layer == mid).collect();
        if let Some(t0) = of_mid.first().map(|l| l.start_us) {
            s.push_str(&format!(
                "  layer {mid}, us from its first launch's start:\n  {:<10} {:<32} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                "role", "kernel", "grid", "start", "wait", "trigger", "end", "advance", "handoff"
            ));
            let opt =
                |v: Option<f64>, t0: f64| v.map_or("-".to_string(), |v| format!("{:.2}", v - t0));
            for l in of_mid {
                s.push_str(&format!(
                    "  {:<10} {:<32} {:>6} {:>8.2} {:>8} {:>8} {:>8.2} {:>8.2} {:>8}\n",
                    l.role,
                    l.kernel,
                    l.grid,
                    l.start_us - t0,
                    opt(l.wait_us, t0),
                    opt(l.trigger_us, t0),
                    l.end_us - t0,
                    l.advance_us,
                    opt(l.handoff_us, 0.0)
                ));
            }
        }
        s
    }
}

/// One panel per timeline: the middle layer's launches as bars on a common microsecond axis
/// (light: from the first block's start, i.e. the prologue that PDL overlaps with the previous
/// kernel; dark: from the first wait release to the last block's end; a tick at the first
/// trigger). `bench decode --timeline-svg`.
pub fn render_svg(panels: &[(String, &Timeline)]) -> Result<String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("timeline plot: {e}");
    let layer_of = |t: &Timeline| {
        let last = t.launches.iter().map(|l| l.layer).max().unwrap_or(-1);
        let mid = (last + 1) / 2;
        t.launches
            .iter()
            .filter(|l| l.layer == mid)
            .cloned()
            .collect::<Vec<_>>()
    };
    let rows = panels
        .iter()
        .map(|(_, t)| layer_of(t).len().max(1))
        .max()
        .unwrap_or(1);
    let height = panels.len().max(1) as u32 * (60 + 22 * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for ((title, t), area) in panels.iter().zip(areas.iter()) {
            let ls = layer_of(t);
            let Some(t0) = ls.first().map(|l| l.start_us) else {
                continue;
            };
            let x_end = ls.iter().map(|l| l.end_us - t0).fold(1.0, f64::max) * 1.02;
            let mut chart = ChartBuilder::on(area)
                .caption(title.as_str(), ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(230)
                .build_cartesian_2d(0f64..x_end, 0f64..ls.len() as f64)
                .map_err(|e| err(&e))?;
            let n = ls.len();
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_label_style(("sans-serif", 12))
                .x_desc("us from the layer's first launch")
                .draw()
                .map_err(|e| err(&e))?;
            let palette = ["qkv", "attention", "o", "gate_up", "down"];
            for (i, l) in ls.iter().enumerate() {
                let y = (n - 1 - i) as f64;
                let c = Palette99::pick(palette.iter().position(|r| *r == l.role).unwrap_or(5));
                let (s, e) = (l.start_us - t0, l.end_us - t0);
                // the launch's name left of its row (rows top-down in launch order)
                let (px, py) = chart.backend_coord(&(0.0, y + 0.5));
                root.draw(&Text::new(
                    format!("{} {}", l.role, l.kernel),
                    (px - 6, py),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(|e| err(&e))?;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(s, y + 0.2), (e, y + 0.8)],
                        c.mix(0.3).filled(),
                    )))
                    .map_err(|e| err(&e))?;
                if let Some(w) = l.wait_us {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(w - t0, y + 0.2), (e, y + 0.8)],
                            c.filled(),
                        )))
                        .map_err(|e| err(&e))?;
                }
                if let Some(tr) = l.trigger_us {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(tr - t0, y + 0.1), (tr - t0, y + 0.9)],
                            BLACK.stroke_width(2),
                        )))
                        .map_err(|e| err(&e))?;
                }
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(name: &str, grid: u32, layer: i32, role: &'static str) -> Launch {
        Launch {
            name: name.to_string(),
            grid,
            layer,
            role,
        }
    }

    /// Records of a made-up step: launches of known spans (ns) on two SMs whose counters run at
    /// 2 GHz from different origins, with the global timer ticking in whole microseconds.
    fn records(
        spans: &[(u64, Option<u64>, u64)],
        launches: &[Launch],
        steps: usize,
        period: u64,
    ) -> Vec<TlRec> {
        let mut out = Vec::new();
        let mut grid_id = 1000u64;
        let cyc = |sm: u32, ns: u64| ns * 2 + if sm == 0 { 5_000_000 } else { 77_000_000 };
        for st in 0..steps as u64 {
            for (&(s, w, e), l) in spans.iter().zip(launches) {
                let g = l.grid;
                grid_id += 3;
                for b in 0..g {
                    let sm = b % 2;
                    // blocks start 10 ns apart; the last block ends at e
                    let t = st * period + s + 10 * b as u64;
                    out.push(TlRec {
                        grid: grid_id,
                        gtime: t / 1000 * 1000,
                        c_start: cyc(sm, t),
                        c_wait: w.map_or(NONE, |w| cyc(sm, st * period + w + 10 * b as u64)),
                        c_trig: NONE,
                        c_end: cyc(sm, st * period + e - 10 * (g - 1 - b) as u64),
                        smid: sm,
                        block: b,
                        kernel: crate::compile::name_hash(&l.name),
                        pad: 0,
                    });
                }
            }
        }
        // the device writes records in any order
        out.reverse();
        out.swap(0, 7);
        out
    }

    #[test]
    fn build_recovers_spans_advances_and_handoffs() {
        let launches = vec![
            launch("rmsnorm_sel_f16", 4, 0, "qkv"),
            launch("gemv_u3_g128_f16_s2", 64, 0, "qkv"),
            launch("attn_rope_decode_f16", 32, 0, "attention"),
        ];
        // (start, wait, end) in ns from the step's start
        let spans = [
            (0, None, 2_000),
            (1_000, Some(2_600), 9_000),
            (8_500, Some(9_500), 12_000),
        ];
        let steps = 40;
        let recs = records(&spans, &launches, steps, 50_000);
        let step_lists: Vec<&[Launch]> = (0..steps).map(|_| launches.as_slice()).collect();
        let tl = Timeline::build(&recs, &step_lists, 7, 1_980_000).unwrap();
        assert_eq!((tl.steps, tl.other_steps, tl.first_position), (steps, 0, 7));
        let close = |a: f64, b: f64| (a - b).abs() < 0.05;
        assert!(close(tl.step_us, 12.0), "{}", tl.step_us);
        assert!(close(tl.sm_clock_mhz.0, 2000.0) && close(tl.sm_clock_mhz.1, 2000.0));
        let l = &tl.launches;
        assert!(
            close(l[1].start_us, 1.0) && close(l[1].end_us, 9.0),
            "{:?}",
            l[1]
        );
        assert!(close(l[1].wait_us.unwrap(), 2.6));
        assert!(l[0].wait_us.is_none() && l[0].handoff_us.is_none());
        assert!(close(l[1].handoff_us.unwrap(), 0.6), "{:?}", l[1]);
        assert!(close(l[2].handoff_us.unwrap(), 0.5));
        // the finish front: 2, then +7, then +3 = the step
        let adv: Vec<f64> = l.iter().map(|l| l.advance_us).collect();
        assert!(
            close(adv[0], 2.0) && close(adv[1], 7.0) && close(adv[2], 3.0),
            "{adv:?}"
        );
        assert_eq!(tl.roles.len(), 3);
        assert!(close(
            tl.roles.iter().map(|r| r.advance_us).sum::<f64>(),
            tl.step_us
        ));
        let svg = render_svg(&[("k_chunk 0".to_string(), &tl)]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("gemv_u3_g128_f16_s2"));
        // the background, one bar per launch, a second (from the wait release) for the two
        // that wait
        assert!(svg.matches("<rect").count() >= 6, "{svg}");
        let text = tl.render();
        assert!(
            text.contains("gemv_u3_g128_f16_s2") && text.contains("layer 0"),
            "{text}"
        );
    }

    #[test]
    fn build_rejects_records_that_do_not_match_the_launches() {
        let launches = vec![launch("a", 4, -1, "embed"), launch("b", 8, 0, "qkv")];
        let spans = [(0, None, 1_000), (500, Some(1_200), 3_000)];
        let mut recs = records(&spans, &launches, 2, 10_000);
        let lists: Vec<&[Launch]> = vec![&launches, &launches];
        // a lost block
        recs.pop();
        let e = Timeline::build(&recs, &lists, 0, 1_980_000).unwrap_err();
        assert!(format!("{e}").contains("blocks"), "{e}");
        // one launch too many captured
        let recs = records(&spans, &launches, 2, 10_000);
        let three: Vec<&[Launch]> = vec![&launches, &launches, &launches[..1]];
        let e = Timeline::build(&recs, &three, 0, 1_980_000).unwrap_err();
        assert!(format!("{e}").contains("captured"), "{e}");
        // launches in another order than captured: the kernel ids tell
        let swapped = vec![launch("b", 4, 0, "qkv"), launch("a", 8, -1, "embed")];
        let lists: Vec<&[Launch]> = vec![&swapped, &swapped];
        let e = Timeline::build(&recs, &lists, 0, 1_980_000).unwrap_err();
        assert!(format!("{e}").contains("launch order"), "{e}");
    }
}
