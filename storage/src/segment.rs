//! Parquet segments: one file per table and time partition per flush, sorted by series then
//! time, written and read through `object_store`.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;

use crate::StorageError;
use crate::manifest::{ColumnStats, column_stats};
use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN};

/// Rows per row group: small enough that statistics prune within a segment.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Object path of a segment: under its node's directory, so that nodes never write the same
/// file.
pub fn segment_path(node: &str, table: &str, partition_start_ns: i64, id: u64) -> Path {
    Path::from_iter([
        "nodes",
        node,
        "tables",
        table,
        &partition_start_ns.to_string(),
        &format!("{id:016}.parquet"),
    ])
}

fn writer_properties(batch: &RecordBatch) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    let schema = batch.schema();
    if let Ok(field) = schema.field_with_name(TIMESTAMP_COLUMN) {
        if matches!(field.data_type(), datafusion::arrow::datatypes::DataType::Timestamp(..)) {
            // Regular scrape intervals make timestamp deltas nearly constant.
            let path = ColumnPath::from(TIMESTAMP_COLUMN);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    if let Ok(field) = schema.field_with_name(VALUE_COLUMN) {
        if field.data_type() == &datafusion::arrow::datatypes::DataType::Float64 {
            let path = ColumnPath::from(VALUE_COLUMN);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
        }
    }
    props.build()
}

/// Writes one segment; returns its size in bytes and the exact statistics of its columns.
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    batches: &[RecordBatch],
) -> Result<(u64, Vec<ColumnStats>), StorageError> {
    let Some(first) = batches.first() else {
        return Err(StorageError::Internal("empty segment".into()));
    };
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, first.schema(), Some(writer_properties(first)))?;
    for batch in batches {
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

/// Reads a whole segment (compaction input). Segments are bounded by the buffer budget, so
/// one `get` of the object is the cheapest way to read all of it.
pub async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Vec<RecordBatch>, StorageError> {
    let bytes = store.get(path).await?.bytes().await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}
