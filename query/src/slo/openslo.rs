//! OpenSLO v1: SLO, SLI, DataSource, Service, AlertPolicy, AlertCondition and
//! AlertNotificationTarget, inline or by reference, resolved across every file loaded.

// Every field the specification defines is accepted (unknown ones are errors), also those
// Vigil does not act on.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    AlertingSpec, Budgeting, BurnCondition, CalendarUnit, PromQlKind, Severity, Sli, SloDefinition, Source, Window,
};
use super::vigil::time_zone;
use super::yaml::{self, LoadError, Place};

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Spanned<String>,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, LabelValue>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum LabelValue {
    One(String),
    Many(Vec<String>),
}

impl LabelValue {
    fn joined(&self) -> String {
        match self {
            LabelValue::One(v) => v.clone(),
            LabelValue::Many(v) => v.join(","),
        }
    }
}

/// A whole OpenSLO document of one kind.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Object<S> {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    #[serde(default)]
    pub description: String,
    pub service: Spanned<String>,
    #[serde(default)]
    pub indicator: Option<InlineSli>,
    #[serde(rename = "indicatorRef", default)]
    pub indicator_ref: Option<Spanned<String>>,
    #[serde(rename = "timeWindow")]
    pub time_window: Vec<TimeWindow>,
    #[serde(rename = "budgetingMethod")]
    pub budgeting_method: Spanned<String>,
    pub objectives: Vec<Objective>,
    #[serde(rename = "alertPolicies", default)]
    pub alert_policies: Vec<PolicyEntry>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct InlineSli {
    pub metadata: Metadata,
    pub spec: SliSpec,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub duration: Spanned<String>,
    #[serde(rename = "isRolling", default)]
    pub is_rolling: bool,
    #[serde(default)]
    pub calendar: Option<Calendar>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    #[serde(rename = "startTime", default)]
    pub start_time: Option<String>,
    #[serde(rename = "timeZone")]
    pub time_zone: Spanned<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub target: Option<Spanned<f64>>,
    #[serde(rename = "targetPercent", default)]
    pub target_percent: Option<Spanned<f64>>,
    #[serde(rename = "timeSliceTarget", default)]
    pub time_slice_target: Option<Spanned<f64>>,
    #[serde(rename = "timeSliceWindow", default)]
    pub time_slice_window: Option<Spanned<String>>,
    #[serde(rename = "compositeWeight", default)]
    pub composite_weight: Option<f64>,
}

