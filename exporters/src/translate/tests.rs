use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};
use vla_pipeline::MetricBatch;
use vla_pipeline::fixtures::{self, T0_NANOS};

use super::*;

#[test]
fn metric_names_table() {
    use PromType::*;
    let cases: &[(&str, &str, PromType, Option<&str>, &str)] = &[
        // The seed's names.
        (
            "vla.inference.requests",
            "",
            Counter,
            None,
            "vla_inference_requests_total",
        ),
        (
            "vla.inference.requests",
            "{request}",
            Counter,
            None,
            "vla_inference_requests_total",
        ),
        (
            "vla.inference.duration",
            "s",
            Histogram,
            None,
            "vla_inference_duration_seconds",
        ),
        (
            "vla.gpu.temperature",
            "Cel",
            Gauge,
            None,
            "vla_gpu_temperature_celsius",
        ),
        (
            "vla.gpu.utilization",
            "%",
            Gauge,
            None,
            "vla_gpu_utilization_percent",
        ),
        (
            "vla.gpu.memory.used",
            "By",
            Gauge,
            None,
            "vla_gpu_memory_used_bytes",
        ),
        ("vla.cache.hit", "1", Gauge, None, "vla_cache_hit_ratio"),
        // `1` is `ratio` for gauges only.
        ("vla.cache.hits", "1", Counter, None, "vla_cache_hits_total"),
        ("vla.batch.size", "1", Histogram, None, "vla_batch_size"),
        // Units.
        (
            "rpc.latency",
            "ms",
            Histogram,
            None,
            "rpc_latency_milliseconds",
        ),
        ("rpc.latency", "us", Gauge, None, "rpc_latency_microseconds"),
        ("rpc.latency", "ns", Gauge, None, "rpc_latency_nanoseconds"),
        ("uptime", "min", Gauge, None, "uptime_minutes"),
        ("uptime", "h", Gauge, None, "uptime_hours"),
        ("uptime", "d", Gauge, None, "uptime_days"),
        ("mem", "KiBy", Gauge, None, "mem_kibibytes"),
        ("mem", "MiBy", Gauge, None, "mem_mebibytes"),
        ("mem", "GiBy", Gauge, None, "mem_gibibytes"),
        ("mem", "KBy", Gauge, None, "mem_kilobytes"),
        ("mem", "MBy", Gauge, None, "mem_megabytes"),
        ("mem", "GBy", Gauge, None, "mem_gigabytes"),
        ("distance", "m", Gauge, None, "distance_meters"),
        ("psu", "V", Gauge, None, "psu_volts"),
        ("psu", "A", Gauge, None, "psu_amperes"),
        ("energy", "J", Counter, None, "energy_joules_total"),
        ("gpu.power", "W", Gauge, None, "gpu_power_watts"),
        ("weight", "g", Gauge, None, "weight_grams"),
        ("clock", "Hz", Gauge, None, "clock_hertz"),
        ("cost", "$", Counter, None, "cost_dollars_total"),
        ("speed", "m/s", Gauge, None, "speed_meters_per_second"),
        ("net.io", "By/s", Gauge, None, "net_io_bytes_per_second"),
        (
            "tokens.rate",
            "{token}/s",
            Gauge,
            None,
            "tokens_rate_per_second",
        ),
        (
            "tokens.rate",
            "{token}/min",
            Gauge,
            None,
            "tokens_rate_per_min",
        ),
        (
            "net.dropped",
            "{packets}",
            Counter,
            None,
            "net_dropped_total",
        ),
        (
            "net.dropped",
            "packets",
            Counter,
            None,
            "net_dropped_packets_total",
        ),
        ("weird", "foo bar", Gauge, None, "weird_foo_bar"),
        // No duplicate unit suffix.
        (
            "http.duration.seconds",
            "s",
            Histogram,
            None,
            "http_duration_seconds",
        ),
        (
            "vla.gpu.memory.used_bytes",
            "By",
            Gauge,
            None,
            "vla_gpu_memory_used_bytes",
        ),
        (
            "speed_meters_per_second",
            "m/s",
            Gauge,
            None,
            "speed_meters_per_second",
        ),
        // `_total` comes after the unit; a `_total` already there is moved.
        ("requests_total", "", Counter, None, "requests_total"),
        ("io.total", "By", Counter, None, "io_bytes_total"),
        ("requests.total", "", Gauge, None, "requests_total"),
        // Sanitising.
        (
            "(lambda).function.executions(#)",
            "",
            Gauge,
            None,
            "lambda_function_executions",
        ),
        ("a..b__c", "", Gauge, None, "a_b_c"),
        ("job:rate5m", "", Gauge, None, "job:rate5m"),
        ("2xx.count", "", Counter, None, "_2xx_count_total"),
        ("température", "", Gauge, None, "temp_rature"),
        ("...", "", Gauge, None, "_"),
        // Namespace.
        (
            "vla.inference.requests",
            "",
            Counter,
            Some("edge"),
            "edge_vla_inference_requests_total",
        ),
        ("2xx", "", Gauge, Some("ns"), "ns_2xx"),
    ];
    for (name, unit, ty, ns, want) in cases {
        assert_eq!(
            metric_name(name, unit, *ty, *ns),
            *want,
            "{name:?} unit {unit:?} {ty:?} ns {ns:?}"
        );
    }
}

