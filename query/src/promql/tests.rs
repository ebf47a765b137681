//! PromQL over real storage, with answers worked out by hand. The full comparison against a
//! real Prometheus is the end-to-end corpus (tests/e2e/promql.rs).

use vigil_storage::{LabelSet, MetricSeries, Sample as StorageSample, Storage, StorageOptions, WriteBatch};

use super::*;
use crate::QueryOptions;

const MINUTE: i64 = 60_000;
/// A whole hour, in ms.
const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;

fn series(metric: &str, labels: &[(&str, &str)], points: impl IntoIterator<Item = (i64, f64)>) -> MetricSeries {
    MetricSeries {
        metric: metric.into(),
        labels: LabelSet::new(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap(),
        samples: points.into_iter().map(|(t, v)| StorageSample { timestamp_ns: t * 1_000_000, value: v }).collect(),
    }
}

/// Counters every 15 s for 30 minutes: `requests_total{job, code}` rising 1/s (code 200,
/// job api), 0.1/s (code 500, job api), 2/s (code 200, job web); a gauge `temp{room}`; a
/// histogram `latency_bucket{le}`.
async fn engine() -> (QueryEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let steps = || (0..=120).map(|i| T0 + i * 15_000);
    let rising = |per_second: f64| steps().map(move |t| (t, (t - T0) as f64 / 1000.0 * per_second));
    let batch = WriteBatch {
        metrics: vec![
            series("requests_total", &[("job", "api"), ("code", "200")], rising(1.0)),
            series("requests_total", &[("job", "api"), ("code", "500")], rising(0.1)),
            series("requests_total", &[("job", "web"), ("code", "200")], rising(2.0)),
            series("temp", &[("room", "a")], steps().map(|t| (t, 20.0))),
            series("temp", &[("room", "b")], steps().map(|t| (t, 25.0))),
            series("latency_bucket", &[("le", "0.1")], steps().map(|t| (t, 10.0))),
            series("latency_bucket", &[("le", "0.5")], steps().map(|t| (t, 50.0))),
            series("latency_bucket", &[("le", "+Inf")], steps().map(|t| (t, 100.0))),
        ],
        rows: vec![],
    };
    storage.write(batch).await.unwrap();
    (QueryEngine::new(storage, QueryOptions::default()).unwrap(), dir)
}

async fn instant(engine: &QueryEngine, query: &str, at: i64) -> Vec<(String, f64)> {
    match engine.promql(query, EvalRange::instant(at)).await.unwrap_or_else(|e| panic!("{query}: {e}")) {
        PromResult::Vector(samples) => {
            let mut out: Vec<(String, f64)> = samples
                .into_iter()
                .map(|s| (s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","), s.value))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        PromResult::Scalar(_, v) => vec![(String::new(), v)],
        other => panic!("{query}: unexpected {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn selectors_rates_and_aggregations() {
    let (engine, _dir) = engine().await;
    let at = T0 + 20 * MINUTE;
    assert_eq!(
        instant(&engine, "requests_total{code=\"200\"}", at).await,
        vec![
            ("__name__=requests_total,code=200,job=api".into(), 1200.0),
            ("__name__=requests_total,code=200,job=web".into(), 2400.0)
        ]
    );
    let rates = instant(&engine, "rate(requests_total[5m])", at).await;
    assert_eq!(rates.len(), 3);
    // Sorted by labels: code=200/api, code=200/web, code=500/api.
    assert!(close(rates[0].1, 1.0) && close(rates[1].1, 2.0) && close(rates[2].1, 0.1), "{rates:?}");
    let by_job = instant(&engine, "sum by (job) (rate(requests_total[5m]))", at).await;
    assert_eq!(by_job.len(), 2);
    assert!(close(by_job[0].1, 1.1) && close(by_job[1].1, 2.0), "{by_job:?}");
    assert_eq!(instant(&engine, "count(temp)", at).await, vec![(String::new(), 2.0)]);
    assert_eq!(instant(&engine, "max without (room) (temp)", at).await, vec![(String::new(), 25.0)]);
    assert_eq!(instant(&engine, "topk(1, temp)", at).await, vec![("__name__=temp,room=b".into(), 25.0)]);
    // Ties go to the series first in label order (Prometheus keeps the first it saw).
    assert_eq!(instant(&engine, "topk(1, latency_bucket * 0 + 1)", at).await, vec![("le=+Inf".into(), 1.0)]);
    assert_eq!(
        instant(&engine, "bottomk(2, latency_bucket * 0 + 1)", at).await,
        vec![("le=+Inf".into(), 1.0), ("le=0.1".into(), 1.0)]
    );
    // Lookback: 4 minutes after the last sample it is still there, 6 minutes after gone.
    let last = T0 + 30 * MINUTE;
    assert_eq!(instant(&engine, "temp{room=\"a\"}", last + 4 * MINUTE).await.len(), 1);
    assert_eq!(instant(&engine, "temp{room=\"a\"}", last + 6 * MINUTE).await.len(), 0);
    assert_eq!(instant(&engine, "temp{room=~\"a|b\", room!=\"b\"} offset 1m", at).await.len(), 1);
}

#[tokio::test]
async fn binary_operators_match_labels() {
    let (engine, _dir) = engine().await;
    let at = T0 + 20 * MINUTE;
    let ratio = instant(
        &engine,
        "sum by (job) (rate(requests_total{code=\"500\"}[5m])) / on (job) sum by (job) (rate(requests_total[5m]))",
        at,
    )
    .await;
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    assert!(close(ratio[0].1, 0.1 / 1.1), "{ratio:?}");
    assert_eq!(instant(&engine, "temp > 21", at).await, vec![("__name__=temp,room=b".into(), 25.0)]);
    assert_eq!(instant(&engine, "temp > bool 21", at).await, vec![("room=a".into(), 0.0), ("room=b".into(), 1.0)]);
    assert_eq!(instant(&engine, "21 < temp", at).await, vec![("__name__=temp,room=b".into(), 25.0)]);
    assert_eq!(instant(&engine, "temp{room=\"a\"} or temp", at).await.len(), 2);
    assert_eq!(instant(&engine, "temp unless temp{room=\"a\"}", at).await, vec![("__name__=temp,room=b".into(), 25.0)]);
    assert_eq!(instant(&engine, "temp and on() vector(1)", at).await.len(), 2);
    let grouped = instant(
        &engine,
        "requests_total * on (job) group_left (room) (label_replace(temp{room=\"a\"}, \"job\", \"api\", \"\", \"\"))",
        at,
    )
    .await;
    assert_eq!(grouped.len(), 2, "{grouped:?}");
    assert!(grouped[0].0.contains("room=a"), "{grouped:?}");
    assert_eq!(instant(&engine, "2 * 3 + 1", at).await, vec![(String::new(), 7.0)]);
    assert_eq!(instant(&engine, "-temp{room=\"a\"}", at).await, vec![("room=a".into(), -20.0)]);
}

#[tokio::test]
async fn functions_and_subqueries() {
    let (engine, _dir) = engine().await;
    let at = T0 + 20 * MINUTE;
    let q = instant(&engine, "histogram_quantile(0.5, latency_bucket)", at).await;
    assert_eq!(q.len(), 1);
    assert!(close(q[0].1, 0.5), "{q:?}");
    assert_eq!(instant(&engine, "absent(nothing{job=\"x\"})", at).await, vec![("job=x".into(), 1.0)]);
    assert_eq!(instant(&engine, "absent(temp)", at).await.len(), 0);
    assert_eq!(
        instant(&engine, "label_join(temp{room=\"a\"}, \"x\", \"-\", \"room\", \"room\")", at).await,
        vec![("__name__=temp,room=a,x=a-a".into(), 20.0)]
    );
    assert_eq!(instant(&engine, "scalar(temp{room=\"b\"})", at).await, vec![(String::new(), 25.0)]);
    assert!(instant(&engine, "scalar(temp)", at).await[0].1.is_nan());
    let sub = instant(&engine, "max_over_time(rate(requests_total{job=\"web\"}[1m])[5m:1m])", at).await;
    assert_eq!(sub.len(), 1);
    assert!(close(sub[0].1, 2.0), "{sub:?}");
    assert_eq!(
        instant(&engine, "count_values(\"v\", temp)", at).await,
        vec![("v=20".into(), 1.0), ("v=25".into(), 1.0)]
    );
    assert_eq!(instant(&engine, "timestamp(temp{room=\"a\"})", at).await, vec![("room=a".into(), (at / 1000) as f64)]);
    assert_eq!(
        instant(&engine, "clamp_max(temp, 22)", at).await,
        vec![("room=a".into(), 20.0), ("room=b".into(), 22.0)]
    );
    // A range query gives one point per step.
    let range = EvalRange::range(at, at + 5 * MINUTE, MINUTE);
    match engine.promql("sum(temp)", range).await.unwrap() {
        PromResult::Matrix(series) => assert_eq!(series[0].points.len(), 6),
        other => panic!("{other:?}"),
    }
    assert!(matches!(engine.promql("temp[5m]", range).await, Err(PromError::BadData(_))));
    assert!(matches!(engine.promql("rate(temp)", range).await, Err(PromError::BadData(_))));
}

/// Aggregations folded into the step sweep answer exactly what the same aggregation over
/// the unfolded rows answers (`* 1` keeps the sweep from folding).
#[tokio::test]
async fn folded_aggregations_equal_unfolded_ones() {
    let (engine, _dir) = engine().await;
    let range = EvalRange::range(T0 - 10 * MINUTE, T0 + 40 * MINUTE, 45_000);
    let matrix = |query: String| {
        let engine = &engine;
        async move {
            match engine.promql(&query, range).await.unwrap_or_else(|e| panic!("{query}: {e}")) {
                PromResult::Matrix(series) => series,
                other => panic!("{query}: unexpected {other:?}"),
            }
        }
    };
    for op in ["sum", "avg", "count", "min", "max", "group"] {
        for (inner, modifier) in [
            ("rate(requests_total[5m])", "by (job)"),
            ("last_over_time(requests_total[2m])", "by (__name__, code)"),
            ("requests_total", "without (code)"),
            ("temp", ""),
            ("latency_bucket / (latency_bucket - 10)", "by (le)"),
        ] {
            let folded = matrix(format!("{op} {modifier} ({inner})")).await;
            let unfolded = matrix(format!("{op} {modifier} ({inner} * 1)")).await;
            let shape = |s: &[Series]| {
                s.iter()
                    .map(|s| (s.labels.clone(), s.points.iter().map(|p| p.0).collect::<Vec<_>>()))
                    .collect::<Vec<_>>()
            };
            if inner.starts_with("last_over_time") {
                // `* 1` drops the name that last_over_time keeps: compare values only.
                assert_eq!(folded.len(), unfolded.len(), "{op} {modifier} ({inner})");
            } else {
                assert_eq!(shape(&folded), shape(&unfolded), "{op} {modifier} ({inner})");
            }
            assert!(!folded.is_empty(), "{op} {modifier} ({inner})");
            for (a, b) in folded.iter().zip(&unfolded) {
                for (x, y) in a.points.iter().zip(&b.points) {
                    assert!(
                        x.1 == y.1 || close(x.1, y.1) || (x.1.is_nan() && y.1.is_nan()),
                        "{op} {modifier} ({inner}): {x:?} vs {y:?}"
                    );
                }
            }
        }
    }
}

/// The samples the step sweep holds are reserved from the query memory pool: a query that
/// needs more than `query.max_memory` is refused, and the same query fits a larger pool.
#[tokio::test]
async fn the_sweep_holds_its_samples_within_the_query_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let many: Vec<MetricSeries> = (0..200)
        .map(|i| series("wide", &[("instance", &format!("host-{i}"))], (0..=240).map(|s| (T0 + s * 15_000, s as f64))))
        .collect();
    storage.write(WriteBatch { metrics: many, rows: vec![] }).await.unwrap();
    let range = EvalRange::range(T0 + 30 * MINUTE, T0 + 60 * MINUTE, 60_000);
    // 200 series × 241 samples are held at once (one chunk): ~1.5 MB accounted.
    let small =
        QueryEngine::new(storage.clone(), QueryOptions { max_memory_bytes: 256 << 10, ..QueryOptions::default() })
            .unwrap();
    let error = small.promql("max_over_time(wide[1h])", range).await.unwrap_err();
    assert!(matches!(&error, PromError::ResourcesExhausted(m) if m.contains("PromQL step sweep")), "{error}");
    let large =
        QueryEngine::new(storage, QueryOptions { max_memory_bytes: 64 << 20, ..QueryOptions::default() }).unwrap();
    match large.promql("max_over_time(wide[1h])", range).await.unwrap() {
        PromResult::Matrix(series) => assert_eq!(series.len(), 200),
        other => panic!("unexpected {other:?}"),
    }
}

/// A selector without a metric name reads its tables as one (one scan per shared segment)
/// and answers as reading them one by one does: from the buffer, from segments, from both.
#[tokio::test]
async fn nameless_selectors_read_shared_segments_once_and_answer_the_same() {
    let (engine, _dir) = engine().await;
    let at = T0 + 20 * MINUTE;
    let queries = [
        "{job=\"api\"}",
        "{code=\"200\"}",
        "{job=~\"api|web\", code!=\"500\"}",
        "{room!=\"\"}",
        "count by (__name__) ({__name__=~\"requests_total|temp\"})",
        "sum by (__name__, job) (rate({job=~\".+\"}[5m]))",
        "{__name__=~\"temp|latency_bucket\", le=\"\"}",
    ];
    let mut buffered = Vec::new();
    for query in queries {
        buffered.push(instant(&engine, query, at).await);
    }
    assert_eq!(buffered[0].len(), 2);
    assert_eq!(
        buffered[1],
        vec![
            ("__name__=requests_total,code=200,job=api".into(), 1200.0),
            ("__name__=requests_total,code=200,job=web".into(), 2400.0),
        ]
    );
    assert_eq!(buffered[6].len(), 2, "temp's two rooms; latency_bucket has le: {:?}", buffered[6]);

    let storage = engine.storage().clone();
    storage.persist().await.unwrap();
    let scanned = storage.segments_scanned();
    for (query, expected) in queries.iter().zip(&buffered) {
        assert_eq!(&instant(&engine, query, at).await, expected, "{query} from segments");
    }
    // Every query read its tables as one: one shared file per scan, never one per table.
    let scans = storage.segments_scanned() - scanned;
    assert!(scans <= queries.len() as u64 * 2, "{scans} segment scans for {} queries", queries.len());
    let scanned = storage.segments_scanned();
    assert_eq!(instant(&engine, "count({__name__=~\".+\"})", at).await, vec![(String::new(), 8.0)]);
    // Shared files: one per decimal scale (whole-number counters, temperatures with places).
    let files =
        storage.manifest().segments.iter().map(|s| s.path.clone()).collect::<std::collections::BTreeSet<_>>().len()
            as u64;
    assert!(files < 3, "{files} files for three tables");
    assert_eq!(storage.segments_scanned() - scanned, files, "three tables, one scan per shared segment");

    // Half in segments, half in the buffer: later samples of the same series.
    let later = (121..=240).map(|i| T0 + i * 15_000);
    let batch = WriteBatch {
        metrics: vec![
            series(
                "requests_total",
                &[("job", "api"), ("code", "200")],
                later.clone().map(|t| (t, (t - T0) as f64 / 1000.0)),
            ),
            series("temp", &[("room", "a")], later.map(|t| (t, 21.0))),
        ],
        rows: vec![],
    };
    storage.write(batch).await.unwrap();
    let at = T0 + 50 * MINUTE;
    let both = instant(&engine, "{job=\"api\"}", at).await;
    assert_eq!(
        both,
        vec![("__name__=requests_total,code=200,job=api".into(), 3000.0)],
        "the 500s ended 20 minutes ago"
    );
    let rooms = instant(&engine, "max_over_time({room=~\"a|b\"}[40m])", at).await;
    assert_eq!(rooms, vec![("room=a".into(), 21.0), ("room=b".into(), 25.0)]);
}

/// A local sweep chunk of one table (or one set of shared segments) is planned by hand, and
/// reads the rows DataFusion's plan of the same select reads: every kind of matcher, metric
/// names as a constant and as a column, samples in segments and in the buffer.
#[tokio::test]
async fn a_chunk_planned_by_hand_reads_what_datafusion_plans() {
    use datafusion::arrow::util::display::array_value_to_string;
    let (engine, _dir) = engine().await;
    let storage = engine.storage().clone();
    storage.persist().await.unwrap();
    let later = (121..=240).map(|i| T0 + i * 15_000);
    let batch = WriteBatch {
        metrics: vec![
            series("requests_total", &[("job", "api"), ("code", "200")], later.clone().map(|t| (t, t as f64))),
            series("requests_total", &[("job", "db")], later.clone().map(|t| (t, 1.0))),
            series("temp", &[("room", "a")], later.map(|t| (t, 21.0))),
        ],
        rows: vec![],
    };
    storage.write(batch).await.unwrap();
    let rows = |batches: Vec<datafusion::arrow::array::RecordBatch>| {
        let mut rows: Vec<String> = batches
            .iter()
            .flat_map(|batch| {
                (0..batch.num_rows()).map(move |row| {
                    let schema = batch.schema();
                    let cells = schema.fields().iter().zip(batch.columns()).map(|(field, column)| {
                        format!("{}={}", field.name(), array_value_to_string(column, row).unwrap())
                    });
                    cells.collect::<Vec<_>>().join(",")
                })
            })
            .collect();
        rows.sort();
        rows
    };
    let compiler = compile::Compiler::new(&engine, EvalRange::range(T0, T0 + 55 * MINUTE, MINUTE), 300_000);
    let queries = [
        // Three series of 121 samples in segments; in the buffer, 100 more of one and 100 of
        // a new series without `code` (up to 55 min).
        ("requests_total", 3 * 121 + 200),
        ("requests_total{job=\"api\"}", 2 * 121 + 100),
        ("requests_total{code!=\"500\"}", 2 * 121 + 200),
        ("requests_total{job=~\"a.*|d.\"}", 2 * 121 + 200),
        ("requests_total{job!~\"web\", code=\"\"}", 100),
        ("requests_total{code!=\"\"}", 3 * 121 + 100),
        ("{job=\"api\"}", 2 * 121 + 100),
        ("{__name__=~\"temp|latency_bucket\", le=\"\"}", 2 * 121 + 100),
    ];
    for (query, expected) in queries {
        let expr = engine.parse_promql(&format!("{query}[5m]")).await.unwrap();
        let compile::Value::Matrix(matrix) = compiler.compile(&expr).await.unwrap() else { panic!("{query}") };
        let mut read = 0;
        for chunk in matrix.chunks {
            let chunk_scan::ChunkScan::Table(table) = &chunk.scan else {
                panic!("{query}: a local read of one table is planned by hand")
            };
            let mut by_hand = Vec::new();
            let mut stream = chunk.scan.clone().stream().await.unwrap();
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                by_hand.push(batch.unwrap());
            }
            let by_hand = rows(by_hand);
            assert_eq!(by_hand, rows(table.frame().unwrap().collect().await.unwrap()), "{query}");
            read += by_hand.len();
        }
        assert_eq!(read, expected, "{query}");
    }
}

/// A store whose partitions are ten minutes long: two hours of samples span twelve of them.
async fn ten_minute_partitions() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StorageOptions::new(dir.path());
    options.partition_duration = std::time::Duration::from_secs(600);
    let storage = Storage::open(options).await.unwrap();
    (dir, storage)
}

