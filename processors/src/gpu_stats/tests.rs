//! Tests of the `gpu_stats` processor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::{Duration, SystemTime};

use super::*;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric;
use vla_pipeline::{attr_str, fixtures};

fn gpu(index: u32, model: &str, util: f64, temp: f64) -> GpuReading {
    GpuReading {
        index,
        uuid: format!("GPU-{index}aaa"),
        model: model.into(),
        utilization_percent: Some(util),
        temperature_celsius: Some(temp),
        ..GpuReading::default()
    }
}

fn hub() -> GpuSnapshots {
    let hub = GpuSnapshots::new();
    hub.publish(GpuSnapshot {
        gpus: vec![
            gpu(0, "NVIDIA H100 80GB HBM3", 80.0, 70.0),
            gpu(1, "NVIDIA A100-SXM4-40GB", 49.9, 85.0),
        ],
        taken_at: Some(SystemTime::now()),
    });
    hub
}

fn config(json: serde_json::Value) -> Config {
    let c: Config = serde_json::from_value(json).unwrap();
    assert!(c.validate("p").is_empty(), "{:?}", c.validate("p"));
    c
}

/// One point per `(metric, attrs)` under a resource with `resource_attrs`.
fn batch(resource_attrs: &[(&str, &str)], points: &[(&str, &[(&str, &str)])]) -> MetricBatch {
    let metrics = points
        .iter()
        .map(|(name, attrs)| fixtures::gauge(name, "s", &[(1.0, attrs)]))
        .collect();
    MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource_with(resource_attrs, metrics)],
    )
}

/// Each point's value of `key` (None when absent), in order.
fn values(b: &mut MetricBatch, key: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    b.for_each_point_mut(|_, attrs| out.push(attr_str(attrs, key).map(str::to_owned)));
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn joins_by_index_uuid_and_integer_id() {
    let mut p = GpuStats::new(&Config::default(), hub());
    let mut b = batch(
        &[("service.name", "api")],
        &[
            ("vla.inference.duration", &[("gpu_id", "0")]),
            ("vla.inference.duration", &[("gpu_id", "GPU-1aaa")]),
            ("vla.inference.duration", &[("model", "pi0")]),
        ],
    );
    // An integer-valued id too.
    {
        let mut rms = b.resource_metrics_mut();
        let third = &mut rms[0].scope_metrics[0].metrics[2];
        let Some(metric::Data::Gauge(g)) = third.data.as_mut() else {
            unreachable!()
        };
        g.data_points[0].attributes.push(KeyValue {
            key: "gpu_id".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(1)),
            }),
            ..Default::default()
        });
    }
    p.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [
            s("NVIDIA H100 80GB HBM3"),
            s("NVIDIA A100-SXM4-40GB"),
            s("NVIDIA A100-SXM4-40GB")
        ]
    );
    // No bucket configured: none added.
    assert_eq!(values(&mut b, UTILIZATION_BUCKET_KEY), [None, None, None]);
}

#[test]
fn resource_level_id_and_point_level_wins() {
    let mut p = GpuStats::new(&config(serde_json::json!({})), hub());
    let mut b = batch(
        &[("service.name", "worker"), ("gpu_id", "1")],
        &[("a", &[]), ("b", &[("gpu_id", "0")])],
    );
    p.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [s("NVIDIA A100-SXM4-40GB"), s("NVIDIA H100 80GB HBM3")]
    );
}

#[test]
fn keep_or_overwrite_an_existing_attribute() {
    let points: &[(&str, &[(&str, &str)])] = &[("m", &[("gpu_id", "0"), ("gpu_model", "mine")])];
    let mut keep = GpuStats::new(&Config::default(), hub());
    let mut b = batch(&[], points);
    keep.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [s("mine")]);
    let mut over = GpuStats::new(
        &config(serde_json::json!({"on_existing": "overwrite"})),
        hub(),
    );
    let mut b = batch(&[], points);
    over.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [s("NVIDIA H100 80GB HBM3")]);
    b.for_each_point_mut(|_, attrs| assert_eq!(attrs.len(), 2, "replaced, not added"));
}

