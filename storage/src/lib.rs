//! Vigil's storage: durable, queryable telemetry.
//!
//! ```text
//!  write(WriteBatch) ──► WAL (group commit, fsync policy) ──► ack
//!        │
//!        └──► write buffer (in memory, queryable at once)
//!                 │  flush: every flush_interval, or when half the memory budget is used
//!                 ▼
//!     Parquet segments per time partition, shared by the metric tables (see [`shared`])
//!                 │                           ──► object_store (local disk by default)
//!                 │  manifest.json names the live segments and the WAL persisted through
//!                 ▼
//!     compaction (merge a partition's segments, dedupe) · retention (drop whole segments)
//! ```
//!
//! Guarantees: a write is acknowledged only once its WAL record is durable under the fsync
//! policy; on start the WAL is replayed after the last persisted file, so a crash loses no
//! acknowledged write (`always`). A repeated (series, timestamp) keeps one value, so replays
//! and retries never double samples. Memory stays under `buffer_max_bytes`: past half of it
//! a flush starts, past all of it writes are refused with [`StorageError::Backpressure`].
//!
//! Queries go through [`catalog::VigilSchemaProvider`]: one DataFusion table per metric and
//! the fixed tables of [`schema::FixedTable`], each scanning buffer and segments together.

pub mod buffer;
pub mod cardinality;
pub mod catalog;
pub mod changes;
pub mod clock;
pub mod damage;
mod decimal_values;
mod filters;
mod indexed_scan;
pub mod lease;
mod local_store;
mod maintenance;
pub mod manifest;
mod merge;
mod merge_slices;
pub mod metric_set;
pub use maintenance::PersistSummary;
pub mod exemplars;
pub mod schema;
pub mod segment;
pub mod series_index;
pub mod shared;
pub mod store;
pub mod wal;
pub mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::error::ArrowError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::parquet::errors::ParquetError;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{info, warn};

use std::collections::BTreeMap;

use buffer::WriteBuffer;
use manifest::{Manifest, PartitionCache};
use wal::{FsyncPolicy, Wal, WalError, codec};
/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

pub use write::{LabelSet, MetricName, MetricSeries, Sample, TableRows, WriteBatch, WriteSummary};

/// Maps looked up once per series of every write (tables, series, cardinality): foldhash, which
/// costs a fraction of std's SipHash on label sets.
pub(crate) type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastHashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The value at `key`, made by `make` when absent: looked up by `&str` first, so the key is
/// allocated once per new entry, not per call (`entry` takes an owned key).
// The expect holds by the line before it; `get_mut` first and `insert` after is what the
// borrow checker refuses (a returned borrow in one branch).
#[allow(clippy::expect_used)]
pub(crate) fn get_or_insert_with<'m, V>(
    map: &'m mut FastHashMap<String, V>,
    key: &str,
    make: impl FnOnce() -> V,
) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), make());
    }
    map.get_mut(key).expect("the entry was inserted above")
}

