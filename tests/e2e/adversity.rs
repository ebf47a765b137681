//! Adversity: what an attacker, or a bad day in production, sends. Every single request
//! here once crashed Vigil, lost acknowledged data or stalled everyone (issue 17); each must
//! now leave the same process up (`/-/ready` 200), answer 4xx/422/503 with its limit named,
//! and keep every acknowledged sample across a restart. Limits are tested on both sides.
//! Nothing here asserts wall-clock time; latencies are compared with each other and printed.

use std::io::Write as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{VIGIL, Vigil, wait_until};
use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};

/// The same process still answers `/-/ready`.
async fn still_up(vigil: &Vigil, pid: u32) {
    assert_eq!(vigil.pid(), pid);
    let ready = vigil.client.get(vigil.url("/-/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "not ready; log:\n{}", vigil.log_text());
}

/// A PromQL query (form POST, as Grafana sends long ones): status and body.
async fn promql(vigil: &Vigil, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = vigil.client.post(vigil.url(path)).form(form).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} {form:?} -> {status}: not JSON: {text}")))
}

async fn sql(vigil: &Vigil, query: &str) -> (StatusCode, Value) {
    let response = vigil.client.post(vigil.url("/api/v1/sql")).json(&json!({"query": query})).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{query:.80} -> {status}: not JSON: {text}")))
}

fn chain(term: &str, terms: usize) -> String {
    vec![term; terms].join("+")
}

fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "(".repeat(depth), ")".repeat(depth))
}

#[tokio::test]
async fn hostile_queries_are_refused_with_their_limit_and_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--query-max-depth",
        "24",
        "--query-max-result-rows",
        "1000",
        "--query-max-samples",
        "100000",
        "--query-max-length",
        "8KiB",
    ];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let pid = vigil.pid();
    let t0 = now_ms() - 600_000;
    let points: Vec<(i64, f64)> = (0..60).map(|i| (t0 + i * 10_000, i as f64)).collect();
    let (status, _) = send(
        &vigil.client,
        &vigil.url("/api/v1/write"),
        encode(&WriteRequest { timeseries: vec![series("canary", &[("job", "x")], &points)] }),
    )
    .await;
    assert_eq!(status, 204);
    let query = |q: String| [("query", q)];

    // PromQL depth: 24 levels pass, 25 do not; far deeper ones are refused before parsing.
    for (text, ok) in [
        (chain("canary", 24), true),
        (chain("canary", 25), false),
        (nested(23, "canary"), true),
        (nested(24, "canary"), false),
        (nested(400, "canary"), false),
        (chain("1", 10_000), false),
        (chain("canary", 2_000), false),
    ] {
        let form = query(text.clone());
        let (status, body) = promql(&vigil, "/api/v1/query", &[("query", form[0].1.as_str())]).await;
        if ok {
            assert_eq!(status, StatusCode::OK, "{:.60}: {body}", text);
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{:.60}: {body}", text);
            assert_eq!(body["errorType"], "bad_data");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains("query.max_depth") || error.contains("query.max_length"), "{error}");
        }
    }
    // SQL depth, on both sides.
    let (status, body) = sql(&vigil, &format!("SELECT {}", chain("1", 23))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sql(&vigil, &format!("SELECT {}", chain("1", 24))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("query.max_depth") && body["hint"].is_string(), "{body}");
    let (status, _) = sql(&vigil, &format!("SELECT {}", chain("1", 2_000))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Length, on both sides (8 KiB).
    let padded = |len: usize| format!("SELECT 1 -- {}", "x".repeat(len - 12));
    assert_eq!(sql(&vigil, &padded(8192)).await.0, StatusCode::OK);
    let (status, body) = sql(&vigil, &padded(8193)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("query.max_length"), "{body}");
    // Recursion without a bound is refused.
    let (status, body) =
        sql(&vigil, "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t) SELECT count(*) FROM t").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("recursive"), "{body}");

    // Results: 1000 rows pass, 1001 do not, 100 M never materialise.
    assert_eq!(sql(&vigil, "SELECT * FROM range(1000)").await.0, StatusCode::OK);
    for query in ["SELECT * FROM range(1001)", "SELECT * FROM range(100000000)"] {
        let (status, body) = sql(&vigil, query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains("query.max_result_rows"), "{body}");
    }

    // Ranges and steps: absurd times are refused, not computed.
    let now = (now_ms() / 1000).to_string();
    for (start, end, step) in
        [("-1e300", "1e300", "1"), ("0", "1e300", "1"), ("NaN", "1", "1"), (now.as_str(), now.as_str(), "0")]
    {
        let (status, body) = promql(
            &vigil,
            "/api/v1/query_range",
            &[("query", "vector(1)"), ("start", start), ("end", end), ("step", step)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{start}..{end} step {step}: {body}");
    }
    // Subquery steps and samples, on both sides of query.max_samples (100 000).
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "max_over_time(vector(1)[30d:1ms])")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("query.max_samples"), "{body}");
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "max_over_time(vector(1)[1d:1s])")]).await;
    assert_eq!(status, StatusCode::OK, "86 400 steps fit: {body}");
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "count_over_time(vector(1)[2d:1s])")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "172 800 steps do not: {body}");

    still_up(&vigil, pid).await;
    let metrics = vigil.own_metrics().await;
    for limit in ["query_shape", "result_rows"] {
        assert!(metrics.contains(&format!("vigil_limit_refusals_total{{limit=\"{limit}\"}}")), "{limit}:\n{metrics}");
    }
}

