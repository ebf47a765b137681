//! Merging segments' rows into one sorted batch, for compaction.
//!
//! A metric segment is sorted by series (`schema::series_order`) then time, so a merge of
//! several is a merge of sorted runs: each input is cut into its series' runs (comparing
//! neighbouring rows), the runs are ordered by one key per run, and a series found in several
//! inputs is put together by time. Only the runs' first rows are compared as whole keys, where
//! sorting every row by its label strings cost half of a window merge's CPU. An input that is
//! not sorted as expected (which no writer of today's store makes) is sorted whole instead.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::compute::{self, SortColumn};
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use crate::StorageError;
use crate::buffer::{self, time_values};
use crate::maintenance::adapt_to;
use crate::schema::{FixedTable, TIMESTAMP_COLUMN, label_columns, metric_schema, series_order};

/// Merges one table's rows from several segments (oldest first) into one sorted batch.
/// Metric rows that repeat a (series, timestamp) keep the newest value.
pub(crate) fn merge_segments(table: &str, inputs: Vec<RecordBatch>) -> Result<RecordBatch, StorageError> {
    if let Some(fixed) = FixedTable::from_name(table) {
        let schema = fixed.schema();
        let adapted = inputs.iter().map(|b| adapt_to(b, &schema)).collect::<Result<Vec<_>, _>>()?;
        let merged = compute::concat_batches(&schema, &adapted)?;
        return Ok(buffer::sort_batch_by(&merged, &[schema.index_of(fixed.time_column())?])?);
    }
    let mut columns = BTreeSet::new();
    for input in &inputs {
        columns.extend(label_columns(&input.schema()).map(str::to_string));
    }
    let schema = metric_schema(columns.iter().map(String::as_str));
    let adapted = inputs.iter().map(|b| adapt_to(b, &schema)).collect::<Result<Vec<_>, _>>()?;
    Ok(merge_metric(&schema, &adapted)?)
}

/// Merges metric batches of one schema, each sorted by series then time (oldest first). The
/// merged batch is built from the inputs row by row (interleaved), not from a concatenation of
/// them: a merge holds its inputs and its output, not a third copy.
fn merge_metric(schema: &SchemaRef, inputs: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let Some(order) = merge_order(schema, inputs)? else {
        tracing::debug!("a merge input is not sorted by series then time (or has no labels); sorting it whole");
        let merged = compute::concat_batches(schema, inputs)?;
        return compute::take_record_batch(&merged, &sort_order(&merged)?);
    };
    // One input already in order (a table only one file of a slice holds): as it is.
    if let [only] = inputs
        && order.len() == only.num_rows()
        && order.iter().enumerate().all(|(i, &(_, row))| i == row)
    {
        return Ok(only.clone());
    }
    let inputs: Vec<&RecordBatch> = inputs.iter().collect();
    compute::interleave_record_batch(&inputs, &order)
}

/// One series' run of rows in one input: the input (its age: later inputs are newer), the
/// run's key among its input's run keys, its rows in the input, and whether a timestamp
/// repeats in it.
struct Run {
    input: usize,
    key: usize,
    rows: Range<usize>,
    repeats: bool,
}

