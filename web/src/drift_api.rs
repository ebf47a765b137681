//! Model drift endpoints: references, current data, scores and the per-model view.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_drift::reference::{Bins, Reference};
use vigil_drift::{DriftError, FeatureKey, request};

use crate::AppState;
use crate::error::ApiError;

impl From<DriftError> for ApiError {
    fn from(e: DriftError) -> Self {
        let hint = e.hint();
        match e {
            // A query limit or a damaged segment answers as it does for any query.
            DriftError::Read(query) => ApiError::from(query),
            DriftError::Invalid { .. } => ApiError::bad_request(e.to_string(), hint),
            DriftError::NoReference(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string(), hint),
            DriftError::Storage(ref storage) if storage.is_transient() => ApiError::overloaded(e.to_string(), hint),
            DriftError::Storage(_) | DriftError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), hint)
            }
        }
    }
}

fn reference_json(reference: &Reference) -> Value {
    let mut out = json!({
        "reference_id": reference.id,
        "model": reference.key.model,
        "version": reference.key.version,
        "feature": reference.key.feature,
        "type": reference.bins.kind(),
        "counts": reference.counts,
        "sample_count": reference.sample_count(),
        "created": vigil_drift::rfc3339(reference.created_ns),
        "raw_values": reference.values.is_some(),
    });
    match &reference.bins {
        Bins::Numeric { edges } => out["edges"] = json!(edges),
        Bins::Categorical { categories } => {
            out["categories"] = json!(categories);
            out["other_bin"] = json!(vigil_drift::reference::OTHER_CATEGORY);
        }
    }
    if let (Some(mean), Some(std)) = (reference.mean, reference.std) {
        out["mean"] = json!(mean);
        out["std"] = json!(std);
    }
    out
}

/// `POST /api/v1/drift/reference`.
pub async fn register_reference(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let reference = app.drift.register_reference(&body?).await?;
    Ok(Json(reference_json(&reference)))
}

#[derive(Debug, Default, Deserialize)]
pub struct FeatureFilter {
    model: Option<String>,
    version: Option<String>,
    feature: Option<String>,
    /// History from this time (RFC 3339 or Unix seconds).
    start: Option<String>,
    end: Option<String>,
}

impl FeatureFilter {
    fn matches(&self, key: &FeatureKey) -> bool {
        self.model.as_ref().is_none_or(|m| *m == key.model)
            && self.version.as_ref().is_none_or(|v| *v == key.version)
            && self.feature.as_ref().is_none_or(|f| *f == key.feature)
    }
}

/// `GET /api/v1/drift/reference`: the references in force.
pub async fn references(State(app): State<AppState>, Query(filter): Query<FeatureFilter>) -> Json<Value> {
    let list: Vec<Value> =
        app.drift.references().iter().filter(|r| filter.matches(&r.key)).map(|r| reference_json(r)).collect();
    Json(json!({"references": list}))
}

/// `POST /api/v1/drift`.
pub async fn ingest(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let accepted = app.drift.ingest(&body?).await?;
    Ok(Json(json!(accepted)))
}

fn time_param(text: &str, name: &str) -> Result<i64, ApiError> {
    let value = text.parse::<f64>().map_or_else(|_| Value::String(text.to_string()), |n| json!(n));
    request::time_ns(&value, name).map_err(ApiError::from)
}

/// `GET /api/v1/drift/scores`: the newest window per feature, and with `start` (and `end`)
/// the stored windows in between.
pub async fn scores(State(app): State<AppState>, Query(filter): Query<FeatureFilter>) -> Result<Json<Value>, ApiError> {
    let latest =
        app.drift.latest(filter.model.as_deref(), filter.version.as_deref(), filter.feature.as_deref()).await?;
    let range = match &filter.start {
        Some(start) => {
            let end = match &filter.end {
                Some(end) => time_param(end, "end")?,
                None => crate::now_ms().saturating_mul(1_000_000),
            };
            Some((time_param(start, "start")?, end))
        }
        None => None,
    };
    let thresholds = app.drift.thresholds();
    let mut features = Vec::with_capacity(latest.len());
    for outcome in latest {
        let mut entry = json!(outcome);
        entry["verdict"] = json!(outcome.verdict(&thresholds));
        if let Some((from, to)) = range {
            entry["history"] = json!(app.drift.history(&outcome.key, from, to).await?);
        }
        features.push(entry);
    }
    Ok(Json(json!({"features": features})))
}

/// `GET /api/v1/drift/models`: share of drifted features per model version.
pub async fn models(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Score what is pending first, so the view is current.
    app.drift.flush(None).await?;
    Ok(Json(json!({"models": app.drift.datasets()})))
}