fn otlp_gauge(name: &str, attributes: Value, time_ns: i64) -> Value {
    json!({"name": name, "gauge": {"dataPoints": [{"asDouble": 1.0, "timeUnixNano": time_ns.to_string(), "attributes": attributes}]}})
}

async fn otlp_json(vigil: &Vigil, metrics: Vec<Value>) -> Value {
    let body = json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "names"}}]}, "scopeMetrics": [{"metrics": metrics}]}]});
    let response = vigil
        .client
        .post(format!("{}/v1/metrics", vigil.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn names_and_timestamps_storage_cannot_hold_never_lose_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--flush-interval", "1s", "--max-metric-name-length", "400"];
    let mut vigil = Vigil::start(&data, &args).await;
    let pid = vigil.pid();
    let write = vigil.url("/api/v1/write");
    let t0 = now_ms() - 600_000;

    // One sample at the edge of time beside 1 000 ordinary ones: the edge one is refused
    // (400, naming it), the 1 000 are stored and stay stored.
    let mut points: Vec<(i64, f64)> = (0..1000).map(|i| (t0 + i * 100, i as f64)).collect();
    points.push((-9_223_372_036_854, -1.0));
    let (status, body) = send(
        &vigil.client,
        &write,
        encode(&WriteRequest { timeseries: vec![series("edge_total", &[("job", "a")], &points)] }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1 samples refused") && body.contains("outside the accepted range"), "{body}");
    // On both sides of the accepted range (max_future 1h): just inside is stored.
    let future = now_ms() + 3_500_000;
    let (status, body) = send(
        &vigil.client,
        &write,
        encode(&WriteRequest { timeseries: vec![series("edge_total", &[("job", "b")], &[(future, 1.0)])] }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = send(
        &vigil.client,
        &write,
        encode(&WriteRequest {
            timeseries: vec![series("edge_total", &[("job", "c")], &[(now_ms() + 3_700_000, 1.0)])],
        }),
    )
    .await;
    assert_eq!(status, 400);

    // A 300-character name is stored (its files get a bounded name), and flushing goes on
    // for everyone; a name past the limit is refused at intake.
    let long = format!("m{}", "x".repeat(299));
    let (status, body) = send(
        &vigil.client,
        &write,
        encode(&WriteRequest { timeseries: vec![series(&long, &[("job", "a")], &[(t0, 1.0)])] }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let too_long = format!("m{}", "x".repeat(400));
    let (status, body) = send(
        &vigil.client,
        &write,
        encode(&WriteRequest { timeseries: vec![series(&too_long, &[("job", "a")], &[(t0, 1.0)])] }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("above the limit of 400"), "{body}");

    // OTLP names that would poison queries: refused or kept apart, one to one.
    let now_ns = (now_ms() - 60_000) * 1_000_000;
    let outcome = otlp_json(
        &vigil,
        vec![
            otlp_gauge("///", json!([]), now_ns),
            otlp_gauge("\u{0}", json!([]), now_ns),
            otlp_gauge("ts_probe", json!([{"key": "__ts__", "value": {"stringValue": "x"}}, {"key": "__value__", "value": {"stringValue": "y"}}]), now_ns),
            otlp_gauge("stamp_probe", json!([{"key": "timestamp", "value": {"stringValue": "a"}}]), now_ns),
            otlp_gauge("stamp_probe", json!([{"key": "__timestamp", "value": {"stringValue": "a"}}]), now_ns),
            otlp_gauge("spans", json!([]), now_ns),
            otlp_gauge("spans_metric", json!([]), now_ns),
        ],
    )
    .await;
    assert_eq!(outcome["partialSuccess"]["rejectedDataPoints"].to_string().trim_matches('"'), "2", "{outcome}");
    assert!(outcome["partialSuccess"]["errorMessage"].as_str().unwrap().contains("invalid metric name"), "{outcome}");
    // Flushed, then every query that once failed over such names answers.
    wait_until("a flush", 30, async || (vigil.count("SELECT count(*) FROM stamp_probe").await == 2).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "count({__name__=~\".+\"})")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "stamp_probe")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"].as_array().unwrap().len(), 2, "two series, not merged: {body}");
    for name in ["spans", "spans_metric"] {
        let (_, body) = promql(&vigil, "/api/v1/query", &[("query", name)]).await;
        let result = body["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{name}: {body}");
        assert_eq!(result[0]["metric"]["__name__"], name);
    }
    let (_, body) = promql(&vigil, "/api/v1/query", &[("query", "ts_probe")]).await;
    assert_eq!(body["data"]["result"][0]["metric"]["__ts__"], "x", "{body}");
    for path in [
        "/api/v1/label/__name__/values",
        "/api/v1/label/job/values",
        "/api/v1/series?match[]={job=~\".+\"}",
        "/api/v1/labels",
    ] {
        let response = vigil.client.get(vigil.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}: {}", response.text().await.unwrap());
    }
    still_up(&vigil, pid).await;
    let metrics = vigil.own_metrics().await;
    assert!(!metrics.contains("vigil_storage_flush_failures_total 1"), "a flush failed:\n{metrics}");

    // Everything acknowledged is there after a restart.
    vigil.terminate();
    let vigil = Vigil::start(&data, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM edge_total").await, 1001);
    assert_eq!(vigil.count(&format!("SELECT count(*) FROM {long}")).await, 1);
    assert_eq!(vigil.count("SELECT count(*) FROM spans_metric").await, 1);
    assert_eq!(vigil.count("SELECT count(*) FROM spans_metric_metric").await, 1);
}

#[tokio::test]
async fn cardinality_limits_refuse_with_the_limit_named_and_the_status_shows_who() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-metric-names",
        "40",
        "--max-series",
        "300",
        "--max-new-series-per-request",
        "200",
        "--flush-interval",
        "1s",
    ];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let write = vigil.url("/api/v1/write");
    let t0 = now_ms() - 60_000;
    // 100 names in one request: 40 are stored, the rest refused with the limit named.
    let names: Vec<_> = (0..100).map(|i| series(&format!("exploding_{i:03}"), &[("job", "x")], &[(t0, 1.0)])).collect();
    let (status, body) = send(&vigil.client, &write, encode(&WriteRequest { timeseries: names })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limits.max_metric_names"), "{body}");
    let stored = vigil.rows("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'exploding_%'").await;
    assert_eq!(stored[0][0], 40);
    // New series of a known name: up to 200 per request, 300 in all.
    let wide = |from: usize, to: usize| {
        (from..to).map(|i| series("exploding_000", &[("i", &i.to_string())], &[(t0, 1.0)])).collect::<Vec<_>>()
    };
    let (status, body) = send(&vigil.client, &write, encode(&WriteRequest { timeseries: wide(0, 201) })).await;
    assert_eq!(status, 400);
    assert!(body.contains("limits.max_new_series_per_request"), "{body}");
    let (status, body) = send(&vigil.client, &write, encode(&WriteRequest { timeseries: wide(200, 400) })).await;
    assert_eq!(status, 400);
    assert!(body.contains("limits.max_series"), "{body}");
    // Known series always pass.
    let (status, body) = send(&vigil.client, &write, encode(&WriteRequest { timeseries: wide(0, 50) })).await;
    assert_eq!(status, 204, "{body}");

    let status: Value =
        vigil.client.get(vigil.url("/api/v1/status/tsdb?limit=3")).send().await.unwrap().json().await.unwrap();
    let data = &status["data"];
    assert_eq!(data["seriesCountByMetricName"][0]["name"], "exploding_000", "{status}");
    assert_eq!(data["seriesCountByMetricName"].as_array().unwrap().len(), 3);
    assert_eq!(data["headStats"]["numSeries"], 300);
    assert_eq!(data["vigil"]["metricNames"], json!({"value": 40, "limit": 40}));
    assert!(data["labelValueCountByLabelName"].as_array().unwrap().iter().any(|l| l["name"] == "i"), "{status}");
    let metrics = vigil.own_metrics().await;
    for limit in ["metric_names", "series", "new_series_per_request"] {
        assert!(metrics.contains(&format!("vigil_limit_refusals_total{{limit=\"{limit}\"}}")), "{limit}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_selector_without_a_metric_name_answers_over_two_thousand_names() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--flush-interval", "2s", "--query-timeout", "60s"]).await;
    let write = vigil.url("/api/v1/write");
    let t0 = now_ms() - 300_000;
    for batch in 0..4 {
        let timeseries = (batch * 500..(batch + 1) * 500)
            .map(|i| {
                let job = if i % 100 == 0 { "needle" } else { "hay" };
                series(
                    &format!("name_{i:04}"),
                    &[("job", job), ("instance", "i")],
                    &[(t0, i as f64), (t0 + 60_000, i as f64)],
                )
            })
            .collect();
        let (status, body) = send(&vigil.client, &write, encode(&WriteRequest { timeseries })).await;
        assert_eq!(status, 204, "{body}");
    }
    // Flushed: 2 000 tables of segments.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started = Instant::now();
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "{job=\"needle\"}")]).await;
    let needle = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"].as_array().unwrap().len(), 20, "{body}");
    let started = Instant::now();
    let (status, body) = promql(&vigil, "/api/v1/query", &[("query", "count({job=~\".+\"})")]).await;
    let all = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "2000", "{body}");
    let started = Instant::now();
    let response = vigil.client.get(vigil.url("/api/v1/series?match[]={job=\"needle\"}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let series_api = started.elapsed();
    println!("2 000 names: {{job=\"needle\"}} {needle:?}, count over all {all:?}, /api/v1/series {series_api:?}");
}

#[tokio::test]
async fn a_disordered_request_does_not_stall_other_writers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, &[]).await;
    let write = vigil.url("/api/v1/write");
    let t0 = now_ms() - 3_000_000;
    // 200 000 samples of one series, newest first.
    let descending: Vec<(i64, f64)> = (0..200_000).rev().map(|i| (t0 + i * 10, i as f64)).collect();
    let body = encode(&WriteRequest { timeseries: vec![series("descending", &[("job", "d")], &descending)] });
    let small =
        |i: i64| encode(&WriteRequest { timeseries: vec![series("bystander", &[("job", "b")], &[(t0 + i, 1.0)])] });

    // Bystander latency alone, then while the big request is ingested.
    let mut alone = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        assert_eq!(send(&vigil.client, &write, small(i)).await.0, 204);
        alone.push(started.elapsed());
    }
    let big = {
        let (client, write) = (vigil.client.clone(), write.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, body) = send(&client, &write, body).await;
            (status, body, started.elapsed())
        })
    };
    let mut during = Vec::new();
    let mut i = 100;
    while !big.is_finished() {
        let started = Instant::now();
        assert_eq!(send(&vigil.client, &write, small(i)).await.0, 204);
        during.push(started.elapsed());
        i += 1;
    }
    let (status, body, big_took) = big.await.unwrap();
    assert_eq!(status, 204, "{body}");
    let worst = during.iter().max().copied().unwrap_or_default();
    let typical = alone.iter().max().copied().unwrap_or_default();
    println!(
        "200 000 descending samples took {big_took:?}; bystander writes: {} during it, worst {worst:?} (alone, worst {typical:?})",
        during.len()
    );
    // No head-of-line blocking: bystanders keep completing while the big request is ingested
    // (hundreds here); behind it, the first one sent would wait for it and only a couple could
    // finish in its time. Counted, not timed: one bystander's latency on a loaded machine also
    // waits for fsyncs and the scheduler (the big request's WAL entry shares a group commit).
    assert!(
        during.len() >= 10,
        "only {} bystander writes completed during the big request ({big_took:?}): {during:?}",
        during.len()
    );
    assert_eq!(vigil.count("SELECT count(*) FROM descending").await, 200_000);
    // Replay of the same data on restart (no flush happened).
    vigil.kill9();
    let started = Instant::now();
    let vigil = Vigil::start(&data, &[]).await;
    println!("restart with 200 000 descending samples in the WAL: ready in {:?}", started.elapsed());
    assert_eq!(vigil.count("SELECT count(*) FROM descending").await, 200_000);
}

