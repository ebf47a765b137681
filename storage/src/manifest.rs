//! Manifests: which Parquet segments are live, with their statistics, and how far the WAL
//! has been persisted.
//!
//! Layout in the object store, one directory per node so that every file has one writer:
//!
//! ```text
//! nodes/<node>/manifest.json                               the node's root: the commit point
//! nodes/<node>/partitions/<partition>/<generation>.json    one per time partition
//! nodes/<node>/segments/<partition>/<id>.parquet           shared segments (every metric table)
//! nodes/<node>/tables/<table>/<partition>/<id>.parquet     segments of one table (fixed tables,
//!                                                          and metric tables of older stores)
//! ```
//!
//! A partition manifest lists its segments (one entry per table in a shared file, with the
//! table's run of rows) with row counts, time bounds and min/max/null count per column; it
//! is never changed once written: a flush or compaction writes a new
//! generation of the partitions it touched and then replaces the root, which names the
//! current generation of every partition (an object-store `put` is atomic). So a reader
//! sees a whole flush or none of it, a flush rewrites only what it touched, and a query
//! lists no directory: it prunes partitions by the root's bounds and segments by theirs.
//! A segment or partition file no root names (a crash between writes) is never read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::store::{get_json, to_json};

/// The single manifest of stores written before nodes had their own directory.
pub const LEGACY_MANIFEST_PATH: &str = "manifest.json";
/// Partition manifests fetched at once while loading a node.
const LOAD_CONCURRENCY: usize = 16;

pub fn node_root(node: &str) -> Path {
    Path::from_iter(["nodes", node, "manifest.json"])
}

fn partition_manifest_path(node: &str, partition_start_ns: i64, generation: u64) -> Path {
    Path::from_iter(["nodes", node, "partitions", &partition_start_ns.to_string(), &format!("{generation:016}.json")])
}

/// The key of a partition manifest: the time partition. Stores written before shared
/// segments had one manifest per table and partition (`table` not empty); the next save
/// replaces them with one per partition.
type PartitionKey = (String, i64);

fn partition_key(segment: &SegmentMeta) -> PartitionKey {
    (String::new(), segment.partition_start_ns)
}

/// One node's live segments, in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    pub node: String,
    pub next_segment_id: u64,
    /// WAL files with this sequence or lower are fully contained in segments.
    pub wal_persisted_through: u64,
    pub segments: Vec<SegmentMeta>,
    /// Files replaced by compaction or expired by retention, deleted once no query can still
    /// be reading them.
    pub pending_deletes: Vec<PendingDelete>,
    next_generation: u64,
    /// The partition manifest file currently naming each partition's segments.
    partition_files: BTreeMap<PartitionKey, String>,
    /// Partitions whose manifest could not be read: their segments are not served until
    /// `vigil store repair` rebuilds them. Kept in the root until then.
    pub damaged: Vec<DamagedPartition>,
    /// Why the root itself could not be read, when it could not: the manifest was rebuilt
    /// from the partition manifests in the store, and nothing is written until a repair.
    pub root_damaged: Option<String>,
}

/// A partition whose manifest is missing or unreadable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DamagedPartition {
    /// Empty for a manifest of all tables (the table of an older store's manifest).
    #[serde(default)]
    pub table: String,
    pub partition_start_ns: i64,
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub table: String,
    pub path: String,
    pub partition_start_ns: i64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub rows: u64,
    pub size_bytes: u64,
    /// Column names; for metric tables they give the table's schema without opening files.
    pub columns: Vec<String>,
    /// 0 for a flushed segment, 1 and up for compaction outputs.
    pub level: u32,
    /// Exact statistics per column, where Parquet had them (absent in old manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<ColumnStats>,
    /// In a shared segment, where this table's rows are; `None`: the file is the table's own.
    /// Entries of one shared file share its id, path and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<crate::shared::SharedRows>,
}

impl SegmentMeta {
    /// Rows of the whole file (a shared file holds other tables' too).
    pub fn file_rows(&self) -> u64 {
        self.shared.map_or(self.rows, |s| s.file_rows)
    }
}

