//! Storage round trips through a real DataFusion session.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::arrow::array::{Array, Float64Array, Int64Array};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use super::*;
use crate::write::{LabelSet, MetricSeries, Sample};
use datafusion::object_store::local::LocalFileSystem;

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2023-11-14T22:00:00Z, a partition boundary for one-hour partitions.
const T0: i64 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % HOUR_NS;

fn options(dir: &std::path::Path) -> StorageOptions {
    let mut options = StorageOptions::new(dir);
    options.partition_duration = Duration::from_secs(3600);
    options.retention = Duration::ZERO;
    // Partitions stay apart unless a test merges windows of them (`wide_options`).
    options.compaction_window = Duration::ZERO;
    options
}

fn series(metric: &str, labels: &[(&str, &str)], samples: impl IntoIterator<Item = (i64, f64)>) -> MetricSeries {
    MetricSeries {
        metric: metric.into(),
        labels: LabelSet::new(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap(),
        samples: samples.into_iter().map(|(t, v)| Sample { timestamp_ns: t, value: v }).collect(),
    }
}

fn batch(series: Vec<MetricSeries>) -> WriteBatch {
    WriteBatch { metrics: series, rows: Vec::new() }
}

async fn sql(storage: &Storage, query: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    catalog::register(storage, &ctx).unwrap();
    ctx.sql(query).await.unwrap().collect().await.unwrap()
}

async fn count(storage: &Storage, query: &str) -> i64 {
    let batches = sql(storage, query).await;
    batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

/// Four hours of one sample per minute for two series.
fn four_hours() -> WriteBatch {
    let minutes = 0..240i64;
    batch(vec![
        series("cpu", &[("host", "a")], minutes.clone().map(|m| (T0 + m * 60_000_000_000, m as f64))),
        series("cpu", &[("host", "b")], minutes.map(|m| (T0 + m * 60_000_000_000, -(m as f64)))),
    ])
}

/// A store holding [`four_hours`], flushed: four hourly segments.
async fn four_hours_flushed() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    storage.persist().await.unwrap();
    (dir, storage)
}

#[tokio::test]
async fn buffer_parquet_round_trip_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    let query =
        "SELECT host, count(*) AS n, sum(value) AS s, min(timestamp) AS first FROM cpu GROUP BY host ORDER BY host";
    let before = sql(&storage, query).await;
    let summary = storage.persist().await.unwrap();
    assert_eq!(summary.segments, 4, "one segment per hour partition");
    assert_eq!(summary.rows, 480);
    assert_eq!(storage.buffered_bytes(), 0);
    let after = sql(&storage, query).await;
    assert_eq!(before, after);
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn a_one_hour_query_opens_only_that_hours_segments() {
    let (_dir, storage) = four_hours_flushed().await;
    let before = storage.segments_scanned();
    let n = count(
        &storage,
        &format!(
            "SELECT count(*) FROM cpu WHERE timestamp >= to_timestamp_nanos({}) AND timestamp < to_timestamp_nanos({})",
            T0 + HOUR_NS,
            T0 + 2 * HOUR_NS
        ),
    )
    .await;
    assert_eq!(n, 120);
    assert_eq!(storage.segments_scanned() - before, 1);
    let before = storage.segments_scanned();
    count(&storage, "SELECT count(*) FROM cpu").await;
    assert_eq!(storage.segments_scanned() - before, 4);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn unflushed_writes_survive_a_crash_and_replay_twice_the_same() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(options(dir.path())).await.unwrap();
        storage.write(four_hours()).await.unwrap();
        // Half persisted, half only in the WAL.
        storage.persist().await.unwrap();
        storage.write(batch(vec![series("cpu", &[("host", "c")], (0..10).map(|m| (T0 + m, 1.0)))])).await.unwrap();
        // Dropped without close: the WAL writer thread ends, nothing is flushed.
    }
    for _ in 0..2 {
        let storage = Storage::open(options(dir.path())).await.unwrap();
        assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 490);
        drop(storage);
    }
}

#[tokio::test]
async fn stale_markers_stay_bit_exact_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    storage.write(batch(vec![series("up", &[("job", "x")], [(T0, 1.0), (T0 + 1, stale)])])).await.unwrap();
    storage.persist().await.unwrap();
    let batches = sql(&storage, "SELECT value FROM up ORDER BY timestamp").await;
    let values = batches[0].column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(values.value(1).to_bits(), 0x7ff0_0000_0000_0002);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn a_new_label_adds_a_nullable_column_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(batch(vec![series("req", &[("job", "a")], [(T0, 1.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    storage.write(batch(vec![series("req", &[("job", "a"), ("code", "500")], [(T0 + 1, 2.0)])])).await.unwrap();
    let batches = sql(&storage, "SELECT job, code, value FROM req ORDER BY timestamp").await;
    let rendered = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert_eq!(
        rendered,
        "+-----+------+-------+\n| job | code | value |\n+-----+------+-------+\n| a   |      | 1.0   |\n| a   | 500  | 2.0   |\n+-----+------+-------+"
    );
    // Label equality is pushed down and still exact.
    assert_eq!(count(&storage, "SELECT count(*) FROM req WHERE code = '500'").await, 1);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn compaction_merges_a_partition_and_keeps_the_newest_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 1.0), (T0 + 2, 3.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    // The same (series, timestamp) again, with a new value: a retried or corrected write.
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 9.0), (T0 + 1, 2.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.manifest().segments.len(), 2);
    assert_eq!(storage.compact().await.unwrap(), 1, "a partition from 2023 is closed");
    let manifest = storage.manifest();
    assert_eq!(manifest.segments.len(), 1);
    assert_eq!(manifest.segments[0].level, 1);
    let parquet_deletes = manifest.pending_deletes.iter().filter(|d| d.path.ends_with(".parquet")).count();
    assert_eq!(parquet_deletes, 2);
    let batches = sql(&storage, "SELECT value FROM m ORDER BY timestamp").await;
    let values = batches[0].column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(values.values().to_vec(), vec![9.0, 2.0, 3.0]);
    storage.close().await.unwrap();
}

/// A partition whose tables store values at different scales is written as a file per scale
/// group (whole numbers apart from two decimal places): once merged, its files are what a
/// merge writes, and the next passes leave them alone instead of merging them again.
#[tokio::test]
async fn a_merged_partition_of_several_scales_is_not_merged_again() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    for flush in 0..2i64 {
        storage
            .write(batch(vec![
                series("hits", &[("k", "v")], [(T0 + flush, 7.0)]),
                series("temp", &[("k", "v")], [(T0 + flush, 21.25)]),
            ]))
            .await
            .unwrap();
        storage.persist().await.unwrap();
    }
    assert_eq!(metric_files(&storage).len(), 4, "a file per scale group per flush");
    assert_eq!(storage.compact().await.unwrap(), 1);
    let merged = metric_files(&storage);
    assert_eq!(merged, vec![(T0, 2), (T0, 2)], "one file per scale group");
    for pass in 0..3 {
        assert_eq!(storage.compact().await.unwrap(), 0, "pass {pass} merged the merged files again");
    }
    assert_eq!(metric_files(&storage), merged);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn compaction_merges_at_most_its_row_cap_and_only_the_newest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.compaction_max_rows = 250;
    let storage = Storage::open(opts).await.unwrap();
    // Five segments of 100 rows; the last one rewrites timestamp T0 of the first.
    for segment in 0..5i64 {
        let points: Vec<(i64, f64)> = (0..100).map(|i| (T0 + segment * 100 + i, segment as f64)).collect();
        storage.write(batch(vec![series("m", &[("k", "v")], points)])).await.unwrap();
        storage.persist().await.unwrap();
    }
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 99.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1);
    let rows: Vec<u64> = storage.manifest().segments.iter().map(|s| s.rows).collect();
    assert_eq!(rows, vec![100, 100, 100, 201], "the newest run within 250 rows merged: two of 100 and the one-row fix");
    assert!(storage.manifest().segments.iter().all(|s| s.rows <= 250));
    // Another pass: no run of two fits any more.
    assert_eq!(storage.compact().await.unwrap(), 0);
    assert_eq!(
        count(&storage, "SELECT count(*) FROM m").await,
        501,
        "no row lost; the duplicate of T0 is merged only once the segments meet"
    );
    storage.close().await.unwrap();
}

/// Two flushes of a closed partition, one series: (T0, 1), (T0 + 2, 3), then (T0, 9), (T0 + 1, 2).
async fn two_files_of_a_closed_partition(storage: &Storage) {
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 1.0), (T0 + 2, 3.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 9.0), (T0 + 1, 2.0)])])).await.unwrap();
    storage.persist().await.unwrap();
}

/// A compaction of `storage` started and held at its first read of a segment.
async fn compaction_held_at_its_reads(
    store: &PoisonedStore,
    storage: &Storage,
) -> tokio::task::JoinHandle<Result<usize, StorageError>> {
    store.hold_reads();
    let storage = storage.clone();
    let merging = tokio::spawn(async move { storage.compact().await });
    store.until_a_read_waits().await;
    merging
}

/// A merge runs outside the maintenance lock: a flush made while it reads its inputs is
/// published at once, and its rows (newer than every input's) still win over the merged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_publishes_while_a_merge_runs_and_its_rows_win_over_the_merged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = PoisonedStore::options(dir.path(), false);
    let storage = Storage::open(opts).await.unwrap();
    two_files_of_a_closed_partition(&storage).await;
    let merging = compaction_held_at_its_reads(&store, &storage).await;
    // The same partition again: a rewrite of T0 and a new sample.
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0, 5.0), (T0 + 3, 4.0)])])).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(60), storage.persist()).await;
    assert_eq!(flushed.expect("the flush waited for the merge").unwrap().rows, 2);
    store.release_reads();
    assert_eq!(merging.await.unwrap().unwrap(), 1);
    let files = metric_files(&storage);
    assert_eq!(files, vec![(T0, 2), (T0, 3)], "the flush's file beside the merged one");
    // Both merge again into one: the flush's T0 wins only if its file is the newer.
    assert_eq!(storage.compact().await.unwrap(), 1);
    assert_eq!(metric_files(&storage), vec![(T0, 4)]);
    let batches = sql(&storage, "SELECT value FROM m ORDER BY timestamp").await;
    let values = batches[0].column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(values.values().to_vec(), vec![5.0, 2.0, 3.0, 4.0]);
    storage.close().await.unwrap();
    let reopened = Storage::open(options(dir.path())).await.unwrap();
    assert!(reopened.manifest().next_segment_id > reopened.manifest().segments.iter().map(|s| s.id).max().unwrap());
    assert_eq!(count(&reopened, "SELECT count(*) FROM m").await, 4);
    reopened.close().await.unwrap();
}

