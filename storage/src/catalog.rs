//! DataFusion catalog over storage: every metric is a table, and so is every fixed table.
//!
//! A scan takes one consistent snapshot (manifest + both buffer generations), then plans a
//! Parquet scan of only the segments whose time bounds overlap the query's time range (with
//! the filters as a row-group pruning predicate; in a shared segment, only the table's run
//! of rows) united with the matching buffered rows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::buffer::{ScanFilter, TableBuffer, WriteBuffer};
use crate::filters::{LabelFilters, is_time_bound, scan_filter};
use crate::maintenance::adapt_to;
use crate::manifest::{SegmentMeta, table_statistics};
use crate::schema::{FixedTable, TIMESTAMP_COLUMN, label_columns, metric_schema, time_column_of};
use crate::series_index::{ScanFiles, ScanParts, SegmentReading};
use crate::{Storage, StorageError};

/// Rows per batch handed to queries from the buffer.
pub(crate) const QUERY_BATCH_ROWS: usize = 64 * 1024;

/// The schema provider holding every Vigil table.
#[derive(Debug, Clone)]
pub struct VigilSchemaProvider {
    storage: Storage,
}

impl VigilSchemaProvider {
    pub fn new(storage: Storage) -> Self {
        VigilSchemaProvider { storage }
    }
}

