//! OTLP metrics as drift data. A data point belongs to a feature when it carries
//! `ml.model.name` and `ml.feature.name` (and optionally `ml.model.version`):
//! - a histogram is a numeric feature's bin counts: its explicit bounds must be the
//!   reference's edges;
//! - a monotonic sum with `ml.feature.category` counts one category of a categorical feature.
//!
//! Delta points are increments as they are. Cumulative points become increments against the
//! previous point of the same series; a count that drops or a new start time is a reset. The
//! first point seen of a series counts whole only when its start time lies in its window (a
//! process that just started); otherwise it is a baseline, as `increase()` would treat it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use parking_lot::Mutex;

use vigil_ingest::otlp::attributes::{find, value_text};
use vigil_ingest::{IngestError, OtlpMetricsTap, Tapped};

use crate::engine::DriftEngine;
use crate::model::FeatureKey;
use crate::reference::{Bins, Reference};
use crate::rows::counts_rows;

pub const MODEL_ATTRIBUTE: &str = "ml.model.name";
pub const VERSION_ATTRIBUTE: &str = "ml.model.version";
pub const FEATURE_ATTRIBUTE: &str = "ml.feature.name";
pub const CATEGORY_ATTRIBUTE: &str = "ml.feature.category";

/// Drift's hook into OTLP metrics ingest: the bin counts of `ml.*` points ride in the
/// request's own write, and their windows are marked dirty once it is acknowledged.
impl OtlpMetricsTap for DriftEngine {
    fn tap(&self, request: &ExportMetricsServiceRequest) -> Result<Tapped, IngestError> {
        let (points, warnings) = extract(self, request);
        let rows = counts_rows(&points).map_err(|e| IngestError::Internal(e.to_string()))?;
        let engine = self.clone();
        Ok(Tapped { rows, warnings, on_stored: Box::new(move || engine.mark_dirty(&points)) })
    }
}

/// Series idle this long are forgotten.
const IDLE: Duration = Duration::from_secs(3 * 3600);

/// Bin counts of one feature observed at one time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BinnedPoint {
    pub key: FeatureKey,
    pub at_ns: i64,
    pub reference_id: String,
    pub counts: Vec<u64>,
}

/// The last cumulative counts of every series, to turn them into increments.
#[derive(Debug, Default)]
pub(crate) struct CumulativeCounts {
    last: Mutex<HashMap<String, Previous>>,
}

/// Start time, counts and when the series was last seen.
type Previous = (u64, Vec<u64>, Instant);

impl CumulativeCounts {
    /// The increment since the previous point of `series`; None for a baseline.
    fn increment(&self, series: String, start_ns: u64, counts: &[u64], fresh: bool) -> Option<Vec<u64>> {
        let mut last = self.last.lock();
        let previous = last.insert(series, (start_ns, counts.to_vec(), Instant::now()));
        match previous {
            Some((previous_start, previous_counts, _))
                if previous_start == start_ns
                    && previous_counts.len() == counts.len()
                    && previous_counts.iter().zip(counts).all(|(p, c)| p <= c) =>
            {
                Some(counts.iter().zip(&previous_counts).map(|(c, p)| c - p).collect())
            }
            // A reset: everything since the new start is new.
            Some(_) => Some(counts.to_vec()),
            None => fresh.then(|| counts.to_vec()),
        }
    }

    pub fn prune(&self) {
        self.last.lock().retain(|_, (_, _, seen)| seen.elapsed() < IDLE);
    }
}

fn feature_of(attributes: &[KeyValue]) -> Option<FeatureKey> {
    Some(FeatureKey {
        model: find(attributes, MODEL_ATTRIBUTE)?,
        version: find(attributes, VERSION_ATTRIBUTE).unwrap_or_default(),
        feature: find(attributes, FEATURE_ATTRIBUTE)?,
    })
}

fn series_id(metric: &str, resource: &[KeyValue], point: &[KeyValue]) -> String {
    let text = |attributes: &[KeyValue]| -> Vec<String> {
        let mut pairs: Vec<String> = attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref()).unwrap_or_default()))
            .collect();
        pairs.sort();
        pairs
    };
    format!("{metric}\u{1}{}\u{1}{}", text(resource).join("\u{2}"), text(point).join("\u{2}"))
}