#[test]
fn bucket_boundaries_belong_to_the_bucket_above() {
    let b = Buckets::new(
        UTILIZATION_BUCKET_KEY,
        |g| g.utilization_percent,
        &[50.0, 80.0],
    );
    let table = [
        (0.0, "<50"),
        (49.9, "<50"),
        (50.0, "50-80"),
        (79.99, "50-80"),
        (80.0, ">=80"),
        (100.0, ">=80"),
    ];
    for (v, want) in table {
        assert_eq!(b.label(v), Some(want), "{v}");
    }
    let one = Buckets::new(TEMPERATURE_BUCKET_KEY, |g| g.temperature_celsius, &[72.5]);
    assert_eq!(
        (one.label(72.4), one.label(72.5)),
        (Some("<72.5"), Some(">=72.5"))
    );
    let three = Buckets::new(
        TEMPERATURE_BUCKET_KEY,
        |g| g.temperature_celsius,
        &[60.0, 70.0, 85.0],
    );
    assert_eq!(three.labels, ["<60", "60-70", "70-85", ">=85"]);

    let mut p = GpuStats::new(
        &config(serde_json::json!({
            "utilization_buckets": [50, 80], "temperature_buckets": [70, 85]
        })),
        hub(),
    );
    let mut b = batch(&[], &[("m", &[("gpu_id", "0")]), ("m", &[("gpu_id", "1")])]);
    p.process(&mut b);
    // GPU 0: 80 % at 70 °C; GPU 1: 49.9 % at 85 °C.
    assert_eq!(
        values(&mut b, UTILIZATION_BUCKET_KEY),
        [s(">=80"), s("<50")]
    );
    assert_eq!(
        values(&mut b, TEMPERATURE_BUCKET_KEY),
        [s("70-85"), s(">=85")]
    );
}

#[test]
fn unknown_gpu_and_no_snapshot_leave_points_untouched_and_are_counted() {
    let t = SelfMetrics::new();
    let id: ComponentId = "gpu_stats".into();
    let empty = GpuSnapshots::new();
    let mut p = GpuStats::new(&Config::default(), empty.clone()).with_telemetry(&id, &t);
    let count = |result| {
        t.value(
            "vla_collector_processor_gpu_stats_data_points_total",
            &[("processor", "gpu_stats"), ("result", result)],
        )
    };
    let points: &[(&str, &[(&str, &str)])] = &[
        ("m", &[("gpu_id", "0")]),
        ("m", &[("gpu_id", "7")]),
        ("m", &[("gpu_id", "GPU-nope")]),
        ("m", &[("gpu_id", "zero")]),
        ("m", &[]),
    ];
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [None, None, None, None, None]);
    assert_eq!(count("no_snapshot"), Some(4));
    assert_eq!(count("unknown_gpu"), Some(0));

    empty.publish(hub().load().as_ref().clone());
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [s("NVIDIA H100 80GB HBM3"), None, None, None, None]
    );
    b.for_each_point_mut(|_, attrs| assert!(attrs.len() <= 2));
    assert_eq!(count("joined"), Some(1));
    assert_eq!(count("unknown_gpu"), Some(3));
}

#[test]
fn metrics_filter_exact_and_globs() {
    let mut p = GpuStats::new(
        &config(
            serde_json::json!({"metrics": ["vla.inference.*", "vla.queue.depth", "*.gpu_seconds"]}),
        ),
        hub(),
    );
    let names = [
        "vla.inference.duration",
        "vla.inference",
        "vla.queue.depth",
        "vla.queue.depth.max",
        "vla.api.gpu_seconds",
        "vla.gpu.temperature",
    ];
    let points: Vec<(&str, &[(&str, &str)])> =
        names.iter().map(|n| (*n, &[("gpu_id", "0")][..])).collect();
    let mut b = batch(&[], &points);
    p.process(&mut b);
    let got: Vec<bool> = values(&mut b, "gpu_model")
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(got, [true, false, true, false, true, false]);
    // The glob itself is tested in `crate::pattern`.
}

#[test]
fn a_replaced_snapshot_is_seen_by_the_next_batch() {
    let hub = hub();
    let mut p = GpuStats::new(&Config::default(), hub.clone());
    let points: &[(&str, &[(&str, &str)])] = &[("m", &[("gpu_id", "0")])];
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [s("NVIDIA H100 80GB HBM3")]);
    hub.publish(GpuSnapshot {
        gpus: vec![gpu(0, "NVIDIA H200", 10.0, 40.0)],
        taken_at: Some(SystemTime::now()),
    });
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [s("NVIDIA H200")]);
}

