//! The in-memory write buffer: what was written since the last flush, queryable at once.
//!
//! Metric tables keep one entry per series (its label set once, then timestamps and values
//! in time order, one value per timestamp: a repeated timestamp replaces the value, so a
//! retried write or a replayed WAL never doubles a sample). Arrow batches are built on
//! demand, series sorted by their labels (`schema::series_order`) then time, which is also
//! the order segments are written in. Fixed tables keep the batches they were given.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::FastHashMap as HashMap;
use datafusion::arrow::array::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{Int32Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::schema::{
    FixedTable, label_column_name, label_columns, label_name_of_column, metric_schema, metric_table_name, series_order,
};
use crate::write::{LabelSet, MetricSeries, Sample, TableRows};

/// Which rows a scan wants. Bounds are inclusive, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanFilter {
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    /// Column = value conditions on label columns.
    pub label_equals: Vec<(String, String)>,
}

impl ScanFilter {
    pub fn overlaps(&self, min_ns: i64, max_ns: i64) -> bool {
        self.start_ns.is_none_or(|s| max_ns >= s) && self.end_ns.is_none_or(|e| min_ns <= e)
    }

    /// True when every time in `[min_ns, max_ns]` is inside the bounds.
    pub fn contains(&self, min_ns: i64, max_ns: i64) -> bool {
        self.start_ns.is_none_or(|s| min_ns >= s) && self.end_ns.is_none_or(|e| max_ns <= e)
    }
}

#[derive(Default)]
pub(crate) struct WriteBuffer {
    tables: HashMap<String, TableBuffer>,
    bytes: usize,
}

pub(crate) enum TableBuffer {
    Metric(MetricBuffer),
    Rows(RowsBuffer),
}

#[derive(Default)]
pub(crate) struct MetricBuffer {
    index: HashMap<LabelSet, usize>,
    series: Vec<SeriesBuffer>,
    label_columns: BTreeSet<String>,
}

struct SeriesBuffer {
    labels: LabelSet,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

impl SeriesBuffer {
    /// Merges samples in strict time order into the held ones; where both hold a timestamp,
    /// `winner` says which value stays. Appending (the usual case) costs O(new), anything else one
    /// O(held + new) merge: never a shift per sample. Returns the bytes added.
    fn merge(&mut self, samples: &[Sample], winner: MergeWinner) -> usize {
        let Some(first) = samples.first() else { return 0 };
        let held = self.timestamps.len();
        // The usual case, a scrape or a remote-write shard in time order: append without
        // searching or splitting.
        if self.timestamps.last().is_none_or(|&last| last < first.timestamp_ns) {
            self.timestamps.extend(samples.iter().map(|s| s.timestamp_ns));
            self.values.extend(samples.iter().map(|s| s.value));
            return samples.len() * 16;
        }
        let start = self.timestamps.partition_point(|&t| t < first.timestamp_ns);
        let tail_timestamps = self.timestamps.split_off(start);
        let tail_values = self.values.split_off(start);
        self.timestamps.reserve(samples.len() + tail_timestamps.len());
        self.values.reserve(samples.len() + tail_values.len());
        let (mut old, mut new) = (0, 0);
        while old < tail_timestamps.len() || new < samples.len() {
            let take_new = match (tail_timestamps.get(old), samples.get(new)) {
                (Some(&held_ts), Some(sample)) if held_ts == sample.timestamp_ns => {
                    // One of the two goes; the other is taken below.
                    match winner {
                        MergeWinner::Incoming => old += 1,
                        MergeWinner::Held => new += 1,
                    }
                    winner == MergeWinner::Incoming
                }
                (Some(&held_ts), Some(sample)) => held_ts > sample.timestamp_ns,
                (None, Some(_)) => true,
                _ => false,
            };
            if take_new {
                self.timestamps.push(samples[new].timestamp_ns);
                self.values.push(samples[new].value);
                new += 1;
            } else {
                self.timestamps.push(tail_timestamps[old]);
                self.values.push(tail_values[old]);
                old += 1;
            }
        }
        (self.timestamps.len() - held) * 16
    }
}

pub(crate) struct RowsBuffer {
    table: FixedTable,
    batches: Vec<RecordBatch>,
}

impl WriteBuffer {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a write's series and rows.
    pub fn apply(&mut self, batch: &crate::WriteBatch) {
        self.apply_metrics(&batch.metrics, MergeWinner::Incoming);
        for rows in &batch.rows {
            self.apply_rows(rows);
        }
    }

