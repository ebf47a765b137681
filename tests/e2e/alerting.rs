//! Alerting end to end: an SLO driven into a fast burn pages through a real SMTP server
//! (aiosmtpd) and recovers; rule alerts reach a webhook receiver of the test's own with
//! Alertmanager's payload, grouped, silenced, and neither re-paged nor forgotten across a
//! restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use parking_lot::Mutex;
use serde_json::Value;

use crate::harness::{VIGIL, Vigil, fixture, free_port, python, require_program, wait_until};
use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};

pub(crate) type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver that keeps every payload.
pub(crate) async fn webhook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/alerts",
            axum::routing::post(|State(received): State<Received>, Json(body): Json<Value>| async move {
                received.lock().push(body);
                "ok"
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

pub(crate) struct SmtpSink {
    child: Child,
    folder: std::path::PathBuf,
    python: std::path::PathBuf,
}

impl SmtpSink {
    pub(crate) fn start(python: &Path, folder: &Path, port: u16) -> SmtpSink {
        SmtpSink::start_script(python, folder, port, "fixtures/smtp_sink.py", &["127.0.0.1", &port.to_string()])
    }

    fn start_script(python: &Path, folder: &Path, port: u16, script: &str, args: &[&str]) -> SmtpSink {
        let child = Command::new(python)
            .arg(fixture(script))
            .args(args)
            .env("SMTP_SINK_DIR", folder)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP sink");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpSink { child, folder: folder.to_path_buf(), python: python.to_path_buf() }
    }

    /// Every mail received, parsed by Python's email package.
    pub(crate) fn mails(&self) -> Vec<Value> {
        let output =
            Command::new(&self.python).arg(fixture("fixtures/read_mail.py")).arg(&self.folder).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap().as_array().cloned().unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn alerts_api(vigil: &Vigil) -> Value {
    vigil.client.get(vigil.url("/api/v1/alerts")).send().await.unwrap().json().await.unwrap()
}

const SLO: &str = r#"apiVersion: vigil/v1
kind: SLO
metadata: {name: checkout-availability, service: checkout, labels: {team: payments}}
spec:
  objective: 99.9
  window: 30d
  sli:
    ratio:
      bad: 'http_requests_total{job="checkout", code=~"5.."}'
      total: 'http_requests_total{job="checkout"}'
  alerting:
    # Short windows keep the test short; the ticket burns exactly when the page does.
    conditions:
      - {severity: page, burn_rate: 14.4, long_window: 2m, short_window: 1m}
      - {severity: ticket, burn_rate: 14.4, long_window: 2m, short_window: 1m}
"#;

#[tokio::test]
async fn fast_burn_pages_by_email_and_recovery_resolves() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtp = SmtpSink::start(&python, &dir.path().join("mail"), smtp_port);
    let (hook_url, hook) = webhook_receiver().await;
    std::fs::write(dir.path().join("slo.yaml"), SLO).unwrap();
    let config = format!(
        r#"slos: [slo.yaml]
evaluation_interval: 1s
external_url: http://vigil.example:9400
receivers:
  - name: oncall-email
    email:
      to: [oncall@example.com]
      from: vigil@example.com
      smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}
  - name: tickets
    webhook: {{url: '{hook_url}'}}
route:
  receiver: oncall-email
  group_by: [alertname, slo]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - {{matchers: ['severity="ticket"'], receiver: tickets}}
"#
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;

    // Three minutes of checkout traffic with 10 % errors: a 100× burn of a 99.9 % objective.
    let t0 = now_ms() - 3 * 60_000;
    let points =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=18).map(|i| (t0 + i * 10_000, per_step * i as f64)).collect() };
    let write = |timeseries| encode(&WriteRequest { timeseries });
    let body = write(vec![
        series("http_requests_total", &[("job", "checkout"), ("code", "200")], &points(90.0)),
        series("http_requests_total", &[("job", "checkout"), ("code", "500")], &points(10.0)),
    ]);
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let written = Instant::now();

    let page = wait_until("the page mail", 60, async || smtp.mails().into_iter().next()).await;
    eprintln!("page mailed {:.1} s after the data arrived", written.elapsed().as_secs_f64());
    let subject = page["subject"].as_str().unwrap();
    assert!(subject.starts_with("[FIRING:1] SLOBurnRate checkout-availability"), "{subject}");
    assert!(subject.contains("page"), "{subject}");
    assert_eq!(page["from"], "vigil@example.com");
    assert_eq!(page["to"], "oncall@example.com");
    assert_eq!(page["content_type"], "multipart/alternative");
    // Every mail carries a Date and its own Message-ID of the sender's domain.
    assert!(page["date"].as_str().is_some_and(|d| d.len() > 10 && d != "None"), "{page}");
    let message_id = page["message_id"].as_str().unwrap();
    assert!(message_id.starts_with('<') && message_id.ends_with("@example.com>"), "{message_id}");
    let text = page["parts"]["text/plain"].as_str().unwrap();
    let html = page["parts"]["text/html"].as_str().unwrap();
    for body in [text, html] {
        assert!(body.contains("checkout-availability is burning its error budget 100× too fast"), "{body}");
        assert!(body.contains("99.9% over 30d"), "objective: {body}");
        assert!(body.contains("SLI") && body.contains("90%"), "SLI: {body}");
        assert!(body.contains("Budget left"), "{body}");
        assert!(body.contains("5m=100"), "burn rate per window: {body}");
        assert!(body.contains("Budget exhausted in"), "time to exhaustion: {body}");
        assert!(body.contains("http://vigil.example:9400/slos/checkout-availability"), "dashboard link: {body}");
    }
    assert!(html.contains("<table"), "{html}");

    // The ticket of the same SLO is inhibited by the page.
    let alerts = alerts_api(&vigil).await;
    let active = alerts["data"]["alerts"].as_array().unwrap();
    let ticket = active.iter().find(|a| a["labels"]["severity"] == "ticket").expect("a ticket alert");
    assert_eq!(ticket["inhibited"], true, "{ticket}");
    let page_alert = active.iter().find(|a| a["labels"]["severity"] == "page").unwrap();
    assert_eq!(page_alert["state"], "firing");
    assert_eq!(page_alert["receivers"], serde_json::json!(["oncall-email"]));
    assert_eq!(page_alert["labels"]["team"], "payments");

    // Recovery: clean traffic from now on, until the burn windows hold no errors.
    let mut requests = 90.0 * 18.0;
    let resolved = wait_until("the resolved mail", 240, async || {
        requests += 100.0;
        let t = now_ms();
        let body = write(vec![
            series("http_requests_total", &[("job", "checkout"), ("code", "200")], &[(t, requests)]),
            series("http_requests_total", &[("job", "checkout"), ("code", "500")], &[(t, 180.0)]),
        ]);
        send(&vigil.client, &vigil.url("/api/v1/write"), body).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        smtp.mails().into_iter().find(|m| m["subject"].as_str().unwrap_or_default().starts_with("[RESOLVED]"))
    })
    .await;
    assert!(resolved["subject"].as_str().unwrap().contains("SLOBurnRate checkout-availability"), "{resolved}");
    assert!(resolved["parts"]["text/plain"].as_str().unwrap().contains("RESOLVED"), "{resolved}");
    assert_ne!(resolved["message_id"], page["message_id"], "each mail has its own Message-ID");
    let tickets: Vec<(String, String)> = hook
        .lock()
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap().clone())
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["labels"]["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        !tickets.iter().any(|(name, _)| name == "SLOBurnRate"),
        "the inhibited burn ticket never reached its receiver: {tickets:?}"
    );
    assert!(
        tickets.contains(&("SLOErrorBudgetExhausted".to_string(), "ticket".to_string())),
        "the exhausted budget is a ticket of its own, routed to the webhook: {tickets:?}"
    );
    let rows =
        vigil.rows("SELECT state, severity FROM alerts WHERE slo = 'checkout-availability' ORDER BY timestamp").await;
    let states: Vec<String> =
        rows.iter().map(|r| format!("{}/{}", r[0].as_str().unwrap(), r[1].as_str().unwrap())).collect();
    assert!(states.contains(&"firing/page".to_string()) && states.contains(&"resolved/page".to_string()), "{states:?}");
}

