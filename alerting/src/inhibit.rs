//! Inhibition and muting: which alerts a notification leaves out at one moment, because a
//! silence matches them or a firing alert inhibits them (Alertmanager's `inhibit` and
//! `silence` stages). The dispatcher and the alerts API ask the same [`Muting`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::AlertingError;
use crate::config::{InhibitRuleConfig, parse_matchers};
use crate::dispatch::NotifyAlert;
use crate::labels::Labels;
use crate::matchers::{Matcher, all_match};
use crate::silences::Silences;

/// Alerts matching `source` inhibit those matching `target` that agree on `equal`.
#[derive(Clone)]
pub(crate) struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

impl InhibitRule {
    /// A page inhibits the ticket of the same SLO (same name, service and group labels).
    pub(crate) fn page_inhibits_ticket(group_labels: &BTreeSet<String>) -> InhibitRule {
        let mut equal = vec!["alertname".to_string(), "slo".to_string(), "service".to_string()];
        equal.extend(group_labels.iter().cloned());
        InhibitRule {
            source: vec![Matcher::literal("severity", false, "page"), Matcher::literal("slo", true, "")],
            target: vec![Matcher::literal("severity", false, "ticket")],
            equal,
        }
    }

    /// A configured rule.
    pub(crate) fn compile(config: &InhibitRuleConfig) -> Result<InhibitRule, AlertingError> {
        Ok(InhibitRule {
            source: parse_matchers(&config.source_matchers).map_err(|e| AlertingError::Config(e.message))?,
            target: parse_matchers(&config.target_matchers).map_err(|e| AlertingError::Config(e.message))?,
            equal: config.equal.clone(),
        })
    }

    /// Whether an alert labelled `source`, firing, inhibits one labelled `target`.
    pub(crate) fn inhibits(&self, source: &Labels, target: &Labels) -> bool {
        all_match(&self.target, target)
            && all_match(&self.source, source)
            && self.equal.iter().all(|l| source.get(l) == target.get(l))
    }

    /// The firing alerts by which this rule inhibits `target`.
    fn inhibitors<'b>(
        &'b self,
        target: &'b NotifyAlert,
        firing: &'b [&'b NotifyAlert],
    ) -> impl Iterator<Item = &'b NotifyAlert> + 'b {
        let applies = all_match(&self.target, &target.labels);
        firing.iter().copied().filter(move |source| {
            applies
                && source.fingerprint != target.fingerprint
                && all_match(&self.source, &source.labels)
                && self.equal.iter().all(|l| source.labels.get(l) == target.labels.get(l))
        })
    }
}

/// What mutes alerts at one moment: the silences active then, and inhibition by the alerts
/// firing then.
pub(crate) struct Muting<'a> {
    silences: &'a Silences,
    rules: &'a [InhibitRule],
    firing: Vec<&'a NotifyAlert>,
    now: DateTime<Utc>,
}

impl<'a> Muting<'a> {
    /// Muting among `alerts` (every notifiable alert) at `now_ms`.
    pub(crate) fn new(
        silences: &'a Silences,
        rules: &'a [InhibitRule],
        alerts: &'a [NotifyAlert],
        now_ms: i64,
    ) -> Muting<'a> {
        let firing = alerts.iter().filter(|a| !a.is_resolved(now_ms)).collect();
        Muting { silences, rules, firing, now: crate::engine::to_utc(now_ms) }
    }

    /// The silences that match `labels`.
    pub(crate) fn silenced_by(&self, labels: &Labels) -> Vec<String> {
        self.silences.silencing(labels, self.now)
    }

    pub(crate) fn is_inhibited(&self, alert: &NotifyAlert) -> bool {
        self.rules.iter().any(|rule| rule.inhibitors(alert, &self.firing).next().is_some())
    }

    /// The fingerprints of the firing alerts that inhibit `alert` (Alertmanager's
    /// `inhibitedBy`), sorted.
    pub(crate) fn inhibited_by(&self, alert: &NotifyAlert) -> Vec<String> {
        let by: std::collections::BTreeSet<String> = self
            .rules
            .iter()
            .flat_map(|rule| rule.inhibitors(alert, &self.firing))
            .map(|source| format!("{:016x}", source.fingerprint))
            .collect();
        by.into_iter().collect()
    }

    pub(crate) fn is_muted(&self, alert: &NotifyAlert) -> bool {
        !self.silenced_by(&alert.labels).is_empty() || self.is_inhibited(alert)
    }
}
