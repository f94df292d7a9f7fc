//! OTLP/gRPC: the opentelemetry-proto `MetricsService` on a tonic server.
//!
//! tonic decodes, decompresses and size-checks the message before our handler runs, and
//! answers problems there with `INTERNAL`, `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED`. OTLP
//! clients retry the last two, so an over-size request would be resent forever. [`Guarded`]
//! rewrites those answers through [`RequestError`] (the one mapping to a gRPC status) into
//! `INVALID_ARGUMENT`, and counts and logs them like every other invalid request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service as TowerService;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use vla_pipeline::BoxFuture;

use super::{GrpcConfig, Intake, RequestError};

struct Service {
    intake: Arc<Intake>,
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let request = request.into_inner();
        self.intake.export(request.resource_metrics).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then drains in-flight requests.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    config: &GrpcConfig,
    intake: Intake,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let intake = Arc::new(intake);
    let limit = config.max_recv_msg_size_bytes();
    let service = MetricsServiceServer::new(Service {
        intake: intake.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limit);
    Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(Guarded {
            inner: service,
            intake,
            limit,
        })
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Wraps the generated service to re-map the statuses tonic produces while decoding.
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    intake: Arc<Intake>,
    limit: usize,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> TowerService<http::Request<B>> for Guarded<S>
where
    S: TowerService<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let intake = self.intake.clone();
        let limit = self.limit;
        Box::pin(async move {
            let mut response = response.await?;
            remap_decode_error(&mut response, &intake, limit);
            Ok(response)
        })
    }
}

/// Our handler only ever answers `OK` or `UNAVAILABLE`, so any of these codes in a
/// (trailers-only) response came from tonic's decoding of the request.
fn remap_decode_error(
    response: &mut http::Response<tonic::body::Body>,
    intake: &Intake,
    limit: usize,
) {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return;
    };
    let error = match status.code() {
        Code::Internal => RequestError::Malformed {
            what: "gRPC message",
            source: status.message().to_owned().into(),
        },
        Code::OutOfRange | Code::ResourceExhausted => RequestError::TooLarge {
            limit,
            setting: "max_recv_msg_size_mib",
        },
        // An unsupported `grpc-encoding`: tonic's answer tells the client what we accept.
        Code::Unimplemented => {
            intake.count_invalid();
            return;
        }
        _ => return,
    };
    intake.note_unless_refused(&error);
    let mut fresh = http::HeaderMap::new();
    if Status::from(error).add_header(&mut fresh).is_ok() {
        let headers = response.headers_mut();
        headers.remove(Status::GRPC_STATUS);
        headers.remove(Status::GRPC_MESSAGE);
        headers.remove(Status::GRPC_STATUS_DETAILS);
        headers.extend(fresh);
    }
}
