//! Model drift: references, current data per window, drift statistics, scores.
//!
//! ```text
//!  POST /api/v1/drift/reference ──► Reference (frozen bins) ──► drift_references
//!  POST /api/v1/drift, OTLP ml.* ──► drift_values rows ──► (feature, window) marked dirty
//!  flush: every flush interval, and for a feature before its scores are read
//!      └─► the window's drift_values ──► statistics ──► drift_scores + vigil_drift_score
//! ```
//! Storage is the only state that matters: values are acknowledged once written there, and
//! scores are recomputed from it (a restart marks every feature's open window dirty).
//! A window's scores are written with the time they were computed, clamped into the window,
//! so an SLI over `drift_scores` sees a backfilled window in its own time slice.

pub mod ks;
pub(crate) mod otlp;
pub mod reference;
pub mod request;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, TimestampNanosecondType, UInt64Type};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::{Value, json};
use vigil_storage::schema::{DRIFT_STATISTICS, FixedTable};
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageError, TableRows, WriteBatch};

use reference::{Bins, Reference};
use request::{DriftRequest, FeatureKind, RawValues, ReferenceRequest, invalid};

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

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{message}")]
    Invalid { message: String, hint: String },
    #[error("no reference is registered for {0}")]
    NoReference(FeatureKey),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("reading drift data: {0}")]
    Query(String),
}

impl DriftError {
    pub fn hint(&self) -> String {
        match self {
            DriftError::Invalid { hint, .. } => hint.clone(),
            DriftError::NoReference(_) => "register one first with POST /api/v1/drift/reference".into(),
            DriftError::Storage(e) => e.write_hint().into(),
            DriftError::Query(_) => "this is a bug in Vigil; please report it".into(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for DriftError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        DriftError::Query(e.to_string())
    }
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

impl WindowOutcome {
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
    fn new(key: FeatureKey, start_ns: i64, window_ns: i64, status: DriftStatus) -> WindowOutcome {
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

/// The current data of one window, as read back from `drift_values`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowData {
    pub values: Vec<f64>,
    pub categories: Vec<String>,
    /// Bin counts, with the reference they were binned against.
    pub binned: Vec<(String, Vec<u64>)>,
}

/// A window binned against its reference, and its statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `Ok` or `InsufficientSamples`.
    pub status: DriftStatus,
    /// Count per reference bin.
    pub counts: Vec<u64>,
    pub current: u64,
    pub stale: u64,
    pub scores: stats::Scores,
}

/// Bins the window against the reference and computes every statistic the data allows.
pub fn evaluate(reference: &Reference, data: &WindowData, min_samples: u64) -> Evaluation {
    let mut counts = vec![0u64; reference.bins.len()];
    let mut stale = 0u64;
    match &reference.bins {
        Bins::Numeric { edges } => {
            for v in &data.values {
                counts[Bins::numeric_bin(edges, *v)] += 1;
            }
            stale += data.categories.len() as u64;
        }
        Bins::Categorical { categories } => {
            for c in &data.categories {
                counts[Bins::category_bin(categories, c)] += 1;
            }
            stale += data.values.len() as u64;
        }
    }
    let mut binned_any = false;
    for (id, binned) in &data.binned {
        if *id == reference.id && binned.len() == counts.len() {
            binned_any = true;
            counts.iter_mut().zip(binned).for_each(|(c, b)| *c += b);
        } else {
            stale += binned.iter().sum::<u64>();
        }
    }
    let current: u64 = counts.iter().sum();
    if reference.sample_count() < min_samples || current < min_samples {
        return Evaluation {
            status: DriftStatus::InsufficientSamples,
            counts,
            current,
            stale,
            scores: stats::Scores::new(),
        };
    }
    let mut scores = stats::binned(&reference.counts, &counts);
    // KS and Wasserstein need raw values on both sides, and only raw values in the window.
    if let (Bins::Numeric { .. }, Some(reference_values), false) = (&reference.bins, &reference.values, binned_any) {
        let mut current_values = data.values.clone();
        current_values.sort_by(f64::total_cmp);
        scores.extend(stats::raw(reference_values, &current_values));
    }
    Evaluation { status: DriftStatus::Ok, counts, current, stale, scores }
}

/// What a drift post stored.
#[derive(Clone, Debug, Serialize)]
pub struct Accepted {
    #[serde(flatten)]
    pub key: FeatureKey,
    pub accepted: Value,
    pub window_start: String,
    pub window_end: String,
    pub reference_id: Option<String>,
    pub warnings: Vec<String>,
}

/// The drift service: one per server, cheap to clone.
#[derive(Clone)]
pub struct DriftEngine {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    options: DriftOptions,
    ctx: SessionContext,
    references: RwLock<BTreeMap<FeatureKey, Arc<Reference>>>,
    dirty: Mutex<BTreeSet<(FeatureKey, i64)>>,
    /// The newest window scored per feature.
    latest: Mutex<BTreeMap<FeatureKey, WindowOutcome>>,
    cumulative: otlp::CumulativeCounts,
}

impl std::fmt::Debug for DriftEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftEngine").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Rows of one feature (dictionary columns compared as text).
fn feature_filter(key: &FeatureKey) -> datafusion::logical_expr::Expr {
    let text = |c: &str| cast(col(c), DataType::Utf8);
    text("model")
        .eq(lit(key.model.as_str()))
        .and(text("version").eq(lit(key.version.as_str())))
        .and(text("feature").eq(lit(key.feature.as_str())))
}

fn ts_literal(ns: i64) -> datafusion::logical_expr::Expr {
    lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())))
}

