//! SLOs in the running server: loaded from the config's globs, evaluated on schedule,
//! exposed by the API, as series and rows; reloads that fail keep the running set.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{VIGIL, Vigil, fixture, metric_value};
use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};

async fn slos(vigil: &Vigil) -> Value {
    vigil.client.get(vigil.url("/api/v1/slos")).send().await.unwrap().json().await.unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn slos_evaluate_reload_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let slo_dir = dir.path().join("slos");
    std::fs::create_dir_all(&slo_dir).unwrap();
    for name in ["checkout.vigil.yaml", "checkout.openslo.yaml", "checkout.sloth.yaml"] {
        std::fs::copy(fixture(&format!("fixtures/slos/{name}")), slo_dir.join(name)).unwrap();
    }
    // The example SLOs name these receivers; nothing listens on their port.
    let config = "slos: [\"slos/*.yaml\"]\nevaluation_interval: 1s\nreceivers:\n  - {name: oncall-email, webhook: {url: 'http://127.0.0.1:9/'}}\n  - {name: payments-webhook, webhook: {url: 'http://127.0.0.1:9/'}}\n";
    let vigil = Vigil::start_with_config(&dir.path().join("data"), config, &[]).await;

    // Ten minutes of checkout traffic: 100 requests and 2 server errors per 15 s.
    let t0 = now_ms() - 10 * 60_000;
    let points =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=40).map(|i| (t0 + i * 15_000, per_step * i as f64)).collect() };
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("http_requests_total", &[("job", "checkout"), ("code", "200")], &points(98.0)),
            series("http_requests_total", &[("job", "checkout"), ("code", "500")], &points(2.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);

    wait_for("an evaluation with data", async || {
        let body = slos(&vigil).await;
        body["slos"].as_array().unwrap().iter().any(|s| s["name"] == "checkout-availability" && s["sli"].is_number())
    })
    .await;
    let body = slos(&vigil).await;
    let all = body["slos"].as_array().unwrap();
    let names: Vec<&str> = all.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for expected in [
        "checkout-availability",
        "checkout-latency",
        "payment-spans",
        "fraud-model-drift",
        "checkout-availability-openslo",
        "checkout-requests-availability",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let availability = all.iter().find(|s| s["name"] == "checkout-availability").unwrap();
    assert!((availability["sli"].as_f64().unwrap() - 0.98).abs() < 1e-9, "{availability}");
    assert!((availability["burn_rates"]["5m"].as_f64().unwrap() - 20.0).abs() < 1e-6, "{availability}");
    assert_eq!(availability["state"], "exhausted");
    assert_eq!(availability["objective"], 0.999);
    let windows: Vec<&String> = availability["burn_rates"].as_object().unwrap().keys().collect();
    assert_eq!(windows, ["1d", "1h", "2h", "30m", "3d", "5m", "6h"]);
    let spans = all.iter().find(|s| s["name"] == "payment-spans").unwrap();
    assert_eq!(spans["state"], "no_data");
    assert!(spans["sli"].is_null());
    let body: Value =
        vigil.client.get(vigil.url("/api/v1/slos/checkout-availability")).send().await.unwrap().json().await.unwrap();
    assert!(body["source"]["yaml"].as_str().unwrap().contains("checkout-availability"));
    assert_eq!(body["alerting"]["page_receivers"], serde_json::json!(["oncall-email"]));
    assert_eq!(vigil.client.get(vigil.url("/api/v1/slos/nope")).send().await.unwrap().status(), 404);

    // The results are series and rows like any other.
    let query: Value = vigil
        .client
        .get(vigil.url("/api/v1/query"))
        .query(&[("query", "vigil_slo_burn_rate{slo=\"checkout-availability\", window=\"5m\"}")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value: f64 = query["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((value - 20.0).abs() < 1e-6, "{query}");
    assert!(vigil.count("SELECT count(*) FROM slo_status WHERE slo = 'checkout-availability'").await >= 1);

    // A broken file never replaces the running set.
    let broken = slo_dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: broken, service: x}\nspec:\n  objectiv: 99\n",
    )
    .unwrap();
    let response = vigil.client.post(vigil.url("/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("broken.yaml:5:3: unknown field `objectiv`"), "{error}");
    let body = slos(&vigil).await;
    assert_eq!(body["reload"]["successful"], false);
    assert!(body["slos"].as_array().unwrap().iter().any(|s| s["name"] == "checkout-availability"));
    let metrics = vigil.own_metrics().await;
    assert!(metrics.contains("vigil_config_last_reload_successful 0"), "{metrics}");

    // Fixing the file is noticed without a signal.
    std::fs::write(&broken, "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: fixed, service: x}\nspec:\n  objective: 99\n  window: 7d\n  sli: {ratio: {bad: 'http_requests_total{code=\"500\"}', total: http_requests_total}}\n").unwrap();
    wait_for("the file change to reload", async || {
        let body = slos(&vigil).await;
        body["reload"]["successful"] == true && body["slos"].as_array().unwrap().iter().any(|s| s["name"] == "fixed")
    })
    .await;

    // vigil validate, as promtool check.
    let output = Command::new(VIGIL)
        .arg("validate")
        .args(["checkout.vigil.yaml", "checkout.openslo.yaml", "checkout.sloth.yaml"].map(|f| slo_dir.join(f)))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&broken, "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: o}\nspec:\n  service: nowhere\n  indicatorRef: x\n  timeWindow: [{duration: 28d, isRolling: true}]\n  budgetingMethod: Occurrences\n  objectives: [{target: 0.99}]\n").unwrap();
    let output = Command::new(VIGIL).arg("validate").arg(&broken).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.yaml:5:12: unresolved Service reference \"nowhere\""), "{stderr}");
}

/// `name → (sli, good, total)` of every SLO that has numbers.
async fn numbers(vigil: &Vigil) -> std::collections::BTreeMap<String, (f64, f64, f64)> {
    let body = slos(vigil).await;
    body["slos"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            Some((s["name"].as_str()?.to_string(), (s["sli"].as_f64()?, s["good"].as_f64()?, s["total"].as_f64()?)))
        })
        .collect()
}

