//! Hardening: auth on every route and listener, TLS with real clients, decompression bombs and
//! oversized bodies, overload, SIGKILL under load, and a soak. Memory is read from
//! `/proc/PID/status`; nothing here asserts wall-clock time.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{Vigil, fixture, python, wait_until};
use crate::remote_write_client::{WriteRequest, encode, now_ms, series};
use crate::tls::certificates;

const INGEST: &str = "ingest-token-7f3a9c";
const READ: &str = "read-token-b81d22";
const ADMIN: &str = "admin-token-c09e4f";
const CSRF: &str = "0123456789abcdef0123456789abcdef";

fn auth_config() -> String {
    format!(
        "auth:\n  tokens:\n    - {{name: collector, token: {INGEST}, scopes: [ingest]}}\n    - {{name: grafana, token: {READ}, scopes: [read]}}\n"
    )
}

/// POSTs a remote-write body (snappy already applied).
async fn remote_write(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<reqwest::Response> {
    client.post(url).header("content-encoding", "snappy").body(body).send().await
}

/// Vigil's own `/metrics` text.
async fn own_metrics(vigil: &Vigil, client: &reqwest::Client) -> String {
    client.get(vigil.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// What a route needs. `None`: open to all.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Open,
    Ingest,
    Read,
    Admin,
}

struct Route {
    method: Method,
    path: &'static str,
    body: Option<(&'static str, Vec<u8>)>,
    needs: Needs,
    /// The dashboard forms' CSRF cookie, matching the `csrf` field of their body.
    csrf_cookie: bool,
}

fn route(method: Method, path: &'static str, needs: Needs) -> Route {
    Route { method, path, body: None, needs, csrf_cookie: false }
}

fn with_body(method: Method, path: &'static str, content_type: &'static str, body: &[u8], needs: Needs) -> Route {
    Route { method, path, body: Some((content_type, body.to_vec())), needs, csrf_cookie: false }
}

/// Every route of the API port, with what it needs.
fn api_routes() -> Vec<Route> {
    use Method as M;
    use Needs::*;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";
    let silence = br#"{"matchers":[{"name":"alertname","value":"X","isRegex":false}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2030-01-01T00:00:00Z","createdBy":"t","comment":"c"}"#;
    vec![
        route(M::GET, "/-/healthy", Open),
        route(M::HEAD, "/-/healthy", Open),
        route(M::GET, "/-/ready", Open),
        route(M::GET, "/-/login", Open),
        route(M::GET, "/static/vigil.css", Open),
        route(M::GET, "/metrics", Read),
        with_body(M::POST, "/api/v1/sql", json, br#"{"query":"SELECT 1"}"#, Read),
        with_body(M::POST, "/api/v1/sql", form, b"query=SELECT+1", Read),
        route(M::GET, "/api/v1/sql?query=SELECT%201", Read),
        route(M::GET, "/api/v1/targets", Read),
        route(M::GET, "/api/v1/slos", Read),
        route(M::GET, "/api/v1/slos/checkout", Read),
        route(M::GET, "/api/v1/alerts", Read),
        route(M::GET, "/api/v1/rules", Read),
        route(M::GET, "/api/v1/silences", Read),
        route(M::GET, "/api/v1/query?query=1", Read),
        with_body(M::POST, "/api/v1/query", form, b"query=1", Read),
        route(M::GET, "/api/v1/query_range?query=1&start=0&end=60&step=15", Read),
        with_body(M::POST, "/api/v1/query_range", form, b"query=1&start=0&end=60&step=15", Read),
        route(M::GET, "/api/v1/series?match[]=up", Read),
        with_body(M::POST, "/api/v1/series", form, b"match[]=up", Read),
        route(M::GET, "/api/v1/labels", Read),
        with_body(M::POST, "/api/v1/labels", form, b"", Read),
        route(M::GET, "/api/v1/label/job/values", Read),
        route(M::GET, "/api/v1/metadata", Read),
        route(M::GET, "/api/v1/status/buildinfo", Read),
        route(M::GET, "/api/v1/status/config", Read),
        route(M::GET, "/api/v1/status/flags", Read),
        route(M::GET, "/api/v1/status/runtimeinfo", Read),
        route(M::GET, "/api/v1/format_query?query=sum(up)", Read),
        route(M::GET, "/api/v1/drift/reference", Read),
        route(M::GET, "/api/v1/drift/scores", Read),
        route(M::GET, "/api/v1/drift/models", Read),
        route(M::GET, "/api/v1/query_exemplars?query=up&start=0&end=60", Read),
        with_body(M::POST, "/api/v1/query_exemplars", form, b"query=up&start=0&end=60", Read),
        route(M::GET, "/", Read),
        route(M::GET, "/slos/checkout", Read),
        route(M::GET, "/alerts", Read),
        route(M::GET, "/models", Read),
        route(M::GET, "/explore", Read),
        route(M::GET, "/traces", Read),
        route(M::GET, "/traces/0af7651916cd43dd8448eb211c80319c", Read),
        route(M::POST, "/-/reload", Admin),
        route(M::PUT, "/-/reload", Admin),
        with_body(M::POST, "/api/v1/silences", json, silence, Admin),
        route(M::DELETE, "/api/v1/silences/00000000-0000-0000-0000-000000000000", Admin),
        Route {
            csrf_cookie: true,
            ..with_body(
                M::POST,
                "/alerts/silences",
                form,
                format!("csrf={CSRF}&matchers=alertname%3DX&duration=1h&created_by=t&comment=c").as_bytes(),
                Admin,
            )
        },
        Route {
            csrf_cookie: true,
            ..with_body(M::POST, "/alerts/silences/x/expire", form, format!("csrf={CSRF}").as_bytes(), Admin)
        },
        with_body(
            M::POST,
            "/api/v1/read",
            "application/x-protobuf",
            &snap::raw::Encoder::new().compress_vec(&[]).unwrap(),
            Read,
        ),
        route(M::GET, "/api/v2/status", Read),
        route(M::GET, "/api/v2/receivers", Read),
        route(M::GET, "/api/v2/alerts?filter=alertname%3D%22X%22", Read),
        route(M::GET, "/api/v2/alerts/groups", Read),
        route(M::GET, "/api/v2/silences", Read),
        route(M::GET, "/api/v2/silence/00000000-0000-0000-0000-000000000000", Read),
        with_body(M::POST, "/api/v2/silences", json, silence, Admin),
        route(M::DELETE, "/api/v2/silence/00000000-0000-0000-0000-000000000000", Admin),
        with_body(M::POST, "/api/v2/alerts", json, br#"[{"labels":{"alertname":"X"}}]"#, Ingest),
        with_body(M::POST, "/v1/metrics", "application/x-protobuf", b"", Ingest),
        with_body(M::POST, "/v1/traces", "application/x-protobuf", b"", Ingest),
        with_body(M::POST, "/v1/logs", "application/x-protobuf", b"", Ingest),
        with_body(
            M::POST,
            "/api/v1/write",
            "application/x-protobuf",
            &encode(&WriteRequest { timeseries: vec![] }),
            Ingest,
        ),
        with_body(M::POST, "/api/v1/import/prometheus", "text/plain", b"auth_matrix_total 1\n", Ingest),
        with_body(M::POST, "/api/v1/drift", json, b"{}", Ingest),
        with_body(M::POST, "/api/v1/drift/reference", json, b"{}", Ingest),
    ]
}

async fn call(client: &reqwest::Client, base: &str, route: &Route) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client.request(route.method.clone(), format!("{base}{}", route.path));
    if let Some((content_type, body)) = &route.body {
        request = request.header("content-type", *content_type).body(body.clone());
    }
    if route.csrf_cookie {
        request = request.header("cookie", format!("vigil_csrf={CSRF}"));
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap_or_default())
}

/// Checks one route under every kind of credential.
async fn check_route(vigil: &Vigil, base: &str, route: &Route) {
    let what = format!("{} {}{}", route.method, base, route.path);
    let none = vigil.client_with_token(None);
    let wrong = vigil.client_with_token(Some("not-a-configured-token"));
    let (right, wrong_scope) = match route.needs {
        Needs::Open => (READ, INGEST),
        Needs::Read => (READ, INGEST),
        Needs::Ingest => (INGEST, READ),
        Needs::Admin => (ADMIN, READ),
    };
    if route.needs == Needs::Open {
        for client in [&none, &wrong] {
            let (status, _, body) = call(client, base, route).await;
            assert!(status.is_success(), "{what} is open, got {status}: {body}");
        }
        return;
    }
    for (client, label) in [(&none, "no token"), (&wrong, "an unknown token")] {
        let (status, headers, body) = call(client, base, route).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} with {label}: {body}");
        let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.starts_with("Bearer realm=\"vigil\""), "{what}: WWW-Authenticate {challenge:?}");
        if route.method != Method::HEAD {
            let json: Value =
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what} with {label}: not JSON: {body}"));
            assert!(json["error"].is_string() && json["hint"].as_str().unwrap().contains("Bearer"), "{what}: {json}");
        }
    }
    let (status, _, body) = call(&vigil.client_with_token(Some(wrong_scope)), base, route).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{what} with a token lacking the scope: {body}");
    assert!(body.contains("lacks the"), "{what}: {body}");
    for token in [right, ADMIN] {
        let (status, _, body) = call(&vigil.client_with_token(Some(token)), base, route).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{what} with a right token: {status} {body}"
        );
        assert!(!status.is_server_error(), "{what}: {status} {body}");
    }
}

