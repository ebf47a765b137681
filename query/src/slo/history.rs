//! SLO status over time, read back from `slo_status`, for charts: one point per time bucket
//! (the mean of the evaluations in it).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions_aggregate::expr_fn::avg;
use datafusion::logical_expr::{cast, col, lit};

use crate::engine::ts_literal;
use crate::{QueryEngine, QueryError};

/// Points of one SLO: (bucket start in ms, SLI, error budget left).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SloHistory {
    pub sli: Vec<(i64, f64)>,
    pub budget: Vec<(i64, f64)>,
}

/// The burn-rate windows `slo_status` keeps a column for.
pub const BURN_RATE_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// The mean of each of `columns` per `step_ms` bucket in `[from_ms, to_ms]`, per SLO (all,
/// or `only`): for each SLO, one point list per column (NaN where a bucket has no value).
async fn bucketed(
    engine: &QueryEngine,
    only: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    columns: &[&str],
) -> Result<BTreeMap<String, Vec<Vec<(i64, f64)>>>, QueryError> {
    let step_ms = step_ms.max(1);
    let mut filter = col("timestamp").gt_eq(ts_literal(from_ms)).and(col("timestamp").lt_eq(ts_literal(to_ms)));
    if let Some(name) = only {
        filter = filter.and(cast(col("slo"), DataType::Utf8).eq(lit(name)));
    }
    // Bucket = floor(ms / step) · step, in integer milliseconds.
    let millis = cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64);
    let bucket = (millis / lit(step_ms)) * lit(step_ms);
    let frame = engine
        .context()
        .table("slo_status")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(filter)
        .map_err(QueryError::from_datafusion)?
        .aggregate(
            vec![cast(col("slo"), DataType::Utf8).alias("slo"), bucket.alias("bucket")],
            columns.iter().map(|c| avg(col(*c)).alias(*c)).collect(),
        )
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("bucket").sort(true, false)])
        .map_err(QueryError::from_datafusion)?;
    let mut out: BTreeMap<String, Vec<Vec<(i64, f64)>>> = BTreeMap::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let names = batch.column(0).as_string::<i32>();
        let buckets = batch.column(1).as_primitive::<Int64Type>();
        let values: Vec<_> = (0..columns.len()).map(|i| batch.column(2 + i).as_primitive::<Float64Type>()).collect();
        for row in 0..batch.num_rows() {
            let entry = out.entry(names.value(row).to_string()).or_insert_with(|| vec![Vec::new(); columns.len()]);
            let t = buckets.value(row);
            for (points, column) in entry.iter_mut().zip(&values) {
                points.push((t, if column.is_null(row) { f64::NAN } else { column.value(row) }));
            }
        }
    }
    Ok(out)
}

/// SLI and budget per `step_ms` bucket in `[from_ms, to_ms]`, per SLO (all, or `only`).
pub async fn history(
    engine: &QueryEngine,
    only: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> Result<BTreeMap<String, SloHistory>, QueryError> {
    let columns = ["sli", "error_budget_remaining"];
    Ok(bucketed(engine, only, from_ms, to_ms, step_ms, &columns)
        .await?
        .into_iter()
        .map(|(name, mut points)| {
            let budget = points.pop().unwrap_or_default();
            let sli = points.pop().unwrap_or_default();
            (name, SloHistory { sli, budget })
        })
        .collect())
}

/// One SLO's burn rates per `step_ms` bucket, for the windows asked that `slo_status` keeps
/// (see [`BURN_RATE_WINDOWS`]): (window, points).
pub async fn burn_rate_history(
    engine: &QueryEngine,
    name: &str,
    windows: &[&str],
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> Result<Vec<(String, Vec<(i64, f64)>)>, QueryError> {
    let kept: Vec<&str> = windows.iter().copied().filter(|w| BURN_RATE_WINDOWS.contains(w)).collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let columns: Vec<String> = kept.iter().map(|w| format!("burn_rate_{w}")).collect();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let points = bucketed(engine, Some(name), from_ms, to_ms, step_ms, &columns).await?.remove(name);
    Ok(kept.iter().map(|w| w.to_string()).zip(points.unwrap_or_else(|| vec![Vec::new(); kept.len()])).collect())
}

/// An SLO's oldest `slo_status` row at or after `since_ms` (the pages ask within the SLO's
/// window, so the scan is bounded by it), if any.
pub async fn first_evaluation(engine: &QueryEngine, name: &str, since_ms: i64) -> Result<Option<i64>, QueryError> {
    let frame = engine
        .context()
        .table("slo_status")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(cast(col("slo"), DataType::Utf8).eq(lit(name)).and(col("timestamp").gt_eq(ts_literal(since_ms))))
        .map_err(QueryError::from_datafusion)?
        .aggregate(
            vec![],
            vec![
                datafusion::functions_aggregate::expr_fn::min(
                    cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64),
                )
                .alias("first"),
            ],
        )
        .map_err(QueryError::from_datafusion)?;
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let first = batch.column(0).as_primitive::<Int64Type>();
        if batch.num_rows() > 0 && !first.is_null(0) {
            return Ok(Some(first.value(0)));
        }
    }
    Ok(None)
}

