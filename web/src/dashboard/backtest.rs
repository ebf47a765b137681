//! `/slos/{name}/backtest`: what the SLO's alerting policy would have fired over its last
//! window, replayed from stored data; posting an edited definition (the form's YAML) replays
//! it too, beside the current one ("this policy would have paged 3 times; the proposed one, 1").

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;
use vigil_alerting::backtest::{Backtest, BacktestAlert};

use super::svg::{LineChart, Rule, Series, Unit, palette};
use super::{Layout, PageError, percent, render, utc};
use crate::AppState;
use crate::backtest_api::{RangeQuery, definition_of, range};

pub struct AlertLine {
    pub severity: String,
    pub alertname: String,
    pub group: String,
    pub start: String,
    pub end: String,
    pub peak: String,
    pub budget: String,
    pub inhibited: bool,
}

/// One policy's outcome, as the page shows it.
pub struct Outcome {
    pub title: &'static str,
    pub pages: usize,
    pub tickets: usize,
    pub inhibited: usize,
    pub page_minutes: u64,
    pub final_budget: String,
    pub alerts: Vec<AlertLine>,
}

#[derive(Template)]
#[template(path = "backtest.html")]
struct BacktestPage {
    layout: Layout,
    name: String,
    span: String,
    chart: String,
    outcomes: Vec<Outcome>,
    yaml: String,
    error: Option<String>,
}

fn line(alert: &BacktestAlert) -> AlertLine {
    let group: Vec<String> = alert.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
    AlertLine {
        severity: alert.severity.clone(),
        alertname: alert.alertname.clone(),
        group: group.join(", "),
        start: utc(alert.started_ms),
        end: alert.ended_ms.map_or_else(|| "still firing".into(), utc),
        peak: if alert.alertname.contains("Exhausted") {
            percent(Some(alert.peak_value), 1)
        } else {
            Unit::Times.format(alert.peak_value)
        },
        budget: percent(alert.budget_at_start, 1),
        inhibited: alert.inhibited,
    }
}

fn outcome(title: &'static str, run: &Backtest) -> Outcome {
    Outcome {
        title,
        pages: run.totals.pages,
        tickets: run.totals.tickets,
        inhibited: run.totals.inhibited_tickets,
        page_minutes: run.totals.page_minutes,
        final_budget: percent(run.totals.final_budget, 1),
        alerts: run.alerts.iter().map(line).collect(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ProposalForm {
    yaml: String,
}

pub async fn page(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Html<String>, PageError> {
    show(app, name, query, None).await
}

pub async fn compare(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RangeQuery>,
    Form(form): Form<ProposalForm>,
) -> Result<Html<String>, PageError> {
    show(app, name, query, Some(form.yaml)).await
}

async fn show(
    app: AppState,
    name: String,
    query: RangeQuery,
    proposal: Option<String>,
) -> Result<Html<String>, PageError> {
    let definitions = app.slos.definitions().await;
    let Some(definition) = definitions.iter().find(|d| d.name == name) else {
        return Err(PageError::not_found(format!("no SLO named {name:?}")));
    };
    let as_page = |e: crate::ApiError| PageError::new(e.status, e.error, e.hint);
    let (from, to) = range(&query, definition, crate::now_ms()).map_err(as_page)?;
    let corrections = app.slos.corrections();
    let current = app.alerting.backtest(definition, &corrections, from, to).await.map_err(|e| {
        PageError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
            "the SLI must evaluate over the range",
        )
    })?;
    // A proposal that does not load is shown as its error, beside the current outcome.
    let (proposed, error) = match proposal.as_deref().map(|yaml| definition_of(yaml.as_bytes(), "proposal")) {
        Some(Ok(proposed)) => match app.alerting.backtest(&proposed, &corrections, from, to).await {
            Ok(run) => (Some(run), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Some(Err(e)) => (None, Some(format!("{} ({})", e.error, e.hint))),
        None => (None, None),
    };
    let mut series = vec![Series { name: "budget left, this policy", points: &current.budget, class: palette(0) }];
    if let Some(run) = &proposed {
        series.push(Series { name: "budget left, proposed", points: &run.budget, class: palette(1) });
    }
    let chart = LineChart {
        title: "error budget left",
        span: Some((from, to)),
        unit: Unit::Percent,
        series: &series,
        rules: &[Rule { label: "exhausted", value: 0.0, class: "page" }],
        markers: &[],
        bands: &[],
    }
    .render();
    let mut outcomes = vec![outcome("This policy", &current)];
    if let Some(run) = &proposed {
        outcomes.push(outcome("Proposed", run));
    }
    render(&BacktestPage {
        layout: Layout::new(format!("{name}: backtest"), "/"),
        span: format!("{} to {} UTC", utc(from), utc(to)),
        name,
        chart,
        outcomes,
        yaml: proposal.unwrap_or_else(|| definition.source.text.clone()),
        error,
    })
}
