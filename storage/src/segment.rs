//! Parquet segments, written and read through `object_store`: a table's own (fixed tables,
//! and metric tables of older stores) sorted by series then time, or shared by the metric
//! tables of a partition (see [`crate::shared`]).

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Decimal64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::arrow_writer::compute_leaves;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;

use crate::manifest::{ColumnStats, column_stats};
use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN};
use crate::{StorageError, decimal_values};

/// Rows per row group of a fixed table's segment (spans, logs, drift): small enough that
/// statistics prune within a segment, which is how its reads skip rows.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows per row group of a metric segment: Parquet's own default. Its reads are chosen by the
/// series index (runs of rows, a row selection over the offset index), not by row-group
/// statistics, and each row group repeats a footer entry per column with its statistics, a
/// dictionary per label column and the last page of each: a merged day of 2,000 steady
/// counters (1,998,720 rows) took 125,111 bytes in 16 row groups of 128 Ki rows and 99,362
/// in 2 (one group for the whole file, 96,706, would leave a SQL scan of it one partition).
const METRIC_ROW_GROUP_ROWS: usize = datafusion::parquet::file::properties::DEFAULT_MAX_ROW_GROUP_ROW_COUNT;

/// Object path of a segment: under its node's directory, so that nodes never write the same
/// file.
pub fn segment_path(node: &str, table: &str, partition_start_ns: i64, id: u64) -> Path {
    Path::from_iter([
        "nodes",
        node,
        "tables",
        &table_dir(table),
        &partition_start_ns.to_string(),
        &format!("{id:016}.parquet"),
    ])
}

/// Longest table name used as a directory name as it is.
const PLAIN_DIR_MAX_BYTES: usize = 64;

/// The directory name of a table in the store. Table names are what senders sent (any
/// length, any character an OTLP name may hold), and a file name is not: a name of up to 64
/// letters, digits, `_` and `:` is used as it is, any other becomes its first safe
/// characters, `-` and a 64-bit FNV-1a hash of the whole name. `-` never occurs in a plain
/// name, so the two kinds never meet, and the name itself lives in the manifest: the
/// directory only groups files for a human reader (file names are unique per node anyway).
pub fn table_dir(table: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if !table.is_empty() && table.len() <= PLAIN_DIR_MAX_BYTES && table.chars().all(plain) {
        return std::borrow::Cow::Borrowed(table);
    }
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(table.as_bytes());
    let prefix: String = table.chars().filter(|&c| plain(c)).take(32).collect();
    std::borrow::Cow::Owned(format!("{prefix}-{:016x}", hasher.finish()))
}

/// Key of the table name in a segment's Parquet metadata: a file names its table even where
/// its directory is a hash (see [`table_dir`]), so a repair can rebuild a lost manifest.
pub const TABLE_KEY: &str = "vigil.table";

/// The index of a segment's time column, when it has one.
fn time_column(schema: &Schema) -> Option<usize> {
    let (index, field) = schema.column_with_name(TIMESTAMP_COLUMN)?;
    matches!(field.data_type(), DataType::Timestamp(..)).then_some(index)
}

/// How a segment stores its times (see [`time_encoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeEncoding {
    Deltas,
    Dictionary,
}

/// How a segment compresses its value column (see [`value_codec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueCodec {
    Zstd,
    Lz4,
}

/// A metric segment's value column and its encoding: doubles by their bytes (exponents
/// together, mantissas together); decimals (see `decimal_values`) by the deltas of their
/// mantissas, small between neighbours. `None` where the value column is of another type or
/// there is none (fixed tables).
fn value_encoding(schema: &Schema) -> Option<(usize, Encoding)> {
    let (index, field) = schema.column_with_name(VALUE_COLUMN)?;
    match field.data_type() {
        DataType::Float64 => Some((index, Encoding::BYTE_STREAM_SPLIT)),
        DataType::Decimal64(..) => Some((index, Encoding::DELTA_BINARY_PACKED)),
        _ => None,
    }
}

fn writer_properties(
    batch: &RecordBatch,
    table: Option<&str>,
    times: TimeEncoding,
    values: ValueCodec,
) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_key_value_metadata(table.map(|table| {
            vec![datafusion::parquet::file::metadata::KeyValue::new(TABLE_KEY.to_string(), table.to_string())]
        }))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    let schema = batch.schema();
    if time_column(&schema).is_some() {
        // Deltas, also the fallback when a dictionary outgrows its page (1 MiB).
        let path = ColumnPath::from(TIMESTAMP_COLUMN);
        props = props
            .set_column_dictionary_enabled(path.clone(), times == TimeEncoding::Dictionary)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    if let Some((_, encoding)) = value_encoding(&schema) {
        let path = ColumnPath::from(VALUE_COLUMN);
        // Metric files: ZSTD only where it pays, on the values; the labels (dictionary
        // keys in runs) and timestamps (deltas) are already small, and reading a ZSTD
        // column chunk creates ZSTD contexts (11 % of a 24 h selector's time), an LZ4 one
        // costs nothing.
        let codec = match values {
            ValueCodec::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
            ValueCodec::Lz4 => Compression::LZ4_RAW,
        };
        props = props
            .set_compression(Compression::LZ4_RAW)
            .set_column_compression(path.clone(), codec)
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, encoding);
    }
    props.build()
}

