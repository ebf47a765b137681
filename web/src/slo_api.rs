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
        Err(e @ vigil_query::slo::attribution::AttributionError::Unsupported(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
            "attribute a ratio or span SLO, or break this SLI down in /explore",
        )),
        Err(vigil_query::slo::attribution::AttributionError::Query(e)) => Err(e.into()),
        Err(vigil_query::slo::attribution::AttributionError::PromQl(e)) => {
            Err(ApiError::new(crate::prom_api::status_of(&e), e.to_string(), "narrow the window, or retry"))
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ReportQuery {
    pub period: Option<String>,
    pub tz: Option<String>,
    pub format: Option<String>,
    pub service: Option<String>,
    pub team: Option<String>,
}

/// The period a report asks for (default: the current month), or a 400 saying why not.
pub fn report_period(query: &ReportQuery) -> Result<vigil_query::slo::report::Period, ApiError> {
    use vigil_query::slo::report::Period;
    let tz = query.tz.as_deref().filter(|t| !t.is_empty()).unwrap_or("UTC");
    let period = match query.period.as_deref().filter(|p| !p.is_empty()) {
        Some(text) => Period::parse(text, tz),
        None => Period::month_of(crate::now_ms(), tz),
    };
    period.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            e.to_string(),
            "e.g. period=2026-11, 2026-W47 or 2026-Q4; tz=Europe/Paris",
        )
    })
}

/// The report of the SLOs `query` selects (service, team) over its period.
pub async fn build_report(app: &AppState, query: &ReportQuery) -> Result<vigil_query::slo::report::Report, ApiError> {
    let period = report_period(query)?;
    let definitions = app.slos.definitions().await;
    let mut chosen: Vec<&vigil_query::slo::SloDefinition> = Vec::new();
    for definition in &definitions {
        let service_ok = query.service.as_deref().is_none_or(|s| s.is_empty() || s == definition.service);
        let team_ok = query
            .team
            .as_deref()
            .is_none_or(|t| t.is_empty() || definition.labels.get("team").is_some_and(|team| team == t));
        if service_ok && team_ok {
            chosen.push(definition);
        }
    }
    Ok(vigil_query::slo::report::report(&app.engine, &chosen, &app.slos.corrections(), period, crate::now_ms()).await)
}

/// `GET /api/v1/reports?period=2026-11&tz=&format=json|csv&service=&team=`: per SLO, service
/// and team over a calendar period: objective met, SLI, budget spent, bad minutes, pages and
/// tickets.
pub async fn reports(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, format!("format {format:?}"), "json or csv"));
    }
    let report = build_report(&app, &query).await?;
    Ok(if format == "csv" {
        let name = format!("attachment; filename=\"slo-report-{}.csv\"", report.period.name);
        (
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (axum::http::header::CONTENT_DISPOSITION, name),
            ],
            vigil_query::slo::report::to_csv(&report),
        )
            .into_response()
    } else {
        Json(json!(report)).into_response()
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct SendReportQuery {
    /// Receivers (names from the config's `receivers`) to mail the report to, comma-separated.
    pub receivers: Option<String>,
    #[serde(flatten)]
    pub report: ReportQuery,
}

/// `POST /api/v1/reports/send?receivers=a,b&period=&tz=&service=&team=` (admin): mails the
/// report as HTML with a text alternative through the receivers' email integrations. 200 with
/// what was sent, 502 naming the receivers that failed.
pub async fn send_report(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<SendReportQuery>,
) -> Result<Json<Value>, ApiError> {
    use axum::http::StatusCode;
    let receivers: Vec<String> = query
        .receivers
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if receivers.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "receivers is required",
            "receivers=team-email (names from the config's receivers)",
        ));
    }
    let report = build_report(&app, &query.report).await?;
    let failures = app.alerting.send_report(&report, &receivers).await;
    if failures.is_empty() {
        return Ok(Json(json!({"period": report.period.name, "slos": report.slos.len(), "sent_to": receivers})));
    }
    let text: Vec<String> = failures.iter().map(|(receiver, why)| format!("{receiver}: {why}")).collect();
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("the report was not sent to {}", text.join("; ")),
        "check the receivers' email settings",
    ))
}