/// The maintenance loop flushes on schedule while its compaction pass is merging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_loop_flushes_while_a_compaction_merges() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut opts) = PoisonedStore::options(dir.path(), false);
    opts.flush_interval = Duration::from_millis(100);
    let storage = Storage::open(opts).await.unwrap();
    two_files_of_a_closed_partition(&storage).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The loop's first housekeeping pass starts at once and holds on its inputs' reads.
    store.hold_reads();
    let maintenance = tokio::spawn({
        let storage = storage.clone();
        async move {
            storage
                .run_maintenance(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    store.until_a_read_waits().await;
    storage.write(batch(vec![series("m", &[("k", "v")], [(T0 + HOUR_NS, 1.0)])])).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(60), async {
        while !storage.manifest().segments.iter().any(|s| s.partition_start_ns == T0 + HOUR_NS) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(flushed.is_ok(), "no flush while the compaction merged");
    assert_eq!(metric_files(&storage).len(), 3, "the merge has not published yet");
    store.release_reads();
    stop.send(()).unwrap();
    maintenance.await.unwrap();
    // The pass under way finished before the loop returned.
    assert_eq!(metric_files(&storage), vec![(T0, 3), (T0 + HOUR_NS, 1)]);
    storage.close().await.unwrap();
}

/// Retention retiring a merge's inputs while it runs: the merge publishes nothing (its rows
/// would bring back what retention dropped) and its files are deleted with the retired ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_inputs_were_retired_while_it_ran_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut opts) = PoisonedStore::options(dir.path(), false);
    opts.retention = Duration::from_secs(86400);
    let storage = Storage::open(opts).await.unwrap();
    two_files_of_a_closed_partition(&storage).await;
    let merging = compaction_held_at_its_reads(&store, &storage).await;
    assert_eq!(storage.enforce_retention().await.unwrap(), 2);
    store.release_reads();
    assert_eq!(merging.await.unwrap().unwrap(), 0, "nothing published");
    let manifest = storage.manifest();
    assert!(manifest.segments.is_empty(), "{:?}", manifest.segments);
    // The merge's own file is due for deletion now, the retired inputs after their grace.
    let segments = dir.path().join("segments");
    let parquet = |dir: &std::path::Path| {
        files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
    };
    assert_eq!(parquet(&segments), 3, "two inputs and the merge's file");
    assert_eq!(storage.delete_retired_files().await.unwrap(), 1);
    assert_eq!(parquet(&segments), 2, "the inputs wait for their grace period");
    storage.close().await.unwrap();
}

#[tokio::test]
async fn retention_drops_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.retention = Duration::from_secs(86400);
    let storage = Storage::open(opts).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    storage
        .write(batch(vec![series("m", &[("k", "v")], [(T0, 1.0)]), series("m", &[("k", "w")], [(now, 2.0)])]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.enforce_retention().await.unwrap(), 1);
    assert_eq!(count(&storage, "SELECT count(*) FROM m").await, 1);
    storage.close().await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_refuses_writes_until_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.buffer_max_bytes = 64 * 1024;
    let storage = Storage::open(opts).await.unwrap();
    let mut refused = None;
    for i in 0..1000 {
        let write = batch(vec![series("m", &[("i", &i.to_string())], (0..100).map(|s| (T0 + s, 1.0)))]);
        if let Err(e) = storage.write(write).await {
            refused = Some(e);
            break;
        }
    }
    let error = refused.expect("the budget must refuse some write");
    assert!(error.is_backpressure() && error.is_transient(), "{error}");
    assert!(error.write_hint().contains("Retry-After"), "{}", error.write_hint());
    let fault = StorageError::Io(std::io::Error::other("disk gone"));
    assert!(fault.write_hint().contains("not acknowledged") && !fault.write_hint().contains("Retry-After"));
    storage.persist().await.unwrap();
    storage.write(batch(vec![series("m", &[("i", "after")], [(T0, 1.0)])])).await.unwrap();
    storage.close().await.unwrap();
}

#[tokio::test]
async fn fixed_tables_take_rows_of_their_schema_only() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let wrong = RecordBatch::try_new(
        FixedTable::SloStatus.schema().project(&[0]).map(std::sync::Arc::new).unwrap(),
        vec![std::sync::Arc::new(
            datafusion::arrow::array::TimestampNanosecondArray::from(vec![T0]).with_timezone("UTC"),
        )],
    )
    .unwrap();
    let error = storage
        .write(WriteBatch { metrics: vec![], rows: vec![TableRows { table: FixedTable::SloStatus, batch: wrong }] })
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::SchemaMismatch { .. }));
    // Every fixed table is queryable, empty, from the start.
    for table in FixedTable::ALL {
        assert_eq!(count(&storage, &format!("SELECT count(*) FROM {}", table.name())).await, 0);
    }
    storage.close().await.unwrap();
}

use crate::schema::FixedTable;

fn ts_literal(ns: i64) -> String {
    format!("arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"UTC\"))')")
}

/// `timestamp >= start AND timestamp < end`.
fn time_range(start_ns: i64, end_ns: i64) -> String {
    format!("timestamp >= {} AND timestamp < {}", ts_literal(start_ns), ts_literal(end_ns))
}

/// The plan DataFusion makes for `query`, as text.
async fn explain(storage: &Storage, query: &str) -> String {
    let plan = sql(storage, &format!("EXPLAIN {query}")).await;
    datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string()
}

#[tokio::test]
async fn count_min_max_over_whole_segments_come_from_the_manifest() {
    let (dir, storage) = four_hours_flushed().await;
    let covering = format!(
        "SELECT count(*), min(value), max(value), max(timestamp) FROM cpu WHERE {}",
        time_range(T0, T0 + 2 * HOUR_NS)
    );
    let expected = sql(&storage, &covering).await;
    let plan = explain(&storage, &covering).await;
    assert!(!plan.contains("DataSourceExec"), "answered from statistics, no scan:\n{plan}");

    // Proof that no file is opened: remove them all, the answer stays.
    for segment in &storage.manifest().segments {
        std::fs::remove_file(dir.path().join("segments").join(&segment.path)).unwrap();
    }
    let answer = sql(&storage, &covering).await;
    assert_eq!(answer, expected);
    let counts = answer[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(counts.value(0), 240, "two hours of two series at one sample per minute");
    let max = answer[0].column(2).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(max.value(0), 119.0);
}

#[tokio::test]
async fn a_range_cutting_through_segments_is_filtered_exactly() {
    let (_dir, storage) = four_hours_flushed().await;
    // 30 minutes into the first hour to 10 minutes into the third: 100 minutes × 2 series.
    let query =
        format!("SELECT count(*) FROM cpu WHERE {}", time_range(T0 + HOUR_NS / 2, T0 + 2 * HOUR_NS + HOUR_NS / 6));
    assert_eq!(count(&storage, &query).await, 200);
    let labelled = format!("{} AND host = 'b'", query);
    assert_eq!(count(&storage, &labelled).await, 100);
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu WHERE host = 'nobody'").await, 0);
}

/// A file whose rows all lie inside the time bounds is read without evaluating them row by
/// row; one the bounds cut through still is.
#[tokio::test]
async fn files_inside_the_time_range_are_read_without_time_filters() {
    let (_dir, storage) = four_hours_flushed().await;
    // The first two hours whole and 10 minutes of the third, for one host.
    let query =
        format!("SELECT count(*) FROM cpu WHERE host = 'b' AND {}", time_range(T0, T0 + 2 * HOUR_NS + HOUR_NS / 6));
    assert_eq!(count(&storage, &query).await, 130);
    let plan = explain(&storage, &query).await;
    let scans: Vec<&str> = plan.lines().filter(|l| l.contains("DataSourceExec")).collect();
    assert_eq!(scans.len(), 2, "the files inside, the file cut through:\n{plan}");
    assert_eq!(
        scans.iter().filter(|l| l.contains("timestamp")).count(),
        1,
        "only the cut file filters by time:\n{plan}"
    );
}

#[tokio::test]
async fn two_nodes_on_one_store_see_each_others_segments() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix({
            let p = dir.path().join("shared");
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .unwrap(),
    );
    let node = |name: &str| {
        let mut options = options(&dir.path().join(name));
        options.object_store = Some(shared.clone());
        options.node_id = Some(name.to_string());
        options
    };
    let a = Storage::open(node("a")).await.unwrap();
    let b = Storage::open(node("b")).await.unwrap();
    assert!(!a.has_rows("up") && !a.has_rows(FixedTable::DriftReferences.name()));
    a.write(batch(vec![series("up", &[("job", "a")], [(T0, 1.0), (T0 + 1, 1.0)])])).await.unwrap();
    b.write(batch(vec![series("up", &[("job", "b")], [(T0, 0.0)])])).await.unwrap();
    b.write(batch(vec![series("only_b", &[("job", "b")], [(T0, 0.0)])])).await.unwrap();
    assert!(a.has_rows("up"), "rows in the write buffer");
    assert_eq!(count(&a, "SELECT count(*) FROM up").await, 2, "b's rows are in b's memory only");
    a.persist().await.unwrap();
    b.persist().await.unwrap();
    assert!(b.manifest().segments[0].path.starts_with("nodes/b/"));
    assert!(a.has_rows("up"), "rows in a segment");
    assert!(!a.has_rows("only_b"), "b's segments are not known to a yet");
    assert_eq!(a.refresh_peers().await.unwrap(), 1);
    assert!(a.has_rows("only_b"), "rows in a peer's segment");
    assert!(!a.has_rows(FixedTable::DriftReferences.name()));
    b.refresh_peers().await.unwrap();
    for node in [&a, &b] {
        assert_eq!(count(node, "SELECT count(*) FROM up").await, 3);
        assert_eq!(count(node, "SELECT count(*) FROM up WHERE job = 'b'").await, 1);
    }
    // A restarted node finds its own manifest, not its peer's.
    a.close().await.unwrap();
    let a = Storage::open(node("a")).await.unwrap();
    assert_eq!(a.manifest().segments.len(), 1);
    assert_eq!(count(&a, "SELECT count(*) FROM up").await, 3);
    assert!(matches!(
        Storage::open({
            let mut o = node("c");
            o.node_id = Some("../x".into());
            o
        })
        .await,
        Err(StorageError::Config(_))
    ));
}

#[tokio::test]
async fn a_single_manifest_store_moves_to_the_per_node_layout() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(segments.join("tables/old/0")).unwrap();
    // A segment and manifest as the first layout wrote them.
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&segments).unwrap());
    let rows = four_hours().metrics[0].clone();
    let scratch = Storage::open(options(&dir.path().join("scratch"))).await.unwrap();
    scratch.write(batch(vec![MetricSeries { metric: "old".into(), ..rows }])).await.unwrap();
    scratch.persist().await.unwrap();
    let mut legacy = serde_json::json!({"version": 1, "next_segment_id": 100, "wal_persisted_through": 0, "segments": [], "pending_deletes": []});
    for (i, segment) in scratch.manifest().segments.iter().enumerate() {
        let old_path = format!("tables/old/0/{i}.parquet");
        let bytes = std::fs::read(dir.path().join("scratch/segments").join(&segment.path)).unwrap();
        store.put(&datafusion::object_store::path::Path::from(old_path.as_str()), bytes.into()).await.unwrap();
        let mut meta = serde_json::to_value(segment).unwrap();
        meta["path"] = old_path.into();
        meta.as_object_mut().unwrap().remove("stats");
        legacy["segments"].as_array_mut().unwrap().push(meta);
    }
    std::fs::write(segments.join("manifest.json"), legacy.to_string()).unwrap();

    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(!segments.join("manifest.json").exists());
    assert_eq!(storage.manifest().next_segment_id, 100);
    assert_eq!(count(&storage, "SELECT count(*) FROM old").await, 240);
    storage.close().await.unwrap();
    let again = Storage::open(options(dir.path())).await.unwrap();
    assert_eq!(count(&again, "SELECT count(*) FROM old").await, 240);
}

