//! The engine over real storage on a manual clock: windows follow the clock, not the system's,
//! and reads obey the query engine's limits.

use vigil_query::{QueryError, QueryOptions};
use vigil_storage::clock::ManualClock;
use vigil_storage::{Storage, StorageOptions};

use super::*;
use crate::model::rfc3339;

/// 2023-11-14T22:20:00Z: ten minutes into an hour window, long before the machine's clock.
const T0_MS: i64 = 1_700_000_400_000;
const HOUR_NS: i64 = 3_600_000_000_000;

async fn open(dir: &std::path::Path, query: QueryOptions, clock: Arc<ManualClock>) -> DriftEngine {
    let mut options = StorageOptions::new(dir);
    options.retention = Duration::ZERO;
    let storage = Storage::open(options).await.unwrap();
    let query = QueryEngine::new(storage, query).unwrap();
    DriftEngine::open(query, DriftOptions::default(), clock).await.unwrap()
}

fn post(values: impl Iterator<Item = f64>) -> Vec<u8> {
    serde_json::json!({"model": "m", "feature": "x", "values": values.collect::<Vec<_>>()}).to_string().into_bytes()
}

fn key() -> FeatureKey {
    FeatureKey { model: "m".into(), version: String::new(), feature: "x".into() }
}

#[tokio::test]
async fn windows_follow_the_engine_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0_MS));
    let engine = open(dir.path(), QueryOptions::default(), clock.clone()).await;
    engine.register_reference(&post((0..200).map(f64::from))).await.unwrap();

    // Values without a timestamp land in the manual clock's window, and shifted ones drift.
    let accepted = engine.ingest(&post((100..300).map(f64::from))).await.unwrap();
    let first_window = (T0_MS * 1_000_000).div_euclid(HOUR_NS) * HOUR_NS;
    assert_eq!(accepted.window_start, rfc3339(first_window));
    let latest = engine.latest(None, None, None).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].window_start_ns, first_window);
    assert_eq!(latest[0].status, DriftStatus::Ok);
    assert!(latest[0].is_drifted(&engine.thresholds()), "{:?}", latest[0].scores);

    // "The future" is the engine clock's: ten minutes ahead is fine, twenty is not, although
    // both lie years before the machine's clock.
    let at = |minutes: i64| rfc3339((T0_MS + minutes * 60_000) * 1_000_000);
    let ahead = |minutes: i64| {
        serde_json::json!({"model": "m", "feature": "x", "values": [1.0], "timestamp": at(minutes)}).to_string()
    };
    engine.ingest(ahead(9).as_bytes()).await.unwrap();
    let refused = engine.ingest(ahead(20).as_bytes()).await.unwrap_err();
    assert!(matches!(refused, DriftError::Invalid { .. }) && refused.to_string().contains("future"), "{refused}");

    // An hour later the open window is the next one; values like the reference do not drift.
    clock.advance(Duration::from_secs(3600));
    engine.ingest(&post((0..200).map(f64::from))).await.unwrap();
    // The first window (one more value, posted ahead) and the new one.
    assert_eq!(engine.flush(None).await.unwrap(), 2);
    let latest = engine.latest(None, None, None).await.unwrap();
    assert_eq!(latest[0].window_start_ns, first_window + HOUR_NS);
    assert!(!latest[0].is_drifted(&engine.thresholds()), "{:?}", latest[0].scores);

    // Both windows are stored, each scored at a time inside itself.
    let history = engine.history(&key(), first_window, first_window + 2 * HOUR_NS).await.unwrap();
    let starts: Vec<i64> = history.iter().map(|o| o.window_start_ns).collect();
    assert_eq!(starts, vec![first_window, first_window + HOUR_NS]);
    let models = engine.datasets();
    assert_eq!((models.len(), models[0].scored_features, models[0].drifted_features), (1, 1, 0));
    assert_eq!(models[0].drifted_share, Some(0.0));
}

#[tokio::test]
async fn window_reads_obey_the_query_limits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0_MS));
    let limits = QueryOptions { max_result_rows: 50, ..QueryOptions::default() };
    let engine = open(dir.path(), limits, clock).await;
    engine.register_reference(&post((0..200).map(f64::from))).await.unwrap();
    // 50 values are read back whole; 51 pass the result bound and the window stays dirty.
    engine.ingest(&post((0..50).map(f64::from))).await.unwrap();
    assert_eq!(engine.flush(None).await.unwrap(), 1);
    engine.ingest(&post([7.0].into_iter())).await.unwrap();
    let refused = engine.flush(None).await.unwrap_err();
    assert!(
        matches!(refused, DriftError::Read(QueryError::ResultTooLarge { setting: "max_result_rows", .. })),
        "{refused}"
    );
    assert!(refused.hint().contains("raise the named limit"), "{}", refused.hint());
    assert_eq!(engine.inner.dirty.lock().len(), 1, "the window is scored again on the next flush");
}
