//! OTLP metrics to Prometheus series, as Prometheus maps them.
//!
//! - gauge → `name[_unit]` (`_ratio` for unit `1`); monotonic sum → `name[_unit]_total`;
//!   non-monotonic sum → gauge name.
//! - histogram → `_bucket{le}` (cumulative, `+Inf` = count), `_count`, `_sum` (when sent);
//!   exponential histogram → the same, with one `le` per exponential bucket boundary.
//! - summary → `{quantile}` series, `_count`, `_sum`.
//! - delta temporality is accumulated per series into a cumulative total, so `rate()` and
//!   `increase()` read it as a counter (a restart starts the totals again, which counter
//!   functions see as a reset).
//! - labels: point attributes (names sanitised; colliding names join their values with `;`),
//!   `otel_scope_name`/`otel_scope_version`, then `job` and `instance` from the resource.
//!   Other resource attributes go to `target_info{job, instance, ...} 1`.
//! - a point without a timestamp, value or consistent buckets is rejected alone
//!   (OTLP partial success); a point flagged "no recorded value" becomes a stale marker.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::Exemplar as OtlpExemplar;
use opentelemetry_proto::tonic::metrics::v1::exemplar::Value as ExemplarValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
};
use parking_lot::Mutex;
use vigil_storage::exemplars::Exemplar;
use vigil_storage::{LabelSet, MetricName, MetricSeries, Sample};

use super::attributes::{ServiceIdentity, hex, value_text};
use super::names::{MetricKind, format_bound, label_name, metric_name};
use crate::Limits;

/// Prometheus's stale marker.
pub use vigil_storage::STALE_NAN;
const FLAG_NO_RECORDED_VALUE: u32 = 1;
/// Delta totals not updated for this long are forgotten.
const DELTA_IDLE: Duration = Duration::from_secs(3600);

/// Running totals of delta series.
#[derive(Debug, Default)]
pub struct DeltaTotals {
    totals: Mutex<HashMap<(String, LabelSet), (f64, Instant)>>,
}

impl DeltaTotals {
    /// Drops totals idle for an hour; returns how many are left.
    pub fn prune(&self) -> usize {
        let mut totals = self.totals.lock();
        totals.retain(|_, (_, seen)| seen.elapsed() < DELTA_IDLE);
        totals.len()
    }
}

/// The series of one request, and what was refused.
#[derive(Debug, Default)]
pub struct MappedMetrics {
    pub series: Vec<MetricSeries>,
    pub accepted_points: usize,
    pub rejected_points: usize,
    /// The first rejection's reason, for `partial_success.error_message`.
    pub first_error: Option<String>,
    /// Type, description and unit per metric name, for `/api/v1/metadata`.
    pub metadata: Vec<(String, crate::metadata::MetricMetadata)>,
    /// Exemplars of the accepted points, for the `exemplars` table.
    pub exemplars: Vec<Exemplar>,
}

impl MappedMetrics {
    fn reject(&mut self, reason: String) {
        self.rejected_points += 1;
        if self.first_error.is_none() {
            self.first_error = Some(reason);
        }
    }
}

struct PointContext<'a> {
    scope: Vec<(String, String)>,
    identity: &'a ServiceIdentity,
    limits: &'a Limits,
}