/// A raw connection from `source` (127.0.0.x) to the API port.
async fn connect_from(source: &str, vigil: &Vigil) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(vigil.addr).await
}

/// True when the peer has closed the connection (a read sees EOF or a reset).
async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn connections_are_bounded_in_number_and_time() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-connections-per-client",
        "40",
        "--header-read-timeout",
        "2s",
        "--body-read-timeout",
        "3s",
        "--idle-timeout",
        "3s",
        "--max-concurrent-ingest",
        "4",
    ];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let pid = vigil.pid();
    // Another address is another client: its caps are its own.
    let other =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();

    // 300 connections that never send a byte: 40 are held, the rest closed at once, and the
    // held ones go after the header timeout; another client is served throughout.
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = connect_from("127.0.0.1", &vigil).await {
            silent.push(stream);
        }
    }
    assert_eq!(other.get(vigil.url("/-/ready")).send().await.unwrap().status(), StatusCode::OK);
    let mut refused = 0;
    for stream in silent.iter_mut().skip(40) {
        if closed(stream, Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert!(refused >= 250, "only {refused} of the connections past the cap were closed at once");
    for stream in silent.iter_mut().take(40) {
        assert!(closed(stream, Duration::from_secs(10)).await, "a silent connection outlived the header timeout");
    }
    drop(silent);

    // Bodies that never finish: cut off with 408 and never holding an ingest slot.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut stream = connect_from("127.0.0.3", &vigil).await.unwrap();
        let head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: {}\r\nContent-Encoding: snappy\r\nContent-Length: 100000\r\n\r\nabc",
            vigil.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = now_ms() - 60_000;
    for i in 0..8 {
        let body = encode(&WriteRequest { timeseries: vec![series("real_sender", &[("job", "r")], &[(t0 + i, 1.0)])] });
        let response = other
            .post(vigil.url("/api/v1/write"))
            .header("content-encoding", "snappy")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "a real sender was shed while slow bodies trickled");
    }
    for mut stream in slow {
        use tokio::io::AsyncReadExt;
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("limits.body_read_timeout"), "{answer}");
    }
    // A keep-alive connection with nothing to do is closed after the idle timeout.
    let mut idle = connect_from("127.0.0.4", &vigil).await.unwrap();
    idle.write_all(format!("GET /-/healthy HTTP/1.1\r\nHost: {}\r\n\r\n", vigil.addr).as_bytes()).await.unwrap();
    assert!(closed(&mut idle, Duration::from_secs(10)).await, "an idle keep-alive connection stayed open");

    still_up(&vigil, pid).await;
    let metrics = vigil.own_metrics().await;
    for needle in [
        "vigil_http_connections_refused_total{limit=\"max_connections_per_client\"}",
        "vigil_limit_refusals_total{limit=\"body_read_time\"}",
        "vigil_process_open_fds",
        "vigil_process_max_fds",
    ] {
        assert!(metrics.contains(needle), "{needle}:\n{metrics}");
    }
}