/// Metric-table scans of the SLO evaluator.
fn scan_count(metrics: &str) -> f64 {
    metric_value(metrics, "vigil_slo_scans_total{source=\"table\"}")
}

fn slo_file(count: usize, edited: Option<usize>) -> String {
    (0..count)
        .map(|i| {
            let objective = if Some(i) == edited { "98" } else { "99" };
            format!(
                "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: s{i:03}, service: shard{shard}}}\nspec:\n  objective: {objective}\n  window: 1d\n  sli: {{ratio: {{bad: 'rq_total{{shard=\"{shard}\", code=\"500\"}}', total: 'rq_total{{shard=\"{shard}\"}}'}}}}\n",
                shard = i % 10
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// After SIGTERM and after SIGKILL, 200 SLOs resume from their saved state — none is
/// backfilled again — with the numbers they had; editing one recomputes that one alone.
#[tokio::test]
async fn slo_state_survives_restarts_and_an_edit_recomputes_one_slo() {
    const SLOS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slos.yaml"), slo_file(SLOS, None)).unwrap();
    let config = "slos: [slos.yaml]\nevaluation_interval: 1s\nslo_state_save_interval: 1s\n";
    let data = dir.path().join("data");
    let mut vigil = Vigil::start_with_config(&data, config, &[]).await;
    // Three hours of ten shards, ending five minutes ago: the numbers no longer move.
    let t0 = now_ms() - 185 * 60_000;
    let points =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=720).map(|i| (t0 + i * 15_000, per_step * i as f64)).collect() };
    let timeseries = (0..10)
        .flat_map(|shard| {
            let shard = shard.to_string();
            [
                series("rq_total", &[("shard", &shard), ("code", "200")], &points(100.0)),
                series(
                    "rq_total",
                    &[("shard", &shard), ("code", "500")],
                    &points(1.0 + shard.parse::<f64>().unwrap() / 10.0),
                ),
            ]
        })
        .collect();
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), encode(&WriteRequest { timeseries })).await.0, 204);
    let before = crate::harness::wait_until("all SLOs evaluated with data", 300, async || {
        let numbers = numbers(&vigil).await;
        (numbers.len() == SLOS).then_some(numbers)
    })
    .await;
    let first_run = vigil.own_metrics().await;
    assert_eq!(metric_value(&first_run, "vigil_slo_backfills_total"), SLOS as f64);
    // The 200 SLOs read one table: their backfill shares a scan of it per day read (four),
    // and each cycle one scan (not one per SLO and selector: 400).
    let (table_scans, cycles) =
        (scan_count(&first_run), metric_value(&first_run, "vigil_slo_evaluation_seconds_count"));
    assert!(
        table_scans >= 1.0 && table_scans <= cycles + 8.0,
        "{table_scans} table scans in {cycles} cycles and one backfill of {SLOS} SLOs"
    );

    for kill in [false, true] {
        if kill {
            // Let a periodic save happen after the restart, then die without saving.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            vigil.kill9();
        } else {
            assert!(vigil.terminate().success());
        }
        vigil = Vigil::start_with_config(&data, config, &[]).await;
        let after = crate::harness::wait_until("all SLOs evaluated after the restart", 120, async || {
            let numbers = numbers(&vigil).await;
            (numbers.len() == SLOS).then_some(numbers)
        })
        .await;
        let metrics = vigil.own_metrics().await;
        assert_eq!(metric_value(&metrics, "vigil_slo_resumed"), SLOS as f64, "kill: {kill}");
        assert_eq!(
            metric_value(&metrics, "vigil_slo_backfills_total"),
            0.0,
            "kill: {kill}: SLOs were backfilled again"
        );
        for (name, (sli, good, total)) in &before {
            let (sli2, good2, total2) = after[name];
            assert!(
                (sli - sli2).abs() < 1e-9 && (good - good2).abs() < 1e-6 && (total - total2).abs() < 1e-6,
                "kill: {kill}: {name}: {sli} {good} {total} vs {sli2} {good2} {total2}"
            );
        }
    }

    let earlier = vigil.own_metrics().await;
    let cycles_so_far = |m: &str| {
        metric_value(m, "vigil_slo_evaluation_seconds_count")
            - metric_value(&earlier, "vigil_slo_evaluation_seconds_count")
    };
    // At least three cycles, however long a cycle takes on a loaded machine.
    let later = crate::harness::wait_until("three evaluation cycles", 120, async || {
        let later = vigil.own_metrics().await;
        (cycles_so_far(&later) >= 3.0).then_some(later)
    })
    .await;
    let cycles = cycles_so_far(&later);
    let table_scans = scan_count(&later) - scan_count(&earlier);
    // A scan counted in a cycle not yet finished when the metrics were read: one more.
    assert!(
        table_scans >= cycles - 1.0 && table_scans <= cycles + 1.0,
        "{table_scans} table scans in {cycles} cycles of {SLOS} SLOs"
    );
    // Memory by component: the rollups are sized to their span (3 days of minutes at most,
    // ~72 KB, and hours), the write buffer holds the replayed samples.
    let rollups = metric_value(&later, "vigil_memory_bytes{component=\"slo_rollups\"}");
    assert!(rollups > 0.0 && rollups <= SLOS as f64 * 100_000.0, "{rollups} bytes of rollups for {SLOS} SLOs");
    assert!(metric_value(&later, "vigil_memory_bytes{component=\"write_buffer\"}") > 0.0);
    let resident = metric_value(&later, "vigil_process_resident_memory_bytes");
    assert!(resident > rollups && resident > (16 << 20) as f64, "resident {resident}");
    // Part of it is the program's code mapped, not all of it.
    let mapped = metric_value(&later, "vigil_process_resident_file_bytes");
    assert!(mapped > (1 << 20) as f64 && mapped < resident, "mapped files {mapped} of {resident}");

    std::fs::write(dir.path().join("slos.yaml"), slo_file(SLOS, Some(7))).unwrap();
    let response = vigil.client.post(vigil.url("/-/reload")).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    crate::harness::wait_until("the edited SLO evaluated", 60, async || {
        let body = slos(&vigil).await;
        body["slos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "s007" && s["objective"] == 0.98 && s["sli"].is_number())
            .then_some(())
    })
    .await;
    assert_eq!(
        metric_value(&vigil.own_metrics().await, "vigil_slo_backfills_total"),
        1.0,
        "only the edited SLO is recomputed"
    );
}

