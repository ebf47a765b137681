//! `/logs`: log search by service, severity, body text (contains or regex), one attribute,
//! trace id and time range; newest first, a page at a time; each record expands to its
//! attributes and resource, and one with a trace id links to the trace.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use vigil_query::logs::{Cursor, LogQuery, LogRecord, TextMatch};

use super::range::{RangeParams, RangePicker, resolve};
use super::traces::utc_ns;
use super::{Layout, PageError, render};
use crate::AppState;

/// Records one page shows.
const PAGE: usize = 100;

/// The severity choices: OpenTelemetry's severity number ranges (TRACE 1–4 … FATAL 21–24).
const SEVERITIES: [(&str, i32); 6] =
    [("trace", 1), ("debug", 5), ("info", 9), ("warn", 13), ("error", 17), ("fatal", 21)];

#[derive(Debug, Default, Deserialize)]
pub struct LogSearch {
    pub service: Option<String>,
    /// The lowest severity shown (`warn` shows WARN, ERROR and FATAL).
    pub severity: Option<String>,
    pub q: Option<String>,
    /// `contains` (default) or `regex`.
    #[serde(rename = "match")]
    pub text_match: Option<String>,
    /// `key=value` on the record's attributes.
    pub attr: Option<String>,
    pub trace_id: Option<String>,
    /// The page: records at this time (ns) or older, past the first `skip` of that time.
    pub before: Option<i64>,
    pub skip: Option<usize>,
    #[serde(flatten)]
    pub range: RangeParams,
}

/// One record as a row: the line itself and what it expands to.
pub struct LogLine {
    pub time: String,
    pub severity: String,
    pub severity_class: &'static str,
    pub service: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    layout: Layout,
    picker: Option<RangePicker>,
    search: LogSearch,
    severities: Vec<&'static str>,
    logs: Vec<LogLine>,
    older: Option<String>,
    error: Option<String>,
}

/// The severity class of a record: its text when it has one of the usual names, else the
/// range its number falls in.
fn severity_class(number: Option<i32>, text: &str) -> &'static str {
    let by_text = SEVERITIES
        .iter()
        .find(|(name, _)| text.eq_ignore_ascii_case(name) || (*name == "warn" && text.eq_ignore_ascii_case("warning")));
    if let Some((name, _)) = by_text {
        return name;
    }
    match number {
        Some(n) => SEVERITIES.iter().rev().find(|(_, from)| n >= *from).map_or("trace", |(name, _)| name),
        None => "info",
    }
}

pub fn log_line(record: LogRecord) -> LogLine {
    let class = severity_class(record.severity_number, &record.severity_text);
    LogLine {
        time: utc_ns(record.time_ns),
        severity: if record.severity_text.is_empty() { class.to_uppercase() } else { record.severity_text },
        severity_class: class,
        service: record.service,
        body: record.body,
        trace_id: record.trace_id,
        span_id: record.span_id,
        attributes: record.attributes,
        resource: record.resource,
    }
}

fn older_href(search: &LogSearch, cursor: Cursor) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    let fields = [
        ("service", &search.service),
        ("severity", &search.severity),
        ("q", &search.q),
        ("match", &search.text_match),
        ("attr", &search.attr),
        ("trace_id", &search.trace_id),
        ("range", &search.range.range),
        ("from", &search.range.from),
        ("to", &search.range.to),
    ];
    for (key, value) in fields {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            url.append_pair(key, value);
        }
    }
    url.append_pair("before", &cursor.time_ns.to_string());
    url.append_pair("skip", &cursor.skip.to_string());
    format!("/logs?{}", url.finish())
}

/// The page's query, or what is wrong with its parameters.
fn log_query(search: &LogSearch, from_ms: i64, to_ms: i64) -> Result<LogQuery, String> {
    let min_severity = match search.severity.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => Some(
            SEVERITIES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, number)| *number)
                .ok_or_else(|| format!("severity {name:?} is not one of trace, debug, info, warn, error, fatal"))?,
        ),
        None => None,
    };
    let text_match = match search.text_match.as_deref().filter(|s| !s.is_empty()) {
        None | Some("contains") => TextMatch::Contains,
        Some("regex") => TextMatch::Regex,
        Some(other) => return Err(format!("match {other:?} is not contains or regex")),
    };
    let attribute = match search.attr.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(pair) => {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("attribute {pair:?}: write key=value"))?;
            Some((key.trim().to_string(), value.trim().to_string()))
        }
        None => None,
    };
    let trace_id = search.trace_id.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(id) = trace_id
        && (id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("trace id {id:?} is not 32 hex digits"));
    }
    Ok(LogQuery {
        service: search.service.clone(),
        min_severity,
        text: search.q.clone(),
        text_match,
        attribute,
        trace_id: trace_id.map(str::to_string),
        from_ms,
        to_ms,
        after: search.before.map(|time_ns| Cursor { time_ns, skip: search.skip.unwrap_or(0) }),
        limit: PAGE,
    })
}

