//! `POST /api/v1/sql`: a read-only SQL query; JSON by default, CSV or Arrow IPC by `Accept`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    query: String,
}

const CSV: &str = "text/csv";
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub async fn sql(
    State(app): State<AppState>,
    headers: HeaderMap,
    request: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request?;
    let result = app.engine.sql(&request.query).await?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding_failed = |e: vigil_query::output::ArrowError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "the result could not be encoded")
    };
    if accept.contains(ARROW_STREAM) {
        let body = vigil_query::output::to_arrow_ipc(&result).map_err(encoding_failed)?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], body).into_response());
    }
    if accept.contains(CSV) {
        let body = vigil_query::output::to_csv(&result).map_err(encoding_failed)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    let json = vigil_query::output::to_json(&result).map_err(encoding_failed)?;
    Ok(Json(json).into_response())
}
