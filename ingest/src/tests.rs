//! Ingest into real storage: rows built here must pass storage's schema check.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use vigil_storage::{Storage, StorageOptions};

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", "checkout")], ..Default::default() })
}

async fn ingestor() -> (Ingestor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    (Ingestor::new(storage, Limits::default()), dir)
}

#[tokio::test]
async fn spans_with_events_and_links_are_stored_and_bad_ids_rejected_alone() {
    let (ingestor, _dir) = ingestor().await;
    let good = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        name: "POST /pay".into(),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000,
        attributes: vec![kv("http.route", "/pay")],
        events: vec![Event {
            time_unix_nano: 2_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", "2")],
            ..Default::default()
        }],
        links: vec![Link { trace_id: vec![9; 16], span_id: vec![8; 8], ..Default::default() }],
        status: Some(Status { code: 2, message: "card declined".into() }),
        ..Default::default()
    };
    let bad = Span { trace_id: vec![1; 3], span_id: vec![2; 8], name: "short id".into(), ..Default::default() };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans { spans: vec![good, bad], ..Default::default() }],
            ..Default::default()
        }],
    };
    let outcome = ingestor.otlp_traces(request).await.unwrap();
    assert_eq!((outcome.accepted, outcome.rejected), (1, 1));
    assert!(outcome.message.unwrap().contains("trace_id"));
    let ctx = datafusion::prelude::SessionContext::new();
    vigil_storage::catalog::register(ingestor.storage(), &ctx).unwrap();
    let batches = ctx
        .sql("SELECT service, kind, status, duration, parent_span_id, attributes['http.route'] AS route, events[1]['name'] AS event, links[1]['span_id'] AS link FROM spans")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(
        text.contains(
            "| checkout | server | error  | 4000     | 0303030303030303 | /pay  | retry | 0808080808080808 |"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn logs_are_stored_with_fallback_timestamps() {
    let (ingestor, _dir) = ingestor().await;
    let record = LogRecord {
        observed_time_unix_nano: 7_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue { value: Some(Value::StringValue("payment failed".into())) }),
        attributes: vec![kv("order", "42")],
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs { log_records: vec![record], ..Default::default() }],
            ..Default::default()
        }],
    };
    assert_eq!(ingestor.otlp_logs(request).await.unwrap().accepted, 1);
    let ctx = datafusion::prelude::SessionContext::new();
    vigil_storage::catalog::register(ingestor.storage(), &ctx).unwrap();
    let batches = ctx
        .sql("SELECT CAST(timestamp AS BIGINT) AS t, severity_text, body, service, attributes['order'] AS o FROM logs")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(text.contains("| 7000 | ERROR         | payment failed | checkout | 42 |"), "{text}");
}

#[tokio::test]
async fn a_malformed_text_body_stores_nothing() {
    let (ingestor, _dir) = ingestor().await;
    let error = ingestor.import_text(b"good 1\nbad{ 2\n", "", false, &[]).await.unwrap_err();
    assert_eq!(error.to_string(), "exposition text: line 2: expected a label name at column 6, found '2'");
    assert!(ingestor.storage().table_schema("good").is_none());
    let extra = vec![("env".to_string(), "prod".to_string())];
    let summary = ingestor.import_text(b"good{env=\"dev\"} 1 1700000000000\n", "", false, &extra).await.unwrap();
    assert_eq!(summary.samples, 1);
    assert!(ingestor.storage().table_schema("good").is_some());
}
