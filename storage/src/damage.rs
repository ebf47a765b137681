//! Damage contained: a segment that fails to read is moved aside and dropped from the
//! manifest (its rows reported lost by name), so queries and compaction carry on; a
//! partition manifest or a root that cannot be read leaves the node serving everything else
//! (see `manifest::load_node`) until `vigil store repair` rebuilds them from the files.
//!
//! ```text
//! nodes/<node>/quarantine/<path of the segment>      segments moved aside, for a human
//! nodes/<node>/manifest.json.damaged-<unix ms>        a root a repair replaced
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::object_store::path::Path;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::{StreamExt, TryStreamExt};
use tracing::{error, info, warn};

use crate::manifest::{self, DamagedPartition, Manifest, PartitionCache, SegmentMeta, column_stats};
use crate::schema::time_column_of;
use crate::{Storage, StorageError, segment, shared};

/// Segments checked at once.
const CHECK_CONCURRENCY: usize = 8;

/// What is known to be damaged on this node, for operators (`/metrics`, the log, `/-/ready`
/// stays 200: the rest is served).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DamageReport {
    /// Why the root manifest could not be read (nothing is written until a repair).
    pub root: Option<String>,
    pub partitions: Vec<DamagedPartition>,
    /// Segments moved aside since start: path, rows lost, reason.
    pub quarantined: Vec<(String, u64, String)>,
}

impl DamageReport {
    pub fn is_empty(&self) -> bool {
        self.root.is_none() && self.partitions.is_empty() && self.quarantined.is_empty()
    }
}

/// Why a segment cannot be read (shown as the reason of `vigil store check`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentDamage {
    #[error("the file is missing")]
    Missing,
    #[error("reading: {0}")]
    Unreadable(String),
    #[error("{found} bytes where the manifest says {expected} (truncated or replaced)")]
    Size { found: u64, expected: u64 },
    #[error("footer: {0}")]
    Footer(String),
    #[error("{found} rows where the manifest says {expected}")]
    Rows { found: i64, expected: u64 },
    #[error("decoding: {0}")]
    Decoding(String),
    #[error("{found} rows decode where the manifest says {expected}")]
    DecodedRows { found: u64, expected: u64 },
    // Why a file found without a manifest entry cannot be given one (`vigil store repair`).
    #[error("the file holds no rows")]
    Empty,
    #[error("the file belongs to table {0:?}")]
    OtherTable(String),
    #[error("the file names no table")]
    NoTable,
    #[error("no time bounds in the file's statistics")]
    NoTimeBounds,
}

/// Why a segment cannot be read, or `Ok` when it can: its size and footer agree with the
/// manifest, and with `deep`, every row decodes.
pub async fn verify_segment(
    store: &Arc<dyn ObjectStore>,
    segment: &SegmentMeta,
    deep: bool,
) -> Result<(), SegmentDamage> {
    let path = Path::from(segment.path.as_str());
    let bytes = match store.get(&path).await {
        Ok(object) => object.bytes().await.map_err(|e| SegmentDamage::Unreadable(e.to_string()))?,
        Err(datafusion::object_store::Error::NotFound { .. }) => return Err(SegmentDamage::Missing),
        Err(e) => return Err(SegmentDamage::Unreadable(e.to_string())),
    };
    if bytes.len() as u64 != segment.size_bytes {
        return Err(SegmentDamage::Size { found: bytes.len() as u64, expected: segment.size_bytes });
    }
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| SegmentDamage::Footer(e.to_string()))?;
    let rows = builder.metadata().file_metadata().num_rows();
    let expected = segment.file_rows();
    if u64::try_from(rows).ok() != Some(expected) {
        return Err(SegmentDamage::Rows { found: rows, expected });
    }
    if deep {
        let reader = builder.build().map_err(|e| SegmentDamage::Decoding(e.to_string()))?;
        let mut decoded = 0u64;
        for batch in reader {
            decoded += batch.map_err(|e| SegmentDamage::Decoding(e.to_string()))?.num_rows() as u64;
        }
        if decoded != expected {
            return Err(SegmentDamage::DecodedRows { found: decoded, expected });
        }
    }
    Ok(())
}