/// Storage settings. Defaults run out of the box.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Holds `wal/` and, for the default local object store, `segments/`.
    pub data_dir: PathBuf,
    /// Where segments and manifests live (local disk under `data_dir/segments` by default).
    pub store: store::ObjectStoreConfig,
    /// A store to use instead of building one from `store` (tests, embedding).
    pub object_store: Option<Arc<dyn ObjectStore>>,
    pub wal_fsync: FsyncPolicy,
    /// Bytes that may wait for the WAL writer before writes are refused.
    pub wal_max_pending_bytes: usize,
    /// Time span of one segment partition.
    pub partition_duration: Duration,
    /// How often the buffer is flushed to Parquet even when it is small.
    pub flush_interval: Duration,
    /// Memory budget of the write buffer (being written and being flushed together).
    pub buffer_max_bytes: usize,
    /// Data older than this is deleted, whole segments at a time. Zero keeps everything.
    pub retention: Duration,
    /// A partition with this many segments is compacted even while still open.
    pub compaction_max_segments: usize,
    /// Rows one compaction holds in memory at most: a partition's files merge while their rows
    /// stay within it (a larger partition stays several segments of about this size), and a
    /// window merges in slices of series of at most this many rows, each its own files.
    pub compaction_max_rows: u64,
    /// Closed partitions of one window this long (from the epoch; a multiple of
    /// `partition_duration`) merge into one segment, as Prometheus compacts its 2 h blocks:
    /// a series' samples of a day are one run, not twelve. A window merges a window's length
    /// after it closed (yesterday's partitions stay, for queries over the last day), whole, in
    /// files of disjoint series of `compaction_max_rows` rows at most. Zero (or one partition)
    /// keeps partitions apart.
    pub compaction_window: Duration,
    /// This node's name in a shared store; `None` = the one kept in `data_dir/node_id`
    /// (made up at first start).
    pub node_id: Option<String>,
    /// How often other nodes' manifests are re-read from a shared store: the bound on how
    /// late their flushed data shows up here. Zero = never (a store of one node).
    pub peer_refresh_interval: Duration,
    /// Bounds on metric names and active series.
    pub cardinality: cardinality::CardinalityLimits,
    /// Memory kept for series indexes read from segments (oldest evicted first).
    pub index_cache_bytes: usize,
}

impl StorageOptions {
    /// The partition length in nanoseconds (at least one; saturating).
    pub fn partition_ns(&self) -> i64 {
        i64::try_from(self.partition_duration.as_nanos()).unwrap_or(i64::MAX).max(1)
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageOptions {
            data_dir: data_dir.into(),
            store: store::ObjectStoreConfig::default(),
            object_store: None,
            wal_fsync: FsyncPolicy::Always,
            wal_max_pending_bytes: 256 << 20,
            partition_duration: Duration::from_secs(2 * 3600),
            flush_interval: Duration::from_secs(600),
            buffer_max_bytes: 1 << 30,
            retention: Duration::from_secs(30 * 86400),
            compaction_max_segments: 8,
            compaction_max_rows: 2_000_000,
            compaction_window: Duration::from_secs(24 * 3600),
            node_id: None,
            peer_refresh_interval: Duration::from_secs(15),
            cardinality: cardinality::CardinalityLimits::default(),
            index_cache_bytes: series_index::DEFAULT_CACHE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the write buffer is full ({held_bytes} of {max_bytes} bytes); retry shortly")]
    Backpressure { held_bytes: usize, max_bytes: usize },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("object store: {0}")]
    ObjectStore(#[from] datafusion::object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("WAL record: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("rows for table {table} do not match its schema")]
    SchemaMismatch { table: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl StorageError {
    /// True when retrying the same write later can succeed (overload, I/O trouble): the
    /// edge answers 503 then, never a 4xx that senders would drop.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StorageError::SchemaMismatch { .. } | StorageError::Codec(_))
    }

    /// True when the store or the disk failed, not the data: writing anything would fail alike.
    pub fn is_store_fault(&self) -> bool {
        matches!(self, StorageError::ObjectStore(_) | StorageError::Io(_))
    }

    /// True for the overload kinds (answered with `Retry-After`).
    pub fn is_backpressure(&self) -> bool {
        matches!(self, StorageError::Backpressure { .. } | StorageError::Wal(WalError::Backpressure))
    }

    /// What a sender whose write failed with this error should do.
    pub fn write_hint(&self) -> &'static str {
        if self.is_backpressure() {
            "Vigil is flushing to disk; retry after the Retry-After delay"
        } else {
            "a storage fault; the write was not acknowledged, retry it"
        }
    }
}

/// Cardinality figures for an operator (`/api/v1/status/tsdb`).
#[derive(Clone, Debug)]
pub struct CardinalityStatus {
    pub metric_names: usize,
    pub active_series: usize,
    pub limits: cardinality::CardinalityLimits,
    /// Metric tables by active series, largest first.
    pub top_metrics: Vec<(String, usize)>,
}

/// Cheap to clone handle to one storage instance.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("data_dir", &self.inner.options.data_dir).finish()
    }
}