impl PointContext<'_> {
    /// Labels of a point plus an optional `le`/`quantile`.
    fn labels(&self, attributes: &[KeyValue], extra: Option<(&str, String)>) -> Result<LabelSet, PointError> {
        self.with_extra(self.attribute_labels(attributes), extra)
    }

    /// A point's attributes as sorted labels; attributes whose names sanitise alike join their
    /// values with `;`, in attribute-key order. Built once per point (a histogram's buckets
    /// share it).
    fn attribute_labels(&self, attributes: &[KeyValue]) -> Vec<(String, String)> {
        let mut named: Vec<(Cow<'_, str>, &str, String)> = attributes
            .iter()
            .filter_map(|kv| value_text(kv.value.as_ref()).map(|value| (label_name(&kv.key), kv.key.as_str(), value)))
            .collect();
        named.sort_unstable();
        let mut labels: Vec<(String, String)> = Vec::with_capacity(named.len() + self.scope.len() + 3);
        for (name, _, value) in named {
            match labels.last_mut() {
                Some((last, joined)) if *last == name => {
                    joined.push(';');
                    joined.push_str(&value);
                }
                _ => labels.push((name.into_owned(), value)),
            }
        }
        labels
    }

    /// Attribute labels with the scope, `job`, `instance` and the extra label added; each of
    /// these replaces an attribute of the same name.
    fn with_extra(
        &self,
        mut labels: Vec<(String, String)>,
        extra: Option<(&str, String)>,
    ) -> Result<LabelSet, PointError> {
        let scope = self.scope.iter().map(|(name, value)| (name.as_str(), value.clone()));
        let identity = [("job", &self.identity.job), ("instance", &self.identity.instance)]
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|value| (name, value)));
        for (name, value) in scope.chain(identity).chain(extra) {
            match labels.binary_search_by(|(held, _)| held.as_str().cmp(name)) {
                Ok(at) => labels[at].1 = value,
                Err(at) => labels.insert(at, (name.to_string(), value)),
            }
        }
        self.limits.check_labels(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
        Ok(LabelSet::new(labels)?)
    }
}

/// Collects the series of one point, all or nothing.
struct PointSeries {
    series: Vec<MetricSeries>,
    exemplars: Vec<Exemplar>,
}

impl PointSeries {
    fn new() -> Self {
        PointSeries { series: Vec::new(), exemplars: Vec::new() }
    }

    /// Keeps a point's exemplars with the series `series_of` picks for each value (the
    /// series itself, or for histograms the bucket the value falls in, as Prometheus does).
    fn exemplars(
        &mut self,
        exemplars: &[OtlpExemplar],
        mut series_of: impl FnMut(f64) -> Result<(String, LabelSet), PointError>,
    ) -> Result<(), PointError> {
        for exemplar in exemplars {
            let value = match exemplar.value {
                Some(ExemplarValue::AsDouble(v)) => v,
                Some(ExemplarValue::AsInt(v)) => v as f64,
                None => continue,
            };
            let (metric, series) = series_of(value)?;
            let mut labels: Vec<(String, String)> = exemplar
                .filtered_attributes
                .iter()
                .filter_map(|kv| value_text(kv.value.as_ref()).map(|v| (label_name(&kv.key).into_owned(), v)))
                .collect();
            for (name, id) in [("trace_id", &exemplar.trace_id), ("span_id", &exemplar.span_id)] {
                if !id.is_empty() {
                    labels.push((name.to_string(), hex(id)));
                }
            }
            self.exemplars.push(Exemplar::new(metric, series, labels, timestamp(exemplar.time_unix_nano)?, value));
        }
        Ok(())
    }

    fn push(&mut self, metric: &str, labels: LabelSet, timestamp_ns: i64, value: f64) {
        // A metric's points come one after another: they share its name.
        let metric = MetricName::after(self.series.last().map(|previous| &previous.metric), metric);
        self.series.push(MetricSeries { metric, labels, samples: vec![Sample { timestamp_ns, value }] });
    }
}