#[async_trait]
impl SchemaProvider for VigilSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.storage.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.storage.table_schema(name).map(|schema| {
            Arc::new(VigilTable {
                storage: self.storage.clone(),
                name: name.to_string(),
                schema,
                reading: SegmentReading::Rows,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.storage.table_schema(name).is_some()
    }
}

impl Storage {
    /// Every table: the fixed ones and each metric seen in segments or buffers, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = FixedTable::ALL.iter().map(|t| t.name().to_string()).collect();
        let state = self.inner.state.lock();
        names.extend(state.segments().map(|segment| segment.table.clone()));
        names.extend(state.generations().flat_map(|generation| generation.table_names().map(str::to_string)));
        names.into_iter().collect()
    }

    /// Distinct series per metric table in the write buffer (what was written since the last
    /// flush), largest first.
    pub fn buffered_series(&self) -> Vec<(String, usize)> {
        let state = self.inner.state.lock();
        let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for generation in state.generations() {
            for (name, table) in generation.tables() {
                if let TableBuffer::Metric(metric) = table {
                    *counts.entry(name.to_string()).or_default() += metric.series_count();
                }
            }
        }
        let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
    }

    /// Label figures of the series in the write buffer (at most `max_series` of them, so a
    /// huge buffer holds its lock briefly): distinct values and their bytes per label name,
    /// series per `name=value` pair, `__name__` included.
    pub fn buffered_label_stats(&self, max_series: usize) -> LabelStats {
        use std::collections::{HashMap, HashSet};
        let mut values: HashMap<String, HashSet<String>> = HashMap::new();
        let mut pairs: HashMap<(String, String), usize> = HashMap::new();
        let mut stats = LabelStats::default();
        let state = self.inner.state.lock();
        'generations: for generation in state.generations() {
            for (table, content) in generation.tables() {
                let TableBuffer::Metric(metric) = content else { continue };
                let name = crate::schema::metric_name_of_table(table);
                for labels in metric.label_sets() {
                    if stats.series >= max_series {
                        stats.truncated = true;
                        break 'generations;
                    }
                    stats.series += 1;
                    for (label, value) in std::iter::once(("__name__", name)).chain(labels.iter()) {
                        stats.label_pairs += 1;
                        if !values.get(label).is_some_and(|v| v.contains(value)) {
                            values.entry(label.to_string()).or_default().insert(value.to_string());
                        }
                        *pairs.entry((label.to_string(), value.to_string())).or_default() += 1;
                    }
                }
            }
        }
        drop(state);
        stats.values_per_label = values.iter().map(|(name, v)| (name.clone(), v.len())).collect();
        stats.bytes_per_label =
            values.iter().map(|(name, v)| (name.clone(), v.iter().map(String::len).sum())).collect();
        stats.series_per_pair = pairs.into_iter().map(|((name, value), n)| (format!("{name}={value}"), n)).collect();
        for list in [&mut stats.values_per_label, &mut stats.bytes_per_label, &mut stats.series_per_pair] {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        stats
    }

    /// The schema of every metric table, in one pass over the manifests and buffers (what
    /// [`Storage::table_schema`] gives for one table, without a pass per table).
    pub fn metric_table_schemas(&self) -> std::collections::HashMap<String, SchemaRef> {
        let owned: Vec<(String, Vec<String>)> = self.with_metric_label_columns(|tables| {
            tables
                .iter()
                .map(|(name, columns)| (name.to_string(), columns.iter().map(|c| c.to_string()).collect()))
                .collect()
        });
        // Schemas are built after the lock is let go: writers wait on it.
        owned.into_iter().map(|(name, columns)| (name, metric_schema(columns.iter().map(String::as_str)))).collect()
    }

    /// Label names over every metric table (`__name__` aside): the `/api/v1/labels` answer
    /// without selectors, from the manifests and buffers alone.
    pub fn metric_label_names(&self) -> BTreeSet<String> {
        self.with_metric_label_columns(|tables| {
            let names: BTreeSet<&str> =
                tables.values().flatten().map(|c| crate::schema::label_name_of_column(c)).collect();
            names.into_iter().map(str::to_string).collect()
        })
    }

    /// Runs `f` on the label columns of each metric table, borrowed while the state is locked:
    /// one pass over the manifests (each segment names its table and columns) and buffers,
    /// without copying a string per segment.
    fn with_metric_label_columns<R>(&self, f: impl FnOnce(&crate::FastHashMap<&str, BTreeSet<&str>>) -> R) -> R {
        let state = self.inner.state.lock();
        let mut tables: crate::FastHashMap<&str, BTreeSet<&str>> = Default::default();
        for segment in state.segments() {
            if FixedTable::from_name(&segment.table).is_some() {
                continue;
            }
            let columns = tables.entry(segment.table.as_str()).or_default();
            for column in &segment.columns {
                if column != TIMESTAMP_COLUMN && column != crate::schema::VALUE_COLUMN {
                    columns.insert(column.as_str());
                }
            }
        }
        for generation in state.generations() {
            for (name, table) in generation.tables() {
                if let TableBuffer::Metric(metric) = table {
                    tables.entry(name).or_default().extend(metric.label_columns());
                }
            }
        }
        f(&tables)
    }

    /// The metric tables some row of which may hold `value` in label column `column`: a
    /// buffered series has it, or some segment's bounds for the column do not exclude it. Lets
    /// a selector without a metric name skip most tables before planning them; one pass over
    /// the manifest and buffers for all tables, not one per table.
    pub fn tables_may_hold_label(&self, column: &str, value: &str) -> std::collections::HashSet<String> {
        let label = crate::schema::label_name_of_column(column);
        let mut tables = std::collections::HashSet::new();
        let state = self.inner.state.lock();
        for generation in state.generations() {
            for (name, table) in generation.tables() {
                if let TableBuffer::Metric(metric) = table
                    && metric.label_sets().any(|labels| labels.get(label) == Some(value))
                {
                    tables.insert(name.to_string());
                }
            }
        }
        let filter =
            ScanFilter { start_ns: None, end_ns: None, label_equals: vec![(column.to_string(), value.to_string())] };
        for segment in state.segments() {
            if !tables.contains(segment.table.as_str()) && !label_excludes(segment, &filter) {
                tables.insert(segment.table.clone());
            }
        }
        tables
    }

    /// A table of known schema, for plans that looked the schema up already.
    pub fn table_provider(&self, name: &str, schema: SchemaRef) -> Arc<dyn TableProvider> {
        self.table_reading(name, schema, SegmentReading::Rows)
    }

    /// A table of known schema whose shared segments are read as `reading` says: for
    /// [`SegmentReading::RowsLabelledByIndex`], the PromQL sweep's reading.
    pub fn table_reading(&self, name: &str, schema: SchemaRef, reading: SegmentReading) -> Arc<dyn TableProvider> {
        Arc::new(VigilTable { storage: self.clone(), name: name.to_string(), schema, reading })
    }

    /// A metric table read for its series, not its samples: at least one row per series
    /// with samples in the scan's time range (one, from the series index, for shared
    /// segments that have one), in the table's schema with a time inside the range and a
    /// NaN value. What the metadata API (series, label values) reads.
    pub fn series_provider(&self, name: &str, schema: SchemaRef) -> Arc<dyn TableProvider> {
        self.table_reading(name, schema, SegmentReading::Series)
    }

    /// The current schema of a table: fixed, or for a metric the union of the label columns
    /// seen in its segments and buffers. `None` for an unknown table.
    pub fn table_schema(&self, name: &str) -> Option<SchemaRef> {
        if let Some(fixed) = FixedTable::from_name(name) {
            return Some(fixed.schema());
        }
        let state = self.inner.state.lock();
        let mut columns: BTreeSet<String> = BTreeSet::new();
        let mut found = false;
        for segment in state.segments_of(name) {
            found = true;
            columns.extend(
                segment.columns.iter().filter(|c| *c != TIMESTAMP_COLUMN && *c != crate::schema::VALUE_COLUMN).cloned(),
            );
        }
        for generation in state.generations() {
            if let Some(TableBuffer::Metric(metric)) = generation.table(name) {
                found = true;
                columns.extend(metric.label_columns().map(str::to_string));
            }
        }
        found.then(|| metric_schema(columns.iter().map(String::as_str)))
    }

    /// Whether a read of `name` would find rows anywhere it looks (this node's segments, its
    /// peers', either write buffer), so a caller can skip planning a read of a table that has
    /// none: a query plan touches megabytes of the program's code the first time.
    pub fn has_rows(&self, name: &str) -> bool {
        let state = self.inner.state.lock();
        state.segments_of(name).next().is_some() || state.generations().any(|g| g.table(name).is_some())
    }
}

/// Label figures of buffered series, largest first (see [`Storage::buffered_label_stats`]).
#[derive(Clone, Debug, Default)]
pub struct LabelStats {
    pub series: usize,
    pub label_pairs: usize,
    /// True when only the first `max_series` series were looked at.
    pub truncated: bool,
    pub values_per_label: Vec<(String, usize)>,
    pub bytes_per_label: Vec<(String, usize)>,
    pub series_per_pair: Vec<(String, usize)>,
}

/// One table as DataFusion sees it, with the schema it had when the query was planned.
#[derive(Debug)]
pub struct VigilTable {
    storage: Storage,
    name: String,
    schema: SchemaRef,
    reading: SegmentReading,
}

impl VigilTable {
    fn time_column(&self) -> &'static str {
        time_column_of(&self.name)
    }

    fn is_metric(&self) -> bool {
        FixedTable::from_name(&self.name).is_none()
    }

    /// The label columns a metric table's filters may name (none for a fixed table): what
    /// the scan applies exactly and what narrows the write buffer and segments by equality.
    fn label_names(&self) -> BTreeSet<&str> {
        if self.is_metric() { label_columns(&self.schema).collect() } else { BTreeSet::new() }
    }

    /// Buffered rows of one generation in this table's schema.
    fn buffered(&self, generation: &WriteBuffer, filter: &ScanFilter) -> Result<Vec<RecordBatch>, StorageError> {
        match generation.table(&self.name) {
            None => Ok(Vec::new()),
            Some(TableBuffer::Metric(metric)) => Ok(metric.batches(&self.schema, filter, QUERY_BATCH_ROWS)?),
            Some(TableBuffer::Rows(rows)) => {
                let time_index = self.schema.index_of(self.time_column()).map_err(StorageError::Arrow)?;
                let mut out = Vec::new();
                for batch in rows.batches() {
                    let batch = adapt_to(batch, &self.schema)?;
                    let kept = within(&batch, time_index, filter)?;
                    if kept.num_rows() > 0 {
                        out.push(kept);
                    }
                }
                Ok(out)
            }
        }
    }
}

