//! Parsed exposition samples to storage series: the step shared by `POST
//! /api/v1/import/prometheus` and the scraper.

use vigil_storage::exemplars::Exemplar;
use vigil_storage::{LabelSet, MetricSeries, Sample};

use crate::exposition::{ParsedExemplar, ParsedSample};
use crate::{IngestError, Limits};

/// How the labels a sample came with meet the labels the receiver adds (`extra`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelMerge {
    /// Added labels win (import `extra_label`, and scraping with `honor_labels: true` the other way round).
    AddedWin,
    /// Scraped labels win over added ones.
    ScrapedWin,
    /// Added labels win; a clashing scraped label is kept as `exported_<name>` (Prometheus's default).
    RenameScraped,
}

pub fn to_series(
    samples: Vec<ParsedSample>,
    default_timestamp_ms: i64,
    added: &[(String, String)],
    merge: LabelMerge,
    limits: &Limits,
) -> Result<Vec<MetricSeries>, IngestError> {
    if samples.len() > limits.max_series_per_request {
        return Err(IngestError::too_large(
            crate::Limit::SeriesPerRequest,
            samples.len(),
            limits.max_series_per_request,
        ));
    }
    let mut out = Vec::with_capacity(samples.len());
    for (index, sample) in samples.into_iter().enumerate() {
        let mut labels = sample.labels;
        for (name, value) in added {
            match labels.iter().position(|(n, _)| n == name) {
                None => labels.push((name.clone(), value.clone())),
                Some(at) => match merge {
                    LabelMerge::AddedWin => labels[at].1 = value.clone(),
                    LabelMerge::ScrapedWin => {}
                    LabelMerge::RenameScraped => {
                        labels[at].0 = format!("exported_{name}");
                        labels.push((name.clone(), value.clone()));
                    }
                },
            }
        }
        let invalid = |message: String| IngestError::InvalidSeries { index, series: sample.name.clone(), message };
        limits
            .check_labels(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .map_err(|e| invalid(e.to_string()))?;
        let labels = LabelSet::new(labels).map_err(|e| invalid(e.to_string()))?;
        let timestamp_ms = sample.timestamp_ms.unwrap_or(default_timestamp_ms);
        let timestamp_ns = timestamp_ms
            .checked_mul(1_000_000)
            .ok_or_else(|| invalid(format!("timestamp {timestamp_ms} ms is out of range")))?;
        out.push(MetricSeries {
            metric: sample.name.into(),
            labels,
            samples: vec![Sample { timestamp_ns, value: sample.value }],
        });
    }
    Ok(out)
}

/// The exemplar of a sample, beside the series `to_series` made of it.
pub fn exemplar(series: &MetricSeries, exemplar: ParsedExemplar) -> Exemplar {
    let default_ns = series.samples.first().map_or(0, |s| s.timestamp_ns);
    let timestamp_ns = exemplar.timestamp_ms.and_then(|ms| ms.checked_mul(1_000_000)).unwrap_or(default_ns);
    Exemplar::new(series.metric.to_string(), series.labels.clone(), exemplar.labels, timestamp_ns, exemplar.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)]) -> ParsedSample {
        ParsedSample {
            name: "m".into(),
            labels: labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            value: 1.0,
            timestamp_ms: None,
            exemplar: None,
        }
    }

    #[test]
    fn clashing_labels_follow_the_merge_rule() {
        let added = vec![("job".to_string(), "node".to_string())];
        let limits = Limits::default();
        let render = |merge| {
            let series = to_series(vec![sample(&[("job", "app")])], 5, &added, merge, &limits).unwrap();
            series[0].labels.to_string()
        };
        assert_eq!(render(LabelMerge::AddedWin), r#"{job="node"}"#);
        assert_eq!(render(LabelMerge::ScrapedWin), r#"{job="app"}"#);
        assert_eq!(render(LabelMerge::RenameScraped), r#"{exported_job="app", job="node"}"#);
        let series = to_series(vec![sample(&[])], 5, &added, LabelMerge::AddedWin, &limits).unwrap();
        assert_eq!(series[0].samples[0].timestamp_ns, 5_000_000);
    }
}
