//! Operational endpoints, Prometheus style: liveness, readiness, own metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::AppState;

pub async fn healthy() -> &'static str {
    "Vigil is Healthy.\n"
}

pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    if app.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "Vigil is Ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Vigil is not ready.\n")
    }
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let storage = app.ingestor.storage();
    metrics::gauge!("vigil_storage_buffer_bytes").set(storage.buffered_bytes() as f64);
    let manifest = storage.manifest();
    metrics::gauge!("vigil_storage_segments").set(manifest.segments.len() as f64);
    metrics::gauge!("vigil_storage_segment_bytes").set(manifest.segments.iter().map(|s| s.size_bytes).sum::<u64>() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}