#[async_trait]
impl TableProvider for VigilTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Time bounds are applied exactly (segments wholly inside them are read without a
    /// filter, so their statistics stay exact), and so are filters on label columns alone
    /// (see [`LabelFilters`]); everything else only prunes.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let labels = self.label_names();
        Ok(crate::filters::pushdown(filters, self.time_column(), |c| labels.contains(c)))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self.scan_sources(state, projection, filters, limit, false).await?.0)
    }
}

impl VigilTable {
    /// The plan [`TableProvider::scan`] answers, and whether its rows come one run per
    /// series: what lets the PromQL sweep drop a series' samples as soon as its run has
    /// ended. Each source (a segment, a write buffer generation with rows) is sorted by
    /// series, then time (a segment as written, a generation's rows as [`crate::buffer`]
    /// hands them out), so a scan of one source's rows does; so does one of shared segments
    /// of disjoint series (a merge's slices) read one after the other, which `series_once`
    /// asks for (in one partition, where a scan would read them in several).
    pub async fn scan_sources(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        series_once: bool,
    ) -> DfResult<(Arc<dyn ExecutionPlan>, bool)> {
        let labels = self.label_names();
        let is_label = |c: &str| labels.contains(c);
        let filter = scan_filter(filters, self.time_column(), is_label);

        // One consistent snapshot: a flush publishes its segments and retires the buffer
        // generation they came from under the same lock.
        let (segments, mut buffered, persisting) = {
            let state = self.storage.inner.state.lock();
            let segments: Vec<SegmentMeta> = state
                .segments_of(&self.name)
                .filter(|s| filter.overlaps(s.min_time_ns, s.max_time_ns))
                .filter(|s| !label_excludes(s, &filter))
                .cloned()
                .collect();
            let active = self.buffered(&state.active, &filter).map_err(to_df)?;
            (segments, active, state.persisting.clone())
        };
        let has_rows = |batches: &[RecordBatch]| batches.iter().any(|b| b.num_rows() > 0);
        let mut sources = segments.len() + usize::from(has_rows(&buffered));
        if let Some(persisting) = persisting {
            let persisted = self.buffered(&persisting, &filter).map_err(to_df)?;
            sources += usize::from(has_rows(&persisted));
            buffered.extend(persisted);
        }
        self.storage.inner.segments_scanned.fetch_add(segments.len() as u64, Ordering::Relaxed);
        metrics::counter!("vigil_storage_segments_scanned_total").increment(segments.len() as u64);

        let label_filters = LabelFilters::new(filters, &self.schema, projection, is_label);
        let mut parts = ScanParts { series: buffered, ..ScanParts::default() };
        let mut indexed_once = true;
        // Segments wholly inside the time range need no filter when the time bounds are all
        // there is: read unfiltered, their manifest statistics are exact, and DataFusion answers
        // count/min/max from them without opening a file.
        let only_time = filters.iter().all(|f| is_time_bound(f, self.time_column()));
        let (covered, partial): (Vec<SegmentMeta>, Vec<SegmentMeta>) =
            segments.into_iter().partition(|s| only_time && filter.contains(s.min_time_ns, s.max_time_ns));
        for (segments, filters) in [(covered, &[][..]), (partial, filters)] {
            if segments.is_empty() {
                continue;
            }
            let scans =
                self.segment_scan(state, segments, &label_filters, filters, limit, &filter, series_once).await?;
            indexed_once &= scans.series_once;
            parts.exact.extend(scans.exact);
            parts.unfiltered.extend(scans.unfiltered);
            parts.series.extend(scans.series);
        }
        // Several sources: only where they are all indexed files of disjoint series, in one plan.
        let once = sources == 1
            || (indexed_once && parts.exact.len() == 1 && parts.unfiltered.is_empty() && parts.series.is_empty());
        Ok((scan_plan(state, &self.schema, &label_filters, parts)?, once))
    }

