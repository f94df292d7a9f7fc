//! Unit tests of the `nvml` receiver: readings → OTLP, the sentinel filters, the config, the
//! fake scenarios, and the poll loop's handling of a source that cannot be opened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, ResourceMetrics, metric, number_data_point,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vla_pipeline::PipelineSender;
use vla_pipeline::lookup::SourceStatus;

use super::nvml_source::{
    clock_mhz, error_count, memory_bytes, memory_total_bytes, millijoules_to_joules,
    milliwatts_to_watts, percent, temperature_celsius,
};
use super::source::simulated_reading;
use super::*;

const GIB: u64 = 1024 * 1024 * 1024;

fn full_reading(index: u32) -> GpuReading {
    GpuReading {
        index,
        uuid: format!("GPU-{index}"),
        model: "NVIDIA H100 80GB HBM3".into(),
        utilization_percent: Some(42.5),
        memory_utilization_percent: Some(20.0),
        temperature_celsius: Some(61.0),
        memory_used_bytes: Some(30 * GIB),
        memory_free_bytes: Some(50 * GIB),
        memory_total_bytes: Some(80 * GIB),
        power_watts: Some(312.5),
        energy_joules: Some(1234.567),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        ecc_corrected_total: Some(3),
        ecc_uncorrected_total: Some(0),
        xid_errors_total: Some(1),
        last_xid: Some(79),
    }
}

/// A bare reading: only identity, every measurement unsupported.
fn bare_reading(index: u32) -> GpuReading {
    GpuReading {
        index,
        uuid: format!("GPU-{index}"),
        model: "Tesla T4".into(),
        ..GpuReading::default()
    }
}

fn encoder(metrics: MetricsConfig) -> Encoder {
    Encoder::new(
        metrics,
        "gpu-host-1",
        [("deployment.environment", "test")],
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
    )
}

const AT: Duration = Duration::from_secs(2_000);

fn encode(metrics: MetricsConfig, result: PollResult<'_>) -> ResourceMetrics {
    encoder(metrics).encode(result, SystemTime::UNIX_EPOCH + AT)
}

fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
    rm.scope_metrics
        .iter()
        .flat_map(|sm| &sm.metrics)
        .find(|m| m.name == name)
}

fn names(rm: &ResourceMetrics) -> Vec<&str> {
    rm.scope_metrics
        .iter()
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.as_str())
        .collect()
}

/// A point as text: `attrs -> value`, e.g. `gpu_id=0,uuid=GPU-0 -> 42.5` (ints as `i:N`).
fn points(m: &Metric) -> Vec<String> {
    let pts = match &m.data {
        Some(metric::Data::Gauge(g)) => &g.data_points,
        Some(metric::Data::Sum(s)) => &s.data_points,
        other => panic!("unexpected data {other:?}"),
    };
    pts.iter()
        .map(|p| {
            let attrs: Vec<String> = p
                .attributes
                .iter()
                .map(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => format!("{}={s}", kv.key),
                        other => format!("{}={other:?}", kv.key),
                    },
                )
                .collect();
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => format!("{d}"),
                Some(number_data_point::Value::AsInt(i)) => format!("i:{i}"),
                None => "none".into(),
            };
            format!("{} -> {v}", attrs.join(","))
        })
        .collect()
}

/// `(kind, unit)` of a metric: `gauge`, or `sum(monotonic,cumulative)`.
fn shape(m: &Metric) -> (String, &str) {
    let kind = match &m.data {
        Some(metric::Data::Gauge(_)) => "gauge".to_owned(),
        Some(metric::Data::Sum(s)) => format!(
            "sum({},{})",
            if s.is_monotonic {
                "monotonic"
            } else {
                "up-down"
            },
            if s.aggregation_temporality == AggregationTemporality::Cumulative as i32 {
                "cumulative"
            } else {
                "delta"
            }
        ),
        other => format!("{other:?}"),
    };
    (kind, m.unit.as_str())
}

