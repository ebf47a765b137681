//! The query APIs' edges: Prometheus-shaped errors with positions, form POSTs, metadata,
//! build info, and the query time and memory limits.

use serde_json::{Value, json};

use crate::harness::Vigil;

async fn prom_get(vigil: &Vigil, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let response = vigil.client.get(vigil.url(path)).query(params).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn prometheus_api_errors_and_forms() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let body = "# HELP temp_celsius Room temperature.\n# TYPE temp_celsius gauge\ntemp_celsius{room=\"a\"} 21.5\n";
    assert_eq!(
        vigil.client.post(vigil.url("/api/v1/import/prometheus")).body(body).send().await.unwrap().status(),
        200
    );

    let (status, error) = prom_get(&vigil, "/api/v1/query", &[("query", "sum(rate(temp_celsius[5m])) by (room")]).await;
    assert_eq!(status, 400);
    assert_eq!(error["status"], "error");
    assert_eq!(error["errorType"], "bad_data");
    assert_eq!(error["error"], "1:32: parse error: unclosed left parenthesis");
    let (status, error) = prom_get(&vigil, "/api/v1/query", &[("query", "rate(temp_celsius)")]).await;
    assert_eq!((status, error["errorType"].as_str()), (400, Some("bad_data")));
    assert!(error["error"].as_str().unwrap().starts_with("1:1: parse error: expected type matrix"), "{error}");
    assert_eq!(prom_get(&vigil, "/api/v1/query", &[]).await.0, 400);
    assert_eq!(prom_get(&vigil, "/api/v1/query", &[("query", "1"), ("time", "yesterday")]).await.0, 400);
    let (status, error) =
        prom_get(&vigil, "/api/v1/query_range", &[("query", "1"), ("start", "0"), ("end", "100000"), ("step", "1")])
            .await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("11000 points"), "{error}");
    assert_eq!(
        prom_get(&vigil, "/api/v1/query_range", &[("query", "1"), ("start", "10"), ("end", "0"), ("step", "1")])
            .await
            .0,
        400
    );
    // A label name that does not decode (found by fuzz/query_http): bad data, as JSON.
    let (status, error) = prom_get(&vigil, "/api/v1/label/%FE%9A/values", &[]).await;
    assert_eq!((status, error["errorType"].as_str()), (400, Some("bad_data")), "{error}");
    for path in ["/api/v1/slos/%FE%9A", "/api/v1/silences/%FE%9A"] {
        let request = if path.contains("silences") {
            vigil.client.delete(vigil.url(path))
        } else {
            vigil.client.get(vigil.url(path))
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string() && error["hint"].is_string(), "{path}: {error}");
    }

    // Grafana sends form POSTs.
    let response =
        vigil.client.post(vigil.url("/api/v1/query")).form(&[("query", "temp_celsius * 2")]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["data"]["resultType"], "vector");
    assert_eq!(result["data"]["result"][0]["metric"], json!({"room": "a"}));
    assert_eq!(result["data"]["result"][0]["value"][1], "43");
    let (_, scalar) = prom_get(&vigil, "/api/v1/query", &[("query", "1/0"), ("time", "1700000000.5")]).await;
    assert_eq!(scalar["data"], json!({"resultType": "scalar", "result": [1700000000.5, "+Inf"]}));

    let (_, metadata) = prom_get(&vigil, "/api/v1/metadata", &[("metric", "temp_celsius")]).await;
    assert_eq!(metadata["data"]["temp_celsius"], json!([{"type": "gauge", "help": "Room temperature.", "unit": ""}]));
    let (_, info) = prom_get(&vigil, "/api/v1/status/buildinfo", &[]).await;
    assert_eq!(info["data"]["version"], "2.42.0");
    let (_, exemplars) = prom_get(&vigil, "/api/v1/query_exemplars", &[("query", "up")]).await;
    assert_eq!(exemplars, json!({"status": "success", "data": []}));
}

#[tokio::test]
async fn query_limits_answer_503_and_422() {
    let dir = tempfile::tempdir().unwrap();
    let vigil =
        Vigil::start(&dir.path().join("data"), &["--query-timeout", "300ms", "--query-max-memory", "2MiB"]).await;
    let slow = vigil
        .client
        .post(vigil.url("/api/v1/sql"))
        .json(&json!({"query": "SELECT sum(value * 1.5) FROM generate_series(1, 5000000000) AS t(value)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 503);
    assert!(slow.headers().contains_key("retry-after"));
    let error: Value = slow.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("time limit"), "{error}");

    let hungry = vigil
        .client
        .post(vigil.url("/api/v1/sql"))
        .json(&json!({"query": "SELECT array_agg(value) FROM generate_series(1, 3000000) AS t(value)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hungry.status(), 422, "{}", hungry.text().await.unwrap());

    // Small queries still run.
    assert_eq!(vigil.count("SELECT count(*) FROM generate_series(1, 1000)").await, 1000);
}

/// The README's `curl` commands, run exactly as written (only the port is this Vigil's),
/// with the real curl: the first thing a new user types must work.
#[tokio::test]
async fn the_readmes_curl_commands_answer_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let body = "up{job=\"api\",instance=\"a\"} 1\nup{job=\"api\",instance=\"b\"} 0\nup{job=\"db\",instance=\"c\"} 1\n";
    let response = vigil.client.post(vigil.url("/api/v1/import/prometheus")).body(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let commands: Vec<&str> = readme.lines().filter(|l| l.starts_with("curl ")).collect();
    assert!(!commands.is_empty(), "the README shows how to query with curl");
    for command in commands {
        let command = command.replace("localhost:9400", &vigil.addr.to_string());
        let output = std::process::Command::new("sh").arg("-c").arg(&command).output().expect("sh and curl");
        assert!(output.status.success(), "{command}");
        let answer: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{command}: {e}: {}", String::from_utf8_lossy(&output.stdout)));
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        if command.contains("GROUP BY job") {
            assert_eq!(answer["columns"], json!(["job", "count(*)"]), "{answer}");
            let mut rows = answer["rows"].as_array().unwrap().clone();
            rows.sort_by_key(|r| r[0].as_str().unwrap().to_string());
            assert_eq!(rows, vec![json!(["api", 2]), json!(["db", 1])]);
        }
    }
    // The other ways a query arrives: a form and a query string.
    let form = vigil.client.post(vigil.url("/api/v1/sql")).form(&[("query", "SELECT 1 AS one")]).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(form.json::<Value>().await.unwrap()["rows"], json!([[1]]));
    let get = vigil.client.get(vigil.url("/api/v1/sql")).query(&[("query", "SELECT 2 AS two")]).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.json::<Value>().await.unwrap()["rows"], json!([[2]]));
    let nothing = vigil.client.post(vigil.url("/api/v1/sql")).send().await.unwrap();
    assert_eq!(nothing.status(), 400);
    let error: Value = nothing.json().await.unwrap();
    assert!(error["hint"].as_str().unwrap().contains("query="), "{error}");
}
