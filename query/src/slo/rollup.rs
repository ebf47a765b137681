//! Good/total counts in time buckets, with prefix sums so that the sum over any window is
//! two lookups: an evaluation costs what the new data costs, whatever the window's length.
//!
//! Minute buckets cover the last `minute_span` (enough for the 3-day burn window); hour
//! buckets cover the SLO window. A bucket `m` holds the events with timestamps in
//! `(m, m + 1 min]`. Buckets are overwritten, not added to, so the recent ones can be
//! recomputed from data that arrived late.

use std::collections::VecDeque;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// The bucket an event at `ts` belongs to.
pub fn minute_of(ts_ms: i64) -> i64 {
    (ts_ms - 1).div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The first hour boundary at or after `ts`.
fn hour_at_or_after(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS + if ts_ms.rem_euclid(HOUR_MS) == 0 { 0 } else { HOUR_MS }
}

/// Buckets of one width, oldest first. Sums are taken by walking the buckets: a status
/// reads a few thousand of them, while prefix sums would double the memory of every
/// rollup and make a late write to an old bucket cost the whole tail.
#[derive(Clone, Debug)]
struct Buckets {
    width: i64,
    /// Start of the first bucket.
    start: i64,
    values: VecDeque<(f64, f64)>,
    /// How many buckets the span holds: growth stops doubling there, so a rollup's memory
    /// is its span's (1,000 SLOs × 3 days of minutes), not the next power of two.
    span_buckets: usize,
}

impl Buckets {
    fn new(width: i64, span_ms: i64) -> Self {
        Buckets { width, start: 0, values: VecDeque::new(), span_buckets: (span_ms / width).max(0) as usize + 2 }
    }

    fn end(&self) -> i64 {
        self.start + self.values.len() as i64 * self.width
    }

    /// Room for `more` buckets: doubling up to the span, then by an eighth.
    fn reserve(&mut self, more: usize) {
        let len = self.values.len();
        if len + more <= self.values.capacity() {
            return;
        }
        let target = if len + more <= self.span_buckets {
            (2 * len).clamp(len + more, self.span_buckets)
        } else {
            len + more + len / 8
        };
        self.values.reserve_exact(target - len);
    }

    /// Makes room for `bucket`, growing either end (late data may land before the first
    /// bucket); the caller keeps older ones out (see `Rollup::minutes_floor`).
    fn reach(&mut self, bucket: i64) {
        if self.values.is_empty() {
            self.start = bucket;
        }
        if bucket < self.start {
            let more = ((self.start - bucket) / self.width) as usize;
            self.reserve(more);
            for _ in 0..more {
                self.values.push_front((0.0, 0.0));
            }
            self.start -= more as i64 * self.width;
        }
        if bucket >= self.end() {
            let more = ((bucket - self.end()) / self.width) as usize + 1;
            self.reserve(more);
            self.values.extend(std::iter::repeat_n((0.0, 0.0), more));
        }
    }

    /// Adds `delta` to a bucket.
    fn add(&mut self, bucket: i64, delta: (f64, f64)) {
        if delta == (0.0, 0.0) {
            return;
        }
        self.reach(bucket);
        let index = ((bucket - self.start) / self.width) as usize;
        self.values[index].0 += delta.0;
        self.values[index].1 += delta.1;
    }

    fn get(&self, bucket: i64) -> (f64, f64) {
        if bucket < self.start || bucket >= self.end() {
            return (0.0, 0.0);
        }
        self.values[((bucket - self.start) / self.width) as usize]
    }

    /// Drops buckets that start before `keep_from`.
    fn trim(&mut self, keep_from: i64) {
        let stale = ((keep_from - self.start) / self.width).clamp(0, self.values.len() as i64);
        self.values.drain(..stale as usize);
        self.start += stale * self.width;
        if self.values.capacity() > self.span_buckets.max(self.values.len()) * 2 {
            // A long step (a backfill day, a late recompute) grew it past its span.
            self.values.shrink_to(self.span_buckets.max(self.values.len()));
        }
    }

    /// Σ of the buckets starting in `[from, to)`.
    fn sum(&self, from: i64, to: i64) -> (f64, f64) {
        let index = |t: i64| -> usize {
            ((t - self.start) as f64 / self.width as f64).ceil().clamp(0.0, self.values.len() as f64) as usize
        };
        let (first, last) = (index(from), index(to));
        if last <= first {
            return (0.0, 0.0);
        }
        self.values.range(first..last).fold((0.0, 0.0), |sum, v| (sum.0 + v.0, sum.1 + v.1))
    }
}

impl Buckets {
    /// The start and the non-zero buckets, for saving.
    fn parts(&self) -> (Option<i64>, Vec<(i64, (f64, f64))>) {
        let start = (!self.values.is_empty()).then_some(self.start);
        let buckets = self
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != (0.0, 0.0))
            .map(|(i, v)| (self.start + i as i64 * self.width, *v))
            .collect();
        (start, buckets)
    }

    /// Rebuilds buckets from [`Buckets::parts`] (buckets in time order).
    fn from_parts(width: i64, span_ms: i64, start: Option<i64>, buckets: &[(i64, (f64, f64))]) -> Self {
        let mut rebuilt = Buckets::new(width, span_ms);
        if let Some(start) = start {
            rebuilt.reach(start);
        }
        for (bucket, value) in buckets {
            rebuilt.add(*bucket, *value);
        }
        rebuilt
    }
}

