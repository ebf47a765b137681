//! Burn attribution: which label values carry an SLO's bad events in a window, and exemplar
//! traces of them. For a ratio SLI the bad events of each series are its increase over the
//! window (of the `bad` selector, or `total` less `good`); they are summed per value of each
//! label the series differ by, and each value's share of all bad events reported, most
//! concentrated label first. Exemplars come from the `exemplars` table, those of the top
//! contributor's series first. For a span SLI each failing span is a bad event, labelled by
//! its name, attributes and resource attributes; the failing spans themselves are the
//! exemplar traces.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{cast, col, lit};
use serde::Serialize;

use super::model::{Sli, SloDefinition};
use crate::engine::ts_literal;
use crate::output::cell;
use crate::promql::{EvalRange, PromResult};
use crate::{QueryEngine, QueryError};

/// Values listed per label, and labels listed at most.
const TOP_VALUES: usize = 5;
const MAX_DIMENSIONS: usize = 8;
/// Exemplars returned at most.
const MAX_EXEMPLARS: usize = 5;

/// One label value's part of the bad events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contributor {
    pub value: String,
    pub bad_events: f64,
    /// Share of all bad events in the window, 0–1.
    pub share: f64,
}

/// The values of one label, largest share first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dimension {
    pub label: String,
    pub contributors: Vec<Contributor>,
}

/// A stored exemplar of a bad event's series: a trace to open.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExemplarTrace {
    pub trace_id: String,
    pub span_id: Option<String>,
    pub at_ms: i64,
    pub value: f64,
    pub series: BTreeMap<String, String>,
}

/// Where an SLO's bad events come from in a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    pub slo: String,
    pub window_seconds: u64,
    pub bad_events: f64,
    pub dimensions: Vec<Dimension>,
    pub exemplars: Vec<ExemplarTrace>,
}

impl Attribution {
    /// One line for an alert annotation: the top value of the most concentrated labels.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .dimensions
            .iter()
            .take(3)
            .filter_map(|d| d.contributors.first().map(|c| (d, c)))
            .map(|(d, c)| format!("{}={} {:.0}%", d.label, c.value, c.share * 100.0))
            .collect();
        if parts.is_empty() {
            return format!("{} bad events, not concentrated on any label", self.bad_events.round());
        }
        format!("{} (of {} bad events)", parts.join(", "), self.bad_events.round())
    }
}

/// Why there is no attribution.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("attribution covers ratio and span SLIs; this SLO's SLI is {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    PromQl(#[from] crate::promql::PromError),
}

fn kind(sli: &Sli) -> &'static str {
    match sli {
        Sli::Ratio { .. } => "a ratio",
        Sli::Latency { .. } => "a latency histogram",
        Sli::Spans { .. } => "over spans",
        Sli::Drift { .. } => "a drift statistic",
        Sli::Sql { .. } => "SQL",
        Sli::PromQl { .. } => "PromQL",
        Sli::Composite { .. } => "composite (attribute its parts)",
    }
}

/// Per series (labels without `__name__`): the increase of `selector` (a series selector, as
/// ratio SLIs are written) over `window` ending at `now_ms`.
async fn increases(
    engine: &QueryEngine,
    selector: &str,
    window: Duration,
    now_ms: i64,
) -> Result<BTreeMap<BTreeMap<String, String>, f64>, AttributionError> {
    let expr = format!("increase({selector}[{}s])", window.as_secs().max(1));
    let mut out = BTreeMap::new();
    if let PromResult::Vector(samples) = engine.promql(&expr, EvalRange::instant(now_ms)).await? {
        for sample in samples {
            let mut labels = sample.labels;
            labels.remove("__name__");
            if sample.value.is_finite() {
                *out.entry(labels).or_insert(0.0) += sample.value;
            }
        }
    }
    Ok(out)
}

/// Bad events per label value, for every label whose values differ among the bad series.
fn dimensions(bad: &BTreeMap<BTreeMap<String, String>, f64>) -> (f64, Vec<Dimension>) {
    let burning: Vec<(&BTreeMap<String, String>, f64)> =
        bad.iter().filter(|(_, v)| **v > 0.0).map(|(labels, v)| (labels, *v)).collect();
    let total: f64 = burning.iter().map(|(_, v)| v).sum();
    let mut by_label: BTreeMap<&str, (usize, BTreeMap<&str, f64>)> = BTreeMap::new();
    for (labels, value) in &burning {
        for (name, label_value) in labels.iter() {
            let (present, values) = by_label.entry(name).or_default();
            *present += 1;
            *values.entry(label_value).or_insert(0.0) += value;
        }
    }
    let mut dimensions: Vec<Dimension> = by_label
        .into_iter()
        // A label with one value on every burning series tells nothing.
        .filter(|(_, (present, values))| values.len() > 1 || *present < burning.len())
        .map(|(label, (_, values))| {
            let mut contributors: Vec<Contributor> = values
                .into_iter()
                .map(|(value, events)| Contributor {
                    value: value.to_string(),
                    bad_events: events,
                    share: if total > 0.0 { events / total } else { 0.0 },
                })
                .collect();
            contributors.sort_by(|a, b| b.bad_events.total_cmp(&a.bad_events).then_with(|| a.value.cmp(&b.value)));
            contributors.truncate(TOP_VALUES);
            Dimension { label: label.to_string(), contributors }
        })
        .collect();
    // The label whose top value carries most of the burn first: that is where to look.
    dimensions.sort_by(|a, b| {
        let top = |d: &Dimension| d.contributors.first().map_or(0.0, |c| c.share);
        top(b).total_cmp(&top(a)).then_with(|| a.label.cmp(&b.label))
    });
    dimensions.truncate(MAX_DIMENSIONS);
    (total, dimensions)
}

