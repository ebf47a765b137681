//! A scan of shared segments that reads each row's time and value only, and takes its labels
//! from the segment's series index.
//!
//! A shared segment is sorted by (table, series, time) and its series index names each
//! series' run of rows. Once the index has chosen the series a scan reads (and applied its
//! label filters), the rows of those runs arrive in index order, so the label columns need
//! not be decoded at all: decoding them and validating their dictionary keys, every label of
//! every row, was a tenth of a 24 h `count by (job)`. Every label column of a batch is the
//! same array of keys (each row's series among those read) over that column's values per series,
//! so a reader finds a series' run by comparing one array of keys, not one per label.
//!
//! The PromQL sweep reads this way (`SegmentReading::RowsLabelledByIndex`, through
//! `Storage::table_reading` or `MetricSet::labelled_by_index`); a file whose index is missing
//! or did not apply every filter is read as before.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int32Array, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef, TimestampNanosecondType};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::object_store::ObjectStore;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::{StreamExt, TryStreamExt};

use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN};
use crate::series_index::{IndexCache, runs_selection};

/// A shared segment the series index chose series of.
pub(crate) struct IndexedFile {
    pub path: String,
    pub size: u64,
    pub file_rows: u64,
    pub index: Arc<RecordBatch>,
    /// The index rows (series) read, in file order.
    pub series: Vec<usize>,
    /// Their runs of rows: (first row, rows).
    pub runs: Vec<(u64, u64)>,
    /// The inclusive time bounds rows must lie in; `None` when every row of the file's runs
    /// does.
    pub bounds: Option<(i64, i64)>,
}

/// One file as a partition reads it: its runs, and per output column its value per index
/// row (`None` for time and value).
#[derive(Debug)]
struct FileRead {
    path: String,
    size: u64,
    file_rows: u64,
    labels: Vec<Option<ArrayRef>>,
    bounds: Option<(i64, i64)>,
    /// The runs of the series read, one each: (first row, rows), in file order. A run's place
    /// is its series' key in the label columns.
    runs: Vec<(u64, u64)>,
}

/// The plan reading `files` in `schema` (a table's), projected to `projection`, in up to
/// `partitions` partitions of about equal rows; and whether its rows come one run per series.
///
/// With `series_once`, files of disjoint series (the slices a merge wrote: a merged day of
/// many series is several files) are read in one partition, one after the other, so that each
/// series comes in one run, which lets the PromQL sweep drop its samples as its run ends
/// instead of holding every series' whole day until the last file is read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    store: Arc<dyn ObjectStore>,
    indexes: Arc<IndexCache>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    files: Vec<IndexedFile>,
    partitions: usize,
    batch_rows: usize,
    series_once: bool,
) -> DfResult<(Arc<dyn ExecutionPlan>, bool)> {
    let schema = Arc::new(match projection {
        Some(projection) => schema.project(projection)?,
        None => schema.as_ref().clone(),
    });
    let mut reads = Vec::with_capacity(files.len());
    for file in files {
        if i32::try_from(file.series.len()).is_err() || file.series.len() != file.runs.len() {
            return Err(DataFusionError::Internal("a series index of more than 2^31 series, or not a run each".into()));
        }
        let labels = file_labels(&schema, &file.index, &file.series)?;
        reads.push(FileRead {
            path: file.path,
            size: file.size,
            file_rows: file.file_rows,
            labels,
            bounds: file.bounds,
            runs: file.runs,
        });
    }
    let once = series_once && (reads.len() <= 1 || series_disjoint(&reads));
    let partitions = if once { 1 } else { partitions };
    // Whole files to the partition with the fewest rows yet: a file's runs are read in order,
    // so the sweep meets its series in the same order every time (splitting a file between
    // partitions made `sum` add them in a varying order, the last bits of answers varying).
    let mut streams: Vec<(u64, Vec<Arc<FileRead>>)> = vec![(0, Vec::new()); partitions.clamp(1, reads.len().max(1))];
    for read in reads {
        let rows: u64 = read.runs.iter().map(|r| r.1).sum();
        if let Some(lightest) = streams.iter_mut().min_by_key(|(rows, _)| *rows) {
            lightest.0 += rows;
            lightest.1.push(Arc::new(read));
        }
    }
    let partitions: Vec<Arc<dyn PartitionStream>> = streams
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| {
            Arc::new(IndexedPartition {
                schema: schema.clone(),
                store: store.clone(),
                indexes: indexes.clone(),
                files,
                batch_rows,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    Ok((Arc::new(StreamingTableExec::try_new(schema, partitions, None, Vec::new(), false, None)?), once))
}

/// True when no series (its values of the columns read) is read from two of `files`.
fn series_disjoint(files: &[FileRead]) -> bool {
    let mut seen = std::collections::HashSet::new();
    for file in files {
        let Some(columns) = file.labels.iter().flatten().map(|a| a.as_string_opt::<i32>()).collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        for series in 0..file.runs.len() {
            let key: Vec<Option<&str>> =
                columns.iter().map(|c| Array::is_valid(c, series).then(|| c.value(series))).collect();
            if !seen.insert(key) {
                return false;
            }
        }
    }
    true
}

/// The label values of each of `schema`'s columns (`None` for time and value) per series read
/// (`series`: index rows). Only those are cast to strings: a selective query reads a few
/// series of an index of thousands.
fn file_labels(schema: &SchemaRef, index: &RecordBatch, series: &[usize]) -> DfResult<Vec<Option<ArrayRef>>> {
    let label_type = crate::schema::dictionary_type();
    let rows = UInt32Array::from(
        series
            .iter()
            .map(|&row| u32::try_from(row))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| DataFusionError::Internal("a series index of more than 2^32 series".into()))?,
    );
    let mut labels = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        if field.name() == TIMESTAMP_COLUMN || field.name() == VALUE_COLUMN {
            labels.push(None);
            continue;
        }
        if field.data_type() != &label_type {
            return Err(DataFusionError::Internal(format!("label column {} is {}", field.name(), field.data_type())));
        }
        labels.push(Some(match index.column_by_name(field.name()) {
            Some(column) => compute::cast(&compute::take(column, &rows, None)?, &DataType::Utf8)?,
            None => new_null_array(&DataType::Utf8, series.len()),
        }));
    }
    Ok(labels)
}

/// One partition of the scan: its files, read one after the other.
#[derive(Debug)]
struct IndexedPartition {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    /// Where each file's reader metadata is kept, with its index.
    indexes: Arc<IndexCache>,
    files: Vec<Arc<FileRead>>,
    batch_rows: usize,
}

impl PartitionStream for IndexedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // DataFusion's own scans cache footers here too: a segment's is read once.
        let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
        let readers = Arc::new(CachedParquetFileReaderFactory::new(self.store.clone(), cache));
        let (schema, batch_rows, indexes) = (self.schema.clone(), self.batch_rows, self.indexes.clone());
        let batches = futures::stream::iter(self.files.clone())
            .then(move |file| read_file(readers.clone(), indexes.clone(), schema.clone(), file, batch_rows))
            .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// The batches of one file: its runs' time and value, labelled.
async fn read_file(
    readers: Arc<CachedParquetFileReaderFactory>,
    indexes: Arc<IndexCache>,
    schema: SchemaRef,
    file: Arc<FileRead>,
    batch_rows: usize,
) -> DfResult<futures::stream::BoxStream<'static, DfResult<RecordBatch>>> {
    let object = PartitionedFile::new(file.path.clone(), file.size);
    let mut reader: Box<dyn AsyncFileReader> =
        readers.create_reader(0, object, None, &ExecutionPlanMetricsSet::new())?;
    let metadata = match indexes.reading(&file.path) {
        Some(metadata) => metadata,
        None => {
            // The offset index lets a row selection skip whole pages unread: a selective
            // query's series are a few runs of a file, and without it every page before the
            // last selected row was decompressed and decoded only to be skipped.
            let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            let metadata = ArrowReaderMetadata::load_async(&mut reader, options).await?;
            indexes.keep_reading(&file.path, metadata.clone());
            metadata
        }
    };
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
    let mask = ProjectionMask::columns(builder.parquet_schema(), [TIMESTAMP_COLUMN, VALUE_COLUMN]);
    let stream = builder
        .with_projection(mask)
        .with_row_selection(runs_selection(&file.runs, file.file_rows))
        .with_batch_size(batch_rows)
        .build()?;
    let left = file.runs.first().map_or(0, |r| r.1);
    let mut labeller = Labeller { schema, file, run: 0, left };
    Ok(stream.map(move |batch| labeller.label(batch?)).boxed())
}

