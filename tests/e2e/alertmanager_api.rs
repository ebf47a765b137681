//! Alertmanager's API v2 driven by the real clients teams already run: `amtool` (Debian
//! `prometheus-alertmanager` 0.25) queries alerts with matchers and adds, queries, expires
//! and imports silences; a real Prometheus 2.42 whose `alerting.alertmanagers` names Vigil
//! sends its rule's alert, which reaches Vigil's webhook and SMTP receivers.

use std::process::Command;

use serde_json::{Value, json};

use crate::alerting::{SmtpSink, webhook_receiver};
use crate::harness::{Vigil, free_port, python, require_program, wait_until};
use crate::prometheus::{PROMETHEUS, start_prometheus};

const AMTOOL: &str = "/usr/bin/amtool";

/// Runs amtool against `vigil`; its stdout, or a panic with what it said.
fn amtool(vigil: &Vigil, args: &[&str]) -> String {
    let output = Command::new(AMTOOL)
        .arg(format!("--alertmanager.url=http://{}", vigil.addr))
        .args(args)
        .output()
        .expect("run amtool");
    assert!(
        output.status.success(),
        "amtool {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn amtool_json(vigil: &Vigil, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = amtool(vigil, &all);
    serde_json::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alert_names(alerts: &[Value]) -> Vec<String> {
    let mut names: Vec<String> =
        alerts.iter().map(|a| a["labels"]["alertname"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

const CONFIG: &str = "receivers:\n  - name: hook\n    webhook: {url: 'http://127.0.0.1:9/unused'}\nroute:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n";

#[tokio::test]
async fn amtool_queries_alerts_and_manages_silences() {
    if !require_program(AMTOOL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start_with_config(&dir.path().join("data"), CONFIG, &[]).await;
    let posted = json!([
        {"labels": {"alertname": "DiskFull", "instance": "db-1", "severity": "page"}, "annotations": {"summary": "disk"},
         "generatorURL": "http://prometheus.example/graph"},
        {"labels": {"alertname": "CpuHigh", "instance": "web-1", "severity": "ticket"}},
    ]);
    let response = vigil.client.post(vigil.url("/api/v2/alerts")).json(&posted).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let alerts = amtool_json(&vigil, &["alert", "query"]);
    assert_eq!(alert_names(&alerts), ["CpuHigh", "DiskFull"]);
    let disk = alerts.iter().find(|a| a["labels"]["alertname"] == "DiskFull").unwrap();
    assert_eq!(disk["status"]["state"], "active");
    assert_eq!(disk["receivers"], json!([{"name": "hook"}]));
    assert_eq!(disk["generatorURL"], "http://prometheus.example/graph");
    assert_eq!(alert_names(&amtool_json(&vigil, &["alert", "query", "severity=page"])), ["DiskFull"]);
    assert_eq!(alert_names(&amtool_json(&vigil, &["alert", "query", "instance=~\"web-.*\""])), ["CpuHigh"]);
    // The simple output amtool prints for people names the alert too.
    assert!(amtool(&vigil, &["alert", "query", "alertname=DiskFull"]).contains("DiskFull"));

    // A silence added with amtool mutes DiskFull: amtool's default query hides it, `-s` shows it.
    let id = amtool(
        &vigil,
        &["silence", "add", "alertname=DiskFull", "--comment=disk swap", "--author=ann", "--duration=1h"],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 36, "amtool prints the new silence's id: {id:?}");
    assert_eq!(alert_names(&amtool_json(&vigil, &["alert", "query"])), ["CpuHigh"]);
    let silenced = amtool_json(&vigil, &["alert", "query", "--silenced"]);
    assert_eq!(alert_names(&silenced), ["DiskFull"]);
    assert_eq!(silenced[0]["status"]["state"], "suppressed");
    assert_eq!(silenced[0]["status"]["silencedBy"], json!([id]));

    let silences = amtool_json(&vigil, &["silence", "query"]);
    assert_eq!(silences.len(), 1);
    assert_eq!(silences[0]["id"], id.as_str());
    assert_eq!(silences[0]["createdBy"], "ann");
    assert_eq!(silences[0]["comment"], "disk swap");
    assert_eq!(silences[0]["status"]["state"], "active");
    assert_eq!(
        silences[0]["matchers"],
        json!([{"name": "alertname", "value": "DiskFull", "isRegex": false, "isEqual": true}])
    );
    assert!(amtool_json(&vigil, &["silence", "query", "alertname=CpuHigh"]).is_empty());
    // The same silence through Vigil's own API and its v2 single-silence route: one set.
    let own: Value = vigil.client.get(vigil.url("/api/v1/silences")).send().await.unwrap().json().await.unwrap();
    assert_eq!(own[0]["id"], id.as_str());
    let one: Value =
        vigil.client.get(vigil.url(&format!("/api/v2/silence/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["comment"], "disk swap");
    let exported = dir.path().join("silences.json");
    std::fs::write(&exported, serde_json::to_vec(&silences).unwrap()).unwrap();

    amtool(&vigil, &["silence", "expire", &id]);
    assert!(amtool_json(&vigil, &["silence", "query"]).is_empty(), "expired silences are hidden by default");
    let expired = amtool_json(&vigil, &["silence", "query", "--expired"]);
    assert_eq!(expired[0]["status"]["state"], "expired");
    assert_eq!(alert_names(&amtool_json(&vigil, &["alert", "query"])), ["CpuHigh", "DiskFull"]);

    // `silence import` into another Vigil, which has never seen the silence's id.
    let other = Vigil::start_with_config(&dir.path().join("other"), CONFIG, &[]).await;
    amtool(&other, &["silence", "import", exported.to_str().unwrap()]);
    let imported = amtool_json(&other, &["silence", "query"]);
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0]["comment"], "disk swap");
    assert_ne!(imported[0]["id"], id.as_str(), "a new silence with the same matchers");

    // Errors are JSON strings, as Alertmanager's.
    let missing = vigil.client.get(vigil.url("/api/v2/silence/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap().as_str().unwrap().contains("not found"));
    let bad = vigil.client.post(vigil.url("/api/v2/alerts")).json(&json!([{"labels": {}}])).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.unwrap().as_str().unwrap().contains("at least one label"));
    let bad = vigil.client.get(vigil.url("/api/v2/alerts?filter=nonsense")).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let status: Value = vigil.client.get(vigil.url("/api/v2/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["cluster"]["status"], "disabled");
    let receivers: Value = vigil.client.get(vigil.url("/api/v2/receivers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(receivers, json!([{"name": "hook"}]));
    let groups: Value =
        vigil.client.get(vigil.url("/api/v2/alerts/groups")).send().await.unwrap().json().await.unwrap();
    let mut grouped: Vec<(String, usize)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["labels"]["alertname"].as_str().unwrap().to_string(), g["alerts"].as_array().unwrap().len()))
        .collect();
    grouped.sort();
    assert_eq!(grouped, [("CpuHigh".to_string(), 1), ("DiskFull".to_string(), 1)], "{groups}");
}

/// A Prometheus keeps its rules and sends their alerts to Vigil as to its Alertmanager.
#[tokio::test]
async fn a_real_prometheus_sends_its_alerts_to_vigil() {
    if !require_program(PROMETHEUS) {
        return;
    }
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, hook) = webhook_receiver().await;
    let smtp_port = free_port();
    let smtp = SmtpSink::start(&python, &dir.path().join("mail"), smtp_port);
    let config = format!(
        "receivers:\n  - name: hook\n    webhook: {{url: '{hook_url}'}}\n  - name: mail\n    email: {{to: [oncall@example.com], from: vigil@example.com, smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}}}\nroute:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  routes:\n    - {{matchers: ['severity=\"page\"'], receiver: mail, continue: true}}\n    - {{matchers: ['severity=\"page\"'], receiver: hook}}\n"
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: prom\n    rules:\n      - alert: FromPrometheus\n        expr: vector(1)\n        labels: {severity: page}\n        annotations: {summary: sent by Prometheus}\n",
    )
    .unwrap();
    let prometheus_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{evaluation_interval: 1s}}\nrule_files: [rules.yml]\nalerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs: [{{targets: ['{}']}}]\n",
            vigil.addr
        ),
    )
    .unwrap();
    // Its first send can come before it has found its Alertmanager (the alert is then
    // dropped): resend every second instead of every minute.
    let _prometheus = start_prometheus(dir.path(), prometheus_port, &["--rules.alert.resend-delay=1s"]);
    let payload = wait_until("Prometheus's alert at the webhook", 60, async || hook.lock().first().cloned()).await;
    let alert = &payload["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "FromPrometheus", "{payload}");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["annotations"]["summary"], "sent by Prometheus");
    assert!(alert["generatorURL"].as_str().unwrap().contains("/graph?g0.expr="), "{alert}");
    let mail = wait_until("Prometheus's alert by mail", 60, async || smtp.mails().into_iter().next()).await;
    assert!(mail["subject"].as_str().unwrap().contains("FromPrometheus"), "{mail}");
    // Vigil shows it as a posted alert, and amtool sees it as in any Alertmanager.
    let alerts: Value = vigil.client.get(vigil.url("/api/v1/alerts")).send().await.unwrap().json().await.unwrap();
    let shown =
        alerts["data"]["alerts"].as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "FromPrometheus");
    assert_eq!(shown.unwrap()["source"], "posted", "{alerts}");
    if require_program(AMTOOL) {
        assert_eq!(alert_names(&amtool_json(&vigil, &["alert", "query"])), ["FromPrometheus"]);
    }
}
