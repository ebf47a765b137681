//! `/reports`: compliance per SLO, service and team over a calendar period (month, ISO week
//! or quarter, in a time zone), with links to the periods before and after and to the CSV.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use vigil_query::slo::report::{Period, Report};

use super::{Layout, PageError, percent, render, utc};
use crate::AppState;
use crate::slo_api::{ReportQuery, build_report};

/// One SLO's row, as the page shows it.
pub struct Row {
    pub slo: String,
    pub link: String,
    pub service: String,
    pub team: String,
    pub objective: String,
    pub sli: String,
    pub budget_spent: String,
    pub bad_minutes: u64,
    pub pages: usize,
    pub tickets: usize,
    /// `met`, `missed` or `no data`.
    pub verdict: &'static str,
    pub error: Option<String>,
    /// The corrections applied, or empty.
    pub corrections: String,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    layout: Layout,
    report: Report,
    rows: Vec<Row>,
    /// Services and teams: (heading, table id, rows).
    groups: Vec<(&'static str, &'static str, Vec<vigil_query::slo::report::GroupReport>)>,
    until: String,
    previous: Option<String>,
    next: Option<String>,
    csv: String,
    /// The current week, month and quarter, for switching the kind of period.
    kinds: Vec<(&'static str, String)>,
}

fn href(period: &Period, query: &ReportQuery, format: Option<&str>) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    url.append_pair("period", &period.name).append_pair("tz", &period.time_zone);
    for (key, value) in [("service", &query.service), ("team", &query.team)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            url.append_pair(key, value);
        }
    }
    match format {
        Some(format) => format!("/api/v1/reports?{}&format={format}", url.finish()),
        None => format!("/reports?{}", url.finish()),
    }
}

fn row(r: &vigil_query::slo::report::SloReport) -> Row {
    Row {
        slo: r.slo.clone(),
        link: super::overview::link(&r.slo),
        service: r.service.clone(),
        team: r.team.clone(),
        objective: percent(Some(r.objective), 3),
        sli: percent(r.sli, 3),
        budget_spent: percent(r.budget_spent, 1),
        bad_minutes: r.bad_minutes,
        pages: r.pages,
        tickets: r.tickets,
        verdict: r.verdict(),
        error: r.error.clone(),
        corrections: r.corrections_note(),
    }
}

pub async fn page(State(app): State<AppState>, Query(query): Query<ReportQuery>) -> Result<Html<String>, PageError> {
    let report = build_report(&app, &query).await.map_err(|e| PageError::new(e.status, e.error, e.hint))?;
    let now = super::now_ms();
    let tz = report.period.time_zone.clone();
    let local = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().date_naive();
    let iso = chrono::Datelike::iso_week(&local);
    let quarter = (chrono::Datelike::month(&local) - 1) / 3 + 1;
    let year = chrono::Datelike::year(&local);
    let kinds = [
        ("this week", format!("{}-W{:02}", iso.year(), iso.week())),
        ("this month", format!("{year}-{:02}", chrono::Datelike::month(&local))),
        ("this quarter", format!("{year}-Q{quarter}")),
    ]
    .into_iter()
    .filter_map(|(label, name)| Period::parse(&name, &tz).ok().map(|p| (label, href(&p, &query, None))))
    .collect();
    let previous = report.period.neighbour(-1).map(|p| href(&p, &query, None));
    let next = report.period.neighbour(1).filter(|p| p.start_ms <= now).map(|p| href(&p, &query, None));
    let csv = href(&report.period, &query, Some("csv"));
    let mut layout = Layout::new(format!("Reports {}", report.period.name), "/reports");
    layout.refresh_seconds = 0;
    let rows = report.slos.iter().map(row).collect();
    let groups =
        vec![("Services", "report-services", report.services.clone()), ("Teams", "report-teams", report.teams.clone())];
    render(&ReportsPage { layout, until: utc(report.until_ms), report, rows, groups, previous, next, csv, kinds })
}
