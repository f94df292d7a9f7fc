use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use prost::Message;
use tokio_util::sync::CancellationToken;
use vla_pipeline::fixtures::{self, T0_NANOS};
use vla_pipeline::{ExportError, Exporter, MetricBatch, SelfMetrics};

use super::proto::{Label, WriteRequest};
use super::*;
use crate::translate::{STALE_NAN_BITS, TranslateOptions, Translator};

const T0_MS: i64 = (T0_NANOS / 1_000_000) as i64;

fn mixed_batch() -> MetricBatch {
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource_with(
            &[
                ("service.name", "vla-api"),
                ("service.instance.id", "pod-1"),
                ("host.name", "node-a"),
            ],
            vec![
                fixtures::gauge("vla.gpu.temperature", "Cel", &[(66.0, &[("gpu.id", "0")])]),
                fixtures::cumulative_sum(
                    "vla.inference.requests",
                    "{request}",
                    true,
                    &[(12.0, &[("model", "m1"), ("Zone", "a")])],
                ),
                fixtures::histogram(
                    "vla.inference.duration",
                    "s",
                    &[0.1, 1.0],
                    &[3, 4, 1],
                    2.5,
                    &[("model", "m1")],
                ),
                fixtures::summary("rpc.time", "ms", &[(0.5, 2.0)], 4, 9.0, &[]),
                fixtures::delta_sum("vla.delta", "", true, &[(1.0, &[]), (1.0, &[("a", "b")])]),
            ],
        )],
    )
}

fn l(n: &str, v: &str) -> Label {
    Label {
        name: n.into(),
        value: v.into(),
    }
}

/// Encodes a batch with the exporter's encoder and decodes every request back.
fn encode_decode(batch: &MetricBatch, shards: usize, max: usize) -> Vec<Vec<WriteRequest>> {
    let mut translator = Translator::new(TranslateOptions {
        scope_info: false,
        ..TranslateOptions::default()
    });
    let mut encoder = encode::ShardedEncoder::new(shards, max);
    // Twice, to prove buffers are reset and reused correctly.
    for _ in 0..2 {
        encoder.reset();
        translator.translate(batch, &mut encoder);
        encoder.finish();
    }
    encoder
        .shards()
        .iter()
        .map(|s| {
            s.filled()
                .iter()
                .map(|r| WriteRequest::decode(&r.body[..]).unwrap())
                .collect()
        })
        .collect()
}

/// A batch of one gauge `name`, a point for each `(attributes, timestamp ms, value)`.
fn timed_gauge(
    name: &str,
    points: impl IntoIterator<
        Item = (
            Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
            i64,
            f64,
        ),
    >,
) -> MetricBatch {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, metric};
    let data_points = points
        .into_iter()
        .map(|(attributes, ms, value)| NumberDataPoint {
            attributes,
            time_unix_nano: ms as u64 * 1_000_000,
            value: Some(Value::AsDouble(value)),
            ..Default::default()
        })
        .collect();
    let metric = Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    };
    MetricBatch::new("otlp".into(), vec![fixtures::resource("api", vec![metric])])
}

fn all_series(shards: &[Vec<WriteRequest>]) -> Vec<super::proto::TimeSeries> {
    let mut out: Vec<_> = shards
        .iter()
        .flatten()
        .flat_map(|r| r.timeseries.clone())
        .collect();
    out.sort_by(|a, b| {
        let key = |t: &super::proto::TimeSeries| {
            t.labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
        };
        key(a).cmp(&key(b))
    });
    out
}

#[test]
fn encodes_a_mixed_batch_that_decodes_back_exactly() {
    let batch = mixed_batch();
    let shards = encode_decode(&batch, 1, 2000);
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].len(), 1);
    let series = &shards[0][0].timeseries;
    let flat: Vec<(Vec<Label>, f64, i64)> = series
        .iter()
        .map(|t| {
            assert_eq!(t.samples.len(), 1);
            (t.labels.clone(), t.samples[0].value, t.samples[0].timestamp)
        })
        .collect();
    let base = |extra: &[(&str, &str)]| -> Vec<Label> {
        let mut v: Vec<Label> = extra.iter().map(|(n, v)| l(n, v)).collect();
        v.push(l("instance", "pod-1"));
        v.push(l("job", "vla-api"));
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let expected = vec![
        (
            base(&[("__name__", "vla_gpu_temperature_celsius"), ("gpu_id", "0")]),
            66.0,
        ),
        (
            // `Zone` sorts before `__name__` (byte order): the label order is by bytes.
            vec![
                l("Zone", "a"),
                l("__name__", "vla_inference_requests_total"),
                l("instance", "pod-1"),
                l("job", "vla-api"),
                l("model", "m1"),
            ],
            12.0,
        ),
        (
            base(&[
                ("__name__", "vla_inference_duration_seconds_bucket"),
                ("le", "0.1"),
                ("model", "m1"),
            ]),
            3.0,
        ),
        (
            base(&[
                ("__name__", "vla_inference_duration_seconds_bucket"),
                ("le", "1"),
                ("model", "m1"),
            ]),
            7.0,
        ),
        (
            base(&[
                ("__name__", "vla_inference_duration_seconds_bucket"),
                ("le", "+Inf"),
                ("model", "m1"),
            ]),
            8.0,
        ),
        (
            base(&[
                ("__name__", "vla_inference_duration_seconds_sum"),
                ("model", "m1"),
            ]),
            2.5,
        ),
        (
            base(&[
                ("__name__", "vla_inference_duration_seconds_count"),
                ("model", "m1"),
            ]),
            8.0,
        ),
        (
            base(&[("__name__", "rpc_time_milliseconds"), ("quantile", "0.5")]),
            2.0,
        ),
        (base(&[("__name__", "rpc_time_milliseconds_sum")]), 9.0),
        (base(&[("__name__", "rpc_time_milliseconds_count")]), 4.0),
        (
            base(&[("__name__", "target_info"), ("host_name", "node-a")]),
            1.0,
        ),
    ];
    let expected: Vec<(Vec<Label>, f64, i64)> =
        expected.into_iter().map(|(l, v)| (l, v, T0_MS)).collect();
    assert_eq!(flat, expected);
    for t in series {
        let names: Vec<&str> = t.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "labels sorted and unique");
    }
}

