//! `/traces`: span search; `/traces/{id}`: one trace as a waterfall with span details.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;
use vigil_query::PromDuration;
use vigil_query::traces::{SpanRow, TraceQuery};

use super::{Layout, PageError, render};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub status: Option<String>,
    pub min_duration: Option<String>,
    pub range: Option<String>,
}

pub struct SpanLine {
    pub trace_id: String,
    pub trace_id_short: String,
    pub start: String,
    pub service: String,
    pub name: String,
    pub duration: String,
    pub status: String,
    pub status_class: &'static str,
}

#[derive(Template)]
#[template(path = "traces.html")]
struct TracesPage {
    layout: Layout,
    query: Search,
    range: String,
    services: Vec<String>,
    spans: Vec<SpanLine>,
    error: Option<String>,
}

pub struct WaterfallRow {
    pub span_id: String,
    pub parent: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub status_class: &'static str,
    pub status_message: String,
    pub duration: String,
    pub indent: f64,
    pub offset: f64,
    pub width: f64,
    pub attributes: String,
    pub events: String,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    layout: Layout,
    trace_id: String,
    total: String,
    started: String,
    spans: Vec<WaterfallRow>,
}

/// A duration in nanoseconds, in the unit that reads best.
pub fn duration(ns: i64) -> String {
    let ns = ns.max(0) as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.0} µs", ns / 1e3)
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "error" => "error",
        "ok" => "ok",
        _ => "unset",
    }
}

fn utc_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

pub async fn search(State(app): State<AppState>, Query(query): Query<Search>) -> Result<Html<String>, PageError> {
    let now = super::now_ms();
    let range = query.range.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "1h".into());
    let mut error = None;
    let range_ms = range.parse::<PromDuration>().map(|d| d.0.as_millis() as i64).unwrap_or_else(|e| {
        error = Some(format!("range {range:?}: {e}"));
        3_600_000
    });
    let min_duration_ns = match query.min_duration.as_deref().filter(|d| !d.is_empty()) {
        Some(text) => match text.parse::<PromDuration>() {
            Ok(d) => Some(d.0.as_nanos() as i64),
            Err(e) => {
                error = Some(format!("min duration {text:?}: {e} (write e.g. 250ms or 2s)"));
                None
            }
        },
        None => None,
    };
    let trace_query = TraceQuery {
        service: query.service.clone(),
        operation: query.operation.clone(),
        status: query.status.clone(),
        min_duration_ns,
        from_ms: now - range_ms,
        to_ms: now,
        limit: 100,
    };
    let spans = vigil_query::traces::search(&app.engine, &trace_query).await.map_err(PageError::internal)?;
    let services = vigil_query::traces::services(&app.engine, now - 7 * 86_400_000, now).await.unwrap_or_default();
    let spans = spans
        .into_iter()
        .map(|s: SpanRow| SpanLine {
            trace_id_short: s.trace_id.chars().take(12).collect(),
            trace_id: s.trace_id,
            start: utc_ns(s.start_ns),
            service: s.service,
            name: s.name,
            duration: duration(s.duration_ns),
            status_class: status_class(&s.status),
            status: s.status,
        })
        .collect();
    let mut layout = Layout::new("Traces", "/traces");
    layout.refresh_seconds = 0;
    render(&TracesPage { layout, query, range, services, spans, error })
}

pub async fn trace(State(app): State<AppState>, Path(trace_id): Path<String>) -> Result<Html<String>, PageError> {
    if trace_id.len() != 32 || !trace_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PageError::not_found(format!("{trace_id:?} is not a trace id (32 hex digits)")));
    }
    let spans =
        vigil_query::traces::trace(&app.engine, &trace_id.to_ascii_lowercase()).await.map_err(PageError::internal)?;
    if spans.is_empty() {
        return Err(PageError::not_found(format!("no spans of trace {trace_id} are stored")));
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.start_ns + s.duration_ns).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    // Depth from parent links; spans whose parent is missing sit at the top level.
    let parents: HashMap<&str, Option<&str>> =
        spans.iter().map(|s| (s.span_id.as_str(), s.parent_span_id.as_deref())).collect();
    let depth = |id: &str| -> usize {
        let mut depth = 0;
        let mut current = id;
        while let Some(Some(parent)) = parents.get(current) {
            if depth > 64 || !parents.contains_key(parent) {
                break;
            }
            depth += 1;
            current = parent;
        }
        depth
    };
    let rows = spans
        .iter()
        .map(|s| WaterfallRow {
            span_id: s.span_id.clone(),
            parent: s.parent_span_id.clone(),
            service: s.service.clone(),
            name: s.name.clone(),
            kind: s.kind.clone(),
            status: s.status.clone(),
            status_class: status_class(&s.status),
            status_message: s.status_message.clone(),
            duration: duration(s.duration_ns),
            indent: 0.5 + depth(&s.span_id) as f64 * 1.0,
            offset: (s.start_ns - start) as f64 / total * 100.0,
            width: (s.duration_ns as f64 / total * 100.0).max(0.3),
            attributes: s.attributes.clone(),
            events: if s.events == "[]" { String::new() } else { s.events.clone() },
        })
        .collect();
    let mut layout = Layout::new(format!("Trace {trace_id}"), "/traces");
    layout.refresh_seconds = 0;
    render(&TracePage { layout, trace_id, total: duration(end - start), started: utc_ns(start), spans: rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waterfall_edge_data_renders_bounded_and_escaped() {
        let long = format!("{}<b>", "deeply.nested.operation.".repeat(30));
        let row = |id: &str, parent: Option<&str>, offset: f64, width: f64| WaterfallRow {
            span_id: id.into(),
            parent: parent.map(String::from),
            service: "svc".into(),
            name: long.clone(),
            kind: "server".into(),
            status: "error".into(),
            status_class: "error",
            status_message: "<timeout>".into(),
            duration: duration(0),
            indent: 0.5,
            offset,
            width,
            attributes: r#"{"k":"<v>"}"#.into(),
            events: String::new(),
        };
        let page = TracePage {
            layout: Layout::new("Trace", "/traces"),
            trace_id: "0".repeat(32),
            total: duration(0),
            started: utc_ns(0),
            spans: vec![row("a", None, 0.0, 100.0), row("b", Some("a"), 100.0, 0.3)],
        };
        let html = page.render().unwrap();
        assert!(
            !html.contains("<b>") && !html.contains("<timeout>") && !html.contains("<v>"),
            "markup from spans is escaped"
        );
        assert_eq!(html.matches("class=\"seg error\"").count(), 2);
        assert!(html.contains("href=\"#span-a\""), "a child links its parent");
        assert_eq!(duration(0), "0 µs");
        assert_eq!(duration(1_500_000_000), "1.50 s");
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;

    #[test]
    fn no_spans_shows_how_to_send_them_and_a_bad_duration_says_why() {
        let page = TracesPage {
            layout: Layout::new("Traces", "/traces"),
            query: Search { service: Some("<svc>".into()), min_duration: Some("fast".into()), ..Search::default() },
            range: "1h".into(),
            services: vec!["<svc>".into()],
            spans: Vec::new(),
            error: Some("min duration \"fast\": not a duration".into()),
        };
        let html = page.render().unwrap();
        assert!(html.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && html.contains("not a duration"));
        assert!(!html.contains("<svc>"), "{html}");
        assert!(html.contains(" selected>"), "the chosen service stays selected");
    }
}