/// What a rollup holds, for saving: each granularity's first bucket and its non-zero ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollupParts {
    pub minutes_start: Option<i64>,
    pub minutes: Vec<(i64, (f64, f64))>,
    pub hours_start: Option<i64>,
    pub hours: Vec<(i64, (f64, f64))>,
}

/// Good/total per minute (recent) and per hour (the whole window).
#[derive(Clone, Debug)]
pub struct Rollup {
    minutes: Buckets,
    hours: Buckets,
    minute_span: i64,
    hour_span: i64,
    /// Minutes before this (the last trim's edge) are only counted in their hours.
    minutes_floor: i64,
}

impl Rollup {
    pub fn new(minute_span_ms: i64, hour_span_ms: i64) -> Self {
        Rollup {
            minutes: Buckets::new(MINUTE_MS, minute_span_ms),
            hours: Buckets::new(HOUR_MS, hour_span_ms),
            minute_span: minute_span_ms,
            hour_span: hour_span_ms,
            minutes_floor: i64::MIN,
        }
    }

    pub fn parts(&self) -> RollupParts {
        let (minutes_start, minutes) = self.minutes.parts();
        let (hours_start, hours) = self.hours.parts();
        RollupParts { minutes_start, minutes, hours_start, hours }
    }

    /// The rollup [`Rollup::parts`] came from (hours already hold their minutes), trimmed
    /// at `now_ms`.
    pub fn from_parts(minute_span_ms: i64, hour_span_ms: i64, parts: &RollupParts, now_ms: i64) -> Self {
        let mut rollup = Rollup {
            minutes: Buckets::from_parts(MINUTE_MS, minute_span_ms, parts.minutes_start, &parts.minutes),
            hours: Buckets::from_parts(HOUR_MS, hour_span_ms, parts.hours_start, &parts.hours),
            minute_span: minute_span_ms,
            hour_span: hour_span_ms,
            minutes_floor: i64::MIN,
        };
        rollup.trim(now_ms);
        rollup
    }

    /// Sets a minute bucket to (good, total). A minute older than those kept changes
    /// nothing: its hour is set whole with [`Rollup::set_old_hour`].
    pub fn set(&mut self, minute: i64, good: f64, total: f64) {
        if self.is_before_minutes(minute) {
            return;
        }
        let old = self.minutes.get(minute);
        let delta = (good - old.0, total - old.1);
        self.minutes.add(minute, delta);
        self.hours.add(minute.div_euclid(HOUR_MS) * HOUR_MS, delta);
    }

