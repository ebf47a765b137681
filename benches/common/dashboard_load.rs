//! The query bench's load, which `ingest/benches/write_path.rs` sends too: 90 % request
//! counters (`bench_requests_total{job, instance, code}`, 10 jobs), 10 % a latency histogram
//! (`bench_latency_seconds_bucket{job, instance, le}`, 10 buckets), in remote-write requests
//! of 2,000 series each, time-major (one sample a series a request, as Prometheus's shards
//! send). The includer declares `client` (`tests/e2e/remote_write_client.rs`) beside it.

use super::client::{Label, Sample, TimeSeries, WriteRequest, encode};

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut out: Vec<Label> = pairs.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Requests of 2,000 series each, in time order: `points + 1` samples per series, `step_ms`
/// apart, the last at `end_ms`.
pub fn load(end_ms: i64, total: usize, points: i64, step_ms: i64) -> Vec<Vec<u8>> {
    let start_ms = end_ms - points * step_ms;
    let mut series: Vec<(Vec<Label>, f64)> = Vec::new();
    for i in 0..total * 9 / 10 {
        let code = ["200", "200", "200", "500", "404"][i % 5].to_string();
        series.push((
            labels(&[
                ("__name__", "bench_requests_total".into()),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("host-{}", i / 10)),
                ("code", code),
            ]),
            1.0 + (i % 7) as f64,
        ));
    }
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for i in 0..total / 100 {
        for (b, le) in bounds.iter().enumerate() {
            series.push((
                labels(&[
                    ("__name__", "bench_latency_seconds_bucket".into()),
                    ("job", format!("job-{}", i % 10)),
                    ("instance", format!("host-{i}")),
                    ("le", le.to_string()),
                ]),
                (b + 1) as f64,
            ));
        }
    }
    let mut bodies = Vec::new();
    for step in 0..=points {
        let t = start_ms + step * step_ms;
        for chunk in series.chunks(2_000) {
            let timeseries = chunk
                .iter()
                .map(|(labels, per_step)| TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample { value: per_step * step as f64, timestamp: t }],
                    exemplars: Vec::new(),
                })
                .collect();
            bodies.push(encode(&WriteRequest { timeseries }));
        }
    }
    bodies
}
