//! Dashboard queries, Vigil beside Prometheus 2.42 and VictoriaMetrics 1.79 on the same data
//! in the same run.
//!
//! Data: N series (`VIGIL_BENCH_SERIES`, default 10,000) over D days (`VIGIL_BENCH_DAYS`,
//! default 1) at one sample per 60 s (`VIGIL_BENCH_STEP`, seconds), rising steadily or by random
//! counts (`VIGIL_BENCH_VALUES=steady|noisy`, see `common/dashboard_load.rs`):
//! 90 % request counters (`bench_requests_total{job, instance, code}`, 10 jobs) and 10 % a
//! latency histogram (`bench_latency_seconds_bucket{job, instance, le}`, 10 buckets), sent to
//! all three by remote write in time order.
//!
//! The six queries of a dashboard (query_range), each over the last 1 h (step 15 s), 6 h
//! (step 1 m), 24 h (step 5 m) and, with 7 days or more, 7 d (step 10 m): see `QUERIES`.
//! Reports the median of 5 runs, the peak RSS during them (VmHWM reset before) and how far
//! it rose above the RSS before, then each one's RSS at rest (allocated memory and mapped
//! files apart). Vigil is
//! restarted after its load, so its queries read Parquet segments as a running server's do.
//! VictoriaMetrics runs with its result cache off (`-search.disableCache`), or its repeats
//! would be free. `VIGIL_BENCH_KEEP=DIR` copies Vigil's loaded data directory there (and the
//! load's end time to `DIR/end`) to profile the same store by hand.
//!
//! The mapped part of each RSS depends on how the programs' files sit in the page cache (a
//! binary just built or copied maps 11-14 MiB more of its code than one read from disk): for
//! figures that compare, start from a cold cache (`sync; echo 1 > /proc/sys/vm/drop_caches`).
//!
//!     cargo bench --bench query      (needs /usr/bin/prometheus and /usr/bin/victoria-metrics)

mod common;
#[path = "common/dashboard_load.rs"]
mod dashboard_load;

use std::time::{Duration, Instant};

use common::VigilProcess;
use common::peers::client;
use common::peers::{Peers, measure, rss_mib, send_timed};

const DAY_MS: i64 = 86_400_000;

