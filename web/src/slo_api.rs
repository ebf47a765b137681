//! `GET /api/v1/slos` and `/api/v1/slos/{name}`: SLO status as the last evaluation left it,
//! with the state of the last reload (a reload that failed keeps the previous SLOs and says
//! why here).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiPath};

pub async fn list(State(app): State<AppState>) -> Json<Value> {
    let statuses = app.slos.statuses();
    Json(json!({"slos": statuses, "reload": app.reloader.status()}))
}

pub async fn one(State(app): State<AppState>, ApiPath(name): ApiPath) -> Result<Json<Value>, ApiError> {
    let definitions = app.slos.definitions().await;
    let Some(definition) = definitions.iter().find(|d| d.name == name) else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no SLO named {name:?}"),
            "list them with GET /api/v1/slos",
        ));
    };
    let statuses: Vec<_> = app.slos.statuses().into_iter().filter(|s| s.name == name).collect();
    let conditions: Vec<Value> = definition
        .alerting
        .conditions
        .iter()
        .map(|c| json!({"severity": c.severity.as_str(), "burn_rate": c.burn_rate, "long_window_seconds": c.long_window.as_secs(), "short_window_seconds": c.short_window.as_secs()}))
        .collect();
    Ok(Json(json!({
        "name": definition.name,
        "display_name": definition.display_name,
        "service": definition.service,
        "description": definition.description,
        "objective": definition.objective,
        "alerting": {
            "name": definition.alerting.name,
            "page_receivers": definition.alerting.page.receivers,
            "ticket_receivers": definition.alerting.ticket.receivers,
            "conditions": conditions,
        },
        "policy": definition.policy.as_ref().map(|p| json!({
            "freeze_below": p.freeze_below,
            "freeze_while_paging": p.freeze_while_paging,
            "receivers": p.receivers,
        })),
        "source": {"file": definition.source.file, "line": definition.source.line, "yaml": definition.source.text},
        "status": statuses,
    })))
}

#[derive(Debug, serde::Deserialize)]
pub struct GateQuery {
    pub service: Option<String>,
}

/// `GET /api/v1/gate?service=`: may the service deploy? 200 with the decision in the body
/// (`allow`, `reasons`, the SLOs with a policy); 400 without a service, 404 for a service with
/// no SLO (a misspelt name must not pass a pipeline's gate).
pub async fn gate(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<GateQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(service) = query.service.filter(|s| !s.is_empty()) else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "service is required",
            "ask GET /api/v1/gate?service=checkout",
        ));
    };
    let definitions = app.slos.definitions().await;
    let statuses = app.slos.statuses();
    match vigil_query::slo::policy::gate(&service, definitions.iter().map(|d| d.as_ref()), &statuses) {
        Some(decision) => Ok(Json(json!(decision))),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no SLO of service {service:?}"),
            "services are the SLOs' metadata.service; list them with GET /api/v1/slos",
        )),
    }
}
