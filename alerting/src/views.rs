//! What the API and the dashboard show of the engine: every alert with its silences,
//! inhibition and receivers, and rule groups with their health, typed in the shapes of
//! Prometheus's `/api/v1/alerts` and `/api/v1/rules`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Alerting, Source, SourceKind};
use crate::evaluate::rule_key;
use crate::inhibit::Muting;
use crate::labels::{Labels, fingerprint_hex};
use crate::notify::rfc3339_ms;
use crate::publish::notify_alerts;
use crate::rules::{RuleKind, RuleQuery};
use crate::state::AlertState;
use crate::template::format_go_float;

impl Alerting {
    /// Every pending, firing and recently resolved alert, with its silences, inhibition and
    /// receivers.
    pub fn alerts(&self) -> Vec<AlertView> {
        let now = self.now_ms();
        let state = self.inner.state.lock();
        let silences = self.inner.silences.lock();
        let all = notify_alerts(&state);
        let muting = Muting::new(&silences, &state.inhibit, &all, now);
        let mut out = Vec::new();
        for (key, source) in &state.sources {
            for alert in source.alerts.alerts.values() {
                let fp = alert.fingerprint();
                let notify = all.iter().find(|a| a.fingerprint == fp);
                let silenced_by = muting.silenced_by(&alert.labels);
                out.push(AlertView {
                    labels: alert.labels.clone(),
                    annotations: alert.annotations.clone(),
                    state: AlertViewState::of(alert.state),
                    active_at: rfc3339_ms(alert.active_at_ms),
                    fired_at: alert.fired_at_ms.map(rfc3339_ms),
                    resolved_at: alert.resolved_at_ms.map(rfc3339_ms),
                    value: format_go_float(alert.value),
                    fingerprint: fingerprint_hex(&alert.labels),
                    source: source.kind,
                    source_key: key.clone(),
                    generator_url: alert.generator_url.clone().unwrap_or_else(|| source.generator_url.clone()),
                    silenced: !silenced_by.is_empty(),
                    silenced_by,
                    inhibited_by: notify.map(|n| muting.inhibited_by(n)).unwrap_or_default(),
                    inhibited: notify.is_some_and(|n| muting.is_inhibited(n)),
                    valid_until: alert.valid_until_ms.map(rfc3339_ms),
                    receivers: notify.map(|n| state.dispatcher.receivers_for(n)).unwrap_or_default(),
                });
            }
        }
        out.sort_by(|a, b| (a.state, &a.labels).cmp(&(b.state, &b.labels)));
        out
    }

    /// The dispatcher's aggregation groups with firing alerts (Alertmanager's
    /// `/api/v2/alerts/groups`): receiver, group labels, and the alerts' fingerprints.
    pub fn alert_groups(&self) -> Vec<AlertGroupView> {
        let now = self.now_ms();
        let state = self.inner.state.lock();
        state
            .dispatcher
            .group_members(now)
            .into_iter()
            .filter(|(_, _, members)| !members.is_empty())
            .map(|(receiver, labels, members)| AlertGroupView {
                receiver,
                labels,
                fingerprints: members.into_iter().map(|fp| format!("{fp:016x}")).collect(),
            })
            .collect()
    }

