//! OTLP ingest throughput over HTTP (protobuf) and gRPC, and how much of it is protobuf
//! decoding.
//!
//! Payloads: 200 metric requests of 1,000 points (500 gauges, 500 monotonic sums, 1,000
//! series with 4 attributes) and 200 trace requests of 500 spans (6 attributes, an event on
//! every tenth), sent by four concurrent clients. Reports points/s and spans/s, server CPU
//! seconds per million, and decode alone (this process, one core, same payloads) against the
//! server's full-ingest CPU, which gives the share of ingest spent outside decoding.
//!
//!     cargo bench --bench otlp

mod common;

use std::time::{Duration, Instant};

use common::{VigilProcess, cpu_seconds};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const REQUESTS: usize = 200;
const POINTS_PER_REQUEST: usize = 1000;
const SPANS_PER_REQUEST: usize = 500;
const CLIENTS: usize = 4;

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", "bench"), kv("service.instance.id", "bench-1"), kv("host.name", "box")],
        ..Default::default()
    })
}

fn metric_requests() -> Vec<ExportMetricsServiceRequest> {
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        - 3_600_000_000_000;
    (0..REQUESTS)
        .map(|r| {
            let time = start + r as u64 * 15_000_000_000;
            let point = |i: usize, value: f64| NumberDataPoint {
                time_unix_nano: time,
                start_time_unix_nano: start,
                value: Some(Number::AsDouble(value)),
                attributes: vec![
                    kv("http.route", format!("/route/{}", i % 50)),
                    kv("http.method", ["GET", "POST"][i % 2]),
                    kv("code", ["200", "500", "404"][i % 3]),
                    kv("pod", format!("pod-{}", i / 150)),
                ],
                ..Default::default()
            };
            let half = POINTS_PER_REQUEST / 2;
            let metrics = vec![
                Metric {
                    name: "bench.queue.depth".into(),
                    unit: "1".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: (0..half).map(|i| point(i, (i * r) as f64 % 97.0)).collect(),
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "bench.requests".into(),
                    unit: "1".into(),
                    data: Some(Data::Sum(Sum {
                        aggregation_temporality: 2,
                        is_monotonic: true,
                        data_points: (0..half).map(|i| point(i, (r * 10 + i) as f64)).collect(),
                    })),
                    ..Default::default()
                },
            ];
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: resource(),
                    scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                    ..Default::default()
                }],
            }
        })
        .collect()
}

