//! `/api/v1/corrections`: budget corrections and maintenance windows. `GET` lists those in
//! force (`?slo=` those that apply to one SLO, with their occurrences in its window), `POST`
//! makes one from a `kind: Correction` document (YAML or JSON), `DELETE /{name}` removes one
//! made through the API. A change recomputes the SLOs it touches.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use vigil_query::slo::Correction;
use vigil_query::slo::correction_book::{CorrectionError, MAX_DOCUMENT_BYTES};

use crate::AppState;
use crate::error::{ApiError, ApiPath};

impl From<CorrectionError> for ApiError {
    fn from(e: CorrectionError) -> Self {
        match &e {
            CorrectionError::Invalid(errors) => ApiError::bad_request(
                e.to_string(),
                errors
                    .iter()
                    .find_map(|e| e.hint.clone())
                    .unwrap_or_else(|| "see the Corrections part of the README's SLO section for the format".into()),
            ),
            CorrectionError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string(), "pick another name, or delete that one first")
            }
            CorrectionError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string(), "list them with GET /api/v1/corrections")
            }
            CorrectionError::FromFile { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string(), "files are changed in the files, then reloaded")
            }
            CorrectionError::TooMany => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                e.to_string(),
                "delete corrections that are over, or write recurring ones in a file",
            ),
            CorrectionError::Store { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "check the data directory")
            }
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    slo: Option<String>,
}

/// A correction as the API shows it, with its occurrences in `[from, to)` when asked.
pub fn view(correction: &Correction, span: Option<(i64, i64)>) -> Value {
    let mut value = serde_json::to_value(correction).unwrap_or(Value::Null);
    if let (Some((from, to)), Value::Object(map)) = (span, &mut value) {
        let occurrences: Vec<Value> = correction
            .occurrences(from, to)
            .into_iter()
            .map(|(start, end)| json!({"start_ms": start, "end_ms": end}))
            .collect();
        map.insert("occurrences".into(), Value::Array(occurrences));
    }
    value
}

pub async fn list(State(app): State<AppState>, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let corrections = app.slos.corrections();
    let Some(name) = query.slo else {
        let all: Vec<Value> = corrections.iter().map(|c| view(c, None)).collect();
        return Ok(Json(json!({"corrections": all})));
    };
    let definitions = app.slos.definitions().await;
    let definition = definitions.iter().find(|d| d.name == name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no SLO named {name:?}"), "list them with GET /api/v1/slos")
    })?;
    let now = crate::now_ms();
    let from = vigil_query::slo::evaluate::window_start(&definition.window, now);
    let applying: Vec<Value> = corrections
        .iter()
        .filter(|c| c.scope.covers(definition))
        .map(|c| view(c, Some((from, now + 7 * 24 * 3_600_000))))
        .collect();
    Ok(Json(json!({"slo": name, "corrections": applying})))
}

pub async fn create(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a correction document is at most {MAX_DOCUMENT_BYTES} bytes"),
            "send one kind: Correction document",
        ));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8", "send YAML or JSON"))?;
    let now = crate::now_ms();
    let added = app.slos.add_correction(text, "api", now).await?;
    Ok((StatusCode::CREATED, Json(view(&added, None))))
}

pub async fn delete(State(app): State<AppState>, ApiPath(name): ApiPath) -> Result<Json<Value>, ApiError> {
    let now = crate::now_ms();
    let removed = app.slos.remove_correction(&name, now).await?;
    Ok(Json(json!({"deleted": removed.name})))
}