    /// Rule groups and their health.
    pub fn rule_groups(&self) -> RuleGroupsView {
        let state = self.inner.state.lock();
        let groups = state
            .groups
            .iter()
            .map(|runtime| {
                let group = &runtime.group;
                let rules = group
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| {
                        let source = state.sources.get(&rule_key(group, rule, index));
                        let health = match source {
                            None | Some(Source { last_evaluation_ms: None, .. }) => RuleHealth::Unknown,
                            Some(Source { last_error: Some(_), .. }) => RuleHealth::Err,
                            _ => RuleHealth::Ok,
                        };
                        let alerting = match &rule.kind {
                            RuleKind::Alert { hold, keep_firing_for, annotations, .. } => {
                                let alerts: Vec<RuleAlertView> = source
                                    .map(|s| s.alerts.active().collect::<Vec<_>>())
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|a| RuleAlertView {
                                        labels: a.labels.clone(),
                                        annotations: a.annotations.clone(),
                                        state: a.state,
                                        active_at: rfc3339_ms(a.active_at_ms),
                                        value: format_go_float(a.value),
                                    })
                                    .collect();
                                let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                                    AlertState::Firing
                                } else if alerts.is_empty() {
                                    AlertState::Inactive
                                } else {
                                    AlertState::Pending
                                };
                                Some(AlertingRuleView {
                                    duration: hold.as_secs(),
                                    keep_firing_for: keep_firing_for.as_secs(),
                                    annotations: annotations.clone(),
                                    state,
                                    alerts,
                                })
                            }
                            RuleKind::Record { .. } => None,
                        };
                        RuleView {
                            name: rule.name().to_string(),
                            query: rule.query.text().to_string(),
                            language: if matches!(rule.query, RuleQuery::Sql(_)) {
                                RuleLanguage::Sql
                            } else {
                                RuleLanguage::Promql
                            },
                            labels: rule.labels.clone(),
                            health,
                            last_error: source.and_then(|s| s.last_error.clone()).unwrap_or_default(),
                            last_evaluation: source.and_then(|s| s.last_evaluation_ms).map(rfc3339_ms),
                            kind: if alerting.is_some() { RuleType::Alerting } else { RuleType::Recording },
                            alerting,
                        }
                    })
                    .collect();
                RuleGroupView {
                    name: group.name.clone(),
                    file: group.file.clone(),
                    interval: runtime.interval_ms / 1000,
                    limit: group.limit,
                    evaluation_time: runtime.last_duration_ms as f64 / 1000.0,
                    rules,
                }
            })
            .collect();
        RuleGroupsView { groups }
    }
}

/// An aggregation group of the dispatcher.
#[derive(Clone, Debug)]
pub struct AlertGroupView {
    pub receiver: String,
    pub labels: Labels,
    /// Of the alerts in the group, as [`AlertView::fingerprint`].
    pub fingerprints: Vec<String>,
}

/// One alert for `/api/v1/alerts`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub labels: Labels,
    pub annotations: Labels,
    pub state: AlertViewState,
    pub active_at: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub value: String,
    pub fingerprint: String,
    pub source: SourceKind,
    #[serde(skip)]
    pub source_key: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub silenced: bool,
    pub silenced_by: Vec<String>,
    pub inhibited: bool,
    /// Fingerprints of the firing alerts that inhibit this one.
    pub inhibited_by: Vec<String>,
    /// When a posted alert resolves unless posted again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    pub receivers: Vec<String>,
}

/// An alert's state as the API shows it (in this order: firing first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertViewState {
    Firing,
    Pending,
    /// Inactive again, shown until it leaves the history.
    Resolved,
}

impl AlertViewState {
    fn of(state: AlertState) -> AlertViewState {
        match state {
            AlertState::Firing => AlertViewState::Firing,
            AlertState::Pending => AlertViewState::Pending,
            AlertState::Inactive => AlertViewState::Resolved,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertViewState::Firing => "firing",
            AlertViewState::Pending => "pending",
            AlertViewState::Resolved => "resolved",
        }
    }
}

/// Compares with the state's name as the API writes it.
impl PartialEq<&str> for AlertViewState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Rule groups and their health (`/api/v1/rules`'s `data`).
#[derive(Clone, Debug, Serialize)]
pub struct RuleGroupsView {
    pub groups: Vec<RuleGroupView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroupView {
    pub name: String,
    pub file: String,
    /// Seconds.
    pub interval: i64,
    pub limit: usize,
    /// Seconds the last evaluation took.
    pub evaluation_time: f64,
    pub rules: Vec<RuleView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub name: String,
    pub query: String,
    pub language: RuleLanguage,
    pub labels: BTreeMap<String, String>,
    pub health: RuleHealth,
    pub last_error: String,
    pub last_evaluation: Option<String>,
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// An alerting rule's part.
    #[serde(flatten)]
    pub alerting: Option<AlertingRuleView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertingRuleView {
    /// `for`, in seconds.
    pub duration: u64,
    pub keep_firing_for: u64,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub alerts: Vec<RuleAlertView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleAlertView {
    pub labels: Labels,
    pub annotations: Labels,
    pub state: AlertState,
    pub active_at: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleHealth {
    Ok,
    Err,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleLanguage {
    Promql,
    Sql,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    Alerting,
    Recording,
}
