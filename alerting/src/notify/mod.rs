//! Notifications: the Alertmanager webhook message (version 4) every integration starts
//! from, and delivery with retries. Connection errors and 5xx/429 answers are retried with
//! exponential backoff; other refusals are final. Outcomes are counted per receiver.

pub mod email;
pub mod webhook;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::ReceiverConfig;
use crate::dispatch::{Flush, NotifyAlert};
use crate::labels::{Labels, fingerprint_hex};

/// Whether a notification (or one alert of it) says firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

/// Compares with the status's name as the payload writes it.
impl PartialEq<&str> for NotificationStatus {
    fn eq(&self, other: &&str) -> bool {
        matches!((self, *other), (NotificationStatus::Firing, "firing") | (NotificationStatus::Resolved, "resolved"))
    }
}

/// Alertmanager's webhook payload, field for field.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub version: &'static str,
    pub group_key: String,
    pub truncated_alerts: usize,
    pub status: NotificationStatus,
    pub receiver: String,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<MessageAlert>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageAlert {
    pub status: NotificationStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Go's zero time, which Alertmanager sends as `endsAt` of firing alerts.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ZERO_TIME.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Labels (or annotations) every alert has with the same value.
fn common(alerts: &[NotifyAlert], field: impl Fn(&NotifyAlert) -> &Labels) -> Labels {
    let Some(first) = alerts.first() else { return Labels::new() };
    let mut shared = field(first).clone();
    for alert in &alerts[1..] {
        let other = field(alert);
        shared.retain(|k, v| other.get(k) == Some(v));
    }
    shared
}

impl Message {
    pub fn new(flush: &Flush, external_url: &str, now_ms: i64) -> Message {
        let firing = flush.alerts.iter().any(|a| !a.is_resolved(now_ms));
        Message {
            version: "4",
            group_key: flush.group_key.clone(),
            truncated_alerts: 0,
            status: if firing { NotificationStatus::Firing } else { NotificationStatus::Resolved },
            receiver: flush.receiver.clone(),
            group_labels: flush.group_labels.clone(),
            common_labels: common(&flush.alerts, |a| &a.labels),
            common_annotations: common(&flush.alerts, |a| &a.annotations),
            external_url: external_url.to_string(),
            alerts: flush
                .alerts
                .iter()
                .map(|a| {
                    let resolved = a.is_resolved(now_ms);
                    MessageAlert {
                        status: if resolved { NotificationStatus::Resolved } else { NotificationStatus::Firing },
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at: rfc3339_ms(a.starts_at_ms),
                        ends_at: a.ends_at_ms.filter(|_| resolved).map_or_else(|| ZERO_TIME.to_string(), rfc3339_ms),
                        generator_url: a.generator_url.clone(),
                        fingerprint: fingerprint_hex(&a.labels),
                    }
                })
                .collect(),
        }
    }

    pub fn firing_count(&self) -> usize {
        self.alerts.iter().filter(|a| a.status == NotificationStatus::Firing).count()
    }

    /// Alertmanager's default subject: `[FIRING:2] group values (other common values)`.
    pub fn subject(&self) -> String {
        let status = if self.status == NotificationStatus::Firing {
            format!("FIRING:{}", self.firing_count())
        } else {
            "RESOLVED".into()
        };
        let group: Vec<&str> = self.group_labels.values().map(String::as_str).collect();
        let rest: Vec<&str> = self
            .common_labels
            .iter()
            .filter(|(k, _)| !self.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        let mut parts = vec![format!("[{status}]")];
        parts.extend(group.iter().filter(|v| !v.is_empty()).map(|v| v.to_string()));
        if !rest.is_empty() {
            parts.push(format!("({})", rest.join(" ")));
        }
        parts.join(" ")
    }
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    pub retryable: bool,
}

/// One receiver's integrations, ready to send.
pub struct Notifier {
    pub name: String,
    email: Option<email::EmailNotifier>,
    webhook: Option<webhook::WebhookNotifier>,
}

impl Notifier {
    pub fn new(config: &ReceiverConfig, http: reqwest::Client) -> Result<Notifier, email::EmailSetupError> {
        Ok(Notifier {
            name: config.name.value.clone(),
            email: config.email.as_ref().map(email::EmailNotifier::new).transpose()?,
            webhook: config.webhook.as_ref().map(|w| webhook::WebhookNotifier::new(w, http)),
        })
    }

    /// Alertmanager sends resolved alerts to a receiver when any integration wants them.
    pub fn send_resolved(&self) -> bool {
        self.email.as_ref().is_some_and(|e| e.send_resolved) || self.webhook.as_ref().is_some_and(|w| w.send_resolved)
    }

    /// Mails a document (a report digest) through the receiver's email integration, with
    /// retries; a receiver without one cannot take it.
    pub async fn send_document(
        &self,
        subject: &str,
        (text, html): (String, String),
        max_attempts: u32,
    ) -> Result<(), DeliveryError> {
        let Some(email) = &self.email else {
            return Err(DeliveryError {
                message: format!("receiver {:?} has no email integration to mail a report with", self.name),
                retryable: false,
            });
        };
        retry(&self.name, "email", max_attempts, || email.send_document(subject, text.clone(), html.clone())).await
    }

    /// Delivers to every integration, each with retries; the first failure is returned after
    /// all were tried.
    pub async fn notify(&self, message: &Message, max_attempts: u32) -> Result<(), DeliveryError> {
        let mut outcome = Ok(());
        if let Some(email) = &self.email
            && let Some(message) = email.filter(message)
            && let Err(e) = retry(&self.name, "email", max_attempts, || email.send(&message)).await
        {
            outcome = Err(e);
        }
        if let Some(webhook) = &self.webhook
            && let Some(message) = webhook.filter(message)
            && let Err(e) = retry(&self.name, "webhook", max_attempts, || webhook.send(&message)).await
        {
            outcome = outcome.and(Err(e));
        }
        outcome
    }
}

/// Drops resolved alerts for integrations that do not want them; nothing left, nothing sent.
fn without_resolved(message: &Message, send_resolved: bool) -> Option<Message> {
    if send_resolved {
        return Some(message.clone());
    }
    let mut message = message.clone();
    message.alerts.retain(|a| a.status == NotificationStatus::Firing);
    (!message.alerts.is_empty()).then_some(message)
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

async fn retry<F, Fut>(
    receiver: &str,
    integration: &'static str,
    max_attempts: u32,
    mut send: F,
) -> Result<(), DeliveryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DeliveryError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let started = std::time::Instant::now();
        let result = send().await;
        metrics::histogram!("vigil_notification_latency_seconds", "integration" => integration)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                metrics::counter!("vigil_notifications_total", "receiver" => receiver.to_string(), "integration" => integration).increment(1);
                return Ok(());
            }
            Err(error) if error.retryable && attempt < max_attempts => {
                tracing::debug!(receiver, integration, attempt, %error, "notification failed; retrying");
                metrics::counter!("vigil_notification_retries_total", "receiver" => receiver.to_string(), "integration" => integration).increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
            Err(error) => {
                tracing::warn!(receiver, integration, attempts = attempt, %error, "notification failed");
                metrics::counter!("vigil_notifications_failed_total", "receiver" => receiver.to_string(), "integration" => integration).increment(1);
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, slo: &str, ends: Option<i64>) -> NotifyAlert {
        let labels: Labels = [("alertname", name), ("slo", slo), ("severity", "page")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NotifyAlert {
            fingerprint: crate::labels::fingerprint(&labels),
            labels,
            annotations: [("summary".to_string(), format!("{slo} burns"))].into(),
            starts_at_ms: 1_800_000_000_000,
            ends_at_ms: ends,
            generator_url: "http://vigil/slos/x".into(),
            receivers: vec![],
        }
    }

    #[test]
    fn message_has_every_alertmanager_field() {
        let flush = Flush::for_test(
            r#"{}:{alertname="SLOBurnRate"}"#,
            "hook",
            [("alertname".to_string(), "SLOBurnRate".to_string())].into(),
            vec![alert("SLOBurnRate", "a", None), alert("SLOBurnRate", "b", Some(1_800_000_060_000))],
        );
        let message = Message::new(&flush, "http://vigil:9400", 1_800_000_120_000);
        let json = serde_json::to_value(&message).unwrap();
        for key in [
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["commonLabels"], serde_json::json!({"alertname": "SLOBurnRate", "severity": "page"}));
        assert_eq!(json["commonAnnotations"], serde_json::json!({}));
        let first = &json["alerts"][0];
        assert_eq!(first["endsAt"], ZERO_TIME);
        assert_eq!(first["startsAt"], "2027-01-15T08:00:00Z");
        assert_eq!(first["fingerprint"].as_str().unwrap().len(), 16);
        assert_eq!(json["alerts"][1]["status"], "resolved");
        assert_eq!(json["alerts"][1]["endsAt"], "2027-01-15T08:01:00Z");
        assert_eq!(message.subject(), "[FIRING:1] SLOBurnRate (page)");
    }

    #[test]
    fn resolved_only_message() {
        let flush = Flush::for_test("k", "r", Labels::new(), vec![alert("X", "a", Some(1))]);
        let message = Message::new(&flush, "", 10);
        assert_eq!(message.status, "resolved");
        assert_eq!(message.subject(), "[RESOLVED] (X page a)");
        assert!(without_resolved(&message, false).is_none());
    }
}