const QUERIES: [(&str, &str); 6] = [
    ("rate by job", "sum by (job) (rate(bench_requests_total[5m]))"),
    (
        "error ratio",
        "sum by (job) (rate(bench_requests_total{code=~\"5..\"}[5m])) / sum by (job) (rate(bench_requests_total[5m]))",
    ),
    ("p99 histogram", "histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m])))"),
    ("topk instance", "topk(5, sum by (instance) (rate(bench_requests_total[5m])))"),
    ("count by job", "count by (job) (bench_requests_total)"),
    ("max_over_time", "max_over_time(bench_requests_total{job=\"job-1\"}[10m])"),
];

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VIGIL_BENCH_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let days: i64 = std::env::var("VIGIL_BENCH_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let dashboard_load::Load { bodies, end_ms, samples } = dashboard_load::from_env(total, days);
    let work = tempfile::tempdir().unwrap();

    // Vigil first, then stopped and started again: a dashboard's 24 h reads flushed segments
    // (the write buffer holds only the last flush interval, 10 min by default), not the
    // buffer a bulk load leaves behind.
    let vigil_data = work.path().join("vigil");
    let vigil_args = ["--wal-fsync", "never", "--retention", "0"];
    let vigil = VigilProcess::start(&vigil_data, &vigil_args).await;
    send_timed("vigil", vigil.pid(), &format!("http://127.0.0.1:{}/api/v1/write", vigil.http), &bodies).await;
    vigil.stop();
    if std::env::var_os("VIGIL_BENCH_LOAD_ONLY").is_some() {
        // Vigil's load alone: what a profile of the ingest path (under `VIGIL_BENCH_BIN`) needs.
        return;
    }
    let segment_bytes = common::dir_bytes(&vigil_data.join("segments"), Some(".parquet")) as f64;
    println!(
        "vigil segments before its compaction: {:.1} MiB, {:.3} bytes per sample",
        segment_bytes / 1048576.0,
        segment_bytes / samples
    );
    if let Some(keep) = std::env::var_os("VIGIL_BENCH_KEEP") {
        let status = std::process::Command::new("cp").arg("-r").arg(&vigil_data).arg(&keep).status().expect("cp");
        assert!(status.success(), "copying the store to {keep:?}");
        std::fs::write(std::path::Path::new(&keep).join("end"), format!("{}", end_ms / 1000)).expect("writing end");
    }
    let vigil = VigilProcess::start(&vigil_data, &vigil_args).await;
    let peers = Peers::start(work.path(), &vigil).await;
    for peer in &peers.all[1..] {
        send_timed(peer.name, peer.pid, &format!("{}/api/v1/write", peer.base), &bodies).await;
    }
    peers.settle().await;
    // Vigil's whole store (segments, their series indexes, manifests), measured once the
    // restarted server has merged the closed days (`compaction_window`: a pass a minute, each
    // merging `compaction_max_rows` rows of windows): no merge left pending.
    // (A merge that keeps failing would never let it reach 0: the bench says so, not hangs.)
    let settling = Instant::now();
    while vigil.compactions_pending().await != Some(0) {
        assert!(settling.elapsed() < Duration::from_secs(3 * 3600), "vigil's compaction never caught up");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("vigil compaction caught up {:.0} s after the peers' load", settling.elapsed().as_secs_f64());
    // Then quiet, as the peers were waited for: the last merge publishes before its memory is
    // freed, and the first panel's peak would count it.
    peers.settle().await;
    let (vigil_store, vigil_files) = common::live_store(&vigil_data.join("segments"));
    let vigil_store = vigil_store as f64;
    println!("vigil segment files after its compaction: {vigil_files}");
    // VictoriaMetrics's whole storage directory (samples and its series index), its merges
    // done now that the peers are quiet, against Vigil's whole store.
    let victoria_store = common::dir_bytes(&work.path().join("victoria-metrics"), None) as f64;
    println!(
        "on disk, whole stores: vigil {:.1} MiB, {:.3} bytes per sample; victoria-metrics {:.1} MiB, {:.3} bytes per sample ({:.2}x)",
        vigil_store / 1048576.0,
        vigil_store / samples,
        victoria_store / 1048576.0,
        victoria_store / samples,
        vigil_store / victoria_store
    );

    let mut windows = vec![
        ("1h", end_ms - 3_600_000, 15_000),
        ("6h", end_ms - 6 * 3_600_000, 60_000),
        ("24h", end_ms - DAY_MS + 600_000, 300_000),
    ];
    if days >= 7 {
        windows.push(("7d", end_ms - 7 * DAY_MS + 600_000, 600_000));
    }
    // Per peer: median ms, peak RSS during the runs (MiB) and its rise over the RSS before.
    println!(
        "\n{:<14} {:>4} | {:>9} {:>5} {:>5} | {:>9} {:>5} {:>5} | {:>9} {:>5} {:>5} | {:>8} {:>8} {:>8}",
        "query",
        "span",
        "vigil ms",
        "peak",
        "rise",
        "prom ms",
        "peak",
        "rise",
        "vm ms",
        "peak",
        "rise",
        "v/prom",
        "v/vm",
        "peak v/p"
    );
    for (name, query) in QUERIES {
        for &(span, start, step) in &windows {
            let mut figures = Vec::new();
            for peer in &peers.all {
                figures.push(measure(&peer.base, peer.pid, query, start, end_ms, step).await);
            }
            let [v, p, m] = figures[..] else { unreachable!() };
            assert_eq!(v.series, p.series, "{name} {span}: series count differs from Prometheus");
            let note = if m.series == v.series { String::new() } else { format!("  (vm: {} series)", m.series) };
            let cells =
                |f: &common::peers::Measured| format!("{:>9.1} {:>5.0} {:>5.0}", f.ms, f.peak_mib, f.growth_mib);
            println!(
                "{name:<14} {span:>4} | {} | {} | {} | {:>7.2}x {:>7.2}x {:>7.2}x{note}",
                cells(&v),
                cells(&p),
                cells(&m),
                v.ms / p.ms,
                v.ms / m.ms,
                v.peak_mib / p.peak_mib
            );
        }
    }
    // Memory at rest: what each keeps once the queries are over (allocators return freed
    // memory on their own schedule). Split in two, as RSS counts the pages of the program's
    // own code it has touched (each fault maps its neighbours too) beside what it allocated:
    // the peaks above count both.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let at_rest: Vec<String> = peers
        .all
        .iter()
        .map(|p| {
            let (all, anonymous, files) =
                (rss_mib(p.pid, "VmRSS:"), rss_mib(p.pid, "RssAnon:"), rss_mib(p.pid, "RssFile:"));
            format!("{} {all:.0} MiB (allocated {anonymous:.0}, mapped files {files:.0})", p.name)
        })
        .collect();
    println!("\nRSS at rest after the queries: {}", at_rest.join(", "));
    peers.stop();
    vigil.stop();
}
