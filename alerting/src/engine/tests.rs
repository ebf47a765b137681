//! The engine end to end in one process: SLO and rule alerts through the dispatcher to a
//! webhook server of the test's own, on a manual clock, across restarts.

use std::sync::atomic::AtomicU16;

use axum::Json;
use axum::extract::State as AxumState;
use vigil_query::QueryOptions;
use vigil_query::promql::{EvalRange, PromResult};
use vigil_query::slo::evaluate::ConditionStatus;
use vigil_query::slo::{SloDefinition, SloState, SloStatus};
use vigil_storage::clock::ManualClock;
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageOptions, WriteBatch};

use super::*;

const T0: i64 = 1_800_000_000_000;

#[derive(Clone, Default)]
struct Hook {
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    status: Arc<AtomicU16>,
}

async fn webhook() -> (String, Hook) {
    let hook = Hook { status: Arc::new(AtomicU16::new(200)), ..Default::default() };
    let app = axum::Router::new()
        .route(
            "/alerts",
            axum::routing::post(|AxumState(hook): AxumState<Hook>, Json(body): Json<serde_json::Value>| async move {
                hook.received.lock().push(body);
                axum::http::StatusCode::from_u16(hook.status.load(Ordering::SeqCst))
                    .unwrap_or(axum::http::StatusCode::OK)
            }),
        )
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hook)
}

async fn engine(dir: &std::path::Path) -> QueryEngine {
    let mut options = StorageOptions::new(dir.join("data"));
    options.retention = Duration::ZERO;
    QueryEngine::new(Storage::open(options).await.unwrap(), QueryOptions::default()).unwrap()
}

fn config(url: &str, rules: &str) -> AlertingConfig {
    let yaml = format!(
        "receivers:\n  - name: hook\n    webhook: {{url: '{url}'}}\nroute:\n  receiver: hook\n  group_by: [alertname, slo]\n  group_wait: 10s\n  group_interval: 1m\n  repeat_interval: 4h\n"
    );
    #[derive(serde::Deserialize)]
    struct Partial {
        receivers: Vec<ReceiverConfig>,
        route: RouteConfig,
    }
    let partial: Partial = serde_saphyr::from_str(&yaml).unwrap();
    let groups = if rules.is_empty() { Vec::new() } else { crate::rules::parse("rules.yaml", rules).unwrap() };
    AlertingConfig { receivers: partial.receivers, route: Some(partial.route), inhibit_rules: None, groups }
}

fn definition() -> Arc<SloDefinition> {
    let text = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: checkout, service: checkout}\nspec:\n  objective: 99.9\n  window: 30d\n  sli:\n    ratio:\n      bad: errors_total\n      total: requests_total\n";
    Arc::new(vigil_query::slo::load_texts(&[("slo.yaml".into(), text.into())], None).unwrap().remove(0))
}

fn status(burn: f64, severities: &[&'static str]) -> SloStatus {
    let condition = |severity: &'static str, threshold: f64| ConditionStatus {
        severity,
        burn_rate_threshold: threshold,
        long_window: "1h".into(),
        short_window: "5m".into(),
        long_burn_rate: Some(burn),
        short_burn_rate: Some(burn),
        long_window_events: 10_000.0,
        active: severities.contains(&severity) && burn >= threshold,
    };
    SloStatus {
        name: "checkout".into(),
        group: BTreeMap::new(),
        service: "checkout".into(),
        description: String::new(),
        labels: BTreeMap::new(),
        objective: 0.999,
        window: "30d".into(),
        sli: Some(1.0 - burn * 0.001),
        good: 1000.0,
        total: 1000.0,
        error_budget_remaining: Some(0.5),
        burn_rates: [("1h".to_string(), Some(burn))].into(),
        time_to_exhaustion_seconds: None,
        state: if burn > 1.0 { SloState::Burning } else { SloState::Ok },
        backfill_progress: None,
        error: None,
        conditions: vec![condition("page", 14.4), condition("ticket", 3.0)],
        evaluated_at_ms: 0,
    }
}

