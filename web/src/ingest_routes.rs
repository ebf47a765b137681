//! Ingest endpoints: decode and store, answer what was accepted.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use vigil_ingest::ImportSummary;

use crate::AppState;
use crate::error::ApiError;

/// `POST /api/v1/write`: Prometheus remote write 1.0. 204 as Prometheus answers.
pub async fn remote_write(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body?;
    app.ingestor.remote_write(&body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `extra_label=name=value` pairs of a query string (repeatable).
fn extra_labels(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut labels = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "extra_label" {
            continue;
        }
        match value.split_once('=') {
            Some((name, label_value)) if vigil_storage::write::is_valid_label_name(name) => {
                labels.push((name.to_string(), label_value.to_string()))
            }
            _ => {
                return Err(ApiError::bad_request(
                    format!("invalid extra_label {value:?}"),
                    "write extra_label=name=value with a valid Prometheus label name",
                ));
            }
        }
    }
    Ok(labels)
}

/// `POST /api/v1/import/prometheus`: text exposition 0.0.4 or OpenMetrics.
pub async fn import_prometheus(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportSummary>, ApiError> {
    let extra = extra_labels(query.as_deref())?;
    let body = body?;
    let header_text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).unwrap_or("");
    let gzip = header_text(header::CONTENT_ENCODING).eq_ignore_ascii_case("gzip");
    let summary = app.ingestor.import_text(&body, header_text(header::CONTENT_TYPE), gzip, &extra).await?;
    Ok(Json(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_labels_are_read_from_the_query() {
        let labels = extra_labels(Some("extra_label=env=prod&x=1&extra_label=team%3Dpay%3Dments")).unwrap();
        assert_eq!(labels, vec![("env".into(), "prod".into()), ("team".into(), "pay=ments".into())]);
        assert!(extra_labels(Some("extra_label=novalue")).is_err());
        assert!(extra_labels(Some("extra_label=1bad=x")).is_err());
    }
}
