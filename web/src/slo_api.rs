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

#[derive(Debug, serde::Deserialize)]
pub struct AttributionQuery {
    pub window: Option<String>,
}

/// `GET /api/v1/slos/{name}/attribution?window=1h`: which label values carry the SLO's bad
/// events over the window (default 1h, at most the SLO's window), and exemplar traces of them.
pub async fn attribution(
    State(app): State<AppState>,
    ApiPath(name): ApiPath,
    axum::extract::Query(query): axum::extract::Query<AttributionQuery>,
) -> Result<Json<Value>, ApiError> {
    use axum::http::StatusCode;
    let definitions = app.slos.definitions().await;
    let Some(definition) = definitions.iter().find(|d| d.name == name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no SLO named {name:?}"),
            "list them with GET /api/v1/slos",
        ));
    };
    let text = query.window.unwrap_or_else(|| "1h".into());
    let window = vigil_query::promql::parse_duration(&text).filter(|w| !w.is_zero()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("window {text:?} is not a duration"), "e.g. 1h or 30m")
    })?;
    if window > definition.window.period() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("window {text} is longer than the SLO's window"),
            "ask for a window within the SLO's own",
        ));
    }
    match vigil_query::slo::attribution::attribute(&app.engine, definition, window, crate::now_ms()).await {
        Ok(attribution) => Ok(Json(json!(attribution))),
        Err(vigil_query::slo::attribution::AttributionError::Unsupported(kind)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("attribution covers ratio SLIs over series; this SLO's SLI is {kind}"),
            "attribute a ratio SLO, or break this SLI down in /explore",
        )),
        Err(vigil_query::slo::attribution::AttributionError::Query(e)) => Err(e.into()),
        Err(vigil_query::slo::attribution::AttributionError::PromQl(e)) => {
            Err(ApiError::new(crate::prom_api::status_of(&e), e.to_string(), "narrow the window, or retry"))
        }
    }
}
