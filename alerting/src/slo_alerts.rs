//! The alerts of an SLO, from its latest status: burn-rate alerts per severity (the SRE
//! workbook's multiwindow conditions, behind the minimum-traffic guard), a budget-exhausted
//! alert and a no-data alert. Their annotations carry what an on-call engineer needs at a
//! glance: objective, SLI, budget left, burn rate per window, time to exhaustion, a link.

use std::collections::BTreeMap;

use vigil_query::slo::model::{BURN_WINDOWS, Severity, SeverityAlerting, SloDefinition};
use vigil_query::slo::policy::{burning_conditions, freeze_reasons};
use vigil_query::slo::{SloState, SloStatus};

use crate::labels::Labels;
use crate::state::Candidate;
use crate::template::{TemplateData, expand, format_g, humanize_duration};

pub const EXHAUSTED_ALERT: &str = "SLOErrorBudgetExhausted";
pub const NO_DATA_ALERT: &str = "SLONoData";
/// Fires while an SLO's error-budget policy freezes its service's deploys (severity `info`):
/// the freeze's start and end show on the SLO page and can notify.
pub const FREEZE_ALERT: &str = "SLODeployFreeze";
/// The annotation naming the label values that carry a burn (see `slo::attribution`).
pub const TOP_CONTRIBUTORS: &str = "top_contributors";
/// The annotation saying what a resolved alert's summary would (see [`crate::labels::headline`]).
pub const RESOLVED_SUMMARY: &str = "resolved_summary";

/// One SLO alert and where it goes.
pub struct SloCandidate {
    pub candidate: Candidate,
    /// Receivers the SLO names for this severity (empty: the routing tree decides).
    pub receivers: Vec<String>,
}

/// A fraction as a percentage with up to four significant digits (0.97 → 97%).
pub(crate) fn percent(fraction: f64) -> String {
    format!("{}%", format_g(fraction * 100.0, 4))
}

/// The alerts `statuses` (the instances of one SLO) call for now.
/// `contributors` is the attribution of the SLO's bad events (see `slo::attribution`), added
/// to its burn-rate alerts as `top_contributors`.
pub fn candidates(
    definition: &SloDefinition,
    statuses: &[&SloStatus],
    external_url: &str,
    contributors: Option<&str>,
) -> Vec<SloCandidate> {
    let alerting = &definition.alerting;
    let mut out = Vec::new();
    for status in statuses {
        let mut base: Labels = definition.labels.clone();
        base.extend(status.group.clone());
        base.extend(alerting.labels.clone());
        base.insert("slo".into(), definition.name.clone());
        base.insert("service".into(), definition.service.clone());
        let facts = facts(definition, status, external_url);
        let severity_spec = |severity: Severity| match severity {
            Severity::Page => &alerting.page,
            Severity::Ticket => &alerting.ticket,
        };
        // One alert: its name, severity label, the severity's (or the policy's) labels,
        // annotations and receivers, value, hold, and its firing and resolved summaries.
        let mut push = |alertname: &str,
                        (severity, spec): (&str, &SeverityAlerting),
                        value: f64,
                        hold_ms: i64,
                        (summary, resolved): (String, String),
                        top_contributors: Option<&str>| {
            let mut labels = base.clone();
            labels.insert("alertname".into(), alertname.to_string());
            labels.insert("severity".into(), severity.into());
            labels.extend(spec.labels.clone());
            let mut annotations = facts.clone();
            annotations.insert("summary".into(), summary);
            annotations.insert(RESOLVED_SUMMARY.into(), resolved);
            if let Some(top) = top_contributors {
                annotations.insert(TOP_CONTRIBUTORS.into(), top.to_string());
            }
            annotations.insert("description".into(), describe(&facts));
            let data = TemplateData { labels: &labels, value, external_url };
            for (name, text) in alerting.annotations.iter().chain(&spec.annotations) {
                annotations.insert(name.clone(), expand(text, &data));
            }
            out.push(SloCandidate {
                candidate: Candidate { labels, annotations, value, hold_ms, keep_firing_for_ms: 0 },
                receivers: spec.receivers.clone(),
            });
        };
        let name = definition.display_name.as_deref().unwrap_or(&definition.name);
        for severity in [Severity::Page, Severity::Ticket] {
            if severity_spec(severity).disabled {
                continue;
            }
            let burning = burning_conditions(definition, status, severity);
            if let Some(fastest) = burning.iter().filter_map(|c| c.long_burn_rate).reduce(f64::max) {
                let windows: Vec<String> = burning
                    .iter()
                    .map(|c| {
                        format!(
                            "{} and {} above {}×",
                            c.long_window,
                            c.short_window,
                            format_g(c.burn_rate_threshold, 3)
                        )
                    })
                    .collect();
                let summary = format!(
                    "{name} is burning its error budget {}× too fast ({})",
                    format_g(fastest, 3),
                    windows.join("; ")
                );
                let resolved = format!(
                    "{name} no longer burns its error budget too fast (it burned {}× when this fired)",
                    format_g(fastest, 3)
                );
                let spec = (severity.as_str(), severity_spec(severity));
                push(&alerting.name, spec, fastest, 0, (summary, resolved), contributors);
            }
        }
        if status.state == SloState::Exhausted && !alerting.ticket.disabled {
            let remaining = status.error_budget_remaining.unwrap_or(0.0);
            push(
                EXHAUSTED_ALERT,
                ("ticket", &alerting.ticket),
                remaining,
                0,
                (
                    format!("{name} has exhausted its error budget ({} left)", percent(remaining)),
                    format!("{name} has error budget left again"),
                ),
                None,
            );
        }
        if status.state == SloState::NoData && !alerting.no_data_for.is_zero() && !alerting.ticket.disabled {
            let hold = alerting.no_data_for.as_millis() as i64;
            push(
                NO_DATA_ALERT,
                ("ticket", &alerting.ticket),
                0.0,
                hold,
                (format!("{name} has no data: its SLI cannot be computed"), format!("{name} has data again")),
                None,
            );
        }
        if let Some(policy) = &definition.policy {
            let reasons = freeze_reasons(definition, status);
            if !reasons.is_empty() {
                let spec = SeverityAlerting { receivers: policy.receivers.clone(), ..SeverityAlerting::default() };
                push(
                    FREEZE_ALERT,
                    ("info", &spec),
                    status.error_budget_remaining.unwrap_or(f64::NAN),
                    0,
                    (
                        format!(
                            "deploys of {} are frozen by {name}'s error-budget policy: {}",
                            definition.service,
                            reasons.join("; ")
                        ),
                        format!(
                            "deploys of {} are no longer frozen by {name}'s error-budget policy",
                            definition.service
                        ),
                    ),
                    None,
                );
            }
        }
    }
    out
}