/// Null count and exact bounds of one column of one segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    pub name: String,
    pub nulls: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<StatValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<StatValue>,
}

/// A bound as JSON: timestamps and integers as integers, floats as floats, labels as text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl StatValue {
    fn from_scalar(value: &ScalarValue) -> Option<StatValue> {
        match value {
            ScalarValue::Dictionary(_, inner) => StatValue::from_scalar(inner),
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                Some(StatValue::Text(s.clone()))
            }
            ScalarValue::Float64(Some(v)) if v.is_finite() => Some(StatValue::Float(*v)),
            ScalarValue::Decimal64(Some(mantissa), _, scale) => {
                Some(StatValue::Float(crate::decimal_values::decimal_to_f64(*mantissa, *scale)))
            }
            ScalarValue::Int64(Some(v)) | ScalarValue::TimestampNanosecond(Some(v), _) => Some(StatValue::Int(*v)),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok().map(StatValue::Int),
            ScalarValue::Int32(Some(v)) => Some(StatValue::Int(i64::from(*v))),
            _ => None,
        }
    }

    /// The value as a scalar of `data_type`, when the two agree.
    fn to_scalar(&self, data_type: &DataType) -> Option<ScalarValue> {
        Some(match (self, data_type) {
            (StatValue::Text(s), DataType::Dictionary(key, value)) if value.as_ref() == &DataType::Utf8 => {
                ScalarValue::Dictionary(key.clone(), Box::new(ScalarValue::Utf8(Some(s.clone()))))
            }
            (StatValue::Text(s), DataType::Utf8) => ScalarValue::Utf8(Some(s.clone())),
            (StatValue::Float(v), DataType::Float64) => ScalarValue::Float64(Some(*v)),
            (StatValue::Int(v), DataType::Float64) => ScalarValue::Float64(Some(*v as f64)),
            (StatValue::Int(v), DataType::Int64) => ScalarValue::Int64(Some(*v)),
            (StatValue::Int(v), DataType::UInt64) => ScalarValue::UInt64(Some(u64::try_from(*v).ok()?)),
            (StatValue::Int(v), DataType::Int32) => ScalarValue::Int32(Some(i32::try_from(*v).ok()?)),
            (StatValue::Int(v), DataType::Timestamp(TimeUnit::Nanosecond, zone)) => {
                ScalarValue::TimestampNanosecond(Some(*v), zone.clone())
            }
            _ => return None,
        })
    }

    fn partial_cmp(&self, other: &StatValue) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (StatValue::Int(a), StatValue::Int(b)) => Some(a.cmp(b)),
            (StatValue::Float(a), StatValue::Float(b)) => a.partial_cmp(b),
            (StatValue::Text(a), StatValue::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Per-column statistics of a written segment, from the metadata Parquet wrote: only exact
/// bounds are kept.
pub fn column_stats(statistics: &Statistics, schema: &Schema) -> Vec<ColumnStats> {
    schema
        .fields()
        .iter()
        .zip(&statistics.column_statistics)
        .map(|(field, column)| {
            let exact = |p: &Precision<ScalarValue>| match p {
                Precision::Exact(v) => StatValue::from_scalar(v),
                _ => None,
            };
            ColumnStats {
                name: field.name().clone(),
                nulls: match column.null_count {
                    Precision::Exact(n) => n as u64,
                    _ => u64::MAX,
                },
                min: exact(&column.min_value),
                max: exact(&column.max_value),
            }
        })
        .filter(|c| c.nulls != u64::MAX)
        .collect()
}

/// Exact statistics of a set of whole segments in `schema`: row count always, and per column
/// what every segment knows. A column a segment lacks is all nulls there.
pub fn table_statistics<'a>(segments: impl IntoIterator<Item = &'a SegmentMeta>, schema: &Schema) -> Statistics {
    let segments: Vec<&SegmentMeta> = segments.into_iter().collect();
    let rows: u64 = segments.iter().map(|s| s.rows).sum();
    let column = |field: &Field| -> ColumnStatistics {
        let mut nulls = 0u64;
        let (mut min, mut max): (Option<StatValue>, Option<StatValue>) = (None, None);
        for segment in &segments {
            if !segment.columns.iter().any(|c| c == field.name()) {
                nulls += segment.rows;
                continue;
            }
            let Some(stats) = segment.stats.iter().find(|c| c.name == *field.name()) else {
                return ColumnStatistics::new_unknown();
            };
            nulls += stats.nulls;
            if stats.nulls == segment.rows {
                continue;
            }
            let (Some(lo), Some(hi)) = (&stats.min, &stats.max) else {
                return ColumnStatistics::new_unknown();
            };
            match min.as_ref().map(|m| lo.partial_cmp(m)) {
                None => min = Some(lo.clone()),
                Some(Some(std::cmp::Ordering::Less)) => min = Some(lo.clone()),
                Some(Some(_)) => {}
                Some(None) => return ColumnStatistics::new_unknown(),
            }
            match max.as_ref().map(|m| hi.partial_cmp(m)) {
                None => max = Some(hi.clone()),
                Some(Some(std::cmp::Ordering::Greater)) => max = Some(hi.clone()),
                Some(Some(_)) => {}
                Some(None) => return ColumnStatistics::new_unknown(),
            }
        }
        let bound = |v: Option<StatValue>| {
            v.and_then(|v| v.to_scalar(field.data_type())).map_or(Precision::Absent, Precision::Exact)
        };
        let mut out = ColumnStatistics::new_unknown();
        out.null_count = Precision::Exact(nulls as usize);
        out.min_value = bound(min);
        out.max_value = bound(max);
        out
    };
    let mut statistics = Statistics::new_unknown(schema);
    statistics.num_rows = Precision::Exact(rows as usize);
    statistics.total_byte_size = Precision::Inexact(segments.iter().map(|s| s.size_bytes as usize).sum());
    statistics.column_statistics = schema.fields().iter().map(|f| column(f)).collect();
    statistics
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingDelete {
    pub path: String,
    pub not_before_unix_ms: i64,
}

/// The root file of a node.
#[derive(Debug, Serialize, Deserialize)]
struct Root {
    version: u32,
    node: String,
    next_segment_id: u64,
    next_generation: u64,
    wal_persisted_through: u64,
    partitions: Vec<PartitionEntry>,
    #[serde(default)]
    pending_deletes: Vec<PendingDelete>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    damaged_partitions: Vec<DamagedPartition>,
}

/// A partition as the root names it: enough to prune it without reading its manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartitionEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    table: String,
    partition_start_ns: i64,
    path: String,
    segments: usize,
    rows: u64,
    min_time_ns: i64,
    max_time_ns: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PartitionManifest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table: String,
    pub partition_start_ns: i64,
    pub segments: Vec<SegmentMeta>,
}

