//! Log search over the `logs` table, for the dashboard's `/logs` page and a trace's logs:
//! filters by service, severity, body text or regex, one attribute and trace id, newest
//! first, a page at a time (a page ends at the time the next one starts before).

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::functions::regex::expr_fn::regexp_like;
use datafusion::functions::string::expr_fn::contains;
use datafusion::functions_nested::expr_fn::{array_element, map_extract};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::Expr;

use crate::engine::ts_literal;
use crate::output::cell;
use crate::{QueryEngine, QueryError};

/// Longest text or pattern a search takes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Most records one page holds.
pub const MAX_PAGE: usize = 500;

/// How a search matches the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextMatch {
    #[default]
    Contains,
    Regex,
}

/// What to look for; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub service: Option<String>,
    /// Records at this OpenTelemetry severity number or above (9 = INFO, 13 = WARN, 17 = ERROR).
    pub min_severity: Option<i32>,
    pub text: Option<String>,
    pub text_match: TextMatch,
    /// One attribute that must equal a value (record attributes).
    pub attribute: Option<(String, String)>,
    pub trace_id: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Where a page starts (see [`Cursor`]).
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// Where the next page starts: at records of time `time_ns` or older, past the first `skip`
/// of that very time (records sharing a timestamp are ordered by body and service, so no
/// record is skipped or shown twice at a page boundary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time_ns: i64,
    pub skip: usize,
}

impl Cursor {
    /// The cursor after `page` (newest first), which started at `from`.
    pub fn after(page: &[LogRecord], from: Option<Cursor>) -> Option<Cursor> {
        let last = page.last()?.time_ns;
        let at_last = page.iter().filter(|r| r.time_ns == last).count();
        let before = from.filter(|c| c.time_ns == last).map_or(0, |c| c.skip);
        Some(Cursor { time_ns: last, skip: before + at_last })
    }
}

/// One log record, as the pages show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord {
    pub time_ns: i64,
    pub service: String,
    pub severity_number: Option<i32>,
    pub severity_text: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    /// Attributes and resource attributes as (key, value) pairs, values as JSON text where
    /// they are not strings.
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

fn text(column: &str) -> Expr {
    cast(col(column), DataType::Utf8)
}

/// A user's filters as a predicate; a bad regex or an over-long pattern is refused.
fn predicate(query: &LogQuery) -> Result<Expr, QueryError> {
    let invalid = |message: String| QueryError::Invalid { message, position: None };
    let mut filter =
        col("timestamp").gt_eq(ts_literal(query.from_ms)).and(col("timestamp").lt_eq(ts_literal(query.to_ms)));
    if let Some(cursor) = query.after {
        filter = filter.and(cast(col("timestamp"), DataType::Int64).lt_eq(lit(cursor.time_ns)));
    }
    if let Some(service) = query.service.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.and(text("service").eq(lit(service)));
    }
    if let Some(min) = query.min_severity {
        filter = filter.and(col("severity_number").gt_eq(lit(min)));
    }
    if let Some(pattern) = query.text.as_deref().filter(|s| !s.is_empty()) {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(invalid(format!("the search text is longer than {MAX_PATTERN_BYTES} bytes")));
        }
        filter = filter.and(match query.text_match {
            TextMatch::Contains => contains(col("body"), lit(pattern)),
            TextMatch::Regex => {
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| invalid(format!("the regex does not compile: {e}")))?;
                regexp_like(col("body"), lit(pattern), None)
            }
        });
    }
    if let Some((key, value)) = &query.attribute {
        if key.len() + value.len() > MAX_PATTERN_BYTES {
            return Err(invalid(format!("the attribute filter is longer than {MAX_PATTERN_BYTES} bytes")));
        }
        filter = filter
            .and(array_element(map_extract(col("attributes"), lit(key.as_str())), lit(1i64)).eq(lit(value.as_str())));
    }
    if let Some(trace) = query.trace_id.as_deref().filter(|s| !s.is_empty()) {
        filter = filter.and(col("trace_id").eq(lit(trace.to_ascii_lowercase())));
    }
    Ok(filter)
}