pub(crate) fn dictionary_column(values: &[&str]) -> ArrayRef {
    Arc::new(values.iter().copied().collect::<DictionaryArray<Int32Type>>())
}

/// A string or dictionary-of-string column as owned strings.
pub(crate) fn strings(array: &dyn Array) -> Result<Vec<Option<String>>, String> {
    let utf8 = datafusion::arrow::compute::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
    let utf8 = utf8.as_string::<i32>();
    Ok((0..utf8.len()).map(|i| (!utf8.is_null(i)).then(|| utf8.value(i).to_string())).collect())
}

impl DriftEngine {
    /// Loads the registered references and marks every feature's open window dirty.
    pub async fn open(storage: Storage, options: DriftOptions) -> Result<DriftEngine, DriftError> {
        let ctx = SessionContext::new();
        vigil_storage::catalog::register(&storage, &ctx)?;
        let engine = DriftEngine {
            inner: Arc::new(Inner {
                storage,
                options,
                ctx,
                references: RwLock::default(),
                dirty: Mutex::default(),
                latest: Mutex::default(),
                cumulative: otlp::CumulativeCounts::default(),
            }),
        };
        let batches = engine.inner.ctx.table(FixedTable::DriftReferences.name()).await?.collect().await?;
        let mut loaded = BTreeMap::new();
        for batch in &batches {
            for reference in Reference::from_batch(batch).map_err(DriftError::Query)? {
                let newer =
                    loaded.get(&reference.key).is_none_or(|r: &Arc<Reference>| r.created_ns <= reference.created_ns);
                if newer {
                    loaded.insert(reference.key.clone(), Arc::new(reference));
                }
            }
        }
        let open = engine.window_start(now_ns());
        engine.inner.dirty.lock().extend(loaded.keys().map(|k| (k.clone(), open)));
        *engine.inner.references.write() = loaded;
        // Values the WAL replayed are scored before the server answers, so that a restart
        // never serves an empty window the first scheduled flush would have filled.
        if let Err(e) = engine.flush(None).await {
            tracing::warn!(error = %e, "scoring the replayed drift windows at start failed; the next flush retries");
        }
        Ok(engine)
    }

    pub fn options(&self) -> &DriftOptions {
        &self.inner.options
    }

    fn window_ns(&self) -> i64 {
        (self.inner.options.window.as_nanos() as i64).max(1_000_000_000)
    }

    /// Start of the window holding `ns`.
    pub fn window_start(&self, ns: i64) -> i64 {
        ns.div_euclid(self.window_ns()) * self.window_ns()
    }

    pub fn reference(&self, key: &FeatureKey) -> Option<Arc<Reference>> {
        self.inner.references.read().get(key).cloned()
    }

    /// Every reference in force, by feature.
    pub fn references(&self) -> Vec<Arc<Reference>> {
        self.inner.references.read().values().cloned().collect()
    }

