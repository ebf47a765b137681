//! The series index of a shared segment: one row per series run of the file (its table, its
//! labels, where its rows are and their time bounds), written beside the segment as
//! `<id>.series` when the segment is written.
//!
//! A shared file is sorted by (table, series, time), so each series is one run of rows. A
//! scan with label filters evaluates them once per series on the index instead of once per
//! row on the file, and reads only the matching runs (a Parquet row selection); a series
//! outside the query's time range is not read at all. The metadata API (series, label
//! names and values) answers from the index without reading samples.
//!
//! The index is derived data: a segment without one (written before it existed, or whose
//! index cannot be read) is scanned as before, filtered row by row. Indexes are immutable
//! like their segments and cached in memory by path, up to a byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, RecordBatch, UInt32Builder, UInt64Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use parking_lot::Mutex;

use crate::StorageError;
use crate::filters::{LabelFilters, is_label_filter, is_time_bound};
use crate::indexed_scan::IndexedFile;
use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN};

/// Index columns after the file's table and label columns.
pub const FIRST_ROW: &str = "vigil:first_row";
pub const ROWS: &str = "vigil:rows";
pub const MIN_TIME: &str = "vigil:min_time";
pub const MAX_TIME: &str = "vigil:max_time";
/// Where a series' run crosses each time mark inside it (rows before the mark, in the run):
/// the marks are every partition boundary (`vigil:mark_every_ns` in the index's metadata),
/// so a scan of part of a segment that merged many partitions reads only the part of each run
/// its time range needs. Empty for a run inside one partition, or one crossing too many.
pub const MARKS: &str = "vigil:marks";
const MARK_EVERY: &str = "vigil:mark_every_ns";
/// Most marks one run keeps: a run crossing more (a window of thousands of partitions) keeps
/// none and is read whole.
const MAX_MARKS: i64 = 1024;

/// Bytes of indexes kept in memory (a 2 h partition of 10,000 series is about 1 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Where the index of the segment at `segment_path` lives: beside it, `.parquet` → `.series`
/// (a name no listing of segment files takes for a segment).
pub fn index_path(segment_path: &str) -> Path {
    Path::from(format!("{}.series", segment_path.strip_suffix(".parquet").unwrap_or(segment_path)))
}

/// The series index of a shared file batch (sorted by table, series, time), each run marked
/// where it crosses a multiple of `mark_every_ns` (the partition length).
pub fn build(file: &RecordBatch, mark_every_ns: i64) -> Result<RecordBatch, ArrowError> {
    let schema = file.schema();
    let keys: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(file.columns())
        .filter(|(f, _)| f.name() != TIMESTAMP_COLUMN && f.name() != VALUE_COLUMN)
        .map(|(_, c)| c.clone())
        .collect();
    let times = file
        .column_by_name(TIMESTAMP_COLUMN)
        .ok_or_else(|| ArrowError::SchemaError("a shared segment without a time column".into()))?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| ArrowError::SchemaError("a time column that is not nanoseconds".into()))?
        .clone();
    let runs = compute::partition(&keys)?.ranges();
    let starts = UInt64Array::from_iter_values(runs.iter().map(|r| r.start as u64));
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in schema.fields().iter().zip(file.columns()) {
        if field.name() != TIMESTAMP_COLUMN && field.name() != VALUE_COLUMN {
            fields.push(field.as_ref().clone());
            columns.push(compute::take(column, &starts, None)?);
        }
    }
    // Rows of a series are sorted by time: its first and last rows bound it.
    let min_time = Int64Array::from_iter_values(runs.iter().map(|r| times.value(r.start)));
    let max_time = Int64Array::from_iter_values(runs.iter().map(|r| times.value(r.end - 1)));
    let rows = UInt64Array::from_iter_values(runs.iter().map(|r| r.len() as u64));
    let every = mark_every_ns.max(1);
    let mut marks = ListBuilder::new(UInt32Builder::new()).with_field(Field::new_list_field(DataType::UInt32, false));
    for run in &runs {
        let run_times = &times.values()[run.clone()];
        let (first, last) = (run_times[0].div_euclid(every), run_times[run_times.len() - 1].div_euclid(every));
        if last - first <= MAX_MARKS {
            for boundary in first + 1..=last {
                let before = run_times.partition_point(|&t| t < boundary.saturating_mul(every));
                marks.values().append_value(before as u32);
            }
        }
        marks.append(true);
    }
    let marks = marks.finish();
    fields.extend([
        Field::new(FIRST_ROW, DataType::UInt64, false),
        Field::new(ROWS, DataType::UInt64, false),
        Field::new(MIN_TIME, DataType::Int64, false),
        Field::new(MAX_TIME, DataType::Int64, false),
        Field::new(MARKS, marks.data_type().clone(), false),
    ]);
    columns.extend([
        Arc::new(starts) as ArrayRef,
        Arc::new(rows),
        Arc::new(min_time),
        Arc::new(max_time),
        Arc::new(marks),
    ]);
    let metadata = HashMap::from([(MARK_EVERY.to_string(), every.to_string())]);
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, metadata)), columns)
}

/// Each of `runs` (a series' run of `index` and its rows: the first row and how many) cut to
/// the rows that may lie in `[start_ns, end_ns]` by the run's marks, dropping any left empty.
/// A run without marks (one partition's, or an index written before marks) stays whole; the
/// scan still applies the time bounds row by row.
pub(crate) fn narrowed_by_marks(
    index: &RecordBatch,
    series: Vec<usize>,
    runs: Vec<(u64, u64)>,
    start_ns: Option<i64>,
    end_ns: Option<i64>,
) -> (Vec<usize>, Vec<(u64, u64)>) {
    let every = index.schema().metadata().get(MARK_EVERY).and_then(|every| every.parse::<i64>().ok());
    let marks = index.column_by_name(MARKS).and_then(|marks| marks.as_list_opt::<i32>());
    let (Some(every), Some(marks), Ok(min_time)) = (every.filter(|&e| e > 0), marks, column_i64(index, MIN_TIME))
    else {
        return (series, runs);
    };
    let Some(run_marks) = marks.values().as_primitive_opt::<datafusion::arrow::datatypes::UInt32Type>() else {
        return (series, runs);
    };
    let (low, high) = (start_ns.unwrap_or(i64::MIN), end_ns.unwrap_or(i64::MAX));
    let mut kept = (Vec::with_capacity(series.len()), Vec::with_capacity(runs.len()));
    for (i, (first_row, rows)) in series.into_iter().zip(runs) {
        let range = marks.value_offsets()[i] as usize..marks.value_offsets()[i + 1] as usize;
        // Mark j is where the run reaches the (j+1)-th boundary after its first sample's.
        let first_boundary = min_time.value(i).div_euclid(every).saturating_add(1);
        let (mut from, mut to) = (0u64, rows);
        for (j, &before) in run_marks.values()[range].iter().enumerate() {
            let boundary = first_boundary.saturating_add(j as i64).saturating_mul(every);
            if boundary <= low {
                from = u64::from(before); // every row before it is earlier than the range
            } else if boundary > high {
                to = u64::from(before); // every row from it on is later
                break;
            }
        }
        if from < to && to <= rows {
            kept.0.push(i);
            kept.1.push((first_row + from, to - from));
        }
    }
    kept
}

