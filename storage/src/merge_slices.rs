//! A compaction's inputs read in slices of series, so a merge holds at most a slice's rows in
//! memory however large the window it merges.
//!
//! Every metric segment is sorted by (table, series, time), so a range of series keys is one
//! run of rows in each input. The inputs' series runs (from their series indexes, or from
//! their table and label columns where a file has none) are put in key order and cut into
//! slices of at most `max_rows` rows. A series is never cut: its rows in every input go to one
//! slice, where the merge puts them together and drops repeated timestamps. Each slice reads
//! only its run of rows of each input (a Parquet row selection: the offset index skips the
//! pages outside it) and is merged and written as files of its own. A window merged so is one
//! run per series for its whole length (where merging in halves of time paid each series'
//! costs of a file once a half), in files of disjoint series.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array, new_null_array};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, UInt64Type};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::object_store::{ObjectStore, ObjectStoreExt, path::Path};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::file::metadata::PageIndexPolicy;

use crate::manifest::SegmentMeta;
use crate::schema::{label_columns, metric_schema, series_order};
use crate::shared::{self, TABLE_COLUMN};
use crate::{StorageError, segment, series_index};

/// Rows a reader decodes at a time.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// One input file of a merge: its bytes (compressed, as stored), its footer, and the
/// manifest's entries naming its tables' rows.
pub(crate) struct Input {
    path: String,
    bytes: Bytes,
    reading: ArrowReaderMetadata,
    entries: Vec<SegmentMeta>,
}

impl Input {
    /// Fetches the file of `entries` (one file's entries, as the manifest names its tables).
    pub(crate) async fn open(store: &Arc<dyn ObjectStore>, entries: Vec<SegmentMeta>) -> Result<Input, StorageError> {
        let path =
            entries.first().map(|e| e.path.clone()).ok_or_else(|| StorageError::Internal("no entries".into()))?;
        let bytes = store.get(&Path::from(path.as_str())).await?.bytes().await?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let reading = ArrowReaderMetadata::load(&bytes, options)?;
        Ok(Input { path, bytes, reading, entries })
    }

    fn file_rows(&self) -> u64 {
        self.entries.first().map_or(0, SegmentMeta::file_rows)
    }

    fn is_shared(&self) -> bool {
        self.entries.iter().any(|e| e.shared.is_some())
    }

    /// The rows of each entry (first row in the file, how many).
    fn entry_rows(&self) -> impl Iterator<Item = (&SegmentMeta, Range<u64>)> {
        self.entries.iter().map(|e| {
            let first = e.shared.map_or(0, |at| at.first_row);
            (e, first..first + e.rows)
        })
    }

    /// Rows `range` of the file, values as doubles, as each entry's rows in it: (table, rows
    /// in the table's own columns).
    pub(crate) fn read(&self, range: Range<u64>) -> Result<Vec<(String, RecordBatch)>, StorageError> {
        let selection = series_index::runs_selection(&[(range.start, range.end - range.start)], self.file_rows());
        let batches = segment::rows(
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.bytes.clone(), self.reading.clone())
                .with_row_selection(selection)
                .with_batch_size(READ_BATCH_ROWS),
        )?;
        let Some(first) = batches.first() else { return Ok(Vec::new()) };
        let rows = compute::concat_batches(&first.schema(), &batches)?;
        drop(batches);
        let mut tables = Vec::new();
        for (entry, rows_of_entry) in self.entry_rows() {
            let (start, end) = (rows_of_entry.start.max(range.start), rows_of_entry.end.min(range.end));
            if start >= end {
                continue;
            }
            let (offset, len) = ((start - range.start) as usize, (end - start) as usize);
            let table_rows = match entry.shared {
                Some(_) => shared::table_rows(&rows, offset, len)?,
                None => rows.slice(offset, len),
            };
            tables.push((entry.table.clone(), table_rows));
        }
        Ok(tables)
    }

    /// The label columns of the file (its tables' union, for a shared file).
    fn label_columns(&self) -> impl Iterator<Item = &str> {
        label_columns(self.reading.schema()).filter(|c| *c != TABLE_COLUMN)
    }
}

/// One series' run of rows in one input, keyed by (table, labels in series order).
struct SeriesRun {
    key: OwnedRow,
    rows: Range<u64>,
}

