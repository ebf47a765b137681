//! Many metric names: what a flush writes, and selectors without a metric name, Vigil beside
//! Prometheus 2.42 and VictoriaMetrics 1.79 on the same data in the same run.
//!
//! Data: `VIGIL_BENCH_NAMES` metric names (default 2,000: a node-exporter, cAdvisor and a few
//! applications), each with 4 series (`job` api|db × `instance` a|b), over 1 h at one sample
//! per 15 s, remote-written to all three. Vigil is then stopped (its shutdown flushes) and the
//! files of the store counted, and started again so that the queries read segments, not the
//! write buffer.
//!
//! Queries (query_range over the last hour, step 60 s; median of 5) select by label only, as
//! Grafana's metric browser and many dashboards do, plus the series and label APIs.
//!
//!     cargo bench --bench names      (needs /usr/bin/prometheus and /usr/bin/victoria-metrics)

mod common;

use std::time::Instant;

use common::VigilProcess;
use common::peers::client::{Label, Sample, TimeSeries, WriteRequest, encode};
use common::peers::{Peers, RUNS, measure, send_all};

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 240;

const QUERIES: [(&str, &str); 4] = [
    ("{job=api}", "{job=\"api\"}"),
    ("{job=api,instance=a}", "{job=\"api\", instance=\"a\"}"),
    // A dashboard variable's selector (`{job=~"$job"}`): a regex over every name's table.
    ("{job=~api|web}", "{job=~\"api|web\"}"),
    ("count by name", "count by (__name__) ({job=\"api\"})"),
];

fn load(end_ms: i64, names: usize) -> Vec<Vec<u8>> {
    let start_ms = end_ms - POINTS * STEP_MS;
    let mut series: Vec<Vec<Label>> = Vec::new();
    for n in 0..names {
        for job in ["api", "db"] {
            for instance in ["a", "b"] {
                series.push(vec![
                    Label { name: "__name__".into(), value: format!("bench_metric_{n:05}") },
                    Label { name: "instance".into(), value: instance.into() },
                    Label { name: "job".into(), value: job.into() },
                ]);
            }
        }
    }
    let mut bodies = Vec::new();
    for step in 0..=POINTS {
        let t = start_ms + step * STEP_MS;
        for chunk in series.chunks(2_000) {
            let timeseries = chunk
                .iter()
                .map(|labels| TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample { value: step as f64, timestamp: t }],
                    exemplars: Vec::new(),
                })
                .collect();
            bodies.push(encode(&WriteRequest { timeseries }));
        }
    }
    bodies
}

/// Median latency (ms) of RUNS GETs of `path` (a query string included), and what the last
/// answered: the length of its `data` array.
async fn measure_get(base: &str, path: &str) -> (f64, usize) {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut items = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let response: serde_json::Value =
            client.get(format!("{base}{path}")).send().await.unwrap().json().await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response["status"], "success", "{path}: {response}");
        items = response["data"].as_array().map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], items)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let names: usize = std::env::var("VIGIL_BENCH_NAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    // The load's hour ends half an hour before the current 2 h partition (Vigil's default)
    // began, so it lies inside one partition: every run flushes one shared segment and its
    // figures compare with other runs' (an hour ending now sometimes straddled two).
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let partition_ms = 2 * 3_600_000;
    let end_ms = now_ms / partition_ms * partition_ms - 30 * 60_000;
    let bodies = load(end_ms, names);
    println!("load: {names} metric names x 4 series x {} samples, {} requests", POINTS + 1, bodies.len());
    let work = tempfile::tempdir().unwrap();
    let vigil_data = work.path().join("vigil");
    let vigil_args = ["--wal-fsync", "never", "--retention", "0", "--flush-interval", "1h"];

    let vigil = VigilProcess::start(&vigil_data, &vigil_args).await;
    let vigil_base = format!("http://127.0.0.1:{}", vigil.http);
    send_all(&format!("{vigil_base}/api/v1/write"), &bodies).await;
    let before: Vec<_> = files_under(&vigil_data.join("segments"));
    vigil.stop();
    let after = files_under(&vigil_data.join("segments"));
    let written: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    let parquet = written.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).count();
    println!(
        "vigil: the shutdown flush of {names} names wrote {} files ({parquet} Parquet, {} manifests), {:.1} MiB",
        written.len(),
        written.len() - parquet,
        common::dir_bytes(&vigil_data.join("segments"), None) as f64 / 1048576.0
    );

    let vigil = VigilProcess::start(&vigil_data, &vigil_args).await;
    let peers = Peers::start(work.path(), &vigil).await;
    for peer in &peers.all[1..] {
        send_all(&format!("{}/api/v1/write", peer.base), &bodies).await;
    }
    peers.settle().await;

    println!(
        "\n{:<22} | {:>9} | {:>9} | {:>9} | {:>8} {:>8}",
        "query (1 h, step 60 s)", "vigil ms", "prom ms", "vm ms", "v/prom", "v/vm"
    );
    let start = end_ms - 3_600_000;
    for (name, query) in QUERIES {
        let mut figures = Vec::new();
        for peer in &peers.all {
            figures.push(measure(&peer.base, peer.pid, query, start, end_ms, 60_000).await);
        }
        let [v, p, m] = figures[..] else { unreachable!() };
        assert_eq!(v.series, p.series, "{name}: series count differs from Prometheus");
        let (v, p, m) = (v.ms, p.ms, m.ms);
        println!("{name:<22} | {v:>9.1} | {p:>9.1} | {m:>9.1} | {:>7.2}x {:>7.2}x", v / p, v / m);
    }
    let range = format!("start={}&end={}", start / 1000, end_ms / 1000);
    let apis = [
        ("series {job=api}", format!("/api/v1/series?match[]=%7Bjob%3D%22api%22%7D&{range}")),
        ("labels", format!("/api/v1/labels?{range}")),
        ("values of __name__", format!("/api/v1/label/__name__/values?{range}")),
    ];
    for (name, path) in apis {
        let mut figures = Vec::new();
        for peer in &peers.all {
            figures.push(measure_get(&peer.base, &path).await);
        }
        let [(v, v_items), (p, p_items), (m, _)] = figures[..] else { unreachable!() };
        assert_eq!(v_items, p_items, "{name}: answer differs from Prometheus");
        println!("{name:<22} | {v:>9.1} | {p:>9.1} | {m:>9.1} | {:>7.2}x {:>7.2}x", v / p, v / m);
    }
    peers.stop();
    vigil.stop();
}