    pub fn get(&self, minute: i64) -> (f64, f64) {
        self.minutes.get(minute)
    }

    /// Heap memory the buckets hold (for `vigil_memory_bytes{component="slo_rollups"}`).
    pub fn heap_bytes(&self) -> usize {
        (self.minutes.values.capacity() + self.hours.values.capacity()) * std::mem::size_of::<(f64, f64)>()
    }

    /// True when `minute` is older than the minute buckets kept (only hours hold it).
    pub fn is_before_minutes(&self, minute: i64) -> bool {
        minute < self.minutes_floor
    }

    /// The oldest minute kept one by one, once the rollup has been trimmed.
    pub fn minutes_floor(&self) -> Option<i64> {
        (self.minutes_floor != i64::MIN).then_some(self.minutes_floor)
    }

    /// Sets an hour bucket whose early minutes are no longer kept: `old` is the sum of those
    /// minutes; the minutes still kept in the hour are added to it.
    pub fn set_old_hour(&mut self, hour: i64, old: (f64, f64)) {
        let kept = self.minutes.sum(hour, hour + HOUR_MS);
        let want = (old.0 + kept.0, old.1 + kept.1);
        let have = self.hours.get(hour);
        self.hours.add(hour, (want.0 - have.0, want.1 - have.1));
    }

    /// Forgets what is older than the spans, relative to `now`.
    pub fn trim(&mut self, now_ms: i64) {
        self.minutes_floor = self.minutes_floor.max((now_ms - self.minute_span).div_euclid(MINUTE_MS) * MINUTE_MS);
        self.minutes.trim(self.minutes_floor);
        self.hours.trim(now_ms - self.hour_span);
    }

    /// Good and total over `(from, to]` from minute buckets (windows up to the minute span).
    /// Whole hours whose minutes are all kept are read from their hour bucket, which holds
    /// the same sum: a 3-day window is ~100 reads, not 4,320.
    pub fn recent(&self, from_ms: i64, to_ms: i64) -> (f64, f64) {
        let (first, end) = (minute_of(from_ms + 1), minute_of(to_ms) + MINUTE_MS);
        let kept_from = first.max(self.minutes.start).max(self.minutes_floor).max(self.hours.start);
        let hours_from = hour_at_or_after(kept_from);
        let hours_to = end.div_euclid(HOUR_MS) * HOUR_MS;
        if self.minutes.values.is_empty() || self.hours.values.is_empty() || hours_to <= hours_from {
            return self.minutes.sum(first, end);
        }
        let parts = [
            self.minutes.sum(first, hours_from),
            self.hours.sum(hours_from, hours_to),
            self.minutes.sum(hours_to, end),
        ];
        parts.iter().fold((0.0, 0.0), |sum, p| (sum.0 + p.0, sum.1 + p.1))
    }

