//! Prometheus rule files: `groups` of alerting rules (`alert`, `expr` in PromQL or `sql`,
//! `for`, `keep_firing_for`, `labels`, `annotations`) and recording rules (`record`,
//! `expr`), checked as `promtool check rules` checks them, every error at `file:line:col`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use vigil_query::slo::LoadError;
use vigil_query::slo::yaml::{Place, duration, promql, sql};

use crate::labels::is_valid_label_name;
use crate::template::Template;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileYaml {
    groups: Vec<GroupYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupYaml {
    name: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<RuleYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    #[serde(default)]
    alert: Option<Spanned<String>>,
    #[serde(default)]
    record: Option<Spanned<String>>,
    #[serde(default)]
    expr: Option<Spanned<String>>,
    #[serde(default)]
    sql: Option<Spanned<String>>,
    #[serde(default, rename = "for")]
    hold: Option<Spanned<String>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    annotations: BTreeMap<String, Spanned<String>>,
}

/// What a rule evaluates.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleQuery {
    PromQl(String),
    /// One alert per row: text columns are labels, a `value` column (if any) the value.
    Sql(String),
}

impl RuleQuery {
    pub fn text(&self) -> &str {
        match self {
            RuleQuery::PromQl(q) | RuleQuery::Sql(q) => q,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    Alert { name: String, hold: Duration, keep_firing_for: Duration, annotations: BTreeMap<String, String> },
    Record { name: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub kind: RuleKind,
    pub query: RuleQuery,
    pub labels: BTreeMap<String, String>,
}

impl Rule {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Alert { name, .. } | RuleKind::Record { name } => name,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleGroup {
    pub file: String,
    pub name: String,
    /// `None`: the global evaluation interval.
    pub interval: Option<Duration>,
    /// At most this many alerts (or series) per rule; 0: no limit.
    pub limit: usize,
    pub rules: Vec<Rule>,
}

impl RuleGroup {
    /// Unique across files, as Prometheus keys groups.
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }
}

/// Loads every rule file; all errors are collected.
pub fn load_files(paths: &[PathBuf]) -> Result<Vec<RuleGroup>, Vec<LoadError>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match parse(&file, &text) {
                Ok(mut g) => groups.append(&mut g),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) => errors.push(LoadError {
                file,
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
                hint: None,
            }),
        }
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors) }
}