struct Inner {
    options: StorageOptions,
    node_id: String,
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    wal: Wal,
    state: Mutex<State>,
    /// Serialises the writers of the manifest: flushes, retention, and compactions as they
    /// choose and publish their merges.
    maintenance: tokio::sync::Mutex<maintenance::MaintenanceState>,
    /// Serialises compactions, which merge outside the maintenance lock.
    compacting: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
    segments_scanned: AtomicU64,
    /// Rows of shared segments scans did not read because the series index ruled them out.
    rows_skipped_by_index: AtomicU64,
    /// Merges the last compaction pass found due and has not done.
    compactions_pending: AtomicU64,
    /// Partition manifests of other nodes already read.
    peer_partitions: tokio::sync::Mutex<PartitionCache>,
    /// Series indexes of shared segments read or written so far (shared with the scans that
    /// read the segments, for their reader metadata).
    series_indexes: Arc<series_index::IndexCache>,
    /// Active series and metric names, checked against their limits before a write is logged.
    series: Mutex<cardinality::SeriesTracker>,
    /// What accepted writes touched, for readers that keep derived state.
    changes: changes::ChangeFeed,
}

struct State {
    active: WriteBuffer,
    /// The generation being flushed: still queried until its segments are in the manifest.
    persisting: Option<Arc<WriteBuffer>>,
    manifest: Arc<Manifest>,
    /// Other nodes sharing the store, as last read.
    peers: Arc<BTreeMap<String, Arc<Manifest>>>,
    /// Segments moved aside since start: path, rows, reason.
    quarantined: Vec<(String, u64, String)>,
}

impl State {
    /// Every node's segments, this node's first, as last read.
    fn segments(&self) -> impl Iterator<Item = &manifest::SegmentMeta> {
        let peers = self.peers.values().flat_map(|peer| peer.segments.iter());
        self.manifest.segments.iter().chain(peers)
    }

    /// `table`'s segments on every node, this node's first, as last read.
    fn segments_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a manifest::SegmentMeta> + 'a {
        let peers = self.peers.values().flat_map(move |peer| peer.segments_of(table));
        self.manifest.segments_of(table).chain(peers)
    }

    /// The write buffer's generations queries read: the active one, then the one being flushed.
    fn generations(&self) -> impl Iterator<Item = &WriteBuffer> {
        std::iter::once(&self.active).chain(self.persisting.as_deref())
    }
}

impl Storage {
    /// Opens storage: loads the manifest, replays the WAL past it, starts the WAL writer.
    pub async fn open(options: StorageOptions) -> Result<Storage, StorageError> {
        let wal_dir = options.data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir)?;
        let store: Arc<dyn ObjectStore> = match &options.object_store {
            Some(store) => store.clone(),
            None => options.store.build(&options.data_dir)?,
        };
        let store_url = ObjectStoreUrl::parse("vigil://segments").map_err(|e| StorageError::Internal(e.to_string()))?;
        let node_id = match &options.node_id {
            Some(id) => id.clone(),
            None => node_id_in(&options.data_dir)?,
        };
        validate_node_id(&node_id)?;
        let (manifest, migrated) = manifest::load_own(&store, &node_id).await?;
        let manifest = if migrated {
            let mut migrated = manifest;
            manifest::save(&store, &mut migrated, &Manifest::empty(&node_id), 0).await?;
            store.delete(&datafusion::object_store::path::Path::from(manifest::LEGACY_MANIFEST_PATH)).await?;
            info!(node = %node_id, segments = migrated.segments.len(), "manifest moved to the per-node layout");
            migrated
        } else if manifest.has_table_partitions() && manifest.root_damaged.is_none() {
            // A store written before shared segments: one partition manifest per time
            // partition from now on (segment files stay; compaction merges them into shared ones).
            let mut moved = manifest.clone();
            manifest::save(&store, &mut moved, &manifest, maintenance::delete_after_ms()).await?;
            info!(node = %node_id, segments = moved.segments.len(), "partition manifests moved to one per time partition");
            moved
        } else {
            manifest
        };

