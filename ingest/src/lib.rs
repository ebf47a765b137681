//! Vigil's ingestion: decode telemetry protocols, validate them against [`Limits`], map them
//! to storage rows, write them.
//!
//! ```text
//!  HTTP body ──► decode (snappy, protobuf, ...) ──► validate (limits, names) ──► WriteBatch
//!                                                                                  │
//!                                                      Storage::write (WAL, ack) ◄─┘
//! ```
//! Pull scraping lives in [`scrape`]. A request is accepted or refused whole: nothing of a
//! refused request is stored. Errors say whether retrying can help
//! ([`IngestError::is_transient`]), since senders drop 4xx for good. Other crates read OTLP
//! metrics requests through one hook, [`OtlpMetricsTap`] (model drift does).

pub mod admission;
pub mod exposition;
pub mod metadata;
pub mod otlp;
pub mod relabel;
pub mod remote_write;
pub mod scrape;
pub mod series_cache;
pub mod text_import;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otlp::{Encoding, ExportOutcome, Signal};
use vigil_storage::schema::FixedTable;
use vigil_storage::{Storage, StorageError, TableRows, WriteBatch};

/// Bounds on one request. Defaults accept what real senders send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest body once decompressed (snappy, gzip): guards against decompression bombs.
    pub max_decompressed_bytes: usize,
    pub max_series_per_request: usize,
    pub max_samples_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    /// Longest metric name (bytes); a metric name is also a table name.
    pub max_metric_name_bytes: usize,
    /// Oldest sample accepted, relative to now; `None`: any time since the Unix epoch.
    pub max_past: Option<std::time::Duration>,
    /// Newest sample accepted, ahead of now (clock skew of senders).
    pub max_future: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 256 << 20,
            max_series_per_request: 100_000,
            max_samples_per_request: 1_000_000,
            max_labels_per_series: 128,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 16 * 1024,
            max_metric_name_bytes: 1024,
            max_past: None,
            max_future: std::time::Duration::from_secs(3600),
        }
    }
}

/// Why one series is refused at admission (the reason a 400 or a partial write names).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeriesRefusal {
    #[error("{count} labels, above the limit of {limit}")]
    TooManyLabels { count: usize, limit: usize },
    #[error("label {name} is longer than the limit ({names} bytes for names, {values} for values)")]
    LabelTooLong {
        /// The name's first 64 characters.
        name: String,
        names: usize,
        values: usize,
    },
    #[error("metric name {name}… is {bytes} bytes, above the limit of {limit}")]
    MetricNameTooLong {
        /// The name's first 64 characters.
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error("invalid metric name {0:?}: it must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
}

/// The first 64 characters of a name a message quotes.
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

impl Limits {
    /// Checks one series' labels against the count and length bounds; the refusal names the
    /// offending label. A breach is counted in `/metrics`.
    pub fn check_labels<'a>(
        &self,
        labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), SeriesRefusal> {
        if labels.len() > self.max_labels_per_series {
            Limit::LabelsPerSeries.count();
            return Err(SeriesRefusal::TooManyLabels { count: labels.len(), limit: self.max_labels_per_series });
        }
        for (name, value) in labels {
            if name.len() > self.max_label_name_bytes || value.len() > self.max_label_value_bytes {
                Limit::LabelLength.count();
                return Err(SeriesRefusal::LabelTooLong {
                    name: shown(name),
                    names: self.max_label_name_bytes,
                    values: self.max_label_value_bytes,
                });
            }
        }
        Ok(())
    }
}

