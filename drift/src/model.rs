//! What drift speaks of: features, thresholds, the outcome of a window, and the per-model
//! summary the API and the models page both show.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use vigil_storage::schema::DRIFT_STATISTICS;

use crate::stats;

/// The metric every score is also written to, labelled model, version, feature, statistic.
pub const SCORE_METRIC: &str = "vigil_drift_score";
/// Share of a model's features whose latest window is drifted, labelled model, version.
pub const DRIFTED_SHARE_METRIC: &str = "vigil_drift_drifted_features_ratio";

/// One feature of one model version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FeatureKey {
    pub model: String,
    pub version: String,
    pub feature: String,
}

impl std::fmt::Display for FeatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "model {:?} version {:?} feature {:?}", self.model, self.version, self.feature)
    }
}

/// When a statistic says a feature drifted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Drifted when the statistic is at or above the value (distances, PSI).
    AtLeast(f64),
    /// Drifted when the statistic is below the value (p-values).
    Below(f64),
}

impl Threshold {
    /// The direction each statistic drifts in, with `value` as its bound.
    pub fn for_statistic(statistic: &str, value: f64) -> Threshold {
        if statistic.ends_with("_p") { Threshold::Below(value) } else { Threshold::AtLeast(value) }
    }

    pub fn drifted(self, score: f64) -> bool {
        match self {
            Threshold::AtLeast(bound) => score >= bound,
            Threshold::Below(bound) => score < bound,
        }
    }

    pub fn value(self) -> f64 {
        match self {
            Threshold::AtLeast(v) | Threshold::Below(v) => v,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DriftOptions {
    /// Width of a scoring window; windows are aligned to multiples of it since the epoch.
    pub window: Duration,
    /// Fewer values than this on either side: no scores for the window.
    pub min_samples: u64,
    /// How often dirty windows are scored and written.
    pub flush_interval: Duration,
    /// Per-statistic thresholds of the dataset view.
    pub thresholds: BTreeMap<String, f64>,
    /// Most values (or counts) in one request.
    pub max_values_per_request: usize,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            window: Duration::from_secs(3600),
            min_samples: 5,
            flush_interval: Duration::from_secs(10),
            thresholds: default_thresholds(),
            max_values_per_request: 1_000_000,
        }
    }
}

/// PSI 0.2, Jensen–Shannon distance 0.1, KS p-value 0.05: the usual rules of thumb.
pub fn default_thresholds() -> BTreeMap<String, f64> {
    BTreeMap::from([("psi".to_string(), 0.2), ("js_distance".to_string(), 0.1), ("ks_p".to_string(), 0.05)])
}

/// How one window compared with its reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowOutcome {
    #[serde(flatten)]
    pub key: FeatureKey,
    pub window_start: String,
    pub window_end: String,
    #[serde(skip)]
    pub window_start_ns: i64,
    pub status: DriftStatus,
    pub reference_id: Option<String>,
    pub reference_count: u64,
    pub current_count: u64,
    /// Current values binned against another (older) reference's bins, left out.
    pub stale_counts: u64,
    /// The window's count per reference bin (empty for stored history and posted scores).
    pub bin_counts: Vec<u64>,
    pub scores: stats::Scores,
}

/// Whether a window could be scored, serialised as `ok`, `insufficient_samples` or
/// `no_reference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// Scored against its reference.
    Ok,
    /// Too few values in the window to score.
    InsufficientSamples,
    /// No reference for the feature.
    NoReference,
}

impl DriftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::Ok => "ok",
            DriftStatus::InsufficientSamples => "insufficient_samples",
            DriftStatus::NoReference => "no_reference",
        }
    }
}

/// Compares with the status's name as the API writes it.
impl PartialEq<&str> for DriftStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The one drift verdict of a feature's window, which the API (`verdict`) and the models
/// page both show: `drifted`, `ok` (scored, under every threshold), or why it was not scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftVerdict {
    Drifted,
    Ok,
    InsufficientSamples,
    NoReference,
}

impl DriftVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftVerdict::Drifted => "drifted",
            DriftVerdict::Ok => "ok",
            DriftVerdict::InsufficientSamples => "insufficient_samples",
            DriftVerdict::NoReference => "no_reference",
        }
    }
}

impl WindowOutcome {
    /// The window's verdict under `thresholds`.
    pub fn verdict(&self, thresholds: &[(String, Threshold)]) -> DriftVerdict {
        match self.status {
            DriftStatus::Ok if self.is_drifted(thresholds) => DriftVerdict::Drifted,
            DriftStatus::Ok => DriftVerdict::Ok,
            DriftStatus::InsufficientSamples => DriftVerdict::InsufficientSamples,
            DriftStatus::NoReference => DriftVerdict::NoReference,
        }
    }

