//! One read per source per evaluation pass. SLOs whose SLIs read the same metric table over
//! the same range share one scan of it (each then picks its series by its matchers), and
//! SLIs with the same PromQL, SQL, span or drift source share its result: ten SLOs on
//! `http_requests_total` with different matchers or objectives read it once per cycle and
//! once per backfill day.
//!
//! A `Scans` lives for one pass (an evaluation cycle, a day of a backfill cohort), so what it
//! holds is at most that pass's data; concurrent users of one key wait for the first read.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::OnceCell;

/// One series: its labels (without `__name__`) and samples in time order.
pub type SeriesPoints = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// Results by key, each read once; a failed read is not kept (the next user tries again).
pub(super) struct Memo<K, V> {
    cells: parking_lot::Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo { cells: parking_lot::Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub(super) async fn get_or_read<E, F, Fut>(&self, key: K, source: &'static str, read: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let cell = self.cells.lock().entry(key).or_default().clone();
        cell.get_or_try_init(|| async {
            metrics::counter!("vigil_slo_scans_total", "source" => source).increment(1);
            read().await
        })
        .await
        .cloned()
    }
}

/// The reads of one evaluation pass, shared by every SLO evaluated in it.
#[derive(Default)]
pub struct Scans {
    /// (metric table, from ms, to ms) → every counter series of the table in `(from, to]`,
    /// minute by minute.
    pub(super) tables: Memo<(String, i64, i64), Arc<Vec<super::sources::CounterMinutes>>>,
    /// (PromQL text, from, to) → the query's series at every minute end.
    pub(super) promql: Memo<(String, i64, i64), Arc<Vec<SeriesPoints>>>,
    /// (source description, from, to) → events per group per minute (spans, drift).
    pub(super) aggregates: Memo<(String, i64, i64), Arc<super::sources::Counts>>,
    /// (SQL text, from, to) → events per minute.
    pub(super) sql: Memo<(String, i64, i64), Arc<BTreeMap<i64, f64>>>,
}

impl Scans {
    pub fn new() -> Self {
        Self::default()
    }
}
