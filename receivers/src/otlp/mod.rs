//! The `otlp` receiver: OTLP metrics over gRPC and HTTP, into the pipelines.
//!
//! Follows the OTLP specification (opentelemetry-proto v1 `MetricsService/Export`):
//! - **gRPC** (default `127.0.0.1:4317`): gzip-compressed requests accepted; messages up to
//!   `max_recv_msg_size_mib` (default 16 MiB, not gRPC's usual 4 MiB); HTTP/2 keepalive pings
//!   and a maximum connection age under `keepalive.server_parameters` (off by default).
//! - **HTTP** (default `127.0.0.1:4318`): `POST /v1/metrics` with `Content-Type`
//!   `application/x-protobuf` or `application/json` (OTLP/JSON: camelCase fields, 64-bit
//!   integers as strings, enums as numbers) and `Content-Encoding` `gzip`, `zstd`, `deflate` or none.
//!   The body limit applies to the body as sent and again after decompression. Success is
//!   `200` with an empty `ExportMetricsServiceResponse` in the request's encoding; failures
//!   carry a `google.rpc.Status` (`code`, `message`) in the request's encoding, or plain text
//!   when the content type itself was not understood.
//!
//! | outcome | gRPC | HTTP |
//! |---|---|---|
//! | accepted | `OK` | 200 |
//! | malformed body, bad `Content-Encoding` | `INVALID_ARGUMENT` | 400 |
//! | unknown `Content-Type` (HTTP) / `grpc-encoding` (gRPC) | `UNIMPLEMENTED` | 415 |
//! | body over the limit | `INVALID_ARGUMENT` | 413 |
//! | pipeline full / shutting down | `UNAVAILABLE` | 503 + `Retry-After` |
//! | other method / path | `UNIMPLEMENTED` | 405 / 404 |
//!
//! Only `UNAVAILABLE` / 503 are retryable: OTLP clients retry `OUT_OF_RANGE` and
//! `RESOURCE_EXHAUSTED`, which tonic itself would answer for an over-size message, so those
//! are rewritten (see `grpc.rs`).
//!
//! An empty request (no resource metrics, or no data points) succeeds without touching the
//! pipeline. A batch is accepted only when every pipeline has room (see
//! [`vla_pipeline::PipelineSender`]), so a client retrying after a refusal never duplicates
//! data. Invalid requests are counted in `vla_collector_receiver_invalid_requests_total
//! {receiver,transport}` and logged at most once per 10 s per receiver (with how many were
//! suppressed), never with header values or request bodies.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:                                  # enabled with defaults
//!       http:
//!         endpoint: 0.0.0.0:4318
//!         max_request_body_size_mib: 16
//! ```
//!
//! The caller binds the listeners (so a port clash fails at start-up) and passes them to
//! [`OtlpReceiver::new`]; `run` serves until the shutdown token is cancelled, then stops
//! accepting connections, finishes the requests in flight and returns.

mod config;
mod error;
mod grpc;
mod http;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio_util::sync::CancellationToken;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::ratelimit::LogLimiter;
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{
    BoxFuture, ComponentId, MetricBatch, PipelineSender, Receiver, ReceiverContext, ReceiverError,
    SelfMetrics,
};

pub use config::{
    Config, DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT, DEFAULT_MAX_SIZE_MIB, GrpcConfig,
    HttpConfig, Protocols,
};
pub use error::RequestError;
pub use http::BodyFormat;

