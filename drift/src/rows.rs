//! Drift data as Arrow rows of the fixed tables (`drift_values`, `drift_scores`) and as
//! `vigil_drift_score` samples, and the text columns read back from them.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::arrow::error::ArrowError;
use vigil_storage::schema::FixedTable;
use vigil_storage::{LabelSet, MetricSeries, Sample, TableRows, WriteBatch};

use crate::DriftError;
use crate::model::{FeatureKey, SCORE_METRIC, WindowOutcome};
use crate::otlp::BinnedPoint;
use crate::request::{RawValues, invalid};

pub(crate) fn dictionary_column(values: &[&str]) -> ArrayRef {
    Arc::new(values.iter().copied().collect::<DictionaryArray<Int32Type>>())
}

/// A string or dictionary-of-string column as owned strings.
pub(crate) fn strings(array: &dyn Array) -> Result<Vec<Option<String>>, ArrowError> {
    let utf8 = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
    let utf8 = utf8.as_string::<i32>();
    Ok((0..utf8.len()).map(|i| (!utf8.is_null(i)).then(|| utf8.value(i).to_string())).collect())
}

/// `drift_scores` rows and `vigil_drift_score` samples for windows `window_ns` long, each
/// scored at its `at`.
pub(crate) fn score_batch(outcomes: &[(WindowOutcome, i64)], window_ns: i64) -> Result<WriteBatch, DriftError> {
    let mut times = Vec::new();
    let mut ends = Vec::new();
    let (mut models, mut versions, mut features, mut statistics) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut values, mut reference_counts, mut current_counts, mut ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (outcome, at) in outcomes {
        for (statistic, value) in &outcome.scores {
            times.push(*at);
            ends.push(outcome.window_start_ns + window_ns);
            models.push(outcome.key.model.as_str());
            versions.push(outcome.key.version.as_str());
            features.push(outcome.key.feature.as_str());
            statistics.push(*statistic);
            values.push(*value);
            reference_counts.push(outcome.reference_count);
            current_counts.push(outcome.current_count);
            ids.push(outcome.reference_id.clone());
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
        Arc::new(TimestampNanosecondArray::from(ends).with_timezone("UTC")),
        dictionary_column(&models),
        dictionary_column(&versions),
        dictionary_column(&features),
        dictionary_column(&statistics),
        Arc::new(Float64Array::from(values)),
        Arc::new(UInt64Array::from(reference_counts)),
        Arc::new(UInt64Array::from(current_counts)),
        Arc::new(StringArray::from(ids)),
    ];
    let batch = RecordBatch::try_new(FixedTable::DriftScores.schema(), columns)?;
    Ok(WriteBatch { metrics: score_series(outcomes)?, rows: vec![TableRows { table: FixedTable::DriftScores, batch }] })
}

/// `vigil_drift_score` samples of scored windows, each at `at`.
pub(crate) fn score_series(outcomes: &[(WindowOutcome, i64)]) -> Result<Vec<MetricSeries>, DriftError> {
    let mut series = Vec::new();
    for (outcome, at) in outcomes {
        for (statistic, value) in &outcome.scores {
            let labels = LabelSet::new(vec![
                ("model".into(), outcome.key.model.clone()),
                ("version".into(), outcome.key.version.clone()),
                ("feature".into(), outcome.key.feature.clone()),
                ("statistic".into(), statistic.to_string()),
            ])
            .map_err(|e| {
                invalid(format!("drift labels: {e}"), "model, version and feature must be usable label values")
            })?;
            series.push(MetricSeries {
                metric: SCORE_METRIC.into(),
                labels,
                samples: vec![Sample { timestamp_ns: *at, value: *value }],
            });
        }
    }
    Ok(series)
}

/// `drift_values` rows of OTLP bin counts.
pub(crate) fn counts_rows(points: &[BinnedPoint]) -> Result<Vec<TableRows>, ArrowError> {
    points
        .iter()
        .map(|p| {
            Ok(TableRows {
                table: FixedTable::DriftValues,
                batch: counts_batch(&p.key, p.at_ns, &p.reference_id, &p.counts)?,
            })
        })
        .collect()
}

/// `drift_values` rows of raw values, all at `at`.
pub(crate) fn values_batch(key: &FeatureKey, at: i64, values: &RawValues) -> Result<RecordBatch, ArrowError> {
    let n = values.len();
    let (numbers, categories): (Vec<Option<f64>>, Vec<Option<&str>>) = match values {
        RawValues::Numeric(v) => (v.iter().map(|x| Some(*x)).collect(), vec![None; n]),
        RawValues::Categorical(v) => (vec![None; n], v.iter().map(|c| Some(c.as_str())).collect()),
    };
    let mut counts = ListBuilder::new(UInt64Builder::new());
    for _ in 0..n {
        counts.append_null();
    }
    values_rows(
        key,
        vec![at; n],
        Arc::new(Float64Array::from(numbers)),
        Arc::new(categories.into_iter().collect::<DictionaryArray<Int32Type>>()),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(counts.finish()),
    )
}

/// One `drift_values` row of bin counts against reference `id`.
pub(crate) fn counts_batch(key: &FeatureKey, at: i64, id: &str, counts: &[u64]) -> Result<RecordBatch, ArrowError> {
    let mut list = ListBuilder::new(UInt64Builder::new());
    list.append_value(counts.iter().map(|c| Some(*c)));
    values_rows(
        key,
        vec![at],
        Arc::new(Float64Array::from(vec![None::<f64>])),
        Arc::new(vec![None::<&str>].into_iter().collect::<DictionaryArray<Int32Type>>()),
        Arc::new(StringArray::from(vec![Some(id)])),
        Arc::new(list.finish()),
    )
}

fn values_rows(
    key: &FeatureKey,
    times: Vec<i64>,
    values: ArrayRef,
    categories: ArrayRef,
    ids: ArrayRef,
    counts: ArrayRef,
) -> Result<RecordBatch, ArrowError> {
    let n = times.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
        dictionary_column(&vec![key.model.as_str(); n]),
        dictionary_column(&vec![key.version.as_str(); n]),
        dictionary_column(&vec![key.feature.as_str(); n]),
        values,
        categories,
        ids,
        counts,
    ];
    RecordBatch::try_new(FixedTable::DriftValues.schema(), columns)
}
