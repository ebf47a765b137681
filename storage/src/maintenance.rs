//! Background work on segments: flush the buffer to Parquet, compact a partition's segments
//! into one, drop segments past retention, delete replaced files after a grace period.
//! The manifest has one writer at a time (the maintenance lock). A compaction holds it only
//! to choose its merges and to publish them: the merges themselves run beside flushes, which
//! would otherwise wait a whole window's merge, and publish onto what was published meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::object_store::ObjectStoreExt;
use datafusion::object_store::path::Path;
use tracing::{debug, info, warn};

use crate::buffer::{self, time_values};
use crate::manifest::{self, Manifest, PendingDelete, SegmentMeta};
use crate::schema::{FixedTable, time_column_of};
use crate::wal::{WalError, codec};
use crate::{Storage, StorageError, WriteBatch, decimal_values, merge, merge_slices, segment, series_index, shared};

/// Replaced segment files stay this long, for queries that planned with them.
const DELETE_GRACE: Duration = Duration::from_secs(600);
/// How often compaction, retention and deletions run.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// Partitions compacted per pass at most, so one pass stays short.
const MAX_COMPACTIONS_PER_PASS: usize = 16;
/// Segment ids reserved for one merge, taken when it is chosen. Its files must be newer than
/// its inputs and older than any file flushed while it runs (a later file's rows win over a
/// merged copy of older ones), and how many files it writes is known only once it has read
/// its inputs (a file per slice of series and scale group, or per table where a shared file
/// cannot be written). Ids are 64-bit: a million a merge lasts thousands of years of passes.
const MERGE_IDS: u64 = 1 << 20;

pub(crate) fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// What writing segments came to: the entries written, the tables that could not be
/// written (with why), and the id the next file takes (below `end_id`).
struct Written {
    next_id: u64,
    end_id: u64,
    entries: Vec<SegmentMeta>,
    kept_back: Vec<(String, StorageError)>,
}

impl Written {
    fn starting_at(next_id: u64) -> Written {
        Written::within(next_id..u64::MAX)
    }

    /// Files whose ids are taken from `ids` (a merge's reserved block).
    fn within(ids: std::ops::Range<u64>) -> Written {
        Written { next_id: ids.start, end_id: ids.end, entries: Vec::new(), kept_back: Vec::new() }
    }

    fn take_id(&mut self) -> Result<u64, StorageError> {
        if self.next_id >= self.end_id {
            return Err(StorageError::Internal(format!("a merge writes at most {MERGE_IDS} files")));
        }
        self.next_id += 1;
        Ok(self.next_id - 1)
    }
}

/// What a flush wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistSummary {
    pub segments: usize,
    pub rows: u64,
    pub bytes: u64,
}

