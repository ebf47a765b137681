//! `/slos/{name}`: one SLO's tiles, SLI and budget charts, burn-rate table, alert history
//! and its YAML source.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Html;

use super::overview::{sli_text, state_label};
use super::svg::{Marker, Rule, Series, line_chart};
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

#[derive(Template)]
#[template(path = "slo.html")]
struct SloPage {
    layout: Layout,
    name: String,
    description: String,
    service: String,
    objective: String,
    window: String,
    instances: Vec<Instance>,
    sli_chart: String,
    budget_chart: String,
    conditions: Vec<Condition>,
    alerts: Vec<(String, String, String)>,
    reloaded: String,
    deploys: Vec<String>,
    reload_outcome: &'static str,
    source_file: String,
    source_line: u64,
    source_yaml: String,
}

fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds >= 86_400.0 {
        format!("{:.1} days", seconds / 86_400.0)
    } else if seconds >= 3_600.0 {
        format!("{:.1} hours", seconds / 3_600.0)
    } else {
        format!("{:.0} minutes", seconds / 60.0)
    }
}

pub async fn page(State(app): State<AppState>, Path(name): Path<String>) -> Result<Html<String>, PageError> {
    let definitions = app.slos.definitions().await;
    let Some(definition) = definitions.iter().find(|d| d.name == name) else {
        return Err(PageError::not_found(format!("no SLO named {name:?}")));
    };
    let statuses: Vec<_> = app.slos.statuses().into_iter().filter(|s| s.name == name).collect();
    let now = super::now_ms();
    let window_ms = definition.window.period().as_millis() as i64;
    let history = vigil_query::slo::history::history(
        &app.engine,
        Some(&name),
        now - window_ms,
        now,
        (window_ms / 240).max(60_000),
    )
    .await
    .map_err(PageError::internal)?
    .remove(&name)
    .unwrap_or_default();
    let objective = definition.objective;
    let span = Some((now - window_ms, now));
    let reload = app.reloader.status();
    let mut markers: Vec<Marker> =
        vigil_query::slo::history::deploys(&app.engine, &definition.service, now - window_ms, now)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(at_ms, version)| Marker { at_ms, label: format!("deploy {version}") })
            .collect();
    if reload.at_ms > now - window_ms {
        markers.push(Marker { at_ms: reload.at_ms, label: "config reload".into() });
    }
    let sli_chart = line_chart(
        "SLI",
        span,
        &[Series { name: "SLI", points: &history.sli, class: "s0" }],
        &[Rule { label: "objective", value: objective }],
        &markers,
    );
    // The ideal burn-down spends the budget evenly over the window.
    let start = now - window_ms;
    let ideal: Vec<(i64, f64)> = history.budget.first().map_or_else(Vec::new, |(t0, _)| {
        let t0 = (*t0).max(start);
        vec![(t0, 1.0 - (t0 - start) as f64 / window_ms as f64), (now, 0.0)]
    });
    let budget_chart = line_chart(
        "error budget left",
        span,
        &[
            Series { name: "budget left", points: &history.budget, class: "s0" },
            Series { name: "ideal", points: &ideal, class: "s2" },
        ],
        &[Rule { label: "exhausted", value: 0.0 }],
        &markers,
    );
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
    let conditions = statuses
        .first()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| Condition {
                    severity: c.severity,
                    windows: format!("{} / {}", c.long_window, c.short_window),
                    long: number(c.long_burn_rate),
                    short: number(c.short_burn_rate),
                    threshold: format!("{}×", number(Some(c.burn_rate_threshold))),
                    state: if c.active { "firing" } else { "ok" },
                })
                .collect()
        })
        .unwrap_or_default();
    let alerts = vigil_query::slo::history::alert_history(&app.engine, &name, 50).await.unwrap_or_default();
    let deploys: Vec<String> = markers
        .iter()
        .filter(|m| m.label.starts_with("deploy"))
        .map(|m| format!("{} at {} UTC", m.label, utc(m.at_ms)))
        .collect();
    render(&SloPage {
        layout: Layout::new(&name, "/"),
        name: definition.name.clone(),
        description: definition.description.clone(),
        service: definition.service.clone(),
        objective: percent(Some(objective), 3),
        window: statuses.first().map(|s| s.window.clone()).unwrap_or_default(),
        instances,
        sli_chart,
        budget_chart,
        conditions,
        alerts: alerts.into_iter().map(|(t, severity, state)| (utc(t), severity, state)).collect(),
        reloaded: utc(reload.at_ms),
        deploys,
        reload_outcome: if reload.successful { "successful" } else { "failed" },
        source_file: definition.source.file.clone(),
        source_line: definition.source.line,
        source_yaml: definition.source.text.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_slo_without_data_renders_dashes_and_empty_charts() {
        let page = SloPage {
            layout: Layout::new("s", "/"),
            name: "s".into(),
            description: "<i>desc</i>".into(),
            service: String::new(),
            objective: percent(Some(1.0), 3),
            window: "30d".into(),
            instances: vec![Instance {
                id: "s".into(),
                state: "no_data",
                state_label: "no data",
                sli: percent(Some(f64::NAN), 3),
                events: format!("{} good of {}", number(Some(0.0)), number(Some(0.0))),
                budget: percent(None, 1),
                exhaustion: String::new(),
                error: None,
            }],
            sli_chart: line_chart(
                "SLI",
                Some((0, 1000)),
                &[Series { name: "SLI", points: &[(10, f64::NAN)], class: "s0" }],
                &[Rule { label: "objective", value: 1.0 }],
                &[],
            ),
            budget_chart: line_chart(
                "budget",
                Some((0, 1000)),
                &[],
                &[],
                &[Marker { at_ms: 500, label: "deploy <x>".into() }],
            ),
            conditions: Vec::new(),
            alerts: Vec::new(),
            reloaded: utc(0),
            reload_outcome: "successful",
            deploys: Vec::new(),
            source_file: "s.yaml".into(),
            source_line: 1,
            source_yaml: "objective: 100".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("NaN") && !html.contains("<i>"), "{html}");
        assert!(html.contains("100.000%"), "a 100 % objective shows");
        assert!(html.contains("No evaluation yet") && html.contains("No deploys seen"));
    }
}
