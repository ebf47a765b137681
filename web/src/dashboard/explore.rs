//! `/explore`: a PromQL or SQL box, a chart and a table; the URL carries the query, so a
//! result is shared by its link.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use serde_json::Value;
use vigil_query::promql::{EvalRange, PromResult};

use super::range::{RangeParams, RangePicker, resolve};
use super::svg::{LineChart, Series, Unit, palette};
use super::{Layout, PageError, render};
use crate::AppState;

/// Rows shown at most; the chart still uses every series.
const MAX_ROWS: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub lang: Option<String>,
    pub q: Option<String>,
    /// `stacked` draws each series on top of the ones before (PromQL charts).
    pub mode: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
}

/// A result cell: its text, where it links (a trace id links to its trace) and the colour
/// of its series in the chart.
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub swatch: Option<&'static str>,
}

impl Cell {
    fn text(text: String) -> Cell {
        Cell { text, href: None, swatch: None }
    }
}

#[derive(Template)]
#[template(path = "explore.html")]
struct ExplorePage {
    layout: Layout,
    picker: Option<RangePicker>,
    lang: String,
    query: String,
    stacked: bool,
    stack_href: String,
    error: Option<String>,
    chart: Option<String>,
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
    truncated: bool,
}

fn label_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    let inner: Vec<String> =
        labels.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}{{{}}}", labels.get("__name__").map_or("", String::as_str), inner.join(", "))
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A cell of a SQL result: trace ids (32 hex digits in a `trace_id` column) link to the trace.
fn sql_cell(column: &str, value: &Value) -> Cell {
    let text = cell_text(value);
    let is_trace = column.ends_with("trace_id") && text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    Cell { href: is_trace.then(|| format!("/traces/{text}")), text, swatch: None }
}

/// Each series' points raised by the series before it at the same times (a stacked chart).
fn stack(series: &[Vec<(i64, f64)>]) -> Vec<Vec<(i64, f64)>> {
    let mut below: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    series
        .iter()
        .map(|points| {
            points
                .iter()
                .map(|&(t, v)| {
                    let base = below.entry(t).or_insert(0.0);
                    if v.is_finite() {
                        *base += v;
                    }
                    (t, *base)
                })
                .collect()
        })
        .collect()
}

fn page_href(lang: &str, query: &str, params: &RangeParams, mode: &str) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    url.append_pair("lang", lang).append_pair("q", query);
    for (key, value) in [("range", &params.range), ("from", &params.from), ("to", &params.to)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            url.append_pair(key, value);
        }
    }
    if !mode.is_empty() {
        url.append_pair("mode", mode);
    }
    format!("/explore?{}", url.finish())
}

