//! Prometheus remote write 1.0: a snappy block (not framed) around a protobuf
//! `prometheus.WriteRequest`. Samples keep their exact float bits (the stale marker is a
//! NaN payload); metadata-only requests (zero series) are valid; exemplars go to the
//! `exemplars` table; native histograms are counted and not stored.

use prost::Message;
use vigil_storage::exemplars::Exemplar;
use vigil_storage::write::{LabelError, is_valid_metric_name};
use vigil_storage::{LabelSet, MetricSeries, Sample, WriteBatch};

use crate::{IngestError, Limit, Limits};

/// `prometheus.WriteRequest` (prompb/remote.proto), the fields Vigil reads.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<PromExemplar>,
    /// Native histograms, kept opaque: counted, not stored.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PromSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct PromExemplar {
    /// Usually `trace_id` (and `span_id`).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// What one request carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub series: usize,
    pub samples: usize,
    pub metadata: usize,
    pub exemplars: usize,
    pub histograms_dropped: usize,
}

pub struct Decoded {
    pub batch: WriteBatch,
    pub exemplars: Vec<Exemplar>,
    pub metadata: Vec<MetricMetadata>,
    pub summary: Summary,
}

/// A snappy block (remote write and remote read both send one), refused before decompressing
/// when it would grow past `limits.max_decompressed_bytes`.
pub fn unsnappy(body: &[u8], limits: &Limits) -> Result<Vec<u8>, IngestError> {
    let snappy = |e: snap::Error| IngestError::Malformed { what: "snappy", message: e.to_string() };
    let raw_len = snap::raw::decompress_len(body).map_err(snappy)?;
    if raw_len > limits.max_decompressed_bytes {
        return Err(IngestError::too_large(Limit::DecompressedSize, raw_len, limits.max_decompressed_bytes));
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(snappy)
}

pub fn decode(body: &[u8], limits: &Limits) -> Result<Decoded, IngestError> {
    let raw = unsnappy(body, limits)?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| IngestError::Malformed { what: "protobuf WriteRequest", message: e.to_string() })?;
    if request.timeseries.len() > limits.max_series_per_request {
        return Err(IngestError::too_large(
            Limit::SeriesPerRequest,
            request.timeseries.len(),
            limits.max_series_per_request,
        ));
    }
    let samples: usize = request.timeseries.iter().map(|s| s.samples.len()).sum();
    if samples > limits.max_samples_per_request {
        return Err(IngestError::too_large(Limit::SamplesPerRequest, samples, limits.max_samples_per_request));
    }
    let mut summary = Summary { metadata: request.metadata.len(), ..Summary::default() };
    let mut metrics = Vec::with_capacity(request.timeseries.len());
    let mut exemplars = Vec::new();
    for (index, mut series) in request.timeseries.into_iter().enumerate() {
        summary.histograms_dropped += series.histograms.len();
        if series.samples.is_empty() && series.exemplars.is_empty() {
            continue;
        }
        // Prometheus sends exemplars in series of their own, without samples.
        let series_exemplars = std::mem::take(&mut series.exemplars);
        let converted = convert(index, series, limits)?;
        for exemplar in &series_exemplars {
            let labels = exemplar.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            let timestamp_ns = exemplar.timestamp.saturating_mul(1_000_000);
            exemplars.push(Exemplar::new(
                converted.metric.clone(),
                converted.labels.clone(),
                labels,
                timestamp_ns,
                exemplar.value,
            ));
        }
        if !converted.samples.is_empty() {
            metrics.push(converted);
        }
    }
    summary.series = metrics.len();
    summary.samples = samples;
    summary.exemplars = exemplars.len();
    Ok(Decoded { batch: WriteBatch { metrics, rows: Vec::new() }, exemplars, metadata: request.metadata, summary })
}

/// One series as storage takes it; label strings move from the decoded request (no copies).
fn convert(index: usize, series: TimeSeries, limits: &Limits) -> Result<MetricSeries, IngestError> {
    let invalid = |series: String, message: String| IngestError::InvalidSeries { index, series, message };
    let described = |labels: &[Label]| describe(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
    limits
        .check_labels(series.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
        .map_err(|refusal| invalid(described(&series.labels), refusal.to_string()))?;
    let mut names = series.labels.iter().filter(|l| l.name == "__name__");
    let metric = match (names.next(), names.next()) {
        (Some(name), None) if is_valid_metric_name(&name.value) => name.value.clone(),
        (Some(name), None) => {
            return Err(invalid(described(&series.labels), format!("invalid metric name {:?}", name.value)));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(described(&series.labels), "duplicate label name \"__name__\"".into()));
        }
        (None, _) => return Err(invalid(described(&series.labels), "no __name__ label".into())),
    };
    let mut samples = Vec::with_capacity(series.samples.len());
    for sample in &series.samples {
        let timestamp_ns = sample.timestamp.checked_mul(1_000_000).ok_or_else(|| {
            invalid(described(&series.labels), format!("timestamp {} ms is out of range", sample.timestamp))
        })?;
        samples.push(Sample { timestamp_ns, value: sample.value });
    }
    let pairs = series.labels.into_iter().filter(|l| l.name != "__name__").map(|l| (l.name, l.value)).collect();
    let labels = LabelSet::from_pairs(pairs).map_err(|(error, pairs): (LabelError, Vec<(String, String)>)| {
        let named = std::iter::once(("__name__", metric.as_str()));
        invalid(describe(named.chain(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))), error.to_string())
    })?;
    Ok(MetricSeries { metric, labels, samples })
}