#[test]
fn shards_split_by_series_and_requests_respect_max_samples() {
    let points: Vec<(f64, Vec<(String, String)>)> = (0..100)
        .map(|i| (f64::from(i), vec![("i".to_owned(), i.to_string())]))
        .collect();
    let borrowed: Vec<Vec<(&str, &str)>> = points
        .iter()
        .map(|(_, l)| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let pts: Vec<(f64, &[(&str, &str)])> = points
        .iter()
        .zip(&borrowed)
        .map(|((v, _), l)| (*v, l.as_slice()))
        .collect();
    let batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![fixtures::gauge("g", "", &pts)],
        )],
    );
    let one = encode_decode(&batch, 1, 2000);
    let sharded = encode_decode(&batch, 4, 7);
    assert_eq!(all_series(&one), all_series(&sharded));
    let mut total = 0;
    for shard in &sharded {
        assert!(!shard.is_empty(), "100 series spread over every shard");
        for (i, req) in shard.iter().enumerate() {
            assert!(req.timeseries.len() <= 7);
            if i + 1 < shard.len() {
                assert_eq!(req.timeseries.len(), 7, "only the last request is partial");
            }
            total += req.timeseries.len();
        }
    }
    assert_eq!(total, 100);
    // The same series always lands in the same shard.
    let again = encode_decode(&batch, 4, 7);
    assert_eq!(sharded, again);
}

/// A point's series (a histogram's buckets, sum and count) go to one shard, one after another,
/// so the compressor sees their shared labels side by side; the points still spread over the
/// shards.
#[test]
fn a_points_series_share_a_shard_side_by_side() {
    let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let metrics = ids
        .iter()
        .map(|id| {
            fixtures::histogram(
                "vla.inference.duration",
                "s",
                &[0.1, 1.0],
                &[3, 4, 1],
                2.5,
                &[("customer.id", id.as_str())],
            )
        })
        .collect();
    let batch = MetricBatch::new("otlp".into(), vec![fixtures::resource("api", metrics)]);
    let shards = encode_decode(&batch, 4, 2000);
    let mut points_seen = std::collections::BTreeSet::new();
    for shard in &shards {
        assert!(!shard.is_empty(), "40 points spread over every shard");
        let ids: Vec<String> = shard
            .iter()
            .flat_map(|r| &r.timeseries)
            .map(|t| {
                let id = t.labels.iter().find(|l| l.name == "customer_id");
                id.map(|l| l.value.clone()).unwrap_or_default()
            })
            .collect();
        // Each point's 5 series (3 buckets, sum, count) form one run in its shard.
        let mut runs: Vec<(&String, usize)> = Vec::new();
        for id in &ids {
            match runs.last_mut() {
                Some((last, n)) if *last == id => *n += 1,
                _ => runs.push((id, 1)),
            }
        }
        for (id, n) in runs {
            assert_eq!(
                n, 5,
                "point {id}: its series are not side by side in {ids:?}"
            );
            assert!(points_seen.insert(id.clone()), "point {id} in two places");
        }
    }
    assert_eq!(points_seen.len(), 40);
}