#[test]
fn vla_metrics_have_catalogue_names_units_types_and_attributes() {
    let readings = [full_reading(0), full_reading(1)];
    let rm = encode(MetricsConfig::default(), PollResult::Readings(&readings));
    assert_eq!(
        names(&rm),
        [
            "vla.gpu.available",
            "vla.gpu.count",
            "vla.gpu.utilization",
            "vla.gpu.temperature",
            "vla.gpu.memory.used",
            "vla.gpu.memory.total",
            "vla.gpu.memory.utilization",
            "vla.gpu.power",
            "vla.gpu.energy",
            "vla.gpu.clock.sm",
            "vla.gpu.clock.memory",
            "vla.gpu.xid.errors",
            "vla.gpu.ecc.errors",
        ]
    );
    let table: &[(&str, &str, &str, &str)] = &[
        // name, kind, unit, GPU 1's point
        ("vla.gpu.utilization", "gauge", "%", "42.5"),
        ("vla.gpu.temperature", "gauge", "Cel", "61"),
        ("vla.gpu.memory.used", "gauge", "By", "i:32212254720"),
        ("vla.gpu.memory.total", "gauge", "By", "i:85899345920"),
        ("vla.gpu.memory.utilization", "gauge", "%", "20"),
        ("vla.gpu.power", "gauge", "W", "312.5"),
        (
            "vla.gpu.energy",
            "sum(monotonic,cumulative)",
            "J",
            "1234.567",
        ),
        ("vla.gpu.clock.sm", "gauge", "Hz", "i:1980000000"),
        ("vla.gpu.clock.memory", "gauge", "Hz", "i:2619000000"),
        (
            "vla.gpu.xid.errors",
            "sum(monotonic,cumulative)",
            "{error}",
            "i:1",
        ),
    ];
    for (name, kind, unit, value) in table {
        let m = metric(&rm, name).unwrap();
        assert_eq!(shape(m), (kind.to_string(), *unit), "{name}");
        assert_eq!(
            points(m),
            vec![
                format!("gpu_id=0,uuid=GPU-0,model_name=NVIDIA H100 80GB HBM3 -> {value}"),
                format!("gpu_id=1,uuid=GPU-1,model_name=NVIDIA H100 80GB HBM3 -> {value}"),
            ],
            "{name}"
        );
    }
    // The catalogue's descriptions, word for word.
    let desc = |n| metric(&rm, n).unwrap().description.as_str();
    assert_eq!(
        desc("vla.gpu.utilization"),
        "GPU compute utilization, 0 to 100."
    );
    assert_eq!(desc("vla.gpu.temperature"), "GPU core temperature.");
    assert_eq!(desc("vla.gpu.memory.used"), "GPU memory in use.");
    assert_eq!(desc("vla.gpu.memory.total"), "GPU memory installed.");

    let ecc = metric(&rm, "vla.gpu.ecc.errors").unwrap();
    assert_eq!(
        shape(ecc),
        ("sum(monotonic,cumulative)".to_owned(), "{error}")
    );
    assert_eq!(
        points(ecc)[..2],
        [
            "gpu_id=0,uuid=GPU-0,model_name=NVIDIA H100 80GB HBM3,error_type=corrected -> i:3",
            "gpu_id=0,uuid=GPU-0,model_name=NVIDIA H100 80GB HBM3,error_type=uncorrected -> i:0",
        ]
    );
    assert_eq!(points(ecc).len(), 4);

    assert_eq!(
        points(metric(&rm, "vla.gpu.available").unwrap()),
        [" -> i:1"]
    );
    assert_eq!(points(metric(&rm, "vla.gpu.count").unwrap()), [" -> i:2"]);
    assert_eq!(metric(&rm, "vla.gpu.available").unwrap().unit, "");
}

#[test]
fn timestamps_gauges_now_sums_from_receiver_start() {
    let readings = [full_reading(0)];
    let rm = encode(MetricsConfig::default(), PollResult::Readings(&readings));
    for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
        let (pts, want_start) = match &m.data {
            Some(metric::Data::Gauge(g)) => (&g.data_points, 0),
            Some(metric::Data::Sum(s)) => (&s.data_points, 1_000_000_000_000),
            _ => unreachable!(),
        };
        for p in pts {
            assert_eq!(p.time_unix_nano, 2_000_000_000_000, "{}", m.name);
            assert_eq!(p.start_time_unix_nano, want_start, "{}", m.name);
        }
    }
}

#[test]
fn resource_has_service_host_and_extras() {
    let rm = encode(MetricsConfig::default(), PollResult::Unavailable);
    let attrs: Vec<(String, String)> = rm
        .resource
        .unwrap()
        .attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect();
    let want = [
        ("service.name", "vla-collector"),
        ("host.name", "gpu-host-1"),
        ("service.instance.id", "gpu-host-1"),
        ("deployment.environment", "test"),
    ];
    assert_eq!(
        attrs,
        want.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
    );
    // Extras win over the defaults, service.instance.id included.
    let e = Encoder::new(
        MetricsConfig::default(),
        "h",
        [
            ("service.name", "gpu-agent"),
            ("service.instance.id", "rack7-h"),
        ],
        SystemTime::UNIX_EPOCH,
    );
    let rm = e.encode(PollResult::Unavailable, SystemTime::UNIX_EPOCH);
    let attrs = rm.resource.unwrap().attributes;
    assert_eq!(attrs.len(), 3);
    assert_eq!(
        vla_pipeline::attr_str(&attrs, "service.name"),
        Some("gpu-agent")
    );
    assert_eq!(
        vla_pipeline::attr_str(&attrs, "service.instance.id"),
        Some("rack7-h")
    );
    // Without a host name there is no instance to name.
    let e = Encoder::new(MetricsConfig::default(), "", [], SystemTime::UNIX_EPOCH);
    let rm = e.encode(PollResult::Unavailable, SystemTime::UNIX_EPOCH);
    assert_eq!(rm.resource.unwrap().attributes.len(), 1);
}