fn open(engine: &QueryEngine, dir: &std::path::Path, clock: &Arc<ManualClock>, url: &str, rules: &str) -> Alerting {
    let mut options = AlertingOptions::new(dir.join("alerting"));
    options.external_url = "http://vigil.test".into();
    options.max_attempts = 2;
    let alerting = Alerting::open(engine.clone(), options, clock.clone());
    alerting.configure(&config(url, rules)).unwrap();
    alerting
}

async fn evaluate_groups(alerting: &Alerting) {
    for handle in alerting.evaluate_due_groups() {
        handle.await.unwrap();
    }
}

async fn step(alerting: &Alerting, clock: &ManualClock, by_secs: u64) {
    clock.advance(Duration::from_secs(by_secs));
    alerting.dispatch_due();
    alerting.deliveries_idle().await;
}

#[tokio::test]
async fn slo_page_is_notified_once_across_a_restart_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let (url, hook) = webhook().await;
    let clock = Arc::new(ManualClock::new(T0));
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    let slo = [definition()];

    alerting.evaluate_slos(&slo, &[status(20.0, &["page"])]).await;
    step(&alerting, &clock, 5).await;
    assert!(hook.received.lock().is_empty(), "group_wait not over");
    step(&alerting, &clock, 5).await;
    let first = hook.received.lock().clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["status"], "firing");
    assert_eq!(first[0]["groupLabels"], serde_json::json!({"alertname": "SLOBurnRate", "slo": "checkout"}));
    assert_eq!(first[0]["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(first[0]["alerts"][0]["generatorURL"], "http://vigil.test/slos/checkout");
    assert_eq!(first[0]["externalURL"], "http://vigil.test");

    // Restart: the state and the notification log come back from disk.
    drop(alerting);
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    alerting.evaluate_slos(&slo, &[status(20.0, &["page"])]).await;
    for _ in 0..5 {
        step(&alerting, &clock, 30).await;
    }
    assert_eq!(hook.received.lock().len(), 1, "no re-page after the restart");
    assert_eq!(alerting.alerts()[0].active_at, crate::notify::rfc3339_ms(T0), "the alert kept its start");

    alerting.evaluate_slos(&slo, &[status(0.5, &[])]).await;
    step(&alerting, &clock, 60).await;
    let all = hook.received.lock().clone();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["status"], "resolved");
    assert_ne!(all[1]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
}

#[tokio::test]
async fn page_inhibits_ticket_and_silences_mute() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let (url, hook) = webhook().await;
    let clock = Arc::new(ManualClock::new(T0));
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    let slo = [definition()];
    alerting.evaluate_slos(&slo, &[status(20.0, &["page", "ticket"])]).await;
    step(&alerting, &clock, 10).await;
    let received = hook.received.lock().clone();
    let severities: Vec<&str> = received
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap())
        .map(|a| a["labels"]["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["page"], "the ticket of the same SLO is inhibited");
    let views = alerting.alerts();
    let ticket = views.iter().find(|a| a.labels["severity"] == "ticket").unwrap();
    assert!(ticket.inhibited);

    // A silence on the SLO: the next alert of the group is not sent.
    let request: SilenceRequest = serde_json::from_value(serde_json::json!({
        "matchers": ["slo=\"checkout\""], "endsAt": "2100-01-01T00:00:00Z", "createdBy": "test", "comment": "maintenance"
    }))
    .unwrap();
    let id = alerting.create_silence(request).await.unwrap();
    let mut two = status(20.0, &["page"]);
    two.group = [("region".to_string(), "eu".to_string())].into();
    alerting.evaluate_slos(&slo, &[status(20.0, &["page"]), two]).await;
    step(&alerting, &clock, 60).await;
    assert_eq!(hook.received.lock().len(), 1, "silenced: nothing new sent");
    assert!(alerting.alerts().iter().all(|a| a.silenced_by == [id.clone()]));
    assert_eq!(alerting.silences().len(), 1);
}

fn posted(json: serde_json::Value) -> Vec<crate::posted::PostedAlert> {
    serde_json::from_value(json).unwrap()
}

#[tokio::test]
async fn posted_alerts_fire_resolve_and_time_out_like_alertmanagers() {
    use crate::posted::{PostedAlertError, RESOLVE_TIMEOUT_MS};
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let (url, hook) = webhook().await;
    let clock = Arc::new(ManualClock::new(T0));
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    let disk = serde_json::json!({"alertname": "DiskFull", "instance": "db-1", "severity": "page"});
    let cpu = serde_json::json!({"alertname": "CpuHigh", "instance": "web-1", "empty": ""});
    let ends = crate::notify::rfc3339_ms(T0 + 4 * 60_000);
    let taken = alerting
        .receive_alerts(posted(serde_json::json!([
            {"labels": disk, "annotations": {"summary": "disk"}, "startsAt": crate::notify::rfc3339_ms(T0 - 60_000),
             "endsAt": ends, "generatorURL": "http://prometheus:9090/graph"},
            {"labels": cpu},
        ])))
        .await
        .unwrap();
    assert_eq!(taken, 2);
    step(&alerting, &clock, 10).await;
    let received = hook.received.lock().clone();
    let mut names: Vec<&str> = received
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap())
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["CpuHigh", "DiskFull"], "{received:?}");
    let views = alerting.alerts();
    let disk_view = views.iter().find(|a| a.labels["alertname"] == "DiskFull").unwrap();
    assert_eq!(
        (disk_view.source, disk_view.generator_url.as_str()),
        (SourceKind::Posted, "http://prometheus:9090/graph")
    );
    assert_eq!(disk_view.fired_at.as_deref(), Some(crate::notify::rfc3339_ms(T0 - 60_000).as_str()));
    let cpu_view = views.iter().find(|a| a.labels["alertname"] == "CpuHigh").unwrap();
    assert!(!cpu_view.labels.contains_key("empty"), "empty label values are dropped");
    assert_eq!(cpu_view.valid_until, Some(crate::notify::rfc3339_ms(T0 + RESOLVE_TIMEOUT_MS)));

    // DiskFull resolved by its sender; CpuHigh re-posted keeps firing past its first timeout.
    clock.advance(Duration::from_secs(3 * 60));
    let resolved_at = crate::notify::rfc3339_ms(clock.now_ms());
    alerting
        .receive_alerts(posted(serde_json::json!([
            {"labels": disk, "endsAt": resolved_at},
            {"labels": {"alertname": "CpuHigh", "instance": "web-1"}},
        ])))
        .await
        .unwrap();
    step(&alerting, &clock, 60).await;
    let last = hook.received.lock().last().cloned().unwrap();
    assert_eq!(last["status"], "resolved", "{last}");
    assert_eq!(last["alerts"][0]["labels"]["alertname"], "DiskFull");
    clock.advance(Duration::from_secs(3 * 60));
    alerting.resolve_expired_posted().await;
    assert!(alerting.alerts().iter().any(|a| a.labels["alertname"] == "CpuHigh" && a.state == "firing"));
    // Not posted again: it resolves when its timeout runs out.
    clock.advance(Duration::from_secs(3 * 60));
    alerting.resolve_expired_posted().await;
    step(&alerting, &clock, 60).await;
    let last = hook.received.lock().last().cloned().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["alerts"][0]["labels"]["alertname"].as_str()),
        (Some("resolved"), Some("CpuHigh"))
    );

    // Bad alerts are refused whole, with the index of the first bad one.
    let bad = alerting
        .receive_alerts(posted(serde_json::json!([{"labels": {"a": "b"}}, {"labels": {"": "x"}}])))
        .await
        .unwrap_err();
    assert!(matches!(bad, PostedAlertError::Invalid { index: 1, .. }), "{bad}");
    let bad = alerting.receive_alerts(posted(serde_json::json!([{"labels": {"empty": ""}}]))).await.unwrap_err();
    assert!(bad.to_string().contains("at least one label"), "{bad}");
    assert!(alerting.alerts().iter().all(|a| !a.labels.contains_key("a")), "nothing of a refused request is taken");

    // At most MAX_ALERTS_PER_REQUEST a request: that many are taken, one more is refused whole.
    let batch = |n: usize| {
        posted(serde_json::Value::Array(
            (0..n).map(|i| serde_json::json!({"labels": {"alertname": "Many", "i": i.to_string()}})).collect(),
        ))
    };
    let too_many = crate::posted::MAX_ALERTS_PER_REQUEST + 1;
    assert_eq!(alerting.receive_alerts(batch(too_many)).await, Err(PostedAlertError::TooMany(too_many)));
    assert!(alerting.alerts().iter().all(|a| a.labels["alertname"] != "Many"));
    let most = crate::posted::MAX_ALERTS_PER_REQUEST;
    assert_eq!(alerting.receive_alerts(batch(most)).await, Ok(most));

    // Posted alerts survive a restart and a reconfiguration.
    alerting.receive_alerts(posted(serde_json::json!([{"labels": {"alertname": "Kept"}}]))).await.unwrap();
    drop(alerting);
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    alerting.configure(&config(&url, "")).unwrap();
    assert!(alerting.alerts().iter().any(|a| a.labels["alertname"] == "Kept" && a.source == SourceKind::Posted));
}

