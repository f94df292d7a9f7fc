//! Lifecycle tests of the `otlp` receiver: shutdown with requests in flight or idle
//! connections open, and the check of bound listeners against the config at build time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{PROTOBUF, bind, both, post, sample_request, start, start_default};
use prost::Message;
use vla_pipeline::SelfMetrics;
use vla_receivers::otlp::{Config, GrpcConfig, Protocols};
use vla_receivers::{OtlpReceiver, ReceiverBuildError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_returns() {
    // The pipeline is full and the sender waits up to 10 s for room: the request is in flight.
    let mut h = start(both(16), 1, Duration::from_secs(10));
    let ok = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(ok.status(), 200);
    let url = h.url("/v1/metrics");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", PROTOBUF)
            .body(sample_request().encode_to_vec())
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // The request is in flight once the receiver holds it waiting for room.
    let waiting = || {
        h.telemetry.value(
            "vla_collector_receiver_waiting_requests",
            &[("receiver", "otlp")],
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting() != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never waited"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.shutdown.cancel();
    // Shutdown is under way once the listeners are closed; the request still holds the task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(h.http).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener stayed open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!h.task.is_finished(), "must wait for the request in flight");
    assert_eq!(waiting(), Some(1));
    // Make room: the in-flight request completes successfully.
    assert_eq!(h.next_batch().await.data_points(), 4);
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert_eq!(h.next_batch().await.data_points(), 4);
    let r = tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .expect("run returns")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    // Both listeners are closed.
    assert!(tokio::net::TcpStream::connect(h.http).await.is_err());
    assert!(tokio::net::TcpStream::connect(h.grpc).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_an_idle_grpc_connection_returns() {
    let h = start_default();
    let mut client = h.grpc_client().await;
    client.export(sample_request()).await.unwrap();
    // The client keeps its HTTP/2 connection open; shutdown must still complete.
    h.stop().await;
    drop(client);
}

#[test]
fn build_checks_listeners_against_the_config() {
    let t = SelfMetrics::new();
    let grpc_only = Config {
        protocols: Protocols {
            grpc: Some(GrpcConfig::default()),
            http: None,
        },
    };
    let err = OtlpReceiver::new("otlp".into(), &grpc_only, None, None, &t).unwrap_err();
    assert!(
        matches!(
            err,
            ReceiverBuildError::MissingListener {
                protocol: "grpc",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "receiver otlp: protocol grpc is enabled but no listener was bound for it"
    );
    let err =
        OtlpReceiver::new("otlp".into(), &grpc_only, Some(bind()), Some(bind()), &t).unwrap_err();
    assert!(
        matches!(
            err,
            ReceiverBuildError::UnexpectedListener {
                protocol: "http",
                ..
            }
        ),
        "{err:?}"
    );
    let err = OtlpReceiver::new("otlp".into(), &Config::default(), None, None, &t).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("receiver otlp: invalid config: receivers.otlp.protocols: "),
        "{err}"
    );
    let ok = OtlpReceiver::new("otlp/a".into(), &grpc_only, Some(bind()), None, &t).unwrap();
    assert!(ok.grpc_addr().is_some());
    assert_eq!(ok.http_addr(), None);
    assert_eq!(
        t.value(
            "vla_collector_receiver_invalid_requests_total",
            &[("receiver", "otlp/a"), ("transport", "grpc")]
        ),
        Some(0)
    );
}