    #[allow(clippy::too_many_arguments)]
    async fn segment_scan(
        &self,
        state: &dyn Session,
        segments: Vec<SegmentMeta>,
        label_filters: &LabelFilters,
        filters: &[Expr],
        limit: Option<usize>,
        scan: &ScanFilter,
        series_once: bool,
    ) -> DfResult<ScanParts> {
        let mut statistics = table_statistics(&segments, &self.schema);
        if !filters.is_empty() || self.reading == SegmentReading::Series {
            // The series index may leave rows or whole files out.
            statistics = statistics.to_inexact();
        }
        // The same label columns the scan promised exactness for.
        let labels = self.label_names();
        let is_label = |c: &str| labels.contains(c);
        let mut files = ScanFiles::default();
        for segment in &segments {
            if segment.shared.is_none() {
                files.push_whole(PartitionedFile::new(segment.path.clone(), segment.size_bytes));
                continue;
            }
            // Only this table's run of the shared file (and of it, the series the filters can
            // match): row groups and pages outside it are never read.
            files.push(
                crate::series_index::shared_read(
                    &self.storage,
                    state,
                    &[segment],
                    filters,
                    scan,
                    &is_label,
                    self.reading,
                    &self.schema,
                )
                .await?,
            );
        }
        files.plans(&self.storage, state, &self.schema, statistics, label_filters, filters, limit, series_once).await
    }
}

