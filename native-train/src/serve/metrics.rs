//! `GET /metrics`: counters and histograms in Prometheus' text format, kept in atomics so that
//! handlers and workers never wait on each other to count.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the request latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch size buckets (inputs per model call).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Default)]
pub struct Metrics {
    requests_by_status: Mutex<BTreeMap<u16, u64>>,
    latency: Histogram,
    batch_sizes: Histogram,
    inputs_scored: AtomicU64,
    inputs_truncated: AtomicU64,
    abandoned: AtomicU64,
    ready: AtomicBool,
}

impl Metrics {
    pub fn count_request(&self, status: u16, elapsed: Duration) {
        let mut by_status = self
            .requests_by_status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *by_status.entry(status).or_default() += 1;
        self.latency.observe(LATENCY_BUCKETS, elapsed.as_secs_f64());
    }

    pub fn observe_model_call(&self, inputs: usize) {
        self.batch_sizes.observe(BATCH_BUCKETS, inputs as f64);
    }

    pub fn count_scored(&self, inputs: usize, truncated: usize) {
        self.inputs_scored.fetch_add(inputs as u64, Relaxed);
        self.inputs_truncated.fetch_add(truncated as u64, Relaxed);
    }

    /// A queued job whose caller left (disconnected or timed out) before it was scored.
    pub fn count_abandoned(&self) {
        self.abandoned.fetch_add(1, Relaxed);
    }

    #[cfg(test)]
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Relaxed)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The Prometheus text exposition of every metric; `queue_depth` is read by the caller.
    pub fn render(&self, queue_depth: usize) -> String {
        let mut out = String::new();
        let by_status = self
            .requests_by_status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        header(
            &mut out,
            "harmaug_requests_total",
            "counter",
            "HTTP requests answered, by status.",
        );
        for (status, count) in by_status {
            let _ = writeln!(out, "harmaug_requests_total{{status=\"{status}\"}} {count}");
        }
        let gauges = [
            (
                "harmaug_queue_depth",
                "Inputs waiting for a model worker.",
                queue_depth as u64,
            ),
            (
                "harmaug_ready",
                "1 once the model is loaded.",
                u64::from(self.is_ready()),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let counters = [
            (
                "harmaug_inputs_scored_total",
                "Inputs scored.",
                &self.inputs_scored,
            ),
            (
                "harmaug_inputs_truncated_total",
                "Inputs cut to the max length.",
                &self.inputs_truncated,
            ),
            (
                "harmaug_requests_abandoned_total",
                "Queued requests whose caller left.",
                &self.abandoned,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        let latency = "harmaug_request_duration_seconds";
        header(
            &mut out,
            latency,
            "histogram",
            "Time from request to answer.",
        );
        self.latency.render(&mut out, latency, LATENCY_BUCKETS);
        let batches = "harmaug_batch_size";
        header(&mut out, batches, "histogram", "Inputs per model call.");
        self.batch_sizes.render(&mut out, batches, BATCH_BUCKETS);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A cumulative histogram over fixed bucket bounds (given at each call, as consts).
#[derive(Default)]
struct Histogram(Mutex<HistogramCounts>);

#[derive(Default, Clone)]
struct HistogramCounts {
    /// Per bucket (not cumulative), plus the +Inf bucket last; sized on first use.
    buckets: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn observe(&self, bounds: &[f64], value: f64) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.buckets.resize(bounds.len() + 1, 0);
        let bucket = bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(bounds.len());
        counts.buckets[bucket] += 1;
        counts.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, bounds: &[f64]) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        counts.buckets.resize(bounds.len() + 1, 0);
        let mut cumulative = 0;
        for (bound, count) in bounds.iter().zip(&counts.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += counts.buckets[bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", counts.sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_and_counts() {
        let metrics = Metrics::default();
        metrics.observe_model_call(3);
        metrics.observe_model_call(32);
        metrics.observe_model_call(1000);
        metrics.count_request(200, Duration::from_millis(20));
        metrics.count_request(200, Duration::from_millis(20));
        metrics.count_request(429, Duration::from_millis(1));
        let text = metrics.render(5);
        for line in [
            "harmaug_batch_size_bucket{le=\"2\"} 0",
            "harmaug_batch_size_bucket{le=\"4\"} 1",
            "harmaug_batch_size_bucket{le=\"32\"} 2",
            "harmaug_batch_size_bucket{le=\"+Inf\"} 3",
            "harmaug_batch_size_sum 1035",
            "harmaug_batch_size_count 3",
            "harmaug_requests_total{status=\"200\"} 2",
            "harmaug_requests_total{status=\"429\"} 1",
            "harmaug_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "harmaug_request_duration_seconds_bucket{le=\"0.025\"} 3",
            "harmaug_queue_depth 5",
            "harmaug_ready 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