/// Exemplars of `metric` in the window with a trace id, the top contributor's series first.
async fn exemplars(
    engine: &QueryEngine,
    metric: &str,
    (from_ms, to_ms): (i64, i64),
    top: Option<(&str, &str)>,
) -> Result<Vec<ExemplarTrace>, QueryError> {
    let Ok(table) = engine.context().table("exemplars").await else { return Ok(Vec::new()) };
    let frame = table
        .filter(
            cast(col("metric"), DataType::Utf8)
                .eq(lit(metric))
                .and(col("timestamp").gt_eq(ts_literal(from_ms)))
                .and(col("timestamp").lt_eq(ts_literal(to_ms)))
                .and(col("trace_id").is_not_null()),
        )
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            (cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64)).alias("ms"),
            col("series_labels"),
            col("value"),
            col("trace_id"),
            col("span_id"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("ms").sort(false, false)])
        .map_err(QueryError::from_datafusion)?
        .limit(0, Some(500))
        .map_err(QueryError::from_datafusion)?;
    let mut found = Vec::new();
    for batch in engine.read(frame).await? {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let values = batch.column(2).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let (traces, spans) = (batch.column(3).as_string::<i32>(), batch.column(4).as_string::<i32>());
        for row in 0..batch.num_rows() {
            let series: BTreeMap<String, String> = match cell(batch.column(1).as_ref(), row) {
                Ok(serde_json::Value::Object(map)) => {
                    map.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string()))).collect()
                }
                _ => BTreeMap::new(),
            };
            found.push(ExemplarTrace {
                trace_id: traces.value(row).to_string(),
                span_id: (!spans.is_null(row)).then(|| spans.value(row).to_string()),
                at_ms: times.value(row),
                value: values.value(row),
                series,
            });
        }
    }
    Ok(top_first(found, top))
}

/// Exemplars (newest first) with the top contributor's first, one per trace, at most
/// `MAX_EXEMPLARS`.
fn top_first(mut found: Vec<ExemplarTrace>, top: Option<(&str, &str)>) -> Vec<ExemplarTrace> {
    if let Some((label, value)) = top {
        found.sort_by_key(|e| e.series.get(label).map(String::as_str) != Some(value));
    }
    found.dedup_by(|a, b| a.trace_id == b.trace_id);
    found.truncate(MAX_EXEMPLARS);
    found
}

/// Failing spans read at most per attribution (the newest): enough for shares to the
/// percent, bounded whatever the outage.
const MAX_BAD_SPANS: usize = 20_000;

/// The failing spans of a span SLI in `(from_ms, to_ms]`, newest first: each span's labels
/// (`span.name`, its attributes, its resource attributes but `service.name`), and the span
/// as an exemplar.
async fn bad_spans(
    engine: &QueryEngine,
    sli: &Sli,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<(BTreeMap<String, String>, ExemplarTrace)>, QueryError> {
    let Sli::Spans { service, name, good_status, max_duration } = sli else { return Ok(Vec::new()) };
    let text = |c: &str| cast(col(c), DataType::Utf8);
    let (filter, good) =
        super::sources::span_predicates(service, name.as_deref(), good_status, *max_duration, (from_ms, to_ms));
    let frame = engine
        .context()
        .table("spans")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(filter.and(datafusion::logical_expr::not(good)))
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            (cast(col("start"), DataType::Int64) / lit(1_000_000i64)).alias("ms"),
            col("trace_id"),
            col("span_id"),
            text("name").alias("name"),
            col("duration"),
            col("attributes"),
            col("resource_attributes"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("ms").sort(false, false)])
        .map_err(QueryError::from_datafusion)?
        .limit(0, Some(MAX_BAD_SPANS))
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in engine.read(frame).await? {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let (traces, spans, names) = (
            batch.column(1).as_string::<i32>(),
            batch.column(2).as_string::<i32>(),
            batch.column(3).as_string::<i32>(),
        );
        let durations = batch.column(4).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let mut labels = BTreeMap::from([("span.name".to_string(), names.value(row).to_string())]);
            for column in [6, 5] {
                if let Ok(serde_json::Value::Object(map)) = cell(batch.column(column).as_ref(), row) {
                    labels.extend(map.into_iter().filter(|(k, _)| k != "service.name").map(|(k, v)| {
                        let value = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k, value)
                    }));
                }
            }
            let exemplar = ExemplarTrace {
                trace_id: traces.value(row).to_string(),
                span_id: Some(spans.value(row).to_string()),
                at_ms: times.value(row),
                value: durations.value(row) as f64 / 1e6,
                series: labels.clone(),
            };
            out.push((labels, exemplar));
        }
    }
    Ok(out)
}

