//! Evaluation: SLO alerts from each SLO evaluation's statuses, and rule groups (alerting
//! and recording rules on PromQL or SQL) on their intervals; each advances its alerts'
//! states and hands the changes to [`crate::publish`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use vigil_query::promql::{EvalRange, PromResult};
use vigil_query::slo::model::Severity;
use vigil_query::slo::policy::burning_conditions;
use vigil_query::slo::{SloDefinition, SloState, SloStatus};
use vigil_storage::{LabelSet, MetricSeries, Sample};

use crate::engine::{Alerting, Source, SourceKind};
use crate::inhibit::InhibitRule;
use crate::labels::Labels;
use crate::rules::{Rule, RuleGroup, RuleKind, RuleQuery};
use crate::state::{Candidate, RuleAlerts};
use crate::template::{TemplateData, expand};

/// Why a rule's evaluation failed (its health `err`, this its `lastError`).
#[derive(Debug, thiserror::Error)]
enum RuleError {
    #[error("{0}")]
    Query(String),
    #[error("rule result is not a vector or scalar")]
    NotVectorOrScalar,
    #[error("exceeded limit of {limit} with {results} results")]
    Limit { limit: usize, results: usize },
    #[error("{0}")]
    State(String),
}

impl Alerting {
    /// Evaluates the alerts of every SLO from its latest statuses.
    pub async fn evaluate_slos(&self, definitions: &[Arc<SloDefinition>], statuses: &[SloStatus]) {
        let now = self.now_ms();
        let external = self.inner.options.external_url.clone();
        let contributors = self.attribute_burns(definitions, statuses, now).await;
        let mut transitions = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let group_labels: BTreeSet<String> = definitions.iter().flat_map(|d| d.group_by.iter().cloned()).collect();
            if !state.custom_inhibit {
                state.inhibit = vec![InhibitRule::page_inhibits_ticket(&group_labels)];
            }
            let names: BTreeSet<String> = definitions.iter().map(|d| format!("slo:{}", d.name)).collect();
            state.sources.retain(|key, _| !key.starts_with("slo:") || names.contains(key));
            for definition in definitions {
                let mine: Vec<&SloStatus> = statuses.iter().filter(|s| s.name == definition.name).collect();
                if mine.iter().any(|s| s.state == SloState::Error) {
                    // As a rule whose query failed: alerts stay as they are.
                    continue;
                }
                let key = format!("slo:{}", definition.name);
                let source =
                    state.sources.entry(key).or_insert_with(|| Source::new(SourceKind::Slo, RuleAlerts::default()));
                source.generator_url = format!("{}/slos/{}", external.trim_end_matches('/'), definition.name);
                source.last_evaluation_ms = Some(now);
                let candidates = crate::slo_alerts::candidates(
                    definition,
                    &mine,
                    &external,
                    contributors.get(&definition.name).map(String::as_str),
                );
                source.receivers = candidates
                    .iter()
                    .map(|c| (crate::labels::fingerprint(&c.candidate.labels), c.receivers.clone()))
                    .collect();
                match source.alerts.advance(now, candidates.into_iter().map(|c| c.candidate).collect()) {
                    Ok(mut t) => {
                        source.last_error = None;
                        transitions.append(&mut t);
                    }
                    Err(e) => source.last_error = Some(e.to_string()),
                }
            }
        }
        self.publish(now, transitions, Vec::new()).await;
    }

    /// For each SLO with a burn-rate condition holding: where its bad events come from over the
    /// longest such window (`slo::attribution`), for its alerts' `top_contributors`. Redone at
    /// most once a minute per SLO; an SLI it cannot attribute gets none.
    async fn attribute_burns(
        &self,
        definitions: &[Arc<SloDefinition>],
        statuses: &[SloStatus],
        now: i64,
    ) -> BTreeMap<String, String> {
        const REFRESH_MS: i64 = 60_000;
        let mut out = BTreeMap::new();
        for definition in definitions {
            let window = statuses
                .iter()
                .filter(|s| s.name == definition.name)
                .flat_map(|s| {
                    [Severity::Page, Severity::Ticket]
                        .into_iter()
                        .flat_map(move |severity| burning_conditions(definition, s, severity))
                })
                .filter_map(|c| vigil_query::promql::parse_duration(&c.long_window))
                .max();
            let Some(window) = window else {
                self.inner.attributions.lock().remove(&definition.name);
                continue;
            };
            let cached = self.inner.attributions.lock().get(&definition.name).cloned();
            if let Some((_, summary)) = cached.filter(|(at, _)| now - at < REFRESH_MS) {
                out.insert(definition.name.clone(), summary);
                continue;
            }
            match vigil_query::slo::attribution::attribute(&self.inner.engine, definition, window, now).await {
                Ok(attribution) => {
                    let summary = attribution.summary();
                    self.inner.attributions.lock().insert(definition.name.clone(), (now, summary.clone()));
                    out.insert(definition.name.clone(), summary);
                }
                Err(e) => tracing::debug!(slo = %definition.name, error = %e, "no burn attribution"),
            }
        }
        out
    }

    /// Evaluates the rule groups whose time has come, each in a task of its own.
    pub fn evaluate_due_groups(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let now = self.now_ms();
        let due: Vec<RuleGroup> = {
            let mut state = self.inner.state.lock();
            state
                .groups
                .iter_mut()
                .filter(|g| !g.running && g.next_ms <= now)
                .map(|g| {
                    g.running = true;
                    // Keep the phase: the next evaluation is one interval after this one was due.
                    g.next_ms += g.interval_ms * (((now - g.next_ms) / g.interval_ms) + 1);
                    g.group.clone()
                })
                .collect()
        };
        due.into_iter()
            .map(|group| {
                let this = self.clone();
                tokio::spawn(async move { this.evaluate_group(group, now).await })
            })
            .collect()
    }

    async fn evaluate_group(&self, group: RuleGroup, now: i64) {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        for rule in &group.rules {
            results.push(self.query(&rule.query, now).await);
        }
        let external = self.inner.options.external_url.clone();
        let mut transitions = Vec::new();
        let mut recorded = Vec::new();
        {
            let mut state = self.inner.state.lock();
            for (index, (rule, result)) in group.rules.iter().zip(results).enumerate() {
                let key = rule_key(&group, rule, index);
                let kind =
                    if matches!(rule.kind, RuleKind::Alert { .. }) { SourceKind::Rule } else { SourceKind::Record };
                let source = state.sources.entry(key).or_insert_with(|| Source::new(kind, RuleAlerts::default()));
                source.last_evaluation_ms = Some(now);
                source.generator_url = generator_url(&external, &rule.query);
                let outcome =
                    result.and_then(|samples| {
                        if group.limit > 0 && samples.len() > group.limit {
                            return Err(RuleError::Limit { limit: group.limit, results: samples.len() });
                        }
                        match &rule.kind {
                            RuleKind::Alert { name, hold, keep_firing_for, annotations } => {
                                let candidates = samples
                                    .into_iter()
                                    .map(|(labels, value)| {
                                        alert_candidate(
                                            rule,
                                            name,
                                            *hold,
                                            *keep_firing_for,
                                            annotations,
                                            labels,
                                            value,
                                            &external,
                                        )
                                    })
                                    .collect();
                                source
                                    .alerts
                                    .advance(now, candidates)
                                    .map(|mut t| transitions.append(&mut t))
                                    .map_err(|e| RuleError::State(e.to_string()))
                            }
                            RuleKind::Record { name } => {
                                recorded.extend(samples.into_iter().filter_map(|(labels, value)| {
                                    record_series(name, &rule.labels, labels, value, now)
                                }));
                                Ok(())
                            }
                        }
                    });
                source.last_error = outcome.err().map(|e| e.to_string());
                if let Some(error) = &source.last_error {
                    tracing::warn!(group = %group.name, rule = rule.name(), %error, "rule evaluation failed");
                    metrics::counter!("vigil_rule_evaluation_failures_total").increment(1);
                }
            }
            if let Some(runtime) = state.groups.iter_mut().find(|g| g.group.key() == group.key()) {
                runtime.running = false;
                runtime.last_duration_ms = started.elapsed().as_millis() as i64;
            }
        }
        metrics::counter!("vigil_rule_group_evaluations_total").increment(1);
        metrics::histogram!("vigil_rule_group_duration_seconds").record(started.elapsed().as_secs_f64());
        self.publish(now, transitions, recorded).await;
    }

    /// Runs a rule's query at `now`: (labels, value) per result element.
    async fn query(&self, query: &RuleQuery, now: i64) -> Result<Vec<(Labels, f64)>, RuleError> {
        match query {
            RuleQuery::PromQl(expr) => match self.inner.engine.promql(expr, EvalRange::instant(now)).await {
                Ok(PromResult::Vector(samples)) => Ok(samples.into_iter().map(|s| (s.labels, s.value)).collect()),
                Ok(PromResult::Scalar(_, value)) => Ok(vec![(Labels::new(), value)]),
                Ok(_) => Err(RuleError::NotVectorOrScalar),
                Err(e) => Err(RuleError::Query(e.to_string())),
            },
            RuleQuery::Sql(text) => {
                let result = self.inner.engine.sql(text).await.map_err(|e| RuleError::Query(e.to_string()))?;
                sql_rows(&result.batches).map_err(|e| RuleError::Query(e.to_string()))
            }
        }
    }
}

