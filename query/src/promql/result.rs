//! Runs a compiled plan and shapes the rows into a PromQL result: a vector, a matrix, a
//! scalar or a string, labels without empty values, series sorted by labels.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};

use super::compile::{MatrixPlan, ScalarPlan, TS, TSS, VALS, VALUE, Value};
use super::kernels::is_stale;
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

/// (labels, timestamp, value) of every row.
fn rows(batches: &[RecordBatch], labels: &[String]) -> Result<Vec<(Labels, i64, f64)>, PromError> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let index = |name: &str| schema.index_of(name).map_err(|e| PromError::Internal(e.to_string()));
        let ts = batch.column(index(TS)?).as_primitive::<Int64Type>();
        let vs = batch.column(index(VALUE)?).as_primitive::<Float64Type>();
        let label_columns: Vec<(&String, usize)> = labels.iter().map(|l| Ok((l, index(l)?))).collect::<Result<_, PromError>>()?;
        for row in 0..batch.num_rows() {
            if ts.is_null(row) || vs.is_null(row) {
                continue;
            }
            let mut set = Labels::new();
            for (name, column) in &label_columns {
                let column = batch.column(*column).as_string::<i32>();
                if !column.is_null(row) && !column.value(row).is_empty() {
                    set.insert((*name).clone(), column.value(row).to_string());
                }
            }
            out.push((set, ts.value(row), vs.value(row)));
        }
    }
    Ok(out)
}

/// Groups rows into series. Two samples of one label set at one step is an error, as in
/// Prometheus (e.g. `label_replace` making two series alike).
fn into_series(rows: Vec<(Labels, i64, f64)>) -> Result<Vec<Series>, PromError> {
    let mut grouped: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for (labels, t, v) in rows {
        grouped.entry(labels).or_default().push((t, v));
    }
    grouped
        .into_iter()
        .map(|(labels, mut points)| {
            points.sort_by_key(|p| p.0);
            if points.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(PromError::Execution("vector cannot contain metrics with the same labelset".into()));
            }
            Ok(Series { labels, points })
        })
        .collect()
}

pub async fn collect(value: Value, range: EvalRange, instant: bool, sort: Option<bool>) -> Result<PromResult, PromError> {
    match value {
        Value::String(s) => Ok(PromResult::String(range.end_ms, s)),
        Value::Scalar(ScalarPlan::Constant(v)) if instant => Ok(PromResult::Scalar(range.end_ms, v)),
        Value::Scalar(ScalarPlan::Constant(v)) => Ok(PromResult::Matrix(vec![Series {
            labels: Labels::new(),
            points: super::udf::Steps { start: range.start_ms, end: range.end_ms, step: range.step_ms }.iter().map(|t| (t, v)).collect(),
        }])),
        Value::Scalar(ScalarPlan::Frame(frame)) => {
            let batches = frame.collect().await?;
            let points = rows(&batches, &[])?;
            if instant {
                let (_, t, v) = points.into_iter().next().unwrap_or((Labels::new(), range.end_ms, f64::NAN));
                Ok(PromResult::Scalar(t, v))
            } else {
                Ok(PromResult::Matrix(into_series(points)?))
            }
        }
        Value::Vector(vector) => {
            let batches = vector.frame.collect().await?;
            let points = rows(&batches, &vector.labels)?;
            if instant {
                let mut samples: Vec<Sample> =
                    into_series(points)?.into_iter().flat_map(|s| s.points.into_iter().map(move |(t, v)| Sample { labels: s.labels.clone(), timestamp_ms: t, value: v })).collect();
                if let Some(descending) = sort {
                    // NaN first in both directions, as Prometheus's sort and sort_desc.
                    samples.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan(), descending) {
                        (false, false, true) => b.value.total_cmp(&a.value),
                        _ => super::kernels::nan_first(a.value, b.value),
                    });
                }
                Ok(PromResult::Vector(samples))
            } else {
                Ok(PromResult::Matrix(into_series(points)?))
            }
        }
        Value::Matrix(matrix) => Ok(PromResult::Matrix(raw_samples(matrix, range.end_ms).await?)),
    }
}

/// A range vector at the top of an instant query: the raw samples in each series' window.
async fn raw_samples(matrix: MatrixPlan, eval_ms: i64) -> Result<Vec<Series>, PromError> {
    let end = matrix.at_ms.unwrap_or(eval_ms) - matrix.offset_ms;
    let start = end - matrix.range_ms;
    let batches = matrix.frame.collect().await?;
    let mut out = Vec::new();
    for batch in &batches {
        let schema = batch.schema();
        let lists = |name: &str| schema.index_of(name).map(|i| batch.column(i).as_list::<i32>().clone()).map_err(|e| PromError::Internal(e.to_string()));
        let (tss, vals) = (lists(TSS)?, lists(VALS)?);
        for row in 0..batch.num_rows() {
            let mut labels = Labels::new();
            for name in &matrix.labels {
                let column = batch.column(schema.index_of(name).map_err(|e| PromError::Internal(e.to_string()))?).as_string::<i32>();
                if !column.is_null(row) && !column.value(row).is_empty() {
                    labels.insert(name.clone(), column.value(row).to_string());
                }
            }
            let ts = tss.value(row);
            let vs = vals.value(row);
            let (ts, vs) = (ts.as_primitive::<Int64Type>(), vs.as_primitive::<Float64Type>());
            let mut points: Vec<(i64, f64)> = ts
                .values()
                .iter()
                .zip(vs.values().iter())
                .filter(|(t, v)| **t >= start && **t <= end && !is_stale(**v))
                .map(|(t, v)| (*t, *v))
                .collect();
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            if !points.is_empty() {
                out.push(Series { labels, points });
            }
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}
