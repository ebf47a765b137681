//! Dashboard render cost: `/` with 1,000 SLOs, one SLO's page, `/traces/{id}` with a
//! 1,000-span trace, the trace search, and log searches over 1,000,000 records.
//!
//! 100 services send 30 minutes of request and error counters (text import); 1,000 ratio SLOs
//! (10 per service) read them. Once every SLO has been evaluated, `/` and an SLO page are
//! fetched 20 times; a trace of 1,000 spans (a root, 20 children, 49 grandchildren each,
//! attributes and an event on every tenth) is sent over OTLP/HTTP and its page and the trace
//! search fetched 20 times; 1,000,000 log records (100 requests of 10,000, four services, one
//! in a thousand an ERROR saying "timeout") are sent over OTLP/HTTP and `/logs` searched by
//! text, by severity and by regex, beside the same text search in SQL (how logs were read
//! before `/logs`). Reports the median and best server time (request to last byte, loopback)
//! and the bytes of each page; a page the binary lacks (`VIGIL_BENCH_BIN` pointing at an
//! older build) is reported as such.
//!
//!     cargo bench --bench dashboard

mod common;

use std::time::Instant;

use common::VigilProcess;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const SERVICES: usize = 100;
const SLOS_PER_SERVICE: usize = 10;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// Times `url` and prints one line, or says the binary has no such page.
async fn report(client: &reqwest::Client, what: &str, url: &str, times: usize) {
    let status = client.get(url).send().await.unwrap().status();
    if !status.is_success() {
        println!("{what}: answered {status} (this build has no such page)");
        return;
    }
    let (median, best, bytes) = timed_get(client, url, times).await;
    println!("{what}: median {median:.1} ms, best {best:.1} ms, {:.0} KiB", bytes as f64 / 1024.0);
}