/// The damaged files among `segments` (each file checked once, named by one of its
/// entries), with the reason.
pub async fn find_damaged(
    store: &Arc<dyn ObjectStore>,
    mut segments: Vec<SegmentMeta>,
    deep: bool,
) -> Vec<(SegmentMeta, String)> {
    let mut seen = BTreeSet::new();
    segments.retain(|s| seen.insert(s.path.clone()));
    futures::stream::iter(segments)
        .map(|segment| async move {
            let verdict = verify_segment(store, &segment, deep).await;
            verdict.err().map(|damage| (segment, damage.to_string()))
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .filter_map(|found| async move { found })
        .collect()
        .await
}

fn quarantine_path(node: &str, segment_path: &str) -> Path {
    let mut parts = vec!["nodes".to_string(), node.to_string(), "quarantine".to_string()];
    parts.extend(Path::from(segment_path).parts().map(|p| p.as_ref().to_string()));
    Path::from_iter(parts)
}

/// Moves a file aside (copy, then delete: `rename` is not atomic on every store anyway).
async fn move_aside(store: &Arc<dyn ObjectStore>, from: &Path, to: &Path) -> Result<(), StorageError> {
    match store.copy(from, to).await {
        Ok(()) => {}
        Err(datafusion::object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match store.delete(from).await {
        Ok(()) | Err(datafusion::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Storage {
    /// Sets the damage gauges of `/metrics`.
    pub fn record_damage(&self) {
        let damage = self.damage();
        metrics::gauge!("vigil_storage_root_manifest_damaged").set(if damage.root.is_some() { 1.0 } else { 0.0 });
        metrics::gauge!("vigil_storage_damaged_partitions").set(damage.partitions.len() as f64);
    }

    /// What is known to be damaged.
    pub fn damage(&self) -> DamageReport {
        let state = self.inner.state.lock();
        DamageReport {
            root: state.manifest.root_damaged.clone(),
            partitions: state.manifest.damaged.clone(),
            quarantined: state.quarantined.clone(),
        }
    }

    /// Checks this node's segments of `tables` (after a query failed reading them) and moves
    /// the damaged ones aside. Returns how many were quarantined: when any were, the query
    /// can be run again.
    pub async fn quarantine_damaged(&self, tables: &BTreeSet<String>) -> Result<usize, StorageError> {
        let segments: Vec<SegmentMeta> = {
            let state = self.inner.state.lock();
            state.manifest.segments.iter().filter(|s| tables.contains(&s.table)).cloned().collect()
        };
        let damaged = find_damaged(&self.inner.store, segments, false).await;
        if damaged.is_empty() {
            return Ok(0);
        }
        self.quarantine(damaged).await
    }

    /// Moves segments aside and out of the manifest, reporting each by name.
    pub(crate) async fn quarantine(&self, damaged: Vec<(SegmentMeta, String)>) -> Result<usize, StorageError> {
        let _maintenance = self.inner.maintenance.lock().await;
        if let Some(reason) = &self.manifest().root_damaged {
            return Err(StorageError::Manifest(format!("root manifest damaged ({reason}): run `vigil store repair`")));
        }
        let mut manifest = (*self.manifest()).clone();
        let mut moved = Vec::new();
        for (segment, reason) in damaged {
            let (tables, rows) = named_by(&manifest, &segment.path);
            if tables.is_empty() {
                continue; // already gone (compacted or quarantined meanwhile)
            }
            let to = quarantine_path(&self.inner.node_id, &segment.path);
            move_aside(&self.inner.store, &Path::from(segment.path.as_str()), &to).await?;
            crate::series_index::delete(&self.inner.store, &segment.path).await?;
            self.inner.series_indexes.remove(&segment.path);
            error!(
                tables = %tables, segment = %segment.path, rows, moved_to = %to, %reason,
                "segment unreadable: moved aside, its rows are lost to queries"
            );
            metrics::counter!("vigil_storage_segments_quarantined_total").increment(1);
            metrics::counter!("vigil_storage_rows_quarantined_total").increment(rows);
            manifest.segments.retain(|s| s.path != segment.path);
            moved.push((segment.path.clone(), rows, reason));
        }
        let count = moved.len();
        if count > 0 {
            let previous = self.manifest();
            manifest::save(&self.inner.store, &mut manifest, &previous, crate::maintenance::delete_after_ms()).await?;
            let mut state = self.inner.state.lock();
            state.manifest = Arc::new(manifest);
            state.quarantined.extend(moved);
        }
        Ok(count)
    }
}

/// The tables a file holds rows of (comma-separated) and how many rows, per the manifest.
fn named_by(manifest: &Manifest, path: &str) -> (String, u64) {
    let entries: Vec<&SegmentMeta> = manifest.segments.iter().filter(|s| s.path == path).collect();
    let tables: Vec<&str> = entries.iter().map(|s| s.table.as_str()).collect();
    (tables.join(","), entries.iter().map(|s| s.rows).sum())
}

/// One line of a check or a repair.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub what: String,
    pub detail: String,
}

/// What `vigil store check` found, or `vigil store repair` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreReport {
    pub node: String,
    pub segments: usize,
    pub rows: u64,
    pub problems: Vec<Finding>,
    pub actions: Vec<Finding>,
}

/// Checks one node's store: its root, every partition manifest, every segment decoded whole.
pub async fn check(store: &Arc<dyn ObjectStore>, node: &str) -> Result<StoreReport, StorageError> {
    let mut report = StoreReport { node: node.to_string(), ..Default::default() };
    let Some(manifest) = manifest::load_node(store, node, &mut PartitionCache::default()).await? else {
        report.problems.push(Finding {
            what: "no manifest".into(),
            detail: format!("node {node} has no root manifest in this store"),
        });
        return Ok(report);
    };
    describe_damage(&manifest, &mut report);
    report.segments = manifest.segments.len();
    report.rows = manifest.segments.iter().map(|s| s.rows).sum();
    for (segment, reason) in find_damaged(store, manifest.segments.clone(), true).await {
        let (tables, rows) = named_by(&manifest, &segment.path);
        report.problems.push(Finding {
            what: format!("segment {} of {tables}", segment.path),
            detail: format!("{reason} ({rows} rows)"),
        });
    }
    Ok(report)
}

fn describe_damage(manifest: &Manifest, report: &mut StoreReport) {
    if let Some(reason) = &manifest.root_damaged {
        report.problems.push(Finding { what: "root manifest".into(), detail: reason.clone() });
    }
    for partition in &manifest.damaged {
        report.problems.push(Finding {
            what: format!("partition manifest {} ({})", partition.path, partition_name(partition)),
            detail: partition.reason.clone(),
        });
    }
}

/// Repairs one node's store (the node must not be running): partitions whose manifest is
/// lost are rebuilt from their segment files, unreadable segments are moved aside, a
/// damaged root is replaced (kept beside as `manifest.json.damaged-<ms>`), with the WAL
/// persisted through `wal_persisted_through` (the files still in the WAL directory start
/// after it).
pub async fn repair(
    store: &Arc<dyn ObjectStore>,
    node: &str,
    wal_persisted_through: Option<u64>,
) -> Result<StoreReport, StorageError> {
    let mut report = StoreReport { node: node.to_string(), ..Default::default() };
    let Some(mut manifest) = manifest::load_node(store, node, &mut PartitionCache::default()).await? else {
        return Ok(report);
    };
    describe_damage(&manifest, &mut report);

    // Segments of lost partitions, from their files.
    let known: BTreeSet<String> = manifest
        .segments
        .iter()
        .map(|s| s.path.clone())
        .chain(manifest.pending_deletes.iter().map(|d| d.path.clone()))
        .collect();
    for partition in std::mem::take(&mut manifest.damaged) {
        let found = segments_in(store, node, &partition.table, partition.partition_start_ns, &known).await?;
        report.actions.push(Finding {
            what: format!("partition {}", partition_name(&partition)),
            detail: format!(
                "rebuilt from {} segment files ({} rows)",
                found.len(),
                found.iter().map(|s| s.rows).sum::<u64>()
            ),
        });
        manifest.next_segment_id = manifest.next_segment_id.max(found.iter().map(|s| s.id + 1).max().unwrap_or(0));
        manifest.segments.extend(found);
    }

    // Unreadable segments move aside.
    for (segment, reason) in find_damaged(store, manifest.segments.clone(), true).await {
        let to = quarantine_path(node, &segment.path);
        move_aside(store, &Path::from(segment.path.as_str()), &to).await?;
        crate::series_index::delete(store, &segment.path).await?;
        let (tables, rows) = named_by(&manifest, &segment.path);
        manifest.segments.retain(|s| s.path != segment.path);
        report.actions.push(Finding {
            what: format!("segment {} of {tables}", segment.path),
            detail: format!("moved to {to}: {reason}; {rows} rows lost"),
        });
    }

    if let Some(reason) = manifest.root_damaged.take() {
        let root = manifest::node_root(node);
        let aside = Path::from(format!("{root}.damaged-{}", crate::maintenance::now_ns() / 1_000_000));
        move_aside(store, &root, &aside).await?;
        manifest.wal_persisted_through = wal_persisted_through.unwrap_or(0);
        report.actions.push(Finding {
            what: "root manifest".into(),
            detail: format!("rebuilt ({reason}); the damaged one is kept as {aside}"),
        });
    }
    manifest.next_segment_id =
        manifest.next_segment_id.max(manifest.segments.iter().map(|s| s.id + 1).max().unwrap_or(1));
    // Every partition is written anew: the new root names only files that were just read.
    manifest::save(store, &mut manifest, &Manifest::empty(node), crate::maintenance::delete_after_ms()).await?;
    report.segments = manifest.segments.len();
    report.rows = manifest.segments.iter().map(|s| s.rows).sum();
    info!(node, actions = report.actions.len(), "store repaired");
    Ok(report)
}

/// How a partition is named to an operator: its start time, and its table in an older store.
fn partition_name(partition: &DamagedPartition) -> String {
    if partition.table.is_empty() {
        format!("at {}", partition.partition_start_ns)
    } else {
        format!("{} at {}", partition.table, partition.partition_start_ns)
    }
}

/// The segment files of one partition that no manifest names, read back from the files:
/// of one table in an older store (`table` set), else every file of the partition — its
/// shared segments, and the per-table files of fixed tables and of older stores.
async fn segments_in(
    store: &Arc<dyn ObjectStore>,
    node: &str,
    table: &str,
    partition_start_ns: i64,
    known: &BTreeSet<String>,
) -> Result<Vec<SegmentMeta>, StorageError> {
    let partition = partition_start_ns.to_string();
    let mut files = Vec::new();
    if table.is_empty() {
        files.extend(store.list(Some(&shared::partition_dir(node, partition_start_ns))).try_collect::<Vec<_>>().await?);
        let tables: Vec<_> = store.list(Some(&Path::from_iter(["nodes", node, "tables"]))).try_collect().await?;
        // nodes/<node>/tables/<table>/<partition>/<id>.parquet
        files.extend(tables.into_iter().filter(|f| f.location.parts().nth(4).is_some_and(|p| p.as_ref() == partition)));
    } else {
        let dir = Path::from_iter(["nodes", node, "tables", &segment::table_dir(table), &partition]);
        files.extend(store.list(Some(&dir)).try_collect::<Vec<_>>().await?);
    }
    let mut found = Vec::new();
    for file in files {
        let path = file.location.to_string();
        let Some(id) =
            file.location.filename().and_then(|f| f.strip_suffix(".parquet")).and_then(|f| f.parse::<u64>().ok())
        else {
            continue;
        };
        if known.contains(&path) {
            continue;
        }
        match segment_meta_of(store, &file.location, id, table, partition_start_ns).await {
            Ok(metas) => found.extend(metas),
            Err(reason) => warn!(%path, %reason, "a segment file of a lost partition is unreadable; left where it is"),
        }
    }
    Ok(found)
}

/// A segment's manifest entries, from the file itself: one per table it holds. `table`,
/// when set, is the one the file must belong to.
async fn segment_meta_of(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    id: u64,
    table: &str,
    partition_start_ns: i64,
) -> Result<Vec<SegmentMeta>, SegmentDamage> {
    let unreadable = |e: datafusion::object_store::Error| SegmentDamage::Unreadable(e.to_string());
    let bytes = store.get(path).await.map_err(unreadable)?.bytes().await.map_err(unreadable)?;
    let size_bytes = bytes.len() as u64;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| SegmentDamage::Footer(e.to_string()))?;
    let metadata = builder.metadata().clone();
    let schema = builder.schema().clone();
    if schema.column_with_name(shared::TABLE_COLUMN).is_some() {
        let decoding = |e: &dyn std::fmt::Display| SegmentDamage::Decoding(e.to_string());
        let batches = segment::rows(builder).map_err(|e| decoding(&e))?;
        let Some(first) = batches.first() else { return Err(SegmentDamage::Empty) };
        let whole = datafusion::arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| decoding(&e))?;
        return shared::entries(&whole, path, id, partition_start_ns, size_bytes, 1).map_err(|e| decoding(&e));
    }
    let named = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == segment::TABLE_KEY).and_then(|k| k.value.clone()));
    let table = match named {
        Some(named) if !table.is_empty() && named != table => {
            return Err(SegmentDamage::OtherTable(named));
        }
        Some(named) => named,
        None if !table.is_empty() => table.to_string(),
        None => return Err(SegmentDamage::NoTable),
    };
    let table = table.as_str();
    let statistics = DFParquetMetadata::statistics_from_parquet_metadata(&metadata, &schema)
        .map_err(|e| SegmentDamage::Footer(e.to_string()))?;
    let stats = column_stats(&statistics, &schema);
    let time = stats.iter().find(|c| c.name == time_column_of(table));
    let bound = |value: Option<&manifest::StatValue>| match value {
        Some(manifest::StatValue::Int(v)) => Some(*v),
        _ => None,
    };
    let (Some(min_time_ns), Some(max_time_ns)) =
        (bound(time.and_then(|t| t.min.as_ref())), bound(time.and_then(|t| t.max.as_ref())))
    else {
        return Err(SegmentDamage::NoTimeBounds);
    };
    Ok(vec![SegmentMeta {
        id,
        table: table.to_string(),
        path: path.to_string(),
        partition_start_ns,
        min_time_ns,
        max_time_ns,
        rows: u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0),
        size_bytes,
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        level: 1,
        stats,
        shared: None,
    }])
}