/// A local store whose puts fail for paths holding `poison` while `failing` is set, that
/// counts the bytes it serves of Parquet files, and that holds reads of Parquet files while
/// `reads_held` is set (a merge stopped part way, for what runs beside it).
#[derive(Debug)]
struct PoisonedStore {
    inner: LocalFileSystem,
    failing: std::sync::atomic::AtomicBool,
    parquet_bytes_read: std::sync::atomic::AtomicU64,
    reads_held: std::sync::atomic::AtomicBool,
    reads_waiting: std::sync::atomic::AtomicUsize,
    reads_released: tokio::sync::Notify,
}

impl PoisonedStore {
    /// The store under `dir`, and the storage options that write to it.
    fn options(dir: &std::path::Path, failing: bool) -> (Arc<PoisonedStore>, StorageOptions) {
        std::fs::create_dir_all(dir.join("segments")).unwrap();
        let store = Arc::new(PoisonedStore {
            inner: LocalFileSystem::new_with_prefix(dir.join("segments")).unwrap(),
            failing: std::sync::atomic::AtomicBool::new(failing),
            parquet_bytes_read: Default::default(),
            reads_held: Default::default(),
            reads_waiting: Default::default(),
            reads_released: tokio::sync::Notify::new(),
        });
        let mut opts = options(dir);
        opts.object_store = Some(store.clone());
        (store, opts)
    }

    /// Holds reads of Parquet files from now on.
    fn hold_reads(&self) {
        self.reads_held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns once a read is held.
    async fn until_a_read_waits(&self) {
        while self.reads_waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn release_reads(&self) {
        self.reads_held.store(false, std::sync::atomic::Ordering::SeqCst);
        self.reads_released.notify_waiters();
    }
}

impl std::fmt::Display for PoisonedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoisonedStore({})", self.inner)
    }
}

mod poisoned {
    use super::PoisonedStore;
    use datafusion::object_store::path::Path;
    use datafusion::object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
        PutOptions, PutPayload, PutResult, Result,
    };
    use futures::stream::BoxStream;

    #[async_trait::async_trait]
    impl ObjectStore for PoisonedStore {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
            // While failing, the store refuses the table "poison" and the shared segments (which
            // hold it too): the flush writes the tables one file each, and only poison fails.
            let refused = location.as_ref().contains("poison") || location.as_ref().contains("/segments/");
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) && refused {
                return Err(datafusion::object_store::Error::Generic {
                    store: "poisoned",
                    source: "this table cannot be written".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            use std::sync::atomic::Ordering::SeqCst;
            if location.as_ref().ends_with(".parquet") && self.reads_held.load(SeqCst) {
                self.reads_waiting.fetch_add(1, SeqCst);
                loop {
                    // Registered before the check, so a release in between still wakes it.
                    let released = self.reads_released.notified();
                    if !self.reads_held.load(SeqCst) {
                        break;
                    }
                    released.await;
                }
                self.reads_waiting.fetch_sub(1, SeqCst);
            }
            let result = self.inner.get_opts(location, options).await?;
            if location.as_ref().ends_with(".parquet") {
                let bytes = result.range.end - result.range.start;
                self.parquet_bytes_read.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(result)
        }
        fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }
}

#[tokio::test]
async fn a_table_that_cannot_be_flushed_is_kept_back_and_the_rest_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = PoisonedStore::options(dir.path(), true);
    let storage = Storage::open(opts.clone()).await.unwrap();
    storage
        .write(batch(vec![
            series("good", &[("k", "v")], [(T0, 1.0), (T0 + 1, 2.0)]),
            series("poison", &[("k", "v")], [(T0, 3.0)]),
        ]))
        .await
        .unwrap();
    let summary = storage.persist().await.unwrap();
    assert_eq!(summary.rows, 2, "the good table flushed");
    assert!(storage.manifest().segments.iter().all(|s| s.table == "good"));
    assert_eq!(count(&storage, "SELECT count(*) FROM poison").await, 1, "kept back, still queryable");
    // Flushing again with only that table, still failing, writes nothing and loses nothing;
    // the buffer goes on taking writes, which flush with the next try.
    assert!(storage.persist().await.is_err());
    assert_eq!(count(&storage, "SELECT count(*) FROM poison").await, 1);
    storage.write(batch(vec![series("good", &[("k", "v")], [(T0 + 2, 3.0)])])).await.unwrap();
    assert!(storage.persist().await.is_ok(), "the good rows flush, the poison stays back");
    assert_eq!(count(&storage, "SELECT count(*) FROM good").await, 3);
    assert_eq!(count(&storage, "SELECT count(*) FROM poison").await, 1);
    // A restart replays the kept-back rows from the WAL (the old WAL files are gone).
    drop(storage);
    let storage = Storage::open(opts.clone()).await.unwrap();
    assert_eq!(count(&storage, "SELECT count(*) FROM poison").await, 1);
    assert_eq!(count(&storage, "SELECT count(*) FROM good").await, 3);
    store.failing.store(false, std::sync::atomic::Ordering::Relaxed);
    storage.persist().await.unwrap();
    assert!(storage.manifest().segments.iter().any(|s| s.table == "poison"));
    assert_eq!(count(&storage, "SELECT count(*) FROM poison").await, 1, "flushed once, not twice");
}

#[tokio::test]
async fn a_sample_at_the_edge_of_time_is_flushed_with_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let mut samples: Vec<(i64, f64)> = (0..1000).map(|i| (T0 + i, i as f64)).collect();
    samples.push((-9_223_372_036_854_000_000, -1.0));
    storage.write(batch(vec![series("edge", &[("k", "v")], samples)])).await.unwrap();
    storage.persist().await.unwrap();
    drop(storage);
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert_eq!(count(&storage, "SELECT count(*) FROM edge").await, 1001);
}