#[test]
fn unsupported_fields_send_no_point_not_zero() {
    let readings = [full_reading(0), bare_reading(1)];
    let both = MetricsConfig {
        vla: true,
        dcgm: true,
    };
    let rm = encode(both, PollResult::Readings(&readings));
    for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
        if m.name == "vla.gpu.available" || m.name == "vla.gpu.count" {
            continue;
        }
        let pts = points(m);
        assert!(
            pts.iter()
                .all(|p| p.starts_with("gpu_id=0") || p.starts_with("gpu=0")),
            "{}: {pts:?}",
            m.name
        );
    }
    // Only bare GPUs: no per-GPU metric at all, but the GPUs are available.
    let bare = [bare_reading(0)];
    let rm = encode(both, PollResult::Readings(&bare));
    assert_eq!(names(&rm), ["vla.gpu.available", "vla.gpu.count"]);
    assert_eq!(
        points(metric(&rm, "vla.gpu.available").unwrap()),
        [" -> i:1"]
    );
}

#[test]
fn unavailable_and_empty_send_available_zero_without_gpu_attributes() {
    for result in [PollResult::Unavailable, PollResult::Readings(&[])] {
        let rm = encode(
            MetricsConfig {
                vla: true,
                dcgm: true,
            },
            result,
        );
        assert_eq!(names(&rm), ["vla.gpu.available", "vla.gpu.count"]);
        assert_eq!(
            points(metric(&rm, "vla.gpu.available").unwrap()),
            [" -> i:0"]
        );
        assert_eq!(points(metric(&rm, "vla.gpu.count").unwrap()), [" -> i:0"]);
    }
}

#[test]
fn dcgm_names_labels_and_units() {
    let readings = [full_reading(3)];
    let rm = encode(
        MetricsConfig {
            vla: false,
            dcgm: true,
        },
        PollResult::Readings(&readings),
    );
    let labels =
        "gpu=3,UUID=GPU-3,device=nvidia3,modelName=NVIDIA H100 80GB HBM3,Hostname=gpu-host-1";
    let want: &[(&str, &str)] = &[
        ("DCGM_FI_DEV_GPU_UTIL", "i:43"),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", "i:20"),
        ("DCGM_FI_DEV_FB_USED", "i:30720"),
        ("DCGM_FI_DEV_FB_FREE", "i:51200"),
        ("DCGM_FI_DEV_GPU_TEMP", "i:61"),
        ("DCGM_FI_DEV_POWER_USAGE", "312.5"),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "i:1234567"),
        ("DCGM_FI_DEV_SM_CLOCK", "i:1980"),
        ("DCGM_FI_DEV_MEM_CLOCK", "i:2619"),
        ("DCGM_FI_DEV_XID_ERRORS", "i:79"),
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "i:3"),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "i:0"),
    ];
    let mut expected_names = vec!["vla.gpu.available", "vla.gpu.count"];
    expected_names.extend(want.iter().map(|(n, _)| *n));
    assert_eq!(names(&rm), expected_names, "vla names are off");
    for (name, value) in want {
        let m = metric(&rm, name).unwrap();
        assert_eq!(shape(m), ("gauge".to_owned(), ""), "{name}");
        assert_eq!(points(m), [format!("{labels} -> {value}")], "{name}");
    }
}

