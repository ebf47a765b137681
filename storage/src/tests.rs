//! Storage round trips through a real DataFusion session.

use std::time::Duration;

use datafusion::arrow::array::{Array, Float64Array, Int64Array};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use super::*;
use datafusion::object_store::local::LocalFileSystem;
use crate::write::{LabelSet, MetricSeries, Sample};

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2023-11-14T22:00:00Z, a partition boundary for one-hour partitions.
const T0: i64 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % HOUR_NS;

fn options(dir: &std::path::Path) -> StorageOptions {
    let mut options = StorageOptions::new(dir);
    options.partition_duration = Duration::from_secs(3600);
    options.retention = Duration::ZERO;
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

#[tokio::test]
async fn buffer_parquet_round_trip_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    let query = "SELECT host, count(*) AS n, sum(value) AS s, min(timestamp) AS first FROM cpu GROUP BY host ORDER BY host";
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
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    storage.persist().await.unwrap();
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
        storage
            .write(batch(vec![series("cpu", &[("host", "c")], (0..10).map(|m| (T0 + m, 1.0)))]))
            .await
            .unwrap();
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
    assert_eq!(count(&storage, "SELECT count(*) FROM m").await, 501, "no row lost; the duplicate of T0 is merged only once the segments meet");
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

#[tokio::test]
async fn count_min_max_over_whole_segments_come_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    storage.persist().await.unwrap();
    let covering = format!(
        "SELECT count(*), min(value), max(value), max(timestamp) FROM cpu WHERE timestamp >= {} AND timestamp < {}",
        ts_literal(T0),
        ts_literal(T0 + 2 * HOUR_NS)
    );
    let expected = sql(&storage, &covering).await;
    let plan = sql(&storage, &format!("EXPLAIN {covering}")).await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
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
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(dir.path())).await.unwrap();
    storage.write(four_hours()).await.unwrap();
    storage.persist().await.unwrap();
    // 30 minutes into the first hour to 10 minutes into the third: 100 minutes × 2 series.
    let query = format!(
        "SELECT count(*) FROM cpu WHERE timestamp >= {} AND timestamp < {}",
        ts_literal(T0 + HOUR_NS / 2),
        ts_literal(T0 + 2 * HOUR_NS + HOUR_NS / 6)
    );
    assert_eq!(count(&storage, &query).await, 200);
    let labelled = format!("{} AND host = 'b'", query);
    assert_eq!(count(&storage, &labelled).await, 100);
    assert_eq!(count(&storage, "SELECT count(*) FROM cpu WHERE host = 'nobody'").await, 0);
}

#[tokio::test]
async fn two_nodes_on_one_store_see_each_others_segments() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix({
        let p = dir.path().join("shared");
        std::fs::create_dir_all(&p).unwrap();
        p
    }).unwrap());
    let node = |name: &str| {
        let mut options = options(&dir.path().join(name));
        options.object_store = Some(shared.clone());
        options.node_id = Some(name.to_string());
        options
    };
    let a = Storage::open(node("a")).await.unwrap();
    let b = Storage::open(node("b")).await.unwrap();
    a.write(batch(vec![series("up", &[("job", "a")], [(T0, 1.0), (T0 + 1, 1.0)])])).await.unwrap();
    b.write(batch(vec![series("up", &[("job", "b")], [(T0, 0.0)])])).await.unwrap();
    assert_eq!(count(&a, "SELECT count(*) FROM up").await, 2, "b's rows are in b's memory only");
    a.persist().await.unwrap();
    b.persist().await.unwrap();
    assert!(b.manifest().segments[0].path.starts_with("nodes/b/"));
    assert_eq!(a.refresh_peers().await.unwrap(), 1);
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
        Storage::open({ let mut o = node("c"); o.node_id = Some("../x".into()); o }).await,
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
