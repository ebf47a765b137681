//! Ingest endpoints: decode and store, answer what was accepted.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

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