/// Late data against a real Prometheus: the last hour arrives after the SLO is loaded, two
/// hours before it arrive later still, and Vigil's SLI and burn rates then equal PromQL's
/// `sum(rate(bad[w])) / sum(rate(total[w]))` over the same samples (within 5 %).
#[tokio::test]
async fn late_samples_give_the_burn_rates_prometheus_computes() {
    use crate::prometheus::{PROMETHEUS, start_prometheus};
    if !crate::harness::require_program(PROMETHEUS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slo.yaml"),
        "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: late, service: shop}\nspec:\n  objective: 99.9\n  window: 1d\n  sli: {ratio: {bad: 'late_errors_total', total: 'late_requests_total'}}\n",
    )
    .unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    let prometheus_port = crate::harness::free_port();
    std::fs::write(dir.path().join("prometheus.yml"), "global: {scrape_interval: 1h}\n").unwrap();
    let _prometheus = start_prometheus(dir.path(), prometheus_port, &["--web.enable-remote-write-receiver"]);
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    crate::prometheus::prometheus_ready(&vigil.client, &prometheus).await;
    wait_for("the SLO evaluated once", async || slos(&vigil).await["slos"][0]["evaluated_at_ms"].is_number()).await;

    // Three hours at 15 s: 100 requests a step; errors at 0.5× the budget's rate, 50× in the
    // last ten minutes.
    let end = now_ms() - 30_000;
    let steps = 720;
    let at = |i: i64| end - (steps - i) * 15_000;
    let (mut requests, mut errors) = (0.0, 0.0);
    let mut points = Vec::new();
    for i in 0..=steps {
        points.push((at(i), requests, errors));
        requests += 100.0;
        errors += if at(i) >= end - 10 * 60_000 { 5.0 } else { 0.05 };
    }
    let write = |from: i64, to: i64| {
        let chosen: Vec<_> = points.iter().filter(|p| p.0 >= from && p.0 < to).collect();
        encode(&WriteRequest {
            timeseries: vec![
                series(
                    "late_requests_total",
                    &[("job", "shop")],
                    &chosen.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
                ),
                series("late_errors_total", &[("job", "shop")], &chosen.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>()),
            ],
        })
    };
    // Prometheus takes them in time order (its head refuses samples an hour older than the newest).
    let mut from = at(0);
    while from <= end {
        assert_eq!(
            send(&vigil.client, &format!("{prometheus}/api/v1/write"), write(from, from + 300_000)).await.0,
            204
        );
        from += 300_000;
    }
    // Vigil: the last hour first, evaluated; then the two hours before it, two hours late.
    let url = vigil.url("/api/v1/write");
    assert_eq!(send(&vigil.client, &url, write(end - 3_600_000, end + 1)).await.0, 204);
    let total_of = async |vigil: &Vigil| slos(vigil).await["slos"][0]["total"].as_f64().unwrap_or(0.0);
    wait_for("the last hour evaluated", async || total_of(&vigil).await >= 24_000.0).await;
    assert_eq!(send(&vigil.client, &url, write(at(0), end - 3_600_000)).await.0, 204);
    wait_for("the late hours counted", async || total_of(&vigil).await >= 72_000.0).await;

    let status = slos(&vigil).await["slos"][0].clone();
    let time = (status["evaluated_at_ms"].as_f64().unwrap() / 1000.0).to_string();
    let promql = async |query: String| -> f64 {
        let body: Value = vigil
            .client
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", query.as_str()), ("time", time.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["result"][0]["value"][1].as_str().unwrap_or_else(|| panic!("{query}: {body}")).parse().unwrap()
    };
    let within = |what: &str, vigil: f64, prometheus: f64| {
        assert!(
            (vigil - prometheus).abs() <= 0.05 * prometheus.abs(),
            "{what}: Vigil {vigil}, Prometheus {prometheus}\n{status}"
        );
    };
    for window in ["5m", "30m", "1h", "2h"] {
        let expected = promql(format!(
            "(sum(rate(late_errors_total[{window}])) / sum(rate(late_requests_total[{window}]))) / 0.001"
        ))
        .await;
        within(&format!("burn rate {window}"), status["burn_rates"][window].as_f64().unwrap(), expected);
    }
    let error_ratio =
        promql("sum(increase(late_errors_total[1d])) / sum(increase(late_requests_total[1d]))".into()).await;
    within("error ratio over the window", 1.0 - status["sli"].as_f64().unwrap(), error_ratio);
    let budget = 1.0 - error_ratio / 0.001;
    within("error budget remaining", status["error_budget_remaining"].as_f64().unwrap(), budget);
    // Every sample of the two late hours (2 series × 480) and those of the last hour already
    // 5 minutes old when written count as late; never more than all that were sent.
    let late = metric_value(&vigil.own_metrics().await, "vigil_slo_late_samples_total");
    assert!((960.0..=2.0 * (steps + 1) as f64).contains(&late), "{late} late samples");
}

