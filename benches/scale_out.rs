//! Scale-out, side by side in one run on one machine:
//!
//! 1. Queries over 30 days: one node vs the same queries on Ballista (a scheduler and two
//!    executors, all the Vigil binary). Data: 500 counters (`bench_requests_total{job,
//!    instance}`, 10 jobs) at one sample per 5 min for 30 days (4.3 M samples), flushed to
//!    Parquet on a store both nodes share; the Ballista node sends every query there
//!    (`--ballista-min-range 0s`). Median of 3 runs per query; answers compared.
//! 2. Ingest: the same remote-write load (10,000 series × 240 steps, 8 senders) into one
//!    node, then split over two nodes on one shared store.
//!
//!     cargo bench --bench scale_out

mod common;

use common::peers::client;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Label, Sample, TimeSeries, WriteRequest, encode};
use common::{VigilProcess, cpu_seconds, port};

const DAY_MS: i64 = 86_400_000;
const QUERY_STEP_MS: i64 = 300_000;
const RUNS: usize = 3;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut out: Vec<Label> = pairs.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// 30 days of 500 counters, 12 steps (an hour) per request, in time order.
fn thirty_days(end_ms: i64) -> Vec<Vec<u8>> {
    let start_ms = end_ms - 30 * DAY_MS;
    let series: Vec<Vec<Label>> = (0..500)
        .map(|i| {
            labels(&[
                ("__name__", "bench_requests_total".into()),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("host-{i}")),
            ])
        })
        .collect();
    let steps = (30 * DAY_MS / QUERY_STEP_MS) as usize;
    let mut bodies = Vec::new();
    for first in (0..steps).step_by(12) {
        let timeseries = series
            .iter()
            .enumerate()
            .map(|(i, labels)| TimeSeries {
                labels: labels.clone(),
                samples: (first..(first + 12).min(steps))
                    .map(|s| Sample { timestamp: start_ms + s as i64 * QUERY_STEP_MS, value: (s * (1 + i % 7)) as f64 })
                    .collect(),
                exemplars: Vec::new(),
            })
            .collect();
        bodies.push(encode(&WriteRequest { timeseries }));
    }
    bodies
}

async fn send_all(client: &reqwest::Client, url: &str, bodies: &[Vec<u8>]) {
    for body in bodies {
        loop {
            let (status, text) = client::send(client, url, body.clone()).await;
            match status {
                200..=299 => break,
                429 | 500..=599 => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => panic!("{url} answered {status}: {text}"),
            }
        }
    }
}

/// A Ballista role of the Vigil binary, killed on drop.
struct Role(Child);

