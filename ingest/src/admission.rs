//! The last check before a write reaches storage, shared by every protocol: metric names that
//! storage and PromQL can hold, and timestamps inside the accepted range.
//!
//! What fails is taken out of the write one sample or row at a time and counted; each
//! protocol reports it its own way (remote write: 400 naming the count after storing the
//! rest, as Cortex and Mimir do; OTLP: partial success; text import: the whole body refused).

use std::time::Duration;

use datafusion::arrow::array::{Array, BooleanArray, TimestampNanosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use vigil_storage::WriteBatch;
use vigil_storage::schema::time_column_of;
use vigil_storage::write::is_valid_metric_name;

use crate::{Limit, Limits};

/// Samples and rows a write lost at admission, and why (the first reason, for the sender).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub samples: usize,
    pub rows: usize,
    pub first_reason: Option<String>,
}

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.samples == 0 && self.rows == 0
    }

    pub fn total(&self) -> usize {
        self.samples + self.rows
    }

    fn note(&mut self, reason: impl FnOnce() -> String) {
        if self.first_reason.is_none() {
            self.first_reason = Some(reason());
        }
    }

    /// Adds what a later step refused.
    pub fn absorb(&mut self, other: Refused) {
        self.samples += other.samples;
        self.rows += other.rows;
        if self.first_reason.is_none() {
            self.first_reason = other.first_reason;
        }
    }

    /// One sentence for an error or a partial-success message.
    pub fn describe(&self) -> String {
        let what = match (self.samples, self.rows) {
            (samples, 0) => format!("{samples} samples"),
            (0, rows) => format!("{rows} rows"),
            (samples, rows) => format!("{samples} samples and {rows} rows"),
        };
        match &self.first_reason {
            Some(reason) => format!("{what} refused; first: {reason}"),
            None => format!("{what} refused"),
        }
    }
}

/// The accepted time range at `now_ns`, inclusive, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub oldest_ns: i64,
    pub newest_ns: i64,
}

impl TimeRange {
    pub fn contains(&self, ns: i64) -> bool {
        (self.oldest_ns..=self.newest_ns).contains(&ns)
    }

    fn describe(&self, ns: i64) -> String {
        format!(
            "timestamp {} is outside the accepted range {} .. {}",
            rfc3339(ns),
            rfc3339(self.oldest_ns),
            rfc3339(self.newest_ns)
        )
    }
}