#[test]
fn unit_suffix_table() {
    assert_eq!(
        unit_suffix("s", PromType::Gauge).as_deref(),
        Some("seconds")
    );
    assert_eq!(unit_suffix("1", PromType::Gauge).as_deref(), Some("ratio"));
    assert_eq!(unit_suffix("1", PromType::Counter), None);
    assert_eq!(unit_suffix("{req}", PromType::Counter), None);
    assert_eq!(unit_suffix("", PromType::Gauge), None);
    assert_eq!(
        unit_suffix("By/s", PromType::Counter).as_deref(),
        Some("bytes_per_second")
    );
}

#[test]
fn label_names_table() {
    let cases = [
        ("model", "model"),
        ("customer_tier", "customer_tier"),
        ("http.request.method", "http_request_method"),
        ("gpu-id", "gpu_id"),
        ("a..b", "a_b"),
        ("2cents", "key_2cents"),
        ("2 cents", "key_2_cents"),
        ("_private", "_private"),
        ("__name__", "_name_"),
        ("__reserved", "_reserved"),
        ("ünïcode", "_n_code"),
        ("", ""),
    ];
    for (key, want) in cases {
        assert_eq!(sanitize_label_name(key), want, "{key:?}");
    }
    assert!(is_valid_label_name("a_1"));
    assert!(!is_valid_label_name("1a"));
    assert!(!is_valid_label_name("a:b"));
    assert!(is_valid_metric_name("a:b"));
    assert!(!is_valid_metric_name(""));
}

/// A sample as `(all labels incl. __name__, value, timestamp)`.
type Row = (Vec<(String, String)>, f64, i64);

/// Every sample, and every family in order of appearance.
#[derive(Default)]
struct Collect(Vec<Row>, Vec<(String, PromType)>);

