//! A real Prometheus (Debian package) scraping a real node-exporter and remote-writing to
//! Vigil: after the run Vigil holds exactly the series Prometheus holds.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Vigil, free_port, metric_value, require_program};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// A real Prometheus on `port`, with `dir/prometheus.yml` (written by the caller) and `extra`
/// flags, its data in `dir/prom-data` and its log in `dir/prometheus.log`; killed when dropped.
pub fn start_prometheus(dir: &std::path::Path, port: u16, extra: &[&str]) -> Killed {
    Killed(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the Prometheus at `base` answers `/-/ready`.
pub async fn prometheus_ready(client: &reqwest::Client, base: &str) {
    crate::harness::wait_until("Prometheus ready", 60, async || {
        let ready = client.get(format!("{base}/-/ready")).send().await;
        ready.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
}

/// A real node-exporter on `port`; killed when dropped.
pub fn spawn_node_exporter(port: u16) -> Killed {
    Killed(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type SeriesKey = BTreeSet<(String, String)>;

/// Series as Prometheus's `/api/v1/series` returns them.
async fn prometheus_series(client: &reqwest::Client, base: &str, start: f64, end: f64) -> BTreeSet<SeriesKey> {
    let response: Value = client
        .get(format!("{base}/api/v1/series"))
        .query(&[("match[]", "{__name__=~\".+\"}"), ("start", &start.to_string()), ("end", &end.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
        .collect()
}

/// Series Vigil holds, read back through SQL: one table per metric, one column per label.
async fn vigil_series(vigil: &Vigil) -> BTreeSet<SeriesKey> {
    let tables = vigil
        .sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")
        .await;
    let mut all = BTreeSet::new();
    for row in tables["rows"].as_array().unwrap() {
        let table = row[0].as_str().unwrap();
        if ["spans", "logs", "drift_references", "drift_values", "drift_scores", "slo_status", "alerts", "exemplars"]
            .contains(&table)
        {
            continue;
        }
        let result = vigil.sql(&format!("SELECT DISTINCT * EXCEPT (timestamp, value) FROM \"{table}\"")).await;
        let columns: Vec<String> =
            result["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        for values in result["rows"].as_array().unwrap() {
            let mut key: SeriesKey = BTreeSet::from([("__name__".to_string(), table.to_string())]);
            for (column, value) in columns.iter().zip(values.as_array().unwrap()) {
                if let Some(value) = value.as_str() {
                    key.insert((column.clone(), value.to_string()));
                }
            }
            all.insert(key);
        }
    }
    all
}

#[tokio::test]
async fn vigil_holds_the_series_a_real_prometheus_holds() {
    if !require_program(PROMETHEUS) || !require_program(NODE_EXPORTER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("vigil"), &[]).await;
    let exporter_port = free_port();
    let _exporter = spawn_node_exporter(exporter_port);
    // A second Vigil scrapes the same exporter itself, to compare with Prometheus's scrape.
    let scraper = Vigil::start_with_config(
        &dir.path().join("vigil-scraper"),
        &format!("scrape_configs:\n  - job_name: node\n    scrape_interval: 2s\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"),
        &[],
    )
    .await;
    let prometheus_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prometheus_port}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 1s, max_samples_per_send: 500, min_backoff: 100ms, max_backoff: 1s}}\n    metadata_config: {{send: true, send_interval: 5s}}\n",
            vigil.url("/api/v1/write")
        ),
    )
    .unwrap();
    let _prometheus = start_prometheus(dir.path(), prometheus_port, &[]);
    let base = format!("http://127.0.0.1:{prometheus_port}");
    let client = reqwest::Client::new();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 60.0;
    tokio::time::sleep(Duration::from_secs(30)).await;

    // What Prometheus held a little while ago must have reached Vigil by now (the queue
    // sends at least every second); what Vigil holds must be known to Prometheus.
    let cutoff = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 5.0;
    let expected = prometheus_series(&client, &base, started, cutoff).await;
    assert!(expected.len() > 200, "node-exporter should give hundreds of series, got {}", expected.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held = vigil_series(&vigil).await;
        if expected.is_subset(&held) || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let missing: Vec<_> = expected.difference(&held).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} series missing in Vigil, e.g. {missing:?}",
        expected.difference(&held).count(),
        expected.len()
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() + 5.0;
    let known = prometheus_series(&client, &base, started, now).await;
    let unknown: Vec<_> = held.difference(&known).take(5).collect();
    assert!(unknown.is_empty(), "Vigil holds series Prometheus does not: {unknown:?}");

    // Every series came through remote write's cache of known series (Prometheus resends
    // each one's labels in every request, as the cache expects).
    let own = vigil.own_metrics().await;
    let cached = metric_value(&own, "vigil_ingest_series_cache_series");
    assert!(cached >= expected.len() as f64, "{cached} series cached of {} sent", expected.len());
    assert!(metric_value(&own, "vigil_memory_bytes{component=\"series_cache\"}") > 0.0);

    let up = vigil.sql("SELECT job, count(*) FROM up GROUP BY job ORDER BY job").await;
    assert_eq!(up["rows"].as_array().unwrap().len(), 2, "{up}");

    // Vigil's own scrape of node-exporter yields the series Prometheus's scrape does, its
    // five per-scrape report series included.
    let is_node = |s: &SeriesKey| s.contains(&("job".to_string(), "node".to_string()));
    let by_prometheus: BTreeSet<SeriesKey> = known.into_iter().filter(|s| is_node(s)).collect();
    let by_vigil: BTreeSet<SeriesKey> = vigil_series(&scraper).await.into_iter().filter(|s| is_node(s)).collect();
    let only_prometheus: Vec<_> = by_prometheus.difference(&by_vigil).take(5).collect();
    let only_vigil: Vec<_> = by_vigil.difference(&by_prometheus).take(5).collect();
    assert!(
        only_prometheus.is_empty() && only_vigil.is_empty(),
        "scrapes differ: only Prometheus {only_prometheus:?}, only Vigil {only_vigil:?} ({} vs {} series)",
        by_prometheus.len(),
        by_vigil.len()
    );
}