/// A reload applies what it can while Vigil runs — the evaluation interval (SLOs and rule
/// groups without their own), scrape targets, definitions named by flags as well as by the
/// file — and names what only a restart applies.
#[tokio::test]
async fn reload_applies_the_evaluation_interval_and_scrape_targets_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let slo = dir.path().join("flagged.yaml");
    std::fs::write(&slo, "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: flagged, service: x}\nspec:\n  objective: 99\n  window: 1h\n  sli: {ratio: {bad: 'errs_total', total: 'reqs_total'}}\n").unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "groups:\n  - name: g\n    rules:\n      - {alert: Always, expr: vector(1)}\n").unwrap();
    let data = dir.path().join("data");
    let config = |extra: &str| format!("evaluation_interval: 1h\nrules: [{}]\n{extra}", rules.display());
    let vigil = Vigil::start_with_config(&data, &config(""), &["--slos", slo.to_str().unwrap()]).await;
    let group_interval = async || -> Value {
        let rules: Value = vigil.client.get(vigil.url("/api/v1/rules")).send().await.unwrap().json().await.unwrap();
        rules["data"]["groups"][0]["interval"].clone()
    };
    assert_eq!(group_interval().await, 3600);
    let evaluated_at = async || -> i64 {
        let body = slos(&vigil).await;
        // Not listed before its first evaluation.
        let flagged = body["slos"].as_array().unwrap().iter().find(|s| s["name"] == "flagged").cloned();
        flagged.and_then(|s| s["evaluated_at_ms"].as_i64()).unwrap_or(0)
    };
    wait_for("the first evaluation", async || evaluated_at().await > 0).await;
    let first = evaluated_at().await;

    // Shorter interval, Vigil scraping its own /metrics, and a storage setting changed.
    let scrape = format!(
        "scrape_configs:\n  - job_name: self\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{}']}}]\nstorage: {{retention: 12d}}\n",
        vigil.addr
    );
    std::fs::write(data.with_extension("yaml"), config(&scrape).replace("1h", "1s")).unwrap();
    let response = vigil.client.post(vigil.url("/-/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["restart_needed"], serde_json::json!(["storage"]), "{answer}");
    assert!(vigil.log_text().contains("takes effect at the next restart"), "{}", vigil.log_text());
    assert_eq!(group_interval().await, 1, "rule groups without an interval follow the new one");
    wait_for("an evaluation on the new period", async || evaluated_at().await > first).await;
    let second = evaluated_at().await;
    wait_for("another one a second later", async || evaluated_at().await > second).await;
    // The SLO named by --slos, not by the file, is still there after the reload.
    assert!(slos(&vigil).await["slos"].as_array().unwrap().iter().any(|s| s["name"] == "flagged"));
    wait_for("the new scrape target", async || {
        let targets: Value = vigil.client.get(vigil.url("/api/v1/targets")).send().await.unwrap().json().await.unwrap();
        targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["labels"]["job"] == "self" && t["health"] == "up")
    })
    .await;
    // Dropped again: the target goes away.
    std::fs::write(data.with_extension("yaml"), config("storage: {retention: 12d}\n")).unwrap();
    let answer: Value = vigil.client.post(vigil.url("/-/reload")).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["restart_needed"], serde_json::json!(["storage"]), "still, until a restart");
    let targets: Value = vigil.client.get(vigil.url("/api/v1/targets")).send().await.unwrap().json().await.unwrap();
    assert!(targets["data"]["activeTargets"].as_array().unwrap().is_empty(), "{targets}");
}

/// `vigil gate` and `GET /api/v1/gate` for a service whose SLO has an error-budget policy:
/// allowed while the budget is above `freeze_below`, frozen (exit 1, the reason printed, a
/// `SLODeployFreeze` alert) once errors take it below; a service without SLOs is no answer.
#[tokio::test]
async fn the_deploy_gate_follows_the_budget_policy() {
    let dir = tempfile::tempdir().unwrap();
    let slo = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: pay, service: checkout}\nspec:\n  objective: 99\n  window: 1h\n  sli:\n    ratio: {bad: 'pay_requests_total{code=\"500\"}', total: 'pay_requests_total'}\n  alerting: {min_events: 1}\n  policy: {freeze_below: 50%}\n";
    std::fs::write(dir.path().join("slo.yaml"), slo).unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    let gate = |service: &str| {
        let output =
            Command::new(VIGIL).args(["gate", "--service", service, "--url", &vigil.url("")]).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let write = |from_ms: i64, steps: i64, errors_per_step: f64, base: (f64, f64)| {
        let ok: Vec<(i64, f64)> = (0..=steps).map(|i| (from_ms + i * 10_000, base.0 + 100.0 * i as f64)).collect();
        let bad: Vec<(i64, f64)> =
            (0..=steps).map(|i| (from_ms + i * 10_000, base.1 + errors_per_step * i as f64)).collect();
        encode(&WriteRequest {
            timeseries: vec![
                series("pay_requests_total", &[("code", "200")], &ok),
                series("pay_requests_total", &[("code", "500")], &bad),
            ],
        })
    };
    // Six minutes without errors: the whole budget left.
    let t0 = now_ms() - 12 * 60_000;
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), write(t0, 36, 0.0, (0.0, 0.0))).await.0, 204);
    wait_for("a full budget", async || {
        slos(&vigil).await["slos"][0]["error_budget_remaining"].as_f64().is_some_and(|b| b > 0.99)
    })
    .await;
    let (code, stdout, _) = gate("checkout");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("allowed"), "{stdout}");
    let decision = vigil.get_json("/api/v1/gate?service=checkout").await;
    assert_eq!(decision["allow"], true, "{decision}");
    assert_eq!(decision["slos"][0]["freeze_below"], 0.5, "{decision}");

    // Then 3 errors in every 100 requests: 3× the 1 % budget, none of it left.
    let later = t0 + 36 * 10_000;
    let body = write(later + 10_000, 36, 3.0, (3600.0, 0.0));
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    wait_for("the budget below half", async || {
        slos(&vigil).await["slos"][0]["error_budget_remaining"].as_f64().is_some_and(|b| b < 0.5)
    })
    .await;
    let (code, stdout, _) = gate("checkout");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("frozen") && stdout.contains("below the policy's 50%"), "{stdout}");
    let decision = vigil.get_json("/api/v1/gate?service=checkout").await;
    assert_eq!(decision["allow"], false, "{decision}");
    assert_eq!(decision["slos"][0]["frozen"], true, "{decision}");
    wait_for("the freeze alert", async || {
        let alerts = vigil.get_json("/api/v1/alerts").await;
        alerts["data"]["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "SLODeployFreeze" && a["labels"]["severity"] == "info" && a["state"] == "firing"
        })
    })
    .await;
    let page = vigil.client.get(vigil.url("/slos/pay")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Deploys of this service are frozen"), "{page}");

    // No SLO of that service: no answer, never a silent pass.
    let (code, _, stderr) = gate("billing");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("404") && stderr.contains("no SLO of service"), "{stderr}");
    let missing = vigil.client.get(vigil.url("/api/v1/gate")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let (code, _, stderr) = gate_unreachable();
    assert_eq!(code, Some(2), "{stderr}");
}

