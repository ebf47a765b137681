//! `/traces`: trace search (one row per trace, and their durations over time);
//! `/traces/{id}`: one trace as a waterfall on a time axis, with each span's attributes,
//! events (stack traces readable), the services' resource attributes and the trace's logs.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;
use serde_json::Value;
use vigil_query::PromDuration;
use vigil_query::traces::{TraceQuery, TraceSummary};

use super::logs::{LogLine, log_line};
use super::range::{RangeParams, RangePicker, resolve};
use super::svg::{Dot, Unit, nice_ticks, scatter};
use super::{Layout, PageError, render};
use crate::AppState;

/// Traces one search lists at most.
const MAX_TRACES: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub status: Option<String>,
    pub min_duration: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
}

pub struct TraceLine {
    pub trace_id: String,
    pub trace_id_short: String,
    pub start: String,
    pub root_service: String,
    pub root_name: String,
    pub spans: usize,
    pub services: usize,
    pub duration: String,
    pub errors: usize,
}

#[derive(Template)]
#[template(path = "traces.html")]
struct TracesPage {
    layout: Layout,
    picker: Option<RangePicker>,
    query: Search,
    services: Vec<String>,
    traces: Vec<TraceLine>,
    scatter: String,
    error: Option<String>,
}

/// A span event: its name, when (from the trace's start), its attributes and, for an
/// exception, the stack trace on its own.
pub struct EventView {
    pub name: String,
    pub at: String,
    pub attributes: Vec<(String, String)>,
    pub stacktrace: Option<String>,
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
    pub starts_at: String,
    pub indent: f64,
    pub offset: f64,
    pub width: f64,
    pub attributes: Vec<(String, String)>,
    pub events: Vec<EventView>,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    layout: Layout,
    trace_id: String,
    total: String,
    started: String,
    /// Time-axis ticks: (position in %, label).
    axis: Vec<(f64, String)>,
    spans: Vec<WaterfallRow>,
    /// Each service's resource attributes.
    resources: Vec<(String, Vec<(String, String)>)>,
    logs: Vec<LogLine>,
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

pub fn status_class(status: &str) -> &'static str {
    match status {
        "error" => "error",
        "ok" => "ok",
        _ => "unset",
    }
}

pub fn utc_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// A JSON object's entries as (key, text) pairs, in key order; strings without quotes.
pub fn key_values(json: &str) -> Vec<(String, String)> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else { return Vec::new() };
    let sorted: BTreeMap<String, Value> = map.into_iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// A span's events from their JSON, times relative to the trace's start.
fn events(json: &str, trace_start_ns: i64) -> Vec<EventView> {
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(json) else { return Vec::new() };
    list.iter()
        .map(|event| {
            let mut attributes = key_values(&event["attributes"].to_string());
            let stacktrace =
                attributes.iter().position(|(k, _)| k == "exception.stacktrace").map(|at| attributes.remove(at).1);
            let at = event["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .and_then(|t| t.timestamp_nanos_opt())
                .map_or_else(String::new, |t| format!("+{}", duration(t - trace_start_ns)));
            EventView { name: event["name"].as_str().unwrap_or_default().to_string(), at, attributes, stacktrace }
        })
        .collect()
}

fn trace_line(t: TraceSummary) -> TraceLine {
    TraceLine {
        trace_id_short: t.trace_id.chars().take(12).collect(),
        start: utc_ns(t.start_ns),
        root_service: t.root_service,
        root_name: t.root_name,
        spans: t.spans,
        services: t.services,
        duration: duration(t.duration_ns),
        errors: t.errors,
        trace_id: t.trace_id,
    }
}

pub async fn search(State(app): State<AppState>, Query(query): Query<Search>) -> Result<Html<String>, PageError> {
    let now = super::now_ms();
    let mut layout = Layout::new("Traces", "/traces");
    layout.refresh_seconds = 0;
    let mut error = None;
    let range = match resolve(&query.range, now, "1h", None) {
        Ok(range) => range,
        Err(e) => {
            let page = TracesPage {
                layout,
                picker: None,
                query,
                services: Vec::new(),
                traces: Vec::new(),
                scatter: String::new(),
                error: Some(e),
            };
            return render(&page);
        }
    };
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
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        limit: MAX_TRACES,
    };
    let found = vigil_query::traces::search_traces(&app.engine, &trace_query).await.map_err(PageError::internal)?;
    let services = vigil_query::traces::services(&app.engine, now - 7 * 86_400_000, now).await.unwrap_or_default();
    let hrefs: Vec<String> = found.iter().map(|t| format!("/traces/{}", t.trace_id)).collect();
    let titles: Vec<String> = found
        .iter()
        .map(|t| format!("{} · {} · {} spans · {}", t.root_service, t.root_name, t.spans, duration(t.duration_ns)))
        .collect();
    let dots: Vec<Dot<'_>> = found
        .iter()
        .zip(&hrefs)
        .zip(&titles)
        .map(|((t, href), title)| Dot {
            at_ms: t.start_ns / 1_000_000,
            value: t.duration_ns as f64 / 1e6,
            error: t.errors > 0,
            href,
            title,
        })
        .collect();
    let scatter = if dots.is_empty() {
        String::new()
    } else {
        scatter("trace durations over time", (range.from_ms, range.to_ms), Unit::Millis, &dots)
    };
    let keep: Vec<(&str, &str)> = vec![
        ("service", query.service.as_deref().unwrap_or_default()),
        ("operation", query.operation.as_deref().unwrap_or_default()),
        ("status", query.status.as_deref().unwrap_or_default()),
        ("min_duration", query.min_duration.as_deref().unwrap_or_default()),
    ];
    let picker = Some(RangePicker::new("/traces", &keep, &range, None));
    let traces = found.into_iter().map(trace_line).collect();
    render(&TracesPage { layout, picker, query, services, traces, scatter, error })
}