/// A store of ten-minute partitions merged into one segment per closed hour.
async fn hour_windows() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StorageOptions::new(dir.path());
    options.partition_duration = std::time::Duration::from_secs(600);
    options.compaction_window = std::time::Duration::from_secs(3600);
    let storage = Storage::open(options).await.unwrap();
    (dir, storage)
}

/// Two hours of a counter at 15 s rising `per_step` a step, from 0 again at step `reset_at`;
/// a stale marker at 70 min and a gap after it.
fn two_hour_counter(metric: &str, job: &str, code: &str, per_step: f64, reset_at: Option<i64>) -> MetricSeries {
    let stale = f64::from_bits(crate::promql::kernels::STALE_NAN_BITS);
    let points = (0..=480).filter(|s| !(281..=300).contains(s)).map(move |s| {
        let from = reset_at.filter(|&r| s >= r).unwrap_or(0);
        (T0 + s * 15_000, if s == 280 { stale } else { (s - from) as f64 * per_step })
    });
    series(metric, &[("job", job), ("code", code)], points)
}

/// A window merged in slices of series (several files of disjoint series, see
/// `storage::merge_slices`) is read one file after the other, each series in one run, so the
/// sweep lets go of a series' samples as its run ends: a query holds one series' window of
/// samples at a time, not every series' (a 7 d `rate` over 10,000 series had held whole days
/// of all of them and was refused by the sample budget).
#[tokio::test]
async fn a_window_merged_in_slices_is_swept_one_series_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StorageOptions::new(dir.path());
    options.partition_duration = std::time::Duration::from_secs(600);
    options.compaction_window = std::time::Duration::from_secs(3600);
    options.compaction_max_rows = 1_000;
    let storage = Storage::open(options).await.unwrap();
    // 24 series over the first hour at 15 s: 240 samples each, 5,760 in all.
    let metrics = (0..24)
        .map(|i| {
            let instance = format!("host-{i:02}");
            series("hits_total", &[("instance", &instance)], (0..240).map(|s| (T0 + s * 15_000, (s * (i + 1)) as f64)))
        })
        .collect();
    storage.write(WriteBatch { metrics, rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    let range = EvalRange::range(T0 + 5 * MINUTE, T0 + 60 * MINUTE, MINUTE);
    let query = "sum(rate(hits_total[5m]))";
    let answer = |max_samples: usize| {
        let storage = storage.clone();
        async move {
            let options = QueryOptions { max_samples, max_workers_per_query: 1, ..QueryOptions::default() };
            QueryEngine::new(storage, options).unwrap().promql(query, range).await
        }
    };
    let before = answer(usize::MAX).await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1, "the hour's six partitions");
    let files: std::collections::BTreeSet<u64> = storage.manifest().segments.iter().map(|s| s.id).collect();
    assert!(files.len() >= 5, "slices of at most 1,000 rows: four series each, {files:?}");
    // One series' 240 samples at a time fit in 1,000; every series' hour does not.
    assert_eq!(answer(1_000).await.unwrap(), before);
    storage.close().await.unwrap();
}

