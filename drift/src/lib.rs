//! Model drift: references, current data per window, drift statistics, scores.
//!
//! ```text
//!  POST /api/v1/drift/reference ──► intake ──► Reference (frozen bins) ──► drift_references
//!  POST /api/v1/drift ──► intake ─┐
//!  OTLP ml.* points ──► otlp (the ingest tap) ─┴─► drift_values rows ──► (feature, window) dirty
//!  engine: every flush interval, and for a feature before its scores are read
//!      └─► store (window data, through the QueryEngine) ──► evaluate (stats) ──► rows
//!          ──► drift_scores + vigil_drift_score + vigil_drift_drifted_features_ratio
//! ```
//! `model` holds what the API and the models page share (features, thresholds, a window's
//! outcome and whether it drifted, the per-model summary); `stats` the statistics, checked
//! against scipy in `testdata`.

mod engine;
mod error;
mod evaluate;
mod intake;
pub mod model;
pub mod otlp;
pub mod reference;
pub mod request;
mod rows;
pub mod stats;
mod store;

pub use engine::DriftEngine;
pub use error::DriftError;
pub use evaluate::{Evaluation, WindowData, evaluate};
pub use intake::{Accepted, AcceptedCount};
pub use model::{
    DRIFTED_SHARE_METRIC, DriftOptions, DriftStatus, DriftVerdict, FeatureDrift, FeatureKey, ModelDrift, SCORE_METRIC,
    Threshold, ThresholdView, WindowOutcome, default_thresholds, rfc3339,
};

#[cfg(test)]
mod tests;