/// Why an [`OtlpReceiver`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverBuildError {
    /// The config did not pass [`Config::validate`].
    #[error(
        "receiver {receiver}: invalid config: {}",
        ConfigProblem::join(problems)
    )]
    InvalidConfig {
        /// The receiver's id.
        receiver: ComponentId,
        /// Everything wrong with it.
        problems: Vec<ConfigProblem>,
    },
    /// A protocol is enabled but no listener was given for it.
    #[error("receiver {receiver}: protocol {protocol} is enabled but no listener was bound for it")]
    MissingListener {
        /// The receiver's id.
        receiver: ComponentId,
        /// `grpc` or `http`.
        protocol: &'static str,
    },
    /// A listener was given for a protocol the config does not enable.
    #[error(
        "receiver {receiver}: a listener was given for protocol {protocol}, which is not enabled"
    )]
    UnexpectedListener {
        /// The receiver's id.
        receiver: ComponentId,
        /// `grpc` or `http`.
        protocol: &'static str,
    },
    /// The listener could not be prepared (non-blocking mode, local address).
    #[error("receiver {receiver}: cannot use the {protocol} listener")]
    Listener {
        /// The receiver's id.
        receiver: ComponentId,
        /// `grpc` or `http`.
        protocol: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The `otlp` receiver, built with its already-bound listeners.
#[derive(Debug)]
pub struct OtlpReceiver {
    id: ComponentId,
    grpc: Option<Endpoint<GrpcConfig>>,
    http: Option<Endpoint<HttpConfig>>,
}

#[derive(Debug)]
struct Endpoint<C> {
    config: C,
    listener: TcpListener,
    addr: SocketAddr,
    invalid: Counter,
    refused_early: Counter,
}

impl OtlpReceiver {
    /// Builds the receiver `id` from `config`, with one bound listener per enabled protocol.
    pub fn new(
        id: ComponentId,
        config: &Config,
        grpc: Option<TcpListener>,
        http: Option<TcpListener>,
        telemetry: &SelfMetrics,
    ) -> Result<Self, ReceiverBuildError> {
        let problems = config.validate(&format!("receivers.{id}"));
        if !problems.is_empty() {
            return Err(ReceiverBuildError::InvalidConfig {
                receiver: id,
                problems,
            });
        }
        let grpc = endpoint(&id, "grpc", config.protocols.grpc.clone(), grpc, telemetry)?;
        let http = endpoint(&id, "http", config.protocols.http.clone(), http, telemetry)?;
        Ok(Self { id, grpc, http })
    }

    /// The address the gRPC server listens on, when enabled.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|e| e.addr)
    }

    /// The address the HTTP server listens on, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|e| e.addr)
    }

    async fn serve(self, ctx: ReceiverContext) -> Result<(), ReceiverError> {
        // One protocol failing stops the other too, so `run` returns instead of limping on.
        let stop = ctx.shutdown.child_token();
        let limiter = Arc::new(LogLimiter::default());
        let intake = |invalid: Counter, refused_early: Counter, transport: &'static str| Intake {
            id: self.id.clone(),
            transport,
            output: ctx.output.clone(),
            invalid,
            refused_early,
            limiter: limiter.clone(),
        };
        let grpc = self.grpc.map(|e| {
            let intake = intake(e.invalid.clone(), e.refused_early.clone(), "grpc");
            let stop = stop.clone();
            async move {
                let listener = to_tokio(e.listener)?;
                let served =
                    grpc::serve(listener, &e.config, intake, stop.clone().cancelled_owned()).await;
                stop_on_error(&stop, served.map_err(Into::into))
            }
        });
        let http = self.http.map(|e| {
            let intake = intake(e.invalid.clone(), e.refused_early.clone(), "http");
            let stop = stop.clone();
            async move {
                let listener = to_tokio(e.listener)?;
                let served =
                    http::serve(listener, &e.config, intake, stop.clone().cancelled_owned()).await;
                stop_on_error(&stop, served.map_err(Into::into))
            }
        });
        let (g, h) = tokio::join!(run_opt(grpc), run_opt(http));
        g.and(h).map_err(|source| ReceiverError::Serve {
            receiver: self.id.clone(),
            source,
        })
    }
}

