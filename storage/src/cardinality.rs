//! Cardinality: how many metric names and active series storage holds, bounded so that one
//! sender cannot explode it (every metric name is a table with files of its own, every
//! series costs memory until it goes idle).
//!
//! Each write's series are checked before the write is logged: a series seen within
//! `active_window` passes; a new one passes while its metric, the whole store and the
//! request stay under their limits; otherwise its samples are refused (never half stored)
//! and the refusal names the limit. Series are known by a 64-bit hash of their labels, so
//! the tracker costs a few dozen bytes per active series.

use crate::{FastHashMap as HashMap, FastHashSet as HashSet};
use std::time::{Duration, Instant};

use crate::schema::metric_table_name;
use crate::write::WriteBatch;

/// Bounds on what storage holds. Zero turns a bound off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardinalityLimits {
    /// Metric names (tables) stored, flushed or not, until retention drops them.
    pub max_metric_names: usize,
    /// Active series over all metrics.
    pub max_series: usize,
    /// Active series of one metric.
    pub max_series_per_metric: usize,
    /// Series one write may add.
    pub max_new_series_per_request: usize,
    /// A series not written for this long stops counting as active.
    pub active_window: Duration,
}

impl Default for CardinalityLimits {
    fn default() -> Self {
        CardinalityLimits {
            max_metric_names: 10_000,
            max_series: 2_000_000,
            max_series_per_metric: 500_000,
            max_new_series_per_request: 100_000,
            active_window: Duration::from_secs(3600),
        }
    }
}

/// A cardinality bound; its name labels `vigil_limit_refusals_total` and is the setting's
/// key under `limits.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardinalityLimit {
    MetricNames,
    Series,
    SeriesPerMetric,
    NewSeriesPerRequest,
}

impl CardinalityLimit {
    pub fn setting(self) -> &'static str {
        match self {
            CardinalityLimit::MetricNames => "max_metric_names",
            CardinalityLimit::Series => "max_series",
            CardinalityLimit::SeriesPerMetric => "max_series_per_metric",
            CardinalityLimit::NewSeriesPerRequest => "max_new_series_per_request",
        }
    }

    fn counter_name(self) -> &'static str {
        match self {
            CardinalityLimit::MetricNames => "metric_names",
            CardinalityLimit::Series => "series",
            CardinalityLimit::SeriesPerMetric => "series_per_metric",
            CardinalityLimit::NewSeriesPerRequest => "new_series_per_request",
        }
    }
}

/// What a write lost to the cardinality limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardinalityRefusal {
    pub series: usize,
    pub samples: usize,
    /// The first limit hit and the sentence saying so.
    pub first: Option<(CardinalityLimit, String)>,
}

impl CardinalityRefusal {
    pub fn is_empty(&self) -> bool {
        self.series == 0
    }
}

#[derive(Default)]
struct MetricSeries {
    /// Series hash → seconds since the tracker started, at its last write.
    last_write: HashMap<u64, u32>,
}

/// Active series per metric table, and every metric table storage holds.
pub(crate) struct SeriesTracker {
    limits: CardinalityLimits,
    started: Instant,
    metrics: HashMap<String, MetricSeries>,
    active: usize,
    /// Metric tables with rows in segments or buffers, here or on a peer.
    tables: HashSet<String>,
}

impl SeriesTracker {
    pub fn new(limits: CardinalityLimits) -> Self {
        SeriesTracker {
            limits,
            started: Instant::now(),
            metrics: HashMap::default(),
            active: 0,
            tables: HashSet::default(),
        }
    }

    pub fn limits(&self) -> &CardinalityLimits {
        &self.limits
    }

    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Tables known to hold rows; replaces the set (after retention or a peer refresh).
    pub fn set_tables(&mut self, tables: impl IntoIterator<Item = String>) {
        self.tables = tables.into_iter().collect();
        for table in self.metrics.keys() {
            self.tables.insert(table.clone());
        }
    }

    pub fn metric_names(&self) -> usize {
        self.tables.len()
    }

    pub fn active_series(&self) -> usize {
        self.active
    }