/// The rows of each slice in each input (`slices[s][i]`, empty where input `i` holds none of
/// slice `s`'s series): one slice of every input's rows where they hold at most `max_rows`, or
/// where an input's series cannot be told apart in order (no writer of today's store makes
/// such a file; it is merged whole, sorted, as before slices).
pub(crate) async fn plan(
    store: &Arc<dyn ObjectStore>,
    inputs: &Arc<Vec<Input>>,
    max_rows: u64,
) -> Result<Vec<Vec<Range<u64>>>, StorageError> {
    let total: u64 = inputs.iter().flat_map(|input| input.entries.iter().map(|e| e.rows)).sum();
    if total <= max_rows {
        return Ok(whole(inputs));
    }
    let mut indexes = Vec::with_capacity(inputs.len());
    for input in inputs.iter() {
        // No index (or an unreadable one): the input's own columns say where its series are.
        indexes.push(if input.is_shared() {
            series_index::read(store, &input.path).await.ok().flatten()
        } else {
            None
        });
    }
    let inputs = inputs.clone();
    tokio::task::spawn_blocking(move || {
        let mut columns: Vec<&str> = inputs.iter().flat_map(Input::label_columns).collect();
        columns.sort_unstable();
        columns.dedup();
        let schema = metric_schema(columns);
        let keys = Keys::new(series_order(&schema).into_iter().map(str::to_string).collect())?;
        let mut runs: Vec<Vec<SeriesRun>> = Vec::with_capacity(inputs.len());
        for (input, index) in inputs.iter().zip(indexes) {
            let found = match index {
                Some(index) => keys.runs_of_index(input, &index)?,
                None => keys.runs_of_rows(input)?,
            };
            let Some(found) = found else {
                tracing::debug!(segment = input.path, "a merge input's series are not in series order; merged whole");
                return Ok(whole(&inputs));
            };
            runs.push(found);
        }
        Ok(slices(&runs, max_rows))
    })
    .await
    .map_err(|e| StorageError::Internal(e.to_string()))?
}

/// One slice of every input's rows.
fn whole(inputs: &[Input]) -> Vec<Vec<Range<u64>>> {
    vec![inputs.iter().map(|input| 0..input.file_rows()).collect()]
}

/// Cuts the inputs' runs (each input's in key order) into slices of at most `max_rows` rows
/// (more only where one series alone holds more).
fn slices(runs: &[Vec<SeriesRun>], max_rows: u64) -> Vec<Vec<Range<u64>>> {
    let mut all: Vec<(usize, &SeriesRun)> =
        runs.iter().enumerate().flat_map(|(input, runs)| runs.iter().map(move |run| (input, run))).collect();
    all.sort_by(|a, b| a.1.key.cmp(&b.1.key));
    let empty = || vec![0..0; runs.len()];
    let mut slices: Vec<Vec<Range<u64>>> = Vec::new();
    let (mut slice, mut slice_rows) = (empty(), 0u64);
    let mut group_start = 0;
    while group_start < all.len() {
        let key = all[group_start].1.key.row();
        let group_end = (group_start..all.len()).find(|&g| all[g].1.key.row() != key).unwrap_or(all.len());
        let group = &all[group_start..group_end];
        let group_rows: u64 = group.iter().map(|(_, run)| run.rows.end - run.rows.start).sum();
        if slice_rows > 0 && slice_rows + group_rows > max_rows {
            slices.push(std::mem::replace(&mut slice, empty()));
            slice_rows = 0;
        }
        for (input, run) in group {
            let range = &mut slice[*input];
            *range = if range.is_empty() { run.rows.clone() } else { range.start..run.rows.end };
        }
        slice_rows += group_rows;
        group_start = group_end;
    }
    if slice_rows > 0 {
        slices.push(slice);
    }
    slices
}

/// Series keys comparable across inputs whatever label columns each holds: the table, then
/// every input's label columns in series order (a column an input lacks is null), as strings.
/// Each input is sorted by the same order over its own columns (nulls first, values by their
/// bytes), which this order extends.
struct Keys {
    order: Vec<String>,
    converter: RowConverter,
}

impl Keys {
    fn new(order: Vec<String>) -> Result<Keys, StorageError> {
        let converter = RowConverter::new(vec![SortField::new(DataType::Utf8); order.len() + 1])?;
        Ok(Keys { order, converter })
    }

