//! The remote-write path in one process, without HTTP: decode, admission, cardinality, WAL,
//! write buffer. The query bench's load (9 counter series in 10 of a `bench_requests_total`,
//! the rest histogram buckets; 2,000 series a request, time-major, one sample a series a
//! request, as Prometheus's shards send) with the server's allocator and default settings, so
//! a change to the write path can be measured in minutes instead of a release build of the
//! server and a run beside the peers (`cargo bench --bench remote_write` does that).
//!
//! `cargo bench -p vigil-ingest --bench write_path`; `VIGIL_BENCH_SERIES` (10,000) and
//! `VIGIL_BENCH_STEPS` (240) size it. Prints CPU seconds per million samples.

// A bench stops on what it set up itself failing, as the root package's benches do.
#![allow(clippy::expect_used)]

use std::time::Instant;

use prost::Message;
use vigil_ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use vigil_ingest::{Ingestor, Limits};
use vigil_storage::{Storage, StorageOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STEP_MS: i64 = 15_000;

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut labels: Vec<Label> = pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.clone() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn load(end_ms: i64, total: usize, steps: i64) -> Vec<Vec<u8>> {
    let mut series: Vec<(Vec<Label>, f64)> = Vec::new();
    for i in 0..total * 9 / 10 {
        let code = ["200", "200", "200", "500", "404"][i % 5].to_string();
        let pairs = [
            ("__name__", "bench_requests_total".to_string()),
            ("job", format!("job-{}", i % 10)),
            ("instance", format!("host-{}", i / 10)),
            ("code", code),
        ];
        series.push((labels(&pairs), 1.0 + (i % 7) as f64));
    }
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for i in 0..total / 100 {
        for (b, le) in bounds.iter().enumerate() {
            let pairs = [
                ("__name__", "bench_latency_seconds_bucket".to_string()),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("host-{i}")),
                ("le", le.to_string()),
            ];
            series.push((labels(&pairs), (b + 1) as f64));
        }
    }
    let start_ms = end_ms - steps * STEP_MS;
    let mut bodies = Vec::new();
    for step in 0..steps {
        let timestamp = start_ms + step * STEP_MS;
        for chunk in series.chunks(2_000) {
            let timeseries = chunk
                .iter()
                .map(|(labels, per_step)| TimeSeries {
                    labels: labels.clone(),
                    samples: vec![PromSample { value: per_step * step as f64, timestamp }],
                    exemplars: Vec::new(),
                    histograms: Vec::new(),
                })
                .collect();
            let raw = WriteRequest { timeseries, metadata: Vec::new() }.encode_to_vec();
            bodies.push(snap::raw::Encoder::new().compress_vec(&raw).expect("snappy compresses"));
        }
    }
    bodies
}

/// utime + stime of this process, in seconds (clock ticks of 10 ms: runs last seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    let after_name = &stat[stat.rfind(')').expect("stat names the process") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VIGIL_BENCH_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let steps: i64 = std::env::var("VIGIL_BENCH_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(240);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is past 1970").as_millis()
            as i64;
    let bodies = load(now_ms / STEP_MS * STEP_MS, total, steps);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::open(StorageOptions::new(dir.path())).await.expect("storage opens");
    let ingestor = Ingestor::new(storage, Limits::default());

    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut samples = 0;
    for body in &bodies {
        samples += ingestor.remote_write(body).await.expect("the write is accepted").samples;
    }
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    println!(
        "write path: {total} series x {steps} steps, {samples} samples in {} requests: {cpu:.2} CPU s \
         ({:.3} per million samples), {wall:.2} s",
        bodies.len(),
        cpu / samples as f64 * 1e6
    );
}