fn rfc3339(ns: i64) -> String {
    let at = chrono::DateTime::from_timestamp_nanos(ns);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn saturating_ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

impl Limits {
    /// The range of timestamps accepted at `now_ns`: no older than `max_past` (and never
    /// before the Unix epoch), no newer than `max_future` ahead.
    pub fn accepted_times(&self, now_ns: i64) -> TimeRange {
        let oldest_ns = self.max_past.map_or(0, |past| now_ns.saturating_sub(saturating_ns(past)).max(0));
        TimeRange { oldest_ns, newest_ns: now_ns.saturating_add(saturating_ns(self.max_future)) }
    }

    /// Takes out of `batch` what storage must not hold, and says what went.
    pub fn admit(&self, batch: &mut WriteBatch, now_ns: i64) -> Refused {
        let range = self.accepted_times(now_ns);
        let mut refused = Refused::default();
        // A write's series of one metric come together: a valid name is checked once a run
        // (a refused one every time, so each refusal is counted).
        let mut valid: Option<vigil_storage::MetricName> = None;
        batch.metrics.retain_mut(|series| {
            if valid.as_ref() != Some(&series.metric) {
                if let Err(reason) = self.check_metric_name(&series.metric) {
                    refused.samples += series.samples.len();
                    refused.note(|| reason.to_string());
                    return false;
                }
                valid = Some(series.metric.clone());
            }
            let before = series.samples.len();
            series.samples.retain(|sample| {
                let inside = range.contains(sample.timestamp_ns);
                if !inside {
                    refused.note(|| format!("{}: {}", series.metric, range.describe(sample.timestamp_ns)));
                }
                inside
            });
            refused.samples += before - series.samples.len();
            !series.samples.is_empty()
        });
        for rows in &mut batch.rows {
            let Ok(index) = rows.batch.schema().index_of(time_column_of(rows.table.name())) else { continue };
            let Some(times) = rows.batch.column(index).as_any().downcast_ref::<TimestampNanosecondArray>() else {
                continue;
            };
            let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| range.contains(t)))).collect();
            let dropped = keep.false_count();
            if dropped == 0 {
                continue;
            }
            if let Some(outside) = times.iter().flatten().find(|t| !range.contains(*t)) {
                refused.note(|| format!("{}: {}", rows.table.name(), range.describe(outside)));
            }
            match filter_record_batch(&rows.batch, &keep) {
                Ok(kept) => rows.batch = kept,
                Err(e) => {
                    // Cannot happen for a mask of the batch's own length; refuse all rather than guess.
                    refused.note(|| e.to_string());
                    rows.batch = rows.batch.slice(0, 0);
                }
            }
            refused.rows += dropped;
        }
        batch.rows.retain(|rows| rows.batch.num_rows() > 0);
        if !refused.is_empty() {
            Limit::SampleTime.count();
        }
        refused
    }

    /// A metric name is a table name and a PromQL name: valid by Prometheus's rule and of
    /// bounded length.
    pub fn check_metric_name(&self, name: &str) -> Result<(), crate::SeriesRefusal> {
        if name.len() > self.max_metric_name_bytes {
            Limit::MetricNameLength.count();
            return Err(crate::SeriesRefusal::MetricNameTooLong {
                name: crate::shown(name),
                bytes: name.len(),
                limit: self.max_metric_name_bytes,
            });
        }
        if !is_valid_metric_name(name) {
            return Err(crate::SeriesRefusal::InvalidMetricName(name.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_storage::{LabelSet, MetricSeries, Sample};

    const HOUR_NS: i64 = 3_600_000_000_000;

    fn series(metric: &str, times: &[i64]) -> MetricSeries {
        MetricSeries {
            metric: metric.into(),
            labels: LabelSet::default(),
            samples: times.iter().map(|&timestamp_ns| Sample { timestamp_ns, value: 1.0 }).collect(),
        }
    }

    #[test]
    fn samples_outside_the_accepted_range_are_refused_one_by_one() {
        let limits = Limits {
            max_past: Some(Duration::from_secs(24 * 3600)),
            max_future: Duration::from_secs(3600),
            ..Limits::default()
        };
        let now = 1_800_000_000_000_000_000;
        let mut batch = WriteBatch {
            metrics: vec![
                series("ok", &[now - 23 * HOUR_NS, now, now + HOUR_NS]),
                series("mixed", &[now - 25 * HOUR_NS, now, now + HOUR_NS + 1, -9_223_372_036_854_000_000]),
                series("gone", &[i64::MIN]),
            ],
            rows: vec![],
        };
        let refused = limits.admit(&mut batch, now);
        assert_eq!(refused.samples, 4);
        assert!(
            refused.first_reason.as_deref().is_some_and(|r| r.contains("outside the accepted range")),
            "{refused:?}"
        );
        assert_eq!(batch.metrics.len(), 2);
        assert_eq!(batch.sample_count(), 4);
        // On both sides of each bound.
        let range = limits.accepted_times(now);
        assert!(range.contains(now - 24 * HOUR_NS) && !range.contains(now - 24 * HOUR_NS - 1));
        assert!(range.contains(now + HOUR_NS) && !range.contains(now + HOUR_NS + 1));
        assert!(!Limits::default().accepted_times(now).contains(-1), "never before the epoch");
    }

    #[test]
    fn names_storage_cannot_hold_are_refused() {
        let limits = Limits { max_metric_name_bytes: 200, ..Limits::default() };
        let now = 1_800_000_000_000_000_000;
        let mut batch = WriteBatch {
            metrics: vec![
                series("", &[now]),
                series("a".repeat(201).as_str(), &[now]),
                series("a".repeat(200).as_str(), &[now]),
                series("b-c", &[now]),
            ],
            rows: vec![],
        };
        let refused = limits.admit(&mut batch, now);
        assert_eq!(refused.samples, 3);
        assert_eq!(batch.metrics.len(), 1);
        assert_eq!(batch.metrics[0].metric.len(), 200);
    }

    #[test]
    fn each_series_of_a_run_is_judged_by_its_name() {
        // Runs of a valid and a refused name, coming apart and back.
        let now = 1_800_000_000_000_000_000;
        let names = ["ok", "ok", "b-c", "b-c", "ok", "b-c", "ok_too"];
        let mut batch =
            WriteBatch { metrics: names.iter().map(|n| series(n, &[now, now + 1])).collect(), rows: vec![] };
        let refused = Limits::default().admit(&mut batch, now);
        assert_eq!(refused.samples, 6, "every sample of the three series named b-c");
        let kept: Vec<&str> = batch.metrics.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(kept, ["ok", "ok", "ok", "ok_too"]);
    }
}