async fn timed_get(client: &reqwest::Client, url: &str, times: usize) -> (f64, f64, usize) {
    let mut samples = Vec::with_capacity(times);
    let mut bytes = 0;
    for _ in 0..times {
        let started = Instant::now();
        let response = client.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{url}: {}", response.status());
        bytes = response.bytes().await.unwrap().len();
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], bytes)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut slos = String::new();
    for s in 0..SERVICES {
        for k in 0..SLOS_PER_SERVICE {
            slos.push_str(&format!(
                "---\napiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: svc-{s}-slo-{k}, service: svc-{s}, labels: {{team: team-{}}}}}\nspec:\n  objective: {}\n  window: 1d\n  sli:\n    ratio:\n      bad: 'errors_total{{service=\"svc-{s}\"}}'\n      total: 'requests_total{{service=\"svc-{s}\"}}'\n",
                s % 7,
                [99.0, 99.5, 99.9, 99.95, 95.0][k % 5]
            ));
        }
    }
    std::fs::write(dir.path().join("slos.yaml"), slos).unwrap();
    let slo_path = dir.path().join("slos.yaml");
    let vigil = VigilProcess::start(
        &dir.path().join("data"),
        &["--slos", slo_path.to_str().unwrap(), "--evaluation-interval", "2s"],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", vigil.http);
    let client = reqwest::Client::new();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut text = String::new();
    for s in 0..SERVICES {
        for minute in 0..30i64 {
            let t = now - (30 - minute) * 60_000;
            text.push_str(&format!("requests_total{{service=\"svc-{s}\"}} {} {t}\n", minute * 600));
            text.push_str(&format!("errors_total{{service=\"svc-{s}\"}} {} {t}\n", minute * (s as i64 % 5)));
        }
    }
    let response = client.post(format!("{base}/api/v1/import/prometheus")).body(text).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());

    // Wait until every SLO has an SLI.
    let started = Instant::now();
    loop {
        let body: serde_json::Value =
            client.get(format!("{base}/api/v1/slos")).send().await.unwrap().json().await.unwrap();
        let evaluated = body["slos"].as_array().map_or(0, |a| a.iter().filter(|s| !s["sli"].is_null()).count());
        if evaluated == SERVICES * SLOS_PER_SERVICE {
            break;
        }
        assert!(started.elapsed().as_secs() < 600, "only {evaluated} SLOs evaluated");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (median, best, bytes) = timed_get(&client, &format!("{base}/"), 20).await;
    println!(
        "/ with {} SLOs: median {median:.1} ms, best {best:.1} ms, {:.0} KiB",
        SERVICES * SLOS_PER_SERVICE,
        bytes as f64 / 1024.0
    );
    let (median, best, bytes) = timed_get(&client, &format!("{base}/?service=svc-7"), 20).await;
    println!("/?service=svc-7 (10 rows): median {median:.1} ms, best {best:.1} ms, {:.0} KiB", bytes as f64 / 1024.0);
    report(&client, "/slos/{name} (one SLO page)", &format!("{base}/slos/svc-7-slo-3"), 20).await;
    // The same page once a correction excludes part of what it charts: the charts are
    // recomputed from stored data (a replay) instead of read from `slo_status`.
    let correction = format!(
        "{{\"apiVersion\": \"vigil/v1\", \"kind\": \"Correction\", \"metadata\": {{\"name\": \"bench\"}}, \"spec\": {{\"reason\": \"bench\", \"start\": \"{}\", \"duration\": \"5m\", \"scope\": {{\"slos\": [\"svc-7-slo-3\"]}}, \"effect\": [\"exclude\"]}}}}",
        chrono::DateTime::from_timestamp_millis(now - 15 * 60_000).unwrap().to_rfc3339()
    );
    let response = client.post(format!("{base}/api/v1/corrections")).body(correction).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap());
    report(&client, "/slos/{name} with a correction (charts replayed)", &format!("{base}/slos/svc-7-slo-3"), 20).await;
    let started = Instant::now();
    let response = client.post(format!("{base}/api/v1/slos/svc-7-slo-3/backtest")).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    println!("backtest of one SLO over its 1d window: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);

    let trace_id: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(17).wrapping_add(3)).collect();
    let span_id = |i: u32| -> Vec<u8> { (i as u64 + 1).to_be_bytes().to_vec() };
    let start = (now as u64) * 1_000_000;
    let mut spans = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let parent = match i {
            0 => Vec::new(),
            1..=20 => span_id(0),
            _ => span_id(1 + (i - 21) % 20),
        };
        let begin = start + u64::from(i) * 100_000;
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: span_id(i),
            parent_span_id: parent,
            name: format!("operation-{}", i % 37),
            kind: 2,
            start_time_unix_nano: begin,
            end_time_unix_nano: begin + if i == 0 { 200_000_000 } else { 1_000_000 + u64::from(i % 50) * 100_000 },
            attributes: vec![kv("http.route", &format!("/api/items/{}", i % 11)), kv("db.system", "postgresql")],
            events: if i % 10 == 0 {
                vec![Event {
                    time_unix_nano: begin + 1000,
                    name: "retry".into(),
                    attributes: vec![kv("attempt", "2")],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        });
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "bench-frontend")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let response = client
        .post(format!("http://127.0.0.1:{}/v1/traces", vigil.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    let (median, best, bytes) = timed_get(&client, &format!("{base}/traces/{hex}"), 20).await;
    println!(
        "/traces/{{id}} with 1000 spans: median {median:.1} ms, best {best:.1} ms, {:.0} KiB",
        bytes as f64 / 1024.0
    );
    report(&client, "/traces?service=bench-frontend (search)", &format!("{base}/traces?service=bench-frontend"), 20)
        .await;

    send_logs(&client, vigil.otlp_http, now).await;
    report(&client, "/logs?q=timeout (1M records, contains)", &format!("{base}/logs?q=timeout&range=1h"), 10).await;
    report(&client, "/logs?severity=error (1M records)", &format!("{base}/logs?severity=error&range=1h"), 10).await;
    report(
        &client,
        "/logs?q=time(out|d out) regex (1M records)",
        &format!("{base}/logs?q=time%28out%7Cd+out%29&match=regex&range=1h"),
        10,
    )
    .await;
    let sql = "SELECT timestamp, service, severity_text, body FROM logs WHERE strpos(body, 'timeout') > 0 ORDER BY timestamp DESC LIMIT 100";
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/sql"), &[("query", sql)]).unwrap();
    report(&client, "SQL text search over the same logs (/api/v1/sql)", url.as_str(), 10).await;
    vigil.stop();
}

/// 1,000,000 log records over the last 30 minutes, 100 OTLP/HTTP requests of 10,000.
async fn send_logs(client: &reqwest::Client, otlp_http: u16, now_ms: i64) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let started = Instant::now();
    for request in 0..100u64 {
        let resource_logs = (0..4)
            .map(|service| {
                let log_records = (0..2_500u64)
                    .map(|i| {
                        let n = request * 10_000 + service * 2_500 + i;
                        let at = (now_ms as u64 - 1_800_000 + n * 1_800_000 / 1_000_000) * 1_000_000;
                        let error = n % 1000 == 7;
                        LogRecord {
                            time_unix_nano: at,
                            observed_time_unix_nano: at,
                            severity_number: if error { 17 } else { 9 },
                            severity_text: if error { "ERROR" } else { "INFO" }.into(),
                            body: Some(AnyValue {
                                value: Some(Value::StringValue(if error {
                                    format!("upstream timeout after 3000 ms on request {n}")
                                } else {
                                    format!("served request {n} in {} ms", n % 97)
                                })),
                            }),
                            attributes: vec![kv("http.route", &format!("/api/items/{}", n % 11))],
                            ..Default::default()
                        }
                    })
                    .collect();
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", &format!("logger-{service}"))],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
                    ..Default::default()
                }
            })
            .collect();
        let body = ExportLogsServiceRequest { resource_logs }.encode_to_vec();
        let response = client
            .post(format!("http://127.0.0.1:{otlp_http}/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
    println!("1,000,000 log records sent in {:.1} s", started.elapsed().as_secs_f64());
}