/// The segment files holding rows of a table (its own or shared), newest first, as the
/// node's manifests name them.
fn segment_files(data: &std::path::Path, table: &str) -> Vec<std::path::PathBuf> {
    let store = data.join("segments");
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let mut files: Vec<(u64, String)> = Vec::new();
    for root in walk(&store.join("nodes")).into_iter().filter(|p| p.ends_with("manifest.json")) {
        for partition in read(&root)["partitions"].as_array().unwrap() {
            for segment in read(&store.join(partition["path"].as_str().unwrap()))["segments"].as_array().unwrap() {
                if segment["table"] == table {
                    files.push((segment["id"].as_u64().unwrap(), segment["path"].as_str().unwrap().to_string()));
                }
            }
        }
    }
    files.sort();
    files.dedup();
    files.into_iter().rev().map(|(_, path)| store.join(path)).collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn vigil_store(action: &str, data: &std::path::Path) -> (bool, String) {
    let output = std::process::Command::new(VIGIL).args(["store", action, "--data-dir"]).arg(data).output().unwrap();
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[tokio::test]
async fn damaged_files_are_contained_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--flush-interval", "1s"];
    let mut vigil = Vigil::start(&data, &args).await;
    let write = vigil.url("/api/v1/write");
    let t0 = now_ms() - 600_000;
    // kept_total three hours earlier: another time partition, so its own segment files and
    // partition manifest (metric tables of one partition share them).
    let kept_t0 = t0 - 3 * 3_600_000;
    let kept_partition = kept_t0 * 1_000_000 / 7_200_000_000_000 * 7_200_000_000_000;
    for (metric, count, start) in [("damaged_total", 100, t0), ("kept_total", 10, kept_t0)] {
        for part in 0..2 {
            let points: Vec<(i64, f64)> = (0..count).map(|i| (start + part * 100_000 + i * 10, 1.0)).collect();
            assert_eq!(
                send(
                    &vigil.client,
                    &write,
                    encode(&WriteRequest { timeseries: vec![series(metric, &[("job", "a")], &points)] })
                )
                .await
                .0,
                204
            );
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    vigil.terminate();
    // Truncate the newest segment of one table.
    let newest = segment_files(&data, "damaged_total").remove(0);
    let length = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(length / 2).unwrap();
    let (ok, report) = vigil_store("check", &data);
    assert!(!ok && report.contains("problem: segment"), "{report}");

    let mut vigil = Vigil::start(&data, &args).await;
    // The first read finds it, moves it aside and answers from the rest.
    let (status, body) = sql(&vigil, "SELECT sum(value) FROM damaged_total").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0][0], 100.0, "one of two segments lost: {body}");
    assert_eq!(vigil.count("SELECT count(*) FROM damaged_total").await, 100, "the manifest no longer counts it");
    assert_eq!(vigil.count("SELECT count(*) FROM kept_total").await, 20);
    assert!(vigil.log_text().contains("segment unreadable: moved aside"), "{}", vigil.log_text());
    assert!(vigil.own_metrics().await.contains("vigil_storage_segments_quarantined_total 1"));
    vigil.terminate();

    // A lost partition manifest: the node starts, serves the rest, says what is missing.
    let node = std::fs::read_to_string(data.join("node_id")).unwrap().trim().to_string();
    std::fs::remove_dir_all(data.join("segments/nodes").join(&node).join(format!("partitions/{kept_partition}")))
        .unwrap();
    let vigil = Vigil::start(&data, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM damaged_total").await, 100);
    assert!(vigil.log_text().contains("partition manifest unreadable"), "{}", vigil.log_text());
    let metrics = vigil.own_metrics().await;
    let damage: Vec<&str> = metrics.lines().filter(|l| l.contains("damaged")).collect();
    assert!(metrics.contains("vigil_storage_damaged_partitions 1"), "{damage:?}\n{}", vigil.log_text());
    // Repair needs the server stopped.
    let (ok, report) = vigil_store("repair", &data);
    assert!(!ok && report.contains("in use by another Vigil"), "{report}");
    let mut vigil = vigil;
    vigil.terminate();
    let (ok, report) = vigil_store("repair", &data);
    assert!(ok && report.contains(&format!("repaired: partition at {kept_partition}")), "{report}");
    let (ok, report) = vigil_store("check", &data);
    assert!(ok, "{report}");

    // A damaged root: served from the partition manifests, nothing overwritten, then repaired.
    let root = data.join("segments/nodes").join(&node).join("manifest.json");
    std::fs::write(&root, b"{\"version\": 2, \"node\":").unwrap();
    let mut vigil = Vigil::start(&data, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM kept_total").await, 20, "rebuilt from its segment files");
    assert_eq!(vigil.count("SELECT count(*) FROM damaged_total").await, 100);
    let ok = send(
        &vigil.client,
        &vigil.url("/api/v1/write"),
        encode(&WriteRequest { timeseries: vec![series("after_damage_total", &[("job", "a")], &[(t0, 1.0)])] }),
    )
    .await;
    assert_eq!(ok.0, 204);
    vigil.terminate();
    let (ok, report) = vigil_store("repair", &data);
    assert!(ok && report.contains("repaired: root manifest"), "{report}");
    let vigil = Vigil::start(&data, &args).await;
    assert_eq!(vigil.count("SELECT count(*) FROM after_damage_total").await, 1, "the WAL kept the write");
    assert_eq!(vigil.count("SELECT count(*) FROM kept_total").await, 20);
}

#[tokio::test]
async fn login_forms_and_tokens_hold_at_their_edges() {
    const READ: &str = "read-token-4be1";
    const ADMIN: &str = "admin-token-9c2d";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let mut file = std::fs::File::create(&tokens).unwrap();
    writeln!(file, "# one per line\ngrafana:read:{READ}\nops:admin:{ADMIN}").unwrap();
    let args = ["--auth-tokens-file", tokens.to_str().unwrap(), "--max-auth-failures-per-minute", "5"];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Tokens come from the file (and never from the command line).
    assert_eq!(browser.get(vigil.url("/api/v1/slos")).bearer_auth(READ).send().await.unwrap().status(), StatusCode::OK);
    // Login CSRF: another site cannot log a browser in.
    let cross = browser
        .post(vigil.url("/-/login"))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", READ), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(cross.headers().get("set-cookie").is_none());
    // `next` stays on this server, whatever a browser would strip from it.
    for next in ["/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example"] {
        let response = browser
            .post(vigil.url("/-/login"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", READ), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["location"], "/", "{next:?}");
    }
    let response =
        browser.post(vigil.url("/-/login")).form(&[("token", ADMIN), ("next", "/alerts")]).send().await.unwrap();
    assert_eq!(response.headers()["location"], "/alerts");
    let session = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    // The silence form's token is bound to the session: the cookie's own value, or another
    // session's token, is refused; a cross-site post is refused whatever it carries.
    let silence_body = json!({"matchers": [{"name": "alertname", "value": "Y", "isRegex": false}], "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "gives the page an expire form"});
    let created =
        browser.post(vigil.url("/api/v1/silences")).bearer_auth(ADMIN).json(&silence_body).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let page = browser.get(vigil.url("/alerts")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token")
        .to_string();
    let silence = |csrf: String, cookie: String, site: &'static str| {
        browser
            .post(vigil.url("/alerts/silences"))
            .header("cookie", cookie)
            .header("sec-fetch-site", site)
            .form(&[
                ("csrf", csrf),
                ("matchers", "alertname=\"X\"".into()),
                ("duration", "1h".into()),
                ("created_by", "t".into()),
                ("comment", "c".into()),
            ])
            .send()
    };
    let own_value = session.split_once('=').unwrap().1.to_string();
    assert_eq!(silence(own_value, session.clone(), "same-origin").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(silence(token.clone(), session.clone(), "cross-site").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(silence(token, session.clone(), "same-origin").await.unwrap().status(), StatusCode::SEE_OTHER);

    // Guessing tokens is throttled per client: 5 failures a minute, then 429.
    let guesser = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            guesser.get(vigil.url("/api/v1/slos")).bearer_auth(format!("guess-{i}")).send().await.unwrap().status(),
        );
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    let throttled = guesser.get(vigil.url("/api/v1/slos")).bearer_auth(READ).send().await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS, "even a right token waits out the throttle");
    assert!(throttled.headers().contains_key("retry-after"));
    let other =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    assert_eq!(
        other.get(vigil.url("/api/v1/slos")).bearer_auth(READ).send().await.unwrap().status(),
        StatusCode::OK,
        "another client is not throttled"
    );
    let metrics = other.get(vigil.url("/metrics")).bearer_auth(READ).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vigil_auth_refusals_total{reason=\"throttled\"}"), "{metrics}");
    assert!(
        !std::fs::read_to_string(format!("/proc/{}/cmdline", vigil.pid())).unwrap().contains(READ),
        "a token is in the process list"
    );

    // Without tokens, a listener on every address is warned about (the harness binds
    // loopback only, so this Vigil is started by hand).
    let log = dir.path().join("open.log");
    let (api, otlp_http, otlp_grpc) = (crate::ports::free_port(), crate::ports::free_port(), crate::ports::free_port());
    let mut open = std::process::Command::new(VIGIL)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("open"))
        .args([
            "--http-addr",
            &format!("127.0.0.1:{api}"),
            "--otlp-http-addr",
            &format!("0.0.0.0:{otlp_http}"),
            "--otlp-grpc-addr",
            &format!("127.0.0.1:{otlp_grpc}"),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let warned = wait_until("the warning", 30, async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("listening").then_some(text)
    })
    .await;
    let _ = open.kill();
    let _ = open.wait();
    assert!(warned.contains("the OTLP/HTTP listener is open to whoever reaches this address"), "{warned}");
    assert!(!warned.contains("the HTTP API listener is open"), "loopback listeners are not warned about: {warned}");
}

#[tokio::test]
async fn the_explore_page_counts_among_the_queries_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let vigil =
        Vigil::start(&dir.path().join("data"), &["--max-concurrent-queries", "1", "--query-timeout", "20s"]).await;
    // The slow query may meet the explore page polling for the one place: it retries until
    // it holds it (a shed query answers at once).
    let slow = {
        let (client, url) = (vigil.client.clone(), vigil.url("/api/v1/sql"));
        tokio::spawn(async move {
            loop {
                let query = json!({"query": "SELECT sum(value) FROM range(20000000000)"});
                let status = client.post(&url).json(&query).send().await.unwrap().status();
                if status != StatusCode::SERVICE_UNAVAILABLE {
                    return status;
                }
            }
        })
    };
    let explore = wait_until("the slow query to take the only place", 20, async || {
        let response = vigil.client.get(vigil.url("/explore?q=1")).send().await.unwrap();
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert!(explore.headers().contains_key("retry-after"));
    slow.abort();
}