#[test]
fn a_bucket_le_replaces_an_attribute_named_le() {
    let batch = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![fixtures::histogram(
                "h",
                "",
                &[2.0],
                &[1, 1],
                3.0,
                &[("le", "attr"), ("z", "1")],
            )],
        )],
    );
    let series = all_series(&encode_decode(&batch, 3, 1));
    let rendered: Vec<String> = series
        .iter()
        .map(|t| {
            t.labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(
        rendered,
        vec![
            "__name__=h_bucket,job=api,le=+Inf,z=1",
            "__name__=h_bucket,job=api,le=2,z=1",
            "__name__=h_count,job=api,le=attr,z=1",
            "__name__=h_sum,job=api,le=attr,z=1",
        ]
    );
}

#[test]
fn colliding_metrics_encode_no_duplicate_series() {
    // Two scopes (scope labels are off here) emit colliding metrics at the same timestamp.
    let mut rm = fixtures::resource(
        "a",
        vec![
            fixtures::histogram("x", "", &[1.0], &[1, 2], 3.0, &[]),
            fixtures::cumulative_sum("y", "", true, &[(1.0, &[])]),
            fixtures::gauge("a.seconds", "s", &[(1.0, &[])]),
        ],
    );
    let mut other = rm.scope_metrics[0].clone();
    other.metrics = vec![
        fixtures::gauge("x", "", &[(7.0, &[])]),
        fixtures::gauge("x_sum", "", &[(7.0, &[])]),
        fixtures::cumulative_sum("y.total", "", true, &[(2.0, &[])]),
        fixtures::gauge("a", "s", &[(2.0, &[])]),
    ];
    rm.scope_metrics.push(other);
    let batch = MetricBatch::new("otlp".into(), vec![rm]);
    let series = all_series(&encode_decode(&batch, 2, 3));
    let rendered: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|t| {
            let labels: Vec<String> = t
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
            (
                labels.join(","),
                t.samples.iter().map(|s| s.value).collect(),
            )
        })
        .collect();
    let want = |l: &str, v: f64| (l.to_owned(), vec![v]);
    assert_eq!(
        rendered,
        vec![
            want("__name__=a_seconds,job=a", 1.0),
            want("__name__=x_bucket,job=a,le=+Inf", 3.0),
            want("__name__=x_bucket,job=a,le=1", 1.0),
            want("__name__=x_count,job=a", 3.0),
            want("__name__=x_sum,job=a", 3.0),
            want("__name__=y_total,job=a", 1.0),
        ]
    );

    // The exporter's encoder reports the drops and the collision it warns about.
    let config = Config {
        disable_scope_info: true,
        ..Config::with_endpoint("http://127.0.0.1:1/api/v1/write")
    };
    let encoded = BatchEncoder::new(&config).encode(&batch).unwrap();
    assert_eq!(encoded.report.sent, 3);
    assert_eq!(
        encoded.report.dropped,
        vec![(crate::translate::DROP_NAME_COLLISION, 4)]
    );
    let c = encoded.collision.unwrap();
    assert_eq!(&*c.prometheus_name, "x");
    assert_eq!(&*c.dropped.name, "x");
    assert_eq!(c.kept.to_string(), "\"x\" (unit \"\", histogram)");
}

#[test]
fn stale_marker_bits_survive_encoding() {
    let mut g = fixtures::gauge("g", "", &[(5.0, &[])]);
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut g.data {
        g.data_points[0].flags = 1;
    }
    let batch = MetricBatch::new("otlp".into(), vec![fixtures::resource("api", vec![g])]);
    let shards = encode_decode(&batch, 1, 10);
    let v = shards[0][0].timeseries[0].samples[0].value;
    assert_eq!(v.to_bits(), STALE_NAN_BITS);
}

// ---------------------------------------------------------------------------------------------
// Config validation.

#[test]
fn config_defaults_and_validation_messages() {
    let c = Config::with_endpoint("http://127.0.0.1:9090/api/v1/write");
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.max_samples_per_send, 2000);
    assert_eq!(c.shards, 4);
    assert!(c.target_info.enabled);
    assert!(c.validate("exporters.prometheusremotewrite").is_empty());

    let mut bad = Config::with_endpoint("ftp://x");
    bad.headers
        .insert("content-TYPE".into(), "text/plain".into());
    bad.headers.insert("User-Agent".into(), "me".into());
    bad.headers.insert("X-Scope-OrgID".into(), "tenant".into());
    bad.external_labels.insert("1bad".into(), "v".into());
    bad.external_labels.insert("__x".into(), "v".into());
    bad.external_labels.insert("empty".into(), String::new());
    bad.external_labels.insert("cluster".into(), "eu".into());
    bad.max_samples_per_send = 0;
    bad.shards = 0;
    bad.namespace = Some("9ns".into());
    bad.timeout = Duration::ZERO;
    let problems = bad.validate("exporters.rw");
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let paths: Vec<&str> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        paths,
        vec![
            "exporters.rw.endpoint",
            "exporters.rw.headers.User-Agent",
            "exporters.rw.headers.content-TYPE",
            "exporters.rw.timeout",
            "exporters.rw.namespace",
            "exporters.rw.external_labels.1bad",
            "exporters.rw.external_labels.__x",
            "exporters.rw.external_labels.empty",
            "exporters.rw.max_samples_per_send",
            "exporters.rw.shards",
        ]
    );
    assert_eq!(
        got[0].1,
        "\"ftp://x\" is not an http:// URL: expected an http:// URL such as \
         http://127.0.0.1:9090/api/v1/write"
    );
    assert!(
        got[2].1.starts_with(
            "header \"content-TYPE\" is set by the remote-write protocol and cannot be overridden"
        ),
        "{}",
        got[2].1
    );
    assert_eq!(got[7].1, "the label value must not be empty");
    assert_eq!(got[8].1, "must be at least 1");

    let creds = Config::with_endpoint("http://user:s3cret@127.0.0.1:9090/api/v1/write?token=t0k");
    let msg = &creds.validate("e")[0].message;
    assert!(
        msg.starts_with(
            "\"http://127.0.0.1:9090/api/v1/write\": credentials in the URL are not accepted"
        ),
        "{msg}"
    );
    assert!(!msg.contains("s3cret") && !msg.contains("t0k"), "{msg}");
    assert_eq!(
        super::client::shown_url("http://u:p@h:1/p/q?x=secret"),
        "http://h:1/p/q"
    );

    let https = Config::with_endpoint("https://x/api");
    assert!(
        https.validate("e")[0]
            .message
            .contains("https is not supported")
    );
    let empty = Config::with_endpoint("");
    assert!(empty.validate("e")[0].message.starts_with("is required"));

    let mut retry = Config::with_endpoint("http://h/w");
    retry.sending_queue.queue_size = Some(0);
    let problems = retry.validate("e");
    assert_eq!(problems[0].path, "e.sending_queue.queue_size");
    assert!(retry.driver_config("e").is_err());
}