#[test]
fn sentinel_filters() {
    // Percent: 0..=100 kept, the u32 sentinel and impossible values dropped.
    assert_eq!(percent(0), Some(0.0));
    assert_eq!(percent(100), Some(100.0));
    assert_eq!(percent(101), None);
    assert_eq!(percent(u32::MAX), None);
    // Temperature: 0 is "not supported".
    assert_eq!(temperature_celsius(0), None);
    assert_eq!(temperature_celsius(45), Some(45.0));
    assert_eq!(temperature_celsius(u32::MAX), None);
    // Clocks: 0 is "not supported".
    assert_eq!(clock_mhz(0), None);
    assert_eq!(clock_mhz(1980), Some(1980));
    assert_eq!(clock_mhz(u32::MAX), None);
    // Power: mW → W.
    assert_eq!(milliwatts_to_watts(312_500), Some(312.5));
    assert_eq!(milliwatts_to_watts(0), None);
    assert_eq!(milliwatts_to_watts(u32::MAX), None);
    // Energy: mJ → J; past u32::MAX is a real value.
    assert_eq!(millijoules_to_joules(5_000_000_000), Some(5_000_000.0));
    assert_eq!(millijoules_to_joules(u64::MAX), None);
    // Memory.
    assert_eq!(memory_bytes(0), Some(0));
    assert_eq!(memory_bytes(u64::MAX), None);
    assert_eq!(memory_total_bytes(0), None);
    assert_eq!(memory_total_bytes(80 * GIB), Some(80 * GIB));
    assert_eq!(memory_total_bytes(u64::MAX), None);
    // Error counts.
    assert_eq!(error_count(0), Some(0));
    assert_eq!(error_count(7), Some(7));
    assert_eq!(error_count(u64::from(u32::MAX)), None);
    assert_eq!(error_count(u64::MAX), None);
}

fn yaml(text: &str) -> Result<Config, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[test]
fn config_defaults_and_full_form() {
    let c = yaml("{}").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.collection_interval, Duration::from_secs(10));
    assert_eq!(c.effective_poll_timeout(), Duration::from_secs(10));
    assert_eq!(c.open_timeout, Duration::from_secs(60));
    assert_eq!(c.source, SourceKind::Nvml);
    assert_eq!(
        c.metrics,
        MetricsConfig {
            vla: true,
            dcgm: false
        }
    );
    assert!(c.validate("receivers.nvml").is_empty());

    let c = yaml(
        "collection_interval: 2s\nsource: fake\n\
         fake: { gpus: 4, model: \"NVIDIA A100-SXM4-40GB\", memory_total_mib: 40960, scenario: overheat }\n\
         metrics: { dcgm: true }\nresource_attributes: { deployment.environment: prod }\n",
    )
    .unwrap();
    assert_eq!(c.collection_interval, Duration::from_secs(2));
    assert_eq!(c.poll_timeout, None);
    assert_eq!(c.effective_poll_timeout(), Duration::from_secs(2));
    assert_eq!(
        c.fake,
        Some(FakeConfig {
            gpus: 4,
            model: "NVIDIA A100-SXM4-40GB".into(),
            memory_total_mib: 40960,
            scenario: Scenario::Overheat,
        })
    );
    assert_eq!(
        c.metrics,
        MetricsConfig {
            vla: true,
            dcgm: true
        }
    );
    assert_eq!(
        c.resource_attributes,
        BTreeMap::from([("deployment.environment".to_owned(), "prod".to_owned())])
    );
    assert!(c.validate("receivers.nvml").is_empty());

    let c = yaml("source: fake\nfake: { scenario: memory_pressure }\n").unwrap();
    assert_eq!(c.fake_or_default().gpus, 2);
    assert_eq!(c.fake_or_default().scenario, Scenario::MemoryPressure);
    assert_eq!(
        yaml("source: fake").unwrap().fake_or_default(),
        FakeConfig::default()
    );
}

#[test]
fn config_unknown_fields_and_values_are_errors() {
    for text in [
        "interval: 10s",
        "source: dcgm",
        "metrics: { prometheus: true }",
        "source: fake\nfake: { gpu: 2 }",
        "source: fake\nfake: { scenario: meltdown }",
        "collection_interval: 10",
        "poll_timeout: 5",
        "open_timeout: 60",
    ] {
        assert!(yaml(text).is_err(), "{text}");
    }
}

