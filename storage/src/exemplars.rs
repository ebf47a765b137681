//! Rows of the `exemplars` table: a sample's exemplar (a trace it came from) beside the
//! series it belongs to.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, StringDictionaryBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::error::ArrowError;

use crate::LabelSet;
use crate::schema::{FixedTable, string_map_builder};

#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub metric: String,
    pub series: LabelSet,
    /// The exemplar's own labels (filtered attributes, `trace_id`, `span_id`).
    pub labels: Vec<(String, String)>,
    pub timestamp_ns: i64,
    pub value: f64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
}

/// Label names that carry an exemplar's trace and span ids (OpenTelemetry's, then the
/// spellings Grafana and Jaeger use).
const TRACE_ID_LABELS: [&str; 3] = ["trace_id", "traceID", "TraceID"];
const SPAN_ID_LABELS: [&str; 3] = ["span_id", "spanID", "SpanID"];

impl Exemplar {
    /// An exemplar whose `trace_id`/`span_id` columns are read from its labels.
    pub fn new(
        metric: String,
        series: LabelSet,
        labels: Vec<(String, String)>,
        timestamp_ns: i64,
        value: f64,
    ) -> Exemplar {
        let id = |names: &[&str]| labels.iter().find(|(n, _)| names.contains(&n.as_str())).map(|(_, v)| v.clone());
        let (trace_id, span_id) = (id(&TRACE_ID_LABELS), id(&SPAN_ID_LABELS));
        Exemplar { metric, series, labels, timestamp_ns, value, trace_id, span_id }
    }
}

/// One `exemplars` batch.
pub fn exemplar_batch(exemplars: &[Exemplar]) -> Result<RecordBatch, ArrowError> {
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut series = string_map_builder();
    let mut labels = string_map_builder();
    for exemplar in exemplars {
        metric.append_value(&exemplar.metric);
        for (name, value) in exemplar.series.iter() {
            series.keys().append_value(name);
            series.values().append_value(value);
        }
        series.append(true)?;
        for (name, value) in &exemplar.labels {
            labels.keys().append_value(name);
            labels.values().append_value(value);
        }
        labels.append(true)?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(exemplars.iter().map(|e| e.timestamp_ns)).with_timezone("UTC"),
        ),
        Arc::new(metric.finish()),
        Arc::new(series.finish()),
        Arc::new(labels.finish()),
        Arc::new(Float64Array::from_iter_values(exemplars.iter().map(|e| e.value))),
        Arc::new(exemplars.iter().map(|e| e.trace_id.clone()).collect::<StringArray>()),
        Arc::new(exemplars.iter().map(|e| e.span_id.clone()).collect::<StringArray>()),
    ];
    RecordBatch::try_new(FixedTable::Exemplars.schema(), columns)
}
