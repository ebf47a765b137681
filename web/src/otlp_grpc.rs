//! OTLP/gRPC: the `MetricsService`, `TraceService` and `LogsService` Export calls, gzip
//! accepted and sent. Bad data answers `INVALID_ARGUMENT`, overload `UNAVAILABLE` (which
//! OTLP exporters retry), a partial refusal an OK with `partial_success`.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use vigil_ingest::{IngestError, Ingestor};

#[derive(Clone)]
struct Otlp {
    ingestor: Ingestor,
}

fn status(error: IngestError) -> Status {
    metrics::counter!("vigil_ingest_requests_refused_total", "protocol" => "otlp_grpc").increment(1);
    let message = format!("{error}; {}", error.hint());
    match error {
        IngestError::Storage(e) if e.is_transient() => Status::unavailable(message),
        IngestError::Storage(_) | IngestError::Internal(_) => Status::internal(message),
        IngestError::Malformed { .. }
        | IngestError::InvalidSeries { .. }
        | IngestError::TooLarge { .. }
        | IngestError::PartlyRefused(_) => Status::invalid_argument(message),
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let outcome = self.ingestor.otlp_metrics(request.into_inner()).await.map_err(status)?;
        Ok(Response::new(outcome.metrics_response()))
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let outcome = self.ingestor.otlp_traces(request.into_inner()).await.map_err(status)?;
        Ok(Response::new(outcome.traces_response()))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let outcome = self.ingestor.otlp_logs(request.into_inner()).await.map_err(status)?;
        Ok(Response::new(outcome.logs_response()))
    }
}

/// The three services as one router (HTTP/2 for gRPC clients), every call needing an
/// ingest token once tokens are configured.
pub fn router(ingestor: Ingestor, max_message_bytes: usize, auth: crate::Auth) -> axum::Router {
    let otlp = Otlp { ingestor };
    tonic::service::Routes::new(
        MetricsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        TraceServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        LogsServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
    .into_axum_router()
    .layer(axum::middleware::from_fn_with_state(auth, crate::auth::grpc_guard))
}