    /// Active series per metric table, largest first, at most `limit`.
    pub fn top_metrics(&self, limit: usize) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> =
            self.metrics.iter().map(|(name, m)| (name.clone(), m.last_write.len())).filter(|(_, n)| *n > 0).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(limit);
        counts
    }

    /// Records series without checking limits (WAL replay: what was acknowledged stays).
    pub fn observe(&mut self, batch: &WriteBatch) {
        let now = self.now();
        for run in batch.metric_runs() {
            let table = metric_table_name(&run[0].metric);
            if !self.tables.contains(table.as_ref()) {
                self.tables.insert(table.to_string());
            }
            let entry = crate::get_or_insert_with(&mut self.metrics, &table, MetricSeries::default);
            for series in run {
                if entry.last_write.insert(series.labels.hash_value(), now).is_none() {
                    self.active += 1;
                }
            }
        }
    }

    /// Takes out of `batch` the series the limits refuse; records the rest as active.
    ///
    /// A metric's table and series are looked up once per run of its series (a write's
    /// series of one metric come together), then one hash lookup per series.
    pub fn admit(&mut self, batch: &mut WriteBatch) -> CardinalityRefusal {
        let now = self.now();
        let limits = &self.limits;
        let mut refusal = CardinalityRefusal::default();
        let mut new_series = 0usize;
        let mut refuse = |limit: CardinalityLimit, samples: usize, reason: &dyn Fn() -> String| {
            refusal.series += 1;
            refusal.samples += samples;
            if refusal.first.is_none() {
                refusal.first = Some((limit, reason()));
            }
            metrics::counter!("vigil_limit_refusals_total", "limit" => limit.counter_name()).increment(1);
        };
        let mut kept = Vec::with_capacity(batch.metrics.len());
        for run in batch.metric_runs() {
            let metric = &run[0].metric;
            let table = metric_table_name(metric);
            let mut known_table = self.tables.contains(table.as_ref());
            if !known_table && limits.max_metric_names > 0 && self.tables.len() >= limits.max_metric_names {
                for series in run {
                    refuse(CardinalityLimit::MetricNames, series.samples.len(), &|| {
                        format!(
                            "metric {metric:.64}: storage holds {} metric names, the limit (limits.max_metric_names)",
                            limits.max_metric_names
                        )
                    });
                }
                kept.extend(std::iter::repeat_n(false, run.len()));
                continue;
            }
            let entry = crate::get_or_insert_with(&mut self.metrics, &table, MetricSeries::default);
            for series in run {
                let hash = series.labels.hash_value();
                if let Some(seen) = entry.last_write.get_mut(&hash) {
                    *seen = now;
                    kept.push(true);
                    continue;
                }
                let limit = if limits.max_new_series_per_request > 0 && new_series >= limits.max_new_series_per_request
                {
                    Some((CardinalityLimit::NewSeriesPerRequest, limits.max_new_series_per_request))
                } else if limits.max_series > 0 && self.active >= limits.max_series {
                    Some((CardinalityLimit::Series, limits.max_series))
                } else if limits.max_series_per_metric > 0 && entry.last_write.len() >= limits.max_series_per_metric {
                    Some((CardinalityLimit::SeriesPerMetric, limits.max_series_per_metric))
                } else {
                    None
                };
                if let Some((limit, bound)) = limit {
                    refuse(limit, series.samples.len(), &|| {
                        format!("new series of {metric:.64} over the limit of {bound} (limits.{})", limit.setting())
                    });
                    kept.push(false);
                    continue;
                }
                entry.last_write.insert(hash, now);
                if !known_table {
                    self.tables.insert(table.to_string());
                    known_table = true;
                }
                self.active += 1;
                new_series += 1;
                kept.push(true);
            }
        }
        let mut kept = kept.into_iter();
        batch.metrics.retain(|_| kept.next().unwrap_or(false));
        refusal
    }

    /// Forgets series idle past the active window; returns how many are left.
    pub fn prune(&mut self) -> usize {
        let now = self.now();
        let window = u32::try_from(self.limits.active_window.as_secs()).unwrap_or(u32::MAX);
        let mut active = 0;
        self.metrics.retain(|_, metric| {
            metric.last_write.retain(|_, seen| now.saturating_sub(*seen) < window);
            active += metric.last_write.len();
            !metric.last_write.is_empty()
        });
        self.active = active;
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{LabelSet, MetricSeries as Series, Sample};

    fn write(metrics: &[(&str, &str)]) -> WriteBatch {
        WriteBatch {
            metrics: metrics
                .iter()
                .map(|(metric, instance)| Series {
                    metric: (*metric).into(),
                    labels: LabelSet::new(vec![("instance".into(), instance.to_string())]).unwrap(),
                    samples: vec![Sample { timestamp_ns: 1, value: 1.0 }, Sample { timestamp_ns: 2, value: 2.0 }],
                })
                .collect(),
            rows: vec![],
        }
    }

    #[test]
    fn each_limit_refuses_on_its_bound_and_not_below() {
        let limits = CardinalityLimits {
            max_metric_names: 2,
            max_series: 5,
            max_series_per_metric: 3,
            max_new_series_per_request: 4,
            ..Default::default()
        };
        let mut tracker = SeriesTracker::new(limits);
        // Two names fit; a third is refused, and a known name still takes new series.
        let mut batch = write(&[("a", "1"), ("b", "1"), ("c", "1"), ("a", "2")]);
        let refusal = tracker.admit(&mut batch);
        assert_eq!((refusal.series, refusal.samples), (1, 2));
        assert_eq!(refusal.first.as_ref().map(|f| f.0), Some(CardinalityLimit::MetricNames));
        assert_eq!(batch.metrics.len(), 3);
        assert_eq!((tracker.metric_names(), tracker.active_series()), (2, 3));
        // Per metric: a has 2, takes 1 more, refuses the next.
        let mut batch = write(&[("a", "3"), ("a", "4")]);
        let refusal = tracker.admit(&mut batch);
        assert_eq!(refusal.first.map(|f| f.0), Some(CardinalityLimit::SeriesPerMetric));
        assert_eq!(batch.metrics.len(), 1);
        // Known series always pass; the total (5) stops the sixth.
        let mut batch = write(&[("a", "1"), ("a", "2"), ("b", "2"), ("b", "3")]);
        let refusal = tracker.admit(&mut batch);
        assert_eq!(refusal.first.map(|f| f.0), Some(CardinalityLimit::Series));
        assert_eq!((batch.metrics.len(), tracker.active_series()), (3, 5));
    }

    #[test]
    fn a_metric_whose_series_come_apart_in_a_write_is_counted_as_one() {
        // Runs a, b, a: the second run of `a` finds the table and series the first admitted.
        let limits = CardinalityLimits { max_metric_names: 1, max_series_per_metric: 2, ..Default::default() };
        let mut tracker = SeriesTracker::new(limits);
        let mut batch = write(&[("a", "1"), ("b", "1"), ("b", "2"), ("a", "1"), ("a", "2"), ("a", "3")]);
        let refusal = tracker.admit(&mut batch);
        // Both of b's series refused by name (each counted), a's third by its per-metric bound.
        assert_eq!((refusal.series, refusal.samples), (3, 6));
        assert_eq!(refusal.first.map(|f| f.0), Some(CardinalityLimit::MetricNames));
        let kept: Vec<String> = batch.metrics.iter().map(|s| format!("{}{}", s.metric, s.labels)).collect();
        assert_eq!(kept, ["a{instance=\"1\"}", "a{instance=\"1\"}", "a{instance=\"2\"}"]);
        assert_eq!((tracker.metric_names(), tracker.active_series()), (1, 2));
        // Replay counts a metric's runs alike.
        let mut replayed = SeriesTracker::new(CardinalityLimits::default());
        replayed.observe(&write(&[("a", "1"), ("b", "1"), ("a", "2"), ("a", "1")]));
        assert_eq!((replayed.metric_names(), replayed.active_series()), (2, 3));
    }

    #[test]
    fn new_series_per_request_counts_within_one_write() {
        let limits = CardinalityLimits { max_new_series_per_request: 2, ..Default::default() };
        let mut tracker = SeriesTracker::new(limits);
        let mut batch = write(&[("a", "1"), ("a", "1"), ("a", "2"), ("a", "3")]);
        let refusal = tracker.admit(&mut batch);
        assert_eq!(refusal.series, 1, "a repeated series is not new twice");
        assert_eq!(refusal.first.map(|f| f.0), Some(CardinalityLimit::NewSeriesPerRequest));
        let mut batch = write(&[("a", "3"), ("a", "4")]);
        assert!(tracker.admit(&mut batch).is_empty(), "the next request starts again");
    }

    #[test]
    fn idle_series_stop_counting() {
        let limits = CardinalityLimits { active_window: Duration::ZERO, ..Default::default() };
        let mut tracker = SeriesTracker::new(limits);
        tracker.observe(&write(&[("a", "1"), ("b", "1")]));
        assert_eq!(tracker.active_series(), 2);
        assert_eq!(tracker.prune(), 0);
        assert_eq!(tracker.metric_names(), 2, "tables stay until retention drops them");
    }
}
