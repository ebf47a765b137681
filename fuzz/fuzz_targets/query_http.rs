//! The SQL and PromQL HTTP surface through the real router: query strings, form bodies and
//! JSON of `/api/v1/sql`, `query`, `query_range`, `series`, `labels` and `label/{name}/values`,
//! over a store holding a few series. Any answer is fine but a panic (the router's panic
//! guard answers `internal error`) or a crash; every answer must be JSON.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vigil_query::{QueryEngine, QueryOptions};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

struct NoReload;

impl vigil_web::Reload for NoReload {
    fn reload(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn status(&self) -> vigil_web::ReloadStatus {
        vigil_web::ReloadStatus::default()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let router = runtime.block_on(async {
            let storage = vigil_storage::Storage::open(vigil_storage::StorageOptions::new(dir.path())).await.expect("storage");
            let options = QueryOptions { timeout: Duration::from_secs(5), ..QueryOptions::default() };
            let engine = QueryEngine::new(storage.clone(), options).expect("engine");
            let ingestor = vigil_ingest::Ingestor::new(storage.clone(), vigil_ingest::Limits::default());
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let text: String = (0..20)
                .map(|i| format!("http_requests_total{{job=\"api\",code=\"{}\"}} {} {}\n", 200 + i % 3 * 100, i * 10, (now - 600 + i * 30) * 1000))
                .collect();
            ingestor.import_text(text.as_bytes(), "text/plain", false, &[]).await.expect("seed data");
            let drift = vigil_drift::DriftEngine::open(engine.clone(), vigil_drift::DriftOptions {
                window: Duration::from_secs(3600),
                min_samples: 5,
                flush_interval: Duration::from_secs(10),
                thresholds: vigil_drift::default_thresholds(),
                max_values_per_request: 1000,
            }, Arc::new(vigil_storage::clock::SystemClock))
            .await
            .expect("drift");
            let alerting = vigil_alerting::Alerting::open(
                engine.clone(),
                vigil_alerting::AlertingOptions::new(dir.path().join("alerting")),
                Arc::new(vigil_alerting::SystemClock),
            );
            let state = vigil_web::AppState {
                ingestor: ingestor.clone(),
                engine: engine.clone(),
                metrics: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
                scraper: Arc::new(vigil_ingest::scrape::Scraper::start(Vec::new(), ingestor)),
                slos: Arc::new(vigil_query::slo::SloEvaluator::new(engine)),
                alerting,
                drift,
                reloader: Arc::new(NoReload),
                ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                dashboard: Default::default(),
                auth: Default::default(),
            };
            let options = vigil_web::HttpOptions::default();
            vigil_web::router(state, &options, &vigil_web::Slots::new(&options))
        });
        Fixture { runtime, router, _dir: dir }
    })
}

fn encoded(bytes: &[u8]) -> String {
    form_urlencoded::byte_serialize(bytes).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if rest.len() > 8192 {
        return;
    }
    // The rest: a query text, then (after a NUL) further raw parameters.
    let (text, raw) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let raw = String::from_utf8_lossy(raw);
    let (method, uri, content_type, body): (Method, String, &str, Vec<u8>) = match selector % 8 {
        0 => (Method::POST, "/api/v1/sql".into(), "application/json", serde_json::json!({"query": String::from_utf8_lossy(text)}).to_string().into_bytes()),
        1 => (Method::POST, "/api/v1/sql".into(), "application/json", rest.to_vec()),
        2 => (Method::GET, format!("/api/v1/query?query={}&{raw}", encoded(text)), "", Vec::new()),
        3 => (Method::POST, "/api/v1/query_range".into(), "application/x-www-form-urlencoded", format!("query={}&{raw}", encoded(text)).into_bytes()),
        4 => (Method::GET, format!("/api/v1/series?match[]={}&{raw}", encoded(text)), "", Vec::new()),
        5 => (Method::POST, "/api/v1/labels".into(), "application/x-www-form-urlencoded", format!("match[]={}&{raw}", encoded(text)).into_bytes()),
        6 => (Method::GET, format!("/api/v1/label/{}/values?{raw}", encoded(text)), "", Vec::new()),
        _ => (Method::POST, "/api/v1/query".into(), "application/x-www-form-urlencoded", rest.to_vec()),
    };
    let Ok(request) = Request::builder().method(method).uri(uri).header("content-type", content_type).body(Body::from(body)) else { return };
    let fixture = fixture();
    let (status, body) = fixture.runtime.block_on(async {
        let response = fixture.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
        (status, body)
    });
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&body)));
    assert_ne!(json["error"], "internal error", "a handler panicked: {json}");
});
