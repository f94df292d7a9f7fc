//! Component tests of the `otlp` receiver's HTTP side on a real socket (127.0.0.1:0): a
//! reqwest client (or a raw connection) → receiver → `PipelineSender` → the test's channel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    PROTOBUF, big_request, both, gauge_values, post, request_with_invalid_utf8_label, sample,
    sample_request, start, start_default,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Decodes an OTLP/HTTP error body (`google.rpc.Status`, protobuf).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_is_accepted() {
    let mut h = start_default();
    let resp = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], PROTOBUF);
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        ExportMetricsServiceResponse::decode(body).unwrap(),
        ExportMetricsServiceResponse::default()
    );
    let batch = h.next_batch().await;
    assert_eq!(batch.data_points(), 4);
    assert_eq!(batch.resource_metrics(), &sample()[..]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_protobuf_is_accepted() {
    let mut h = start_default();
    let body = gzip(&big_request(100).encode_to_vec());
    let resp = post(&h, PROTOBUF, Some("gzip"), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.next_batch().await.data_points(), 100);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_zstd_protobuf_is_accepted() {
    let mut h = start_default();
    let body = ruzstd::encoding::compress_to_vec(
        &big_request(100).encode_to_vec()[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let resp = post(&h, PROTOBUF, Some("zstd"), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.next_batch().await.data_points(), 100);
    h.stop().await;
}

/// Spec-shaped OTLP/JSON: camelCase, 64-bit integers as strings, enums as numbers, hex ids.
const SPEC_JSON: &str = r#"{
  "resourceMetrics": [{
    "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "vla-api" } }] },
    "scopeMetrics": [{
      "scope": { "name": "vla-sdk", "version": "1.0" },
      "metrics": [
        { "name": "vla.inference.requests", "unit": "{request}",
          "sum": { "aggregationTemporality": 2, "isMonotonic": true,
            "dataPoints": [{ "asInt": "42",
              "startTimeUnixNano": "1767225540000000000", "timeUnixNano": "1767225600000000000",
              "attributes": [{ "key": "model", "value": { "stringValue": "pi0" } }],
              "exemplars": [{ "asDouble": 1.5, "timeUnixNano": "1767225599000000000",
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174" }] }] } },
        { "name": "vla.gpu.temperature", "unit": "Cel",
          "gauge": { "dataPoints": [{ "asDouble": 71.5, "timeUnixNano": "1767225600000000000" }] } },
        { "name": "vla.inference.duration", "unit": "s",
          "histogram": { "aggregationTemporality": 2,
            "dataPoints": [{ "timeUnixNano": "1767225600000000000", "count": "3", "sum": 0.9,
              "bucketCounts": ["1", "2", "0"], "explicitBounds": [0.1, 0.5] }] } }
      ]
    }]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_spec_json_is_accepted() {
    let mut h = start_default();
    let resp = post(&h, "application/json", None, SPEC_JSON.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");
    let batch = h.next_batch().await;
    assert_eq!(batch.data_points(), 3);
    let rm = &batch.resource_metrics()[0];
    assert_eq!(
        vla_pipeline::attr_str(&rm.resource.as_ref().unwrap().attributes, "service.name"),
        Some("vla-api")
    );
    let metrics = &rm.scope_metrics[0].metrics;
    let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
        panic!("sum expected: {:?}", metrics[0]);
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, 2);
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(number_data_point::Value::AsInt(42)));
    assert_eq!(p.time_unix_nano, 1_767_225_600_000_000_000);
    assert_eq!(p.start_time_unix_nano, 1_767_225_540_000_000_000);
    assert_eq!(vla_pipeline::attr_str(&p.attributes, "model"), Some("pi0"));
    assert_eq!(p.exemplars[0].trace_id.len(), 16);
    assert_eq!(p.exemplars[0].span_id[..2], [0xee, 0xe1]);
    assert_eq!(gauge_values(&batch), vec![71.5]);
    let Some(metric::Data::Histogram(hist)) = &metrics[2].data else {
        panic!("histogram expected");
    };
    assert_eq!(hist.data_points[0].count, 3);
    assert_eq!(hist.data_points[0].bucket_counts, vec![1, 2, 0]);
    assert_eq!(hist.data_points[0].explicit_bounds, vec![0.1, 0.5]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_malformed_body_is_400_with_message_and_server_survives() {
    let mut h = start_default();
    let resp = post(&h, PROTOBUF, None, vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], PROTOBUF);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.starts_with("malformed protobuf body: "),
        "{}",
        status.message
    );
    assert_eq!(h.invalid("http"), Some(1));

    let resp = post(
        &h,
        "application/json",
        None,
        b"{\"resourceMetrics\": 7}".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let status: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status["code"], 3);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body: "),
        "{status}"
    );

    let resp = post(&h, PROTOBUF, Some("gzip"), b"not gzip at all".to_vec()).await;
    assert_eq!(resp.status(), 400);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.starts_with("malformed compressed body"),
        "{}",
        status.message
    );

    let resp = post(&h, PROTOBUF, Some("br"), sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(h.invalid("http"), Some(4));
    assert!(h.rx.try_recv().is_err());

    let resp = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_full_pipeline_is_503_with_retry_after() {
    let h = start(both(16), 1, Duration::from_millis(50));
    let ok = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(ok.status(), 200);
    let resp = post(&h, "application/json", None, SPEC_JSON.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let status: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status["code"], tonic::Code::Unavailable as i32);
    assert_eq!(status["message"], "pipeline is full, retry later");
    assert_eq!(
        h.counter(
            "vla_collector_receiver_refused_data_points_total",
            Some("pipeline_full")
        ),
        Some(3)
    );
    assert_eq!(h.invalid("http"), Some(0));
    h.stop().await;
}

/// Sends only the headers of a protobuf POST declaring `len` bytes, and reads the answer
/// (the server must answer without the body): its status and body.
async fn post_headers_only(addr: SocketAddr, len: usize) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PROTOBUF}\r\n\
         content-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("a content-length on the answer");
                if got.len() >= end + 4 + length {
                    let code = text[9..12].parse().unwrap();
                    return (code, got[end + 4..end + 4 + length].to_vec());
                }
            }
            assert!(n > 0, "connection closed before a full answer: {text:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer without the body")
}

/// POSTs `body` to `/v1/metrics` with `Transfer-Encoding: chunked` (no `Content-Length`) on a
/// raw connection; the response status, if one could be read.
async fn post_chunked(addr: SocketAddr, body: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut out = format!(
        "POST /v1/metrics HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PROTOBUF}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    let writer = tokio::spawn(async move {
        // Errors are expected once the server has answered and closed.
        let _ = write.write_all(&out).await;
        write
    });
    let mut response = Vec::new();
    let _ = read.read_to_end(&mut response).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_oversize_body_is_413_also_after_decompression() {
    let mut h = start(both(1), 16, Duration::from_millis(50));
    let big = big_request(2 * 1024).encode_to_vec();
    assert!(big.len() > 2 * 1024 * 1024);
    // A declared Content-Length past the limit is refused before the body is read: only the
    // headers are sent, so the answer cannot race a client still writing.
    let (code, body) = post_headers_only(h.http, big.len()).await;
    assert_eq!(code, 413);
    let status = RpcStatus::decode(&body[..]).unwrap();
    assert_eq!(
        status.message,
        "request exceeds the limit of 1048576 bytes (max_request_body_size_mib)"
    );

    // A small gzip body that inflates past the limit (a "gzip bomb").
    let bomb = gzip(&vec![0u8; 8 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let resp = post(&h, PROTOBUF, Some("gzip"), bomb).await;
    assert_eq!(resp.status(), 413);

    // Streamed without Content-Length: the limit still applies while reading.
    let status = post_chunked(h.http, &big).await;
    // The server may answer before reading everything and close the connection.
    if let Some(status) = status {
        assert_eq!(status, 413);
    }
    assert_eq!(h.invalid("http"), Some(3));
    assert!(h.rx.try_recv().is_err());

    let resp = post(
        &h,
        PROTOBUF,
        Some("gzip"),
        gzip(&sample_request().encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.next_batch().await.data_points(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_wrong_type_method_and_path() {
    let h = start_default();
    let resp = post(&h, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("application/x-protobuf or application/json")
    );
    let client = reqwest::Client::new();
    let resp = client.get(h.url("/v1/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = client
        .post(h.url("/v1/traces"))
        .header("content-type", PROTOBUF)
        .body(sample_request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Media-type parameters and case are ignored.
    let resp = post(
        &h,
        "Application/JSON; charset=utf-8",
        None,
        SPEC_JSON.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.invalid("http"), Some(1));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_label_that_is_not_utf8_is_400_counted_and_nothing_is_delivered() {
    let mut h = start_default();
    let resp = post(&h, PROTOBUF, None, request_with_invalid_utf8_label()).await;
    assert_eq!(resp.status(), 400);
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.starts_with("malformed protobuf body: ") && status.message.contains("UTF-8"),
        "{}",
        status.message
    );
    // The same in JSON: a string with a byte that is not UTF-8.
    let json = b"{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\
        \"value\":{\"stringValue\":\"a\xffb\"}}]}}]}"
        .to_vec();
    let resp = post(&h, "application/json", None, json).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(h.invalid("http"), Some(2));
    assert!(
        h.rx.try_recv().is_err(),
        "a refused request reached the pipeline"
    );
    // The server keeps serving well-formed requests.
    let resp = post(&h, PROTOBUF, None, sample_request().encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(gauge_values(&h.next_batch().await), vec![70.0, 71.0, 72.0]);
    h.stop().await;
}
