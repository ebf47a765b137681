//! Prometheus remote write 1.0: a snappy block (not framed) around a protobuf
//! `prometheus.WriteRequest`. Samples keep their exact float bits (the stale marker is a
//! NaN payload); metadata-only requests (zero series) are valid; exemplars go to the
//! `exemplars` table; native histograms are counted and not stored.

use prost::Message;
use vigil_storage::exemplars::Exemplar;
use vigil_storage::write::{LabelError, is_valid_metric_name};
use vigil_storage::{LabelSet, MetricSeries, Sample, WriteBatch};

use crate::series_cache::{KnownSeries, SeriesCache};
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

/// Decodes a remote-write body. Series whose encoded labels `cache` knows skip label decoding
/// and validation (see [`crate::series_cache`]); the rest are decoded, checked and remembered.
///
/// The request is walked field by field (prost's wire-format primitives) rather than decoded
/// into owned messages, so a series' labels stay a slice of the body until they are needed:
/// prost cannot borrow strings, and allocating every label name and value of every series of
/// every request was most of the decoding cost.
pub fn decode(body: &[u8], limits: &Limits, cache: &SeriesCache) -> Result<Decoded, IngestError> {
    let raw = unsnappy(body, limits)?;
    let mut series_bytes = Vec::new();
    let mut metadata = Vec::new();
    for field in Fields::new(&raw) {
        match field.map_err(malformed)? {
            (1, payload) => series_bytes.push(payload.ok_or_else(|| malformed(wrong_wire_type("timeseries")))?),
            (3, payload) => {
                let payload = payload.ok_or_else(|| malformed(wrong_wire_type("metadata")))?;
                metadata.push(MetricMetadata::decode(payload).map_err(malformed)?);
            }
            _ => {}
        }
    }
    if series_bytes.len() > limits.max_series_per_request {
        return Err(IngestError::too_large(Limit::SeriesPerRequest, series_bytes.len(), limits.max_series_per_request));
    }
    let parsed = series_bytes.iter().map(|bytes| RawSeries::parse(bytes)).collect::<Result<Vec<_>, _>>()?;
    let samples: usize = parsed.iter().map(|s| s.samples.len()).sum();
    if samples > limits.max_samples_per_request {
        return Err(IngestError::too_large(Limit::SamplesPerRequest, samples, limits.max_samples_per_request));
    }
    let mut summary = Summary { metadata: metadata.len(), ..Summary::default() };
    let known = cache.lookup(parsed.iter().map(|series| series.label_key));
    let mut fresh = Vec::new();
    let mut metrics = Vec::with_capacity(parsed.len());
    let mut exemplars = Vec::new();
    for (index, (series, known)) in parsed.into_iter().zip(known).enumerate() {
        summary.histograms_dropped += series.histograms;
        if series.samples.is_empty() && series.out_of_range.is_none() && series.exemplars.is_empty() {
            continue;
        }
        let known = match known {
            Some(known) => known,
            None => {
                let known = check_labels(index, series.labels()?, limits)?;
                if let Some(key) = series.label_key {
                    fresh.push((key, known.clone()));
                }
                known
            }
        };
        if let Some(timestamp) = series.out_of_range {
            let named = std::iter::once(("__name__", known.metric.as_str()));
            return Err(IngestError::InvalidSeries {
                index,
                series: describe(named.chain(known.labels.iter())),
                message: format!("timestamp {timestamp} ms is out of range"),
            });
        }
        // Prometheus sends exemplars in series of their own, without samples.
        for bytes in series.exemplars {
            let exemplar = PromExemplar::decode(bytes).map_err(malformed)?;
            let labels = exemplar.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let timestamp_ns = exemplar.timestamp.saturating_mul(1_000_000);
            exemplars.push(Exemplar::new(
                known.metric.to_string(),
                known.labels.clone(),
                labels,
                timestamp_ns,
                exemplar.value,
            ));
        }
        if !series.samples.is_empty() {
            metrics.push(MetricSeries { metric: known.metric, labels: known.labels, samples: series.samples });
        }
    }
    cache.insert(fresh);
    summary.series = metrics.len();
    summary.samples = samples;
    summary.exemplars = exemplars.len();
    Ok(Decoded { batch: WriteBatch { metrics, rows: Vec::new() }, exemplars, metadata, summary })
}