/// The drift data of a metrics request, and warnings for points that could not be used.
pub(crate) fn extract(engine: &DriftEngine, request: &ExportMetricsServiceRequest) -> (Vec<BinnedPoint>, Vec<String>) {
    let mut merged: BTreeMap<(FeatureKey, i64, String), Vec<u64>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for resource_metrics in &request.resource_metrics {
        let resource = resource_metrics.resource.as_ref().map_or(&[][..], |r| r.attributes.as_slice());
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                let cumulative = |temporality: i32| temporality == AggregationTemporality::Cumulative as i32;
                match &metric.data {
                    Some(Data::Histogram(histogram)) => {
                        let source = Source {
                            engine,
                            metric: &metric.name,
                            resource,
                            cumulative: cumulative(histogram.aggregation_temporality),
                        };
                        for point in &histogram.data_points {
                            let Some(key) = feature_of(&point.attributes) else { continue };
                            let Some(reference) = source.reference(&key, &mut warnings) else { continue };
                            let Bins::Numeric { edges } = &reference.bins else {
                                warnings.push(format!(
                                    "{}: {key} has a categorical reference; histograms feed numeric features",
                                    metric.name
                                ));
                                continue;
                            };
                            let matches = edges.len() == point.explicit_bounds.len()
                                && edges
                                    .iter()
                                    .zip(&point.explicit_bounds)
                                    .all(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0));
                            if !matches || point.bucket_counts.len() != edges.len() + 1 {
                                warnings.push(format!(
                                    "{}: the histogram's bounds are not the edges of {key}'s reference",
                                    metric.name
                                ));
                                continue;
                            }
                            let at = point.time_unix_nano as i64;
                            let counts = point.bucket_counts.clone();
                            let Some(counts) =
                                source.increment(&point.attributes, point.start_time_unix_nano, at, counts)
                            else {
                                continue;
                            };
                            add(&mut merged, key, at, &reference.id, &counts);
                        }
                    }
                    Some(Data::Sum(sum)) if sum.is_monotonic => {
                        let source = Source {
                            engine,
                            metric: &metric.name,
                            resource,
                            cumulative: cumulative(sum.aggregation_temporality),
                        };
                        for point in &sum.data_points {
                            let Some(key) = feature_of(&point.attributes) else { continue };
                            let Some(category) = find(&point.attributes, CATEGORY_ATTRIBUTE) else { continue };
                            let Some(reference) = source.reference(&key, &mut warnings) else { continue };
                            let Bins::Categorical { categories } = &reference.bins else {
                                warnings.push(format!(
                                    "{}: {key} has a numeric reference; category counts feed categorical features",
                                    metric.name
                                ));
                                continue;
                            };
                            use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
                            let count = match point.value {
                                Some(Value::AsInt(i)) if i >= 0 => i as u64,
                                Some(Value::AsDouble(d)) if d >= 0.0 && d.is_finite() => d.round() as u64,
                                _ => continue,
                            };
                            let at = point.time_unix_nano as i64;
                            let Some(count) =
                                source.increment(&point.attributes, point.start_time_unix_nano, at, vec![count])
                            else {
                                continue;
                            };
                            let mut counts = vec![0u64; categories.len() + 1];
                            counts[Bins::category_bin(categories, &category)] = count[0];
                            add(&mut merged, key, at, &reference.id, &counts);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    warnings.sort();
    warnings.dedup();
    let points = merged
        .into_iter()
        .filter(|(_, counts)| counts.iter().any(|c| *c > 0))
        .map(|((key, at_ns, reference_id), counts)| BinnedPoint { key, at_ns, reference_id, counts })
        .collect();
    (points, warnings)
}

/// One OTLP metric of one resource, as drift reads its points.
struct Source<'a> {
    engine: &'a DriftEngine,
    metric: &'a str,
    resource: &'a [KeyValue],
    cumulative: bool,
}

impl Source<'_> {
    /// The reference of `key`, or a warning that there is none.
    fn reference(&self, key: &FeatureKey, warnings: &mut Vec<String>) -> Option<Arc<Reference>> {
        let reference = self.engine.reference(key);
        if reference.is_none() {
            warnings.push(format!("{}: no drift reference for {key}; register one to score it", self.metric));
        }
        reference
    }

    /// Counts of a point as increments: delta points as they are, cumulative ones against
    /// the series' previous point (None for a baseline).
    fn increment(&self, attributes: &[KeyValue], start_ns: u64, at: i64, counts: Vec<u64>) -> Option<Vec<u64>> {
        if !self.cumulative {
            return Some(counts);
        }
        let fresh = start_ns > 0 && start_ns as i64 >= self.engine.window_start(at);
        let id = series_id(self.metric, self.resource, attributes);
        self.engine.cumulative().increment(id, start_ns, &counts, fresh)
    }
}

fn add(
    merged: &mut BTreeMap<(FeatureKey, i64, String), Vec<u64>>,
    key: FeatureKey,
    at: i64,
    reference_id: &str,
    counts: &[u64],
) {
    let entry = merged.entry((key, at, reference_id.to_string())).or_insert_with(|| vec![0; counts.len()]);
    entry.iter_mut().zip(counts).for_each(|(e, c)| *e += c);
}
