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
    metrics::gauge!("vigil_storage_segment_bytes")
        .set(manifest.segments.iter().map(|s| s.size_bytes).sum::<u64>() as f64);
    let mut text = app.metrics.render();
    append_cardinality(&mut text, &storage.buffered_series());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// Metrics reported per metric name, at most; the rest are summed in the total.
const CARDINALITY_TOP: usize = 50;

/// Series per metric, rendered at scrape time so that a metric leaving the top disappears.
fn append_cardinality(text: &mut String, series: &[(String, usize)]) {
    use std::fmt::Write;
    let total: usize = series.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        text,
        "# HELP vigil_storage_buffered_series Series in the write buffer (written since the last flush)."
    );
    let _ = writeln!(text, "# TYPE vigil_storage_buffered_series gauge");
    let _ = writeln!(text, "vigil_storage_buffered_series {total}");
    let _ = writeln!(
        text,
        "# HELP vigil_storage_buffered_series_by_metric Series in the write buffer per metric, the {CARDINALITY_TOP} largest."
    );
    let _ = writeln!(text, "# TYPE vigil_storage_buffered_series_by_metric gauge");
    for (metric, count) in series.iter().take(CARDINALITY_TOP) {
        let _ = writeln!(text, "vigil_storage_buffered_series_by_metric{{metric=\"{metric}\"}} {count}");
    }
}