impl Storage {
    /// Flushes the write buffer to Parquet segments now. A flush that fails keeps its data
    /// in memory (and in the WAL) and is retried by the next call.
    pub async fn persist(&self) -> Result<PersistSummary, StorageError> {
        let mut maintenance = self.inner.maintenance.lock().await;
        self.refuse_if_root_damaged()?;
        let (generation, rotation) = {
            let mut state = self.inner.state.lock();
            match &state.persisting {
                Some(generation) => (generation.clone(), None),
                None if state.active.is_empty() => return Ok(PersistSummary::default()),
                None => {
                    // Rotating under the state lock ties WAL files to buffer generations:
                    // every record of this generation is in a file up to the closed one.
                    let rotation = self.inner.wal.rotate()?;
                    let generation = Arc::new(std::mem::take(&mut state.active));
                    state.persisting = Some(generation.clone());
                    (generation, Some(rotation))
                }
            }
        };
        if let Some(rotation) = rotation {
            maintenance.wal_through = match rotation.await {
                Ok(Ok(seq)) => Some(seq),
                Ok(Err(e)) => {
                    warn!(error = %e, "WAL rotation failed; its files stay until a later flush");
                    None
                }
                Err(_) => None,
            };
        }

        let partition_ns = self.inner.options.partition_ns();
        let tables = {
            let generation = generation.clone();
            tokio::task::spawn_blocking(move || buffer::partitioned_batches(&generation, partition_ns))
                .await
                .map_err(|e| StorageError::Internal(e.to_string()))?
        };
        let current = self.manifest();
        // A table that cannot be written must not hold back the others: it is kept back
        // (below) and the rest is published.
        let mut out = Written::starting_at(current.next_segment_id.max(maintenance.ids_reserved_through));
        // Metric tables share one file per partition; fixed tables keep their own.
        let mut metric_parts: BTreeMap<i64, Vec<(String, RecordBatch)>> = BTreeMap::new();
        for (table, parts) in tables {
            if maintenance.carried_tables.contains(&table) {
                continue; // kept back by an earlier try of this generation, logged again already
            }
            let parts = match parts {
                Ok(parts) => parts,
                Err(error) => {
                    out.kept_back.push((table, error.into()));
                    continue;
                }
            };
            if FixedTable::from_name(&table).is_some() {
                for (partition, batch) in parts {
                    self.write_apart(partition, 0, vec![(table.clone(), batch)], &mut out).await;
                }
            } else {
                for (partition, batch) in parts {
                    metric_parts.entry(partition).or_default().push((table.clone(), batch));
                }
            }
        }
        for (partition, tables) in metric_parts {
            self.write_shared_or_apart(partition, 0, tables, &mut out).await;
        }
        // A table kept back anywhere is kept back whole: what of it was written is named by
        // no manifest, so never read (compaction copies only the rows the manifest names).
        let Written { next_id, entries: mut written, mut kept_back, .. } = out;
        let mut seen = std::collections::HashSet::new();
        kept_back.retain(|(table, _)| seen.insert(table.clone()));
        written.retain(|meta| !seen.contains(&meta.table));
        let mut summary = PersistSummary::default();
        let mut files = std::collections::HashSet::new();
        for meta in &written {
            summary.rows += meta.rows;
            if files.insert(meta.path.as_str()) {
                summary.segments += 1;
                summary.bytes += meta.size_bytes;
            }
        }
        if written.is_empty() && !kept_back.is_empty() && maintenance.carried_tables.is_empty() {
            // Nothing could be written (the store is down, the disk full, or every table was
            // refused): the generation goes back under the next one, whose flush tries it
            // again. The WAL mark does not move, so the WAL keeps every record, each once.
            let (table, error) = kept_back.swap_remove(0);
            warn!(table = %table, error = %error, tables = kept_back.len() + 1, "flush wrote nothing; its rows stay in memory and in the WAL");
            let returned = {
                let generation = generation.clone();
                tokio::task::spawn_blocking(move || generation.to_batch())
                    .await
                    .map_err(|e| StorageError::Internal(e.to_string()))?
            };
            let mut state = self.inner.state.lock();
            state.active.apply_older(&returned);
            state.persisting = None;
            maintenance.wal_through = None;
            return Err(error);
        }
        // Some tables were written, so the WAL mark moves past this generation's files: the
        // tables that were not are logged again first.
        let carried = self.keep_back(&generation, &kept_back).await?;
        maintenance.carried_tables.extend(kept_back.into_iter().map(|(table, _)| table));
        maintenance.carried_rows.metrics.extend(carried.metrics);
        maintenance.carried_rows.rows.extend(carried.rows);

        let mut manifest = (*current).clone();
        manifest.segments.extend(written);
        manifest.next_segment_id = next_id;
        if let Some(seq) = maintenance.wal_through {
            manifest.wal_persisted_through = manifest.wal_persisted_through.max(seq);
        }
        manifest::save(&self.inner.store, &mut manifest, &current, delete_after_ms()).await?;
        let carried = std::mem::take(&mut maintenance.carried_rows);
        maintenance.carried_tables.clear();
        {
            let mut state = self.inner.state.lock();
            state.manifest = Arc::new(manifest);
            state.persisting = None;
            // In the same critical section as the generation is retired: a query sees the
            // kept-back rows in one place or the other, never in both or neither.
            state.active.apply_older(&carried);
        }
        if let Some(seq) = maintenance.wal_through.take() {
            self.inner.wal.remove_through(seq)?;
        }
        metrics::counter!("vigil_storage_flushes_total").increment(1);
        metrics::counter!("vigil_storage_rows_flushed_total").increment(summary.rows);
        debug!(segments = summary.segments, rows = summary.rows, bytes = summary.bytes, "flushed");
        Ok(summary)
    }

    /// With a damaged root nothing is written (the data stays in the WAL) until a repair.
    fn refuse_if_root_damaged(&self) -> Result<(), StorageError> {
        match &self.manifest().root_damaged {
            Some(reason) => Err(StorageError::Manifest(format!(
                "the root manifest is damaged ({reason}): nothing is flushed until `vigil store repair`; the WAL keeps every write"
            ))),
            None => Ok(()),
        }
    }

