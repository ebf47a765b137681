//! OTLP/HTTP: `POST /v1/metrics`, `/v1/traces`, `/v1/logs`, protobuf or JSON, optionally
//! gzip. Answers in the request's encoding: the export response (with `partial_success`
//! when some items were refused), or a `google.rpc.Status` with 400/413/415/503.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vigil_ingest::otlp::{Encoding, Signal, code, encode_response, encode_status};

use crate::AppState;
use crate::error::ApiError;

pub async fn metrics(state: State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    export(state, Signal::Metrics, headers, body).await
}

pub async fn traces(state: State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    export(state, Signal::Traces, headers, body).await
}

pub async fn logs(state: State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    export(state, Signal::Logs, headers, body).await
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn export(
    State(app): State<AppState>,
    signal: Signal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = header_text(&headers, header::CONTENT_TYPE);
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        let message =
            format!("unsupported Content-Type {content_type:?}: send application/x-protobuf or application/json");
        return status_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_ARGUMENT,
            message,
            Encoding::Json,
            None,
        );
    };
    let gzip = match header_text(&headers, header::CONTENT_ENCODING).trim().to_ascii_lowercase().as_str() {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            let message = format!("unsupported Content-Encoding {other:?}: send gzip or none");
            return status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::INVALID_ARGUMENT,
                message,
                encoding,
                None,
            );
        }
    };
    let result = match body {
        Ok(body) => app.ingestor.otlp_http(signal, &body, encoding, gzip).await.map_err(ApiError::from),
        Err(rejection) => Err(ApiError::from(rejection)),
    };
    match result {
        Ok(outcome) => {
            let mut response = (StatusCode::OK, encode_response(signal, &outcome, encoding)).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
            response
        }
        Err(error) => error_response(error, encoding),
    }
}

fn error_response(error: ApiError, encoding: Encoding) -> Response {
    let grpc_code = match error.status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => code::UNAVAILABLE,
        status if status.is_server_error() => code::INTERNAL,
        _ => code::INVALID_ARGUMENT,
    };
    status_response(error.status, grpc_code, format!("{}; {}", error.error, error.hint), encoding, error.retry_after)
}

/// A refusal before the handler ran (body limits), in OTLP's shape and the request's encoding.
pub(crate) fn refusal(headers: &HeaderMap, error: ApiError) -> Response {
    let encoding = Encoding::from_content_type(header_text(headers, header::CONTENT_TYPE)).unwrap_or(Encoding::Json);
    error_response(error, encoding)
}

fn status_response(
    status: StatusCode,
    grpc_code: i32,
    message: String,
    encoding: Encoding,
    retry_after: Option<u64>,
) -> Response {
    let mut response = (status, encode_status(grpc_code, message, encoding)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