impl SampleSink for Collect {
    fn sample(&mut self, s: &Sample<'_>) {
        let mut labels = Vec::new();
        s.for_each_label(|n, v| labels.push((n.to_owned(), v.to_owned())));
        self.0.push((labels, s.value, s.timestamp_ms));
        if self.1.last().is_none_or(|(n, _)| n != s.family.name) {
            self.1.push((s.family.name.to_owned(), s.family.ty));
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const T0_MS: i64 = (T0_NANOS / 1_000_000) as i64;

fn translate(
    options: TranslateOptions,
    rms: Vec<opentelemetry_proto::tonic::metrics::v1::ResourceMetrics>,
) -> (Collect, TranslateStats) {
    let batch = MetricBatch::new("otlp".into(), rms);
    let mut t = Translator::new(options);
    let mut sink = Collect::default();
    let stats = t.translate(&batch, &mut sink);
    (sink, stats)
}

#[test]
fn unit_one_is_ratio_on_gauges_only() {
    let (sink, _) = translate(
        TranslateOptions::default(),
        vec![fixtures::resource(
            "api",
            vec![
                fixtures::gauge("vla.cache.hit", "1", &[(0.5, &[])]),
                fixtures::cumulative_sum("vla.inference.queue.depth", "1", false, &[(7.0, &[])]),
                fixtures::cumulative_sum("vla.retries", "1", true, &[(3.0, &[])]),
            ],
        )],
    );
    assert_eq!(
        sink.1,
        vec![
            ("vla_cache_hit_ratio".to_owned(), PromType::Gauge),
            ("vla_inference_queue_depth".to_owned(), PromType::Gauge),
            ("vla_retries_total".to_owned(), PromType::Counter),
        ]
    );
}

#[test]
fn job_instance_scope_and_target_info() {
    let rm = fixtures::resource_with(
        &[
            ("service.name", "vla-api"),
            ("service.namespace", "prod"),
            ("service.instance.id", "pod-1"),
            ("host.name", "node-a"),
            ("deployment.environment", "eu"),
        ],
        vec![fixtures::gauge(
            "vla.gpu.temperature",
            "Cel",
            &[(71.5, &[("gpu.id", "0"), ("job", "ignored")])],
        )],
    );
    let (sink, stats) = translate(TranslateOptions::default(), vec![rm]);
    assert_eq!(stats.points, 1);
    assert_eq!(stats.samples, 2);
    assert_eq!(
        sink.0,
        vec![
            (
                labels(&[
                    ("__name__", "vla_gpu_temperature_celsius"),
                    ("gpu_id", "0"),
                    ("instance", "pod-1"),
                    ("job", "prod/vla-api"),
                    ("otel_scope_name", "vla-test"),
                    ("otel_scope_version", "1.0"),
                ]),
                71.5,
                T0_MS
            ),
            (
                labels(&[
                    ("__name__", "target_info"),
                    ("deployment_environment", "eu"),
                    ("host_name", "node-a"),
                    ("instance", "pod-1"),
                    ("job", "prod/vla-api"),
                ]),
                1.0,
                T0_MS
            ),
        ]
    );
    assert_eq!(
        sink.1,
        vec![
            ("vla_gpu_temperature_celsius".to_owned(), PromType::Gauge),
            ("target_info".to_owned(), PromType::Gauge)
        ]
    );
}

#[test]
fn no_target_info_without_extra_resource_attributes_or_when_disabled() {
    let only_service = fixtures::resource("api", vec![fixtures::gauge("g", "", &[(1.0, &[])])]);
    let (sink, _) = translate(TranslateOptions::default(), vec![only_service]);
    assert_eq!(sink.0.len(), 1);
    assert_eq!(
        sink.0[0].0,
        labels(&[
            ("__name__", "g"),
            ("job", "api"),
            ("otel_scope_name", "vla-test"),
            ("otel_scope_version", "1.0")
        ])
    );

    let rich = fixtures::resource_with(
        &[("service.name", "api"), ("host.name", "h")],
        vec![fixtures::gauge("g", "", &[(1.0, &[])])],
    );
    let options = TranslateOptions {
        target_info: false,
        scope_info: false,
        ..TranslateOptions::default()
    };
    let (sink, _) = translate(options, vec![rich]);
    assert_eq!(sink.0.len(), 1);
    assert_eq!(sink.0[0].0, labels(&[("__name__", "g"), ("job", "api")]));
}

#[test]
fn attribute_collisions_join_values_in_key_order() {
    let rm = fixtures::resource(
        "api",
        vec![fixtures::gauge(
            "g",
            "",
            &[(
                1.0,
                &[
                    ("b.c", "dot"),
                    ("b_c", "underscore"),
                    ("b-c", "dash"),
                    ("a", "x"),
                ],
            )],
        )],
    );
    let options = TranslateOptions {
        scope_info: false,
        target_info: false,
        ..TranslateOptions::default()
    };
    let (sink, _) = translate(options, vec![rm]);
    // Original keys sorted: "b-c" < "b.c" < "b_c".
    assert_eq!(
        sink.0[0].0,
        labels(&[
            ("__name__", "g"),
            ("a", "x"),
            ("b_c", "dash;dot;underscore"),
            ("job", "api"),
        ])
    );
}

#[test]
fn external_labels_never_override_and_non_string_values_render() {
    let mut g = fixtures::gauge("g", "", &[(1.0, &[("region", "own")])]);
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut g.data {
        let p = &mut g.data_points[0];
        for (k, v) in [
            ("int", any_value::Value::IntValue(-42)),
            ("dbl", any_value::Value::DoubleValue(0.25)),
            ("flag", any_value::Value::BoolValue(true)),
            ("raw", any_value::Value::BytesValue(b"hi!".to_vec())),
            ("empty", any_value::Value::StringValue(String::new())),
        ] {
            p.attributes.push(KeyValue {
                key: k.into(),
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            });
        }
    }
    let options = TranslateOptions {
        extra_labels: vec![
            ("region".into(), "ext".into()),
            ("cluster".into(), "c1".into()),
        ],
        scope_info: false,
        target_info: false,
        ..TranslateOptions::default()
    };
    let (sink, _) = translate(options, vec![fixtures::resource("api", vec![g])]);
    assert_eq!(
        sink.0[0].0,
        labels(&[
            ("__name__", "g"),
            ("cluster", "c1"),
            ("dbl", "0.25"),
            ("flag", "true"),
            ("int", "-42"),
            ("job", "api"),
            ("raw", "aGkh"),
            ("region", "own"),
        ])
    );
}

#[test]
fn histogram_summary_sum_kinds_and_drops() {
    let options = TranslateOptions {
        scope_info: false,
        target_info: false,
        ..TranslateOptions::default()
    };
    let rm = fixtures::resource(
        "api",
        vec![
            fixtures::histogram(
                "vla.inference.duration",
                "s",
                &[0.1, 0.5, 1.0],
                &[2, 3, 4, 1],
                4.2,
                &[("model", "m1"), ("le", "attr")],
            ),
            fixtures::summary("rpc", "ms", &[(0.5, 3.0), (0.99, 9.0)], 10, 40.0, &[]),
            fixtures::cumulative_sum("vla.inference.requests", "", true, &[(7.0, &[])]),
            fixtures::cumulative_sum("queue.depth", "", false, &[(3.0, &[])]),
            fixtures::delta_sum("delta.requests", "", true, &[(1.0, &[]), (2.0, &[])]),
            fixtures::histogram_with(
                "delta.hist",
                "s",
                AggregationTemporality::Delta,
                &[1.0],
                &[1, 1],
                1.0,
                &[],
            ),
        ],
    );
    let (sink, stats) = translate(options, vec![rm]);
    let got: Vec<(String, Option<String>, f64)> = sink
        .0
        .iter()
        .map(|(l, v, _)| {
            let name = l[0].1.clone();
            let extra = l
                .iter()
                .find(|(n, _)| n == "le" || n == "quantile")
                .map(|(n, v)| format!("{n}={v}"));
            (name, extra, *v)
        })
        .collect();
    let s = |n: &str, e: Option<&str>, v: f64| (n.to_owned(), e.map(str::to_owned), v);
    assert_eq!(
        got,
        vec![
            s("vla_inference_duration_seconds_bucket", Some("le=0.1"), 2.0),
            s("vla_inference_duration_seconds_bucket", Some("le=0.5"), 5.0),
            s("vla_inference_duration_seconds_bucket", Some("le=1"), 9.0),
            s(
                "vla_inference_duration_seconds_bucket",
                Some("le=+Inf"),
                10.0
            ),
            s("vla_inference_duration_seconds_sum", Some("le=attr"), 4.2),
            s(
                "vla_inference_duration_seconds_count",
                Some("le=attr"),
                10.0
            ),
            s("rpc_milliseconds", Some("quantile=0.5"), 3.0),
            s("rpc_milliseconds", Some("quantile=0.99"), 9.0),
            s("rpc_milliseconds_sum", None, 40.0),
            s("rpc_milliseconds_count", None, 10.0),
            s("vla_inference_requests_total", None, 7.0),
            s("queue_depth", None, 3.0),
        ]
    );
    // The bucket's own `le` replaced the attribute; labels stay sorted and unique.
    assert_eq!(
        sink.0[0].0,
        labels(&[
            ("__name__", "vla_inference_duration_seconds_bucket"),
            ("job", "api"),
            ("le", "0.1"),
            ("model", "m1"),
        ])
    );
    assert_eq!(
        sink.1
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect::<Vec<_>>(),
        vec![
            ("vla_inference_duration_seconds", PromType::Histogram),
            ("rpc_milliseconds", PromType::Summary),
            ("vla_inference_requests_total", PromType::Counter),
            ("queue_depth", PromType::Gauge),
        ]
    );
    assert_eq!(stats.points, 4);
    assert_eq!(stats.samples, 12);
    assert_eq!(stats.dropped, vec![(DROP_DELTA, 3)]);
}

#[test]
fn no_recorded_value_becomes_stale_marker() {
    let mut g = fixtures::gauge("g", "", &[(5.0, &[])]);
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut g.data {
        g.data_points[0].flags = 1;
    }
    let mut h = fixtures::histogram("h", "", &[1.0], &[1, 1], 2.0, &[]);
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) = &mut h.data {
        h.data_points[0].flags = 1;
    }
    let (sink, _) = translate(
        TranslateOptions::default(),
        vec![fixtures::resource("api", vec![g, h])],
    );
    assert_eq!(sink.0.len(), 5);
    for (l, v, _) in &sink.0 {
        assert_eq!(v.to_bits(), STALE_NAN_BITS, "{l:?}");
    }
}

#[test]
fn names_are_cached_and_stable_across_batches() {
    let batch = Arc::new(MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![fixtures::gauge("a.b", "By", &[(1.0, &[("k.1", "v")])])],
        )],
    ));
    let mut t = Translator::new(TranslateOptions::default());
    let mut first = Collect::default();
    t.translate(&batch, &mut first);
    let mut second = Collect::default();
    t.translate(&batch, &mut second);
    assert_eq!(first.0, second.0);
    assert_eq!(first.0[0].0[0].1, "a_b_bytes");
    assert_eq!(first.0[0].0[2], ("k_1".to_owned(), "v".to_owned()));
}

