//! What a write carries into storage: metric samples keyed by label set, and rows for the
//! fixed tables. Ingest decoders produce these; the WAL encodes them; the buffer applies them.

use std::fmt;

use datafusion::arrow::record_batch::RecordBatch;

use crate::schema::FixedTable;

/// A Prometheus label set without `__name__`: label names sorted and unique, values non-empty
/// (Prometheus treats an empty value as an absent label).
///
/// It carries its hash, computed once when it is built: every write looks its series up in the
/// cardinality tracker and the write buffer, and hashing the label strings there each time
/// was a tenth of remote-write CPU. The pairs are shared: a clone is a reference count, and
/// two clones of one set compare equal without comparing strings (remote write hands the
/// same set to every write of a series it has seen, see `vigil_ingest::series_cache`).
#[derive(Clone, Debug)]
pub struct LabelSet {
    pairs: std::sync::Arc<[(String, String)]>,
    hash: u64,
}

/// One hasher per process (seeded at random, so nobody outside can aim collisions at it).
static LABEL_HASHER: std::sync::LazyLock<foldhash::fast::RandomState> = std::sync::LazyLock::new(Default::default);

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (std::sync::Arc::ptr_eq(&self.pairs, &other.pairs) || self.pairs == other.pairs)
    }
}

impl Eq for LabelSet {}

impl std::hash::Hash for LabelSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for LabelSet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LabelSet {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs.cmp(&other.pairs)
    }
}

impl Default for LabelSet {
    fn default() -> Self {
        LabelSet::with_hash(Vec::new())
    }
}

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
}

impl LabelSet {
    /// Builds a label set from pairs in any order; empty values are dropped.
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, LabelError> {
        Self::from_pairs(pairs).map_err(|(error, _)| error)
    }

    /// [`LabelSet::new`] that hands the pairs back with the error, so a decoder that moved its
    /// strings in can still say which series was refused.
    #[allow(clippy::result_large_err)]
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Result<Self, (LabelError, Vec<(String, String)>)> {
        pairs.retain(|(_, value)| !value.is_empty());
        // Senders sort their labels (remote write requires it): checking is cheaper than sorting.
        if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
            pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let error = if let Some(pair) = pairs.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            Some(LabelError::Duplicate(pair[0].0.clone()))
        } else {
            pairs
                .iter()
                .find(|(name, _)| !is_valid_label_name(name))
                .map(|(name, _)| LabelError::InvalidName(name.clone()))
        };
        match error {
            Some(error) => Err((error, pairs)),
            None => Ok(LabelSet::with_hash(pairs)),
        }
    }

    fn with_hash(pairs: Vec<(String, String)>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = LABEL_HASHER.build_hasher();
        for (name, value) in &pairs {
            // Separators keep ("ab","c") and ("a","bc") apart.
            hasher.write(name.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(value.as_bytes());
            hasher.write_u8(0xfe);
        }
        LabelSet { hash: hasher.finish(), pairs: pairs.into() }
    }

    /// This process's hash of the label set (not stable across restarts).
    pub fn hash_value(&self) -> u64 {
        self.hash
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.pairs[i].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Approximate heap bytes, for memory budgets (the write buffer's, remote write's cache).
    pub fn heap_bytes(&self) -> usize {
        self.pairs.iter().map(|(n, v)| n.len() + v.len() + 48).sum()
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

/// Prometheus label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    // Bytes, not chars: every allowed character is ASCII, so no UTF-8 decoding is needed.
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Prometheus metric name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// A metric name, shared: remote write hands the same one to every write of a series it
/// knows (see `vigil_ingest::series_cache`), so a series' name costs a reference count per
/// write instead of a copy (copying it was a tenth of remote-write CPU), and the series of
/// one metric that come together in a write are told apart from the next metric's by a
/// pointer comparison ([`WriteBatch::metric_runs`]; `Arc`'s equality compares pointers
/// before text).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricName(std::sync::Arc<str>);

impl MetricName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `name`, as the same allocation as `previous` when it is the same name: decoders that
    /// build a write's series one after another share a metric's name between its series.
    pub fn after(previous: Option<&MetricName>, name: &str) -> MetricName {
        match previous {
            Some(previous) if *previous == *name => previous.clone(),
            _ => name.into(),
        }
    }
}

impl std::ops::Deref for MetricName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for MetricName {
    fn from(name: &str) -> Self {
        MetricName(name.into())
    }
}

impl From<String> for MetricName {
    fn from(name: String) -> Self {
        MetricName(name.into())
    }
}

impl PartialEq<str> for MetricName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for MetricName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `str` does: `{:.64}` cuts an error message's name short.
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One sample: nanoseconds since the Unix epoch and a float whose bits are kept exactly
/// (the Prometheus stale marker is a particular NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub timestamp_ns: i64,
    pub value: f64,
}

/// Samples of one series of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSeries {
    pub metric: MetricName,
    pub labels: LabelSet,
    pub samples: Vec<Sample>,
}

