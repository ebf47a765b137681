//! The one error shape of Vigil's own endpoints: JSON `{"error", "hint"}` with the status
//! that tells a sender whether to retry (4xx: never; 429/503: after `Retry-After`).

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vigil_ingest::IngestError;
use vigil_query::QueryError;

/// Seconds a refused sender should wait; one flush usually frees the buffer by then.
const RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub hint: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError { status, error: error.into(), hint: hint.into(), retry_after: None }
    }

    pub fn bad_request(error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error, hint)
    }

    pub fn overloaded(error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error, hint)
        }
    }

    pub fn not_found(path: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("no route for {path}"), "see the endpoint list in the README")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.error, "request failed");
        }
        let mut response = (self.status, Json(json!({"error": self.error, "hint": self.hint}))).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Counts a refusal at the edge (the ingest limits count themselves).
pub(crate) fn count_limit(limit: &'static str) {
    metrics::counter!("vigil_limit_refusals_total", "limit" => limit).increment(1);
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let hint = e.hint();
        match &e {
            IngestError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string(), hint),
            IngestError::Storage(storage) if storage.is_transient() => ApiError::overloaded(e.to_string(), hint),
            IngestError::Storage(_) | IngestError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), hint)
            }
            IngestError::Malformed { .. } | IngestError::InvalidSeries { .. } | IngestError::PartlyRefused(_) => {
                ApiError::bad_request(e.to_string(), hint)
            }
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let hint = e.hint();
        let status = match e {
            QueryError::Invalid { .. } | QueryError::NotAllowed(_) | QueryError::Execution(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::Shape(_) => {
                count_limit("query_shape");
                StatusCode::BAD_REQUEST
            }
            QueryError::ResultTooLarge { what, .. } => {
                count_limit(if what == "rows" { "result_rows" } else { "result_bytes" });
                StatusCode::UNPROCESSABLE_ENTITY
            }
            QueryError::ResourcesExhausted(_) => {
                count_limit("query_memory");
                StatusCode::UNPROCESSABLE_ENTITY
            }
            QueryError::Timeout(_) => {
                count_limit("query_time");
                return ApiError::overloaded(e.to_string(), hint);
            }
            QueryError::Internal(_) | QueryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string(), hint)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let hint = if status == StatusCode::PAYLOAD_TOO_LARGE {
            count_limit("body_size");
            "split the request, or raise limits.max_body_size"
        } else {
            "the request body could not be read"
        };
        ApiError::new(status, rejection.body_text(), hint)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                count_limit("body_size");
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, rejection.body_text(), "send a JSON object with Content-Type: application/json")
    }
}

/// A path segment, with a path that does not decode (invalid UTF-8, say) answered as an
/// [`ApiError`] instead of axum's plain-text rejection.
pub struct ApiPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(segment)) => Ok(ApiPath(segment)),
            Err(rejection) => {
                Err(ApiError::bad_request(rejection.body_text(), "percent-encode the path segment as UTF-8"))
            }
        }
    }
}