/// The smaller way to store `batches`' times, tried both ways. A segment sorted by series
/// holds each series' run of times, nearly constant deltas that jump back at every run's
/// start, and Parquet packs a block of 128 deltas at its widest: where runs are short (120
/// samples: 2 h at 1 m) nearly every block has a jump, 43 bits a row to store and unpack,
/// while the series scraped together share their times, a few distinct values a dictionary
/// stores as 7-bit keys (half the bytes, and a 7 d `rate` 3-10 % faster to read). Where runs
/// are long (480 samples: 2 h at 15 s) the jumps are rarer than the keys' bits, and the deltas
/// take a third of the dictionary's bytes.
fn time_encoding(batches: &[RecordBatch], table: Option<&str>) -> Result<TimeEncoding, StorageError> {
    let Some((first, index)) = batches.first().and_then(|first| Some((first, time_column(&first.schema())?))) else {
        return Ok(TimeEncoding::Deltas);
    };
    let size = |times| column_bytes(batches, index, writer_properties(first, table, times, ValueCodec::Zstd));
    Ok(if size(TimeEncoding::Dictionary)? < size(TimeEncoding::Deltas)? {
        TimeEncoding::Dictionary
    } else {
        TimeEncoding::Deltas
    })
}

/// ZSTD for the value column when it stores it in at most three quarters of LZ4's bytes,
/// tried both ways. Reading a ZSTD column chunk costs what an LZ4 one does not: parquet 59
/// creates a compression and a decompression context for it, each asking the CPU for its
/// features (`cpuid`, which traps to the hypervisor of a virtual machine: 11 % of a 7 d query
/// of a fifth of a metric's series, more than the decompression itself), and decompresses
/// at a third of LZ4's speed. What it saves depends on the values: on doubles (their bytes
/// split into streams) a quarter to a third; on decimal mantissas (bit-packed deltas) little
/// or nothing, 0 % on counters rising by random steps, a fifth on counters rising steadily.
fn value_codec(batches: &[RecordBatch], table: Option<&str>) -> Result<ValueCodec, StorageError> {
    let Some((first, (index, _))) = batches.first().and_then(|first| Some((first, value_encoding(&first.schema())?)))
    else {
        return Ok(ValueCodec::Zstd);
    };
    let size = |values| column_bytes(batches, index, writer_properties(first, table, TimeEncoding::Deltas, values));
    Ok(if size(ValueCodec::Zstd)? * 4 <= size(ValueCodec::Lz4)? * 3 { ValueCodec::Zstd } else { ValueCodec::Lz4 })
}

/// The bytes of a file of `batches`' column `index` alone, written with `props`.
fn column_bytes(batches: &[RecordBatch], index: usize, props: WriterProperties) -> Result<usize, StorageError> {
    let column = batches.iter().map(|batch| batch.project(&[index])).collect::<Result<Vec<_>, _>>()?;
    Ok(encode(&column, props)?.0.len())
}

/// Writes one segment (of `table`, or shared by the tables its rows name), values as decimals
/// where they are (see [`decimal_values`]); returns its size in bytes and the exact
/// statistics of its columns.
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    table: Option<&str>,
    batches: &[RecordBatch],
) -> Result<(u64, Vec<ColumnStats>), StorageError> {
    let batches = decimal_values::encode(batches)?;
    let Some(first) = batches.first() else {
        return Err(StorageError::Internal("empty segment".into()));
    };
    let schema = first.schema();
    let props = writer_properties(first, table, time_encoding(&batches, table)?, value_codec(&batches, table)?);
    let (bytes, metadata) = encode(&batches, props)?;
    let statistics = DFParquetMetadata::statistics_from_parquet_metadata(&metadata, &schema)
        .map_err(|e| StorageError::Internal(format!("segment statistics: {e}")))?;
    let size = bytes.len() as u64;
    store.put(path, PutPayload::from(bytes)).await?;
    metrics::counter!("vigil_storage_segment_bytes_written_total").increment(size);
    Ok((size, column_stats(&statistics, &schema)))
}

/// `batches` as a Parquet file. A metric segment's time and value columns are written page
/// by page: pages end where the table or the leading label changes (see [`stretch_ends`]),
/// and a decimal value column's also where its deltas jump (see [`value_page_ends`]); the
/// label columns a page per row group, as `ArrowWriter` writes them.
fn encode(batches: &[RecordBatch], props: WriterProperties) -> Result<(Vec<u8>, ParquetMetaData), StorageError> {
    encode_in_row_groups(batches, props, METRIC_ROW_GROUP_ROWS)
}