    /// The keys of `rows`' rows (a batch with the table column, or of one table's rows).
    fn convert(&self, rows: &RecordBatch, table: Option<&str>) -> Result<Vec<OwnedRow>, StorageError> {
        let n = rows.num_rows();
        let table: ArrayRef = match (rows.column_by_name(TABLE_COLUMN), table) {
            (Some(column), _) => compute::cast(column, &DataType::Utf8)?,
            (None, Some(table)) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(table, n))),
            (None, None) => return Err(StorageError::Internal("rows of no table".into())),
        };
        let mut columns = vec![table];
        for name in &self.order {
            columns.push(match rows.column_by_name(name) {
                Some(column) => compute::cast(column, &DataType::Utf8)?,
                None => new_null_array(&DataType::Utf8, n),
            });
        }
        let converted = self.converter.convert_columns(&columns)?;
        Ok(converted.iter().map(|row| row.owned()).collect())
    }

    /// An input's runs from its series index (one row per run, in file order), those of its
    /// entries' tables; `None` when they are not in key order or miss rows of its entries.
    fn runs_of_index(&self, input: &Input, index: &RecordBatch) -> Result<Option<Vec<SeriesRun>>, StorageError> {
        let column = |name| {
            index
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .map(|c: &UInt64Array| c.values().clone())
                .ok_or_else(|| StorageError::Internal(format!("series index without {name}")))
        };
        let (first_rows, rows) = (column(series_index::FIRST_ROW)?, column(series_index::ROWS)?);
        let keys = self.convert(index, None)?;
        let runs = keys
            .into_iter()
            .zip(first_rows.iter().zip(rows.iter()))
            .map(|(key, (&first, &rows))| SeriesRun { key, rows: first..first + rows })
            .filter(|run| input.entry_rows().any(|(_, rows)| rows.contains(&run.rows.start)))
            .collect();
        Ok(ordered_and_whole(input, runs))
    }

    /// An input's runs found from its table and label columns, read a batch at a time (an
    /// input without a series index: written before indexes, or its index unreadable).
    fn runs_of_rows(&self, input: &Input) -> Result<Option<Vec<SeriesRun>>, StorageError> {
        let key_columns: Vec<&str> = std::iter::once(TABLE_COLUMN).chain(input.label_columns()).collect();
        let mask = ProjectionMask::columns(input.reading.metadata().file_metadata().schema_descr(), key_columns);
        let table = if input.is_shared() { None } else { input.entries.first().map(|e| e.table.as_str()) };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input.bytes.clone(), input.reading.clone())
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS)
            .build()?;
        let mut runs: Vec<SeriesRun> = Vec::new();
        let mut at = 0u64;
        for batch in reader {
            let batch = batch?;
            let columns: Vec<ArrayRef> = batch.columns().to_vec();
            // A table without labels is one series.
            let ranges: Vec<Range<usize>> = if columns.is_empty() {
                std::iter::once(0..batch.num_rows()).collect()
            } else {
                compute::partition(&columns)?.ranges()
            };
            let starts = UInt64Array::from_iter_values(ranges.iter().map(|r| r.start as u64));
            let firsts = compute::take_record_batch(&batch, &starts)?;
            for (key, range) in self.convert(&firsts, table)?.into_iter().zip(ranges) {
                let rows = at + range.start as u64..at + range.end as u64;
                match runs.last_mut() {
                    // A run going on across the batch boundary.
                    Some(last) if last.key == key && last.rows.end == rows.start => last.rows.end = rows.end,
                    _ => runs.push(SeriesRun { key, rows }),
                }
            }
            at += batch.num_rows() as u64;
        }
        let runs =
            runs.into_iter().filter(|run| input.entry_rows().any(|(_, rows)| rows.contains(&run.rows.start))).collect();
        Ok(ordered_and_whole(input, runs))
    }
}

/// `runs` when their keys rise with their rows and they hold every row of the input's entries.
fn ordered_and_whole(input: &Input, runs: Vec<SeriesRun>) -> Option<Vec<SeriesRun>> {
    let ordered = runs.windows(2).all(|pair| pair[0].key < pair[1].key && pair[0].rows.end <= pair[1].rows.start);
    let held: u64 = runs.iter().map(|run| run.rows.end - run.rows.start).sum();
    let named: u64 = input.entries.iter().map(|e| e.rows).sum();
    (ordered && held == named).then_some(runs)
}