    /// `POST /api/v1/drift/reference`: freezes bins and stores them.
    pub async fn register_reference(&self, body: &[u8]) -> Result<Arc<Reference>, DriftError> {
        let request: ReferenceRequest = request::parse(body, "a drift reference")?;
        let key = request::feature_key(&request.model, &request.version, &request.feature)?;
        let created = now_ns();
        let limit = self.inner.options.max_values_per_request;
        let pinned = request.from.is_some() || request.to.is_some();
        let sources = [request.values.is_some(), request.counts.is_some(), pinned].iter().filter(|s| **s).count();
        if sources != 1 {
            return Err(invalid(
                "a reference needs exactly one of values, counts (with edges or categories), or from/to",
                "post the training values, pre-binned counts, or a window of stored data to pin",
            ));
        }
        let reference = if let Some(values) = &request.values {
            let kind = request.kind.or(request.edges.as_ref().map(|_| FeatureKind::Numeric));
            match request::raw_values(values, kind, limit)? {
                RawValues::Numeric(values) => {
                    if let Some(edges) = &request.edges {
                        request::check_edges(edges)?;
                    }
                    Reference::numeric(key, created, values, request.edges.clone())
                }
                RawValues::Categorical(values) => Reference::categorical(key, created, &values),
            }
        } else if let Some(counts) = request.counts.clone() {
            binned_reference(key, created, &request, counts)?
        } else {
            let (Some(from), Some(to)) = (&request.from, &request.to) else {
                return Err(invalid(
                    "a pinned reference needs both from and to",
                    "give the window of stored data to freeze",
                ));
            };
            let (from, to) = (request::time_ns(from, "from")?, request::time_ns(to, "to")?);
            if to <= from {
                return Err(invalid("to is not after from", "give a non-empty time range"));
            }
            let data = self.window_data(&key, from, to).await?;
            match request.kind {
                Some(FeatureKind::Categorical) => {
                    if data.categories.is_empty() {
                        return Err(invalid(
                            format!("no categories of {key} are stored between from and to"),
                            "pin a window that holds current data",
                        ));
                    }
                    Reference::categorical(key, created, &data.categories)
                }
                _ if !data.values.is_empty() => Reference::numeric(key, created, data.values, request.edges.clone()),
                _ if !data.categories.is_empty() => Reference::categorical(key, created, &data.categories),
                _ => {
                    return Err(invalid(
                        format!("no raw values of {key} are stored between from and to"),
                        "pin a window that holds raw current data",
                    ));
                }
            }
        };
        if reference.sample_count() == 0 {
            return Err(invalid("the reference holds no values", "post at least one value or a non-zero count"));
        }
        let batch = reference.to_batch().map_err(|e| DriftError::Query(e.to_string()))?;
        self.inner
            .storage
            .write(WriteBatch {
                metrics: Vec::new(),
                rows: vec![TableRows { table: FixedTable::DriftReferences, batch }],
            })
            .await?;
        let reference = Arc::new(reference);
        self.inner.references.write().insert(reference.key.clone(), reference.clone());
        // The open window is now compared with other bins.
        self.inner.dirty.lock().insert((reference.key.clone(), self.window_start(now_ns())));
        metrics::counter!("vigil_drift_references_total").increment(1);
        Ok(reference)
    }

    /// `POST /api/v1/drift`: raw values, bin counts or precomputed scores for one window.
    pub async fn ingest(&self, body: &[u8]) -> Result<Accepted, DriftError> {
        let request: DriftRequest = request::parse(body, "a drift post")?;
        let key = request::feature_key(&request.model, &request.version, &request.feature)?;
        let now = now_ns();
        let at = match &request.timestamp {
            Some(t) => request::time_ns(t, "timestamp")?,
            None => now,
        };
        if at > now + 10 * 60 * 1_000_000_000 {
            return Err(invalid(
                format!("timestamp {} is in the future", rfc3339(at)),
                "send the time the values were observed, at most 10 minutes ahead of the server's clock",
            ));
        }
        let sources = [request.values.is_some(), request.counts.is_some(), request.scores.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        if sources != 1 {
            return Err(invalid(
                "a drift post needs exactly one of values, counts or scores",
                "post raw values, counts against the reference's bins, or precomputed scores",
            ));
        }
        let reference = self.reference(&key);
        let start = self.window_start(at);
        let mut warnings = Vec::new();
        let (rows, accepted) = if let Some(values) = &request.values {
            let kind = reference.as_ref().map(|r| match r.bins {
                Bins::Numeric { .. } => FeatureKind::Numeric,
                Bins::Categorical { .. } => FeatureKind::Categorical,
            });
            let values = request::raw_values(values, kind, self.inner.options.max_values_per_request)?;
            if reference.is_none() {
                warnings.push(format!(
                    "no reference is registered for {key} yet: the values are stored and scored once one is"
                ));
            }
            let count = values.len();
            (
                vec![values_batch(&key, at, &values).map_err(|e| DriftError::Query(e.to_string()))?],
                json!({"values": count}),
            )
        } else if let Some(counts) = &request.counts {
            let reference = reference.as_ref().ok_or_else(|| DriftError::NoReference(key.clone()))?;
            if let Some(id) = &request.reference_id
                && *id != reference.id
            {
                return Err(invalid(
                    format!("reference_id {id:?} is not the reference in force for {key} ({:?})", reference.id),
                    "bin against the current reference's edges (GET /api/v1/drift/reference) and send its id",
                ));
            }
            if counts.len() != reference.bins.len() {
                return Err(invalid(
                    format!("{} counts for {} bins", counts.len(), reference.bins.len()),
                    "send one count per bin of the reference: edges + 1 for numeric features, categories + 1 (__other__) for categorical ones",
                ));
            }
            let total: u64 = counts.iter().sum();
            (
                vec![counts_batch(&key, at, &reference.id, counts).map_err(|e| DriftError::Query(e.to_string()))?],
                json!({"counts": total}),
            )
        } else {
            let scores = request
                .scores
                .as_ref()
                .map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>())
                .unwrap_or_default();
            if scores.is_empty() {
                return Err(invalid(
                    "scores is empty",
                    format!("name at least one of {}", DRIFT_STATISTICS.join(", ")),
                ));
            }
            for (name, value) in &scores {
                if !DRIFT_STATISTICS.contains(&name.as_str()) {
                    return Err(invalid(
                        format!("unknown drift statistic {name:?}"),
                        format!("one of {}", DRIFT_STATISTICS.join(", ")),
                    ));
                }
                if !value.is_finite() {
                    return Err(invalid(format!("scores.{name} is not a finite number"), "send finite numbers"));
                }
            }
            let mut outcome = WindowOutcome::new(key.clone(), start, self.window_ns(), DriftStatus::Ok);
            outcome.scores = scores.iter().filter_map(|(k, v)| statistic_name(k).map(|s| (s, *v))).collect();
            let batch = self.score_rows(&[(outcome.clone(), at)])?;
            self.inner.storage.write(batch).await?;
            let outcome_window = (outcome.window_start.clone(), outcome.window_end.clone());
            self.remember(outcome);
            metrics::counter!("vigil_drift_scores_posted_total").increment(scores.len() as u64);
            return Ok(Accepted {
                key,
                accepted: json!({"scores": scores.len()}),
                window_start: outcome_window.0,
                window_end: outcome_window.1,
                reference_id: None,
                warnings,
            });
        };
        let rows = rows.into_iter().map(|batch| TableRows { table: FixedTable::DriftValues, batch }).collect();
        self.inner.storage.write(WriteBatch { metrics: Vec::new(), rows }).await?;
        self.inner.dirty.lock().insert((key.clone(), start));
        metrics::counter!("vigil_drift_values_total")
            .increment(accepted.as_object().and_then(|o| o.values().next()).and_then(Value::as_u64).unwrap_or(0));
        Ok(Accepted {
            key,
            accepted,
            window_start: rfc3339(start),
            window_end: rfc3339(start + self.window_ns()),
            reference_id: reference.map(|r| r.id.clone()),
            warnings,
        })
    }