#[test]
fn validation_messages() {
    let c: Config = serde_json::from_value(serde_json::json!({
        "gpu_id_key": "",
        "model_key": "gpu utilization",
        "metrics": ["vla.*", " "],
        "utilization_buckets": [80, 50, 120],
        "temperature_buckets": [],
    }))
    .unwrap();
    let got: Vec<String> = c
        .validate("processors.gpu_stats")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "processors.gpu_stats.gpu_id_key: \"\" is not an attribute name: expected \
             letters, digits, `_` and `.`, not starting with a digit, e.g. gpu_id",
            "processors.gpu_stats.model_key: \"gpu utilization\" is not an attribute name: \
             expected letters, digits, `_` and `.`, not starting with a digit, e.g. gpu_model",
            "processors.gpu_stats.metrics[1]: must not be empty; write a metric name or a \
             glob such as vla.inference.*",
            "processors.gpu_stats.utilization_buckets: bounds must be between 0 and 100, got 120",
            "processors.gpu_stats.utilization_buckets: bounds must be strictly increasing, \
             but 50 follows 80",
            "processors.gpu_stats.temperature_buckets: must list at least one bound, e.g. \
             [50, 80] (leave it out for no bucket)",
        ]
    );
    let clash = Config {
        model_key: UTILIZATION_BUCKET_KEY.into(),
        metrics: Some(Vec::new()),
        temperature_buckets: Some(vec![70.0, 70.0]),
        ..Config::default()
    };
    let got: Vec<String> = clash
        .validate("p")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "p.model_key: \"gpu_utilization_bucket\" is already used for the GPU id or a \
             bucket; choose another name",
            "p.metrics: must list at least one metric name (leave it out for every metric)",
            "p.temperature_buckets: bounds must be strictly increasing, but 70 follows 70",
        ]
    );
    assert!(Config::default().validate("p").is_empty());
    let err = serde_json::from_value::<Config>(serde_json::json!({"on_existing": "merge"}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("unknown variant `merge`"), "{err}");
    assert!(serde_json::from_value::<Config>(serde_json::json!({"gpu_key": "x"})).is_err());
}

#[test]
fn model_key_may_not_be_a_reserved_prometheus_label() {
    let problem = |key: &str| -> Vec<String> {
        Config {
            model_key: key.into(),
            ..Config::default()
        }
        .validate("processors.gpu_stats")
        .iter()
        .map(ToString::to_string)
        .collect()
    };
    let table: &[(&str, &str)] = &[
        (
            "job",
            "\"job\" is reserved: Prometheus sets the label \"job\" itself",
        ),
        (
            "instance",
            "\"instance\" is reserved: Prometheus sets the label \"instance\" itself",
        ),
        (
            "le",
            "\"le\" is reserved: Prometheus sets the label \"le\" itself",
        ),
        (
            "quantile",
            "\"quantile\" is reserved: Prometheus sets the label \"quantile\" itself",
        ),
        (
            "__name__",
            "\"__name__\": names starting with `__` are reserved by Prometheus",
        ),
        (
            "__gpu",
            "\"__gpu\": names starting with `__` are reserved by Prometheus",
        ),
    ];
    for (key, why) in table {
        assert_eq!(
            problem(key),
            [format!(
                "processors.gpu_stats.model_key: {why}; choose another name, e.g. gpu_model"
            )],
            "{key}"
        );
    }
    for fine in [
        "gpu_model",
        "_model",
        "job_name",
        "gpu.instance",
        "model.le",
    ] {
        assert!(problem(fine).is_empty(), "{fine}: {:?}", problem(fine));
    }
}

#[test]
fn metric_patterns_are_checked_like_the_other_processors() {
    let c = Config {
        metrics: Some(vec!["vla.inference.*".into(), "vla.{a,b}".into()]),
        ..Config::default()
    };
    let got: Vec<String> = c.validate("p").iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "p.metrics[1]: invalid metric pattern \"vla.{a,b}\": '{' cannot appear in a metric \
          name; only * is a wildcard"
        ]
    );
}

fn counter_of(t: &SelfMetrics, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
    t.value(name, labels)
}

