//! The dashboard in headless Chromium: every page loads against a Vigil holding real data
//! (remote-written counters behind an SLO in a fast burn, a firing rule alert, a drifted
//! model), its DOM says what it should, no console errors, no broken links, a screenshot of
//! each; the silence form works only with its CSRF token; an empty Vigil shows what to do.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::{Vigil, fixture, python, require_program, wait_until};
use crate::remote_write_client::{WriteRequest, encode, now_ms, send, series};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Where screenshots go (the README's come from here).
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with the flags this machine needs; returns (stdout, stderr).
fn chromium(profile: &Path, args: &[&str]) -> (String, String) {
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The rendered DOM of a page, failing on console errors.
fn dom(profile: &Path, url: &str) -> String {
    let (stdout, stderr) = chromium(profile, &["--dump-dom", url]);
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught") || l.contains("Failed to load"))
        })
        .collect();
    assert!(console_errors.is_empty(), "{url}: console errors: {console_errors:?}");
    assert!(stdout.contains("</html>"), "{url}: no document: {stdout}\n{stderr}");
    stdout
}

fn screenshot(profile: &Path, url: &str, name: &str) {
    screenshot_at(profile, url, name, "1280,1000");
}

/// A screenshot at a window size (`width,height`).
fn screenshot_at(profile: &Path, url: &str, name: &str, size: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    chromium(
        profile,
        &[&format!("--window-size={size}"), "--hide-scrollbars", &format!("--screenshot={}", path.display()), url],
    );
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{url}: screenshot {} is {size} bytes", path.display());
}

/// Local links of a document (no fragments, no form actions).
fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|h| h.starts_with('/'))
        .map(|h| h.replace("&amp;", "&"))
        .collect()
}