pub(crate) const RULES: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: QueueTooLong
        expr: queue_length > 10
        labels: {severity: ticket}
        annotations:
          summary: '{{ $labels.queue }} has {{ $value }} items'
      - alert: QueueHuge
        sql: SELECT queue, value FROM queue_length WHERE value > 100 AND timestamp > now() - INTERVAL '5 minutes'
        labels: {severity: page}
"#;

pub(crate) async fn import(vigil: &Vigil, text: &str) {
    let response =
        vigil.client.post(vigil.url("/api/v1/import/prometheus")).body(text.to_string()).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn rule_alerts_reach_a_webhook_grouped_silenced_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, hook) = webhook_receiver().await;
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let config = format!(
        "rules: [rules.yaml]\nevaluation_interval: 1s\nexternal_url: http://vigil.example:9400\nreceivers:\n  - name: hook\n    webhook: {{url: '{hook_url}'}}\nroute:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n"
    );
    let data = dir.path().join("data");
    let mut vigil = Vigil::start_with_config(&data, &config, &[]).await;

    import(&vigil, "queue_length{queue=\"a\"} 20\nqueue_length{queue=\"b\"} 30\n").await;
    let first = wait_until("the first webhook", 30, async || hook.lock().first().cloned()).await;
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["receiver"], "hook");
    assert_eq!(first["groupKey"], "{}:{alertname=\"QueueTooLong\"}");
    assert_eq!(first["groupLabels"], serde_json::json!({"alertname": "QueueTooLong"}));
    assert_eq!(first["commonLabels"], serde_json::json!({"alertname": "QueueTooLong", "severity": "ticket"}));
    assert_eq!(first["commonAnnotations"], serde_json::json!({}));
    assert_eq!(first["externalURL"], "http://vigil.example:9400");
    assert_eq!(first["truncatedAlerts"], 0);
    let alerts = first["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "both queues in one group: {first}");
    let a = alerts.iter().find(|x| x["labels"]["queue"] == "a").unwrap();
    assert_eq!(a["status"], "firing");
    assert_eq!(a["annotations"]["summary"], "a has 20 items");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert!(chrono::DateTime::parse_from_rfc3339(a["startsAt"].as_str().unwrap()).is_ok(), "{a}");
    assert!(a["generatorURL"].as_str().unwrap().starts_with("http://vigil.example:9400/explore?"), "{a}");
    let fingerprint = a["fingerprint"].as_str().unwrap();
    assert!(fingerprint.len() == 16 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()), "{fingerprint}");

    // A silence on QueueHuge: its alert shows as silenced and is never sent.
    let response = vigil
        .client
        .post(vigil.url("/api/v1/silences"))
        .json(&serde_json::json!({"matchers": [{"name": "alertname", "value": "QueueHuge", "isRegex": false}], "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(), "createdBy": "e2e", "comment": "known"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let silence_id = response.json::<Value>().await.unwrap()["silenceID"].as_str().unwrap().to_string();
    let listed: Value = vigil.client.get(vigil.url("/api/v1/silences")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["id"], silence_id.as_str());
    assert_eq!(listed[0]["status"]["state"], "active");
    let bad = vigil
        .client
        .post(vigil.url("/api/v1/silences"))
        .json(&serde_json::json!({"matchers": [], "endsAt": "2100-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.unwrap()["hint"].is_string());

    import(&vigil, "queue_length{queue=\"c\"} 500\n").await;
    let grown = wait_until("the group to grow", 30, async || {
        hook.lock().iter().find(|m| m["alerts"].as_array().unwrap().len() == 3).cloned()
    })
    .await;
    assert_eq!(grown["groupLabels"]["alertname"], "QueueTooLong");
    let huge = wait_until("QueueHuge to fire", 30, async || {
        let body = alerts_api(&vigil).await;
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "QueueHuge" && a["state"] == "firing")
            .cloned()
    })
    .await;
    assert_eq!(huge["labels"]["queue"], "c");
    assert_eq!(huge["silenced"], true);
    assert_eq!(huge["silencedBy"], serde_json::json!([silence_id.clone()]));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(hook.lock().iter().all(|m| m["groupLabels"]["alertname"] != "QueueHuge"), "silenced alerts are not sent");

    // Restart: the firing alerts keep their start and nobody is notified again.
    let before = alerts_api(&vigil).await;
    let active_at = |body: &Value, queue: &str| {
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["labels"]["alertname"] == "QueueTooLong" && x["labels"]["queue"] == queue)
            .map(|x| x["activeAt"].clone())
    };
    let sent_before = hook.lock().len();
    assert!(vigil.terminate().success());
    let vigil = Vigil::start_with_config(&data, &config, &[]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = alerts_api(&vigil).await;
    assert_eq!(active_at(&after, "a"), active_at(&before, "a"), "{after}");
    assert_eq!(
        hook.lock().len(),
        sent_before,
        "no re-notification after the restart: {:?}",
        &hook.lock()[sent_before..]
    );

    // Queue a drains: its resolution is sent with the group.
    import(&vigil, "queue_length{queue=\"a\"} 0\n").await;
    let resolved = wait_until("a's resolution", 30, async || {
        hook.lock()
            .iter()
            .skip(sent_before)
            .find(|m| m["alerts"].as_array().unwrap().iter().any(|x| x["status"] == "resolved"))
            .cloned()
    })
    .await;
    assert_eq!(resolved["status"], "firing", "b and c still fire");
    let a = resolved["alerts"].as_array().unwrap().iter().find(|x| x["labels"]["queue"] == "a").unwrap();
    assert_eq!(a["status"], "resolved");
    assert_ne!(a["endsAt"], "0001-01-01T00:00:00Z");

    // Expiring the silence lets QueueHuge through.
    let expired = vigil.client.delete(vigil.url(&format!("/api/v1/silences/{silence_id}"))).send().await.unwrap();
    assert_eq!(expired.status(), 200);
    wait_until("QueueHuge after the silence", 30, async || {
        hook.lock().iter().find(|m| m["groupLabels"]["alertname"] == "QueueHuge").cloned()
    })
    .await;
    let missing = vigil.client.delete(vigil.url("/api/v1/silences/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // ALERTS series and Prometheus' rules API.
    let query: Value = vigil
        .client
        .get(vigil.url("/api/v1/query?query=count(ALERTS{alertstate=\"firing\"})"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(query["data"]["result"][0]["value"][1], "3", "{query}");
    let rules: Value = vigil.client.get(vigil.url("/api/v1/rules")).send().await.unwrap().json().await.unwrap();
    let rule = &rules["data"]["groups"][0]["rules"][1];
    assert_eq!(
        (rule["name"].as_str(), rule["health"].as_str(), rule["language"].as_str()),
        (Some("QueueHuge"), Some("ok"), Some("sql")),
        "{rules}"
    );
}

#[test]
fn validate_checks_rule_files_and_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: rate(x[5m]\n").unwrap();
    let output = Command::new(VIGIL).arg("validate").arg(&rules).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with(&format!("{}:5:15: invalid PromQL", rules.display())), "{stderr}");

    std::fs::write(&rules, RULES).unwrap();
    let config = dir.path().join("vigil.yaml");
    std::fs::copy(fixture("fixtures/vigil.example.yaml"), &config).unwrap();
    let slo = dir.path().join("slo.yaml");
    std::fs::copy(fixture("fixtures/slos/checkout.vigil.yaml"), &slo).unwrap();
    let output = Command::new(VIGIL).arg("validate").args([&config, &rules, &slo]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 valid rules in 1 group"));

    std::fs::write(
        &slo,
        std::fs::read_to_string(&slo).unwrap().replace("receivers: [oncall-email]", "receivers: [oncall-mail]"),
    )
    .unwrap();
    let output = Command::new(VIGIL).arg("validate").args([&config, &slo]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown receiver \"oncall-mail\""), "{stderr}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn certificates(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_string_lossy().to_string();
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).output().unwrap();
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=Vigil test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.pem"),
        "-days",
        "2",
        "-extfile",
        &path("server.ext"),
    ]);
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[tokio::test]
async fn email_over_starttls_and_tls_with_auth() {
    let Some(python) = python() else { return };
    if !require_program("/usr/bin/openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (starttls_port, tls_port) = (free_port(), free_port());
    let sink = |mode: &str, port: u16, folder: &str| {
        SmtpSink::start_script(
            &python,
            &dir.path().join(folder),
            port,
            "fixtures/smtp_tls_sink.py",
            &[mode, "127.0.0.1", &port.to_string(), &cert, &key, "vigil", "s3cret"],
        )
    };
    let starttls = sink("starttls", starttls_port, "starttls-mail");
    let tls = sink("tls", tls_port, "tls-mail");
    std::fs::write(
        dir.path().join("rules.yaml"),
        "groups:\n  - name: smtp\n    interval: 1s\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
    )
    .unwrap();
    let receiver = |name: &str, port: u16, mode: &str, password: &str| {
        format!(
            "  - name: {name}\n    email:\n      to: [oncall@example.com]\n      from: vigil@example.com\n      smtp: {{host: 127.0.0.1, port: {port}, tls: {mode}, ca_file: '{ca}', auth: {{username: vigil, password: {password}}}, timeout: 5s}}\n"
        )
    };
    let config = format!(
        "rules: [rules.yaml]\nevaluation_interval: 1s\nalerting: {{max_attempts: 2}}\nreceivers:\n{}{}{}route:\n  receiver: starttls\n  group_wait: 1s\n  group_interval: 2s\n  routes:\n    - {{matchers: ['alertname=\"Always\"'], receiver: starttls, continue: true}}\n    - {{matchers: ['alertname=\"Always\"'], receiver: tls, continue: true}}\n    - {{matchers: ['alertname=\"Always\"'], receiver: wrong-password}}\n",
        receiver("starttls", starttls_port, "starttls", "s3cret"),
        receiver("tls", tls_port, "tls", "s3cret"),
        receiver("wrong-password", starttls_port, "starttls", "guess"),
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    for (sink, what) in [(&starttls, "STARTTLS"), (&tls, "TLS")] {
        let mail = wait_until(&format!("mail over {what}"), 60, async || sink.mails().into_iter().next()).await;
        assert_eq!(
            mail["subject"], "[FIRING:1] (Always)",
            "no group labels: the common ones in parentheses, as Alertmanager"
        );
    }
    let refused = wait_until("the refused login to count", 60, async || {
        let body = alerts_api(&vigil).await;
        body["data"]["receivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "wrong-password" && r["failures"].as_u64() >= Some(1))
            .cloned()
    })
    .await;
    assert_eq!(refused["notifications"], 0);
    let error = refused["lastError"].as_str().or(refused["last_error"].as_str()).unwrap_or_default();
    assert!(error.contains("535") || error.to_lowercase().contains("auth"), "{refused}");
    assert_eq!(starttls.mails().len(), 1, "the wrong password delivered nothing");
    let metrics = vigil.own_metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("vigil_notifications_failed_total") && l.contains("wrong-password")),
        "{metrics}"
    );
}

/// A compliance report mailed through a receiver's email integration to a real SMTP server
/// (aiosmtpd): an HTML body with the SLO and its verdict, and a text alternative.
#[tokio::test]
async fn a_report_is_mailed_as_html_to_the_named_receivers() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtp = SmtpSink::start(&python, &dir.path().join("mail"), smtp_port);
    std::fs::write(dir.path().join("slo.yaml"), SLO).unwrap();
    let config = format!(
        "slos: [slo.yaml]\nexternal_url: http://vigil.example:9400\nreceivers:\n  - name: reports-email\n    email: {{to: [sre@example.com], from: vigil@example.com, smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}}}\n  - name: hook\n    webhook: {{url: 'http://127.0.0.1:9/'}}\n"
    );
    let vigil = Vigil::start_with_config(&dir.path().join("data"), &config, &[]).await;
    let t0 = (now_ms() / 60_000 - 5) * 60_000;
    let points =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=20).map(|i| (t0 + i * 15_000, per_step * i as f64)).collect() };
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("http_requests_total", &[("job", "checkout"), ("code", "200")], &points(99.0)),
            series("http_requests_total", &[("job", "checkout"), ("code", "500")], &points(1.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    let sent = vigil.client.post(vigil.url("/api/v1/reports/send?receivers=reports-email")).send().await.unwrap();
    assert_eq!(sent.status().as_u16(), 200, "{}", sent.text().await.unwrap());
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(
        mail["subject"].as_str().unwrap().starts_with("SLO report ")
            && mail["subject"].as_str().unwrap().ends_with(": 0 met, 1 missed"),
        "{mail}"
    );
    let html = mail["parts"]["text/html"].as_str().unwrap_or_default();
    assert!(
        html.contains("checkout-availability")
            && html.contains("missed")
            && html.contains("http://vigil.example:9400/reports?period="),
        "{mail}"
    );
    assert!(
        mail["parts"]["text/plain"].as_str().unwrap_or_default().contains("checkout-availability: missed, SLI 99%"),
        "{mail}"
    );
    // A receiver without email, an unknown one, or none at all: refused with the reason.
    let hook = vigil.client.post(vigil.url("/api/v1/reports/send?receivers=hook")).send().await.unwrap();
    assert_eq!(hook.status().as_u16(), 502);
    assert!(hook.text().await.unwrap().contains("no email integration"));
    let unknown = vigil.client.post(vigil.url("/api/v1/reports/send?receivers=nobody")).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 502);
    assert_eq!(vigil.client.post(vigil.url("/api/v1/reports/send")).send().await.unwrap().status().as_u16(), 400);
}
