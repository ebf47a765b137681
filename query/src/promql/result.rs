//! Runs a compiled plan and shapes the rows into a PromQL result: a vector, a matrix, a
//! scalar or a string, labels without empty values, series sorted by labels.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use futures::StreamExt;

use super::compile::{Finish, MatrixPlan, NAME, ScalarPlan, TS, Top, VALUE, Value};
use super::sweep::{SeriesSet, SweptSeries};
use super::{EvalRange, PromError};

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PromResult {
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    Scalar(i64, f64),
    String(i64, String),
}

/// A label's value in a row; empty and missing values are one.
fn label(column: &StringArray, row: usize) -> &str {
    if column.is_null(row) { "" } else { column.value(row) }
}

/// The rows grouped into series, sorted by labels (see [`in_order`]). A series' label set is
/// built once, when its label values are first seen, not once per row (that was a third of a
/// 1 h `max_over_time`).
pub(crate) fn series(batches: &[RecordBatch], labels: &[String]) -> Result<Vec<Series>, PromError> {
    let mut index: HashMap<Vec<&str>, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut out: Vec<Series> = Vec::new();
    let mut key: Vec<&str> = Vec::with_capacity(labels.len());
    for batch in batches {
        let schema = batch.schema();
        let index_of = |name: &str| schema.index_of(name).map_err(|e| PromError::Internal(e.to_string()));
        let ts = batch.column(index_of(TS)?).as_primitive::<Int64Type>();
        let vs = batch.column(index_of(VALUE)?).as_primitive::<Float64Type>();
        let columns = labels
            .iter()
            .map(|l| Ok(batch.column(index_of(l)?).as_string::<i32>()))
            .collect::<Result<Vec<_>, PromError>>()?;
        // Rows of one series mostly follow each other (the sweep emits a series' steps
        // together): such a row is matched to the row before's series without hashing.
        let mut previous: Option<(usize, usize)> = None;
        for row in 0..batch.num_rows() {
            if ts.is_null(row) || vs.is_null(row) {
                continue;
            }
            if let Some((before, at)) = previous
                && columns.iter().all(|&column| label(column, row) == label(column, before))
            {
                out[at].points.push((ts.value(row), vs.value(row)));
                previous = Some((row, at));
                continue;
            }
            key.clear();
            key.extend(columns.iter().map(|&column| label(column, row)));
            let at = match index.get(key.as_slice()) {
                Some(at) => *at,
                None => {
                    // Empty and missing values are one: no label.
                    let set = labels
                        .iter()
                        .zip(&key)
                        .filter(|(_, value)| !value.is_empty())
                        .map(|(name, value)| (name.clone(), value.to_string()))
                        .collect();
                    out.push(Series { labels: set, points: Vec::new() });
                    index.insert(key.clone(), out.len() - 1);
                    out.len() - 1
                }
            };
            out[at].points.push((ts.value(row), vs.value(row)));
            previous = Some((row, at));
        }
    }
    in_order(out)
}

/// A sweep's series (see `SweepLanes::series`) labelled with `labels`, finished by `finish`,
/// shaped like [`series`]'s.
fn swept(swept: Vec<SweptSeries>, labels: &[String], finish: Option<&Finish>) -> Result<Vec<Series>, PromError> {
    let labelled = |labels: &[String]| -> Vec<Series> {
        swept
            .into_iter()
            .map(|(values, points)| {
                // Empty and missing values are one: no label.
                let labels = labels
                    .iter()
                    .zip(values)
                    .filter_map(|(name, value)| value.filter(|v| !v.is_empty()).map(|v| (name.clone(), v)))
                    .collect();
                Series { labels, points }
            })
            .collect()
    };
    let out = match finish {
        None => labelled(labels),
        Some(Finish::Top(top)) => top_of(labelled(labels), top, labels),
        Some(Finish::HistogramQuantile { q, labels: buckets }) => histogram_quantiles(labelled(buckets), *q),
    };
    in_order(out)
}

/// `histogram_quantile(q, ...)` over series, as the row plan computes it
/// (`Compiler::histogram_quantile`): the series alike but for `le` are one histogram, and at
/// each step where any of them has a point, its buckets give one quantile. A histogram keeps
/// its metric name until its answer drops it, so two alike but for the name clash.
fn histogram_quantiles(series: Vec<Series>, q: f64) -> Vec<Series> {
    let mut histograms: BTreeMap<Labels, BTreeMap<i64, Vec<(f64, f64)>>> = BTreeMap::new();
    for mut s in series {
        // A series without `le` is no bucket (an empty `le` was dropped as no label).
        let Some(bound) = s.labels.remove("le") else { continue };
        let steps = histograms.entry(s.labels).or_default();
        let bound = super::udf::parse_bound(&bound);
        for (t, count) in s.points {
            let buckets = steps.entry(t).or_default();
            if let Some(bound) = bound {
                buckets.push((bound, count));
            }
        }
    }
    histograms
        .into_iter()
        .map(|(mut labels, steps)| {
            labels.remove(NAME);
            let points = steps
                .into_iter()
                .map(|(t, mut buckets)| (t, super::kernels::bucket_quantile(q, &mut buckets)))
                .collect();
            Series { labels, points }
        })
        .collect()
}

