//! Alerts posted by other senders, as Alertmanager receives them (`POST /api/v2/alerts`): a
//! Prometheus whose `alerting.alertmanagers` names Vigil sends its firing alerts again every
//! minute with an `endsAt` a few evaluation intervals ahead, and a resolved alert once with
//! `endsAt` at its resolution. Vigil keeps them as a source of alerts like its own rules and
//! SLOs, so routing, grouping, inhibition, silences and notification treat them alike.
//!
//! As Alertmanager: an alert without `startsAt` starts now; one without `endsAt` resolves
//! [`RESOLVE_TIMEOUT_MS`] after it was last posted unless posted again; one whose `endsAt`
//! has passed is resolved.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::engine::{Alerting, Source, SourceKind};
use crate::labels::{Labels, fingerprint, is_valid_label_name};
use crate::state::{Alert, AlertState, RESOLVED_RETENTION_MS, Transition};

/// The source key of posted alerts (one source: Alertmanager knows an alert by its labels
/// alone, whoever posts it).
pub(crate) const KEY: &str = "posted";

/// Alertmanager's default `resolve_timeout`.
pub const RESOLVE_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// Most alerts one request may post.
pub const MAX_ALERTS_PER_REQUEST: usize = 10_000;

/// Most posted alerts kept at once (firing and recently resolved), whatever the senders.
pub const MAX_POSTED_ALERTS: usize = 100_000;

/// An alert as Alertmanager's API takes it (`postableAlert`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostedAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PostedAlertError {
    #[error("alert {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("{0} alerts in one request; at most {MAX_ALERTS_PER_REQUEST}")]
    TooMany(usize),
    #[error("{MAX_POSTED_ALERTS} posted alerts are held already")]
    Full,
}

impl PostedAlert {
    /// Alertmanager's `Alert.Validate`, after dropping empty label values (which Prometheus
    /// and Alertmanager treat as absent).
    fn check(mut self, index: usize) -> Result<PostedAlert, PostedAlertError> {
        let invalid = |reason: String| PostedAlertError::Invalid { index, reason };
        self.labels.retain(|_, v| !v.is_empty());
        if self.labels.is_empty() {
            return Err(invalid("at least one label pair required".into()));
        }
        if let Some(name) = self.labels.keys().chain(self.annotations.keys()).find(|n| !is_valid_label_name(n)) {
            return Err(invalid(format!("invalid name {name:?}")));
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at)
            && end < start
        {
            return Err(invalid("start time must be before end time".into()));
        }
        Ok(self)
    }
}

impl Alerting {
    /// Takes posted alerts: each fires, is updated, or resolves. Returns how many were taken.
    /// The whole request is checked before any alert is taken.
    pub async fn receive_alerts(&self, posted: Vec<PostedAlert>) -> Result<usize, PostedAlertError> {
        if posted.len() > MAX_ALERTS_PER_REQUEST {
            return Err(PostedAlertError::TooMany(posted.len()));
        }
        let posted = posted.into_iter().enumerate().map(|(i, a)| a.check(i)).collect::<Result<Vec<_>, _>>()?;
        let count = posted.len();
        let now = self.now_ms();
        let transitions = {
            let mut state = self.inner.state.lock();
            let held: usize =
                state.sources.values().filter(|s| s.kind == SourceKind::Posted).map(|s| s.alerts.alerts.len()).sum();
            if held + count > MAX_POSTED_ALERTS {
                return Err(PostedAlertError::Full);
            }
            let mut transitions = Vec::new();
            let source = state
                .sources
                .entry(KEY.to_string())
                .or_insert_with(|| Source::new(SourceKind::Posted, Default::default()));
            for alert in posted {
                transitions.extend(take(&mut source.alerts.alerts, alert, now));
            }
            transitions
        };
        metrics::counter!("vigil_alerting_posted_alerts_total").increment(count as u64);
        self.publish(now, transitions, Vec::new()).await;
        Ok(count)
    }

    /// Resolves posted alerts whose time ran out and forgets those resolved long enough ago.
    pub(crate) async fn resolve_expired_posted(&self) {
        let now = self.now_ms();
        let transitions = {
            let mut state = self.inner.state.lock();
            let mut transitions = Vec::new();
            for source in state.sources.values_mut().filter(|s| s.kind == SourceKind::Posted) {
                for alert in source.alerts.alerts.values_mut() {
                    if alert.state == AlertState::Firing && alert.valid_until_ms.is_some_and(|until| until <= now) {
                        alert.state = AlertState::Inactive;
                        alert.resolved_at_ms = alert.valid_until_ms;
                        transitions.push(Transition { alert: alert.clone(), to: "resolved" });
                    }
                }
                source.alerts.alerts.retain(|_, a| a.resolved_at_ms.is_none_or(|at| now - at <= RESOLVED_RETENTION_MS));
            }
            state.sources.retain(|_, s| s.kind != SourceKind::Posted || !s.alerts.alerts.is_empty());
            transitions
        };
        if !transitions.is_empty() {
            self.publish(now, transitions, Vec::new()).await;
        }
    }
}

/// One posted alert into its source's alerts: the transition it makes, if any.
fn take(alerts: &mut BTreeMap<u64, Alert>, posted: PostedAlert, now: i64) -> Option<Transition> {
    let fp = fingerprint(&posted.labels);
    let ends_at = posted.ends_at.map(|t| t.timestamp_millis());
    let resolved = ends_at.is_some_and(|end| end <= now);
    let valid_until = ends_at.unwrap_or(now + RESOLVE_TIMEOUT_MS);
    match alerts.get_mut(&fp) {
        Some(alert) if alert.state == AlertState::Firing => {
            alert.annotations = posted.annotations;
            if !posted.generator_url.is_empty() {
                alert.generator_url = Some(posted.generator_url);
            }
            alert.valid_until_ms = Some(valid_until);
            if resolved {
                alert.state = AlertState::Inactive;
                alert.resolved_at_ms = Some(valid_until);
                return Some(Transition { alert: alert.clone(), to: "resolved" });
            }
            None
        }
        // A resolution of an alert never seen firing (or already resolved) changes nothing.
        _ if resolved => None,
        _ => {
            let start = posted.starts_at.map_or(now, |t| t.timestamp_millis());
            let alert = Alert {
                labels: posted.labels,
                annotations: posted.annotations,
                value: f64::NAN,
                state: AlertState::Firing,
                active_at_ms: start,
                fired_at_ms: Some(start),
                resolved_at_ms: None,
                keep_firing_since_ms: None,
                hold_ms: 0,
                keep_firing_for_ms: 0,
                valid_until_ms: Some(valid_until),
                generator_url: Some(posted.generator_url).filter(|u| !u.is_empty()),
            };
            alerts.insert(fp, alert.clone());
            Some(Transition { alert, to: "firing" })
        }
    }
}