pub fn map(request: &ExportMetricsServiceRequest, limits: &Limits, deltas: &DeltaTotals) -> MappedMetrics {
    let mut out = MappedMetrics::default();
    let mut totals = deltas.totals.lock();
    for resource_metrics in &request.resource_metrics {
        let identity = ServiceIdentity::of(resource_metrics.resource.as_ref());
        let mut newest_ns = None::<i64>;
        for scope_metrics in &resource_metrics.scope_metrics {
            let mut scope = Vec::new();
            if let Some(s) = &scope_metrics.scope {
                if !s.name.is_empty() {
                    scope.push(("otel_scope_name".to_string(), s.name.clone()));
                }
                if !s.version.is_empty() {
                    scope.push(("otel_scope_version".to_string(), s.version.clone()));
                }
            }
            let context = PointContext { scope, identity: &identity, limits };
            for metric in &scope_metrics.metrics {
                let Some(data) = &metric.data else {
                    out.reject(format!("metric {:?} has no data", metric.name));
                    continue;
                };
                let (kind, family) = match data {
                    Data::Gauge(_) => ("gauge", metric_name(&metric.name, &metric.unit, MetricKind::Gauge)),
                    Data::Sum(s) if s.is_monotonic => {
                        ("counter", metric_name(&metric.name, &metric.unit, MetricKind::MonotonicCounter))
                    }
                    Data::Sum(_) => ("gauge", metric_name(&metric.name, &metric.unit, MetricKind::NonMonotonicCounter)),
                    Data::Histogram(_) | Data::ExponentialHistogram(_) => {
                        ("histogram", metric_name(&metric.name, &metric.unit, MetricKind::Histogram))
                    }
                    Data::Summary(_) => ("summary", metric_name(&metric.name, &metric.unit, MetricKind::Summary)),
                };
                out.metadata.push((
                    family,
                    crate::metadata::MetricMetadata {
                        kind: kind.into(),
                        help: metric.description.clone(),
                        unit: metric.unit.clone(),
                    },
                ));
                let results: Vec<Result<PointSeries, PointError>> = match data {
                    Data::Gauge(gauge) => {
                        let name = metric_name(&metric.name, &metric.unit, MetricKind::Gauge);
                        gauge.data_points.iter().map(|p| number_point(&name, p, false, &context, &mut totals)).collect()
                    }
                    Data::Sum(sum) => {
                        let kind = if sum.is_monotonic {
                            MetricKind::MonotonicCounter
                        } else {
                            MetricKind::NonMonotonicCounter
                        };
                        let name = metric_name(&metric.name, &metric.unit, kind);
                        let delta = sum.aggregation_temporality == AggregationTemporality::Delta as i32;
                        sum.data_points.iter().map(|p| number_point(&name, p, delta, &context, &mut totals)).collect()
                    }
                    Data::Histogram(histogram) => {
                        let name = metric_name(&metric.name, &metric.unit, MetricKind::Histogram);
                        let delta = histogram.aggregation_temporality == AggregationTemporality::Delta as i32;
                        histogram
                            .data_points
                            .iter()
                            .map(|p| histogram_point(&name, p, delta, &context, &mut totals))
                            .collect()
                    }
                    Data::ExponentialHistogram(histogram) => {
                        let name = metric_name(&metric.name, &metric.unit, MetricKind::Histogram);
                        let delta = histogram.aggregation_temporality == AggregationTemporality::Delta as i32;
                        histogram
                            .data_points
                            .iter()
                            .map(|p| exponential_point(&name, p, delta, &context, &mut totals))
                            .collect()
                    }
                    Data::Summary(summary) => {
                        let name = metric_name(&metric.name, &metric.unit, MetricKind::Summary);
                        summary.data_points.iter().map(|p| summary_point(&name, p, &context)).collect()
                    }
                };
                for result in results {
                    match result {
                        Ok(point) => {
                            out.accepted_points += 1;
                            for series in &point.series {
                                for sample in &series.samples {
                                    newest_ns =
                                        Some(newest_ns.map_or(sample.timestamp_ns, |n| n.max(sample.timestamp_ns)));
                                }
                            }
                            out.series.extend(point.series);
                            out.exemplars.extend(point.exemplars);
                        }
                        Err(reason) => out.reject(format!("metric {:?}: {reason}", metric.name)),
                    }
                }
            }
        }
        if let Some(timestamp_ns) = newest_ns
            && let Some(info) =
                target_info(resource_metrics.resource.as_ref().map_or(&[][..], |r| &r.attributes), &identity, limits)
        {
            out.series.push(MetricSeries {
                metric: "target_info".into(),
                labels: info,
                samples: vec![Sample { timestamp_ns, value: 1.0 }],
            });
        }
    }
    out
}

/// `target_info` labels: job, instance and the resource attributes not already used.
fn target_info(attributes: &[KeyValue], identity: &ServiceIdentity, limits: &Limits) -> Option<LabelSet> {
    let rest: Vec<KeyValue> = attributes
        .iter()
        .filter(|kv| !matches!(kv.key.as_str(), "service.name" | "service.namespace" | "service.instance.id"))
        .cloned()
        .collect();
    if rest.is_empty() {
        return None;
    }
    PointContext { scope: Vec::new(), identity, limits }.labels(&rest, None).ok()
}

