//! The peers a bench compares Vigil with (Prometheus 2.42 and VictoriaMetrics 1.79 from
//! Debian), and what is measured the same way on all of them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/e2e/remote_write_client.rs"]
pub mod client;

use super::port;

/// Queries run per measurement; the median is reported.
pub const RUNS: usize = 5;

/// Sends `bodies` to `url` and prints how long `name` (process `pid`) took to take them, in
/// time and CPU.
pub async fn send_timed(name: &str, pid: u32, url: &str, bodies: &[Vec<u8>]) {
    let (cpu, started) = (super::cpu_seconds(pid), Instant::now());
    send_all(url, bodies).await;
    println!("{name} ingested in {:.1} s, {:.1} CPU s", started.elapsed().as_secs_f64(), super::cpu_seconds(pid) - cpu);
}

pub async fn send_all(url: &str, bodies: &[Vec<u8>]) {
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

pub fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// What [`measure`] found of one query on one peer.
#[derive(Clone, Copy)]
pub struct Measured {
    /// Median latency, ms.
    pub ms: f64,
    /// The process's peak RSS during the runs (its high-water mark, reset before), MiB.
    pub peak_mib: f64,
    /// How far that peak rose above the RSS before the runs, MiB.
    pub growth_mib: f64,
    /// Series in the answer.
    pub series: usize,
}

/// Median latency of RUNS query_range calls, and the peak RSS during them.
pub async fn measure(base: &str, pid: u32, query: &str, start: i64, end: i64, step: i64) -> Measured {
    let client = reqwest::Client::new();
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = rss_mib(pid, "VmRSS:");
    let mut times = Vec::new();
    let mut series = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let body = client
            .get(format!("{base}/api/v1/query_range"))
            .query(&[
                ("query", query.to_string()),
                ("start", (start / 1000).to_string()),
                ("end", (end / 1000).to_string()),
                ("step", (step / 1000).to_string()),
            ])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // The server's time: until the whole answer has arrived. Parsing it is the client's
        // (4 MB of points take this client ~30 ms, as much as some answers take to serve).
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["status"], "success", "{response}");
        series = response["data"]["result"].as_array().map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    let peak_mib = rss_mib(pid, "VmHWM:");
    Measured { ms: times[RUNS / 2], peak_mib, growth_mib: peak_mib - before, series }
}

/// One system under test: where to send and query, and its process.
pub struct Peer {
    pub name: &'static str,
    pub base: String,
    pub pid: u32,
}

pub fn start_prometheus(work: &std::path::Path) -> (std::process::Child, String) {
    let port = port();
    let config = work.join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1m}\nscrape_configs: []\n").unwrap();
    let child = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", work.join("prometheus").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--web.enable-remote-write-receiver", "--log.level=warn", "--storage.tsdb.retention.time=30d"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/prometheus");
    (child, format!("http://127.0.0.1:{port}"))
}

pub fn start_victoria_metrics(work: &std::path::Path) -> (std::process::Child, String) {
    let port = port();
    let child = Command::new("/usr/bin/victoria-metrics")
        .arg(format!("-storageDataPath={}", work.join("victoria-metrics").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .args(["-retentionPeriod=100y", "-search.disableCache", "-search.latencyOffset=0s", "-loggerLevel=ERROR"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/victoria-metrics");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Vigil, Prometheus and VictoriaMetrics side by side: the two peers started (and ready)
/// beside a running Vigil.
pub struct Peers {
    pub all: [Peer; 3],
    prometheus: std::process::Child,
    victoria: std::process::Child,
}

impl Peers {
    pub async fn start(work: &std::path::Path, vigil: &super::VigilProcess) -> Peers {
        let (prometheus, prometheus_base) = start_prometheus(work);
        let (victoria, victoria_base) = start_victoria_metrics(work);
        super::wait_ready(&format!("{prometheus_base}/-/ready")).await;
        super::wait_ready(&format!("{victoria_base}/health")).await;
        let all = [
            Peer { name: "vigil", base: format!("http://127.0.0.1:{}", vigil.http), pid: vigil.pid() },
            Peer { name: "prometheus", base: prometheus_base, pid: prometheus.id() },
            Peer { name: "victoria-metrics", base: victoria_base, pid: victoria.id() },
        ];
        Peers { all, prometheus, victoria }
    }

    /// Makes what VictoriaMetrics took searchable (it does so a second or so after taking it).
    /// Then waits until all three are quiet (under 2 % of a core over a second, or 60 s):
    /// after a load, the peers' background work (Prometheus's head, VictoriaMetrics' merges)
    /// would otherwise run during the first target's queries, on the same two cores.
    pub async fn settle(&self) {
        let _ = reqwest::Client::new().get(format!("{}/internal/force_flush", self.all[2].base)).send().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let busy = || self.all.iter().map(|peer| super::cpu_seconds(peer.pid)).sum::<f64>();
        for _ in 0..60 {
            let before = busy();
            tokio::time::sleep(Duration::from_secs(1)).await;
            if busy() - before < 0.02 {
                break;
            }
        }
    }

    pub fn stop(mut self) {
        let _ = self.prometheus.kill();
        let _ = self.victoria.kill();
    }
}
