//! Label sets remote write has already decoded and checked, by the request bytes that carry
//! them. A sender repeats every series' labels in every request (Prometheus sends each series
//! once per 500 samples), so a known series costs one hash and one comparison of its encoded
//! labels instead of decoding, validating, sorting and hashing its strings again; and the
//! label set it yields is the one the write buffer already holds, which storage compares by
//! pointer. VictoriaMetrics caches the same way.
//!
//! Bounded by bytes: when a new entry would pass the budget the cache starts over (the next
//! requests fill it again at the cost of a decode each), so a sender that churns series
//! cannot grow it.

use std::collections::HashMap;

use parking_lot::RwLock;
use vigil_storage::{LabelSet, MetricName};

/// A series' metric name and its other labels, checked against the limits.
#[derive(Clone, Debug)]
pub struct KnownSeries {
    pub metric: MetricName,
    pub labels: LabelSet,
}

/// See the module docs. Shared by every remote-write request of one process; the limits a
/// cached series was checked against are the process's, fixed at start.
#[derive(Debug)]
pub struct SeriesCache {
    max_bytes: usize,
    entries: RwLock<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_labels: HashMap<Box<[u8]>, KnownSeries, foldhash::fast::RandomState>,
    bytes: usize,
}

/// Bookkeeping of one entry beside its strings: the map slot, the boxed key, the pairs' box.
const ENTRY_OVERHEAD_BYTES: usize = 96;

impl SeriesCache {
    /// 64 MiB holds about 200,000 series of ten labels.
    pub const DEFAULT_BYTES: usize = 64 << 20;

    /// A cache of at most `max_bytes` (0 turns it off).
    pub fn new(max_bytes: usize) -> Self {
        SeriesCache { max_bytes, entries: RwLock::default() }
    }

    /// The known series of each key, in order (`None`: unknown, or a key that is not cached).
    /// One read lock for a whole request.
    pub fn lookup<'a>(&self, keys: impl Iterator<Item = Option<&'a [u8]>>) -> Vec<Option<KnownSeries>> {
        let entries = self.entries.read();
        keys.map(|key| key.and_then(|key| entries.by_labels.get(key).cloned())).collect()
    }

    /// Remembers series decoded by a request; one write lock for all of them.
    pub fn insert<'a>(&self, fresh: impl IntoIterator<Item = (&'a [u8], KnownSeries)>) {
        if self.max_bytes == 0 {
            return;
        }
        let mut entries = self.entries.write();
        for (key, known) in fresh {
            let bytes = key.len() + known.metric.len() + known.labels.heap_bytes() + ENTRY_OVERHEAD_BYTES;
            if bytes > self.max_bytes {
                continue; // would never fit: not worth emptying the cache for
            }
            if entries.bytes + bytes > self.max_bytes {
                *entries = Entries::default();
                metrics::counter!("vigil_ingest_series_cache_resets_total").increment(1);
            }
            if entries.by_labels.insert(key.into(), known).is_none() {
                entries.bytes += bytes;
            }
        }
        metrics::gauge!("vigil_memory_bytes", "component" => "series_cache").set(entries.bytes as f64);
        metrics::gauge!("vigil_ingest_series_cache_series").set(entries.by_labels.len() as f64);
    }

    /// Bytes held (estimated as the budget counts them).
    pub fn bytes(&self) -> usize {
        self.entries.read().bytes
    }

    pub fn len(&self) -> usize {
        self.entries.read().by_labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache::new(Self::DEFAULT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(value: &str) -> KnownSeries {
        KnownSeries { metric: "m".into(), labels: LabelSet::new(vec![("a".into(), value.into())]).unwrap() }
    }

    #[test]
    fn a_known_key_yields_the_same_label_set() {
        let cache = SeriesCache::default();
        cache.insert([(&b"k1"[..], known("1"))]);
        let found = cache.lookup([Some(&b"k1"[..]), Some(&b"k2"[..]), None].into_iter());
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].as_ref().map(|k| k.labels.get("a")), Some(Some("1")));
        assert!(found[1].is_none() && found[2].is_none());
    }

    #[test]
    fn the_budget_bounds_the_cache_and_it_starts_over_when_full() {
        let one = 2 + 1 + known("0").labels.heap_bytes() + ENTRY_OVERHEAD_BYTES;
        let cache = SeriesCache::new(one * 3);
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        for key in &keys {
            cache.insert([(key.as_bytes(), known("0"))]);
            assert!(cache.bytes() <= one * 3, "{} bytes", cache.bytes());
        }
        // Ten inserts into room for three: it started over three times and holds the last one.
        assert_eq!(cache.len(), 1);
        assert!(cache.lookup([Some(keys[9].as_bytes())].into_iter())[0].is_some());
        assert!(cache.lookup([Some(keys[0].as_bytes())].into_iter())[0].is_none());
        // An entry larger than the whole budget is not kept, and does not empty the cache;
        // zero turns the cache off.
        let small = SeriesCache::new(one - 1);
        small.insert([(&b"k0"[..], known("0"))]);
        assert!(small.is_empty());
        cache.insert([(&b"k-too-long-for-the-budget"[..], known(&"x".repeat(one * 3)))]);
        assert_eq!(cache.len(), 1, "the oversized entry left the cache as it was");
        let off = SeriesCache::new(0);
        off.insert([(&b"k0"[..], known("0"))]);
        assert!(off.is_empty());
    }
}