impl Role {
    // The child is killed and waited for by `Drop`, also when it never listens (the panic).
    #[allow(clippy::zombie_processes)]
    async fn start(args: &[&str], port: u16) -> Role {
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Role(child);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{args:?} never listened");
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Query {
    Sql(String),
    Prom(&'static str, i64),
}

/// Median seconds of `RUNS` runs and the answer (the same every run).
async fn time_query(
    client: &reqwest::Client,
    http: u16,
    query: &Query,
    start: i64,
    end: i64,
) -> (f64, serde_json::Value) {
    let mut times = Vec::new();
    let mut answer = serde_json::Value::Null;
    for _ in 0..RUNS {
        let started = Instant::now();
        let response = match query {
            Query::Sql(sql) => {
                client
                    .post(format!("http://127.0.0.1:{http}/api/v1/sql"))
                    .json(&serde_json::json!({"query": sql}))
                    .send()
                    .await
            }
            Query::Prom(promql, step) => {
                client
                    .get(format!("http://127.0.0.1:{http}/api/v1/query_range"))
                    .query(&[
                        ("query", promql.to_string()),
                        ("start", (start / 1000).to_string()),
                        ("end", (end / 1000).to_string()),
                        ("step", (step / 1000).to_string()),
                    ])
                    .send()
                    .await
            }
        }
        .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{body}");
        times.push(started.elapsed().as_secs_f64());
        answer = body;
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], answer)
}

async fn bench_queries(work: &Path) {
    let client = reqwest::Client::new();
    let store = work.join("store");
    let store_arg = store.to_str().unwrap().to_string();
    let common =
        ["--object-store-path", &store_arg, "--retention", "0", "--peer-refresh", "1s", "--buffer-size", "2GiB"];
    let end = now_ms() / QUERY_STEP_MS * QUERY_STEP_MS;
    let start = end - 30 * DAY_MS;

    let mut args = common.to_vec();
    args.extend(["--node-id", "single"]);
    let writer = VigilProcess::start(&work.join("single"), &args).await;
    let bodies = thirty_days(end);
    let started = Instant::now();
    send_all(&client, &format!("http://127.0.0.1:{}/api/v1/write", writer.http), &bodies).await;
    let load_seconds = started.elapsed().as_secs_f64();
    writer.stop(); // flushes: both nodes then answer from segments alone
    let single = VigilProcess::start(&work.join("single"), &args).await;
    println!("loaded 4,320,000 samples (30 days × 500 series) in {load_seconds:.1} s");
    let parquet_files = count_files(&store, ".parquet");
    println!(
        "  {parquet_files} Parquet files, {:.1} MiB",
        common::dir_bytes(&store, Some(".parquet")) as f64 / 1048576.0
    );

    let scheduler_port = port();
    let _scheduler = Role::start(
        &["ballista-scheduler", "--bind-host", "127.0.0.1", "--bind-port", &scheduler_port.to_string()],
        scheduler_port,
    )
    .await;
    let mut executors = Vec::new();
    for i in 0..2 {
        let (flight, grpc, health) = (port(), port(), port());
        let work_dir = work.join(format!("executor-{i}"));
        std::fs::create_dir_all(&work_dir).unwrap();
        executors.push(
            Role::start(
                &[
                    "ballista-executor",
                    "--bind-host",
                    "127.0.0.1",
                    "--external-host",
                    "127.0.0.1",
                    "--bind-port",
                    &flight.to_string(),
                    "--bind-grpc-port",
                    &grpc.to_string(),
                    "--bind-health-port",
                    &health.to_string(),
                    "--scheduler-host",
                    "127.0.0.1",
                    "--scheduler-port",
                    &scheduler_port.to_string(),
                    "--work-dir",
                    work_dir.to_str().unwrap(),
                ],
                flight,
            )
            .await,
        );
    }
    let scheduler = format!("df://127.0.0.1:{scheduler_port}");
    let mut args = common.to_vec();
    args.extend(["--node-id", "distributed", "--ballista-scheduler", &scheduler, "--ballista-min-range", "0s"]);
    let distributed = VigilProcess::start(&work.join("distributed"), &args).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let queries = [
        ("SQL count(*) over 30 d", Query::Sql("SELECT count(*) FROM bench_requests_total".into())),
        (
            "SQL per job over 30 d",
            Query::Sql("SELECT job, count(*) AS n, avg(value) AS mean, max(value) AS top FROM bench_requests_total GROUP BY job ORDER BY job".into()),
        ),
        (
            "SQL daily per job over 30 d",
            Query::Sql("SELECT date_bin(INTERVAL '1 day', timestamp) AS day, job, max(value) - min(value) AS growth FROM bench_requests_total GROUP BY 1, 2 ORDER BY 1, 2".into()),
        ),
        ("PromQL sum by (job) (rate([1h])) 30 d, step 6 h", Query::Prom("sum by (job) (rate(bench_requests_total[1h]))", 6 * 3_600_000)),
    ];
    println!("\n{:<50} {:>12} {:>14} {:>8}", "query (median of 3)", "one node s", "Ballista 2× s", "ratio");
    for (name, query) in &queries {
        let cpu_before: f64 = executors.iter().map(|e| cpu_seconds(e.pid())).sum();
        let (local, local_answer) = time_query(&client, single.http, query, start + 3_600_000, end).await;
        let (remote, remote_answer) = time_query(&client, distributed.http, query, start + 3_600_000, end).await;
        let executor_cpu: f64 = executors.iter().map(|e| cpu_seconds(e.pid())).sum::<f64>() - cpu_before;
        let same = compare(&local_answer, &remote_answer);
        println!(
            "{name:<50} {local:>12.3} {remote:>14.3} {:>7.2}×  ({same}; executors {executor_cpu:.1} CPU s)",
            remote / local
        );
    }
    single.stop();
    distributed.stop();
}

/// "same answer", or how far apart two answers' numbers are (a sum over series in another
/// order rounds differently in the last bits).
fn compare(a: &serde_json::Value, b: &serde_json::Value) -> String {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, worst: &mut f64) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| walk(x, y, worst)),
            (Object(x), Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| walk(v, w, worst)))
            }
            _ if a == b => true,
            _ => {
                let number = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                match (number(a), number(b)) {
                    (Some(x), Some(y)) => {
                        *worst = worst.max(((x - y) / x.abs().max(y.abs()).max(f64::MIN_POSITIVE)).abs());
                        true
                    }
                    _ => false,
                }
            }
        }
    }
    let mut worst = 0.0;
    match walk(a, b, &mut worst) {
        false => "ANSWERS DIFFER".into(),
        true if worst == 0.0 => "same answer".into(),
        true => format!("same answer within {worst:.1e} relative"),
    }
}

