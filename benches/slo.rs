//! SLO evaluation cost: 1,000 SLOs over 30 days of 1-minute data.
//!
//! 100 services each have a request and an error counter sampled every minute for 30 days
//! (8.6 M samples); 1,000 ratio SLOs read them (10 per service, different objectives). Reports
//! the first cycle (backfill of the whole window), then steady cycles after one more minute of
//! data, for 30-day and for 1-day windows: close to 1 means a cycle costs what the new data
//! costs, not what the window holds. Peak RSS is the process's.
//!
//!     cargo bench --bench slo

use std::time::Instant;

use vigil_query::slo::{SloEvaluator, load_texts};
use vigil_query::{QueryEngine, QueryOptions};
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageOptions, WriteBatch};

const SERVICES: usize = 100;
const SLOS_PER_SERVICE: usize = 10;
const MINUTE: i64 = 60_000;
const DAYS: i64 = 30;

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
        metrics.push(series("bench_errors_total", s, minutes().map(move |(t, m)| (t, (m * (s as i64 % 5)) as f64 / 10.0))));
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

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StorageOptions::new(dir.path());
    options.retention = std::time::Duration::ZERO;
    options.buffer_max_bytes = 4 << 30;
    options.wal_fsync = vigil_storage::wal::FsyncPolicy::Never;
    let storage = Storage::open(options).await.unwrap();
    let total_minutes = DAYS * 24 * 60;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 / MINUTE * MINUTE;
    let start = now - total_minutes * MINUTE;
    for day in 0..DAYS {
        storage.write(data(start, day * 1440, (day + 1) * 1440)).await.unwrap();
    }
    let flush = Instant::now();
    storage.persist().await.unwrap();
    println!("data: {} series x {} minutes, flushed to Parquet in {:.1} s; RSS {:.0} MiB", SERVICES * 2, total_minutes, flush.elapsed().as_secs_f64(), rss("VmRSS:"));
    let engine = QueryEngine::new(storage.clone(), QueryOptions::default()).unwrap();

    let mut steady = Vec::new();
    for window in ["30d", "1d"] {
        let evaluator = SloEvaluator::new(engine.clone());
        evaluator.set_definitions(load_texts(&[("bench.yaml".into(), definitions(window))], None).unwrap()).await;
        let before = rss("VmRSS:");
        let started = Instant::now();
        // Backfills run in the background: wait until every SLO has its numbers.
        let statuses = evaluator.settle(now).await;
        let backfill = started.elapsed().as_secs_f64();
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
            "window {window:>3}: first cycle (backfill) {backfill:.2} s; steady cycle {median:.3} s ({:.2} ms per SLO); RSS grew {:.0} MiB; peak RSS {:.0} MiB",
            median * 1000.0 / statuses.len() as f64,
            rss("VmRSS:") - before,
            rss("VmHWM:")
        );
        steady.push(median);
    }
    println!("steady cycle cost, 30d window / 1d window: {:.2}", steady[0] / steady[1]);
}
