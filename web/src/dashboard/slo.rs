//! `/slos/{name}`: one SLO's tiles, SLI and budget charts, burn-rate table, alert history
//! and its YAML source.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use serde::Deserialize;
use vigil_query::slo::correction::When;
use vigil_query::slo::history::{self, AlertEpisode};
use vigil_query::slo::{Correction, SloState};

use super::alerts::{CsrfForm, FormSession, check_csrf};
use super::overview::{sli_text, state_label};
use super::range::{RangeParams, RangePicker, TimeRange, fitting, resolve};
use super::svg::{Band, LineChart, Marker, Rule, Series, Unit, palette};
use super::{Layout, PageError, number, percent, render, utc};
use crate::AppState;

pub struct Instance {
    pub id: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub sli: String,
    pub events: String,
    pub budget: String,
    pub exhaustion: String,
    pub error: Option<String>,
}

pub struct Condition {
    pub severity: &'static str,
    pub windows: String,
    pub long: String,
    pub short: String,
    pub threshold: String,
    pub state: &'static str,
}

/// A row of the alert history: one firing, from start to end.
pub struct AlertRow {
    pub name: String,
    pub severity: String,
    pub start: String,
    pub end: String,
    pub duration: String,
    pub value: String,
}

/// A correction that applies to the SLO, as listed on its page.
pub struct CorrectionRow {
    pub name: String,
    pub effect: String,
    pub when: String,
    pub reason: String,
    pub created_by: String,
    pub origin: String,
    /// Made through the API (or this page): it can be deleted here.
    pub removable: bool,
}

/// When a correction applies, in words.
fn when_text(when: &When) -> String {
    match when {
        When::Once { start_ms, end_ms } => format!("{} to {} UTC", utc(*start_ms), utc(*end_ms)),
        When::Recurring { days, at, duration_ms, time_zone, from_ms, until_ms } => {
            let days = if days.is_empty() {
                "every day".to_string()
            } else {
                format!("every {}", days.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
            };
            let mut text = format!(
                "{days} at {} ({time_zone}) for {}",
                at.format("%H:%M"),
                vigil_query::PromDuration(std::time::Duration::from_millis(*duration_ms as u64))
            );
            if let Some(from) = from_ms {
                text.push_str(&format!(", from {} UTC", utc(*from)));
            }
            if let Some(until) = until_ms {
                text.push_str(&format!(", until {} UTC", utc(*until)));
            }
            text
        }
    }
}

fn correction_row(c: &Correction) -> CorrectionRow {
    CorrectionRow {
        name: c.name.clone(),
        effect: c.effects(),
        when: when_text(&c.when),
        reason: c.reason.clone(),
        created_by: c.created_by.clone(),
        origin: c.origin.clone(),
        removable: c.origin == "api",
    }
}

/// A numbered annotation of the charts, listed under them with its time.
pub struct Annotation {
    pub number: usize,
    pub at: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "slo.html")]
struct SloPage {
    layout: Layout,
    picker: RangePicker,
    name: String,
    description: String,
    service: String,
    objective: String,
    window: String,
    range_text: String,
    instances: Vec<Instance>,
    sli_chart: String,
    budget_chart: String,
    burn_chart: String,
    burn_note: &'static str,
    conditions: Vec<Condition>,
    /// Why there are no burn rates: not evaluated yet, or the evaluation's error.
    conditions_missing: String,
    alerts: Vec<AlertRow>,
    annotations: Vec<Annotation>,
    reloaded: String,
    deploys: Vec<String>,
    reload_outcome: &'static str,
    /// Where the bad events come from over `attribution_window`, or why that is not known.
    attribution: Result<vigil_query::slo::attribution::Attribution, String>,
    attribution_window: String,
    /// With a policy: its terms, and why deploys are frozen now (empty: allowed).
    policy: Option<(String, Vec<String>)>,
    corrections: Vec<CorrectionRow>,
    /// For the correction forms.
    csrf: String,
    /// The form's default start: now, to the minute, UTC.
    now_local: String,
    source_file: String,
    source_line: u64,
    source_yaml: String,
}