    #[cfg(test)]
    pub fn apply_series(&mut self, series: &MetricSeries) {
        self.apply_metrics(std::slice::from_ref(series), MergeWinner::Incoming);
    }

    /// A metric's table is looked up once per run of its series (see `WriteBatch::metric_runs`).
    fn apply_metrics(&mut self, metrics: &[MetricSeries], winner: MergeWinner) {
        for run in crate::write::metric_runs(metrics) {
            if run.iter().all(|series| series.samples.is_empty()) {
                continue;
            }
            let table = metric_table_name(&run[0].metric);
            let make = || TableBuffer::Metric(MetricBuffer::default());
            // Never a fixed table's buffer: metric names never map to fixed tables.
            let TableBuffer::Metric(buffer) = crate::get_or_insert_with(&mut self.tables, &table, make) else {
                continue;
            };
            for series in run.iter().filter(|series| !series.samples.is_empty()) {
                self.bytes += buffer.apply_with(series, winner);
            }
        }
    }

    pub fn apply_rows(&mut self, rows: &TableRows) {
        if let Some(batches) = self.rows_buffer(rows) {
            batches.push(rows.batch.clone());
        }
    }

    /// The batches of `rows`' table, counting its bytes in; none for an empty batch.
    fn rows_buffer(&mut self, rows: &TableRows) -> Option<&mut Vec<RecordBatch>> {
        if rows.batch.num_rows() == 0 {
            return None;
        }
        let entry = self
            .tables
            .entry(rows.table.name().to_string())
            .or_insert_with(|| TableBuffer::Rows(RowsBuffer { table: rows.table, batches: Vec::new() }));
        match entry {
            TableBuffer::Rows(buffer) => {
                self.bytes += rows.batch.get_array_memory_size();
                Some(&mut buffer.batches)
            }
            TableBuffer::Metric(_) => None,
        }
    }

    /// Adds rows older than what this buffer holds (a flush's kept-back tables): where both
    /// hold a sample of the same series and time, this buffer's newer value stays.
    pub fn apply_older(&mut self, batch: &crate::WriteBatch) {
        self.apply_metrics(&batch.metrics, MergeWinner::Held);
        for rows in &batch.rows {
            if let Some(batches) = self.rows_buffer(rows) {
                batches.insert(0, rows.batch.clone());
            }
        }
    }

    /// Everything held, as one write.
    pub fn to_batch(&self) -> crate::WriteBatch {
        let mut batch = crate::WriteBatch::default();
        for name in self.tables.keys() {
            let table = self.table_batch(name);
            batch.metrics.extend(table.metrics);
            batch.rows.extend(table.rows);
        }
        batch
    }

    /// One table's content as a write (to log it again).
    pub fn table_batch(&self, name: &str) -> crate::WriteBatch {
        let mut batch = crate::WriteBatch::default();
        match self.tables.get(name) {
            Some(TableBuffer::Metric(metric)) => {
                let metric_name = crate::write::MetricName::from(crate::schema::metric_name_of_table(name));
                batch.metrics = metric
                    .series
                    .iter()
                    .map(|s| MetricSeries {
                        metric: metric_name.clone(),
                        labels: s.labels.clone(),
                        samples: s
                            .timestamps
                            .iter()
                            .zip(&s.values)
                            .map(|(&timestamp_ns, &value)| Sample { timestamp_ns, value })
                            .collect(),
                    })
                    .collect();
            }
            Some(TableBuffer::Rows(rows)) => {
                batch.rows = rows.batches.iter().map(|b| TableRows { table: rows.table, batch: b.clone() }).collect();
            }
            None => {}
        }
        batch
    }

