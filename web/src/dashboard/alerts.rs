//! `/alerts`: firing, pending, silenced and resolved alerts; silences created from an alert's
//! row and expired from the list. The forms carry a CSRF token bound to the browser's
//! session: an HMAC, under a key only the server holds, of the login cookie (or, with auth
//! off, of a random `vigil_csrf` cookie set with the page; both SameSite=Strict). Another
//! site can neither read the token nor make one, not even by planting a cookie.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use vigil_alerting::AlertViewState;
use vigil_alerting::silences::{MatcherInput, SilenceRequest};

use super::{Layout, PageError, render};
use crate::AppState;

const CSRF_COOKIE: &str = "vigil_csrf";

pub struct AlertRow {
    pub name: String,
    /// Where the alert comes from: its SLO's page, or the rule's generator URL.
    pub link: Option<String>,
    pub state: &'static str,
    /// Why a suppressed alert is quiet: the silences or the alerts that inhibit it.
    pub muted_by: Vec<(String, String)>,
    pub severity: String,
    pub summary: String,
    pub labels: String,
    pub since: String,
    pub value: String,
    /// The alert's labels as matchers, one `name="value"` per line, for the silence form.
    pub matchers: String,
}

pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub alerts: Vec<AlertRow>,
    pub silenceable: bool,
}

pub struct SilenceRow {
    pub id: String,
    pub matchers: String,
    pub state: String,
    pub ends: String,
    pub created_by: String,
    pub comment: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    layout: Layout,
    sections: Vec<Section>,
    no_alerts: bool,
    silences: Vec<SilenceRow>,
    csrf: String,
}

/// What a form's token is bound to: the login cookie, else the page's own random cookie.
fn session_of(headers: &HeaderMap) -> Option<String> {
    crate::auth::cookie(headers, crate::auth::SESSION_COOKIE)
        .or_else(|| crate::auth::cookie(headers, CSRF_COOKIE))
        .filter(|v| v.len() >= 32)
        .map(str::to_string)
}

/// An alert's value in its unit: an SLO's burn rate (×) or budget left (%); a rule's number.
fn value_text(alert: &vigil_alerting::AlertView) -> String {
    let Ok(value) = alert.value.parse::<f64>() else { return alert.value.clone() };
    let name = alert.labels.get("alertname").map_or("", String::as_str);
    match alert.labels.get("slo") {
        Some(_) if name == vigil_alerting::slo_alerts::EXHAUSTED_ALERT => {
            format!("{} budget left", super::percent(Some(value), 1))
        }
        Some(_) if name == vigil_alerting::slo_alerts::NO_DATA_ALERT => "no data".into(),
        Some(_) => format!("{} burn rate", super::svg::Unit::Times.format(value)),
        None => super::number(Some(value)),
    }
}

fn quoted(value: &str) -> String {
    format!("{:?}", value)
}

/// A page with forms: the CSRF token its forms carry, and the cookie to set when the
/// browser has no session yet.
pub(super) struct FormSession {
    pub csrf: String,
    cookie: Option<HeaderValue>,
}

impl FormSession {
    pub(super) fn of(auth: &crate::Auth, headers: &HeaderMap) -> Self {
        let (session, fresh) = match session_of(headers) {
            Some(session) => (session, false),
            None => (uuid::Uuid::new_v4().simple().to_string(), true),
        };
        let cookie = fresh
            .then(|| HeaderValue::from_str(&format!("{CSRF_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict")).ok())
            .flatten();
        FormSession { csrf: auth.csrf_token(&session), cookie }
    }

    /// The page, with the session cookie when it is new.
    pub(super) fn respond(&self, html: impl IntoResponse) -> Response {
        let mut response = html.into_response();
        if let Some(cookie) = &self.cookie {
            response.headers_mut().insert(header::SET_COOKIE, cookie.clone());
        }
        response
    }
}

pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let session = FormSession::of(&app.auth, &headers);
    let csrf = session.csrf.clone();
    let mut sections = vec![
        Section { id: "firing", title: "Firing", alerts: Vec::new(), silenceable: true },
        Section { id: "pending", title: "Pending", alerts: Vec::new(), silenceable: true },
        Section { id: "silenced", title: "Silenced or inhibited", alerts: Vec::new(), silenceable: false },
        Section { id: "resolved", title: "Resolved (last 15 minutes)", alerts: Vec::new(), silenceable: false },
    ];
    let alerts = app.alerting.alerts();
    let name_of = |fingerprint: &str| {
        alerts.iter().find(|a| a.fingerprint == fingerprint).map_or_else(
            || fingerprint.to_string(),
            |a| {
                let name = a.labels.get("alertname").map_or("", String::as_str);
                match a.labels.get("slo") {
                    Some(slo) => format!("{name} of {slo}"),
                    None => name.to_string(),
                }
            },
        )
    };
    for alert in &alerts {
        let index = match alert.state {
            _ if alert.silenced || alert.inhibited => 2,
            AlertViewState::Firing => 0,
            AlertViewState::Pending => 1,
            AlertViewState::Resolved => 3,
        };
        let name = alert.labels.get("alertname").cloned().unwrap_or_default();
        let labels: Vec<String> =
            alert.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={}", quoted(v))).collect();
        let matchers: Vec<String> = alert.labels.iter().map(|(k, v)| format!("{k}={}", quoted(v))).collect();
        // As the API says it: inhibited wins over silenced, as in Alertmanager's `suppressed`.
        let (state, muted_by) = if alert.inhibited {
            ("inhibited", alert.inhibited_by.iter().map(|f| (name_of(f), "#firing".to_string())).collect())
        } else if alert.silenced {
            (
                "silenced",
                alert.silenced_by.iter().map(|id| (format!("silence {id}"), format!("#silence-{id}"))).collect(),
            )
        } else {
            (alert.state.as_str(), Vec::new())
        };
        let link = match alert.labels.get("slo") {
            Some(slo) => Some(super::overview::link(slo)),
            None => Some(alert.generator_url.clone()).filter(|u| !u.is_empty()),
        };
        sections[index].alerts.push(AlertRow {
            link,
            state,
            muted_by,
            severity: alert.labels.get("severity").cloned().unwrap_or_else(|| "none".into()),
            summary: vigil_alerting::labels::headline(
                &name,
                &alert.annotations,
                alert.state == AlertViewState::Resolved,
            ),
            name,
            labels: labels.join(", "),
            since: alert
                .fired_at
                .clone()
                .unwrap_or_else(|| alert.active_at.clone())
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string(),
            value: value_text(alert),
            matchers: matchers.join("\n"),
        });
    }
    let silences = app
        .alerting
        .silences()
        .into_iter()
        .map(|(silence, state)| SilenceRow {
            id: silence.id.clone(),
            matchers: silence
                .matchers
                .iter()
                .map(|m| {
                    format!(
                        "{}{}{}",
                        m.name,
                        match (m.is_regex, m.is_equal) {
                            (false, true) => "=",
                            (false, false) => "!=",
                            (true, true) => "=~",
                            (true, false) => "!~",
                        },
                        quoted(&m.value)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            state: serde_json::to_value(state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            ends: silence.ends_at.format("%Y-%m-%d %H:%M").to_string(),
            created_by: silence.created_by.clone(),
            comment: silence.comment.clone(),
        })
        .collect();
    let no_alerts = sections.iter().all(|s| s.alerts.is_empty());
    let html = render(&AlertsPage {
        layout: Layout::new("Alerts", "/alerts"),
        sections,
        no_alerts,
        silences,
        csrf: csrf.clone(),
    })?;
    Ok(session.respond(html))
}

pub(super) fn check_csrf(auth: &crate::Auth, headers: &HeaderMap, token: &str) -> Result<(), PageError> {
    if crate::auth::has_bearer(headers) {
        return Ok(());
    }
    match session_of(headers) {
        Some(session) if auth.check_csrf(&session, token) => Ok(()),
        _ => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "the form's security token did not match",
            "reload the page and submit the form again",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct SilenceForm {
    csrf: String,
    matchers: String,
    duration: String,
    created_by: String,
    comment: String,
}

pub async fn create_silence(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SilenceForm>,
) -> Result<Redirect, PageError> {
    check_csrf(&app.auth, &headers, &form.csrf)?;
    let duration = form.duration.parse::<vigil_query::PromDuration>().map_err(|e| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            format!("duration {:?}: {e}", form.duration),
            "pick one of the offered durations",
        )
    })?;
    let matchers: Vec<MatcherInput> = form
        .matchers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| MatcherInput::Text(l.to_string()))
        .collect();
    if form.created_by.trim().is_empty() || form.comment.trim().is_empty() {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "a silence needs who and why", "fill in both fields"));
    }
    let ends_at = chrono::Utc::now() + chrono::Duration::from_std(duration.0).unwrap_or(chrono::Duration::hours(1));
    let request = SilenceRequest {
        id: None,
        matchers,
        starts_at: None,
        ends_at,
        created_by: form.created_by,
        comment: form.comment,
    };
    app.alerting
        .create_silence(request)
        .await
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string(), "check the matchers"))?;
    Ok(Redirect::to("/alerts"))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn expire_silence(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    check_csrf(&app.auth, &headers, &form.csrf)?;
    app.alerting.expire_silence(&id).await.map_err(|e| {
        PageError::new(StatusCode::NOT_FOUND, e.to_string(), "the silence may have been expired already")
    })?;
    Ok(Redirect::to("/alerts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_rows_escape_labels_and_carry_the_token() {
        let row = AlertRow {
            name: "<Alert>".into(),
            link: Some("/slos/a%20b".into()),
            state: "inhibited",
            muted_by: vec![("SLOBurnRate of <x>".into(), "#firing".into())],
            severity: "page".into(),
            summary: "a \"quoted\" <sum>".into(),
            labels: format!("team={}", quoted(&"x".repeat(500))),
            since: "2026-01-01 00:00:00".into(),
            value: super::super::number(Some(f64::NAN)),
            matchers: "alertname=\"<Alert>\"\nteam=\"a\\\"b\"".into(),
        };
        let page = AlertsPage {
            layout: Layout::new("Alerts", "/alerts"),
            sections: vec![Section { id: "firing", title: "Firing", alerts: vec![row], silenceable: true }],
            no_alerts: false,
            silences: vec![SilenceRow {
                id: "s1".into(),
                matchers: "a=\"b\"".into(),
                state: "expired".into(),
                ends: String::new(),
                created_by: "<me>".into(),
                comment: String::new(),
            }],
            csrf: "t".repeat(32),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<Alert>") && !html.contains("<me>") && !html.contains("<sum>"), "{html}");
        assert!(!html.contains("NaN"));
        assert_eq!(
            html.matches(&format!("value=\"{}\"", "t".repeat(32))).count(),
            1,
            "the firing row's form carries the token"
        );
        assert!(!html.contains("/alerts/silences/s1/expire"), "an expired silence offers no expire button");
        assert!(html.contains("class=\"state inhibited\"") && html.contains("inhibited by"), "{html}");
        assert!(!html.contains("<x>") && html.contains("href=\"/slos/a%20b\""), "{html}");
        assert!(html.contains("class=\"sev page\""), "severity is its own badge");
    }
}