/// A Parquet scan of `files` in `schema`: `filters` as the pruning predicate and, when there
/// are any, row by row (time bounds were promised exact).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn parquet_scan(
    storage: &Storage,
    state: &dyn Session,
    schema: &SchemaRef,
    files: Vec<PartitionedFile>,
    statistics: datafusion::common::Statistics,
    projection: Option<Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let (store_url, _) = storage.object_store();
    let mut source = ParquetSource::new(schema.clone());
    let pushdown = !filters.is_empty();
    if let Some(predicate) = conjunction(filters.iter().cloned()) {
        let df_schema = DFSchema::try_from(schema.clone())?;
        source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
    }
    let groups = state.config().target_partitions().max(1).min(files.len().max(1));
    let mut grouped: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
    for (i, file) in files.into_iter().enumerate() {
        grouped[i % groups].push(file);
    }
    let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
        .with_file_groups(grouped.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection)?
        .with_limit(limit)
        .with_statistics(statistics)
        .build();
    let mut options = datafusion::config::TableParquetOptions::default();
    options.global = state.config().options().execution.parquet.clone();
    options.global.pushdown_filters |= pushdown;
    ParquetFormat::default().with_options(options).create_physical_plan(state, config).await
}

/// The plan of a scan: its inputs united, those that did not apply its label filters (files
/// read whole, the write buffer's rows, the index's series rows) through one filter of them,
/// as `supports_filters_pushdown` promised (or nothing).
pub(crate) fn scan_plan(
    state: &dyn Session,
    schema: &SchemaRef,
    label_filters: &LabelFilters,
    parts: ScanParts,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let ScanParts { mut exact, mut unfiltered, series: rows, .. } = parts;
    if !rows.is_empty() {
        unfiltered.push(MemorySourceConfig::try_new_exec(&[rows], schema.clone(), label_filters.read.clone())?);
    }
    if !unfiltered.is_empty() {
        exact.push(label_filters.apply(state, UnionExec::try_new(unfiltered)?)?);
    }
    if exact.is_empty() {
        let schema = datafusion::physical_plan::project_schema(schema, label_filters.projection.as_ref())?;
        return Ok(Arc::new(EmptyExec::new(schema)));
    }
    UnionExec::try_new(exact)
}

/// The time span a scan of `table` with `filters` covers, in nanoseconds; `None` when it
/// has no lower or no upper bound.
pub fn time_span_ns(table: &str, filters: &[Expr]) -> Option<i64> {
    let filter = scan_filter(filters, time_column_of(table), |_| false);
    Some(filter.end_ns?.saturating_sub(filter.start_ns?))
}

impl Storage {
    /// The segments of a table on every node, as last read.
    pub fn all_segments_of(&self, table: &str) -> Vec<SegmentMeta> {
        let state = self.inner.state.lock();
        state.segments_of(table).cloned().collect()
    }
}

/// Rows of `batch` inside the filter's time bounds.
fn within(batch: &RecordBatch, time_index: usize, filter: &ScanFilter) -> Result<RecordBatch, StorageError> {
    if filter.start_ns.is_none() && filter.end_ns.is_none() {
        return Ok(batch.clone());
    }
    let times = crate::buffer::time_values(batch.column(time_index))?;
    let mask: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| filter.overlaps(t, t)))).collect();
    Ok(datafusion::arrow::compute::filter_record_batch(batch, &mask)?)
}

/// True when the segment's statistics show that no row can match a label equality.
pub(crate) fn label_excludes(segment: &SegmentMeta, filter: &ScanFilter) -> bool {
    use crate::manifest::StatValue;
    filter.label_equals.iter().any(|(column, value)| {
        let Some(stats) = segment.stats.iter().find(|c| &c.name == column) else {
            // A label column the segment lacks is null in all its rows.
            return !segment.columns.iter().any(|c| c == column);
        };
        match (&stats.min, &stats.max) {
            (Some(StatValue::Text(lo)), Some(StatValue::Text(hi))) => value < lo || value > hi,
            _ => stats.nulls == segment.rows,
        }
    })
}

pub(crate) fn to_df(e: StorageError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

/// Makes every Vigil table the default schema of `ctx` and lets it read segments.
pub fn register(storage: &Storage, ctx: &datafusion::prelude::SessionContext) -> DfResult<()> {
    let (url, store) = storage.object_store();
    ctx.register_object_store(url.as_ref(), store);
    set_default_schema(ctx, Arc::new(VigilSchemaProvider::new(storage.clone())))
}

/// Installs `schema` as the schema unqualified table names resolve in.
pub fn set_default_schema(ctx: &datafusion::prelude::SessionContext, schema: Arc<dyn SchemaProvider>) -> DfResult<()> {
    let options = ctx.copied_config();
    let defaults = &options.options().catalog;
    let catalog = ctx
        .catalog(&defaults.default_catalog)
        .ok_or_else(|| datafusion::error::DataFusionError::Plan(format!("no catalog {}", defaults.default_catalog)))?;
    catalog.register_schema(&defaults.default_schema, schema)?;
    Ok(())
}
