//! The server as a whole: durability across kill -9, clean shutdown, bad input, SQL, ops.

use std::process::Command;

use serde_json::Value;

use crate::harness::{VIGIL, Vigil};
use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};

const FIXED_TABLES: i64 = 8;

fn request(metric: &str, batch: usize, series_count: usize, samples: usize, t0: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series_count)
            .map(|s| {
                let points: Vec<(i64, f64)> =
                    (0..samples).map(|i| (t0 + i as i64 * 1000, (batch * 1000 + i) as f64)).collect();
                series(metric, &[("job", "crash"), ("instance", &format!("i{s}"))], &points)
            })
            .collect(),
    }
}

#[tokio::test]
async fn kill_9_after_acknowledged_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, &[]).await;
    let t0 = now_ms() - 3_600_000;
    // Four concurrent writers exercise group commit; each batch uses its own time range.
    let url = vigil.url("/api/v1/write");
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = vigil.client.clone();
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = 0usize;
            for batch in 0..10 {
                let start = t0 + ((writer * 10 + batch) as i64) * 60_000;
                let body = encode(&request("crash_test_total", writer * 10 + batch, 50, 20, start));
                let (status, text) = send(&client, &url, body).await;
                assert_eq!(status, 204, "{text}");
                acknowledged += 50 * 20;
            }
            acknowledged
        }));
    }
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.unwrap();
    }
    vigil.kill9();
    for _ in 0..2 {
        let mut vigil = Vigil::start(&data, &[]).await;
        assert_eq!(vigil.count("SELECT count(*) FROM crash_test_total").await, acknowledged as i64);
        assert_eq!(vigil.count("SELECT count(DISTINCT instance) FROM crash_test_total").await, 50);
        vigil.kill9();
    }
}