fn count_files(dir: &Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path(), suffix)
            } else {
                usize::from(e.path().to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}

/// 10,000 series × 240 steps in 8 shards of requests.
fn ingest_load() -> Vec<Vec<Vec<u8>>> {
    let end = now_ms() / 15_000 * 15_000;
    let shards = 8;
    let mut out = vec![Vec::new(); shards];
    for step in 0..240i64 {
        let t = end - (240 - step) * 15_000;
        for (shard, requests) in out.iter_mut().enumerate() {
            let timeseries = (shard..10_000)
                .step_by(shards)
                .map(|i| TimeSeries {
                    labels: labels(&[
                        ("__name__", format!("ingest_{}_total", i % 20)),
                        ("instance", format!("host-{}", i / 20)),
                        ("job", "node".into()),
                    ]),
                    samples: vec![Sample { timestamp: t, value: (step * (i as i64 % 5 + 1)) as f64 }],
                    exemplars: Vec::new(),
                })
                .collect();
            requests.push(encode(&WriteRequest { timeseries }));
        }
    }
    out
}

/// Sends shard `i` to node `i % nodes`; returns samples per second and the nodes' CPU seconds.
async fn ingest(work: &Path, nodes: usize, load: &[Vec<Vec<u8>>]) -> (f64, f64) {
    let store = work.join(format!("ingest-{nodes}"));
    let store_arg = store.to_str().unwrap().to_string();
    let mut processes = Vec::new();
    for n in 0..nodes {
        let name = format!("n{n}");
        let args = [
            "--object-store-path",
            store_arg.as_str(),
            "--node-id",
            name.as_str(),
            "--wal-fsync",
            "interval",
            "--retention",
            "0",
        ];
        processes.push(VigilProcess::start(&work.join(format!("ingest-{nodes}-{name}")), &args).await);
    }
    let cpu_before: f64 = processes.iter().map(|p| cpu_seconds(p.pid())).sum();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = load
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let url = format!("http://127.0.0.1:{}/api/v1/write", processes[i % nodes].http);
            let client = client.clone();
            let shard = shard.clone();
            tokio::spawn(async move { send_all(&client, &url, &shard).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu: f64 = processes.iter().map(|p| cpu_seconds(p.pid())).sum::<f64>() - cpu_before;
    for p in processes {
        p.stop();
    }
    (2_400_000.0 / seconds, cpu)
}

async fn run() {
    let work = tempfile::tempdir().unwrap();
    println!("== queries over 30 days: one node vs Ballista (scheduler + 2 executors), same store");
    bench_queries(work.path()).await;

    println!("\n== ingest: 2,400,000 samples (10,000 series × 240 steps), 8 senders, fsync=interval");
    let load = ingest_load();
    let (one, one_cpu) = ingest(work.path(), 1, &load).await;
    let (two, two_cpu) = ingest(work.path(), 2, &load).await;
    println!("one node : {one:>10.0} samples/s, {:.2} CPU s per M samples", one_cpu / 2.4);
    println!(
        "two nodes: {two:>10.0} samples/s, {:.2} CPU s per M samples  ({:.2}× one node)",
        two_cpu / 2.4,
        two / one
    );
}