#[test]
fn buckets_only_on_gauges_and_delta_points_and_cumulative_skips_are_counted() {
    use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
    let t = SelfMetrics::new();
    let id: ComponentId = "gpu_stats/b".into();
    let mut p = GpuStats::new(
        &config(serde_json::json!({
            "utilization_buckets": [50, 80], "temperature_buckets": [70, 85]
        })),
        hub(),
    )
    .with_telemetry(&id, &t);
    let gpu0: &[(&str, &str)] = &[("gpu_id", "0")];
    let metrics = vec![
        fixtures::gauge("g", "s", &[(1.0, gpu0)]),
        fixtures::delta_sum("ds", "1", true, &[(1.0, gpu0)]),
        fixtures::cumulative_sum("cs", "1", true, &[(1.0, gpu0), (2.0, gpu0)]),
        fixtures::histogram_with(
            "dh",
            "s",
            AggregationTemporality::Delta,
            &[1.0],
            &[1, 2],
            3.0,
            gpu0,
        ),
        fixtures::histogram("ch", "s", &[1.0], &[1, 2], 3.0, gpu0),
        fixtures::summary("sm", "s", &[(0.5, 1.0)], 3, 3.0, gpu0),
    ];
    let mut b = MetricBatch::new("otlp".into(), vec![fixtures::resource("api", metrics)]);
    p.process(&mut b);
    // Order: g, ds, cs (two points), dh, ch, sm.
    assert_eq!(
        values(&mut b, "gpu_model"),
        vec![s("NVIDIA H100 80GB HBM3"); 7],
        "the model goes on every kind"
    );
    let util = [s(">=80"), s(">=80"), None, None, s(">=80"), None, None];
    assert_eq!(values(&mut b, UTILIZATION_BUCKET_KEY), util);
    let temp = [s("70-85"), s("70-85"), None, None, s("70-85"), None, None];
    assert_eq!(values(&mut b, TEMPERATURE_BUCKET_KEY), temp);
    let labels = [("processor", "gpu_stats/b"), ("reason", "cumulative")];
    assert_eq!(
        counter_of(
            &t,
            "vla_collector_processor_gpu_stats_bucket_skipped_data_points_total",
            &labels
        ),
        Some(4),
        "2 cumulative sum points, 1 cumulative histogram, 1 summary"
    );
    assert_eq!(
        counter_of(
            &t,
            "vla_collector_processor_gpu_stats_data_points_total",
            &[("processor", "gpu_stats/b"), ("result", "joined")]
        ),
        Some(7)
    );

    // Without buckets configured nothing is skipped.
    let t = SelfMetrics::new();
    let mut p = GpuStats::new(&Config::default(), hub()).with_telemetry(&id, &t);
    let mut b = MetricBatch::new(
        "otlp".into(),
        vec![fixtures::resource(
            "api",
            vec![fixtures::cumulative_sum("cs", "1", true, &[(1.0, gpu0)])],
        )],
    );
    p.process(&mut b);
    assert_eq!(
        counter_of(
            &t,
            "vla_collector_processor_gpu_stats_bucket_skipped_data_points_total",
            &labels
        ),
        Some(0)
    );
}

#[test]
fn a_stale_snapshot_is_not_joined_and_is_counted() {
    let t = SelfMetrics::new();
    let id: ComponentId = "gpu_stats".into();
    let hub = GpuSnapshots::new();
    let old = SystemTime::now() - Duration::from_secs(120);
    hub.publish(GpuSnapshot {
        gpus: vec![gpu(0, "NVIDIA H100 80GB HBM3", 80.0, 70.0)],
        taken_at: Some(old),
    });
    let mut p = GpuStats::new(&Config::default(), hub.clone()).with_telemetry(&id, &t);
    let points: &[(&str, &[(&str, &str)])] = &[
        ("m", &[("gpu_id", "0")]),
        ("m", &[("gpu_id", "9")]),
        ("m", &[]),
    ];
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(values(&mut b, "gpu_model"), [None, None, None]);
    let count = |result| {
        t.value(
            "vla_collector_processor_gpu_stats_data_points_total",
            &[("processor", "gpu_stats"), ("result", result)],
        )
    };
    assert_eq!(count("stale_snapshot"), Some(2));
    assert_eq!(count("joined"), Some(0));
    assert_eq!(count("unknown_gpu"), Some(0));

    // A longer max_age accepts it; a fresh publish is joined again with the default.
    let mut lenient = GpuStats::new(&config(serde_json::json!({"max_age": "5m"})), hub.clone());
    let mut b = batch(&[], points);
    lenient.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [s("NVIDIA H100 80GB HBM3"), None, None]
    );
    hub.publish(GpuSnapshot {
        gpus: vec![gpu(0, "NVIDIA H100 80GB HBM3", 80.0, 70.0)],
        taken_at: Some(SystemTime::now()),
    });
    let mut b = batch(&[], points);
    p.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [s("NVIDIA H100 80GB HBM3"), None, None]
    );
    assert_eq!(count("joined"), Some(1));
    assert_eq!(count("unknown_gpu"), Some(1));
    assert_eq!(count("stale_snapshot"), Some(2));
}