#[tokio::test]
async fn a_long_odd_metric_name_is_stored_under_a_bounded_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let name = format!("m{}", "x".repeat(299));
    storage.write(batch(vec![series(&name, &[("k", "v")], [(T0, 1.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.manifest().segments.len(), 1);
    drop(storage);
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert_eq!(count(&storage, &format!("SELECT count(*) FROM {name}")).await, 1);
}

/// Two tables flushed to segments in one partition each.
/// When `mem`'s samples are: a partition of its own, after `cpu`'s four hours (shared
/// segments hold every metric table of a partition, so damage to one partition's files or
/// manifest costs only that partition's tables).
const MEM_T: i64 = T0 + 8 * HOUR_NS;

async fn two_flushed_tables(dir: &std::path::Path) -> Storage {
    let storage = Storage::open(options(dir)).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    storage.write(batch(vec![series("mem", &[("host", "a")], [(MEM_T, 1.0), (MEM_T + 1, 2.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    storage
}

#[tokio::test]
async fn an_unreadable_segment_is_moved_aside_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let storage = two_flushed_tables(dir.path()).await;
    let victim = storage.manifest().segments.iter().find(|s| s.table == "cpu").unwrap().clone();
    let file = dir.path().join("segments").join(&victim.path);
    let length = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(length / 2).unwrap();

    let tables: std::collections::BTreeSet<String> = ["cpu".to_string(), "mem".to_string()].into();
    assert_eq!(storage.quarantine_damaged(&tables).await.unwrap(), 1);
    assert!(!storage.manifest().segments.iter().any(|s| s.id == victim.id));
    assert!(!file.exists());
    let aside = dir.path().join("segments").join(format!("nodes/{}/quarantine/{}", storage.node_id(), victim.path));
    assert!(aside.exists(), "{}", aside.display());
    let damage = storage.damage();
    assert_eq!(damage.quarantined.len(), 1);
    assert_eq!(damage.quarantined[0].1, victim.rows);
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480 - victim.rows as i64);
    assert_eq!(count(&storage, "SELECT count(*) FROM mem").await, 2);
    assert_eq!(storage.quarantine_damaged(&tables).await.unwrap(), 0, "nothing else is damaged");
}

#[tokio::test]
async fn a_lost_partition_manifest_costs_its_partition_until_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let storage = two_flushed_tables(dir.path()).await;
    let node = storage.node_id().to_string();
    drop(storage);
    let mem_partition = crate::buffer::partition_start(MEM_T, options(dir.path()).partition_duration.as_nanos() as i64);
    let partitions = dir.path().join("segments/nodes").join(&node).join(format!("partitions/{mem_partition}"));
    std::fs::remove_dir_all(&partitions).unwrap();

    let storage = Storage::open(options(dir.path())).await.unwrap();
    let damage = storage.damage();
    assert_eq!(damage.partitions.len(), 1, "{damage:?}");
    assert_eq!(damage.partitions[0].partition_start_ns, mem_partition, "mem's partition");
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480, "the rest is served");
    // Writes go on, and a flush does not forget the damaged partition.
    storage.write(batch(vec![series("other", &[("k", "v")], [(T0, 1.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    drop(storage);

    let (_, store) = {
        let storage = Storage::open(options(dir.path())).await.unwrap();
        assert_eq!(storage.damage().partitions.len(), 1);
        storage.object_store()
    };
    let report = damage::check(&store, &node).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let report = damage::repair(&store, &node, None).await.unwrap();
    assert_eq!(report.actions.len(), 1, "{report:?}");
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(storage.damage().is_empty());
    assert_eq!(count(&storage, "SELECT count(*) FROM mem").await, 2, "rebuilt from its segment file");
    assert_eq!(count(&storage, "SELECT count(*) FROM other").await, 1);
    assert!(damage::check(&store, &node).await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn a_damaged_root_serves_what_the_partitions_name_and_writes_nothing_until_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let storage = two_flushed_tables(dir.path()).await;
    let node = storage.node_id().to_string();
    drop(storage);
    let root = dir.path().join("segments/nodes").join(&node).join("manifest.json");
    let text = std::fs::read(&root).unwrap();
    std::fs::write(&root, &text[..text.len() / 3]).unwrap();

    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(storage.damage().root.is_some());
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480);
    assert_eq!(count(&storage, "SELECT count(*) FROM mem").await, 2);
    storage.write(batch(vec![series("late", &[("k", "v")], [(T0, 1.0)])])).await.unwrap();
    assert!(storage.persist().await.is_err(), "nothing is written over a damaged root");
    assert_eq!(std::fs::read(&root).unwrap(), text[..text.len() / 3].to_vec());
    let (_, store) = storage.object_store();
    drop(storage);

    let report = damage::repair(&store, &node, None).await.unwrap();
    assert!(report.actions.iter().any(|a| a.what == "root manifest"), "{report:?}");
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(storage.damage().is_empty());
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480);
    assert_eq!(count(&storage, "SELECT count(*) FROM late").await, 1, "the WAL kept the write");
}

#[tokio::test]
async fn a_partition_emptied_before_its_root_is_damaged_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let storage = two_flushed_tables(dir.path()).await;
    let node = storage.node_id().to_string();
    // mem's partition holds only mem's segment: moving it aside empties the partition, whose
    // last generation still waits out its grace period beside the new empty one.
    let victim = storage.manifest().segments.iter().find(|s| s.table == "mem").unwrap().clone();
    let file = dir.path().join("segments").join(&victim.path);
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(10).unwrap();
    let tables: std::collections::BTreeSet<String> = ["mem".to_string()].into();
    assert_eq!(storage.quarantine_damaged(&tables).await.unwrap(), 1);
    let pending: Vec<String> = storage.manifest().pending_deletes.iter().map(|d| d.path.clone()).collect();
    drop(storage);
    let partition =
        dir.path().join("segments/nodes").join(&node).join(format!("partitions/{}", victim.partition_start_ns));
    let mut generations: Vec<String> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| {
            format!(
                "nodes/{node}/partitions/{}/{}",
                victim.partition_start_ns,
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    generations.sort();
    assert_eq!(generations.len(), 2, "the last generation with the segment and the empty one");
    assert_eq!(pending[pending.len() - 2..], generations[..], "both are deleted, the empty one last");

    let root = dir.path().join("segments/nodes").join(&node).join("manifest.json");
    std::fs::write(&root, b"{\"version\": 3, \"node\":").unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(storage.damage().root.is_some());
    let manifest = storage.manifest();
    assert!(!manifest.segments.iter().any(|s| s.table == "mem"), "the moved segment is not served again: {manifest:?}");
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480);
    let rebuilt: Vec<&str> = manifest.pending_deletes.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        rebuilt[rebuilt.len() - 2..],
        [generations[0].as_str(), generations[1].as_str()],
        "the lost list of deletes is rebuilt"
    );
    let (_, store) = storage.object_store();
    drop(storage);

    damage::repair(&store, &node, None).await.unwrap();
    assert!(damage::check(&store, &node).await.unwrap().problems.is_empty());
    let storage = Storage::open(options(dir.path())).await.unwrap();
    assert!(!storage.manifest().segments.iter().any(|s| s.table == "mem"));
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 480);
}

/// Label filters are exact: where the series index chose the series they are not evaluated
/// again (no filter above the read), and wherever it did not (the write buffer, a segment
/// whose index lacks the filter's label, a segment without an index) one filter applies
/// them, a `LIMIT` counting only rows that pass.
#[tokio::test]
async fn label_filters_are_applied_once_and_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let minute = 60_000_000_000;
    let hosts = ["a", "b", "c"];
    // An hour of `cpu{host}`, flushed; then the next hour with a `dc` label the first
    // segment (and its index) does not have; then minutes left in the buffer.
    let hour = |from: i64, dc: Option<&str>| {
        let metrics = hosts
            .iter()
            .map(|host| {
                let labels: Vec<(&str, &str)> =
                    dc.map_or_else(|| vec![("host", *host)], |dc| vec![("host", *host), ("dc", dc)]);
                series("cpu", &labels, (0..60i64).map(|m| (from + m * minute, m as f64)))
            })
            .collect();
        batch(metrics)
    };
    storage.write(hour(T0, None)).await.unwrap();
    storage.persist().await.unwrap();
    storage.write(hour(T0 + HOUR_NS, Some("x"))).await.unwrap();
    storage.persist().await.unwrap();
    storage.write(hour(T0 + 2 * HOUR_NS, Some("y"))).await.unwrap();
    let cases = [
        ("host = 'a'", 180),
        ("dc = 'x'", 180),
        ("dc IS NULL", 180),
        ("dc = 'x' OR dc IS NULL", 360),
        ("host <> 'a' AND dc = 'y'", 120),
        ("host LIKE '%' AND dc LIKE 'x%'", 180),
    ];
    for (filter, rows) in cases {
        assert_eq!(count(&storage, &format!("SELECT count(*) FROM cpu WHERE {filter}")).await, rows, "{filter}");
        // Rows of the oldest segment come first: a limit over the unfiltered rows would take them.
        let limited = sql(&storage, &format!("SELECT host, dc FROM cpu WHERE {filter} LIMIT 7")).await;
        assert_eq!(limited.iter().map(RecordBatch::num_rows).sum::<usize>(), 7, "{filter}");
    }
    // A narrowed read is not filtered again: the plan of a filter every index applies has
    // no filter above its scans, only the buffer's part.
    storage.persist().await.unwrap();
    let ctx = SessionContext::new();
    catalog::register(&storage, &ctx).unwrap();
    let explain = |query: &'static str| {
        let ctx = ctx.clone();
        async move {
            let plan = ctx.sql(query).await.unwrap().create_physical_plan().await.unwrap();
            datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string()
        }
    };
    let narrowed = explain("SELECT host, value FROM cpu WHERE host = 'a'").await;
    assert!(!narrowed.contains("FilterExec"), "{narrowed}");
    assert!(!narrowed.contains("predicate="), "{narrowed}");
    // `dc` is not in the first segment's index: that segment's rows are filtered, by a
    // filter or (DataFusion moves one into a Parquet scan) while read. An equality would rule
    // the segment out by its label statistics before any read.
    let widened = explain("SELECT host, value FROM cpu WHERE dc LIKE 'x%'").await;
    let oldest = widened.lines().find(|l| l.contains("0000000000000001.parquet")).unwrap_or_default();
    assert!(widened.contains("FilterExec") || oldest.contains("predicate=dc"), "{widened}");
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu WHERE dc LIKE 'x%'").await, 180);
    let values = sql(&storage, "SELECT sum(value) FROM cpu WHERE host = 'a'").await;
    assert_eq!(
        values[0].column(0).as_any().downcast_ref::<Float64Array>().unwrap().value(0),
        3.0 * (0..60).sum::<i64>() as f64
    );
}

/// Label filters answer the same from the write buffer, from shared segments through their
/// series index, and from the same segments without one.
#[tokio::test]
async fn the_series_index_narrows_scans_without_changing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let minute = 60_000_000_000;
    let mut metrics = Vec::new();
    for host in ["a", "b", "c", "d", "e"] {
        for dc in ["", "x", "y"] {
            let labels: Vec<(&str, &str)> =
                if dc.is_empty() { vec![("host", host)] } else { vec![("host", host), ("dc", dc)] };
            // Series of host "e" stop after ten minutes: a later range rules them out by time.
            let minutes = if host == "e" { 0..10i64 } else { 0..60i64 };
            metrics.push(series("cpu", &labels, minutes.map(|m| (T0 + m * minute, m as f64))));
        }
        metrics.push(series("mem", &[("host", host)], (0..60i64).map(|m| (T0 + m * minute, 1.0))));
    }
    storage.write(batch(metrics)).await.unwrap();
    let late = T0 + 30 * minute;
    let queries: Vec<String> = [
        "host = 'a'",
        "host <> 'a'",
        "host IN ('b', 'd')",
        "host LIKE 'c%' AND dc = 'y'",
        "dc IS NULL",
        "host = 'a' OR dc = 'x'",
        "host = 'none'",
        "value > 30 AND host = 'b'",
    ]
    .iter()
    .flat_map(|f| {
        [
            format!("SELECT host, dc, count(*), sum(value) FROM cpu WHERE {f} GROUP BY host, dc ORDER BY host, dc"),
            format!("SELECT host, dc, count(*) FROM cpu WHERE {f} AND timestamp >= to_timestamp_nanos({late}) GROUP BY host, dc ORDER BY host, dc"),
        ]
    })
    .chain(["SELECT host, count(*) FROM mem WHERE host > 'b' GROUP BY host ORDER BY host".to_string()])
    .collect();
    let mut buffered = Vec::new();
    for query in &queries {
        buffered.push(sql(&storage, query).await);
    }
    storage.persist().await.unwrap();
    let segment = storage.manifest().segments.iter().find(|s| s.table == "cpu").unwrap().clone();
    let index_file = dir.path().join("segments").join(series_index::index_path(&segment.path).as_ref());
    assert!(index_file.exists(), "{}", index_file.display());
    for (query, expected) in queries.iter().zip(&buffered) {
        assert_eq!(&sql(&storage, query).await, expected, "{query}");
    }
    let skipped = storage.rows_skipped_by_index();
    // `host = 'a'` alone reads 3 of cpu's 15 series and skips the other 12: 9 × 60 + 3 × 10 rows.
    assert!(skipped >= 570, "{skipped}");
    // Read for series: one row per series from the index, the same series as the samples.
    let series_queries: Vec<(String, String)> =
        ["host = 'a'", "dc IS NULL", "host <> 'b' AND dc = 'x'", "host = 'none'"]
            .iter()
            .flat_map(|f| {
                [String::new(), format!(" AND timestamp >= to_timestamp_nanos({late})")].map(|time| {
                    let select = |table: &str| {
                        format!("SELECT DISTINCT host, dc FROM {table} WHERE {f}{time} ORDER BY host, dc")
                    };
                    (select("cpu"), select("cpu_series"))
                })
            })
            .collect();
    let ctx = SessionContext::new();
    let schema = storage.table_schema("cpu").unwrap();
    ctx.register_table("cpu_series", storage.series_provider("cpu", schema)).unwrap();
    for (samples, series) in &series_queries {
        let expected = sql(&storage, samples).await;
        assert_eq!(ctx.sql(series).await.unwrap().collect().await.unwrap(), expected, "{series}");
    }
    let rows = ctx.sql("SELECT count(*) FROM cpu_series WHERE host = 'a'").await.unwrap().collect().await.unwrap();
    assert_eq!(
        rows[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0),
        3,
        "one row per series, not per sample"
    );
    drop(storage);

    // Without an index (a store from before it, or a lost file) the answers stay.
    std::fs::remove_file(&index_file).unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    for (query, expected) in queries.iter().zip(&buffered) {
        assert_eq!(&sql(&storage, query).await, expected, "{query}");
    }
    assert_eq!(storage.rows_skipped_by_index(), 0);
    drop(storage);
    // A damaged one is read past the same way.
    std::fs::write(&index_file, b"PAR1 not an index").unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    for (query, expected) in queries.iter().zip(&buffered) {
        assert_eq!(&sql(&storage, query).await, expected, "{query}");
    }
    assert_eq!(storage.rows_skipped_by_index(), 0);
}

/// A segment's index is written with it and deleted with it.
#[tokio::test]
async fn a_series_index_lives_and_goes_with_its_segment() {
    let (dir, storage) = four_hours_flushed().await;
    let first: Vec<String> = storage.manifest().segments.iter().map(|s| s.path.clone()).collect();
    let on_disk = |path: &str| dir.path().join("segments").join(series_index::index_path(path).as_ref()).exists();
    assert!(first.iter().all(|p| on_disk(p)));
    // A late sample makes a second file in the first partition; compaction merges the two.
    storage.write(batch(vec![series("cpu", &[("host", "c")], [(T0 + 1, 1.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1);
    let merged = storage.manifest().segments.iter().find(|s| s.partition_start_ns == T0).unwrap().path.clone();
    assert!(on_disk(&merged));
    // Written indexes wait on disk until a scan needs them: a compaction's would fill memory
    // with partitions no query reads.
    let segments = storage.manifest().segments.clone();
    assert!(segments.iter().all(|s| !storage.inner.series_indexes.holds(&s.path)));
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu WHERE host = 'c'").await, 1);
    assert!(storage.inner.series_indexes.holds(&merged));
    // Replaced files wait out their grace period; then file and index go together.
    let mut manifest = (*storage.manifest()).clone();
    for pending in &mut manifest.pending_deletes {
        pending.not_before_unix_ms = 0;
    }
    storage.inner.state.lock().manifest = Arc::new(manifest);
    assert!(storage.delete_retired_files().await.unwrap() > 0);
    assert!(!on_disk(&first[0]) && !dir.path().join("segments").join(&first[0]).exists());
    assert!(on_disk(&merged));
}

#[tokio::test]
async fn cardinality_limits_refuse_new_names_and_series_but_keep_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.cardinality = cardinality::CardinalityLimits { max_metric_names: 2, max_series: 3, ..Default::default() };
    let storage = Storage::open(opts.clone()).await.unwrap();
    let written = storage
        .write(batch(vec![
            series("a", &[("i", "1")], [(T0, 1.0)]),
            series("b", &[("i", "1")], [(T0, 1.0)]),
            series("c", &[("i", "1")], [(T0, 1.0)]),
        ]))
        .await
        .unwrap();
    assert_eq!((written.samples, written.refused.series), (2, 1));
    assert_eq!(written.refused.first.unwrap().0, cardinality::CardinalityLimit::MetricNames);
    let written = storage
        .write(batch(vec![series("a", &[("i", "2")], [(T0, 1.0)]), series("a", &[("i", "3")], [(T0, 1.0)])]))
        .await
        .unwrap();
    assert_eq!(written.refused.first.unwrap().0, cardinality::CardinalityLimit::Series);
    storage.persist().await.unwrap();
    drop(storage);
    // Known after a restart: the manifest names the tables, the WAL replays the series.
    let storage = Storage::open(opts).await.unwrap();
    let status = storage.cardinality(10);
    assert_eq!(status.metric_names, 2);
    let written = storage.write(batch(vec![series("c", &[("i", "1")], [(T0, 1.0)])])).await.unwrap();
    assert_eq!(written.refused.series, 1);
}

/// Every file under `dir`.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeSet<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                walk(&entry.path(), out);
            } else {
                out.insert(entry.path());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(dir, &mut out);
    out
}

/// Every file of the store under a data directory.
fn store_files(data_dir: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    files_under(&data_dir.join("segments"))
}

#[tokio::test]
async fn a_flush_of_two_thousand_metric_names_writes_a_handful_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let names: Vec<String> = (0..2000).map(|i| format!("metric_{i:04}")).collect();
    let all = names.iter().enumerate().map(|(i, name)| {
        series(
            name,
            &[("job", "node"), ("shard", &format!("{}", i % 7))],
            [(T0, i as f64), (T0 + 60_000_000_000, i as f64 + 0.5)],
        )
    });
    storage.write(batch(all.collect())).await.unwrap();
    let before = store_files(dir.path());
    let summary = storage.persist().await.unwrap();
    let written: Vec<_> = store_files(dir.path()).difference(&before).cloned().collect();
    assert_eq!(summary.segments, 1, "one shared segment for the one partition");
    assert!(written.len() <= 10, "{} files: {written:?}", written.len());
    assert_eq!(summary.rows, 4000);
    assert_eq!(storage.manifest().segments.len(), 2000, "one manifest entry per table");
    for name in ["metric_0000", "metric_0999", "metric_1999"] {
        assert_eq!(count(&storage, &format!("SELECT count(*) FROM {name}")).await, 2, "{name}");
    }
    let batches = sql(&storage, "SELECT shard, sum(value) AS s FROM metric_1234 GROUP BY shard").await;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(text.contains("| 2     | 2468.5 |"), "{text}");
}

#[tokio::test]
async fn a_table_spanning_row_groups_of_a_shared_segment_reads_exactly_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let many = 300_000i64; // more than two row groups
    storage
        .write(batch(vec![
            series("a_small", &[("k", "a")], (0..10).map(|i| (T0 + i, 1.0))),
            series("b_big", &[("k", "b")], (0..many).map(|i| (T0 + i, 2.0))),
            series("c_small", &[("k", "c"), ("z", "only_c")], (0..10).map(|i| (T0 + i, 3.0))),
        ]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    let entries = storage.manifest().segments.clone();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|s| s.shared.is_some() && s.path == entries[0].path), "{entries:?}");
    // Filters that only prune (k) and exact time bounds both see only the table's own run.
    assert_eq!(count(&storage, "SELECT count(*) FROM a_small").await, 10);
    assert_eq!(count(&storage, "SELECT count(*) FROM b_big").await, many);
    assert_eq!(count(&storage, "SELECT count(*) FROM b_big WHERE k = 'b'").await, many);
    assert_eq!(count(&storage, "SELECT count(*) FROM c_small WHERE k = 'c' AND z = 'only_c'").await, 10);
    assert_eq!(count(&storage, "SELECT count(*) FROM c_small WHERE value <> 3.0").await, 0);
    assert_eq!(count(&storage, "SELECT count(*) FROM b_big WHERE value <> 2.0").await, 0);
    let start = T0 + many - 5;
    assert_eq!(
        count(
            &storage,
            &format!(
                "SELECT count(*) FROM b_big WHERE timestamp >= arrow_cast({start}, 'Timestamp(Nanosecond, None)')"
            )
        )
        .await,
        5
    );
}

/// A store as Vigil wrote it before shared segments (one partition manifest and one file per
/// table and partition), made by that version: `testdata/store-before-shared-segments`.
#[tokio::test]
async fn a_store_of_per_table_files_opens_migrates_and_compacts_into_shared_segments() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store-before-shared-segments");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for file in files_under(from) {
            let target = to.join(file.strip_prefix(from).unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&file, &target).unwrap();
        }
    };
    copy(&fixture.join("nodes"), &dir.path().join("segments/nodes"));
    std::fs::copy(fixture.join("node_id"), dir.path().join("node_id")).unwrap();
    let mut opts = options(dir.path());
    opts.partition_duration = Duration::from_secs(7200); // the fixture's
    let queries = [
        ("SELECT count(*) FROM http_requests_total", 12),
        ("SELECT CAST(sum(value) AS BIGINT) FROM http_requests_total", 450),
        ("SELECT count(*) FROM node_load1", 7),
        ("SELECT count(*) FROM node_load1 WHERE instance = 'b'", 1),
    ];
    let storage = Storage::open(opts.clone()).await.unwrap();
    assert!(!storage.manifest().has_table_partitions(), "partition manifests moved at start");
    for (query, expected) in queries {
        assert_eq!(count(&storage, query).await, expected, "{query}");
    }
    assert!(
        storage.manifest().segments.iter().all(|s| s.shared.is_none()),
        "files stay where they are until compacted"
    );
    let node = storage.node_id().to_string();
    let per_partition = dir.path().join("segments/nodes").join(&node).join("partitions/1700006400000000000");
    assert!(per_partition.is_dir(), "one manifest per time partition");

    // Compaction moves every closed partition's per-table files into shared segments: one
    // per partition and decimal scale (whole-number counters apart from two-place load
    // averages, see `decimal_values::split_by_scale`), not one per table.
    assert_eq!(storage.compact().await.unwrap(), 3);
    let manifest = storage.manifest();
    assert!(manifest.segments.iter().all(|s| s.shared.is_some()), "{:?}", manifest.segments);
    let files: std::collections::BTreeSet<&str> = manifest.segments.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(files.len(), 3 * 2, "one file per partition and scale: {files:?}");
    for (query, expected) in queries {
        assert_eq!(count(&storage, query).await, expected, "{query} after compaction");
    }
    storage.close().await.unwrap();
    let again = Storage::open(opts).await.unwrap();
    for (query, expected) in queries {
        assert_eq!(count(&again, query).await, expected, "{query} after a restart");
    }
}

/// The type of the value column of each segment the manifest names.
/// A segment file of a local store, opened for reading.
fn open_segment(
    data_dir: &std::path::Path,
    path: &str,
) -> datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes> {
    let bytes = bytes::Bytes::from(std::fs::read(data_dir.join("segments").join(path)).unwrap());
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap()
}

fn stored_value_types(storage: &Storage, data_dir: &std::path::Path) -> Vec<datafusion::arrow::datatypes::DataType> {
    let paths: std::collections::BTreeSet<String> =
        storage.manifest().segments.iter().map(|s| s.path.clone()).collect();
    let mut types: Vec<_> = paths
        .into_iter()
        .map(|path| {
            open_segment(data_dir, &path).schema().field_with_name(schema::VALUE_COLUMN).unwrap().data_type().clone()
        })
        .collect();
    types.sort_by_key(|t| t.to_string());
    types
}

#[tokio::test]
async fn decimal_values_are_stored_as_scaled_integers_and_read_back_bit_for_bit() {
    use datafusion::arrow::datatypes::DataType;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let second = 1_000_000_000;
    // Gauges with two places and counters in whole numbers: a file for each scale.
    let gauge: Vec<(i64, f64)> =
        (0..100).map(|i| (T0 + i * second, ((i as f64 / 7.0).sin() * 10_000.0).round() / 100.0)).collect();
    let counter: Vec<(i64, f64)> = (0..100).map(|i| (T0 + i * second, (i * i * 1000) as f64)).collect();
    storage
        .write(batch(vec![
            series("temp", &[("room", "a")], gauge.clone()),
            series("hits", &[("job", "x")], counter.clone()),
        ]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    assert_eq!(stored_value_types(&storage, dir.path()), vec![DataType::Decimal64(18, 0), DataType::Decimal64(18, 2)]);
    // A second segment with more places; compaction merges the gauges into three places.
    let finer: Vec<(i64, f64)> = (0..10).map(|i| (T0 + (200 + i) * second, (i - 4) as f64 / 1000.0)).collect();
    storage.write(batch(vec![series("temp", &[("room", "b")], finer.clone())])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1);
    assert_eq!(stored_value_types(&storage, dir.path()), vec![DataType::Decimal64(18, 0), DataType::Decimal64(18, 3)]);

    let bits = |batches: Vec<RecordBatch>| -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let expected: Vec<u64> = gauge.iter().chain(&finer).map(|(_, v)| v.to_bits()).collect();
    assert_eq!(bits(sql(&storage, "SELECT value FROM temp ORDER BY room, timestamp").await), expected);
    let expected: Vec<u64> = counter.iter().map(|(_, v)| v.to_bits()).collect();
    assert_eq!(bits(sql(&storage, "SELECT value FROM hits ORDER BY timestamp").await), expected);
    // The manifest's exact minimum and maximum (which answer these) are the doubles too.
    let extremes = |values: &[(i64, f64)]| {
        (
            values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min),
            values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let all_temp: Vec<(i64, f64)> = gauge.iter().chain(&finer).copied().collect();
    let batches = sql(&storage, "SELECT min(value), max(value) FROM temp").await;
    let column = |i: usize| batches[0].column(i).as_any().downcast_ref::<Float64Array>().unwrap().value(0);
    assert_eq!((column(0), column(1)), extremes(&all_temp));
    // A filter on the value (pushed into the scan, pruned by the file's decimal statistics).
    let above = all_temp.iter().filter(|(_, v)| *v > 50.25).count() as i64;
    assert!(above > 0);
    assert_eq!(count(&storage, "SELECT count(*) FROM temp WHERE value > 50.25").await, above);
    assert_eq!(count(&storage, "SELECT count(*) FROM temp WHERE value > 1000").await, 0);

    // One value that is no decimal (a stale marker) keeps its segment's values as doubles.
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    storage
        .write(batch(vec![series(
            "temp",
            &[("room", "c")],
            [(T0 + 2 * HOUR_NS, 0.5), (T0 + 2 * HOUR_NS + second, stale)],
        )]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    assert_eq!(
        stored_value_types(&storage, dir.path()),
        vec![DataType::Decimal64(18, 0), DataType::Decimal64(18, 3), DataType::Float64]
    );
    let batches = sql(&storage, "SELECT value FROM temp WHERE room = 'c' ORDER BY timestamp").await;
    assert_eq!(bits(batches), vec![0.5f64.to_bits(), stale.to_bits()]);
    storage.close().await.unwrap();
}

/// The (job, instance, code) of a table's rows in its segment file, one entry per run.
fn stored_series_order(storage: &Storage, data_dir: &std::path::Path, table: &str) -> Vec<(String, String, String)> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    let entry = storage.manifest().segments.iter().find(|s| s.table == table).unwrap().clone();
    let mut order: Vec<(String, String, String)> = Vec::new();
    for batch in segment::rows(open_segment(data_dir, &entry.path)).unwrap() {
        let column = |name: &str| cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let (job, instance, code) = (column("job"), column("instance"), column("code"));
        let text = |a: &datafusion::arrow::array::ArrayRef, row: usize| {
            a.as_any().downcast_ref::<StringArray>().unwrap().value(row).to_string()
        };
        for row in 0..batch.num_rows() {
            let key = (text(&job, row), text(&instance, row), text(&code, row));
            if order.last() != Some(&key) {
                order.push(key);
            }
        }
    }
    order
}

/// Series are stored job first, then instance (VictoriaMetrics' order), not in label-name
/// order (code, instance, job), so a selector on a job reads one run of rows per file.
#[tokio::test]
async fn series_are_stored_by_job_then_instance_so_a_job_is_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let all = |value: f64, at: i64| {
        let mut out = Vec::new();
        for i in 0..12 {
            let (job, instance, code) =
                (format!("job-{}", i % 3), format!("host-{}", i / 3), ["200", "500"][i % 2].to_string());
            out.push(series("req", &[("code", &code), ("instance", &instance), ("job", &job)], [(T0 + at, value)]));
        }
        batch(out)
    };
    let mut expected: Vec<(String, String, String)> = (0..12)
        .map(|i| (format!("job-{}", i % 3), format!("host-{}", i / 3), ["200", "500"][i % 2].to_string()))
        .collect();
    expected.sort();
    storage.write(all(1.0, 0)).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(stored_series_order(&storage, dir.path(), "req"), expected, "a flush");
    storage.write(all(2.0, 1)).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1);
    assert_eq!(stored_series_order(&storage, dir.path(), "req"), expected, "a compaction");
    // The four series of job-1 are one run: the index selects them as one, and skips the rest.
    assert_eq!(count(&storage, "SELECT count(*) FROM req WHERE job = 'job-1'").await, 8);
    assert_eq!(storage.rows_skipped_by_index(), 16);
    storage.close().await.unwrap();
}

/// Every row of `table` that `filter` keeps, as text (labels, time, value), sorted; and
/// whether the plan read some segment labelled by its series index.
async fn labelled_rows(
    storage: &Storage,
    table: std::sync::Arc<dyn datafusion::catalog::TableProvider>,
    filter: datafusion::prelude::Expr,
) -> (Vec<String>, bool) {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    // Batches of 7 rows: a series' run spans several, and a batch holds several runs.
    let ctx = SessionContext::new_with_config(datafusion::prelude::SessionConfig::new().with_batch_size(7));
    catalog::register(storage, &ctx).unwrap();
    let frame = ctx.read_table(table).unwrap().filter(filter).unwrap();
    let plan = frame.clone().create_physical_plan().await.unwrap();
    let indexed = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string().contains("Streaming");
    let mut rows = Vec::new();
    for batch in frame.collect().await.unwrap() {
        let schema = batch.schema();
        let columns: Vec<_> = batch.columns().iter().map(|c| cast(c, &DataType::Utf8).unwrap()).collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    let text = c.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
                    format!("{}={}", f.name(), if text.is_null(row) { "∅" } else { text.value(row) })
                })
                .collect();
            rows.push(cells.join(" "));
        }
    }
    rows.sort();
    (rows, indexed)
}

#[tokio::test]
async fn a_read_of_a_few_series_fetches_only_their_pages() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (store, opts) = PoisonedStore::options(dir.path(), false);
    let storage = Storage::open(opts).await.unwrap();
    // 300 counters rising by uneven steps, 400 samples each, in one segment (one partition):
    // value pages are cut between series, time pages hold Parquet's 20,000 rows.
    let second = 1_000_000_000;
    let counters = (0..300)
        .map(|s: i64| {
            let mut total = 1_000.0 * s as f64;
            let samples = (0..400i64).map(move |i| {
                total += ((s * 31 + i * 7919) % 97) as f64;
                (T0 + i * 5 * second, total)
            });
            series("req", &[("instance", &format!("host-{s:03}"))], samples.collect::<Vec<_>>())
        })
        .collect();
    storage.write(batch(counters)).await.unwrap();
    storage.persist().await.unwrap();
    let segments = storage.manifest().segments.clone();
    assert_eq!(segments.len(), 1);
    let segment_bytes = segments[0].size_bytes;

    let schema = storage.metric_table_schemas()["req"].clone();
    let table = storage.table_reading("req", schema, series_index::SegmentReading::RowsLabelledByIndex);
    let ctx = SessionContext::new();
    let read = || async {
        let frame = ctx.read_table(table.clone()).unwrap();
        let frame =
            frame.filter(datafusion::prelude::col("instance").eq(datafusion::prelude::lit("host-000"))).unwrap();
        frame.collect().await.unwrap().iter().map(|b| b.num_rows()).sum::<usize>()
    };
    // The first read fetches the footer and the page index (then cached), the next only pages:
    // those of the first series, as the store merges ranges less than 1 MiB apart (so does
    // every `object_store` store), and a series further on would fetch the pages between.
    assert_eq!(read().await, 400);
    store.parquet_bytes_read.store(0, Relaxed);
    assert_eq!(read().await, 400);
    let fetched = store.parquet_bytes_read.load(Relaxed);
    assert!(fetched > 0 && fetched * 10 < segment_bytes, "fetched {fetched} of {segment_bytes} bytes");
}

#[tokio::test]
async fn a_set_labelled_by_its_series_index_reads_what_its_files_hold() {
    use datafusion::prelude::{col, lit};
    use datafusion::scalar::ScalarValue;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    let minute = 60_000_000_000;
    let minutes = |values: f64| (0..150i64).map(move |m| (T0 + m * minute, values + m as f64));
    // Two metrics over three hourly partitions; a series without `instance`, and `code` only
    // on the second metric: label values the index holds as nulls.
    storage
        .write(batch(vec![
            series("up", &[("job", "api"), ("instance", "a")], minutes(0.0)),
            series("up", &[("job", "db")], minutes(1000.0)),
            series("up", &[("job", "api"), ("instance", "b")], minutes(3000.0)),
            series("req", &[("job", "api"), ("code", "500")], minutes(2000.0).map(|(t, v)| (t, v / 8.0))),
        ]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    // One more sample in the write buffer.
    storage
        .write(batch(vec![series("up", &[("job", "api"), ("instance", "a")], [(T0 + 200 * minute, 9.0)])]))
        .await
        .unwrap();
    let schemas = storage.metric_table_schemas();
    let set = storage.metric_set(schemas.iter().map(|(t, s)| (t.as_str(), s.as_ref()))).unwrap();
    let time = |m: i64| lit(ScalarValue::TimestampNanosecond(Some(T0 + m * minute), Some("UTC".into())));
    let cases = [
        ("every row", lit(true), 601, true),
        (
            "job=api over a span crossing partitions",
            col("job").eq(lit("api")).and(col("timestamp").gt_eq(time(50))).and(col("timestamp").lt_eq(time(130))),
            3 * 81,
            true,
        ),
        ("a label absent from a series", col("instance").is_null(), 300, true),
        // A filter on the value: not for the index, read as before.
        ("value from 1100 to 3010", col("value").gt(lit(1100.0)).and(col("value").lt_eq(lit(3010.0))), 60, false),
    ];
    for (case, filter, expected, by_index) in cases {
        let (plain, _) = labelled_rows(&storage, Arc::new(set.clone()), filter.clone()).await;
        let (labelled, indexed) = labelled_rows(&storage, Arc::new(set.labelled_by_index()), filter).await;
        assert_eq!(labelled.len(), expected, "{case}");
        assert_eq!(labelled, plain, "{case}");
        assert_eq!(indexed, by_index, "{case}: read by the index");
    }
    // Nulls stay nulls: the series without `instance` reads so.
    let (rows, _) = labelled_rows(&storage, Arc::new(set.labelled_by_index()), col("job").eq(lit("db"))).await;
    assert!(rows.iter().all(|r| r.contains("instance=∅") && r.contains("code=∅")), "{}", rows[0]);
    // One table of the shared files (a named selector's), read both ways.
    let schema = schemas["up"].clone();
    let by_index = storage.table_reading("up", schema.clone(), series_index::SegmentReading::RowsLabelledByIndex);
    for (filter, expected) in [(lit(true), 451), (col("job").eq(lit("api")).and(col("timestamp").lt(time(70))), 140)] {
        let (plain, _) = labelled_rows(&storage, storage.table_provider("up", schema.clone()), filter.clone()).await;
        let (labelled, indexed) = labelled_rows(&storage, by_index.clone(), filter).await;
        assert_eq!((labelled.len(), indexed), (expected, true));
        assert_eq!(labelled, plain);
    }
    // Each segment read through its index keeps its reader metadata with the index: the reads
    // after the first took it from there, and answered the same.
    let manifest = storage.manifest();
    let shared: Vec<&str> = manifest.segments.iter().filter(|s| s.shared.is_some()).map(|s| s.path.as_str()).collect();
    assert!(!shared.is_empty());
    assert!(shared.iter().all(|path| storage.inner.series_indexes.reading(path).is_some()), "{shared:?}");
}

/// Options merging closed one-hour partitions four hours at a time.
fn wide_options(dir: &std::path::Path) -> StorageOptions {
    let mut options = options(dir);
    options.compaction_window = Duration::from_secs(4 * 3600);
    options
}

/// The metric files of the store's manifest: (partition, rows), by partition.
fn metric_files(storage: &Storage) -> Vec<(i64, u64)> {
    let mut files: BTreeMap<u64, (i64, u64)> = BTreeMap::new();
    for segment in &storage.manifest().segments {
        files.insert(segment.id, (segment.partition_start_ns, segment.file_rows()));
    }
    let mut files: Vec<(i64, u64)> = files.into_values().collect();
    files.sort_unstable();
    files
}

#[tokio::test]
async fn closed_partitions_of_a_window_merge_into_one_segment_read_in_part_by_their_marks() {
    const WINDOW_NS: i64 = 4 * HOUR_NS;
    let start = T0 - T0.rem_euclid(WINDOW_NS);
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(wide_options(dir.path())).await.unwrap();
    // Eight hours of three series, one sample a minute, flushed hour by hour: eight files in
    // eight partitions of two windows; then a late sample in the first hour (a ninth file),
    // and a sample of now, whose window is still open.
    for hour in 0..8i64 {
        let minutes = (hour * 60)..(hour * 60 + 60);
        let at = |m: i64| start + m * 60_000_000_000;
        storage
            .write(batch(
                ["a", "b", "c"]
                    .iter()
                    .map(|host| series("cpu", &[("host", host)], minutes.clone().map(|m| (at(m), m as f64))))
                    .collect(),
            ))
            .await
            .unwrap();
        storage.persist().await.unwrap();
    }
    storage
        .write(batch(vec![series("cpu", &[("host", "a")], [(start + 30 * 60_000_000_000 + 30_000_000_000, -1.0)])]))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    let now = crate::maintenance::now_ns();
    storage.write(batch(vec![series("cpu", &[("host", "a")], [(now, 7.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    // And two partitions of the window before the current one: closed, but less than a
    // window ago, so still read as partitions by queries over the last window.
    let previous = now - now.rem_euclid(WINDOW_NS) - WINDOW_NS;
    for at in [previous, previous + HOUR_NS] {
        storage.write(batch(vec![series("cpu", &[("host", "b")], [(at, 1.0)])])).await.unwrap();
        storage.persist().await.unwrap();
    }
    assert_eq!(metric_files(&storage).len(), 12);

    let minute = 60_000_000_000i64;
    let queries = [
        "SELECT host, count(*) AS n, sum(value) AS s FROM cpu GROUP BY host ORDER BY host".to_string(),
        format!(
            "SELECT sum(value) AS s, count(*) AS n FROM cpu WHERE host = 'a' AND {}",
            time_range(start + 90 * minute, start + 150 * minute)
        ),
        format!(
            "SELECT host, sum(value) AS s FROM cpu WHERE host <> 'b' AND {} GROUP BY host ORDER BY host",
            time_range(start + 200 * minute, start + 300 * minute)
        ),
        format!(
            "SELECT value FROM cpu WHERE host = 'a' AND {} ORDER BY timestamp",
            time_range(start + 29 * minute, start + 32 * minute)
        ),
        format!("SELECT count(*) FROM cpu WHERE host = 'c' AND {}", time_range(start + 479 * minute, now + 1)),
    ];
    let mut before = Vec::new();
    for query in &queries {
        before.push(sql(&storage, query).await);
    }

    // The first window's partitions (and its late sample) are one file; so are the second's;
    // the last window's partitions and the open window's stay as they are.
    assert_eq!(storage.compact().await.unwrap(), 2);
    let files = metric_files(&storage);
    assert_eq!(files.len(), 5, "{files:?}");
    assert_eq!((files[0], files[1]), ((start, 721), (start + WINDOW_NS, 720)));
    assert_eq!(storage.compact().await.unwrap(), 0, "nothing left to merge");
    for (query, expected) in queries.iter().zip(&before) {
        assert_eq!(&sql(&storage, query).await, expected, "{query}");
    }
    // One host's hour in the middle of a window reads that host's rows of the two partitions
    // the hour touches, not the file's 720 rows.
    let skipped = storage.rows_skipped_by_index();
    sql(&storage, &queries[1]).await;
    assert_eq!(storage.rows_skipped_by_index() - skipped, 721 - 120);

    // A late correction (a sample at a time already held) makes a window of two files again:
    // it merges again, and the correction wins.
    storage.write(batch(vec![series("cpu", &[("host", "a")], [(start + 31 * minute, -2.0)])])).await.unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.compact().await.unwrap(), 1);
    assert_eq!(metric_files(&storage).len(), 5);
    let values = sql(&storage, &queries[3]).await;
    let values = values[0].column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(values.values().to_vec(), vec![29.0, 30.0, -1.0, -2.0]);
    let mut merged = Vec::new();
    for query in &queries {
        merged.push(sql(&storage, query).await);
    }
    drop(storage);
    // A restart reads the merged store the same.
    let storage = Storage::open(wide_options(dir.path())).await.unwrap();
    for (query, expected) in queries.iter().zip(&merged) {
        assert_eq!(&sql(&storage, query).await, expected, "{query}");
    }
    storage.close().await.unwrap();
}

/// A store capped at `max_rows` a compaction, holding four closed one-hour partitions (one
/// window of [`wide_options`]) of `hosts` series sampled every minute, one file each.
async fn four_hour_files(max_rows: u64, hosts: &[&str]) -> (tempfile::TempDir, Storage, i64) {
    let start = T0 - T0.rem_euclid(4 * HOUR_NS);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = wide_options(dir.path());
    opts.compaction_max_rows = max_rows;
    let storage = Storage::open(opts).await.unwrap();
    for hour in 0..4i64 {
        let minutes = (hour * 60)..(hour * 60 + 60);
        let at = |m: i64| start + m * 60_000_000_000;
        let all = hosts.iter().map(|host| series("cpu", &[("host", host)], minutes.clone().map(|m| (at(m), m as f64))));
        storage.write(batch(all.collect())).await.unwrap();
        storage.persist().await.unwrap();
    }
    (dir, storage, start)
}

/// The label values each metric file holds of `label` (the least and greatest of its
/// entries' bounds), sorted.
fn file_label_bounds(storage: &Storage, label: &str) -> Vec<(String, String)> {
    let text = |bound: &Option<crate::manifest::StatValue>| match bound {
        Some(crate::manifest::StatValue::Text(text)) => text.clone(),
        other => panic!("{label} bound {other:?}"),
    };
    let mut files: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for segment in &storage.manifest().segments {
        let Some(stats) = segment.stats.iter().find(|c| c.name == label) else { continue };
        let (low, high) = (text(&stats.min), text(&stats.max));
        let bounds = files.entry(segment.id).or_insert_with(|| (low.clone(), high.clone()));
        bounds.0 = bounds.0.clone().min(low);
        bounds.1 = bounds.1.clone().max(high);
    }
    let mut bounds: Vec<(String, String)> = files.into_values().collect();
    bounds.sort_unstable();
    bounds
}

#[tokio::test]
async fn a_window_over_the_row_cap_merges_whole_in_slices_of_series() {
    // Three series of 60 rows an hour: a window's 720 rows are over the cap. The window merges
    // in one pass, whole: a slice of series within the cap a file, so each series is one run
    // of the whole window (merging in halves of time made it two).
    for (cap, files, hosts) in [
        (400, vec![(0, 240), (0, 240), (0, 240)], vec![("a", "a"), ("b", "b"), ("c", "c")]),
        (500, vec![(0, 240), (0, 480)], vec![("a", "b"), ("c", "c")]),
        (720, vec![(0, 720)], vec![("a", "c")]),
    ] {
        let (_dir, storage, start) = four_hour_files(cap, &["a", "b", "c"]).await;
        let before = sql(
            &storage,
            "SELECT host, count(*), sum(value), min(timestamp), max(timestamp) FROM cpu GROUP BY host ORDER BY host",
        )
        .await;
        assert_eq!(storage.compact().await.unwrap(), 1, "cap {cap}");
        let at_start: Vec<(i64, u64)> = files.iter().map(|&(partition, rows)| (start + partition, rows)).collect();
        let mut merged = metric_files(&storage);
        merged.sort_unstable_by_key(|&(_, rows)| rows);
        assert_eq!(merged, at_start, "cap {cap}");
        let expected: Vec<(String, String)> = hosts.iter().map(|(l, h)| (l.to_string(), h.to_string())).collect();
        assert_eq!(
            file_label_bounds(&storage, "host"),
            expected,
            "cap {cap}: files of disjoint series, in series order"
        );
        assert_eq!(storage.compact().await.unwrap(), 0, "cap {cap}: nothing left to merge");
        assert_eq!(
            sql(
                &storage,
                "SELECT host, count(*), sum(value), min(timestamp), max(timestamp) FROM cpu GROUP BY host ORDER BY host"
            )
            .await,
            before,
            "cap {cap}"
        );
    }
    // One series is never cut: over the cap, it is a slice of its own (a day of a series
    // scraped every second is 86,400 rows, far below any cap).
    for cap in [300, 150, 100] {
        let (_dir, storage, start) = four_hour_files(cap, &["a"]).await;
        assert_eq!(storage.compact().await.unwrap(), 1, "cap {cap}");
        assert_eq!(metric_files(&storage), vec![(start, 240)], "cap {cap}");
        assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 240);
    }
}

/// A window's slices hold every series whole across tables of different label columns,
/// files with and without series indexes, and late corrections: what queries answer is what
/// they answered before the merge, the newest value of a repeated timestamp kept.
#[tokio::test]
async fn slices_of_a_window_merge_keep_every_series_whole_and_the_newest_value() {
    for drop_indexes in [false, true] {
        let start = T0 - T0.rem_euclid(4 * HOUR_NS);
        let dir = tempfile::tempdir().unwrap();
        let mut opts = wide_options(dir.path());
        opts.compaction_max_rows = 300;
        let storage = Storage::open(opts).await.unwrap();
        let at = |m: i64| start + m * 60_000_000_000;
        for hour in 0..4i64 {
            let minutes = (hour * 60)..(hour * 60 + 60);
            let mut all: Vec<MetricSeries> = ["a", "b", "c"]
                .iter()
                .map(|host| series("cpu", &[("host", host)], minutes.clone().map(|m| (at(m), m as f64))))
                .collect();
            // A second table; from the third hour on one of its series has a label more.
            all.push(series("up", &[("job", "api"), ("instance", "1")], minutes.clone().map(|m| (at(m), 1.0))));
            let zone: &[(&str, &str)] = if hour >= 2 {
                &[("job", "api"), ("instance", "2"), ("zone", "z")]
            } else {
                &[("job", "api"), ("instance", "2")]
            };
            all.push(series("up", zone, minutes.clone().map(|m| (at(m), 0.0))));
            storage.write(batch(all)).await.unwrap();
            storage.persist().await.unwrap();
        }
        // Late corrections of the first hour, flushed into its partition as a file of their own.
        storage
            .write(batch(vec![
                series("cpu", &[("host", "b")], [(at(5), -5.0)]),
                series("up", &[("job", "api"), ("instance", "2")], [(at(7), 7.0)]),
            ]))
            .await
            .unwrap();
        storage.persist().await.unwrap();
        if drop_indexes {
            for segment in &storage.manifest().segments {
                series_index::delete(&storage.inner.store, &segment.path).await.unwrap();
            }
        }
        // Before the merge a corrected timestamp has both values (in two files): the answers
        // compared leave those two timestamps out, and the corrections are asserted apart.
        let untouched = format!("timestamp NOT IN ({}, {})", ts_literal(at(5)), ts_literal(at(7)));
        let queries = [
            format!(
                "SELECT host, count(*) AS n, sum(value) AS s, min(timestamp), max(timestamp) FROM cpu WHERE {untouched} GROUP BY host ORDER BY host"
            ),
            format!(
                "SELECT instance, zone, count(*) AS n, sum(value) AS s FROM up WHERE {untouched} GROUP BY instance, zone ORDER BY instance, zone"
            ),
        ];
        let mut before = Vec::new();
        for query in &queries {
            before.push(sql(&storage, query).await);
        }
        assert_eq!(storage.compact().await.unwrap(), 1);
        // 1,202 rows (two of them corrections) in slices within 300: cpu's a, b (with its
        // correction: 241), c; up's instance 1; up's instance 2 (121) with instance 2 in zone z
        // (120), the key order (job, instance, then the other labels; no zone first).
        let mut files = metric_files(&storage);
        files.sort_unstable_by_key(|&(_, rows)| rows);
        assert_eq!(files, vec![(start, 240); 5], "indexes dropped: {drop_indexes}");
        for (query, expected) in queries.iter().zip(&before) {
            assert_eq!(&sql(&storage, query).await, expected, "{query} (indexes dropped: {drop_indexes})");
        }
        let corrected = format!(
            "SELECT value FROM cpu WHERE host = 'b' AND timestamp = {} UNION ALL SELECT value FROM up WHERE instance = '2' AND timestamp = {}",
            ts_literal(at(5)),
            ts_literal(at(7))
        );
        let mut values: Vec<f64> = sql(&storage, &corrected)
            .await
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec())
            .collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, vec![-5.0, 7.0], "the corrections won, once each");
        assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 720);
        assert_eq!(count(&storage, "SELECT count(*) FROM up").await, 480);
        storage.close().await.unwrap();
    }
}

/// A backfill finds many windows due at once and merges a row cap's worth a pass: the
/// partitions of the windows left for later passes are not merged on their own meanwhile
/// (their rows would be written twice), and the pass says how many merges it left.
#[tokio::test]
async fn partitions_of_windows_waiting_their_turn_are_not_merged_on_their_own() {
    const WINDOW_NS: i64 = 4 * HOUR_NS;
    let start = T0 - T0.rem_euclid(WINDOW_NS);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = wide_options(dir.path());
    // Three series of 60 rows an hour: a window's 720 rows fit the cap, two windows do not.
    opts.compaction_max_rows = 1000;
    let storage = Storage::open(opts).await.unwrap();
    // Eight hours, each hour's partition written by two flushes: sixteen files, two windows.
    for half_hour in 0..16i64 {
        let minutes = (half_hour * 30)..(half_hour * 30 + 30);
        let at = |m: i64| start + m * 60_000_000_000;
        let all = ["a", "b", "c"]
            .iter()
            .map(|host| series("cpu", &[("host", host)], minutes.clone().map(|m| (at(m), m as f64))));
        storage.write(batch(all.collect())).await.unwrap();
        storage.persist().await.unwrap();
    }
    assert_eq!(metric_files(&storage).len(), 16);
    assert_eq!(storage.compact().await.unwrap(), 1, "one window a pass");
    assert_eq!(storage.compactions_pending(), 1, "the second window waits");
    let files = metric_files(&storage);
    assert_eq!(files[0], (start, 720));
    assert_eq!(files.len(), 9, "the second window's partitions keep their two files each: {files:?}");
    assert_eq!(storage.compact().await.unwrap(), 1);
    assert_eq!(storage.compactions_pending(), 0);
    assert_eq!(metric_files(&storage), vec![(start, 720), (start + WINDOW_NS, 720)]);
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu").await, 1440);
}