/// What `script` (the body of a function returning a string) says about a page once it has
/// loaded in Chromium, stylesheet and the page's own script applied: a throwaway extension's
/// content script runs it and writes the answer into the DOM, which is dumped.
fn after_load(dir: &Path, url: &str, script: &str) -> String {
    let extension = dir.join("probe-extension");
    std::fs::create_dir_all(&extension).unwrap();
    std::fs::write(
        extension.join("manifest.json"),
        r#"{"manifest_version": 3, "name": "probe", "version": "1",
            "content_scripts": [{"matches": ["http://127.0.0.1/*"], "js": ["probe.js"], "run_at": "document_end"}]}"#,
    )
    .unwrap();
    std::fs::write(
        extension.join("probe.js"),
        format!(
            r#"window.addEventListener("load", function () {{
  var answer = (function () {{ {script} }})();
  var out = document.createElement("pre"); out.id = "probed"; out.textContent = answer; document.body.appendChild(out);
}});"#
        ),
    )
    .unwrap();
    let (stdout, stderr) = chromium(
        &dir.join("probe-profile"),
        &[
            &format!("--disable-extensions-except={}", extension.display()),
            &format!("--load-extension={}", extension.display()),
            "--window-size=1280,1000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
    );
    stdout
        .split("<pre id=\"probed\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("the probe said nothing: {stdout}\n{stderr}"))
        .to_string()
}

/// The bounding boxes Chromium lays out for the elements matching `selector`, as
/// `[x, y, width, height]`.
fn layout_boxes(dir: &Path, url: &str, selector: &str) -> Vec<[f64; 4]> {
    let script = format!(
        r#"var boxes = [];
  document.querySelectorAll({selector:?}).forEach(function (e) {{ var r = e.getBoundingClientRect(); boxes.push([r.x, r.y, r.width, r.height].join(",")); }});
  return boxes.join(";");"#
    );
    after_load(dir, url, &script)
        .split(';')
        .filter(|b| !b.is_empty())
        .map(|b| {
            let v: Vec<f64> = b.split(',').map(|n| n.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

fn overlap(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]
}

const SLO: &str = r#"apiVersion: vigil/v1
kind: SLO
metadata: {name: checkout-availability, service: checkout, labels: {team: payments}}
spec:
  description: 99.9% of checkout requests do not fail.
  objective: 99.9
  window: 30d
  sli:
    ratio:
      bad: 'http_requests_total{job="checkout", code=~"5.."}'
      total: 'http_requests_total{job="checkout"}'
  alerting:
    conditions:
      - {severity: page, burn_rate: 14.4, long_window: 2m, short_window: 1m}
      - {severity: ticket, burn_rate: 6, long_window: 5m, short_window: 2m}
"#;

const RULES: &str = r#"groups:
  - name: drift
    interval: 1s
    rules:
      - alert: FeatureDrift
        expr: vigil_drift_score{statistic="psi"} > 0.2
        annotations: {summary: 'PSI above 0.2'}
"#;

#[tokio::test]
async fn every_page_renders_in_chromium_with_real_data() {
    if !require_program(CHROMIUM) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slo.yaml"), SLO).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let config = "slos: [slo.yaml]\nrules: [rules.yaml]\nevaluation_interval: 1s\ndrift: {flush_interval: 1s}\n";
    let vigil = Vigil::start_with_config(&dir.path().join("data"), config, &[]).await;
    let profile = dir.path().join("chromium");

    // Three minutes of checkout traffic with 10 % errors: a fast burn.
    let t0 = now_ms() - 3 * 60_000;
    let points =
        |per_step: f64| -> Vec<(i64, f64)> { (0..=18).map(|i| (t0 + i * 10_000, per_step * i as f64)).collect() };
    let body = encode(&WriteRequest {
        timeseries: vec![
            series("http_requests_total", &[("job", "checkout"), ("code", "200")], &points(90.0)),
            series("http_requests_total", &[("job", "checkout"), ("code", "500")], &points(10.0)),
        ],
    });
    assert_eq!(send(&vigil.client, &vigil.url("/api/v1/write"), body).await.0, 204);
    // A drifted feature.
    let reference: Vec<f64> = (0..200).map(|i| f64::from(i % 50)).collect();
    let current: Vec<f64> = (0..200).map(|i| f64::from(i % 50) * 1.6 + 5.0).collect();
    for (path, values) in [("/api/v1/drift/reference", &reference), ("/api/v1/drift", &current)] {
        let response = vigil
            .client
            .post(vigil.url(path))
            .json(&json!({"model": "fraud", "version": "v1", "feature": "amount", "values": values}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    // A trace of three spans (one failing, with an event) from the OpenTelemetry SDK, whose
    // resource says service.version 1.2.3: a deploy of the SLO's service.
    let Some(python) = python() else { return };
    let output = Command::new(&python)
        .arg(fixture("otlp/client.py"))
        .args(["http", &vigil.otlp_http, "checkout"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let trace_id = sent["trace_id"].as_str().unwrap().to_string();
    // A service that logs inside its spans and records an exception.
    let output =
        Command::new(&python).arg(fixture("otlp/app.py")).args([&vigil.otlp_http, "checkout"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let app_trace = sent["trace_id"].as_str().unwrap().to_string();
    wait_until("the SLO page and the drift rule alert", 60, async || {
        let body: serde_json::Value =
            vigil.client.get(vigil.url("/api/v1/alerts")).send().await.unwrap().json().await.unwrap();
        let alerts = body["data"]["alerts"].as_array().cloned().unwrap_or_default();
        let firing = |name: &str| alerts.iter().any(|a| a["labels"]["alertname"] == name && a["state"] == "firing");
        let inhibited = alerts.iter().any(|a| a["labels"]["severity"] == "ticket" && a["inhibited"] == true);
        (firing("SLOBurnRate") && firing("FeatureDrift") && inhibited).then_some(())
    })
    .await;

    let trace_path = format!("/traces/{trace_id}");
    let app_trace_path = format!("/traces/{app_trace}");
    let logs_path = format!("/logs?trace_id={app_trace}&range=1h");
    let pages: [(&str, &str, &[&str]); 11] = [
        (
            "/explore?lang=promql&q=sum+by+(code)+(http_requests_total)&range=1h",
            "explore",
            &[
                "<svg class=\"chart\"",
                "<table id=\"result\"",
                "{code=\"500\"}",
                "<ul class=\"legend\">",
                "id=\"stack-toggle\"",
            ],
        ),
        (
            "/explore?lang=promql&q=sum+by+(code)+(http_requests_total)&range=1h&mode=stacked",
            "explore-stacked",
            &["<svg class=\"chart\"", "Show as lines", "class=\"swatch s1\""],
        ),
        (
            "/explore?lang=sql&q=SELECT+statistic%2C+value+FROM+drift_scores+WHERE+statistic+%3D+%27psi%27",
            "explore-sql",
            &["<table id=\"result\"", "psi"],
        ),
        (
            "/",
            "overview",
            &[
                "<table id=\"slos\"",
                "checkout-availability",
                "class=\"state exhausted\"",
                "svg class=\"spark\"",
                "payments",
            ],
        ),
        (
            "/slos/checkout-availability",
            "slo",
            &[
                "SLI over the last 15m",
                "Error budget burn-down",
                "<svg class=\"chart\"",
                "id=\"burn-rates\"",
                "objective: 99.9",
                "class=\"state firing\"",
                "deploy 1.2.3",
                "class=\"marker\"",
                "id=\"annotations\"",
                "id=\"alert-history\"",
                "<td>SLOBurnRate</td>",
                "class=\"sev ticket\"",
                "aria-label=\"burn rate\"",
                "class=\"rule page\"",
            ],
        ),
        (
            "/alerts",
            "alerts",
            &[
                "id=\"firing\"",
                "FeatureDrift",
                "SLOBurnRate",
                "name=\"csrf\"",
                "PSI above 0.2",
                "data-state=\"inhibited\"",
                "inhibited by",
                "href=\"/slos/checkout-availability\"",
                "× burn rate",
            ],
        ),
        (
            "/models",
            "models",
            &["fraud", "amount", "class=\"state drifted\"", "PSI over time", "col ref", "col cur", "swatch fill ref"],
        ),
        (
            "/traces?service=checkout",
            "traces",
            &[
                "<table id=\"traces\"",
                "GET /api/orders",
                "POST /api/pay",
                "href=\"/traces/",
                "class=\"chart scatter\"",
                "1 error",
            ],
        ),
        (
            &trace_path,
            "trace",
            &[
                "id=\"waterfall\"",
                "class=\"seg error\"",
                "class=\"seg unset\"",
                "details",
                "class=\"axis-tick\"",
                "db.system",
            ],
        ),
        (
            &app_trace_path,
            "trace-with-logs",
            &[
                "<pre class=\"stack\">",
                "TimeoutError",
                "card processor did not answer",
                "id=\"resources\"",
                "host.name",
                "payment failed",
                "id=\"trace-logs-search\"",
            ],
        ),
        (
            &logs_path,
            "logs",
            &["<table class=\"logs\" id=\"logs\"", "payment requested", "payment failed", "order.id", "A-1001"],
        ),
    ];
    let mut seen_links = std::collections::BTreeSet::new();
    for (path, name, needles) in pages {
        let url = vigil.url(path);
        let html = dom(&profile, &url);
        for needle in needles {
            assert!(html.contains(needle), "{path}: {needle:?} missing from the DOM:\n{html}");
        }
        assert!(!html.contains("NaN"), "{path}: NaN rendered");
        assert!(html.contains(" UTC"), "{path}: times say their zone");
        seen_links.extend(links(&html));
        screenshot(&profile, &url, name);
    }
    // A phone's width: the same pages, narrower (wide-only columns drop out).
    screenshot_at(&profile, &vigil.url("/"), "overview-phone", "390,844");
    screenshot_at(&profile, &vigil.url("/slos/checkout-availability"), "slo-phone", "390,844");
    // A log with a trace id links to its trace, and the trace lists its logs and links back.
    let logs_html = dom(&profile, &vigil.url(&logs_path));
    assert!(logs_html.contains(&format!("href=\"/traces/{app_trace}#span-")), "{logs_html}");
    assert!(!logs_html.contains("service started"), "the log outside the trace is filtered out");
    let all_logs = dom(&profile, &vigil.url("/logs?q=service+started"));
    assert!(all_logs.contains("service started") && all_logs.contains("app.port"), "{all_logs}");
    let regex_logs = dom(&profile, &vigil.url("/logs?q=payment+(requested%7Cfailed)&match=regex&severity=error"));
    assert!(regex_logs.contains("payment failed") && !regex_logs.contains("payment requested"), "{regex_logs}");
    let bad_regex = dom(&profile, &vigil.url("/logs?q=(&match=regex"));
    assert!(bad_regex.contains("regex does not compile"), "{bad_regex}");
    let trace_html = dom(&profile, &vigil.url(&app_trace_path));
    assert!(trace_html.contains(&format!("href=\"/logs?trace_id={app_trace}")), "the trace links back to its logs");

    // The SLO page of a 30-day SLO a few minutes old: its charts cover its minutes, not a
    // lone dot at the edge of 30 days; each chart's legend has a swatch per series; the
    // annotation labels Chromium lays out never overlap.
    let slo_html = dom(&profile, &vigil.url("/slos/checkout-availability"));
    let sli_svg = slo_html.split("aria-label=\"SLI\"").nth(1).unwrap().split("</svg>").next().unwrap().to_string();
    let attribute = |name: &str| -> i64 {
        slo_html
            .split("aria-label=\"SLI\"")
            .nth(1)
            .unwrap()
            .split(&format!("{name}=\""))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (t0, t1) = (attribute("data-t0"), attribute("data-t1"));
    assert!(t1 - t0 <= 3_600_000, "a new SLO's chart spans {} ms, not its 30-day window", t1 - t0);
    assert!(sli_svg.contains("<path d=\"M") && sli_svg.contains('L'), "the SLI is a line, not one dot: {sli_svg}");
    let legends: Vec<&str> =
        slo_html.split("<ul class=\"legend\">").skip(1).map(|l| l.split("</ul>").next().unwrap()).collect();
    assert_eq!(legends.len(), 3, "SLI, budget and burn-rate charts each have a legend");
    assert_eq!(legends[1].matches("class=\"swatch s").count(), 2, "budget left and the even spend: {}", legends[1]);
    let labels = layout_boxes(dir.path(), &vigil.url("/slos/checkout-availability"), "svg.chart .marker-label");
    assert!(labels.len() >= 6, "three charts label their annotations: {labels:?}");
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            assert!(!overlap(a, b), "annotation labels overlap: {a:?} and {b:?}");
        }
    }

    // Hovering a chart reads out each series' value (the page's one script).
    let readout = after_load(
        dir.path(),
        &vigil.url("/explore?lang=promql&q=sum+by+(code)+(http_requests_total)&range=15m"),
        r#"var svg = document.querySelector("svg.chart"), box = svg.getBoundingClientRect();
  svg.dispatchEvent(new MouseEvent("mousemove", { clientX: box.right - box.width * 0.03, clientY: box.top + box.height / 2, bubbles: true }));
  var tip = document.querySelector(".readout");
  return tip && !tip.hidden ? tip.textContent : "no read-out";"#,
    );
    assert!(
        readout.contains("{code=\"500\"}") && readout.contains("{code=\"200\"}") && readout.contains("UTC"),
        "{readout}"
    );

    for link in &seen_links {
        let response = vigil.client.get(vigil.url(link)).header("accept", "text/html").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "broken link {link}");
    }
    // Unknown pages and SLOs get the HTML error page, not a trace.
    let html = dom(&profile, &vigil.url("/slos/no-such-slo"));
    assert!(html.contains("no SLO named") && html.contains("Back to the SLO overview"), "{html}");

    // The silence form: refused without the page's cookie, accepted with it and the form's
    // token (bound to that cookie; the cookie's own value is no token).
    let page = vigil.client.get(vigil.url("/alerts")).send().await.unwrap();
    let cookie = page.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries its token")
        .to_string();
    let planted = [
        ("csrf", cookie.split_once('=').unwrap().1),
        ("matchers", "alertname=\"FeatureDrift\""),
        ("duration", "1h"),
        ("created_by", "x"),
        ("comment", "x"),
    ];
    let planted =
        vigil.client.post(vigil.url("/alerts/silences")).header("cookie", &cookie).form(&planted).send().await.unwrap();
    assert_eq!(planted.status().as_u16(), 403, "the cookie's value is not the form's token");
    let form = [
        ("csrf", token.as_str()),
        ("matchers", "alertname=\"FeatureDrift\""),
        ("duration", "1h"),
        ("created_by", "tester"),
        ("comment", "retraining"),
    ];
    let forged = vigil.client.post(vigil.url("/alerts/silences")).form(&form).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 403, "no cookie, no silence");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let created =
        client.post(vigil.url("/alerts/silences")).header("cookie", &cookie).form(&form).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 303);
    let html = client.get(vigil.url("/alerts")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("id=\"silences\"") && html.contains("retraining"), "{html}");
    assert!(html.contains("id=\"silenced\""), "the alert moved to the silenced section: {html}");
}

#[tokio::test]
async fn an_empty_vigil_says_what_to_do_next() {
    if !require_program(CHROMIUM) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let profile = dir.path().join("chromium");
    for (path, needle) in [("/", "No SLOs yet"), ("/alerts", "No alerts"), ("/models", "No model references yet")] {
        let html = dom(&profile, &vigil.url(path));
        assert!(html.contains(needle), "{path}: {needle:?} missing:\n{html}");
        assert!(html.contains("4318") || path != "/", "the overview says where to send OTLP");
    }
}

/// Paging through `/logs` shows every record once, even where a page ends among records
/// that share one timestamp.
#[tokio::test]
async fn log_pages_show_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::start(&dir.path().join("data"), &[]).await;
    let now_ns = now_ms() as u64 * 1_000_000;
    // 250 records: 130 share one timestamp (a page of 100 ends inside them), the rest apart.
    let records: Vec<serde_json::Value> = (0..250u64)
        .map(|i| {
            let at = if (60..190).contains(&i) { now_ns - 60_000_000_000 } else { now_ns - i * 1_000_000_000 };
            json!({
                "timeUnixNano": at.to_string(),
                "severityNumber": if i % 50 == 0 { 17 } else { 9 },
                "body": {"stringValue": format!("record {i:03}")},
                "attributes": [{"key": "n", "value": {"stringValue": i.to_string()}}],
            })
        })
        .collect();
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pager"}}]},
        "scopeLogs": [{"logRecords": records}],
    }]});
    let response = vigil.client.post(format!("{}/v1/logs", vigil.otlp_http)).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some("/logs?service=pager&range=15m".to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let html = vigil.client.get(vigil.url(&path)).send().await.unwrap().text().await.unwrap();
        seen.extend(html.match_indices("<summary>record ").map(|(at, _)| html[at + 9..at + 19].to_string()));
        next = html
            .split("id=\"older\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(|href| href.replace("&amp;", "&").replace("&#38;", "&"));
        pages += 1;
        assert!(pages <= 5, "paging does not end");
    }
    assert_eq!(pages, 3, "100 a page");
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (250, 250), "every record once across pages");
    // Filters on the same data: severity, attribute, regex.
    let page = |path: &str| {
        let url = vigil.url(path);
        let client = vigil.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let errors = page("/logs?service=pager&severity=error&range=15m").await;
    let rows = |html: &str| html.matches("<summary>record ").count();
    assert_eq!(rows(&errors), 5, "records 0, 50, …, 200 are errors");
    let one = page("/logs?attr=n%3D123&range=15m").await;
    assert_eq!(rows(&one), 1);
    assert!(one.contains("record 123"));
    let regex = page("/logs?q=record+24%5B0-9%5D&match=regex&range=15m").await;
    assert_eq!(rows(&regex), 10, "record 240 to 249");
}