        let mut active = WriteBuffer::default();
        let mut series = cardinality::SeriesTracker::new(options.cardinality.clone());
        // Replayed writes count as changes: what they touched may not be in derived state yet.
        let mut changes = changes::ChangeFeed::new(changes::DEFAULT_MAX_TABLES);
        series.set_tables(
            manifest.table_names().filter(|t| schema::FixedTable::from_name(t).is_none()).map(str::to_string),
        );
        let persisted = manifest.wal_persisted_through;
        let (stats, undecodable) = {
            let dir = wal_dir.clone();
            let (stats, buffer, tracker, bad, feed) = tokio::task::spawn_blocking(move || {
                let mut bad = 0usize;
                let stats = wal::replay(&dir, persisted, |seq, payload| match codec::decode(payload) {
                    Ok(mut batch) => {
                        batch.sort_samples();
                        // What was acknowledged is kept whatever the limits say now.
                        series.observe(&batch);
                        changes.record(&batch, None);
                        active.apply(&batch);
                    }
                    Err(e) => {
                        warn!(seq, error = %e, "undecodable WAL record skipped");
                        bad += 1;
                    }
                });
                (stats, active, series, bad, changes)
            })
            .await
            .map_err(|e| StorageError::Internal(e.to_string()))?;
            changes = feed;
            active = buffer;
            series = tracker;
            (stats?, bad)
        };
        metrics::counter!("vigil_wal_replayed_records_total").increment(stats.records as u64);
        metrics::counter!("vigil_wal_damaged_files_total").increment(stats.damaged_files as u64);
        if undecodable > 0 {
            warn!(undecodable, "WAL records that could not be decoded were skipped");
        }
        let first_seq = stats.last_seq.max(persisted) + 1;
        let wal = Wal::start(&wal_dir, first_seq, options.wal_fsync, options.wal_max_pending_bytes)?;
        // Files a crash left behind after their contents reached the manifest.
        wal.remove_through(persisted)?;
        info!(
            node = %node_id,
            data_dir = %options.data_dir.display(),
            segments = manifest.segments.len(),
            replayed_records = stats.records,
            "storage opened"
        );
        let series_indexes = Arc::new(series_index::IndexCache::new(options.index_cache_bytes));
        let storage = Storage {
            inner: Arc::new(Inner {
                options,
                node_id,
                store,
                store_url,
                wal,
                state: Mutex::new(State {
                    active,
                    persisting: None,
                    manifest: Arc::new(manifest),
                    peers: Arc::new(BTreeMap::new()),
                    quarantined: Vec::new(),
                }),
                maintenance: tokio::sync::Mutex::new(maintenance::MaintenanceState::default()),
                compacting: tokio::sync::Mutex::new(()),
                flush_wanted: Notify::new(),
                segments_scanned: AtomicU64::new(0),
                rows_skipped_by_index: AtomicU64::new(0),
                compactions_pending: AtomicU64::new(0),
                peer_partitions: tokio::sync::Mutex::new(PartitionCache::default()),
                series_indexes,
                series: Mutex::new(series),
                changes,
            }),
        };
        if !storage.inner.options.peer_refresh_interval.is_zero() {
            storage.refresh_peers().await?;
        }
        storage.record_damage();
        Ok(storage)
    }

    /// This node's name in the store.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Re-reads the manifests of the other nodes in the store. Their segments become
    /// queryable here; what they still hold in memory does not (see `peer_refresh_interval`).
    pub async fn refresh_peers(&self) -> Result<usize, StorageError> {
        let mut cache = self.inner.peer_partitions.lock().await;
        let mut peers = BTreeMap::new();
        for node in manifest::list_nodes(&self.inner.store).await? {
            if node == self.inner.node_id {
                continue;
            }
            if let Some(manifest) = manifest::load_node(&self.inner.store, &node, &mut cache).await? {
                peers.insert(node, Arc::new(manifest));
            }
        }
        cache.retain_named(peers.values().map(|m| m.as_ref()));
        let count = peers.len();
        metrics::gauge!("vigil_storage_peer_nodes").set(count as f64);
        self.inner.state.lock().peers = Arc::new(peers);
        self.refresh_series_tracker();
        Ok(count)
    }

    /// Forgets idle series and re-reads which metric tables exist (retention drops some,
    /// peers add some).
    pub fn refresh_series_tracker(&self) {
        let tables: Vec<String> =
            self.table_names().into_iter().filter(|t| schema::FixedTable::from_name(t).is_none()).collect();
        let mut tracker = self.inner.series.lock();
        tracker.set_tables(tables);
        let active = tracker.prune();
        metrics::gauge!("vigil_storage_active_series").set(active as f64);
        metrics::gauge!("vigil_storage_metric_names").set(tracker.metric_names() as f64);
    }

    /// Metric names stored, active series, the limits, and the metrics with most active
    /// series (at most `top`).
    pub fn cardinality(&self, top: usize) -> CardinalityStatus {
        let tracker = self.inner.series.lock();
        CardinalityStatus {
            metric_names: tracker.metric_names(),
            active_series: tracker.active_series(),
            limits: tracker.limits().clone(),
            top_metrics: tracker.top_metrics(top),
        }
    }

    /// The time spans (inclusive, in milliseconds) of metric segments that merged partitions
    /// (`compaction_window`) and overlap `[low_ms, high_ms]`, on this node and its peers: a
    /// PromQL sweep reads each such segment in one chunk, not once per partition.
    pub fn merged_spans_ms(&self, low_ms: i64, high_ms: i64) -> Vec<(i64, i64)> {
        let partition_ns = self.inner.options.partition_ns();
        let (own, peers) = (self.manifest(), self.peers());
        let mut spans: Vec<(i64, i64)> = std::iter::once(&own)
            .chain(peers.values())
            .flat_map(|manifest| manifest.segments.iter())
            // Integer checks only: a store of thousands of metric names has an entry per name
            // and file. Fixed tables' segments never span partitions (they do not merge so).
            .filter(|s| s.min_time_ns.div_euclid(partition_ns) != s.max_time_ns.div_euclid(partition_ns))
            .map(|s| (s.min_time_ns.div_euclid(1_000_000), s.max_time_ns.div_euclid(1_000_000)))
            .filter(|&(first, last)| first <= high_ms && last >= low_ms)
            .collect();
        spans.sort_unstable();
        spans.dedup();
        spans
    }

    /// The other nodes' manifests, as last read.
    pub fn peers(&self) -> Arc<BTreeMap<String, Arc<Manifest>>> {
        self.inner.state.lock().peers.clone()
    }

    pub fn options(&self) -> &StorageOptions {
        &self.inner.options
    }

    /// Logs, applies and (once durable) acknowledges one write.
    pub async fn write(&self, mut batch: WriteBatch) -> Result<WriteSummary, StorageError> {
        // Sorting here, before any lock, keeps a disordered request from stalling others.
        batch.sort_samples();
        let refused =
            if batch.metrics.is_empty() { Default::default() } else { self.inner.series.lock().admit(&mut batch) };
        let summary = WriteSummary { samples: batch.sample_count(), rows: batch.row_count(), refused };
        if batch.is_empty() {
            return Ok(summary);
        }
        for rows in &batch.rows {
            if rows.batch.schema().fields() != rows.table.schema().fields() {
                return Err(StorageError::SchemaMismatch { table: rows.table.name().into() });
            }
        }
        let payload = codec::encode(&batch)?;
        let max_bytes = self.inner.options.buffer_max_bytes;
        let durable = {
            let mut state = self.inner.state.lock();
            let held_bytes = state.active.bytes() + state.persisting.as_ref().map_or(0, |p| p.bytes());
            if held_bytes >= max_bytes {
                self.inner.flush_wanted.notify_one();
                metrics::counter!("vigil_storage_writes_refused_total", "reason" => "buffer_full").increment(1);
                return Err(StorageError::Backpressure { held_bytes, max_bytes });
            }
            let durable = self.inner.wal.append(payload).inspect_err(|e| {
                if matches!(e, WalError::Backpressure) {
                    metrics::counter!("vigil_storage_writes_refused_total", "reason" => "wal_queue").increment(1);
                }
            })?;
            state.active.apply(&batch);
            if state.active.bytes() >= max_bytes / 2 {
                self.inner.flush_wanted.notify_one();
            }
            metrics::gauge!("vigil_storage_buffer_bytes").set(state.active.bytes() as f64);
            durable
        };
        // After the rows are visible to queries, so a reader that drains this recomputes
        // with them.
        self.inner.changes.record(&batch, Some(crate::maintenance::now_ns()));
        durable.await.map_err(|_| WalError::Closed)??;
        metrics::counter!("vigil_storage_samples_written_total").increment(summary.samples as u64);
        metrics::gauge!("vigil_storage_active_series").set(self.inner.series.lock().active_series() as f64);
        metrics::counter!("vigil_storage_rows_written_total").increment(summary.rows as u64);
        Ok(summary)
    }

    /// What accepted writes touched since the previous call (see [`changes`]).
    pub fn drain_changes(&self) -> changes::Changes {
        self.inner.changes.drain()
    }

    /// The object store holding segments and the URL queries reach it by.
    pub fn object_store(&self) -> (ObjectStoreUrl, Arc<dyn ObjectStore>) {
        (self.inner.store_url.clone(), self.inner.store.clone())
    }

    /// A snapshot of the manifest.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.inner.state.lock().manifest.clone()
    }

    /// Bytes held by the write buffer (both generations).
    pub fn buffered_bytes(&self) -> usize {
        let state = self.inner.state.lock();
        state.active.bytes() + state.persisting.as_ref().map_or(0, |p| p.bytes())
    }

    /// Segment files handed to query plans since start (pruning shows here).
    pub fn segments_scanned(&self) -> u64 {
        self.inner.segments_scanned.load(Ordering::Relaxed)
    }

    /// Rows of shared segments that scans left unread because the series index ruled them out.
    pub fn rows_skipped_by_index(&self) -> u64 {
        self.inner.rows_skipped_by_index.load(Ordering::Relaxed)
    }

    /// Merges (windows and partitions) the last compaction pass found due and has not done
    /// (a pass does a row cap's worth): zero once compaction has caught up.
    pub fn compactions_pending(&self) -> u64 {
        self.inner.compactions_pending.load(Ordering::Relaxed)
    }

    /// Flushes, then stops the WAL writer after syncing it.
    pub async fn close(&self) -> Result<(), StorageError> {
        let flushed = self.persist().await;
        if let Err(e) = &flushed {
            warn!(error = %e, "final flush failed; the WAL keeps the data for the next start");
        }
        self.inner.wal.shutdown().await?;
        flushed.map(|_| ())
    }

    /// Runs flushes, compaction and retention until `stop` resolves.
    pub async fn run_maintenance(&self, stop: impl std::future::Future<Output = ()>) {
        maintenance::run(self, stop).await
    }
}

/// The node id kept in `data_dir/node_id`, if one was made.
pub fn stored_node_id(data_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("node_id")).ok().map(|id| id.trim().to_string()).filter(|id| !id.is_empty())
}

/// The node id kept in `data_dir/node_id`, made up (`node-` and 8 hex digits) at first start.
fn node_id_in(data_dir: &std::path::Path) -> Result<String, StorageError> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            std::fs::write(&path, format!("{id}\n"))?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Node ids become object path segments: letters, digits, `-`, `_` and `.` only.
pub fn validate_node_id(id: &str) -> Result<(), StorageError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(StorageError::Config(format!("node id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'")))
    }
}

#[cfg(test)]
mod tests;

/// A xorshift generator from `seed` (not zero): repeatable pseudo-random data for tests.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
