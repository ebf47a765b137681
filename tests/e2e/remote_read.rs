//! Remote read: the tests' own client (protobuf declared here, independent of Vigil's) reads
//! back exactly what was written, and a real Prometheus 2.42 with `remote_read` pointed at
//! Vigil answers PromQL over data only Vigil holds.

use prost::Message;
use serde_json::Value;

use crate::harness::{Vigil, free_port, require_program, wait_until};
use crate::prometheus::{PROMETHEUS, start_prometheus};
use crate::remote_write_client::{Sample, TimeSeries, WriteRequest, encode, now_ms, send, series};

#[derive(Clone, PartialEq, Message)]
struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    queries: Vec<Query>,
    #[prost(int32, repeated, tag = "2")]
    accepted_response_types: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct Query {
    #[prost(int64, tag = "1")]
    start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    matchers: Vec<LabelMatcher>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelMatcher {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    results: Vec<QueryResult>,
}

#[derive(Clone, PartialEq, Message)]
struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

fn matcher(kind: i32, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher { r#type: kind, name: name.into(), value: value.into() }
}

async fn read(vigil: &Vigil, request: &ReadRequest) -> (u16, Vec<u8>) {
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap();
    let response = vigil
        .client
        .post(vigil.url("/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

fn decode(body: &[u8]) -> ReadResponse {
    ReadResponse::decode(snap::raw::Decoder::new().decompress_vec(body).unwrap().as_slice()).unwrap()
}

fn labels_of(series: &TimeSeries) -> Vec<(String, String)> {
    series.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

#[tokio::test]
async fn remote_read_answers_the_samples_written() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let t = now_ms() - 60_000;
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("rr_requests_total", &[("job", "api"), ("code", "200")], &[(t, 1.0), (t + 15_000, 2.5)]),
            series("rr_requests_total", &[("job", "api"), ("code", "500")], &[(t, 7.0), (t + 15_000, stale)]),
            series("rr_requests_total", &[("job", "db"), ("code", "200")], &[(t, 3.0)]),
            series("rr_other", &[("job", "api")], &[(t, 9.0)]),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);

    let request = ReadRequest {
        queries: vec![
            Query {
                start_timestamp_ms: t - 1,
                end_timestamp_ms: t + 20_000,
                matchers: vec![matcher(0, "__name__", "rr_requests_total"), matcher(0, "job", "api")],
            },
            // A regex on the name, and a range that leaves out the second sample.
            Query {
                start_timestamp_ms: t,
                end_timestamp_ms: t + 1,
                matchers: vec![matcher(2, "__name__", "rr_.*"), matcher(1, "code", "500")],
            },
        ],
        accepted_response_types: vec![],
    };
    let (status, body) = read(&vigil, &request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = decode(&body);
    assert_eq!(response.results.len(), 2);
    let first = &response.results[0].timeseries;
    assert_eq!(first.len(), 2);
    let ok = first.iter().find(|s| labels_of(s).contains(&("code".into(), "200".into()))).unwrap();
    assert_eq!(
        labels_of(ok),
        [("__name__", "rr_requests_total"), ("code", "200"), ("job", "api")].map(|(k, v)| (k.into(), v.into()))
    );
    assert_eq!(ok.samples, vec![Sample { value: 1.0, timestamp: t }, Sample { value: 2.5, timestamp: t + 15_000 }]);
    let errors = first.iter().find(|s| labels_of(s).contains(&("code".into(), "500".into()))).unwrap();
    assert_eq!(errors.samples[1].value.to_bits(), stale.to_bits(), "stale markers are read back as they are");
    let mut second: Vec<(String, Vec<Sample>)> = response.results[1]
        .timeseries
        .iter()
        .map(|s| (s.labels.iter().find(|l| l.name == "__name__").unwrap().value.clone(), s.samples.clone()))
        .collect();
    second.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(second.iter().all(|(_, samples)| samples.len() == 1 && samples[0].timestamp == t));

    // Refused with a reason: matchers that match everything, a response type not served, junk.
    let everything = ReadRequest {
        queries: vec![Query { start_timestamp_ms: 0, end_timestamp_ms: t, matchers: vec![matcher(2, "job", ".*")] }],
        accepted_response_types: vec![],
    };
    assert_eq!(read(&vigil, &everything).await.0, 400);
    let chunks_only = ReadRequest { accepted_response_types: vec![1], ..request.clone() };
    assert_eq!(read(&vigil, &chunks_only).await.0, 400);
    // At most 64 queries a request: 64 answer, 65 are refused.
    let query = request.queries[0].clone();
    let many = |n: usize| ReadRequest { queries: vec![query.clone(); n], accepted_response_types: vec![] };
    let (status, body) = read(&vigil, &many(64)).await;
    assert_eq!((status, decode(&body).results.len()), (200, 64));
    assert_eq!(read(&vigil, &many(65)).await.0, 400);
    let junk = vigil.client.post(vigil.url("/api/v1/read")).body("not snappy").send().await.unwrap();
    assert_eq!(junk.status(), 400);
    let error: Value = junk.json().await.unwrap();
    assert!(error["hint"].as_str().unwrap().contains("ReadRequest"), "{error}");
}

/// A request that would decompress past the limit is refused before it is decompressed.
#[tokio::test]
async fn remote_read_requests_are_bounded_in_size() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--max-decompressed-size", "64KiB"]).await;
    let long = matcher(0, "__name__", &"x".repeat(70 * 1024));
    let big = ReadRequest {
        queries: vec![Query { start_timestamp_ms: 0, end_timestamp_ms: 1, matchers: vec![long] }],
        accepted_response_types: vec![],
    };
    assert_eq!(read(&vigil, &big).await.0, 413);
    let small = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 1,
            matchers: vec![matcher(0, "__name__", "x")],
        }],
        accepted_response_types: vec![],
    };
    let (status, body) = read(&vigil, &small).await;
    assert_eq!((status, decode(&body).results.len()), (200, 1));
}

/// Vigil as long-term storage behind a Prometheus that holds none of the data itself.
#[tokio::test]
async fn a_real_prometheus_reads_what_only_vigil_holds() {
    if !require_program(PROMETHEUS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let t = now_ms() - 120_000;
    let samples: Vec<(i64, f64)> = (0..8).map(|i| (t + i * 15_000, 10.0 * i as f64)).collect();
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("longterm_requests_total", &[("job", "api")], &samples),
            series("longterm_requests_total", &[("job", "db")], &samples[..4]),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("remote_read:\n  - url: {}\n    read_recent: true\n", vigil.url("/api/v1/read")),
    )
    .unwrap();
    let _prometheus = start_prometheus(dir.path(), port, &[]);
    let client = reqwest::Client::new();
    let (prometheus, own) = (format!("http://127.0.0.1:{port}"), format!("http://{}", vigil.addr));
    let at = format!("{:.3}", (t + 7 * 15_000) as f64 / 1000.0);
    // An instant query at `at`, of Prometheus or of Vigil; `None` until it answers.
    let ask = async |base: &str, query: &str| -> Option<Value> {
        let response =
            client.get(format!("{base}/api/v1/query")).query(&[("query", query), ("time", at.as_str())]).send().await;
        response.ok()?.json().await.ok()
    };
    let increase = "sum by (job) (increase(longterm_requests_total[2m]))";
    let answer = wait_until("Prometheus to answer from Vigil", 30, async || {
        ask(&prometheus, increase).await.filter(|b| b["data"]["result"].as_array().is_some_and(|r| !r.is_empty()))
    })
    .await;
    // The same question asked of Vigil itself gives the same answer, job by job.
    let by_job = |body: &Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["metric"]["job"].as_str().unwrap().to_string(), s["value"][1].as_str().unwrap().to_string()))
            .collect();
        out.sort();
        out
    };
    assert_eq!(by_job(&answer), by_job(&ask(&own, increase).await.unwrap()));
    assert_eq!(by_job(&answer).len(), 2, "{answer}");
    let raw = ask(&prometheus, "longterm_requests_total{job=\"db\"}[10m]").await.unwrap();
    assert_eq!(raw["data"]["result"][0]["values"].as_array().unwrap().len(), 4, "{raw}");
}
