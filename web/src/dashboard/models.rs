//! `/models`: per model version, its features' latest drift against the thresholds, PSI
//! over the last week with the PSI threshold, and the reference's bin shares beside the
//! current window's.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use vigil_drift::reference::Bins;
use vigil_drift::stats::proportions;
use vigil_drift::{DriftVerdict, Threshold, WindowOutcome};

use super::range::{RangeParams, RangePicker, resolve};
use super::svg::{LineChart, Rule, Series, Unit, paired_bars, palette};
use super::{Layout, PageError, number, percent, render};
use crate::AppState;

pub struct FeatureRow {
    pub name: String,
    pub anchor: String,
    pub state: &'static str,
    pub window: String,
    pub counts: String,
    pub psi: String,
    pub js: String,
    pub ks_p: String,
    pub wasserstein: String,
    pub chart: String,
    pub bars: String,
}

pub struct Model {
    pub name: String,
    pub version: String,
    pub anchor: String,
    pub scored: usize,
    pub drifted: usize,
    pub share: Option<String>,
    pub features: Vec<FeatureRow>,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    layout: Layout,
    picker: RangePicker,
    models: Vec<Model>,
    thresholds: String,
}

/// Letters, digits and dashes only: safe in an id and a fragment.
fn anchor(parts: &[&str]) -> String {
    parts.join("-").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

pub async fn page(State(app): State<AppState>, Query(params): Query<RangeParams>) -> Result<Html<String>, PageError> {
    let range = resolve(&params, super::now_ms(), "7d", None)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e, "pick a range from the page's range picker"))?;
    let outcomes = app.drift.latest(None, None, None).await.map_err(PageError::internal)?;
    let thresholds = app.drift.thresholds();
    let psi_threshold = thresholds.iter().find(|(s, _)| s == "psi").map(|(_, t)| t.value());
    let mut latest: BTreeMap<(String, String, String), WindowOutcome> = BTreeMap::new();
    for outcome in outcomes {
        latest.insert((outcome.key.model.clone(), outcome.key.version.clone(), outcome.key.feature.clone()), outcome);
    }
    let mut models: BTreeMap<(String, String), Model> = BTreeMap::new();
    for reference in app.drift.references() {
        let key = &reference.key;
        let outcome = latest.get(&(key.model.clone(), key.version.clone(), key.feature.clone()));
        // The API's verdict; a feature with no window yet has no data.
        let state = outcome.map_or("no_data", |o| match o.verdict(&thresholds) {
            DriftVerdict::Drifted => "drifted",
            DriftVerdict::Ok => "ok",
            DriftVerdict::InsufficientSamples => "insufficient_samples",
            DriftVerdict::NoReference => "no_reference",
        });
        let history = app
            .drift
            .history(key, range.from_ms * 1_000_000, range.to_ms * 1_000_000)
            .await
            .map_err(PageError::internal)?;
        let psi: Vec<(i64, f64)> =
            history.iter().filter_map(|w| w.scores.get("psi").map(|v| (w.window_start_ns / 1_000_000, *v))).collect();
        let rules: Vec<Rule<'_>> =
            psi_threshold.map(|value| Rule { label: "PSI threshold", value, class: "page" }).into_iter().collect();
        let chart = LineChart {
            title: "PSI per window",
            span: Some((range.from_ms, range.to_ms)),
            unit: Unit::Plain,
            series: &[Series { name: "PSI", points: &psi, class: palette(0) }],
            rules: &rules,
            markers: &[],
            bands: &[],
        }
        .render();
        let labels: Vec<String> = match &reference.bins {
            Bins::Numeric { edges } => (0..=edges.len())
                .map(|i| match i {
                    0 => format!("≤{}", number(edges.first().copied())),
                    i if i == edges.len() => format!(">{}", number(edges.last().copied())),
                    i => format!("≤{}", number(Some(edges[i]))),
                })
                .collect(),
            Bins::Categorical { categories } => {
                categories.iter().cloned().chain(std::iter::once("other".to_string())).collect()
            }
        };
        let current =
            outcome.filter(|o| !o.bin_counts.is_empty()).map(|o| proportions(&o.bin_counts)).unwrap_or_default();
        let bars = paired_bars(&labels, &proportions(&reference.counts), &current);
        let score = |name: &str| number(outcome.and_then(|o| o.scores.get(name).copied()));
        let entry = models.entry((key.model.clone(), key.version.clone())).or_insert_with(|| Model {
            name: key.model.clone(),
            version: key.version.clone(),
            anchor: anchor(&[&key.model, &key.version]),
            scored: 0,
            drifted: 0,
            share: None,
            features: Vec::new(),
        });
        entry.scored += usize::from(state != "no_data");
        entry.drifted += usize::from(state == "drifted");
        entry.features.push(FeatureRow {
            name: key.feature.clone(),
            anchor: anchor(&[&key.model, &key.version, &key.feature]),
            state,
            window: outcome
                .map(|o| o.window_start.replace('T', " ").trim_end_matches('Z').to_string())
                .unwrap_or_else(|| "–".into()),
            counts: format!("{} / {}", reference.sample_count(), outcome.map_or(0, |o| o.current_count)),
            psi: score("psi"),
            js: score("js_distance"),
            ks_p: score("ks_p"),
            wasserstein: score("wasserstein"),
            chart,
            bars,
        });
    }
    let mut models: Vec<Model> = models.into_values().collect();
    for model in &mut models {
        model.share = (model.scored > 0).then(|| percent(Some(model.drifted as f64 / model.scored as f64), 0));
    }
    let thresholds = thresholds
        .iter()
        .map(|(s, t)| match t {
            Threshold::AtLeast(v) => format!("{s} ≥ {}", number(Some(*v))),
            Threshold::Below(v) => format!("{s} < {}", number(Some(*v))),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let picker = RangePicker::new("/models", &[], &range, None);
    render(&ModelsPage { layout: Layout::new("Models", "/models"), picker, models, thresholds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::svg;

    #[test]
    fn a_model_without_scores_renders_dashes_not_nan() {
        let feature = FeatureRow {
            name: "x".repeat(300),
            anchor: anchor(&["m", "v 1", "f/x"]),
            state: "no_data",
            window: "–".into(),
            counts: "10 / 0".into(),
            psi: number(Some(f64::NAN)),
            js: number(None),
            ks_p: number(Some(f64::INFINITY)),
            wasserstein: number(None),
            chart: LineChart {
                title: "PSI",
                span: None,
                unit: Unit::Plain,
                series: &[Series { name: "PSI", points: &[], class: "s0" }],
                rules: &[],
                markers: &[],
                bands: &[],
            }
            .render(),
            bars: svg::paired_bars(&["a".into(), "other".into()], &[0.5, 0.5], &[]),
        };
        assert_eq!(feature.anchor, "m-v-1-f-x", "anchors are id-safe");
        let range = crate::dashboard::range::TimeRange { from_ms: 0, to_ms: 1, key: "7d".into() };
        let page = ModelsPage {
            layout: Layout::new("Models", "/models"),
            picker: RangePicker::new("/models", &[], &range, None),
            models: vec![Model {
                name: "m".into(),
                version: String::new(),
                anchor: "m".into(),
                scored: 0,
                drifted: 0,
                share: None,
                features: vec![feature],
            }],
            thresholds: "psi ≥ 0.2".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("NaN") && !html.contains("inf"), "no NaN or inf on the page");
        assert!(html.contains("no data in this range"), "an empty chart says so");
        assert!(html.contains("0 of 0 scored features"));
        assert!(html.contains("swatch fill ref") && html.contains("reference"), "the bars say which is the reference");
    }
}
