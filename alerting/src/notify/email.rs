//! Email receivers, through lettre: SMTP in the clear, STARTTLS or TLS, optional auth. The
//! subject is Alertmanager's (`[FIRING:N] ...`); the text and HTML bodies lead with what
//! burns, how fast, the budget left and when it runs out, then link to the dashboard.

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{DeliveryError, Message, MessageAlert, NotificationStatus, without_resolved};
use crate::config::{EmailConfig, SmtpTls};

pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Bound of one whole delivery attempt: a server that stops answering mid-dialogue
    /// must not hold a notification forever.
    timeout: std::time::Duration,
    from: Mailbox,
    to: Vec<Mailbox>,
    pub send_resolved: bool,
}

/// Why an email receiver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("{text:?} is not an email address: {reason}")]
    Address { text: String, reason: String },
    #[error("reading ca_file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("ca_file {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("TLS for {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("no SMTP password for {0}: set password or password_env")]
    NoPassword(String),
}

fn mailbox(text: &str) -> Result<Mailbox, EmailSetupError> {
    text.parse::<Mailbox>().map_err(|e| EmailSetupError::Address { text: text.to_string(), reason: e.to_string() })
}

impl EmailNotifier {
    pub fn new(config: &EmailConfig) -> Result<Self, EmailSetupError> {
        let smtp = &config.smtp;
        let host = smtp.host.as_str();
        let tls = |host: &str| {
            let mut builder = TlsParameters::builder(host.to_string());
            if let Some(path) = &smtp.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|source| EmailSetupError::CaFile { path: path.display().to_string(), source })?;
                let certificate = Certificate::from_pem(&pem).map_err(|e| EmailSetupError::Certificate {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                builder = builder.add_root_certificate(certificate);
            }
            builder.build_rustls().map_err(|e| EmailSetupError::Tls { host: host.to_string(), reason: e.to_string() })
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(smtp.port())
            .timeout(Some(smtp.timeout.0));
        builder = match smtp.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => builder.tls(Tls::Required(tls(host)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(host)?)),
        };
        if let Some(auth) = &smtp.auth {
            let password = auth.password().ok_or_else(|| EmailSetupError::NoPassword(auth.username.clone()))?;
            builder = builder.credentials(Credentials::new(auth.username.clone(), password));
        }
        Ok(EmailNotifier {
            transport: builder.build(),
            timeout: smtp.timeout.0,
            from: mailbox(&config.from)?,
            to: config.to.iter().map(|t| mailbox(t)).collect::<Result<_, _>>()?,
            send_resolved: config.send_resolved,
        })
    }

    pub fn filter(&self, message: &Message) -> Option<Message> {
        without_resolved(message, self.send_resolved)
    }

    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let (text, html) = render(message)
            .map_err(|e| DeliveryError { message: format!("rendering the email: {e}"), retryable: false })?;
        self.send_document(&message.subject(), text, html).await
    }

    /// Sends one mail of a text and an HTML body (an alert notification, a report digest).
    pub async fn send_document(&self, subject: &str, text: String, html: String) -> Result<(), DeliveryError> {
        // A Message-ID of the sender's domain (RFC 5322 §3.6.4): spam filters and mail
        // clients' threading want one; lettre adds `Date`.
        let id = format!("<{}@{}>", uuid::Uuid::new_v4().simple(), self.from.email.domain());
        let mut builder = lettre::Message::builder().from(self.from.clone()).subject(subject).message_id(Some(id));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| DeliveryError { message: format!("building the email: {e}"), retryable: false })?;
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DeliveryError {
                message: format!("SMTP: {e}"),
                // A permanent SMTP refusal (5xx) will not pass later; connection trouble may.
                retryable: !e.is_permanent(),
            }),
            Err(_) => {
                Err(DeliveryError { message: format!("SMTP: no answer within {:?}", self.timeout), retryable: true })
            }
        }
    }
}

/// One alert as the mail shows it.
pub struct AlertView {
    pub title: String,
    pub severity: String,
    pub facts: Vec<(String, String)>,
    pub description: String,
    pub other: Vec<(String, String)>,
    pub labels: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub link: String,
}

/// Annotations shown as the figures of an SLO alert, in this order.
const FACTS: [(&str, &str); 6] = [
    ("objective", "Objective"),
    ("sli", "SLI"),
    ("error_budget_remaining", "Budget left"),
    ("burn_rates", "Burn rate"),
    ("time_to_exhaustion", "Budget exhausted in"),
    (crate::slo_alerts::TOP_CONTRIBUTORS, "Top contributors"),
];

fn human_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_string(),
        |t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn view(alert: &MessageAlert) -> AlertView {
    let a = &alert.annotations;
    let name = alert.labels.get("alertname").cloned().unwrap_or_default();
    let facts = FACTS.iter().filter_map(|(key, label)| a.get(*key).map(|v| (label.to_string(), v.clone()))).collect();
    let known = |k: &str| {
        FACTS.iter().any(|(key, _)| *key == k)
            || matches!(k, "summary" | "description" | "dashboard" | crate::slo_alerts::RESOLVED_SUMMARY)
    };
    let link = a.get("dashboard").cloned().unwrap_or_else(|| alert.generator_url.clone());
    let labels: Vec<String> =
        alert.labels.iter().filter(|(k, _)| k.as_str() != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
    AlertView {
        title: crate::labels::headline(&name, a, alert.status == NotificationStatus::Resolved),
        severity: alert.labels.get("severity").cloned().unwrap_or_default(),
        facts,
        description: a.get("description").cloned().unwrap_or_default(),
        other: a.iter().filter(|(k, _)| !known(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        labels: format!("{name} {}", labels.join(" ")),
        starts_at: human_time(&alert.starts_at),
        ends_at: (alert.status == NotificationStatus::Resolved).then(|| human_time(&alert.ends_at)),
        link,
    }
}

/// What both bodies show.
struct Mail<'a> {
    subject: &'a str,
    firing: &'a [AlertView],
    resolved: &'a [AlertView],
    alerts_url: &'a str,
}

#[derive(Template)]
#[template(path = "email.html")]
struct HtmlBody<'a> {
    mail: &'a Mail<'a>,
}

#[derive(Template)]
#[template(path = "email.txt")]
struct TextBody<'a> {
    mail: &'a Mail<'a>,
}

