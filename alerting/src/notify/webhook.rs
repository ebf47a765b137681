//! Webhook receivers: the message as JSON, POSTed.

use std::time::Duration;

use super::{DeliveryError, Message, without_resolved};
use crate::config::WebhookConfig;

pub struct WebhookNotifier {
    url: String,
    pub send_resolved: bool,
    max_alerts: usize,
    timeout: Duration,
    http: reqwest::Client,
}

impl WebhookNotifier {
    pub fn new(config: &WebhookConfig, http: reqwest::Client) -> Self {
        WebhookNotifier {
            url: config.url.value.clone(),
            send_resolved: config.send_resolved,
            max_alerts: config.max_alerts,
            timeout: config.timeout.0,
            http,
        }
    }

    pub fn filter(&self, message: &Message) -> Option<Message> {
        let mut message = without_resolved(message, self.send_resolved)?;
        if self.max_alerts > 0 && message.alerts.len() > self.max_alerts {
            message.truncated_alerts = message.alerts.len() - self.max_alerts;
            message.alerts.truncate(self.max_alerts);
        }
        Some(message)
    }

    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let response = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .json(message)
            .send()
            .await
            .map_err(|e| DeliveryError { message: format!("POST {}: {e}", self.url), retryable: true })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        Err(DeliveryError {
            message: format!("POST {} answered {status}: {body}", self.url),
            // As Alertmanager: 5xx and 429 may pass later; other answers will not.
            retryable: status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
        })
    }
}