#[tokio::test]
async fn rule_for_progress_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let (url, hook) = webhook().await;
    let clock = Arc::new(ManualClock::new(T0));
    let mut samples = Vec::new();
    for i in 0..40 {
        samples.push(Sample { timestamp_ns: (T0 - 60_000 + i * 15_000) * 1_000_000, value: 0.0 });
    }
    let up = MetricSeries {
        metric: "up".into(),
        labels: LabelSet::new(vec![("job".into(), "api".into())]).unwrap(),
        samples,
    };
    engine.storage().write(WriteBatch { metrics: vec![up], rows: vec![] }).await.unwrap();
    let rules = "groups:\n  - name: availability\n    interval: 30s\n    rules:\n      - alert: TargetDown\n        expr: up == 0\n        for: 1m\n        labels: {severity: page}\n        annotations: {summary: '{{ $labels.job }} is down ({{ $value }})'}\n";
    let alerting = open(&engine, dir.path(), &clock, &url, rules);
    evaluate_groups(&alerting).await;
    assert_eq!(alerting.alerts()[0].state, "pending");
    drop(alerting);

    clock.advance(Duration::from_secs(30));
    let alerting = open(&engine, dir.path(), &clock, &url, rules);
    evaluate_groups(&alerting).await;
    let view = &alerting.alerts()[0];
    assert_eq!(
        (view.state.as_str(), view.active_at.as_str()),
        ("pending", crate::notify::rfc3339_ms(T0).as_str()),
        "for progress kept"
    );
    clock.advance(Duration::from_secs(30));
    evaluate_groups(&alerting).await;
    let view = &alerting.alerts()[0];
    assert_eq!(view.state, "firing");
    assert_eq!(view.annotations["summary"], "api is down (0)");
    assert_eq!(view.labels["alertname"], "TargetDown");

    let firing = engine.promql("ALERTS{alertstate=\"firing\"}", EvalRange::instant(clock.now_ms())).await.unwrap();
    let PromResult::Vector(firing) = firing else { panic!() };
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].labels["alertname"], "TargetDown");
    let rows = engine.sql("SELECT state, alertname FROM alerts ORDER BY timestamp").await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows.batches).unwrap().to_string();
    assert!(text.contains("pending") && text.contains("firing"), "{text}");

    step(&alerting, &clock, 10).await;
    assert_eq!(hook.received.lock().len(), 1);
}

#[tokio::test]
async fn failed_deliveries_are_counted_and_retried_later() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let (url, hook) = webhook().await;
    hook.status.store(503, Ordering::SeqCst);
    let clock = Arc::new(ManualClock::new(T0));
    let alerting = open(&engine, dir.path(), &clock, &url, "");
    alerting.evaluate_slos(&[definition()], &[status(20.0, &["page"])]).await;
    step(&alerting, &clock, 10).await;
    assert_eq!(hook.received.lock().len(), 2, "two attempts");
    let receiver = &alerting.receivers()[0];
    assert_eq!((receiver.failures, receiver.notifications), (1, 0));
    assert!(receiver.last_error.as_deref().unwrap_or_default().contains("503"));
    hook.status.store(200, Ordering::SeqCst);
    step(&alerting, &clock, 60).await;
    assert_eq!(hook.received.lock().len(), 3, "sent again at the next group_interval");
    assert_eq!(alerting.receivers()[0].notifications, 1);
}
