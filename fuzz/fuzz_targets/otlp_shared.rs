//! What the two OTLP targets share (not a target itself).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use vigil_ingest::otlp::{self, Encoding};

/// Shared with the JSON target: the selector picks signal and gzip.
pub fn export(selector: u8, body: &[u8], encoding: Encoding) {
    let limits = vigil_ingest::Limits { max_decompressed_bytes: 1 << 20, ..Default::default() };
    let gunzipped;
    let body = if selector & 4 != 0 {
        match otlp::gunzip(body, limits.max_decompressed_bytes) {
            Ok(raw) => {
                gunzipped = raw;
                &gunzipped[..]
            }
            Err(_) => return,
        }
    } else {
        body
    };
    match selector % 3 {
        0 => {
            if let Ok(request) = otlp::decode::<ExportMetricsServiceRequest>(body, encoding, "metrics") {
                let _ = otlp::metrics::map(&request, &limits, &Default::default());
            }
        }
        1 => {
            if let Ok(request) = otlp::decode::<ExportTraceServiceRequest>(body, encoding, "traces") {
                let _ = otlp::traces::map(&request);
            }
        }
        _ => {
            if let Ok(request) = otlp::decode::<ExportLogsServiceRequest>(body, encoding, "logs") {
                let _ = otlp::logs::map(&request, 1_700_000_000_000_000_000);
            }
        }
    }
}
