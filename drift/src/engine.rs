//! The drift service: the references in force, the set of (feature, window) pairs whose
//! data changed since they were scored, and the loop that scores them.
//!
//! Storage is the only state that matters: values are acknowledged once written there, and
//! scores are recomputed from it (a restart marks every feature's open window dirty).
//! A window's scores are written with the time they were computed, clamped into the window,
//! so an SLI over `drift_scores` sees a backfilled window in its own time slice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use vigil_query::QueryEngine;
use vigil_storage::clock::Clock;
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, WriteBatch};

use crate::DriftError;
use crate::evaluate::evaluate;
use crate::model::{DRIFTED_SHARE_METRIC, DriftOptions, DriftStatus, FeatureKey, ModelDrift, Threshold, WindowOutcome};
use crate::otlp::{BinnedPoint, CumulativeCounts};
use crate::reference::Reference;
use crate::rows::{score_batch, score_series};

/// The drift service: one per server, cheap to clone.
#[derive(Clone)]
pub struct DriftEngine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) query: QueryEngine,
    pub(crate) options: DriftOptions,
    clock: Arc<dyn Clock>,
    pub(crate) references: RwLock<BTreeMap<FeatureKey, Arc<Reference>>>,
    pub(crate) dirty: Mutex<BTreeSet<(FeatureKey, i64)>>,
    /// The newest window scored per feature.
    pub(crate) latest: Mutex<BTreeMap<FeatureKey, WindowOutcome>>,
    cumulative: CumulativeCounts,
}

impl std::fmt::Debug for DriftEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftEngine").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

impl DriftEngine {
    /// Loads the registered references and marks every feature's open window dirty. Reads go
    /// through `query` (its timeout and memory limit), writes to its storage; "now" is `clock`.
    pub async fn open(
        query: QueryEngine,
        options: DriftOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<DriftEngine, DriftError> {
        let engine = DriftEngine {
            inner: Arc::new(Inner {
                query,
                options,
                clock,
                references: RwLock::default(),
                dirty: Mutex::default(),
                latest: Mutex::default(),
                cumulative: CumulativeCounts::default(),
            }),
        };
        let loaded = engine.stored_references().await?;
        let open = engine.window_start(engine.now_ns());
        engine.inner.dirty.lock().extend(loaded.keys().map(|k| (k.clone(), open)));
        *engine.inner.references.write() = loaded;
        // Values the WAL replayed are scored before the server answers, so that a restart
        // never serves an empty window the first scheduled flush would have filled.
        if let Err(e) = engine.flush(None).await {
            tracing::warn!(error = %e, "scoring the replayed drift windows at start failed; the next flush retries");
        }
        Ok(engine)
    }

    /// Nanoseconds since the epoch on the engine's clock.
    pub(crate) fn now_ns(&self) -> i64 {
        self.inner.clock.now_ms().saturating_mul(1_000_000)
    }

    pub(crate) fn storage(&self) -> &Storage {
        self.inner.query.storage()
    }

    pub fn options(&self) -> &DriftOptions {
        &self.inner.options
    }

    pub(crate) fn window_ns(&self) -> i64 {
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

    /// Marks the windows of OTLP bin counts dirty once they are stored.
    pub(crate) fn mark_dirty(&self, points: &[BinnedPoint]) {
        let mut dirty = self.inner.dirty.lock();
        for point in points {
            dirty.insert((point.key.clone(), self.window_start(point.at_ns)));
        }
    }

    pub(crate) fn cumulative(&self) -> &CumulativeCounts {
        &self.inner.cumulative
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
        let now = self.now_ns();
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
            let mut batch = score_batch(&rows, window)?;
            batch.metrics.extend(self.dataset_series(&scored, now));
            if let Err(e) = self.storage().write(batch).await {
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
    pub(crate) fn remember(&self, outcome: WindowOutcome) {
        keep_newest(&mut self.inner.latest.lock(), outcome);
    }

    /// Thresholds in force, with their direction.
    pub fn thresholds(&self) -> Vec<(String, Threshold)> {
        self.inner.options.thresholds.iter().map(|(s, v)| (s.clone(), Threshold::for_statistic(s, *v))).collect()
    }

    /// The dataset view: per model version, which features' latest windows drifted.
    pub fn datasets(&self) -> Vec<ModelDrift> {
        let latest = self.inner.latest.lock().clone();
        let references = self.inner.references.read().keys().cloned().collect::<Vec<_>>();
        ModelDrift::summarize(&references, latest.values(), &self.thresholds())
    }

    /// `vigil_drift_drifted_features_ratio` for the models whose windows were just scored.
    fn dataset_series(&self, scored: &[WindowOutcome], at: i64) -> Vec<MetricSeries> {
        let touched = ModelDrift::versions_of(scored);
        // Include the new outcomes before summarising.
        let mut latest = self.inner.latest.lock().clone();
        for outcome in scored {
            keep_newest(&mut latest, outcome.clone());
        }
        ModelDrift::summarize([], latest.values(), &self.thresholds())
            .into_iter()
            .filter(|model| touched.contains(&(model.model.clone(), model.version.clone())))
            .filter_map(|model| {
                let share = model.drifted_share?;
                let labels =
                    LabelSet::new(vec![("model".into(), model.model), ("version".into(), model.version)]).ok()?;
                Some(MetricSeries {
                    metric: DRIFTED_SHARE_METRIC.into(),
                    labels,
                    samples: vec![Sample { timestamp_ns: at, value: share }],
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
        self.storage().write(WriteBatch { metrics: score_series(&recent)?, rows: Vec::new() }).await?;
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
                    if let Err(e) = self.refresh_series(self.now_ns()).await {
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

/// Keeps `outcome` in `latest` unless a newer window of its feature is there.
fn keep_newest(latest: &mut BTreeMap<FeatureKey, WindowOutcome>, outcome: WindowOutcome) {
    if latest.get(&outcome.key).is_none_or(|o| o.window_start_ns <= outcome.window_start_ns) {
        latest.insert(outcome.key.clone(), outcome);
    }
}

#[cfg(test)]
mod tests;
