//! `/`: one row per SLO (per group of a grouped SLO), filterable by service, team and state,
//! sorted by budget left.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use vigil_query::slo::SloState;

use super::{Layout, PageError, number, percent, render, svg};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    pub service: Option<String>,
    pub team: Option<String>,
    pub state: Option<String>,
    pub sort: Option<String>,
}

pub struct Row {
    pub id: String,
    pub link: String,
    pub service: String,
    pub team: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub sli: String,
    pub objective: String,
    pub budget: String,
    pub budget_width: f64,
    pub budget_class: &'static str,
    pub budget_value: f64,
    pub fastest_burn: String,
    pub firing: usize,
    pub sparkline: String,
    /// Why an SLO in `error` has no figures.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    layout: Layout,
    rows: Vec<Row>,
    total: usize,
    services: BTreeSet<String>,
    teams: BTreeSet<String>,
    states: &'static [&'static str],
    filter: Filter,
    reload_error: Option<String>,
}

pub fn state_label(state: SloState) -> &'static str {
    match state {
        SloState::NoData => "no data",
        other => other.as_str(),
    }
}

/// The SLI, or how much of the history a backfill has read: never a number it has not got.
pub fn sli_text(status: &vigil_query::slo::SloStatus) -> String {
    match status.backfill_progress {
        Some(progress) => format!("{:.0}% read", progress * 100.0),
        None => percent(status.sli, 3),
    }
}

pub(crate) fn link(name: &str) -> String {
    format!("/slos/{}", form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20"))
}

/// One table row of an SLO status.
fn row(status: &vigil_query::slo::SloStatus, team: String, firing: usize, sparkline: String) -> Row {
    let budget = status.error_budget_remaining.filter(|b| b.is_finite());
    let fastest = status
        .burn_rates
        .values()
        .filter_map(|b| *b)
        .filter(|b| b.is_finite())
        .fold(None, |max: Option<f64>, b| Some(max.map_or(b, |m| m.max(b))));
    Row {
        id: status.id(),
        link: link(&status.name),
        service: status.service.clone(),
        team,
        state: status.state.as_str(),
        state_label: state_label(status.state),
        sli: sli_text(status),
        objective: percent(Some(status.objective), 3),
        budget: percent(budget, 1),
        budget_width: budget.map_or(0.0, |b| (b * 100.0).clamp(0.0, 100.0)),
        budget_class: match budget {
            Some(b) if b > 0.25 => "",
            Some(b) if b > 0.0 => "low",
            _ => "none",
        },
        budget_value: budget.unwrap_or(f64::INFINITY),
        fastest_burn: fastest.map_or_else(|| "–".into(), |b| format!("{}×", number(Some(b)))),
        firing,
        sparkline,
        error: status.error.clone().filter(|_| status.state == SloState::Error),
    }
}

pub async fn page(State(app): State<AppState>, Query(filter): Query<Filter>) -> Result<Html<String>, PageError> {
    let statuses = app.slos.statuses();
    let history = app.dashboard.sparklines(&app.engine).await;
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    for alert in app.alerting.alerts() {
        if alert.state == "firing"
            && let Some(slo) = alert.labels.get("slo")
        {
            *firing.entry(slo.clone()).or_default() += 1;
        }
    }
    let (mut services, mut teams) = (BTreeSet::new(), BTreeSet::new());
    let total = statuses.len();
    let mut rows = Vec::new();
    for status in &statuses {
        let team = status.labels.get("team").cloned().unwrap_or_default();
        services.insert(status.service.clone());
        if !team.is_empty() {
            teams.insert(team.clone());
        }
        let keep = filter.service.as_deref().is_none_or(|s| s.is_empty() || s == status.service)
            && filter.team.as_deref().is_none_or(|t| t.is_empty() || t == team)
            && filter.state.as_deref().is_none_or(|s| s.is_empty() || s == state_label(status.state));
        if !keep {
            continue;
        }
        let spark = history.get(&status.name).map(|h| svg::sparkline(&h.sli)).unwrap_or_else(|| svg::sparkline(&[]));
        rows.push(row(status, team, firing.get(&status.name).copied().unwrap_or(0), spark));
    }
    if filter.sort.as_deref() == Some("name") {
        rows.sort_by(|a, b| a.id.cmp(&b.id));
    } else {
        rows.sort_by(|a, b| a.budget_value.total_cmp(&b.budget_value).then_with(|| a.id.cmp(&b.id)));
    }
    let reload = app.reloader.status();
    let reload_error = (!reload.successful).then(|| reload.error.clone().unwrap_or_default());
    render(&Overview {
        layout: Layout::new("SLOs", "/"),
        rows,
        total,
        services,
        teams,
        states: &["ok", "burning", "exhausted", "no data", "backfilling", "error"],
        filter,
        reload_error,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use askama::Template;
    use vigil_query::slo::{SloState, SloStatus};

    use super::*;

    fn status(name: &str, sli: Option<f64>, budget: Option<f64>, state: SloState) -> SloStatus {
        SloStatus {
            name: name.into(),
            group: BTreeMap::new(),
            service: "svc".into(),
            description: String::new(),
            labels: BTreeMap::new(),
            objective: 0.999,
            window: "30d".into(),
            sli,
            good: 0.0,
            total: 0.0,
            error_budget_remaining: budget,
            burn_rates: BTreeMap::from([("5m".to_string(), Some(f64::NAN)), ("1h".to_string(), None)]),
            time_to_exhaustion_seconds: None,
            state,
            backfill_progress: None,
            error: None,
            conditions: Vec::new(),
            evaluated_at_ms: 0,
        }
    }

    #[test]
    fn edge_data_renders_escaped_finite_and_bounded() {
        let long = format!("{}<script>", "a-very-long-slo-name-".repeat(20));
        let statuses = [
            status(&long, Some(f64::NAN), Some(f64::NAN), SloState::NoData),
            SloStatus { error: Some("table <bad> not found".into()), ..status("broken", None, None, SloState::Error) },
            status("empty", None, None, SloState::NoData),
            status("spent", Some(0.99), Some(0.0), SloState::Exhausted),
            status("untouched", Some(1.0), Some(1.0), SloState::Ok),
            status("overspent", Some(0.5), Some(-12.0), SloState::Exhausted),
        ];
        let rows: Vec<Row> =
            statuses.iter().map(|s| row(s, String::new(), 0, svg::sparkline(&[(0, f64::NAN)]))).collect();
        let widths: Vec<f64> = rows.iter().map(|r| r.budget_width).collect();
        assert_eq!(widths, vec![0.0, 0.0, 0.0, 0.0, 100.0, 0.0]);
        let page = Overview {
            layout: Layout::new("SLOs", "/"),
            rows,
            total: statuses.len(),
            services: Default::default(),
            teams: Default::default(),
            states: &["ok"],
            filter: Filter::default(),
            reload_error: None,
        };
        let html = page.render().unwrap();
        assert!(!html.contains("NaN") && !html.contains("<script>"), "NaN and markup never reach the page");
        assert!(html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"), "names are escaped");
        assert!(html.contains("100.0%") && html.contains("0.0%"), "0 and 100 % budgets show");
        assert_eq!(html.matches("<tr data-state").count(), 6);
        assert!(
            html.contains("class=\"reason\"") && html.contains("table &#60;bad&#62; not found")
                || html.contains("table &lt;bad&gt; not found"),
            "{html}"
        );
    }
}