/// `- alertPolicyRef: name` or an inline AlertPolicy.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum PolicyEntry {
    Ref {
        #[serde(rename = "alertPolicyRef")]
        alert_policy_ref: String,
    },
    Inline(Box<Object<AlertPolicySpec>>),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SliSpec {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "thresholdMetric", default)]
    pub threshold_metric: Option<MetricHolder>,
    #[serde(rename = "ratioMetric", default)]
    pub ratio_metric: Option<RatioMetric>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RatioMetric {
    #[serde(default)]
    pub counter: bool,
    #[serde(default)]
    pub good: Option<MetricHolder>,
    #[serde(default)]
    pub bad: Option<MetricHolder>,
    #[serde(default)]
    pub total: Option<MetricHolder>,
    #[serde(rename = "rawType", default)]
    pub raw_type: Option<String>,
    #[serde(default)]
    pub raw: Option<MetricHolder>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricHolder {
    #[serde(rename = "metricSource")]
    pub metric_source: MetricSource,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricSource {
    #[serde(rename = "metricSourceRef", default)]
    pub metric_source_ref: Option<Spanned<String>>,
    #[serde(rename = "type", default)]
    pub source_type: Option<Spanned<String>>,
    pub spec: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DataSourceSpec {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub source_type: String,
    #[serde(rename = "connectionDetails", default)]
    pub connection_details: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicySpec {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "alertWhenNoData", default)]
    pub alert_when_no_data: bool,
    #[serde(rename = "alertWhenResolved", default)]
    pub alert_when_resolved: bool,
    #[serde(rename = "alertWhenBreaching", default)]
    pub alert_when_breaching: bool,
    pub conditions: Vec<ConditionEntry>,
    #[serde(rename = "notificationTargets", default)]
    pub notification_targets: Vec<TargetEntry>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum ConditionEntry {
    Ref {
        #[serde(rename = "conditionRef")]
        condition_ref: String,
    },
    Inline(Box<Object<AlertConditionSpec>>),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum TargetEntry {
    Ref {
        #[serde(rename = "targetRef")]
        target_ref: String,
    },
    Inline(Box<Object<TargetSpec>>),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlertConditionSpec {
    #[serde(default)]
    pub description: String,
    pub severity: String,
    pub condition: BurnRateCondition,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BurnRateCondition {
    pub kind: String,
    pub op: String,
    pub threshold: f64,
    #[serde(rename = "lookbackWindow")]
    pub lookback_window: String,
    #[serde(rename = "alertAfter", default)]
    pub alert_after: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub target: String,
    #[serde(default)]
    pub description: String,
}

/// Every OpenSLO object of the loaded files, with where it was written.
#[derive(Default)]
pub struct Catalog {
    pub slos: Vec<(String, u64, String, Object<SloSpec>)>,
    pub slis: HashMap<String, Object<SliSpec>>,
    pub data_sources: HashMap<String, Object<DataSourceSpec>>,
    pub services: HashMap<String, Object<ServiceSpec>>,
    pub policies: HashMap<String, Object<AlertPolicySpec>>,
    pub conditions: HashMap<String, Object<AlertConditionSpec>>,
    pub targets: HashMap<String, Object<TargetSpec>>,
}

pub const KINDS: &[&str] =
    &["SLO", "SLI", "DataSource", "Service", "AlertPolicy", "AlertCondition", "AlertNotificationTarget"];

impl Catalog {
    /// Adds one document of the given kind.
    pub fn add(&mut self, place: &Place, kind: &Spanned<String>, text: &str) -> Result<(), LoadError> {
        fn named<S>(object: Object<S>, map: &mut HashMap<String, Object<S>>) {
            map.insert(object.metadata.name.value.clone(), object);
        }
        match kind.value.as_str() {
            "SLO" => {
                let object: Object<SloSpec> = place.parse(text)?;
                self.slos.push((place.file.to_string(), place.line_offset, text.to_string(), object));
            }
            "SLI" => named(place.parse(text)?, &mut self.slis),
            "DataSource" => named(place.parse(text)?, &mut self.data_sources),
            "Service" => named(place.parse(text)?, &mut self.services),
            "AlertPolicy" => named(place.parse(text)?, &mut self.policies),
            "AlertCondition" => named(place.parse(text)?, &mut self.conditions),
            "AlertNotificationTarget" => named(place.parse(text)?, &mut self.targets),
            other => {
                let near = yaml::closest(other, KINDS, 3).map(|k| format!("did you mean `{k}`? ")).unwrap_or_default();
                return Err(place.at(
                    kind,
                    format!("unknown OpenSLO kind {other:?}"),
                    Some(format!("{near}one of {}", KINDS.join(", "))),
                ));
            }
        }
        Ok(())
    }

    /// Resolves every SLO; `receivers` collects notification targets for validation.
    pub fn resolve(
        &self,
        receivers: &mut Vec<(String, u64, Spanned<String>)>,
    ) -> Result<Vec<SloDefinition>, Vec<LoadError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (file, line_offset, text, slo) in &self.slos {
            let place = Place { file, line_offset: *line_offset };
            match self.resolve_one(&place, text, slo, receivers) {
                Ok(mut slos) => out.append(&mut slos),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    fn missing<T>(place: &Place, what: &str, reference: &Spanned<T>, name: &str, known: Vec<&String>) -> LoadError {
        let hint = yaml::closest(name, known, 3)
            .map(|k| format!("did you mean `{k}`?"))
            .or_else(|| Some(format!("define an OpenSLO {what} named {name:?} in one of the files given")));
        place.at(reference, format!("unresolved {what} reference {name:?}"), hint)
    }

    fn resolve_one(
        &self,
        place: &Place,
        text: &str,
        slo: &Object<SloSpec>,
        receivers: &mut Vec<(String, u64, Spanned<String>)>,
    ) -> Result<Vec<SloDefinition>, LoadError> {
        let spec = &slo.spec;
        if !self.services.contains_key(&spec.service.value) {
            return Err(Self::missing(
                place,
                "Service",
                &spec.service,
                &spec.service.value,
                self.services.keys().collect(),
            ));
        }
        let sli_spec = match (&spec.indicator, &spec.indicator_ref) {
            (Some(inline), None) => inline.spec.clone(),
            (None, Some(reference)) => match self.slis.get(&reference.value) {
                Some(sli) => sli.spec.clone(),
                None => {
                    return Err(Self::missing(place, "SLI", reference, &reference.value, self.slis.keys().collect()));
                }
            },
            _ => {
                return Err(place.at(
                    &slo.metadata.name,
                    "an SLO needs exactly one of indicator and indicatorRef",
                    None,
                ));
            }
        };
        let Some(window) = spec.time_window.first() else {
            return Err(place.at(
                &slo.metadata.name,
                "timeWindow is empty",
                Some("add timeWindow: [{duration: 28d, isRolling: true}]".into()),
            ));
        };
        let window = if window.is_rolling {
            Window::Rolling(yaml::duration(place, &window.duration)?)
        } else {
            let unit = match window.duration.value.as_str() {
                "1M" | "1mo" => CalendarUnit::Month,
                "1w" | "7d" => CalendarUnit::Week,
                other => {
                    return Err(place.at(
                        &window.duration,
                        format!("calendar window {other:?} is not supported"),
                        Some("1M (a month) or 1w (a week)".into()),
                    ));
                }
            };
            let time_zone = match &window.calendar {
                Some(calendar) => time_zone(place, &calendar.time_zone.value, &calendar.time_zone)?,
                None => chrono_tz::UTC,
            };
            Window::Calendar { unit, time_zone }
        };
        let sli = self.sli(place, &slo.metadata.name, &sli_spec, spec.objectives.first())?;
        let mut alerting = AlertingSpec::new("SLOBurnRate", window.period());
        let mut conditions = Vec::new();
        for entry in &spec.alert_policies {
            let policy = match entry {
                PolicyEntry::Ref { alert_policy_ref } => match self.policies.get(alert_policy_ref) {
                    Some(policy) => policy.clone(),
                    None => {
                        let at = Spanned::new(
                            alert_policy_ref.clone(),
                            slo.metadata.name.referenced,
                            slo.metadata.name.defined,
                        );
                        return Err(Self::missing(
                            place,
                            "AlertPolicy",
                            &at,
                            alert_policy_ref,
                            self.policies.keys().collect(),
                        ));
                    }
                },
                PolicyEntry::Inline(policy) => (**policy).clone(),
            };
            for condition in &policy.spec.conditions {
                let condition = match condition {
                    ConditionEntry::Ref { condition_ref } => match self.conditions.get(condition_ref) {
                        Some(c) => c.clone(),
                        None => {
                            let at = Spanned::new(
                                condition_ref.clone(),
                                policy.metadata.name.referenced,
                                policy.metadata.name.defined,
                            );
                            return Err(Self::missing(
                                place,
                                "AlertCondition",
                                &at,
                                condition_ref,
                                self.conditions.keys().collect(),
                            ));
                        }
                    },
                    ConditionEntry::Inline(c) => (**c).clone(),
                };
                let severity = if condition.spec.severity.eq_ignore_ascii_case("ticket") {
                    Severity::Ticket
                } else {
                    Severity::Page
                };
                let lookback = promql_parser::util::duration::parse_duration(&condition.spec.condition.lookback_window)
                    .map_err(|_| {
                        place.at(
                            &condition.metadata.name,
                            format!("invalid lookbackWindow {:?}", condition.spec.condition.lookback_window),
                            None,
                        )
                    })?;
                // The short window is 1/12 of the long one, as in the SRE workbook.
                conditions.push(BurnCondition {
                    severity,
                    burn_rate: condition.spec.condition.threshold,
                    long_window: lookback,
                    short_window: Duration::from_secs((lookback.as_secs() / 12).max(60)),
                });
                let severity_spec = if severity == Severity::Page { &mut alerting.page } else { &mut alerting.ticket };
                for target in &policy.spec.notification_targets {
                    let name = match target {
                        TargetEntry::Ref { target_ref } => {
                            if !self.targets.contains_key(target_ref) {
                                let at = Spanned::new(
                                    target_ref.clone(),
                                    policy.metadata.name.referenced,
                                    policy.metadata.name.defined,
                                );
                                return Err(Self::missing(
                                    place,
                                    "AlertNotificationTarget",
                                    &at,
                                    target_ref,
                                    self.targets.keys().collect(),
                                ));
                            }
                            target_ref.clone()
                        }
                        TargetEntry::Inline(t) => t.metadata.name.value.clone(),
                    };
                    if !severity_spec.receivers.contains(&name) {
                        receivers.push((
                            place.file.to_string(),
                            place.line_offset,
                            Spanned::new(name.clone(), slo.metadata.name.referenced, slo.metadata.name.defined),
                        ));
                        severity_spec.receivers.push(name);
                    }
                }
            }
        }
        if !conditions.is_empty() {
            alerting.conditions = conditions;
        }
        let labels: BTreeMap<String, String> =
            slo.metadata.labels.iter().map(|(k, v)| (k.clone(), v.joined())).collect();
        let mut out = Vec::new();
        let many = spec.objectives.len() > 1;
        for (index, objective) in spec.objectives.iter().enumerate() {
            let target = match (&objective.target, &objective.target_percent) {
                (Some(t), None) if t.value > 0.0 && t.value < 1.0 => t.value,
                (None, Some(p)) => yaml::percent(place, p)?,
                (Some(t), None) => {
                    return Err(place.at(
                        t,
                        format!("target {} is out of range", t.value),
                        Some("a share strictly between 0 and 1, e.g. 0.999 (or targetPercent: 99.9)".into()),
                    ));
                }
                _ => {
                    return Err(place.at(
                        &slo.metadata.name,
                        "an objective needs exactly one of target and targetPercent",
                        None,
                    ));
                }
            };
            let budgeting = match spec.budgeting_method.value.as_str() {
                "Occurrences" => Budgeting::Occurrences,
                "Timeslices" | "RatioTimeslices" => {
                    let Some(slice) = &objective.time_slice_window else {
                        return Err(place.at(
                            &spec.budgeting_method,
                            format!("{} needs timeSliceWindow in the objective", spec.budgeting_method.value),
                            None,
                        ));
                    };
                    let slice = yaml::duration(place, slice)?;
                    if spec.budgeting_method.value == "Timeslices" {
                        let slice_target = objective.time_slice_target.as_ref().map_or(target, |t| t.value);
                        Budgeting::Timeslices { slice, target: slice_target }
                    } else {
                        Budgeting::RatioTimeslices { slice }
                    }
                }
                other => {
                    return Err(place.at(
                        &spec.budgeting_method,
                        format!("unknown budgetingMethod {other:?}"),
                        Some("Occurrences, Timeslices or RatioTimeslices".into()),
                    ));
                }
            };
            let name = if many {
                format!(
                    "{}-{}",
                    slo.metadata.name.value,
                    objective.display_name.as_deref().map(slug).unwrap_or_else(|| index.to_string())
                )
            } else {
                slo.metadata.name.value.clone()
            };
            out.push(SloDefinition {
                name,
                display_name: slo.metadata.display_name.clone(),
                service: spec.service.value.clone(),
                description: spec.description.clone(),
                labels: labels.clone(),
                objective: target,
                window: window.clone(),
                budgeting,
                sli: if index == 0 {
                    sli.clone()
                } else {
                    self.sli(place, &slo.metadata.name, &sli_spec, Some(objective))?
                },
                group_by: Vec::new(),
                alerting: alerting.clone(),
                policy: None,
                source: Source { file: place.file.to_string(), line: place.line_offset + 1, text: text.to_string() },
            });
        }
        Ok(out)
    }

    /// A metric source's query, checking its type (or its DataSource's) is Prometheus.
    fn query(&self, place: &Place, at: &Spanned<String>, source: &MetricSource) -> Result<String, LoadError> {
        let source_type = match (&source.source_type, &source.metric_source_ref) {
            (Some(t), _) => t.value.clone(),
            (None, Some(reference)) => match self.data_sources.get(&reference.value) {
                Some(ds) => ds.spec.source_type.clone(),
                None => {
                    return Err(Self::missing(
                        place,
                        "DataSource",
                        reference,
                        &reference.value,
                        self.data_sources.keys().collect(),
                    ));
                }
            },
            (None, None) => "Prometheus".into(),
        };
        if !source_type.eq_ignore_ascii_case("prometheus") && !source_type.eq_ignore_ascii_case("vigil") {
            return Err(place.at(
                at,
                format!("metric source type {source_type:?} is not supported"),
                Some("Vigil evaluates Prometheus (PromQL) metric sources".into()),
            ));
        }
        match source.spec.get("query").and_then(|q| q.as_str()) {
            Some(query) => {
                let spanned = Spanned::new(query.to_string(), at.referenced, at.defined);
                yaml::promql(place, &spanned)
            }
            None => Err(place.at(at, "the metric source has no spec.query", Some("add spec: {query: '...'}".into()))),
        }
    }

    fn sli(
        &self,
        place: &Place,
        at: &Spanned<String>,
        spec: &SliSpec,
        objective: Option<&Objective>,
    ) -> Result<Sli, LoadError> {
        if let Some(ratio) = &spec.ratio_metric {
            let query = |holder: &Option<MetricHolder>| {
                holder.as_ref().map(|h| self.query(place, at, &h.metric_source)).transpose()
            };
            if let Some(raw) = &ratio.raw {
                let query = self.query(place, at, &raw.metric_source)?;
                return Ok(match ratio.raw_type.as_deref() {
                    Some("success") => Sli::PromQl {
                        good: Some(query),
                        bad: None,
                        total: "vector(1)".into(),
                        kind: PromQlKind::ErrorRatio,
                    },
                    _ => Sli::PromQl {
                        good: None,
                        bad: Some(query),
                        total: "vector(1)".into(),
                        kind: PromQlKind::ErrorRatio,
                    },
                });
            }
            let total = query(&ratio.total)?.ok_or_else(|| place.at(at, "ratioMetric needs total (or raw)", None))?;
            let (good, bad) = (query(&ratio.good)?, query(&ratio.bad)?);
            if good.is_some() == bad.is_some() {
                return Err(place.at(at, "ratioMetric needs exactly one of good and bad", None));
            }
            let kind = if ratio.counter { PromQlKind::Counter } else { PromQlKind::Rate };
            return Ok(Sli::PromQl { good, bad, total, kind });
        }
        if let Some(threshold) = &spec.threshold_metric {
            let query = self.query(place, at, &threshold.metric_source)?;
            let objective = objective
                .ok_or_else(|| place.at(at, "a thresholdMetric SLO needs an objective with op and value", None))?;
            let (Some(op), Some(value)) = (&objective.op, objective.value) else {
                return Err(place.at(at, "a thresholdMetric objective needs op (lt, lte, gt, gte) and value", None));
            };
            let comparison = match op.as_str() {
                "lt" => "<",
                "lte" => "<=",
                "gt" => ">",
                "gte" => ">=",
                other => {
                    return Err(place.at(
                        at,
                        format!("unknown objective op {other:?}"),
                        Some("lt, lte, gt or gte".into()),
                    ));
                }
            };
            // Good minutes are those whose value meets the threshold; each minute weighs one.
            return Ok(Sli::PromQl {
                good: Some(format!("({query}) {comparison} bool {value}")),
                bad: None,
                total: "vector(1)".into(),
                kind: PromQlKind::ErrorRatio,
            });
        }
        Err(place.at(at, "the SLI needs ratioMetric or thresholdMetric", None))
    }
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}
