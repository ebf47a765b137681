//! The one model every SLO dialect (Vigil, OpenSLO, Sloth) is loaded into.

use std::collections::BTreeMap;
use std::time::Duration;

/// Where a definition came from, for messages and the dashboard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source {
    pub file: String,
    pub line: u64,
    /// The YAML document the SLO was written in.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SloDefinition {
    pub name: String,
    pub display_name: Option<String>,
    pub service: String,
    pub description: String,
    /// Labels carried by the SLO's series and alerts (team, tier, ...).
    pub labels: BTreeMap<String, String>,
    /// Target share of good events (or good slices), in (0, 1).
    pub objective: f64,
    pub window: Window,
    pub budgeting: Budgeting,
    pub sli: Sli,
    /// One SLO per distinct value of these labels.
    pub group_by: Vec<String>,
    pub alerting: AlertingSpec,
    /// The error-budget policy: when the service's deploys freeze (see `slo::policy`).
    pub policy: Option<BudgetPolicy>,
    pub source: Source,
}

/// An SLO's error-budget policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetPolicy {
    /// Freeze while the error budget left is below this fraction.
    pub freeze_below: Option<f64>,
    /// Freeze while one of the SLO's page conditions holds.
    pub freeze_while_paging: bool,
    /// Receivers told when a freeze starts and ends (empty: the routing tree decides).
    pub receivers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Window {
    Rolling(Duration),
    Calendar { unit: CalendarUnit, time_zone: chrono_tz::Tz },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalendarUnit {
    Week,
    Month,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Budgeting {
    /// Good events over all events.
    Occurrences,
    /// Share of good slices; a slice is good when its good/total ratio reaches `target`.
    Timeslices { slice: Duration, target: f64 },
    /// Good events over all events, counted per slice (OpenSLO RatioTimeslices): the mean of
    /// the slices' ratios.
    RatioTimeslices { slice: Duration },
}

/// How good and total events (or slices) are counted.
#[derive(Clone, Debug, PartialEq)]
pub enum Sli {
    /// Counters, as Prometheus series selectors: good/total or bad/total.
    Ratio { good: Option<String>, bad: Option<String>, total: String },
    /// A histogram: requests at or under `threshold` (a bucket bound) are good.
    Latency { histogram: String, threshold: f64 },
    /// Spans of a service (and operation): good when the status is one of `good_status` and
    /// the duration at most `max_duration`.
    Spans { service: String, name: Option<String>, good_status: Vec<String>, max_duration: Option<Duration> },
    /// Time slices in which a drift statistic stays under `below`.
    Drift { model: String, version: Option<String>, feature: String, statistic: String, below: f64, slice: Duration },
    /// SQL queries returning one row per event with a `timestamp` column (and optionally a
    /// `value` column weighting it).
    Sql { good: Option<String>, bad: Option<String>, total: String },
    /// PromQL queries; `{{.window}}` is replaced by the bucket width.
    PromQl { good: Option<String>, bad: Option<String>, total: String, kind: PromQlKind },
    /// Other SLOs combined: their good and total events per minute, weighted (see
    /// [`Weighting`]).
    Composite { parts: Vec<CompositePart>, weighting: Weighting },
}

/// One SLO inside a composite, with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct CompositePart {
    pub name: String,
    pub weight: f64,
    /// The part's definition, filled in once every file is loaded.
    pub slo: Option<std::sync::Arc<SloDefinition>>,
    /// Where the part is named, for the error when no SLO has that name.
    pub missing: crate::slo::LoadError,
}

/// How a composite's parts combine each minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// Events count as they come, times the part's weight: good = Σ wᵢ·goodᵢ, total = Σ wᵢ·totalᵢ.
    Events,
    /// Each part's ratio counts by its declared weight, whatever its traffic (OpenSLO's
    /// `compositeWeight`): good = Σ wᵢ·goodᵢ/totalᵢ, total = Σ wᵢ over the parts with events.
    Declared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromQlKind {
    /// The queries return counters: events are their increases (OpenSLO `counter: true`).
    Counter,
    /// The queries return per-second rates over `{{.window}}` (Sloth events).
    Rate,
    /// The query returns an error ratio directly (Sloth raw): each bucket weighs one.
    ErrorRatio,
}

/// Severities of SLO alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multiwindow burn-rate condition: both windows above `burn_rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct BurnCondition {
    pub severity: Severity,
    pub burn_rate: f64,
    pub long_window: Duration,
    pub short_window: Duration,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeverityAlerting {
    pub disabled: bool,
    pub receivers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertingSpec {
    /// The `alertname` label of the SLO's alerts.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub page: SeverityAlerting,
    pub ticket: SeverityAlerting,
    pub conditions: Vec<BurnCondition>,
    /// Burn-rate alerts need at least this many events (or slices) in the long window, so a
    /// couple of failed requests on an idle service page nobody.
    pub min_events: f64,
    /// How long an SLO must lack data before its no-data alert fires; zero disables it.
    pub no_data_for: Duration,
}

/// Defaults of the minimum-traffic guard and the no-data alert.
pub const DEFAULT_MIN_EVENTS: f64 = 10.0;
pub const DEFAULT_NO_DATA_FOR: Duration = Duration::from_secs(15 * 60);

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The SRE workbook's conditions for a 30-day period, scaled to `period` the way Sloth
/// scales them: the windows shrink or grow with the period, the budget share each condition
/// stands for (2 %, 5 %, 10 %, 10 %) stays.
pub fn default_conditions(period: Duration) -> Vec<BurnCondition> {
    let scale = period.as_secs_f64() / (30 * DAY) as f64;
    let window = |secs: u64| Duration::from_secs_f64((secs as f64 * scale).max(60.0)).as_secs().max(60);
    let condition = |severity, budget_share: f64, long: u64, short: u64| {
        let long_window = Duration::from_secs(window(long));
        BurnCondition {
            severity,
            // Burning `budget_share` of the budget within the long window.
            burn_rate: budget_share * period.as_secs_f64() / long_window.as_secs_f64(),
            long_window,
            short_window: Duration::from_secs(window(short)),
        }
    };
    vec![
        condition(Severity::Page, 0.02, HOUR, 5 * 60),
        condition(Severity::Page, 0.05, 6 * HOUR, 30 * 60),
        condition(Severity::Ticket, 0.10, DAY, 2 * HOUR),
        condition(Severity::Ticket, 0.10, 3 * DAY, 6 * HOUR),
    ]
}

impl AlertingSpec {
    pub fn new(name: impl Into<String>, period: Duration) -> Self {
        AlertingSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            page: SeverityAlerting::default(),
            ticket: SeverityAlerting::default(),
            conditions: default_conditions(period),
            min_events: DEFAULT_MIN_EVENTS,
            no_data_for: DEFAULT_NO_DATA_FOR,
        }
    }
}

impl Window {
    /// The length budgets and alert windows are scaled to.
    pub fn period(&self) -> Duration {
        match self {
            Window::Rolling(d) => *d,
            Window::Calendar { unit: CalendarUnit::Week, .. } => Duration::from_secs(7 * DAY),
            Window::Calendar { unit: CalendarUnit::Month, .. } => Duration::from_secs(30 * DAY),
        }
    }
}

/// Burn-rate windows reported for every SLO (Google SRE workbook).
pub const BURN_WINDOWS: [(&str, u64); 7] =
    [("5m", 300), ("30m", 1800), ("1h", 3600), ("2h", 7200), ("6h", 21600), ("1d", 86400), ("3d", 259200)];

/// A query's `{{.window}}` (Sloth's placeholder) as the bucket width, one minute: the form
/// in which a PromQL SLI is evaluated (and checked).
pub fn with_minute_window(query: &str) -> String {
    query.replace("{{.window}}", "1m").replace("{{ .window }}", "1m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_days_gives_the_workbook_conditions() {
        let conditions = default_conditions(Duration::from_secs(30 * DAY));
        let summary: Vec<(f64, u64, u64)> = conditions
            .iter()
            .map(|c| ((c.burn_rate * 10.0).round() / 10.0, c.long_window.as_secs(), c.short_window.as_secs()))
            .collect();
        assert_eq!(summary, vec![(14.4, 3600, 300), (6.0, 21600, 1800), (3.0, 86400, 7200), (1.0, 259200, 21600)]);
    }

    #[test]
    fn other_periods_scale_the_windows_and_keep_the_rates() {
        let conditions = default_conditions(Duration::from_secs(7 * DAY));
        assert!((conditions[0].burn_rate - 14.4).abs() < 1e-9);
        assert_eq!(conditions[0].long_window.as_secs(), 840);
        assert_eq!(conditions[0].short_window.as_secs(), 70);
    }
}
