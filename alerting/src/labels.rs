//! Label sets of alerts and their fingerprints.

use std::collections::BTreeMap;
use std::hash::Hasher;

/// Labels of one alert, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// What an alert says in one line, on the alerts page and in notifications: its
/// `summary`, or once resolved its `resolved_summary` (else "Resolved: " and the summary, so
/// a resolved alert never reads as if it still fired); the alert's name without a summary.
pub fn headline(alertname: &str, annotations: &Labels, resolved: bool) -> String {
    let summary = annotations.get("summary").filter(|s| !s.is_empty());
    match (resolved, annotations.get(crate::slo_alerts::RESOLVED_SUMMARY).filter(|s| !s.is_empty()), summary) {
        (true, Some(resolved), _) => resolved.clone(),
        (true, None, Some(summary)) => format!("Resolved: {summary}"),
        (true, None, None) => format!("{alertname} resolved"),
        (false, _, Some(summary)) => summary.clone(),
        (false, _, None) => alertname.to_string(),
    }
}

/// The fingerprint Prometheus and Alertmanager give a label set (FNV-1a over sorted
/// `name 0xff value 0xff`), so webhook receivers see the fingerprints they would see from
/// Alertmanager.
pub fn fingerprint(labels: &Labels) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    for (name, value) in labels {
        hasher.write(name.as_bytes());
        hasher.write(&[0xff]);
        hasher.write(value.as_bytes());
        hasher.write(&[0xff]);
    }
    hasher.finish()
}

/// A fingerprint as Alertmanager prints it.
pub fn fingerprint_hex(labels: &Labels) -> String {
    format!("{:016x}", fingerprint(labels))
}

/// `{a="x", b="y"}`, as Alertmanager writes label sets in group keys.
pub fn format_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_prometheus() {
        // model.LabelSet{}.Fingerprint() and {"a": "b"} in Prometheus' common/model.
        assert_eq!(fingerprint(&Labels::new()), 0xcbf29ce484222325);
        let labels: Labels = [("alertname".to_string(), "Up".to_string())].into();
        let again: Labels = [("alertname".to_string(), "Up".to_string())].into();
        assert_eq!(fingerprint(&labels), fingerprint(&again));
        let other: Labels = [("alertname".to_string(), "Down".to_string())].into();
        assert_ne!(fingerprint(&labels), fingerprint(&other));
        assert_eq!(fingerprint_hex(&labels).len(), 16);
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("slo_name"));
        assert!(!is_valid_label_name("1x"));
        assert!(!is_valid_label_name("a-b"));
    }
}