/// The entries of a map cell as (key, text) pairs.
fn pairs(batch: &RecordBatch, column: usize, row: usize) -> Vec<(String, String)> {
    match cell(batch.column(column).as_ref(), row) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Log records matching `query`, newest first, at most `limit` (and [`MAX_PAGE`]).
pub async fn search(engine: &QueryEngine, query: &LogQuery) -> Result<Vec<LogRecord>, QueryError> {
    let frame = engine
        .context()
        .table("logs")
        .await
        .map_err(QueryError::from_datafusion)?
        .filter(predicate(query)?)
        .map_err(QueryError::from_datafusion)?
        .select(vec![
            cast(col("timestamp"), DataType::Int64).alias("time_ns"),
            text("service").alias("service"),
            col("severity_number"),
            text("severity_text").alias("severity_text"),
            col("body"),
            col("trace_id"),
            col("span_id"),
            col("attributes"),
            col("resource_attributes"),
        ])
        .map_err(QueryError::from_datafusion)?
        .sort(vec![col("time_ns").sort(false, false), col("body").sort(true, true), col("service").sort(true, true)])
        .map_err(QueryError::from_datafusion)?
        .limit(query.after.map_or(0, |c| c.skip), Some(query.limit.clamp(1, MAX_PAGE)))
        .map_err(QueryError::from_datafusion)?;
    let mut out = Vec::new();
    for batch in engine.read(frame).await? {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let severity = batch.column(2).as_primitive::<Int32Type>();
        let strings = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (service, severity_text, body, trace, span) = (strings(1), strings(3), strings(4), strings(5), strings(6));
        for row in 0..batch.num_rows() {
            let get = |a: &datafusion::arrow::array::StringArray| {
                if a.is_null(row) { String::new() } else { a.value(row).to_string() }
            };
            out.push(LogRecord {
                time_ns: times.value(row),
                service: get(&service),
                severity_number: (!severity.is_null(row)).then(|| severity.value(row)),
                severity_text: get(&severity_text),
                body: get(&body),
                trace_id: get(&trace),
                span_id: get(&span),
                attributes: pairs(&batch, 7, row),
                resource: pairs(&batch, 8, row),
            });
        }
    }
    Ok(out)
}

/// Every log record of one trace (up to [`MAX_PAGE`]), oldest first.
pub async fn of_trace(engine: &QueryEngine, trace_id: &str) -> Result<Vec<LogRecord>, QueryError> {
    let query = LogQuery {
        trace_id: Some(trace_id.to_string()),
        from_ms: 0,
        to_ms: i64::MAX / 1_000_000,
        limit: MAX_PAGE,
        ..LogQuery::default()
    };
    let mut records = search(engine, &query).await?;
    records.reverse();
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_counts_the_records_of_its_time_across_pages() {
        let record = |time_ns| LogRecord { time_ns, ..LogRecord::default() };
        assert_eq!(Cursor::after(&[], None), None);
        let first = Cursor::after(&[record(9), record(7), record(7)], None).unwrap();
        assert_eq!(first, Cursor { time_ns: 7, skip: 2 });
        // The next page starts at time 7 past those two; if it ends at 7 again, four are past.
        assert_eq!(Cursor::after(&[record(7), record(7)], Some(first)), Some(Cursor { time_ns: 7, skip: 4 }));
        assert_eq!(Cursor::after(&[record(7), record(5)], Some(first)), Some(Cursor { time_ns: 5, skip: 1 }));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let query = |text: &str, text_match| LogQuery {
            text: Some(text.into()),
            text_match,
            from_ms: 0,
            to_ms: 1,
            limit: 10,
            ..LogQuery::default()
        };
        let error = predicate(&query("(unclosed", TextMatch::Regex)).unwrap_err().to_string();
        assert!(error.contains("regex does not compile"), "{error}");
        assert!(predicate(&query("(unclosed", TextMatch::Contains)).is_ok(), "plain text is taken as it is");
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert!(predicate(&query(&long, TextMatch::Contains)).unwrap_err().to_string().contains("longer than"));
        assert!(predicate(&query(&long[1..], TextMatch::Contains)).is_ok(), "at the bound it is taken");
    }
}