    /// Marks the windows of OTLP bin counts dirty once they are stored.
    pub(crate) fn mark_dirty(&self, points: &[otlp::BinnedPoint]) {
        let mut dirty = self.inner.dirty.lock();
        for point in points {
            dirty.insert((point.key.clone(), self.window_start(point.at_ns)));
        }
    }

    pub(crate) fn cumulative(&self) -> &otlp::CumulativeCounts {
        &self.inner.cumulative
    }

    /// The current data of `key` in `[from, to)`.
    async fn window_data(&self, key: &FeatureKey, from: i64, to: i64) -> Result<WindowData, DriftError> {
        let text = |c: &str| cast(col(c), DataType::Utf8);
        let filter =
            feature_filter(key).and(col("timestamp").gt_eq(ts_literal(from))).and(col("timestamp").lt(ts_literal(to)));
        let frame = self.inner.ctx.table(FixedTable::DriftValues.name()).await?.filter(filter)?.select(vec![
            col("value"),
            text("category").alias("category"),
            col("reference_id"),
            col("counts"),
        ])?;
        let mut data = WindowData::default();
        for batch in frame.collect().await? {
            let values = batch.column(0).as_primitive::<Float64Type>();
            let categories = strings(batch.column(1).as_ref()).map_err(DriftError::Query)?;
            let ids = strings(batch.column(2).as_ref()).map_err(DriftError::Query)?;
            let counts = batch.column(3).as_list::<i32>();
            for row in 0..batch.num_rows() {
                if !values.is_null(row) {
                    data.values.push(values.value(row));
                } else if let Some(category) = &categories[row] {
                    data.categories.push(category.clone());
                } else if let (Some(id), false) = (&ids[row], counts.is_null(row)) {
                    data.binned.push((id.clone(), counts.value(row).as_primitive::<UInt64Type>().values().to_vec()));
                }
            }
        }
        Ok(data)
    }

    /// Scores one window of one feature from storage.
    pub async fn score_window(&self, key: &FeatureKey, start: i64) -> Result<WindowOutcome, DriftError> {
        let end = start + self.window_ns();
        let mut outcome = WindowOutcome::new(key.clone(), start, self.window_ns(), DriftStatus::NoReference);
        let Some(reference) = self.reference(key) else {
            return Ok(outcome);
        };
        let data = self.window_data(key, start, end).await?;
        let evaluation = evaluate(&reference, &data, self.inner.options.min_samples);
        outcome.status = evaluation.status;
        outcome.reference_id = Some(reference.id.clone());
        outcome.reference_count = reference.sample_count();
        outcome.current_count = evaluation.current;
        outcome.stale_counts = evaluation.stale;
        outcome.bin_counts = evaluation.counts;
        outcome.scores = evaluation.scores;
        Ok(outcome)
    }

