//! Error-budget policy and the deploy gate: an SLO's `policy` freezes its service's deploys
//! while its budget is below `freeze_below` or (with `freeze_while_paging`) while one of its
//! page conditions holds. The gate (`GET /api/v1/gate`, `vigil gate`) and the freeze alert
//! both ask [`freeze_reasons`], so they never disagree.

use serde::Serialize;

use super::evaluate::ConditionStatus;
use super::model::{Severity, SloDefinition};
use super::{SloState, SloStatus};

/// The conditions of `severity` that hold now and have the traffic to alert on (the
/// minimum-events guard): what pages or tickets, and what a policy freezes on.
pub fn burning_conditions<'a>(
    definition: &SloDefinition,
    status: &'a SloStatus,
    severity: Severity,
) -> Vec<&'a ConditionStatus> {
    status
        .conditions
        .iter()
        .filter(|c| {
            c.severity == severity.as_str() && c.active && c.long_window_events >= definition.alerting.min_events
        })
        .collect()
}

fn percent(fraction: f64) -> String {
    let text = format!("{:.2}", fraction * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Why the policy of `definition` freezes deploys now, given one instance's status (empty:
/// it does not). An SLO without a policy, or whose evaluation has no figures yet, never
/// freezes: the gate must not block every deploy of a service whose data is late.
pub fn freeze_reasons(definition: &SloDefinition, status: &SloStatus) -> Vec<String> {
    let Some(policy) = &definition.policy else { return Vec::new() };
    let mut reasons = Vec::new();
    if let (Some(threshold), Some(left)) = (policy.freeze_below, status.error_budget_remaining)
        && left.is_finite()
        && left < threshold
        && !matches!(status.state, SloState::Backfilling | SloState::Error)
    {
        reasons.push(format!(
            "{}: error budget left {} is below the policy's {}",
            status.id(),
            percent(left),
            percent(threshold)
        ));
    }
    if policy.freeze_while_paging {
        let paging = burning_conditions(definition, status, Severity::Page);
        if let Some(fastest) = paging.iter().filter_map(|c| c.long_burn_rate).reduce(f64::max) {
            let windows: Vec<String> = paging.iter().map(|c| format!("{}/{}", c.long_window, c.short_window)).collect();
            reasons.push(format!(
                "{}: paging, burning its budget {:.3}× too fast ({})",
                status.id(),
                fastest,
                windows.join(", ")
            ));
        }
    }
    reasons
}

/// One SLO instance as the gate saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateSlo {
    pub slo: String,
    pub frozen: bool,
    pub reasons: Vec<String>,
    pub error_budget_remaining: Option<f64>,
    pub freeze_below: Option<f64>,
    pub freeze_while_paging: bool,
}

/// The gate's answer for a service: deploys are allowed unless an SLO's policy freezes them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateDecision {
    pub service: String,
    pub allow: bool,
    pub reasons: Vec<String>,
    /// The service's SLOs that have a policy.
    pub slos: Vec<GateSlo>,
}

/// The decision for `service`, or None when it has no SLO at all (a misspelt service must
/// not pass a pipeline's gate silently).
pub fn gate<'a>(
    service: &str,
    definitions: impl IntoIterator<Item = &'a SloDefinition>,
    statuses: &[SloStatus],
) -> Option<GateDecision> {
    let of_service: Vec<&SloDefinition> = definitions.into_iter().filter(|d| d.service == service).collect();
    if of_service.is_empty() {
        return None;
    }
    let mut slos = Vec::new();
    for definition in of_service.iter().filter(|d| d.policy.is_some()) {
        let policy = definition.policy.as_ref();
        for status in statuses.iter().filter(|s| s.name == definition.name) {
            let reasons = freeze_reasons(definition, status);
            slos.push(GateSlo {
                slo: status.id(),
                frozen: !reasons.is_empty(),
                reasons,
                error_budget_remaining: status.error_budget_remaining.filter(|b| b.is_finite()),
                freeze_below: policy.and_then(|p| p.freeze_below),
                freeze_while_paging: policy.is_some_and(|p| p.freeze_while_paging),
            });
        }
    }
    let reasons: Vec<String> = slos.iter().flat_map(|s| s.reasons.iter().cloned()).collect();
    Some(GateDecision { service: service.to_string(), allow: reasons.is_empty(), reasons, slos })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::slo::model::BudgetPolicy;

    fn definition(policy: Option<BudgetPolicy>) -> SloDefinition {
        let yaml = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: pay, service: checkout}\nspec:\n  objective: 99\n  window: 30d\n  sli: {ratio: {bad: e, total: t}}\n";
        let mut definition =
            crate::slo::load_texts(&[("pay.yaml".to_string(), yaml.to_string())], None).unwrap().remove(0);
        definition.policy = policy;
        definition
    }

    fn status(budget: Option<f64>, paging: bool) -> SloStatus {
        SloStatus {
            name: "pay".into(),
            group: BTreeMap::new(),
            service: "checkout".into(),
            description: String::new(),
            labels: BTreeMap::new(),
            objective: 0.99,
            window: "30d".into(),
            sli: Some(0.99),
            good: 990.0,
            total: 1000.0,
            error_budget_remaining: budget,
            burn_rates: BTreeMap::new(),
            time_to_exhaustion_seconds: None,
            state: SloState::Ok,
            backfill_progress: None,
            error: None,
            conditions: vec![ConditionStatus {
                severity: "page",
                burn_rate_threshold: 14.4,
                long_window: "1h".into(),
                short_window: "5m".into(),
                long_burn_rate: Some(20.0),
                short_burn_rate: Some(21.0),
                long_window_events: 500.0,
                active: paging,
            }],
            evaluated_at_ms: 1,
        }
    }

    #[test]
    fn the_gate_flips_where_the_budget_crosses_the_threshold() {
        let policy = BudgetPolicy { freeze_below: Some(0.10), freeze_while_paging: false, receivers: Vec::new() };
        let definitions = [definition(Some(policy))];
        let allow = gate("checkout", &definitions, &[status(Some(0.1000001), false)]).unwrap();
        assert!(allow.allow && allow.reasons.is_empty(), "{allow:?}");
        let deny = gate("checkout", &definitions, &[status(Some(0.0999), false)]).unwrap();
        assert!(!deny.allow, "{deny:?}");
        assert_eq!(deny.reasons, ["pay: error budget left 9.99% is below the policy's 10%"]);
        assert!(gate("billing", &definitions, &[]).is_none(), "an unknown service has no decision");
        assert!(gate("checkout", &definitions, &[status(None, false)]).unwrap().allow, "no figures, no freeze");
    }

    #[test]
    fn paging_freezes_only_with_the_policy_that_says_so() {
        let paging = BudgetPolicy { freeze_below: None, freeze_while_paging: true, receivers: Vec::new() };
        let decision = gate("checkout", &[definition(Some(paging))], &[status(Some(0.9), true)]).unwrap();
        assert_eq!(decision.reasons, ["pay: paging, burning its budget 20.000× too fast (1h/5m)"]);
        assert!(gate("checkout", &[definition(None)], &[status(Some(-3.0), true)]).unwrap().allow, "no policy");
        let quiet = BudgetPolicy { freeze_below: None, freeze_while_paging: true, receivers: Vec::new() };
        let mut idle = status(Some(0.9), true);
        idle.conditions[0].long_window_events = 3.0;
        assert!(
            gate("checkout", &[definition(Some(quiet))], &[idle]).unwrap().allow,
            "below min_events no page, no freeze"
        );
    }
}