#[test]
fn config_parses_with_durations_defaults_and_rejects_unknown_fields() {
    let c: Config = serde_json::from_value(serde_json::json!({
        "endpoint": "http://127.0.0.1:9090/api/v1/write",
        "timeout": "250ms",
        "external_labels": { "cluster": "eu-1" },
        "target_info": { "enabled": false },
        "retry_on_failure": { "max_elapsed_time": "1m" },
    }))
    .unwrap();
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert_eq!(c.external_labels["cluster"], "eu-1");
    assert!(!c.target_info.enabled);
    assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::from_secs(60));
    assert_eq!(c.shards, 4);
    assert_eq!(c.max_samples_per_send, 2000);
    let err = serde_json::from_value::<Config>(serde_json::json!({
        "endpoint": "http://h/w", "shard": 2
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `shard`"), "{err}");
    let err = serde_json::from_value::<Config>(serde_json::json!({})).unwrap_err();
    assert!(
        err.to_string().contains("missing field `endpoint`"),
        "{err}"
    );
}

#[test]
fn constructor_refuses_an_invalid_config() {
    let mut c = Config::with_endpoint("http://127.0.0.1:1/w");
    c.headers.insert("Content-Type".into(), "text/plain".into());
    let err =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap_err();
    match err {
        crate::ExporterBuildError::InvalidConfig(p) => {
            assert_eq!(
                p[0].path,
                "exporters.prometheusremotewrite.headers.Content-Type"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Component tests against an in-test remote-write server on 127.0.0.1:0.

#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

fn reply(status: u16) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers: Vec::new(),
        body: "",
    }
}

#[derive(Default)]
struct Received {
    requests: Vec<(HeaderMap, WriteRequest)>,
}

#[derive(Clone)]
struct ServerState {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Received>>,
}

async fn write_handler(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy block format");
    let req = WriteRequest::decode(&raw[..]).expect("protobuf WriteRequest");
    let r = state
        .replies
        .lock()
        .pop_front()
        .unwrap_or_else(|| reply(204));
    if r.status.is_success() {
        state.received.lock().requests.push((headers, req));
    }
    let mut h = HeaderMap::new();
    for (k, v) in r.headers {
        h.insert(k, v.parse().unwrap());
    }
    (r.status, h, r.body.to_owned())
}

struct TestServer {
    addr: SocketAddr,
    state: ServerState,
    stop: CancellationToken,
}

impl TestServer {
    async fn start(replies: Vec<Reply>) -> Self {
        let state = ServerState {
            replies: Arc::new(Mutex::new(replies.into())),
            received: Arc::default(),
        };
        let app = Router::new()
            .route("/api/v1/write", post(write_handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        Self { addr, state, stop }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn received(&self) -> Vec<(HeaderMap, WriteRequest)> {
        std::mem::take(&mut self.state.received.lock().requests)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn exporter_for(server: &TestServer, telemetry: &SelfMetrics) -> PrometheusRemoteWriteExporter {
    let mut c = Config::with_endpoint(server.url());
    c.headers.insert("X-Scope-OrgID".into(), "tenant-a".into());
    c.shards = 2;
    PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, telemetry).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_delivers_samples_with_reserved_and_custom_headers() {
    let server = TestServer::start(vec![]).await;
    let telemetry = SelfMetrics::new();
    let exporter = exporter_for(&server, &telemetry);
    let report = vla_pipeline::fixtures::export_once(&exporter, &mixed_batch())
        .await
        .unwrap();
    assert_eq!(report.sent, 4);
    assert_eq!(report.dropped, vec![("delta_temporality", 2)]);
    let received = server.received();
    assert!(!received.is_empty() && received.len() <= 2);
    for (headers, _) in &received {
        assert_eq!(headers["content-encoding"], "snappy");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(
            headers["user-agent"],
            concat!("vla-collector/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(headers["x-scope-orgid"], "tenant-a");
    }
    let series: Vec<_> = received
        .iter()
        .flat_map(|(_, r)| r.timeseries.clone())
        .collect();
    assert_eq!(series.len(), 11);
    for t in &series {
        let names: Vec<&str> = t.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(names.contains(&"__name__"));
    }
    let counter = series
        .iter()
        .find(|t| {
            t.labels
                .iter()
                .any(|l| l.value == "vla_inference_requests_total")
        })
        .unwrap();
    assert_eq!(counter.samples[0].value, 12.0);
    assert_eq!(counter.samples[0].timestamp, T0_MS);
    assert_eq!(
        telemetry.value(
            "vla_collector_remote_write_samples_sent_total",
            &[("exporter", "prometheusremotewrite")]
        ),
        Some(11)
    );
    assert_eq!(
        telemetry.value(
            "vla_collector_remote_write_requests_total",
            &[("exporter", "prometheusremotewrite"), ("status", "2xx")]
        ),
        Some(received.len() as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_retryable() {
    let server = TestServer::start(vec![reply(503), reply(503)]).await;
    let telemetry = SelfMetrics::new();
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &telemetry).unwrap();
    match vla_pipeline::fixtures::export_once(&exporter, &mixed_batch()).await {
        Err(ExportError::Retryable {
            reason,
            retry_after,
            message,
        }) => {
            assert_eq!(reason, "http_5xx");
            assert_eq!(retry_after, None);
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    assert_eq!(
        telemetry.value(
            "vla_collector_remote_write_requests_total",
            &[("exporter", "prometheusremotewrite"), ("status", "5xx")]
        ),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_carries_retry_after() {
    let server = TestServer::start(vec![Reply {
        headers: vec![("retry-after", "2")],
        ..reply(429)
    }])
    .await;
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap();
    match vla_pipeline::fixtures::export_once(&exporter, &mixed_batch()).await {
        Err(ExportError::Retryable {
            reason,
            retry_after,
            ..
        }) => {
            assert_eq!(reason, "http_429");
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_permanent_with_the_body() {
    let server = TestServer::start(vec![Reply {
        body: "out of order sample for series vla_x",
        ..reply(400)
    }])
    .await;
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap();
    match vla_pipeline::fixtures::export_once(&exporter, &mixed_batch()).await {
        Err(ExportError::Permanent { reason, message }) => {
            assert_eq!(reason, "http_400");
            assert!(message.contains("400 Bad Request"), "{message}");
            assert!(
                message.contains("out of order sample for series vla_x"),
                "{message}"
            );
        }
        other => panic!("expected permanent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_retryable() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Config::with_endpoint(format!("http://127.0.0.1:{port}/api/v1/write"));
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &SelfMetrics::new())
            .unwrap();
    match vla_pipeline::fixtures::export_once(&exporter, &mixed_batch()).await {
        Err(ExportError::Retryable { reason, .. }) => assert_eq!(reason, "transport_error"),
        other => panic!("expected retryable, got {other:?}"),
    }
}

/// Runs `batches` through the shared driver (fast retries) until it has finished.
async fn through_driver(
    exporter: PrometheusRemoteWriteExporter,
    telemetry: &SelfMetrics,
    batches: Vec<MetricBatch>,
) {
    use vla_pipeline::driver::{DriverConfig, RetryPolicy, spawn_exporter};
    let config = DriverConfig {
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..DriverConfig::default()
    };
    let (handle, worker) = spawn_exporter(
        "prometheusremotewrite".into(),
        Arc::new(exporter),
        config,
        telemetry,
        CancellationToken::new(),
    );
    for b in batches {
        handle.enqueue(Arc::new(b)).await;
    }
    drop(handle);
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sends_only_the_request_that_failed_and_those_after_it() {
    // Request 1 succeeds, request 2 fails once; the driver's retry sends request 2 again,
    // then request 3: 11 samples in requests of 4, each delivered exactly once.
    let server = TestServer::start(vec![reply(204), reply(503)]).await;
    let telemetry = SelfMetrics::new();
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    c.max_samples_per_send = 4;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &telemetry).unwrap();
    through_driver(exporter, &telemetry, vec![mixed_batch()]).await;
    let received = server.received();
    assert_eq!(received.len(), 3, "one request per 4 samples, none twice");
    let mut series: Vec<String> = all_series_of(&received);
    let n = series.len();
    series.dedup();
    assert_eq!((n, series.len()), (11, 11), "no sample delivered twice");
    let id = ("exporter", "prometheusremotewrite");
    assert_eq!(
        telemetry.value("vla_collector_exporter_sent_data_points_total", &[id]),
        Some(4)
    );
    assert_eq!(
        telemetry.value("vla_collector_remote_write_samples_sent_total", &[id]),
        Some(11)
    );
}

/// Every received series as text, sorted.
fn all_series_of(received: &[(HeaderMap, WriteRequest)]) -> Vec<String> {
    let mut out: Vec<String> = received
        .iter()
        .flat_map(|(_, r)| r.timeseries.iter().map(|t| format!("{:?}", t.labels)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_stays_dropped_while_the_rest_of_the_batch_is_retried() {
    // Request 1 is refused (400), request 2 fails (503) once; the retry delivers 2 and 3. The
    // refused request's points are counted dropped, every other point sent.
    let server = TestServer::start(vec![
        Reply {
            body: "out of order sample",
            ..reply(400)
        },
        reply(503),
    ])
    .await;
    let telemetry = SelfMetrics::new();
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    c.max_samples_per_send = 4;
    let exporter =
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &telemetry).unwrap();
    let batch = mixed_batch();
    let points = batch.data_points() as i64;
    through_driver(exporter, &telemetry, vec![batch]).await;
    let delivered = server.received();
    assert_eq!(delivered.len(), 2, "requests 2 and 3, each delivered once");
    let delivered_samples: usize = delivered.iter().map(|(_, r)| r.timeseries.len()).sum();
    assert_eq!(delivered_samples, 7);
    let id = ("exporter", "prometheusremotewrite");
    let dropped = |reason: &str| {
        telemetry
            .value(
                "vla_collector_exporter_dropped_data_points_total",
                &[id, ("reason", reason)],
            )
            .unwrap_or(0)
    };
    let sent = telemetry
        .value("vla_collector_exporter_sent_data_points_total", &[id])
        .unwrap_or(0);
    let refused = dropped("http_400");
    assert!(
        refused > 0 && refused < points,
        "refused {refused} of {points}"
    );
    assert_eq!(sent + refused + dropped("delta_temporality"), points);
    assert_eq!(
        telemetry.value("vla_collector_remote_write_samples_refused_total", &[id]),
        Some(4)
    );
    assert_eq!(
        telemetry.value("vla_collector_remote_write_samples_sent_total", &[id]),
        Some(7)
    );
}

#[test]
fn prepared_requests_share_out_exactly_the_translated_points() {
    let mut c = Config::with_endpoint("http://127.0.0.1:1/api/v1/write");
    c.shards = 3;
    c.max_samples_per_send = 2;
    let mut encoder = BatchEncoder::new(&c);
    let encoded = encoder.encode(&mixed_batch()).unwrap();
    let translated = encoded.report.sent;
    let samples = encoded.samples;
    let prepared = encoded.into_prepared();
    let points: u64 = prepared.requests.iter().map(|r| r.points).sum();
    assert_eq!(points + prepared.done.sent, translated);
    assert_eq!(
        prepared.requests.iter().map(|r| r.samples).sum::<u64>(),
        samples
    );
    assert!(
        prepared
            .requests
            .iter()
            .all(|r| r.samples <= 2 && r.lane < 3)
    );
    assert_eq!(prepared.done.dropped, vec![("delta_temporality", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_retries_5xx_then_delivers_once_and_drops_400_counted() {
    use vla_pipeline::driver::{DriverConfig, RetryPolicy, spawn_exporter};

    let server = TestServer::start(vec![
        reply(503),
        reply(204),
        Reply {
            body: "bad",
            ..reply(400)
        },
    ])
    .await;
    let telemetry = SelfMetrics::new();
    let mut c = Config::with_endpoint(server.url());
    c.shards = 1;
    let exporter: Arc<dyn Exporter> = Arc::new(
        PrometheusRemoteWriteExporter::new("prometheusremotewrite".into(), &c, &telemetry).unwrap(),
    );
    let config = DriverConfig {
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..DriverConfig::default()
    };
    let (handle, worker) = spawn_exporter(
        "prometheusremotewrite".into(),
        exporter,
        config,
        &telemetry,
        CancellationToken::new(),
    );
    handle.enqueue(Arc::new(mixed_batch())).await;
    handle.enqueue(Arc::new(mixed_batch())).await;
    drop(handle);
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    let received = server.received();
    assert_eq!(received.len(), 1, "the first batch arrives exactly once");
    assert_eq!(received[0].1.timeseries.len(), 11);
    let v = |name: &str, labels: &[(&str, &str)]| telemetry.value(name, labels);
    let id = ("exporter", "prometheusremotewrite");
    assert_eq!(
        v(
            "vla_collector_exporter_dropped_data_points_total",
            &[id, ("reason", "http_400")]
        ),
        Some(4),
        "the refused request carried the second batch's 4 translated points"
    );
    assert_eq!(
        v(
            "vla_collector_exporter_dropped_data_points_total",
            &[id, ("reason", "delta_temporality")]
        ),
        Some(4),
        "each batch's 2 delta points, dropped while preparing"
    );
    assert_eq!(
        v("vla_collector_exporter_sent_data_points_total", &[id]),
        Some(4)
    );
    assert_eq!(
        v(
            "vla_collector_exporter_failed_attempts_total",
            &[id, ("reason", "http_5xx")]
        ),
        Some(1)
    );
    assert_eq!(
        v(
            "vla_collector_remote_write_requests_total",
            &[id, ("status", "4xx")]
        ),
        Some(1)
    );
}

mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use vla_pipeline::{MetricBatch, fixtures};

    use super::{encode_decode, timed_gauge};

    /// Label names the translator keeps as they are (it collapses runs of underscores and
    /// trims a trailing one, so neither is generated here).
    fn label_name() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9]|_[a-z0-9]){0,5}".prop_filter("reserved", |n| {
            !matches!(n.as_str(), "job" | "instance" | "le" | "quantile")
        })
    }

    #[derive(Debug, Clone)]
    struct Point {
        attrs: BTreeMap<String, String>,
        value: f64,
        ms: i64,
    }

    fn point() -> impl Strategy<Value = Point> {
        (
            prop::collection::btree_map(label_name(), "\\PC{1,8}", 0..4),
            prop::num::f64::ANY,
            1_600_000_000_000i64..1_900_000_000_000,
        )
            .prop_map(|(attrs, value, ms)| Point { attrs, value, ms })
    }

    fn batch(points: &[Point]) -> MetricBatch {
        timed_gauge(
            "prop.gauge",
            points.iter().map(|p| {
                let attrs = p.attrs.iter().map(|(k, v)| fixtures::kv(k, v)).collect();
                (attrs, p.ms, p.value)
            }),
        )
    }

    /// (labels, value bits, timestamp) as the encoder must deliver them.
    type Row = (Vec<(String, String)>, u64, i64);

    fn expected(p: &Point) -> Row {
        let mut labels: Vec<(String, String)> = p
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.push(("__name__".into(), "prop_gauge".into()));
        labels.push(("job".into(), "api".into()));
        labels.sort();
        let value = if p.value.is_nan() { f64::NAN } else { p.value };
        (labels, value.to_bits(), p.ms)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Encoding then decoding gives back every sample exactly (labels sorted and unique,
        /// value bits, millisecond timestamps), each series in time order, every request
        /// within max_samples_per_send, whatever the shards, sizes and point order.
        #[test]
        fn encode_then_decode_is_the_identity(
            points in prop::collection::vec(point(), 0..40),
            shards in 1usize..4,
            max in 1usize..6,
        ) {
            let shards_out = encode_decode(&batch(&points), shards, max);
            let mut got: Vec<Row> = Vec::new();
            let mut last_per_series: BTreeMap<Vec<(String, String)>, i64> = BTreeMap::new();
            for shard in &shards_out {
                for req in shard {
                    prop_assert!(req.timeseries.len() <= max);
                    for ts in &req.timeseries {
                        let labels: Vec<(String, String)> = ts
                            .labels
                            .iter()
                            .map(|l| (l.name.clone(), l.value.clone()))
                            .collect();
                        let mut sorted = labels.clone();
                        sorted.sort();
                        sorted.dedup_by(|a, b| a.0 == b.0);
                        prop_assert_eq!(&sorted, &labels, "labels sorted and unique");
                        prop_assert_eq!(ts.samples.len(), 1);
                        let s = &ts.samples[0];
                        let last = last_per_series.entry(labels.clone()).or_insert(i64::MIN);
                        prop_assert!(s.timestamp >= *last, "a series goes back in time");
                        *last = s.timestamp;
                        got.push((labels, s.value.to_bits(), s.timestamp));
                    }
                }
            }
            let mut want: Vec<Row> = points.iter().map(expected).collect();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}

/// Series that each move forward keep their arrival order even when their timestamps
/// interleave (two clients batched together); a series that goes back in time gets its
/// shard sorted by time.
#[test]
fn only_a_series_going_back_in_time_reorders_its_shard() {
    let batch = |points: &[(&str, i64)]| {
        timed_gauge(
            "order.gauge",
            points
                .iter()
                .map(|&(client, ms)| (fixtures::attrs(&[("client", client)]), ms, ms as f64)),
        )
    };
    let order = |points: &[(&str, i64)]| -> Vec<(String, i64)> {
        encode_decode(&batch(points), 1, 100)
            .iter()
            .flatten()
            .flat_map(|r| r.timeseries.iter())
            .map(|ts| {
                let client = ts.labels.iter().find(|l| l.name == "client").unwrap();
                (client.value.clone(), ts.samples[0].timestamp)
            })
            .collect()
    };
    let own = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
        v.iter().map(|(c, t)| (c.to_string(), *t)).collect()
    };
    // b's samples are older than a's but each series moves forward: arrival order kept.
    let interleaved = [("a", 2000), ("b", 1000), ("a", 3000), ("b", 1500)];
    assert_eq!(order(&interleaved), own(&interleaved));
    // a goes back in time: the shard is sorted by timestamp (stable for equal ones).
    let back = [("a", 3000), ("b", 1000), ("a", 2000)];
    assert_eq!(order(&back), own(&[("b", 1000), ("a", 2000), ("a", 3000)]));
}

#[test]
fn a_series_that_stops_gets_one_stale_marker_never_older_than_its_last_sample() {
    use std::time::{Duration, SystemTime};
    let mut config = Config::with_endpoint("http://127.0.0.1:9090/api/v1/write");
    config.stale_after = Some(Duration::from_secs(60));
    config.target_info.enabled = false;
    config.disable_scope_info = true;
    let mut enc = BatchEncoder::new(&config);
    let gauges = |names: &[&str], ts_ms: u64| {
        let points: Vec<(f64, &[(&str, &str)])> = vec![(1.0, &[])];
        let metrics = names
            .iter()
            .map(|n| {
                let mut m = fixtures::gauge(n, "", &points);
                if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) =
                    &mut m.data
                {
                    g.data_points[0].time_unix_nano = ts_ms * 1_000_000;
                }
                m
            })
            .collect();
        MetricBatch::new("otlp".into(), vec![fixtures::resource("svc", metrics)])
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let decoded = |e: &EncodedBatch| -> Vec<(String, f64, i64)> {
        let mut out = Vec::new();
        for r in e.shards.iter().flatten() {
            let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
            for ts in WriteRequest::decode(&raw[..]).unwrap().timeseries {
                let name = ts
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .unwrap()
                    .value
                    .clone();
                for s in ts.samples {
                    out.push((name.clone(), s.value, s.timestamp));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let first = enc.encode_at(&gauges(&["a", "b"], ms(t0)), t0).unwrap();
    assert_eq!(decoded(&first).len(), 2);
    // 30 s later only `a` reports: too soon for a marker.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(
        decoded(&enc.encode_at(&gauges(&["a"], ms(t1)), t1).unwrap()).len(),
        1
    );
    // 70 s after `b`'s last sample: one marker for `b`, 1 ms after that sample.
    let t2 = t0 + Duration::from_secs(70);
    let out = decoded(&enc.encode_at(&gauges(&["a"], ms(t2)), t2).unwrap());
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].0, "b");
    assert_eq!(out[1].1.to_bits(), crate::translate::STALE_NAN_BITS);
    assert_eq!(out[1].2, ms(t0) as i64 + 1);
    // Once only.
    let t3 = t0 + Duration::from_secs(200);
    let out = decoded(&enc.encode_at(&gauges(&["c"], ms(t3)), t3).unwrap());
    assert_eq!(
        out.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
        vec!["a", "c"],
        "a marker for a, none again for b"
    );
    // A series whose samples carry a timestamp ahead of the collector's clock gets its
    // marker right after its last sample too (never before: that would be out of order).
    let ahead = ms(t3) + 600_000;
    let t4 = t3 + Duration::from_secs(10);
    enc.encode_at(&gauges(&["d"], ahead), t4).unwrap();
    let t5 = t4 + Duration::from_secs(120);
    let out = decoded(&enc.encode_at(&gauges(&["e"], ms(t5)), t5).unwrap());
    let d = out.iter().find(|o| o.0 == "d").expect("marker for d");
    assert_eq!(d.2, ahead as i64 + 1);
    // Off by default: nothing remembered.
    let mut plain = BatchEncoder::new(&Config::with_endpoint("http://127.0.0.1:9090/api/v1/write"));
    plain.encode(&gauges(&["a"], ms(t0))).unwrap();
    assert!(!plain.encoder.tracks_staleness());
}

/// A batch still encoded (translated from its bytes, its series keyed by encoded attributes)
/// gives the request bodies of its decode byte for byte: on the first pass, where every
/// series is new to the encoder's cache, and on the second, where every one is cached.
#[test]
fn an_encoded_batch_writes_the_bodies_of_its_decode() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    let request = ExportMetricsServiceRequest {
        resource_metrics: mixed_batch().into_resource_metrics(),
    }
    .encode_to_vec();
    let encoded = MetricBatch::from_request("otlp".into(), request.into()).unwrap();
    assert!(encoded.is_encoded());
    let decoded = MetricBatch::new("otlp".into(), encoded.resource_metrics().to_vec())
        .with_received_at(encoded.meta().received_at);
    let bodies = |batch: &MetricBatch| {
        let mut translator = Translator::new(TranslateOptions::default());
        let mut encoder = encode::ShardedEncoder::new(4, 3);
        let mut passes = Vec::new();
        for _ in 0..2 {
            encoder.reset();
            translator.translate(batch, &mut encoder);
            encoder.finish();
            let shards: Vec<Vec<Vec<u8>>> = encoder
                .shards()
                .iter()
                .map(|s| s.filled().iter().map(|r| r.body.clone()).collect())
                .collect();
            passes.push(shards);
        }
        passes
    };
    let from_bytes = bodies(&encoded);
    assert!(from_bytes[0].iter().flatten().count() > 1);
    assert_eq!(from_bytes, bodies(&decoded));
}