pub fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds >= 86_400.0 {
        format!("{:.1} days", seconds / 86_400.0)
    } else if seconds >= 3_600.0 {
        format!("{:.1} hours", seconds / 3_600.0)
    } else if seconds >= 60.0 {
        format!("{:.0} minutes", seconds / 60.0)
    } else {
        format!("{seconds:.0} seconds")
    }
}

/// The range in words, for the chart headings.
fn range_text(range: &TimeRange, window: &str) -> String {
    match range.key.as_str() {
        "window" => format!("the window ({window})"),
        "custom" => format!("{} to {} UTC", utc(range.from_ms), utc(range.to_ms)),
        key => format!("the last {key}"),
    }
}

/// The burn-rate windows charted: the conditions' long windows where `slo_status` keeps them
/// over time; else the standard short pair, with a note saying so.
fn burn_windows(conditions: &[vigil_query::slo::evaluate::ConditionStatus]) -> (Vec<&'static str>, &'static str) {
    let windows: Vec<&'static str> =
        history::BURN_RATE_WINDOWS.iter().copied().filter(|w| conditions.iter().any(|c| c.long_window == *w)).collect();
    if windows.is_empty() && !conditions.is_empty() {
        let note = "The conditions' own windows are not kept over time; the 5m and 1h burn rates are shown against their thresholds.";
        return (vec!["5m", "1h"], note);
    }
    (windows, "")
}

/// The charts' numbered annotations: deploys, the last reload, alert firings and silences of
/// this SLO, in time order.
fn annotations(
    deploys: &[(i64, String)],
    reload_ms: i64,
    episodes: &[AlertEpisode],
    silences: &[(i64, String)],
    range: &TimeRange,
) -> Vec<Marker> {
    let mut markers: Vec<Marker> =
        deploys.iter().map(|(at_ms, version)| Marker { at_ms: *at_ms, label: format!("deploy {version}") }).collect();
    markers.push(Marker { at_ms: reload_ms, label: "config reload".into() });
    markers.extend(
        episodes.iter().map(|e| Marker { at_ms: e.started_ms, label: format!("{} {} fired", e.severity, e.alertname) }),
    );
    markers.extend(silences.iter().map(|(at_ms, by)| Marker { at_ms: *at_ms, label: format!("silenced by {by}") }));
    markers.retain(|m| m.at_ms >= range.from_ms && m.at_ms <= range.to_ms);
    markers.sort_by_key(|m| m.at_ms);
    markers
}