/// Writes `index` beside the segment at `segment_path`.
pub async fn write(store: &Arc<dyn ObjectStore>, segment_path: &str, index: &RecordBatch) -> Result<(), StorageError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, index.schema(), Some(props))?;
    writer.write(index)?;
    writer.close()?;
    store.put(&index_path(segment_path), PutPayload::from(bytes)).await?;
    Ok(())
}

/// Deletes the index of a segment moved aside or gone (none is fine).
pub async fn delete(store: &Arc<dyn ObjectStore>, segment_path: &str) -> Result<(), StorageError> {
    match store.delete(&index_path(segment_path)).await {
        Ok(()) | Err(datafusion::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn read(
    store: &Arc<dyn ObjectStore>,
    segment_path: &str,
) -> Result<Option<RecordBatch>, StorageError> {
    let bytes = match store.get(&index_path(segment_path)).await {
        Ok(object) => object.bytes().await?,
        Err(datafusion::object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    // The reader's batches leave out the schema's metadata (the marks' spacing).
    let schema = builder.schema().clone();
    let reader = builder.build()?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    if batches.is_empty() {
        return Ok(None);
    }
    let batch = compute::concat_batches(&schema, &batches)?;
    for (name, data_type) in [
        (FIRST_ROW, DataType::UInt64),
        (ROWS, DataType::UInt64),
        (MIN_TIME, DataType::Int64),
        (MAX_TIME, DataType::Int64),
    ] {
        if batch.column_by_name(name).map(|c| c.data_type()) != Some(&data_type) {
            return Err(StorageError::Internal(format!("series index without {name}")));
        }
    }
    // Its series are in file order: a lookup finds a table's stretch by binary search.
    let first_rows = column_u64(&batch, FIRST_ROW).map_err(|e| StorageError::Internal(e.to_string()))?.values();
    if first_rows.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(StorageError::Internal("series index out of file order".into()));
    }
    // Each run's marks are rows of the run, in order: a damaged list would cut rows a query needs.
    if let Some(marks) = batch.column_by_name(MARKS).and_then(|marks| marks.as_list_opt::<i32>()) {
        let rows = column_u64(&batch, ROWS).map_err(|e| StorageError::Internal(e.to_string()))?.values();
        let values = marks.values().as_primitive_opt::<datafusion::arrow::datatypes::UInt32Type>();
        let valid = values.is_some_and(|values| {
            rows.iter().enumerate().all(|(i, &run_rows)| {
                let (start, end) = (marks.value_offsets()[i] as usize, marks.value_offsets()[i + 1] as usize);
                let run = &values.values()[start..end];
                run.windows(2).all(|pair| pair[0] <= pair[1]) && run.iter().all(|&row| u64::from(row) <= run_rows)
            })
        });
        if !valid {
            return Err(StorageError::Internal("series index with marks outside their runs".into()));
        }
    }
    Ok(Some(batch))
}

/// Indexes read so far, by segment path (`None`: the segment has none), with the label
/// filters evaluated on them and the segment's reader metadata; oldest evicted first past the
/// budget (`storage.index_cache_size`, which counts all three).
#[derive(Debug)]
pub(crate) struct IndexCache {
    entries: Mutex<CacheEntries>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct CacheEntries {
    by_path: HashMap<String, Cached>,
    order: VecDeque<String>,
    bytes: usize,
}

#[derive(Debug)]
struct Cached {
    index: Option<Arc<RecordBatch>>,
    /// Label filters evaluated on stretches of the index, by the hash of their
    /// [`MatchKey`]: a dashboard asks the same selectors of the same segments query after
    /// query, and evaluating them again on every segment (casting a dictionary column to
    /// strings, running a regex per series) was an eighth of a 7 d query of few series.
    /// VictoriaMetrics keeps the same cache of tag filters to series ids.
    matches: HashMap<u64, Vec<(MatchKey, BooleanBuffer)>>,
    /// The segment's footer as the Arrow reader takes it (its Arrow schema decoded): building it
    /// for each segment a query opens was 1.5-3 % of a query over a few series.
    reading: Option<ArrowReaderMetadata>,
    /// Bytes counted for the index (and its path), its matches, and its reader metadata.
    index_bytes: usize,
    matches_bytes: usize,
    reading_bytes: usize,
}

impl Cached {
    fn bytes(&self) -> usize {
        self.index_bytes + self.matches_bytes + self.reading_bytes
    }

    /// Filters remembered on this index.
    fn matches_held(&self) -> usize {
        self.matches.values().map(Vec::len).sum()
    }
}

/// A label filter evaluated on the index rows `offset..offset + len` (a table's stretch).
#[derive(Debug)]
struct MatchKey {
    filter: Expr,
    offset: usize,
    len: usize,
}

impl MatchKey {
    fn is(&self, filter: &Expr, offset: usize, len: usize) -> bool {
        self.offset == offset && self.len == len && &self.filter == filter
    }
}

/// Filters remembered per index at most: past it the index's are forgotten and remembered
/// afresh (a store has a few dashboards' selectors, not thousands).
const MATCHES_PER_INDEX: usize = 256;

impl IndexCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        IndexCache { entries: Mutex::default(), max_bytes }
    }

    /// The index of the segment at `path`: cached, or read (a damaged one counts as none, and
    /// the segment is scanned without it).
    pub(crate) async fn get(&self, store: &Arc<dyn ObjectStore>, path: &str) -> Option<Arc<RecordBatch>> {
        if let Some(cached) = self.entries.lock().by_path.get(path) {
            return cached.index.clone();
        }
        let index = match read(store, path).await {
            Ok(index) => index.map(Arc::new),
            Err(error) => {
                tracing::warn!(segment = path, %error, "series index unreadable: the segment is filtered row by row");
                None
            }
        };
        self.insert(path.to_string(), index.clone());
        index
    }

    pub(crate) fn insert(&self, path: String, index: Option<Arc<RecordBatch>>) {
        let index_bytes = index.as_ref().map_or(0, |i| i.get_array_memory_size()) + path.len();
        let cached =
            Cached { index, matches: HashMap::new(), reading: None, index_bytes, matches_bytes: 0, reading_bytes: 0 };
        let mut entries = self.entries.lock();
        match entries.by_path.insert(path.clone(), cached) {
            Some(replaced) => entries.bytes = entries.bytes.saturating_sub(replaced.bytes()),
            None => entries.order.push_back(path),
        }
        entries.bytes += index_bytes;
        self.evict(&mut entries);
        entries.record();
    }

    /// Drops the oldest indexes until the cache is within its budget (the newest stays).
    fn evict(&self, entries: &mut CacheEntries) {
        while entries.bytes > self.max_bytes && entries.order.len() > 1 {
            let Some(oldest) = entries.order.pop_front() else { break };
            if let Some(gone) = entries.by_path.remove(&oldest) {
                entries.bytes = entries.bytes.saturating_sub(gone.bytes());
            }
        }
    }

    /// Whether the index of the segment at `path` (or its absence) is held.
    #[cfg(test)]
    pub(crate) fn holds(&self, path: &str) -> bool {
        self.entries.lock().by_path.contains_key(path)
    }

    /// Forgets the index of a segment that is gone.
    pub(crate) fn remove(&self, path: &str) {
        let mut entries = self.entries.lock();
        if let Some(gone) = entries.by_path.remove(path) {
            entries.bytes = entries.bytes.saturating_sub(gone.bytes());
            entries.order.retain(|p| p != path);
            entries.record();
        }
    }

    /// The reader metadata of the segment at `path`, when kept.
    pub(crate) fn reading(&self, path: &str) -> Option<ArrowReaderMetadata> {
        self.entries.lock().by_path.get(path)?.reading.clone()
    }

    /// Keeps the reader metadata of the segment at `path` while its index is held.
    pub(crate) fn keep_reading(&self, path: &str, reading: ArrowReaderMetadata) {
        // The Arrow schema's size is not reported; ~128 bytes a field stands for it.
        let bytes = reading.metadata().memory_size() + reading.schema().fields().len() * 128;
        let mut entries = self.entries.lock();
        let Some(cached) = entries.by_path.get_mut(path) else { return };
        let before = std::mem::replace(&mut cached.reading_bytes, bytes);
        cached.reading = Some(reading);
        entries.bytes = entries.bytes.saturating_sub(before) + bytes;
        self.evict(&mut entries);
        entries.record();
    }

    /// What `filter` matched on the stretch `offset..offset + len` of the index of `path`
    /// when evaluated before (`hash`: [`match_hash`]'s).
    fn remembered(&self, path: &str, filter: &Expr, offset: usize, len: usize, hash: u64) -> Option<BooleanBuffer> {
        let entries = self.entries.lock();
        let bucket = entries.by_path.get(path)?.matches.get(&hash)?;
        bucket.iter().find(|(key, _)| key.is(filter, offset, len)).map(|(_, matched)| matched.clone())
    }

    /// Remembers what `key.filter` matched on the index of `path`, for as long as the index
    /// is held.
    fn remember(&self, path: &str, key: MatchKey, hash: u64, matched: BooleanBuffer) {
        // A filter's own size is not known; its text stands for it.
        let bytes = matched.inner().capacity() + std::mem::size_of::<MatchKey>() + key.filter.to_string().len();
        let mut entries = self.entries.lock();
        let Some(cached) = entries.by_path.get_mut(path) else { return };
        let mut freed = 0;
        if cached.matches_held() >= MATCHES_PER_INDEX {
            cached.matches.clear();
            freed = std::mem::take(&mut cached.matches_bytes);
        }
        let bucket = cached.matches.entry(hash).or_default();
        if bucket.iter().any(|(held, _)| held.is(&key.filter, key.offset, key.len)) {
            return;
        }
        bucket.push((key, matched));
        cached.matches_bytes += bytes;
        entries.bytes = entries.bytes.saturating_sub(freed) + bytes;
        self.evict(&mut entries);
        entries.record();
    }
}

impl CacheEntries {
    fn record(&self) {
        metrics::gauge!("vigil_memory_bytes", "component" => "series_indexes").set(self.bytes as f64);
    }
}

/// Where a lookup remembers the label filters it evaluates: the cache holding the index, and
/// the index's segment.
#[derive(Clone, Copy)]
pub(crate) struct Remembering<'a> {
    pub cache: &'a IndexCache,
    pub path: &'a str,
}

/// What a scan asks of an index: the rows of a file it may read, the filters on label
/// columns, and its time range.
pub(crate) struct Lookup<'a> {
    /// Runs of the file the scan reads at all (first row, rows): a table's run, or the runs of
    /// a set of tables.
    pub runs: &'a [(u64, u64)],
    pub filters: &'a [Expr],
    /// The scan's label columns: filters on them alone the scan promised to apply exactly.
    pub is_label: &'a (dyn Fn(&str) -> bool + Sync),
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    /// Where the label filters' matches are remembered, if anywhere.
    pub remembering: Option<Remembering<'a>>,
}

/// The rows of `index` (series, in file order) inside `lookup.runs` that the label filters can
/// match and that overlap the time range, and whether every filter on labels of the scan
/// (`lookup.is_label`) was evaluated here. A filter naming a column the index does not hold
/// (time, value, a label no table of the file has) is left to the scan.
pub(crate) fn matching_series(
    state: &dyn Session,
    index: &RecordBatch,
    lookup: &Lookup<'_>,
) -> DfResult<(Vec<usize>, bool)> {
    let schema = index.schema();
    // The index rows from the runs' first to their last: a table's series are one stretch
    // of the file (sorted by table), so its filters are evaluated on its rows alone, not on
    // every series of every metric the file holds.
    let (offset, len) = runs_stretch(index, lookup.runs)?;
    let first_rows = &column_u64(index, FIRST_ROW)?.values()[offset..][..len];
    let min_time = &column_i64(index, MIN_TIME)?.values()[offset..][..len];
    let max_time = &column_i64(index, MAX_TIME)?.values()[offset..][..len];
    // The series every label filter matched (all, until one is evaluated): a few series
    // of thousands, for a selective query, whose runs and times are then checked.
    let mut matching: Option<BooleanBuffer> = None;
    let is_label = |name: &str| {
        name != FIRST_ROW
            && name != ROWS
            && name != MIN_TIME
            && name != MAX_TIME
            && name != MARKS
            && schema.column_with_name(name).is_some()
    };
    // Sliced and given a DataFusion schema only when a filter is evaluated, not remembered.
    let mut stretch: Option<(RecordBatch, DFSchema)> = None;
    let mut every_label_filter = true;
    for filter in lookup.filters {
        let scan_label = is_label_filter(filter, lookup.is_label);
        if !is_label_filter(filter, is_label) {
            every_label_filter &= !scan_label;
            continue;
        }
        // A filter whose answer may change between evaluations (`random()`, `now()`) is
        // evaluated every time.
        let remembering =
            lookup.remembering.filter(|_| is_immutable(filter)).map(|at| (at, match_hash(filter, offset, len)));
        let held = remembering.and_then(|(at, hash)| at.cache.remembered(at.path, filter, offset, len, hash));
        let matched = match held {
            Some(matched) => Some(matched),
            None => {
                let (batch, df_schema) = match stretch.take() {
                    Some(stretch) => stretch,
                    None => (index.slice(offset, len), DFSchema::try_from(schema.clone())?),
                };
                // A filter the index cannot evaluate narrows nothing; the scan applies it row by row.
                let matched = state
                    .create_physical_expr(filter.clone(), &df_schema)
                    .and_then(|predicate| predicate.evaluate(&batch)?.into_array(batch.num_rows()))
                    .ok()
                    .and_then(|value| value.as_boolean_opt().map(true_and_valid));
                stretch = Some((batch, df_schema));
                if let (Some(matched), Some((at, hash))) = (&matched, remembering) {
                    at.cache.remember(at.path, MatchKey { filter: filter.clone(), offset, len }, hash, matched.clone());
                }
                matched
            }
        };
        let Some(matched) = matched else {
            every_label_filter &= !scan_label;
            continue;
        };
        matching = Some(match matching {
            Some(so_far) => &so_far & &matched,
            None => matched,
        });
    }
    let candidates: Box<dyn Iterator<Item = usize>> = match &matching {
        Some(matching) => Box::new(matching.set_indices()),
        None => Box::new(0..len),
    };
    let series = candidates
        .filter(|&i| {
            within_runs(lookup.runs, first_rows[i])
                && lookup.start_ns.is_none_or(|start| max_time[i] >= start)
                && lookup.end_ns.is_none_or(|end| min_time[i] <= end)
        })
        .map(|i| offset + i)
        .collect();
    Ok((series, every_label_filter))
}

/// Whether `filter` gives the same answer on the same rows every time (no stable or volatile
/// function in it).
fn is_immutable(filter: &Expr) -> bool {
    !filter
        .exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable)))
        .unwrap_or(true)
}