/// The manifest of stores from before per-node layout.
#[derive(Deserialize)]
struct LegacyManifest {
    next_segment_id: u64,
    wal_persisted_through: u64,
    segments: Vec<SegmentMeta>,
    #[serde(default)]
    pending_deletes: Vec<PendingDelete>,
}

impl Manifest {
    pub fn empty(node: &str) -> Manifest {
        Manifest { node: node.to_string(), next_segment_id: 1, next_generation: 1, ..Manifest::default() }
    }

    pub fn segments_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a SegmentMeta> + 'a {
        self.segments.iter().filter(move |s| s.table == table)
    }

    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.table.as_str())
    }

    /// True when some partition manifest is an older store's, of one table: the next save
    /// writes one per partition instead.
    pub fn has_table_partitions(&self) -> bool {
        self.partition_files.keys().any(|(table, _)| !table.is_empty())
    }

    fn partition_keys(&self) -> BTreeMap<PartitionKey, Vec<(u64, String)>> {
        let mut keys: BTreeMap<PartitionKey, Vec<(u64, String)>> = BTreeMap::new();
        for s in &self.segments {
            keys.entry(partition_key(s)).or_default().push((s.id, s.table.clone()));
        }
        for ids in keys.values_mut() {
            ids.sort_unstable();
        }
        keys
    }
}