pub async fn page(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<RangeParams>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let session = FormSession::of(&app.auth, &headers);
    let definitions = app.slos.definitions().await;
    let Some(definition) = definitions.iter().find(|d| d.name == name) else {
        return Err(PageError::not_found(format!("no SLO named {name:?}")));
    };
    let statuses: Vec<_> = app.slos.statuses().into_iter().filter(|s| s.name == name).collect();
    let now = super::now_ms();
    let window_ms = definition.window.period().as_millis() as i64;
    let window = statuses.first().map(|s| s.window.clone()).unwrap_or_default();
    let first = history::first_evaluation(&app.engine, &name, now - window_ms).await.map_err(PageError::internal)?;
    let range = resolve(&params, now, &fitting(first, now, window_ms), Some(window_ms))
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e, "pick a range from the page's range picker"))?;
    let step = range.step_ms(240);
    let corrections: Vec<std::sync::Arc<Correction>> =
        app.slos.corrections().iter().filter(|c| c.scope.covers(definition)).cloned().collect();
    // A correction that takes events out of what the charts show (their range, and the window
    // before it that their first points sum) changed those figures after `slo_status` kept
    // them: the charts are recomputed from stored data instead, with the corrections applied.
    let conditions_now = statuses.first().map(|s| s.conditions.clone()).unwrap_or_default();
    let (burn_windows, burn_note) = burn_windows(&conditions_now);
    let corrected_past = definition.group_by.is_empty()
        && corrections.iter().any(|c| c.exclude && !c.occurrences(range.from_ms - window_ms, range.to_ms).is_empty());
    let (mut history, burn) = if corrected_past {
        history::replayed(&app.engine, definition, &corrections, (range.from_ms, range.to_ms), step, &burn_windows)
            .await
            .map_err(|e| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), "check the SLI"))?
    } else {
        let history = history::history(&app.engine, Some(&name), range.from_ms, range.to_ms, step)
            .await
            .map_err(PageError::internal)?
            .remove(&name)
            .unwrap_or_default();
        let burn = history::burn_rate_history(&app.engine, &name, &burn_windows, range.from_ms, range.to_ms, step)
            .await
            .unwrap_or_default();
        (history, burn)
    };
    // The charts end where the tiles are: the newest evaluation, not a bucket's mean.
    if let Some(status) = statuses.first()
        && status.evaluated_at_ms > history.sli.last().map_or(i64::MIN, |p| p.0)
        && (range.from_ms..=range.to_ms).contains(&status.evaluated_at_ms)
    {
        history.sli.push((status.evaluated_at_ms, status.sli.unwrap_or(f64::NAN)));
        history.budget.push((status.evaluated_at_ms, status.error_budget_remaining.unwrap_or(f64::NAN)));
    }
    let objective = definition.objective;
    let span = Some((range.from_ms, range.to_ms));
    let reload = app.reloader.status();
    let deploys =
        history::deploys(&app.engine, &definition.service, range.from_ms, range.to_ms).await.unwrap_or_default();
    let episodes =
        history::alert_episodes(&app.engine, &name, range.from_ms, range.to_ms, 50).await.unwrap_or_default();
    let silences: Vec<(i64, String)> = app
        .alerting
        .silences()
        .into_iter()
        .filter(|(s, _)| s.matchers.iter().any(|m| m.name == "slo" && m.value == name && m.is_equal && !m.is_regex))
        .map(|(s, _)| (s.starts_at.timestamp_millis(), s.created_by))
        .collect();
    let markers = annotations(&deploys, reload.at_ms, &episodes, &silences, &range);
    let bands: Vec<Band> = corrections
        .iter()
        .flat_map(|c| {
            c.occurrences(range.from_ms, range.to_ms).into_iter().map(|(from_ms, to_ms)| Band {
                from_ms,
                to_ms,
                label: format!("correction {} ({}): {}", c.name, c.effects(), c.reason),
            })
        })
        .collect();

    let sli_chart = LineChart {
        title: "SLI",
        span,
        unit: Unit::Percent,
        series: &[Series { name: "SLI", points: &history.sli, class: palette(0) }],
        rules: &[Rule { label: "objective", value: objective, class: "quiet" }],
        markers: &markers,
        bands: &bands,
    }
    .render();
    // The ideal burn-down spends the budget evenly over the window, from full at its start.
    let ideal: Vec<(i64, f64)> = history.budget.first().map_or_else(Vec::new, |(t0, _)| {
        let at = |t: i64| 1.0 - (t - (now - window_ms)) as f64 / window_ms as f64;
        let t0 = (*t0).max(now - window_ms);
        vec![(t0, at(t0)), (range.to_ms.min(now), at(range.to_ms.min(now)))]
    });
    let budget_chart = LineChart {
        title: "error budget left",
        span,
        unit: Unit::Percent,
        series: &[
            Series { name: "budget left", points: &history.budget, class: palette(0) },
            Series { name: "even spend over the window", points: &ideal, class: palette(2) },
        ],
        rules: &[Rule { label: "exhausted", value: 0.0, class: "page" }],
        markers: &markers,
        bands: &bands,
    }
    .render();
    let burn_names: Vec<String> = burn.iter().map(|(w, _)| format!("{w} burn rate")).collect();
    let burn_series: Vec<Series<'_>> = burn
        .iter()
        .zip(&burn_names)
        .enumerate()
        .map(|(i, ((_, points), name))| Series { name, points, class: palette(i) })
        .collect();
    let threshold_labels: Vec<String> =
        conditions_now.iter().map(|c| format!("{} ({})", c.severity, c.long_window)).collect();
    let thresholds: Vec<Rule<'_>> = conditions_now
        .iter()
        .zip(&threshold_labels)
        .map(|(c, label)| Rule { label, value: c.burn_rate_threshold, class: c.severity })
        .collect();
    let burn_chart = LineChart {
        title: "burn rate",
        span,
        unit: Unit::Times,
        series: &burn_series,
        rules: &thresholds,
        markers: &markers,
        bands: &bands,
    }
    .render();

    let instances = statuses
        .iter()
        .map(|s| Instance {
            id: s.id(),
            state: s.state.as_str(),
            state_label: state_label(s.state),
            sli: sli_text(s),
            events: format!("{} good of {}", number(Some(s.good)), number(Some(s.total))),
            budget: percent(s.error_budget_remaining, 1),
            exhaustion: s
                .time_to_exhaustion_seconds
                .map_or_else(String::new, |t| format!("exhausted in {} at this rate", duration_text(t))),
            error: s.error.clone(),
        })
        .collect();
    let conditions = conditions_now
        .iter()
        .map(|c| Condition {
            severity: c.severity,
            windows: format!("{} / {}", c.long_window, c.short_window),
            long: number(c.long_burn_rate),
            short: number(c.short_burn_rate),
            threshold: format!("{}×", number(Some(c.burn_rate_threshold))),
            state: if c.active { "firing" } else { "ok" },
        })
        .collect();
    let conditions_missing = match statuses.first() {
        Some(s) if s.state == SloState::Error => {
            format!("The last evaluation failed: {}", s.error.clone().unwrap_or_else(|| "no reason given".into()))
        }
        Some(s) if s.state == SloState::Backfilling => {
            "Backfilling: burn rates follow once the history is read.".into()
        }
        _ => "No evaluation yet: the first one runs within the evaluation interval.".into(),
    };
    let alerts = episodes
        .iter()
        .map(|e| AlertRow {
            name: e.alertname.clone(),
            severity: e.severity.clone(),
            start: utc(e.started_ms),
            end: e.ended_ms.map_or_else(|| "firing".into(), utc),
            duration: duration_text((e.ended_ms.unwrap_or(now) - e.started_ms) as f64 / 1000.0),
            value: if e.alertname.contains("Exhausted") {
                percent(Some(e.value), 1)
            } else {
                Unit::Times.format(e.value)
            },
        })
        .collect();
    let policy = definition.policy.as_ref().map(|p| {
        let mut terms = Vec::new();
        if let Some(below) = p.freeze_below {
            terms.push(format!("freeze below {} budget left", percent(Some(below), 1)));
        }
        if p.freeze_while_paging {
            terms.push("freeze while paging".to_string());
        }
        let reasons = statuses.iter().flat_map(|s| vigil_query::slo::policy::freeze_reasons(definition, s)).collect();
        (terms.join(", "), reasons)
    });
    // Over the page condition's long window (what a page looks at), else an hour.
    let attribution_window = definition
        .alerting
        .conditions
        .iter()
        .find(|c| c.severity == vigil_query::slo::model::Severity::Page)
        .map_or(std::time::Duration::from_secs(3600), |c| c.long_window)
        .min(definition.window.period());
    let attribution = vigil_query::slo::attribution::attribute(&app.engine, definition, attribution_window, now)
        .await
        .map_err(|e| e.to_string());
    let deploy_lines: Vec<String> = deploys.iter().map(|(at, v)| format!("deploy {v} at {} UTC", utc(*at))).collect();
    let html = render(&SloPage {
        layout: Layout::new(&name, "/"),
        picker: RangePicker::new(&super::overview::link(&name), &[], &range, Some(&window)),
        name: definition.name.clone(),
        description: definition.description.clone(),
        service: definition.service.clone(),
        objective: percent(Some(objective), 3),
        range_text: range_text(&range, &window),
        window,
        instances,
        sli_chart,
        budget_chart,
        burn_chart,
        burn_note,
        conditions,
        conditions_missing,
        alerts,
        annotations: markers
            .iter()
            .enumerate()
            .map(|(i, m)| Annotation { number: i + 1, at: utc(m.at_ms), text: m.label.clone() })
            .collect(),
        reloaded: utc(reload.at_ms),
        deploys: deploy_lines,
        reload_outcome: if reload.successful { "successful" } else { "failed" },
        attribution,
        attribution_window: vigil_query::PromDuration(attribution_window).to_string(),
        policy,
        corrections: corrections.iter().map(|c| correction_row(c)).collect(),
        csrf: session.csrf.clone(),
        now_local: chrono::DateTime::from_timestamp_millis(now)
            .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default(),
        source_file: definition.source.file.clone(),
        source_line: definition.source.line,
        source_yaml: definition.source.text.clone(),
    })?;
    Ok(session.respond(html))
}

