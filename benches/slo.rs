//! SLO evaluation cost: 1,000 SLOs over 30 days of 1-minute data, beside Prometheus 2.42
//! evaluating the rules Sloth generates for the same 1,000 SLOs on the same data.
//!
//! 100 services each have a request and an error counter sampled every minute for 30 days
//! (8.6 M samples); 1,000 ratio SLOs read them (10 per service, different objectives). Reports
//! the full backfill (peak RSS of the process during it: the history is written by a child
//! process, so the measuring one starts like a server restarted on its store), steady
//! cycles after one more minute of data for 30-day and for 1-day windows (close to 1 means a
//! cycle costs what the new data costs, not what the window holds), and a restart: state
//! saved, a new evaluator restores it and completes its first evaluation.
//!
//! Prometheus gets the same samples by remote write (in time order), compacts them into
//! blocks, then evaluates Sloth's recording and alert rules (three groups
//! per SLO, every 30 s); its cost per round is the sum of `prometheus_rule_group_last_duration_seconds`
//! over the 3,000 groups, read from its own `/metrics`. Its `ratio_rate30d` rules read only
//! what it recorded since it started, which understates its cost.
//!
//!     cargo bench --bench slo            (the Prometheus side needs /usr/bin/prometheus)

mod common;

use common::peers::client;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_query::slo::{SloEvaluator, load_texts};
use vigil_query::{QueryEngine, QueryOptions};
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageOptions, WriteBatch};

const SERVICES: usize = 100;
const SLOS_PER_SERVICE: usize = 10;
const MINUTE: i64 = 60_000;
const DAYS: i64 = 30;

/// Starts VmHWM afresh (Linux `clear_refs` 5), so a phase's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn series(metric: &str, service: usize, points: impl Iterator<Item = (i64, f64)>) -> MetricSeries {
    MetricSeries {
        metric: metric.into(),
        labels: LabelSet::new(vec![("service".into(), format!("svc-{service}"))]).unwrap(),
        samples: points.map(|(t, v)| Sample { timestamp_ns: t * 1_000_000, value: v }).collect(),
    }
}

/// Minutes `[from, to)` of every service's counters.
fn data(start: i64, from: i64, to: i64) -> WriteBatch {
    let mut metrics = Vec::new();
    for s in 0..SERVICES {
        let minutes = || (from..to).map(move |m| (start + m * MINUTE, m));
        metrics.push(series("bench_requests_total", s, minutes().map(|(t, m)| (t, (m * 100) as f64))));
        metrics.push(series(
            "bench_errors_total",
            s,
            minutes().map(move |(t, m)| (t, (m * (s as i64 % 5)) as f64 / 10.0)),
        ));
    }
    WriteBatch { metrics, rows: Vec::new() }
}

fn definitions(window: &str) -> String {
    let mut yaml = String::new();
    for s in 0..SERVICES {
        for k in 0..SLOS_PER_SERVICE {
            yaml.push_str(&format!(
                "---\napiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: svc-{s}-{k}, service: svc-{s}}}\nspec:\n  objective: {}\n  window: {window}\n  sli: {{ratio: {{bad: 'bench_errors_total{{service=\"svc-{s}\"}}', total: 'bench_requests_total{{service=\"svc-{s}\"}}'}}}}\n",
                99.0 + k as f64 / 20.0
            ));
        }
    }
    yaml
}

fn storage_options(dir: &std::path::Path) -> StorageOptions {
    let mut options = StorageOptions::new(dir);
    options.retention = std::time::Duration::ZERO;
    options.buffer_max_bytes = 4 << 30;
    options.wal_fsync = vigil_storage::wal::FsyncPolicy::Never;
    options
}

/// Set in the child that writes the 30 days: the store's directory and the bench's "now".
const WRITER_ENV: &str = "VIGIL_BENCH_SLO_WRITE";

/// The child: writes the 30 days of samples and flushes them to Parquet.
async fn write_history(dir: &std::path::Path, start: i64) {
    let storage = Storage::open(storage_options(dir)).await.unwrap();
    for day in 0..DAYS {
        storage.write(data(start, day * 1440, (day + 1) * 1440)).await.unwrap();
    }
    storage.persist().await.unwrap();
}

