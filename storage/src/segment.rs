//! Parquet segments, written and read through `object_store`: a table's own (fixed tables,
//! and metric tables of older stores) sorted by series then time, or shared by the metric
//! tables of a partition (see [`crate::shared`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;

use crate::manifest::{ColumnStats, column_stats};
use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN};
use crate::{StorageError, decimal_values};

/// Rows per row group: small enough that statistics prune within a segment.
const ROW_GROUP_ROWS: usize = 128 * 1024;

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

fn writer_properties(batch: &RecordBatch, table: Option<&str>) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_key_value_metadata(table.map(|table| {
            vec![datafusion::parquet::file::metadata::KeyValue::new(TABLE_KEY.to_string(), table.to_string())]
        }))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    let schema = batch.schema();
    if let Ok(field) = schema.field_with_name(TIMESTAMP_COLUMN)
        && matches!(field.data_type(), DataType::Timestamp(..))
    {
        // Regular scrape intervals make timestamp deltas nearly constant.
        let path = ColumnPath::from(TIMESTAMP_COLUMN);
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    if let Ok(field) = schema.field_with_name(VALUE_COLUMN) {
        // Doubles by their bytes (exponents together, mantissas together); decimals (see
        // `decimal_values`) by the deltas of their mantissas, small between neighbours.
        let encoding = match field.data_type() {
            DataType::Float64 => Some(Encoding::BYTE_STREAM_SPLIT),
            DataType::Decimal64(..) => Some(Encoding::DELTA_BINARY_PACKED),
            _ => None,
        };
        if let Some(encoding) = encoding {
            let path = ColumnPath::from(VALUE_COLUMN);
            // Metric files: ZSTD where it pays, on the values; the labels (dictionary keys in
            // runs) and timestamps (deltas) are already small, and reading a ZSTD column
            // chunk creates a ZSTD context (11 % of a 24 h selector's time), an LZ4 one costs
            // nothing.
            props = props
                .set_compression(Compression::LZ4_RAW)
                .set_column_compression(path.clone(), Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, encoding);
        }
    }
    props.build()
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
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, first.schema(), Some(writer_properties(first, table)))?;
    for batch in &batches {
        writer.write(batch)?;
    }
    let metadata = writer.close()?;
    let schema = first.schema();
    let statistics = DFParquetMetadata::statistics_from_parquet_metadata(&metadata, &schema)
        .map_err(|e| StorageError::Internal(format!("segment statistics: {e}")))?;
    let size = bytes.len() as u64;
    store.put(path, PutPayload::from(bytes)).await?;
    metrics::counter!("vigil_storage_segment_bytes_written_total").increment(size);
    Ok((size, column_stats(&statistics, &schema)))
}

/// Reads a whole segment (compaction input), values as doubles. Segments are bounded by the
/// buffer budget, so one `get` of the object is the cheapest way to read all of it.
pub async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Vec<RecordBatch>, StorageError> {
    let bytes = store.get(path).await?.bytes().await?;
    rows(ParquetRecordBatchReaderBuilder::try_new(bytes)?)
}

/// Every row of a segment opened by `builder`, values as doubles.
pub fn rows(builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>) -> Result<Vec<RecordBatch>, StorageError> {
    Ok(builder.build()?.map(|batch| batch.and_then(decimal_values::decode)).collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