/// A bound a request can break; its name labels `vigil_limit_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    DecompressedSize,
    SeriesPerRequest,
    SamplesPerRequest,
    LabelsPerSeries,
    LabelLength,
    MetricNameLength,
    /// A timestamp outside the accepted range.
    SampleTime,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::DecompressedSize => "decompressed_size",
            Limit::SeriesPerRequest => "series_per_request",
            Limit::SamplesPerRequest => "samples_per_request",
            Limit::LabelsPerSeries => "labels_per_series",
            Limit::LabelLength => "label_length",
            Limit::MetricNameLength => "metric_name_length",
            Limit::SampleTime => "sample_time",
        }
    }

    /// Counts one refusal in `/metrics`.
    pub fn count(self) {
        metrics::counter!("vigil_limit_refusals_total", "limit" => self.as_str()).increment(1);
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::DecompressedSize => "decompressed body (bytes)",
            Limit::SeriesPerRequest => "series in the request",
            Limit::SamplesPerRequest => "samples in the request",
            Limit::LabelsPerSeries => "labels of a series",
            Limit::LabelLength => "label length (bytes)",
            Limit::MetricNameLength => "metric name length (bytes)",
            Limit::SampleTime => "sample timestamp",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("series {index} ({series}): {message}")]
    InvalidSeries { index: usize, series: String, message: String },
    #[error("{what} is {actual}, above the limit of {limit}")]
    TooLarge { what: Limit, actual: usize, limit: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Some samples were refused (timestamps, names, cardinality limits); the rest is stored.
    #[error("{}", .0.describe())]
    PartlyRefused(admission::Refused),
    #[error("internal ingest error: {0}")]
    Internal(String),
}

impl IngestError {
    /// A request over one of the limits, counted in `/metrics`.
    pub fn too_large(what: Limit, actual: usize, limit: usize) -> IngestError {
        what.count();
        IngestError::TooLarge { what, actual, limit }
    }

    /// True when the same request can succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, IngestError::Storage(e) if e.is_transient())
    }

    /// A sentence telling the sender what to do about it.
    pub fn hint(&self) -> String {
        match self {
            IngestError::Malformed { what: "snappy", .. } => {
                "remote write bodies are snappy block format (not framed) wrapping a prometheus.WriteRequest".into()
            }
            IngestError::Malformed { .. } => "the body does not decode as the protocol requires; check the sender's encoding".into(),
            IngestError::InvalidSeries { .. } => {
                "every series needs a valid __name__ and label names matching [a-zA-Z_][a-zA-Z0-9_]*, each at most once".into()
            }
            IngestError::TooLarge { .. } => "split the request into smaller ones, or raise the limit in the config".into(),
            IngestError::Storage(e) => e.write_hint().into(),
            IngestError::PartlyRefused(refused) => match &refused.first_reason {
                Some(reason) if reason.contains("limits.max_") => {
                    "the rest of the request was stored; raise the named limit or reduce the series the sender creates (see /api/v1/status/tsdb)".into()
                }
                _ => "the rest of the request was stored; timestamps must be within limits.max_past and limits.max_future of now, metric names valid".into(),
            },
            IngestError::Internal(_) => "this is a bug in Vigil; please report it".into(),
        }
    }
}

/// Wall-clock time in Unix nanoseconds.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The `exemplars` rows of a request (none when it carried none).
fn exemplar_rows(exemplars: &[vigil_storage::exemplars::Exemplar]) -> Result<Vec<TableRows>, IngestError> {
    if exemplars.is_empty() {
        return Ok(Vec::new());
    }
    let batch =
        vigil_storage::exemplars::exemplar_batch(exemplars).map_err(|e| IngestError::Internal(e.to_string()))?;
    Ok(vec![TableRows { table: FixedTable::Exemplars, batch }])
}

/// What a text import stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub samples: usize,
    /// Exemplars stored in the `exemplars` table.
    pub exemplars: usize,
}

/// A reader of OTLP metrics requests beside the metric tables (model drift takes the points
/// with `ml.*` attributes). Its rows ride in the request's own write, so the request is
/// stored whole or not at all.
pub trait OtlpMetricsTap: Send + Sync + 'static {
    fn tap(&self, request: &ExportMetricsServiceRequest) -> Result<Tapped, IngestError>;
}

/// What a tap took from one request.
pub struct Tapped {
    pub rows: Vec<TableRows>,
    /// Told to the client in `partial_success`, with nothing rejected (as the OTLP spec allows).
    pub warnings: Vec<String>,
    /// Runs once the write is acknowledged.
    pub on_stored: Box<dyn FnOnce() + Send>,
}