/// [`encode`] with a metric segment's row groups of `group_rows` rows.
fn encode_in_row_groups(
    batches: &[RecordBatch],
    props: WriterProperties,
    group_rows: usize,
) -> Result<(Vec<u8>, ParquetMetaData), StorageError> {
    let Some(first) = batches.first() else {
        return Err(StorageError::Internal("empty segment".into()));
    };
    let schema = first.schema();
    let mut bytes = Vec::new();
    // Flat schemas only (metric tables): there a field is one Parquet leaf column and its
    // writer's index is the field's.
    let flat = schema.fields().iter().all(|field| !field.data_type().is_nested());
    let value = schema
        .column_with_name(VALUE_COLUMN)
        .filter(|(_, field)| flat && matches!(field.data_type(), DataType::Decimal64(..) | DataType::Float64));
    let Some((value_index, value_field)) = value else {
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props))?;
        for batch in batches {
            writer.write(batch)?;
        }
        let metadata = writer.close()?;
        return Ok((bytes, metadata));
    };
    let decimal = matches!(value_field.data_type(), DataType::Decimal64(..));
    let time_index = time_column(&schema);
    let paged = |index: usize| index == value_index || Some(index) == time_index;
    // Columns whose stretches end where these change: a shared file's table, then its job.
    let stretch_columns: Vec<usize> = [Some(crate::shared::TABLE_COLUMN), crate::schema::leading_label_column(&schema)]
        .into_iter()
        .flatten()
        .filter_map(|column| schema.index_of(column).ok())
        .collect();
    // The paged columns' own writers: a page after every write (each write is one page),
    // the value column's statistics per column chunk only (a column index entry per page
    // would cost more than the page's values save; nothing prunes pages by value).
    let value_path = ColumnPath::from(VALUE_COLUMN);
    let paged_props = props
        .clone()
        .into_builder()
        .set_data_page_row_count_limit(1)
        .set_write_batch_size(group_rows)
        .set_column_statistics_enabled(value_path, EnabledStatistics::Chunk)
        .build();
    // The label columns (dictionary keys in runs, a few bytes a page) in a page per row group:
    // pages of 20,000 rows (Parquet's default) cost each a header and column and offset index
    // entries with the page's first and last label value, more than its keys (a merged day of
    // 2,000 series: labels and page indexes 52.6 KB in 107 pages a column, 22.3 KB in 16). A
    // PromQL scan reads times and values only, its series' labels from the series index; a
    // SQL read's row selection decodes a label page whole where it starts inside one, which
    // for keys in runs is cheap.
    let label_props = props.into_builder().set_data_page_row_count_limit(group_rows).build();
    let (mut file, columns) =
        ArrowWriter::try_new(&mut bytes, schema.clone(), Some(label_props))?.into_serialized_writer()?;
    let (_, paged_columns) =
        ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(paged_props))?.into_serialized_writer()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut pieces = Pieces::new(batches);
    for (row_group, start) in (0..rows).step_by(group_rows).enumerate() {
        let group = pieces.take(group_rows.min(rows - start));
        let mut writers = columns.create_column_writers(row_group)?;
        for (index, writer) in paged_columns.create_column_writers(row_group)?.into_iter().enumerate() {
            if paged(index) {
                writers[index] = writer;
            }
        }
        for (batch, offset, len) in &group {
            let stretches = stretch_ends(batch, &stretch_columns, *offset, *len)?;
            for (index, field) in schema.fields().iter().enumerate() {
                let column = batch.column(index);
                let pages = if index == value_index && decimal {
                    let mantissas = column
                        .as_primitive_opt::<Decimal64Type>()
                        .ok_or_else(|| StorageError::Internal("decimal value column of another type".into()))?;
                    let mantissas = &mantissas.values()[*offset..*offset + *len];
                    pages_within(&stretches, |from, to| {
                        value_page_ends(&mantissas[from..to], stretch_page_rows(to - from))
                    })
                } else if paged(index) {
                    pages_within(&stretches, |from, to| even_page_ends(to - from))
                } else {
                    vec![*len]
                };
                let mut page_start = 0;
                for page_end in pages {
                    let page = column.slice(offset + page_start, page_end - page_start);
                    for leaf in compute_leaves(field, &page)? {
                        writers[index].write(&leaf)?;
                    }
                    page_start = page_end;
                }
            }
        }
        let mut row_group = file.next_row_group()?;
        for writer in writers {
            writer.close()?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    let metadata = file.close()?;
    Ok((bytes, metadata))
}

/// Rows a stretch holds at least before it may end (half a page): where the table or the
/// leading label changes sooner, the stretch goes on. A reader of a job's series then
/// decompresses and decodes no page of another job's, or at most this many rows of smaller
/// ones' (a page of 20,000 rows cut anywhere had it decode up to a page before the job's first
/// row, only to skip it: a tenth of a 7 d error ratio by job); and small tables and jobs do
/// not cost a page each (a header, offset and column index entries, less for LZ4 to repeat),
/// so a segment has about as many pages as before.
const MIN_STRETCH_ROWS: usize = MAX_PAGE_ROWS / 2;

/// Where the stretches of rows `offset..offset + len` of `batch` end (relative to `offset`,
/// exclusive; the last is `len`): after a change of `columns`' values (table, job) once a
/// stretch holds [`MIN_STRETCH_ROWS`].
fn stretch_ends(batch: &RecordBatch, columns: &[usize], offset: usize, len: usize) -> Result<Vec<usize>, StorageError> {
    if columns.is_empty() || len == 0 {
        return Ok(vec![len]);
    }
    let keys: Vec<_> = columns.iter().map(|&index| batch.column(index).slice(offset, len)).collect();
    let mut ends = Vec::new();
    let mut start = 0;
    for range in datafusion::arrow::compute::partition(&keys)?.ranges() {
        if range.end < len && range.end - start >= MIN_STRETCH_ROWS {
            ends.push(range.end);
            start = range.end;
        }
    }
    ends.push(len);
    Ok(ends)
}

/// The page ends of stretches (ends, as [`stretch_ends`] gives them), each paged by `pages`
/// (given a stretch's first and end row, its page ends relative to its first row).
fn pages_within(stretch_ends: &[usize], mut pages: impl FnMut(usize, usize) -> Vec<usize>) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut from = 0;
    for &to in stretch_ends {
        ends.extend(pages(from, to).into_iter().map(|end| from + end));
        from = to;
    }
    ends
}