#[test]
fn max_age_parses_defaults_and_validates() {
    assert_eq!(Config::default().max_age, Duration::from_secs(60));
    assert_eq!(config(serde_json::json!({})).max_age, DEFAULT_MAX_AGE);
    assert_eq!(
        config(serde_json::json!({"max_age": "30s"})).max_age,
        Duration::from_secs(30)
    );
    assert!(serde_json::from_value::<Config>(serde_json::json!({"max_age": 30})).is_err());
    let zero: Config = serde_json::from_value(serde_json::json!({"max_age": "0s"})).unwrap();
    let got: Vec<String> = zero
        .validate("processors.gpu_stats")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "processors.gpu_stats.max_age: must be longer than 0, e.g. 1m (a few times the nvml \
          receiver's collection_interval)"
        ]
    );
}

#[test]
fn metric_decisions_and_resource_gpus_hold_across_resources() {
    let mut p = GpuStats::new(
        &config(serde_json::json!({"metrics": ["vla.inference.*"]})),
        hub(),
    );
    let gauge = |name: &str, attrs: &[(&str, &str)]| fixtures::gauge(name, "s", &[(1.0, attrs)]);
    let mut b = MetricBatch::new(
        "otlp".into(),
        vec![
            fixtures::resource_with(
                &[("gpu_id", "1")],
                vec![
                    gauge("vla.inference.duration", &[]),
                    gauge("vla.inference.duration", &[("gpu_id", "0")]),
                    gauge("other", &[]),
                ],
            ),
            fixtures::resource_with(
                &[("gpu_id", "GPU-0aaa")],
                vec![gauge("other", &[]), gauge("vla.inference.duration", &[])],
            ),
            fixtures::resource_with(&[], vec![gauge("vla.inference.duration", &[])]),
        ],
    );
    p.process(&mut b);
    assert_eq!(
        values(&mut b, "gpu_model"),
        [
            s("NVIDIA A100-SXM4-40GB"),
            s("NVIDIA H100 80GB HBM3"),
            None,
            None,
            s("NVIDIA H100 80GB HBM3"),
            None,
        ]
    );
    assert_eq!(b.data_points(), 6);
}

#[test]
fn an_attribute_already_holding_the_value_is_not_reallocated() {
    let points: &[(&str, &[(&str, &str)])] = &[(
        "m",
        &[
            ("gpu_id", "0"),
            ("gpu_model", "NVIDIA H100 80GB HBM3"),
            (UTILIZATION_BUCKET_KEY, "old-bucket-label"),
        ],
    )];
    let mut p = GpuStats::new(
        &config(serde_json::json!({
            "on_existing": "overwrite", "utilization_buckets": [50, 80], "temperature_buckets": [70]
        })),
        hub(),
    );
    let mut b = batch(&[], points);
    let ptrs = |b: &mut MetricBatch| {
        let mut out = Vec::new();
        b.for_each_point_mut(|_, attrs| {
            out.extend(attrs.iter().filter_map(|kv| {
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_ptr() as usize),
                    _ => None,
                }
            }));
        });
        out
    };
    let before = ptrs(&mut b);
    p.process(&mut b);
    let after = ptrs(&mut b);
    assert_eq!(
        before[..3],
        after[..3],
        "same value kept in place; a shorter one written into the old buffer"
    );
    assert_eq!(values(&mut b, UTILIZATION_BUCKET_KEY), [s(">=80")]);
    assert_eq!(values(&mut b, TEMPERATURE_BUCKET_KEY), [s(">=70")]);
    b.for_each_point_mut(|_, attrs| {
        assert_eq!(attrs.len(), 4);
        assert!(attrs.capacity() >= 4);
    });
}
