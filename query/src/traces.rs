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
    /// Attributes, events and the resource's attributes as JSON text.
    pub attributes: String,
    pub events: String,
    pub resource: String,
}

/// One trace as a search lists it (Jaeger's search result): its root span's service and
/// operation, its size, span and duration, and whether any span failed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The span without a parent (the earliest span when none is stored).
    pub root_service: String,
    pub root_name: String,
    pub spans: usize,
    pub services: usize,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub errors: usize,
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
            col("resource_attributes"),
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
                resource: json(12),
            });
        }
    }
    Ok(out)
}

/// The spans a query matches.
fn span_filter(query: &TraceQuery) -> Expr {
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
    filter
}

/// Traces with a span matching the query, newest first, at most `limit`, each summarised
/// over all its stored spans.
pub async fn search_traces(engine: &QueryEngine, query: &TraceQuery) -> Result<Vec<TraceSummary>, QueryError> {
    use datafusion::functions_aggregate::expr_fn::max;
    let filter = span_filter(query);
    let spans = || async { engine.context().table("spans").await.map_err(QueryError::from_datafusion) };
    let newest = spans()
        .await?
        .filter(filter)
        .map_err(QueryError::from_datafusion)?
        .aggregate(vec![col("trace_id")], vec![max(cast(col("start"), DataType::Int64)).alias("newest")])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("newest").sort(false, false)])
        .map_err(QueryError::from_datafusion)?
        .limit(0, Some(query.limit.max(1)))
        .map_err(QueryError::from_datafusion)?;
    let mut ids: Vec<String> = Vec::new();
    for batch in engine.read(newest).await? {
        let column = batch.column(0).as_string::<i32>();
        ids.extend((0..batch.num_rows()).filter(|&r| !column.is_null(r)).map(|r| column.value(r).to_string()));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let members = spans()
        .await?
        .filter(col("trace_id").in_list(ids.iter().map(|id| lit(id.as_str())).collect(), false))
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            col("trace_id"),
            (col("parent_span_id").is_null().or(col("parent_span_id").eq(lit("")))).alias("is_root"),
            text("service").alias("service"),
            text("name").alias("name"),
            cast(col("start"), DataType::Int64).alias("start_ns"),
            cast(col("end"), DataType::Int64).alias("end_ns"),
            text("status").alias("status"),
        ])
        .map_err(QueryError::from_datafusion)?;
    let mut traces: std::collections::HashMap<String, (TraceSummary, i64, bool, std::collections::BTreeSet<String>)> =
        std::collections::HashMap::new();
    for batch in engine.read(members).await? {
        let strings = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (trace, service, name, status) = (strings(0), strings(2), strings(3), strings(6));
        let is_root = batch.column(1).as_boolean().clone();
        let (start, end) = (batch.column(4).as_primitive::<Int64Type>(), batch.column(5).as_primitive::<Int64Type>());
        for row in 0..batch.num_rows() {
            let get = |a: &datafusion::arrow::array::StringArray| {
                if a.is_null(row) { String::new() } else { a.value(row).to_string() }
            };
            let (s, e) = (start.value(row), end.value(row));
            let root = is_root.is_valid(row) && is_root.value(row);
            let entry = traces.entry(get(&trace)).or_insert_with(|| {
                (
                    TraceSummary { trace_id: get(&trace), start_ns: s, ..Default::default() },
                    e,
                    false,
                    Default::default(),
                )
            });
            let (summary, last_end, has_root, services) = entry;
            // The root names the trace; without one, the earliest span does.
            if !*has_root && (root || summary.root_name.is_empty() || s < summary.start_ns) {
                summary.root_service = get(&service);
                summary.root_name = get(&name);
                *has_root = root;
            }
            summary.start_ns = summary.start_ns.min(s);
            *last_end = (*last_end).max(e);
            summary.spans += 1;
            summary.errors += usize::from(get(&status) == "error");
            services.insert(get(&service));
        }
    }
    let mut out: Vec<TraceSummary> = ids
        .iter()
        .filter_map(|id| traces.remove(id))
        .map(|(mut summary, last_end, _, services)| {
            summary.duration_ns = last_end - summary.start_ns;
            summary.services = services.len();
            summary
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.start_ns));
    Ok(out)
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