/// The figures of an SLO status as annotations.
fn facts(definition: &SloDefinition, status: &SloStatus, external_url: &str) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    facts.insert("objective".into(), format!("{} over {}", percent(definition.objective), status.window));
    if let Some(sli) = status.sli {
        facts.insert("sli".into(), percent(sli));
    }
    if let Some(remaining) = status.error_budget_remaining {
        facts.insert("error_budget_remaining".into(), percent(remaining));
    }
    let rates: Vec<String> = BURN_WINDOWS
        .iter()
        .filter_map(|(window, _)| {
            status.burn_rates.get(*window).copied().flatten().map(|rate| format!("{window}={}", format_g(rate, 3)))
        })
        .collect();
    if !rates.is_empty() {
        facts.insert("burn_rates".into(), rates.join(" "));
    }
    match status.time_to_exhaustion_seconds {
        Some(seconds) if seconds <= 0.0 => {
            facts.insert("time_to_exhaustion".into(), "exhausted".into());
        }
        Some(seconds) => {
            facts.insert("time_to_exhaustion".into(), humanize_duration(seconds.round()));
        }
        None => {}
    }
    let base = external_url.trim_end_matches('/');
    facts.insert("dashboard".into(), format!("{base}/slos/{}", definition.name));
    facts
}

fn describe(facts: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<String> = [
        ("Objective", "objective"),
        ("SLI", "sli"),
        ("budget left", "error_budget_remaining"),
        ("burn rates", "burn_rates"),
    ]
    .iter()
    .filter_map(|(label, key)| facts.get(*key).map(|value| format!("{label} {value}")))
    .collect();
    match facts.get("time_to_exhaustion").map(String::as_str) {
        Some("exhausted") => parts.push("budget exhausted".into()),
        Some(left) => parts.push(format!("budget exhausted in {left}")),
        None => {}
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_query::slo::evaluate::ConditionStatus;
    use vigil_query::slo::model::*;

    fn definition() -> SloDefinition {
        SloDefinition {
            name: "checkout-availability".into(),
            display_name: None,
            service: "checkout".into(),
            description: String::new(),
            labels: [("team".to_string(), "payments".to_string())].into(),
            objective: 0.999,
            window: Window::Rolling(Duration::from_secs(30 * 86400)),
            budgeting: Budgeting::Occurrences,
            sli: Sli::Ratio { good: None, bad: Some("errors".into()), total: "requests".into() },
            group_by: vec![],
            alerting: AlertingSpec::new("SLOBurnRate", Duration::from_secs(30 * 86400)),
            policy: None,
            source: Source::default(),
        }
    }

    #[test]
    fn burn_rate_alerts_name_their_top_contributors() {
        let s = status(SloState::Exhausted, true, 1000.0);
        let alerts = candidates(&definition(), &[&s], "", Some("route=/pay 90% (of 30 bad events)"));
        let burn = alerts.iter().find(|a| a.candidate.labels["alertname"] == "SLOBurnRate").unwrap();
        assert_eq!(burn.candidate.annotations[TOP_CONTRIBUTORS], "route=/pay 90% (of 30 bad events)");
        let exhausted = alerts.iter().find(|a| a.candidate.labels["alertname"] == EXHAUSTED_ALERT).unwrap();
        assert!(!exhausted.candidate.annotations.contains_key(TOP_CONTRIBUTORS), "only burn-rate alerts carry it");
    }

    #[test]
    fn a_policy_freeze_is_an_info_alert_to_the_policys_receivers() {
        let mut definition = definition();
        definition.policy = Some(vigil_query::slo::model::BudgetPolicy {
            freeze_below: Some(0.25),
            freeze_while_paging: false,
            receivers: vec!["release-bot".into()],
        });
        let s = status(SloState::Burning, true, 1000.0);
        let alerts = candidates(&definition, &[&s], "http://vigil:9400/", None);
        let freeze = alerts.iter().find(|a| a.candidate.labels["alertname"] == FREEZE_ALERT).expect("a freeze alert");
        assert_eq!(freeze.candidate.labels["severity"], "info");
        assert_eq!(freeze.receivers, ["release-bot"]);
        assert_eq!(
            freeze.candidate.annotations["summary"],
            "deploys of checkout are frozen by checkout-availability's error-budget policy: checkout-availability: error budget left -1900% is below the policy's 25%"
        );
        assert!(freeze.candidate.annotations[RESOLVED_SUMMARY].contains("no longer frozen"));
        let mut healthy = status(SloState::Ok, false, 1000.0);
        healthy.error_budget_remaining = Some(0.5);
        assert!(
            candidates(&definition, &[&healthy], "", None)
                .iter()
                .all(|a| a.candidate.labels["alertname"] != FREEZE_ALERT)
        );
    }

    fn status(state: SloState, page_active: bool, events: f64) -> SloStatus {
        SloStatus {
            name: "checkout-availability".into(),
            group: BTreeMap::new(),
            service: "checkout".into(),
            description: String::new(),
            labels: BTreeMap::new(),
            objective: 0.999,
            window: "30d".into(),
            sli: Some(0.98),
            good: 980.0,
            total: 1000.0,
            error_budget_remaining: Some(-19.0),
            burn_rates: [("1h".to_string(), Some(20.0)), ("5m".to_string(), Some(20.0))].into(),
            time_to_exhaustion_seconds: Some(0.0),
            state,
            backfill_progress: None,
            error: None,
            conditions: vec![ConditionStatus {
                severity: "page",
                burn_rate_threshold: 14.4,
                long_window: "1h".into(),
                short_window: "5m".into(),
                long_burn_rate: Some(20.0),
                short_burn_rate: Some(20.0),
                long_window_events: events,
                active: page_active,
            }],
            evaluated_at_ms: 0,
        }
    }

    #[test]
    fn fast_burn_pages_with_the_figures() {
        let s = status(SloState::Burning, true, 1000.0);
        let alerts = candidates(&definition(), &[&s], "http://vigil:9400/", None);
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0].candidate;
        assert_eq!(alert.labels["alertname"], "SLOBurnRate");
        assert_eq!(alert.labels["severity"], "page");
        assert_eq!(alert.labels["slo"], "checkout-availability");
        assert_eq!(alert.labels["team"], "payments");
        assert_eq!(alert.value, 20.0);
        assert_eq!(alert.annotations["objective"], "99.9% over 30d");
        assert_eq!(alert.annotations["sli"], "98%");
        assert_eq!(alert.annotations["burn_rates"], "5m=20 1h=20");
        assert_eq!(alert.annotations["dashboard"], "http://vigil:9400/slos/checkout-availability");
        assert!(
            alert.annotations["summary"].contains("20× too fast (1h and 5m above 14.4×)"),
            "{}",
            alert.annotations["summary"]
        );
        assert_eq!(
            alert.annotations[RESOLVED_SUMMARY],
            "checkout-availability no longer burns its error budget too fast (it burned 20× when this fired)",
            "a resolved alert has its own wording"
        );
    }

    #[test]
    fn too_little_traffic_pages_nobody() {
        let s = status(SloState::Burning, true, 2.0);
        assert!(candidates(&definition(), &[&s], "", None).is_empty());
    }

    #[test]
    fn exhausted_and_no_data_alerts() {
        let s = status(SloState::Exhausted, false, 1000.0);
        let alerts = candidates(&definition(), &[&s], "", None);
        assert_eq!(alerts[0].candidate.labels["alertname"], EXHAUSTED_ALERT);
        assert_eq!(alerts[0].candidate.labels["severity"], "ticket");
        let mut s = status(SloState::NoData, false, 0.0);
        s.sli = None;
        let alerts = candidates(&definition(), &[&s], "", None);
        assert_eq!(alerts[0].candidate.labels["alertname"], NO_DATA_ALERT);
        assert_eq!(alerts[0].candidate.hold_ms, 15 * 60 * 1000);
    }

    #[test]
    fn disabled_severities_and_named_receivers() {
        let mut d = definition();
        d.alerting.page.receivers = vec!["pager".into()];
        let s = status(SloState::Burning, true, 1000.0);
        assert_eq!(candidates(&d, &[&s], "", None)[0].receivers, ["pager"]);
        d.alerting.page.disabled = true;
        assert!(candidates(&d, &[&s], "", None).is_empty());
    }
}