/// The SLO page's correction form.
#[derive(Debug, Deserialize)]
pub struct CorrectionForm {
    csrf: String,
    /// `YYYY-MM-DDTHH:MM`, UTC.
    start: String,
    duration: String,
    reason: String,
    created_by: String,
    /// `exclude`, `mute` or `both`.
    effect: String,
}

/// `POST /slos/{name}/corrections`: a one-off correction of this SLO, made as the API
/// makes them (the same document, the same checks).
pub async fn create_correction(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CorrectionForm>,
) -> Result<Redirect, PageError> {
    check_csrf(&app.auth, &headers, &form.csrf)?;
    let bad = |message: String| PageError::new(StatusCode::BAD_REQUEST, message, "correct the form and send it again");
    let start = chrono::NaiveDateTime::parse_from_str(form.start.trim(), "%Y-%m-%dT%H:%M")
        .map_err(|_| bad(format!("start {:?} is not a date and time", form.start)))?
        .and_utc();
    let effect: &[&str] = match form.effect.as_str() {
        "exclude" => &["exclude"],
        "mute" => &["mute"],
        "both" => &["exclude", "mute"],
        other => return Err(bad(format!("unknown effect {other:?}"))),
    };
    let now = super::now_ms();
    let document = serde_json::json!({
        "apiVersion": "vigil/v1",
        "kind": "Correction",
        "metadata": {"name": format!("{name}-{}", start.format("%Y%m%dT%H%M"))},
        "spec": {
            "reason": form.reason,
            "created_by": form.created_by,
            "start": start.to_rfc3339(),
            "duration": form.duration,
            "scope": {"slos": [name]},
            "effect": effect,
        },
    });
    app.slos.add_correction(&document.to_string(), "dashboard", now).await.map_err(|e| bad(e.to_string()))?;
    Ok(Redirect::to(&format!("{}#corrections", super::overview::link(&name))))
}

