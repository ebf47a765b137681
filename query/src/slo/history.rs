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

/// SLI and budget per `step_ms` bucket in `[from_ms, to_ms]`, per SLO (all, or `only`).
pub async fn history(
    engine: &QueryEngine,
    only: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> Result<BTreeMap<String, SloHistory>, QueryError> {
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
            vec![avg(col("sli")).alias("sli"), avg(col("error_budget_remaining")).alias("budget")],
        )
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("bucket").sort(true, false)])
        .map_err(QueryError::from_datafusion)?;
    let mut out: BTreeMap<String, SloHistory> = BTreeMap::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let names = batch.column(0).as_string::<i32>();
        let buckets = batch.column(1).as_primitive::<Int64Type>();
        let sli = batch.column(2).as_primitive::<Float64Type>();
        let budget = batch.column(3).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let entry = out.entry(names.value(row).to_string()).or_default();
            let t = buckets.value(row);
            entry.sli.push((t, if sli.is_null(row) { f64::NAN } else { sli.value(row) }));
            entry.budget.push((t, if budget.is_null(row) { f64::NAN } else { budget.value(row) }));
        }
    }
    Ok(out)
}

/// The newest `limit` alert transitions of one SLO from the `alerts` table: (time in ms,
/// severity, state).
pub async fn alert_history(
    engine: &QueryEngine,
    slo: &str,
    limit: usize,
) -> Result<Vec<(i64, String, String)>, QueryError> {
    let frame = engine
        .context()
        .table("alerts")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(cast(col("slo"), DataType::Utf8).eq(lit(slo)))
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            (cast(col("timestamp"), DataType::Int64) / lit(1_000_000i64)).alias("ms"),
            cast(col("severity"), DataType::Utf8).alias("severity"),
            cast(col("state"), DataType::Utf8).alias("state"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("ms").sort(false, false)])
        .map_err(QueryError::from_datafusion)?
        .limit(0, Some(limit))
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let severities = batch.column(1).as_string::<i32>();
        let states = batch.column(2).as_string::<i32>();
        for row in 0..batch.num_rows() {
            let text = |a: &datafusion::arrow::array::StringArray| {
                if a.is_null(row) { String::new() } else { a.value(row).to_string() }
            };
            out.push((times.value(row), text(severities), text(states)));
        }
    }
    Ok(out)
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