/// Options without scope labels and `target_info`, so collision tests see only their metrics.
fn bare() -> TranslateOptions {
    TranslateOptions {
        scope_info: false,
        target_info: false,
        ..TranslateOptions::default()
    }
}

/// The `__name__` of every sample.
fn sample_names(sink: &Collect) -> Vec<String> {
    sink.0.iter().map(|(l, _, _)| l[0].1.clone()).collect()
}

fn identity(name: &str, unit: &str, ty: PromType) -> MetricIdentity {
    MetricIdentity {
        name: name.into(),
        unit: unit.into(),
        ty,
    }
}

#[test]
fn gauge_after_histogram_of_the_same_name_is_dropped_whole() {
    let (sink, stats) = translate(
        bare(),
        vec![fixtures::resource(
            "a",
            vec![
                fixtures::histogram("x", "", &[1.0], &[1, 2], 3.0, &[]),
                fixtures::gauge("x", "", &[(1.0, &[]), (2.0, &[("k", "v")])]),
            ],
        )],
    );
    assert_eq!(sink.1, vec![("x".to_owned(), PromType::Histogram)]);
    assert_eq!(
        sample_names(&sink),
        ["x_bucket", "x_bucket", "x_sum", "x_count"]
    );
    assert_eq!(stats.points, 1);
    assert_eq!(stats.samples, 4);
    assert_eq!(stats.dropped, vec![(DROP_NAME_COLLISION, 2)]);
    let c = stats.collision.as_deref().unwrap();
    assert_eq!(&*c.prometheus_name, "x");
    assert_eq!(c.dropped, identity("x", "", PromType::Gauge));
    assert_eq!(
        *c.kept,
        Claimant::Metric(identity("x", "", PromType::Histogram))
    );
}

#[test]
fn overlapping_names_collide_and_the_first_keeps_the_name() {
    type Case = (&'static str, Vec<Metric>, &'static str, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "y and y.total are both y_total",
            vec![
                fixtures::cumulative_sum("y", "", true, &[(1.0, &[])]),
                fixtures::cumulative_sum("y.total", "", true, &[(2.0, &[])]),
            ],
            "y_total",
            vec!["y_total"],
        ),
        (
            "a.seconds and a with unit s are both a_seconds",
            vec![
                fixtures::gauge("a.seconds", "s", &[(1.0, &[])]),
                fixtures::gauge("a", "s", &[(2.0, &[])]),
            ],
            "a_seconds",
            vec!["a_seconds"],
        ),
        (
            "a plain name equal to a histogram's derived name",
            vec![
                fixtures::histogram("x", "", &[], &[2], 3.0, &[]),
                fixtures::gauge("x_count", "", &[(1.0, &[])]),
            ],
            "x_count",
            vec!["x_bucket", "x_sum", "x_count"],
        ),
        (
            "a histogram whose derived name is already a gauge",
            vec![
                fixtures::gauge("x_sum", "", &[(1.0, &[])]),
                fixtures::histogram("x", "", &[], &[2], 3.0, &[]),
            ],
            "x_sum",
            vec!["x_sum"],
        ),
        (
            "a summary and a histogram of one name",
            vec![
                fixtures::summary("r", "", &[(0.5, 1.0)], 2, 3.0, &[]),
                fixtures::histogram("r", "", &[], &[2], 3.0, &[]),
            ],
            "r",
            vec!["r", "r_sum", "r_count"],
        ),
    ];
    for (what, metrics, name, kept) in cases {
        let second = metrics[1].name.clone();
        let (sink, stats) = translate(bare(), vec![fixtures::resource("a", metrics)]);
        assert_eq!(sample_names(&sink), kept, "{what}");
        assert_eq!(stats.dropped, vec![(DROP_NAME_COLLISION, 1)], "{what}");
        let c = stats.collision.as_deref().unwrap();
        assert_eq!(&*c.prometheus_name, name, "{what}");
        assert_eq!(&*c.dropped.name, second, "{what}");
    }
}

