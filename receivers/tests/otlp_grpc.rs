//! Component tests of the `otlp` receiver's gRPC side on a real socket (127.0.0.1:0): a tonic
//! client → receiver → `PipelineSender` → the test's channel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{
    big_request, both, gauge_values, request_with_invalid_utf8_label, sample, sample_request,
    start, start_default,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use vla_pipeline::fixtures;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_delivers_exact_points() {
    let mut h = start_default();
    let mut client = h.grpc_client().await;
    let resp = client.export(sample_request()).await.unwrap().into_inner();
    assert_eq!(resp, ExportMetricsServiceResponse::default());
    assert_eq!(resp.partial_success, None);
    let batch = h.next_batch().await;
    assert_eq!(batch.data_points(), 4);
    assert_eq!(batch.resource_metrics().len(), 2);
    assert_eq!(&*batch.meta().source, "otlp");
    assert_eq!(gauge_values(&batch), vec![70.0, 71.0, 72.0]);
    assert_eq!(batch.resource_metrics(), &sample()[..]);
    assert_eq!(
        h.counter("vla_collector_receiver_accepted_data_points_total", None),
        Some(4)
    );
    assert_eq!(h.invalid("grpc"), Some(0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_other_method_is_unimplemented() {
    let h = start_default();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for path in [
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Nope",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    ] {
        let resp = client
            .post(format!("http://{}{path}", h.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8; 5])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"12"[..]),
            "{path}: {:?}",
            resp.headers()
        );
    }
    // An unknown method of our service counts as an invalid request; another service is
    // answered by tonic's router before it reaches the receiver.
    assert_eq!(h.invalid("grpc"), Some(1));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_empty_request_succeeds_without_sending() {
    let mut h = start_default();
    let mut client = h.grpc_client().await;
    client
        .export(ExportMetricsServiceRequest::default())
        .await
        .unwrap();
    // Resources without points are empty too.
    client
        .export(ExportMetricsServiceRequest {
            resource_metrics: vec![fixtures::resource("svc", vec![])],
        })
        .await
        .unwrap();
    assert!(h.rx.try_recv().is_err(), "nothing must reach the pipeline");
    client.export(sample_request()).await.unwrap();
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_accepts_gzip() {
    let mut h = start_default();
    let mut client = h
        .grpc_client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(big_request(300)).await.unwrap();
    let batch = h.next_batch().await;
    assert_eq!(batch.data_points(), 300);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_accepts_messages_over_4_mib_up_to_the_configured_limit() {
    let mut h = start_default();
    let mut client = h.grpc_client().await;
    let req = big_request(6 * 1024);
    let len = req.encoded_len();
    assert!(len > 6 * 1024 * 1024 && len < 16 * 1024 * 1024, "{len}");
    client.export(req).await.unwrap();
    assert_eq!(h.next_batch().await.data_points(), 6 * 1024);
    h.stop().await;

    // Over the configured limit: refused with a non-retryable status, and nothing sent.
    let mut h = start(both(1), 16, Duration::from_millis(50));
    let mut client = h.grpc_client().await;
    let status = client.export(big_request(2 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "request exceeds the limit of 1048576 bytes (max_recv_msg_size_mib)"
    );
    // Decompressed past the limit (small on the wire).
    let mut gz = h
        .grpc_client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let status = gz.export(big_request(2 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(h.invalid("grpc"), Some(2));
    assert!(h.rx.try_recv().is_err());
    client.export(sample_request()).await.unwrap();
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_full_pipeline_answers_unavailable() {
    let h = start(both(16), 1, Duration::from_millis(50));
    let mut client = h.grpc_client().await;
    client.export(sample_request()).await.unwrap();
    let status = client.export(sample_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "pipeline is full, retry later");
    assert_eq!(
        h.counter(
            "vla_collector_receiver_refused_data_points_total",
            Some("pipeline_full")
        ),
        Some(4)
    );
    assert_eq!(
        h.invalid("grpc"),
        Some(0),
        "backpressure is not invalid input"
    );
    h.stop().await;
}

/// Calls `Export` with `payload` as the one (uncompressed) gRPC message, over plain HTTP/2.
async fn export_raw(addr: std::net::SocketAddr, payload: &[u8]) -> reqwest::Response {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    client
        .post(format!(
            "http://{addr}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_message_is_refused_not_retryable_and_server_survives() {
    let mut h = start_default();
    // A raw gRPC frame whose payload is not an ExportMetricsServiceRequest.
    let resp = export_raw(h.grpc, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]).await;
    assert_eq!(resp.status(), 200);
    // grpc-status arrives in the headers (trailers-only) for an immediate error.
    let code = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(code.as_deref(), Some("3"), "INVALID_ARGUMENT");
    let status = tonic::Status::from_header_map(resp.headers()).unwrap();
    let message = status.message();
    assert!(
        message.starts_with("malformed gRPC message: failed to decode Protobuf message"),
        "{message}"
    );
    assert_eq!(h.invalid("grpc"), Some(1));
    assert!(h.rx.try_recv().is_err());
    let mut grpc = h.grpc_client().await;
    grpc.export(sample_request()).await.unwrap();
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

/// An HTTP/2 connection spoken frame by frame, to watch what the server sends on its own.
struct RawH2(tokio::net::TcpStream);

impl RawH2 {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
        Self(s)
    }

    /// The next frame's (type, flags, payload); SETTINGS are acknowledged on the way.
    async fn frame(&mut self) -> Option<(u8, u8, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = [0u8; 9];
        self.0.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload).await.ok()?;
        let (ty, flags) = (head[3], head[4]);
        if ty == 4 && flags & 1 == 0 {
            self.0.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.ok()?;
        }
        if ty == 6 && flags & 1 == 0 {
            // Answer a PING as a live client does.
            let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            self.0.write_all(&ack).await.ok()?;
        }
        Some((ty, flags, payload))
    }

    /// Waits (bounded) for the first frame of type `ty` the server sends unprompted.
    async fn wait_for(&mut self, ty: u8, within: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(within, async {
            loop {
                match self.frame().await {
                    Some((t, flags, payload)) if t == ty => return Some((flags, payload)),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

fn with_keepalive(time: Option<&str>, age: Option<&str>) -> vla_receivers::otlp::Config {
    let mut c = common::both(16);
    let grpc = c.protocols.grpc.as_mut().unwrap();
    let d = |s: &str| vla_pipeline::config::parse_duration(s).unwrap();
    grpc.keepalive.server_parameters.time = time.map(d);
    grpc.keepalive.server_parameters.max_connection_age = age.map(d);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_keepalive_pings_an_idle_connection() {
    let h = start(
        with_keepalive(Some("1s"), None),
        16,
        Duration::from_millis(50),
    );
    let mut conn = RawH2::connect(h.grpc).await;
    let ping = conn.wait_for(6, Duration::from_secs(10)).await;
    assert!(
        matches!(&ping, Some((0, payload)) if payload.len() == 8),
        "no keepalive PING on an idle connection: {ping:?}"
    );
    drop(conn); // a graceful stop waits for open connections
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_without_keepalive_sends_no_ping_and_max_connection_age_sends_goaway() {
    // No pings configured: the first frame the server sends on its own after the handshake is
    // the GOAWAY of max_connection_age, not a PING.
    let h = start(
        with_keepalive(None, Some("1s")),
        16,
        Duration::from_millis(50),
    );
    let mut conn = RawH2::connect(h.grpc).await;
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.frame().await {
                Some((4 | 8, ..)) => continue, // SETTINGS, their acks, WINDOW_UPDATE
                Some((t, ..)) => return Some(t),
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    assert_eq!(
        first,
        Some(7),
        "expected GOAWAY (type 7) after max_connection_age"
    );
    drop(conn);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_label_that_is_not_utf8_is_invalid_argument_counted_and_nothing_is_delivered() {
    let mut h = start_default();
    let resp = export_raw(h.grpc, &request_with_invalid_utf8_label()).await;
    let status = tonic::Status::from_header_map(resp.headers()).expect("a grpc-status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    assert_eq!(h.invalid("grpc"), Some(1));
    assert!(
        h.rx.try_recv().is_err(),
        "a refused request reached the pipeline"
    );
    let mut grpc = h.grpc_client().await;
    grpc.export(sample_request()).await.unwrap();
    assert_eq!(gauge_values(&h.next_batch().await), vec![70.0, 71.0, 72.0]);
    h.stop().await;
}