/// Rows a page of a stretch of `rows` rows holds at most: the stretch in pages of equal rows,
/// as many as pages of [`MAX_PAGE_ROWS`] fill it to the nearest (a job of 21,600 rows is one
/// page, not one of 20,000 and one of 1,600).
fn stretch_page_rows(rows: usize) -> usize {
    let pages = ((rows + MAX_PAGE_ROWS / 2) / MAX_PAGE_ROWS).max(1);
    rows.div_ceil(pages).max(1)
}

/// Pages of equal rows (see [`stretch_page_rows`]) of a stretch of `rows` rows.
fn even_page_ends(rows: usize) -> Vec<usize> {
    let page_rows = stretch_page_rows(rows);
    (1..=rows.div_ceil(page_rows)).map(|page| (page * page_rows).min(rows)).collect()
}

/// Consecutive row ranges of a list of batches, taken a row group at a time.
struct Pieces<'a> {
    batches: &'a [RecordBatch],
    batch: usize,
    offset: usize,
}

impl<'a> Pieces<'a> {
    fn new(batches: &'a [RecordBatch]) -> Self {
        Pieces { batches, batch: 0, offset: 0 }
    }

    /// The next `rows` rows as (batch, offset, length) ranges.
    fn take(&mut self, mut rows: usize) -> Vec<(&'a RecordBatch, usize, usize)> {
        let mut pieces = Vec::new();
        while rows > 0 {
            let Some(batch) = self.batches.get(self.batch) else { break };
            let len = rows.min(batch.num_rows() - self.offset);
            if len > 0 {
                pieces.push((batch, self.offset, len));
            }
            rows -= len;
            self.offset += len;
            if self.offset == batch.num_rows() {
                self.batch += 1;
                self.offset = 0;
            }
        }
        pieces
    }
}

/// Rows a page of times or values holds, about (Parquet's default page row limit; a stretch's
/// pages hold from half to one and a half times it): pages stay small enough for a row
/// selection to skip.
const MAX_PAGE_ROWS: usize = 20_000;

/// What a page costs beyond its values, in bytes: its header, its offset index entry, the
/// delta encoding's header and a ZSTD frame come to ~50, and ZSTD wins back part of a widened
/// block (its high bits repeat). Measured on counters and gauges, cuts pay from here on.
const PAGE_COST_BYTES: u32 = 80;

/// Where the value pages of a run of decimal mantissas end (exclusive; the last is
/// `mantissas.len()`), none holding more than `max_rows`.
///
/// DELTA_BINARY_PACKED packs a block of 128 deltas at the bit width of their spread from
/// the block's smallest delta, so one delta far from the others (a series' first value after
/// the last of the one before it, most often: a counter at 240,000 followed by one at 900)
/// widens every delta of its block: 16 × `k` bytes for a jump `k` bits wider than the deltas
/// around it. A page starts the deltas afresh (its first value is stored whole), so a page is
/// cut before a jump when that saves more than [`PAGE_COST_BYTES`]. Jumps closer together
/// than a block share their widened blocks (short series), so the saving is reckoned over
/// the rows since the jump before; a jump left in a page stays out of the spread the next
/// ones are measured against, which is learnt afresh from each block's first deltas.
fn value_page_ends(mantissas: &[i64], max_rows: usize) -> Vec<usize> {
    const BLOCK: usize = 128;
    // Deltas a page's spread is learnt from before any is taken for a jump.
    const LEARNT: usize = 16;
    let width = |low: i64, high: i64| if high > low { 64 - high.abs_diff(low).leading_zeros() } else { 0 };
    let mut ends = Vec::new();
    let (mut page_start, mut last_jump, mut low, mut high, mut learnt) = (0, 0, i64::MAX, i64::MIN, 0);
    for (row, pair) in mantissas.windows(2).enumerate() {
        let row = row + 1;
        let delta = pair[1].wrapping_sub(pair[0]);
        let mut cut = row - page_start >= max_rows;
        if (row - page_start - 1) % BLOCK == 0 {
            // A block of its own: a jump among the last block's first deltas widened only it.
            (low, high, learnt) = (i64::MAX, i64::MIN, 0);
        }
        // Deltas all alike (a counter rising at a steady rate) are left alone: ZSTD or LZ4 packs a
        // widened block of them, a repeating bit pattern, down to little, as it does the rest.
        if !cut && learnt >= LEARNT && high > low {
            let wider = width(low.min(delta), high.max(delta)).saturating_sub(width(low, high));
            if wider >= 3 {
                let spacing = (row - last_jump).min(BLOCK);
                last_jump = row;
                cut = 16 * wider as usize * spacing / BLOCK >= PAGE_COST_BYTES as usize;
                if !cut {
                    continue;
                }
            }
        }
        if cut {
            (page_start, last_jump, low, high, learnt) = (row, row, i64::MAX, i64::MIN, 0);
            ends.push(row);
            continue;
        }
        (low, high, learnt) = (low.min(delta), high.max(delta), learnt + 1);
    }
    ends.push(mantissas.len());
    ends
}