    /// Scores every dirty window (of `only`, when given) and writes the scores.
    pub async fn flush(&self, only: Option<&FeatureKey>) -> Result<usize, DriftError> {
        let taken: Vec<(FeatureKey, i64)> = {
            let mut dirty = self.inner.dirty.lock();
            let taken: Vec<_> = dirty.iter().filter(|(k, _)| only.is_none_or(|o| o == k)).cloned().collect();
            for entry in &taken {
                dirty.remove(entry);
            }
            taken
        };
        if taken.is_empty() {
            return Ok(0);
        }
        let now = now_ns();
        let mut scored = Vec::new();
        for (i, (key, start)) in taken.iter().enumerate() {
            match self.score_window(key, *start).await {
                Ok(outcome) => scored.push(outcome),
                Err(e) => {
                    self.inner.dirty.lock().extend(taken[i..].iter().cloned());
                    return Err(e);
                }
            }
        }
        let window = self.window_ns();
        let rows: Vec<(WindowOutcome, i64)> = scored
            .iter()
            .filter(|o| !o.scores.is_empty())
            .map(|o| (o.clone(), now.clamp(o.window_start_ns, o.window_start_ns + window - 1_000_000)))
            .collect();
        if !rows.is_empty() {
            let mut batch = self.score_rows(&rows)?;
            batch.metrics.extend(self.dataset_series(&scored, now));
            if let Err(e) = self.inner.storage.write(batch).await {
                self.inner.dirty.lock().extend(taken);
                return Err(e.into());
            }
        }
        let count = scored.len();
        for outcome in scored {
            self.remember(outcome);
        }
        metrics::counter!("vigil_drift_windows_scored_total").increment(count as u64);
        Ok(count)
    }

    /// Keeps the newest window's outcome per feature.
    fn remember(&self, outcome: WindowOutcome) {
        let mut latest = self.inner.latest.lock();
        let newer = latest.get(&outcome.key).is_none_or(|o| o.window_start_ns <= outcome.window_start_ns);
        if newer {
            latest.insert(outcome.key.clone(), outcome);
        }
    }

