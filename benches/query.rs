//! Dashboard queries, Vigil beside Prometheus 2.42 on the same data in the same run.
//!
//! Data: 10,000 series over 24 h at one sample per 60 s (14.4 M samples): 9,000 request
//! counters (`bench_requests_total{job, instance, code}`, 10 jobs) and a latency histogram of
//! 1,000 bucket series (`bench_latency_seconds_bucket{job, instance, le}`, 100 instances × 10
//! buckets), sent to both by remote write in time order.
//!
//! Queries (query_range), each over the last 1 h (step 15 s) and the whole 24 h (step 5 m):
//!   sum by (job) (rate(bench_requests_total[5m]))
//!   histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m])))
//! Reports the median of 5 runs and the peak RSS growth during them (VmHWM reset before).
//!
//!     cargo bench --bench query            (needs /usr/bin/prometheus)

#[path = "../tests/e2e/remote_write_client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::{Label, Sample, TimeSeries, WriteRequest, encode};
use common::{VigilProcess, port, wait_ready};

const STEP_MS: i64 = 60_000;
const POINTS: i64 = 24 * 60;
const RUNS: usize = 5;

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut out: Vec<Label> = pairs.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Requests of 2,000 series each, in time order.
fn load(end_ms: i64) -> Vec<Vec<u8>> {
    let start_ms = end_ms - POINTS * STEP_MS;
    let mut series: Vec<(Vec<Label>, f64)> = Vec::new();
    for i in 0..9_000 {
        let code = ["200", "200", "200", "500", "404"][i % 5].to_string();
        series.push((
            labels(&[("__name__", "bench_requests_total".into()), ("job", format!("job-{}", i % 10)), ("instance", format!("host-{}", i / 10)), ("code", code)]),
            1.0 + (i % 7) as f64,
        ));
    }
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for i in 0..100 {
        for (b, le) in bounds.iter().enumerate() {
            series.push((
                labels(&[("__name__", "bench_latency_seconds_bucket".into()), ("job", format!("job-{}", i % 10)), ("instance", format!("host-{i}")), ("le", le.to_string())]),
                (b + 1) as f64,
            ));
        }
    }
    let mut bodies = Vec::new();
    for step in 0..=POINTS {
        let t = start_ms + step * STEP_MS;
        for chunk in series.chunks(2_000) {
            let timeseries = chunk
                .iter()
                .map(|(labels, per_step)| TimeSeries { labels: labels.clone(), samples: vec![Sample { value: per_step * step as f64, timestamp: t }] })
                .collect();
            bodies.push(encode(&WriteRequest { timeseries }));
        }
    }
    bodies
}

async fn send_all(url: &str, bodies: &[Vec<u8>]) {
    let client = reqwest::Client::new();
    for body in bodies {
        loop {
            let (status, text) = client::send(&client, url, body.clone()).await;
            match status {
                200..=299 => break,
                429 | 500..=599 => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => panic!("{url}: {status} {text}"),
            }
        }
    }
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// Median latency (ms) of RUNS query_range calls, and peak RSS growth (MiB) during them.
async fn measure(base: &str, pid: u32, query: &str, start: i64, end: i64, step: i64) -> (f64, f64, usize) {
    let client = reqwest::Client::new();
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = rss_mib(pid, "VmRSS:");
    let mut times = Vec::new();
    let mut series = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let response: serde_json::Value = client
            .get(format!("{base}/api/v1/query_range"))
            .query(&[("query", query.to_string()), ("start", (start / 1000).to_string()), ("end", (end / 1000).to_string()), ("step", (step / 1000).to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response["status"], "success", "{response}");
        series = response["data"]["result"].as_array().map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], rss_mib(pid, "VmHWM:") - before, series)
}

#[tokio::main]
async fn main() {
    let end_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 / STEP_MS * STEP_MS;
    let bodies = load(end_ms);
    println!("load: 10000 series x {} samples, {} requests", POINTS + 1, bodies.len());
    let work = tempfile::tempdir().unwrap();

    let vigil = VigilProcess::start(&work.path().join("vigil"), &["--wal-fsync", "never", "--retention", "0"]).await;
    let vigil_base = format!("http://127.0.0.1:{}", vigil.http);
    let started = Instant::now();
    send_all(&format!("{vigil_base}/api/v1/write"), &bodies).await;
    println!("vigil ingested in {:.1} s", started.elapsed().as_secs_f64());

    let prometheus_port = port();
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1m}\nscrape_configs: []\n").unwrap();
    let mut prometheus = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("prometheus").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .args(["--web.enable-remote-write-receiver", "--log.level=warn", "--storage.tsdb.retention.time=30d"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let prometheus_base = format!("http://127.0.0.1:{prometheus_port}");
    wait_ready(&format!("{prometheus_base}/-/ready")).await;
    let started = Instant::now();
    send_all(&format!("{prometheus_base}/api/v1/write"), &bodies).await;
    println!("prometheus ingested in {:.1} s", started.elapsed().as_secs_f64());

    let queries = [
        ("rate by job", "sum by (job) (rate(bench_requests_total[5m]))"),
        ("p99 histogram", "histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m])))"),
    ];
    let windows = [("1h", end_ms - 3_600_000, 15_000), ("24h", end_ms - POINTS * STEP_MS + 600_000, 300_000)];
    println!("\n{:<14} {:>4} | {:>10} {:>9} | {:>10} {:>9} | {:>7}", "query", "span", "vigil ms", "vigil MiB", "prom ms", "prom MiB", "ratio");
    for (name, query) in queries {
        for (span, start, step) in windows {
            let (v_ms, v_mib, v_series) = measure(&vigil_base, vigil.pid(), query, start, end_ms, step).await;
            let (p_ms, p_mib, p_series) = measure(&prometheus_base, prometheus.id(), query, start, end_ms, step).await;
            assert_eq!(v_series, p_series, "{name} {span}: series count differs");
            println!("{name:<14} {span:>4} | {v_ms:>10.1} {v_mib:>9.1} | {p_ms:>10.1} {p_mib:>9.1} | {:>6.2}x", v_ms / p_ms);
        }
    }
    // Memory at rest: what each keeps once the queries are over (allocators return freed
    // memory on their own schedule; jemalloc's decay is 10 s).
    tokio::time::sleep(Duration::from_secs(20)).await;
    println!("\nRSS at rest after the queries: vigil {:.0} MiB, prometheus {:.0} MiB", rss_mib(vigil.pid(), "VmRSS:"), rss_mib(prometheus.id(), "VmRSS:"));
    let _ = prometheus.kill();
    vigil.stop();
}