/// `POST /slos/{name}/corrections/{correction}/delete`.
pub async fn delete_correction(
    State(app): State<AppState>,
    Path((name, correction)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    check_csrf(&app.auth, &headers, &form.csrf)?;
    app.slos
        .remove_correction(&correction, super::now_ms())
        .await
        .map_err(|e| PageError::new(StatusCode::CONFLICT, e.to_string(), "reload the page"))?;
    Ok(Redirect::to(&format!("{}#corrections", super::overview::link(&name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: &[Series<'_>], rules: &[Rule<'_>], markers: &[Marker]) -> String {
        LineChart { title: "t", span: Some((0, 1000)), unit: Unit::Percent, series, rules, markers, bands: &[] }
            .render()
    }

    #[test]
    fn an_slo_without_data_renders_dashes_and_empty_charts() {
        let range = TimeRange { from_ms: 0, to_ms: 1000, key: "window".into() };
        let page = SloPage {
            layout: Layout::new("s", "/"),
            picker: RangePicker::new("/slos/s", &[], &range, Some("30d")),
            name: "s".into(),
            description: "<i>desc</i>".into(),
            service: String::new(),
            objective: percent(Some(1.0), 3),
            window: "30d".into(),
            range_text: range_text(&range, "30d"),
            instances: vec![Instance {
                id: "s".into(),
                state: "error",
                state_label: "error",
                sli: percent(Some(f64::NAN), 3),
                events: format!("{} good of {}", number(Some(0.0)), number(Some(0.0))),
                budget: percent(None, 1),
                exhaustion: String::new(),
                error: Some("table <x> not found".into()),
            }],
            sli_chart: chart(
                &[Series { name: "SLI", points: &[(10, f64::NAN)], class: "s0" }],
                &[Rule { label: "objective", value: 1.0, class: "quiet" }],
                &[],
            ),
            budget_chart: chart(&[], &[], &[Marker { at_ms: 500, label: "deploy <x>".into() }]),
            burn_chart: chart(&[], &[], &[]),
            burn_note: "",
            conditions: Vec::new(),
            conditions_missing: "The last evaluation failed: table <x> not found".into(),
            alerts: Vec::new(),
            annotations: Vec::new(),
            reloaded: utc(0),
            reload_outcome: "successful",
            deploys: Vec::new(),
            attribution: Err("attribution covers ratio and span SLIs; this SLO's SLI is SQL".into()),
            attribution_window: "1h".into(),
            policy: Some((
                "freeze below 10.0% budget left".into(),
                vec!["s: error budget left -5% is below the policy's 10%".into()],
            )),
            corrections: vec![CorrectionRow {
                name: "<up>".into(),
                effect: "exclude".into(),
                when: "x".into(),
                reason: "db <upgrade>".into(),
                created_by: "ana".into(),
                origin: "api".into(),
                removable: true,
            }],
            csrf: "token".into(),
            now_local: "2026-12-03T10:00".into(),
            source_file: "s.yaml".into(),
            source_line: 1,
            source_yaml: "objective: 100".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("NaN") && !html.contains("<i>") && !html.contains("<x>"), "{html}");
        assert!(html.contains("100.000%"), "a 100 % objective shows");
        assert!(
            html.contains("The last evaluation failed: table &#60;x&#62; not found")
                || html.contains("failed: table &lt;x&gt;"),
            "{html}"
        );
        assert!(!html.contains("No evaluation yet"), "an SLO in error says so, not that it waits");
        assert!(html.contains("No deploys seen") && html.contains("window (30d)"));
        assert!(html.contains("id=\"deploy-gate\"") && html.contains("Deploys of this service are frozen"), "{html}");
    }

    #[test]
    fn annotations_are_numbered_in_time_order_within_the_range() {
        let range = TimeRange { from_ms: 1_000, to_ms: 10_000, key: "1h".into() };
        let episodes = [AlertEpisode {
            alertname: "SLOBurnRate".into(),
            severity: "page".into(),
            started_ms: 5_000,
            ended_ms: None,
            value: 20.0,
        }];
        let markers = annotations(
            &[(3_000, "1.2.3".into()), (500, "old".into())],
            8_000,
            &episodes,
            &[(9_000, "ana".into())],
            &range,
        );
        let labels: Vec<&str> = markers.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(labels, ["deploy 1.2.3", "page SLOBurnRate fired", "config reload", "silenced by ana"]);
    }
}