/// Gives each row of a file's batches its series, walking the runs as the rows arrive.
struct Labeller {
    schema: SchemaRef,
    file: Arc<FileRead>,
    /// The run the next row belongs to, and its rows not yet seen.
    run: usize,
    left: u64,
}

impl Labeller {
    fn label(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let rows = batch.num_rows();
        let mut keys: Vec<i32> = Vec::with_capacity(rows);
        while keys.len() < rows {
            if self.run >= self.file.runs.len() {
                return Err(DataFusionError::Internal(format!(
                    "segment {} has more rows than its series index says",
                    self.file.path
                )));
            }
            // Fewer than 2^31 runs (checked when planned).
            let key = self.run as i32;
            let take = self.left.min((rows - keys.len()) as u64) as usize;
            keys.extend(std::iter::repeat_n(key, take));
            self.left -= take as u64;
            if self.left == 0 {
                self.run += 1;
                self.left = self.file.runs.get(self.run).map_or(0, |r| r.1);
            }
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| DataFusionError::Internal(format!("segment {} without {name}", self.file.path)))
        };
        let (mut times, mut values) = (column(TIMESTAMP_COLUMN)?, column(VALUE_COLUMN)?);
        let mut keys = Int32Array::from(keys);
        if let Some((start, end)) = self.file.bounds {
            let stamps = times
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| DataFusionError::Internal("a time column that is not nanoseconds".into()))?;
            let inside: BooleanArray = stamps.iter().map(|t| Some(t.is_some_and(|t| t >= start && t <= end))).collect();
            if inside.true_count() < rows {
                times = compute::filter(&times, &inside)?;
                values = compute::filter(&values, &inside)?;
                keys = compute::filter(&keys, &inside)?.as_primitive::<Int32Type>().clone();
            }
        }
        // One validation of the keys for all the label columns: each has a value per series read.
        let mut shared: Option<DictionaryArray<Int32Type>> = None;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (field, labels) in self.schema.fields().iter().zip(&self.file.labels) {
            let column: ArrayRef = match labels {
                None if field.name() == TIMESTAMP_COLUMN => compute::cast(&times, field.data_type())?,
                None if field.data_type() == &DataType::Float64 => crate::decimal_values::doubles(&values)?,
                None => compute::cast(&values, field.data_type())?,
                Some(labels) => match &shared {
                    Some(first) => Arc::new(first.with_values(labels.clone())),
                    None => {
                        let first = DictionaryArray::<Int32Type>::try_new(keys.clone(), labels.clone())?;
                        shared = Some(first.clone());
                        Arc::new(first)
                    }
                },
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