/// A sweep over many partitions is read in lanes (spans of time swept in parallel, each
/// reading the window before it again) and answers exactly as one lane does: range
/// functions, the instant lookup with stale markers, offsets, folds, windows longer than a
/// step, samples in segments and in the buffer.
#[tokio::test]
async fn lanes_answer_as_one_sweep_does() {
    let (_dir, storage) = ten_minute_partitions().await;
    // A reset at 50 min.
    let counter =
        |job: &str, code: &str, per_step: f64| two_hour_counter("requests_total", job, code, per_step, Some(200));
    let first = vec![counter("api", "200", 3.0), counter("api", "500", 0.5), counter("web", "200", 7.0)];
    storage.write(WriteBatch { metrics: first, rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    // Later samples stay in the buffer.
    let later = (481..=600).map(|s| (T0 + s * 15_000, s as f64));
    storage
        .write(WriteBatch {
            metrics: vec![series("requests_total", &[("job", "api"), ("code", "200")], later)],
            rows: vec![],
        })
        .await
        .unwrap();

    let one = QueryEngine::new(storage.clone(), QueryOptions { max_workers_per_query: 1, ..QueryOptions::default() })
        .unwrap();
    let four = QueryEngine::new(storage, QueryOptions { max_workers_per_query: 4, ..QueryOptions::default() }).unwrap();
    let range = EvalRange::range(T0 + 3 * MINUTE, T0 + 150 * MINUTE, 37_000);
    let queries = [
        "sum by (job) (rate(requests_total[5m]))",
        "rate(requests_total[2m])",
        "increase(requests_total[10m] offset 7m)",
        "requests_total",
        "max_over_time(requests_total[9m])",
        "count(requests_total)",
        "sum by (code) (requests_total offset 3m)",
    ];
    for query in queries {
        let (a, b) = (one.promql(query, range).await.unwrap(), four.promql(query, range).await.unwrap());
        let PromResult::Matrix(series) = &a else { panic!("{query}: {a:?}") };
        assert!(!series.is_empty() && series.iter().all(|s| s.points.len() > 100), "{query}: {series:?}");
        assert_eq!(a, b, "{query}");
    }

    // Four lanes, where one engine runs one.
    let lanes = |engine: &QueryEngine| {
        let engine = engine.clone();
        async move {
            let expr = engine.parse_promql("rate(requests_total[5m])").await.unwrap();
            let compiler = compile::Compiler::new(&engine, range, DEFAULT_LOOKBACK.as_millis() as i64);
            let compile::Value::Vector(plan) = compiler.compile_answer(&expr).await.unwrap() else {
                panic!("not a vector")
            };
            let plan = plan.frame.create_physical_plan().await.unwrap();
            let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
            text.split("partition_sizes=")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .map(str::to_string)
                .unwrap_or(text)
        }
    };
    assert_eq!(lanes(&one).await, "1");
    assert_eq!(lanes(&four).await, "4");
}

/// Closed partitions merged into one segment per window (`compaction_window`) answer every
/// query as the partitions did: each merged segment is swept in one chunk, and a range
/// starting or ending inside it (or a lane's lead-in) reads the part its marks say.
#[tokio::test]
async fn merged_windows_answer_as_their_partitions_did() {
    let (_dir, storage) = hour_windows().await;
    let counter =
        |job: &str, code: &str, per_step: f64| two_hour_counter("requests_total", job, code, per_step, Some(200));
    let first = vec![counter("api", "200", 3.0), counter("api", "500", 0.5), counter("web", "200", 7.0)];
    storage.write(WriteBatch { metrics: first, rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    let engines = [1, 4].map(|workers| {
        QueryEngine::new(storage.clone(), QueryOptions { max_workers_per_query: workers, ..QueryOptions::default() })
            .unwrap()
    });
    let ranges = [
        EvalRange::range(T0 + 3 * MINUTE, T0 + 150 * MINUTE, 37_000),
        EvalRange::range(T0 + 25 * MINUTE, T0 + 95 * MINUTE, 15_000),
        EvalRange::range(T0 + 61 * MINUTE, T0 + 62 * MINUTE, 15_000),
        EvalRange::instant(T0 + 47 * MINUTE),
    ];
    let queries = [
        "sum by (job) (rate(requests_total[5m]))",
        "rate(requests_total{code=\"500\"}[2m])",
        "increase(requests_total[10m] offset 7m)",
        "requests_total",
        "max_over_time(requests_total[9m])",
        "count(requests_total)",
    ];
    let answers = || async {
        let mut answers = Vec::new();
        for range in ranges {
            for query in queries {
                for engine in &engines {
                    answers.push(engine.promql(query, range).await.unwrap());
                }
            }
        }
        answers
    };
    let before = answers().await;
    assert!(storage.merged_spans_ms(i64::MIN, i64::MAX).is_empty());
    assert_eq!(storage.compact().await.unwrap(), 2, "two windows of six partitions");
    let spans = storage.merged_spans_ms(i64::MIN, i64::MAX);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let after = answers().await;
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a, b, "{} over range {}", queries[i / 2 % queries.len()], i / 2 / queries.len());
    }
}

/// A merged window read alone comes one run per series, so each series drops the samples no
/// later step needs as soon as its run has ended: a 1 h window of 40 series (9,600 samples)
/// is swept holding about one run and everyone's window, within a sample budget of 3,000.
/// With a second file in the window the runs may come again, every series is held until the
/// window's end, and the same budget refuses the query; the answers are the same throughout.
#[tokio::test]
async fn series_read_from_one_segment_let_go_of_their_samples_as_their_runs_end() {
    let (_dir, storage) = hour_windows().await;
    // 40 counters, two hours at 15 s.
    let wide: Vec<MetricSeries> = (0..40)
        .map(|i| {
            let per_step = 1.0 + i as f64;
            series(
                "wide",
                &[("instance", &format!("host-{i:02}"))],
                (0..480).map(move |s| (T0 + s * 15_000, s as f64 * per_step)),
            )
        })
        .collect();
    storage.write(WriteBatch { metrics: wide, rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 2, "two windows of six partitions");
    let engine = |max_samples: usize| {
        let options = QueryOptions { max_samples, max_workers_per_query: 1, ..QueryOptions::default() };
        QueryEngine::new(storage.clone(), options).unwrap()
    };
    let (budgeted, unbounded) = (engine(3_000), engine(1_000_000));
    let range = EvalRange::range(T0 + 5 * MINUTE, T0 + 119 * MINUTE, 5 * MINUTE);
    let query = "rate(wide[5m])";
    let answer = unbounded.promql(query, range).await.unwrap();
    let PromResult::Matrix(swept) = &answer else { panic!("{answer:?}") };
    assert!(swept.len() == 40 && swept.iter().all(|s| s.points.len() == 23), "{swept:?}");
    assert_eq!(budgeted.promql(query, range).await.unwrap(), answer);

    // A late sample of one series lands in the first window: a second file there.
    let late = series("wide", &[("instance", "host-00")], [(T0 + 30 * MINUTE + 7_000, 120.5)]);
    storage.write(WriteBatch { metrics: vec![late], rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    let error = budgeted.promql(query, range).await.unwrap_err();
    assert!(error.to_string().contains("query.max_samples"), "{error}");
    let with_late = unbounded.promql(query, range).await.unwrap();
    let PromResult::Matrix(late_series) = &with_late else { panic!("{with_late:?}") };
    assert_eq!(late_series[1..], swept[1..], "the other series answer as before");
}

/// A query whose answer is a step sweep's output (or `topk`/`bottomk` of it) takes it as
/// series (`SweepLanes::series`, one vector per series or group and lane) instead of rows:
/// the answer is the one the rows give, across lanes, segments and the buffer, with ties
/// and NaN, and two series made alike still fail.
#[tokio::test]
async fn a_sweep_answers_the_same_as_series_and_as_rows() {
    let (_dir, storage) = ten_minute_partitions().await;
    let counter =
        |metric: &str, job: &str, code: &str, per_step: f64| two_hour_counter(metric, job, code, per_step, None);
    let metrics = vec![
        counter("requests_total", "api", "200", 3.0),
        counter("requests_total", "api", "", 0.5),
        counter("requests_total", "web", "200", 7.0),
        counter("errors_total", "api", "200", 0.25),
        // Ties requests_total{api,200} until the buffer's samples.
        counter("requests_total", "web", "500", 3.0),
        series("temp", &[("room", "a")], (0..=480).map(|s| (T0 + s * 15_000, 20.0 + (s % 7) as f64))),
        series(
            "temp",
            &[("room", "b")],
            (0..=480).map(|s| (T0 + s * 15_000, if s % 3 == 0 { f64::NAN } else { 30.0 - (s % 5) as f64 })),
        ),
        series("temp", &[("room", "c")], (0..=480).map(|s| (T0 + s * 15_000, 25.0))),
    ];
    // Histograms: `api`'s "1" and "1.0" are one bucket; `web` lacks buckets before step 100
    // and its "0.5" bucket after step 300 (its quantile there is the +Inf bucket's); `batch`
    // has no +Inf bucket (NaN); `other_bucket` is `api`'s histogram under another name.
    let bucket = |metric: &str, job: &str, le: &str, per_step: f64, steps: std::ops::Range<i64>| {
        series(metric, &[("job", job), ("le", le)], steps.map(move |s| (T0 + s * 15_000, s as f64 * per_step)))
    };
    let metrics = metrics
        .into_iter()
        .chain([
            bucket("latency_bucket", "api", "0.1", 1.0, 0..481),
            bucket("latency_bucket", "api", "1", 2.0, 0..481),
            bucket("latency_bucket", "api", "1.0", 0.5, 0..481),
            bucket("latency_bucket", "api", "+Inf", 4.0, 0..481),
            bucket("latency_bucket", "web", "0.5", 3.0, 100..300),
            bucket("latency_bucket", "web", "+Inf", 5.0, 100..481),
            bucket("latency_bucket", "batch", "2", 1.0, 0..481),
            bucket("other_bucket", "api", "+Inf", 1.0, 0..481),
        ])
        .collect();
    storage.write(WriteBatch { metrics, rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    let later = (481..=600).map(|s| (T0 + s * 15_000, s as f64));
    storage
        .write(WriteBatch {
            metrics: vec![series("requests_total", &[("job", "api"), ("code", "200")], later)],
            rows: vec![],
        })
        .await
        .unwrap();
    let engine =
        QueryEngine::new(storage, QueryOptions { max_workers_per_query: 4, ..QueryOptions::default() }).unwrap();

    let both_ways = |query: &'static str, range: EvalRange| {
        let engine = engine.clone();
        async move {
            let expr = engine.parse_promql(query).await.unwrap();
            let compiler = compile::Compiler::new(&engine, range, DEFAULT_LOOKBACK.as_millis() as i64);
            let as_series = result::collect(compiler.compile_answer(&expr).await.unwrap(), range, None).await;
            let compile::Value::Vector(mut plan) = compiler.compile_answer(&expr).await.unwrap() else {
                panic!("{query}: not a vector")
            };
            assert!(plan.sweep.is_some(), "{query}: not a sweep's output");
            plan.sweep = None;
            let as_rows = result::collect(compile::Value::Vector(plan), range, None).await;
            (format!("{as_series:?}"), format!("{as_rows:?}"))
        }
    };
    let range = EvalRange::range(T0 + 3 * MINUTE, T0 + 150 * MINUTE, 37_000);
    let instant = EvalRange { step_ms: 0, ..EvalRange::instant(T0 + 100 * MINUTE) };
    for query in [
        "requests_total",
        "{job=\"api\"}",
        "rate(requests_total[2m])",
        "max_over_time(requests_total[9m] offset 4m)",
        "timestamp(requests_total)",
        "last_over_time({code=\"200\"}[1m])",
        "sum by (job) (rate(requests_total[5m]))",
        "count(requests_total)",
        "max by (code) (max_over_time(requests_total[3m]))",
        "topk(2, rate(requests_total[2m]))",
        "topk(1, requests_total)",
        "bottomk(2.7, requests_total)",
        "topk by (code) (1, sum by (job, code) (rate(requests_total[5m])))",
        "topk(1, temp)",
        "bottomk(1, temp)",
        "topk(2, max_over_time(temp[1m]))",
        "bottomk(1, avg by (room) (temp))",
        "topk(100, temp)",
        "histogram_quantile(0.9, rate(latency_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(latency_bucket[5m])))",
        "histogram_quantile(0.75, latency_bucket)",
        "histogram_quantile(0.99, max by (job, le) (latency_bucket))",
        "histogram_quantile(1.5, rate(latency_bucket[2m]))",
    ] {
        for range in [range, instant] {
            let (as_series, as_rows) = both_ways(query, range).await;
            assert!(as_series.starts_with("Ok(") && !as_series.ends_with("([]))"), "{query}: {as_series}");
            assert_eq!(as_series, as_rows, "{query}");
        }
    }
    for query in ["topk(0, temp)", "topk(0.5, rate(requests_total[5m]))"] {
        let (as_series, as_rows) = both_ways(query, range).await;
        assert_eq!(as_series, "Ok(Matrix([]))");
        assert_eq!(as_series, as_rows, "{query}");
    }
    // Two histograms alike but for the name: one label set answered twice.
    let (as_series, as_rows) =
        both_ways("histogram_quantile(0.5, {__name__=~\".+_bucket\", job=\"api\"})", range).await;
    assert!(as_series.contains("same labelset"), "{as_series}");
    assert_eq!(as_series, as_rows);
    // `rate` drops the metric name: errors_total{api,200} meets requests_total{api,200}.
    let (as_series, as_rows) = both_ways("rate({job=\"api\", code=\"200\"}[5m])", range).await;
    assert!(as_series.contains("same labelset"), "{as_series}");
    assert_eq!(as_series, as_rows);

    // Inside a query as at its top (Prometheus checks every step of every function and
    // operator): aggregating the clash does not hide it, folded or not.
    let answer = |query: &'static str, range: EvalRange| {
        let engine = engine.clone();
        async move { format!("{:?}", engine.promql(query, range).await) }
    };
    for query in [
        "sum(rate({job=\"api\", code=\"200\"}[5m]))",
        "sum by (job) (count_over_time({__name__=~\".+_total\", code=\"200\"}[1m]))",
        "max(abs({job=\"api\", code=\"200\"}))",
        "sum({job=\"api\", code=\"200\"} * 2)",
        // requests_total has two series for job="api" (code 200 and none).
        "sum(errors_total / on (job) requests_total)",
        "count(label_replace(temp, \"room\", \"all\", \"\", \"\"))",
        "sum(histogram_quantile(0.5, label_replace({job=\"api\", code=\"200\"}, \"le\", \"1\", \"\", \"\")))",
    ] {
        for range in [range, instant] {
            let got = answer(query, range).await;
            assert!(got.contains("same labelset"), "{query}: {got}");
        }
    }
    // One name per label set, or label sets kept apart: answered.
    for (query, expected) in [
        ("sum(rate({job=\"web\", code=\"200\"}[5m]))", 7.0 / 15.0),
        ("sum(rate({job=\"api\", __name__=\"errors_total\"}[5m]))", 0.25 / 15.0),
        ("count(label_replace(temp, \"place\", \"all\", \"\", \"\"))", 3.0),
        ("count({job=\"api\", code=\"200\"} > 0)", 2.0),
    ] {
        let got = engine.promql(query, instant).await;
        let Ok(PromResult::Vector(samples)) = &got else { panic!("{query}: {got:?}") };
        assert!(matches!(samples.as_slice(), [one] if close(one.value, expected)), "{query}: {got:?}");
    }
}

/// `query.max_samples` bounds the samples a query holds at once, as Prometheus's
/// `query.max-samples` does: a long range of one series loads more than the budget in all
/// but holds a window and a partition at a time; a window longer than the budget is refused.
#[tokio::test]
async fn the_sample_budget_bounds_what_a_query_holds_not_what_it_has_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    // 12 h at 15 s: 2,881 samples, 480 per 2 h partition.
    let points = (0..=2880).map(|s| (T0 + s * 15_000, s as f64));
    storage.write(WriteBatch { metrics: vec![series("long", &[("job", "a")], points)], rows: vec![] }).await.unwrap();
    storage.persist().await.unwrap();
    let options = QueryOptions { max_samples: 1_000, max_workers_per_query: 1, ..QueryOptions::default() };
    let engine = QueryEngine::new(storage, options).unwrap();
    let range = EvalRange::range(T0 + 10 * MINUTE, T0 + 720 * MINUTE, 5 * MINUTE);
    match engine.promql("rate(long[5m])", range).await.unwrap() {
        PromResult::Matrix(series) => assert_eq!(series[0].points.len(), 143),
        other => panic!("unexpected {other:?}"),
    }
    let error = engine.promql("max_over_time(long[6h])", range).await.unwrap_err();
    assert!(error.to_string().contains("query.max_samples"), "{error}");
}

/// A binary operation reads of its right side only the series that can match its left
/// side's (see `pushdown`), and answers as reading all of them does.
#[tokio::test]
async fn the_left_sides_labels_narrow_the_right_side_and_keep_the_answer() {
    let (engine, _dir) = engine().await;
    engine.storage().persist().await.unwrap();
    let at = T0 + 20 * MINUTE;
    // Each beside the same with its right side wrapped in `+ 0`, which stops the pushdown.
    let ratio = "sum by (job) (rate(requests_total{code=\"500\"}[5m])) / sum by (job) (rate(requests_total[5m]))";
    let cases = [
        (
            ratio,
            "sum by (job) (rate(requests_total{code=\"500\"}[5m])) / (sum by (job) (rate(requests_total[5m])) + 0)",
        ),
        (
            "requests_total{code=\"500\"} / ignoring (code) requests_total{code=\"200\"}",
            "requests_total{code=\"500\"} / ignoring (code) (requests_total{code=\"200\"} + 0)",
        ),
        (
            "requests_total{code=\"500\"} * on (job) group_left () sum by (job) (requests_total)",
            "requests_total{code=\"500\"} * on (job) group_left () (sum by (job) (requests_total) + 0)",
        ),
        (
            "requests_total{code=\"500\"} < on (job) group_left () sum by (job) (requests_total)",
            "requests_total{code=\"500\"} < on (job) group_left () (sum by (job) (requests_total) + 0)",
        ),
        (
            "requests_total{code=\"500\"} and on (job) requests_total",
            "requests_total{code=\"500\"} and on (job) (requests_total + 0)",
        ),
    ];
    for (query, unpushed) in cases {
        let skipped = engine.storage().rows_skipped_by_index();
        let pushed_answer = instant(&engine, query, at).await;
        let pushed_skipped = engine.storage().rows_skipped_by_index() - skipped;
        let skipped = engine.storage().rows_skipped_by_index();
        let unpushed_answer = instant(&engine, unpushed, at).await;
        let unpushed_skipped = engine.storage().rows_skipped_by_index() - skipped;
        assert_eq!(pushed_answer, unpushed_answer, "{query} vs {unpushed}");
        assert!(!pushed_answer.is_empty(), "{query}");
        assert!(
            pushed_skipped > unpushed_skipped,
            "{query}: the right side read every series ({pushed_skipped} vs {unpushed_skipped} rows skipped)"
        );
    }
    let ratio = instant(&engine, ratio, at).await;
    assert_eq!(ratio.len(), 1);
    assert_eq!(ratio[0].0, "job=api");
    assert!((ratio[0].1 - 0.1 / 1.1).abs() < 1e-12, "{ratio:?}");
}

/// Stacked operations written alike are each applied (DataFusion once merged two equal
/// projections into one: `(x * 2) * 2` was `x * 2`, `---x` was `-x`).
#[tokio::test]
async fn stacked_equal_operations_each_apply() {
    let (engine, _dir) = engine().await;
    for (query, expected) in [
        ("(vector(10) * 2) * 2", 40.0),
        ("---vector(10)", -10.0),
        ("----vector(10)", 10.0),
        ("((vector(10) + 1) + 1) + 1", 13.0),
        ("sqrt(sqrt(vector(16)))", 2.0),
    ] {
        let result = engine.promql(query, EvalRange::instant(T0)).await.unwrap();
        let PromResult::Vector(samples) = result else { panic!("{query}: {result:?}") };
        assert_eq!(samples.iter().map(|s| s.value).collect::<Vec<_>>(), [expected], "{query}");
    }
}

/// A regex matcher reads braces that are no repeat as Go does, literally (`a{b}` matches
/// the value `a{b}`; the parser escapes them), with a metric name and without, negated too;
/// a brace that is a repeat stays one. The filters were compiled again from the matcher's
/// text, where Rust's regex refused `a{b}`: the query failed.
#[tokio::test]
async fn regex_matchers_read_braces_as_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let batch = WriteBatch {
        metrics: vec![
            series("temp", &[("room", "a{b}")], [(T0, 1.0)]),
            series("temp", &[("room", "ab")], [(T0, 2.0)]),
            series("humidity", &[("room", "a{b}")], [(T0, 3.0)]),
        ],
        rows: vec![],
    };
    storage.write(batch).await.unwrap();
    let engine = QueryEngine::new(storage, QueryOptions::default()).unwrap();
    let at = T0 + MINUTE;
    assert_eq!(instant(&engine, "temp{room=~\"a{b}\"}", at).await, vec![("__name__=temp,room=a{b}".into(), 1.0)]);
    assert_eq!(instant(&engine, "temp{room!~\"a{b}\"}", at).await, vec![("__name__=temp,room=ab".into(), 2.0)]);
    assert_eq!(instant(&engine, "temp{room=~\"a{1}b\"}", at).await, vec![("__name__=temp,room=ab".into(), 2.0)]);
    assert_eq!(
        instant(&engine, "{room=~\"a{b}\"}", at).await,
        vec![("__name__=humidity,room=a{b}".into(), 3.0), ("__name__=temp,room=a{b}".into(), 1.0)]
    );
}