impl MetricSeries {
    /// Puts the samples in time order with one value per timestamp (the last one sent wins,
    /// as a repeated write would). O(n log n), and O(n) for samples already in order, which
    /// is how every real sender sends them; done before any shared lock is taken.
    pub fn sort_samples(&mut self) {
        let samples = &mut self.samples;
        if samples.windows(2).all(|pair| pair[0].timestamp_ns < pair[1].timestamp_ns) {
            return;
        }
        // Stable: among equal timestamps the order sent is kept, so the last one is the newest.
        samples.sort_by_key(|sample| sample.timestamp_ns);
        let mut kept = 0;
        for index in 0..samples.len() {
            if kept > 0 && samples[kept - 1].timestamp_ns == samples[index].timestamp_ns {
                samples[kept - 1] = samples[index];
            } else {
                samples[kept] = samples[index];
                kept += 1;
            }
        }
        samples.truncate(kept);
    }
}

/// Rows for one fixed table, in that table's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRows {
    pub table: FixedTable,
    pub batch: RecordBatch,
}

/// Everything one request writes. It is logged and applied as a unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub metrics: Vec<MetricSeries>,
    pub rows: Vec<TableRows>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.metrics.iter().all(|s| s.samples.is_empty()) && self.rows.iter().all(|r| r.batch.num_rows() == 0)
    }

    pub fn sample_count(&self) -> usize {
        self.metrics.iter().map(|s| s.samples.len()).sum()
    }

    pub fn row_count(&self) -> usize {
        self.rows.iter().map(|r| r.batch.num_rows()).sum()
    }

    /// The metric series in runs of one metric name each, in order: the series a sender
    /// sends together (a scrape's families, a remote-write shard's share of them) come
    /// together, so what is looked up by metric name (its table, its series) is looked up
    /// once a run instead of once a series.
    pub fn metric_runs(&self) -> impl Iterator<Item = &[MetricSeries]> {
        metric_runs(&self.metrics)
    }

    /// Sorts every series' samples (see [`MetricSeries::sort_samples`]).
    pub fn sort_samples(&mut self) {
        for series in &mut self.metrics {
            series.sort_samples();
        }
    }
}

/// `series` in runs of one metric name each (see [`WriteBatch::metric_runs`]).
pub fn metric_runs(series: &[MetricSeries]) -> impl Iterator<Item = &[MetricSeries]> {
    series.chunk_by(|a, b| a.metric == b.metric)
}

