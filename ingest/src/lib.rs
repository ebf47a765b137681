//! Vigil's ingestion: decode telemetry protocols, validate them against [`Limits`], map them
//! to storage rows, write them.
//!
//! ```text
//!  HTTP body ──► decode (snappy, protobuf, ...) ──► validate (limits, names) ──► WriteBatch
//!                                                                                  │
//!                                                      Storage::write (WAL, ack) ◄─┘
//! ```
//! A request is accepted or refused whole: nothing of a refused request is stored. Errors say
//! whether retrying can help ([`IngestError::is_transient`]), since senders drop 4xx for good.

pub mod remote_write;

use vigil_storage::{Storage, StorageError};

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("series {index} ({series}): {message}")]
    InvalidSeries { index: usize, series: String, message: String },
    #[error("{what} is {actual}, above the limit of {limit}")]
    TooLarge { what: &'static str, actual: usize, limit: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IngestError {
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
            IngestError::Storage(e) if e.is_backpressure() => "Vigil is flushing to disk; retry after the Retry-After delay".into(),
            IngestError::Storage(_) => "a storage fault; the write was not acknowledged, retry it".into(),
        }
    }
}

/// Decodes requests and writes them to storage.
#[derive(Clone, Debug)]
pub struct Ingestor {
    storage: Storage,
    limits: Limits,
}

impl Ingestor {
    pub fn new(storage: Storage, limits: Limits) -> Self {
        Ingestor { storage, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Prometheus remote write 1.0: a snappy-compressed `WriteRequest`.
    pub async fn remote_write(&self, body: &[u8]) -> Result<remote_write::Summary, IngestError> {
        let decoded = remote_write::decode(body, &self.limits).inspect_err(|e| {
            metrics::counter!("vigil_ingest_requests_refused_total", "protocol" => "remote_write", "reason" => reason(e))
                .increment(1);
        })?;
        self.storage.write(decoded.batch).await?;
        metrics::counter!("vigil_ingest_samples_total", "protocol" => "remote_write")
            .increment(decoded.summary.samples as u64);
        Ok(decoded.summary)
    }
}

fn reason(error: &IngestError) -> &'static str {
    match error {
        IngestError::Malformed { .. } => "malformed",
        IngestError::InvalidSeries { .. } => "invalid_series",
        IngestError::TooLarge { .. } => "too_large",
        IngestError::Storage(_) => "storage",
    }
}
