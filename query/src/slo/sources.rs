//! Per-minute good and total events of an SLI, read from stored data in `(from, to]`.
//!
//! Counters (ratio and latency SLIs, PromQL `counter: true`) are turned into increases
//! sample by sample: a drop is a reset (the new value is the increase), a gap just puts the
//! whole increase in the minute the series resumes. The last sample of each series at or
//! before the commit point is kept, so the next evaluation reads only newer data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::TableReference;
use datafusion::functions_aggregate::expr_fn::{count, first_value, last_value, max, min, sum};
use datafusion::logical_expr::{ExprFunctionExt, when};
use datafusion::prelude::{Expr, cast, ident, lit};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr as PromExpr;

use super::model::{PromQlKind, Sli, SloDefinition, Weighting, with_minute_window};
use super::rollup::{MINUTE_MS, minute_of};
use super::scans::{Scans, SeriesPoints};
use crate::QueryEngine;
use crate::engine::ts_literal;
use crate::promql::{EvalRange, PromResult};

/// Values of the grouping labels (empty when the SLO is not grouped).
pub type GroupKey = Vec<(String, String)>;

/// good/total per group per minute bucket.
pub type Counts = BTreeMap<GroupKey, BTreeMap<i64, (f64, f64)>>;

/// What an SLI source remembers between evaluations: the last committed sample of each
/// counter series (role, series) → (ms, value).
#[derive(Default, Debug, Clone)]
pub struct SourceState {
    counters: HashMap<(u8, String), (i64, f64)>,
}

impl SourceState {
    /// The counters' last committed samples, for saving.
    pub fn counters(&self) -> Vec<((u8, String), (i64, f64))> {
        let mut counters: Vec<_> = self.counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        counters
    }

    pub fn from_counters(counters: Vec<((u8, String), (i64, f64))>) -> Self {
        SourceState { counters: counters.into_iter().collect() }
    }

    /// The state of a composite's part `index` (its counters are kept here with the part's
    /// number in the high bits of their role, so they are saved with the composite's).
    fn part(&self, index: usize) -> SourceState {
        let tag = part_tag(index);
        SourceState {
            counters: self
                .counters
                .iter()
                .filter(|((role, _), _)| role >> 4 == tag)
                .map(|((role, series), sample)| ((role & 0x0f, series.clone()), *sample))
                .collect(),
        }
    }

    fn set_part(&mut self, index: usize, part: SourceState) {
        let tag = part_tag(index);
        self.counters.retain(|(role, _), _| role >> 4 != tag);
        self.counters
            .extend(part.counters.into_iter().map(|((role, series), sample)| ((role | (tag << 4), series), sample)));
    }
}

/// The high-bit tag of a composite's part `index` (parts are at most [`MAX_COMPOSITE_PARTS`]).
fn part_tag(index: usize) -> u8 {
    u8::try_from(index + 1).unwrap_or(u8::MAX).min(15)
}

/// Parts a composite SLO may have (their counters' state is tagged in four bits).
pub const MAX_COMPOSITE_PARTS: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The SLI cannot be computed as written (e.g. a latency threshold that is no bucket).
    #[error("{0}")]
    Definition(String),
    #[error("{0}")]
    Query(String),
}

impl From<crate::promql::PromError> for SourceError {
    fn from(e: crate::promql::PromError) -> Self {
        SourceError::Query(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for SourceError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        SourceError::Query(e.strip_backtrace())
    }
}

const GOOD: u8 = 0;
const BAD: u8 = 1;
const TOTAL: u8 = 2;

fn group_key(labels: &BTreeMap<String, String>, group_by: &[String]) -> GroupKey {
    group_by.iter().map(|l| (l.clone(), labels.get(l).cloned().unwrap_or_default())).collect()
}

/// Accumulates events by role, then yields good/total.
#[derive(Default)]
struct Accumulator {
    roles: BTreeMap<GroupKey, BTreeMap<i64, [f64; 3]>>,
}

impl Accumulator {
    fn add(&mut self, group: GroupKey, minute: i64, role: u8, value: f64) {
        self.roles.entry(group).or_default().entry(minute).or_default()[role as usize] += value;
    }