/// Which rows of `matched` are true (a null is not).
fn true_and_valid(matched: &datafusion::arrow::array::BooleanArray) -> BooleanBuffer {
    match matched.nulls() {
        Some(valid) => matched.values() & valid.inner(),
        None => matched.values().clone(),
    }
}

/// The bucket of a filter evaluated on a stretch of an index.
fn match_hash(filter: &Expr, offset: usize, len: usize) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one((filter, offset, len))
}

/// The stretch of `index` whose series start inside `runs` (sorted, not overlapping): its
/// first row's position in `index`, and its length.
fn runs_stretch(index: &RecordBatch, runs: &[(u64, u64)]) -> DfResult<(usize, usize)> {
    let first_rows = column_u64(index, FIRST_ROW)?.values();
    let (Some(&(first, _)), Some(&(last, rows))) = (runs.first(), runs.last()) else {
        return Ok((0, 0));
    };
    let from = first_rows.partition_point(|&row| row < first);
    let to = first_rows.partition_point(|&row| row < last + rows);
    Ok((from, to.max(from) - from))
}

/// True when `row` is in one of `runs` (sorted by first row, not overlapping): a binary
/// search, since a set of thousands of tables has thousands of runs in one file.
fn within_runs(runs: &[(u64, u64)], row: u64) -> bool {
    let after = runs.partition_point(|(first, _)| *first <= row);
    after > 0 && row < runs[after - 1].0 + runs[after - 1].1
}

