//! Trace search and trace assembly over the `spans` table, for the dashboard.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::Expr;

use crate::engine::ts_literal;
use crate::output::cell;
use crate::{QueryEngine, QueryError};

/// What to look for; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// `ok`, `error` or `unset`.
    pub status: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: usize,
}

/// One span, as the pages show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: String,
    pub status_message: String,
    /// Attributes and events as JSON text.
    pub attributes: String,
    pub events: String,
}

fn text(column: &str) -> Expr {
    cast(col(column), DataType::Utf8)
}

async fn rows(
    engine: &QueryEngine,
    filter: Expr,
    newest_first: bool,
    limit: Option<usize>,
) -> Result<Vec<SpanRow>, QueryError> {
    let frame = engine
        .context()
        .table("spans")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(filter)
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            col("trace_id"),
            col("span_id"),
            col("parent_span_id"),
            text("service").alias("service"),
            text("name").alias("name"),
            text("kind").alias("kind"),
            (cast(col("start"), DataType::Int64)).alias("start_ns"),
            col("duration"),
            text("status").alias("status"),
            col("status_message"),
            col("attributes"),
            col("events"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("start_ns").sort(!newest_first, false)])
        .map_err(QueryError::from_datafusion)?
        .limit(0, limit)
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let strings = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (trace, span, parent, service, name, kind) =
            (strings(0), strings(1), strings(2), strings(3), strings(4), strings(5));
        let start = batch.column(6).as_primitive::<Int64Type>();
        let duration = batch.column(7).as_primitive::<Int64Type>();
        let (status, message) = (strings(8), strings(9));
        for row in 0..batch.num_rows() {
            let get = |a: &datafusion::arrow::array::StringArray| {
                if a.is_null(row) { String::new() } else { a.value(row).to_string() }
            };
            let json = |i: usize| {
                cell(batch.column(i).as_ref(), row)
                    .map(|v| if v.is_null() { String::new() } else { v.to_string() })
                    .unwrap_or_default()
            };
            out.push(SpanRow {
                trace_id: get(&trace),
                span_id: get(&span),
                parent_span_id: (!parent.is_null(row) && !parent.value(row).is_empty())
                    .then(|| parent.value(row).to_string()),
                service: get(&service),
                name: get(&name),
                kind: get(&kind),
                start_ns: start.value(row),
                duration_ns: duration.value(row),
                status: get(&status),
                status_message: get(&message),
                attributes: json(10),
                events: json(11),
            });
        }
    }
    Ok(out)
}

/// Spans matching the query, newest first, at most `limit`.
pub async fn search(engine: &QueryEngine, query: &TraceQuery) -> Result<Vec<SpanRow>, QueryError> {
    let mut filter = col("start").gt_eq(ts_literal(query.from_ms)).and(col("start").lt_eq(ts_literal(query.to_ms)));
    if let Some(service) = query.service.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.and(text("service").eq(lit(service)));
    }
    if let Some(operation) = query.operation.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.and(text("name").eq(lit(operation)));
    }
    if let Some(status) = query.status.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.and(text("status").eq(lit(status)));
    }
    if let Some(min) = query.min_duration_ns {
        filter = filter.and(col("duration").gt_eq(lit(min)));
    }
    rows(engine, filter, true, Some(query.limit.max(1))).await
}

/// Every span of one trace, by start time.
pub async fn trace(engine: &QueryEngine, trace_id: &str) -> Result<Vec<SpanRow>, QueryError> {
    rows(engine, col("trace_id").eq(lit(trace_id)), false, None).await
}

/// Services and operations seen in `[from, to]`, for the search form.
pub async fn services(engine: &QueryEngine, from_ms: i64, to_ms: i64) -> Result<Vec<String>, QueryError> {
    let frame = engine
        .context()
        .table("spans")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(col("start").gt_eq(ts_literal(from_ms)).and(col("start").lt_eq(ts_literal(to_ms))))
        .map_err(QueryError::from_datafusion)?
        .aggregate(vec![text("service").alias("service")], vec![])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("service").sort(true, false)])
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in frame.collect().await.map_err(QueryError::from_datafusion)? {
        let names = batch.column(0).as_string::<i32>();
        out.extend((0..batch.num_rows()).filter(|r| !names.is_null(*r)).map(|r| names.value(r).to_string()));
    }
    Ok(out)
}