#[test]
fn config_validation_reports_every_problem_with_its_path() {
    let bad = Config {
        collection_interval: Duration::ZERO,
        poll_timeout: Some(Duration::ZERO),
        open_timeout: Duration::ZERO,
        source: SourceKind::Fake,
        library_path: Some("/opt/libnvidia-ml.so.1".into()),
        fake: Some(FakeConfig {
            gpus: 65,
            model: " ".into(),
            memory_total_mib: 0,
            scenario: Scenario::Steady,
        }),
        resource_attributes: BTreeMap::from([(String::new(), "x".to_owned())]),
        ..Config::default()
    };
    let got: Vec<String> = bad
        .validate("receivers.nvml/a")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "receivers.nvml/a.collection_interval: must be at least 100ms (NVML polls are not \
             free), got 0ns; e.g. 10s",
            "receivers.nvml/a.poll_timeout: must be longer than 0, e.g. 5s (leave it out for \
             the collection interval, at most 10s)",
            "receivers.nvml/a.open_timeout: must be longer than 0, e.g. 60s (opening NVML can \
             take seconds per GPU)",
            "receivers.nvml/a.library_path: is only used with `source: nvml`",
            "receivers.nvml/a.fake.gpus: must be between 0 and 64, got 65",
            "receivers.nvml/a.fake.model: must not be empty, e.g. \"NVIDIA H100 80GB HBM3\"",
            "receivers.nvml/a.fake.memory_total_mib: must be between 1 and 16777216 (MiB), got 0",
            "receivers.nvml/a.resource_attributes: attribute names must not be empty",
        ]
    );
    let nvml_with_fake = Config {
        fake: Some(FakeConfig::default()),
        library_path: Some("".into()),
        ..Config::default()
    };
    let got: Vec<String> = nvml_with_fake
        .validate("receivers.nvml")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "receivers.nvml.fake: is only used with `source: fake`; remove it or set `source: fake`",
            "receivers.nvml.library_path: must not be empty (leave it out to load the system's \
             libnvidia-ml.so.1)",
        ]
    );
}

/// The fake's readings over ten minutes, every 5 s.
fn over_time(scenario: Scenario, index: u32) -> Vec<GpuReading> {
    let config = FakeConfig {
        scenario,
        ..FakeConfig::default()
    };
    (0..120)
        .map(|i| simulated_reading(&config, index, f64::from(i) * 5.0))
        .collect()
}

fn used_ratio(r: &GpuReading) -> f64 {
    r.memory_used_bytes.unwrap() as f64 / r.memory_total_bytes.unwrap() as f64
}

#[test]
fn fake_steady_stays_below_the_alert_thresholds_and_varies() {
    for index in 0..2 {
        let rs = over_time(Scenario::Steady, index);
        for r in &rs {
            let t = r.temperature_celsius.unwrap();
            let u = r.utilization_percent.unwrap();
            assert!((50.0..=75.0).contains(&t), "GPU {index}: {t} °C");
            assert!((35.0..=85.0).contains(&u), "GPU {index}: {u} %");
            assert!(used_ratio(r) < 0.8, "GPU {index}: {}", used_ratio(r));
            assert_eq!(r.memory_total_bytes, Some(81_559 * 1024 * 1024));
            assert_eq!(
                r.memory_used_bytes.unwrap() + r.memory_free_bytes.unwrap(),
                r.memory_total_bytes.unwrap()
            );
        }
        let temps: Vec<f64> = rs.iter().map(|r| r.temperature_celsius.unwrap()).collect();
        let min = temps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = temps.iter().copied().fold(0.0, f64::max);
        assert!(max - min >= 10.0, "temperature should vary: {min}..{max}");
        // Energy only grows.
        assert!(
            rs.windows(2)
                .all(|w| w[1].energy_joules.unwrap() > w[0].energy_joules.unwrap())
        );
    }
    // GPUs differ at the same moment.
    let config = FakeConfig::default();
    assert_ne!(
        simulated_reading(&config, 0, 30.0).utilization_percent,
        simulated_reading(&config, 1, 30.0).utilization_percent
    );
    assert_eq!(
        simulated_reading(&config, 1, 30.0),
        simulated_reading(&config, 1, 30.0),
        "deterministic"
    );
}

#[test]
fn fake_overheat_keeps_gpu0_above_85c() {
    for r in over_time(Scenario::Overheat, 0) {
        assert!(r.temperature_celsius.unwrap() > 85.0, "{r:?}");
    }
    for r in over_time(Scenario::Overheat, 1) {
        assert!(r.temperature_celsius.unwrap() < 85.0, "{r:?}");
    }
}

#[test]
fn fake_memory_pressure_keeps_gpu0_above_95_percent() {
    for r in over_time(Scenario::MemoryPressure, 0) {
        assert!(used_ratio(&r) > 0.95, "{}", used_ratio(&r));
        assert!(r.temperature_celsius.unwrap() < 85.0);
    }
    for r in over_time(Scenario::MemoryPressure, 1) {
        assert!(used_ratio(&r) < 0.95);
    }
}

#[test]
fn fake_sources_describe_and_script() {
    let sim = FakeGpuSource::new(&FakeConfig::default());
    assert_eq!(sim.describe(), "fake (2 GPUs, steady)");
    let mut s = FakeGpuSource::scripted(vec![
        Ok(vec![bare_reading(0)]),
        Err("GPU lost".into()),
        Ok(vec![bare_reading(0), bare_reading(1)]),
    ]);
    assert_eq!(s.poll().unwrap().len(), 1);
    let e = s.poll().unwrap_err();
    assert!(matches!(e, GpuError::Read { .. }));
    assert_eq!(e.to_string(), "GPU lost");
    assert_eq!(s.poll().unwrap().len(), 2);
    assert_eq!(s.poll().unwrap().len(), 2, "the last outcome repeats");
    assert_eq!(s.polls(), 4);
    assert!(FakeGpuSource::failing("x").poll().is_err());
    assert!(FakeGpuSource::scripted(Vec::new()).poll().is_err());
}

