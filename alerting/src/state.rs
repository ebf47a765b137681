//! The state of the alerts of one rule, advanced exactly as Prometheus advances it
//! (`rules/alerting.go`): inactive → pending → firing → resolved, with `for`,
//! `keep_firing_for`, and resolved alerts kept for 15 minutes so their resolution is
//! notified. An alert that comes back after resolving is a new alert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::{Labels, fingerprint};

/// How long a resolved alert is kept so its resolution reaches receivers.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    /// NaN and infinities are saved as strings (JSON has no number for them): a rule whose
    /// value is NaN, or a posted alert (which has none), must not make the state unreadable.
    #[serde(with = "any_float")]
    pub value: f64,
    pub state: AlertState,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub keep_firing_since_ms: Option<i64>,
    /// The rule's `for` and `keep_firing_for` when the alert was last seen.
    pub hold_ms: i64,
    pub keep_firing_for_ms: i64,
    /// An alert posted by another sender (`POST /api/v2/alerts`) resolves at this time unless
    /// posted again: its `endsAt`, or the resolve timeout after it was last posted.
    #[serde(default)]
    pub valid_until_ms: Option<i64>,
    /// A posted alert's own link back to its sender (a rule's alerts share their source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

impl Alert {
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    /// Firing, or resolved recently enough that receivers must hear of it.
    pub fn is_notifiable(&self) -> bool {
        self.state == AlertState::Firing || (self.state == AlertState::Inactive && self.resolved_at_ms.is_some())
    }
}

/// One element of a rule's result at an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
    pub hold_ms: i64,
    pub keep_firing_for_ms: i64,
}

/// A change of state, recorded in the `alerts` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub alert: Alert,
    /// `pending`, `firing` or `resolved`.
    pub to: &'static str,
}

/// The alerts of one rule, by fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleAlerts {
    pub alerts: BTreeMap<u64, Alert>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("vector contains metrics with the same labelset after applying alert labels: {0}")]
pub struct DuplicateLabels(pub String);

impl RuleAlerts {
    /// Advances every alert to `now_ms` given the rule's result; returns the transitions.
    pub fn advance(&mut self, now_ms: i64, result: Vec<Candidate>) -> Result<Vec<Transition>, DuplicateLabels> {
        let mut seen: BTreeMap<u64, Candidate> = BTreeMap::new();
        for candidate in result {
            let fp = fingerprint(&candidate.labels);
            if seen.contains_key(&fp) {
                return Err(DuplicateLabels(crate::labels::format_labels(&candidate.labels)));
            }
            seen.insert(fp, candidate);
        }
        let mut transitions = Vec::new();
        for (fp, candidate) in &seen {
            match self.alerts.get_mut(fp) {
                Some(alert) if alert.state != AlertState::Inactive => {
                    alert.value = candidate.value;
                    alert.annotations = candidate.annotations.clone();
                    alert.hold_ms = candidate.hold_ms;
                    alert.keep_firing_for_ms = candidate.keep_firing_for_ms;
                }
                _ => {
                    let alert = Alert {
                        labels: candidate.labels.clone(),
                        annotations: candidate.annotations.clone(),
                        value: candidate.value,
                        state: AlertState::Pending,
                        active_at_ms: now_ms,
                        fired_at_ms: None,
                        resolved_at_ms: None,
                        keep_firing_since_ms: None,
                        valid_until_ms: None,
                        generator_url: None,
                        hold_ms: candidate.hold_ms,
                        keep_firing_for_ms: candidate.keep_firing_for_ms,
                    };
                    if alert.hold_ms > 0 {
                        transitions.push(Transition { alert: alert.clone(), to: "pending" });
                    }
                    self.alerts.insert(*fp, alert);
                }
            }
        }
        let mut expired = Vec::new();
        for (fp, alert) in self.alerts.iter_mut() {
            if !seen.contains_key(fp) {
                let mut keep_firing = false;
                if alert.state == AlertState::Firing && alert.keep_firing_for_ms > 0 {
                    let since = *alert.keep_firing_since_ms.get_or_insert(now_ms);
                    keep_firing = now_ms - since < alert.keep_firing_for_ms;
                }
                if alert.state == AlertState::Pending
                    || alert.resolved_at_ms.is_some_and(|at| now_ms - at > RESOLVED_RETENTION_MS)
                {
                    expired.push(*fp);
                }
                if alert.state != AlertState::Inactive && !keep_firing {
                    let was_firing = alert.state == AlertState::Firing;
                    alert.state = AlertState::Inactive;
                    alert.resolved_at_ms = Some(now_ms);
                    if was_firing {
                        transitions.push(Transition { alert: alert.clone(), to: "resolved" });
                    }
                }
                if !keep_firing {
                    continue;
                }
            } else {
                alert.keep_firing_since_ms = None;
            }
            if alert.state == AlertState::Pending && now_ms - alert.active_at_ms >= alert.hold_ms {
                alert.state = AlertState::Firing;
                alert.fired_at_ms = Some(now_ms);
                transitions.push(Transition { alert: alert.clone(), to: "firing" });
            }
        }
        for fp in expired {
            self.alerts.remove(&fp);
        }
        Ok(transitions)
    }