/// One firing of an alert of an SLO: from its `firing` transition to its `resolved` one
/// (`ended_ms` None while it still fires).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEpisode {
    pub alertname: String,
    pub severity: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// The alert's value when it fired (the burn rate, or the budget left).
    pub value: f64,
}

/// The firings of an SLO's alerts that overlap `[from_ms, to_ms]`, newest first, at most
/// `limit`, read from the `alerts` table's transitions.
pub async fn alert_episodes(
    engine: &QueryEngine,
    slo: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<AlertEpisode>, QueryError> {
    let frame = engine
        .context()
        .table("alerts")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(cast(col("slo"), DataType::Utf8).eq(lit(slo)).and(col("timestamp").lt_eq(ts_literal(to_ms))))
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            (cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64)).alias("ms"),
            cast(col("alertname"), DataType::Utf8).alias("alertname"),
            col("fingerprint"),
            cast(col("state"), DataType::Utf8).alias("state"),
            cast(col("severity"), DataType::Utf8).alias("severity"),
            col("value"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("ms").sort(true, false)])
        .map_err(QueryError::from_datafusion)?;
    let mut open: BTreeMap<String, AlertEpisode> = BTreeMap::new();
    let mut done: Vec<AlertEpisode> = Vec::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let text = |i: usize, row: usize| {
            let column = batch.column(i).as_string::<i32>();
            if column.is_null(row) { String::new() } else { column.value(row).to_string() }
        };
        let values = batch.column(5).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let (at, fingerprint, state) = (times.value(row), text(2, row), text(3, row));
            match state.as_str() {
                "firing" if !open.contains_key(&fingerprint) => {
                    let episode = AlertEpisode {
                        alertname: text(1, row),
                        severity: text(4, row),
                        started_ms: at,
                        ended_ms: None,
                        value: if values.is_null(row) { f64::NAN } else { values.value(row) },
                    };
                    open.insert(fingerprint, episode);
                }
                "resolved" => {
                    if let Some(mut episode) = open.remove(&fingerprint) {
                        episode.ended_ms = Some(at);
                        done.push(episode);
                    }
                }
                _ => {}
            }
        }
    }
    done.extend(open.into_values());
    done.retain(|e| e.ended_ms.is_none_or(|end| end >= from_ms));
    done.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| a.alertname.cmp(&b.alertname)));
    done.truncate(limit);
    Ok(done)
}

/// Deploys of a service: the first time each `service_version` of its `target_info` series was
/// seen (OTLP senders put `service.version` there), in `[from_ms, to_ms]`. Empty when no sender
/// reports versions.
pub async fn deploys(
    engine: &QueryEngine,
    service: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, String)>, QueryError> {
    let Ok(table) = engine.context().table("target_info").await else { return Ok(Vec::new()) };
    let has = |name: &str| table.schema().fields().iter().any(|f| f.name() == name);
    if !has("service_version") || !has("job") {
        return Ok(Vec::new());
    }
    let job = cast(col("job"), DataType::Utf8);
    let frame = table
        .filter(job.clone().eq(lit(service)).or(job.like(lit(format!("%/{service}")))))
        .map_err(QueryError::from_datafusion)?
        .aggregate(
            vec![cast(col("service_version"), DataType::Utf8).alias("version")],
            vec![
                datafusion::functions_aggregate::expr_fn::min(
                    cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64),
                )
                .alias("first"),
            ],
        )
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let versions = batch.column(0).as_string::<i32>();
        let first = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if versions.is_null(row) || first.is_null(row) {
                continue;
            }
            let at = first.value(row);
            if at >= from_ms && at <= to_ms {
                out.push((at, versions.value(row).to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// SLI, budget and the burn rates of `windows` of an ungrouped SLO every `step_ms` over
/// `(from_ms, to_ms]`, recomputed from stored data with `corrections` applied (see
/// [`super::replay`]). The pages chart this when a correction changed the past: the
/// `slo_status` rows keep what was computed before it.
pub async fn replayed(
    engine: &QueryEngine,
    definition: &super::SloDefinition,
    corrections: &[std::sync::Arc<super::Correction>],
    (from_ms, to_ms): (i64, i64),
    step_ms: i64,
    windows: &[&str],
) -> Result<(SloHistory, Vec<(String, Vec<(i64, f64)>)>), super::replay::ReplayError> {
    let mut history = SloHistory::default();
    let mut burns: Vec<(String, Vec<(i64, f64)>)> = windows.iter().map(|w| (w.to_string(), Vec::new())).collect();
    super::replay::replay(engine, definition.clone(), corrections, (from_ms, to_ms), step_ms, |t, statuses| {
        let Some(status) = statuses.first() else { return };
        history.sli.push((t, status.sli.unwrap_or(f64::NAN)));
        history.budget.push((t, status.error_budget_remaining.unwrap_or(f64::NAN)));
        for (window, points) in &mut burns {
            points.push((t, status.burn_rates.get(window.as_str()).copied().flatten().unwrap_or(f64::NAN)));
        }
    })
    .await?;
    Ok((history, burns))
}
