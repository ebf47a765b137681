//! Alertmanager's API v2 (the shapes of Alertmanager 0.25's OpenAPI), so `amtool`, Grafana's
//! Alertmanager data source and a Prometheus sending alerts talk to Vigil as to an
//! Alertmanager: `status`, `receivers`, `alerts` (GET with filters, POST from senders),
//! `alerts/groups`, `silences`, `silence/{id}`. Silences are the one set the v1 API and the
//! dashboard also change. Errors are JSON strings, as Alertmanager answers them (its
//! clients decode them so).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vigil_alerting::AlertView;
use vigil_alerting::matchers::{MatchOp, Matcher};
use vigil_alerting::posted::PostedAlert;
use vigil_alerting::silences::{Silence, SilenceError, SilenceRequest, SilenceState};

use crate::AppState;
use crate::error::ApiPath;

/// An error as Alertmanager's API writes one: a JSON string.
pub struct V2Error(StatusCode, String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(Value::String(self.1))).into_response()
    }
}

impl From<SilenceError> for V2Error {
    fn from(error: SilenceError) -> Self {
        match error {
            // amtool's `silence import` retries an unknown id as a new silence when the
            // answer says "not found", as Alertmanager's does.
            SilenceError::NotFound(id) => V2Error(StatusCode::NOT_FOUND, format!("silence not found: {id}")),
            other => V2Error(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

/// Query parameters, repeatable keys kept.
fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The `filter` matchers (`name="value"`, `name=~"regex"`, ...).
fn filters(params: &[(String, String)]) -> Result<Vec<Matcher>, V2Error> {
    params
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| Matcher::parse(v).map_err(|e| V2Error(StatusCode::BAD_REQUEST, format!("bad matcher: {e}"))))
        .collect()
}

/// A boolean parameter (`true`/`false`), with its default.
fn flag(params: &[(String, String)], name: &str, default: bool) -> Result<bool, V2Error> {
    match params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(V2Error(StatusCode::BAD_REQUEST, format!("{name} must be true or false, not {other:?}"))),
    }
}

/// When this process started serving (Alertmanager's `uptime` is that time).
fn started_at() -> &'static str {
    static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STARTED.get_or_init(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Marks the start (called when the router is built).
pub fn mark_start() {
    started_at();
}

pub async fn status(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "cluster": {"name": app.engine.storage().node_id(), "status": "disabled", "peers": []},
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "", "branch": "", "buildUser": "vigil", "buildDate": "", "goVersion": "",
        },
        "config": {"original": ""},
        "uptime": started_at(),
    }))
}

pub async fn receivers(State(app): State<AppState>) -> Json<Value> {
    Json(Value::Array(app.alerting.receivers().into_iter().map(|r| json!({"name": r.name})).collect()))
}

/// A firing alert in the `gettableAlert` shape.
fn gettable(alert: &AlertView, updated_at: &str) -> Value {
    let starts_at = alert.fired_at.as_deref().unwrap_or(&alert.active_at);
    let suppressed = alert.silenced || alert.inhibited;
    json!({
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": starts_at,
        // Vigil's own alerts hold while their rule or SLO says so; Alertmanager shows the
        // time it would drop them unheard from.
        "endsAt": alert.valid_until.as_deref().unwrap_or(updated_at),
        "updatedAt": updated_at,
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
        "receivers": alert.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": if suppressed { "suppressed" } else { "active" },
            "silencedBy": alert.silenced_by,
            "inhibitedBy": alert.inhibited_by,
        },
    })
}

/// The firing alerts that pass the query's `filter`, `active`, `silenced`, `inhibited` and
/// `receiver` parameters.
fn selected_alerts(app: &AppState, query: Option<&str>) -> Result<Vec<AlertView>, V2Error> {
    let params = params(query);
    let matchers = filters(&params)?;
    let (active, silenced, inhibited) =
        (flag(&params, "active", true)?, flag(&params, "silenced", true)?, flag(&params, "inhibited", true)?);
    flag(&params, "unprocessed", true)?;
    let receiver = match params.iter().rev().find(|(k, _)| k == "receiver") {
        Some((_, pattern)) => Some(
            Matcher::new("receiver", MatchOp::Regex, pattern.as_str())
                .map_err(|e| V2Error(StatusCode::BAD_REQUEST, format!("bad receiver regex: {e}")))?,
        ),
        None => None,
    };
    Ok(app
        .alerting
        .alerts()
        .into_iter()
        .filter(|a| a.state == "firing")
        .filter(|a| matchers.iter().all(|m| m.matches(&a.labels)))
        .filter(|a| {
            receiver.as_ref().is_none_or(|r| {
                a.receivers.iter().any(|name| r.matches(&[("receiver".to_string(), name.clone())].into()))
            })
        })
        .filter(|a| {
            let muted = a.silenced || a.inhibited;
            (active || muted) && (silenced || !a.silenced) && (inhibited || !a.inhibited)
        })
        .collect())
}