/// One row per chosen series of `index` in `schema` (a table's or a set's): its labels, a
/// time inside the scan's range (`start_ns` or later), and a NaN value.
fn series_rows(
    index: &RecordBatch,
    series: &[usize],
    schema: &SchemaRef,
    start_ns: Option<i64>,
) -> DfResult<RecordBatch> {
    let take = UInt64Array::from_iter_values(series.iter().map(|&i| i as u64));
    let min_time = column_i64(index, MIN_TIME)?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column: ArrayRef = if field.name() == TIMESTAMP_COLUMN {
            let times: ArrayRef = Arc::new(Int64Array::from_iter_values(
                series.iter().map(|&i| min_time.value(i).max(start_ns.unwrap_or(i64::MIN))),
            ));
            compute::cast(&times, field.data_type())?
        } else if field.name() == VALUE_COLUMN {
            Arc::new(datafusion::arrow::array::Float64Array::from_value(f64::NAN, series.len()))
        } else {
            match index.column_by_name(field.name()) {
                Some(column) => compute::cast(&compute::take(column, &take, None)?, field.data_type())?,
                None => datafusion::arrow::array::new_null_array(field.data_type(), series.len()),
            }
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn column_u64<'a>(index: &'a RecordBatch, name: &str) -> DfResult<&'a UInt64Array> {
    index
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| datafusion::error::DataFusionError::Internal(format!("series index without {name}")))
}

fn column_i64<'a>(index: &'a RecordBatch, name: &str) -> DfResult<&'a Int64Array> {
    index
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| datafusion::error::DataFusionError::Internal(format!("series index without {name}")))
}

/// What a scan reads of one shared segment.
pub(crate) enum SharedRead {
    /// Nothing: no series of the file can match.
    Nothing,
    /// The file, through a row selection: `narrowed` when the index chose its series by
    /// every label filter (they need not be evaluated again while reading it), `inside` when every row
    /// it reads is inside the scan's time bounds (nor need they).
    File { file: Box<PartitionedFile>, narrowed: bool, inside: bool },
    /// One row per matching series (a series scan, from the index).
    Series(RecordBatch),
    /// The matching series' runs, their labels from the index (see [`crate::indexed_scan`]).
    Indexed(IndexedFile),
}

/// What a scan of a metric table wants of its shared segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentReading {
    /// Its rows, labels read from the file.
    Rows,
    /// Its rows, labels taken from the series index where it chose the series by every
    /// filter (see `indexed_scan`). A label column may then hold a valid key to a null value
    /// (a series without the label): for readers that take a dictionary's values into
    /// account, as the PromQL sweep does.
    RowsLabelledByIndex,
    /// One row per matching series, from the index (see [`crate::Storage::series_provider`]).
    Series,
}