pub fn parse(file: &str, text: &str) -> Result<Vec<RuleGroup>, Vec<LoadError>> {
    let place = Place { file, line_offset: 0 };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: RuleFileYaml = place.parse(text).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for group in doc.groups {
        if group.name.value.is_empty() {
            errors.push(place.at(&group.name, "group name must not be empty", None));
        } else if !names.insert(group.name.value.clone()) {
            errors.push(place.at(
                &group.name,
                format!("groupname: {:?} is repeated in the same file", group.name.value),
                None,
            ));
        }
        let interval = match &group.interval {
            Some(text) => match duration(&place, text) {
                Ok(d) if d.is_zero() => {
                    errors.push(place.at(text, "interval must be more than 0", None));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        let mut rules = Vec::new();
        for rule in group.rules {
            match convert_rule(&place, rule, &group.labels) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
        }
        groups.push(RuleGroup {
            file: file.to_string(),
            name: group.name.value,
            interval,
            limit: group.limit.unwrap_or(0),
            rules,
        });
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors) }
}

fn convert_rule(place: &Place, rule: RuleYaml, group_labels: &BTreeMap<String, String>) -> Result<Rule, LoadError> {
    let query = match (&rule.expr, &rule.sql) {
        (Some(expr), None) => RuleQuery::PromQl(promql(place, expr)?),
        (None, Some(text)) => RuleQuery::Sql(sql(place, text)?),
        (Some(expr), Some(_)) => {
            return Err(place.at(expr, "a rule has either expr: (PromQL) or sql:, not both", None));
        }
        (None, None) => {
            let at = rule.alert.as_ref().or(rule.record.as_ref());
            let message = "a rule needs expr: (PromQL) or sql:";
            return Err(match at {
                Some(at) => place.at(at, message, None),
                None => place.start(message, None),
            });
        }
    };
    let mut labels = group_labels.clone();
    for (name, value) in &rule.labels {
        if !is_valid_label_name(name) {
            return Err(place.at(value, format!("invalid label name {name:?}"), None));
        }
        Template::parse(&value.value).map_err(|e| place.at(value, format!("label {name}: {e}"), None))?;
        labels.insert(name.clone(), value.value.clone());
    }
    let optional_duration = |d: &Option<Spanned<String>>| -> Result<Duration, LoadError> {
        d.as_ref().map_or(Ok(Duration::ZERO), |d| duration(place, d))
    };
    let kind = match (rule.alert, rule.record) {
        (Some(alert), None) => {
            if alert.value.is_empty() {
                return Err(place.at(&alert, "alert name must not be empty", None));
            }
            let mut annotations = BTreeMap::new();
            for (name, value) in &rule.annotations {
                Template::parse(&value.value).map_err(|e| place.at(value, format!("annotation {name}: {e}"), None))?;
                annotations.insert(name.clone(), value.value.clone());
            }
            RuleKind::Alert {
                name: alert.value,
                hold: optional_duration(&rule.hold)?,
                keep_firing_for: optional_duration(&rule.keep_firing_for)?,
                annotations,
            }
        }
        (None, Some(record)) => {
            let valid = record
                .value
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()));
            if record.value.is_empty() || !valid {
                return Err(place.at(
                    &record,
                    format!("invalid recording rule name {:?}", record.value),
                    Some("a metric name: [a-zA-Z_:][a-zA-Z0-9_:]*".into()),
                ));
            }
            if let Some(hold) = &rule.hold {
                return Err(place.at(hold, "invalid field 'for' in recording rule", None));
            }
            if !rule.annotations.is_empty() {
                return Err(place.at(&record, "invalid field 'annotations' in recording rule", None));
            }
            if matches!(query, RuleQuery::Sql(_)) {
                return Err(place.at(&record, "recording rules take expr: (PromQL), not sql:", None));
            }
            RuleKind::Record { name: record.value }
        }
        (Some(alert), Some(_)) => return Err(place.at(&alert, "a rule is either alert: or record:, not both", None)),
        (None, None) => return Err(place.start("a rule needs alert: or record:", None)),
    };
    Ok(Rule { kind, query, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_prometheus_rule_files() {
        let text = r#"groups:
  - name: api
    interval: 15s
    rules:
      - alert: HighErrorRate
        expr: sum(rate(http_requests_total{code=~"5.."}[5m])) by (job) > 1
        for: 10m
        keep_firing_for: 5m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }} fails {{ $value | humanize }} req/s"
      - record: job:http_requests:rate5m
        expr: sum(rate(http_requests_total[5m])) by (job)
  - name: drift
    rules:
      - alert: FeatureDrift
        sql: SELECT model, feature, value FROM drift_scores WHERE statistic = 'psi' AND value > 0.2
"#;
        let groups = parse("rules.yaml", text).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].interval, Some(Duration::from_secs(15)));
        let RuleKind::Alert { hold, keep_firing_for, annotations, .. } = &groups[0].rules[0].kind else { panic!() };
        assert_eq!((*hold, *keep_firing_for), (Duration::from_secs(600), Duration::from_secs(300)));
        assert!(annotations["summary"].contains("$labels.job"));
        assert_eq!(groups[0].rules[1].kind, RuleKind::Record { name: "job:http_requests:rate5m".into() });
        assert!(matches!(groups[1].rules[0].query, RuleQuery::Sql(_)));
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let cases = [
            (
                "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: rate(x[5m]\n",
                (5, 15),
                "invalid PromQL",
            ),
            (
                "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        for: soon\n",
                (6, 14),
                "invalid duration",
            ),
            (
                "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        fro: 5m\n",
                (6, 9),
                "unknown field `fro`",
            ),
            (
                "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        annotations: {s: '{{ range }}'}\n",
                (6, 26),
                "annotation s",
            ),
            ("groups:\n  - name: a\n    rules: []\n  - name: a\n    rules: []\n", (4, 11), "repeated"),
            (
                "groups:\n  - name: a\n    rules:\n      - record: 'bad name'\n        expr: up\n",
                (4, 17),
                "invalid recording rule name",
            ),
        ];
        for (text, (line, column), message) in cases {
            let errors = parse("r.yaml", text).unwrap_err();
            assert_eq!((errors[0].line, errors[0].column), (line, column), "{text}: {}", errors[0]);
            assert!(errors[0].message.contains(message), "{}", errors[0]);
        }
        let typo =
            parse("r.yaml", "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        fro: 5m\n")
                .unwrap_err();
        assert_eq!(typo[0].hint.as_deref(), Some("did you mean `for`?"));
    }
}