    fn ensure_group(&mut self, group: GroupKey) {
        self.roles.entry(group).or_default();
    }

    /// good = good, or total − bad.
    fn counts(self, has_good: bool) -> Counts {
        self.roles
            .into_iter()
            .map(|(group, minutes)| {
                let minutes = minutes
                    .into_iter()
                    .map(|(m, r)| {
                        (
                            m,
                            (
                                if has_good { r[GOOD as usize] } else { r[TOTAL as usize] - r[BAD as usize] },
                                r[TOTAL as usize],
                            ),
                        )
                    })
                    .collect();
                (group, minutes)
            })
            .collect()
    }
}

pub async fn fetch(
    engine: &QueryEngine,
    scans: &Scans,
    slo: &SloDefinition,
    from_ms: i64,
    to_ms: i64,
    commit_ms: i64,
    state: &mut SourceState,
) -> Result<Counts, SourceError> {
    match &slo.sli {
        Sli::Ratio { good, bad, total } => {
            let mut accumulator = Accumulator::default();
            let mut roles = vec![(TOTAL, total.clone())];
            roles.extend(good.iter().map(|g| (GOOD, g.clone())));
            roles.extend(bad.iter().map(|b| (BAD, b.clone())));
            for (role, selector) in roles {
                let series = selected(engine, scans, &parse_selector(&selector)?, from_ms, to_ms).await?;
                counter_increases(series.iter(), role, &slo.group_by, commit_ms, state, &mut accumulator);
            }
            if slo.group_by.is_empty() {
                accumulator.ensure_group(Vec::new());
            }
            Ok(accumulator.counts(good.is_some()))
        }
        Sli::Latency { histogram, threshold } => {
            latency(engine, scans, slo, histogram, *threshold, from_ms, to_ms, commit_ms, state).await
        }
        Sli::Spans { service, name, good_status, max_duration } => {
            let key = (
                format!("spans {service:?} {name:?} {good_status:?} {max_duration:?} by {:?}", slo.group_by),
                from_ms,
                to_ms,
            );
            let counts = scans
                .aggregates
                .get_or_read(key, "spans", || async {
                    let (filter, good) =
                        span_predicates(service, name.as_deref(), good_status, *max_duration, (from_ms, to_ms));
                    spans(engine, &slo.group_by, filter, good).await.map(Arc::new)
                })
                .await?;
            Ok((*counts).clone())
        }
        Sli::Drift { model, version, feature, statistic, below, .. } => {
            let key = (format!("drift {model:?} {version:?} {feature:?} {statistic:?} {below}"), from_ms, to_ms);
            let counts = scans
                .aggregates
                .get_or_read(key, "drift", || async {
                    drift(engine, model, version.as_deref(), feature, statistic, *below, from_ms, to_ms)
                        .await
                        .map(Arc::new)
                })
                .await?;
            Ok((*counts).clone())
        }
        Sli::Sql { good, bad, total } => {
            let mut accumulator = Accumulator::default();
            accumulator.ensure_group(Vec::new());
            let mut roles = vec![(TOTAL, total)];
            roles.extend(good.iter().map(|g| (GOOD, g)));
            roles.extend(bad.iter().map(|b| (BAD, b)));
            for (role, query) in roles {
                let key = (query.clone(), from_ms, to_ms);
                let events = scans
                    .sql
                    .get_or_read(key, "sql", || async { sql_events(engine, query, from_ms, to_ms).await.map(Arc::new) })
                    .await?;
                for (minute, events) in events.iter() {
                    accumulator.add(Vec::new(), *minute, role, *events);
                }
            }
            Ok(accumulator.counts(good.is_some()))
        }
        Sli::Composite { parts, weighting } => {
            let mut combined: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
            for (index, part) in parts.iter().enumerate() {
                let Some(definition) = &part.slo else {
                    return Err(SourceError::Definition(format!("part {:?} is not loaded", part.name)));
                };
                let mut part_state = state.part(index);
                let counts = Box::pin(fetch(engine, scans, definition, from_ms, to_ms, commit_ms, &mut part_state))
                    .await
                    .map_err(|e| match e {
                        SourceError::Definition(m) => SourceError::Definition(format!("part {}: {m}", part.name)),
                        SourceError::Query(m) => SourceError::Query(format!("part {}: {m}", part.name)),
                    })?;
                state.set_part(index, part_state);
                for (minute, (good, total)) in counts.into_values().flatten() {
                    let entry = combined.entry(minute).or_insert((0.0, 0.0));
                    match weighting {
                        Weighting::Events => {
                            entry.0 += part.weight * good;
                            entry.1 += part.weight * total;
                        }
                        Weighting::Declared if total > 0.0 => {
                            entry.0 += part.weight * good / total;
                            entry.1 += part.weight;
                        }
                        Weighting::Declared => {}
                    }
                }
            }
            Ok(BTreeMap::from([(GroupKey::default(), combined)]))
        }
        Sli::PromQl { good, bad, total, kind } => {
            let mut accumulator = Accumulator::default();
            if slo.group_by.is_empty() {
                accumulator.ensure_group(Vec::new());
            }
            let mut roles = vec![(TOTAL, total)];
            roles.extend(good.iter().map(|g| (GOOD, g)));
            roles.extend(bad.iter().map(|b| (BAD, b)));
            for (role, query) in roles {
                let text = with_minute_window(query);
                let key = (text.clone(), from_ms, to_ms);
                let series = scans
                    .promql
                    .get_or_read(key, "promql", || async {
                        promql_minutes(engine, &text, from_ms, to_ms).await.map(Arc::new)
                    })
                    .await?;
                promql_events(&series, *kind, role, &slo.group_by, from_ms, &mut accumulator);
            }
            Ok(accumulator.counts(good.is_some()))
        }
    }
}

fn parse_selector(text: &str) -> Result<promql_parser::parser::VectorSelector, SourceError> {
    match promql_parser::parser::parse(text) {
        Ok(PromExpr::VectorSelector(selector)) => Ok(selector),
        _ => Err(SourceError::Definition(format!("{text:?} is not a series selector"))),
    }
}

/// The counter series a selector picks, in `(from, to]`: out of the pass's one scan of the
/// metric's table, or — for a selector without a metric name — read on their own.
struct Selection {
    all: Arc<Vec<CounterMinutes>>,
    picked: Vec<usize>,
}

impl Selection {
    fn iter(&self) -> impl Iterator<Item = &CounterMinutes> {
        self.picked.iter().map(|i| &self.all[*i])
    }
}

async fn selected(
    engine: &QueryEngine,
    scans: &Scans,
    selector: &promql_parser::parser::VectorSelector,
    from_ms: i64,
    to_ms: i64,
) -> Result<Selection, SourceError> {
    let Some(name) = crate::promql::metric_name(selector).filter(|_| selector.matchers.or_matchers.is_empty()) else {
        let all = Arc::new(counter_minutes(engine, selector, from_ms, to_ms).await?);
        return Ok(Selection { picked: (0..all.len()).collect(), all });
    };
    let table = vigil_storage::schema::metric_table_name(name).into_owned();
    let all = scans
        .tables
        .get_or_read((table, from_ms, to_ms), "table", || async {
            let mut whole = selector.clone();
            whole.matchers.matchers.retain(|m| m.name == "__name__");
            counter_minutes(engine, &whole, from_ms, to_ms).await.map(Arc::new)
        })
        .await?;
    let matchers: Vec<&Matcher> = selector.matchers.matchers.iter().filter(|m| m.name != "__name__").collect();
    let picked = all
        .iter()
        .enumerate()
        .filter(|(_, series)| {
            matchers.iter().all(|m| m.is_match(series.labels.get(&m.name).map_or("", String::as_str)))
        })
        .map(|(i, _)| i)
        .collect();
    Ok(Selection { all, picked })
}

/// The per-minute increases of every counter series a selector reads in `(from, to]`,
/// computed inside DataFusion: each sample's increase over the one before it in its series
/// (a drop is a reset: the new value is the increase; NaN samples carry none), summed per
/// series per minute. Only the first sample's increase, over a sample before the range,
/// is left to the caller, which remembers that sample.
async fn counter_minutes(
    engine: &QueryEngine,
    selector: &promql_parser::parser::VectorSelector,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<CounterMinutes>, SourceError> {
    use crate::promql::{TS_COLUMN, VALUE_COLUMN};
    let compiler = crate::promql::compile_for_sources(engine);
    let Some((frame, labels)) = compiler.selector_rows(selector, from_ms + 1, to_ms).await? else {
        return Ok(Vec::new());
    };
    let labels: Vec<String> = labels.into_iter().filter(|l| l != "__name__").collect();
    let series_keys: Vec<Expr> = labels.iter().map(|l| ident(l.as_str())).collect();
    let (ts, value, previous) = (|| ident(TS_COLUMN), || ident(VALUE_COLUMN), || ident("__previous__"));
    let lag = datafusion::functions_window::expr_fn::lag(value(), Some(1), None)
        .partition_by(series_keys.clone())
        .order_by(vec![ts().sort(true, false)])
        .build()?
        .alias("__previous__");
    let increase =
        when(previous().is_null(), lit(0.0)).when(value().lt(previous()), value()).otherwise(value() - previous())?;
    let minute = ((ts() - lit(1i64)) / lit(MINUTE_MS)) * lit(MINUTE_MS);
    let mut keys = series_keys;
    keys.push(minute.alias("__minute__"));
    let frame = frame
        .filter(datafusion::prelude::not(datafusion::functions::math::expr_fn::isnan(value())))?
        .window(vec![lag])?
        .aggregate(
            keys,
            vec![
                sum(increase).alias("__increase__"),
                min(ts()).alias("__first_ts__"),
                first_value(value(), vec![ts().sort(true, false)]).alias("__first_value__"),
                max(ts()).alias("__last_ts__"),
                last_value(value(), vec![ts().sort(true, false)]).alias("__last_value__"),
            ],
        )?;
    let mut series: HashMap<BTreeMap<String, String>, Vec<MinuteRow>> = HashMap::new();
    for batch in frame.collect().await? {
        let column =
            |name: &str| batch.column_by_name(name).ok_or_else(|| SourceError::Query(format!("no column {name}")));
        let (minutes, first_ts, last_ts) = (
            column("__minute__")?.as_primitive::<Int64Type>(),
            column("__first_ts__")?.as_primitive::<Int64Type>(),
            column("__last_ts__")?.as_primitive::<Int64Type>(),
        );
        let increases = column("__increase__")?.as_primitive::<Float64Type>();
        let (first_values, last_values) = (
            column("__first_value__")?.as_primitive::<Float64Type>(),
            column("__last_value__")?.as_primitive::<Float64Type>(),
        );
        let label_columns: Vec<(&String, &datafusion::arrow::array::StringArray)> =
            labels.iter().filter_map(|l| Some((l, batch.column_by_name(l)?.as_string_opt::<i32>()?))).collect();
        for row in 0..batch.num_rows() {
            let set: BTreeMap<String, String> = label_columns
                .iter()
                .filter(|(_, c)| !c.is_null(row) && !c.value(row).is_empty())
                .map(|(name, c)| ((*name).clone(), c.value(row).to_string()))
                .collect();
            series.entry(set).or_default().push(MinuteRow {
                minute: minutes.value(row),
                increase: increases.value(row),
                first: (first_ts.value(row), first_values.value(row)),
                last: (last_ts.value(row), last_values.value(row)),
            });
        }
    }
    Ok(series
        .into_iter()
        .map(|(labels, mut minutes)| {
            minutes.sort_by_key(|m| m.minute);
            CounterMinutes { labels, minutes }
        })
        .collect())
}

/// One counter series in a range, minute by minute.
pub struct CounterMinutes {
    pub labels: BTreeMap<String, String>,
    /// In time order; only minutes with samples.
    pub minutes: Vec<MinuteRow>,
}

/// A minute `(minute, minute + 1m]` of one counter series.
pub struct MinuteRow {
    pub minute: i64,
    /// The increases of its samples over the samples before them in the range.
    pub increase: f64,
    /// Its first and last samples, (ms, value).
    pub first: (i64, f64),
    pub last: (i64, f64),
}

/// Counter increases per group and minute, in the minute of the later sample: the range's
/// own, and the first sample's over the last committed one. `commit_ms` (a minute edge)
/// moves the committed sample on.
fn counter_increases<'a>(
    series: impl Iterator<Item = &'a CounterMinutes>,
    role: u8,
    group_by: &[String],
    commit_ms: i64,
    state: &mut SourceState,
    accumulator: &mut Accumulator,
) {
    for counter in series {
        let key = (role, format!("{:?}", counter.labels));
        let group = group_key(&counter.labels, group_by);
        accumulator.ensure_group(group.clone());
        let mut committed = state.counters.get(&key).copied();
        if let (Some((_, before)), Some(first)) = (committed, counter.minutes.first()) {
            let value = first.first.1;
            accumulator.add(group.clone(), first.minute, role, if value < before { value } else { value - before });
        }
        for row in &counter.minutes {
            accumulator.add(group.clone(), row.minute, role, row.increase);
            if row.minute < commit_ms {
                committed = Some(row.last);
            }
        }
        if let Some(committed) = committed {
            state.counters.insert(key, committed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn latency(
    engine: &QueryEngine,
    scans: &Scans,
    slo: &SloDefinition,
    histogram: &str,
    threshold: f64,
    from_ms: i64,
    to_ms: i64,
    commit_ms: i64,
    state: &mut SourceState,
) -> Result<Counts, SourceError> {
    let mut selector = parse_selector(histogram)?;
    let name = selector
        .name
        .clone()
        .ok_or_else(|| SourceError::Definition("the histogram selector needs a metric name".into()))?;
    let bucket_name = format!("{name}_bucket");
    selector.name = Some(bucket_name.clone());
    for matcher in selector.matchers.matchers.iter_mut().filter(|m| m.name == "__name__") {
        *matcher = Matcher::new(MatchOp::Equal, "__name__", &bucket_name);
    }
    let series = selected(engine, scans, &selector, from_ms, to_ms).await?;
    let bound = |labels: &BTreeMap<String, String>| labels.get("le").and_then(|le| crate::promql::udf::parse_bound(le));
    let bounds: Vec<f64> = {
        let mut b: Vec<f64> = series.iter().filter_map(|c| bound(&c.labels)).collect();
        b.sort_by(f64::total_cmp);
        b.dedup();
        b
    };
    if !bounds.is_empty() && !bounds.contains(&threshold) {
        let listed: Vec<String> = bounds.iter().map(|b| crate::promql::kernels::format_value(*b)).collect();
        return Err(SourceError::Definition(format!(
            "latency threshold {threshold} is no bucket bound of {bucket_name}; the bounds are {}",
            listed.join(", ")
        )));
    }
    let mut group_by: Vec<String> = slo.group_by.clone();
    group_by.retain(|l| l != "le");
    let mut accumulator = Accumulator::default();
    if group_by.is_empty() {
        accumulator.ensure_group(Vec::new());
    }
    let good = series.iter().filter(|c| bound(&c.labels) == Some(threshold));
    counter_increases(good, GOOD, &group_by, commit_ms, state, &mut accumulator);
    let total = series.iter().filter(|c| bound(&c.labels) == Some(f64::INFINITY));
    counter_increases(total, TOTAL, &group_by, commit_ms, state, &mut accumulator);
    Ok(accumulator.counts(true))
}

/// `((t_ns − 1) / 60 s) · 60 s` in ms: the minute bucket of a time column.
fn minute_expr(column: &str) -> Expr {
    ((cast(ident(column), DataType::Int64) - lit(1i64)) / lit(60_000_000_000i64)) * lit(MINUTE_MS)
}

/// Collects (group, minute, good, total) rows of an aggregate.
async fn collect_counts(frame: datafusion::dataframe::DataFrame, group_by: &[String]) -> Result<Counts, SourceError> {
    let mut counts: Counts = BTreeMap::new();
    if group_by.is_empty() {
        counts.insert(Vec::new(), BTreeMap::new());
    }
    for batch in frame.collect().await? {
        let minutes = batch.column(group_by.len()).as_primitive::<Int64Type>();
        let good = datafusion::arrow::compute::cast(batch.column(group_by.len() + 1), &DataType::Float64)
            .map_err(|e| SourceError::Query(e.to_string()))?;
        let total = datafusion::arrow::compute::cast(batch.column(group_by.len() + 2), &DataType::Float64)
            .map_err(|e| SourceError::Query(e.to_string()))?;
        let (good, total) = (good.as_primitive::<Float64Type>(), total.as_primitive::<Float64Type>());
        for row in 0..batch.num_rows() {
            let key: GroupKey = group_by
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let column = datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8).ok();
                    let value = column
                        .as_ref()
                        .map(|c| c.as_string::<i32>())
                        .filter(|c| !c.is_null(row))
                        .map(|c| c.value(row).to_string());
                    (l.clone(), value.unwrap_or_default())
                })
                .collect();
            counts.entry(key).or_default().insert(minutes.value(row), (good.value(row), total.value(row)));
        }
    }
    Ok(counts)
}

/// Good and total spans per group and minute, of the spans `filter` counts (`good`: see
/// [`span_predicates`]).
async fn spans(engine: &QueryEngine, group_by: &[String], filter: Expr, good: Expr) -> Result<Counts, SourceError> {
    let good_value = when(good, lit(1.0)).otherwise(lit(0.0))?;
    let mut keys: Vec<Expr> =
        group_by.iter().map(|c| cast(ident(c.as_str()), DataType::Utf8).alias(c.as_str())).collect();
    keys.push(minute_expr("start").alias("__minute__"));
    let frame = engine
        .context()
        .table(TableReference::bare("spans"))
        .await?
        .filter(filter)?
        .aggregate(keys, vec![sum(good_value).alias("__good__"), count(lit(1)).alias("__total__")])?;
    collect_counts(frame, group_by).await
}

/// The spans a span SLI counts in `(from_ms, to_ms]`, and which of them are good (their
/// status among `good_status`, and no slower than `max_duration`).
pub(super) fn span_predicates(
    service: &str,
    name: Option<&str>,
    good_status: &[String],
    max_duration: Option<std::time::Duration>,
    (from_ms, to_ms): (i64, i64),
) -> (Expr, Expr) {
    let mut filter = cast(ident("service"), DataType::Utf8)
        .eq(lit(service))
        .and(ident("start").gt(ts_literal(from_ms)))
        .and(ident("start").lt_eq(ts_literal(to_ms)));
    if let Some(name) = name {
        filter = filter.and(cast(ident("name"), DataType::Utf8).eq(lit(name)));
    }
    let mut good =
        cast(ident("status"), DataType::Utf8).in_list(good_status.iter().map(|s| lit(s.as_str())).collect(), false);
    if let Some(max) = max_duration {
        good = good.and(ident("duration").lt_eq(lit(max.as_nanos() as i64)));
    }
    (filter, good)
}

#[allow(clippy::too_many_arguments)]
async fn drift(
    engine: &QueryEngine,
    model: &str,
    version: Option<&str>,
    feature: &str,
    statistic: &str,
    below: f64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Counts, SourceError> {
    let text = |c: &str| cast(ident(c), DataType::Utf8);
    let mut filter = text("model")
        .eq(lit(model))
        .and(text("feature").eq(lit(feature)))
        .and(text("statistic").eq(lit(statistic)))
        .and(ident("timestamp").gt(ts_literal(from_ms)))
        .and(ident("timestamp").lt_eq(ts_literal(to_ms)));
    if let Some(version) = version {
        filter = filter.and(text("version").eq(lit(version)));
    }
    let good = when(ident("value").lt(lit(below)), lit(1.0)).otherwise(lit(0.0))?;
    let frame = engine
        .context()
        .table(TableReference::bare("drift_scores"))
        .await?
        .filter(filter.and(ident("value").is_not_null()))?
        .aggregate(
            vec![minute_expr("timestamp").alias("__minute__")],
            vec![sum(good).alias("__good__"), count(lit(1)).alias("__total__")],
        )?;
    collect_counts(frame, &[]).await
}

/// Events per minute of a user query returning `timestamp` (and optionally `value`).
async fn sql_events(
    engine: &QueryEngine,
    query: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<i64, f64>, SourceError> {
    let inner = engine.context().sql(query).await?;
    let has_value = inner.schema().fields().iter().any(|f| f.name() == "value");
    if !inner.schema().fields().iter().any(|f| f.name() == "timestamp") {
        return Err(SourceError::Definition(format!("the SLI query must return a timestamp column: {query}")));
    }
    let weight = if has_value { cast(ident("value"), DataType::Float64) } else { lit(1.0) };
    let frame = inner
        .filter(ident("timestamp").gt(ts_literal(from_ms)).and(ident("timestamp").lt_eq(ts_literal(to_ms))))?
        .aggregate(vec![minute_expr("timestamp").alias("__minute__")], vec![sum(weight).alias("__events__")])?;
    let mut out = BTreeMap::new();
    for batch in frame.collect().await? {
        let minutes = batch.column(0).as_primitive::<Int64Type>();
        let events = batch.column(1).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            if !events.is_null(row) {
                out.insert(minutes.value(row), events.value(row));
            }
        }
    }
    Ok(out)
}

/// Minutes one PromQL range evaluation covers: far below Prometheus's 11,000 points per
/// series, so an SLI over 30 days or a quarter is many small queries, never one huge one.
const PROMQL_CHUNK_STEPS: i64 = 1440;

/// A PromQL query evaluated at every minute end in `[from, to]`, a day at a time, each
/// series' points joined across the days.
async fn promql_minutes(
    engine: &QueryEngine,
    text: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<SeriesPoints>, SourceError> {
    let end = to_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let mut joined: HashMap<BTreeMap<String, String>, Vec<(i64, f64)>> = HashMap::new();
    let mut start = from_ms;
    while start < end {
        let chunk_end = (start + (PROMQL_CHUNK_STEPS - 1) * MINUTE_MS).min(end);
        let range = EvalRange::range(start, chunk_end, MINUTE_MS);
        match engine.promql(text, range).await? {
            PromResult::Matrix(series) => {
                for s in series {
                    joined.entry(s.labels).or_default().extend(s.points);
                }
            }
            other => return Err(SourceError::Definition(format!("the query must give a vector, not {other:?}"))),
        }
        start = chunk_end + MINUTE_MS;
    }
    Ok(joined.into_iter().collect())
}

/// Events of a PromQL query's per-minute values: a counter's increases (its last value
/// carried across gaps, a drop being a reset), a rate times 60 s, or a ratio as is.
fn promql_events(
    series: &[SeriesPoints],
    kind: PromQlKind,
    role: u8,
    group_by: &[String],
    from_ms: i64,
    accumulator: &mut Accumulator,
) {
    for (labels, points) in series {
        let group = group_key(labels, group_by);
        accumulator.ensure_group(group.clone());
        let mut last = None;
        for &(t, v) in points {
            if v.is_nan() {
                last = None;
                continue;
            }
            let events = match kind {
                PromQlKind::Counter => {
                    let increase = last.map(|p| if v < p { v } else { v - p });
                    last = Some(v);
                    match increase {
                        Some(i) => i,
                        None => continue,
                    }
                }
                PromQlKind::Rate => v * 60.0,
                PromQlKind::ErrorRatio => v,
            };
            if t > from_ms {
                accumulator.add(group.clone(), minute_of(t), role, events);
            }
        }
    }
}

/// The tables an SLI reads: a write to one of them may change its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TablesRead {
    Some(Vec<String>),
    /// SQL, or a selector without a metric name: any table may matter.
    All,
}

impl TablesRead {
    pub fn reads(&self, table: &str) -> bool {
        match self {
            TablesRead::All => true,
            TablesRead::Some(tables) => tables.iter().any(|t| t == table),
        }
    }

    /// The oldest time (ms) a drained set of changes wrote among these tables.
    pub fn changed_since(&self, changes: &vigil_storage::changes::Changes) -> Option<i64> {
        let oldest_ns = match self {
            TablesRead::All => changes.any().map(|r| r.min_ns),
            TablesRead::Some(tables) => tables.iter().filter_map(|t| changes.range_of(t)).map(|r| r.min_ns).min(),
        }?;
        Some(oldest_ns.div_euclid(1_000_000))
    }
}

pub fn tables_read(sli: &Sli) -> TablesRead {
    fn from_queries<'a>(queries: impl Iterator<Item = &'a str>, suffix: &str) -> TablesRead {
        let mut tables = Vec::new();
        for query in queries {
            let text = with_minute_window(query);
            let Ok(expr) = promql_parser::parser::parse(&text) else { return TablesRead::All };
            let mut selectors = Vec::new();
            crate::promql::selectors(&expr, &mut selectors);
            for selector in selectors {
                let Some(name) = crate::promql::metric_name(selector) else { return TablesRead::All };
                tables.push(vigil_storage::schema::metric_table_name(&format!("{name}{suffix}")).into_owned());
            }
        }
        tables.sort();
        tables.dedup();
        TablesRead::Some(tables)
    }
    match sli {
        Sli::Ratio { good, bad, total } => {
            from_queries([Some(total), good.as_ref(), bad.as_ref()].into_iter().flatten().map(String::as_str), "")
        }
        Sli::PromQl { good, bad, total, .. } => {
            from_queries([Some(total), good.as_ref(), bad.as_ref()].into_iter().flatten().map(String::as_str), "")
        }
        Sli::Latency { histogram, .. } => from_queries(std::iter::once(histogram.as_str()), "_bucket"),
        Sli::Spans { .. } => TablesRead::Some(vec!["spans".into()]),
        Sli::Drift { .. } => TablesRead::Some(vec!["drift_scores".into()]),
        Sli::Sql { .. } => TablesRead::All,
        Sli::Composite { parts, .. } => {
            let mut tables = Vec::new();
            for part in parts {
                match part.slo.as_ref().map(|slo| tables_read(&slo.sli)) {
                    Some(TablesRead::Some(read)) => tables.extend(read),
                    _ => return TablesRead::All,
                }
            }
            tables.sort();
            tables.dedup();
            TablesRead::Some(tables)
        }
    }
}