#[test]
fn the_same_metric_from_two_resources_and_scopes_is_one_family() {
    let mut two_scopes = fixtures::resource(
        "b",
        vec![fixtures::histogram("x", "s", &[], &[1], 1.0, &[])],
    );
    let mut other_scope = two_scopes.scope_metrics[0].clone();
    if let Some(scope) = &mut other_scope.scope {
        scope.name = "other".to_owned();
    }
    two_scopes.scope_metrics.push(other_scope);
    let (sink, stats) = translate(
        TranslateOptions::default(),
        vec![
            fixtures::resource(
                "a",
                vec![fixtures::histogram("x", "s", &[], &[1], 1.0, &[])],
            ),
            two_scopes,
        ],
    );
    assert_eq!(stats.points, 3);
    assert!(stats.dropped.is_empty(), "{:?}", stats.dropped);
    assert_eq!(stats.collision, None);
    let jobs: Vec<(String, String)> = sink
        .0
        .iter()
        .filter(|(l, _, _)| l[0].1 == "x_seconds_count")
        .map(|(l, _, _)| {
            let get = |k: &str| l.iter().find(|(n, _)| n == k).unwrap().1.clone();
            (get("job"), get("otel_scope_name"))
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("a".to_owned(), "vla-test".to_owned()),
            ("b".to_owned(), "vla-test".to_owned()),
            ("b".to_owned(), "other".to_owned()),
        ]
    );
}

#[test]
fn a_claim_persists_across_batches() {
    let first = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "a",
            vec![fixtures::histogram("x", "", &[], &[1], 1.0, &[])],
        )],
    );
    let second = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "a",
            vec![fixtures::gauge("x", "", &[(5.0, &[])])],
        )],
    );
    let mut t = Translator::new(bare());
    let stats = t.translate(&first, &mut Collect::default());
    assert!(stats.dropped.is_empty());
    // Every later batch: the gauge stays dropped, the histogram keeps its name.
    for _ in 0..2 {
        let mut sink = Collect::default();
        let stats = t.translate(&second, &mut sink);
        assert!(sink.0.is_empty(), "{:?}", sink.0);
        assert_eq!(stats.dropped, vec![(DROP_NAME_COLLISION, 1)]);
        assert_eq!(stats.points, 0);
        let stats = t.translate(&first, &mut sink);
        assert!(stats.dropped.is_empty());
        assert_eq!(sample_names(&sink), ["x_bucket", "x_sum", "x_count"]);
    }
    // Another translator (a fresh claim map) keeps whichever came first.
    let mut fresh = Translator::new(bare());
    let mut sink = Collect::default();
    assert!(fresh.translate(&second, &mut sink).dropped.is_empty());
    assert_eq!(sample_names(&sink), ["x"]);
}

#[test]
fn target_info_is_reserved_while_emitted() {
    let rm = || {
        fixtures::resource_with(
            &[("service.name", "a"), ("host.name", "h")],
            vec![fixtures::gauge("target.info", "", &[(7.0, &[])])],
        )
    };
    let (sink, stats) = translate(TranslateOptions::default(), vec![rm()]);
    assert_eq!(stats.dropped, vec![(DROP_NAME_COLLISION, 1)]);
    assert_eq!(
        sink.0.iter().map(|(_, v, _)| *v).collect::<Vec<_>>(),
        [1.0],
        "only the real target_info"
    );
    let c = stats.collision.as_deref().unwrap();
    assert_eq!(&*c.prometheus_name, "target_info");
    assert_eq!(*c.kept, Claimant::TargetInfo);
    // With a namespace the reserved name follows it.
    let (_, stats) = translate(
        TranslateOptions {
            namespace: Some("vla".into()),
            ..TranslateOptions::default()
        },
        vec![fixtures::resource_with(
            &[("service.name", "a")],
            vec![fixtures::histogram("target_info", "", &[], &[1], 1.0, &[])],
        )],
    );
    assert_eq!(stats.dropped, vec![(DROP_NAME_COLLISION, 1)]);
    // Without target_info the name is free.
    let (sink, stats) = translate(bare(), vec![rm()]);
    assert!(stats.dropped.is_empty());
    assert_eq!(sample_names(&sink), ["target_info"]);
}

#[test]
fn claims_are_bounded_by_the_name_cache() {
    let mut t = Translator::new(bare());
    let hist = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "a",
            vec![fixtures::histogram("x", "", &[], &[1], 1.0, &[])],
        )],
    );
    let gauge = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "a",
            vec![fixtures::gauge("x", "", &[(5.0, &[])])],
        )],
    );
    t.translate(&hist, &mut Collect::default());
    assert_eq!(
        t.translate(&gauge, &mut Collect::default()).dropped,
        vec![(DROP_NAME_COLLISION, 1)]
    );
    // Filling the name cache clears it and the claims together.
    let names: Vec<String> = (0..16_384).map(|i| format!("m{i}")).collect();
    let filler = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "a",
            names
                .iter()
                .map(|n| fixtures::gauge(n, "", &[(1.0, &[])]))
                .collect(),
        )],
    );
    assert!(
        t.translate(&filler, &mut Collect::default())
            .dropped
            .is_empty()
    );
    let mut sink = Collect::default();
    assert!(t.translate(&gauge, &mut sink).dropped.is_empty());
    assert_eq!(sample_names(&sink), ["x"]);
}