    /// Pending and firing alerts.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.state != AlertState::Inactive)
    }
}

#[cfg(test)]
mod tests {
    //! The cases of Prometheus' alert-generator compliance specification, on a clock that
    //! steps by the evaluation interval.
    use super::*;

    const S: i64 = 1000;

    fn candidate(hold_s: i64, keep_s: i64) -> Candidate {
        Candidate {
            labels: [("alertname".to_string(), "T".to_string()), ("job".to_string(), "a".to_string())].into(),
            annotations: Labels::new(),
            value: 1.0,
            hold_ms: hold_s * S,
            keep_firing_for_ms: keep_s * S,
        }
    }

    #[test]
    fn alerts_whose_value_json_cannot_spell_are_saved_and_read_back() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.5] {
            let mut rule = RuleAlerts::default();
            rule.advance(0, vec![Candidate { value, ..candidate(0, 0) }]).unwrap();
            let saved = serde_json::to_string(&rule).unwrap();
            let read: RuleAlerts = serde_json::from_str(&saved).unwrap();
            let back = read.alerts.values().next().unwrap().value;
            assert!(back == value || (back.is_nan() && value.is_nan()), "{value} saved as {saved}");
        }
        // State saved before: NaN was written as null.
        let old = r#"{"alerts":{"1":{"labels":{},"annotations":{},"value":null,"state":"firing","active_at_ms":0,
            "fired_at_ms":0,"resolved_at_ms":null,"keep_firing_since_ms":null,"hold_ms":0,"keep_firing_for_ms":0}}}"#;
        let read: RuleAlerts = serde_json::from_str(old).unwrap();
        assert!(read.alerts[&1].value.is_nan());
    }

    /// Runs the rule over `present` (was the expression true at each 15 s step?) and returns
    /// the state after each step.
    fn run(hold_s: i64, keep_s: i64, present: &[bool]) -> Vec<(AlertState, Option<i64>)> {
        let mut rule = RuleAlerts::default();
        let mut out = Vec::new();
        for (i, &on) in present.iter().enumerate() {
            let now = i as i64 * 15 * S;
            let result = if on { vec![candidate(hold_s, keep_s)] } else { vec![] };
            rule.advance(now, result).unwrap();
            let alert = rule.alerts.values().next();
            out.push(alert.map_or((AlertState::Inactive, None), |a| (a.state, Some(a.active_at_ms / S))));
        }
        out
    }

    #[test]
    fn for_zero_fires_at_once_and_resolves_when_gone() {
        let states = run(0, 0, &[true, true, false]);
        assert_eq!(states[0], (AlertState::Firing, Some(0)));
        assert_eq!(states[1], (AlertState::Firing, Some(0)));
        assert_eq!(states[2], (AlertState::Inactive, Some(0)), "resolved alerts are kept to be notified");
    }

    #[test]
    fn short_for_pends_then_fires() {
        let states: Vec<_> = run(30, 0, &[true, true, true, true]).into_iter().map(|s| s.0).collect();
        assert_eq!(states, [AlertState::Pending, AlertState::Pending, AlertState::Firing, AlertState::Firing]);
    }

    #[test]
    fn pending_alert_dropped_without_resolution() {
        let mut rule = RuleAlerts::default();
        rule.advance(0, vec![candidate(60, 0)]).unwrap();
        let transitions = rule.advance(15 * S, vec![]).unwrap();
        assert!(rule.alerts.is_empty(), "a pending alert that goes away is forgotten");
        assert!(transitions.is_empty(), "and never reported as resolved");
        // Coming back starts `for` again.
        rule.advance(30 * S, vec![candidate(60, 0)]).unwrap();
        assert_eq!(rule.alerts.values().next().unwrap().active_at_ms, 30 * S);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let states: Vec<_> = run(0, 30, &[true, false, false, false, true]).into_iter().map(|s| s.0).collect();
        // Gone at 15 s: keeps firing until 15 + 30 s have passed (at 45 s it resolves).
        assert_eq!(
            states,
            [AlertState::Firing, AlertState::Firing, AlertState::Firing, AlertState::Inactive, AlertState::Firing]
        );
    }

    #[test]
    fn keep_firing_for_resets_when_the_condition_returns() {
        let mut rule = RuleAlerts::default();
        rule.advance(0, vec![candidate(0, 30)]).unwrap();
        rule.advance(15 * S, vec![]).unwrap();
        rule.advance(30 * S, vec![candidate(0, 30)]).unwrap();
        assert_eq!(rule.alerts.values().next().unwrap().keep_firing_since_ms, None);
        rule.advance(45 * S, vec![]).unwrap();
        rule.advance(60 * S, vec![]).unwrap();
        assert_eq!(rule.alerts.values().next().unwrap().state, AlertState::Firing, "30 s not yet over since 45 s");
    }

    #[test]
    fn refiring_after_resolution_is_a_new_alert() {
        let states = run(0, 0, &[true, false, true]);
        assert_eq!(states[2], (AlertState::Firing, Some(30)), "new activeAt");
        let mut rule = RuleAlerts::default();
        rule.advance(0, vec![candidate(0, 0)]).unwrap();
        rule.advance(15 * S, vec![]).unwrap();
        let t = rule.advance(30 * S, vec![candidate(0, 0)]).unwrap();
        assert_eq!(t.iter().map(|t| t.to).collect::<Vec<_>>(), ["firing"]);
        assert_eq!(rule.alerts.values().next().unwrap().resolved_at_ms, None);
    }

    #[test]
    fn resolved_alerts_expire_after_retention() {
        let mut rule = RuleAlerts::default();
        rule.advance(0, vec![candidate(0, 0)]).unwrap();
        let t = rule.advance(15 * S, vec![]).unwrap();
        assert_eq!(t.iter().map(|t| t.to).collect::<Vec<_>>(), ["resolved"]);
        rule.advance(15 * S + RESOLVED_RETENTION_MS, vec![]).unwrap();
        assert_eq!(rule.alerts.len(), 1);
        rule.advance(16 * S + RESOLVED_RETENTION_MS, vec![]).unwrap();
        assert!(rule.alerts.is_empty());
    }

    #[test]
    fn value_and_annotations_follow_the_latest_result() {
        let mut rule = RuleAlerts::default();
        rule.advance(0, vec![candidate(60, 0)]).unwrap();
        let mut later = candidate(60, 0);
        later.value = 7.0;
        later.annotations.insert("summary".into(), "seven".into());
        rule.advance(15 * S, vec![later]).unwrap();
        let alert = rule.alerts.values().next().unwrap();
        assert_eq!((alert.value, alert.active_at_ms, alert.annotations["summary"].as_str()), (7.0, 0, "seven"));
    }

    #[test]
    fn duplicate_label_sets_are_an_error() {
        let mut rule = RuleAlerts::default();
        assert!(rule.advance(0, vec![candidate(0, 0), candidate(0, 0)]).is_err());
    }
}

/// An `f64` as a JSON number, or as `"NaN"`, `"+Inf"`, `"-Inf"` where JSON has no number.
mod any_float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match *value {
            v if v.is_nan() => serializer.serialize_str("NaN"),
            v if v == f64::INFINITY => serializer.serialize_str("+Inf"),
            v if v == f64::NEG_INFINITY => serializer.serialize_str("-Inf"),
            v => serializer.serialize_f64(v),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Number(f64),
        Text(String),
        // Written as `null` by versions before this one.
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(match Saved::deserialize(deserializer)? {
            Saved::Number(v) => v,
            Saved::Text(t) if t == "+Inf" => f64::INFINITY,
            Saved::Text(t) if t == "-Inf" => f64::NEG_INFINITY,
            Saved::Text(_) | Saved::Null(()) => f64::NAN,
        })
    }
}