/// Why one data point is refused (its metric's name is added where it is reported).
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    #[error("data point without time_unix_nano")]
    NoTime,
    #[error("time_unix_nano {0} is out of range")]
    TimeOutOfRange(u64),
    #[error("data point without a value")]
    NoValue,
    #[error("{counts} bucket counts for {bounds} explicit bounds (must be one more)")]
    BucketCounts { counts: usize, bounds: usize },
    #[error("explicit bounds are not strictly increasing")]
    UnorderedBounds,
    #[error("exponential histogram scale {0} is outside -10..=20")]
    Scale(i32),
    #[error(transparent)]
    Series(#[from] crate::SeriesRefusal),
    #[error(transparent)]
    Labels(#[from] vigil_storage::write::LabelError),
}

fn timestamp(time_unix_nano: u64) -> Result<i64, PointError> {
    match i64::try_from(time_unix_nano) {
        Ok(0) => Err(PointError::NoTime),
        Ok(ns) => Ok(ns),
        Err(_) => Err(PointError::TimeOutOfRange(time_unix_nano)),
    }
}

type Totals = HashMap<(String, LabelSet), (f64, Instant)>;

/// The value to store: as sent, or for delta temporality the running total.
fn cumulative(totals: &mut Totals, delta: bool, metric: &str, labels: &LabelSet, value: f64) -> f64 {
    if !delta || !value.is_finite() {
        return value;
    }
    let entry = totals.entry((metric.to_string(), labels.clone())).or_insert((0.0, Instant::now()));
    entry.0 += value;
    entry.1 = Instant::now();
    entry.0
}

fn number_point(
    name: &str,
    point: &NumberDataPoint,
    delta: bool,
    context: &PointContext,
    totals: &mut Totals,
) -> Result<PointSeries, PointError> {
    let ts = timestamp(point.time_unix_nano)?;
    let labels = context.labels(&point.attributes, None)?;
    let mut out = PointSeries::new();
    if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
        out.push(name, labels, ts, STALE_NAN);
        return Ok(out);
    }
    let value = match point.value {
        Some(NumberValue::AsDouble(v)) => v,
        Some(NumberValue::AsInt(v)) => v as f64,
        None => return Err(PointError::NoValue),
    };
    let value = cumulative(totals, delta, name, &labels, value);
    out.exemplars(&point.exemplars, |_| Ok((name.to_string(), labels.clone())))?;
    out.push(name, labels, ts, value);
    Ok(out)
}

/// Writes `_bucket{le}` (from cumulative `(upper bound, count)` pairs, `+Inf` added from
/// `count`), `_count` and `_sum`.
#[allow(clippy::too_many_arguments)]
fn histogram_series(
    name: &str,
    attributes: &[KeyValue],
    ts: i64,
    cumulative_buckets: &[(f64, f64)],
    count: f64,
    sum: Option<f64>,
    stale: bool,
    delta: bool,
    exemplars: &[OtlpExemplar],
    context: &PointContext,
    totals: &mut Totals,
) -> Result<PointSeries, PointError> {
    let mut out = PointSeries::new();
    let bucket_name = format!("{name}_bucket");
    let attribute_labels = context.attribute_labels(attributes);
    out.exemplars(exemplars, |value| {
        let bound = cumulative_buckets
            .iter()
            .map(|(b, _)| *b)
            .find(|b| b.is_finite() && value <= *b)
            .map_or_else(|| "+Inf".to_string(), format_bound);
        Ok((bucket_name.clone(), context.with_extra(attribute_labels.clone(), Some(("le", bound)))?))
    })?;
    let emit = |out: &mut PointSeries, metric: &str, labels: LabelSet, value: f64, totals: &mut Totals| {
        let value = if stale { STALE_NAN } else { cumulative(totals, delta, metric, &labels, value) };
        out.push(metric, labels, ts, value);
    };
    for &(bound, value) in cumulative_buckets.iter().filter(|(b, _)| b.is_finite()) {
        let labels = context.with_extra(attribute_labels.clone(), Some(("le", format_bound(bound))))?;
        emit(&mut out, &bucket_name, labels, value, totals);
    }
    let labels = context.with_extra(attribute_labels.clone(), Some(("le", "+Inf".into())))?;
    emit(&mut out, &bucket_name, labels, count, totals);
    let labels = context.with_extra(attribute_labels, None)?;
    emit(&mut out, &format!("{name}_count"), labels.clone(), count, totals);
    if let Some(sum) = sum {
        emit(&mut out, &format!("{name}_sum"), labels, sum, totals);
    }
    Ok(out)
}

