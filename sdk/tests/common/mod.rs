//! An in-process OTLP gRPC server that keeps every request, for the SDK's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use vla_sdk::{Telemetry, TelemetryBuilder};

/// What one export carried.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportMetricsServiceRequest,
    pub headers: BTreeMap<String, String>,
}

/// The requests received so far.
#[derive(Default)]
pub struct Capture {
    got: parking_lot::Mutex<Vec<Received>>,
}

struct Service(Arc<Capture>);

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        self.0.got.lock().push(Received {
            request: request.into_inner(),
            headers,
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP gRPC server on 127.0.0.1:0 that keeps every request; stops when dropped.
pub struct Collector {
    /// `http://127.0.0.1:<port>` (or `https://`).
    pub endpoint: String,
    capture: Arc<Capture>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Collector {
    /// A plain-text server.
    pub async fn start() -> Self {
        Self::start_with(tonic::transport::Server::builder(), "http").await
    }

    /// Serves with `server` (TLS settings, say) at `scheme://127.0.0.1:<port>`.
    pub async fn start_with(mut server: tonic::transport::Server, scheme: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("{scheme}://{}", listener.local_addr().unwrap());
        let capture = Arc::new(Capture::default());
        let service = MetricsServiceServer::new(Service(capture.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.add_service(service).serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            endpoint,
            capture,
            _stop: stop,
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.capture.got.lock().clone()
    }

    /// A builder pointed here that exports only when flushed or shut down.
    pub fn builder(&self) -> TelemetryBuilder {
        Telemetry::builder()
            .endpoint(self.endpoint.clone())
            .export_interval(Duration::from_secs(3600))
            .timeout(Duration::from_secs(5))
            .service_name("vla-api-test")
            .service_instance_id("api-7")
            .deployment_environment("test")
    }
}

/// Runs a blocking SDK call (flush, shutdown) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