/// The rows of a segment `builder` reads (all, or its row selection's), values as doubles.
pub fn rows(builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>) -> Result<Vec<RecordBatch>, StorageError> {
    Ok(builder.build()?.map(|batch| batch.and_then(decimal_values::decode)).collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, DictionaryArray, Float64Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
    use datafusion::parquet::file::metadata::PageIndexPolicy;

    /// Counter-like mantissas: each series climbs by 0-999 a sample, from 0 or from 5,000,000
    /// by turns, so that every series boundary is a jump.
    fn counters(lengths: &[usize]) -> Vec<i64> {
        let mut next = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut values = Vec::new();
        for (series, &length) in lengths.iter().enumerate() {
            let mut value = (series % 2) as i64 * 5_000_000;
            for _ in 0..length {
                value += (next() % 1000) as i64;
                values.push(value);
            }
        }
        values
    }

    #[test]
    fn value_pages_are_cut_before_jumps_that_cost_more_than_a_page() {
        // Long series of counters: every series its own page.
        let values = counters(&[300, 300, 300]);
        assert_eq!(value_page_ends(&values, MAX_PAGE_ROWS), [300, 600, 900]);
        // Gauges whose series differ little: one page.
        let gauges: Vec<i64> = (0..900).map(|i| (i % 300) * 3 % 17 + (i / 300) * 5).collect();
        assert_eq!(value_page_ends(&gauges, MAX_PAGE_ROWS), [900]);
        // Short series share widened blocks: cutting each would cost more than it saves.
        assert_eq!(value_page_ends(&counters(&[10; 100]), MAX_PAGE_ROWS), [1000]);
        // Long series after short ones are still cut apart.
        assert_eq!(value_page_ends(&counters(&[10, 10, 10, 300, 300]), MAX_PAGE_ROWS), [330, 630]);
        // Series rising at steady rates: the page codec takes care of their jumps.
        let steady: Vec<i64> = (0..900).map(|i| (i % 300) * (1 + i / 300)).collect();
        assert_eq!(value_page_ends(&steady, MAX_PAGE_ROWS), [900]);
        // A counter reset within a long series cuts a page too; the rows after it start one.
        let mut reset = counters(&[500]);
        reset.extend(counters(&[1])[0]..counters(&[1])[0] + 200);
        assert_eq!(value_page_ends(&reset, MAX_PAGE_ROWS), [500, 700]);
        // Pages stay small enough for a row selection to skip, and extremes do not overflow.
        assert_eq!(value_page_ends(&vec![7; 50_000], MAX_PAGE_ROWS), [20_000, 40_000, 50_000]);
        assert_eq!(value_page_ends(&[i64::MAX, i64::MIN, i64::MAX, 0, 1, 2], MAX_PAGE_ROWS), [6]);
        assert_eq!(value_page_ends(&[5], MAX_PAGE_ROWS), [1]);
    }

    /// A segment of series of `lengths` rows, labelled by series, one sample per 15 s.
    fn series_batch(lengths: &[usize], first_series: usize) -> RecordBatch {
        let values = counters(lengths);
        let names: Vec<String> = lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(format!("host-{}", first_series + i), n))
            .collect();
        let times: Vec<i64> = lengths
            .iter()
            .flat_map(|&n| (0..n as i64).map(|t| 1_700_000_000_000_000_000 + t * 15_000_000_000))
            .collect();
        let schema = crate::schema::metric_schema(["instance"]);
        let instance: DictionaryArray<Int32Type> = names.iter().map(String::as_str).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(instance),
                Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
                Arc::new(Float64Array::from(values.iter().map(|&v| v as f64).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn read_all(bytes: &[u8], selection: Option<RowSelection>) -> RecordBatch {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new_with_options(bytes::Bytes::from(bytes.to_vec()), options).unwrap();
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let batches: Vec<RecordBatch> =
            builder.build().unwrap().map(|b| decimal_values::decode(b.unwrap()).unwrap()).collect();
        datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn decimal_values_beside_nested_columns_are_written_as_arrow_writes_them() {
        // A fixed table's row: a map of attributes has three Parquet leaf columns.
        let attributes = {
            let mut builder = datafusion::arrow::array::MapBuilder::new(
                None,
                datafusion::arrow::array::StringBuilder::new(),
                datafusion::arrow::array::StringBuilder::new(),
            );
            for i in 0..500 {
                builder.keys().append_value("k");
                builder.values().append_value(format!("v{i}"));
                builder.append(true).unwrap();
            }
            builder.finish()
        };
        let values = Float64Array::from(counters(&[250, 250]).iter().map(|&v| v as f64).collect::<Vec<_>>());
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("attributes", attributes.data_type().clone(), false),
            datafusion::arrow::datatypes::Field::new(VALUE_COLUMN, DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(attributes), Arc::new(values)]).unwrap();
        let decimals = decimal_values::encode(std::slice::from_ref(&batch)).unwrap();
        assert!(matches!(decimals[0].schema().field(1).data_type(), DataType::Decimal64(..)));
        let (bytes, _) =
            encode(&decimals, writer_properties(&decimals[0], Some("spans"), TimeEncoding::Deltas, ValueCodec::Zstd))
                .unwrap();
        assert_eq!(read_all(&bytes, None), batch);
    }

    #[test]
    fn paged_values_read_back_whole_and_by_selection_and_take_fewer_bytes() {
        // Two batches across a row group of 128 Ki rows, series of every length from 1 to 700.
        const GROUP_ROWS: usize = 128 * 1024;
        let lengths: Vec<usize> = (0..400).map(|i| 1 + (i * 7919) % 700).collect();
        let (a, b) = lengths.split_at(250);
        let batches = [series_batch(a, 0), series_batch(b, 250)];
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert!(rows > GROUP_ROWS && batches[0].num_rows() < GROUP_ROWS, "{rows}");
        let decimals = decimal_values::encode(&batches).unwrap();
        let props =
            writer_properties(&decimals[0], Some("node_requests_total"), TimeEncoding::Deltas, ValueCodec::Zstd);
        let (paged, metadata) = encode_in_row_groups(&decimals, props.clone(), GROUP_ROWS).unwrap();
        assert_eq!(metadata.num_row_groups(), 2);
        let key_values = metadata.file_metadata().key_value_metadata().unwrap();
        let table = key_values.iter().find(|kv| kv.key == TABLE_KEY).and_then(|kv| kv.value.as_deref());
        assert_eq!(table, Some("node_requests_total"), "the file names its table");

        let expected = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let read = read_all(&paged, None);
        // Arrow's own types come back (dictionary labels, UTC nanoseconds): the file carries
        // the Arrow schema as `ArrowWriter` writes it.
        assert_eq!(read, expected);

        // The value column is paged per series (a few long ones share), the others are not.
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes::Bytes::from(paged.clone()),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        let offsets = reader.metadata().offset_index().unwrap();
        let pages = |column: usize| offsets.iter().map(|group| group[column].page_locations().len()).sum::<usize>();
        let long_series = lengths.iter().filter(|&&n| n >= 128).count();
        assert!(pages(2) >= long_series, "value pages: {}, series of 128 rows or more: {long_series}", pages(2));
        assert!(pages(1) < 30, "timestamp pages: {}", pages(1));
        assert_eq!(pages(0), 2, "label pages: one per row group");

        // A row selection skipping whole pages and parts of pages reads the rows it names.
        let selectors = vec![
            RowSelector::skip(1_000),
            RowSelector::select(5_000),
            RowSelector::skip(90_000),
            RowSelector::select(rows - 100_000),
            RowSelector::skip(4_000),
        ];
        let selected = read_all(&paged, Some(RowSelection::from(selectors)));
        let want = datafusion::arrow::compute::concat_batches(
            &read.schema(),
            &[read.slice(1_000, 5_000), read.slice(96_000, rows - 100_000)],
        )
        .unwrap();
        assert_eq!(selected, want);

        // Against the same columns written with one run of pages.
        let mut unpaged = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut unpaged, decimals[0].schema(), Some(props.clone())).unwrap();
        for batch in &decimals {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        assert!(
            (paged.len() as f64) < 0.9 * unpaged.len() as f64,
            "paged {} bytes, unpaged {} bytes",
            paged.len(),
            unpaged.len()
        );

        // A metric segment's own row groups hold Parquet's default 1 Mi rows: the same rows in
        // one group, read back the same, in fewer bytes (one footer entry per column, one
        // dictionary and one last page per label column).
        let (whole, metadata) = encode(&decimals, props).unwrap();
        assert_eq!(metadata.num_row_groups(), 1);
        assert_eq!(read_all(&whole, None), expected);
        assert!(whole.len() < paged.len(), "one row group {} bytes, two {} bytes", whole.len(), paged.len());
    }

    /// A metric table of `jobs` (name, series), 120 samples a series a minute apart,
    /// sorted as tables are (job, instance, time).
    fn jobs_batch(jobs: &[(&str, usize)]) -> RecordBatch {
        let series: Vec<(&str, String)> =
            jobs.iter().flat_map(|&(job, count)| (0..count).map(move |k| (job, format!("host-{k:04}")))).collect();
        let rows = |label: fn(&(&str, String)) -> String| -> DictionaryArray<Int32Type> {
            let labels: Vec<String> = series.iter().flat_map(|s| std::iter::repeat_n(label(s), 120)).collect();
            labels.iter().map(String::as_str).collect()
        };
        let times: Vec<i64> =
            series.iter().flat_map(|_| (0..120).map(|t| 1_700_000_000_000_000_000 + t * 60_000_000_000)).collect();
        let values = counters(&vec![120; series.len()]);
        RecordBatch::try_new(
            crate::schema::metric_schema(["instance", "job"]),
            vec![
                Arc::new(rows(|s| s.1.clone())),
                Arc::new(rows(|s| s.0.to_string())),
                Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
                Arc::new(Float64Array::from(values.iter().map(|&v| v as f64).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn time_and_value_pages_end_where_the_table_or_job_changes() {
        // Table `a`: job-a rows 0..12,000, job-b (two series) 12,000..12,240, job-c
        // 12,240..42,240; table `b`: job-a 42,240..63,840, job-d 63,840..65,040.
        let a = jobs_batch(&[("job-a", 100), ("job-b", 2), ("job-c", 250)]);
        let b = jobs_batch(&[("job-a", 180), ("job-d", 10)]);
        let (_, file) = crate::shared::pack(vec![("a".into(), a), ("b".into(), b)]).unwrap().remove(0);
        let decimals = decimal_values::encode(std::slice::from_ref(&file)).unwrap();
        let (bytes, metadata) =
            encode(&decimals, writer_properties(&decimals[0], None, TimeEncoding::Dictionary, ValueCodec::Lz4))
                .unwrap();
        assert_eq!(metadata.num_row_groups(), 1);
        assert_eq!(read_all(&bytes, None), file, "rows read back as written");

        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes::Bytes::from(bytes.clone()),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        let schema = file.schema();
        let page_starts = |name: &str| -> Vec<i64> {
            let column = schema.index_of(name).unwrap();
            let offsets = reader.metadata().offset_index().unwrap();
            offsets[0][column].page_locations().iter().map(|page| page.first_row_index).collect()
        };
        // Stretches end after a's job-a (12,000 rows), not after job-b (240 rows: it joins
        // job-c's stretch), at the table's change, and after b's job-a. Times: a stretch in
        // pages of equal rows, as many as pages of 20,000 fill to the nearest: 30,240 rows
        // in two, 21,600 in one.
        assert_eq!(page_starts(TIMESTAMP_COLUMN), [0, 12_000, 27_120, 42_240, 63_840]);
        let values = page_starts(VALUE_COLUMN);
        let ends: Vec<i64> = values.iter().skip(1).copied().chain([file.num_rows() as i64]).collect();
        for cut in [12_000, 42_240, 63_840] {
            assert!(values.contains(&cut), "value pages {values:?} do not start at {cut}");
        }
        assert!(values.iter().zip(&ends).all(|(start, end)| end - start <= 21_600), "{values:?}");

        // A reader of job-c's rows selects whole pages.
        let selection =
            RowSelection::from(vec![RowSelector::skip(12_240), RowSelector::select(30_000), RowSelector::skip(22_800)]);
        assert_eq!(read_all(&bytes, Some(selection)), file.slice(12_240, 30_000));
    }

    #[test]
    fn stretches_are_paged_evenly_near_the_page_size() {
        assert_eq!(even_page_ends(1), [1]);
        assert_eq!(even_page_ends(21_600), [21_600]);
        assert_eq!(even_page_ends(30_000), [15_000, 30_000]);
        assert_eq!(even_page_ends(50_001), [16_667, 33_334, 50_001]);
        for rows in [1, 9_999, 29_999, 30_000, 123_457] {
            let ends = even_page_ends(rows);
            let sizes: Vec<usize> =
                ends.iter().scan(0, |start, &end| Some(end - std::mem::replace(start, end))).collect();
            assert_eq!(ends.last(), Some(&rows));
            assert!(sizes.iter().all(|&size| size > 0 && size * 2 <= MAX_PAGE_ROWS * 3), "{rows}: {sizes:?}");
        }
    }

    #[test]
    fn times_are_stored_the_smaller_way_and_read_back_exactly() {
        // Each column chunk's encodings and its bytes raw and stored, after reading back.
        let time_chunk = |batches: &[RecordBatch], times: TimeEncoding| {
            let decimals = decimal_values::encode(batches).unwrap();
            let (bytes, metadata) =
                encode(&decimals, writer_properties(&decimals[0], None, times, ValueCodec::Zstd)).unwrap();
            assert_eq!(read_all(&bytes, None), batches[0], "rows read back as written");
            let column = metadata.row_group(0).column(1).clone();
            assert_eq!(column.column_path().string(), TIMESTAMP_COLUMN);
            (column.encodings().collect::<Vec<_>>(), column.uncompressed_size(), column.compressed_size())
        };
        // 300 series of 120 samples each, scraped together: 120 distinct times, a run each.
        let short = [series_batch(&[120; 300], 0)];
        assert_eq!(time_encoding(&short, None).unwrap(), TimeEncoding::Dictionary);
        let (encodings, dictionary_raw, dictionary_stored) = time_chunk(&short, TimeEncoding::Dictionary);
        assert!(encodings.contains(&Encoding::RLE_DICTIONARY), "{encodings:?}");
        // What a read decompresses and unpacks is a fraction; what is stored is less.
        let (encodings, delta_raw, delta_stored) = time_chunk(&short, TimeEncoding::Deltas);
        assert!(!encodings.contains(&Encoding::RLE_DICTIONARY), "{encodings:?}");
        assert!(dictionary_raw * 4 < delta_raw, "dictionary {dictionary_raw} B, deltas {delta_raw} B");
        assert!(dictionary_stored < delta_stored, "dictionary {dictionary_stored} B, deltas {delta_stored} B");
        // Runs of 960: a jump in one block of seven or eight; deltas take fewer bytes than keys.
        let long = [series_batch(&[960; 40], 0)];
        assert_eq!(time_encoding(&long, None).unwrap(), TimeEncoding::Deltas);
        let (_, _, dictionary_stored) = time_chunk(&long, TimeEncoding::Dictionary);
        let (_, _, delta_stored) = time_chunk(&long, TimeEncoding::Deltas);
        assert!(delta_stored < dictionary_stored, "dictionary {dictionary_stored} B, deltas {delta_stored} B");
        // Each series at its own offset: the dictionary grows, and still reads back.
        let mut own = series_batch(&[120; 300], 0);
        let offset: Vec<i64> = {
            let times = crate::buffer::time_values(own.column(1)).unwrap();
            times.values().iter().enumerate().map(|(row, &t)| t + (row / 120) as i64 * 7_000_000).collect()
        };
        let mut columns = own.columns().to_vec();
        columns[1] = Arc::new(TimestampNanosecondArray::from(offset).with_timezone("UTC"));
        own = RecordBatch::try_new(own.schema(), columns).unwrap();
        let own = [own];
        time_chunk(&own, time_encoding(&own, None).unwrap());
    }

    /// A written segment's value column chunks, and its rows read back.
    async fn written(batches: &[RecordBatch]) -> (Vec<Compression>, RecordBatch) {
        let store: Arc<dyn ObjectStore> = Arc::new(datafusion::object_store::memory::InMemory::new());
        let path = Path::from("segment.parquet");
        write(&store, &path, Some("gauges"), batches).await.unwrap();
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let metadata = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().metadata().clone();
        let codecs = metadata.row_groups().iter().map(|group| group.column(2).compression()).collect();
        assert_eq!(metadata.row_group(0).column(2).column_path().string(), VALUE_COLUMN);
        (codecs, read_all(&bytes, None))
    }

    #[tokio::test]
    async fn values_are_compressed_with_zstd_only_where_it_saves_a_quarter() {
        let sizes = |batches: &[RecordBatch]| {
            let encoded = decimal_values::encode(batches).unwrap();
            let size =
                |codec| column_bytes(&encoded, 2, writer_properties(&encoded[0], None, TimeEncoding::Deltas, codec));
            (size(ValueCodec::Zstd).unwrap(), size(ValueCodec::Lz4).unwrap())
        };
        // Counters rising by random steps: bit-packed deltas, which ZSTD barely shrinks.
        let counters = [series_batch(&[300; 200], 0)];
        let (zstd, lz4) = sizes(&counters);
        assert!(zstd * 4 > lz4 * 3, "counters: ZSTD {zstd} B, LZ4 {lz4} B");
        let (codecs, read) = written(&counters).await;
        assert_eq!(codecs, [Compression::LZ4_RAW]);
        assert_eq!(read, counters[0], "rows read back as written");

        // Gauges of a few dozen levels that no decimal holds (thirds): doubles whose byte
        // streams ZSTD's entropy coding takes to a fraction, LZ4 to little less.
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15);
        let thirds: Vec<f64> = (0..60_000).map(|_| (next() % 48) as f64 / 3.0).collect();
        let template = series_batch(&[300; 200], 0);
        let mut columns = template.columns().to_vec();
        columns[2] = Arc::new(Float64Array::from(thirds));
        let gauges = [RecordBatch::try_new(template.schema(), columns).unwrap()];
        let (zstd, lz4) = sizes(&gauges);
        assert!(zstd * 4 <= lz4 * 3, "gauges: ZSTD {zstd} B, LZ4 {lz4} B");
        let (codecs, read) = written(&gauges).await;
        assert!(matches!(codecs[..], [Compression::ZSTD(_)]), "{codecs:?}");
        assert_eq!(read, gauges[0], "rows read back as written");
    }

    #[test]
    fn table_directories_are_bounded_safe_and_distinct() {
        assert_eq!(table_dir("http_requests_total"), "http_requests_total");
        assert_eq!(table_dir("job:requests:rate5m"), "job:requests:rate5m");
        let long = "a".repeat(300);
        let odd =
            ["", "/", "///", "..", ".", "\0", "a/b", "a\u{0}b", "ü", long.as_str(), "a-b", "x".repeat(65).as_str()]
                .map(str::to_string);
        let mut seen = std::collections::BTreeSet::new();
        for name in &odd {
            let dir = table_dir(name);
            assert!(dir.len() <= 32 + 1 + 16, "{dir}");
            assert!(dir.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')), "{dir}");
            assert!(seen.insert(dir.into_owned()), "{name:?} shares a directory");
        }
        let path = segment_path("n", &long, -5, 1);
        assert!(path.as_ref().split('/').all(|part| !part.is_empty() && part.len() < 255), "{path}");
    }
}