/// A sink with a series cache, as the remote-write encoder keeps one: it remembers the
/// shared labels of every point key it is told about and answers later points with them.
/// A sample as `(all labels incl. __name__, value bits, timestamp)`, so NaNs compare.
type BitsRow = (Vec<(String, String)>, u64, i64);

#[derive(Default)]
struct CachingCollect {
    rows: Vec<BitsRow>,
    families: Vec<(String, PromType)>,
    known: std::collections::HashMap<Vec<u8>, Vec<(String, String)>>,
    pending: Option<(Vec<u8>, u64)>,
    hit: Option<(u64, Vec<(String, String)>)>,
    hits: usize,
}

impl SampleSink for CachingCollect {
    fn sample(&mut self, s: &Sample<'_>) {
        let shared = match &self.hit {
            Some((id, labels)) if *id == s.label_set_id => labels.clone(),
            _ => s
                .labels
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        };
        if let Some((key, _)) = self.pending.take_if(|(_, id)| *id == s.label_set_id) {
            self.known.insert(key, shared.clone());
        }
        let mut labels = shared;
        if let Some((name, value)) = s.extra {
            labels.retain(|(n, _)| n != name);
            labels.push((name.to_owned(), value.to_owned()));
        }
        labels.push(("__name__".to_owned(), s.name.to_owned()));
        labels.sort();
        self.rows.push((labels, s.value.to_bits(), s.timestamp_ms));
        if self.families.last().is_none_or(|(n, _)| n != s.family.name) {
            self.families.push((s.family.name.to_owned(), s.family.ty));
        }
    }

    fn uses_point_cache(&self) -> bool {
        true
    }

    fn cached_point(&mut self, key: &[u8], label_set_id: u64) -> bool {
        match self.known.get(key) {
            Some(labels) => {
                self.hit = Some((label_set_id, labels.clone()));
                self.hits += 1;
                true
            }
            None => {
                self.pending = Some((key.to_vec(), label_set_id));
                false
            }
        }
    }
}

/// What a translation produced, comparable across walks and sinks.
type Outcome = (
    Vec<BitsRow>,
    Vec<(String, PromType)>,
    u64,
    u64,
    Vec<(&'static str, u64)>,
    bool,
);

fn outcome_of(rows: Vec<Row>, families: Vec<(String, PromType)>, stats: TranslateStats) -> Outcome {
    let mut dropped = stats.dropped;
    dropped.sort_unstable();
    (
        rows.into_iter()
            .map(|(l, v, t)| (l, v.to_bits(), t))
            .collect(),
        families,
        stats.points,
        stats.samples,
        dropped,
        stats.collision.is_some(),
    )
}

/// The rows and families a caching sink got since the last call (its cache stays).
fn caching_outcome(sink: &mut CachingCollect, stats: TranslateStats) -> Outcome {
    let mut dropped = stats.dropped;
    dropped.sort_unstable();
    (
        std::mem::take(&mut sink.rows),
        std::mem::take(&mut sink.families),
        stats.points,
        stats.samples,
        dropped,
        stats.collision.is_some(),
    )
}

/// A cumulative request touching what the encoded walk reads itself: two resources (one with
/// attributes for `target_info`, one with a namespace and an instance), two scopes, gauges
/// with double, int, missing and "no recorded value" points, a point without a timestamp,
/// series repeated within the request, attributes that collide once sanitised, an
/// UpDownCounter of unit `1`, histograms with and without a sum and with fewer counts than
/// bounds, and a summary and an exponential histogram (left to the decoded walk).
fn cumulative_request()
-> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, ScopeMetrics, metric,
        number_data_point,
    };
    let mut gauge = fixtures::gauge(
        "vla.gpu.temperature",
        "Cel",
        &[
            (71.0, &[("gpu", "0"), ("model", "pi0")]),
            (72.0, &[("gpu", "1"), ("model", "pi0")]),
            (73.0, &[("gpu", "0"), ("model", "pi0")]),
            (1.0, &[("a.b", "x"), ("a_b", "y")]),
            (2.0, &[]),
        ],
    );
    if let Some(metric::Data::Gauge(g)) = &mut gauge.data {
        g.data_points[1].value = Some(number_data_point::Value::AsInt(-7));
        g.data_points[2].time_unix_nano = T0_NANOS + 1_000_000_000;
        g.data_points[3].flags = 1;
        g.data_points[4].value = None;
        let mut untimed = g.data_points[0].clone();
        untimed.time_unix_nano = 0;
        g.data_points.push(untimed);
    }
    let mut histogram = fixtures::histogram(
        "vla.inference.duration",
        "s",
        &[0.1, 0.5, 1.0],
        &[1, 2, 3, 4],
        2.5,
        &[("model", "pi0")],
    );
    if let Some(metric::Data::Histogram(h)) = &mut histogram.data {
        let mut short = h.data_points[0].clone();
        short.bucket_counts.truncate(2);
        short.sum = None;
        short.attributes = fixtures::attrs(&[("model", "octo")]);
        h.data_points.push(short);
        let mut stale = h.data_points[0].clone();
        stale.flags = 1;
        stale.time_unix_nano += 5_000_000_000;
        h.data_points.push(stale);
    }
    let exponential = Metric {
        name: "vla.exp".into(),
        unit: "s".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: fixtures::attrs(&[("model", "pi0")]),
                time_unix_nano: T0_NANOS,
                count: 3,
                scale: 1,
                zero_count: 1,
                positive: Some(
                    opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets {
                        offset: 0,
                        bucket_counts: vec![1, 1],
                    },
                ),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let mut first = fixtures::resource_with(
        &[("service.name", "api"), ("host.name", "gpu-1")],
        vec![
            gauge,
            fixtures::cumulative_sum("vla.queue.depth", "1", false, &[(3.0, &[("q", "a")])]),
            fixtures::cumulative_sum("vla.requests", "", true, &[(9.0, &[("q", "a")])]),
        ],
    );
    first.scope_metrics.push(ScopeMetrics {
        scope: None,
        metrics: vec![
            histogram,
            fixtures::summary(
                "vla.rtt",
                "ms",
                &[(0.5, 2.0), (0.9, 4.0)],
                4,
                9.0,
                &[("x", "y")],
            ),
            exponential,
        ],
        schema_url: String::new(),
    });
    let second = fixtures::resource_with(
        &[
            ("service.name", "api"),
            ("service.namespace", "vla"),
            ("service.instance.id", "i-1"),
        ],
        vec![fixtures::gauge(
            "vla.gpu.temperature",
            "Cel",
            &[(60.0, &[("gpu", "0"), ("model", "pi0")])],
        )],
    );
    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![first, second],
    }
}

