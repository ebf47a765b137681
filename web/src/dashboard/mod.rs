//! The dashboard: server-rendered HTML (askama), charts drawn as SVG on the server, one
//! stylesheet, and one small script that only adds hover read-outs to charts. Pages read what the JSON APIs read; auto-refresh reloads the
//! same URL, so filters survive it.

mod alerts;
mod backtest;
mod explore;
mod logs;
mod models;
mod overview;
pub mod range;
pub mod reports;
mod slo;
pub mod svg;
mod traces;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;

/// Sparkline data kept between requests.
type Sparklines = Arc<BTreeMap<String, vigil_query::slo::history::SloHistory>>;

/// What the pages keep between requests: the 7-day SLI history behind the overview's
/// sparklines, for a minute. It moves by the hour, and reading it scans every SLO's status
/// rows of the week, too much for every page load with thousands of SLOs.
#[derive(Clone, Default)]
pub struct DashboardState {
    sparklines: Arc<Mutex<Option<(Instant, Sparklines)>>>,
}

impl DashboardState {
    const TTL: Duration = Duration::from_secs(60);

    pub async fn sparklines(&self, engine: &vigil_query::QueryEngine) -> Sparklines {
        if let Ok(guard) = self.sparklines.lock()
            && let Some((at, cached)) = guard.as_ref()
            && at.elapsed() < Self::TTL
        {
            return cached.clone();
        }
        let now = now_ms();
        let fresh: Sparklines = Arc::new(
            vigil_query::slo::history::history(engine, None, now - 7 * 86_400_000, now, 3_600_000)
                .await
                .unwrap_or_default(),
        );
        if let Ok(mut guard) = self.sparklines.lock() {
            *guard = Some((Instant::now(), fresh.clone()));
        }
        fresh
    }
}

/// What every page shares: title, active nav entry, refresh, render time.
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub refresh_seconds: u32,
    pub generated: String,
}

impl Layout {
    pub fn new(title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            refresh_seconds: 30,
            generated: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    pub fn nav_items(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("/", "SLOs"),
            ("/alerts", "Alerts"),
            ("/traces", "Traces"),
            ("/logs", "Logs"),
            ("/explore", "Explore"),
            ("/models", "Models"),
            ("/reports", "Reports"),
        ]
    }
}

/// A page that could not be rendered: an HTML error page, never a stack trace.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
    hint: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>, hint: impl Into<String>) -> PageError {
        PageError { status, message: message.into(), hint: hint.into() }
    }

    pub fn not_found(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, what, "check the address, or start from the SLO overview")
    }

    pub fn internal(error: impl std::fmt::Display) -> PageError {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("this page failed: {error}"),
            "reload it; if it keeps failing, the server log says more",
        )
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    heading: &'a str,
    message: &'a str,
    hint: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "page failed");
        }
        let heading = self.status.canonical_reason().unwrap_or("Error");
        let mut layout = Layout::new(heading, "");
        layout.refresh_seconds = 0;
        let page = ErrorPage { layout, heading, message: &self.message, hint: &self.hint };
        let body = page.render().unwrap_or_else(|_| self.message.clone());
        (self.status, Html(body)).into_response()
    }
}

/// Renders a template into a response.
pub fn render(page: &impl Template) -> Result<Html<String>, PageError> {
    page.render().map(Html).map_err(PageError::internal)
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../../static/vigil.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../../static/vigil.js"),
    )
}

/// The dashboard's pages (read scope).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/slos/{name}", get(slo::page))
        .route("/alerts", get(alerts::page))
        .route("/models", get(models::page))
}

/// Pages that run the visitor's own queries: they count among the queries in flight
/// (`limits.max_concurrent_queries`), as the query API does.
pub fn query_pages() -> Router<AppState> {
    Router::new()
        .route("/explore", get(explore::page))
        .route("/traces", get(traces::search))
        .route("/traces/{trace_id}", get(traces::trace))
        .route("/logs", get(logs::page))
        .route("/reports", get(reports::page))
        .route("/slos/{name}/backtest", get(backtest::page).post(backtest::compare))
}

/// The dashboard's forms that change something (admin scope, CSRF-checked).
pub fn forms() -> Router<AppState> {
    Router::new()
        .route("/alerts/silences", post(alerts::create_silence))
        .route("/alerts/silences/{id}/expire", post(alerts::expire_silence))
        .route("/slos/{name}/corrections", post(slo::create_correction))
        .route("/slos/{name}/corrections/{correction}/delete", post(slo::delete_correction))
}

/// A percentage with up to `decimals` decimals, or an en dash.
pub fn percent(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.*}%", decimals, v * 100.0),
        _ => "–".into(),
    }
}

/// A plain number with a sensible precision, or an en dash.
pub fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => svg::short_number(v),
        _ => "–".into(),
    }
}

/// UTC time of Unix milliseconds, as the pages show it.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub(crate) use crate::now_ms;