/// `vigil gate` against a port nothing listens on.
fn gate_unreachable() -> (Option<i32>, String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = Command::new(VIGIL)
        .args(["gate", "--service", "checkout", "--url", &format!("http://127.0.0.1:{port}"), "--timeout-seconds", "2"])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Burn attribution: the route that carries 90 % of the bad events is named first, with its
/// share, by the API, the SLO page and the page alert's `top_contributors`; an exemplar of its
/// series links a trace.
#[tokio::test]
async fn attribution_names_the_route_that_burns_and_an_exemplar_trace() {
    use crate::remote_write_client::{Exemplar, Label};
    let dir = tempfile::tempdir().unwrap();
    let slo = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: shop, service: shop}\nspec:\n  objective: 99.9\n  window: 1d\n  sli:\n    ratio: {bad: 'shop_requests_total{code=\"500\"}', total: 'shop_requests_total'}\n  alerting:\n    min_events: 1\n    conditions: [{severity: page, burn_rate: 14.4, long_window: 1h, short_window: 5m}]\n";
    std::fs::write(dir.path().join("slo.yaml"), slo).unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    // Ten minutes at 10 s steps: /pay fails 9 times a step on two instances, /cart once, /home never.
    let t0 = now_ms() - 10 * 60_000;
    let counter =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=60).map(|i| (t0 + i * 10_000, per_step * i as f64)).collect() };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut pay_errors =
        series("shop_requests_total", &[("route", "/pay"), ("code", "500"), ("instance", "a")], &counter(4.5));
    pay_errors.exemplars = vec![Exemplar {
        labels: vec![
            Label { name: "trace_id".into(), value: trace.into() },
            Label { name: "span_id".into(), value: "00f067aa0ba902b7".into() },
        ],
        value: 1.0,
        timestamp: now_ms() - 60_000,
    }];
    let body = encode(&WriteRequest {
        timeseries: vec![
            pay_errors,
            series("shop_requests_total", &[("route", "/pay"), ("code", "500"), ("instance", "b")], &counter(4.5)),
            series("shop_requests_total", &[("route", "/cart"), ("code", "500"), ("instance", "a")], &counter(1.0)),
            series("shop_requests_total", &[("route", "/pay"), ("code", "200"), ("instance", "a")], &counter(90.0)),
            series("shop_requests_total", &[("route", "/cart"), ("code", "200"), ("instance", "a")], &counter(99.0)),
            series("shop_requests_total", &[("route", "/home"), ("code", "200"), ("instance", "b")], &counter(100.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);

    let attribution = vigil.get_json("/api/v1/slos/shop/attribution?window=1h").await;
    let first = &attribution["dimensions"][0];
    assert_eq!(first["label"], "route", "{attribution}");
    assert_eq!(first["contributors"][0]["value"], "/pay", "{attribution}");
    let share = first["contributors"][0]["share"].as_f64().unwrap();
    assert!((share - 0.9).abs() < 1e-9, "/pay carries 9 of every 10 bad events: {attribution}");
    assert!(
        attribution["dimensions"].as_array().unwrap().iter().all(|d| d["label"] != "code"),
        "code is 500 on every bad series"
    );
    assert_eq!(attribution["exemplars"][0]["trace_id"], trace, "{attribution}");

    // The page alert says so, and the SLO page shows it with the trace linked.
    wait_for("the page alert with its top contributors", async || {
        let alerts = vigil.get_json("/api/v1/alerts").await;
        alerts["data"]["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["severity"] == "page"
                && a["annotations"]["top_contributors"].as_str().is_some_and(|t| t.starts_with("route=/pay 90%"))
        })
    })
    .await;
    let page = vigil.client.get(vigil.url("/slos/shop")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"attribution\"") && page.contains("/pay") && page.contains("90.0%"), "{page}");
    assert!(page.contains(&format!("href=\"/traces/{trace}\"")), "{page}");

    // Bounds: a window past the SLO's, or no duration, is a 400; an unknown SLO a 404.
    for (path, status) in [
        ("/api/v1/slos/shop/attribution?window=2d", 400),
        ("/api/v1/slos/shop/attribution?window=soon", 400),
        ("/api/v1/slos/nope/attribution", 404),
    ] {
        assert_eq!(vigil.client.get(vigil.url(path)).send().await.unwrap().status().as_u16(), status, "{path}");
    }
}

/// A composite SLO through the real binary: two parts with known ratios, weighted by
/// declared weights, give the weighted mean of their SLIs.
#[tokio::test]
async fn a_composite_slo_has_the_weighted_sli_of_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let part = |name: &str, metric: &str| {
        format!(
            "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {name}, service: shop}}\nspec:\n  objective: 90\n  window: 1h\n  sli: {{ratio: {{bad: '{metric}{{code=\"500\"}}', total: '{metric}'}}}}\n"
        )
    };
    let composite = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: shop-journey, service: shop}\nspec:\n  objective: 90\n  window: 1h\n  sli: {composite: {weighting: declared, parts: [{slo: browse, weight: 3}, {slo: buy}]}}\n";
    let text = [part("browse", "browse_total"), part("buy", "buy_total"), composite.to_string()].join("---\n");
    std::fs::write(dir.path().join("slo.yaml"), text).unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    // browse: 1 bad in 100 (99 %); buy: 10 bad in 100 (90 %), for ten minutes.
    let t0 = now_ms() - 10 * 60_000;
    let counter =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=60).map(|i| (t0 + i * 10_000, per_step * i as f64)).collect() };
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("browse_total", &[("code", "200")], &counter(99.0)),
            series("browse_total", &[("code", "500")], &counter(1.0)),
            series("buy_total", &[("code", "200")], &counter(90.0)),
            series("buy_total", &[("code", "500")], &counter(10.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let expected = (3.0 * 0.99 + 0.90) / 4.0;
    wait_for("the composite's SLI", async || {
        let all = slos(&vigil).await;
        let sli = |name: &str| {
            all["slos"].as_array().unwrap().iter().find(|s| s["name"] == name).and_then(|s| s["sli"].as_f64())
        };
        matches!((sli("browse"), sli("buy"), sli("shop-journey")),
            (Some(a), Some(b), Some(c)) if (a - 0.99).abs() < 1e-9 && (b - 0.90).abs() < 1e-9 && (c - expected).abs() < 1e-9)
    })
    .await;
}

/// A compliance report of the current month through the binary: SLI, budget spent and bad
/// minutes as the data says, as JSON, as CSV and on the `/reports` page.
#[tokio::test]
async fn a_report_gives_the_period_figures_as_json_csv_and_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let slo = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: orders, service: shop, labels: {team: web}}\nspec:\n  objective: 99\n  window: 30d\n  sli: {ratio: {bad: 'orders_total{code=\"500\"}', total: 'orders_total'}}\n";
    std::fs::write(dir.path().join("slo.yaml"), slo).unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    // Ten minutes of 97 good and 3 bad requests a minute: every minute is below 99 %.
    let t0 = (now_ms() / 60_000 - 10) * 60_000;
    let counter = |per_minute: f64| -> Vec<(i64, f64)> {
        (0..=40).map(|i| (t0 + i * 15_000, per_minute * i as f64 / 4.0)).collect()
    };
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("orders_total", &[("code", "200")], &counter(97.0)),
            series("orders_total", &[("code", "500")], &counter(3.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);

    // The month holding most of those ten minutes (so a month that began a minute ago does not
    // leave the report empty).
    let month = chrono::DateTime::from_timestamp_millis(t0 + 5 * 60_000).unwrap().format("%Y-%m").to_string();
    let report = vigil.get_json(&format!("/api/v1/reports?team=web&period={month}")).await;
    let row = &report["slos"][0];
    assert_eq!(row["slo"], "orders", "{report}");
    let total = row["total"].as_f64().unwrap();
    assert!((500.0..=1000.0).contains(&total), "at least five and at most the ten minutes written: {report}");
    assert!((row["sli"].as_f64().unwrap() - 0.97).abs() < 1e-9, "{report}");
    assert!((row["budget_spent"].as_f64().unwrap() - 3.0).abs() < 1e-9, "3 % bad of a 1 % budget: {report}");
    assert_eq!(row["bad_minutes"].as_f64().unwrap(), (total / 100.0).round(), "every minute was bad: {report}");
    assert_eq!(row["met"], false);
    assert_eq!(row["pages"], 0, "a 3× burn pages nobody");
    assert_eq!(report["services"][0]["name"], "shop");
    assert_eq!(report["teams"][0]["missed"], 1);
    assert_eq!(
        vigil.get_json(&format!("/api/v1/reports?team=other&period={month}")).await["slos"],
        serde_json::json!([])
    );

    let csv = vigil.client.get(vigil.url(&format!("/api/v1/reports?format=csv&period={month}"))).send().await.unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let line = csv.lines().nth(1).unwrap();
    assert!(line.contains(",orders,shop,web,0.99,") && line.contains(",false,0,"), "{csv}");

    for (path, status) in [
        ("/api/v1/reports?period=2026-13", 400),
        ("/api/v1/reports?tz=Mars/Olympus", 400),
        ("/api/v1/reports?format=xml", 400),
    ] {
        assert_eq!(vigil.client.get(vigil.url(path)).send().await.unwrap().status().as_u16(), status, "{path}");
    }
    let page = vigil.client.get(vigil.url("/reports")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("id=\"report-slos\"")
            && page.contains("data-verdict=\"missed\"")
            && page.contains("id=\"previous\""),
        "{page}"
    );
    assert!(page.contains("97.000%") && page.contains("300.0%"), "{page}");
}