    /// Carries the tables a flush could not write into the next generation: their rows are
    /// logged again (a new WAL record, durable before the old files may go) and stay
    /// queryable in memory, and each table is reported by name with the reason.
    async fn keep_back(
        &self,
        generation: &buffer::WriteBuffer,
        tables: &[(String, StorageError)],
    ) -> Result<WriteBatch, StorageError> {
        let mut carried = WriteBatch::default();
        for (table, error) in tables {
            let rows = generation.table_batch(table);
            warn!(
                table = %table,
                rows = rows.sample_count() + rows.row_count(),
                error = %error,
                "table could not be flushed; its rows stay in memory and in the WAL and the next flush tries again"
            );
            metrics::counter!("vigil_storage_table_flush_failures_total").increment(1);
            carried.metrics.extend(rows.metrics);
            carried.rows.extend(rows.rows);
        }
        let rows = carried.sample_count() + carried.row_count();
        metrics::gauge!("vigil_storage_kept_back_tables").set(tables.len() as f64);
        metrics::gauge!("vigil_storage_kept_back_rows").set(rows as f64);
        if !carried.is_empty() {
            let durable = self.inner.wal.append(codec::encode(&carried)?)?;
            durable.await.map_err(|_| WalError::Closed)??;
        }
        Ok(carried)
    }

    /// Writes metric tables of one partition as shared segments, tables of like decimal
    /// scale together (see [`decimal_values::split_by_scale`]). A shared file that cannot
    /// be written is written again one file per table, so one table the store refuses
    /// (or one too big for a single object) holds back only itself.
    async fn write_shared_or_apart(
        &self,
        partition: i64,
        level: u32,
        tables: Vec<(String, RecordBatch)>,
        out: &mut Written,
    ) {
        let packed: Result<Vec<Vec<_>>, _> =
            decimal_values::split_by_scale(tables.clone()).into_iter().map(shared::pack).collect();
        let files = match packed.map(|groups| groups.into_iter().flatten().collect::<Vec<_>>()) {
            Ok(files) => files,
            Err(error) => {
                warn!(partition, %error, "packing a shared segment failed; its tables are written one file each");
                return self.write_apart(partition, level, tables, out).await;
            }
        };
        let mut tables: BTreeMap<String, RecordBatch> = tables.into_iter().collect();
        for (names, file) in files {
            let id = match out.take_id() {
                Ok(id) => id,
                Err(error) => {
                    let error = error.to_string();
                    let refused = names.into_iter().map(|name| (name, StorageError::Internal(error.clone())));
                    out.kept_back.extend(refused);
                    continue;
                }
            };
            let path = shared::shared_path(&self.inner.node_id, partition, id);
            let outcome = async {
                let (size, _) = segment::write(&self.inner.store, &path, None, std::slice::from_ref(&file)).await?;
                Ok::<_, StorageError>(shared::entries(&file, &path, id, partition, size, level)?)
            }
            .await;
            match outcome {
                Ok(entries) => {
                    self.write_series_index(path.as_ref(), &file).await;
                    out.entries.extend(entries);
                }
                Err(error) => {
                    warn!(partition, %error, "a shared segment could not be written; its tables are written one file each");
                    let apart = names.into_iter().filter_map(|name| tables.remove_entry(&name)).collect();
                    self.write_apart(partition, level, apart, out).await;
                }
            }
        }
    }

    /// Writes the series index of a shared segment. The index is derived data: without it the
    /// segment is read as before, so a failure only warns. It is not kept in memory here: a
    /// compaction writes the indexes of partitions no query may read for days (after the
    /// compaction a restart ran on a 10,000-series store they were 20 of the server's 64 MiB
    /// of anonymous memory at rest), and a query reads the few it needs once (~40 KB each).
    async fn write_series_index(&self, path: &str, file: &RecordBatch) {
        let index = match series_index::build(file, self.inner.options.partition_ns()) {
            Ok(index) => index,
            Err(error) => {
                warn!(segment = path, %error, "no series index for this segment: it is filtered row by row");
                return;
            }
        };
        if let Err(error) = series_index::write(&self.inner.store, path, &index).await {
            warn!(segment = path, %error, "the series index could not be written: the segment is filtered row by row");
        }
    }

    /// Writes each table's rows of one partition as a file of its own.
    async fn write_apart(&self, partition: i64, level: u32, tables: Vec<(String, RecordBatch)>, out: &mut Written) {
        for (table, batch) in tables {
            let id = match out.take_id() {
                Ok(id) => id,
                Err(error) => {
                    out.kept_back.push((table, error));
                    continue;
                }
            };
            match self.write_segment(&table, partition, id, level, &[batch]).await {
                Ok(meta) => out.entries.push(meta),
                Err(error) => out.kept_back.push((table, error)),
            }
        }
    }

