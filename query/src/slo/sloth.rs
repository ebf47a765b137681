//! Sloth: plain `version: prometheus/v1` files, the `sloth.slok.dev/v1`
//! `PrometheusServiceLevel` resource, and `AlertWindows` (custom multiwindow alerting).
//! Sloth SLOs are named `{service}-{slo}` and use a 30-day window unless AlertWindows say
//! otherwise.

// Every field the specification defines is accepted (unknown ones are errors), also those
// Vigil does not act on.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    AlertingSpec, Budgeting, BurnCondition, PromQlKind, Severity, SeverityAlerting, Sli, SloDefinition, Source, Window,
};
use super::yaml::{self, LoadError, Place};

/// Plain Sloth spec (snake_case fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainSpec {
    pub version: String,
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub slos: Vec<Slo>,
}

/// One SLO, as the plain spec writes it (snake_case) and as the `PrometheusServiceLevel`
/// resource does (camelCase): the same fields, so one type takes both spellings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub name: String,
    pub objective: Spanned<f64>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub sli: SloSli,
    #[serde(default)]
    pub alerting: Option<SloAlerting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSli {
    #[serde(default)]
    pub events: Option<Events>,
    #[serde(default)]
    pub raw: Option<Raw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    #[serde(alias = "errorQuery")]
    pub error_query: Spanned<String>,
    #[serde(alias = "totalQuery")]
    pub total_query: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(alias = "errorRatioQuery")]
    pub error_ratio_query: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SloAlerting {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, alias = "pageAlert")]
    pub page_alert: Option<AlertSeverity>,
    #[serde(default, alias = "ticketAlert")]
    pub ticket_alert: Option<AlertSeverity>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlertSeverity {
    #[serde(default)]
    pub disable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `apiVersion: sloth.slok.dev/v1`, `kind: PrometheusServiceLevel` (camelCase fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLevel {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: K8sMetadata,
    pub spec: ServiceLevelSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sMetadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLevelSpec {
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub slos: Vec<Slo>,
}

/// `kind: AlertWindows`: the SLO period and the multiwindow conditions for it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertWindows {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    pub spec: AlertWindowsSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertWindowsSpec {
    #[serde(rename = "sloPeriod")]
    pub slo_period: Spanned<String>,
    pub page: QuickSlow,
    pub ticket: QuickSlow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickSlow {
    pub quick: WindowPair,
    pub slow: WindowPair,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowPair {
    #[serde(rename = "errorBudgetPercent")]
    pub error_budget_percent: f64,
    #[serde(rename = "shortWindow")]
    pub short_window: Spanned<String>,
    #[serde(rename = "longWindow")]
    pub long_window: Spanned<String>,
}

/// The period and conditions of an AlertWindows document.
pub fn alert_windows(place: &Place, windows: &AlertWindows) -> Result<(Duration, Vec<BurnCondition>), LoadError> {
    let period = yaml::duration(place, &windows.spec.slo_period)?;
    let mut conditions = Vec::new();
    for (severity, pair) in [
        (Severity::Page, &windows.spec.page.quick),
        (Severity::Page, &windows.spec.page.slow),
        (Severity::Ticket, &windows.spec.ticket.quick),
        (Severity::Ticket, &windows.spec.ticket.slow),
    ] {
        let long_window = yaml::duration(place, &pair.long_window)?;
        conditions.push(BurnCondition {
            severity,
            burn_rate: pair.error_budget_percent / 100.0 * period.as_secs_f64() / long_window.as_secs_f64(),
            long_window,
            short_window: yaml::duration(place, &pair.short_window)?,
        });
    }
    Ok((period, conditions))
}

const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * 86400);

fn severity(spec: Option<&AlertSeverity>) -> SeverityAlerting {
    let spec = spec.cloned().unwrap_or_default();
    SeverityAlerting {
        disabled: spec.disable,
        receivers: Vec::new(),
        labels: spec.labels,
        annotations: spec.annotations,
    }
}

/// One Sloth SLO of `service`, its labels over `base_labels`.
fn build(
    place: &Place,
    text: &str,
    service: &str,
    base_labels: &BTreeMap<String, String>,
    slo: &Slo,
) -> Result<SloDefinition, LoadError> {
    let objective = yaml::percent(place, &slo.objective)?;
    let sli = match (&slo.sli.events, &slo.sli.raw) {
        (Some(events), None) => Sli::PromQl {
            good: None,
            bad: Some(yaml::promql(place, &events.error_query)?),
            total: yaml::promql(place, &events.total_query)?,
            kind: PromQlKind::Rate,
        },
        (None, Some(raw)) => Sli::PromQl {
            good: None,
            bad: Some(yaml::promql(place, &raw.error_ratio_query)?),
            total: "vector(1)".into(),
            kind: PromQlKind::ErrorRatio,
        },
        _ => {
            return Err(place.at(
                &slo.objective,
                format!("SLO {:?} needs exactly one of sli.events and sli.raw", slo.name),
                None,
            ));
        }
    };
    let spec = slo.alerting.as_ref();
    let name = spec.and_then(|a| a.name.clone()).unwrap_or_else(|| "SLOBurnRate".into());
    let mut alerting = AlertingSpec::new(name, DEFAULT_PERIOD);
    if let Some(spec) = spec {
        alerting.labels = spec.labels.clone();
        alerting.annotations = spec.annotations.clone();
    }
    alerting.page = severity(spec.and_then(|a| a.page_alert.as_ref()));
    alerting.ticket = severity(spec.and_then(|a| a.ticket_alert.as_ref()));
    let mut labels = base_labels.clone();
    labels.extend(slo.labels.clone());
    Ok(SloDefinition {
        name: format!("{}-{}", service, slo.name),
        display_name: None,
        service: service.to_string(),
        description: slo.description.clone(),
        labels,
        objective,
        window: Window::Rolling(DEFAULT_PERIOD),
        budgeting: Budgeting::Occurrences,
        sli,
        group_by: Vec::new(),
        policy: None,
        alerting,
        source: Source { file: place.file.to_string(), line: place.line_offset + 1, text: text.to_string() },
    })
}

pub fn convert_plain(place: &Place, text: &str, spec: &PlainSpec) -> Result<Vec<SloDefinition>, LoadError> {
    spec.slos.iter().map(|slo| build(place, text, &spec.service, &spec.labels, slo)).collect()
}

/// A `PrometheusServiceLevel`: its metadata labels, then its spec's, under each SLO's.
pub fn convert_crd(place: &Place, text: &str, level: &ServiceLevel) -> Result<Vec<SloDefinition>, LoadError> {
    let mut labels = level.metadata.labels.clone();
    labels.extend(level.spec.labels.clone());
    level.spec.slos.iter().map(|slo| build(place, text, &level.spec.service, &labels, slo)).collect()
}

/// Applies an AlertWindows period and conditions to Sloth SLOs.
pub fn apply_windows(slo: &mut SloDefinition, period: Duration, conditions: &[BurnCondition]) {
    slo.window = Window::Rolling(period);
    slo.alerting.conditions = conditions.to_vec();
}
