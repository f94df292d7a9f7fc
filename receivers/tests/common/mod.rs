//! Shared harness of the `otlp` receiver's component tests: a receiver on 127.0.0.1:0 wired
//! to a test channel, sample requests and helpers to read batches and self-telemetry back.
//! Each test binary (`otlp_grpc`, `otlp_http`, `otlp_lifecycle`) uses part of it.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric, number_data_point};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vla_pipeline::{
    ComponentId, MetricBatch, PipelineSender, Receiver, ReceiverContext, ReceiverError,
    SelfMetrics, fixtures,
};
use vla_receivers::OtlpReceiver;
use vla_receivers::otlp::{Config, GrpcConfig, HttpConfig, Protocols};

#[allow(dead_code)] // not used by every test binary
pub const PROTOBUF: &str = "application/x-protobuf";

pub struct Harness {
    #[allow(dead_code)] // not used by every test binary
    pub grpc: SocketAddr,
    #[allow(dead_code)] // not used by every test binary
    pub http: SocketAddr,
    pub rx: mpsc::Receiver<MetricBatch>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ReceiverError>>,
    #[allow(dead_code)] // not used by every test binary
    pub telemetry: SelfMetrics,
}

pub fn both(max_mib: u64) -> Config {
    Config {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                max_recv_msg_size_mib: max_mib,
                ..GrpcConfig::default()
            }),
            http: Some(HttpConfig {
                max_request_body_size_mib: max_mib,
                ..HttpConfig::default()
            }),
        },
    }
}

pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[allow(dead_code)] // not used by every test binary
pub fn start(config: Config, capacity: usize, max_wait: Duration) -> Harness {
    start_with(config, capacity, max_wait, SelfMetrics::new(), None)
}

/// A receiver whose pipeline admits through `limiter` (registered in `telemetry`).
#[allow(dead_code)] // not used by every test binary
pub fn start_with(
    config: Config,
    capacity: usize,
    max_wait: Duration,
    telemetry: SelfMetrics,
    limiter: Option<std::sync::Arc<vla_pipeline::memory::MemoryLimiter>>,
) -> Harness {
    let id: ComponentId = "otlp".into();
    let receiver =
        OtlpReceiver::new(id.clone(), &config, Some(bind()), Some(bind()), &telemetry).unwrap();
    let grpc = receiver.grpc_addr().unwrap();
    let http = receiver.http_addr().unwrap();
    assert_ne!(grpc.port(), 0);
    let (tx, rx) = mpsc::channel(capacity);
    let shutdown = CancellationToken::new();
    let ctx = ReceiverContext {
        output: PipelineSender::new(&id, vec![tx], max_wait, &telemetry)
            .with_memory_limiters(vec![limiter]),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(Box::new(receiver).run(ctx));
    Harness {
        grpc,
        http,
        rx,
        shutdown,
        task,
        telemetry,
    }
}

#[allow(dead_code)] // not used by every test binary
pub fn start_default() -> Harness {
    start(both(16), 16, Duration::from_millis(50))
}

impl Harness {
    #[allow(dead_code)] // not used by every test binary
    pub async fn grpc_client(&self) -> MetricsServiceClient<tonic::transport::Channel> {
        MetricsServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    #[allow(dead_code)] // not used by every test binary
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn next_batch(&mut self) -> MetricBatch {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a batch within 5 s")
            .expect("channel open")
    }

    #[allow(dead_code)] // not used by every test binary
    pub fn invalid(&self, transport: &str) -> Option<i64> {
        self.telemetry.value(
            "vla_collector_receiver_invalid_requests_total",
            &[("receiver", "otlp"), ("transport", transport)],
        )
    }

    #[allow(dead_code)] // not used by every test binary
    pub fn counter(&self, name: &str, reason: Option<&str>) -> Option<i64> {
        let mut labels = vec![("receiver", "otlp")];
        if let Some(r) = reason {
            labels.push(("reason", r));
        }
        self.telemetry.value(name, &labels)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

/// Two resources: a gauge with 3 points and a histogram with 1 → 4 data points.
pub fn sample() -> Vec<ResourceMetrics> {
    let labels: &[(&str, &str)] = &[("gpu", "0")];
    vec![
        fixtures::resource(
            "vla-api",
            vec![fixtures::gauge(
                "vla.gpu.temperature",
                "Cel",
                &[(70.0, labels), (71.0, &[("gpu", "1")]), (72.0, &[])],
            )],
        ),
        fixtures::resource(
            "vla-worker",
            vec![fixtures::histogram(
                "vla.inference.duration",
                "s",
                &[0.1, 0.5],
                &[1, 2, 0],
                0.9,
                &[],
            )],
        ),
    ]
}

pub fn sample_request() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: sample(),
    }
}

/// One gauge whose `points` points each carry a 1 KiB attribute: about `points` KiB encoded.
#[allow(dead_code)] // not used by every test binary
pub fn big_request(points: usize) -> ExportMetricsServiceRequest {
    let value = "x".repeat(1024);
    let labels: Vec<(String, String)> = (0..points)
        .map(|i| (format!("k{i}"), value.clone()))
        .collect();
    let pairs: Vec<[(&str, &str); 1]> = labels
        .iter()
        .map(|(k, v)| [(k.as_str(), v.as_str())])
        .collect();
    let points: Vec<(f64, &[(&str, &str)])> = pairs.iter().map(|p| (1.0, &p[..])).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource(
            "big",
            vec![fixtures::gauge("big.gauge", "1", &points)],
        )],
    }
}

#[allow(dead_code)] // not used by every test binary
pub fn gauge_values(batch: &MetricBatch) -> Vec<f64> {
    let mut out = Vec::new();
    for rm in batch.resource_metrics() {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                if let Some(metric::Data::Gauge(g)) = &m.data {
                    for p in &g.data_points {
                        if let Some(number_data_point::Value::AsDouble(v)) = p.value {
                            out.push(v);
                        }
                    }
                }
            }
        }
    }
    out
}

#[allow(dead_code)] // not used by every test binary
pub async fn post(
    h: &Harness,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(h.url("/v1/metrics"))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

/// An export request, protobuf-encoded, whose one attribute value is not UTF-8 (bytes 0xff
/// 0xfe where the text had `MARK`'s first two letters; lengths stay valid).
#[allow(dead_code)] // not used by every test binary
pub fn request_with_invalid_utf8_label() -> Vec<u8> {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![fixtures::resource(
            "vla-api",
            vec![fixtures::gauge(
                "vla.gpu.temperature",
                "Cel",
                &[(70.0, &[("gpu", "MARK")])],
            )],
        )],
    };
    let mut body = request.encode_to_vec();
    let at = body
        .windows(4)
        .position(|w| w == b"MARK")
        .expect("the marker is in the encoding");
    body[at] = 0xff;
    body[at + 1] = 0xfe;
    body
}
