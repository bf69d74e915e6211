//! Prometheus counters, gauges and histograms, kept with atomics and written in the text
//! exposition format (no registry crate: a handful of series).

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch-size histogram, in records.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram over fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, as f64 bits (updated under the lock-free loop below).
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if value <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let join = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{labels}}}"),
            (false, false) => format!("{{{labels},{extra}}}"),
        };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                join(&format!("le=\"{bound}\"")),
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{} {total}", join("le=\"+Inf\""));
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            join(""),
            f64::from_bits(self.sum.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count{} {total}", join(""));
    }
}

/// The server's measurements.
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    batches: Histogram,
    rejected: AtomicU64,
    decode_failures: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            batches: Histogram::new(&BATCH_BUCKETS),
            rejected: AtomicU64::new(0),
            decode_failures: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// A request to `endpoint` answered with `status` after `seconds`.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            latency
                .entry(endpoint.to_string())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(seconds);
        }
    }

    /// A pass through the model of `records` records.
    pub fn batch(&self, records: usize) {
        self.batches.observe(records as f64);
    }

    /// A request refused because the queue was full.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A file of `modality` that could not be used (or a record with none, `record`).
    pub fn decode_failure(&self, modality: &str) {
        if let Ok(mut failures) = self.decode_failures.lock() {
            *failures.entry(modality.to_string()).or_default() += 1;
        }
    }

    /// Requests refused because the queue was full, so far.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The text exposition of every series, with the queue's current depth and load.
    pub fn render(&self, queue_depth: usize, in_flight: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP fusion_requests_total Requests answered, by endpoint and status."
        );
        let _ = writeln!(out, "# TYPE fusion_requests_total counter");
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "fusion_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP fusion_request_duration_seconds Time from a request's arrival to its answer."
        );
        let _ = writeln!(out, "# TYPE fusion_request_duration_seconds histogram");
        if let Ok(latency) = self.latency.lock() {
            for (endpoint, histogram) in latency.iter() {
                histogram.write(
                    &mut out,
                    "fusion_request_duration_seconds",
                    &format!("endpoint=\"{endpoint}\""),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP fusion_batch_records Records in each pass through the model."
        );
        let _ = writeln!(out, "# TYPE fusion_batch_records histogram");
        self.batches.write(&mut out, "fusion_batch_records", "");
        let _ = writeln!(
            out,
            "# HELP fusion_queue_depth Requests decoded and waiting for the model."
        );
        let _ = writeln!(out, "# TYPE fusion_queue_depth gauge");
        let _ = writeln!(out, "fusion_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP fusion_records_in_flight Records admitted and not yet answered."
        );
        let _ = writeln!(out, "# TYPE fusion_records_in_flight gauge");
        let _ = writeln!(out, "fusion_records_in_flight {in_flight}");
        let _ = writeln!(
            out,
            "# HELP fusion_rejected_total Requests refused because the queue was full."
        );
        let _ = writeln!(out, "# TYPE fusion_rejected_total counter");
        let _ = writeln!(out, "fusion_rejected_total {}", self.rejected_count());
        let _ = writeln!(
            out,
            "# HELP fusion_decode_failures_total Files that could not be used, by modality."
        );
        let _ = writeln!(out, "# TYPE fusion_decode_failures_total counter");
        if let Ok(failures) = self.decode_failures.lock() {
            for (modality, count) in failures.iter() {
                let _ = writeln!(out, "fusion_decode_failures_total{{modality=\"{modality}\"}} {count}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::default();
        for records in [1, 3, 3, 40] {
            metrics.batch(records);
        }
        metrics.request("predict", 200, 0.004);
        metrics.request("predict", 429, 0.0001);
        metrics.decode_failure("image");
        metrics.rejected();
        let text = metrics.render(2, 5);
        for line in [
            "fusion_batch_records_bucket{le=\"1\"} 1",
            "fusion_batch_records_bucket{le=\"2\"} 1",
            "fusion_batch_records_bucket{le=\"4\"} 3",
            "fusion_batch_records_bucket{le=\"32\"} 3",
            "fusion_batch_records_bucket{le=\"64\"} 4",
            "fusion_batch_records_bucket{le=\"+Inf\"} 4",
            "fusion_batch_records_sum 47",
            "fusion_batch_records_count 4",
            "fusion_requests_total{endpoint=\"predict\",status=\"200\"} 1",
            "fusion_requests_total{endpoint=\"predict\",status=\"429\"} 1",
            "fusion_request_duration_seconds_bucket{endpoint=\"predict\",le=\"0.001\"} 1",
            "fusion_request_duration_seconds_bucket{endpoint=\"predict\",le=\"0.005\"} 2",
            "fusion_queue_depth 2",
            "fusion_records_in_flight 5",
            "fusion_rejected_total 1",
            "fusion_decode_failures_total{modality=\"image\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