fn available(batch: &MetricBatch) -> i64 {
    let rm = &batch.resource_metrics()[0];
    let m = metric(rm, "vla.gpu.available").unwrap();
    match &m.data {
        Some(metric::Data::Gauge(g)) => match g.data_points[0].value {
            Some(number_data_point::Value::AsInt(i)) => i,
            ref v => panic!("{v:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unopenable_source_reports_unavailable_retries_and_recovers() {
    let telemetry = SelfMetrics::new();
    let id: ComponentId = "nvml".into();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    // Fails twice ("no driver"), then opens a fake with one GPU.
    let opener: Opener = Arc::new(move || {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Err(GpuError::unavailable(
                "cannot load or initialise NVML (libnvidia-ml.so.1)",
            ))
        } else {
            Ok(Box::new(FakeGpuSource::from_readings(vec![full_reading(0)])) as Box<dyn GpuSource>)
        }
    });
    let config = Config {
        collection_interval: Duration::from_millis(20),
        poll_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let hub = GpuSnapshots::new();
    let mut r = NvmlReceiver::build(
        id.clone(),
        &config,
        Slot::Closed(opener),
        "nvml".into(),
        hub.clone(),
        &telemetry,
    );
    // Retry the open every 100 ms: five polls per attempt.
    r.init_retry = Duration::from_millis(100);
    let status = r.status();
    assert_eq!(status.report().status, "pending");
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let ctx = ReceiverContext {
        output: PipelineSender::new(&id, vec![tx], Duration::from_millis(10), &telemetry),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(Box::new(r).run(ctx));

    let mut seen = Vec::new();
    while seen.last() != Some(&1) {
        let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(available(&b));
        // The second interval is the second failed attempt or a wait: failing either way.
        if seen.len() == 2 {
            let report = status.report();
            assert_eq!(report.status, "failing");
            assert_eq!(
                report.last_error.as_deref(),
                Some("cannot load or initialise NVML (libnvidia-ml.so.1)")
            );
            assert!(hub.load().gpus.is_empty());
        }
    }
    // Two failed attempts at least 100 ms apart, polled every 20 ms (or slower under load):
    // zeros, then a one.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen[..seen.len() - 1].iter().all(|&a| a == 0), "{seen:?}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "opened after the third attempt"
    );
    assert_eq!(status.report().status, "ok");
    assert_eq!(status.report().entries, 1);
    assert_eq!(
        hub.load().by_index(0).map(|g| g.uuid.as_str()),
        Some("GPU-0")
    );
    let unavailable = telemetry
        .value(
            "vla_collector_receiver_gpu_polls_total",
            &[("receiver", "nvml"), ("result", "unavailable")],
        )
        .unwrap();
    assert_eq!(unavailable, seen.len() as i64 - 1);

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.is_ok());
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "no reopen once opened");
}

#[test]
fn new_picks_the_source_from_the_config() {
    let t = SelfMetrics::new();
    let fake = Config {
        source: SourceKind::Fake,
        ..Config::default()
    };
    let r = NvmlReceiver::new("nvml".into(), &fake, GpuSnapshots::new(), &t);
    assert!(matches!(r.slot, Slot::Open(_)));
    assert!(r.reopen.is_none(), "a given source is never reopened");
    assert_eq!(r.status().report().source, "fake (2 GPUs, steady)");
    // NVML is not opened at construction, so this works without a driver.
    let real = Config {
        library_path: Some("/nonexistent/libnvidia-ml.so.1".into()),
        ..Config::default()
    };
    let r = NvmlReceiver::new("nvml/x".into(), &real, GpuSnapshots::new(), &t);
    assert!(matches!(r.slot, Slot::Closed(_)));
    assert!(r.reopen.is_some());
    assert_eq!(r.poll_timeout, Duration::from_secs(10));
    assert_eq!(
        r.open_timeout,
        Duration::from_secs(60),
        "opening NVML gets longer"
    );
    assert_eq!(
        r.status().report().source,
        "nvml (/nonexistent/libnvidia-ml.so.1)"
    );
    assert_eq!(r.init_retry, Duration::from_secs(60));
    let slow = Config {
        collection_interval: Duration::from_secs(120),
        ..Config::default()
    };
    let r = NvmlReceiver::new("nvml".into(), &slow, GpuSnapshots::new(), &t);
    assert_eq!(r.init_retry, Duration::from_secs(120));
    assert_eq!(r.poll_timeout, Duration::from_secs(10), "capped at 10 s");
    let quick = Config {
        collection_interval: Duration::from_secs(1),
        ..Config::default()
    };
    let r = NvmlReceiver::new("nvml".into(), &quick, GpuSnapshots::new(), &t);
    assert_eq!(r.poll_timeout, Duration::from_secs(1));
    let set = Config {
        poll_timeout: Some(Duration::from_secs(3)),
        ..quick
    };
    let r = NvmlReceiver::new("nvml".into(), &set, GpuSnapshots::new(), &t);
    assert_eq!(r.poll_timeout, Duration::from_secs(3));
}

#[test]
fn collection_interval_has_a_100ms_floor_and_poll_timeout_parses() {
    let at = |ms| Config {
        collection_interval: Duration::from_millis(ms),
        ..Config::default()
    };
    let got: Vec<String> = at(99)
        .validate("receivers.nvml")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "receivers.nvml.collection_interval: must be at least 100ms (NVML polls are not free), \
          got 99ms; e.g. 10s"
        ]
    );
    assert!(at(100).validate("receivers.nvml").is_empty());
    let c = yaml("collection_interval: 30s\npoll_timeout: 3s\nopen_timeout: 2m").unwrap();
    assert_eq!(c.poll_timeout, Some(Duration::from_secs(3)));
    assert_eq!(c.open_timeout, Duration::from_secs(120));
    assert_eq!(c.effective_poll_timeout(), Duration::from_secs(3));
    assert_eq!(
        yaml("collection_interval: 30s")
            .unwrap()
            .effective_poll_timeout(),
        Duration::from_secs(10)
    );
}

