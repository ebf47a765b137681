//! Vigil's HTTP edge: one axum router for the JSON APIs, the ingest endpoints, the ops
//! endpoints and the server-rendered dashboard. Handlers decode the request, call the crate
//! that owns the work and encode the answer; no query or storage logic lives here.

mod alertmanager_api;
mod alerts_api;
pub mod auth;
mod backtest_api;
mod body;
mod corrections_api;
pub mod dashboard;
mod drift_api;
mod error;
mod ingest_routes;
mod ops;
mod otlp_grpc;
mod otlp_http;
pub mod prom_api;
mod reload;
mod remote_read;
pub mod server;
mod slo_api;
mod sql;
mod targets;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use vigil_ingest::Ingestor;
use vigil_ingest::scrape::Scraper;
use vigil_query::QueryEngine;

use auth::Guard;

pub use auth::{Auth, Scope, TokenSpec};
pub use error::ApiError;
pub use otlp_grpc::router as otlp_grpc_router;
pub use reload::{Reload, ReloadRefused, ReloadStatus};

/// Wall-clock time in Unix milliseconds.
pub(crate) use vigil_storage::clock::now_ms;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ingestor: Ingestor,
    pub engine: QueryEngine,
    pub metrics: PrometheusHandle,
    pub scraper: Arc<Scraper>,
    pub slos: Arc<vigil_query::slo::SloEvaluator>,
    pub alerting: vigil_alerting::Alerting,
    pub drift: vigil_drift::DriftEngine,
    pub reloader: Arc<dyn Reload>,
    /// False until start-up is complete and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub dashboard: dashboard::DashboardState,
    /// Bearer tokens; none configured means open.
    pub auth: Auth,
    /// What `/api/v1/status/{config,flags,runtimeinfo}` show.
    pub status: Arc<prom_api::StatusInfo>,
}

impl axum::extract::FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

/// Bounds applied at the HTTP edge.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Largest request body accepted, compressed as sent.
    pub max_body_bytes: usize,
    /// Ingest requests processed at once; more are refused with 503 rather than queued.
    pub max_concurrent_ingest: usize,
    /// Queries (SQL, PromQL) processed at once; more are refused with 503.
    pub max_concurrent_queries: usize,
    /// A request body must have arrived whole this long after its headers (408 past it).
    pub body_read_timeout: std::time::Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 64 << 20,
            max_concurrent_ingest: 256,
            max_concurrent_queries: 64,
            body_read_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// The places of requests in flight, one pool per kind shared by every route and listener of
/// that kind (a layer per route would give each route a pool of its own).
#[derive(Clone)]
pub struct Slots {
    ingest: Arc<tokio::sync::Semaphore>,
    queries: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    pub fn new(options: &HttpOptions) -> Slots {
        Slots {
            ingest: Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_ingest.max(1))),
            queries: Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_queries.max(1))),
        }
    }
}

impl HttpOptions {
    fn body_limits(&self) -> body::BodyLimits {
        body::BodyLimits { max_bytes: self.max_body_bytes, read_timeout: self.body_read_timeout }
    }
}

/// A route group's admission rule, as a route layer.
fn guarded(routes: Router<AppState>, auth: &Auth, scope: Scope, cookie_allowed: bool) -> Router<AppState> {
    routes.route_layer(middleware::from_fn_with_state(Guard { auth: auth.clone(), scope, cookie_allowed }, auth::guard))
}

/// The three OTLP/HTTP routes.
fn otlp_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/metrics", post(otlp_http::metrics))
        .route("/v1/traces", post(otlp_http::traces))
        .route("/v1/logs", post(otlp_http::logs))
}

/// Every ingest route of the API port: OTLP, remote write, text import and drift.
fn all_ingest_routes() -> Router<AppState> {
    otlp_routes()
        .route("/api/v1/write", post(ingest_routes::remote_write))
        .route("/api/v1/import/prometheus", post(ingest_routes::import_prometheus))
        .route("/api/v1/drift", post(drift_api::ingest))
        .route("/api/v1/drift/reference", post(drift_api::register_reference))
}

/// Ingest routes behind the ingest scope and a concurrency limit that sheds load with 503
/// instead of queueing.
fn guarded_ingest(routes: Router<AppState>, options: &HttpOptions, slots: &Slots, auth: &Auth) -> Router<AppState> {
    guarded(
        with_concurrency_limit(routes, "concurrent_ingest", slots.ingest.clone(), options),
        auth,
        Scope::Ingest,
        false,
    )
}

/// At most `max` requests of these routes at once; the next one gets 503 with `Retry-After`
/// at once rather than a place in a queue that would grow without bound. The body is read
/// before a place is taken (see [`body`]).
fn with_concurrency_limit(
    routes: Router<AppState>,
    limit: &'static str,
    slots: Arc<tokio::sync::Semaphore>,
    options: &HttpOptions,
) -> Router<AppState> {
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| async move {
            error::count_limit(limit);
            ApiError::overloaded(
                format!("too many requests in flight ({})", limit.replace('_', " ")),
                "retry after the Retry-After delay",
            )
        }))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(slots));
    routes.layer(shed).layer(middleware::from_fn_with_state(options.body_limits(), body::read_whole))
}