fn wire_key(field: u32, wire_type: u32, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(u64::from(field << 3 | wire_type), out);
}

fn len_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    wire_key(field, 2, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn fixed64_field(field: u32, v: u64, out: &mut Vec<u8>) {
    wire_key(field, 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(field: u32, v: u64, out: &mut Vec<u8>) {
    wire_key(field, 0, out);
    prost::encoding::encode_varint(v, out);
}

/// Unknown fields of the four wire types the scan skips.
fn unknown_fields(out: &mut Vec<u8>) {
    varint_field(99, 1, out);
    fixed64_field(98, 0, out);
    len_field(97, b"xyz", out);
    wire_key(96, 5, out);
    out.extend_from_slice(&[0; 4]);
}

/// A request no encoder writes but prost decodes, built field by field: the resource in two
/// parts after its scopes, the scope in two, names and scalars set twice, both number
/// values, attributes among a point's other fields, flags and temporality past 32 bits, a
/// monotonic flag of 2, histogram buckets packed and unpacked, an empty packed run, and
/// unknown fields at every level.
fn restructured_request() -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use prost::Message;
    let kv = |k: &str, v: &str| fixtures::kv(k, v).encode_to_vec();
    let mut number = Vec::new();
    len_field(7, &kv("model", "pi0"), &mut number);
    fixed64_field(3, T0_NANOS - 1, &mut number);
    fixed64_field(4, 2.5f64.to_bits(), &mut number);
    fixed64_field(6, (-3i64) as u64, &mut number);
    unknown_fields(&mut number);
    len_field(7, &kv("gpu", "1"), &mut number);
    fixed64_field(3, T0_NANOS, &mut number);
    varint_field(8, 1 << 33, &mut number);
    let mut stale = Vec::new();
    fixed64_field(4, 1.0f64.to_bits(), &mut stale);
    varint_field(8, (1 << 40) | 1, &mut stale);
    fixed64_field(3, T0_NANOS, &mut stale);
    let mut gauge = Vec::new();
    len_field(1, &number, &mut gauge);
    unknown_fields(&mut gauge);
    len_field(1, &stale, &mut gauge);
    let mut sum = Vec::new();
    varint_field(2, 1, &mut sum);
    len_field(1, &number, &mut sum);
    varint_field(3, 2, &mut sum);
    varint_field(2, (1 << 35) | 2, &mut sum);
    let mut hist_point = Vec::new();
    fixed64_field(6, 1, &mut hist_point);
    let packed: Vec<u8> = [2u64, 3].iter().flat_map(|c| c.to_le_bytes()).collect();
    len_field(6, &packed, &mut hist_point);
    len_field(6, &[], &mut hist_point);
    fixed64_field(7, 0.5f64.to_bits(), &mut hist_point);
    len_field(9, &kv("model", "pi0"), &mut hist_point);
    len_field(7, &1.0f64.to_bits().to_le_bytes(), &mut hist_point);
    fixed64_field(4, 7, &mut hist_point);
    fixed64_field(5, 1.0f64.to_bits(), &mut hist_point);
    fixed64_field(5, 4.5f64.to_bits(), &mut hist_point);
    fixed64_field(3, T0_NANOS, &mut hist_point);
    unknown_fields(&mut hist_point);
    let mut histogram = Vec::new();
    len_field(1, &hist_point, &mut histogram);
    varint_field(2, 2, &mut histogram);
    let metric = |name: &str, data_field: u32, data: &[u8]| {
        let mut m = Vec::new();
        len_field(1, b"first name", &mut m);
        unknown_fields(&mut m);
        len_field(data_field, data, &mut m);
        len_field(3, b"s", &mut m);
        len_field(1, name.as_bytes(), &mut m);
        len_field(2, b"help", &mut m);
        m
    };
    let mut scope_metrics = Vec::new();
    len_field(2, &metric("vla.g", 5, &gauge), &mut scope_metrics);
    len_field(2, &metric("vla.c", 7, &sum), &mut scope_metrics);
    let scope_name = InstrumentationScope {
        name: "sdk".into(),
        ..Default::default()
    };
    len_field(1, &scope_name.encode_to_vec(), &mut scope_metrics);
    len_field(2, &metric("vla.h", 9, &histogram), &mut scope_metrics);
    let scope_version = InstrumentationScope {
        version: "2".into(),
        ..Default::default()
    };
    len_field(1, &scope_version.encode_to_vec(), &mut scope_metrics);
    unknown_fields(&mut scope_metrics);
    let resource = |k: &str, v: &str| {
        let mut r = Vec::new();
        len_field(1, &kv(k, v), &mut r);
        r
    };
    let mut rm = Vec::new();
    len_field(2, &scope_metrics, &mut rm);
    len_field(1, &resource("service.name", "api"), &mut rm);
    unknown_fields(&mut rm);
    len_field(1, &resource("host.name", "gpu-1"), &mut rm);
    len_field(2, &scope_metrics, &mut rm);
    let mut request = Vec::new();
    len_field(1, &rm, &mut request);
    unknown_fields(&mut request);
    len_field(1, &rm, &mut request);
    request
}

/// The walk over encoded requests gives the decoded walk's samples, families, counts and
/// drops, in the same order, for every request the batch's scan keeps encoded: well-formed
/// ones and thousands damaged at random (fields duplicated, lengths changed, unknown fields
/// inserted). Each batch is translated twice, so the second pass answers from the sink's
/// cache of encoded point keys.
#[test]
fn the_encoded_walk_translates_as_the_decoded_one() {
    use prost::Message;
    let seeds = [
        fixtures::every_field_request().encode_to_vec(),
        cumulative_request().encode_to_vec(),
        restructured_request(),
    ];
    for seed in &seeds {
        let batch = MetricBatch::from_request("otlp".into(), seed.clone().into()).unwrap();
        assert!(batch.is_encoded(), "every seed is read from its bytes");
        let stats = Translator::new(TranslateOptions::default())
            .translate(&batch, &mut CachingCollect::default());
        assert!(stats.samples > 5, "every seed gives samples: {stats:?}");
    }
    let options = [
        TranslateOptions::default(),
        TranslateOptions {
            namespace: Some("ns".into()),
            extra_labels: vec![("region".into(), "eu".into()), ("job".into(), "x".into())],
            target_info: false,
            scope_info: false,
            exponential: ExponentialHistograms::Native,
        },
    ];
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let mut damage = fixtures::Damage::new(0x2545_f491_4f6c_dd1d);
    let (mut compared, mut hits) = (0, 0);
    for i in 0..20_000 {
        let seed = &seeds[i % seeds.len()];
        let bytes = if i < seeds.len() {
            seed.clone()
        } else {
            damage.damage(seed)
        };
        let Ok(encoded) = MetricBatch::from_request("otlp".into(), bytes.clone().into()) else {
            continue;
        };
        if !encoded.is_encoded() {
            continue;
        }
        let encoded = encoded.with_received_at(at);
        let decoded = MetricBatch::new("otlp".into(), encoded.resource_metrics().to_vec())
            .with_received_at(at);
        let options = &options[i / seeds.len() % options.len()];
        let (mut plain, mut raw, mut owned_cached) = (
            Translator::new(options.clone()),
            Translator::new(options.clone()),
            Translator::new(options.clone()).decoded_walk_only(),
        );
        let (mut raw_sink, mut owned_sink) = (CachingCollect::default(), CachingCollect::default());
        for pass in 0..2 {
            let mut expected = Collect::default();
            let stats = plain.translate(&decoded, &mut expected);
            let expected = outcome_of(expected.0, expected.1, stats);
            let stats = raw.translate(&encoded, &mut raw_sink);
            let got = caching_outcome(&mut raw_sink, stats);
            assert_eq!(got, expected, "pass {pass} of {bytes:?}");
            let stats = owned_cached.translate(&encoded, &mut owned_sink);
            let got_owned = caching_outcome(&mut owned_sink, stats);
            assert_eq!(
                got_owned, expected,
                "decoded walk, pass {pass} of {bytes:?}"
            );
        }
        // One translator and sink given the batch decoded, as after a processor changed it,
        // and then encoded again: the two kinds of keys live side by side.
        let mut expected = Collect::default();
        let stats = plain.translate(&decoded, &mut expected);
        let expected = outcome_of(expected.0, expected.1, stats);
        for batch in [&decoded, &encoded] {
            let stats = raw.translate(batch, &mut raw_sink);
            assert_eq!(
                caching_outcome(&mut raw_sink, stats),
                expected,
                "mixed, {bytes:?}"
            );
        }
        compared += 1;
        hits += raw_sink.hits;
    }
    eprintln!("{compared} encoded requests compared, {hits} cache hits");
    // A batch of several requests (merged by the batcher), on one long-lived translator.
    let mut several = MetricBatch::from_request("otlp".into(), seeds[0].clone().into()).unwrap();
    for seed in &seeds[1..] {
        several.append(MetricBatch::from_request("otlp".into(), seed.clone().into()).unwrap());
    }
    let several = several.with_received_at(at);
    assert_eq!(
        several.encoded_requests().map(<[_]>::len),
        Some(seeds.len())
    );
    let decoded =
        MetricBatch::new("otlp".into(), several.resource_metrics().to_vec()).with_received_at(at);
    let (mut plain, mut raw) = (
        Translator::new(TranslateOptions::default()),
        Translator::new(TranslateOptions::default()),
    );
    let mut raw_sink = CachingCollect::default();
    for _ in 0..2 {
        let mut expected = Collect::default();
        let stats = plain.translate(&decoded, &mut expected);
        let expected = outcome_of(expected.0, expected.1, stats);
        let stats = raw.translate(&several, &mut raw_sink);
        assert_eq!(
            caching_outcome(&mut raw_sink, stats),
            expected,
            "several requests"
        );
    }
    assert!(
        compared > 1_000 && hits > 1_000,
        "{compared} compared, {hits} hits"
    );
}
