//! `GET /api/v1/alerts` (Prometheus' shape, with silence, inhibition and receiver details),
//! `GET /api/v1/rules`, and silences in Alertmanager's v2 shapes:
//! `GET/POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde_json::{Value, json};
use vigil_alerting::silences::{SilenceError, SilenceRequest};

use crate::AppState;
use crate::error::{ApiError, ApiPath};

pub async fn alerts(State(app): State<AppState>) -> Json<Value> {
    let alerts = app.alerting.alerts();
    let (active, resolved): (Vec<_>, Vec<_>) = alerts.into_iter().partition(|a| a.state != "resolved");
    Json(json!({
        "status": "success",
        "data": {"alerts": active, "recentlyResolved": resolved, "receivers": app.alerting.receivers()},
    }))
}

pub async fn rules(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"status": "success", "data": app.alerting.rule_groups()}))
}

pub async fn silences(State(app): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = app
        .alerting
        .silences()
        .into_iter()
        .map(|(silence, state)| {
            let mut value = serde_json::to_value(&silence).unwrap_or_default();
            value["status"] = json!({"state": state});
            value
        })
        .collect();
    Json(Value::Array(list))
}

impl From<SilenceError> for ApiError {
    fn from(e: SilenceError) -> Self {
        match e {
            SilenceError::Invalid(_) => ApiError::bad_request(
                e.to_string(),
                "matchers as [{\"name\",\"value\",\"isRegex\",\"isEqual\"}] or [\"name=\\\"value\\\"\"], endsAt in the future (RFC 3339)",
            ),
            SilenceError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string(), "list silences with GET /api/v1/silences")
            }
            SilenceError::AlreadyExpired(_) => ApiError::bad_request(e.to_string(), "create a new silence instead"),
        }
    }
}

pub async fn create_silence(
    State(app): State<AppState>,
    body: Result<Json<SilenceRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body?;
    let id = app.alerting.create_silence(request).await?;
    Ok(Json(json!({"silenceID": id})))
}

pub async fn expire_silence(State(app): State<AppState>, ApiPath(id): ApiPath) -> Result<Json<Value>, ApiError> {
    app.alerting.expire_silence(&id).await?;
    Ok(Json(json!({})))
}
