//! `/api/v1/sql`: a read-only SQL query; JSON by default, CSV or Arrow IPC by `Accept`.
//!
//! The query comes the ways people send it: a JSON body `{"query": ...}` whatever its
//! declared type (`curl -d` labels every body a form), a form body `query=...`, or
//! `GET ?query=...`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    query: String,
}

impl SqlRequest {
    /// The query of a request: its body when it has one (JSON when it looks like JSON, else
    /// a form), else its query string.
    fn read(query_string: Option<&str>, body: &[u8]) -> Result<SqlRequest, ApiError> {
        let text = body.trim_ascii_start();
        if text.starts_with(b"{") {
            return serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the JSON body is not a query: {e}"), r#"send {"query": "SELECT ..."}"#)
            });
        }
        let form = if text.is_empty() { query_string.unwrap_or("").as_bytes() } else { body };
        let mut query = None;
        for (key, value) in form_urlencoded::parse(form) {
            match key.as_ref() {
                "query" => query = Some(value.into_owned()),
                other => {
                    return Err(ApiError::bad_request(
                        format!("unknown parameter {other:?}"),
                        "the only parameter is query (the SQL text)",
                    ));
                }
            }
        }
        query.map(|query| SqlRequest { query }).ok_or_else(|| {
            ApiError::bad_request(
                "no query in the request",
                r#"send {"query": "SELECT ..."} as JSON, query=... as a form, or GET ?query=..."#,
            )
        })
    }
}

const CSV: &str = "text/csv";
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub async fn sql(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query_string): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = SqlRequest::read(query_string.as_deref(), &body)?;
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

#[cfg(test)]
mod tests {
    use super::SqlRequest;

    fn read(query_string: Option<&str>, body: &str) -> Result<String, String> {
        SqlRequest::read(query_string, body.as_bytes()).map(|r| r.query).map_err(|e| e.error)
    }

    #[test]
    fn a_query_is_read_from_json_a_form_or_the_query_string() {
        assert_eq!(read(None, r#" {"query": "SELECT 1"}"#), Ok("SELECT 1".into()));
        assert_eq!(read(None, "query=SELECT+1%2C+2"), Ok("SELECT 1, 2".into()));
        assert_eq!(read(Some("query=SELECT%203"), ""), Ok("SELECT 3".into()));
        // A body wins over the query string, as a form POST's does in Prometheus's API.
        assert_eq!(read(Some("query=SELECT%203"), "query=SELECT+4"), Ok("SELECT 4".into()));
    }

    #[test]
    fn what_is_not_a_query_is_refused_with_the_reason() {
        assert!(read(None, "{not json").unwrap_err().contains("JSON"));
        assert!(read(None, r#"{"query": "SELECT 1", "limit": 3}"#).unwrap_err().contains("limit"));
        assert!(read(None, "").unwrap_err().contains("no query"));
        assert!(read(None, "sql=SELECT+1").unwrap_err().contains("sql"));
    }
}
