//! Metric metadata (type, help, unit) as senders describe it, for `/api/v1/metadata`.
//! Kept in memory like Prometheus's scrape metadata: rebuilt as senders send it again.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::RwLock;
use serde::Serialize;

/// At most this many different descriptions are kept per metric.
const MAX_PER_METRIC: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MetricMetadata {
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub unit: String,
}

#[derive(Debug, Default)]
pub struct MetadataStore {
    entries: RwLock<BTreeMap<String, BTreeSet<MetricMetadata>>>,
}

impl MetadataStore {
    pub fn record(&self, metric: &str, metadata: MetricMetadata) {
        {
            let entries = self.entries.read();
            if entries.get(metric).is_some_and(|known| known.contains(&metadata)) {
                return;
            }
        }
        let mut entries = self.entries.write();
        let known = entries.entry(metric.to_string()).or_default();
        if known.len() < MAX_PER_METRIC {
            known.insert(metadata);
        }
    }

    /// Metadata per metric, for one metric or all, at most `limit` metrics.
    pub fn get(&self, metric: Option<&str>, limit: Option<usize>) -> BTreeMap<String, Vec<MetricMetadata>> {
        let entries = self.entries.read();
        entries
            .iter()
            .filter(|(name, _)| metric.is_none_or(|m| m == name.as_str()))
            .take(limit.unwrap_or(usize::MAX))
            .map(|(name, set)| (name.clone(), set.iter().cloned().collect()))
            .collect()
    }
}

/// The name Prometheus's `MetricType` enum (remote write) gives a number.
pub fn remote_write_type(kind: i32) -> &'static str {
    match kind {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_kept_per_metric_without_repeats() {
        let store = MetadataStore::default();
        let meta = MetricMetadata { kind: "counter".into(), help: "Requests.".into(), unit: String::new() };
        store.record("http_requests_total", meta.clone());
        store.record("http_requests_total", meta.clone());
        store.record("up", MetricMetadata { kind: "gauge".into(), help: String::new(), unit: String::new() });
        assert_eq!(store.get(Some("http_requests_total"), None)["http_requests_total"], vec![meta]);
        assert_eq!(store.get(None, Some(1)).len(), 1);
        assert_eq!(remote_write_type(1), "counter");
    }
}