    async fn write_segment(
        &self,
        table: &str,
        partition: i64,
        id: u64,
        level: u32,
        batches: &[RecordBatch],
    ) -> Result<SegmentMeta, StorageError> {
        let path = segment::segment_path(&self.inner.node_id, table, partition, id);
        let (size, stats) = segment::write(&self.inner.store, &path, Some(table), batches).await?;
        let schema = batches[0].schema();
        let time_index = schema.index_of(time_column_of(table))?;
        let (mut min, mut max, mut rows) = (i64::MAX, i64::MIN, 0u64);
        for batch in batches {
            let times = time_values(batch.column(time_index))?;
            min = min.min(compute::min(times).unwrap_or(i64::MAX));
            max = max.max(compute::max(times).unwrap_or(i64::MIN));
            rows += batch.num_rows() as u64;
        }
        Ok(SegmentMeta {
            id,
            table: table.to_string(),
            path: path.to_string(),
            partition_start_ns: partition,
            min_time_ns: min,
            max_time_ns: max,
            rows,
            size_bytes: size,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            level,
            stats,
            shared: None,
        })
    }

    /// Merges the segment files of partitions that have several: every closed partition, and
    /// open ones past `compaction_max_segments`. A partition's metric tables merge into shared
    /// files (older stores' per-table files included: this is how they move to the shared
    /// layout); each fixed table merges on its own. Returns how many partitions were compacted.
    ///
    /// The merges run outside the maintenance lock, so flushes go on meanwhile; each publishes
    /// only if its inputs are all still live (retention or a quarantine may have taken one),
    /// or its files are dropped and it is chosen again by a later pass.
    pub async fn compact(&self) -> Result<usize, StorageError> {
        // One compaction at a time: two would choose the same files.
        let _compacting = self.inner.compacting.lock().await;
        let (due, backlog) = self.choose_merges().await;
        if due.is_empty() {
            return Ok(0);
        }
        let mut merged = Vec::with_capacity(due.len());
        let mut failed: Vec<SegmentMeta> = Vec::new();
        for merge in due {
            // One partition failing (a damaged segment) never throws away the others' work.
            match self.merge_partition(&merge).await {
                Ok(written) => merged.push((merge, written)),
                Err(error) => {
                    warn!(table = merge.owner, partition = merge.partition, %error, "compacting this partition failed; its segments are checked, the other partitions go on");
                    failed.extend(merge.files.into_iter().flatten());
                }
            }
        }
        let compacted = self.publish_merges(merged).await?;
        if compacted > 0 {
            metrics::counter!("vigil_storage_compactions_total").increment(compacted as u64);
        }
        self.set_compactions_pending(backlog.saturating_sub(compacted));
        if !failed.is_empty() {
            // Inputs retired meanwhile are not quarantined: the quarantine skips files the
            // manifest no longer names.
            let damaged = crate::damage::find_damaged(&self.inner.store, failed, true).await;
            if !damaged.is_empty() {
                self.quarantine(damaged).await?;
            }
        }
        Ok(compacted)
    }