#[tokio::test]
async fn every_route_and_listener_needs_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin_flag = format!("ops:admin:{ADMIN}");
    // This test presents one unknown token per route on purpose: lift the guessing throttle.
    let args = ["--auth-token", &admin_flag, "--log-level", "debug", "--max-auth-failures-per-minute", "0"];
    let mut vigil = Vigil::start_with_config(&dir.path().join("data"), &auth_config(), &args).await;
    let api = format!("http://{}", vigil.addr);
    for route in api_routes() {
        check_route(&vigil, &api, &route).await;
    }
    // The OTLP/HTTP port: only the OTLP routes, all ingest.
    for path in ["/v1/metrics", "/v1/traces", "/v1/logs"] {
        check_route(
            &vigil,
            &vigil.otlp_http,
            &with_body(Method::POST, path, "application/x-protobuf", b"", Needs::Ingest),
        )
        .await;
    }
    // Unknown paths say 404 and nothing more, token or not.
    let (status, _, _) =
        call(&vigil.client_with_token(None), &api, &route(Method::GET, "/api/v1/nothing", Needs::Open)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // OTLP/gRPC with the real OpenTelemetry SDK: UNAUTHENTICATED, PERMISSION_DENIED, then OK.
    if let Some(python) = python() {
        for (token, expect) in
            [(None, Some("UNAUTHENTICATED")), (Some(READ), Some("PERMISSION_DENIED")), (Some(INGEST), None)]
        {
            let mut command = Command::new(&python);
            command.arg(fixture("otlp/client.py")).args(["grpc", &vigil.otlp_grpc, "grpc-auth"]);
            if let Some(token) = token {
                command.env("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer%20{token}"));
            }
            let output = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            match expect {
                Some(code) => {
                    assert!(!output.status.success(), "gRPC export with {token:?} succeeded");
                    assert!(stderr.contains(code), "gRPC export with {token:?}: expected {code} in\n{stderr}");
                }
                None => assert!(output.status.success(), "gRPC export with the ingest token failed:\n{stderr}"),
            }
        }
        vigil.use_token(READ);
        let count = vigil.count("SELECT count(*) FROM rig_requests_total WHERE job = 'grpc-auth'").await;
        assert_eq!(count, 2, "only the authorised export was stored");
    }

    // /metrics counts the refusals by reason.
    let metrics = own_metrics(&vigil, &vigil.client_with_token(Some(READ))).await;
    for reason in ["missing", "unknown", "forbidden"] {
        assert!(
            metrics.contains(&format!("vigil_auth_refusals_total{{reason=\"{reason}\"}}")),
            "no {reason} refusals counted:\n{metrics}"
        );
    }
    // Tokens never reach the log, even at debug level.
    let log = vigil.log_text();
    assert!(log.contains("bearer-token auth on"), "{log}");
    for token in [INGEST, READ, ADMIN] {
        assert!(!log.contains(token), "a token is in the log");
    }
}