pub(crate) fn rule_key(group: &RuleGroup, rule: &Rule, index: usize) -> String {
    format!("rule:{};{};{};{index}", group.file, group.name, rule.name())
}

#[allow(clippy::too_many_arguments)]
fn alert_candidate(
    rule: &Rule,
    name: &str,
    hold: Duration,
    keep_firing_for: Duration,
    annotations: &BTreeMap<String, String>,
    mut labels: Labels,
    value: f64,
    external_url: &str,
) -> Candidate {
    labels.remove("__name__");
    let data = TemplateData { labels: &labels, value, external_url };
    let mut out = labels.clone();
    for (k, v) in &rule.labels {
        let expanded = expand(v, &data);
        if expanded.is_empty() {
            out.remove(k);
        } else {
            out.insert(k.clone(), expanded);
        }
    }
    out.insert("alertname".into(), name.into());
    let annotations = annotations.iter().map(|(k, v)| (k.clone(), expand(v, &data))).collect();
    Candidate {
        labels: out,
        annotations,
        value,
        hold_ms: hold.as_millis() as i64,
        keep_firing_for_ms: keep_firing_for.as_millis() as i64,
    }
}

fn record_series(
    name: &str,
    rule_labels: &BTreeMap<String, String>,
    mut labels: Labels,
    value: f64,
    now: i64,
) -> Option<MetricSeries> {
    labels.remove("__name__");
    labels.extend(rule_labels.clone());
    let labels = LabelSet::new(labels.into_iter().collect()).ok()?;
    Some(MetricSeries { metric: name.into(), labels, samples: vec![Sample { timestamp_ns: now * 1_000_000, value }] })
}