    /// The merges due this pass, each with its block of segment ids reserved, under the
    /// maintenance lock, and how many are due in all (this pass's and those left for later).
    async fn choose_merges(&self) -> (Vec<Merge>, usize) {
        let mut maintenance = self.inner.maintenance.lock().await;
        let current = self.manifest();
        if current.root_damaged.is_some() {
            return (Vec::new(), 0);
        }
        let partition_ns = self.inner.options.partition_ns();
        let grace_ns = self.inner.options.flush_interval.as_nanos() as i64;
        let now = now_ns();
        // (fixed table or "" for the metric tables, partition) → its files, by id.
        let mut groups: BTreeMap<(&str, i64), BTreeMap<u64, Vec<&SegmentMeta>>> = BTreeMap::new();
        for segment in &current.segments {
            let owner = if FixedTable::from_name(&segment.table).is_some() { segment.table.as_str() } else { "" };
            groups.entry((owner, segment.partition_start_ns)).or_default().entry(segment.id).or_default().push(segment);
        }
        let max_rows = self.inner.options.compaction_max_rows;
        // Whole windows of closed partitions first, merged into one segment each.
        let window_ns = i64::try_from(self.inner.options.compaction_window.as_nanos()).unwrap_or(i64::MAX);
        // A pass merges windows of `max_rows` rows in all (one at least): a store filling its
        // history (a backfill, a store from before windows) has dozens due at once, and a pass
        // kept short lets a shutdown wait for it; the rest wait for the next passes, a minute
        // apart.
        let windows = window_merges(&current.segments, partition_ns, window_ns, now.saturating_sub(grace_ns));
        let mut backlog = windows.len();
        // Partitions of every due window, merged or not this pass: merging one on its own first
        // would write its rows twice (a backfill's closed partitions, all due at once, did).
        let merging: BTreeSet<i64> =
            windows.iter().flat_map(|(_, files)| files.iter().map(|f| f[0].partition_start_ns)).collect();
        let mut window_rows = 0u64;
        let mut due: Vec<((&str, i64), Vec<Vec<&SegmentMeta>>)> = windows
            .into_iter()
            .take_while(|(_, files)| {
                let first = window_rows == 0;
                window_rows = files.iter().fold(window_rows, |rows, f| rows.saturating_add(f[0].file_rows()));
                first || window_rows <= max_rows
            })
            .map(|(window, files)| (("", window), files))
            .collect();
        let partitions = groups
            .into_iter()
            .filter(|((owner, partition), _)| !owner.is_empty() || !merging.contains(partition))
            .filter_map(|((owner, partition), files)| {
                let mut files: Vec<Vec<&SegmentMeta>> = files.into_values().collect();
                let closed = partition.saturating_add(partition_ns).saturating_add(grace_ns) <= now;
                let wanted = closed || files.len() >= self.inner.options.compaction_max_segments;
                let rows: Vec<u64> = files.iter().map(|entries| entries[0].file_rows()).collect();
                let run = files.split_off(newest_run_start(&rows, max_rows));
                // A merge of metric tables writes a file per scale group (and a window's, a file
                // per slice of series): merging those again writes the same files, pass after
                // pass. So a run merges only when it holds rows no merge has written yet (a
                // flush's file) or a file of an older layout (a table's own), which it moves to
                // shared segments.
                let new_rows = !owner.is_empty()
                    || run.iter().any(|entries| entries.iter().any(|e| e.level == 0 || e.shared.is_none()));
                (wanted && run.len() >= 2 && new_rows).then_some(((owner, partition), run))
            })
            .collect::<Vec<_>>();
        backlog += partitions.len();
        due.extend(partitions.into_iter().take(MAX_COMPACTIONS_PER_PASS.saturating_sub(due.len())));
        // Merges due and not done (a backfill's windows wait their turn, a pass at a time): an
        // operator's (and the query bench's) sign that compaction has caught up.
        self.set_compactions_pending(backlog);
        let mut next_id = current.next_segment_id.max(maintenance.ids_reserved_through);
        let due = due
            .into_iter()
            .map(|((owner, partition), files)| {
                let ids = next_id..next_id.saturating_add(MERGE_IDS);
                next_id = ids.end;
                let files = files.into_iter().map(|entries| entries.into_iter().cloned().collect()).collect();
                Merge { owner: owner.to_string(), partition, files, ids }
            })
            .collect();
        maintenance.ids_reserved_through = next_id;
        (due, backlog)
    }

