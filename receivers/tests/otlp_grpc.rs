//! Component tests of the `otlp` receiver's gRPC side on a real socket (127.0.0.1:0): a tonic
//! client → receiver → `PipelineSender` → the test's channel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{big_request, both, gauge_values, sample, sample_request, start, start_default};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_message_is_refused_not_retryable_and_server_survives() {
    let mut h = start_default();
    // A raw gRPC frame whose payload is not an ExportMetricsServiceRequest.
    let payload = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(format!(
            "http://{}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            h.grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
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
