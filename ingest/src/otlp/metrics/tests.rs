use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

const T: u64 = 1_700_000_000_000_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("service.instance.id", "i-1"), kv("host.name", "box")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "lib".into(), version: "1.0".into(), ..Default::default() }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint { time_unix_nano: T, value: Some(NumberValue::AsDouble(value)), attributes, ..Default::default() }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric { name: name.into(), unit: unit.into(), data: Some(data), ..Default::default() }
}

/// `name{labels} value` lines, sorted, for comparison.
fn render(mapped: &MappedMetrics) -> Vec<String> {
    let mut lines: Vec<String> = mapped
        .series
        .iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(n, _)| !matches!(*n, "job" | "instance" | "otel_scope_name" | "otel_scope_version"))
                .map(|(n, v)| format!("{n}={v:?}"))
                .collect();
            format!("{}{{{}}} {}", s.metric, labels.join(","), s.samples[0].value)
        })
        .collect();
    lines.sort();
    lines
}

fn map_one(metrics: Vec<Metric>) -> MappedMetrics {
    map(&request(metrics), &Limits::default(), &DeltaTotals::default())
}

#[test]
fn gauges_and_sums_take_prometheus_names_and_labels() {
    let mapped = map_one(vec![
        metric("rig.temperature", "Cel", Data::Gauge(Gauge { data_points: vec![number(21.5, vec![kv("room", "a")])] })),
        metric(
            "rig.requests",
            "1",
            Data::Sum(Sum {
                data_points: vec![number(3.0, vec![kv("http.route", "/x")])],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "rig.inflight",
            "1",
            Data::Sum(Sum { data_points: vec![number(2.0, vec![])], aggregation_temporality: 2, is_monotonic: false }),
        ),
    ]);
    assert_eq!(
        render(&mapped),
        vec![
            "rig_inflight{} 2",
            "rig_requests_total{http_route=\"/x\"} 3",
            "rig_temperature_celsius{room=\"a\"} 21.5",
            "target_info{host_name=\"box\"} 1",
        ]
    );
    let series = mapped.series.iter().find(|s| s.metric == "rig_temperature_celsius").unwrap();
    assert_eq!(series.labels.get("job"), Some("api"));
    assert_eq!(series.labels.get("instance"), Some("i-1"));
    assert_eq!(series.labels.get("otel_scope_name"), Some("lib"));
    assert_eq!(series.samples[0].timestamp_ns, T as i64);
    assert_eq!(mapped.accepted_points, 3);
}

#[test]
fn histograms_become_cumulative_buckets_count_and_sum() {
    let point = HistogramDataPoint {
        time_unix_nano: T,
        count: 10,
        sum: Some(275.0),
        bucket_counts: vec![1, 2, 3, 4],
        explicit_bounds: vec![5.0, 10.0, 25.0],
        ..Default::default()
    };
    let mapped = map_one(vec![metric(
        "rig_latency",
        "ms",
        Data::Histogram(Histogram { data_points: vec![point], aggregation_temporality: 2 }),
    )]);
    assert_eq!(
        render(&mapped),
        vec![
            "rig_latency_milliseconds_bucket{le=\"+Inf\"} 10",
            "rig_latency_milliseconds_bucket{le=\"10\"} 3",
            "rig_latency_milliseconds_bucket{le=\"25\"} 6",
            "rig_latency_milliseconds_bucket{le=\"5\"} 1",
            "rig_latency_milliseconds_count{} 10",
            "rig_latency_milliseconds_sum{} 275",
            "target_info{host_name=\"box\"} 1",
        ]
    );
}

#[test]
fn exponential_histograms_are_converted_not_dropped() {
    // scale 0: base 2; positive offset 1 => buckets (2,4], (4,8]; zero bucket of 1.
    let point = ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count: 6,
        sum: Some(20.0),
        scale: 0,
        zero_count: 1,
        positive: Some(Buckets { offset: 1, bucket_counts: vec![2, 3] }),
        negative: None,
        ..Default::default()
    };
    let mapped = map_one(vec![metric(
        "size",
        "By",
        Data::ExponentialHistogram(ExponentialHistogram { data_points: vec![point], aggregation_temporality: 2 }),
    )]);
    let lines = render(&mapped);
    assert!(lines.contains(&"size_bytes_bucket{le=\"0\"} 1".to_string()), "{lines:?}");
    assert!(lines.contains(&"size_bytes_bucket{le=\"4\"} 3".to_string()), "{lines:?}");
    assert!(lines.contains(&"size_bytes_bucket{le=\"8\"} 6".to_string()), "{lines:?}");
    assert!(lines.contains(&"size_bytes_bucket{le=\"+Inf\"} 6".to_string()), "{lines:?}");
}

#[test]
fn summaries_keep_quantiles() {
    let point = SummaryDataPoint {
        time_unix_nano: T,
        count: 4,
        sum: 2.0,
        quantile_values: vec![
            ValueAtQuantile { quantile: 0.5, value: 0.4 },
            ValueAtQuantile { quantile: 0.99, value: 0.9 },
        ],
        ..Default::default()
    };
    let mapped = map_one(vec![metric("rpc.duration", "s", Data::Summary(Summary { data_points: vec![point] }))]);
    assert_eq!(
        render(&mapped)[..4],
        [
            "rpc_duration_seconds_count{} 4",
            "rpc_duration_seconds_sum{} 2",
            "rpc_duration_seconds{quantile=\"0.5\"} 0.4",
            "rpc_duration_seconds{quantile=\"0.99\"} 0.9",
        ]
    );
}

#[test]
fn deltas_accumulate_into_counters() {
    let deltas = DeltaTotals::default();
    let sum = |v: f64| {
        metric(
            "jobs",
            "",
            Data::Sum(Sum { data_points: vec![number(v, vec![])], aggregation_temporality: 1, is_monotonic: true }),
        )
    };
    let first = map(&request(vec![sum(2.0)]), &Limits::default(), &deltas);
    let second = map(&request(vec![sum(3.0)]), &Limits::default(), &deltas);
    let value = |m: &MappedMetrics| m.series.iter().find(|s| s.metric == "jobs_total").unwrap().samples[0].value;
    assert_eq!((value(&first), value(&second)), (2.0, 5.0));
    assert_eq!(deltas.prune(), 1);
}

#[test]
fn bad_points_are_rejected_alone() {
    let no_time = NumberDataPoint { value: Some(NumberValue::AsDouble(1.0)), ..Default::default() };
    let no_value = NumberDataPoint { time_unix_nano: T, ..Default::default() };
    let bad_buckets = HistogramDataPoint {
        time_unix_nano: T,
        bucket_counts: vec![1, 2],
        explicit_bounds: vec![1.0, 2.0],
        ..Default::default()
    };
    let stale = NumberDataPoint { time_unix_nano: T, flags: 1, ..Default::default() };
    let mapped = map_one(vec![
        metric("g", "", Data::Gauge(Gauge { data_points: vec![no_time, no_value, number(1.0, vec![]), stale] })),
        metric("h", "", Data::Histogram(Histogram { data_points: vec![bad_buckets], aggregation_temporality: 2 })),
        Metric { name: "empty".into(), ..Default::default() },
    ]);
    assert_eq!(mapped.accepted_points, 2);
    assert_eq!(mapped.rejected_points, 4);
    assert!(mapped.first_error.as_deref().unwrap().contains("time_unix_nano"));
    let values: Vec<u64> =
        mapped.series.iter().filter(|s| s.metric == "g").map(|s| s.samples[0].value.to_bits()).collect();
    assert_eq!(values, vec![1f64.to_bits(), STALE_NAN.to_bits()]);
}

#[test]
fn exemplars_are_kept_with_their_series_or_bucket() {
    let exemplar = |value: f64, span: u8| OtlpExemplar {
        filtered_attributes: vec![kv("user.id", "42")],
        time_unix_nano: T,
        value: Some(ExemplarValue::AsDouble(value)),
        span_id: vec![span; 8],
        trace_id: vec![0xab; 16],
    };
    let point = HistogramDataPoint {
        time_unix_nano: T,
        count: 2,
        bucket_counts: vec![1, 0, 1],
        explicit_bounds: vec![0.1, 0.5],
        exemplars: vec![exemplar(0.3, 1), exemplar(5.0, 2)],
        ..Default::default()
    };
    let mut counter = number(3.0, vec![]);
    counter.exemplars = vec![exemplar(1.0, 3)];
    let mapped = map_one(vec![
        metric("rig_latency", "s", Data::Histogram(Histogram { data_points: vec![point], aggregation_temporality: 2 })),
        metric(
            "rig.requests",
            "1",
            Data::Sum(Sum { data_points: vec![counter], aggregation_temporality: 2, is_monotonic: true }),
        ),
    ]);
    let seen: Vec<(String, Option<String>, f64, Option<String>)> = mapped
        .exemplars
        .iter()
        .map(|e| (e.metric.clone(), e.series.get("le").map(str::to_string), e.value, e.span_id.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("rig_latency_seconds_bucket".into(), Some("0.5".into()), 0.3, Some("0101010101010101".into())),
            ("rig_latency_seconds_bucket".into(), Some("+Inf".into()), 5.0, Some("0202020202020202".into())),
            ("rig_requests_total".into(), None, 1.0, Some("0303030303030303".into())),
        ]
    );
    let first = &mapped.exemplars[0];
    assert_eq!(first.trace_id.as_deref(), Some("abababababababababababababababab"));
    assert!(first.labels.contains(&("user_id".to_string(), "42".to_string())));
    assert!(first.labels.contains(&("trace_id".to_string(), "abababababababababababababababab".to_string())));
    let batch = vigil_storage::exemplars::exemplar_batch(&mapped.exemplars).unwrap();
    assert_eq!(batch.num_rows(), 3);
}