    /// Good and total over `(from, to]`: whole hours from hour buckets, the current hour and
    /// the edges from minute buckets where they are still kept. The oldest partial hour
    /// counts whole once its minutes are gone.
    pub fn window(&self, from_ms: i64, to_ms: i64) -> (f64, f64) {
        if self.minutes.values.is_empty() {
            // Days without events: only the hours still count.
            return self.hours.sum(from_ms.div_euclid(HOUR_MS) * HOUR_MS, minute_of(to_ms) + MINUTE_MS);
        }
        let minutes_from = self.minutes.start.max(minute_of(from_ms + 1));
        if minutes_from <= minute_of(from_ms + 1) {
            return self.recent(from_ms, to_ms);
        }
        // Hours (rounded down at the old edge) up to the hour where minutes take over.
        let split = hour_at_or_after(minutes_from);
        let old = self.hours.sum(from_ms.div_euclid(HOUR_MS) * HOUR_MS, split);
        let new = self.minutes.sum(split, minute_of(to_ms) + MINUTE_MS);
        (old.0 + new.0, old.1 + new.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_of_an_event_is_the_minute_that_ends_at_or_after_it() {
        assert_eq!(minute_of(60_000), 0);
        assert_eq!(minute_of(60_001), 60_000);
        assert_eq!(minute_of(1), 0);
    }

    #[test]
    fn sums_over_windows_and_overwrites() {
        let mut rollup = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        for m in 0..300 {
            rollup.set(m * MINUTE_MS, 9.0, 10.0);
        }
        assert_eq!(rollup.recent(0, 60 * MINUTE_MS), (540.0, 600.0));
        assert_eq!(rollup.recent(10 * MINUTE_MS, 20 * MINUTE_MS), (90.0, 100.0));
        rollup.set(15 * MINUTE_MS, 0.0, 10.0);
        assert_eq!(rollup.recent(10 * MINUTE_MS, 20 * MINUTE_MS), (81.0, 100.0));
        rollup.set(15 * MINUTE_MS, 9.0, 10.0);
        // Trim the minutes to the last 3 hours: the window still sees everything by hours.
        rollup.trim(300 * MINUTE_MS);
        assert_eq!(rollup.recent(0, 300 * MINUTE_MS), (9.0 * 180.0, 10.0 * 180.0));
        assert_eq!(rollup.window(0, 300 * MINUTE_MS), (2700.0, 3000.0));
        assert_eq!(rollup.window(HOUR_MS, 300 * MINUTE_MS), (2160.0, 2400.0));
    }

    #[test]
    fn a_rollup_rebuilt_from_its_parts_sums_the_same() {
        let mut rollup = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        for m in 0..600 {
            let v = if m % 7 == 0 { 0.0 } else { m as f64 };
            rollup.set(m * MINUTE_MS, v / 2.0, v);
        }
        rollup.trim(600 * MINUTE_MS);
        let parts = rollup.parts();
        assert!(parts.minutes.len() < 180, "zero minutes are not saved");
        let rebuilt = Rollup::from_parts(3 * HOUR_MS, 48 * HOUR_MS, &parts, 600 * MINUTE_MS);
        assert_eq!(rebuilt.parts(), parts);
        for (from, to) in [(0, 600), (100, 600), (590, 600), (0, 300), (420, 599)] {
            assert_eq!(
                rebuilt.window(from * MINUTE_MS, to * MINUTE_MS),
                rollup.window(from * MINUTE_MS, to * MINUTE_MS)
            );
            assert_eq!(
                rebuilt.recent(from * MINUTE_MS, to * MINUTE_MS),
                rollup.recent(from * MINUTE_MS, to * MINUTE_MS)
            );
        }
        // Minutes all zero (hours still counting): the window is still read from the hours.
        let mut quiet = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        for m in 0..600 {
            quiet.set(m * MINUTE_MS, if m < 60 { 1.0 } else { 0.0 }, if m < 60 { 1.0 } else { 0.0 });
        }
        quiet.trim(600 * MINUTE_MS);
        let rebuilt = Rollup::from_parts(3 * HOUR_MS, 48 * HOUR_MS, &quiet.parts(), 600 * MINUTE_MS);
        assert_eq!(rebuilt.window(0, 600 * MINUTE_MS), (60.0, 60.0));
    }

    #[test]
    fn late_minutes_before_the_first_bucket_grow_the_front() {
        let mut rollup = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        rollup.set(150 * MINUTE_MS, 1.0, 2.0);
        rollup.set(10 * MINUTE_MS, 3.0, 4.0); // arrived late, before anything held
        assert_eq!(rollup.recent(0, 200 * MINUTE_MS), (4.0, 6.0));
        assert_eq!(rollup.recent(100 * MINUTE_MS, 200 * MINUTE_MS), (1.0, 2.0));
        assert_eq!(rollup.window(0, 200 * MINUTE_MS), (4.0, 6.0));
        rollup.set(10 * MINUTE_MS, 0.0, 4.0);
        assert_eq!(rollup.window(0, 200 * MINUTE_MS), (1.0, 6.0), "set again, not added");
    }

    #[test]
    fn late_data_older_than_the_minutes_kept_resets_whole_hours() {
        let mut rollup = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        for m in 0..300 {
            rollup.set(m * MINUTE_MS, 9.0, 10.0);
        }
        rollup.trim(300 * MINUTE_MS); // minutes kept from minute 120
        assert_eq!(rollup.minutes_floor(), Some(120 * MINUTE_MS));
        // A minute no longer kept is not added twice by `set`.
        rollup.set(30 * MINUTE_MS, 100.0, 100.0);
        assert_eq!(rollup.window(0, 300 * MINUTE_MS), (2700.0, 3000.0));
        // The first hour recomputed with late data: 600 → 700 total.
        rollup.set_old_hour(0, (540.0, 700.0));
        assert_eq!(rollup.window(0, 300 * MINUTE_MS), (2700.0, 3100.0));
        // An hour half kept: old minutes 60..120 plus kept minutes 120..? (none, 120 is hour 2).
        rollup.set_old_hour(HOUR_MS, (0.0, 0.0));
        assert_eq!(rollup.window(0, 300 * MINUTE_MS), (2160.0, 2500.0));
    }

    #[test]
    fn memory_stays_that_of_the_span_through_a_backfill() {
        // Thirty day-long steps, trimmed before each like the evaluator does, then a
        // minute a cycle: the minute buckets never hold much more than the span.
        let span = 3 * 24 * HOUR_MS + 2 * HOUR_MS;
        let mut rollup = Rollup::new(span, 30 * 24 * HOUR_MS);
        let day = 24 * 60;
        for step in 1..=30 {
            rollup.trim(step * day * MINUTE_MS);
            for m in (step - 1) * day..step * day {
                rollup.set(m * MINUTE_MS, 1.0, 1.0);
            }
            rollup.trim(step * day * MINUTE_MS);
        }
        for m in 30 * day..30 * day + 500 {
            rollup.trim(m * MINUTE_MS);
            rollup.set(m * MINUTE_MS, 1.0, 1.0);
        }
        let span_minutes = (span / MINUTE_MS) as usize;
        assert!(
            rollup.minutes.values.capacity() <= span_minutes + span_minutes / 8,
            "{}",
            rollup.minutes.values.capacity()
        );
        assert!(rollup.hours.values.capacity() <= 30 * 24 + 30 * 3, "{}", rollup.hours.values.capacity());
        // And it still sums right.
        assert_eq!(rollup.recent(30 * day * MINUTE_MS, (30 * day + 60) * MINUTE_MS), (60.0, 60.0));
        let now = (30 * day + 500) * MINUTE_MS;
        let month = rollup.window(now - 30 * 24 * HOUR_MS, now).1;
        assert!((month - 30.0 * day as f64).abs() <= 60.0, "{month}");
    }

    #[test]
    fn windows_read_through_hours_equal_the_minutes_they_hold() {
        let mut rollup = Rollup::new(3 * HOUR_MS, 48 * HOUR_MS);
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for m in 0..900 {
            rollup.set(m * MINUTE_MS, (next() % 7) as f64, (next() % 11) as f64 + 7.0);
            if m % 97 == 0 {
                // Late overwrites, and trims as the clock moves.
                let back = m - (next() % 120) as i64;
                rollup.set(back.max(0) * MINUTE_MS, 1.0, 2.0);
                rollup.trim(m * MINUTE_MS);
            }
        }
        // The floor (730) is mid-hour: that hour's bucket still counts minutes no longer kept.
        rollup.trim(910 * MINUTE_MS);
        for _ in 0..500 {
            let from = (next() % 900) as i64 * MINUTE_MS + (next() % 3) as i64 * 20_000;
            let to = from + (next() % 400) as i64 * MINUTE_MS;
            let walked = rollup.minutes.sum(minute_of(from + 1), minute_of(to) + MINUTE_MS);
            assert_eq!(rollup.recent(from, to), walked, "({from}, {to}]");
        }
    }
}