impl Receiver for OtlpReceiver {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> BoxFuture<'static, Result<(), ReceiverError>> {
        Box::pin(self.serve(ctx))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run_opt(
    f: Option<impl std::future::Future<Output = Result<(), BoxError>>>,
) -> Result<(), BoxError> {
    match f {
        Some(f) => f.await,
        None => Ok(()),
    }
}

fn stop_on_error(stop: &CancellationToken, r: Result<(), BoxError>) -> Result<(), BoxError> {
    if r.is_err() {
        stop.cancel();
    }
    r
}

fn to_tokio(listener: TcpListener) -> Result<tokio::net::TcpListener, BoxError> {
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

fn endpoint<C>(
    id: &ComponentId,
    protocol: &'static str,
    config: Option<C>,
    listener: Option<TcpListener>,
    telemetry: &SelfMetrics,
) -> Result<Option<Endpoint<C>>, ReceiverBuildError> {
    let (config, listener) = match (config, listener) {
        (None, None) => return Ok(None),
        (Some(c), Some(l)) => (c, l),
        (Some(_), None) => {
            return Err(ReceiverBuildError::MissingListener {
                receiver: id.clone(),
                protocol,
            });
        }
        (None, Some(_)) => {
            return Err(ReceiverBuildError::UnexpectedListener {
                receiver: id.clone(),
                protocol,
            });
        }
    };
    let io = |source| ReceiverBuildError::Listener {
        receiver: id.clone(),
        protocol,
        source,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let invalid = telemetry.counter(
        "vla_collector_receiver_invalid_requests_total",
        "Requests a receiver rejected as invalid (malformed, unsupported or too large).",
        &[("receiver", id), ("transport", protocol)],
    );
    let refused_early = telemetry.counter(
        "vla_collector_receiver_refused_requests_total",
        "Requests a receiver refused before reading them (a memory_limiter was full), by \
         reason; their points are not known.",
        &[
            ("receiver", id),
            ("transport", protocol),
            ("reason", "memory_limit"),
        ],
    );
    Ok(Some(Endpoint {
        config,
        listener,
        addr,
        invalid,
        refused_early,
    }))
}

/// What both transports share: hand requests to the pipelines, count and log rejects.
#[derive(Clone)]
pub(crate) struct Intake {
    id: ComponentId,
    transport: &'static str,
    output: PipelineSender,
    invalid: Counter,
    refused_early: Counter,
    limiter: Arc<LogLimiter>,
}

impl Intake {
    /// Sends the request's data into the pipelines; empty requests succeed untouched.
    pub(crate) async fn export(
        &self,
        resource_metrics: Vec<ResourceMetrics>,
    ) -> Result<(), RequestError> {
        self.send(MetricBatch::new(self.id.clone(), resource_metrics))
            .await
    }

    async fn send(&self, batch: MetricBatch) -> Result<(), RequestError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.output.send(batch).await.map_err(|e| {
            let e = RequestError::from(e);
            self.note(&e);
            e
        })
    }

    /// Checks an encoded `ExportMetricsServiceRequest` (`what`, for the error) and sends its
    /// data into the pipelines, kept encoded ([`MetricBatch::from_request`]). A request that
    /// does not decode is malformed (for the caller to note, as every invalid request).
    pub(crate) async fn export_encoded(
        &self,
        request: bytes::Bytes,
        what: &'static str,
    ) -> Result<(), RequestError> {
        let batch = MetricBatch::from_request(self.id.clone(), request).map_err(|source| {
            RequestError::Malformed {
                what,
                source: Box::new(source),
            }
        })?;
        self.send(batch).await
    }

    /// Whether a memory limiter refuses everything now; the refusal is counted (per request:
    /// its points are not known before decoding) and logged.
    pub(crate) fn refusing(&self) -> Option<RequestError> {
        let e = RequestError::from(self.output.refusing()?);
        self.refused_early.inc();
        self.note(&e);
        Some(e)
    }

    /// Counts and logs a rejected request that [`Intake::export`] has not seen yet.
    pub(crate) fn note_unless_refused(&self, e: &RequestError) {
        if e.is_invalid_request() {
            self.note(e);
        }
    }

    /// Counts an invalid request without logging it.
    pub(crate) fn count_invalid(&self) {
        self.invalid.inc();
    }

    /// Counts and (rate-limited) logs a rejected request. Refusals are counted, by point,
    /// inside the `PipelineSender`.
    fn note(&self, e: &RequestError) {
        if e.is_invalid_request() {
            self.invalid.inc();
        }
        if let Some(suppressed) = self.limiter.allow() {
            // The error's text is ours (no header values, no payload), except for a decoder's
            // description of where the payload went wrong.
            tracing::warn!(
                receiver = %self.id,
                transport = self.transport,
                reason = e.reason(),
                suppressed,
                error = %e,
                "rejected an OTLP export request"
            );
        }
    }
}

impl vla_pipeline::registry::Component for OtlpReceiver {
    const TYPE: &'static str = "otlp";
    const EXAMPLE: &'static str = "\
protocols:
  grpc: { endpoint: 127.0.0.1:4317 }
  http: { endpoint: 127.0.0.1:4318, max_request_body_size_mib: 16 }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }

    fn listen_endpoints(config: &Config) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(g) = &config.protocols.grpc {
            out.push(("protocols.grpc.endpoint", g.endpoint.as_str()));
        }
        if let Some(h) = &config.protocols.http {
            out.push(("protocols.http.endpoint", h.endpoint.as_str()));
        }
        out
    }
}

impl vla_pipeline::registry::ReceiverType for OtlpReceiver {
    fn build(
        config: &Config,
        mut ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<vla_pipeline::registry::BuiltReceiver, vla_pipeline::registry::BuildError> {
        let grpc = ctx.listeners.remove("protocols.grpc.endpoint");
        let http = ctx.listeners.remove("protocols.http.endpoint");
        let receiver = Self::new(ctx.id.clone(), config, grpc, http, ctx.self_metrics)?;
        Ok(vla_pipeline::registry::BuiltReceiver {
            receiver: Box::new(receiver),
            status: None,
        })
    }
}