/// Budget corrections through the real binary: a mute-only correction silences the burning
/// SLO's page; an exclude-only one over a burst of errors gives back exactly the budget the
/// burst took (closed form below), shows on the page and in the month's report, survives a
/// restart, and deleting it brings the burst back. Bad documents get a 4xx with the place.
#[tokio::test]
async fn a_correction_over_a_burst_restores_the_budget_and_a_muting_one_silences_the_page() {
    let dir = tempfile::tempdir().unwrap();
    // A file's correction (long past, so it changes no figure) cannot be deleted by the API.
    let slo = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: burst, service: shop}\nspec:\n  objective: 99\n  window: 1h\n  sli: {ratio: {bad: 'burst_total{code=\"500\"}', total: 'burst_total'}}\n  alerting:\n    min_events: 1\n    conditions: [{severity: page, burn_rate: 14.4, long_window: 1h, short_window: 5m}]\n---\napiVersion: vigil/v1\nkind: Correction\nmetadata: {name: old-window}\nspec: {reason: migration, start: '2020-01-01T00:00:00Z', duration: 1h, scope: {slos: [burst]}}\n";
    std::fs::write(dir.path().join("slo.yaml"), slo).unwrap();
    let config = "slos: [slo.yaml]\nevaluation_interval: 1s\n";
    let mut vigil = Vigil::start_with_config(&dir.path().join("data"), config, &[]).await;
    // Twenty minutes at 10 s steps: 999 good and 1 bad a step, except the last five minutes
    // (steps 91..=120), 1,000 bad and no good. Outside the burst: 89,910 good of 90,000
    // (SLI 0.999, budget 1 − 0.001/0.01 = 0.9); with it 89,910 of 120,000 (budget −24.075).
    let t0 = (now_ms() / 60_000 - 20) * 60_000;
    let burst = |i: i64| i > 90;
    let mut good = vec![(t0, 0.0)];
    let mut bad = vec![(t0, 0.0)];
    for i in 1..=120 {
        let (g, b) = if burst(i) { (0.0, 1000.0) } else { (999.0, 1.0) };
        good.push((t0 + i * 10_000, good.last().unwrap().1 + g));
        bad.push((t0 + i * 10_000, bad.last().unwrap().1 + b));
    }
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("burst_total", &[("code", "200")], &good),
            series("burst_total", &[("code", "500")], &bad),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let budget = async |vigil: &Vigil| slos(vigil).await["slos"][0]["error_budget_remaining"].as_f64();
    wait_for("the burst's budget", async || budget(&vigil).await.is_some_and(|b| (b + 24.075).abs() < 1e-9)).await;
    let page_alert = async |vigil: &Vigil| {
        let alerts = vigil.get_json("/api/v1/alerts").await;
        alerts["data"]["alerts"].as_array().unwrap().iter().find(|a| a["labels"]["severity"] == "page").cloned()
    };
    wait_for("the page", async || page_alert(&vigil).await.is_some_and(|a| a["state"] == "firing")).await;

    // Mute only: the page is silenced by the correction's silence; the budget stays.
    let post = async |vigil: &Vigil, body: String| {
        let response = vigil.client.post(vigil.url("/api/v1/corrections")).body(body).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    let iso = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let mute = format!(
        "apiVersion: vigil/v1\nkind: Correction\nmetadata: {{name: quiet}}\nspec:\n  reason: investigating\n  created_by: ana\n  start: '{}'\n  duration: 1h\n  scope: {{matchers: ['service=\"shop\"']}}\n  effect: [mute]\n",
        iso(now_ms() - 60_000)
    );
    let (status, created) = post(&vigil, mute).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["exclude"].as_bool(), created["mute"].as_bool()), (Some(false), Some(true)), "{created}");
    wait_for("the page silenced by the correction", async || {
        page_alert(&vigil).await.is_some_and(|a| a["silenced"] == true)
    })
    .await;
    let silences = vigil.get_json("/api/v1/silences").await;
    let ours = silences["data"]
        .as_array()
        .or(silences.as_array())
        .unwrap()
        .iter()
        .find(|s| s["createdBy"] == "correction/quiet")
        .cloned()
        .unwrap_or_else(|| panic!("{silences}"));
    assert!(ours["comment"].as_str().unwrap().starts_with("investigating"), "{ours}");
    assert!((budget(&vigil).await.unwrap() + 24.075).abs() < 1e-9, "muting changes no figure");

    // Exclude the burst: exactly the budget without it.
    let exclude = serde_json::json!({
        "apiVersion": "vigil/v1", "kind": "Correction", "metadata": {"name": "burst-fix"},
        "spec": {"reason": "load test against production", "start": iso(t0 + 15 * 60_000), "end": iso(t0 + 20 * 60_000),
                 "scope": {"slos": ["burst"]}, "effect": ["exclude"]}
    });
    let (status, created) = post(&vigil, exclude.to_string()).await;
    assert_eq!(status, 201, "{created}");
    wait_for("the budget without the burst", async || budget(&vigil).await.is_some_and(|b| (b - 0.9).abs() < 1e-9))
        .await;
    let status = &slos(&vigil).await["slos"][0];
    assert_eq!(status["total"].as_f64(), Some(90_000.0), "{status}");
    let listed = vigil.get_json("/api/v1/corrections?slo=burst").await;
    let names: Vec<&str> =
        listed["corrections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["old-window", "quiet", "burst-fix"], "{listed}");
    let fix = &listed["corrections"][2];
    assert_eq!(fix["occurrences"][0]["start_ms"].as_i64(), Some(t0 + 15 * 60_000), "{listed}");
    let page = vigil.client.get(vigil.url("/slos/burst")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"correction-list\"") && page.contains("load test against production"), "{page}");
    assert!(page.contains("class=\"band\"") && page.contains("correction burst-fix (exclude)"), "{page}");
    // The charts read as if the burst never happened: recomputed with the correction, every
    // point of the budget is the 90 % left without it (the stored rows said −2,407.5 %).
    let budget_chart = page.split("aria-label=\"error budget left\"").nth(1).unwrap();
    let points = budget_chart.split("data-points=\"").nth(1).unwrap().split('"').next().unwrap();
    let values: Vec<f64> = points.split(' ').filter_map(|p| p.split(':').nth(1)?.parse().ok()).collect();
    assert!(!values.is_empty() && values.iter().all(|v| (v - 0.9).abs() < 1e-9), "{points}");
    let month = chrono::DateTime::from_timestamp_millis(t0 + 17 * 60_000).unwrap().format("%Y-%m").to_string();
    let report = vigil.get_json(&format!("/api/v1/reports?period={month}")).await;
    let row = &report["slos"][0];
    assert_eq!(row["corrections"], serde_json::json!(["burst-fix"]), "{report}");
    let bad_events = row["total"].as_f64().unwrap() - row["good"].as_f64().unwrap();
    assert!(bad_events <= 90.0, "the burst's 30,000 bad events are not in the report: {report}");

    // Refused: not a correction, an unknown SLO (with the closest name), a taken name, a
    // file's correction, one that does not exist.
    let (status, error) = post(&vigil, "apiVersion: vigil/v1\nkind: Correction\nmetadata: {name: x}\nspec:\n  reason: r\n  start: soon\n  duration: 1h\n  scope: {slos: [burst]}\n".into()).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("request:6:"), "{error}");
    let (status, error) =
        post(&vigil, exclude.to_string().replace("burst-fix", "other").replace("[\"burst\"]", "[\"bursts\"]")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["hint"], "did you mean `burst`?", "{error}");
    assert_eq!(post(&vigil, exclude.to_string()).await.0, 409);
    for (name, status) in [("old-window", 409), ("nope", 404)] {
        let response = vigil.client.delete(vigil.url(&format!("/api/v1/corrections/{name}"))).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
    }

    // A restart keeps the API's corrections and the corrected figures.
    vigil.terminate();
    drop(vigil);
    let vigil = Vigil::start_with_config(&dir.path().join("data"), config, &[]).await;
    wait_for("the corrected budget after a restart", async || {
        budget(&vigil).await.is_some_and(|b| (b - 0.9).abs() < 1e-9)
    })
    .await;
    // Deleted, the burst counts again.
    let response = vigil.client.delete(vigil.url("/api/v1/corrections/burst-fix")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    wait_for("the burst back in the budget", async || budget(&vigil).await.is_some_and(|b| (b + 24.075).abs() < 1e-9))
        .await;
}