fn trace_requests() -> Vec<ExportTraceServiceRequest> {
    let start =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 - 600_000_000_000;
    (0..REQUESTS)
        .map(|r| {
            let spans = (0..SPANS_PER_REQUEST)
                .map(|i| {
                    let n = (r * SPANS_PER_REQUEST + i) as u64;
                    let mut trace_id = vec![0u8; 16];
                    trace_id[..8].copy_from_slice(&(n / 10 + 1).to_be_bytes());
                    Span {
                        trace_id,
                        span_id: (n + 1).to_be_bytes().to_vec(),
                        parent_span_id: if i % 10 == 0 {
                            vec![]
                        } else {
                            (n - (i as u64 % 10) + 1).to_be_bytes().to_vec()
                        },
                        name: format!("GET /route/{}", i % 50),
                        kind: 2,
                        start_time_unix_nano: start + n * 1_000_000,
                        end_time_unix_nano: start + n * 1_000_000 + 250_000,
                        attributes: vec![
                            kv("http.request.method", "GET"),
                            kv("http.route", format!("/route/{}", i % 50)),
                            kv("http.response.status_code", "200"),
                            kv("server.address", "api.internal"),
                            kv("user_agent.original", "bench/1.0"),
                            kv("net.peer.ip", "10.0.0.1"),
                        ],
                        events: if i % 10 == 0 {
                            vec![Event {
                                time_unix_nano: start + n * 1_000_000,
                                name: "cache miss".into(),
                                ..Default::default()
                            }]
                        } else {
                            vec![]
                        },
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource(),
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            }
        })
        .collect()
}

/// Sends every body with `CLIENTS` concurrent workers; returns wall seconds.
async fn over_http(url: String, bodies: Vec<Vec<u8>>) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let chunks: Vec<Vec<Vec<u8>>> =
        (0..CLIENTS).map(|c| bodies.iter().skip(c).step_by(CLIENTS).cloned().collect()).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for body in chunk {
                    let response = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

async fn metrics_over_grpc(endpoint: String, requests: Vec<ExportMetricsServiceRequest>) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let chunk: Vec<_> = requests.iter().skip(c).step_by(CLIENTS).cloned().collect();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut client =
                    MetricsServiceClient::connect(endpoint).await.unwrap().max_decoding_message_size(64 << 20);
                for request in chunk {
                    client.export(request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

async fn traces_over_grpc(endpoint: String, requests: Vec<ExportTraceServiceRequest>) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let chunk: Vec<_> = requests.iter().skip(c).step_by(CLIENTS).cloned().collect();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
                for request in chunk {
                    client.export(request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// CPU seconds to decode every body once, in this process.
fn decode_seconds<T: Message + Default>(bodies: &[Vec<u8>]) -> f64 {
    let started = Instant::now();
    for _ in 0..3 {
        for body in bodies {
            std::hint::black_box(T::decode(body.as_slice()).unwrap());
        }
    }
    started.elapsed().as_secs_f64() / 3.0
}

#[tokio::main]
async fn main() {
    let metrics = metric_requests();
    let traces = trace_requests();
    let metric_bodies: Vec<Vec<u8>> = metrics.iter().map(Message::encode_to_vec).collect();
    let trace_bodies: Vec<Vec<u8>> = traces.iter().map(Message::encode_to_vec).collect();
    let points = (REQUESTS * POINTS_PER_REQUEST) as f64;
    let spans = (REQUESTS * SPANS_PER_REQUEST) as f64;
    println!(
        "payloads: {REQUESTS} metric requests ({:.1} MiB), {REQUESTS} trace requests ({:.1} MiB)",
        metric_bodies.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64,
        trace_bodies.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64
    );
    let work = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for transport in ["http", "grpc"] {
        let vigil = VigilProcess::start(&work.path().join(transport), &["--wal-fsync", "always"]).await;
        let pid = vigil.pid();
        let cpu = cpu_seconds(pid);
        let seconds = match transport {
            "http" => {
                over_http(format!("http://127.0.0.1:{}/v1/metrics", vigil.otlp_http), metric_bodies.clone()).await
            }
            _ => metrics_over_grpc(format!("http://127.0.0.1:{}", vigil.otlp_grpc), metrics.clone()).await,
        };
        let metrics_cpu = cpu_seconds(pid) - cpu;
        let cpu = cpu_seconds(pid);
        let span_seconds = match transport {
            "http" => over_http(format!("http://127.0.0.1:{}/v1/traces", vigil.otlp_http), trace_bodies.clone()).await,
            _ => traces_over_grpc(format!("http://127.0.0.1:{}", vigil.otlp_grpc), traces.clone()).await,
        };
        let traces_cpu = cpu_seconds(pid) - cpu;
        tokio::time::sleep(Duration::from_millis(200)).await;
        vigil.stop();
        println!(
            "{transport:<5} metrics {:>9.0} points/s  {:>6.2} CPU s/M points | traces {:>8.0} spans/s  {:>6.2} CPU s/M spans",
            points / seconds,
            metrics_cpu / (points / 1e6),
            spans / span_seconds,
            traces_cpu / (spans / 1e6)
        );
        results.push((metrics_cpu, traces_cpu));
    }
    let decode_metrics = decode_seconds::<ExportMetricsServiceRequest>(&metric_bodies);
    let decode_traces = decode_seconds::<ExportTraceServiceRequest>(&trace_bodies);
    let (http_metrics_cpu, http_traces_cpu) = results[0];
    println!(
        "decode alone: {:.2} CPU s/M points, {:.2} CPU s/M spans -> share of OTLP/HTTP ingest outside protobuf decoding: metrics {:.0} %, traces {:.0} %",
        decode_metrics / (points / 1e6),
        decode_traces / (spans / 1e6),
        100.0 * (1.0 - decode_metrics / http_metrics_cpu),
        100.0 * (1.0 - decode_traces / http_traces_cpu)
    );
}