/// The segment files a scan reads, sorted by what the series index did to them: read whole
/// (every filter evaluated row by row), narrowed to the index's series (label filters
/// already applied), or answered as series rows from the index; and the files read whole
/// or narrowed, by whether their rows lie inside the time bounds (evaluating those row by
/// row was a fifth of a one-hour selector's time).
#[derive(Default)]
pub(crate) struct ScanFiles {
    whole: TimeSplit,
    narrowed: TimeSplit,
    series: Vec<RecordBatch>,
    indexed: Vec<IndexedFile>,
}

#[derive(Default)]
struct TimeSplit {
    crossing: Vec<PartitionedFile>,
    inside: Vec<PartitionedFile>,
}

impl TimeSplit {
    fn push(&mut self, file: PartitionedFile, inside: bool) {
        if inside { self.inside.push(file) } else { self.crossing.push(file) }
    }
}

impl ScanFiles {
    /// A file without a series index (a segment of one table), read whole.
    pub(crate) fn push_whole(&mut self, file: PartitionedFile) {
        self.whole.push(file, false);
    }

    pub(crate) fn push(&mut self, read: SharedRead) {
        match read {
            SharedRead::Nothing => {}
            SharedRead::File { file, narrowed: false, inside } => self.whole.push(*file, inside),
            SharedRead::File { file, narrowed: true, inside } => self.narrowed.push(*file, inside),
            SharedRead::Series(batch) => self.series.push(batch),
            SharedRead::Indexed(file) => self.indexed.push(file),
        }
    }

    /// The scans of these files, and the series rows the index answered: files the index
    /// narrowed read as `labels.projection` asks, their label filters already applied;
    /// files read whole with `labels.read`'s columns, for [`LabelFilters::apply`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn plans(
        self,
        storage: &crate::Storage,
        state: &dyn Session,
        schema: &SchemaRef,
        statistics: datafusion::common::Statistics,
        labels: &LabelFilters,
        filters: &[Expr],
        limit: Option<usize>,
        series_once: bool,
    ) -> DfResult<ScanParts> {
        let left: Vec<Expr> = filters.iter().filter(|f| !labels.filters.contains(f)).cloned().collect();
        // Time bounds are exact filters (DataFusion applies them nowhere else): files inside
        // them are read without.
        let timeless = |filters: &[Expr]| -> Vec<Expr> {
            filters.iter().filter(|f| !is_time_bound(f, TIMESTAMP_COLUMN)).cloned().collect()
        };
        // A limit holds for the whole files' rows only after the label filters.
        let whole_limit = if labels.filters.is_empty() { limit } else { None };
        let mut parts = ScanParts { series: self.series, ..ScanParts::default() };
        if !self.indexed.is_empty() {
            let config = state.config();
            let (plan, once) = crate::indexed_scan::plan(
                storage.inner.store.clone(),
                storage.inner.series_indexes.clone(),
                schema,
                labels.projection.as_ref(),
                self.indexed,
                config.target_partitions(),
                config.batch_size(),
                series_once,
            )?;
            parts.exact.push(plan);
            parts.series_once = once;
        }
        let groups = [
            (self.whole.crossing, filters.to_vec(), false),
            (self.whole.inside, timeless(filters), false),
            (self.narrowed.crossing, left.clone(), true),
            (self.narrowed.inside, timeless(&left), true),
        ];
        for (files, filters, narrowed) in groups {
            if files.is_empty() {
                continue;
            }
            let (projection, limit) = if narrowed { (&labels.projection, limit) } else { (&labels.read, whole_limit) };
            let scan = crate::catalog::parquet_scan(
                storage,
                state,
                schema,
                files,
                statistics.clone(),
                projection.clone(),
                &filters,
                limit,
            )
            .await?;
            if narrowed { parts.exact.push(scan) } else { parts.unfiltered.push(scan) }
        }
        Ok(parts)
    }
}

/// A scan's inputs by whether they applied its label filters: plans that did (files the
/// series index narrowed, in the projection's columns), plans that did not (files read whole,
/// in [`LabelFilters::read`]'s), and rows (the write buffer's, the index's series rows; in the
/// table's schema).
#[derive(Default)]
pub(crate) struct ScanParts {
    pub exact: Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    pub unfiltered: Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    pub series: Vec<RecordBatch>,
    /// The indexed files' plan (in `exact`) reads them in one partition, each series in one
    /// run (see `indexed_scan::plan`).
    pub series_once: bool,
}

/// What a scan reads of one shared segment: the runs of `entries` (its manifest entries the
/// scan reads), narrowed to the series the index says the filters can match; or, as
/// `reading` asks, those series themselves (rows in `schema`, the scan's) or their runs
/// labelled by the index.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn shared_read(
    storage: &crate::Storage,
    state: &dyn Session,
    entries: &[&crate::manifest::SegmentMeta],
    filters: &[Expr],
    scan: &crate::buffer::ScanFilter,
    is_label: &(dyn Fn(&str) -> bool + Sync),
    reading: SegmentReading,
    schema: &SchemaRef,
) -> DfResult<SharedRead> {
    let Some(first) = entries.first() else { return Ok(SharedRead::Nothing) };
    let file_rows = first.file_rows();
    let mut runs: Vec<(u64, u64)> = entries.iter().filter_map(|s| s.shared.map(|at| (at.first_row, s.rows))).collect();
    runs.sort_unstable();
    let inside = entries.iter().all(|s| scan.contains(s.min_time_ns, s.max_time_ns));
    if (!filters.is_empty() || reading != SegmentReading::Rows)
        && let Some(index) = storage.inner.series_indexes.get(&storage.inner.store, &first.path).await
    {
        let remembering = Some(Remembering { cache: &storage.inner.series_indexes, path: &first.path });
        let lookup =
            Lookup { runs: &runs, filters, is_label, start_ns: scan.start_ns, end_ns: scan.end_ns, remembering };
        let (series, exact) = matching_series(state, &index, &lookup)?;
        if reading == SegmentReading::Series {
            return Ok(if series.is_empty() {
                SharedRead::Nothing
            } else {
                SharedRead::Series(series_rows(&index, &series, schema, scan.start_ns)?)
            });
        }
        let (first_rows, rows) = (column_u64(&index, FIRST_ROW)?, column_u64(&index, ROWS)?);
        let matching: Vec<(u64, u64)> = series.iter().map(|&i| (first_rows.value(i), rows.value(i))).collect();
        // A segment that merged many partitions: only the part of each run the range needs.
        let (series, matching) = if inside {
            (series, matching)
        } else {
            narrowed_by_marks(&index, series, matching, scan.start_ns, scan.end_ns)
        };
        let skipped = rows_of(&runs) - rows_of(&matching);
        storage.inner.rows_skipped_by_index.fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("vigil_storage_rows_skipped_by_series_index_total").increment(skipped);
        if matching.is_empty() {
            return Ok(SharedRead::Nothing);
        }
        // Labels from the index only where nothing is left to evaluate but the time bounds.
        if reading == SegmentReading::RowsLabelledByIndex
            && exact
            && filters.iter().all(|f| is_label_filter(f, is_label) || is_time_bound(f, TIMESTAMP_COLUMN))
        {
            return Ok(SharedRead::Indexed(IndexedFile {
                path: first.path.clone(),
                size: first.size_bytes,
                file_rows,
                index,
                series,
                runs: matching,
                bounds: (!inside).then(|| (scan.start_ns.unwrap_or(i64::MIN), scan.end_ns.unwrap_or(i64::MAX))),
            }));
        }
        let file = PartitionedFile::new(first.path.clone(), first.size_bytes);
        let file = file.with_extension(ParquetRowSelection::new(runs_selection(&matching, file_rows)));
        return Ok(SharedRead::File { file: Box::new(file), narrowed: exact, inside });
    }
    let file = PartitionedFile::new(first.path.clone(), first.size_bytes);
    let file = file.with_extension(ParquetRowSelection::new(runs_selection(&runs, file_rows)));
    Ok(SharedRead::File { file: Box::new(file), narrowed: false, inside })
}

