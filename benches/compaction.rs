//! Compaction of a backfilled store: the CPU, peak memory and bytes on disk of Vigil merging
//! the closed days (`compaction_window`) of the query bench's load.
//!
//! Vigil takes N series (`VIGIL_BENCH_SERIES`, default 10,000) over D days
//! (`VIGIL_BENCH_DAYS`, default 4) at one sample per 60 s (`VIGIL_BENCH_STEP`,
//! `VIGIL_BENCH_VALUES` as the query bench's) with windows off
//! (`--compaction-window 0`: partitions are merged as they close, days are not), then is
//! started again with the default window and measured until its compaction has caught up
//! (`vigil_storage_compactions_pending` 0): its CPU, its peak RSS (VmHWM, reset at the start),
//! and its whole store before and after. `VIGIL_BENCH_ARGS` adds server flags to the second
//! start (e.g. `--compaction-max-rows 2000000`); `VIGIL_BENCH_BIN` measures another build.
//!
//! Compaction has no counterpart in the peers to time apart from their ingest; the query
//! bench compares whole stores with VictoriaMetrics's on the same load.
//!
//!     cargo bench --bench compaction

mod common;
#[path = "common/dashboard_load.rs"]
mod dashboard_load;

use std::time::{Duration, Instant};

use common::VigilProcess;
use common::peers::client;
use common::peers::{rss_mib, send_timed};

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VIGIL_BENCH_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let days: i64 = std::env::var("VIGIL_BENCH_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(4).max(3);
    let extra = std::env::var("VIGIL_BENCH_ARGS").unwrap_or_default();
    let dashboard_load::Load { bodies, samples, .. } = dashboard_load::from_env(total, days);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("vigil");

    let vigil =
        VigilProcess::start(&data, &["--wal-fsync", "never", "--retention", "0", "--compaction-window", "0"]).await;
    println!("windows off: partitions merge as they close, days do not");
    send_timed("vigil", vigil.pid(), &format!("http://127.0.0.1:{}/api/v1/write", vigil.http), &bodies).await;
    vigil.stop();
    let (before_bytes, before_files) = common::live_store(&data.join("segments"));
    println!(
        "store before: {:.1} MiB in {before_files} segment files, {:.3} bytes per sample",
        before_bytes as f64 / 1048576.0,
        before_bytes as f64 / samples
    );

    let mut args = vec!["--wal-fsync", "never", "--retention", "0"];
    args.extend(extra.split_whitespace());
    let vigil = VigilProcess::start(&data, &args).await;
    let pid = vigil.pid();
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let (rss_before, cpu, started) = (rss_mib(pid, "VmRSS:"), common::cpu_seconds(pid), Instant::now());
    while vigil.compactions_pending().await != Some(0) {
        assert!(started.elapsed() < Duration::from_secs(3 * 3600), "compaction never caught up");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (cpu, elapsed) = (common::cpu_seconds(pid) - cpu, started.elapsed().as_secs_f64());
    let peak = common::peak_rss_mib(pid);
    let (after_bytes, after_files) = common::live_store(&data.join("segments"));
    println!(
        "compaction ({}): caught up in {elapsed:.1} s, {cpu:.1} CPU s",
        if extra.is_empty() { "defaults" } else { &extra }
    );
    println!("peak RSS {peak:.0} MiB ({rss_before:.0} before, +{:.0})", peak - rss_before);
    println!(
        "store after: {:.1} MiB in {after_files} segment files, {:.3} bytes per sample",
        after_bytes as f64 / 1048576.0,
        after_bytes as f64 / samples
    );
    vigil.stop();
}
