//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export`
//! on the API listener (HTTP/2: h2c in plaintext, ALPN `h2` with TLS),
//! gzip accepted and answered with.

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;

use super::{MAX_REQUEST_BYTES, OtlpIngest, Refused, Transport};

pub(super) fn router(ingest: Arc<OtlpIngest>) -> Router {
    let service = LogsServiceServer::from_arc(ingest)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::service::Routes::new(service).into_axum_router()
}

#[tonic::async_trait]
impl LogsService for OtlpIngest {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        match OtlpIngest::export(self, Transport::Grpc, request.get_ref()).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            // UNAVAILABLE, not RESOURCE_EXHAUSTED: the OTLP specification
            // has exporters retry the latter only with a RetryInfo detail.
            Err(Refused::Busy) => Err(tonic::Status::unavailable(
                "the input queue is full; retry later",
            )),
            Err(Refused::ShuttingDown) => Err(tonic::Status::unavailable("shutting down")),
        }
    }
}