#[tokio::main]
async fn main() {
    let total_minutes = DAYS * 24 * 60;
    if let Ok(job) = std::env::var(WRITER_ENV) {
        let (dir, now) = job.split_once('@').unwrap();
        write_history(std::path::Path::new(dir), now.parse::<i64>().unwrap() - total_minutes * MINUTE).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 / MINUTE
        * MINUTE;
    let start = now - total_minutes * MINUTE;
    // The history is written by a child process, so this one starts like a server
    // restarted on a store (its RSS holds no leftovers of the ingest).
    let flush = Instant::now();
    let status = Command::new(std::env::current_exe().unwrap())
        .env(WRITER_ENV, format!("{}@{now}", dir.path().display()))
        .status()
        .unwrap();
    assert!(status.success(), "writing the history failed");
    let storage = Storage::open(storage_options(dir.path())).await.unwrap();
    println!(
        "data: {} series x {} minutes, written and flushed to Parquet in {:.1} s; store opened, RSS {:.0} MiB",
        SERVICES * 2,
        total_minutes,
        flush.elapsed().as_secs_f64(),
        rss("VmRSS:")
    );
    let engine = QueryEngine::new(storage.clone(), QueryOptions::default()).unwrap();

    let mut steady = Vec::new();
    let mut vigil_30d_cycle = 0.0;
    for window in ["30d", "1d"] {
        let evaluator = SloEvaluator::new(engine.clone());
        evaluator.set_definitions(load_texts(&[("bench.yaml".into(), definitions(window))], None).unwrap()).await;
        let before = rss("VmRSS:");
        reset_peak_rss();
        let started = Instant::now();
        // Backfills run in the background: wait until every SLO has its numbers.
        let statuses = evaluator.settle(now).await;
        let backfill = started.elapsed().as_secs_f64();
        let backfill_peak = rss("VmHWM:");
        assert_eq!(statuses.len(), SERVICES * SLOS_PER_SERVICE);
        assert!(statuses.iter().all(|s| s.sli.is_some()), "every SLO has data");
        let mut cycles = Vec::new();
        for extra in 1..=5 {
            storage.write(data(start, total_minutes + extra - 1, total_minutes + extra)).await.unwrap();
            let started = Instant::now();
            evaluator.evaluate(now + extra * MINUTE).await;
            cycles.push(started.elapsed().as_secs_f64());
        }
        cycles.sort_by(f64::total_cmp);
        let median = cycles[cycles.len() / 2];
        println!(
            "window {window:>3}: full backfill {backfill:.2} s (peak RSS {backfill_peak:.0} MiB, {:.0} MiB above the opened store's); steady cycle {median:.3} s ({:.2} ms per SLO); RSS grew {:.0} MiB",
            backfill_peak - before,
            median * 1000.0 / statuses.len() as f64,
            rss("VmRSS:") - before,
        );
        if window == "30d" {
            vigil_30d_cycle = median;
            // A restart: the state saved, a new evaluator takes it up and evaluates all.
            let state = dir.path().join("slo-state.parquet");
            evaluator.save(&state).await.unwrap();
            drop(evaluator);
            let started = Instant::now();
            let restarted = SloEvaluator::new(engine.clone());
            restarted.set_definitions(load_texts(&[("bench.yaml".into(), definitions(window))], None).unwrap()).await;
            let resumed = restarted.restore(&state, now + 6 * MINUTE).await.unwrap();
            let statuses = restarted.evaluate(now + 6 * MINUTE).await;
            assert!(statuses.iter().all(|s| s.sli.is_some()), "every SLO resumed with numbers");
            println!(
                "restart: {resumed} SLOs resumed; restore and first complete evaluation {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        steady.push(median);
    }
    println!("steady cycle cost, 30d window / 1d window: {:.2}", steady[0] / steady[1]);

    if !std::path::Path::new("/usr/bin/prometheus").exists() {
        println!("prometheus: /usr/bin/prometheus is not installed; no side-by-side figures");
        return;
    }
    let prometheus = prometheus_rule_cost(dir.path(), start, total_minutes).await;
    println!(
        "prometheus 2.42, Sloth rules for the same {} SLOs: rule evaluation per round {:.3} s (sum of {} groups; slowest group {:.3} s); peak RSS {:.0} MiB",
        SERVICES * SLOS_PER_SERVICE,
        prometheus.round_seconds,
        prometheus.groups,
        prometheus.slowest_group,
        prometheus.peak_rss_mib
    );
    println!(
        "vigil steady cycle / prometheus rule round (30d windows): {:.3}",
        vigil_30d_cycle / prometheus.round_seconds
    );
}

/// Sloth's generated rules (sloth v0.11 layout) for one SLO: SLI recordings per window,
/// metadata recordings, and the page and ticket multiwindow alerts.
fn sloth_rules(service: usize, slo: usize, objective: f64) -> String {
    let id = format!("svc-{service}-{slo}");
    let labels = format!("sloth_id=\"{id}\", sloth_service=\"svc-{service}\", sloth_slo=\"{slo}\"");
    let budget = 1.0 - objective / 100.0;
    let mut out = format!("- name: sloth-slo-sli-recordings-{id}\n  rules:\n");
    for window in ["5m", "30m", "1h", "2h", "6h", "1d", "3d"] {
        out.push_str(&format!(
            "  - record: slo:sli_error:ratio_rate{window}\n    expr: '(sum(rate(bench_errors_total{{service=\"svc-{service}\"}}[{window}]))) / (sum(rate(bench_requests_total{{service=\"svc-{service}\"}}[{window}])))'\n    labels: {{sloth_id: {id}, sloth_service: svc-{service}, sloth_slo: \"{slo}\", sloth_window: {window}}}\n"
        ));
    }
    out.push_str(&format!(
        "  - record: slo:sli_error:ratio_rate30d\n    expr: 'sum_over_time(slo:sli_error:ratio_rate5m{{{labels}}}[30d]) / ignoring (sloth_window) count_over_time(slo:sli_error:ratio_rate5m{{{labels}}}[30d])'\n    labels: {{sloth_window: 30d}}\n"
    ));
    out.push_str(&format!("- name: sloth-slo-meta-recordings-{id}\n  rules:\n"));
    let meta = [
        ("slo:objective:ratio", format!("vector({})", objective / 100.0)),
        ("slo:error_budget:ratio", format!("vector(1-{})", objective / 100.0)),
        ("slo:time_period:days", "vector(30)".to_string()),
        (
            "slo:current_burn_rate:ratio",
            format!(
                "slo:sli_error:ratio_rate5m{{{labels}}} / on(sloth_id, sloth_slo, sloth_service) group_left slo:error_budget:ratio{{{labels}}}"
            ),
        ),
        (
            "slo:period_burn_rate:ratio",
            format!(
                "slo:sli_error:ratio_rate30d{{{labels}}} / on(sloth_id, sloth_slo, sloth_service) group_left slo:error_budget:ratio{{{labels}}}"
            ),
        ),
        ("slo:period_error_budget_remaining:ratio", format!("1 - slo:period_burn_rate:ratio{{{labels}}}")),
        ("sloth_slo_info", "vector(1)".to_string()),
    ];
    for (record, expr) in meta {
        out.push_str(&format!("  - record: {record}\n    expr: '{expr}'\n    labels: {{sloth_id: {id}, sloth_service: svc-{service}, sloth_slo: \"{slo}\"}}\n"));
    }
    let pair = |long: &str, short: &str, factor: f64| {
        format!(
            "(max(slo:sli_error:ratio_rate{long}{{{labels}}} > ({factor} * {budget})) without (sloth_window) and max(slo:sli_error:ratio_rate{short}{{{labels}}} > ({factor} * {budget})) without (sloth_window))"
        )
    };
    out.push_str(&format!("- name: sloth-slo-alerts-{id}\n  rules:\n"));
    for (name, expr) in [
        ("page", format!("{} or {}", pair("1h", "5m", 14.4), pair("6h", "30m", 6.0))),
        ("ticket", format!("{} or {}", pair("1d", "2h", 3.0), pair("3d", "6h", 1.0))),
    ] {
        out.push_str(&format!(
            "  - alert: SloBurn{name}\n    expr: '{expr}'\n    labels: {{severity: {name}, sloth_id: {id}}}\n"
        ));
    }
    out
}

struct PrometheusCost {
    round_seconds: f64,
    slowest_group: f64,
    groups: usize,
    peak_rss_mib: f64,
}

/// The same samples as TSDB blocks in a real Prometheus, compacted, then Sloth's rules for
/// the same SLOs evaluated every 30 s: the cost of one round, from its own metrics.
async fn prometheus_rule_cost(work: &std::path::Path, start: i64, total_minutes: i64) -> PrometheusCost {
    let started = Instant::now();
    let tsdb = work.join("prometheus");
    let rules = work.join("sloth-rules.yml");
    let mut groups = String::from("groups:\n");
    for s in 0..SERVICES {
        for k in 0..SLOS_PER_SERVICE {
            groups.push_str(&sloth_rules(s, k, 99.0 + k as f64 / 20.0));
        }
    }
    std::fs::write(&rules, groups).unwrap();
    let config = work.join("prometheus.yml");
    std::fs::write(&config, "global: {evaluation_interval: 30s}\n").unwrap();
    let port = common::port();
    let mut prometheus = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=90d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-lifecycle")
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready(&format!("{base}/-/ready")).await;
    let client = reqwest::Client::new();
    // The same samples, remote-written in time order (its head takes no sample older than
    // what it has compacted), an hour of every series per request.
    let url = format!("{base}/api/v1/write");
    for hour in 0..(total_minutes + 59) / 60 {
        let minutes = hour * 60..((hour + 1) * 60).min(total_minutes);
        let mut timeseries = Vec::new();
        for s in 0..SERVICES {
            let service = format!("svc-{s}");
            let points = |value: &dyn Fn(i64) -> f64| {
                minutes.clone().map(|m| (start + m * MINUTE, value(m))).collect::<Vec<_>>()
            };
            timeseries.push(client::series(
                "bench_requests_total",
                &[("service", &service)],
                &points(&|m| (m * 100) as f64),
            ));
            timeseries.push(client::series(
                "bench_errors_total",
                &[("service", &service)],
                &points(&|m| (m * (s as i64 % 5)) as f64 / 10.0),
            ));
        }
        let (status, text) = client::send(&client, &url, client::encode(&client::WriteRequest { timeseries })).await;
        assert!((200..300).contains(&status), "prometheus remote write: {status} {text}");
    }
    println!(
        "prometheus: {} samples remote-written in {:.0} s",
        SERVICES * 2 * total_minutes as usize,
        started.elapsed().as_secs_f64()
    );
    let metric = |body: &str, name: &str| -> Vec<f64> {
        body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect()
    };
    // Let it compact the 30 days into blocks, as a long-running Prometheus would have.
    let mut last_blocks = -1.0;
    loop {
        tokio::time::sleep(Duration::from_secs(65)).await;
        let body = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let blocks = metric(&body, "prometheus_tsdb_blocks_loaded").first().copied().unwrap_or(0.0);
        if blocks == last_blocks {
            break;
        }
        last_blocks = blocks;
    }
    println!("prometheus: {last_blocks} blocks after compaction, {:.0} s in", started.elapsed().as_secs_f64());
    std::fs::write(&config, format!("global: {{evaluation_interval: 30s}}\nrule_files: [{}]\n", rules.display()))
        .unwrap();
    let reload = client.post(format!("{base}/-/reload")).send().await.unwrap();
    assert!(reload.status().is_success(), "prometheus reload: {}", reload.text().await.unwrap());
    // The first round reads cold blocks: measure the rounds after it.
    let mut rounds = Vec::new();
    let mut slowest: f64 = 0.0;
    let mut group_count = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let body = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let durations = metric(&body, "prometheus_rule_group_last_duration_seconds{");
        group_count = durations.len();
        rounds.push(durations.iter().sum::<f64>());
        slowest = slowest.max(durations.iter().copied().fold(0.0, f64::max));
    }
    let peak_rss_mib = common::peak_rss_mib(prometheus.id());
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let mut steady: Vec<f64> = rounds[1..].to_vec();
    steady.sort_by(f64::total_cmp);
    PrometheusCost {
        round_seconds: steady[steady.len() / 2],
        slowest_group: slowest,
        groups: group_count,
        peak_rss_mib,
    }
}
