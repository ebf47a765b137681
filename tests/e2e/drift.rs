//! Model drift end to end: the scipy oracle reproduced through the HTTP API, bad input
//! refused with nothing stored, the edge cases (guard, new categories, one-value reference,
//! pre-binned counts, precomputed scores, a pinned window), OTLP histograms and counters from
//! the real OpenTelemetry SDK, and a drift SLO and a drift rule that page.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Vigil, fixture, python, wait_until};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("drift/testdata").join(name)
}

/// The reference and current columns of an oracle CSV.
fn columns(case: &str) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(testdata(&format!("{case}.csv"))).unwrap();
    let (mut reference, mut current) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let (r, c) = line.split_once(',').unwrap();
        if !r.is_empty() {
            reference.push(r.to_string());
        }
        if !c.is_empty() {
            current.push(c.to_string());
        }
    }
    (reference, current)
}

fn as_json_values(values: &[String], numeric: bool) -> Vec<Value> {
    values.iter().map(|v| if numeric { json!(v.parse::<f64>().unwrap()) } else { json!(v) }).collect()
}

async fn post(vigil: &Vigil, path: &str, body: &Value) -> (u16, Value) {
    let response = vigil.client.post(vigil.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_raw(vigil: &Vigil, path: &str, body: &str) -> (u16, Value) {
    let response = vigil
        .client
        .post(vigil.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(vigil: &Vigil, path: &str) -> Value {
    let response = vigil.client.get(vigil.url(path)).send().await.unwrap();
    assert!(response.status().is_success(), "GET {path}: {}", response.status());
    response.json().await.unwrap()
}

/// The newest window of one feature.
async fn latest(vigil: &Vigil, model: &str, feature: &str) -> Value {
    let body = get(vigil, &format!("/api/v1/drift/scores?model={model}&feature={feature}")).await;
    let features = body["features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "{body}");
    features[0].clone()
}

fn close(actual: &Value, expected: &Value, tolerance: f64, what: &str) {
    let (a, e) = (actual.as_f64().unwrap_or_else(|| panic!("{what}: {actual}")), expected.as_f64().unwrap());
    assert!((a - e).abs() <= tolerance, "{what}: Vigil {a} vs scipy {e}");
}

fn close_p(actual: &Value, expected: &Value, what: &str) {
    let (a, e) = (actual.as_f64().unwrap_or_else(|| panic!("{what}: {actual}")), expected.as_f64().unwrap());
    assert!((a - e).abs() <= 5e-3 * e.abs(), "{what}: Vigil {a} vs scipy {e} (2 significant digits)");
}

#[tokio::test]
async fn every_oracle_case_is_reproduced_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--drift-flush-interval", "1s"]).await;
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let numeric = case["kind"] == "numeric";
        let (reference, current) = columns(name);
        let (status, registered) = post(
            &vigil,
            "/api/v1/drift/reference",
            &json!({"model": "oracle", "version": "v1", "feature": name, "values": as_json_values(&reference, numeric)}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {registered}");
        assert_eq!(registered["counts"], case["ref_counts"], "{name}");
        if numeric {
            for (i, (ours, theirs)) in
                registered["edges"].as_array().unwrap().iter().zip(case["edges"].as_array().unwrap()).enumerate()
            {
                close(ours, theirs, 1e-9, &format!("{name} edge {i}"));
            }
        } else {
            // One bin per reference category, sorted, plus __other__ for the new one.
            assert_eq!(registered["categories"], json!(["a", "b", "c", "d"]), "{name}");
            assert_eq!(registered["other_bin"], "__other__");
        }
        let (status, accepted) = post(
            &vigil,
            "/api/v1/drift",
            &json!({"model": "oracle", "version": "v1", "feature": name, "values": as_json_values(&current, numeric)}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {accepted}");
        assert_eq!(accepted["accepted"]["values"], case["n_cur"], "{name}");

        let scores_of = latest(&vigil, "oracle", name).await;
        assert_eq!(scores_of["status"], "ok", "{name}: {scores_of}");
        assert_eq!(scores_of["current_count"], case["n_cur"], "{name}");
        assert_eq!(scores_of["reference_count"], case["n_ref"], "{name}");
        let scores = &scores_of["scores"];
        for (ours, theirs) in [
            ("psi", "psi_eps1e-4"),
            ("js_distance", "js_distance_natural"),
            ("js_distance_base2", "js_distance_base2"),
            ("hellinger", "hellinger"),
            ("kl", "kl_ref_cur_eps1e-4_natural"),
        ] {
            close(&scores[ours], &case[theirs], 1e-9, &format!("{name} {ours}"));
        }
        let chi = &case["chi2_contingency_2xk_nocorrection"];
        close(&scores["chi_square"], &chi["statistic"], 1e-9, &format!("{name} chi_square"));
        close_p(&scores["chi_square_p"], &chi["pvalue"], &format!("{name} chi_square_p"));
        if numeric {
            assert_eq!(scores["ks"], case["ks_statistic"], "{name}: D is exact");
            close_p(&scores["ks_p"], &case["ks_pvalue"], &format!("{name} ks_p"));
            close(&scores["wasserstein"], &case["wasserstein1"], 1e-9, &format!("{name} wasserstein"));
            close(
                &scores["wasserstein_normalized"],
                &case["wasserstein1_norm_by_ref_std"],
                1e-9,
                &format!("{name} wasserstein_normalized"),
            );
        } else {
            assert!(scores.get("ks").is_none(), "{name}: no KS on categories");
        }
    }
    // The same scores are rows of drift_scores and samples of vigil_drift_score.
    let rows =
        vigil.rows("SELECT value FROM drift_scores WHERE feature = 'normal_shift_n1000' AND statistic = 'psi'").await;
    close(&rows[0][0], &json!(0.21440823109248486), 1e-9, "drift_scores row");
    let query: Value =
        get(&vigil, "/api/v1/query?query=vigil_drift_score%7Bfeature%3D%22tiny_ties%22%2Cstatistic%3D%22ks%22%7D")
            .await;
    assert_eq!(query["data"]["result"][0]["value"][1], "0.25", "{query}");
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let values: Vec<f64> = (0..20).map(f64::from).collect();
    let (status, _) =
        post(&vigil, "/api/v1/drift/reference", &json!({"model": "m", "feature": "x", "values": values})).await;
    assert_eq!(status, 200);

    let cases: [(&str, &str, u16, &str); 10] = [
        ("/api/v1/drift", r#"{"model":"m","feature":"x","values":[1.0, NaN, 2.0]}"#, 400, "NaN"),
        ("/api/v1/drift", r#"{"model":"m","feature":"x","values":[1.0, "NaN"]}"#, 400, "values[1]"),
        ("/api/v1/drift", r#"{"model":"m","feature":"x","values":[1.0, null]}"#, 400, "null"),
        ("/api/v1/drift", r#"{"model":"m","feature":"x","values":[1.0, "a"]}"#, 400, "values[1]"),
        ("/api/v1/drift", r#"{"model":"m","feature":"x","counts":[1,2,3]}"#, 400, "counts for 10 bins"),
        ("/api/v1/drift", r#"{"model":"m","feature":"nope","counts":[1,2,3]}"#, 404, "no reference"),
        ("/api/v1/drift", r#"{"model":"m","feature":"x","scores":{"psy":0.1}}"#, 400, "unknown drift statistic"),
        (
            "/api/v1/drift",
            r#"{"model":"m","feature":"x","values":[1],"timestamp":"2200-01-01T00:00:00Z"}"#,
            400,
            "future",
        ),
        ("/api/v1/drift/reference", r#"{"model":"m","feature":"y","values":[]}"#, 400, "empty"),
        ("/api/v1/drift/reference", r#"{"model":"m","feature":"y","edges":[2,1],"counts":[1,1,1]}"#, 400, "ascending"),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = post_raw(&vigil, path, body).await;
        assert_eq!(got, status, "{body}: {answer}");
        let text = format!("{} {}", answer["error"], answer["hint"]);
        assert!(text.contains(needle), "{body}: {needle:?} not in {answer}");
        assert!(answer["hint"].as_str().is_some_and(|h| !h.is_empty()), "{answer}");
    }
    assert_eq!(vigil.count("SELECT count(*) FROM drift_values").await, 0, "a refused body stores nothing");
    assert_eq!(vigil.count("SELECT count(*) FROM drift_references WHERE feature = 'y'").await, 0);
}

#[tokio::test]
async fn guard_new_categories_single_values_pre_binned_counts_and_pinned_windows() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &["--drift-min-samples", "5"]).await;
    let reference = |feature: &str, body: Value| {
        let mut body = body;
        body["model"] = json!("edge");
        body["feature"] = json!(feature);
        body
    };
    let current = |feature: &str, body: Value| reference(feature, body);

    // Too few values: the guard withholds scores until there are five.
    post(&vigil, "/api/v1/drift/reference", &reference("guard", json!({"values": (0..20).collect::<Vec<i32>>()})))
        .await;
    post(&vigil, "/api/v1/drift", &current("guard", json!({"values": [1, 2, 3]}))).await;
    let window = latest(&vigil, "edge", "guard").await;
    assert_eq!(window["status"], "insufficient_samples", "{window}");
    assert_eq!(window["verdict"], "insufficient_samples", "{window}");
    assert_eq!(window["current_count"], 3);
    assert_eq!(window["scores"], json!({}));
    post(&vigil, "/api/v1/drift", &current("guard", json!({"values": [4, 5]}))).await;
    let window = latest(&vigil, "edge", "guard").await;
    assert_eq!(window["status"], "ok", "{window}");
    assert_eq!(window["current_count"], 5);

    // A single-value reference: every edge equal, finite scores, no normalised Wasserstein.
    let (_, registered) =
        post(&vigil, "/api/v1/drift/reference", &reference("constant", json!({"values": vec![7.0; 10]}))).await;
    assert_eq!(registered["edges"], json!(vec![7.0; 9]));
    post(&vigil, "/api/v1/drift", &current("constant", json!({"values": [7, 7, 8, 9, 7]}))).await;
    let scores = latest(&vigil, "edge", "constant").await["scores"].clone();
    assert!(scores.as_object().unwrap().values().all(|v| v.as_f64().unwrap().is_finite()), "{scores}");
    assert!((scores["wasserstein"].as_f64().unwrap() - 0.6).abs() < 1e-12, "{scores}");
    assert!(scores.get("wasserstein_normalized").is_none(), "{scores}");

    // New categories go to __other__; empty bins stay finite.
    post(
        &vigil,
        "/api/v1/drift/reference",
        &reference("colour", json!({"values": ["red", "red", "blue", "blue", "blue"]})),
    )
    .await;
    post(&vigil, "/api/v1/drift", &current("colour", json!({"values": ["red", "green", "green", "green", "teal"]})))
        .await;
    let scores = latest(&vigil, "edge", "colour").await["scores"].clone();
    // p = (blue .6, red .4, other 0), q = (0, .2, .8).
    let psi =
        (1e-4 - 0.6) * (1e-4f64 / 0.6).ln() + (0.2 - 0.4) * (0.2f64 / 0.4).ln() + (0.8 - 1e-4) * (0.8f64 / 1e-4).ln();
    assert!((scores["psi"].as_f64().unwrap() - psi).abs() < 1e-12, "{scores}");

    // Pre-binned reference and counts.
    let (status, registered) = post(
        &vigil,
        "/api/v1/drift/reference",
        &reference("binned", json!({"edges": [0.0, 1.0, 2.0], "counts": [10, 20, 30, 40]})),
    )
    .await;
    assert_eq!(status, 200, "{registered}");
    let id = registered["reference_id"].clone();
    let (status, answer) =
        post(&vigil, "/api/v1/drift", &current("binned", json!({"counts": [40, 30, 20, 10], "reference_id": id})))
            .await;
    assert_eq!(status, 200, "{answer}");
    let scores = latest(&vigil, "edge", "binned").await["scores"].clone();
    let (p, q): ([f64; 4], [f64; 4]) = ([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]);
    let psi: f64 = p.iter().zip(q).map(|(p, q)| (q - p) * (q / p).ln()).sum();
    assert!((scores["psi"].as_f64().unwrap() - psi).abs() < 1e-12, "{scores}");
    assert!(scores.get("ks").is_none(), "no raw values, no KS: {scores}");

    // Precomputed scores are stored as sent.
    let (status, _) = post(
        &vigil,
        "/api/v1/drift",
        &json!({"model": "external", "feature": "f", "scores": {"psi": 0.42, "ks_p": 0.01}}),
    )
    .await;
    assert_eq!(status, 200);
    let scores = latest(&vigil, "external", "f").await["scores"].clone();
    assert_eq!(scores, json!({"ks_p": 0.01, "psi": 0.42}));

    // A reference pinned on a window of stored values.
    let two_hours_ago =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 7200) as f64;
    let (_, answer) = post(
        &vigil,
        "/api/v1/drift",
        &current("pinned", json!({"values": [1, 2, 3, 4, 5, 6], "timestamp": two_hours_ago})),
    )
    .await;
    assert!(answer["warnings"][0].as_str().unwrap().contains("no reference"), "{answer}");
    let (status, registered) = post(
        &vigil,
        "/api/v1/drift/reference",
        &reference("pinned", json!({"from": two_hours_ago - 60.0, "to": two_hours_ago + 60.0})),
    )
    .await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["sample_count"], 6);
    assert_eq!(registered["edges"][4], json!(3.5));

    // The per-model view: colour and binned drifted; pinned has no current data yet.
    let models = get(&vigil, "/api/v1/drift/models").await;
    let edge = models["models"].as_array().unwrap().iter().find(|m| m["model"] == "edge").unwrap().clone();
    let drifted: Vec<&str> = edge["feature_status"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["drifted"] == true)
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert!(drifted.contains(&"colour") && drifted.contains(&"binned"), "{edge}");
    assert!(!drifted.contains(&"pinned"), "{edge}");
    for feature in edge["feature_status"].as_array().unwrap() {
        // One verdict: `drifted` and `verdict` never disagree (the models page shows `verdict`).
        assert_eq!(feature["drifted"] == true, feature["verdict"] == "drifted", "{feature}");
    }
    assert_eq!(edge["drifted_features"].as_u64().unwrap() as usize, drifted.len(), "{edge}");
}

#[tokio::test]
async fn opentelemetry_histograms_and_counters_feed_drift() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    let numeric = &expected["cases"][0];
    let categorical = &expected["cases"][1];
    // OpenTelemetry histograms take non-negative values only: the amounts move up by 10,
    // which moves every edge with them and leaves the bin counts (and so the scores) alone.
    let (reference, current) = columns("normal_shift_n1000");
    let shifted =
        |values: &[String]| -> Vec<Value> { values.iter().map(|v| json!(v.parse::<f64>().unwrap() + 10.0)).collect() };
    let (_, registered) = post(
        &vigil,
        "/api/v1/drift/reference",
        &json!({"model": "fraud", "version": "v2", "feature": "amount", "values": shifted(&reference)}),
    )
    .await;
    assert_eq!(registered["counts"], numeric["ref_counts"]);
    let (categories_reference, categories_current) = columns("categorical_shift_new_cat");
    post(
        &vigil,
        "/api/v1/drift/reference",
        &json!({"model": "fraud", "version": "v2", "feature": "merchant", "values": categories_reference}),
    )
    .await;

    let spec = json!({
        "model": "fraud", "version": "v2", "feature": "amount", "edges": registered["edges"],
        "values": shifted(&current), "category_feature": "merchant", "categories": categories_current,
    });
    let output = Command::new(&python)
        .arg(fixture("otlp/drift_client.py"))
        .arg(&vigil.otlp_http)
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Two cumulative exports: the increments add up to every value exactly once.
    let amount = latest(&vigil, "fraud", "amount").await;
    assert_eq!(amount["current_count"], 1000, "{amount}");
    close(&amount["scores"]["psi"], &numeric["psi_eps1e-4"], 1e-9, "OTLP histogram psi");
    close(&amount["scores"]["hellinger"], &numeric["hellinger"], 1e-9, "OTLP histogram hellinger");
    assert!(amount["scores"].get("ks").is_none(), "bucket counts carry no raw values");
    let merchant = latest(&vigil, "fraud", "merchant").await;
    assert_eq!(merchant["current_count"], 400, "{merchant}");
    close(&merchant["scores"]["psi"], &categorical["psi_eps1e-4"], 1e-9, "OTLP counter psi");
}

const DRIFT_SLO: &str = r#"apiVersion: vigil/v1
kind: SLO
metadata: {name: fraud-amount-drift, service: fraud-scoring}
spec:
  objective: 99
  window: 1d
  sli:
    drift: {model: fraud, feature: amount, statistic: psi, below: 0.2, slice: 1h}
  alerting:
    min_events: 1
    conditions:
      - {severity: page, burn_rate: 14.4, long_window: 1h, short_window: 5m}
"#;

const DRIFT_RULES: &str = r#"groups:
  - name: drift
    interval: 1s
    rules:
      - alert: FeatureDrift
        expr: vigil_drift_score{statistic="psi"} > 0.2
        labels: {severity: ticket}
        annotations: {summary: '{{ $labels.feature }} drifted (PSI {{ $value }})'}
"#;

#[tokio::test]
async fn a_shifted_feature_breaches_its_drift_slo_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("slos")).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), DRIFT_RULES).unwrap();
    let config = format!(
        "slos: ['{}/slos/*.yaml']\nrules: ['{}/rules.yaml']\nevaluation_interval: 1s\ndrift: {{flush_interval: 1s}}\n",
        dir.path().display(),
        dir.path().display()
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    let (reference, current) = columns("normal_shift_n1000");
    for feature in ["amount", "stable"] {
        let (status, _) = post(
            &vigil,
            "/api/v1/drift/reference",
            &json!({"model": "fraud", "feature": feature, "values": as_json_values(&reference, true)}),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Three hourly windows of the shifted distribution (the open one included); the stable
    // feature gets its own reference back.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for hours_ago in [2.0, 1.0, 0.0] {
        let at = now - hours_ago * 3600.0;
        for (feature, values) in [("amount", &current), ("stable", &reference)] {
            let (status, answer) = post(
                &vigil,
                "/api/v1/drift",
                &json!({"model": "fraud", "feature": feature, "values": as_json_values(values, true), "timestamp": at}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let history =
        get(&vigil, &format!("/api/v1/drift/scores?model=fraud&feature=amount&start={}", now - 3.0 * 3600.0)).await;
    let windows = history["features"][0]["history"].as_array().unwrap().clone();
    assert_eq!(windows.len(), 3, "{history}");
    assert!(windows.iter().all(|w| w["scores"]["psi"].as_f64().unwrap() > 0.2), "{history}");

    // The SLO arrives after the data: it backfills its window from drift_scores.
    std::fs::write(dir.path().join("slos/drift.yaml"), DRIFT_SLO).unwrap();
    let reload = vigil.client.post(vigil.url("/-/reload")).send().await.unwrap();
    assert!(reload.status().is_success(), "{}", reload.text().await.unwrap());

    let alerts = wait_until("the drift page and the drift rule", 90, async || {
        let body = get(&vigil, "/api/v1/alerts").await;
        let alerts = body["data"]["alerts"].as_array().unwrap().clone();
        let page = alerts.iter().any(|a| {
            a["labels"]["slo"] == "fraud-amount-drift" && a["labels"]["severity"] == "page" && a["state"] == "firing"
        });
        let rule = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "FeatureDrift" && a["labels"]["feature"] == "amount" && a["state"] == "firing"
        });
        (page && rule).then_some(alerts)
    })
    .await;
    assert!(
        !alerts.iter().any(|a| a["labels"]["alertname"] == "FeatureDrift" && a["labels"]["feature"] == "stable"),
        "the stable feature does not drift: {alerts:?}"
    );
    let slo = get(&vigil, "/api/v1/slos/fraud-amount-drift").await;
    let status = &slo["status"][0];
    assert!(status["sli"].as_f64().unwrap() < 0.99, "every slice breached: {slo}");
}

#[tokio::test]
async fn acknowledged_drift_data_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&data, &["--drift-flush-interval", "1h"]).await;
    let (reference, current) = columns("tiny_ties");
    post(
        &vigil,
        "/api/v1/drift/reference",
        &json!({"model": "m", "feature": "ties", "values": as_json_values(&reference, true)}),
    )
    .await;
    let (status, _) = post(
        &vigil,
        "/api/v1/drift",
        &json!({"model": "m", "feature": "ties", "values": as_json_values(&current, true)}),
    )
    .await;
    assert_eq!(status, 200);
    // Killed before any flush scored the window: only the WAL has the values.
    vigil.kill9();
    let vigil = Vigil::start(&data, &["--drift-flush-interval", "1h"]).await;
    let window = latest(&vigil, "m", "ties").await;
    assert_eq!(window["status"], "ok", "{window}");
    assert_eq!(window["current_count"], 8);
    assert_eq!(window["scores"]["ks"], json!(0.25));
    assert!((window["scores"]["psi"].as_f64().unwrap() - 2.3516305535113338).abs() < 1e-9, "{window}");
}
