//! The calls Grafana's Prometheus data source makes (health check, metric browser, query
//! editor, status pages), asked of a real Prometheus 2.42 and of Vigil holding the same
//! data (Prometheus scrapes a real node-exporter and remote-writes to Vigil): each answers
//! in Prometheus's shape, field by field, and with the same values where the data decides.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Vigil, free_port, require_program};
use crate::prometheus::{NODE_EXPORTER, PROMETHEUS, spawn_node_exporter, start_prometheus};

/// The shape of a JSON value: objects by their keys, arrays by their first element, scalars
/// by their type.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => json!([items.first().map(shape)]),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

async fn get(client: &reqwest::Client, base: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let response = client.get(format!("{base}{path}")).query(params).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn grafanas_calls_answer_as_prometheus_does() {
    if !require_program(PROMETHEUS) || !require_program(NODE_EXPORTER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("vigil"), &[]).await;
    let exporter_port = free_port();
    let _exporter = spawn_node_exporter(exporter_port);
    let prometheus_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 1s}}\n    metadata_config: {{send: true, send_interval: 2s}}\n",
            vigil.url("/api/v1/write")
        ),
    )
    .unwrap();
    let _prometheus = start_prometheus(dir.path(), prometheus_port, &[]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let client = reqwest::Client::new();
    let (prometheus, own) = (format!("http://127.0.0.1:{prometheus_port}"), format!("http://{}", vigil.addr));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let (start, end) = (format!("{:.3}", now - 8.0), format!("{:.3}", now - 4.0));
    let window = [("start", start.as_str()), ("end", end.as_str())];

    // The data source's health check: a POSTed `1+1`.
    for base in [&prometheus, &own] {
        let answer: Value = client
            .post(format!("{base}/api/v1/query"))
            .form(&[("query", "1+1"), ("time", end.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["data"]["resultType"], "scalar", "{base}: {answer}");
        assert_eq!(answer["data"]["result"][1], "2", "{base}: {answer}");
    }

    // Same shape, field by field.
    let same_shape: [(&str, Vec<(&str, &str)>); 7] = [
        ("/api/v1/status/buildinfo", vec![]),
        ("/api/v1/rules", vec![]),
        ("/api/v1/status/runtimeinfo", vec![]),
        ("/api/v1/status/config", vec![]),
        ("/api/v1/query_exemplars", vec![("query", "node_load1"), ("start", start.as_str()), ("end", end.as_str())]),
        ("/api/v1/format_query", vec![("query", "sum(rate(node_cpu_seconds_total[5m]))by(mode)")]),
        ("/api/v1/series", vec![("match[]", "node_load1"), ("start", start.as_str()), ("end", end.as_str())]),
    ];
    for (path, params) in &same_shape {
        let (p_status, p_body) = get(&client, &prometheus, path, params).await;
        let (v_status, v_body) = get(&client, &own, path, params).await;
        assert_eq!((v_status, p_status), (200, 200), "{path}: {v_body} / {p_body}");
        assert_eq!(shape(&v_body), shape(&p_body), "{path}: Vigil {v_body}\nPrometheus {p_body}");
    }
    // Metadata is keyed by metric name (which five, each picks its own way): the entries
    // have one shape, and `limit` holds.
    let (_, metadata) = get(&client, &own, "/api/v1/metadata", &[("limit", "5")]).await;
    let (_, p_metadata) = get(&client, &prometheus, "/api/v1/metadata", &[("limit", "5")]).await;
    let entries = |body: &Value| -> BTreeSet<String> {
        body["data"].as_object().unwrap().values().map(|v| shape(v).to_string()).collect()
    };
    assert_eq!(entries(&metadata), entries(&p_metadata), "{metadata}\n{p_metadata}");
    let count = metadata["data"].as_object().unwrap().len();
    assert!((1..=5).contains(&count), "limit=5 gives up to 5 metrics: {metadata}");
    // Same values where the data decides them.
    let (_, formatted) = get(&client, &own, "/api/v1/format_query", &same_shape[5].1).await;
    let (_, expected) = get(&client, &prometheus, "/api/v1/format_query", &same_shape[5].1).await;
    assert_eq!(formatted, expected);
    let mut with_window = window.to_vec();
    with_window.push(("match[]", "node_load1"));
    let (_, p_labels) = get(&client, &prometheus, "/api/v1/labels", &with_window).await;
    let (_, v_labels) = get(&client, &own, "/api/v1/labels", &with_window).await;
    assert_eq!(strings(&v_labels["data"]), strings(&p_labels["data"]));
    let mut names = window.to_vec();
    names.push(("match[]", "{job=\"node\", __name__=~\"node_load.*\"}"));
    let (_, p_names) = get(&client, &prometheus, "/api/v1/label/__name__/values", &names).await;
    let (_, v_names) = get(&client, &own, "/api/v1/label/__name__/values", &names).await;
    assert_eq!(strings(&v_names["data"]), strings(&p_names["data"]));
    assert_eq!(strings(&v_names["data"]).len(), 3, "{v_names}");
    // The flags and status pages: maps of strings, Prometheus's keys for runtime info.
    let (_, flags) = get(&client, &own, "/api/v1/status/flags", &[]).await;
    assert!(flags["data"].as_object().unwrap().values().all(Value::is_string), "{flags}");
    let (_, tsdb) = get(&client, &own, "/api/v1/status/tsdb", &[]).await;
    let (_, p_tsdb) = get(&client, &prometheus, "/api/v1/status/tsdb", &[]).await;
    let keys = |v: &Value| v["data"].as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    assert!(keys(&tsdb).is_superset(&keys(&p_tsdb)), "{tsdb}\n{p_tsdb}");
}
