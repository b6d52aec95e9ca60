//! Server metrics, rendered in the Prometheus text exposition format.

use decdec_model::engine::DecCounters;
use decdec_model::generate::GenerationOutput;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};

/// Time-to-first-token buckets in seconds (from arrival, so queue wait is included).
const TTFT_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, bounds: &[f64]) {
        let mut acc = 0;
        for (i, b) in bounds.iter().enumerate() {
            acc += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (endpoint, outcome) -> count.
    requests: BTreeMap<(&'static str, &'static str), u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    decode_tokens: u64,
    decode_seconds: f64,
    last_decode_tps: f64,
    ttft: Histogram,
    queue_wait: Histogram,
    dec: DecCounters,
}

/// Static facts shown in /metrics.
#[derive(Clone, Debug)]
pub struct MetricsInfo {
    pub model: String,
    pub backend: String,
    pub queue_capacity: usize,
    /// Error-compensation k_chunk (salient channels per 1024 input channels) per projection group
    /// (qkv, o, gate-up, down); `None` = not configured.
    pub k_chunk: Option<[usize; 4]>,
}

pub struct Metrics {
    inner: Mutex<Inner>,
    info: MetricsInfo,
}

/// Projection groups in the order of `k_chunk` (the reference implementation's order).
const K_CHUNK_GROUPS: [&str; 4] = ["qkv", "o", "gate_up", "down"];

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new(info: MetricsInfo) -> Self {
        Metrics {
            inner: Mutex::new(Inner::default()),
            info,
        }
    }

    // Counters stay meaningful after a panic elsewhere; never propagate poison into handlers.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record_outcome(&self, endpoint: &'static str, outcome: &'static str) {
        *self.lock().requests.entry((endpoint, outcome)).or_default() += 1;
    }

    pub fn record_generation(
        &self,
        endpoint: &'static str,
        outcome: &'static str,
        queue_wait: f64,
        out: &GenerationOutput,
    ) {
        let mut m = self.lock();
        *m.requests.entry((endpoint, outcome)).or_default() += 1;
        m.prompt_tokens += out.prompt_tokens as u64;
        m.completion_tokens += out.tokens.len() as u64;
        let decode_tokens = out.tokens.len().saturating_sub(1);
        m.decode_tokens += decode_tokens as u64;
        m.decode_seconds += out.decode_seconds;
        if decode_tokens > 0 {
            m.last_decode_tps = out.decode_tps();
        }
        m.queue_wait.observe(&TTFT_BUCKETS, queue_wait);
        if !out.tokens.is_empty() || out.first_token_seconds > 0.0 {
            m.ttft
                .observe(&TTFT_BUCKETS, queue_wait + out.first_token_seconds);
        }
    }

    pub fn set_dec_counters(&self, c: DecCounters) {
        self.lock().dec = c;
    }

    /// Count of requests with this outcome (all endpoints); for tests and health output.
    pub fn outcome_count(&self, outcome: &str) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn render(&self, queue_depth: usize, running: bool) -> String {
        let m = self.lock();
        let info = &self.info;
        let mut s = String::new();
        header(
            &mut s,
            "decdec_model_info",
            "gauge",
            "The served model and backend.",
        );
        let _ = writeln!(
            s,
            "decdec_model_info{{model=\"{}\",backend=\"{}\"}} 1",
            escape_label(&info.model),
            escape_label(&info.backend)
        );

        header(
            &mut s,
            "decdec_requests_total",
            "counter",
            "Requests by endpoint and outcome.",
        );
        for ((ep, outcome), n) in &m.requests {
            let _ = writeln!(
                s,
                "decdec_requests_total{{endpoint=\"{ep}\",outcome=\"{outcome}\"}} {n}"
            );
        }

        let scalars: [(&str, &str, &str, String); 10] = [
            (
                "decdec_prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
                m.prompt_tokens.to_string(),
            ),
            (
                "decdec_completion_tokens_total",
                "counter",
                "Tokens generated.",
                m.completion_tokens.to_string(),
            ),
            (
                "decdec_decode_tokens_total",
                "counter",
                "Tokens generated after each request's first (the decode phase).",
                m.decode_tokens.to_string(),
            ),
            (
                "decdec_decode_seconds_total",
                "counter",
                "Seconds spent in the decode phase.",
                m.decode_seconds.to_string(),
            ),
            (
                "decdec_decode_tokens_per_second",
                "gauge",
                "Decode speed of the last finished request.",
                m.last_decode_tps.to_string(),
            ),
            (
                "decdec_queue_depth",
                "gauge",
                "Requests waiting for the engine.",
                queue_depth.to_string(),
            ),
            (
                "decdec_queue_capacity",
                "gauge",
                "Waiting requests allowed before 429.",
                info.queue_capacity.to_string(),
            ),
            (
                "decdec_requests_running",
                "gauge",
                "Requests on the engine now (0 or 1).",
                (running as u8).to_string(),
            ),
            (
                "decdec_dec_residual_bytes_fetched_total",
                "counter",
                "Residual bytes read from host memory.",
                m.dec.bytes_fetched.to_string(),
            ),
            (
                "decdec_dec_residual_rows_fetched_total",
                "counter",
                "Residual rows fetched.",
                m.dec.rows_fetched.to_string(),
            ),
        ];
        for (name, kind, help, v) in scalars {
            header(&mut s, name, kind, help);
            let _ = writeln!(s, "{name} {v}");
        }

        for (name, help, h) in [
            (
                "decdec_time_to_first_token_seconds",
                "Arrival to first generated token.",
                &m.ttft,
            ),
            (
                "decdec_queue_wait_seconds",
                "Time requests waited in the queue.",
                &m.queue_wait,
            ),
        ] {
            header(&mut s, name, "histogram", help);
            h.render(&mut s, name, &TTFT_BUCKETS);
        }

        header(
            &mut s,
            "decdec_dec_k_chunk",
            "gauge",
            "Error compensation: residual rows fetched per 1024 input channels (0 = off).",
        );
        let k = info.k_chunk.unwrap_or([0; 4]);
        for (group, k) in K_CHUNK_GROUPS.iter().zip(k) {
            let _ = writeln!(s, "decdec_dec_k_chunk{{proj=\"{group}\"}} {k}");
        }
        s
    }
}

/// The `# HELP` and `# TYPE` lines of one metric family.
fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        let bounds = [1.0, 2.0];
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(&bounds, v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", &bounds);
        assert!(s.contains("x_bucket{le=\"1\"} 1\n"));
        assert!(s.contains("x_bucket{le=\"2\"} 3\n"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"));
        assert!(s.contains("x_count 4\n"));
        assert!(s.contains("x_sum 12.7\n"));
    }
}
