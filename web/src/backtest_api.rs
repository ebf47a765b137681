//! Policy backtesting over HTTP. `POST /api/v1/slos/{name}/backtest` replays an SLO's stored
//! data through the evaluator and its alerting (see `vigil_alerting::backtest`), and, with an
//! edited definition as the body, the proposal too, for comparison; `POST /api/v1/backtest`
//! replays the definition in the body alone (what `vigil slo backtest FILE` sends).
//! `from`/`to` (RFC 3339 or Unix seconds) default to the SLO's last window.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use vigil_alerting::backtest::Backtest;
use vigil_query::slo::SloDefinition;

use crate::AppState;
use crate::error::{ApiError, ApiPath};

/// The longest range a backtest replays.
pub const MAX_RANGE_MS: i64 = 92 * 24 * 3_600_000;
/// The largest definition a backtest takes.
const MAX_DEFINITION_BYTES: usize = 256 * 1024;

#[derive(Debug, Default, serde::Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The range to replay: `from`/`to`, by default the SLO's window up to now; to the minute.
pub fn range(query: &RangeQuery, definition: &SloDefinition, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let time = |text: &Option<String>, name: &str| -> Result<Option<i64>, ApiError> {
        text.as_deref()
            .map(|t| {
                crate::dashboard::range::parse_time(t).ok_or_else(|| {
                    ApiError::bad_request(format!("{name} {t:?} is not a time"), "RFC 3339 or Unix seconds")
                })
            })
            .transpose()
    };
    let minute = |ms: i64| ms.div_euclid(60_000) * 60_000;
    let to = minute(time(&query.to, "to")?.unwrap_or(now_ms).min(now_ms));
    let from = minute(time(&query.from, "from")?.unwrap_or(to - definition.window.period().as_millis() as i64));
    if from >= to {
        return Err(ApiError::bad_request("from must be before to (and before now)", "e.g. from=2026-11-01T00:00:00Z"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(
            "a backtest replays at most 92 days",
            "split the range, or backtest the last window",
        ));
    }
    Ok((from, to))
}

/// The one SLO a body defines (`name` names the file in errors).
pub fn definition_of(body: &[u8], name: &str) -> Result<SloDefinition, ApiError> {
    if body.len() > MAX_DEFINITION_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a definition to backtest is at most {MAX_DEFINITION_BYTES} bytes"),
            "send one SLO",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8", "send YAML"))?;
    let mut slos = vigil_query::slo::load_texts(&[(name.to_string(), text.to_string())], None).map_err(|errors| {
        let first = errors.iter().find_map(|e| e.hint.clone()).unwrap_or_else(|| "fix the definition".into());
        ApiError::bad_request(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), first)
    })?;
    match slos.len() {
        1 => Ok(slos.remove(0)),
        n => Err(ApiError::bad_request(format!("the body defines {n} SLOs"), "backtest one SLO at a time")),
    }
}

async fn run(app: &AppState, definition: &SloDefinition, (from, to): (i64, i64)) -> Result<Backtest, ApiError> {
    app.alerting.backtest(definition, &app.slos.corrections(), from, to).await.map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), "the SLI must evaluate over the whole range")
    })
}

pub async fn slo(
    State(app): State<AppState>,
    ApiPath(name): ApiPath,
    Query(query): Query<RangeQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let definitions = app.slos.definitions().await;
    let current = definitions.iter().find(|d| d.name == name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no SLO named {name:?}"), "list them with GET /api/v1/slos")
    })?;
    let proposed =
        if body.iter().all(u8::is_ascii_whitespace) { None } else { Some(definition_of(&body, "proposal")?) };
    let span = range(&query, current, crate::now_ms())?;
    let current_run = run(&app, current, span).await?;
    let proposed_run = match &proposed {
        Some(definition) => Some(run(&app, definition, span).await?),
        None => None,
    };
    Ok(Json(json!({"current": current_run, "proposed": proposed_run})))
}

pub async fn definition(
    State(app): State<AppState>,
    Query(query): Query<RangeQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let definition = definition_of(&body, "definition")?;
    let span = range(&query, &definition, crate::now_ms())?;
    Ok(Json(json!({"backtest": run(&app, &definition, span).await?})))
}
