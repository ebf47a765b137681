//! Ingestion with real clients: the OpenTelemetry Python SDK over OTLP/HTTP (plain and gzip)
//! and OTLP/gRPC, OTLP/JSON fixtures, a real node-exporter scraped and imported, the hard
//! cases of the text format, and bad input refused whole.

use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Value, json};

use crate::harness::{Vigil, fixture, free_port, python, require_program};
use crate::prometheus::{NODE_EXPORTER, spawn_node_exporter};

async fn post(
    vigil: &Vigil,
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut request = vigil.client.post(url).header("Content-Type", content_type).body(body);
    if let Some(encoding) = encoding {
        request = request.header("Content-Encoding", encoding);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn the_opentelemetry_sdk_exports_over_every_transport() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let api = format!("http://{}", vigil.addr);
    let transports = [
        ("http", vigil.otlp_http.clone(), "sdk-http"),
        ("http-gzip", api.clone(), "sdk-http-gzip"),
        ("grpc", vigil.otlp_grpc.clone(), "sdk-grpc"),
        ("grpc-gzip", vigil.otlp_grpc.clone(), "sdk-grpc-gzip"),
    ];
    for (mode, endpoint, service) in transports {
        let output =
            Command::new(&python).arg(fixture("otlp/client.py")).args([mode, &endpoint, service]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{mode}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let sent: Value = serde_json::from_str(stdout.trim()).unwrap();
        let trace_id = sent["trace_id"].as_str().unwrap();

        let q = |sql: &str| sql.replace("$job", service);
        assert_eq!(
            vigil.rows(&q("SELECT route, code, value FROM rig_requests_total WHERE job = '$job' ORDER BY route")).await,
            vec![json!(["/api", "200", 5.0]), json!(["/health", "200", 5.0])],
            "{mode}"
        );
        assert_eq!(
            vigil.rows(&q("SELECT value FROM rig_inflight WHERE job = '$job'")).await,
            vec![json!([2.0])],
            "{mode}"
        );
        // Exemplars recorded inside the trace, kept beside their series (a histogram's on the
        // bucket the value falls in).
        assert_eq!(
            vigil
                .rows(&q(&format!(
                    "SELECT DISTINCT metric, series_labels['route'], series_labels['le'], value, trace_id, length(span_id) \
                     FROM exemplars WHERE series_labels['job'] = '$job' AND trace_id = '{trace_id}' ORDER BY metric"
                )))
                .await,
            vec![
                json!(["rig_order_latency_milliseconds_bucket", "/api/orders", "50", 42.0, trace_id, 16]),
                json!(["rig_orders_total", "/api/orders", null, 1.0, trace_id, 16]),
            ],
            "{mode}"
        );
        let url = vigil.url(&format!(
            "/api/v1/query_exemplars?query=rate(rig_orders_total{{job=\"{service}\"}}[5m])&start=0&end={}",
            now_secs() + 60
        ));
        let found: Value = vigil.client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(found["status"], "success", "{found}");
        let series = &found["data"][0];
        assert_eq!(series["seriesLabels"]["__name__"], "rig_orders_total", "{found}");
        assert_eq!(series["seriesLabels"]["route"], "/api/orders");
        assert_eq!(series["exemplars"][0]["labels"]["trace_id"], trace_id);
        assert_eq!(series["exemplars"][0]["value"], "1");
        assert!(series["exemplars"][0]["timestamp"].is_f64() || series["exemplars"][0]["timestamp"].is_u64());
        assert_eq!(
            vigil.rows(&q("SELECT room, value FROM rig_temperature_celsius WHERE job = '$job' ORDER BY room")).await,
            vec![json!(["a", 21.5]), json!(["b", 19.0])],
            "{mode}"
        );
        // Latencies 10..50 ms on /api against the SDK's default bounds.
        assert_eq!(
            vigil
                .rows(&q("SELECT le, value FROM rig_latency_milliseconds_bucket WHERE job = '$job' AND route = '/api' AND le IN ('5', '10', '25', '50', '+Inf') ORDER BY value, le"))
                .await,
            vec![json!(["5", 0.0]), json!(["10", 1.0]), json!(["25", 2.0]), json!(["+Inf", 5.0]), json!(["50", 5.0])],
            "{mode}"
        );
        assert_eq!(
            vigil
                .rows(&q("SELECT value FROM rig_latency_milliseconds_sum WHERE job = '$job' AND route = '/api'"))
                .await,
            vec![json!([150.0])]
        );
        assert_eq!(
            vigil
                .rows(&q("SELECT value FROM rig_latency_milliseconds_count WHERE job = '$job' AND route = '/health'"))
                .await,
            vec![json!([5.0])]
        );
        assert_eq!(
            vigil.rows(&q("SELECT service_version, deployment_environment, telemetry_sdk_language FROM target_info WHERE job = '$job'")).await,
            vec![json!(["1.2.3", "test", "python"])],
            "{mode}: target_info"
        );
        let spans = vigil
            .rows(&format!(
                "SELECT name, kind, status, status_message, service, parent_span_id IS NULL, array_length(events), span_id, parent_span_id \
                 FROM spans WHERE trace_id = '{trace_id}' ORDER BY start, name"
            ))
            .await;
        assert_eq!(spans.len(), 3, "{mode}: {spans:?}");
        assert_eq!(
            spans[0].as_array().unwrap()[..7],
            json!(["GET /api/orders", "server", "unset", null, service, true, 0]).as_array().unwrap()[..]
        );
        let root_id = spans[0][7].clone();
        let failing = spans.iter().find(|s| s[0] == "cache.get").unwrap();
        assert_eq!(
            failing.as_array().unwrap()[..7],
            json!(["cache.get", "client", "error", "redis timeout", service, false, 1]).as_array().unwrap()[..]
        );
        assert!(spans[1..].iter().all(|s| s[8] == root_id), "children point at the root: {spans:?}");
        let event = vigil
            .rows(&format!("SELECT events[1]['name'], events[1]['attributes']['key'] FROM spans WHERE trace_id = '{trace_id}' AND name = 'cache.get'"))
            .await;
        assert_eq!(event, vec![json!(["cache miss", "orders:42"])]);
        let db = vigil
            .rows(&format!(
                "SELECT attributes['db.system'] FROM spans WHERE trace_id = '{trace_id}' AND name = 'db.query'"
            ))
            .await;
        assert_eq!(db, vec![json!(["postgresql"])]);
    }
}

/// The JSON fixtures written out as protobuf, field by field.
mod protobuf_twins {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    const T: u64 = 1_544_712_660_300_000_000;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn text(value: &str) -> Value {
        Value::StringValue(value.into())
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    fn scope() -> Option<InstrumentationScope> {
        Some(InstrumentationScope { name: "fixture.scope".into(), version: "1.0.0".into(), ..Default::default() })
    }

    pub fn metrics() -> ExportMetricsServiceRequest {
        let resource = Resource {
            attributes: vec![kv("service.name", text("json-fixture")), kv("service.instance.id", text("fixture-1"))],
            ..Default::default()
        };
        let metrics = vec![
            Metric {
                name: "fixture.requests".into(),
                unit: "1".into(),
                description: "a counter".into(),
                data: Some(Data::Sum(Sum {
                    aggregation_temporality: 2,
                    is_monotonic: true,
                    data_points: vec![NumberDataPoint {
                        start_time_unix_nano: T,
                        time_unix_nano: T,
                        value: Some(Number::AsInt(42)),
                        attributes: vec![kv("http.route", text("/x"))],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "fixture.temperature".into(),
                unit: "Cel".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        time_unix_nano: T,
                        value: Some(Number::AsDouble(21.5)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "fixture.latency".into(),
                unit: "s".into(),
                data: Some(Data::Histogram(Histogram {
                    aggregation_temporality: 2,
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: T,
                        count: 3,
                        sum: Some(0.9),
                        bucket_counts: vec![1, 1, 1],
                        explicit_bounds: vec![0.1, 0.5],
                        attributes: vec![kv("code", Value::IntValue(200))],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource),
                scope_metrics: vec![ScopeMetrics { scope: scope(), metrics, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    pub fn traces() -> ExportTraceServiceRequest {
        let span = Span {
            trace_id: hex("5b8efff798038103d269b633813fc60c"),
            span_id: hex("eee19b7ec3c1b174"),
            parent_span_id: hex("eee19b7ec3c1b173"),
            name: "I'm a server span".into(),
            start_time_unix_nano: 1_544_712_660_000_000_000,
            end_time_unix_nano: 1_544_712_661_000_000_000,
            kind: 2,
            attributes: vec![
                kv("my.span.attr", text("some value")),
                kv("retries", Value::IntValue(3)),
                kv(
                    "tags",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue { value: Some(text("a")) },
                            AnyValue { value: Some(Value::BoolValue(true)) },
                        ],
                    }),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 1_544_712_660_500_000_000,
                name: "event one".into(),
                attributes: vec![kv("k", Value::DoubleValue(0.5))],
                ..Default::default()
            }],
            status: Some(Status { code: 2, message: "boom".into() }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", text("json-fixture"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { scope: scope(), spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    pub fn logs() -> ExportLogsServiceRequest {
        let record = LogRecord {
            time_unix_nano: T,
            observed_time_unix_nano: T,
            severity_number: 17,
            severity_text: "Error".into(),
            trace_id: hex("5b8efff798038103d269b633813fc60c"),
            span_id: hex("eee19b7ec3c1b174"),
            body: Some(AnyValue { value: Some(text("Example log record")) }),
            attributes: vec![kv("string.attribute", text("some string")), kv("int.attribute", Value::IntValue(10))],
            ..Default::default()
        };
        let scope = Some(InstrumentationScope { name: "fixture.scope".into(), ..Default::default() });
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", text("json-fixture"))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs { scope, log_records: vec![record], ..Default::default() }],
                ..Default::default()
            }],
        }
    }
}

#[tokio::test]
async fn otlp_json_is_stored_exactly_like_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    // The fixtures carry their recorded (historical) timestamps: accept any age.
    let json_vigil = Vigil::start(&dir.path().join("json"), &["--max-past", "0"]).await;
    let proto_vigil = Vigil::start(&dir.path().join("proto"), &["--max-past", "0"]).await;
    let cases: [(&str, &str, Vec<u8>); 3] = [
        ("v1/metrics", "otlp/metrics.json", protobuf_twins::metrics().encode_to_vec()),
        ("v1/traces", "otlp/traces.json", protobuf_twins::traces().encode_to_vec()),
        ("v1/logs", "otlp/logs.json", protobuf_twins::logs().encode_to_vec()),
    ];
    for (route, json_file, protobuf) in cases {
        let json_body = std::fs::read(fixture(json_file)).unwrap();
        let (status, content_type, body) =
            post(&json_vigil, &format!("{}/{route}", json_vigil.otlp_http), "application/json", None, json_body).await;
        assert_eq!(
            (status, content_type.as_str(), body.as_slice()),
            (200, "application/json", &b"{}"[..]),
            "{route}: {}",
            String::from_utf8_lossy(&body)
        );
        let (status, content_type, body) =
            post(&proto_vigil, &format!("{}/{route}", proto_vigil.otlp_http), "application/x-protobuf", None, protobuf)
                .await;
        assert_eq!((status, content_type.as_str(), body.len()), (200, "application/x-protobuf", 0), "{route}");
    }
    for query in [
        "SELECT * FROM fixture_requests_total",
        "SELECT * FROM fixture_temperature_celsius",
        "SELECT * FROM fixture_latency_seconds_bucket ORDER BY le",
        "SELECT * FROM fixture_latency_seconds_sum",
        "SELECT * FROM spans",
        "SELECT * FROM logs",
    ] {
        let from_json = json_vigil.sql(query).await;
        assert_eq!(from_json, proto_vigil.sql(query).await, "{query}");
        assert_eq!(from_json["rows"].as_array().unwrap().len().min(1), 1, "{query} is empty");
    }
    // And what was stored is what the fixtures say.
    assert_eq!(
        json_vigil
            .rows("SELECT job, instance, http_route, otel_scope_name, value, timestamp FROM fixture_requests_total")
            .await,
        vec![json!(["json-fixture", "fixture-1", "/x", "fixture.scope", 42.0, "2018-12-13T14:51:00.300Z"])]
    );
    assert_eq!(
        json_vigil.rows("SELECT code, le, value FROM fixture_latency_seconds_bucket ORDER BY value").await,
        vec![json!(["200", "0.1", 1.0]), json!(["200", "0.5", 2.0]), json!(["200", "+Inf", 3.0])]
    );
    assert_eq!(
        json_vigil
            .rows("SELECT trace_id, span_id, parent_span_id, kind, status, status_message, attributes['retries'], attributes['tags'], events[1]['attributes']['k'], duration FROM spans")
            .await,
        vec![json!(["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173", "server", "error", "boom", "3", "[\"a\",true]", "0.5", 1_000_000_000])]
    );
    assert_eq!(
        json_vigil
            .rows("SELECT severity_number, severity_text, body, trace_id, attributes['int.attribute'] FROM logs")
            .await,
        vec![json!([17, "Error", "Example log record", "5b8efff798038103d269b633813fc60c", "10"])]
    );
}

/// `google.rpc.Status`, as the tests read it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test]
async fn otlp_http_answers_partial_success_and_errors_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--max-body-size", "64KiB", "--max-past", "0"]).await;
    let metrics_url = format!("{}/v1/metrics", vigil.otlp_http);
    let traces_url = format!("http://{}/v1/traces", vigil.addr);

    let partly_bad = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"partly","gauge":{"dataPoints":[
        {"asDouble":1,"timeUnixNano":"1700000000000000000"},{"asDouble":2}]}}]}]}]}"#;
    let (status, _, body) = post(&vigil, &metrics_url, "application/json", None, partly_bad.to_vec()).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedDataPoints"].to_string().trim_matches('"'), "1", "{answer}");
    assert!(answer["partialSuccess"]["errorMessage"].as_str().unwrap().contains("time_unix_nano"), "{answer}");
    assert_eq!(vigil.count("SELECT count(*) FROM partly").await, 1);

    let too_big = vec![b' '; 100 * 1024];
    let cases: Vec<(&str, &str, Option<&str>, Vec<u8>, u16)> = vec![
        ("garbage protobuf", "application/x-protobuf", None, vec![0xff, 0xff, 0xff, 0x01], 400),
        (
            "truncated protobuf",
            "application/x-protobuf",
            None,
            protobuf_twins::traces().encode_to_vec()[..40].to_vec(),
            400,
        ),
        ("bad JSON", "application/json", None, b"{\"resourceSpans\": [".to_vec(), 400),
        (
            "bad enum name",
            "application/json",
            None,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_WEIRD"}]}]}]}"#.to_vec(),
            400,
        ),
        ("bad gzip", "application/x-protobuf", Some("gzip"), b"not gzip at all".to_vec(), 400),
        ("unknown content type", "text/plain", None, b"hello".to_vec(), 415),
        ("unknown encoding", "application/json", Some("br"), b"{}".to_vec(), 415),
        ("too large", "application/json", None, too_big, 413),
    ];
    for (name, content_type, encoding, body, expected) in cases {
        let (status, answer_type, answer) = post(&vigil, &traces_url, content_type, encoding, body).await;
        assert_eq!(status, expected, "{name}: {}", String::from_utf8_lossy(&answer));
        if answer_type == "application/x-protobuf" {
            let status = RpcStatus::decode(answer.as_slice()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(status.code, 3, "{name}");
            assert!(!status.message.is_empty(), "{name}");
        } else {
            let status: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(status["code"], 3, "{name}: {status}");
            assert!(status["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: {status}");
        }
    }
    // A gzip body that is fine is taken.
    let (status, _, _) = post(
        &vigil,
        &traces_url,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&protobuf_twins::traces().encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(vigil.count("SELECT count(*) FROM spans").await, 1, "only the good request stored a span");
}

#[tokio::test]
async fn scraping_a_real_node_exporter_and_a_dead_target() {
    if !require_program(NODE_EXPORTER) {
        return;
    }
    let exporter_port = free_port();
    let _exporter = spawn_node_exporter(exporter_port);
    let dead_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}'], labels: {{env: test}}}}]\n  - job_name: dead\n    scrape_interval: 1s\n    scrape_timeout: 500ms\n    static_configs: [{{targets: ['127.0.0.1:{dead_port}']}}]\n"
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while vigil.count("SELECT count(*) FROM information_schema.tables WHERE table_name = 'up'").await == 0
        || vigil.count("SELECT count(*) FROM up WHERE job = 'node' AND value = 1").await < 3
    {
        assert!(Instant::now() < deadline, "no successful scrapes: {}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let instance = format!("127.0.0.1:{exporter_port}");
    assert_eq!(
        vigil.rows("SELECT DISTINCT job, instance, env FROM node_load1").await,
        vec![json!(["node", instance, "test"])]
    );
    assert!(vigil.count("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'node_%'").await > 50);
    assert!(vigil.count("SELECT count(*) FROM scrape_duration_seconds WHERE job = 'node' AND value > 0").await >= 3);
    // Prometheus's five report series: the first scrape adds every series it scraped, and
    // without metric relabelling every sample is kept.
    let first = vigil
        .rows(
            "SELECT s.value, a.value, p.value FROM scrape_samples_scraped s \
             JOIN scrape_series_added a ON s.timestamp = a.timestamp AND s.job = a.job \
             JOIN scrape_samples_post_metric_relabeling p ON s.timestamp = p.timestamp AND s.job = p.job \
             WHERE s.job = 'node' ORDER BY s.timestamp LIMIT 2",
        )
        .await;
    assert_eq!(first[0][0], first[0][1], "the first scrape adds all its series: {first:?}");
    assert_eq!(first[0][0], first[0][2], "{first:?}");
    assert!(first[0][0].as_f64().unwrap() > 100.0, "{first:?}");
    assert!(first[1][1].as_f64().unwrap() < first[1][0].as_f64().unwrap() / 2.0, "later scrapes add few: {first:?}");
    assert!(vigil.count("SELECT count(*) FROM up WHERE job = 'dead' AND value = 0").await >= 1);
    assert_eq!(vigil.count("SELECT count(*) FROM up WHERE job = 'dead' AND value = 1").await, 0);

    let targets: Value = vigil.client.get(vigil.url("/api/v1/targets")).send().await.unwrap().json().await.unwrap();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    let by_job = |job: &str| active.iter().find(|t| t["labels"]["job"] == job).unwrap().clone();
    assert_eq!(by_job("node")["health"], "up");
    assert_eq!(by_job("node")["labels"]["env"], "test");
    assert_eq!(by_job("dead")["health"], "down");
    assert!(!by_job("dead")["lastError"].as_str().unwrap().is_empty());
}

/// `relabel_configs` choose and rename targets, `metric_relabel_configs` drop and relabel
/// scraped samples, as Prometheus reads them from a `scrape_configs` block.
#[tokio::test]
async fn scrape_relabelling_as_prometheus_reads_it() {
    if !require_program(NODE_EXPORTER) {
        return;
    }
    let exporter_port = free_port();
    let _exporter = spawn_node_exporter(exporter_port);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}', '127.0.0.1:{}']}}]\n    relabel_configs:\n      - {{source_labels: [__address__], regex: '.*:{exporter_port}', action: keep}}\n      - {{target_label: instance, replacement: node-1}}\n      - {{source_labels: [__address__], regex: '(.*):.*', target_label: host}}\n    metric_relabel_configs:\n      - {{source_labels: [__name__], regex: 'node_cpu_.*|go_.*', action: drop}}\n      - {{source_labels: [__name__], regex: 'node_load(.*)', target_label: window, replacement: 'w$1'}}\n",
        free_port()
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while vigil.count("SELECT count(*) FROM information_schema.tables WHERE table_name = 'node_load1'").await == 0 {
        assert!(Instant::now() < deadline, "no scrape: {}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let targets: Value = vigil.client.get(vigil.url("/api/v1/targets")).send().await.unwrap().json().await.unwrap();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "the keep rule drops the other target: {targets}");
    assert_eq!(
        vigil.rows("SELECT DISTINCT job, instance, host, window FROM node_load1").await,
        vec![json!(["node", "node-1", "127.0.0.1", "w1"])]
    );
    let names = vigil.rows("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'node_cpu%' OR table_name LIKE 'go_%'").await;
    assert!(names.is_empty(), "dropped by metric_relabel_configs: {names:?}");
    let counts = vigil
        .rows("SELECT s.value, p.value FROM scrape_samples_scraped s JOIN scrape_samples_post_metric_relabeling p ON s.timestamp = p.timestamp ORDER BY s.timestamp LIMIT 1")
        .await;
    assert!(counts[0][1].as_f64().unwrap() < counts[0][0].as_f64().unwrap(), "{counts:?}");

    // A bad rule stops start-up with where it is.
    let bad = format!(
        "scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n    metric_relabel_configs:\n      - {{source_labels: [a], regex: '(', action: drop}}\n"
    );
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let output = std::process::Command::new(crate::harness::VIGIL).arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("scrape_configs[node].metric_relabel_configs[0]"), "{stderr}");
}

#[tokio::test]
async fn real_exposition_text_is_imported_whole() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let import = vigil.url("/api/v1/import/prometheus");
    // What the Prometheus Python client writes.
    let python_text = std::fs::read(fixture("fixtures/python_client_metrics.txt")).unwrap();
    let samples =
        String::from_utf8_lossy(&python_text).lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let response = vigil.client.post(&import).body(python_text).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(summary["samples"], samples);
    assert_eq!(vigil.rows("SELECT value FROM rig_latency_seconds_bucket WHERE le = '0.25'").await, vec![json!([1.0])]);
    assert_eq!(vigil.rows("SELECT value FROM rig_temp_celsius").await, vec![json!([21.5])]);

    // What node-exporter writes, fetched live.
    if require_program(NODE_EXPORTER) {
        let port = free_port();
        let _exporter = spawn_node_exporter(port);
        let mut text = String::new();
        for _ in 0..100 {
            if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
                text = response.text().await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let samples = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        assert!(samples > 100);
        let response = vigil
            .client
            .post(format!("{import}?extra_label=job=node-import"))
            .body(gzip(text.as_bytes()))
            .header("Content-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let summary: Value = response.json().await.unwrap();
        assert_eq!(summary["samples"], samples);
        assert_eq!(vigil.rows("SELECT DISTINCT job FROM node_load1").await, vec![json!(["node-import"])]);
    }
}

#[tokio::test]
async fn hard_text_cases_are_stored_exactly_and_bad_bodies_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--max-past", "0"]).await;
    let import = vigil.url("/api/v1/import/prometheus");
    let body = concat!(
        "# HELP hard_total Help with \\\\ and \\n.\n",
        "# TYPE hard_total counter\n",
        "hard_total{path=\"/a,b=c}d\",quote=\"say \\\"hi\\\"\",slash=\"c:\\\\dir\",newline=\"x\\ny\"} 1 1700000000000\n",
        "job:hard:rate5m{job=\"a\"} NaN 1700000000000\n",
        "hard_inf{sign=\"plus\"} +Inf 1700000000000\n",
        "hard_inf{sign=\"minus\"} -Inf 1700000000000\n",
        "hard_now 7\n",
    );
    let response = vigil.client.post(format!("{import}?extra_label=env=prod")).body(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(
        vigil.rows("SELECT path, quote, slash, newline, env, value, timestamp FROM hard_total").await,
        vec![json!(["/a,b=c}d", "say \"hi\"", "c:\\dir", "x\ny", "prod", 1.0, "2023-11-14T22:13:20Z"])]
    );
    assert_eq!(vigil.rows("SELECT job, value FROM \"job:hard:rate5m\"").await, vec![json!(["a", "NaN"])]);
    assert_eq!(
        vigil.rows("SELECT sign, value FROM hard_inf ORDER BY sign").await,
        vec![json!(["minus", "-Inf"]), json!(["plus", "+Inf"])]
    );
    assert_eq!(vigil.count("SELECT count(*) FROM hard_now WHERE timestamp > now() - INTERVAL '1 minute'").await, 1);

    let open_metrics = "# TYPE om counter\n# UNIT om seconds\nom_total{a=\"1\"} 2.5 1700000000.5 # {trace_id=\"abc\"} 1.0 1700000000\n# EOF\n";
    let response = vigil
        .client
        .post(&import)
        .header("Content-Type", "application/openmetrics-text; version=1.0.0")
        .body(open_metrics)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["exemplars"], 1);
    assert_eq!(
        vigil.rows("SELECT value, timestamp FROM om_total").await,
        vec![json!([2.5, "2023-11-14T22:13:20.500Z"])]
    );
    assert_eq!(
        vigil.rows("SELECT metric, series_labels['a'], labels['trace_id'], trace_id, value, timestamp FROM exemplars WHERE metric = 'om_total'").await,
        vec![json!(["om_total", "1", "abc", "abc", 1.0, "2023-11-14T22:13:20Z"])]
    );

    let tables_before = vigil.count("SELECT count(*) FROM information_schema.tables").await;
    for (body, fragment) in [
        ("fine 1\nalso_fine 2\nbroken{a=\"1\" 3\n", "line 3: expected ',' or '}'"),
        ("fine 1\nbad{a=\"\\x\"} 1\n", "line 2: invalid escape"),
        ("fine 1\nnot_a_number abc\n", "line 2: invalid value"),
        ("fine 1\n# EOF\nafter 1\n", "line 3: content after # EOF"),
    ] {
        let response = vigil
            .client
            .post(&import)
            .header("Content-Type", "application/openmetrics-text")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains(fragment), "{body:?}: {error}");
    }
    let response = vigil.client.post(format!("{import}?extra_label=bad")).body("x 1").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        vigil.count("SELECT count(*) FROM information_schema.tables").await,
        tables_before,
        "nothing half-stored"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
