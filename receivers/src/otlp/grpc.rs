//! OTLP/gRPC: the opentelemetry-proto `MetricsService` on a tonic server.
//!
//! tonic decompresses and size-checks the message before our handler runs (which checks and
//! keeps its bytes: [`vla_pipeline::MetricBatch::from_request`]), and answers problems there with `INTERNAL`, `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED`. OTLP
//! clients retry the last two, so an over-size request would be resent forever. [`Guarded`]
//! rewrites those answers through [`RequestError`] (the one mapping to a gRPC status) into
//! `INVALID_ARGUMENT`, and counts and logs them like every other invalid request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::SERVICE_NAME;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, Service as TowerService, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use vla_pipeline::BoxFuture;

use super::{GrpcConfig, Intake, RequestError};

/// The one method of `MetricsService`.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// `MetricsService` on tonic's server machinery (framing, gzip, size limit, status answers),
/// as the generated `MetricsServiceServer` does it, but with [`BytesCodec`].
#[derive(Clone)]
struct MetricsServer {
    intake: Arc<Intake>,
    limit: usize,
}

impl NamedService for MetricsServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> TowerService<http::Request<B>> for MetricsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        // Over a memory limit: refuse before the body is read or decoded.
        if let Some(refused) = self.intake.refusing() {
            let status = tonic::Status::from(refused);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let export = Export {
            intake: self.intake.clone(),
        };
        let limit = self.limit;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(export, request).await)
        })
    }
}

/// The `Export` handler.
struct Export {
    intake: Arc<Intake>,
}

impl UnaryService<Bytes> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<'static, Result<Response<Self::Response>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let intake = self.intake.clone();
        Box::pin(async move {
            let exported = intake
                .export_encoded(request.into_inner(), "gRPC message")
                .await;
            if let Err(e) = &exported {
                intake.note_unless_refused(e);
            }
            exported?;
            Ok(Response::new(ExportMetricsServiceResponse {
                partial_success: None,
            }))
        })
    }
}

/// tonic's prost codec for the response; the request is handed over as its bytes, which
/// [`Intake::export_encoded`] checks and keeps (the batch decodes them when a stage reads
/// it). tonic's buffer for the message holds the message and little more (it reserves the
/// message's length), so the bytes are not copied.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
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
    let service = MetricsServer {
        intake: intake.clone(),
        limit,
    };
    let keepalive = &config.keepalive.server_parameters;
    let mut server = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(keepalive.time)
        .http2_keepalive_timeout(Some(
            keepalive
                .timeout
                .unwrap_or(super::config::DEFAULT_KEEPALIVE_TIMEOUT),
        ));
    if let Some(age) = keepalive.max_connection_age {
        server = server.max_connection_age(age);
    }
    if let Some(grace) = keepalive.max_connection_age_grace {
        server = server.max_connection_age_grace(grace);
    }
    server
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