/// The API port: everything. Routes are grouped by the scope they need; with no token
/// configured the guards let everything through.
pub fn router(state: AppState, options: &HttpOptions, slots: &Slots) -> Router {
    let auth = state.auth.clone();
    let open = Router::new()
        .route("/-/healthy", get(ops::healthy).head(ops::healthy))
        .route("/-/ready", get(ops::ready).head(ops::ready))
        .route("/-/login", get(auth::login_form).post(auth::login))
        .route("/-/logout", post(auth::logout))
        .route("/static/vigil.css", get(dashboard::stylesheet))
        .route("/static/vigil.js", get(dashboard::script));
    let queries = Router::new()
        .route("/api/v1/sql", get(sql::sql).post(sql::sql))
        .route("/api/v1/query", get(prom_api::query).post(prom_api::query))
        .route("/api/v1/query_range", get(prom_api::query_range).post(prom_api::query_range))
        .route("/api/v1/series", get(prom_api::series).post(prom_api::series))
        .route("/api/v1/labels", get(prom_api::labels).post(prom_api::labels))
        .route("/api/v1/label/{name}/values", get(prom_api::label_values))
        .route("/api/v1/query_exemplars", get(prom_api::query_exemplars).post(prom_api::query_exemplars))
        .route("/api/v1/read", post(remote_read::read))
        .route("/api/v1/slos/{name}/backtest", post(backtest_api::slo))
        .route("/api/v1/backtest", post(backtest_api::definition));
    let read = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/targets", get(targets::targets))
        .route("/api/v1/slos", get(slo_api::list))
        .route("/api/v1/slos/{name}", get(slo_api::one))
        .route("/api/v1/slos/{name}/attribution", get(slo_api::attribution))
        .route("/api/v1/gate", get(slo_api::gate))
        .route("/api/v1/reports", get(slo_api::reports))
        .route("/api/v1/corrections", get(corrections_api::list))
        .route("/api/v1/alerts", get(alerts_api::alerts))
        .route("/api/v1/rules", get(alerts_api::rules))
        .route("/api/v1/silences", get(alerts_api::silences))
        .route("/api/v2/status", get(alertmanager_api::status))
        .route("/api/v2/receivers", get(alertmanager_api::receivers))
        .route("/api/v2/alerts", get(alertmanager_api::alerts))
        .route("/api/v2/alerts/groups", get(alertmanager_api::alert_groups))
        .route("/api/v2/silences", get(alertmanager_api::silences))
        .route("/api/v2/silence/{id}", get(alertmanager_api::silence))
        .route("/api/v1/metadata", get(prom_api::metadata))
        .route("/api/v1/status/buildinfo", get(prom_api::buildinfo))
        .route("/api/v1/status/tsdb", get(prom_api::tsdb_status))
        .route("/api/v1/status/config", get(prom_api::config_status))
        .route("/api/v1/status/flags", get(prom_api::flags_status))
        .route("/api/v1/status/runtimeinfo", get(prom_api::runtime_status))
        .route("/api/v1/format_query", get(prom_api::format_query).post(prom_api::format_query))
        .route("/api/v1/drift/reference", get(drift_api::references))
        .route("/api/v1/drift/scores", get(drift_api::scores))
        .route("/api/v1/drift/models", get(drift_api::models))
        .merge(with_concurrency_limit(
            queries.merge(dashboard::query_pages()),
            "concurrent_queries",
            slots.queries.clone(),
            options,
        ))
        .merge(dashboard::pages());
    let admin = Router::new()
        .route("/-/reload", post(reload::reload).put(reload::reload))
        .route("/api/v1/silences", post(alerts_api::create_silence))
        .route("/api/v1/silences/{id}", axum::routing::delete(alerts_api::expire_silence))
        .route("/api/v2/silences", post(alertmanager_api::post_silence))
        .route("/api/v2/silence/{id}", axum::routing::delete(alertmanager_api::delete_silence))
        .route("/api/v1/reports/send", post(slo_api::send_report))
        .route("/api/v1/corrections", post(corrections_api::create))
        .route("/api/v1/corrections/{name}", axum::routing::delete(corrections_api::delete));
    // A Prometheus whose Alertmanager is Vigil sends alerts with the token it sends data with.
    let posted_alerts = Router::new().route("/api/v2/alerts", post(alertmanager_api::post_alerts));
    alertmanager_api::mark_start();
    let routes = open
        .merge(guarded(read, &auth, Scope::Read, true))
        .merge(guarded(admin, &auth, Scope::Admin, false))
        .merge(guarded(posted_alerts, &auth, Scope::Ingest, false))
        // The dashboard's silence forms: the login cookie counts, their CSRF token guards it.
        .merge(guarded(dashboard::forms(), &auth, Scope::Admin, true))
        .merge(guarded_ingest(all_ingest_routes(), options, slots, &auth));
    with_edge_layers(routes, state, options)
}

/// The OTLP/HTTP port (4318 by default): the three OTLP routes only.
pub fn otlp_http_router(state: AppState, options: &HttpOptions, slots: &Slots) -> Router {
    let auth = state.auth.clone();
    with_edge_layers(guarded_ingest(otlp_routes(), options, slots, &auth), state, options)
}

fn with_edge_layers(routes: Router<AppState>, state: AppState, options: &HttpOptions) -> Router {
    routes
        .fallback(|uri: Uri, headers: axum::http::HeaderMap| async move {
            // Browsers get the dashboard's error page; API clients the JSON error.
            let wants_html = headers
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            if wants_html {
                dashboard::PageError::not_found(format!("no page at {}", uri.path())).into_response()
            } else {
                ApiError::not_found(uri.path()).into_response()
            }
        })
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(middleware::from_fn(record_request))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "this is a bug in Vigil; please report it",
            )
            .into_response()
        }))
        .with_state(state)
}

/// Counts requests and their latency per route and status.
async fn record_request(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("vigil_http_request_duration_seconds", "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}
