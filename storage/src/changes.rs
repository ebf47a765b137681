//! What accepted writes touched: per table, the oldest and newest timestamp written since
//! the last drain. Readers that keep derived state (the SLO evaluator) drain it each cycle
//! and recompute exactly the time ranges that changed, however late the data came.
//!
//! Writers only take a short lock and merge two numbers per table; they never wait on a
//! reader. The feed is bounded: past `max_tables` distinct tables it stops naming tables
//! and keeps one range for all of them (an overflow), which readers treat as "every table
//! changed in this range".

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use parking_lot::Mutex;

use crate::schema::FixedTable;
use crate::write::WriteBatch;

/// Tables named at most between two drains.
pub const DEFAULT_MAX_TABLES: usize = 100_000;
/// A sample further behind the clock than this when it is written is late.
pub const LATE_AFTER_NS: i64 = 5 * 60 * 1_000_000_000;

/// Oldest and newest timestamp written, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub min_ns: i64,
    pub max_ns: i64,
}

impl TimeRange {
    fn merge(&mut self, other: TimeRange) {
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// The changes since the previous drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Per table (the SQL name), the range written.
    pub tables: HashMap<String, TimeRange>,
    /// Set when the feed overflowed: some tables in this range are not named.
    pub overflow: Option<TimeRange>,
    /// Per named table, the samples (rows) written more than [`LATE_AFTER_NS`] behind the
    /// clock; WAL replays are not counted.
    pub late_samples: HashMap<String, u64>,
}

impl Changes {
    /// The range written to `table`, counting an overflow as touching every table.
    pub fn range_of(&self, table: &str) -> Option<TimeRange> {
        let mut range = self.tables.get(table).copied();
        if let Some(overflow) = self.overflow {
            range.get_or_insert(overflow).merge(overflow);
        }
        range
    }

    /// The range written to any table.
    pub fn any(&self) -> Option<TimeRange> {
        let mut all = self.overflow;
        for range in self.tables.values() {
            match &mut all {
                Some(all) => all.merge(*range),
                None => all = Some(*range),
            }
        }
        all
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.overflow.is_none()
    }
}

pub struct ChangeFeed {
    max_tables: usize,
    pending: Mutex<Changes>,
}

impl ChangeFeed {
    pub fn new(max_tables: usize) -> Self {
        ChangeFeed { max_tables, pending: Mutex::new(Changes::default()) }
    }

    /// Notes what `batch` wrote, counting its late samples against `now_ns` (none for a
    /// replay).
    pub fn record(&self, batch: &WriteBatch, now_ns: Option<i64>) {
        let touched = touched_ranges(batch, now_ns.map(|now| now.saturating_sub(LATE_AFTER_NS)));
        if touched.is_empty() {
            return;
        }
        let mut pending = self.pending.lock();
        for (table, range, late) in touched {
            if let Some(known) = pending.tables.get_mut(table.as_str()) {
                known.merge(range);
            } else if pending.tables.len() < self.max_tables {
                pending.tables.insert(table.clone(), range);
            } else {
                pending.overflow.get_or_insert(range).merge(range);
                metrics::counter!("vigil_storage_change_feed_overflows_total").increment(1);
                continue;
            }
            if late > 0 {
                *pending.late_samples.entry(table).or_default() += late;
            }
        }
    }