    fn set_compactions_pending(&self, pending: usize) {
        self.inner.compactions_pending.store(pending as u64, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("vigil_storage_compactions_pending").set(pending as f64);
    }

    /// Merges the files of one partition (oldest first; each file as its manifest entries)
    /// into new ones: one segment of a fixed table, or the shared segments of the metric
    /// tables, in slices of series of at most `compaction_max_rows` rows (see
    /// `merge_slices`), each written as files of its own. Returns the entries written.
    async fn merge_partition(&self, merge: &Merge) -> Result<Vec<SegmentMeta>, StorageError> {
        let Merge { owner, partition, files, ids } = merge;
        let mut inputs = Vec::with_capacity(files.len());
        for entries in files {
            inputs.push(merge_slices::Input::open(&self.inner.store, entries.clone()).await?);
        }
        // A fixed table's rows are sorted by time, not series: merged whole.
        let max_rows = if owner.is_empty() { self.inner.options.compaction_max_rows } else { u64::MAX };
        let inputs = Arc::new(inputs);
        let slices = merge_slices::plan(&self.inner.store, &inputs, max_rows).await?;
        let level = files.iter().flatten().map(|s| s.level).max().unwrap_or(0) + 1;
        let mut out = Written::within(ids.clone());
        for slice in slices {
            let inputs = inputs.clone();
            let merged = tokio::task::spawn_blocking(move || merge_slice(&inputs, slice))
                .await
                .map_err(|error| StorageError::Internal(error.to_string()))??;
            if owner.is_empty() {
                self.write_shared_or_apart(*partition, level, merged, &mut out).await;
            } else {
                self.write_apart(*partition, level, merged, &mut out).await;
            }
            // What earlier slices wrote stays an orphan no manifest names (the inputs stay
            // live), its ids never taken again.
            if let Some((table, error)) = out.kept_back.drain(..).next() {
                return Err(StorageError::Internal(format!("table {table}: {error}")));
            }
        }
        Ok(out.entries)
    }

    /// Publishes merges done outside the lock onto the manifest as it is now: each one whose
    /// inputs are all still live replaces them; the files of the others are dropped (deleted
    /// with the replaced files). Returns how many were published.
    async fn publish_merges(&self, merged: Vec<(Merge, Vec<SegmentMeta>)>) -> Result<usize, StorageError> {
        if merged.is_empty() {
            return Ok(0);
        }
        let maintenance = self.inner.maintenance.lock().await;
        let latest = self.manifest();
        if latest.root_damaged.is_some() {
            return Ok(0); // nothing is published until a repair; the merges' files are orphans
        }
        // The inputs of one pass's merges are disjoint: each is checked against the manifest as
        // it was before any of them.
        let live: std::collections::HashSet<(&str, &str)> =
            latest.segments.iter().map(|s| (s.path.as_str(), s.table.as_str())).collect();
        let mut manifest = (*latest).clone();
        // Past every reserved id, those of merges that failed too: their files are orphans no
        // later file may take the path of.
        manifest.next_segment_id = manifest.next_segment_id.max(maintenance.ids_reserved_through);
        let mut published = 0;
        for (merge, written) in merged {
            let inputs = merge.files.iter().flatten();
            if inputs.clone().all(|s| live.contains(&(s.path.as_str(), s.table.as_str()))) {
                let replaced: BTreeSet<&str> = inputs.map(|s| s.path.as_str()).collect();
                let rows: u64 = written.iter().map(|s| s.rows).sum();
                retire(&mut manifest, |s| replaced.contains(s.path.as_str()));
                info!(table = merge.owner, partition = merge.partition, inputs = replaced.len(), rows, "compacted");
                manifest.segments.extend(written);
                published += 1;
            } else {
                info!(
                    table = merge.owner,
                    partition = merge.partition,
                    "inputs of a merge were retired while it ran: its files are dropped"
                );
                let not_before_unix_ms = now_ns() / 1_000_000;
                let paths: BTreeSet<String> = written.into_iter().map(|s| s.path).collect();
                manifest
                    .pending_deletes
                    .extend(paths.into_iter().map(|path| PendingDelete { path, not_before_unix_ms }));
            }
        }
        self.publish(manifest).await?;
        Ok(published)
    }

    /// Drops segments whose newest row is older than the retention period.
    pub async fn enforce_retention(&self) -> Result<usize, StorageError> {
        let retention = self.inner.options.retention;
        if retention.is_zero() {
            return Ok(0);
        }
        let _maintenance = self.inner.maintenance.lock().await;
        if self.manifest().root_damaged.is_some() {
            return Ok(0);
        }
        let cutoff = now_ns().saturating_sub(retention.as_nanos() as i64);
        let mut manifest = (*self.manifest()).clone();
        let expired = retire(&mut manifest, |s| s.max_time_ns < cutoff);
        if expired > 0 {
            self.publish(manifest).await?;
            info!(segments = expired, "segments past retention dropped");
            metrics::counter!("vigil_storage_segments_expired_total").increment(expired as u64);
        }
        Ok(expired)
    }

    /// Deletes replaced files whose grace period is over.
    pub async fn delete_retired_files(&self) -> Result<usize, StorageError> {
        let _maintenance = self.inner.maintenance.lock().await;
        if self.manifest().root_damaged.is_some() {
            return Ok(0);
        }
        let now_ms = now_ns() / 1_000_000;
        let mut manifest = (*self.manifest()).clone();
        let (due, keep): (Vec<PendingDelete>, Vec<PendingDelete>) =
            manifest.pending_deletes.drain(..).partition(|d| d.not_before_unix_ms <= now_ms);
        if due.is_empty() {
            manifest.pending_deletes = keep;
            return Ok(0);
        }
        for file in &due {
            // A segment's series index goes before it: an index is never left without its segment.
            let paths = file.path.ends_with(".parquet").then(|| series_index::index_path(&file.path));
            for path in paths.into_iter().chain([Path::from(file.path.as_str())]) {
                match self.inner.store.delete(&path).await {
                    Ok(()) | Err(datafusion::object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.inner.series_indexes.remove(&file.path);
        }
        manifest.pending_deletes = keep;
        self.publish(manifest).await?;
        Ok(due.len())
    }

    async fn publish(&self, mut manifest: Manifest) -> Result<(), StorageError> {
        let previous = self.manifest();
        manifest::save(&self.inner.store, &mut manifest, &previous, delete_after_ms()).await?;
        self.inner.state.lock().manifest = Arc::new(manifest);
        Ok(())
    }
}

/// One slice of a merge (each input's rows, see `merge_slices::plan`) merged: each table's
/// rows, from the manifest's entries of the inputs, oldest file first.
fn merge_slice(
    inputs: &[merge_slices::Input],
    slice: Vec<std::ops::Range<u64>>,
) -> Result<Vec<(String, RecordBatch)>, StorageError> {
    let mut pieces: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for (input, rows) in inputs.iter().zip(slice) {
        if !rows.is_empty() {
            for (table, rows) in input.read(rows)? {
                pieces.entry(table).or_default().push(rows);
            }
        }
    }
    pieces.into_iter().map(|(table, inputs)| Ok((table.clone(), merge::merge_segments(&table, inputs)?))).collect()
}

/// Where the run of newest files (their rows, sorted by id) whose rows together stay within
/// `max_rows` starts.
/// Only a run of the newest may merge: the merged segment gets the newest id, and newer rows
/// must keep winning over older duplicates.
fn newest_run_start(file_rows: &[u64], max_rows: u64) -> usize {
    let mut rows = 0u64;
    let mut start = file_rows.len();
    while start > 0 && rows.saturating_add(file_rows[start - 1]) <= max_rows {
        start -= 1;
        rows += file_rows[start];
    }
    start
}

/// The windows of closed partitions whose metric files merge: the window's start (its
/// segments' partition) and its files, oldest first (each as its manifest entries). A window
/// is `window_ns` long from the epoch and merges once it has ended a window's length before
/// `closed_before` and holds files of two partitions or more, whole: a merge reads it in
/// slices of series (see `merge_slices`), so its size is no bound. (Merging a window too large
/// for memory in halves of time made each series a run per half, paying its costs of a file
/// once a half.) A window whose files are of one partition is left to that partition's
/// compaction.
fn window_merges(
    segments: &[SegmentMeta],
    partition_ns: i64,
    window_ns: i64,
    closed_before: i64,
) -> Vec<(i64, Vec<Vec<&SegmentMeta>>)> {
    if partition_ns <= 0 || window_ns < partition_ns.saturating_mul(2) || window_ns % partition_ns != 0 {
        return Vec::new();
    }
    let mut files: BTreeMap<u64, Vec<&SegmentMeta>> = BTreeMap::new();
    for segment in segments.iter().filter(|s| FixedTable::from_name(&s.table).is_none()) {
        files.entry(segment.id).or_default().push(segment);
    }
    let mut windows: BTreeMap<i64, Vec<Vec<&SegmentMeta>>> = BTreeMap::new();
    for entries in files.into_values() {
        let start = entries[0].partition_start_ns.div_euclid(window_ns).saturating_mul(window_ns);
        windows.entry(start).or_default().push(entries);
    }
    windows
        .into_iter()
        .filter(|(start, files)| {
            // A window merges a window's length after it closed: queries over the last window (a
            // 24 h dashboard) read partitions, every row they read one they need, where a merged
            // segment's part they need costs decoding its whole pages.
            let due = start.saturating_add(window_ns.saturating_mul(2)) <= closed_before;
            let partitions: BTreeSet<i64> = files.iter().map(|entries| entries[0].partition_start_ns).collect();
            due && partitions.len() >= 2
        })
        .collect()
}

/// When a file replaced now may be deleted: after the grace period for queries planned with it
/// (here or on another node: peers re-read manifests far more often).
pub(crate) fn delete_after_ms() -> i64 {
    (now_ns() + DELETE_GRACE.as_nanos() as i64) / 1_000_000
}

/// Removes matching segments from the manifest and schedules for deletion the files no
/// remaining entry names (a shared file goes with its last table).
fn retire(manifest: &mut Manifest, doomed: impl Fn(&SegmentMeta) -> bool) -> usize {
    let not_before_unix_ms = delete_after_ms();
    let (gone, kept): (Vec<SegmentMeta>, Vec<SegmentMeta>) = manifest.segments.drain(..).partition(|s| doomed(s));
    manifest.segments = kept;
    let live: BTreeSet<&str> = manifest.segments.iter().map(|s| s.path.as_str()).collect();
    let unnamed: BTreeSet<&str> = gone.iter().map(|s| s.path.as_str()).filter(|p| !live.contains(p)).collect();
    let deletes: Vec<PendingDelete> =
        unnamed.into_iter().map(|path| PendingDelete { path: path.to_string(), not_before_unix_ms }).collect();
    manifest.pending_deletes.extend(deletes);
    gone.len()
}

/// Brings a batch to `schema`: columns by name, missing ones as nulls.
pub(crate) fn adapt_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StorageError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => column.clone(),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A merge chosen by a compaction pass: a fixed table's partition (`owner`), or the metric
/// tables' (`owner` empty) of a partition or window; its files, oldest first (each as its
/// manifest entries when chosen); the segment ids reserved for what it writes.
struct Merge {
    owner: String,
    partition: i64,
    files: Vec<Vec<SegmentMeta>>,
    ids: std::ops::Range<u64>,
}

#[derive(Default)]
pub(crate) struct MaintenanceState {
    /// WAL sequence covered by the generation being flushed, once its rotation answered.
    wal_through: Option<u64>,
    /// Tables of the generation being flushed that could not be written and were logged
    /// again; their rows join the active buffer when the flush is published.
    carried_tables: std::collections::HashSet<String>,
    carried_rows: WriteBatch,
    /// Segment ids below this are reserved by merges chosen (see [`MERGE_IDS`]): a flush takes
    /// its ids from here on.
    ids_reserved_through: u64,
}

/// The maintenance loop: flush on schedule or when the buffer fills, housekeeping each minute.
pub(crate) async fn run(storage: &Storage, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut flush_ticker = tokio::time::interval(storage.inner.options.flush_interval);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
    let peer_every = storage.inner.options.peer_refresh_interval;
    let mut peer_ticker =
        tokio::time::interval(if peer_every.is_zero() { Duration::from_secs(3600) } else { peer_every });
    peer_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush_ticker.tick().await;
    peer_ticker.tick().await;
    // Housekeeping is a task of its own: a compaction's merges take long on a large store
    // (a minute a day of 100,000 series), and flushes go on meanwhile.
    let mut pass: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = flush_ticker.tick() => flush_logged(storage).await,
            _ = storage.inner.flush_wanted.notified() => flush_logged(storage).await,
            _ = peer_ticker.tick(), if !peer_every.is_zero() => {
                if let Err(e) = storage.refresh_peers().await {
                    warn!(error = %e, "reading other nodes' manifests failed; their data may be stale here");
                }
            }
            _ = housekeeping.tick() => {
                // A pass still under way at the next tick is left to finish: that tick is skipped.
                if pass.as_ref().is_none_or(|pass| pass.is_finished()) {
                    if let Some(Some(Err(error))) = pass.take().map(futures::FutureExt::now_or_never) {
                        warn!(%error, "a housekeeping pass failed");
                    }
                    let storage = storage.clone();
                    pass = Some(tokio::spawn(async move { housekeep(&storage).await }));
                }
            }
        }
    }
    // A pass under way ends before the final flush: merges publish whole or not at all.
    if let Some(pass) = pass
        && let Err(error) = pass.await
    {
        warn!(%error, "a housekeeping pass failed");
    }
}

/// Compaction, retention, deletion of replaced files, and the series tracker's and damage
/// reports' refresh.
async fn housekeep(storage: &Storage) {
    if let Err(e) = storage.compact().await {
        warn!(error = %e, "compaction failed");
    }
    if let Err(e) = storage.enforce_retention().await {
        warn!(error = %e, "retention pass failed");
    }
    if let Err(e) = storage.delete_retired_files().await {
        warn!(error = %e, "deleting retired segment files failed");
    }
    storage.refresh_series_tracker();
    storage.record_damage();
}

async fn flush_logged(storage: &Storage) {
    if let Err(e) = storage.persist().await {
        metrics::counter!("vigil_storage_flush_failures_total").increment(1);
        warn!(error = %e, "flush failed; data stays in memory and in the WAL");
    }
}