    /// `drift_scores` rows and `vigil_drift_score` samples for scored windows, each at `at`.
    fn score_rows(&self, outcomes: &[(WindowOutcome, i64)]) -> Result<WriteBatch, DriftError> {
        let mut times = Vec::new();
        let mut ends = Vec::new();
        let (mut models, mut versions, mut features, mut statistics) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut values, mut reference_counts, mut current_counts, mut ids) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (outcome, at) in outcomes {
            for (statistic, value) in &outcome.scores {
                times.push(*at);
                ends.push(outcome.window_start_ns + self.window_ns());
                models.push(outcome.key.model.as_str());
                versions.push(outcome.key.version.as_str());
                features.push(outcome.key.feature.as_str());
                statistics.push(*statistic);
                values.push(*value);
                reference_counts.push(outcome.reference_count);
                current_counts.push(outcome.current_count);
                ids.push(outcome.reference_id.clone());
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(ends).with_timezone("UTC")),
            dictionary_column(&models),
            dictionary_column(&versions),
            dictionary_column(&features),
            dictionary_column(&statistics),
            Arc::new(Float64Array::from(values)),
            Arc::new(UInt64Array::from(reference_counts)),
            Arc::new(UInt64Array::from(current_counts)),
            Arc::new(StringArray::from(ids)),
        ];
        let batch = RecordBatch::try_new(FixedTable::DriftScores.schema(), columns)
            .map_err(|e| DriftError::Query(e.to_string()))?;
        Ok(WriteBatch {
            metrics: score_series(outcomes)?,
            rows: vec![TableRows { table: FixedTable::DriftScores, batch }],
        })
    }

    /// Thresholds in force, with their direction.
    pub fn thresholds(&self) -> Vec<(String, Threshold)> {
        self.inner.options.thresholds.iter().map(|(s, v)| (s.clone(), Threshold::for_statistic(s, *v))).collect()
    }

    /// The dataset view: per model version, which features' latest windows drifted.
    pub fn datasets(&self) -> Vec<Value> {
        let latest = self.inner.latest.lock().clone();
        let thresholds = self.thresholds();
        let mut models: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
        for key in self.inner.references.read().keys() {
            models.entry((key.model.clone(), key.version.clone())).or_default();
        }
        for outcome in latest.values() {
            let flagged = outcome.flagged_by(&thresholds);
            models.entry((outcome.key.model.clone(), outcome.key.version.clone())).or_default().push(json!({
                "feature": outcome.key.feature,
                "status": outcome.status,
                "window_start": outcome.window_start,
                "drifted": !flagged.is_empty(),
                "flagged_by": flagged,
            }));
        }
        models
            .into_iter()
            .map(|((model, version), features)| {
                let scored = features.iter().filter(|f| f["status"] == "ok").count();
                let drifted = features.iter().filter(|f| f["drifted"] == true).count();
                json!({
                    "model": model,
                    "version": version,
                    "features": features.len(),
                    "scored_features": scored,
                    "drifted_features": drifted,
                    "drifted_share": if scored > 0 { json!(drifted as f64 / scored as f64) } else { Value::Null },
                    "thresholds": thresholds.iter().map(|(s, t)| (s.clone(), json!({"value": t.value(), "drifted_when": match t { Threshold::AtLeast(_) => "at_least", Threshold::Below(_) => "below" }}))).collect::<serde_json::Map<_, _>>(),
                    "feature_status": features,
                })
            })
            .collect()
    }

    /// `vigil_drift_drifted_features_ratio` for the models whose windows were just scored.
    fn dataset_series(&self, scored: &[WindowOutcome], at: i64) -> Vec<MetricSeries> {
        let touched: BTreeSet<(String, String)> =
            scored.iter().map(|o| (o.key.model.clone(), o.key.version.clone())).collect();
        // Include the new outcomes before summarising.
        let mut latest = self.inner.latest.lock().clone();
        for outcome in scored {
            if latest.get(&outcome.key).is_none_or(|o| o.window_start_ns <= outcome.window_start_ns) {
                latest.insert(outcome.key.clone(), outcome.clone());
            }
        }
        let thresholds = self.thresholds();
        touched
            .into_iter()
            .filter_map(|(model, version)| {
                let outcomes: Vec<&WindowOutcome> = latest
                    .values()
                    .filter(|o| o.key.model == model && o.key.version == version && o.status == DriftStatus::Ok)
                    .collect();
                if outcomes.is_empty() {
                    return None;
                }
                let drifted = outcomes
                    .iter()
                    .filter(|o| thresholds.iter().any(|(s, t)| o.scores.get(s.as_str()).is_some_and(|v| t.drifted(*v))))
                    .count();
                let labels = LabelSet::new(vec![("model".into(), model), ("version".into(), version)]).ok()?;
                Some(MetricSeries {
                    metric: DRIFTED_SHARE_METRIC.into(),
                    labels,
                    samples: vec![Sample { timestamp_ns: at, value: drifted as f64 / outcomes.len() as f64 }],
                })
            })
            .collect()
    }

    /// The newest scored window of every feature matching the filters (flushing theirs first).
    pub async fn latest(
        &self,
        model: Option<&str>,
        version: Option<&str>,
        feature: Option<&str>,
    ) -> Result<Vec<WindowOutcome>, DriftError> {
        let matches = |k: &FeatureKey| {
            model.is_none_or(|m| m == k.model)
                && version.is_none_or(|v| v == k.version)
                && feature.is_none_or(|f| f == k.feature)
        };
        let keys: BTreeSet<FeatureKey> = {
            let dirty = self.inner.dirty.lock();
            dirty.iter().map(|(k, _)| k.clone()).filter(|k| matches(k)).collect()
        };
        for key in &keys {
            self.flush(Some(key)).await?;
        }
        let mut out: Vec<WindowOutcome> =
            self.inner.latest.lock().values().filter(|o| matches(&o.key)).cloned().collect();
        // Features registered but never scored since start: their newest stored scores.
        let known: BTreeSet<FeatureKey> = out.iter().map(|o| o.key.clone()).collect();
        for reference in self.references() {
            if matches(&reference.key) && !known.contains(&reference.key) {
                let history = self.history(&reference.key, i64::MIN / 2, i64::MAX / 2).await?;
                if let Some(last) = history.into_iter().last() {
                    self.remember(last.clone());
                    out.push(last);
                }
            }
        }
        Ok(out)
    }

    /// Stored scores of one feature per window in `[from, to)`, the newest row of each
    /// statistic per window.
    pub async fn history(&self, key: &FeatureKey, from: i64, to: i64) -> Result<Vec<WindowOutcome>, DriftError> {
        let text = |c: &str| cast(col(c), DataType::Utf8);
        let filter = feature_filter(key)
            .and(col("window_end").gt(ts_literal(from)))
            .and(col("window_end").lt_eq(ts_literal(to.saturating_add(self.window_ns()))));
        let frame = self.inner.ctx.table(FixedTable::DriftScores.name()).await?.filter(filter)?.select(vec![
            col("timestamp"),
            col("window_end"),
            text("statistic").alias("statistic"),
            col("value"),
            col("reference_count"),
            col("current_count"),
            col("reference_id"),
        ])?;
        let mut windows: BTreeMap<i64, StoredWindow> = BTreeMap::new();
        for batch in frame.collect().await? {
            let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
            let ends = batch.column(1).as_primitive::<TimestampNanosecondType>();
            let statistics = strings(batch.column(2).as_ref()).map_err(DriftError::Query)?;
            let values = batch.column(3).as_primitive::<Float64Type>();
            let reference_counts = batch.column(4).as_primitive::<UInt64Type>();
            let current_counts = batch.column(5).as_primitive::<UInt64Type>();
            let ids = strings(batch.column(6).as_ref()).map_err(DriftError::Query)?;
            for row in 0..batch.num_rows() {
                let (Some(statistic), false) = (&statistics[row], values.is_null(row)) else { continue };
                let time = times.value(row);
                let entry = windows
                    .entry(ends.value(row))
                    .or_insert_with(|| StoredWindow { newest: i64::MIN, ..StoredWindow::default() });
                let newer = entry.scores.get(statistic).is_none_or(|(t, _)| *t <= time);
                if newer {
                    entry.scores.insert(statistic.clone(), (time, values.value(row)));
                }
                if time >= entry.newest {
                    entry.reference_count = reference_counts.value(row);
                    entry.current_count = current_counts.value(row);
                    entry.reference_id = ids[row].clone();
                    entry.newest = time;
                }
            }
        }
        let window = self.window_ns();
        Ok(windows
            .into_iter()
            .filter(|(end, _)| *end - window < to)
            .map(|(end, stored)| {
                let mut outcome = WindowOutcome::new(key.clone(), end - window, window, DriftStatus::Ok);
                outcome.reference_id = stored.reference_id;
                outcome.reference_count = stored.reference_count;
                outcome.current_count = stored.current_count;
                outcome.scores =
                    stored.scores.into_iter().filter_map(|(s, (_, v))| statistic_name(&s).map(|n| (n, v))).collect();
                outcome
            })
            .collect())
    }

    /// Writes every recent window's scores to `vigil_drift_score` again at `at`, as a gauge
    /// scraped on: PromQL rules and panels keep seeing a feature's drift while its window is
    /// open and for one window length after it closes, not only the moment values arrive.
    pub async fn refresh_series(&self, at: i64) -> Result<(), DriftError> {
        let window = self.window_ns();
        let recent: Vec<(WindowOutcome, i64)> = self
            .inner
            .latest
            .lock()
            .values()
            .filter(|o| o.status == DriftStatus::Ok && o.window_start_ns + 2 * window > at && o.window_start_ns <= at)
            .map(|o| (o.clone(), at))
            .collect();
        if recent.is_empty() {
            return Ok(());
        }
        self.inner.storage.write(WriteBatch { metrics: score_series(&recent)?, rows: Vec::new() }).await?;
        Ok(())
    }

    /// Scores dirty windows every flush interval until `stop` resolves.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.inner.options.flush_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.flush(None).await {
                        tracing::warn!(error = %e, "scoring drift windows failed; will retry");
                    }
                    if let Err(e) = self.refresh_series(now_ns()).await {
                        tracing::warn!(error = %e, "writing drift score series failed");
                    }
                    self.inner.cumulative.prune();
                }
            }
        }
        if let Err(e) = self.flush(None).await {
            tracing::warn!(error = %e, "scoring drift windows at shutdown failed");
        }
    }
}