/// The text and HTML bodies of a message.
pub fn render(message: &Message) -> Result<(String, String), askama::Error> {
    let subject = message.subject();
    let firing: Vec<AlertView> =
        message.alerts.iter().filter(|a| a.status == NotificationStatus::Firing).map(view).collect();
    let resolved: Vec<AlertView> =
        message.alerts.iter().filter(|a| a.status == NotificationStatus::Resolved).map(view).collect();
    let alerts_url = format!("{}/alerts", message.external_url.trim_end_matches('/'));
    let mail = Mail { subject: &subject, firing: &firing, resolved: &resolved, alerts_url: &alerts_url };
    let text = TextBody { mail: &mail }.render()?;
    let html = HtmlBody { mail: &mail }.render()?;
    Ok((text, html))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn message() -> Message {
        let annotations: Labels = [
            ("summary", "checkout is burning its error budget 20× too fast (1h and 5m above 14.4×)"),
            ("objective", "99.9% over 30d"),
            ("sli", "98%"),
            ("error_budget_remaining", "-1900%"),
            ("burn_rates", "5m=20 1h=20"),
            ("time_to_exhaustion", "exhausted"),
            ("dashboard", "http://vigil:9400/slos/checkout"),
            ("runbook", "https://wiki/<checkout>"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let labels: Labels = [("alertname", "SLOBurnRate"), ("slo", "checkout"), ("severity", "page")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Message {
            version: "4",
            group_key: "k".into(),
            truncated_alerts: 0,
            status: NotificationStatus::Firing,
            receiver: "mail".into(),
            group_labels: [("alertname".to_string(), "SLOBurnRate".to_string())].into(),
            common_labels: labels.clone(),
            common_annotations: annotations.clone(),
            external_url: "http://vigil:9400".into(),
            alerts: vec![MessageAlert {
                status: NotificationStatus::Firing,
                labels,
                annotations,
                starts_at: "2026-11-24T21:30:00Z".into(),
                ends_at: "0001-01-01T00:00:00Z".into(),
                generator_url: String::new(),
                fingerprint: "0".into(),
            }],
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and then says nothing, not even the greeting.
        let held = tokio::spawn(async move { listener.accept().await.map(|(socket, _)| socket) });
        let config: EmailConfig = serde_saphyr::from_str(&format!(
            "to: [a@example.com]\nfrom: v@example.com\nsmtp: {{host: 127.0.0.1, port: {port}, tls: none, timeout: 300ms}}\n"
        ))
        .unwrap();
        let notifier = EmailNotifier::new(&config).unwrap();
        let error = notifier.send(&message()).await.unwrap_err();
        assert!(error.retryable);
        assert!(error.message.contains("no answer within"), "{}", error.message);
        drop(held);
    }

    #[test]
    fn bodies_say_what_burns() {
        let (text, html) = render(&message()).unwrap();
        for body in [&text, &html] {
            assert!(body.contains("checkout is burning its error budget 20× too fast"), "{body}");
            assert!(body.contains("99.9% over 30d"));
            assert!(body.contains("-1900%"));
            assert!(body.contains("5m=20 1h=20"));
            assert!(body.contains("http://vigil:9400/slos/checkout"));
            assert!(body.contains("2026-11-24 21:30:00 UTC"));
        }
        assert!(
            html.contains("https://wiki/&#60;checkout&#62;") || html.contains("https://wiki/&lt;checkout&gt;"),
            "escaped: {html}"
        );
        assert!(text.contains("https://wiki/<checkout>"), "text is not escaped");
    }

    #[test]
    fn resolved_mail_says_it_stopped_not_that_it_burns() {
        let mut message = message();
        message.status = NotificationStatus::Resolved;
        let alert = &mut message.alerts[0];
        alert.status = NotificationStatus::Resolved;
        alert.ends_at = "2026-11-24T22:00:00Z".into();
        let (text, html) = render(&message).unwrap();
        for body in [&text, &html] {
            assert!(
                body.contains("Resolved: checkout is burning"),
                "without its own wording, it says resolved: {body}"
            );
        }
        message.alerts[0].annotations.insert(
            crate::slo_alerts::RESOLVED_SUMMARY.into(),
            "checkout no longer burns its error budget too fast".into(),
        );
        let (text, html) = render(&message).unwrap();
        for body in [&text, &html] {
            assert!(body.contains("checkout no longer burns its error budget too fast"), "{body}");
            assert!(!body.contains("is burning"), "a resolved mail never says it burns: {body}");
            assert!(!body.contains("resolved_summary"), "the wording is the title, not an extra annotation");
        }
    }
}
