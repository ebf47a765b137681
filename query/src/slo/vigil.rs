//! Vigil's own SLO dialect (`apiVersion: vigil/v1`, `kind: SLO`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    AlertingSpec, BudgetPolicy, Budgeting, BurnCondition, CalendarUnit, CompositePart, Severity, SeverityAlerting, Sli,
    SloDefinition, Source, Weighting, Window,
};
use super::yaml::{self, LoadError, Place};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VigilSlo {
    /// Checked by the loader before this type is chosen.
    #[serde(rename = "apiVersion")]
    #[allow(dead_code)]
    pub api_version: String,
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Spanned<String>,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    pub service: Spanned<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub description: String,
    /// Percent of good events (or slices).
    pub objective: Spanned<f64>,
    pub window: Spanned<WindowSpec>,
    #[serde(default)]
    pub budgeting: Option<BudgetingSpec>,
    pub sli: SliSpec,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub alerting: Option<AlertingYaml>,
    #[serde(default)]
    pub policy: Option<PolicyYaml>,
}

/// `policy: {freeze_below: 10%, freeze_while_paging: true, receivers: [...]}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyYaml {
    #[serde(default)]
    pub freeze_below: Option<Spanned<PercentYaml>>,
    #[serde(default)]
    pub freeze_while_paging: bool,
    #[serde(default)]
    pub receivers: Vec<Spanned<String>>,
}

/// A percentage written `10%` or `10`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum PercentYaml {
    Number(f64),
    Text(String),
}