/// The static name of a known statistic.
fn statistic_name(name: &str) -> Option<&'static str> {
    DRIFT_STATISTICS.iter().find(|s| **s == name).copied()
}

/// `vigil_drift_score` samples of scored windows, each at `at`.
fn score_series(outcomes: &[(WindowOutcome, i64)]) -> Result<Vec<MetricSeries>, DriftError> {
    let mut series = Vec::new();
    for (outcome, at) in outcomes {
        for (statistic, value) in &outcome.scores {
            let labels = LabelSet::new(vec![
                ("model".into(), outcome.key.model.clone()),
                ("version".into(), outcome.key.version.clone()),
                ("feature".into(), outcome.key.feature.clone()),
                ("statistic".into(), statistic.to_string()),
            ])
            .map_err(|e| {
                invalid(format!("drift labels: {e}"), "model, version and feature must be usable label values")
            })?;
            series.push(MetricSeries {
                metric: SCORE_METRIC.into(),
                labels,
                samples: vec![Sample { timestamp_ns: *at, value: *value }],
            });
        }
    }
    Ok(series)
}

/// One window's newest stored scores, read back from `drift_scores`.
#[derive(Default)]
struct StoredWindow {
    /// Statistic → (row time, value) of its newest row.
    scores: BTreeMap<String, (i64, f64)>,
    reference_count: u64,
    current_count: u64,
    reference_id: Option<String>,
    /// Time of the newest row, whose counts and reference are kept.
    newest: i64,
}