/// The attribution of a span SLI: failing spans counted per label set.
async fn attribute_spans(
    engine: &QueryEngine,
    definition: &SloDefinition,
    window: Duration,
    now_ms: i64,
) -> Result<Attribution, AttributionError> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let failing = bad_spans(engine, &definition.sli, (now_ms.saturating_sub(window_ms), now_ms)).await?;
    let mut bad: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    for (labels, _) in &failing {
        *bad.entry(labels.clone()).or_insert(0.0) += 1.0;
    }
    let (bad_events, dimensions) = dimensions(&bad);
    let top = dimensions.first().and_then(|d| d.contributors.first().map(|c| (d.label.as_str(), c.value.as_str())));
    let exemplars = top_first(failing.into_iter().map(|(_, e)| e).collect(), top);
    Ok(Attribution {
        slo: definition.name.clone(),
        window_seconds: window.as_secs(),
        bad_events,
        dimensions,
        exemplars,
    })
}

/// The attribution of `definition`'s bad events over the `window` ending at `now_ms`.
pub async fn attribute(
    engine: &QueryEngine,
    definition: &SloDefinition,
    window: Duration,
    now_ms: i64,
) -> Result<Attribution, AttributionError> {
    if matches!(definition.sli, Sli::Spans { .. }) {
        return attribute_spans(engine, definition, window, now_ms).await;
    }
    let Sli::Ratio { good, bad, total } = &definition.sli else {
        return Err(AttributionError::Unsupported(kind(&definition.sli)));
    };
    let bad_series = match (bad, good) {
        (Some(bad), _) => increases(engine, bad, window, now_ms).await?,
        (None, Some(good)) => {
            let good = increases(engine, good, window, now_ms).await?;
            let mut all = increases(engine, total, window, now_ms).await?;
            for (labels, events) in &mut all {
                *events -= good.get(labels).copied().unwrap_or(0.0);
            }
            all
        }
        (None, None) => BTreeMap::new(),
    };
    let (bad_events, dimensions) = dimensions(&bad_series);
    let metric_of = bad.as_deref().unwrap_or(total);
    let metric = crate::promql::parse_text(metric_of)
        .ok()
        .and_then(|expr| match expr {
            promql_parser::parser::Expr::VectorSelector(selector) => {
                crate::promql::metric_name(&selector).map(str::to_string)
            }
            _ => None,
        })
        .unwrap_or_default();
    let top = dimensions.first().and_then(|d| d.contributors.first().map(|c| (d.label.as_str(), c.value.as_str())));
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let exemplars = if metric.is_empty() {
        Vec::new()
    } else {
        exemplars(engine, &metric, (now_ms.saturating_sub(window_ms), now_ms), top).await?
    };
    Ok(Attribution {
        slo: definition.name.clone(),
        window_seconds: window.as_secs(),
        bad_events,
        dimensions,
        exemplars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_label_that_carries_the_burn_comes_first() {
        let bad = BTreeMap::from([
            (labels(&[("route", "/pay"), ("instance", "a"), ("code", "500")]), 14.0),
            (labels(&[("route", "/pay"), ("instance", "b"), ("code", "500")]), 13.0),
            (labels(&[("route", "/cart"), ("instance", "a"), ("code", "500")]), 3.0),
            (labels(&[("route", "/home"), ("instance", "b"), ("code", "500")]), 0.0),
        ]);
        let (total, dimensions) = dimensions(&bad);
        assert_eq!(total, 30.0);
        let names: Vec<&str> = dimensions.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(names, ["route", "instance"], "code is the same everywhere: no information");
        assert_eq!(dimensions[0].contributors[0], Contributor { value: "/pay".into(), bad_events: 27.0, share: 0.9 });
        let attribution =
            Attribution { slo: "s".into(), window_seconds: 3600, bad_events: total, dimensions, exemplars: Vec::new() };
        assert_eq!(attribution.summary(), "route=/pay 90%, instance=a 57% (of 30 bad events)");
    }
}