/// `30d`, or `{calendar: month, timeZone: Europe/Paris}`. (Untagged: positions come from the
/// whole value.)
#[derive(Deserialize)]
#[serde(untagged)]
pub enum WindowSpec {
    Rolling(String),
    Calendar(CalendarSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    pub calendar: String,
    #[serde(rename = "timeZone", default)]
    pub time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum BudgetingSpec {
    Occurrences,
    Timeslices { slice: Spanned<String>, target: Spanned<f64> },
    RatioTimeslices { slice: Spanned<String> },
}

/// `composite: {weighting: events|declared, parts: [{slo: a, weight: 2}, ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    pub slo: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SliSpec {
    Composite {
        #[serde(default)]
        weighting: Option<Spanned<String>>,
        parts: Vec<PartSpec>,
    },
    Ratio {
        #[serde(default)]
        good: Option<Spanned<String>>,
        #[serde(default)]
        bad: Option<Spanned<String>>,
        total: Spanned<String>,
    },
    Latency {
        histogram: Spanned<String>,
        threshold: Spanned<f64>,
    },
    Spans {
        service: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        good: Option<GoodSpans>,
    },
    Drift {
        model: String,
        #[serde(default)]
        version: Option<String>,
        feature: String,
        statistic: Spanned<String>,
        below: f64,
        #[serde(default)]
        slice: Option<Spanned<String>>,
    },
    Sql {
        #[serde(default)]
        good: Option<Spanned<String>>,
        #[serde(default)]
        bad: Option<Spanned<String>>,
        total: Spanned<String>,
    },
    Promql {
        #[serde(default)]
        good: Option<Spanned<String>>,
        #[serde(default)]
        bad: Option<Spanned<String>>,
        total: Spanned<String>,
        /// True when the queries return counters; false for per-second rates.
        #[serde(default)]
        counter: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodSpans {
    #[serde(default)]
    pub status: Vec<Spanned<String>>,
    #[serde(default)]
    pub max_duration: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertingYaml {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub page: Option<SeverityYaml>,
    #[serde(default)]
    pub ticket: Option<SeverityYaml>,
    /// Replaces the SRE workbook's conditions.
    #[serde(default)]
    pub conditions: Option<Vec<ConditionYaml>>,
    /// Events needed in the long window before a burn-rate alert may fire.
    #[serde(default)]
    pub min_events: Option<Spanned<f64>>,
    /// How long without data before the no-data alert fires (`0s` disables it).
    #[serde(default)]
    pub no_data_for: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SeverityYaml {
    #[serde(default)]
    pub receivers: Vec<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionYaml {
    pub severity: Spanned<String>,
    pub burn_rate: f64,
    pub long_window: Spanned<String>,
    pub short_window: Spanned<String>,
}

use vigil_storage::schema::DRIFT_STATISTICS as STATISTICS;

/// Reads a time zone name; errors point at `at`.
pub fn time_zone<T>(place: &Place, name: &str, at: &Spanned<T>) -> Result<chrono_tz::Tz, LoadError> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        place.at(at, format!("unknown time zone {name:?}"), Some("an IANA name such as Europe/Paris or UTC".into()))
    })
}

pub fn severity_alerting(spec: Option<SeverityYaml>, receivers: &mut Vec<Spanned<String>>) -> SeverityAlerting {
    let spec = spec.unwrap_or_default();
    receivers.extend(spec.receivers.iter().cloned());
    SeverityAlerting {
        disabled: spec.disabled,
        receivers: spec.receivers.into_iter().map(|r| r.value).collect(),
        labels: spec.labels,
        annotations: spec.annotations,
    }
}

/// Converts a parsed document; `receivers` collects receiver references for validation.
pub fn convert(
    place: &Place,
    doc: VigilSlo,
    text: &str,
    receivers: &mut Vec<Spanned<String>>,
) -> Result<SloDefinition, LoadError> {
    if doc.kind.value != "SLO" {
        return Err(place.at(
            &doc.kind,
            format!("unknown kind {:?} for vigil/v1", doc.kind.value),
            Some("vigil/v1 has kind SLO".into()),
        ));
    }
    let spec = doc.spec;
    let objective = yaml::percent(place, &spec.objective)?;
    let window = match &spec.window.value {
        WindowSpec::Rolling(duration) => {
            let spanned = Spanned::new(duration.clone(), spec.window.referenced, spec.window.defined);
            Window::Rolling(yaml::duration(place, &spanned)?)
        }
        WindowSpec::Calendar(calendar) => {
            let unit = match calendar.calendar.as_str() {
                "month" => CalendarUnit::Month,
                "week" => CalendarUnit::Week,
                other => {
                    return Err(place.at(
                        &spec.window,
                        format!("unknown calendar window {other:?}"),
                        Some("month or week".into()),
                    ));
                }
            };
            let time_zone = match &calendar.time_zone {
                Some(zone) => time_zone(place, zone, &spec.window)?,
                None => chrono_tz::UTC,
            };
            Window::Calendar { unit, time_zone }
        }
    };
    let budgeting = match spec.budgeting {
        None | Some(BudgetingSpec::Occurrences) => Budgeting::Occurrences,
        Some(BudgetingSpec::Timeslices { slice, target }) => {
            if !(target.value > 0.0 && target.value <= 1.0) {
                return Err(place.at(
                    &target,
                    format!("slice target {} is out of range", target.value),
                    Some("a share of good events per slice in (0, 1], e.g. 0.95".into()),
                ));
            }
            Budgeting::Timeslices { slice: yaml::duration(place, &slice)?, target: target.value }
        }
        Some(BudgetingSpec::RatioTimeslices { slice }) => {
            Budgeting::RatioTimeslices { slice: yaml::duration(place, &slice)? }
        }
    };
    let sli = convert_sli(place, spec.sli, &spec.group_by)?;
    // A drift SLI counts good slices: each slice is one event, good or not.
    let budgeting = match (&sli, budgeting) {
        (Sli::Drift { slice, .. }, Budgeting::Occurrences) => Budgeting::Timeslices { slice: *slice, target: 1.0 },
        (_, budgeting) => budgeting,
    };
    let name = doc.metadata.name.value.clone();
    if name.is_empty() {
        return Err(place.at(&doc.metadata.name, "metadata.name must not be empty", None));
    }
    let alerting_yaml = spec.alerting.unwrap_or_default();
    let mut alerting = AlertingSpec::new(alerting_yaml.name.unwrap_or_else(|| "SLOBurnRate".into()), window.period());
    alerting.labels = alerting_yaml.labels;
    alerting.annotations = alerting_yaml.annotations;
    alerting.page = severity_alerting(alerting_yaml.page, receivers);
    alerting.ticket = severity_alerting(alerting_yaml.ticket, receivers);
    if let Some(min) = &alerting_yaml.min_events {
        if !(min.value >= 0.0 && min.value.is_finite()) {
            return Err(place.at(
                min,
                format!("min_events {} is out of range", min.value),
                Some("a count of events, 0 or more".into()),
            ));
        }
        alerting.min_events = min.value;
    }
    if let Some(no_data_for) = &alerting_yaml.no_data_for {
        alerting.no_data_for = super::yaml::duration(place, no_data_for)?;
    }
    if let Some(conditions) = alerting_yaml.conditions {
        alerting.conditions = conditions
            .iter()
            .map(|c| {
                let severity = match c.severity.value.as_str() {
                    "page" => Severity::Page,
                    "ticket" => Severity::Ticket,
                    other => {
                        return Err(place.at(
                            &c.severity,
                            format!("unknown severity {other:?}"),
                            Some("page or ticket".into()),
                        ));
                    }
                };
                Ok(BurnCondition {
                    severity,
                    burn_rate: c.burn_rate,
                    long_window: yaml::duration(place, &c.long_window)?,
                    short_window: yaml::duration(place, &c.short_window)?,
                })
            })
            .collect::<Result<_, _>>()?;
    }
    let policy = match spec.policy {
        Some(policy) => Some(convert_policy(place, policy, receivers)?),
        None => None,
    };
    Ok(SloDefinition {
        name,
        display_name: doc.metadata.display_name,
        service: doc.metadata.service.value,
        description: spec.description,
        labels: doc.metadata.labels,
        objective,
        window,
        budgeting,
        sli,
        group_by: spec.group_by,
        alerting,
        policy,
        source: Source { file: place.file.to_string(), line: place.line_offset + 1, text: text.to_string() },
    })
}

/// A policy as written: `freeze_below` a percentage in [0, 100) of the budget (`10%` or `10`).
fn convert_policy(
    place: &Place,
    policy: PolicyYaml,
    receivers: &mut Vec<Spanned<String>>,
) -> Result<BudgetPolicy, LoadError> {
    let freeze_below = match &policy.freeze_below {
        Some(spanned) => {
            let number = match &spanned.value {
                PercentYaml::Number(n) => Some(*n),
                PercentYaml::Text(text) => text.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
            };
            match number {
                Some(n) if (0.0..100.0).contains(&n) => Some(n / 100.0),
                _ => {
                    return Err(place.at(
                        spanned,
                        "freeze_below is not a percentage of the budget",
                        Some("a percentage from 0 up to 100, e.g. 10%".into()),
                    ));
                }
            }
        }
        None => None,
    };
    receivers.extend(policy.receivers.iter().cloned());
    Ok(BudgetPolicy {
        freeze_below,
        freeze_while_paging: policy.freeze_while_paging,
        receivers: policy.receivers.into_iter().map(|r| r.value).collect(),
    })
}

fn good_or_bad(
    place: &Place,
    good: Option<Spanned<String>>,
    bad: Option<Spanned<String>>,
    total: &Spanned<String>,
    check: impl Fn(&Place, &Spanned<String>) -> Result<String, LoadError>,
) -> Result<(Option<String>, Option<String>), LoadError> {
    match (good, bad) {
        (Some(good), None) => Ok((Some(check(place, &good)?), None)),
        (None, Some(bad)) => Ok((None, Some(check(place, &bad)?))),
        (Some(_), Some(bad)) => Err(place.at(&bad, "give either good or bad, not both", None)),
        (None, None) => {
            Err(place.at(total, "a ratio needs good or bad besides total", Some("add good: or bad:".into())))
        }
    }
}

fn convert_sli(place: &Place, sli: SliSpec, group_by: &[String]) -> Result<Sli, LoadError> {
    Ok(match sli {
        SliSpec::Composite { weighting, parts } => {
            if !group_by.is_empty() {
                return Err(place.start("a composite SLO cannot be grouped", Some("remove group_by".into())));
            }
            let weighting = match weighting.as_ref().map(|w| w.value.as_str()) {
                None | Some("events") => Weighting::Events,
                Some("declared") => Weighting::Declared,
                Some(other) => {
                    let at = weighting.as_ref().map_or_else(
                        || place.start("", None),
                        |w| place.at(w, format!("unknown weighting {other:?}"), Some("events or declared".into())),
                    );
                    return Err(at);
                }
            };
            if parts.len() > super::sources::MAX_COMPOSITE_PARTS {
                return Err(place.start(
                    format!("a composite SLO has at most {} parts", super::sources::MAX_COMPOSITE_PARTS),
                    Some("compose fewer SLOs".into()),
                ));
            }
            if parts.len() < 2 {
                return Err(place.start(
                    "a composite SLO needs at least two parts",
                    Some("list parts: [{slo: a}, {slo: b}]".into()),
                ));
            }
            let parts = parts
                .into_iter()
                .map(|part| {
                    let weight = part.weight.as_ref().map_or(1.0, |w| w.value);
                    if let Some(w) = &part.weight
                        && !(w.value > 0.0 && w.value.is_finite())
                    {
                        return Err(place.at(
                            w,
                            format!("weight {} is not positive", w.value),
                            Some("a number above 0".into()),
                        ));
                    }
                    Ok(CompositePart {
                        missing: place.at(
                            &part.slo,
                            format!("no SLO named {:?} to compose", part.slo.value),
                            Some("name an SLO defined in the files loaded with this one".into()),
                        ),
                        name: part.slo.value,
                        weight,
                        slo: None,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Sli::Composite { parts, weighting }
        }
        SliSpec::Ratio { good, bad, total } => {
            let (good, bad) = good_or_bad(place, good, bad, &total, yaml::selector)?;
            Sli::Ratio { good, bad, total: yaml::selector(place, &total)? }
        }
        SliSpec::Latency { histogram, threshold } => {
            let mut selector = yaml::selector(place, &histogram)?;
            if let Ok(promql_parser::parser::Expr::VectorSelector(vs)) = promql_parser::parser::parse(&selector)
                && let Some(name) = vs.name.as_deref().and_then(|n| n.strip_suffix("_bucket"))
            {
                selector = selector.replacen(&format!("{name}_bucket"), name, 1);
            }
            if !(threshold.value > 0.0) || !threshold.value.is_finite() {
                return Err(place.at(
                    &threshold,
                    format!("threshold {} must be a positive bucket bound", threshold.value),
                    None,
                ));
            }
            Sli::Latency { histogram: selector, threshold: threshold.value }
        }
        SliSpec::Spans { service, name, good } => {
            let good = good.unwrap_or(GoodSpans { status: Vec::new(), max_duration: None });
            let mut statuses = Vec::new();
            for status in &good.status {
                match status.value.as_str() {
                    "unset" | "ok" | "error" => statuses.push(status.value.clone()),
                    other => {
                        return Err(place.at(
                            status,
                            format!("unknown span status {other:?}"),
                            Some("unset, ok or error".into()),
                        ));
                    }
                }
            }
            if statuses.is_empty() {
                statuses = vec!["unset".into(), "ok".into()];
            }
            let max_duration = good.max_duration.as_ref().map(|d| yaml::duration(place, d)).transpose()?;
            Sli::Spans { service, name, good_status: statuses, max_duration }
        }
        SliSpec::Drift { model, version, feature, statistic, below, slice } => {
            if !STATISTICS.contains(&statistic.value.as_str()) {
                let near = yaml::closest(&statistic.value, STATISTICS, 3)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                return Err(place.at(
                    &statistic,
                    format!("unknown drift statistic {:?}", statistic.value),
                    Some(format!("{near}one of {}", STATISTICS.join(", "))),
                ));
            }
            let slice =
                slice.as_ref().map(|s| yaml::duration(place, s)).transpose()?.unwrap_or(Duration::from_secs(3600));
            Sli::Drift { model, version, feature, statistic: statistic.value, below, slice }
        }
        SliSpec::Sql { good, bad, total } => {
            let (good, bad) = good_or_bad(place, good, bad, &total, yaml::sql)?;
            Sli::Sql { good, bad, total: yaml::sql(place, &total)? }
        }
        SliSpec::Promql { good, bad, total, counter } => {
            for query in [good.as_ref(), bad.as_ref(), Some(&total)].into_iter().flatten() {
                yaml::promql_keeps(place, query, group_by)?;
            }
            let (good, bad) = good_or_bad(place, good, bad, &total, yaml::promql)?;
            let kind = if counter { super::model::PromQlKind::Counter } else { super::model::PromQlKind::Rate };
            Sli::PromQl { good, bad, total: yaml::promql(place, &total)?, kind }
        }
    })
}
