//! Request bodies are read whole, within a deadline, before a request takes a place among
//! the requests in flight: a sender that trickles its body (or never finishes it) is cut
//! off with 408 and never holds an ingest slot while it dawdles.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, count_limit};

/// How a body is read.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body must have arrived this long after the headers.
    pub read_timeout: Duration,
}

/// Middleware: the body, read whole within `read_timeout` and `max_bytes`, replaces the
/// streaming one; the handler's extractors then read it from memory.
pub async fn read_whole(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let refusal = match tokio::time::timeout(limits.read_timeout, axum::body::to_bytes(body, limits.max_bytes)).await {
        Ok(Ok(bytes)) => return next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(_) => {
            count_limit("body_read_time");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {:?}", limits.read_timeout),
                "send the body without pauses, or raise limits.body_read_timeout",
            )
        }
        Ok(Err(error)) if is_length_limit(&error) => {
            count_limit("body_size");
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {} bytes", limits.max_bytes),
                "split the request, or raise limits.max_body_size",
            )
        }
        Ok(Err(error)) => {
            ApiError::bad_request(format!("the request body could not be read: {error}"), "send the whole body")
        }
    };
    let mut response = if parts.uri.path().starts_with("/v1/") {
        crate::otlp_http::refusal(&parts.headers, refusal)
    } else {
        refusal.into_response()
    };
    // The rest of the body was not read: the connection cannot carry another request.
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}