fn histogram_point(
    name: &str,
    point: &HistogramDataPoint,
    delta: bool,
    context: &PointContext,
    totals: &mut Totals,
) -> Result<PointSeries, PointError> {
    let ts = timestamp(point.time_unix_nano)?;
    let counts = &point.bucket_counts;
    let bounds = &point.explicit_bounds;
    if !counts.is_empty() && counts.len() != bounds.len() + 1 {
        return Err(PointError::BucketCounts { counts: counts.len(), bounds: bounds.len() });
    }
    if bounds.windows(2).any(|w| !(w[0] < w[1])) {
        return Err(PointError::UnorderedBounds);
    }
    let mut running = 0u64;
    let buckets: Vec<(f64, f64)> = bounds
        .iter()
        .zip(counts)
        .map(|(&bound, &count)| {
            running = running.saturating_add(count);
            (bound, running as f64)
        })
        .collect();
    let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
    histogram_series(
        name,
        &point.attributes,
        ts,
        &buckets,
        point.count as f64,
        point.sum,
        stale,
        delta,
        &point.exemplars,
        context,
        totals,
    )
}

fn exponential_point(
    name: &str,
    point: &ExponentialHistogramDataPoint,
    delta: bool,
    context: &PointContext,
    totals: &mut Totals,
) -> Result<PointSeries, PointError> {
    let ts = timestamp(point.time_unix_nano)?;
    if !(-10..=20).contains(&point.scale) {
        return Err(PointError::Scale(point.scale));
    }
    // Bucket index i covers (base^i, base^(i+1)] with base = 2^(2^-scale).
    let bound = |index: i64| -> f64 { (index as f64 * 2f64.powi(-point.scale)).exp2() };
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    if let Some(negative) = &point.negative {
        for (k, &count) in negative.bucket_counts.iter().enumerate() {
            buckets.push((-bound(negative.offset as i64 + k as i64), count));
        }
    }
    buckets.push((point.zero_threshold.max(0.0), point.zero_count));
    if let Some(positive) = &point.positive {
        for (k, &count) in positive.bucket_counts.iter().enumerate() {
            buckets.push((bound(positive.offset as i64 + k as i64 + 1), count));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running = 0u64;
    let cumulative_buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(bound, count)| {
            running = running.saturating_add(count);
            (bound, running as f64)
        })
        .collect();
    let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
    histogram_series(
        name,
        &point.attributes,
        ts,
        &cumulative_buckets,
        point.count as f64,
        point.sum,
        stale,
        delta,
        &point.exemplars,
        context,
        totals,
    )
}

fn summary_point(name: &str, point: &SummaryDataPoint, context: &PointContext) -> Result<PointSeries, PointError> {
    let ts = timestamp(point.time_unix_nano)?;
    let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
    let value = |v: f64| if stale { STALE_NAN } else { v };
    let mut out = PointSeries::new();
    let attribute_labels = context.attribute_labels(&point.attributes);
    for quantile in &point.quantile_values {
        let labels =
            context.with_extra(attribute_labels.clone(), Some(("quantile", format_bound(quantile.quantile))))?;
        out.push(name, labels, ts, value(quantile.value));
    }
    let labels = context.with_extra(attribute_labels, None)?;
    out.push(&format!("{name}_count"), labels.clone(), ts, value(point.count as f64));
    out.push(&format!("{name}_sum"), labels, ts, value(point.sum));
    Ok(out)
}

#[cfg(test)]
mod tests;