pub async fn page(State(app): State<AppState>, Query(search): Query<LogSearch>) -> Result<Html<String>, PageError> {
    let mut layout = Layout::new("Logs", "/logs");
    layout.refresh_seconds = 0;
    let mut page = LogsPage {
        layout,
        picker: None,
        severities: SEVERITIES.iter().map(|(name, _)| *name).collect(),
        search,
        logs: Vec::new(),
        older: None,
        error: None,
    };
    let range = match resolve(&page.search.range, super::now_ms(), "1h", None) {
        Ok(range) => range,
        Err(e) => {
            page.error = Some(e);
            return render(&page);
        }
    };
    let s = &page.search;
    let keep: Vec<(&str, &str)> = vec![
        ("service", s.service.as_deref().unwrap_or_default()),
        ("severity", s.severity.as_deref().unwrap_or_default()),
        ("q", s.q.as_deref().unwrap_or_default()),
        ("match", s.text_match.as_deref().unwrap_or_default()),
        ("attr", s.attr.as_deref().unwrap_or_default()),
        ("trace_id", s.trace_id.as_deref().unwrap_or_default()),
    ];
    page.picker = Some(RangePicker::new("/logs", &keep, &range, None));
    let query = match log_query(&page.search, range.from_ms, range.to_ms) {
        Ok(query) => query,
        Err(e) => {
            page.error = Some(e);
            return render(&page);
        }
    };
    match vigil_query::logs::search(&app.engine, &query).await {
        Ok(records) => {
            if records.len() == PAGE {
                page.older = Cursor::after(&records, query.after).map(|c| older_href(&page.search, c));
            }
            page.logs = records.into_iter().map(log_line).collect();
        }
        Err(e) => page.error = Some(format!("{e} ({})", e.hint())),
    }
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(pairs: &[(&str, &str)]) -> LogSearch {
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let uri: axum::http::Uri = format!("/logs?{query}").parse().unwrap();
        Query::<LogSearch>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn parameters_become_a_query_or_say_what_is_wrong() {
        let query = log_query(
            &search(&[("severity", "warn"), ("q", "pay.*failed"), ("match", "regex"), ("attr", "order.id = A-1")]),
            0,
            1,
        )
        .unwrap();
        assert_eq!(query.min_severity, Some(13));
        assert_eq!(query.text_match, TextMatch::Regex);
        assert_eq!(query.attribute, Some(("order.id".into(), "A-1".into())));
        for (pairs, needle) in [
            (vec![("severity", "loud")], "severity \"loud\""),
            (vec![("match", "glob")], "contains or regex"),
            (vec![("attr", "novalue")], "key=value"),
            (vec![("trace_id", "xyz")], "32 hex digits"),
        ] {
            let error = log_query(&search(&pairs), 0, 1).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn severities_and_the_next_page_link() {
        assert_eq!(severity_class(Some(17), ""), "error");
        assert_eq!(severity_class(Some(10), ""), "info");
        assert_eq!(severity_class(None, "WARNING"), "warn");
        let link =
            older_href(&search(&[("q", "a b"), ("range", "6h"), ("service", "")]), Cursor { time_ns: 42, skip: 3 });
        assert_eq!(link, "/logs?q=a+b&range=6h&before=42&skip=3");
        let line = log_line(LogRecord { severity_number: Some(17), body: "<boom>".into(), ..Default::default() });
        assert_eq!((line.severity.as_str(), line.severity_class), ("ERROR", "error"));
    }

    #[test]
    fn lines_are_escaped_and_link_their_trace() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        let page = LogsPage {
            layout: Layout::new("Logs", "/logs"),
            picker: None,
            search: LogSearch::default(),
            severities: vec!["info"],
            logs: vec![log_line(LogRecord {
                body: "<script>".into(),
                trace_id: id.into(),
                attributes: vec![("k".into(), "<v>".into())],
                ..Default::default()
            })],
            older: Some("/logs?before=1".into()),
            error: None,
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>") && !html.contains("<v>"), "{html}");
        assert!(html.contains(&format!("href=\"/traces/{id}\"")), "{html}");
        assert!(html.contains("href=\"/logs?before=1\""), "older records are a page away");
    }
}