    pub fn table(&self, name: &str) -> Option<&TableBuffer> {
        self.tables.get(name)
    }

    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableBuffer)> {
        self.tables.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// Which value stays when a merge meets a timestamp held already.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MergeWinner {
    /// The incoming one: a later write of the same sample replaces it.
    Incoming,
    /// The held one: the incoming samples are older than what is held.
    Held,
}

impl MetricBuffer {
    /// Adds samples; returns the bytes added.
    fn apply_with(&mut self, series: &MetricSeries, winner: MergeWinner) -> usize {
        let mut added = 0;
        let index = match self.index.get(&series.labels) {
            Some(&index) => index,
            None => {
                for (name, _) in series.labels.iter() {
                    if !self.label_columns.contains(label_column_name(name).as_ref()) {
                        self.label_columns.insert(label_column_name(name).into_owned());
                    }
                }
                added += series.labels.heap_bytes() * 2 + 96;
                self.index.insert(series.labels.clone(), self.series.len());
                self.series.push(SeriesBuffer {
                    labels: series.labels.clone(),
                    timestamps: Vec::new(),
                    values: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let samples = &series.samples;
        if samples.windows(2).all(|pair| pair[0].timestamp_ns < pair[1].timestamp_ns) {
            added += self.series[index].merge(samples, winner);
        } else {
            // Writes arrive sorted (`Storage::write` sorts them outside the lock); anything
            // else is sorted here rather than inserted sample by sample.
            let mut sorted = series.clone();
            sorted.sort_samples();
            added += self.series[index].merge(&sorted.samples, winner);
        }
        added
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The label sets of the series held.
    pub fn label_sets(&self) -> impl Iterator<Item = &LabelSet> {
        self.series.iter().map(|s| &s.labels)
    }

    pub fn label_columns(&self) -> impl Iterator<Item = &str> {
        self.label_columns.iter().map(String::as_str)
    }

    pub fn schema(&self) -> SchemaRef {
        metric_schema(self.label_columns())
    }

    /// Builds batches in `schema` (a metric schema holding at least this buffer's label
    /// columns) with the rows the filter selects, series sorted by `series_order` then time.
    pub fn batches(
        &self,
        schema: &SchemaRef,
        filter: &ScanFilter,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let columns: Vec<&str> = label_columns(schema).collect();
        let wanted: Vec<(&str, &str)> =
            filter.label_equals.iter().map(|(c, v)| (label_name_of_column(c), v.as_str())).collect();
        let mut selected: Vec<(&SeriesBuffer, std::ops::Range<usize>)> = self
            .series
            .iter()
            .filter(|s| wanted.iter().all(|(name, value)| s.labels.get(name) == Some(*value)))
            .filter_map(|s| {
                let from = filter.start_ns.map_or(0, |t| s.timestamps.partition_point(|&x| x < t));
                let to = filter.end_ns.map_or(s.timestamps.len(), |t| s.timestamps.partition_point(|&x| x <= t));
                (from < to).then_some((s, from..to))
            })
            .collect();
        // Series order: their labels in `series_order`, compared lexicographically, nulls first.
        let order: Vec<&str> = series_order(schema);
        selected.sort_by(|(a, _), (b, _)| {
            order
                .iter()
                .map(|c| label_name_of_column(c))
                .map(|name| a.labels.get(name).cmp(&b.labels.get(name)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });

        let mut batches = Vec::new();
        // Sized up front: growing a flush's columns by doubling copied and zeroed them again
        // (a tenth of the CPU of a remote-write load went to page zeroing here).
        let mut left: usize = selected.iter().map(|(_, range)| range.len()).sum();
        let mut builder = BatchBuilder::new(schema.clone(), &columns, left.min(max_rows));
        for (series, range) in selected {
            let mut start = range.start;
            while start < range.end {
                let take = (range.end - start).min(max_rows - builder.rows);
                builder.push_series(series, start..start + take, &columns);
                start += take;
                left -= take;
                if builder.rows >= max_rows {
                    batches.push(builder.finish()?);
                    builder = BatchBuilder::new(schema.clone(), &columns, left.min(max_rows));
                }
            }
        }
        if builder.rows > 0 {
            batches.push(builder.finish()?);
        }
        Ok(batches)
    }
}

/// Accumulates rows of series into one record batch.
struct BatchBuilder {
    schema: SchemaRef,
    labels: Vec<DictionaryColumn>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    rows: usize,
}

impl BatchBuilder {
    fn new(schema: SchemaRef, columns: &[&str], rows: usize) -> Self {
        BatchBuilder {
            schema,
            labels: columns.iter().map(|_| DictionaryColumn::with_capacity(rows)).collect(),
            timestamps: Vec::with_capacity(rows),
            values: Vec::with_capacity(rows),
            rows: 0,
        }
    }

    fn push_series(&mut self, series: &SeriesBuffer, range: std::ops::Range<usize>, columns: &[&str]) {
        let n = range.len();
        for (column, builder) in columns.iter().zip(&mut self.labels) {
            builder.push_repeated(series.labels.get(label_name_of_column(column)), n);
        }
        self.timestamps.extend_from_slice(&series.timestamps[range.clone()]);
        self.values.extend_from_slice(&series.values[range]);
        self.rows += n;
    }

    fn finish(self) -> Result<RecordBatch, ArrowError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.labels.len() + 2);
        for column in self.labels {
            arrays.push(Arc::new(column.finish()?));
        }
        arrays.push(Arc::new(TimestampNanosecondArray::from(self.timestamps).with_timezone("UTC")));
        arrays.push(Arc::new(Float64Array::from(self.values)));
        RecordBatch::try_new(self.schema, arrays)
    }
}

/// Builds a dictionary column whose values repeat in runs (one run per series).
struct DictionaryColumn {
    keys: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Vec<String>,
    index: HashMap<String, i32>,
}

impl DictionaryColumn {
    fn with_capacity(rows: usize) -> Self {
        DictionaryColumn {
            keys: Vec::with_capacity(rows),
            nulls: NullBufferBuilder::new(rows),
            values: Vec::new(),
            index: HashMap::default(),
        }
    }

    fn push_repeated(&mut self, value: Option<&str>, n: usize) {
        match value {
            Some(v) => {
                let key = match self.index.get(v) {
                    Some(&key) => key,
                    None => {
                        let key = self.values.len() as i32;
                        self.values.push(v.to_string());
                        self.index.insert(v.to_string(), key);
                        key
                    }
                };
                self.keys.extend(std::iter::repeat_n(key, n));
                self.nulls.append_n_non_nulls(n);
            }
            None => {
                self.keys.extend(std::iter::repeat_n(0, n));
                self.nulls.append_n_nulls(n);
            }
        }
    }

    fn finish(mut self) -> Result<DictionaryArray<Int32Type>, ArrowError> {
        let keys = Int32Array::new(self.keys.into(), self.nulls.finish());
        DictionaryArray::try_new(keys, Arc::new(StringArray::from(self.values)))
    }
}

impl RowsBuffer {
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Rows of one time partition `[start, end]`, sorted by the table's time column.
    pub fn partition_batch(&self, start_ns: i64, end_ns: i64) -> Result<Option<RecordBatch>, ArrowError> {
        let schema = self.table.schema();
        let time_index = schema.index_of(self.table.time_column())?;
        let mut parts = Vec::new();
        for batch in &self.batches {
            let times = time_values(batch.column(time_index))?;
            let mask: BooleanArray =
                times.iter().map(|t| Some(t.is_some_and(|t| t >= start_ns && t <= end_ns))).collect();
            let part = compute::filter_record_batch(batch, &mask)?;
            if part.num_rows() > 0 {
                parts.push(part);
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let merged = compute::concat_batches(&schema, &parts)?;
        sort_batch_by(&merged, &[time_index]).map(Some)
    }
}

pub(crate) fn time_values(array: &ArrayRef) -> Result<&TimestampNanosecondArray, ArrowError> {
    array
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| ArrowError::SchemaError("time column is not a nanosecond timestamp".into()))
}

/// Sorts a batch by the given columns (lexicographically, nulls first), stable.
pub(crate) fn sort_batch_by(batch: &RecordBatch, columns: &[usize]) -> Result<RecordBatch, ArrowError> {
    let sort_columns: Vec<compute::SortColumn> =
        columns.iter().map(|&i| compute::SortColumn { values: batch.column(i).clone(), options: None }).collect();
    let indices = compute::lexsort_to_indices(&sort_columns, None)?;
    compute::take_record_batch(batch, &indices)
}

/// Splits a buffer's content per table and time partition, for a flush: one entry per
/// table with the batches of every partition that holds rows (never a walk over the empty
/// partitions between two far-apart timestamps).
pub(crate) fn partitioned_batches(
    buffer: &WriteBuffer,
    partition_ns: i64,
) -> Vec<(String, Result<Vec<(i64, RecordBatch)>, ArrowError>)> {
    buffer
        .tables()
        .map(|(table, content)| {
            let parts = match content {
                TableBuffer::Metric(metric) => metric.partitioned(partition_ns),
                TableBuffer::Rows(rows) => rows.partitioned(partition_ns),
            };
            (table.to_string(), parts)
        })
        .collect()
}

impl MetricBuffer {
    /// Rows held, over all series.
    pub fn rows(&self) -> usize {
        self.series.iter().map(|s| s.timestamps.len()).sum()
    }

    /// The starts of the partitions holding at least one sample.
    fn partitions(&self, partition_ns: i64) -> BTreeSet<i64> {
        let mut partitions = BTreeSet::new();
        for series in &self.series {
            let mut at = 0;
            while let Some(&ts) = series.timestamps.get(at) {
                let start = partition_start(ts, partition_ns);
                partitions.insert(start);
                let end = partition_end(start, partition_ns);
                at += series.timestamps[at..].partition_point(|&t| t <= end);
            }
        }
        partitions
    }

    fn partitioned(&self, partition_ns: i64) -> Result<Vec<(i64, RecordBatch)>, ArrowError> {
        let schema = self.schema();
        let mut out = Vec::new();
        let mut rows = 0;
        for partition in self.partitions(partition_ns) {
            let filter = ScanFilter {
                start_ns: Some(partition),
                end_ns: Some(partition_end(partition, partition_ns)),
                label_equals: Vec::new(),
            };
            for batch in self.batches(&schema, &filter, usize::MAX)? {
                rows += batch.num_rows();
                out.push((partition, batch));
            }
        }
        check_all_rows(rows, self.rows())?;
        Ok(out)
    }
}

impl RowsBuffer {
    fn partitioned(&self, partition_ns: i64) -> Result<Vec<(i64, RecordBatch)>, ArrowError> {
        let time_index = self.table.schema().index_of(self.table.time_column())?;
        let mut partitions = BTreeSet::new();
        let mut held = 0;
        for batch in &self.batches {
            held += batch.num_rows();
            partitions.extend(
                time_values(batch.column(time_index))?.iter().flatten().map(|t| partition_start(t, partition_ns)),
            );
        }
        let mut out = Vec::new();
        let mut rows = 0;
        for partition in partitions {
            if let Some(batch) = self.partition_batch(partition, partition_end(partition, partition_ns))? {
                rows += batch.num_rows();
                out.push((partition, batch));
            }
        }
        check_all_rows(rows, held)?;
        Ok(out)
    }
}

/// A flush must account for every row it was given; anything else is a bug that would lose
/// data silently, so the table is kept back instead.
fn check_all_rows(partitioned: usize, held: usize) -> Result<(), ArrowError> {
    if partitioned == held {
        Ok(())
    } else {
        Err(ArrowError::ComputeError(format!("{held} rows held but {partitioned} fell into partitions")))
    }
}

/// Start of the partition holding `ts` (floor, also for negative times). Near `i64::MIN`,
/// where the floor is not representable, the partition starts at `i64::MIN`.
pub fn partition_start(ts: i64, partition_ns: i64) -> i64 {
    let start = i128::from(ts).div_euclid(i128::from(partition_ns)) * i128::from(partition_ns);
    i64::try_from(start).unwrap_or(i64::MIN)
}

/// Last nanosecond of the partition starting at `start` (inclusive bound).
pub fn partition_end(start: i64, partition_ns: i64) -> i64 {
    start.saturating_add(partition_ns - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn series(metric: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> MetricSeries {
        MetricSeries {
            metric: metric.into(),
            labels: LabelSet::new(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap(),
            samples: samples.iter().map(|&(t, v)| Sample { timestamp_ns: t, value: v }).collect(),
        }
    }

    fn render(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    #[test]
    fn a_write_applies_as_its_series_one_by_one() {
        // Runs of metrics coming apart, a repeated series, and series without samples.
        let write = crate::WriteBatch {
            metrics: vec![
                series("up", &[("job", "a")], &[(10, 1.0), (20, 2.0)]),
                series("up", &[("job", "b")], &[]),
                series("down", &[("job", "a")], &[(10, 3.0)]),
                series("up", &[("job", "a")], &[(20, 4.0), (30, 5.0)]),
                series("empty", &[("job", "a")], &[]),
            ],
            rows: vec![],
        };
        let mut whole = WriteBuffer::default();
        whole.apply(&write);
        let mut one_by_one = WriteBuffer::default();
        for series in &write.metrics {
            one_by_one.apply_series(series);
        }
        let mut names: Vec<&str> = whole.table_names().collect();
        names.sort_unstable();
        assert_eq!(names, ["down", "up"], "a metric without samples makes no table");
        assert_eq!(whole.bytes(), one_by_one.bytes());
        for name in names {
            assert_eq!(whole.table_batch(name), one_by_one.table_batch(name), "{name}");
        }
        let Some(TableBuffer::Metric(up)) = whole.table("up") else { panic!("no table") };
        assert_eq!(up.series_count(), 1);
        let rows = up.batches(&up.schema(), &ScanFilter::default(), 100).unwrap();
        assert!(render(&rows).contains("| a   | 1970-01-01T00:00:00.000000020Z | 4.0   |"), "{}", render(&rows));
    }

    #[test]
    fn series_are_sorted_deduplicated_and_filtered() {
        let mut buffer = WriteBuffer::default();
        buffer.apply_series(&series("up", &[("job", "b")], &[(30, 1.0), (10, 2.0)]));
        buffer.apply_series(&series("up", &[("job", "a"), ("instance", "x")], &[(20, 3.0)]));
        // A repeated timestamp replaces the value instead of adding a row.
        buffer.apply_series(&series("up", &[("job", "b")], &[(10, 4.0)]));
        let Some(TableBuffer::Metric(up)) = buffer.table("up") else { panic!("no table") };
        let schema = up.schema();
        let all = up.batches(&schema, &ScanFilter::default(), 2).unwrap();
        assert_eq!(all.len(), 2, "split at max_rows");
        // Series by job first (`series_order`), then time.
        let expected = "\
+----------+-----+--------------------------------+-------+
| instance | job | timestamp                      | value |
+----------+-----+--------------------------------+-------+
| x        | a   | 1970-01-01T00:00:00.000000020Z | 3.0   |
|          | b   | 1970-01-01T00:00:00.000000010Z | 4.0   |
|          | b   | 1970-01-01T00:00:00.000000030Z | 1.0   |
+----------+-----+--------------------------------+-------+";
        assert_eq!(render(&all), expected);

        let filter =
            ScanFilter { start_ns: Some(15), end_ns: Some(30), label_equals: vec![("job".into(), "b".into())] };
        let some = up.batches(&schema, &filter, 1000).unwrap();
        assert_eq!(some.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(up.rows(), 3);
    }

    #[test]
    fn flush_splits_per_partition() {
        let mut buffer = WriteBuffer::default();
        buffer.apply_series(&series("up", &[("job", "a")], &[(5, 1.0), (15, 2.0), (25, 3.0), (-1, 0.0)]));
        let parts = partitioned_batches(&buffer, 10);
        let summary: Vec<(i64, usize)> = parts[0].1.as_ref().unwrap().iter().map(|(p, b)| (*p, b.num_rows())).collect();
        assert_eq!(summary, vec![(-10, 1), (0, 1), (10, 1), (20, 1)]);
        assert!(buffer.bytes() > 0);
    }

    #[test]
    fn extreme_timestamps_keep_every_row_without_walking_empty_partitions() {
        let mut buffer = WriteBuffer::default();
        let far_past = -9_223_372_036_854_000_000;
        let mut samples: Vec<(i64, f64)> =
            (0..1000).map(|i| (1_700_000_000_000_000_000 + i * 1_000_000_000, i as f64)).collect();
        samples.push((far_past, -1.0));
        samples.push((i64::MAX, 1.0));
        buffer.apply_series(&series("up", &[("job", "a")], &samples));
        let hour = 3_600_000_000_000;
        let parts = partitioned_batches(&buffer, 2 * hour);
        let parts = parts[0].1.as_ref().unwrap();
        assert_eq!(parts.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 1002);
        assert_eq!(parts.first().map(|(p, _)| *p), Some(i64::MIN));
        assert!(parts.len() <= 4, "{} batches", parts.len());
    }

    #[test]
    fn out_of_order_samples_merge_in_one_pass() {
        let mut buffer = WriteBuffer::default();
        buffer.apply_series(&series("up", &[("job", "a")], &[(10, 1.0), (30, 3.0)]));
        buffer.apply_series(&series("up", &[("job", "a")], &[(40, 4.0), (20, 2.0), (30, 9.0), (5, 0.5)]));
        let Some(TableBuffer::Metric(up)) = buffer.table("up") else { panic!("no table") };
        let batches = up.batches(&up.schema(), &ScanFilter::default(), 100).unwrap();
        let values = batches[0].column(2).as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec();
        assert_eq!(values, vec![0.5, 1.0, 2.0, 9.0, 4.0]);
        // Descending input of a large series: one sort, not a shift per sample.
        let descending: Vec<(i64, f64)> = (0..200_000).rev().map(|t| (t + 1000, t as f64)).collect();
        buffer.apply_series(&series("down", &[], &descending));
        let Some(TableBuffer::Metric(down)) = buffer.table("down") else { panic!("no table") };
        assert_eq!(down.rows(), 200_000);
    }
}