/// `topk`/`bottomk` over series, as the row plan ranks rows (`Compiler::aggregate`): at each
/// step, within each group, NaN last, then by value, then by the label values in `labels`'
/// order (missing first); each series keeps the points that rank within `k`.
fn top_of(series: Vec<Series>, top: &Top, labels: &[String]) -> Vec<Series> {
    let k = top.k.floor() as i64; // NaN: 0
    if k < 1 {
        return Vec::new();
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    fn value_of<'a>(s: &'a Series, name: &str) -> Option<&'a str> {
        s.labels.get(name).map(String::as_str)
    }
    let mut groups: HashMap<Vec<Option<&str>>, usize> = HashMap::new();
    let mut ranked: HashMap<(usize, i64), Vec<(usize, usize)>> = HashMap::new();
    for (index, s) in series.iter().enumerate() {
        let key: Vec<Option<&str>> = top.group.iter().map(|name| value_of(s, name)).collect();
        let next = groups.len();
        let group = *groups.entry(key).or_insert(next);
        for (at, &(t, _)) in s.points.iter().enumerate() {
            ranked.entry((group, t)).or_default().push((index, at));
        }
    }
    let order = |&(a, i): &(usize, usize), &(b, j): &(usize, usize)| {
        let (x, y) = (series[a].points[i].1, series[b].points[j].1);
        let by_value = if top.descending { y.total_cmp(&x) } else { x.total_cmp(&y) };
        x.is_nan()
            .cmp(&y.is_nan())
            .then(if x.is_nan() && y.is_nan() { std::cmp::Ordering::Equal } else { by_value })
            .then_with(|| {
                labels
                    .iter()
                    .map(|name| value_of(&series[a], name).cmp(&value_of(&series[b], name)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    };
    let mut kept: Vec<Vec<bool>> = series.iter().map(|s| vec![false; s.points.len()]).collect();
    // Which k rank first is all that counts, not their order among themselves: a selection,
    // O(candidates) per step, not a sort. The (series, point) index settles the ties `order`
    // leaves as the stable sort this replaces did.
    let order = |a: &(usize, usize), b: &(usize, usize)| order(a, b).then_with(|| a.cmp(b));
    for candidates in ranked.values_mut() {
        if candidates.len() > k {
            candidates.select_nth_unstable_by(k - 1, order);
        }
        for &(index, at) in candidates.iter().take(k) {
            kept[index][at] = true;
        }
    }
    series
        .into_iter()
        .zip(kept)
        .filter_map(|(mut s, kept)| {
            let mut flags = kept.into_iter();
            s.points.retain(|_| flags.next().unwrap_or(false));
            (!s.points.is_empty()).then_some(s)
        })
        .collect()
}

/// Series sorted by labels, those of one label set merged, points in time order. Two samples
/// of one label set at one step is an error, as in Prometheus (e.g. `label_replace` making
/// two series alike).
fn in_order(mut out: Vec<Series>) -> Result<Vec<Series>, PromError> {
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out.dedup_by(|later, kept| {
        let same = later.labels == kept.labels;
        if same {
            kept.points.append(&mut later.points);
        }
        same
    });
    for series in &mut out {
        if !series.points.is_sorted_by_key(|p| p.0) {
            series.points.sort_by_key(|p| p.0);
        }
        if series.points.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(PromError::Execution("vector cannot contain metrics with the same labelset".into()));
        }
    }
    Ok(out)
}

pub async fn collect(value: Value, range: EvalRange, sort: Option<bool>) -> Result<PromResult, PromError> {
    let instant = range.is_instant();
    match value {
        Value::String(s) => Ok(PromResult::String(range.end_ms, s)),
        Value::Scalar(ScalarPlan::Constant(v)) if instant => Ok(PromResult::Scalar(range.end_ms, v)),
        Value::Scalar(ScalarPlan::Constant(v)) => Ok(PromResult::Matrix(vec![Series {
            labels: Labels::new(),
            points: super::udf::Steps { start: range.start_ms, end: range.end_ms, step: range.step_ms }
                .iter()
                .map(|t| (t, v))
                .collect(),
        }])),
        Value::Scalar(ScalarPlan::Frame(frame)) => {
            let batches = frame.collect().await?;
            let series = series(&batches, &[])?;
            if instant {
                let (t, v) = series.first().and_then(|s| s.points.first().copied()).unwrap_or((range.end_ms, f64::NAN));
                Ok(PromResult::Scalar(t, v))
            } else {
                Ok(PromResult::Matrix(series))
            }
        }
        Value::Vector(vector) => {
            let series = match &vector.sweep {
                Some(answer) => swept(
                    answer.lanes.series(vector.frame.task_ctx().into()).await?,
                    &vector.labels,
                    answer.finish.as_ref(),
                )?,
                None => series(&vector.frame.collect().await?, &vector.labels)?,
            };
            if instant {
                let mut samples: Vec<Sample> = series
                    .into_iter()
                    .flat_map(|s| {
                        s.points.into_iter().map(move |(t, v)| Sample {
                            labels: s.labels.clone(),
                            timestamp_ms: t,
                            value: v,
                        })
                    })
                    .collect();
                if let Some(descending) = sort {
                    // NaN last in both directions, as Prometheus 2.42's sort and sort_desc
                    // answer (its own test suite and its HTTP API agree); ties keep label order.
                    samples.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if descending => b.value.total_cmp(&a.value),
                        _ => a.value.total_cmp(&b.value),
                    });
                }
                Ok(PromResult::Vector(samples))
            } else {
                Ok(PromResult::Matrix(series))
            }
        }
        Value::Matrix(matrix) => Ok(PromResult::Matrix(raw_samples(matrix, range.end_ms).await?)),
    }
}