/// The inputs' rows (input, row) in series-then-time order, duplicates dropped (the newest
/// kept), by merging the inputs' series runs; `None` when an input is not sorted, or the table
/// has no labels (one series, which a sort by time orders as fast).
fn merge_order(schema: &SchemaRef, inputs: &[RecordBatch]) -> Result<Option<Vec<(usize, usize)>>, ArrowError> {
    let key_columns: Vec<usize> =
        series_order(schema).into_iter().map(|column| schema.index_of(column)).collect::<Result<_, _>>()?;
    if key_columns.is_empty() {
        return Ok(None);
    }
    let time_column = schema.index_of(TIMESTAMP_COLUMN)?;
    let converter =
        RowConverter::new(key_columns.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())?;
    let times: Vec<&[i64]> = inputs
        .iter()
        .map(|b| time_values(b.column(time_column)).map(|t| t.values().as_ref()))
        .collect::<Result<_, _>>()?;
    // Each input's run keys (one row per run) and its runs.
    let mut keys: Vec<Rows> = Vec::with_capacity(inputs.len());
    let mut runs: Vec<Run> = Vec::new();
    for (input, batch) in inputs.iter().enumerate() {
        let ranges = series_runs(batch, &key_columns)?;
        let starts = UInt64Array::from_iter_values(ranges.iter().map(|r| r.start as u64));
        let firsts: Vec<ArrayRef> =
            key_columns.iter().map(|&i| compute::take(batch.column(i), &starts, None)).collect::<Result<_, _>>()?;
        let input_keys = converter.convert_columns(&firsts)?;
        // Runs come in strictly rising keys, and each run's times never go back.
        if (1..ranges.len()).any(|k| input_keys.row(k - 1) >= input_keys.row(k)) {
            return Ok(None);
        }
        for (key, rows) in ranges.into_iter().enumerate() {
            let mut repeats = false;
            for pair in times[input][rows.clone()].windows(2) {
                if pair[0] > pair[1] {
                    return Ok(None);
                }
                repeats |= pair[0] == pair[1];
            }
            runs.push(Run { input, key, rows, repeats });
        }
        keys.push(input_keys);
    }
    let key_of = |run: &Run| keys[run.input].row(run.key);
    runs.sort_unstable_by(|a, b| key_of(a).cmp(&key_of(b)));

    let mut order: Vec<(usize, usize)> = Vec::with_capacity(inputs.iter().map(RecordBatch::num_rows).sum());
    let mut group_start = 0;
    while group_start < runs.len() {
        let key = key_of(&runs[group_start]);
        let group_end = (group_start + 1..runs.len()).find(|&g| key_of(&runs[g]) != key).unwrap_or(runs.len());
        series_order_of(&runs[group_start..group_end], &times, &mut order);
        group_start = group_end;
    }
    Ok(Some(order))
}

/// Appends the rows of one series' runs (oldest input first) in time order, one row per
/// timestamp: the newest input's, and in it the latest row's.
fn series_order_of(runs: &[Run], times: &[&[i64]], order: &mut Vec<(usize, usize)>) {
    let first = |run: &Run| times[run.input][run.rows.start];
    let last = |run: &Run| times[run.input][run.rows.end - 1];
    let mut by_start: Vec<&Run> = runs.iter().collect();
    by_start.sort_by_key(|run| first(run));
    // The common case: runs of disjoint times (a window's partitions), each without repeats.
    if by_start.windows(2).all(|pair| last(pair[0]) < first(pair[1])) && !runs.iter().any(|run| run.repeats) {
        for run in by_start {
            order.extend(run.rows.clone().map(|row| (run.input, row)));
        }
        return;
    }
    // Overlapping times (a late flush into a partition): by time, then age, then position,
    // keeping the last row of each timestamp.
    let mut rows: Vec<(i64, usize, usize)> =
        runs.iter().flat_map(|run| run.rows.clone().map(move |row| (times[run.input][row], run.input, row))).collect();
    rows.sort_unstable();
    for (i, &(time, input, row)) in rows.iter().enumerate() {
        if rows.get(i + 1).is_none_or(|next| next.0 != time) {
            order.push((input, row));
        }
    }
}

/// The runs of equal series keys in a batch.
fn series_runs(batch: &RecordBatch, key_columns: &[usize]) -> Result<Vec<Range<usize>>, ArrowError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let columns: Vec<ArrayRef> = key_columns.iter().map(|&i| batch.column(i).clone()).collect();
    Ok(compute::partition(&columns)?.ranges())
}

