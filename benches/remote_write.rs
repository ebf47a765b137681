//! Remote-write ingest, Vigil beside Prometheus 2.42 and VictoriaMetrics 1.79 on the same load
//! in the same run.
//!
//! Load: 10,000 series (20 metric names × 500 instances, half counters, half gauges), one
//! sample per 15 s over the last whole 2 h partition (480 steps, 4.8 M samples), sent as
//! Prometheus sends it: four shards, each owning a quarter of the series and sending its
//! requests in time order.
//!
//! Vigil also runs with a bearer token, and with a token over TLS, to show what auth and TLS
//! cost on the same load.
//!
//! Reports per target: samples/s accepted, CPU seconds per million samples (process
//! utime+stime over the ingest window), peak RSS, and bytes per sample on disk after the data
//! is persisted (Vigil: its whole object store after its shutdown flush, Parquet segments with
//! their series indexes and manifests; Prometheus: the block a TSDB
//! snapshot writes from its head, i.e. its compacted form; VictoriaMetrics: its whole storage
//! directory, samples and series index, after a forced flush once its merges are done).
//!
//! `VIGIL_BENCH_KEEP=DIR` copies Vigil's data directory (fsync=interval) there after its flush,
//! to look into where the bytes go.
//!
//!     cargo bench --bench remote_write   (peers from /usr/bin/prometheus, /usr/bin/victoria-metrics)

mod common;
#[path = "../tests/e2e/tls.rs"]
mod tls;

use common::peers::client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Label, Sample, TimeSeries, WriteRequest, encode};
use common::{VigilProcess, cpu_seconds, dir_bytes, peak_rss_mib, port, wait_ready};

const SERIES: usize = 10_000;
const STEPS: usize = 480;
const STEP_MS: i64 = 15_000;
const SHARDS: usize = 4;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

/// One request body per shard per step, encoded before any timing starts.
fn build_load() -> Vec<Vec<Vec<u8>>> {
    // The load fills one 2 h partition (Vigil's default, Prometheus's block range) whole, as
    // every partition but the newest of a running server is: a window across a boundary
    // splits each series in two (two runs of times, two first values stored whole), and moved
    // Vigil's bytes per sample by up to a fifth with the hour the bench ran (1.14 whole, 1.37
    // split 32 min / 88 min).
    const PARTITION_MS: i64 = 2 * 3_600_000;
    let end_ms = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64)
        / PARTITION_MS
        * PARTITION_MS;
    let start_ms = end_ms - STEPS as i64 * STEP_MS;
    let mut counters = vec![0f64; SERIES];
    let labels: Vec<Vec<Label>> = (0..SERIES)
        .map(|i| {
            let metric = i % 20;
            let name =
                if metric < 10 { format!("bench_requests_{metric}_total") } else { format!("bench_gauge_{metric}") };
            let mut labels = vec![
                Label { name: "__name__".into(), value: name },
                Label { name: "instance".into(), value: format!("host-{:03}:9100", i / 20) },
                Label { name: "job".into(), value: "node".into() },
                Label { name: "region".into(), value: ["eu-west-1", "us-east-1", "ap-south-1"][i % 3].into() },
            ];
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            labels
        })
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f64
    };
    let mut shards: Vec<Vec<Vec<u8>>> = (0..SHARDS).map(|_| Vec::with_capacity(STEPS)).collect();
    for step in 0..STEPS {
        let t = start_ms + step as i64 * STEP_MS;
        for (shard, requests) in shards.iter_mut().enumerate() {
            let timeseries: Vec<TimeSeries> = (shard..SERIES)
                .step_by(SHARDS)
                .map(|i| {
                    let value = if i % 20 < 10 {
                        counters[i] += noise().floor();
                        counters[i]
                    } else {
                        ((step as f64 / 40.0 + i as f64).sin() * 100.0 + noise() / 100.0).round() / 100.0
                    };
                    TimeSeries {
                        labels: labels[i].clone(),
                        samples: vec![Sample { value, timestamp: t }],
                        exemplars: Vec::new(),
                    }
                })
                .collect();
            requests.push(encode(&WriteRequest { timeseries }));
        }
    }
    shards
}

struct Measured {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    refused: usize,
}