/// A range vector at the top of an instant query: the raw samples in each series' window.
async fn raw_samples(matrix: MatrixPlan, eval_ms: i64) -> Result<Vec<Series>, PromError> {
    let end = matrix.at_ms.unwrap_or(eval_ms) - matrix.offset_ms;
    let start = end - matrix.range_ms;
    let mut set = SeriesSet::new(false).with_constants(matrix.constant_values());
    let rows = matrix.row_labels().to_vec();
    for chunk in matrix.chunks {
        let mut stream = chunk.scan.stream().await?;
        while let Some(batch) = stream.next().await {
            set.ingest(&batch?, &rows)?;
        }
    }
    set.settle();
    let mut out: Vec<Series> = set
        .series
        .into_iter()
        .filter_map(|series| {
            let from = series.timestamps.partition_point(|&t| t < start);
            let to = series.timestamps.partition_point(|&t| t <= end);
            let points: Vec<(i64, f64)> = (from..to).map(|i| (series.timestamps[i], series.values[i])).collect();
            // Empty and missing values are one: no label.
            let labels: Labels = matrix
                .labels
                .iter()
                .zip(series.labels)
                .filter_map(|(name, value)| value.filter(|v| !v.is_empty()).map(|v| (name.clone(), v)))
                .collect();
            (!points.is_empty()).then_some(Series { labels, points })
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(i64, f64, Option<&str>, Option<&str>)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new(TS, DataType::Int64, true),
            Field::new(VALUE, DataType::Float64, true),
            Field::new("job", DataType::Utf8, true),
            Field::new("code", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_group_into_series_sorted_by_labels_with_empty_and_missing_as_one() {
        let labels = ["code".to_string(), "job".to_string()];
        let batches = [
            batch(&[
                (20, 2.0, Some("web"), None),
                (10, 1.0, Some("api"), Some("500")),
                (10, 3.0, Some("web"), Some("")),
            ]),
            batch(&[(20, 4.0, Some("api"), Some("500")), (30, 5.0, Some("web"), None)]),
        ];
        let grouped = series(&batches, &labels).unwrap();
        let shaped: Vec<(Vec<(&str, &str)>, Vec<(i64, f64)>)> = grouped
            .iter()
            .map(|s| (s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(), s.points.clone()))
            .collect();
        assert_eq!(
            shaped,
            vec![
                (vec![("code", "500"), ("job", "api")], vec![(10, 1.0), (20, 4.0)]),
                (vec![("job", "web")], vec![(10, 3.0), (20, 2.0), (30, 5.0)]),
            ]
        );
        // Two rows of one label set at one step: Prometheus's error.
        let clash = [batch(&[(10, 1.0, Some("web"), None), (10, 2.0, Some("web"), Some(""))])];
        assert!(matches!(series(&clash, &labels), Err(PromError::Execution(m)) if m.contains("same labelset")));
    }
}