#[tokio::test]
async fn a_browser_logs_in_with_a_read_token_and_keeps_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let admin_flag = format!("ops:admin:{ADMIN}");
    let vigil =
        Vigil::start_with_config(&dir.path().join("data"), &auth_config(), &["--auth-token", &admin_flag]).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = |path: &str| browser.get(vigil.url(path)).header("accept", "text/html,application/xhtml+xml");

    // No token: a 401 page with the login form, which comes back to the page asked for.
    let response = page("/slos/checkout?window=7d").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"<form method="post" action="/-/login">"#), "{html}");
    assert!(html.contains(r#"name="next" value="/slos/checkout?window=7d""#), "{html}");
    // API clients get JSON, not the page.
    assert_eq!(browser.get(vigil.url("/api/v1/slos")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let login =
        |token: &str, next: &str| browser.post(vigil.url("/-/login")).form(&[("token", token), ("next", next)]).send();
    let unknown = login("guess", "/").await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(unknown.headers().get("set-cookie").is_none());
    assert!(unknown.text().await.unwrap().contains("not one of Vigil"));
    let ingest_only = login(INGEST, "/").await.unwrap();
    assert_eq!(ingest_only.status(), StatusCode::FORBIDDEN, "an ingest token does not open the dashboard");
    assert!(ingest_only.headers().get("set-cookie").is_none());
    // An open redirect is not on offer.
    let response = login(READ, "//evil.example/").await.unwrap();
    assert_eq!(response.headers()["location"], "/");

    let response = login(READ, "/slos/checkout?window=7d").await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/slos/checkout?window=7d");
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["vigil_session=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(READ), "the cookie must not carry the token itself: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    for path in ["/", "/alerts", "/api/v1/slos"] {
        let response = page(path).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} with the session cookie");
    }
    // The cookie is not a credential for admin or ingest APIs (no CSRF token there) ...
    let reload = browser.post(vigil.url("/-/reload")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(reload.status(), StatusCode::UNAUTHORIZED);
    let write = browser
        .post(vigil.url("/api/v1/import/prometheus"))
        .header("cookie", &cookie)
        .body("x 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    // ... and a read login cannot silence from the dashboard: that is admin work.
    let silence = browser
        .post(vigil.url("/alerts/silences"))
        .header("cookie", &cookie)
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(silence.status(), StatusCode::FORBIDDEN);

    let logout = browser.post(vigil.url("/-/logout")).header("cookie", &cookie).send().await.unwrap();
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn every_listener_speaks_tls_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificates(dir.path());
    let token_flag = format!("sdk:ingest+read:{INGEST}");
    let args = [
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--auth-token",
        &token_flag,
    ];
    let mut vigil = Vigil::start_tls(&dir.path().join("data"), &args, &ca).await;
    vigil.use_token(INGEST);
    assert!(vigil.url("/").starts_with("https://"));

    // Plain HTTP on a TLS port gets nowhere.
    let plain = reqwest::Client::new().get(format!("http://{}/-/healthy", vigil.addr)).send().await;
    assert!(plain.map_or(true, |r| !r.status().is_success()), "plain HTTP answered on a TLS listener");
    // A client that does not trust the CA refuses the server.
    assert!(reqwest::Client::new().get(vigil.url("/-/healthy")).send().await.is_err());

    let t0 = now_ms() - 60_000;
    let body = encode(&WriteRequest {
        timeseries: vec![series("tls_write_total", &[("job", "tls")], &[(t0, 1.0), (t0 + 1000, 2.0)])],
    });
    let response = remote_write(&vigil.client, &vigil.url("/api/v1/write"), body).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(vigil.count("SELECT count(*) FROM tls_write_total").await, 2);

    // The OpenTelemetry SDK over OTLP/HTTP and OTLP/gRPC, with TLS and its bearer token.
    if let Some(python) = python() {
        let ca_file = dir.path().join("ca.pem");
        for (mode, endpoint, service) in
            [("http", vigil.otlp_http.clone(), "tls-http"), ("grpc-gzip", vigil.otlp_grpc.clone(), "tls-grpc")]
        {
            let output = Command::new(&python)
                .arg(fixture("otlp/client.py"))
                .args([mode, &endpoint, service])
                // requests lets these override the exporter's own CA file (psf/requests#3829).
                .env_remove("REQUESTS_CA_BUNDLE")
                .env_remove("CURL_CA_BUNDLE")
                .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file)
                .env("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer%20{INGEST}"))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{mode} over TLS: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let rows = vigil
                .rows(&format!("SELECT value FROM rig_requests_total WHERE job = '{service}' ORDER BY route"))
                .await;
            assert_eq!(rows, vec![serde_json::json!([5.0]), serde_json::json!([5.0])], "{mode}");
        }
    }
}

/// Bytes of gzip that inflate to `size` zero bytes, made a piece at a time.
fn gzip_bomb(size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..size / chunk.len() {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

#[tokio::test]
async fn decompression_bombs_and_oversized_bodies_are_refused_without_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let vigil =
        Vigil::start(&dir.path().join("data"), &["--max-decompressed-size", "16MiB", "--max-body-size", "4MiB"]).await;
    let peak_before = vigil.memory("VmHWM");
    let bomb = gzip_bomb(2 << 30); // 2 GiB of zeros in about 2 MiB
    assert!(bomb.len() < 4 << 20, "{}", bomb.len());

    // OTLP/HTTP, gzip: on both ports.
    for base in [vigil.otlp_http.clone(), vigil.url("")] {
        let response = vigil
            .client
            .post(format!("{base}/v1/metrics"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{base}");
        // OTLP answers in the request's encoding: a google.rpc.Status, here as JSON.
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("above the limit"), "{body}");
    }
    // OTLP/gRPC, gzip-compressed message (a raw gRPC frame over HTTP/2).
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bomb);
    let response = h2
        .post(format!("{}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", vigil.otlp_grpc))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    let grpc_status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    let _ = response.bytes().await;
    assert_ne!(grpc_status.as_deref(), Some("0"), "the gRPC bomb was accepted");

    // Remote write: a snappy block that claims 3 GiB.
    let mut claims_3gib = Vec::new();
    let mut length = 3u64 << 30;
    while length >= 0x80 {
        claims_3gib.push((length as u8) | 0x80);
        length >>= 7;
    }
    claims_3gib.push(length as u8);
    claims_3gib.extend_from_slice(&[0u8; 64]);
    let response = remote_write(&vigil.client, &vigil.url("/api/v1/write"), claims_3gib).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Bodies over the size limit, with a Content-Length and streamed without one. The server
    // answers 413 without reading the rest and closes the connection, so the client may see the
    // 413 or a broken pipe while still sending; never a 2xx. The refusals are counted below.
    let big = vec![b'x'; 32 << 20];
    let declared = vigil.client.post(vigil.url("/api/v1/import/prometheus")).body(big.clone()).send().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let streamed = remote_write(
        &vigil.client,
        &vigil.url("/api/v1/write"),
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    for response in [declared, streamed].into_iter().flatten() {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    let peak_after = vigil.memory("VmHWM");
    let grown = peak_after.saturating_sub(peak_before);
    println!("peak RSS {} MiB -> {} MiB after 2 GiB gzip bombs and 32 MiB bodies", peak_before >> 20, peak_after >> 20);
    assert!(grown < 200 << 20, "peak memory grew by {} MiB: a bomb was inflated", grown >> 20);
    // Still serving, and the refusals are counted by limit.
    assert_eq!(vigil.client.get(vigil.url("/-/ready")).send().await.unwrap().status(), StatusCode::OK);
    let metrics = own_metrics(&vigil, &vigil.client).await;
    for limit in ["decompressed_size", "body_size"] {
        assert!(
            metrics.contains(&format!("vigil_limit_refusals_total{{limit=\"{limit}\"}}")),
            "{limit} not counted:\n{metrics}"
        );
    }
}

/// A writer's `sequence`-th batch: `samples` samples a series, a millisecond apart, after
/// the batch before (a second apart, a writer fast enough reached the present after ~2,200
/// batches and its samples were refused as from the future).
fn batch(metric: &str, writer: usize, sequence: u64, series_count: usize, samples: usize, t0: i64) -> Vec<u8> {
    let base = t0 + sequence as i64 * samples as i64;
    encode(&WriteRequest {
        timeseries: (0..series_count)
            .map(|s| {
                let points: Vec<(i64, f64)> = (0..samples).map(|i| (base + i as i64, sequence as f64)).collect();
                series(metric, &[("writer", &writer.to_string()), ("series", &s.to_string())], &points)
            })
            .collect(),
    })
}

#[tokio::test]
async fn sigkill_under_load_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = now_ms() as u64;
    println!("kill points from seed {seed}");
    let mut random = seed;
    let mut next_random = move || {
        random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        random >> 33
    };
    let t0 = now_ms() - 6 * 3_600_000;
    const WRITERS: usize = 3;
    const SERIES: usize = 20;
    const SAMPLES: usize = 10;
    // Per writer: the next sequence number to send, carried across restarts.
    let mut next_sequence = [0u64; WRITERS];
    let mut acknowledged = 0u64;
    for round in 0..5 {
        let mut vigil = Vigil::start(&data, &["--flush-interval", "2s"]).await;
        if round == 0 {
            // Nothing written yet: no table to count in.
        } else {
            let stored = vigil.count("SELECT count(*) FROM crash_load_total").await as u64;
            assert!(stored >= acknowledged, "round {round}: {stored} samples stored, {acknowledged} acknowledged");
            // Every acknowledged batch is whole: each writer's sequences below its count are all there.
            for (writer, &sequences) in next_sequence.iter().enumerate() {
                let whole = vigil
                    .count(&format!(
                        "SELECT count(*) FROM crash_load_total WHERE writer = '{writer}' AND value < {sequences}"
                    ))
                    .await as u64;
                assert_eq!(whole, sequences * (SERIES * SAMPLES) as u64, "round {round}, writer {writer}");
            }
        }
        let url = vigil.url("/api/v1/write");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut writers = Vec::new();
        for (writer, &first) in next_sequence.iter().enumerate() {
            let (client, url, stop, acked_so_far) =
                (vigil.client.clone(), url.clone(), stop.clone(), acked_so_far.clone());
            let mut sequence = first;
            writers.push(tokio::spawn(async move {
                let mut acked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = batch("crash_load_total", writer, sequence, SERIES, SAMPLES, t0);
                    match remote_write(&client, &url, body).await {
                        Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                            acked += 1;
                            sequence += 1;
                            acked_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        // Backpressure (the buffer a replayed WAL refilled is being flushed):
                        // not acknowledged; a sender waits and sends the same batch again.
                        Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(response) => panic!("writer {writer}: {} to a remote write", response.status()),
                        // Killed mid-request: not acknowledged, sent again after the restart.
                        Err(_) => break,
                    }
                }
                (acked, sequence)
            }));
        }
        // The kill falls while writes are being acknowledged: after the first, not at a time
        // that a slow restart (a replayed WAL flushed first) may not have reached.
        let first_ack = tokio::time::timeout(Duration::from_secs(60), async {
            while acked_so_far.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(first_ack.await.is_ok(), "round {round}: no write acknowledged within 60 s of the start");
        let kill_after = Duration::from_millis(next_random() % 1700);
        tokio::time::sleep(kill_after).await;
        vigil.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut round_acked = 0;
        for (writer, handle) in writers.into_iter().enumerate() {
            let (acked, sequence) = handle.await.unwrap();
            round_acked += acked;
            next_sequence[writer] = sequence;
        }
        acknowledged += round_acked * (SERIES * SAMPLES) as u64;
        println!(
            "round {round}: killed {kill_after:?} after the first acknowledgement, {round_acked} batches acknowledged"
        );
        assert!(round_acked > 0, "round {round}: no write was acknowledged before the kill");
    }
    let vigil = Vigil::start(&data, &[]).await;
    for (writer, &sequences) in next_sequence.iter().enumerate() {
        let whole = vigil
            .count(&format!("SELECT count(*) FROM crash_load_total WHERE writer = '{writer}' AND value < {sequences}"))
            .await as u64;
        assert_eq!(whole, sequences * (SERIES * SAMPLES) as u64, "after the last restart, writer {writer}");
    }
    println!("{acknowledged} acknowledged samples, all present after 5 SIGKILLs");
}

#[tokio::test]
async fn overload_is_refused_with_retry_after_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-concurrent-ingest",
        "4",
        "--buffer-size",
        "24MiB",
        "--wal-max-pending",
        "4MiB",
        "--flush-interval",
        "1s",
    ];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let url = vigil.url("/api/v1/write");
    let t0 = now_ms() - 3_600_000;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let statuses = Arc::new(parking_lot::Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let missing_retry_after = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut writers = Vec::new();
    for writer in 0..48 {
        let (client, url, acknowledged, statuses, missing_retry_after) =
            (vigil.client.clone(), url.clone(), acknowledged.clone(), statuses.clone(), missing_retry_after.clone());
        writers.push(tokio::spawn(async move {
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let body = batch("overload_total", writer, sequence, 200, 25, t0);
                let Ok(response) = remote_write(&client, &url, body).await else {
                    continue;
                };
                let status = response.status();
                if status == StatusCode::NO_CONTENT {
                    acknowledged.fetch_add(200 * 25, Ordering::Relaxed);
                    sequence += 1;
                } else if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
                    && response.headers().get("retry-after").is_none()
                {
                    missing_retry_after.fetch_add(1, Ordering::Relaxed);
                }
                *statuses.lock().entry(status.as_u16()).or_default() += 1;
            }
        }));
    }
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        peak_rss = peak_rss.max(vigil.memory("VmRSS"));
        let healthy = vigil.client.get(vigil.url("/-/healthy")).send().await.map(|r| r.status());
        assert!(matches!(healthy, Ok(StatusCode::OK)), "not healthy under overload: {healthy:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let statuses = statuses.lock().clone();
    println!("overload: responses by status {statuses:?}, peak RSS {} MiB", peak_rss >> 20);
    let refused = statuses.get(&503).copied().unwrap_or(0) + statuses.get(&429).copied().unwrap_or(0);
    assert!(refused > 0, "48 writers never met a limit: {statuses:?}");
    assert!(statuses.keys().all(|s| [204, 429, 503].contains(s)), "unexpected statuses {statuses:?}");
    assert_eq!(missing_retry_after.load(Ordering::Relaxed), 0, "a 429/503 without Retry-After");
    assert!(peak_rss < 2 << 30, "RSS reached {} MiB", peak_rss >> 20);

    // Recovered: a normal write is accepted again, and every acknowledged sample is there.
    wait_until("a write accepted after the overload", 60, async || {
        let body = batch("after_overload_total", 0, 0, 1, 1, t0);
        let response = remote_write(&vigil.client, &url, body).await.ok()?;
        (response.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;
    let acknowledged = acknowledged.load(Ordering::Relaxed) as i64;
    assert_eq!(vigil.count("SELECT count(*) FROM overload_total").await, acknowledged);
    let metrics = own_metrics(&vigil, &vigil.client).await;
    assert!(metrics.contains("vigil_limit_refusals_total{limit="), "refusals not counted:\n{metrics}");
}

#[tokio::test]
async fn soak_at_a_fixed_rate_keeps_memory_flat() {
    let seconds: u64 = std::env::var("VIGIL_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let dir = tempfile::tempdir().unwrap();
    // Compaction merges in memory: its row cap is what bounds it once a partition grows.
    let args = ["--flush-interval", "10s", "--buffer-size", "256MiB", "--compaction-max-rows", "600000"];
    let vigil = Vigil::start(&dir.path().join("data"), &args).await;
    let url = vigil.url("/api/v1/write");
    // 20 requests a second of 100 series x 10 samples: 20,000 samples/s over 2,000 series.
    let per_second = 20u64;
    let t0 = now_ms() - 2 * 86_400_000;
    let errors = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (client, url, errors, sent) = (vigil.client.clone(), url.clone(), errors.clone(), sent.clone());
        async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(1000 / per_second));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut sequence = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                ticker.tick().await;
                let body = batch("soak_total", (sequence % 20) as usize, sequence / 20, 100, 10, t0);
                match remote_write(&client, &url, body).await {
                    Ok(r) if r.status() == StatusCode::NO_CONTENT => {}
                    other => {
                        eprintln!("soak write failed: {:?}", other.map(|r| r.status()));
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
                sequence += 1;
            }
        }
    });
    let started = Instant::now();
    let mut curve = Vec::new();
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        curve.push((started.elapsed().as_secs(), vigil.memory("VmRSS") >> 20));
    }
    writer.await.unwrap();
    println!("soak RSS curve (s, MiB): {curve:?}");
    println!("soak: {} requests, {} errors", sent.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    assert_eq!(errors.load(Ordering::Relaxed), 0, "error responses below the limits");
    // Flat: after the first third (buffers and caches warming), the last third's peak is within
    // a quarter (plus 48 MiB of allocator slack) of the middle third's peak.
    let third = curve.len() / 3;
    let peak = |points: &[(u64, u64)]| points.iter().map(|p| p.1).max().unwrap_or(0);
    let (middle, last) = (peak(&curve[third..2 * third]), peak(&curve[2 * third..]));
    assert!(last <= middle + middle / 4 + 48, "RSS grew from {middle} MiB to {last} MiB: {curve:?}");
    let stored = vigil.count("SELECT count(*) FROM soak_total").await as usize;
    assert_eq!(stored, sent.load(Ordering::Relaxed) * 1000);
}