/// Backtesting through the real binary: two hours with one ten-minute outage replayed
/// through the SLO's policy give one page, from the outage's first minute to five minutes
/// after it (closed form: 1h burn 16.7× and 5m burn 1,000× at its first minute), and the
/// budget-exhausted ticket from that minute (one bad minute in 61 at a 0.1 % budget); a
/// proposal with a threshold no burn reaches pages none; the CLI and the page say the same.
#[tokio::test]
async fn a_backtest_replays_the_policy_and_a_proposal_over_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    let slo = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: api, service: api}\nspec:\n  objective: 99.9\n  window: 1d\n  sli: {ratio: {bad: 'api_requests_total{code=\"500\"}', total: 'api_requests_total'}}\n  alerting:\n    conditions: [{severity: page, burn_rate: 14.4, long_window: 1h, short_window: 5m}]\n";
    std::fs::write(dir.path().join("slo.yaml"), slo).unwrap();
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), "slos: [slo.yaml]\nevaluation_interval: 1s\n", &[]).await;
    // 100 requests a minute for two hours, one sample a minute; minutes 61..=70 all fail.
    let t0 = (now_ms() / 60_000 - 125) * 60_000;
    let outage = t0 + 60 * 60_000;
    let (mut good, mut bad) = (vec![(t0, 0.0)], vec![(t0, 0.0)]);
    for m in 1..=120 {
        let failing = m > 60 && m <= 70;
        good.push((t0 + m * 60_000, good.last().unwrap().1 + if failing { 0.0 } else { 100.0 }));
        bad.push((t0 + m * 60_000, bad.last().unwrap().1 + if failing { 100.0 } else { 0.0 }));
    }
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("api_requests_total", &[("code", "200")], &good),
            series("api_requests_total", &[("code", "500")], &bad),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let iso = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let range = format!("from={}&to={}", iso(t0), iso(t0 + 120 * 60_000));
    let proposal = slo.replace("burn_rate: 14.4", "burn_rate: 2000");
    let response = vigil
        .client
        .post(vigil.url(&format!("/api/v1/slos/api/backtest?{}", range.replace('+', "%2B"))))
        .body(proposal.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    let alerts = answer["current"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "{answer}");
    let page = alerts.iter().find(|a| a["severity"] == "page").unwrap();
    assert_eq!(page["started_ms"].as_i64(), Some(outage + 60_000), "{answer}");
    assert_eq!(page["ended_ms"].as_i64(), Some(outage + 15 * 60_000), "{answer}");
    assert!((page["peak_value"].as_f64().unwrap() - (10.0 / 60.0) / 0.001).abs() < 1e-6, "{answer}");
    let exhausted = alerts.iter().find(|a| a["alertname"] == "SLOErrorBudgetExhausted").unwrap();
    assert_eq!(exhausted["started_ms"].as_i64(), Some(outage + 60_000), "{answer}");
    assert!((exhausted["budget_at_start"].as_f64().unwrap() - (1.0 - 1000.0 / 61.0)).abs() < 1e-9, "{answer}");
    assert_eq!(answer["current"]["totals"]["pages"], 1);
    assert_eq!(answer["current"]["totals"]["tickets"], 1);
    assert_eq!(answer["proposed"]["totals"]["pages"], 0, "{answer}");

    // The CLI, on the same server.
    std::fs::write(dir.path().join("proposal.yaml"), &proposal).unwrap();
    let output = Command::new(VIGIL)
        .args(["slo", "backtest"])
        .arg(dir.path().join("slo.yaml"))
        .args(["--from", &iso(t0), "--to", &iso(t0 + 120 * 60_000), "--url", &vigil.url("")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 pages, 1 tickets") && stdout.contains("SLOErrorBudgetExhausted"), "{stdout}");
    let output = Command::new(VIGIL)
        .args(["slo", "backtest", "--url", &vigil.url(""), "--from", "yesterday"])
        .arg(dir.path().join("proposal.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a bad time is no answer");
    assert!(String::from_utf8_lossy(&output.stderr).contains("400"));

    // The page offers it, and compares a posted proposal.
    let slo_page = vigil.client.get(vigil.url("/slos/api")).send().await.unwrap().text().await.unwrap();
    assert!(slo_page.contains("href=\"/slos/api/backtest\""), "{slo_page}");
    let page = vigil
        .client
        .post(vigil.url(&format!("/slos/api/backtest?{}", range.replace('+', "%2B"))))
        .form(&[("yaml", proposal.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("would have paged <b>1</b> time") && page.contains("the proposed one, <b>0</b>"), "{page}");

    // Bounds: a range past 92 days, or backwards; a proposal that is not an SLO.
    for (query, body) in [
        ("from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z", ""),
        (&format!("from={}&to={}", t0 / 1000 + 60, t0 / 1000) as &str, ""),
        ("", "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: x}\n"),
    ] {
        let response = vigil
            .client
            .post(vigil.url(&format!("/api/v1/slos/api/backtest?{query}")))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["hint"].is_string(), "{error}");
    }
    assert_eq!(vigil.client.post(vigil.url("/api/v1/slos/nope/backtest")).send().await.unwrap().status().as_u16(), 404);
}