/// Pre-binned references: numeric with `edges`, categorical with `categories`.
fn binned_reference(
    key: FeatureKey,
    created: i64,
    request: &ReferenceRequest,
    counts: Vec<u64>,
) -> Result<Reference, DriftError> {
    let bins = match (&request.edges, &request.categories) {
        (Some(edges), None) => {
            request::check_edges(edges)?;
            Bins::Numeric { edges: edges.clone() }
        }
        (None, Some(categories)) => {
            let mut sorted = categories.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != categories.len() {
                return Err(invalid("categories holds duplicates", "name each category once"));
            }
            // Counts follow the categories as given; reorder them with the sort.
            let mut reordered = vec![0u64; sorted.len() + 1];
            if counts.len() != categories.len() && counts.len() != categories.len() + 1 {
                return Err(invalid(
                    format!("{} counts for {} categories", counts.len(), categories.len()),
                    "one count per category, optionally followed by the count of __other__",
                ));
            }
            for (category, count) in categories.iter().zip(&counts) {
                reordered[Bins::category_bin(&sorted, category)] = *count;
            }
            if counts.len() == categories.len() + 1 {
                reordered[sorted.len()] = counts[categories.len()];
            }
            return Ok(Reference::binned(key, created, Bins::Categorical { categories: sorted }, reordered));
        }
        _ => {
            return Err(invalid(
                "pre-binned counts need either edges or categories",
                "numeric: edges (inner, ascending) and edges + 1 counts; categorical: categories and their counts",
            ));
        }
    };
    if counts.len() != bins.len() {
        return Err(invalid(
            format!("{} counts for {} bins", counts.len(), bins.len()),
            "give one count per bin: the number of inner edges + 1",
        ));
    }
    Ok(Reference::binned(key, created, bins, counts))
}

/// `drift_values` rows of OTLP bin counts.
pub(crate) fn counts_rows(
    points: &[otlp::BinnedPoint],
) -> Result<Vec<TableRows>, datafusion::arrow::error::ArrowError> {
    points
        .iter()
        .map(|p| {
            Ok(TableRows {
                table: FixedTable::DriftValues,
                batch: counts_batch(&p.key, p.at_ns, &p.reference_id, &p.counts)?,
            })
        })
        .collect()
}

/// `drift_values` rows of raw values, all at `at`.
fn values_batch(
    key: &FeatureKey,
    at: i64,
    values: &RawValues,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let n = values.len();
    let (numbers, categories): (Vec<Option<f64>>, Vec<Option<&str>>) = match values {
        RawValues::Numeric(v) => (v.iter().map(|x| Some(*x)).collect(), vec![None; n]),
        RawValues::Categorical(v) => (vec![None; n], v.iter().map(|c| Some(c.as_str())).collect()),
    };
    let mut counts = ListBuilder::new(UInt64Builder::new());
    for _ in 0..n {
        counts.append_null();
    }
    values_rows(
        key,
        vec![at; n],
        Arc::new(Float64Array::from(numbers)),
        Arc::new(categories.into_iter().collect::<DictionaryArray<Int32Type>>()),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(counts.finish()),
    )
}

/// One `drift_values` row of bin counts against reference `id`.
fn counts_batch(
    key: &FeatureKey,
    at: i64,
    id: &str,
    counts: &[u64],
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut list = ListBuilder::new(UInt64Builder::new());
    list.append_value(counts.iter().map(|c| Some(*c)));
    values_rows(
        key,
        vec![at],
        Arc::new(Float64Array::from(vec![None::<f64>])),
        Arc::new(vec![None::<&str>].into_iter().collect::<DictionaryArray<Int32Type>>()),
        Arc::new(StringArray::from(vec![Some(id)])),
        Arc::new(list.finish()),
    )
}

fn values_rows(
    key: &FeatureKey,
    times: Vec<i64>,
    values: ArrayRef,
    categories: ArrayRef,
    ids: ArrayRef,
    counts: ArrayRef,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let n = times.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
        dictionary_column(&vec![key.model.as_str(); n]),
        dictionary_column(&vec![key.version.as_str(); n]),
        dictionary_column(&vec![key.feature.as_str(); n]),
        values,
        categories,
        ids,
        counts,
    ];
    RecordBatch::try_new(FixedTable::DriftValues.schema(), columns)
}

#[cfg(test)]
mod tests;