pub async fn trace(State(app): State<AppState>, Path(trace_id): Path<String>) -> Result<Html<String>, PageError> {
    if trace_id.len() != 32 || !trace_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PageError::not_found(format!("{trace_id:?} is not a trace id (32 hex digits)")));
    }
    let trace_id = trace_id.to_ascii_lowercase();
    let spans = vigil_query::traces::trace(&app.engine, &trace_id).await.map_err(PageError::internal)?;
    if spans.is_empty() {
        return Err(PageError::not_found(format!("no spans of trace {trace_id} are stored")));
    }
    let logs = vigil_query::logs::of_trace(&app.engine, &trace_id).await.map_err(|e| {
        PageError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the trace's logs could not be read: {e}"), e.hint())
    })?;
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
    let total_ms = total / 1e6;
    let axis = nice_ticks(0.0, total_ms, 4, Unit::Millis)
        .into_iter()
        .filter(|t| *t <= total_ms * 1.0001)
        .map(|t| (t / total_ms * 100.0, Unit::Millis.format(t)))
        .collect();
    let mut resources: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for span in &spans {
        resources.entry(span.service.clone()).or_insert_with(|| key_values(&span.resource));
    }
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
            starts_at: format!("+{}", duration(s.start_ns - start)),
            indent: 0.5 + depth(&s.span_id) as f64 * 1.0,
            offset: (s.start_ns - start) as f64 / total * 100.0,
            width: (s.duration_ns as f64 / total * 100.0).max(0.3),
            attributes: key_values(&s.attributes),
            events: events(&s.events, start),
        })
        .collect();
    let mut layout = Layout::new(format!("Trace {trace_id}"), "/traces");
    layout.refresh_seconds = 0;
    render(&TracePage {
        layout,
        trace_id,
        total: duration(end - start),
        started: utc_ns(start),
        axis,
        spans: rows,
        resources: resources.into_iter().collect(),
        logs: logs.into_iter().map(log_line).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waterfall_edge_data_renders_bounded_and_escaped() {
        let long = format!("{}<b>", "deeply.nested.operation.".repeat(30));
        let stack = format!(
            "Traceback (most recent call last):\n{}TimeoutError: <late>",
            "  File \"x.py\", line 1\n".repeat(40)
        );
        let events_json = serde_json::json!([{
            "time": "1970-01-01T00:00:00.000002Z",
            "name": "exception",
            "attributes": {"exception.type": "TimeoutError", "exception.stacktrace": stack},
        }])
        .to_string();
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
            starts_at: "+0 µs".into(),
            indent: 0.5,
            offset,
            width,
            attributes: key_values(r#"{"k":"<v>","n":3}"#),
            events: events(&events_json, 0),
        };
        let page = TracePage {
            layout: Layout::new("Trace", "/traces"),
            trace_id: "0".repeat(32),
            total: duration(0),
            started: utc_ns(0),
            axis: vec![(0.0, "0 ms".into()), (100.0, "1 ms".into())],
            spans: vec![row("a", None, 0.0, 100.0), row("b", Some("a"), 100.0, 0.3)],
            resources: vec![("svc".into(), key_values(r#"{"host.name":"<h>"}"#))],
            logs: Vec::new(),
        };
        let html = page.render().unwrap();
        assert!(
            !html.contains("<b>") && !html.contains("<timeout>") && !html.contains("<v>") && !html.contains("<late>"),
            "markup from spans is escaped"
        );
        assert_eq!(html.matches("class=\"seg error\"").count(), 2);
        assert!(html.contains("href=\"#span-a\""), "a child links its parent");
        assert_eq!(html.matches("<pre class=\"stack\">").count(), 2, "each exception's stack trace in its own block");
        assert!(html.contains("<td>n</td><td>3</td>"), "attributes are a key/value table: {html}");
        assert!(html.contains("id=\"resources\"") && html.contains("host.name"));
        assert!(html.contains("+2 µs"), "events say when, from the trace's start");
        assert_eq!(duration(0), "0 µs");
        assert_eq!(duration(1_500_000_000), "1.50 s");
    }

    #[test]
    fn no_traces_shows_how_to_send_them_and_a_bad_duration_says_why() {
        let page = TracesPage {
            layout: Layout::new("Traces", "/traces"),
            picker: None,
            query: Search { service: Some("<svc>".into()), min_duration: Some("fast".into()), ..Search::default() },
            services: vec!["<svc>".into()],
            traces: Vec::new(),
            scatter: String::new(),
            error: Some("min duration \"fast\": not a duration".into()),
        };
        let html = page.render().unwrap();
        assert!(html.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && html.contains("not a duration"));
        assert!(!html.contains("<svc>"), "{html}");
        assert!(html.contains(" selected>"), "the chosen service stays selected");
    }
}