/// Partition manifests already read, by path: they never change once written.
#[derive(Default)]
pub struct PartitionCache(HashMap<String, Arc<Vec<SegmentMeta>>>);

impl PartitionCache {
    /// Forgets the partition manifests none of `manifests` names any more.
    pub fn retain_named<'a>(&mut self, manifests: impl IntoIterator<Item = &'a Manifest>) {
        let live: std::collections::HashSet<&str> =
            manifests.into_iter().flat_map(|m| m.partition_files.values().map(String::as_str)).collect();
        self.0.retain(|path, _| live.contains(path.as_str()));
    }
}

/// Loads a node's manifest; `None` when the node has none yet. `cache` spares re-reading
/// partition manifests seen before (other nodes are reloaded often); it is shared by all
/// nodes loaded, so it is pruned by the caller once all are ([`PartitionCache::retain_named`]).
pub async fn load_node(
    store: &Arc<dyn ObjectStore>,
    node: &str,
    cache: &mut PartitionCache,
) -> Result<Option<Manifest>, StorageError> {
    let root = match get_json::<Root>(store, &node_root(node)).await {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(None),
        Err(StorageError::Manifest(reason)) => return rebuild_root(store, node, reason, cache).await.map(Some),
        Err(e) => return Err(e),
    };
    let missing: Vec<String> =
        root.partitions.iter().map(|p| p.path.clone()).filter(|p| !cache.0.contains_key(p)).collect();
    // A partition manifest that is gone or damaged costs its partition, never the node.
    let fetched: Vec<(String, Result<PartitionManifest, String>)> = futures::stream::iter(missing)
        .map(|path| async move {
            let object = Path::from(path.as_str());
            let manifest = match get_json::<PartitionManifest>(store, &object).await {
                Ok(Some(manifest)) => Ok(manifest),
                Ok(None) => Err("named by the root but missing".to_string()),
                Err(StorageError::Manifest(reason)) => Err(reason),
                Err(e) => return Err(e),
            };
            Ok::<_, StorageError>((path, manifest))
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect()
        .await?;
    let mut unreadable: HashMap<String, String> = HashMap::new();
    for (path, partition) in fetched {
        match partition {
            Ok(partition) => {
                cache.0.insert(path, Arc::new(partition.segments));
            }
            Err(reason) => {
                unreadable.insert(path, reason);
            }
        }
    }
    let mut manifest = Manifest {
        node: root.node,
        next_segment_id: root.next_segment_id,
        wal_persisted_through: root.wal_persisted_through,
        segments: Vec::new(),
        pending_deletes: root.pending_deletes,
        next_generation: root.next_generation,
        partition_files: BTreeMap::new(),
        damaged: root.damaged_partitions,
        root_damaged: None,
    };
    for entry in &root.partitions {
        if let Some(reason) = unreadable.remove(&entry.path) {
            tracing::error!(
                node, table = %entry.table, partition = entry.partition_start_ns, path = %entry.path, %reason,
                "partition manifest unreadable: its {} segments ({} rows) are not served; run `vigil store repair`",
                entry.segments, entry.rows
            );
            manifest.damaged.push(DamagedPartition {
                table: entry.table.clone(),
                partition_start_ns: entry.partition_start_ns,
                path: entry.path.clone(),
                reason,
            });
            continue;
        }
        if let Some(segments) = cache.0.get(&entry.path) {
            manifest.segments.extend(segments.iter().cloned());
        }
        manifest.partition_files.insert((entry.table.clone(), entry.partition_start_ns), entry.path.clone());
    }
    manifest.damaged.dedup_by(|a, b| a.path == b.path);
    Ok(Some(manifest))
}

/// A node's manifest made from its partition manifests when its root cannot be read: the
/// newest readable generation of each partition. Marked `root_damaged`, so that nothing is
/// written over the store until `vigil store repair` has looked at it.
pub(crate) async fn rebuild_root(
    store: &Arc<dyn ObjectStore>,
    node: &str,
    reason: String,
    cache: &mut PartitionCache,
) -> Result<Manifest, StorageError> {
    tracing::error!(node, %reason, "the root manifest is unreadable: serving what the partition manifests name, writing nothing; run `vigil store repair`");
    let prefix = Path::from_iter(["nodes", node, "partitions"]);
    let mut newest: BTreeMap<String, Vec<(u64, Path)>> = BTreeMap::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(object) = listing.try_next().await? {
        let location = object.location;
        let parts: Vec<String> = location.parts().map(|p| p.as_ref().to_string()).collect();
        // Generations of one partition share a directory (`<partition>/`, or `<table>/<partition>/`
        // in an older store).
        let Some((file, directory)) = parts.split_last() else { continue };
        let Some(generation) = file.strip_suffix(".json").and_then(|g| g.parse::<u64>().ok()) else { continue };
        newest.entry(directory.join("/")).or_default().push((generation, location.clone()));
    }
    let mut manifest = Manifest::empty(node);
    manifest.root_damaged = Some(reason);
    // The lost root's list of files to delete is rebuilt too: the generations older than the
    // one read, oldest first, and the one read when it is empty (it hides the older ones, so
    // it goes last). Unreadable newer ones stay for a human to look at.
    let not_before_unix_ms = crate::maintenance::delete_after_ms();
    for (_, mut generations) in newest {
        generations.sort_by_key(|g| std::cmp::Reverse(g.0));
        manifest.next_generation = manifest.next_generation.max(generations[0].0 + 1);
        let mut read = None;
        for (i, (_, path)) in generations.iter().enumerate() {
            if let Ok(Some(partition)) = get_json::<PartitionManifest>(store, path).await {
                let empty = partition.segments.is_empty();
                if !empty {
                    manifest
                        .partition_files
                        .insert((partition.table.clone(), partition.partition_start_ns), path.to_string());
                    cache.0.insert(path.to_string(), Arc::new(partition.segments.clone()));
                    manifest.segments.extend(partition.segments);
                }
                read = Some((i, empty));
                break;
            }
        }
        let Some((read, empty)) = read else { continue };
        let first_doomed = if empty { read } else { read + 1 };
        manifest.pending_deletes.extend(
            generations[first_doomed..]
                .iter()
                .rev()
                .map(|(_, path)| PendingDelete { path: path.to_string(), not_before_unix_ms }),
        );
    }
    manifest.next_segment_id = manifest.segments.iter().map(|s| s.id + 1).max().unwrap_or(1).max(1);
    Ok(manifest)
}

/// Loads this node's manifest: its own, or one made from a store of the single-manifest
/// layout (its segments keep their paths; `true` = migrated, save it), or an empty one.
pub async fn load_own(store: &Arc<dyn ObjectStore>, node: &str) -> Result<(Manifest, bool), StorageError> {
    if let Some(manifest) = load_node(store, node, &mut PartitionCache::default()).await? {
        return Ok((manifest, false));
    }
    let legacy_path = Path::from(LEGACY_MANIFEST_PATH);
    if let Some(legacy) = get_json::<LegacyManifest>(store, &legacy_path).await? {
        let mut manifest = Manifest::empty(node);
        manifest.next_segment_id = legacy.next_segment_id.max(1);
        manifest.wal_persisted_through = legacy.wal_persisted_through;
        manifest.segments = legacy.segments;
        manifest.pending_deletes = legacy.pending_deletes;
        return Ok((manifest, true));
    }
    Ok((Manifest::empty(node), false))
}

/// Writes a new generation of every partition whose segments changed since `previous`, then
/// the root. Replaced partition manifests are scheduled for deletion at `delete_after_ms`.
pub async fn save(
    store: &Arc<dyn ObjectStore>,
    manifest: &mut Manifest,
    previous: &Manifest,
    delete_after_ms: i64,
) -> Result<(), StorageError> {
    if let Some(reason) = &manifest.root_damaged {
        return Err(StorageError::Manifest(format!(
            "the root manifest of node {} is damaged ({reason}); nothing is written until `vigil store repair`",
            manifest.node
        )));
    }
    let before = previous.partition_keys();
    let after = manifest.partition_keys();
    let mut by_key: BTreeMap<PartitionKey, Vec<&SegmentMeta>> = BTreeMap::new();
    for s in &manifest.segments {
        by_key.entry(partition_key(s)).or_default().push(s);
    }
    let mut writes = Vec::new();
    let mut replaced = Vec::new();
    for (key, ids) in &after {
        if before.get(key) == Some(ids) && manifest.partition_files.contains_key(key) {
            continue;
        }
        let generation = manifest.next_generation;
        manifest.next_generation += 1;
        let path = partition_manifest_path(&manifest.node, key.1, generation);
        let body = PartitionManifest {
            table: key.0.clone(),
            partition_start_ns: key.1,
            segments: by_key.get(key).map(|s| s.iter().map(|s| (*s).clone()).collect()).unwrap_or_default(),
        };
        let json = to_json(&body)?;
        writes.push((path.clone(), json));
        if let Some(old) = manifest.partition_files.insert(key.clone(), path.to_string()) {
            replaced.push(old);
        }
    }
    let gone: Vec<PartitionKey> =
        manifest.partition_files.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    // A damaged partition is no partition_files key: its record stays in the root as it is.
    // A partition left without segments gets an empty generation: its last one stays on disk
    // through the grace period, and a root rebuilt from the newest generations (after damage)
    // must not serve it again. The empty one is deleted last, after the ones it hides.
    let mut emptied = Vec::new();
    for key in gone {
        if let Some(old) = manifest.partition_files.remove(&key) {
            replaced.push(old);
            let generation = manifest.next_generation;
            manifest.next_generation += 1;
            let path = partition_manifest_path(&manifest.node, key.1, generation);
            let body = PartitionManifest { table: String::new(), partition_start_ns: key.1, segments: Vec::new() };
            writes.push((path.clone(), to_json(&body)?));
            emptied.push(path.to_string());
        }
    }
    futures::stream::iter(writes)
        .map(|(path, json)| async move { store.put(&path, PutPayload::from(json)).await })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    manifest
        .pending_deletes
        .extend(replaced.into_iter().map(|path| PendingDelete { path, not_before_unix_ms: delete_after_ms }));
    manifest
        .pending_deletes
        .extend(emptied.into_iter().map(|path| PendingDelete { path, not_before_unix_ms: delete_after_ms + 1 }));

    let partitions = manifest
        .partition_files
        .iter()
        .map(|((table, partition), path)| {
            let segments: Vec<&&SegmentMeta> =
                by_key.get(&(table.clone(), *partition)).map(|v| v.iter().collect()).unwrap_or_default();
            PartitionEntry {
                table: table.clone(),
                partition_start_ns: *partition,
                path: path.clone(),
                segments: segments.len(),
                rows: segments.iter().map(|s| s.rows).sum(),
                min_time_ns: segments.iter().map(|s| s.min_time_ns).min().unwrap_or(i64::MAX),
                max_time_ns: segments.iter().map(|s| s.max_time_ns).max().unwrap_or(i64::MIN),
            }
        })
        .collect();
    let root = Root {
        version: 3,
        node: manifest.node.clone(),
        next_segment_id: manifest.next_segment_id,
        next_generation: manifest.next_generation,
        wal_persisted_through: manifest.wal_persisted_through,
        partitions,
        pending_deletes: manifest.pending_deletes.clone(),
        damaged_partitions: manifest.damaged.clone(),
    };
    let json = to_json(&root)?;
    store.put(&node_root(&manifest.node), PutPayload::from(json)).await?;
    Ok(())
}

/// The nodes that have a directory in the store.
pub async fn list_nodes(store: &Arc<dyn ObjectStore>) -> Result<Vec<String>, StorageError> {
    let listing = store.list_with_delimiter(Some(&Path::from("nodes"))).await?;
    Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::memory::InMemory;

    fn segment(id: u64, table: &str, partition: i64, rows: u64) -> SegmentMeta {
        SegmentMeta {
            id,
            table: table.into(),
            path: format!("nodes/a/tables/{table}/{partition}/{id}.parquet"),
            partition_start_ns: partition,
            min_time_ns: partition,
            max_time_ns: partition + 10,
            rows,
            size_bytes: 100,
            columns: vec!["job".into(), "timestamp".into(), "value".into()],
            level: 0,
            stats: vec![ColumnStats {
                name: "job".into(),
                nulls: 0,
                min: Some(StatValue::Text(format!("j{id}"))),
                max: Some(StatValue::Text(format!("k{id}"))),
            }],
            shared: None,
        }
    }

    #[tokio::test]
    async fn saves_only_changed_partitions_and_loads_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut first = Manifest::empty("a");
        first.segments = vec![segment(1, "m", 0, 5), segment(2, "n", 7200, 7)];
        first.next_segment_id = 3;
        save(&store, &mut first, &Manifest::empty("a"), 0).await.unwrap();
        let files_after_first = first.partition_files.clone();
        let key = |partition: i64| (String::new(), partition);

        let mut second = first.clone();
        second.segments.push(segment(3, "m", 0, 1));
        second.next_segment_id = 4;
        save(&store, &mut second, &first, 42).await.unwrap();
        // Only partition 0 got a new generation; its old file waits for deletion.
        assert_eq!(second.partition_files[&key(7200)], files_after_first[&key(7200)]);
        assert_ne!(second.partition_files[&key(0)], files_after_first[&key(0)]);
        assert_eq!(
            second.pending_deletes,
            vec![PendingDelete { path: files_after_first[&key(0)].clone(), not_before_unix_ms: 42 }]
        );

        let mut cache = PartitionCache::default();
        let loaded = load_node(&store, "a", &mut cache).await.unwrap().unwrap();
        let mut ids: Vec<u64> = loaded.segments.iter().map(|s| s.id).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(loaded.next_segment_id, 4);
        assert_eq!(loaded.segments.iter().find(|s| s.id == 3).unwrap().stats, segment(3, "m", 0, 1).stats);
        assert_eq!(list_nodes(&store).await.unwrap(), vec!["a".to_string()]);
    }

    #[tokio::test]
    async fn one_cache_keeps_every_peers_partitions() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for node in ["a", "b"] {
            let mut manifest = Manifest::empty(node);
            manifest.segments = vec![segment(1, "m", 0, 5), segment(2, "m", 7200, 5)];
            save(&store, &mut manifest, &Manifest::empty(node), 0).await.unwrap();
        }
        let mut cache = PartitionCache::default();
        let a = load_node(&store, "a", &mut cache).await.unwrap().unwrap();
        let b = load_node(&store, "b", &mut cache).await.unwrap().unwrap();
        cache.retain_named([&a, &b]);
        assert_eq!(cache.0.len(), 4, "a's partitions stay cached after b was loaded");
        cache.retain_named([&b]);
        assert_eq!(cache.0.len(), 2, "a gone: its partitions are forgotten");
    }

    #[test]
    fn statistics_combine_segments_and_fill_missing_columns_with_nulls() {
        let schema =
            Schema::new(vec![Field::new("instance", DataType::Utf8, true), Field::new("job", DataType::Utf8, true)]);
        let stats = table_statistics([&segment(1, "m", 0, 5), &segment(2, "m", 0, 7)], &schema);
        assert_eq!(stats.num_rows, Precision::Exact(12));
        assert_eq!(stats.column_statistics[0].null_count, Precision::Exact(12));
        assert_eq!(stats.column_statistics[1].min_value, Precision::Exact(ScalarValue::Utf8(Some("j1".into()))));
        assert_eq!(stats.column_statistics[1].max_value, Precision::Exact(ScalarValue::Utf8(Some("k2".into()))));
        let mut unknown = segment(3, "m", 0, 1);
        unknown.stats.clear();
        let stats = table_statistics([&segment(1, "m", 0, 5), &unknown], &schema);
        assert_eq!(stats.column_statistics[1].min_value, Precision::Absent);
        assert_eq!(stats.num_rows, Precision::Exact(6));
    }
}