fn generator_url(external: &str, query: &RuleQuery) -> String {
    let (language, text) = match query {
        RuleQuery::PromQl(q) => ("promql", q),
        RuleQuery::Sql(q) => ("sql", q),
    };
    let base = format!("{}/explore", external.trim_end_matches('/'));
    reqwest::Url::parse_with_params(&base, &[("lang", language), ("q", text.as_str())]).map_or(base, |u| u.to_string())
}

/// SQL rule results: text columns are labels, `value` (if present) the value, 1 otherwise.
fn sql_rows(batches: &[RecordBatch]) -> Result<Vec<(Labels, f64)>, datafusion::arrow::error::ArrowError> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let mut label_columns = Vec::new();
        let mut value_column = None;
        for (i, field) in schema.fields().iter().enumerate() {
            if field.name() == "value" {
                value_column = Some(cast(batch.column(i), &DataType::Float64)?);
            } else if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
            ) {
                label_columns.push((field.name().clone(), cast(batch.column(i), &DataType::Utf8)?));
            }
        }
        for row in 0..batch.num_rows() {
            let mut labels = Labels::new();
            for (name, column) in &label_columns {
                let strings = column.as_any().downcast_ref::<StringArray>();
                if let Some(strings) = strings.filter(|s| !s.is_null(row) && !s.value(row).is_empty()) {
                    labels.insert(name.clone(), strings.value(row).to_string());
                }
            }
            let value = value_column
                .as_ref()
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .map_or(1.0, |v| if v.is_null(row) { f64::NAN } else { v.value(row) });
            out.push((labels, value));
        }
    }
    Ok(out)
}