/// What storage accepted from one write, and what the cardinality limits refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub samples: usize,
    pub rows: usize,
    pub refused: crate::cardinality::CardinalityRefusal,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn label_sets_are_sorted_and_drop_empty_values() {
        let labels = LabelSet::new(pairs(&[("job", "a"), ("env", ""), ("code", "200")])).unwrap();
        assert_eq!(labels.iter().collect::<Vec<_>>(), vec![("code", "200"), ("job", "a")]);
        assert_eq!(labels.get("job"), Some("a"));
        assert_eq!(labels.get("env"), None);
    }

    #[test]
    fn equal_label_sets_hash_alike_whatever_order_they_came_in() {
        let a = LabelSet::new(pairs(&[("job", "a"), ("code", "200"), ("env", "")])).unwrap();
        let b = LabelSet::new(pairs(&[("code", "200"), ("job", "a")])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash_value(), b.hash_value());
        let mut map = std::collections::HashMap::new();
        map.insert(a.clone(), 1);
        assert_eq!(map.get(&b), Some(&1));
        // Where the strings split matters: ("ab","c") is not ("a","bc").
        let split = |n: &str, v: &str| LabelSet::new(pairs(&[(n, v)])).unwrap();
        assert_ne!(split("ab", "c"), split("a", "bc"));
        assert_ne!(split("ab", "c").hash_value(), split("a", "bc").hash_value());
        assert_eq!(LabelSet::default(), LabelSet::new(Vec::new()).unwrap());
        assert!(split("a", "1") < split("a", "2"), "ordered by pairs, not by hash");
    }

    #[test]
    fn duplicate_and_invalid_label_names_are_refused() {
        assert_eq!(LabelSet::new(pairs(&[("a", "1"), ("a", "2")])), Err(LabelError::Duplicate("a".into())));
        assert_eq!(LabelSet::new(pairs(&[("1a", "1")])), Err(LabelError::InvalidName("1a".into())));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_metric_name("job:http_requests:rate5m"));
        assert!(!is_valid_label_name("a:b"));
    }

    #[test]
    fn a_writes_series_run_by_metric_name_in_order() {
        let series = |metric: MetricName| MetricSeries { metric, labels: LabelSet::default(), samples: vec![] };
        let up = MetricName::from("up");
        // Two names "up" that are not one allocation are still one name.
        let batch = WriteBatch {
            metrics: vec![
                series(up.clone()),
                series("up".into()),
                series("down".into()),
                series(up.clone()),
                series("up_total".into()),
            ],
            rows: vec![],
        };
        let runs: Vec<(String, usize)> =
            batch.metric_runs().map(|run| (run[0].metric.to_string(), run.len())).collect();
        assert_eq!(runs, [("up".into(), 2), ("down".into(), 1), ("up".into(), 1), ("up_total".into(), 1)]);
        assert_eq!(WriteBatch::default().metric_runs().count(), 0);
        // A name prints as its text, and is cut short like a string.
        assert_eq!(format!("{up} {:.1} {up:?}", MetricName::from("down")), "up d \"up\"");
        assert!(up == "up" && up == *"up" && up != "up_total");
        // A decoder's next series of the same metric shares its name; another name is its own.
        assert!(std::ptr::eq(MetricName::after(Some(&up), "up").as_str(), up.as_str()));
        assert_eq!(MetricName::after(Some(&up), "down"), "down");
        assert_eq!(MetricName::after(None, "up"), up);
    }

    #[test]
    fn samples_sort_by_time_and_the_last_of_a_timestamp_wins() {
        let sample = |t: i64, v: f64| Sample { timestamp_ns: t, value: v };
        let mut series = MetricSeries {
            metric: "m".into(),
            labels: LabelSet::default(),
            samples: vec![sample(30, 1.0), sample(10, 2.0), sample(30, 3.0), sample(20, 4.0), sample(10, 5.0)],
        };
        series.sort_samples();
        assert_eq!(series.samples, vec![sample(10, 5.0), sample(20, 4.0), sample(30, 3.0)]);
        let descending: Vec<Sample> = (0..1000).rev().map(|t| sample(t, t as f64)).collect();
        series.samples = descending;
        series.sort_samples();
        assert!(series.samples.windows(2).all(|p| p[0].timestamp_ns < p[1].timestamp_ns));
        assert_eq!(series.samples.len(), 1000);
    }
}