    /// The statistics of `thresholds` whose scores cross them (none for a window that was
    /// not scored).
    pub fn flagged_by<'a>(&self, thresholds: &'a [(String, Threshold)]) -> Vec<&'a str> {
        if self.status != DriftStatus::Ok {
            return Vec::new();
        }
        thresholds
            .iter()
            .filter(|(s, t)| self.scores.get(s.as_str()).is_some_and(|v| t.drifted(*v)))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// Whether the window was scored and some statistic crosses its threshold: what the API's
    /// `drifted` and the models page say.
    pub fn is_drifted(&self, thresholds: &[(String, Threshold)]) -> bool {
        !self.flagged_by(thresholds).is_empty()
    }

    /// A window of `key` starting at `start_ns`, `window_ns` long, with nothing in it yet.
    pub(crate) fn new(key: FeatureKey, start_ns: i64, window_ns: i64, status: DriftStatus) -> WindowOutcome {
        WindowOutcome {
            key,
            window_start: rfc3339(start_ns),
            window_end: rfc3339(start_ns + window_ns),
            window_start_ns: start_ns,
            status,
            reference_id: None,
            reference_count: 0,
            current_count: 0,
            stale_counts: 0,
            bin_counts: Vec::new(),
            scores: stats::Scores::new(),
        }
    }
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The static name of a known statistic.
pub(crate) fn statistic_name(name: &str) -> Option<&'static str> {
    DRIFT_STATISTICS.iter().find(|s| **s == name).copied()
}

/// One model version's latest windows against the thresholds (`GET /api/v1/drift/models`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelDrift {
    pub model: String,
    pub version: String,
    /// Features with a reference or a scored window.
    pub features: usize,
    pub scored_features: usize,
    pub drifted_features: usize,
    /// `drifted_features / scored_features`; None while nothing is scored.
    pub drifted_share: Option<f64>,
    pub thresholds: BTreeMap<String, ThresholdView>,
    pub feature_status: Vec<FeatureDrift>,
}

/// A threshold as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdView {
    pub value: f64,
    /// `at_least` or `below`.
    pub drifted_when: &'static str,
}

/// One feature's latest window in a [`ModelDrift`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub status: DriftStatus,
    /// The verdict the models page shows too: `drifted`, `ok`, or why it was not scored.
    pub verdict: DriftVerdict,
    pub window_start: String,
    pub drifted: bool,
    pub flagged_by: Vec<String>,
}

impl ModelDrift {
    /// One summary per model version of `registered` (features with a reference) and of
    /// `latest` (each feature's newest window), in model and version order.
    pub fn summarize<'a>(
        registered: impl IntoIterator<Item = &'a FeatureKey>,
        latest: impl IntoIterator<Item = &'a WindowOutcome>,
        thresholds: &[(String, Threshold)],
    ) -> Vec<ModelDrift> {
        let mut models: BTreeMap<(String, String), Vec<FeatureDrift>> = BTreeMap::new();
        for key in registered {
            models.entry((key.model.clone(), key.version.clone())).or_default();
        }
        for outcome in latest {
            let flagged = outcome.flagged_by(thresholds);
            models.entry((outcome.key.model.clone(), outcome.key.version.clone())).or_default().push(FeatureDrift {
                feature: outcome.key.feature.clone(),
                status: outcome.status,
                verdict: outcome.verdict(thresholds),
                window_start: outcome.window_start.clone(),
                drifted: !flagged.is_empty(),
                flagged_by: flagged.into_iter().map(str::to_string).collect(),
            });
        }
        let views: BTreeMap<String, ThresholdView> = thresholds
            .iter()
            .map(|(statistic, threshold)| {
                let drifted_when = match threshold {
                    Threshold::AtLeast(_) => "at_least",
                    Threshold::Below(_) => "below",
                };
                (statistic.clone(), ThresholdView { value: threshold.value(), drifted_when })
            })
            .collect();
        models
            .into_iter()
            .map(|((model, version), features)| {
                let scored = features.iter().filter(|f| f.status == DriftStatus::Ok).count();
                let drifted = features.iter().filter(|f| f.drifted).count();
                ModelDrift {
                    model,
                    version,
                    features: features.len(),
                    scored_features: scored,
                    drifted_features: drifted,
                    drifted_share: (scored > 0).then(|| drifted as f64 / scored as f64),
                    thresholds: views.clone(),
                    feature_status: features,
                }
            })
            .collect()
    }

    /// The model versions of `outcomes`.
    pub(crate) fn versions_of(outcomes: &[WindowOutcome]) -> BTreeSet<(String, String)> {
        outcomes.iter().map(|o| (o.key.model.clone(), o.key.version.clone())).collect()
    }
}