/// Runs a receiver that opens its source with `opener`; returns the batches' receiver, the
/// shutdown token, the task, the telemetry and the status.
fn run_with_opener(
    opener: Opener,
    config: &Config,
) -> (
    mpsc::Receiver<MetricBatch>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ReceiverError>>,
    SelfMetrics,
    SourceStatus,
) {
    let telemetry = SelfMetrics::new();
    let id: ComponentId = "nvml".into();
    let r = NvmlReceiver::build(
        id.clone(),
        config,
        Slot::Closed(opener),
        "nvml".into(),
        GpuSnapshots::new(),
        &telemetry,
    );
    let status = r.status();
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let ctx = ReceiverContext {
        output: PipelineSender::new(&id, vec![tx], Duration::from_millis(10), &telemetry),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(Box::new(r).run(ctx));
    (rx, shutdown, task, telemetry, status)
}

async fn next_available(rx: &mut mpsc::Receiver<MetricBatch>) -> i64 {
    let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    available(&b)
}

fn polls(t: &SelfMetrics, result: &str) -> i64 {
    t.value(
        "vla_collector_receiver_gpu_polls_total",
        &[("receiver", "nvml"), ("result", result)],
    )
    .unwrap_or(0)
}

#[tokio::test]
async fn repeated_failed_polls_drop_the_source_and_open_it_again() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    // The first source fails every poll (driver reloaded under it); the second one works.
    let opener: Opener = Arc::new(move || {
        let source = if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            FakeGpuSource::failing("Driver/library version mismatch")
        } else {
            FakeGpuSource::from_readings(vec![full_reading(0)])
        };
        Ok(Box::new(source) as Box<dyn GpuSource>)
    });
    let config = Config {
        collection_interval: Duration::from_millis(20),
        poll_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let (mut rx, shutdown, task, telemetry, status) = run_with_opener(opener, &config);
    let mut seen = Vec::new();
    for _ in 0..REOPEN_AFTER_FAILED_POLLS + 1 {
        seen.push(next_available(&mut rx).await);
    }
    assert_eq!(seen, [0, 0, 0, 0, 0, 1]);
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "opened again once");
    assert_eq!(polls(&telemetry, "failed"), 5);
    assert_eq!(status.report().status, "ok");
    // Working again: no further reopen.
    for _ in 0..3 {
        assert_eq!(next_available(&mut rx).await, 1);
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
}

/// An opener that blocks (like nvmlInit on a wedged driver, or a slow one) until the test
/// lets it go or `hold` passes, then opens a fake with one GPU; counts its attempts.
fn blocking_opener(hold: Duration) -> (Opener, Arc<AtomicUsize>, std::sync::mpsc::Sender<()>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let opener: Opener = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = release_rx.lock().unwrap().recv_timeout(hold);
        Ok(Box::new(FakeGpuSource::from_readings(vec![full_reading(0)])) as Box<dyn GpuSource>)
    });
    (opener, attempts, release_tx)
}

