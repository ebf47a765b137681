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
    pub slos: Vec<PlainSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainSlo {
    pub name: String,
    pub objective: Spanned<f64>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub sli: PlainSli,
    #[serde(default)]
    pub alerting: Option<PlainAlerting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainSli {
    #[serde(default)]
    pub events: Option<PlainEvents>,
    #[serde(default)]
    pub raw: Option<PlainRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainEvents {
    pub error_query: Spanned<String>,
    pub total_query: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainRaw {
    pub error_ratio_query: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PlainAlerting {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub page_alert: Option<AlertSeverity>,
    #[serde(default)]
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
    pub slos: Vec<CrdSlo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdSlo {
    pub name: String,
    pub objective: Spanned<f64>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub sli: CrdSli,
    #[serde(default)]
    pub alerting: Option<CrdAlerting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdSli {
    #[serde(default)]
    pub events: Option<CrdEvents>,
    #[serde(default)]
    pub raw: Option<CrdRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdEvents {
    #[serde(rename = "errorQuery")]
    pub error_query: Spanned<String>,
    #[serde(rename = "totalQuery")]
    pub total_query: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdRaw {
    #[serde(rename = "errorRatioQuery")]
    pub error_ratio_query: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CrdAlerting {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "pageAlert", default)]
    pub page_alert: Option<AlertSeverity>,
    #[serde(rename = "ticketAlert", default)]
    pub ticket_alert: Option<AlertSeverity>,
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

struct Common<'a> {
    service: &'a str,
    labels: BTreeMap<String, String>,
    name: &'a str,
    objective: &'a Spanned<f64>,
    description: &'a str,
    events: Option<(&'a Spanned<String>, &'a Spanned<String>)>,
    raw: Option<&'a Spanned<String>>,
    alert_name: Option<&'a String>,
    alert_labels: &'a BTreeMap<String, String>,
    alert_annotations: &'a BTreeMap<String, String>,
    page: Option<&'a AlertSeverity>,
    ticket: Option<&'a AlertSeverity>,
}

fn severity(spec: Option<&AlertSeverity>) -> SeverityAlerting {
    let spec = spec.cloned().unwrap_or_default();
    SeverityAlerting {
        disabled: spec.disable,
        receivers: Vec::new(),
        labels: spec.labels,
        annotations: spec.annotations,
    }
}

fn build(place: &Place, text: &str, common: Common) -> Result<SloDefinition, LoadError> {
    let objective = yaml::percent(place, common.objective)?;
    let sli = match (common.events, common.raw) {
        (Some((error, total)), None) => Sli::PromQl {
            good: None,
            bad: Some(yaml::promql(place, error)?),
            total: yaml::promql(place, total)?,
            kind: PromQlKind::Rate,
        },
        (None, Some(ratio)) => Sli::PromQl {
            good: None,
            bad: Some(yaml::promql(place, ratio)?),
            total: "vector(1)".into(),
            kind: PromQlKind::ErrorRatio,
        },
        _ => {
            return Err(place.at(
                common.objective,
                format!("SLO {:?} needs exactly one of sli.events and sli.raw", common.name),
                None,
            ));
        }
    };
    let mut alerting =
        AlertingSpec::new(common.alert_name.cloned().unwrap_or_else(|| "SLOBurnRate".into()), DEFAULT_PERIOD);
    alerting.labels = common.alert_labels.clone();
    alerting.annotations = common.alert_annotations.clone();
    alerting.page = severity(common.page);
    alerting.ticket = severity(common.ticket);
    Ok(SloDefinition {
        name: format!("{}-{}", common.service, common.name),
        display_name: None,
        service: common.service.to_string(),
        description: common.description.to_string(),
        labels: common.labels,
        objective,
        window: Window::Rolling(DEFAULT_PERIOD),
        budgeting: Budgeting::Occurrences,
        sli,
        group_by: Vec::new(),
        alerting,
        source: Source { file: place.file.to_string(), line: place.line_offset + 1, text: text.to_string() },
    })
}

pub fn convert_plain(place: &Place, text: &str, spec: &PlainSpec) -> Result<Vec<SloDefinition>, LoadError> {
    spec.slos
        .iter()
        .map(|slo| {
            let alerting = slo.alerting.as_ref();
            let empty = BTreeMap::new();
            let mut labels = spec.labels.clone();
            labels.extend(slo.labels.clone());
            build(
                place,
                text,
                Common {
                    service: &spec.service,
                    labels,
                    name: &slo.name,
                    objective: &slo.objective,
                    description: &slo.description,
                    events: slo.sli.events.as_ref().map(|e| (&e.error_query, &e.total_query)),
                    raw: slo.sli.raw.as_ref().map(|r| &r.error_ratio_query),
                    alert_name: alerting.and_then(|a| a.name.as_ref()),
                    alert_labels: alerting.map_or(&empty, |a| &a.labels),
                    alert_annotations: alerting.map_or(&empty, |a| &a.annotations),
                    page: alerting.and_then(|a| a.page_alert.as_ref()),
                    ticket: alerting.and_then(|a| a.ticket_alert.as_ref()),
                },
            )
        })
        .collect()
}

pub fn convert_crd(place: &Place, text: &str, level: &ServiceLevel) -> Result<Vec<SloDefinition>, LoadError> {
    level
        .spec
        .slos
        .iter()
        .map(|slo| {
            let alerting = slo.alerting.as_ref();
            let empty = BTreeMap::new();
            let mut labels = level.metadata.labels.clone();
            labels.extend(level.spec.labels.clone());
            labels.extend(slo.labels.clone());
            build(
                place,
                text,
                Common {
                    service: &level.spec.service,
                    labels,
                    name: &slo.name,
                    objective: &slo.objective,
                    description: &slo.description,
                    events: slo.sli.events.as_ref().map(|e| (&e.error_query, &e.total_query)),
                    raw: slo.sli.raw.as_ref().map(|r| &r.error_ratio_query),
                    alert_name: alerting.and_then(|a| a.name.as_ref()),
                    alert_labels: alerting.map_or(&empty, |a| &a.labels),
                    alert_annotations: alerting.map_or(&empty, |a| &a.annotations),
                    page: alerting.and_then(|a| a.page_alert.as_ref()),
                    ticket: alerting.and_then(|a| a.ticket_alert.as_ref()),
                },
            )
        })
        .collect()
}

/// Applies an AlertWindows period and conditions to Sloth SLOs.
pub fn apply_windows(slo: &mut SloDefinition, period: Duration, conditions: &[BurnCondition]) {
    slo.window = Window::Rolling(period);
    slo.alerting.conditions = conditions.to_vec();
}