async fn send_load(client: &reqwest::Client, url: &str, pid: u32, load: &[Vec<Vec<u8>>]) -> Measured {
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in load {
        let client = client.clone();
        let url = url.to_string();
        let shard = shard.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for body in shard {
                // Retry 5xx/429 as Prometheus does; a 4xx would be dropped and is a failure.
                loop {
                    let (status, text) = client::send(&client, &url, body.clone()).await;
                    match status {
                        200..=299 => break,
                        429 | 500..=599 => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => panic!("{url} answered {status}: {text}"),
                    }
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(pid) - cpu_before,
        peak_rss_mib: peak_rss_mib(pid),
        refused,
    }
}

fn report(name: &str, m: &Measured, disk_bytes: u64) {
    let samples = (SERIES * STEPS) as f64;
    println!(
        "{name:<28} {:>10.0} samples/s  {:>6.2} CPU s/M samples  {:>7.1} MiB peak RSS  {:>6.2} bytes/sample on disk  ({} refused+retried)",
        samples / m.seconds,
        m.cpu_seconds / (samples / 1e6),
        m.peak_rss_mib,
        disk_bytes as f64 / samples,
        m.refused
    );
}

async fn bench_vigil(load: &[Vec<Vec<u8>>], fsync: &str, work: &Path) -> (Measured, u64) {
    let data: PathBuf = work.join(format!("vigil-{fsync}"));
    let vigil = VigilProcess::start(&data, &["--wal-fsync", fsync]).await;
    let measured =
        send_load(&reqwest::Client::new(), &format!("http://127.0.0.1:{}/api/v1/write", vigil.http), vigil.pid(), load)
            .await;
    let flush_started = Instant::now();
    vigil.stop();
    let store = dir_bytes(&data.join("segments"), None);
    let parquet = dir_bytes(&data.join("segments"), Some(".parquet"));
    println!(
        "  (vigil {fsync}: shutdown flush {:.1} s; store {:.2} MiB of which Parquet {:.2} MiB)",
        flush_started.elapsed().as_secs_f64(),
        store as f64 / (1 << 20) as f64,
        parquet as f64 / (1 << 20) as f64
    );
    if let Some(keep) = std::env::var_os("VIGIL_BENCH_KEEP").filter(|_| fsync == "interval") {
        let status = Command::new("cp").arg("-r").arg(&data).arg(&keep).status().expect("cp");
        assert!(status.success(), "copying the store to {keep:?}");
    }
    (measured, store)
}

/// fsync=interval with a bearer token, plain or over TLS (a CA and certificate made here).
async fn bench_vigil_secured(load: &[Vec<Vec<u8>>], tls: bool, work: &Path) -> Measured {
    const TOKEN: &str = "bench-ingest-token-0123456789abcdef";
    let data = work.join(format!("vigil-secured-{tls}"));
    let token_flag = format!("bench:ingest+read:{TOKEN}");
    let mut args = vec!["--wal-fsync", "interval", "--auth-token", token_flag.as_str()];
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    let mut client = reqwest::Client::builder().default_headers(headers);
    let certificates = tls.then(|| {
        let dir = work.join("certificates");
        std::fs::create_dir_all(&dir).unwrap();
        tls::certificates(&dir)
    });
    let (cert, key);
    if let Some((cert_path, key_path, ca)) = &certificates {
        (cert, key) = (cert_path.display().to_string(), key_path.display().to_string());
        args.extend(["--tls-cert-file", cert.as_str(), "--tls-key-file", key.as_str()]);
        client = client.add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap());
    }
    let client = client.build().unwrap();
    let vigil = if tls {
        VigilProcess::start_tls(&data, &args, &client).await
    } else {
        VigilProcess::start(&data, &args).await
    };
    let scheme = if tls { "https" } else { "http" };
    let measured =
        send_load(&client, &format!("{scheme}://127.0.0.1:{}/api/v1/write", vigil.http), vigil.pid(), load).await;
    vigil.stop();
    measured
}

async fn bench_prometheus(load: &[Vec<Vec<u8>>], work: &Path) -> Option<(Measured, u64)> {
    if !Path::new("/usr/bin/prometheus").exists() {
        println!("prometheus not installed: no peer figures");
        return None;
    }
    let data = work.join("prometheus");
    let config = work.join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1m}\nscrape_configs: []\n").unwrap();
    let port = port();
    let mut child: Child = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--web.enable-remote-write-receiver", "--web.enable-admin-api", "--log.level=warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready")).await;
    let measured = send_load(&reqwest::Client::new(), &format!("{base}/api/v1/write"), child.id(), load).await;
    // A snapshot writes the head as a block: Prometheus's compacted on-disk form.
    let snapshot: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/admin/tsdb/snapshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = snapshot["data"]["name"].as_str().unwrap();
    let block_bytes = dir_bytes(&data.join("snapshots").join(name), None);
    let wal_bytes = dir_bytes(&data.join("wal"), None);
    println!("  (prometheus: WAL {:.1} MiB before compaction)", wal_bytes as f64 / (1 << 20) as f64);
    let _ = child.kill();
    let _ = child.wait();
    Some((measured, block_bytes))
}