#[tokio::test]
async fn sigterm_flushes_to_parquet_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, &[]).await;
    let (status, _) =
        send(&vigil.client, &vigil.url("/api/v1/write"), encode(&request("flushed", 0, 3, 5, now_ms()))).await;
    assert_eq!(status, 204);
    let exit = vigil.terminate();
    assert!(exit.success(), "exit status {exit:?}");
    let node = std::fs::read_to_string(data.join("node_id")).unwrap();
    let read = |path: &str| -> Value {
        serde_json::from_slice(&std::fs::read(data.join("segments").join(path)).unwrap()).unwrap()
    };
    let root = read(&format!("nodes/{}/manifest.json", node.trim()));
    let partitions = root["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 1);
    let partition = read(partitions[0]["path"].as_str().unwrap());
    let segments = partition["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0]["rows"], 15);
    let path = data.join("segments").join(segments[0]["path"].as_str().unwrap());
    assert!(std::fs::read(&path).unwrap().starts_with(b"PAR1"), "{} is Parquet", path.display());
    let vigil = Vigil::start(&data, &[]).await;
    assert_eq!(vigil.count("SELECT count(*) FROM flushed").await, 15);
    assert!(vigil.log_text().contains("storage opened"), "{}", vigil.log_text());
    // Written to a file, the log is plain text: no terminal colour codes.
    assert!(!vigil.log_text().contains('\u{1b}'), "ANSI codes in a log file:\n{}", vigil.log_text());
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--log-format", "json"]).await;
    let log = vigil.log_text();
    let events: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let opened = events.iter().find(|e| e["fields"]["message"] == "storage opened").expect("storage opened");
    assert_eq!(opened["level"], "INFO", "{opened}");
    assert!(opened["timestamp"].is_string() && opened["target"].is_string(), "{opened}");
}

#[tokio::test]
async fn bad_remote_write_bodies_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vigil =
        Vigil::start(&dir.path().join("data"), &["--max-body-size", "1MiB", "--max-decompressed-size", "4MiB"]).await;
    let url = vigil.url("/api/v1/write");
    let valid = request("good_metric", 0, 2, 2, now_ms());
    let protobuf = prost::Message::encode_to_vec(&valid);
    let framed = {
        let mut out = Vec::new();
        std::io::Write::write_all(&mut snap::write::FrameEncoder::new(&mut out), &protobuf).unwrap();
        out
    };
    let truncated = snap::raw::Encoder::new().compress_vec(&protobuf[..protobuf.len() - 3]).unwrap();
    let unnamed = encode(&WriteRequest {
        timeseries: vec![crate::remote_write_client::TimeSeries {
            labels: vec![crate::remote_write_client::Label { name: "job".into(), value: "x".into() }],
            samples: vec![crate::remote_write_client::Sample { value: 1.0, timestamp: now_ms() }],
            exemplars: Vec::new(),
        }],
    });
    let bomb = snap::raw::Encoder::new().compress_vec(&vec![0u8; 16 << 20]).unwrap();
    let huge: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"this is not snappy".to_vec(), 400),
        ("framed snappy", framed, 400),
        ("truncated protobuf", truncated, 400),
        ("uncompressed protobuf", protobuf.clone(), 400),
        ("empty", Vec::new(), 400),
        ("no __name__", unnamed, 400),
        ("decompression bomb", bomb, 413),
        ("huge body", huge, 413),
    ];
    for (name, body, expected) in cases {
        let (status, text) = send(&vigil.client, &url, body).await;
        assert_eq!(status, expected, "{name}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {error}");
        assert!(error["hint"].as_str().is_some_and(|h| !h.is_empty()), "{name}: {error}");
    }
    assert_eq!(
        vigil.count("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").await,
        FIXED_TABLES,
        "nothing of a refused request is stored"
    );
    let (status, _) = send(&vigil.client, &url, encode(&valid)).await;
    assert_eq!(status, 204);
    assert_eq!(vigil.count("SELECT count(*) FROM good_metric").await, 4);
    // The server is still healthy after all of it.
    assert_eq!(vigil.client.get(vigil.url("/-/healthy")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn sql_answers_json_and_explains_errors() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let t = now_ms();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("http_requests_total", &[("job", "api"), ("code", "200")], &[(t, 10.0), (t + 15_000, 12.0)]),
            series("http_requests_total", &[("job", "api"), ("code", "500")], &[(t, 1.0), (t + 15_000, stale)]),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);

    let result = vigil
        .sql("SELECT code, count(*) AS n, max(value) AS top FROM http_requests_total GROUP BY code ORDER BY code")
        .await;
    assert_eq!(result["columns"], serde_json::json!(["code", "n", "top"]));
    assert_eq!(result["rows"][0], serde_json::json!(["200", 2, 12.0]));
    assert!(result["rows"][0][1].is_i64(), "integers are JSON integers");
    let stale_row =
        vigil.sql("SELECT value, timestamp FROM http_requests_total WHERE code = '500' ORDER BY timestamp").await;
    assert_eq!(stale_row["rows"][1][0], "NaN");
    assert!(stale_row["rows"][0][1].as_str().unwrap().ends_with('Z'));

    let columns = vigil
        .sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'http_requests_total' ORDER BY ordinal_position")
        .await;
    assert_eq!(columns["rows"], serde_json::json!([["code"], ["job"], ["timestamp"], ["value"]]));

    for (query, fragment) in [
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM spans", "nope"),
        ("DROP TABLE spans", "DDL not supported"),
    ] {
        let response = vigil
            .client
            .post(vigil.url("/api/v1/sql"))
            .json(&serde_json::json!({"query": query}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains(fragment), "{query}: {error}");
        assert!(!error["hint"].as_str().unwrap().is_empty());
    }
    let response = vigil
        .client
        .post(vigil.url("/api/v1/sql"))
        .body("{not json")
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let csv = vigil
        .client
        .post(vigil.url("/api/v1/sql"))
        .header("Accept", "text/csv")
        .json(&serde_json::json!({"query": "SELECT code FROM http_requests_total ORDER BY code, timestamp"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "code\n200\n200\n500\n500\n");
}

#[tokio::test]
async fn ops_endpoints_follow_prometheus_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    assert_eq!(vigil.client.get(vigil.url("/-/healthy")).send().await.unwrap().status(), 200);
    assert_eq!(vigil.client.get(vigil.url("/-/ready")).send().await.unwrap().status(), 200);
    let body = encode(&request("ops_metric", 0, 1, 3, now_ms()));
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let metrics = vigil.own_metrics().await;
    let samples_written = metrics
        .lines()
        .find(|l| l.starts_with("vigil_storage_samples_written_total"))
        .unwrap_or_else(|| panic!("no samples counter in:\n{metrics}"));
    assert!(samples_written.ends_with(" 3"), "{samples_written}");
    assert!(metrics.contains("vigil_http_request_duration_seconds"), "{metrics}");
    assert!(metrics.contains("vigil_storage_buffered_series_by_metric{metric=\"ops_metric\"} 1\n"), "{metrics}");
    let missing = vigil.client.get(vigil.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("/api/v1/nothing"));
}

/// `build.rs` links the binary with its relative relocations packed where the linker takes the
/// option, as CI's does (GNU ld 2.40, glibc 2.36): the loader then reads a few KiB of them at
/// start, not the 7 MiB the 315,000 pointers in the read-only data take unpacked.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_carries_its_relative_relocations_packed() {
    let packed = option_env!("VIGIL_PACKED_RELOCATIONS").is_some();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(packed, "build.rs found no linker that packs relative relocations");
    }
    if !crate::harness::require_program("/usr/bin/readelf") {
        return;
    }
    let output = Command::new("/usr/bin/readelf").args(["--dynamic", VIGIL]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dynamic = String::from_utf8_lossy(&output.stdout);
    assert_eq!(dynamic.contains("(RELR)"), packed, "{dynamic}");
    // The relocations left unpacked (the few that are not relative), in bytes.
    let unpacked: u64 = dynamic
        .lines()
        .find(|line| line.contains("(RELASZ)"))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(0);
    if packed {
        assert!(unpacked < 64 * 1024, "{unpacked} bytes of relocations left unpacked:\n{dynamic}");
    } else {
        assert!(unpacked > 1024 * 1024, "{unpacked} bytes of relocations, unpacked:\n{dynamic}");
    }
}

#[test]
fn a_bad_config_stops_start_up_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yaml");
    std::fs::write(&config, "storage:\n  data_dir: ./data\n  retentoin: 3d\n").unwrap();
    let output = Command::new(VIGIL).arg("serve").arg("--config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:3:3: unknown field `retentoin`", config.display());
    assert!(stderr.contains(&expected), "{stderr}");

    let output = Command::new(VIGIL).arg("validate").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&expected));
    std::fs::write(&config, "storage:\n  retention: 3d\n  wal: {fsync: interval}\n").unwrap();
    let output = Command::new(VIGIL).arg("validate").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}
