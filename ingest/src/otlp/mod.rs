//! OTLP metrics, traces and logs: decode (protobuf or JSON, gzip), map to storage rows,
//! answer with partial success. The HTTP and gRPC servers in `vigil-web` call in here; the
//! protocol's own shapes (responses, `Status`) are built here too.

pub mod attributes;
pub mod json;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod traces;

use std::io::Read;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::IngestError;

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
    Logs,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// OTLP/HTTP body encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        match content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Inflates a gzip body, refusing (before holding it) anything above `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Malformed { what: "gzip", message: e.to_string() })?;
    if out.len() > limit {
        return Err(IngestError::too_large(crate::Limit::DecompressedSize, out.len(), limit));
    }
    Ok(out)
}

/// Decodes an export request body.
pub fn decode<T: Message + Default + DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
    what: &'static str,
) -> Result<T, IngestError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| IngestError::Malformed { what, message: e.to_string() }),
        Encoding::Json => {
            let malformed = |message: String| IngestError::Malformed { what, message };
            let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
            json::normalize_enums(&mut value).map_err(|e| malformed(e.to_string()))?;
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
        }
    }
}

/// What one export accepted and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub accepted: usize,
    pub rejected: usize,
    pub message: Option<String>,
}

fn encode_message<T: Message + Serialize>(message: &T, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => {
            // Absent optional messages serialise as `null`; OTLP/JSON leaves them out.
            let mut value = serde_json::to_value(message).unwrap_or_default();
            drop_nulls(&mut value);
            serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
        }
    }
}

fn drop_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(drop_nulls);
    }
}

impl ExportOutcome {
    fn partial(&self) -> Option<(i64, String)> {
        (self.rejected > 0 || self.message.is_some())
            .then(|| (self.rejected as i64, self.message.clone().unwrap_or_default()))
    }

    pub fn metrics_response(&self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: self.partial().map(|(rejected_data_points, error_message)| ExportMetricsPartialSuccess {
                rejected_data_points,
                error_message,
            }),
        }
    }

    pub fn traces_response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self
                .partial()
                .map(|(rejected_spans, error_message)| ExportTracePartialSuccess { rejected_spans, error_message }),
        }
    }

    pub fn logs_response(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: self.partial().map(|(rejected_log_records, error_message)| ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            }),
        }
    }
}

/// The `Export*ServiceResponse` of a signal, with `partial_success` when anything was refused.
pub fn encode_response(signal: Signal, outcome: &ExportOutcome, encoding: Encoding) -> Vec<u8> {
    match signal {
        Signal::Metrics => encode_message(&outcome.metrics_response(), encoding),
        Signal::Traces => encode_message(&outcome.traces_response(), encoding),
        Signal::Logs => encode_message(&outcome.logs_response(), encoding),
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC status codes used in `Status.code`.
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

pub fn encode_status(code: i32, message: String, encoding: Encoding) -> Vec<u8> {
    encode_message(&Status { code, message }, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn content_types_are_recognised() {
        assert_eq!(Encoding::from_content_type("application/json; charset=utf-8"), Some(Encoding::Json));
        assert_eq!(Encoding::from_content_type("Application/X-Protobuf"), Some(Encoding::Protobuf));
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }

    #[test]
    fn gzip_bombs_are_cut_at_the_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 10 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(matches!(gunzip(&bomb, 1 << 20), Err(IngestError::TooLarge { .. })));
        assert!(matches!(gunzip(b"not gzip", 1 << 20), Err(IngestError::Malformed { what: "gzip", .. })));
    }

    #[test]
    fn json_and_protobuf_decode_to_the_same_request() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
            "name":"n","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
            "status":{"code":2},"unknownField":{"x":1}}]}]}]}"#;
        let from_json: ExportTraceServiceRequest = decode(json, Encoding::Json, "traces").unwrap();
        let span = &from_json.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        let from_protobuf: ExportTraceServiceRequest =
            decode(&from_json.encode_to_vec(), Encoding::Protobuf, "traces").unwrap();
        assert_eq!(from_json, from_protobuf);
        assert!(decode::<ExportTraceServiceRequest>(b"{", Encoding::Json, "traces").is_err());
        assert!(decode::<ExportTraceServiceRequest>(&[0xff, 0xff], Encoding::Protobuf, "traces").is_err());
    }

    #[test]
    fn partial_success_is_only_sent_when_something_was_refused() {
        let full =
            encode_response(Signal::Metrics, &ExportOutcome { accepted: 3, ..Default::default() }, Encoding::Json);
        assert_eq!(full, b"{}");
        let partial = ExportOutcome { accepted: 1, rejected: 2, message: Some("bad".into()) };
        let text = String::from_utf8(encode_response(Signal::Traces, &partial, Encoding::Json)).unwrap();
        assert!(text.contains("\"rejectedSpans\"") && text.contains("bad"), "{text}");
    }
}