pub async fn page(State(app): State<AppState>, Query(params): Query<Params>) -> Result<Html<String>, PageError> {
    let lang = if params.lang.as_deref() == Some("sql") { "sql" } else { "promql" }.to_string();
    let query = params.q.clone().unwrap_or_default();
    let stacked = params.mode.as_deref() == Some("stacked");
    let range_params = params.range.clone();
    let now = super::now_ms();
    let mut page = ExplorePage {
        layout: Layout::new("Explore", "/explore"),
        picker: None,
        lang: lang.clone(),
        query: query.clone(),
        stacked,
        stack_href: page_href(&lang, &query, &range_params, if stacked { "" } else { "stacked" }),
        error: None,
        chart: None,
        columns: Vec::new(),
        rows: Vec::new(),
        truncated: false,
    };
    page.layout.refresh_seconds = 0;
    let range = match resolve(&range_params, now, "1h", None) {
        Ok(range) => range,
        Err(e) => {
            page.error = Some(e);
            return render(&page);
        }
    };
    let mode = if stacked { "stacked" } else { "" };
    page.picker = Some(RangePicker::new("/explore", &[("lang", &lang), ("q", &query), ("mode", mode)], &range, None));
    if query.trim().is_empty() {
        return render(&page);
    }
    if lang == "promql" {
        let eval = EvalRange::range(range.from_ms, range.to_ms, range.step_ms(240));
        match app.engine.promql(&query, eval).await {
            Ok(PromResult::Matrix(series)) => {
                let names: Vec<String> = series.iter().map(|s| label_text(&s.labels)).collect();
                let raw: Vec<Vec<(i64, f64)>> = series.iter().map(|s| s.points.clone()).collect();
                let drawn = if stacked { stack(&raw) } else { raw };
                let lines: Vec<Series<'_>> = drawn
                    .iter()
                    .zip(&names)
                    .enumerate()
                    .map(|(i, (points, name))| Series { name, points, class: palette(i) })
                    .collect();
                page.chart = Some(
                    LineChart {
                        title: &query,
                        span: Some((range.from_ms, range.to_ms)),
                        unit: Unit::Plain,
                        series: &lines,
                        rules: &[],
                        markers: &[],
                        bands: &[],
                    }
                    .render(),
                );
                page.columns = vec!["series".into(), "last value".into(), "at (UTC)".into()];
                for (i, (s, name)) in series.iter().zip(&names).enumerate() {
                    if let Some((t, v)) = s.points.last() {
                        page.rows.push(vec![
                            Cell { text: name.clone(), href: None, swatch: Some(palette(i)) },
                            Cell::text(super::number(Some(*v))),
                            Cell::text(super::utc(*t)),
                        ]);
                    }
                }
            }
            Ok(PromResult::Scalar(t, v)) => {
                page.columns = vec!["scalar".into(), "at (UTC)".into()];
                page.rows.push(vec![Cell::text(super::number(Some(v))), Cell::text(super::utc(t))]);
            }
            Ok(PromResult::String(_, s)) => {
                page.columns = vec!["string".into()];
                page.rows.push(vec![Cell::text(s)]);
            }
            Ok(PromResult::Vector(samples)) => {
                page.columns = vec!["series".into(), "value".into()];
                page.rows = samples
                    .iter()
                    .map(|s| vec![Cell::text(label_text(&s.labels)), Cell::text(super::number(Some(s.value)))])
                    .collect();
            }
            Err(e) => page.error = Some(e.to_string()),
        }
    } else {
        match app.engine.sql(&query).await {
            Ok(result) => match vigil_query::output::to_json(&result) {
                Ok(document) => {
                    page.columns =
                        document["columns"].as_array().map(|c| c.iter().map(cell_text).collect()).unwrap_or_default();
                    let rows = document["rows"].as_array().cloned().unwrap_or_default();
                    page.truncated = rows.len() > MAX_ROWS;
                    page.rows = rows
                        .iter()
                        .take(MAX_ROWS)
                        .map(|r| {
                            r.as_array()
                                .map(|c| c.iter().zip(&page.columns).map(|(v, name)| sql_cell(name, v)).collect())
                                .unwrap_or_default()
                        })
                        .collect();
                    // A timestamp and a numeric value column chart as one line.
                    let position = |name: &str| page.columns.iter().position(|c| c == name);
                    if let (Some(t), Some(v)) = (position("timestamp"), position("value")) {
                        let mut points: Vec<(i64, f64)> = rows
                            .iter()
                            .filter_map(|r| {
                                let time =
                                    chrono::DateTime::parse_from_rfc3339(r.get(t)?.as_str()?).ok()?.timestamp_millis();
                                Some((time, r.get(v)?.as_f64()?))
                            })
                            .collect();
                        points.sort_by_key(|p| p.0);
                        if !points.is_empty() {
                            page.chart = Some(
                                LineChart {
                                    title: &query,
                                    span: None,
                                    unit: Unit::Plain,
                                    series: &[Series { name: "value", points: &points, class: palette(0) }],
                                    rules: &[],
                                    markers: &[],
                                    bands: &[],
                                }
                                .render(),
                            );
                        }
                    }
                }
                Err(e) => page.error = Some(e.to_string()),
            },
            Err(e) => page.error = Some(format!("{e} ({})", e.hint())),
        }
    }
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_odd_cells_render_escaped() {
        let page = ExplorePage {
            layout: Layout::new("Explore", "/explore"),
            picker: None,
            lang: "sql".into(),
            query: "SELECT '<b>'".into(),
            stacked: false,
            stack_href: String::new(),
            error: Some("syntax error near <".into()),
            chart: None,
            columns: vec!["<col>".into()],
            rows: vec![
                vec![sql_cell("<col>", &Value::Null)],
                vec![sql_cell("<col>", &serde_json::json!("NaN"))],
                vec![sql_cell("<col>", &serde_json::json!({"a": 1}))],
            ],
            truncated: false,
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<b>") && !html.contains("<col>") && !html.contains("near <"), "{html}");
        assert!(html.contains("3 rows"));
        assert_eq!(
            label_text(&std::collections::BTreeMap::from([
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "a".to_string())
            ])),
            "up{job=\"a\"}"
        );
    }

    #[test]
    fn trace_ids_link_and_stacks_add_up() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(sql_cell("trace_id", &serde_json::json!(id)).href.as_deref(), Some(&*format!("/traces/{id}")));
        assert_eq!(sql_cell("trace_id", &serde_json::json!("not-an-id")).href, None);
        assert_eq!(sql_cell("name", &serde_json::json!(id)).href, None, "only trace id columns link");
        let stacked = stack(&[vec![(0, 1.0), (10, 2.0)], vec![(0, 3.0), (10, f64::NAN), (20, 5.0)]]);
        assert_eq!(stacked[1], vec![(0, 4.0), (10, 2.0), (20, 5.0)]);
    }
}
