//! Many metric tables read as one table, for selectors without a metric name
//! (`{job="api"}`): one Parquet scan per shared segment, over the runs of the chosen tables,
//! where reading each table on its own would plan and open a scan per table — thousands of
//! them when a cluster has thousands of metric names.
//!
//! The table's first column, [`TABLE_COLUMN`], names each row's table; its label columns are
//! the union of the tables'. Rows come from the shared segments (their table column read from
//! the file) and from the write buffer (the column added).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::{Int32Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::buffer::{TableBuffer, WriteBuffer};
use crate::catalog::{QUERY_BATCH_ROWS, label_excludes, scan_plan, to_df};
use crate::filters::LabelFilters;
use crate::filters::scan_filter;
use crate::manifest::SegmentMeta;
use crate::schema::{TIMESTAMP_COLUMN, label_columns, metric_schema};
use crate::series_index::{ScanFiles, SegmentReading};
pub use crate::shared::TABLE_COLUMN;
use crate::{Storage, StorageError};

/// Metric tables as one table (see the module docs).
#[derive(Clone, Debug)]
pub struct MetricSet {
    storage: Storage,
    tables: Vec<String>,
    /// The union of the tables' metric schemas.
    metric_schema: SchemaRef,
    /// [`TABLE_COLUMN`], then `metric_schema`'s columns.
    schema: SchemaRef,
    reading: SegmentReading,
}

impl Storage {
    /// `tables` (metric tables, with the label columns of each) as one table, or `None` when
    /// some of their flushed rows are in files of their own (a store from before shared
    /// segments, until compaction has merged them): those only their own table reads.
    pub fn metric_set<'a>(&self, tables: impl IntoIterator<Item = (&'a str, &'a Schema)>) -> Option<MetricSet> {
        let mut names = Vec::new();
        let mut columns = std::collections::BTreeSet::new();
        for (table, schema) in tables {
            names.push(table.to_string());
            columns.extend(label_columns(schema).map(str::to_string));
        }
        names.sort();
        names.dedup();
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        {
            let state = self.inner.state.lock();
            if state.segments().any(|s| s.shared.is_none() && wanted.contains(s.table.as_str())) {
                return None;
            }
        }
        let metric_schema = metric_schema(columns.iter().map(String::as_str));
        let schema = crate::shared::file_schema(&columns);
        Some(MetricSet { storage: self.clone(), tables: names, metric_schema, schema, reading: SegmentReading::Rows })
    }
}

impl MetricSet {
    /// The same tables read for their series, not their samples (see
    /// [`Storage::series_provider`]).
    pub fn series_only(&self) -> MetricSet {
        MetricSet { reading: SegmentReading::Series, ..self.clone() }
    }

    /// The same tables, each segment's samples read without their label columns where its
    /// series index chose the series (see [`SegmentReading::RowsLabelledByIndex`]).
    pub fn labelled_by_index(&self) -> MetricSet {
        MetricSet { reading: SegmentReading::RowsLabelledByIndex, ..self.clone() }
    }

    /// Buffered rows of the tables in one generation, with their table column.
    fn buffered(
        &self,
        generation: &WriteBuffer,
        filter: &crate::buffer::ScanFilter,
    ) -> Result<Vec<RecordBatch>, StorageError> {
        let mut out = Vec::new();
        for table in &self.tables {
            let Some(TableBuffer::Metric(metric)) = generation.table(table) else { continue };
            for batch in metric.batches(&self.metric_schema, filter, QUERY_BATCH_ROWS)? {
                let names: ArrayRef = Arc::new(StringArray::from(vec![table.as_str()]));
                let keys = Int32Array::from_value(0, batch.num_rows());
                let mut columns: Vec<ArrayRef> = vec![Arc::new(DictionaryArray::<Int32Type>::try_new(keys, names)?)];
                columns.extend(batch.columns().iter().cloned());
                out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for MetricSet {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let labels: HashSet<&str> = label_columns(&self.metric_schema).collect();
        Ok(crate::filters::pushdown(filters, TIMESTAMP_COLUMN, |c| c == TABLE_COLUMN || labels.contains(c)))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let labels: HashSet<&str> = label_columns(&self.metric_schema).collect();
        let filter = scan_filter(filters, TIMESTAMP_COLUMN, |c| labels.contains(c));
        let wanted: HashSet<&str> = self.tables.iter().map(String::as_str).collect();
        // One consistent snapshot, as a table's scan takes it.
        let (files, mut buffered, persisting) = {
            let state = self.storage.inner.state.lock();
            let mut files: BTreeMap<String, Vec<SegmentMeta>> = BTreeMap::new();
            for segment in state.segments() {
                if wanted.contains(segment.table.as_str())
                    && filter.overlaps(segment.min_time_ns, segment.max_time_ns)
                    && !label_excludes(segment, &filter)
                {
                    files.entry(segment.path.clone()).or_default().push(segment.clone());
                }
            }
            let active = self.buffered(&state.active, &filter).map_err(to_df)?;
            (files, active, state.persisting.clone())
        };
        if let Some(persisting) = persisting {
            buffered.extend(self.buffered(&persisting, &filter).map_err(to_df)?);
        }
        self.storage.inner.segments_scanned.fetch_add(files.len() as u64, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("vigil_storage_segments_scanned_total").increment(files.len() as u64);

        let is_label = |c: &str| c == TABLE_COLUMN || labels.contains(c);
        let label_filters = LabelFilters::new(filters, &self.schema, projection, is_label);
        let mut shared = ScanFiles::default();
        for entries in files.values() {
            let entries: Vec<&SegmentMeta> = entries.iter().collect();
            shared.push(
                crate::series_index::shared_read(
                    &self.storage,
                    state,
                    &entries,
                    filters,
                    &filter,
                    &is_label,
                    self.reading,
                    &self.schema,
                )
                .await?,
            );
        }
        let statistics = Statistics::new_unknown(&self.schema);
        let mut parts =
            shared.plans(&self.storage, state, &self.schema, statistics, &label_filters, filters, limit, false).await?;
        parts.series.extend(buffered);
        scan_plan(state, &self.schema, &label_filters, parts)
    }
}