async fn bench_victoria_metrics(load: &[Vec<Vec<u8>>], work: &Path) -> Option<(Measured, u64)> {
    if !Path::new("/usr/bin/victoria-metrics").exists() {
        println!("victoria-metrics not installed: no peer figures");
        return None;
    }
    let (mut child, base) = common::peers::start_victoria_metrics(work);
    wait_ready(&format!("{base}/health")).await;
    let measured = send_load(&reqwest::Client::new(), &format!("{base}/api/v1/write"), child.id(), load).await;
    // Its in-memory parts go to disk on a forced flush; the figure is its whole storage
    // directory (samples in `data`, series index in `indexdb`, as Vigil's store holds both)
    // once it has stopped changing for 5 s (at most a minute), background merges done.
    reqwest::get(format!("{base}/internal/force_flush")).await.unwrap();
    let storage = work.join("victoria-metrics");
    let (flushed, mut disk, mut unchanged) = (Instant::now(), dir_bytes(&storage, None), 0);
    while unchanged < 5 && flushed.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = dir_bytes(&storage, None);
        unchanged = if now == disk { unchanged + 1 } else { 0 };
        disk = now;
    }
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "  (victoria-metrics: {:.2} MiB settled {:.0} s after its flush: samples {:.2} MiB, series index {:.2} MiB)",
        mib(disk),
        flushed.elapsed().as_secs_f64(),
        mib(dir_bytes(&storage.join("data"), None)),
        mib(dir_bytes(&storage.join("indexdb"), None))
    );
    let _ = child.kill();
    let _ = child.wait();
    Some((measured, disk))
}

async fn run() {
    let work = tempfile::tempdir().unwrap();
    let load = build_load();
    let request_bytes: usize = load.iter().flatten().map(Vec::len).sum();
    println!(
        "load: {SERIES} series x {STEPS} samples = {} samples in {} requests ({:.1} MiB snappy)",
        SERIES * STEPS,
        load.iter().map(Vec::len).sum::<usize>(),
        request_bytes as f64 / (1 << 20) as f64
    );
    let (always, always_disk) = bench_vigil(&load, "always", work.path()).await;
    let (interval, interval_disk) = bench_vigil(&load, "interval", work.path()).await;
    let token = bench_vigil_secured(&load, false, work.path()).await;
    let token_tls = bench_vigil_secured(&load, true, work.path()).await;
    let prometheus = bench_prometheus(&load, work.path()).await;
    let victoria_metrics = bench_victoria_metrics(&load, work.path()).await;
    println!();
    report("vigil (fsync=always)", &always, always_disk);
    report("vigil (fsync=interval)", &interval, interval_disk);
    report("vigil (interval, token)", &token, interval_disk);
    report("vigil (interval, token+TLS)", &token_tls, interval_disk);
    let rate = |m: &Measured| (SERIES * STEPS) as f64 / m.seconds;
    println!(
        "\nauth and TLS vs plain (fsync=interval): throughput token {:.2}x, token+TLS {:.2}x; CPU/sample token {:.2}x, token+TLS {:.2}x",
        rate(&token) / rate(&interval),
        rate(&token_tls) / rate(&interval),
        token.cpu_seconds / interval.cpu_seconds,
        token_tls.cpu_seconds / interval.cpu_seconds,
    );
    if let Some((prometheus, disk)) = &prometheus {
        report("prometheus 2.42", prometheus, *disk);
        let rate = |m: &Measured| (SERIES * STEPS) as f64 / m.seconds;
        println!(
            "\nratios vs prometheus: throughput always {:.2}x, interval {:.2}x; CPU/sample always {:.2}x, interval {:.2}x; bytes/sample {:.2}x",
            rate(&always) / rate(prometheus),
            rate(&interval) / rate(prometheus),
            always.cpu_seconds / prometheus.cpu_seconds,
            interval.cpu_seconds / prometheus.cpu_seconds,
            interval_disk as f64 / *disk as f64,
        );
    }
    if let Some((victoria_metrics, disk)) = &victoria_metrics {
        report("victoria-metrics 1.79", victoria_metrics, *disk);
        println!(
            "ratios vs victoria-metrics: throughput interval {:.2}x; CPU/sample interval {:.2}x; bytes/sample {:.2}x",
            rate(&interval) / rate(victoria_metrics),
            interval.cpu_seconds / victoria_metrics.cpu_seconds,
            interval_disk as f64 / *disk as f64,
        );
    }
}
