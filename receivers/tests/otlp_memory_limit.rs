//! The `otlp` receiver under a `memory_limiter`: over the soft limit both transports refuse
//! before reading the body, with retryable answers, counted; batches the pipeline still holds
//! keep their bytes; once the pipeline lets go, requests are accepted again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{PROTOBUF, big_request, both, post, sample_request, start_with};
use prost::Message;
use vla_pipeline::memory::{LimitMode, Limits, MemoryLimiter};
use vla_pipeline::{MetricBatch, SelfMetrics};

/// What one `sample_request()` holds, as the receiver keeps it (encoded).
fn held_bytes() -> u64 {
    let body = sample_request().encode_to_vec();
    let batch = MetricBatch::from_request("otlp".into(), body.into()).unwrap();
    assert!(batch.is_encoded());
    batch.memory_bytes()
}

const REFUSED: &str = "collector is at its memory limit, retry later";

/// A receiver on both transports whose pipeline is admitted by a refusing limiter of
/// `limit_bytes` and `spike_limit_bytes`.
fn start_limited(
    limit_bytes: u64,
    spike_limit_bytes: u64,
) -> (common::Harness, std::sync::Arc<MemoryLimiter>) {
    let telemetry = SelfMetrics::new();
    let limiter = MemoryLimiter::new(
        "memory_limiter".into(),
        Limits {
            limit_bytes,
            spike_limit_bytes,
            mode: LimitMode::Refuse,
        },
        &telemetry,
    );
    let h = start_with(
        both(16),
        16,
        Duration::from_millis(50),
        telemetry,
        Some(limiter.clone()),
    );
    (h, limiter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_both_transports_refuse_retryably_until_the_pipeline_lets_go() {
    let one = held_bytes();
    // One request's batch reaches the soft limit.
    let (mut h, limiter) = start_limited(one * 2, one);
    let mut client = h.grpc_client().await;
    client.export(sample_request()).await.expect("room for one");
    assert!(limiter.used() >= one, "the queued batch holds its bytes");

    let status = client.export(sample_request()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, REFUSED)
    );
    let resp = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let early = |transport| {
        h.telemetry.value(
            "vla_collector_receiver_refused_requests_total",
            &[
                ("receiver", "otlp"),
                ("transport", transport),
                ("reason", "memory_limit"),
            ],
        )
    };
    assert_eq!((early("grpc"), early("http")), (Some(1), Some(1)));
    assert_eq!(
        h.invalid("grpc"),
        Some(0),
        "backpressure is not invalid input"
    );

    // The exporters finish with the batch: admission resumes.
    drop(h.next_batch().await);
    assert_eq!(limiter.used(), 0);
    client.export(sample_request()).await.expect("room again");
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_fit_below_the_soft_limit_is_refused_after_reading_and_counted() {
    let one = held_bytes();
    // Room for three small requests: after one, a typical (small) batch still fits, so the
    // big one is read and checked, does not fit, and is refused.
    let (mut h, _limiter) = start_limited(one * 3, 0);
    let resp = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    let resp = post(&h, PROTOBUF, None, big_request(100).encode_to_vec()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        h.counter(
            "vla_collector_receiver_refused_data_points_total",
            Some("memory_limit")
        ),
        Some(100)
    );
    assert_eq!(
        h.telemetry.value(
            "vla_collector_memory_limiter_refused_data_points_total",
            &[("processor", "memory_limiter")]
        ),
        Some(100)
    );
    assert_eq!(
        h.next_batch().await.data_points(),
        4,
        "only the first went in"
    );
    assert!(h.rx.try_recv().is_err());
    h.stop().await;
}