fn rows_of(runs: &[(u64, u64)]) -> u64 {
    runs.iter().map(|(_, rows)| rows).sum()
}

/// Runs of rows (first row, rows; sorted, not overlapping) as a selection over a file of
/// `file_rows` rows.
pub fn runs_selection(runs: &[(u64, u64)], file_rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for &(first, rows) in runs {
        if first > at {
            selectors.push(RowSelector::skip((first - at) as usize));
        }
        if rows > 0 {
            selectors.push(RowSelector::select(rows as usize));
        }
        at = at.max(first + rows);
    }
    if file_rows > at {
        selectors.push(RowSelector::skip((file_rows - at) as usize));
    }
    RowSelection::from(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{metric_schema, timestamp_type};
    use datafusion::arrow::array::{DictionaryArray, Float64Array};
    use datafusion::arrow::datatypes::Int32Type;

    fn metric(labels: &[&str], rows: &[(&[&str], i64)]) -> RecordBatch {
        let schema = metric_schema(labels.iter().copied());
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, _) in labels.iter().enumerate() {
            let values: DictionaryArray<Int32Type> =
                rows.iter().map(|r| r.0.get(i).copied().filter(|v| !v.is_empty())).collect();
            arrays.push(Arc::new(values));
        }
        let times: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
        arrays.push(compute::cast(&times, &timestamp_type()).unwrap());
        arrays.push(Arc::new(Float64Array::from_iter_values(rows.iter().map(|_| 1.0))));
        RecordBatch::try_new(schema, arrays).unwrap()
    }

    #[test]
    fn each_series_run_of_a_shared_file_is_one_index_row() {
        // Sorted by series then time, as a flush writes them; "b" has a series without `job`.
        let a = metric(
            &["instance", "job"],
            &[(&["x", "api"], 1), (&["x", "api"], 2), (&["x", "db"], 1), (&["y", "api"], 5), (&["y", "api"], 9)],
        );
        let b = metric(&["instance"], &[(&["x"], 3), (&[""], 4), (&[""], 7)]);
        let files = crate::shared::pack(vec![("a".into(), a), ("b".into(), b)]).unwrap();
        let index = build(&files[0].1, TWO_HOURS_NS).unwrap();
        assert_eq!(index.num_rows(), 5);
        let column = |name: &str| compute::cast(index.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let strings =
            |name: &str| column(name).as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>();
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(strings(crate::shared::TABLE_COLUMN), some(&["a", "a", "a", "b", "b"]));
        assert_eq!(
            strings("instance"),
            vec![Some("x".into()), Some("x".into()), Some("y".into()), Some("x".into()), None]
        );
        assert_eq!(strings("job")[..3], some(&["api", "db", "api"])[..]);
        let u64s = |name: &str| column_u64(&index, name).unwrap().values().to_vec();
        let i64s = |name: &str| column_i64(&index, name).unwrap().values().to_vec();
        assert_eq!(u64s(FIRST_ROW), [0, 2, 3, 5, 6]);
        assert_eq!(u64s(ROWS), [2, 1, 2, 1, 2]);
        assert_eq!(i64s(MIN_TIME), [1, 1, 5, 3, 4]);
        assert_eq!(i64s(MAX_TIME), [2, 1, 9, 3, 7]);
    }

    const TWO_HOURS_NS: i64 = 7_200_000_000_000;

    #[test]
    fn marks_cut_a_run_of_many_partitions_to_the_rows_a_range_may_need() {
        // Partitions of 10 ns: "x" runs from 5 to 34 (crossing 10, 20 and 30), "y" stays in one.
        let x: Vec<i64> = vec![5, 8, 10, 11, 19, 21, 22, 29, 30, 34];
        let mut rows: Vec<(&[&str], i64)> = x.iter().map(|&t| (&["x"][..], t)).collect();
        rows.extend([(&["y"][..], 12), (&["y"][..], 18)]);
        let files = crate::shared::pack(vec![("a".into(), metric(&["instance"], &rows))]).unwrap();
        let index = build(&files[0].1, 10).unwrap();
        let marks = index.column_by_name(MARKS).unwrap().as_list::<i32>();
        let of = |i: usize| marks.value(i).as_primitive::<datafusion::arrow::datatypes::UInt32Type>().values().to_vec();
        // Rows of "x" before 10, 20 and 30; "y" crosses none.
        assert_eq!((of(0), of(1)), (vec![2, 5, 8], vec![]));
        let all = || (vec![0, 1], vec![(0, 10), (10, 2)]);
        let cut = |low: Option<i64>, high: Option<i64>| {
            let (series, runs) = all();
            narrowed_by_marks(&index, series, runs, low, high)
        };
        // [20, 29]: "x" from its row at 21 (the 6th: rows before the mark at 20 are earlier)
        // to its row at 29, "y" (12..18) left out by nothing here: it has no marks, whole.
        assert_eq!(cut(Some(20), Some(29)), (vec![0, 1], vec![(5, 3), (10, 2)]));
        // A range inside one partition between two of the run's samples: the cut holds the
        // rows of that partition, which the scan then filters to none.
        assert_eq!(cut(Some(12), Some(13)).1[0], (2, 3));
        // Bounds on marks: a row at the mark is in, one before it out.
        assert_eq!(cut(Some(10), Some(10)).1[0], (2, 3));
        assert_eq!(cut(Some(9), Some(9)).1[0], (0, 2));
        // Open ends, and a range past the run's last partition: the last partition's rows.
        assert_eq!(cut(None, None), all());
        assert_eq!(cut(Some(31), None).1[0], (8, 2));
        assert_eq!(cut(None, Some(9)).1[0], (0, 2));
        // Every row the cut leaves out is outside the range, for every range.
        let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
        for low in 0..40 {
            for high in low..40 {
                let (series, runs) = cut(Some(low), Some(high));
                for (whole_series, (first, count)) in [(0, (0u64, 10u64)), (1, (10, 2))] {
                    let kept = series.iter().position(|&s| s == whole_series).map(|k| runs[k]);
                    for row in first..first + count {
                        let in_range = (low..=high).contains(&times[row as usize]);
                        let read = kept.is_some_and(|(f, n)| (f..f + n).contains(&row));
                        assert!(read || !in_range, "row {row} ({}) in [{low}, {high}] cut", times[row as usize]);
                    }
                }
            }
        }
        // An index without marks (written before them) cuts nothing.
        let old = index.project(&(0..index.num_columns() - 1).collect::<Vec<_>>()).unwrap();
        let (series, runs) = all();
        assert_eq!(narrowed_by_marks(&old, series, runs, Some(20), Some(29)), all());
    }

    #[test]
    fn a_lookup_evaluates_filters_on_its_tables_stretch_and_answers_file_wide_rows() {
        let a = metric(&["instance", "job"], &[(&["x", "api"], 1), (&["x", "db"], 1), (&["y", "api"], 5)]);
        let b = metric(&["instance"], &[(&["x"], 3), (&[""], 4), (&["y"], 7)]);
        let c = metric(&["instance"], &[(&["y"], 2), (&["x"], 2), (&["x"], 3)]);
        let files = crate::shared::pack(vec![("a".into(), a), ("b".into(), b), ("c".into(), c)]).unwrap();
        let index = build(&files[0].1, TWO_HOURS_NS).unwrap();
        let tables =
            compute::cast(index.column_by_name(crate::shared::TABLE_COLUMN).unwrap(), &DataType::Utf8).unwrap();
        let (first_rows, rows) = (column_u64(&index, FIRST_ROW).unwrap(), column_u64(&index, ROWS).unwrap());
        let runs_of = |names: &[&str]| -> Vec<(u64, u64)> {
            (0..index.num_rows())
                .filter(|&i| names.contains(&tables.as_string::<i32>().value(i)))
                .map(|i| (first_rows.value(i), rows.value(i)))
                .collect()
        };
        let state = datafusion::prelude::SessionContext::new().state();
        let is_label = |name: &str| name == "instance" || name == "job";
        let find = |runs: &[(u64, u64)], filters: &[Expr]| {
            let lookup = Lookup { runs, filters, is_label: &is_label, start_ns: None, end_ns: None, remembering: None };
            matching_series(&state, &index, &lookup).unwrap()
        };
        use datafusion::prelude::{col, lit};
        let x = [col("instance").eq(lit("x"))];
        // "b" sits in the middle of the file: its rows are the index's 3 to 5.
        assert_eq!(find(&runs_of(&["b"]), &x), (vec![3], true));
        assert_eq!(find(&runs_of(&["b"]), &[]), (vec![3, 4, 5], true));
        // Two tables apart: the stretch between them ("b") is not theirs.
        assert_eq!(find(&runs_of(&["a", "c"]), &x), (vec![0, 1, 7], true));
        assert_eq!(find(&runs_of(&["c"]), &[col("job").eq(lit("api"))]).0, Vec::<usize>::new());
        assert_eq!(find(&[], &x).0, Vec::<usize>::new());
    }

    #[tokio::test]
    async fn an_index_out_of_file_order_is_not_used() {
        let store: Arc<dyn ObjectStore> = Arc::new(datafusion::object_store::memory::InMemory::new());
        let a = metric(&["job"], &[(&["x"], 1), (&["y"], 1), (&["z"], 1)]);
        let index = build(&crate::shared::pack(vec![("a".into(), a)]).unwrap()[0].1, TWO_HOURS_NS).unwrap();
        write(&store, "s/1.parquet", &index).await.unwrap();
        assert_eq!(read(&store, "s/1.parquet").await.unwrap().map(|i| i.num_rows()), Some(3));
        // The same rows, the last two swapped.
        let swapped = compute::take_record_batch(&index, &UInt64Array::from(vec![0, 2, 1])).unwrap();
        write(&store, "s/2.parquet", &swapped).await.unwrap();
        assert!(read(&store, "s/2.parquet").await.is_err());
        let cache = IndexCache::new(DEFAULT_CACHE_BYTES);
        assert!(cache.get(&store, "s/2.parquet").await.is_none(), "scanned without it");
        // Marks outside their run, or out of order, would cut rows a query needs.
        let rows: Vec<(&[&str], i64)> = vec![(&["x"], 5), (&["x"], 15), (&["x"], 25)];
        let index = build(&crate::shared::pack(vec![("a".into(), metric(&["job"], &rows))]).unwrap()[0].1, 10).unwrap();
        write(&store, "s/3.parquet", &index).await.unwrap();
        let marks = read(&store, "s/3.parquet").await.unwrap().unwrap();
        let marks = marks.column_by_name(MARKS).unwrap().as_list::<i32>().value(0);
        assert_eq!(marks.as_primitive::<datafusion::arrow::datatypes::UInt32Type>().values().to_vec(), [1, 2]);
        for bad in [vec![1, 4], vec![2, 1]] {
            let mut list =
                ListBuilder::new(UInt32Builder::new()).with_field(Field::new_list_field(DataType::UInt32, false));
            list.values().append_slice(&bad);
            list.append(true);
            let column = index.schema().index_of(MARKS).unwrap();
            let mut columns = index.columns().to_vec();
            columns[column] = Arc::new(list.finish());
            write(&store, "s/4.parquet", &RecordBatch::try_new(index.schema(), columns).unwrap()).await.unwrap();
            assert!(read(&store, "s/4.parquet").await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_are_found_in_their_runs() {
        let runs = [(0, 3), (10, 5), (15, 2)];
        let inside: Vec<u64> = (0..20).filter(|&row| within_runs(&runs, row)).collect();
        assert_eq!(inside, [0, 1, 2, 10, 11, 12, 13, 14, 15, 16]);
        assert!(!within_runs(&[], 0));
    }

    #[test]
    fn runs_become_a_selection_of_exactly_their_rows() {
        let selection = runs_selection(&[(0, 3), (10, 5), (15, 2)], 40);
        assert_eq!(selection.row_count(), 10);
        assert_eq!(selection.skipped_row_count(), 30);
        let rows: Vec<bool> = selection.iter().flat_map(|s| std::iter::repeat_n(!s.skip, s.row_count)).collect();
        let expected: Vec<bool> = (0..40).map(|row| row < 3 || (10..17).contains(&row)).collect();
        assert_eq!(rows, expected);
        let one = runs_selection(&[(3, 4)], 10);
        assert_eq!((one.row_count(), one.skipped_row_count()), (4, 6));
        let whole = runs_selection(&[(0, 4)], 4);
        assert_eq!((whole.row_count(), whole.skipped_row_count()), (4, 0));
    }

    #[test]
    fn the_cache_keeps_to_its_budget_and_forgets_gone_segments() {
        let cache = IndexCache::new(DEFAULT_CACHE_BYTES);
        let index = Arc::new(
            build(
                &crate::shared::pack(vec![("a".into(), metric(&["job"], &[(&["x"], 1)]))]).unwrap()[0].1,
                TWO_HOURS_NS,
            )
            .unwrap(),
        );
        let size = index.get_array_memory_size();
        let fit = DEFAULT_CACHE_BYTES / (size + 8) + 10;
        for i in 0..fit {
            cache.insert(format!("p{i:06}"), Some(index.clone()));
        }
        let entries = cache.entries.lock();
        assert!(entries.bytes <= DEFAULT_CACHE_BYTES, "{} bytes", entries.bytes);
        assert!(!entries.by_path.contains_key("p000000"), "the oldest went first");
        assert!(entries.by_path.contains_key(&format!("p{:06}", fit - 1)));
        assert_eq!(entries.order.len(), entries.by_path.len());
        drop(entries);
        cache.remove(&format!("p{:06}", fit - 1));
        assert!(!cache.entries.lock().by_path.contains_key(&format!("p{:06}", fit - 1)));
    }

    #[test]
    fn label_filters_evaluated_once_are_remembered_per_index_and_stretch() {
        use datafusion::prelude::{col, lit};
        let a = metric(&["job"], &[(&["api"], 1), (&["db"], 1), (&["web"], 1)]);
        let b = metric(&["job"], &[(&["api"], 2), (&["db"], 2)]);
        let index = Arc::new(
            build(&crate::shared::pack(vec![("a".into(), a), ("b".into(), b)]).unwrap()[0].1, TWO_HOURS_NS).unwrap(),
        );
        let cache = IndexCache::new(DEFAULT_CACHE_BYTES);
        cache.insert("s/1.parquet".into(), Some(index.clone()));
        let only_index = cache.entries.lock().bytes;
        let state = datafusion::prelude::SessionContext::new().state();
        let is_label = |name: &str| name == "job";
        let remembering = Some(Remembering { cache: &cache, path: "s/1.parquet" });
        let find = |runs: &[(u64, u64)], filter: Expr| {
            let filters = [filter];
            let lookup =
                Lookup { runs, filters: &filters, is_label: &is_label, start_ns: None, end_ns: None, remembering };
            matching_series(&state, &index, &lookup).unwrap().0
        };
        let (table_a, table_b) = ([(0, 3)], [(3, 2)]);
        let api = col("job").eq(lit("api"));
        assert_eq!(find(&table_a, api.clone()), [0]);
        // The same filter on another table's stretch, and another filter on the same stretch,
        // are answers of their own.
        assert_eq!(find(&table_b, api.clone()), [3]);
        assert_eq!(find(&table_a, col("job").eq(lit("db"))), [1]);
        assert_eq!(find(&table_a, col("job").not_eq(lit("api"))), [1, 2]);
        let held = cache.entries.lock().by_path["s/1.parquet"].matches_held();
        assert_eq!(held, 4);
        assert!(cache.entries.lock().bytes > only_index);
        // A remembered answer is the one used: one planted for `api` on table a's stretch is
        // answered as is.
        let hash = match_hash(&api, 0, 3);
        let planted = BooleanBuffer::from(vec![false, false, true]);
        {
            let mut entries = cache.entries.lock();
            let cached = entries.by_path.get_mut("s/1.parquet").unwrap();
            let bucket = cached.matches.get_mut(&hash).unwrap();
            bucket[0].1 = planted;
        }
        assert_eq!(find(&table_a, api.clone()), [2]);
        // A filter with a volatile function is evaluated every time, never remembered.
        let volatile = api.clone().and(datafusion::functions::math::expr_fn::random().lt(lit(2.0)));
        assert_eq!(find(&table_a, volatile), [0]);
        assert_eq!(cache.entries.lock().by_path["s/1.parquet"].matches_held(), 4);
        // Past the bound per index, its matches start over; the bytes counted follow.
        for i in 0..MATCHES_PER_INDEX {
            find(&table_a, col("job").eq(lit(format!("j{i}"))));
        }
        let entries = cache.entries.lock();
        let cached = &entries.by_path["s/1.parquet"];
        assert_eq!(cached.matches_held(), 4);
        assert_eq!(cached.matches.values().map(Vec::len).sum::<usize>(), 4);
        assert_eq!(entries.bytes, cached.index_bytes + cached.matches_bytes);
        drop(entries);
        cache.remove("s/1.parquet");
        assert_eq!(cache.entries.lock().bytes, 0);
    }

    #[tokio::test]
    async fn a_segments_reader_metadata_is_kept_and_counted_with_its_index() {
        let a = metric(&["job"], &[(&["api"], 1), (&["db"], 1)]);
        let file = crate::shared::pack(vec![("a".into(), a)]).unwrap().remove(0).1;
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, file.schema(), None).unwrap();
        writer.write(&file).unwrap();
        writer.close().unwrap();
        let reading = ArrowReaderMetadata::load(&bytes::Bytes::from(bytes), Default::default()).unwrap();
        let cache = IndexCache::new(DEFAULT_CACHE_BYTES);
        // Not kept for a segment whose index is not held.
        cache.keep_reading("s/1.parquet", reading.clone());
        assert!(cache.reading("s/1.parquet").is_none());
        cache.insert("s/1.parquet".into(), Some(Arc::new(build(&file, TWO_HOURS_NS).unwrap())));
        let only_index = cache.entries.lock().bytes;
        cache.keep_reading("s/1.parquet", reading.clone());
        cache.keep_reading("s/1.parquet", reading.clone());
        let kept = cache.reading("s/1.parquet").expect("kept");
        assert_eq!(kept.schema(), reading.schema());
        let counted = cache.entries.lock().bytes - only_index;
        assert!(counted >= reading.metadata().memory_size(), "{counted} bytes, counted once");
        assert!(counted < 2 * reading.metadata().memory_size() + 4096, "{counted} bytes, counted once");
        cache.remove("s/1.parquet");
        assert_eq!(cache.entries.lock().bytes, 0);
        assert!(cache.reading("s/1.parquet").is_none());
    }
}