/// `name{a="b", ...}` for error messages, cut short (at a character boundary: labels are
/// the sender's UTF-8).
fn describe<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut name = "";
    let mut rest = Vec::new();
    for (label, value) in labels {
        if label == "__name__" {
            name = value;
        } else if rest.len() < 8 {
            rest.push(format!("{label}={value:?}"));
        }
    }
    let text = format!("{name}{{{}}}", rest.join(", "));
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label { name: name.into(), value: value.into() }
    }

    fn encode(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap()
    }

    fn one_series(labels: Vec<Label>) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels,
                samples: vec![PromSample {
                    value: f64::from_bits(0x7ff0_0000_0000_0002),
                    timestamp: 1_700_000_000_123,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        }
    }

    #[test]
    fn decodes_samples_with_exact_bits_and_sorted_labels() {
        let body = encode(&one_series(vec![label("job", "a"), label("__name__", "up"), label("instance", "i")]));
        let decoded = decode(&body, &Limits::default()).unwrap();
        let series = &decoded.batch.metrics[0];
        assert_eq!(series.metric, "up");
        assert_eq!(series.labels.iter().collect::<Vec<_>>(), vec![("instance", "i"), ("job", "a")]);
        assert_eq!(series.samples[0].timestamp_ns, 1_700_000_000_123_000_000);
        assert_eq!(series.samples[0].value.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(decoded.summary.samples, 1);
    }

    #[test]
    fn exemplars_are_kept_even_in_series_without_samples() {
        let mut request = one_series(vec![label("__name__", "http_requests_total"), label("job", "a")]);
        request.timeseries.push(TimeSeries {
            labels: vec![label("__name__", "http_requests_total"), label("job", "a")],
            exemplars: vec![PromExemplar {
                labels: vec![label("trace_id", "4bf92f3577b34da6")],
                value: 1.0,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        });
        let decoded = decode(&encode(&request), &Limits::default()).unwrap();
        assert_eq!(decoded.batch.metrics.len(), 1, "the exemplar-only series adds no samples");
        assert_eq!(decoded.summary.exemplars, 1);
        let exemplar = &decoded.exemplars[0];
        assert_eq!(
            (exemplar.metric.as_str(), exemplar.trace_id.as_deref(), exemplar.value),
            ("http_requests_total", Some("4bf92f3577b34da6"), 1.0)
        );
        assert_eq!(exemplar.series.get("job"), Some("a"));
        assert_eq!(exemplar.timestamp_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn metadata_only_requests_are_valid() {
        let request = WriteRequest {
            timeseries: vec![],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let decoded = decode(&encode(&request), &Limits::default()).unwrap();
        assert!(decoded.batch.is_empty());
        assert_eq!(decoded.summary.metadata, 1);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let limits = Limits::default();
        assert!(matches!(decode(b"garbage", &limits), Err(IngestError::Malformed { what: "snappy", .. })));
        let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(decode(&not_protobuf, &limits), Err(IngestError::Malformed { .. })));
        let unnamed = encode(&one_series(vec![label("job", "a")]));
        let error = decode(&unnamed, &limits).err().unwrap();
        assert_eq!(error.to_string(), "series 0 ({job=\"a\"}): no __name__ label");
        let duplicated = encode(&one_series(vec![label("__name__", "up"), label("a", "1"), label("a", "2")]));
        assert!(matches!(decode(&duplicated, &limits), Err(IngestError::InvalidSeries { .. })));
        let bad_name = encode(&one_series(vec![label("__name__", "up"), label("a-b", "1")]));
        assert!(matches!(decode(&bad_name, &limits), Err(IngestError::InvalidSeries { .. })));
    }

    #[test]
    fn a_refused_series_is_described_whatever_its_text() {
        // A long value of multi-byte characters is cut at a character boundary, not mid-way.
        // (byte 200 of the description falls inside a character).
        let long = "é".repeat(300);
        let body = encode(&one_series(vec![label("__name__", "up"), label("ab", &long), label("bad-name", "x")]));
        let error = decode(&body, &Limits::default()).err().unwrap().to_string();
        assert!(error.starts_with("series 0 (up{ab=\"éé"), "{error}");
        assert!(error.contains("é…): invalid label name \"bad-name\""), "{error}");
        // Labels in any order still name the series they came in.
        let body =
            encode(&one_series(vec![label("z", "1"), label("__name__", "up"), label("a", "1"), label("z", "2")]));
        let error = decode(&body, &Limits::default()).err().unwrap().to_string();
        assert_eq!(error, "series 0 (up{a=\"1\", z=\"1\", z=\"2\"}): duplicate label name \"z\"");
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decompressing() {
        let limits = Limits { max_decompressed_bytes: 1000, ..Limits::default() };
        let bomb = snap::raw::Encoder::new().compress_vec(&vec![0u8; 1_000_000]).unwrap();
        assert!(bomb.len() < 60_000);
        let error = decode(&bomb, &limits).err().unwrap();
        assert!(matches!(error, IngestError::TooLarge { actual: 1_000_000, .. }));
    }

    #[test]
    fn ten_thousand_series_fit_the_default_limits() {
        let request = WriteRequest {
            timeseries: (0..10_000)
                .map(|i| TimeSeries {
                    labels: vec![label("__name__", "m"), label("i", &i.to_string())],
                    samples: vec![PromSample { value: 1.0, timestamp: 1 }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        };
        assert_eq!(decode(&encode(&request), &Limits::default()).unwrap().summary.series, 10_000);
    }
}