    /// Takes what was recorded since the last drain.
    pub fn drain(&self) -> Changes {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Per table, the time range a batch writes and how many of its samples are before
/// `late_before_ns` (before taking any lock).
fn touched_ranges(batch: &WriteBatch, late_before_ns: Option<i64>) -> Vec<(String, TimeRange, u64)> {
    let mut ranges: crate::FastHashMap<String, (TimeRange, u64)> = Default::default();
    let mut touch = |table: std::borrow::Cow<'_, str>, range: TimeRange, late: u64| match ranges.get_mut(table.as_ref())
    {
        Some((known, known_late)) => {
            known.merge(range);
            *known_late += late;
        }
        None => {
            ranges.insert(table.into_owned(), (range, late));
        }
    };
    // One table lookup per run of a metric's series.
    for run in batch.metric_runs() {
        let (mut run_range, mut run_late) = (None::<TimeRange>, 0);
        for series in run {
            let (Some(first), Some(last)) = (series.samples.first(), series.samples.last()) else { continue };
            // Samples are sorted by the time they reach storage; min/max still guard the rest.
            let range = TimeRange {
                min_ns: first.timestamp_ns.min(last.timestamp_ns),
                max_ns: first.timestamp_ns.max(last.timestamp_ns),
            };
            run_range.get_or_insert(range).merge(range);
            run_late += late_before_ns
                .map_or(0, |before| series.samples.iter().filter(|s| s.timestamp_ns < before).count() as u64);
        }
        if let Some(range) = run_range {
            touch(crate::schema::metric_table_name(&run[0].metric), range, run_late);
        }
    }
    for rows in &batch.rows {
        if let Some((range, late)) = rows_range(rows.table, &rows.batch, late_before_ns) {
            touch(rows.table.name().into(), range, late);
        }
    }
    ranges.into_iter().map(|(table, (range, late))| (table, range, late)).collect()
}

fn rows_range(
    table: FixedTable,
    batch: &datafusion::arrow::array::RecordBatch,
    late_before_ns: Option<i64>,
) -> Option<(TimeRange, u64)> {
    let column = batch.column_by_name(table.time_column())?;
    let times = column.as_primitive_opt::<TimestampNanosecondType>()?;
    let min_ns = datafusion::arrow::compute::min(times)?;
    let max_ns = datafusion::arrow::compute::max(times)?;
    let late = late_before_ns.map_or(0, |before| times.iter().flatten().filter(|t| *t < before).count() as u64);
    (times.null_count() < times.len()).then_some((TimeRange { min_ns, max_ns }, late))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LabelSet, MetricSeries, Sample};

    fn series(metric: &str, times: &[i64]) -> MetricSeries {
        MetricSeries {
            metric: metric.into(),
            labels: LabelSet::new(vec![("job".into(), "a".into())]).unwrap(),
            samples: times.iter().map(|&t| Sample { timestamp_ns: t, value: 1.0 }).collect(),
        }
    }

    #[test]
    fn ranges_merge_per_table_until_drained() {
        let feed = ChangeFeed::new(10);
        feed.record(
            &WriteBatch { metrics: vec![series("a_total", &[5, 9]), series("b_total", &[100])], rows: Vec::new() },
            None,
        );
        feed.record(&WriteBatch { metrics: vec![series("a_total", &[1, 3])], rows: Vec::new() }, None);
        let changes = feed.drain();
        assert_eq!(changes.tables["a_total"], TimeRange { min_ns: 1, max_ns: 9 });
        assert_eq!(changes.tables["b_total"], TimeRange { min_ns: 100, max_ns: 100 });
        assert_eq!(changes.any(), Some(TimeRange { min_ns: 1, max_ns: 100 }));
        assert!(feed.drain().is_empty(), "a drain takes everything");
    }

    #[test]
    fn past_its_bound_the_feed_keeps_one_range_for_every_table() {
        let feed = ChangeFeed::new(2);
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            feed.record(&WriteBatch { metrics: vec![series(name, &[i as i64 * 10])], rows: Vec::new() }, None);
        }
        let changes = feed.drain();
        assert_eq!(changes.tables.len(), 2);
        assert_eq!(changes.overflow, Some(TimeRange { min_ns: 20, max_ns: 30 }));
        // A table never named still counts as changed within the overflow range.
        assert_eq!(changes.range_of("zzz"), Some(TimeRange { min_ns: 20, max_ns: 30 }));
        assert_eq!(changes.range_of("a"), Some(TimeRange { min_ns: 0, max_ns: 30 }));
    }

    #[test]
    fn samples_behind_the_clock_count_as_late_except_in_replays() {
        let feed = ChangeFeed::new(10);
        let now = 100 * LATE_AFTER_NS;
        let times = [now - 3 * LATE_AFTER_NS, now - LATE_AFTER_NS - 1, now - LATE_AFTER_NS, now];
        feed.record(&WriteBatch { metrics: vec![series("a_total", &times)], rows: Vec::new() }, Some(now));
        feed.record(
            &WriteBatch { metrics: vec![series("a_total", &times), series("b_total", &times)], rows: Vec::new() },
            None,
        );
        let changes = feed.drain();
        assert_eq!(changes.late_samples.get("a_total"), Some(&2), "two samples more than the late bound behind");
        assert_eq!(changes.late_samples.get("b_total"), None, "a replay counts none");
    }
}
