//! `/explore`: a PromQL or SQL box, a chart and a table; the URL carries the query, so a
//! result is shared by its link.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use serde_json::Value;
use vigil_query::PromDuration;
use vigil_query::promql::{EvalRange, PromResult};

use super::svg::{Series, line_chart};
use super::{Layout, PageError, render};
use crate::AppState;

/// Rows shown at most; the chart still uses every series.
const MAX_ROWS: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub lang: Option<String>,
    pub q: Option<String>,
    pub range: Option<String>,
}

#[derive(Template)]
#[template(path = "explore.html")]
struct ExplorePage {
    layout: Layout,
    lang: String,
    query: String,
    range: String,
    error: Option<String>,
    chart: Option<String>,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
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

pub async fn page(State(app): State<AppState>, Query(params): Query<Params>) -> Result<Html<String>, PageError> {
    let lang = if params.lang.as_deref() == Some("sql") { "sql" } else { "promql" }.to_string();
    let query = params.q.clone().unwrap_or_default();
    let range = params.range.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "1h".into());
    let mut page = ExplorePage {
        layout: Layout::new("Explore", "/explore"),
        lang: lang.clone(),
        query: query.clone(),
        range: range.clone(),
        error: None,
        chart: None,
        columns: Vec::new(),
        rows: Vec::new(),
        truncated: false,
    };
    page.layout.refresh_seconds = 0;
    if query.trim().is_empty() {
        return render(&page);
    }
    let range_ms = match range.parse::<PromDuration>() {
        Ok(d) => d.0.as_millis() as i64,
        Err(e) => {
            page.error = Some(format!("range {range:?}: {e}"));
            return render(&page);
        }
    };
    let now = super::now_ms();
    if lang == "promql" {
        let step = (range_ms / 240).max(1000);
        let eval = EvalRange::range(now - range_ms, now, step);
        match app.engine.promql(&query, eval).await {
            Ok(PromResult::Matrix(series)) => {
                let names: Vec<String> = series.iter().map(|s| label_text(&s.labels)).collect();
                let classes = ["s0", "s1", "s2", "s3"];
                let lines: Vec<Series<'_>> = series
                    .iter()
                    .zip(&names)
                    .enumerate()
                    .map(|(i, (s, name))| Series { name, points: &s.points, class: classes[i % classes.len()] })
                    .collect();
                page.chart = Some(line_chart(&query, Some((now - range_ms, now)), &lines, &[], &[]));
                page.columns = vec!["series".into(), "last value".into(), "at (UTC)".into()];
                for (s, name) in series.iter().zip(&names) {
                    if let Some((t, v)) = s.points.last() {
                        page.rows.push(vec![name.clone(), super::number(Some(*v)), super::utc(*t)]);
                    }
                }
            }
            Ok(PromResult::Scalar(t, v)) => {
                page.columns = vec!["scalar".into(), "at (UTC)".into()];
                page.rows.push(vec![super::number(Some(v)), super::utc(t)]);
            }
            Ok(PromResult::String(_, s)) => {
                page.columns = vec!["string".into()];
                page.rows.push(vec![s]);
            }
            Ok(PromResult::Vector(samples)) => {
                page.columns = vec!["series".into(), "value".into()];
                page.rows = samples.iter().map(|s| vec![label_text(&s.labels), super::number(Some(s.value))]).collect();
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
                        .map(|r| r.as_array().map(|c| c.iter().map(cell_text).collect()).unwrap_or_default())
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
                            page.chart = Some(line_chart(
                                &query,
                                None,
                                &[Series { name: "value", points: &points, class: "s0" }],
                                &[],
                                &[],
                            ));
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
            lang: "sql".into(),
            query: "SELECT '<b>'".into(),
            range: "1h".into(),
            error: Some("syntax error near <".into()),
            chart: None,
            columns: vec!["<col>".into()],
            rows: vec![
                vec![cell_text(&Value::Null)],
                vec![cell_text(&serde_json::json!("NaN"))],
                vec![cell_text(&serde_json::json!({"a": 1}))],
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
}
