//! Receivers, the routing tree and inhibition rules as the config file writes them
//! (Alertmanager's shapes, with `email:`/`webhook:` per receiver), and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use vigil_query::PromDuration;

use crate::matchers::Matcher;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub email: Option<EmailConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub to: Vec<String>,
    pub from: String,
    pub smtp: SmtpConfig,
    /// Also mail when alerts resolve (Vigil's default; Alertmanager's is false for email).
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub auth: Option<SmtpAuth>,
    /// A whole delivery attempt (connect, TLS, auth, send) must finish within this.
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
    /// A PEM file of CA certificates to trust besides the system's (a private mail relay).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl SmtpConfig {
    /// 25 in the clear, 587 for STARTTLS, 465 for TLS.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// The environment variable holding the password (kept out of the file).
    #[serde(default)]
    pub password_env: Option<String>,
}

impl SmtpAuth {
    pub fn password(&self) -> Option<String> {
        self.password.clone().or_else(|| self.password_env.as_ref().and_then(|name| std::env::var(name).ok()))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Spanned<String>,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// At most this many alerts per message (0: all); the rest are counted in `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> PromDuration {
    PromDuration(Duration::from_secs(10))
}

/// A node of the routing tree. Unset options are inherited from the parent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: Option<Spanned<String>>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub group_wait: Option<PromDuration>,
    #[serde(default)]
    pub group_interval: Option<PromDuration>,
    #[serde(default)]
    pub repeat_interval: Option<PromDuration>,
    #[serde(default)]
    pub matchers: Vec<Spanned<String>>,
    /// Alertmanager's older equality and regex maps.
    #[serde(default, rename = "match")]
    pub match_equal: BTreeMap<String, String>,
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    #[serde(default)]
    pub source_matchers: Vec<Spanned<String>>,
    #[serde(default)]
    pub target_matchers: Vec<Spanned<String>>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A config mistake with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub location: Location,
    pub message: String,
}

pub fn issue(location: Location, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue { location, message: message.into() }
}

pub fn parse_matchers(texts: &[Spanned<String>]) -> Result<Vec<Matcher>, ConfigIssue> {
    texts.iter().map(|t| Matcher::parse(&t.value).map_err(|e| issue(t.referenced, e.to_string()))).collect()
}

/// Checks receivers, route and inhibit rules together: names unique, every receiver a route
/// names defined, matchers valid.
pub fn check(
    receivers: &[ReceiverConfig],
    route: Option<&RouteConfig>,
    inhibit: &[InhibitRuleConfig],
) -> Result<(), ConfigIssue> {
    let mut names = std::collections::BTreeSet::new();
    for receiver in receivers {
        let name = &receiver.name;
        if name.value.is_empty() {
            return Err(issue(name.referenced, "receiver name must not be empty"));
        }
        if !names.insert(name.value.as_str()) {
            return Err(issue(name.referenced, format!("duplicate receiver {:?}", name.value)));
        }
        if receiver.email.is_none() && receiver.webhook.is_none() {
            return Err(issue(name.referenced, format!("receiver {:?} has neither email: nor webhook:", name.value)));
        }
        if let Some(webhook) = &receiver.webhook {
            match reqwest::Url::parse(&webhook.url.value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return Err(issue(
                        webhook.url.referenced,
                        format!("webhook url {:?} is not an http(s) URL", webhook.url.value),
                    ));
                }
            }
        }
        if let Some(email) = &receiver.email {
            for address in email.to.iter().chain(std::iter::once(&email.from)) {
                if address.parse::<lettre::Address>().is_err() && address.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(issue(
                        name.referenced,
                        format!("receiver {:?}: {address:?} is not an email address", name.value),
                    ));
                }
            }
            if email.to.is_empty() {
                return Err(issue(
                    name.referenced,
                    format!("receiver {:?}: email needs at least one address in to:", name.value),
                ));
            }
        }
    }
    if let Some(route) = route {
        if route.receiver.is_none() {
            return Err(issue(Location::UNKNOWN, "route: the root route needs a receiver"));
        }
        if !route.matchers.is_empty() || !route.match_equal.is_empty() || !route.match_re.is_empty() {
            let at = route.matchers.first().map_or(Location::UNKNOWN, |m| m.referenced);
            return Err(issue(at, "route: the root route matches every alert and takes no matchers"));
        }
        check_route(route, &names)?;
    }
    for rule in inhibit {
        parse_matchers(&rule.source_matchers)?;
        parse_matchers(&rule.target_matchers)?;
    }
    Ok(())
}

fn check_route(route: &RouteConfig, receivers: &std::collections::BTreeSet<&str>) -> Result<(), ConfigIssue> {
    if let Some(receiver) = &route.receiver
        && !receivers.contains(receiver.value.as_str())
    {
        let hint = strsim_closest(&receiver.value, receivers.iter().copied());
        return Err(issue(receiver.referenced, format!("unknown receiver {:?}{hint}", receiver.value)));
    }
    parse_matchers(&route.matchers)?;
    for (name, pattern) in &route.match_re {
        Matcher::new(name.clone(), crate::matchers::MatchOp::Regex, pattern.clone())
            .map_err(|e| issue(Location::UNKNOWN, e.to_string()))?;
    }
    for child in &route.routes {
        check_route(child, receivers)?;
    }
    Ok(())
}

fn strsim_closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(|| " (define it under receivers:)".to_string(), |(_, c)| format!(" (did you mean {c:?}?)"))
}