fn now_text(app: &AppState) -> String {
    vigil_alerting::notify::rfc3339_ms(app.alerting.now_ms())
}

pub async fn alerts(State(app): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Value>, V2Error> {
    let now = now_text(&app);
    let alerts = selected_alerts(&app, query.as_deref())?;
    Ok(Json(Value::Array(alerts.iter().map(|a| gettable(a, &now)).collect())))
}

pub async fn post_alerts(State(app): State<AppState>, body: Bytes) -> Result<StatusCode, V2Error> {
    let posted: Vec<PostedAlert> = serde_json::from_slice(&body).map_err(|e| {
        V2Error(StatusCode::BAD_REQUEST, format!("the body is not a list of alerts (postableAlerts): {e}"))
    })?;
    app.alerting.receive_alerts(posted).await.map_err(|e| V2Error(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(StatusCode::OK)
}

pub async fn alert_groups(State(app): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Value>, V2Error> {
    let now = now_text(&app);
    let alerts = selected_alerts(&app, query.as_deref())?;
    let groups = app
        .alerting
        .alert_groups()
        .into_iter()
        .filter_map(|group| {
            let members: Vec<Value> = alerts
                .iter()
                .filter(|a| group.fingerprints.contains(&a.fingerprint))
                .map(|a| gettable(a, &now))
                .collect();
            (!members.is_empty())
                .then(|| json!({"labels": group.labels, "receiver": {"name": group.receiver}, "alerts": members}))
        })
        .collect();
    Ok(Json(Value::Array(groups)))
}

/// A silence in the `gettableSilence` shape.
fn gettable_silence(silence: &Silence, state: SilenceState) -> Value {
    let mut value = serde_json::to_value(silence).unwrap_or_default();
    value["status"] = json!({"state": state});
    value
}

pub async fn silences(State(app): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Value>, V2Error> {
    let matchers = filters(&params(query.as_deref()))?;
    let mut list: Vec<(Silence, SilenceState)> = app
        .alerting
        .silences()
        .into_iter()
        .filter(|(silence, _)| {
            // As Alertmanager: the filter matches the label set a silence's equality
            // matchers spell out.
            let labels = silence
                .matchers
                .iter()
                .filter(|m| m.is_equal && !m.is_regex)
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            matchers.iter().all(|m| m.matches(&labels))
        })
        .collect();
    // Active first (soonest to end), then pending (soonest to start), then expired (latest
    // first), as Alertmanager sorts them.
    list.sort_by_key(|(s, state)| match state {
        SilenceState::Active => (0, s.ends_at.timestamp_millis()),
        SilenceState::Pending => (1, s.starts_at.timestamp_millis()),
        SilenceState::Expired => (2, -s.ends_at.timestamp_millis()),
    });
    Ok(Json(Value::Array(list.iter().map(|(s, state)| gettable_silence(s, *state)).collect())))
}

pub async fn post_silence(State(app): State<AppState>, body: Bytes) -> Result<Json<Value>, V2Error> {
    let request: SilenceRequest = serde_json::from_slice(&body)
        .map_err(|e| V2Error(StatusCode::BAD_REQUEST, format!("the body is not a silence (postableSilence): {e}")))?;
    let id = app.alerting.create_silence(request).await?;
    Ok(Json(json!({"silenceID": id})))
}

pub async fn silence(State(app): State<AppState>, ApiPath(id): ApiPath) -> Result<Json<Value>, V2Error> {
    app.alerting
        .silences()
        .into_iter()
        .find(|(s, _)| s.id == id)
        .map(|(s, state)| Json(gettable_silence(&s, state)))
        .ok_or_else(|| SilenceError::NotFound(id).into())
}

pub async fn delete_silence(State(app): State<AppState>, ApiPath(id): ApiPath) -> Result<StatusCode, V2Error> {
    app.alerting.expire_silence(&id).await?;
    Ok(StatusCode::OK)
}