fn malformed(error: impl std::fmt::Display) -> IngestError {
    IngestError::Malformed { what: "protobuf WriteRequest", message: error.to_string() }
}

fn wrong_wire_type(field: &str) -> String {
    format!("field {field} is not length-delimited")
}

/// One `TimeSeries` of a request, its labels still encoded.
struct RawSeries<'a> {
    bytes: &'a [u8],
    /// The label fields (keys and lengths included) when they come together, as every sender
    /// writes them: the cache key. Labels split by other fields are decoded every time.
    label_key: Option<&'a [u8]>,
    samples: Vec<Sample>,
    /// A sample timestamp (ms) past what nanoseconds hold; refused once the series is named.
    out_of_range: Option<i64>,
    exemplars: Vec<&'a [u8]>,
    histograms: usize,
}

impl<'a> RawSeries<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, IngestError> {
        let mut series = RawSeries {
            bytes,
            label_key: None,
            samples: Vec::new(),
            out_of_range: None,
            exemplars: Vec::new(),
            histograms: 0,
        };
        // The label fields' span, and whether another field came between two of them.
        let (mut labels_start, mut labels_end, mut split) = (None, 0, false);
        let mut fields = Fields::new(bytes);
        loop {
            let start = fields.position();
            let Some(field) = fields.next() else { break };
            let (number, payload) = field.map_err(malformed)?;
            let payload = match number {
                1..=4 => payload.ok_or_else(|| malformed(wrong_wire_type("of TimeSeries")))?,
                _ => continue,
            };
            match number {
                1 => {
                    split |= labels_start.is_some() && labels_end != start;
                    labels_start.get_or_insert(start);
                    labels_end = fields.position();
                }
                2 => {
                    let sample = PromSample::decode(payload).map_err(malformed)?;
                    match sample.timestamp.checked_mul(1_000_000) {
                        Some(timestamp_ns) => series.samples.push(Sample { timestamp_ns, value: sample.value }),
                        None => series.out_of_range = series.out_of_range.or(Some(sample.timestamp)),
                    }
                }
                3 => series.exemplars.push(payload),
                _ => series.histograms += 1,
            }
        }
        if let (Some(start), false) = (labels_start, split) {
            series.label_key = Some(&bytes[start..labels_end]);
        }
        Ok(series)
    }

    /// The labels, decoded (a series the cache does not know).
    fn labels(&self) -> Result<Vec<Label>, IngestError> {
        let mut labels = Vec::new();
        for field in Fields::new(self.bytes) {
            if let (1, Some(payload)) = field.map_err(malformed)? {
                labels.push(Label::decode(payload).map_err(malformed)?);
            }
        }
        Ok(labels)
    }
}