/// The rows of a batch in series-then-time order, duplicates dropped (the last kept), by
/// sorting every row: for inputs not sorted as segments are.
fn sort_order(batch: &RecordBatch) -> Result<UInt64Array, ArrowError> {
    let schema = batch.schema();
    let mut key_columns: Vec<usize> =
        series_order(&schema).into_iter().map(|column| schema.index_of(column)).collect::<Result<_, _>>()?;
    key_columns.push(schema.index_of(TIMESTAMP_COLUMN)?);
    // The input position breaks ties, so the newest of equal keys sorts last.
    let position: ArrayRef = Arc::new(UInt64Array::from_iter_values(0..batch.num_rows() as u64));
    let mut sort_columns: Vec<SortColumn> =
        key_columns.iter().map(|&i| SortColumn { values: batch.column(i).clone(), options: None }).collect();
    sort_columns.push(SortColumn { values: position, options: None });
    let indices = compute::lexsort_to_indices(&sort_columns, None)?;

    let keys: Vec<ArrayRef> =
        key_columns.iter().map(|&i| compute::take(batch.column(i), &indices, None)).collect::<Result<_, _>>()?;
    let converter = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    let rows = converter.convert_columns(&keys)?;
    let n = indices.len();
    let keep: BooleanArray = (0..n).map(|i| Some(i + 1 == n || rows.row(i) != rows.row(i + 1))).collect();
    let kept = compute::filter(&indices, &keep)?;
    Ok(UInt64Array::from_iter_values(kept.as_primitive::<UInt32Type>().values().iter().map(|&row| u64::from(row))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Int32Type;

    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Draw(u64);
    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A metric batch of (job, instance, code, time, value) rows over the given label columns
    /// (a missing label is null), in the order given.
    fn rows(labels: &[&str], rows: &[(u64, u64, Option<u64>, i64, f64)]) -> RecordBatch {
        let schema = metric_schema(labels.iter().copied());
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    TIMESTAMP_COLUMN => Arc::new(
                        TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.3)).with_timezone("UTC"),
                    ),
                    "value" => Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.4))),
                    label => {
                        let mut column = StringDictionaryBuilder::<Int32Type>::new();
                        for &(job, instance, code, _, _) in rows {
                            match label {
                                "job" => column.append_value(format!("job-{job}")),
                                "instance" => column.append_value(format!("host-{instance}")),
                                _ => column.append_option(code.map(|c| format!("{}", 200 + c))),
                            }
                        }
                        Arc::new(column.finish())
                    }
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// A merge order as positions in the inputs concatenated (as `sort_order` of them gives).
    fn concatenated(order: &[(usize, usize)], inputs: &[RecordBatch]) -> UInt64Array {
        let starts: Vec<usize> = inputs
            .iter()
            .scan(0, |at, b| {
                *at += b.num_rows();
                Some(*at - b.num_rows())
            })
            .collect();
        UInt64Array::from_iter_values(order.iter().map(|&(input, row)| (starts[input] + row) as u64))
    }

    /// Inputs sorted as segments are (by sorting them whole), to merge.
    fn segment_of(batch: RecordBatch) -> RecordBatch {
        compute::take_record_batch(&batch, &sort_order(&batch).unwrap()).unwrap()
    }

    /// The merge by runs orders the rows exactly as sorting every row would, duplicates
    /// dropped the same way: over inputs of disjoint and of overlapping times, repeated
    /// timestamps within and across inputs, series found in some inputs only, and a label
    /// column only newer inputs have.
    #[test]
    fn merging_runs_orders_rows_as_sorting_every_row() {
        for seed in 1..=60u64 {
            let mut draw = Draw(seed * 0x9e37_79b9);
            let inputs: Vec<RecordBatch> = (0..1 + draw.below(5))
                .map(|input| {
                    let overlapping = draw.below(3) == 0;
                    let labels: &[&str] = if input == 0 && draw.below(2) == 0 {
                        &["instance", "job"]
                    } else {
                        &["code", "instance", "job"]
                    };
                    let rows_of: Vec<_> = (0..draw.below(40))
                        .map(|_| {
                            let time = if overlapping {
                                draw.below(30) as i64
                            } else {
                                input as i64 * 100 + draw.below(30) as i64
                            };
                            let code = (labels.len() == 3 && draw.below(4) != 0).then(|| draw.below(2));
                            (draw.below(3), draw.below(4), code, time, draw.below(1000) as f64)
                        })
                        .collect();
                    segment_of(rows(labels, &rows_of))
                })
                .collect();
            let schema = metric_schema(["code", "instance", "job"]);
            let adapted: Vec<RecordBatch> = inputs.iter().map(|b| adapt_to(b, &schema).unwrap()).collect();
            let by_runs = merge_order(&schema, &adapted).unwrap().expect("sorted inputs merge by runs");
            let all = compute::concat_batches(&schema, &adapted).unwrap();
            assert_eq!(concatenated(&by_runs, &adapted), sort_order(&all).unwrap(), "seed {seed}");
            // The merged rows, built from the inputs, are the sorted concatenation's.
            let sorted = compute::take_record_batch(&all, &sort_order(&all).unwrap()).unwrap();
            assert_eq!(merge_metric(&schema, &adapted).unwrap(), sorted, "seed {seed}");
        }
    }

    /// An input out of series order, or with a series' times going back, is not merged by runs
    /// (which would misplace its rows): the merge sorts it whole and answers the same.
    #[test]
    fn an_unsorted_input_is_sorted_whole() {
        let schema = metric_schema(["instance", "job"]);
        let sorted = segment_of(rows(&["instance", "job"], &[(0, 0, None, 5, 1.0), (1, 0, None, 1, 2.0)]));
        let series_back = rows(&["instance", "job"], &[(1, 0, None, 1, 3.0), (0, 0, None, 2, 4.0)]);
        let time_back = rows(&["instance", "job"], &[(0, 0, None, 9, 5.0), (0, 0, None, 3, 6.0)]);
        for unsorted in [series_back, time_back] {
            let inputs = [sorted.clone(), unsorted];
            assert!(merge_order(&schema, &inputs).unwrap().is_none());
            let merged = merge_segments("m", inputs.to_vec()).unwrap();
            let all = compute::concat_batches(&schema, &inputs).unwrap();
            assert_eq!(merged, compute::take_record_batch(&all, &sort_order(&all).unwrap()).unwrap());
            let times = time_values(merged.column(2)).unwrap().values().to_vec();
            assert!(times.len() >= 3 && times[0] <= times[1], "job-0's rows first, in time order: {times:?}");
        }
    }

    /// A run that repeats a timestamp within one input (sorted, not deduplicated) keeps its
    /// later row, as sorting every row does, even where the inputs' times are disjoint.
    #[test]
    fn a_timestamp_repeated_within_an_input_keeps_its_later_row() {
        let schema = metric_schema(["instance", "job"]);
        let repeated = rows(&["instance", "job"], &[(0, 0, None, 1, 1.0), (0, 0, None, 1, 2.0), (0, 0, None, 2, 3.0)]);
        let later = rows(&["instance", "job"], &[(0, 0, None, 5, 4.0)]);
        let inputs = [repeated, later];
        let by_runs = merge_order(&schema, &inputs).unwrap().expect("sorted inputs merge by runs");
        let all = compute::concat_batches(&schema, &inputs).unwrap();
        let by_runs = concatenated(&by_runs, &inputs);
        assert_eq!(by_runs, sort_order(&all).unwrap());
        assert_eq!(by_runs.values().to_vec(), vec![1, 2, 3]);
    }

    /// A window's partitions hold each series' rows in disjoint times: the merge is each
    /// series' runs one after another, newest value of a timestamp kept where a late file
    /// repeats one.
    #[test]
    fn a_series_runs_across_partitions_come_together_in_time_order() {
        let schema = metric_schema(["instance", "job"]);
        let first =
            segment_of(rows(&["instance", "job"], &[(0, 0, None, 1, 1.0), (0, 0, None, 2, 2.0), (1, 0, None, 1, 3.0)]));
        let second = segment_of(rows(&["instance", "job"], &[(0, 0, None, 10, 4.0), (1, 0, None, 10, 5.0)]));
        let late = segment_of(rows(&["instance", "job"], &[(0, 0, None, 2, 6.0)]));
        let merged = merge_segments("m", vec![first, second, late]).unwrap();
        let times = time_values(merged.column(schema.index_of(TIMESTAMP_COLUMN).unwrap())).unwrap().values().to_vec();
        let values = merged.column(3).as_primitive::<datafusion::arrow::datatypes::Float64Type>().values().to_vec();
        assert_eq!(times, vec![1, 2, 10, 1, 10]);
        assert_eq!(values, vec![1.0, 6.0, 4.0, 3.0, 5.0], "the late file's value of t=2 wins");
    }
}