/// Decodes requests and writes them to storage.
#[derive(Clone)]
pub struct Ingestor {
    storage: Storage,
    limits: Limits,
    deltas: Arc<otlp::metrics::DeltaTotals>,
    metadata: Arc<metadata::MetadataStore>,
    metrics_tap: Option<Arc<dyn OtlpMetricsTap>>,
    series_cache: Arc<series_cache::SeriesCache>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Ingestor {
    pub fn new(storage: Storage, limits: Limits) -> Self {
        Ingestor {
            storage,
            limits,
            deltas: Arc::default(),
            metadata: Arc::default(),
            metrics_tap: None,
            series_cache: Arc::default(),
        }
    }

    /// Gives remote write's cache of known series `max_bytes` (0 turns it off).
    pub fn with_series_cache_bytes(mut self, max_bytes: usize) -> Self {
        self.series_cache = Arc::new(series_cache::SeriesCache::new(max_bytes));
        self
    }

    /// Also shows every OTLP metrics request to `tap`.
    pub fn with_metrics_tap(mut self, tap: Arc<dyn OtlpMetricsTap>) -> Self {
        self.metrics_tap = Some(tap);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Type, help and unit of metrics, as senders described them.
    pub fn metadata(&self) -> &metadata::MetadataStore {
        &self.metadata
    }

    pub(crate) fn record_families(&self, families: &[exposition::Family]) {
        for family in families {
            self.metadata.record(
                &family.name,
                metadata::MetricMetadata {
                    kind: family.kind.clone().unwrap_or_else(|| "unknown".into()),
                    help: family.help.clone().unwrap_or_default(),
                    unit: family.unit.clone().unwrap_or_default(),
                },
            );
        }
    }

    /// Admits a write (names, timestamps: [`Limits::admit`]), stores what passes (within the
    /// cardinality limits) and says what was refused on the way.
    pub async fn store(
        &self,
        mut batch: WriteBatch,
    ) -> Result<(vigil_storage::WriteSummary, admission::Refused), IngestError> {
        let mut refused = self.limits.admit(&mut batch, now_ns());
        let written = self.storage.write(batch).await?;
        if let Some((_, reason)) = &written.refused.first {
            refused.absorb(admission::Refused {
                samples: written.refused.samples,
                rows: 0,
                first_reason: Some(reason.clone()),
            });
        }
        Ok((written, refused))
    }

    /// Prometheus remote write 1.0: a snappy-compressed `WriteRequest`.
    pub async fn remote_write(&self, body: &[u8]) -> Result<remote_write::Summary, IngestError> {
        let decoded = remote_write::decode(body, &self.limits, &self.series_cache).inspect_err(|e| {
            metrics::counter!("vigil_ingest_requests_refused_total", "protocol" => "remote_write", "reason" => reason(e))
                .increment(1);
        })?;
        for entry in &decoded.metadata {
            self.metadata.record(
                &entry.metric_family_name,
                metadata::MetricMetadata {
                    kind: metadata::remote_write_type(entry.r#type).into(),
                    help: entry.help.clone(),
                    unit: entry.unit.clone(),
                },
            );
        }
        let mut batch = decoded.batch;
        batch.rows = exemplar_rows(&decoded.exemplars)?;
        let (written, refused) = self.store(batch).await?;
        metrics::counter!("vigil_ingest_samples_total", "protocol" => "remote_write").increment(written.samples as u64);
        if !refused.is_empty() {
            metrics::counter!("vigil_ingest_rejected_total", "protocol" => "remote_write", "signal" => "metrics")
                .increment(refused.total() as u64);
            // The rest is stored; a 4xx tells the sender not to retry what no retry can fix.
            return Err(IngestError::PartlyRefused(refused));
        }
        Ok(decoded.summary)
    }
}

impl Ingestor {
    /// An OTLP/HTTP body: gzip (when the sender says so), then protobuf or JSON.
    pub async fn otlp_http(
        &self,
        signal: Signal,
        body: &[u8],
        encoding: Encoding,
        gzip: bool,
    ) -> Result<ExportOutcome, IngestError> {
        let result = self.otlp_http_inner(signal, body, encoding, gzip).await;
        if let Err(e) = &result {
            metrics::counter!("vigil_ingest_requests_refused_total", "protocol" => "otlp", "reason" => reason(e))
                .increment(1);
        }
        result
    }

    /// The body as sent, or gunzipped within the decompressed-size limit.
    fn inflate<'a>(&self, body: &'a [u8], gzip: bool) -> Result<std::borrow::Cow<'a, [u8]>, IngestError> {
        Ok(if gzip {
            std::borrow::Cow::Owned(otlp::gunzip(body, self.limits.max_decompressed_bytes)?)
        } else {
            std::borrow::Cow::Borrowed(body)
        })
    }

    async fn otlp_http_inner(
        &self,
        signal: Signal,
        body: &[u8],
        encoding: Encoding,
        gzip: bool,
    ) -> Result<ExportOutcome, IngestError> {
        let body = self.inflate(body, gzip)?;
        let body = &body[..];
        match signal {
            Signal::Metrics => self.otlp_metrics(otlp::decode(body, encoding, "OTLP metrics request")?).await,
            Signal::Traces => self.otlp_traces(otlp::decode(body, encoding, "OTLP trace request")?).await,
            Signal::Logs => self.otlp_logs(otlp::decode(body, encoding, "OTLP logs request")?).await,
        }
    }

    pub async fn otlp_metrics(&self, request: ExportMetricsServiceRequest) -> Result<ExportOutcome, IngestError> {
        let mapped = otlp::metrics::map(&request, &self.limits, &self.deltas);
        for (name, entry) in &mapped.metadata {
            self.metadata.record(name, entry.clone());
        }
        if mapped.series.len() > self.limits.max_series_per_request {
            return Err(IngestError::too_large(
                Limit::SeriesPerRequest,
                mapped.series.len(),
                self.limits.max_series_per_request,
            ));
        }
        let samples = mapped.series.len();
        let exemplars = mapped.exemplars.len();
        let mut rows = exemplar_rows(&mapped.exemplars)?;
        let mut message = mapped.first_error;
        let on_stored = match &self.metrics_tap {
            Some(tap) => {
                let Tapped { rows: tapped, warnings, on_stored } = tap.tap(&request)?;
                rows.extend(tapped);
                if message.is_none() && !warnings.is_empty() {
                    message = Some(warnings.join("; "));
                }
                Some(on_stored)
            }
            None => None,
        };
        let (_, refused) = self.store(WriteBatch { metrics: mapped.series, rows }).await?;
        if let Some(on_stored) = on_stored {
            on_stored();
        }
        // A refused sample is one refused point: OTLP maps each point to series of its own.
        let rejected = mapped.rejected_points + refused.total();
        if !refused.is_empty() {
            message = Some(match message {
                Some(first) => format!("{}; {first}", refused.describe()),
                None => refused.describe(),
            });
        }
        metrics::counter!("vigil_ingest_samples_total", "protocol" => "otlp")
            .increment(samples.saturating_sub(refused.samples) as u64);
        metrics::counter!("vigil_ingest_exemplars_total", "protocol" => "otlp").increment(exemplars as u64);
        metrics::counter!("vigil_ingest_rejected_total", "protocol" => "otlp", "signal" => "metrics")
            .increment(rejected as u64);
        Ok(ExportOutcome { accepted: mapped.accepted_points.saturating_sub(refused.total()), rejected, message })
    }

    pub async fn otlp_traces(&self, request: ExportTraceServiceRequest) -> Result<ExportOutcome, IngestError> {
        let mapped = otlp::traces::map(&request).map_err(|e| IngestError::Internal(e.to_string()))?;
        let outcome = self
            .write_rows(FixedTable::Spans, mapped.batch, mapped.accepted, mapped.rejected, mapped.first_error)
            .await?;
        metrics::counter!("vigil_ingest_spans_total").increment(outcome.accepted as u64);
        metrics::counter!("vigil_ingest_rejected_total", "protocol" => "otlp", "signal" => "traces")
            .increment(outcome.rejected as u64);
        Ok(outcome)
    }

    pub async fn otlp_logs(&self, request: ExportLogsServiceRequest) -> Result<ExportOutcome, IngestError> {
        let mapped = otlp::logs::map(&request, now_ns()).map_err(|e| IngestError::Internal(e.to_string()))?;
        let outcome = self
            .write_rows(FixedTable::Logs, mapped.batch, mapped.accepted, mapped.rejected, mapped.first_error)
            .await?;
        metrics::counter!("vigil_ingest_log_records_total").increment(outcome.accepted as u64);
        metrics::counter!("vigil_ingest_rejected_total", "protocol" => "otlp", "signal" => "logs")
            .increment(outcome.rejected as u64);
        Ok(outcome)
    }

    /// Stores the rows of a trace or logs request; rows admission refuses join the rejected.
    async fn write_rows(
        &self,
        table: FixedTable,
        batch: Option<datafusion::arrow::record_batch::RecordBatch>,
        accepted: usize,
        rejected: usize,
        mut message: Option<String>,
    ) -> Result<ExportOutcome, IngestError> {
        let Some(batch) = batch else { return Ok(ExportOutcome { accepted, rejected, message }) };
        let (_, refused) =
            self.store(WriteBatch { metrics: Vec::new(), rows: vec![TableRows { table, batch }] }).await?;
        if !refused.is_empty() && message.is_none() {
            message = Some(refused.describe());
        }
        Ok(ExportOutcome {
            accepted: accepted.saturating_sub(refused.rows),
            rejected: rejected + refused.rows,
            message,
        })
    }

    /// Prometheus text exposition or OpenMetrics, `extra` labels added to every series
    /// (replacing a label of the same name). The body is stored whole or not at all.
    pub async fn import_text(
        &self,
        body: &[u8],
        content_type: &str,
        gzip: bool,
        extra: &[(String, String)],
    ) -> Result<ImportSummary, IngestError> {
        let result = async {
            let body = self.inflate(body, gzip)?;
            let text = std::str::from_utf8(&body)
                .map_err(|e| IngestError::Malformed { what: "exposition text", message: format!("not UTF-8: {e}") })?;
            let parsed = exposition::parse(text, exposition::Format::detect(content_type, text))
                .map_err(|e| IngestError::Malformed { what: "exposition text", message: e.to_string() })?;
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            self.record_families(&parsed.families);
            let with_exemplar: Vec<(usize, exposition::ParsedExemplar)> =
                parsed.samples.iter().enumerate().filter_map(|(i, s)| s.exemplar.clone().map(|e| (i, e))).collect();
            let series =
                text_import::to_series(parsed.samples, now_ms, extra, text_import::LabelMerge::AddedWin, &self.limits)?;
            let exemplars: Vec<vigil_storage::exemplars::Exemplar> = with_exemplar
                .into_iter()
                .filter_map(|(i, e)| series.get(i).map(|s| text_import::exemplar(s, e)))
                .collect();
            let samples = series.len();
            // Stored whole or refused whole: check everything before writing anything.
            let mut batch = WriteBatch { metrics: series, rows: exemplar_rows(&exemplars)? };
            let refused = self.limits.admit(&mut batch, now_ns());
            if let Some(reason) = refused.first_reason {
                return Err(IngestError::Malformed { what: "exposition text", message: reason });
            }
            let written = self.storage.write(batch).await?;
            if let Some((_, reason)) = written.refused.first {
                return Err(IngestError::PartlyRefused(admission::Refused {
                    samples: written.refused.samples,
                    rows: 0,
                    first_reason: Some(reason),
                }));
            }
            Ok(ImportSummary { samples, exemplars: exemplars.len() })
        }
        .await;
        match &result {
            Ok(summary) => {
                metrics::counter!("vigil_ingest_samples_total", "protocol" => "text").increment(summary.samples as u64)
            }
            Err(e) => {
                metrics::counter!("vigil_ingest_requests_refused_total", "protocol" => "text", "reason" => reason(e))
                    .increment(1)
            }
        }
        result
    }

    /// Forgets delta totals idle for an hour; call now and then.
    pub fn prune_delta_totals(&self) -> usize {
        self.deltas.prune()
    }
}

fn reason(error: &IngestError) -> &'static str {
    match error {
        IngestError::Malformed { .. } => "malformed",
        IngestError::InvalidSeries { .. } => "invalid_series",
        IngestError::TooLarge { .. } => "too_large",
        IngestError::PartlyRefused(_) => "refused",
        IngestError::Storage(_) => "storage",
        IngestError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests;