/// The fields of one protobuf message in order: field number, and the payload of a
/// length-delimited field (fields of other wire types are skipped: none of the messages
/// walked here has one Vigil reads).
struct Fields<'a> {
    whole: usize,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields { whole: message.len(), rest: message }
    }

    /// Offset of the next field in the message.
    fn position(&self) -> usize {
        self.whole - self.rest.len()
    }

    fn field(&mut self) -> Result<(u32, Option<&'a [u8]>), String> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let text = |e: prost::DecodeError| e.to_string();
        let (number, wire_type) = decode_key(&mut self.rest).map_err(text)?;
        if wire_type != WireType::LengthDelimited {
            skip_field(wire_type, number, &mut self.rest, DecodeContext::default()).map_err(text)?;
            return Ok((number, None));
        }
        let length = decode_varint(&mut self.rest).map_err(text)?;
        match usize::try_from(length) {
            Ok(length) if length <= self.rest.len() => {
                let (payload, rest) = self.rest.split_at(length);
                self.rest = rest;
                Ok((number, Some(payload)))
            }
            _ => Err(format!("field {number} is {length} bytes, past the end of its message")),
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Option<&'a [u8]>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// A series' labels checked against the limits and the naming rules: its metric name and its
/// other labels as storage keys them. Label strings move from the decoded labels (no copies).
fn check_labels(index: usize, labels: Vec<Label>, limits: &Limits) -> Result<KnownSeries, IngestError> {
    let invalid = |series: String, message: String| IngestError::InvalidSeries { index, series, message };
    let described = |labels: &[Label]| describe(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
    limits
        .check_labels(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
        .map_err(|refusal| invalid(described(&labels), refusal.to_string()))?;
    let mut names = labels.iter().filter(|l| l.name == "__name__");
    let metric = match (names.next(), names.next()) {
        (Some(name), None) if is_valid_metric_name(&name.value) => name.value.clone(),
        (Some(name), None) => {
            return Err(invalid(described(&labels), format!("invalid metric name {:?}", name.value)));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(described(&labels), "duplicate label name \"__name__\"".into()));
        }
        (None, _) => return Err(invalid(described(&labels), "no __name__ label".into())),
    };
    let pairs = labels.into_iter().filter(|l| l.name != "__name__").map(|l| (l.name, l.value)).collect();
    let labels = LabelSet::from_pairs(pairs).map_err(|(error, pairs): (LabelError, Vec<(String, String)>)| {
        let named = std::iter::once(("__name__", metric.as_str()));
        invalid(describe(named.chain(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))), error.to_string())
    })?;
    Ok(KnownSeries { metric: metric.into(), labels })
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
        let decoded = decode(&body, &Limits::default(), &SeriesCache::default()).unwrap();
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
        let decoded = decode(&encode(&request), &Limits::default(), &SeriesCache::default()).unwrap();
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
        let decoded = decode(&encode(&request), &Limits::default(), &SeriesCache::default()).unwrap();
        assert!(decoded.batch.is_empty());
        assert_eq!(decoded.summary.metadata, 1);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let limits = Limits::default();
        assert!(matches!(
            decode(b"garbage", &limits, &SeriesCache::default()),
            Err(IngestError::Malformed { what: "snappy", .. })
        ));
        let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(decode(&not_protobuf, &limits, &SeriesCache::default()), Err(IngestError::Malformed { .. })));
        let unnamed = encode(&one_series(vec![label("job", "a")]));
        let error = decode(&unnamed, &limits, &SeriesCache::default()).err().unwrap();
        assert_eq!(error.to_string(), "series 0 ({job=\"a\"}): no __name__ label");
        let duplicated = encode(&one_series(vec![label("__name__", "up"), label("a", "1"), label("a", "2")]));
        assert!(matches!(
            decode(&duplicated, &limits, &SeriesCache::default()),
            Err(IngestError::InvalidSeries { .. })
        ));
        let bad_name = encode(&one_series(vec![label("__name__", "up"), label("a-b", "1")]));
        assert!(matches!(decode(&bad_name, &limits, &SeriesCache::default()), Err(IngestError::InvalidSeries { .. })));
    }

    #[test]
    fn a_refused_series_is_described_whatever_its_text() {
        // A long value of multi-byte characters is cut at a character boundary, not mid-way.
        // (byte 200 of the description falls inside a character).
        let long = "é".repeat(300);
        let body = encode(&one_series(vec![label("__name__", "up"), label("ab", &long), label("bad-name", "x")]));
        let error = decode(&body, &Limits::default(), &SeriesCache::default()).err().unwrap().to_string();
        assert!(error.starts_with("series 0 (up{ab=\"éé"), "{error}");
        assert!(error.contains("é…): invalid label name \"bad-name\""), "{error}");
        // Labels in any order still name the series they came in.
        let body =
            encode(&one_series(vec![label("z", "1"), label("__name__", "up"), label("a", "1"), label("z", "2")]));
        let error = decode(&body, &Limits::default(), &SeriesCache::default()).err().unwrap().to_string();
        assert_eq!(error, "series 0 (up{a=\"1\", z=\"1\", z=\"2\"}): duplicate label name \"z\"");
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decompressing() {
        let limits = Limits { max_decompressed_bytes: 1000, ..Limits::default() };
        let bomb = snap::raw::Encoder::new().compress_vec(&vec![0u8; 1_000_000]).unwrap();
        assert!(bomb.len() < 60_000);
        let error = decode(&bomb, &limits, &SeriesCache::default()).err().unwrap();
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
        assert_eq!(
            decode(&encode(&request), &Limits::default(), &SeriesCache::default()).unwrap().summary.series,
            10_000
        );
    }

    #[test]
    fn a_known_series_decodes_as_the_first_time_and_shares_its_label_set() {
        let cache = SeriesCache::default();
        let labels = vec![label("__name__", "up"), label("instance", "i"), label("job", "a")];
        let first = decode(&encode(&one_series(labels.clone())), &Limits::default(), &cache).unwrap();
        assert_eq!(cache.len(), 1);
        let mut again = one_series(labels);
        again.timeseries[0].samples[0] = PromSample { value: 2.5, timestamp: 1_700_000_015_000 };
        let second = decode(&encode(&again), &Limits::default(), &cache).unwrap();
        let (a, b) = (&first.batch.metrics[0], &second.batch.metrics[0]);
        assert_eq!((a.metric.as_str(), &a.labels), (b.metric.as_str(), &b.labels));
        // The same strings, not copies: the second write holds the first one's label set.
        let first_value = |labels: &LabelSet| labels.iter().next().map(|(_, value)| value.as_ptr());
        assert_eq!(first_value(&a.labels), first_value(&b.labels));
        assert_eq!(b.samples, vec![Sample { timestamp_ns: 1_700_000_015_000_000_000, value: 2.5 }]);
        assert_eq!(a.labels.iter().collect::<Vec<_>>(), vec![("instance", "i"), ("job", "a")]);
        assert_eq!(cache.len(), 1, "the second request found its series");
        // A cache of zero bytes keeps nothing and decodes the same.
        let off = SeriesCache::new(0);
        let uncached = decode(&encode(&again), &Limits::default(), &off).unwrap();
        assert_eq!(uncached.batch.metrics, second.batch.metrics);
        assert_ne!(first_value(&uncached.batch.metrics[0].labels), first_value(&b.labels), "decoded afresh");
        assert!(off.is_empty());
    }

    #[test]
    fn a_cached_series_is_still_refused_for_a_timestamp_out_of_range() {
        let cache = SeriesCache::default();
        let labels = vec![label("__name__", "up"), label("job", "a")];
        decode(&encode(&one_series(labels.clone())), &Limits::default(), &cache).unwrap();
        let mut late = one_series(labels);
        late.timeseries[0].samples[0].timestamp = i64::MAX / 10;
        let error = decode(&encode(&late), &Limits::default(), &cache).err().unwrap().to_string();
        assert_eq!(error, format!("series 0 (up{{job=\"a\"}}): timestamp {} ms is out of range", i64::MAX / 10));
    }

    /// Hand-encoded field: key, then a length-delimited payload.
    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn labels_split_by_other_fields_and_unknown_fields_decode_without_the_cache() {
        let name = field(1, &label("__name__", "up").encode_to_vec());
        let job = field(1, &label("job", "a").encode_to_vec());
        let sample = field(2, &PromSample { value: 1.0, timestamp: 5 }.encode_to_vec());
        // An unknown varint field (9) and an unknown length-delimited one (10) are skipped.
        let unknown = [vec![9 << 3, 0x96, 0x01], field(10, b"xyz")].concat();
        let series = [name, sample.clone(), unknown.clone(), job].concat();
        let body = [field(1, &series), unknown].concat();
        let cache = SeriesCache::default();
        let snappy = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        for _ in 0..2 {
            let decoded = decode(&snappy, &Limits::default(), &cache).unwrap();
            let series = &decoded.batch.metrics[0];
            assert_eq!((series.metric.as_str(), series.labels.get("job")), ("up", Some("a")));
            assert_eq!(series.samples, vec![Sample { timestamp_ns: 5_000_000, value: 1.0 }]);
        }
        assert!(cache.is_empty(), "labels that do not come together are not a cache key");
    }

    #[test]
    fn malformed_fields_are_refused_as_malformed() {
        let refused = |body: Vec<u8>| {
            let snappy = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            match decode(&snappy, &Limits::default(), &SeriesCache::default()) {
                Err(IngestError::Malformed { what: "protobuf WriteRequest", message }) => message,
                other => panic!("{:?}", other.map(|d| d.summary)),
            }
        };
        // timeseries as a varint; a length past the end; a label that is not UTF-8.
        assert!(refused(vec![1 << 3, 5]).contains("not length-delimited"));
        assert!(refused(vec![(1 << 3) | 2, 100, 1, 2]).contains("past the end"));
        let bad_label = field(1, &[field(1, b"__name__"), field(2, &[0xff, 0xfe])].concat());
        let sample = field(2, &PromSample { value: 1.0, timestamp: 5 }.encode_to_vec());
        refused(field(1, &[bad_label, sample].concat()));
        // A truncated key.
        refused(vec![0x80]);
    }

    /// Damaged requests (bytes flipped, cut, repeated) never panic the walker, and where both
    /// it and prost's whole decode accept one they read the same series and samples, whether
    /// the cache knows the series or not.
    #[test]
    fn damaged_requests_never_panic_and_agree_with_prosts_decode() {
        let mut request = one_series(vec![label("__name__", "up"), label("job", "a"), label("zone", "z1")]);
        request.timeseries.push(TimeSeries {
            labels: vec![label("__name__", "http_requests_total"), label("code", "200")],
            samples: (0..4).map(|i| PromSample { value: i as f64, timestamp: 1_700_000_000_000 + i }).collect(),
            exemplars: vec![PromExemplar { labels: vec![label("trace_id", "abc")], value: 1.0, timestamp: 5 }],
            histograms: vec![vec![1, 2, 3]],
        });
        request.metadata.push(MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        });
        let clean = request.encode_to_vec();
        let cache = SeriesCache::new(4096);
        let mut random = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = move || random.u64(..);
        let (mut agreed, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = clean.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % bytes.len();
                match next() % 4 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes[at] = next() as u8,
                    2 => bytes.truncate(at.max(1)),
                    _ => {
                        let piece = bytes[at..].iter().take(8).copied().collect::<Vec<_>>();
                        bytes.splice(at..at, piece);
                    }
                }
            }
            let body = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
            let ours = decode(&body, &Limits::default(), &cache);
            let whole = WriteRequest::decode(bytes.as_slice());
            match (ours, whole) {
                (Ok(ours), Ok(whole)) => {
                    let samples: usize = whole.timeseries.iter().map(|s| s.samples.len()).sum();
                    assert_eq!(ours.summary.samples, samples);
                    let with_samples = whole.timeseries.iter().filter(|s| !s.samples.is_empty());
                    for (series, theirs) in ours.batch.metrics.iter().zip(with_samples) {
                        let names: Vec<&str> = theirs.labels.iter().map(|l| l.name.as_str()).collect();
                        assert!(names.contains(&"__name__"));
                        for (name, value) in series.labels.iter() {
                            assert!(theirs.labels.iter().any(|l| l.name == name && l.value == value), "{name}={value}");
                        }
                    }
                    agreed += 1;
                }
                (Err(_), _) | (_, Err(_)) => refused += 1,
            }
        }
        assert!(agreed > 1000 && refused > 1000, "{agreed} accepted by both, {refused} refused by one");
    }
}