#[tokio::test]
async fn a_hung_open_times_out_starts_nothing_else_and_is_used_when_it_returns() {
    let (opener, attempts, release) = blocking_opener(Duration::from_secs(60));
    let config = Config {
        collection_interval: Duration::from_millis(20),
        poll_timeout: Some(Duration::from_millis(50)),
        // Well past the first interval's 50 ms wait, even on a loaded machine.
        open_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let (mut rx, shutdown, task, telemetry, status) = run_with_opener(opener, &config);
    // "Unavailable" while the open may still be slow, then hung.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while polls(&telemetry, "timeout") < 2 {
        assert_eq!(next_available(&mut rx).await, 0);
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported hung"
        );
    }
    let report = status.report();
    assert_eq!(report.status, "failing");
    assert_eq!(
        report.last_error.as_deref(),
        Some(
            "opening the GPU source did not return within 1s (the driver may be hung); no new \
             GPU call until it returns"
        )
    );
    assert_eq!(report.failures_total, 1, "reported hung once");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "no second open while hung"
    );
    assert!(polls(&telemetry, "unavailable") >= 1, "before open_timeout");
    release.send(()).unwrap();
    let mut seen = 0;
    while next_available(&mut rx).await == 0 {
        seen += 1;
        assert!(seen < 200, "the late open was not used");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the late open is used");
    assert_eq!(status.report().status, "ok");
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_slow_open_within_open_timeout_is_not_reported_hung() {
    // Opening takes 300 ms, six times the poll timeout, as nvmlInit can on a big host.
    let (opener, attempts, _release) = blocking_opener(Duration::from_millis(300));
    let config = Config {
        collection_interval: Duration::from_millis(20),
        poll_timeout: Some(Duration::from_millis(50)),
        ..Config::default()
    };
    let (mut rx, shutdown, task, telemetry, status) = run_with_opener(opener, &config);
    let mut zeros = 0;
    while next_available(&mut rx).await == 0 {
        zeros += 1;
        assert!(zeros < 200, "the slow open was not used");
        assert_eq!(
            status.report().status,
            "pending",
            "not failing while opening"
        );
    }
    assert!(zeros >= 1, "the first interval waited only poll_timeout");
    assert_eq!(polls(&telemetry, "unavailable"), zeros);
    assert_eq!(polls(&telemetry, "timeout"), 0);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let report = status.report();
    assert_eq!((report.status, report.failures_total), ("ok", 0));
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test]
async fn xid_totals_carry_across_a_reopen() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let xid = |total, code| GpuReading {
        xid_errors_total: Some(total),
        last_xid: Some(code),
        ..full_reading(0)
    };
    // The first source sees 2 XIDs, then fails until dropped; the second starts from 0.
    let first = vec![Ok(vec![xid(2, 79)]), Err("Unknown Error".to_owned())];
    let second = vec![Ok(vec![xid(0, 0)]), Ok(vec![xid(1, 48)])];
    let opener: Opener = Arc::new(move || {
        let script = if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            first.clone()
        } else {
            second.clone()
        };
        Ok(Box::new(FakeGpuSource::scripted(script)) as Box<dyn GpuSource>)
    });
    let config = Config {
        collection_interval: Duration::from_millis(20),
        poll_timeout: Some(Duration::from_secs(5)),
        metrics: MetricsConfig {
            vla: true,
            dcgm: true,
        },
        ..Config::default()
    };
    let (mut rx, shutdown, task, _telemetry, _status) = run_with_opener(opener, &config);
    let mut totals = Vec::new();
    while totals.len() < 3 {
        let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let rm = &b.resource_metrics()[0];
        if let Some(m) = metric(rm, "vla.gpu.xid.errors") {
            let last = points(metric(rm, "DCGM_FI_DEV_XID_ERRORS").unwrap());
            totals.push((points(m), last));
        }
    }
    let p = |v: &str| {
        vec![format!(
            "gpu_id=0,uuid=GPU-0,model_name=NVIDIA H100 80GB HBM3 -> {v}"
        )]
    };
    let d = |v: &str| {
        vec![format!(
            "gpu=0,UUID=GPU-0,device=nvidia0,modelName=NVIDIA H100 80GB HBM3,Hostname={} -> {v}",
            host_name()
        )]
    };
    assert_eq!(
        totals,
        [
            (p("i:2"), d("i:79")),
            (p("i:2"), d("i:79")), // re-opened: still 2, the last code kept
            (p("i:3"), d("i:48")),
        ]
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "re-opened once");
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
}
