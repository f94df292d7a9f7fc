//! GPU readings → OTLP metrics, under the names the exporter's standard OTel→Prometheus
//! translation turns into the catalogue's (`vla.gpu.temperature`, unit `Cel` →
//! `vla_gpu_temperature_celsius`) and, optionally, the DCGM exporter's names verbatim (their
//! unit is left empty so the translation adds no suffix).
//!
//! A field the GPU does not report (`None`) produces no point at all, never a 0, and a metric
//! with no point is left out.
//!
//! Every cumulative sum starts at the receiver's start (`start_time_unix_nano`), also energy
//! and ECC errors, which NVML counts since the driver loaded: NVML does not tell when that
//! was. Their first point therefore holds everything since the driver loaded (see the module
//! doc of `nvml`).
//!
//! The resource carries `service.instance.id` = the host name (Prometheus' `instance`), so
//! hosts stay apart even for the series without GPU labels.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vla_pipeline::gpu::GpuReading;

use super::config::MetricsConfig;

/// The instrumentation scope of every metric this receiver makes.
pub(crate) const SCOPE_NAME: &str = "vla-collector/nvml";

const MIB: u64 = 1024 * 1024;

/// A point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    F(f64),
    I(i64),
}

impl Num {
    fn int(v: u64) -> Self {
        Num::I(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// How a metric is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    /// A monotonic cumulative sum (a Prometheus counter, `_total`).
    Counter,
}

/// One metric read from every GPU.
struct Def {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    kind: Kind,
    value: fn(&GpuReading) -> Option<Num>,
}

/// The `vla.gpu.*` metrics with one point per GPU (ECC errors, with two, are separate). The
/// first four are the catalogue's, name, unit, description and value type alike.
const VLA: &[Def] = &[
    Def {
        name: "vla.gpu.utilization",
        unit: "%",
        description: "GPU compute utilization, 0 to 100.",
        kind: Kind::Gauge,
        value: |r| r.utilization_percent.map(Num::F),
    },
    Def {
        name: "vla.gpu.temperature",
        unit: "Cel",
        description: "GPU core temperature.",
        kind: Kind::Gauge,
        value: |r| r.temperature_celsius.map(Num::F),
    },
    Def {
        name: "vla.gpu.memory.used",
        unit: "By",
        description: "GPU memory in use.",
        kind: Kind::Gauge,
        value: |r| r.memory_used_bytes.map(Num::int),
    },
    Def {
        name: "vla.gpu.memory.total",
        unit: "By",
        description: "GPU memory installed.",
        kind: Kind::Gauge,
        value: |r| r.memory_total_bytes.map(Num::int),
    },
    Def {
        name: "vla.gpu.memory.utilization",
        unit: "%",
        description: "GPU memory-controller utilization (time spent reading or writing), 0 to 100.",
        kind: Kind::Gauge,
        value: |r| r.memory_utilization_percent.map(Num::F),
    },
    Def {
        name: "vla.gpu.power",
        unit: "W",
        description: "GPU power draw.",
        kind: Kind::Gauge,
        value: |r| r.power_watts.map(Num::F),
    },
    Def {
        name: "vla.gpu.energy",
        unit: "J",
        description: "GPU energy consumed since the driver loaded.",
        kind: Kind::Counter,
        value: |r| r.energy_joules.map(Num::F),
    },
    Def {
        name: "vla.gpu.clock.sm",
        unit: "Hz",
        description: "GPU streaming-multiprocessor clock.",
        kind: Kind::Gauge,
        value: |r| {
            r.sm_clock_mhz
                .map(|mhz| Num::int(u64::from(mhz) * 1_000_000))
        },
    },
    Def {
        name: "vla.gpu.clock.memory",
        unit: "Hz",
        description: "GPU memory clock.",
        kind: Kind::Gauge,
        value: |r| {
            r.memory_clock_mhz
                .map(|mhz| Num::int(u64::from(mhz) * 1_000_000))
        },
    },
    Def {
        name: "vla.gpu.xid.errors",
        unit: "{error}",
        description: "Critical XID errors the GPU reported since the receiver started.",
        kind: Kind::Counter,
        value: |r| r.xid_errors_total.map(Num::int),
    },
];

/// `vla.gpu.ecc.errors`, with `error_type=corrected|uncorrected`.
const ECC_NAME: &str = "vla.gpu.ecc.errors";

/// The DCGM exporter's fields, as gauges with an empty unit (the names already say it).
const DCGM: &[Def] = &[
    Def {
        name: "DCGM_FI_DEV_GPU_UTIL",
        unit: "",
        description: "GPU utilization (in %).",
        kind: Kind::Gauge,
        value: |r| r.utilization_percent.map(|v| Num::I(v.round() as i64)),
    },
    Def {
        name: "DCGM_FI_DEV_MEM_COPY_UTIL",
        unit: "",
        description: "Memory utilization (in %).",
        kind: Kind::Gauge,
        value: |r| {
            r.memory_utilization_percent
                .map(|v| Num::I(v.round() as i64))
        },
    },
    Def {
        name: "DCGM_FI_DEV_FB_USED",
        unit: "",
        description: "Framebuffer memory used (in MiB).",
        kind: Kind::Gauge,
        value: |r| r.memory_used_bytes.map(|b| Num::int(b / MIB)),
    },
    Def {
        name: "DCGM_FI_DEV_FB_FREE",
        unit: "",
        description: "Framebuffer memory free (in MiB).",
        kind: Kind::Gauge,
        value: |r| r.memory_free_bytes.map(|b| Num::int(b / MIB)),
    },
    Def {
        name: "DCGM_FI_DEV_GPU_TEMP",
        unit: "",
        description: "GPU temperature (in C).",
        kind: Kind::Gauge,
        value: |r| r.temperature_celsius.map(|v| Num::I(v.round() as i64)),
    },
    Def {
        name: "DCGM_FI_DEV_POWER_USAGE",
        unit: "",
        description: "Power draw (in W).",
        kind: Kind::Gauge,
        value: |r| r.power_watts.map(Num::F),
    },
    Def {
        name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        unit: "",
        description: "Total energy consumption since boot (in mJ).",
        kind: Kind::Gauge,
        value: |r| r.energy_joules.map(|j| Num::I((j * 1000.0).round() as i64)),
    },
    Def {
        name: "DCGM_FI_DEV_SM_CLOCK",
        unit: "",
        description: "SM clock frequency (in MHz).",
        kind: Kind::Gauge,
        value: |r| r.sm_clock_mhz.map(|v| Num::I(i64::from(v))),
    },
    Def {
        name: "DCGM_FI_DEV_MEM_CLOCK",
        unit: "",
        description: "Memory clock frequency (in MHz).",
        kind: Kind::Gauge,
        value: |r| r.memory_clock_mhz.map(|v| Num::I(i64::from(v))),
    },
    Def {
        name: "DCGM_FI_DEV_XID_ERRORS",
        unit: "",
        description: "Value of the last XID error encountered.",
        kind: Kind::Gauge,
        value: |r| r.last_xid.map(Num::int),
    },
    Def {
        name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        unit: "",
        description: "Total number of single-bit volatile ECC errors.",
        kind: Kind::Gauge,
        value: |r| r.ecc_corrected_total.map(Num::int),
    },
    Def {
        name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        unit: "",
        description: "Total number of double-bit volatile ECC errors.",
        kind: Kind::Gauge,
        value: |r| r.ecc_uncorrected_total.map(Num::int),
    },
];

/// Builds one poll's OTLP data.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    metrics: MetricsConfig,
    resource: Resource,
    host_name: String,
    /// When the receiver started: the start of every cumulative sum, including those NVML
    /// counts since the driver loaded (energy, ECC errors).
    start_unix_nanos: u64,
}

/// What one poll found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PollResult<'a> {
    /// The source answered (possibly with no GPU).
    Readings(&'a [GpuReading]),
    /// No driver, no GPU, or the poll failed.
    Unavailable,
}

impl Encoder {
    /// An encoder for a receiver started at `started`, on host `host_name`, with
    /// `extra_resource_attributes` over the defaults.
    pub(crate) fn new<'a>(
        metrics: MetricsConfig,
        host_name: &str,
        extra_resource_attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
        started: SystemTime,
    ) -> Self {
        let mut attributes = vec![str_kv("service.name", "vla-collector")];
        if !host_name.is_empty() {
            attributes.push(str_kv("host.name", host_name));
            // The exporters' `instance` label: one per host, also for vla.gpu.available.
            attributes.push(str_kv("service.instance.id", host_name));
        }
        for (k, v) in extra_resource_attributes {
            match attributes.iter_mut().find(|kv| kv.key == k) {
                Some(kv) => *kv = str_kv(k, v),
                None => attributes.push(str_kv(k, v)),
            }
        }
        Self {
            metrics,
            resource: Resource {
                attributes,
                ..Resource::default()
            },
            host_name: host_name.to_owned(),
            start_unix_nanos: unix_nanos(started),
        }
    }

    /// One poll's metrics, stamped `at`.
    pub(crate) fn encode(&self, result: PollResult<'_>, at: SystemTime) -> ResourceMetrics {
        let now = unix_nanos(at);
        let readings = match result {
            PollResult::Readings(r) => r,
            PollResult::Unavailable => &[],
        };
        let available = matches!(result, PollResult::Readings(r) if !r.is_empty());
        let mut metrics = vec![
            gauge(
                "vla.gpu.available",
                "",
                "1 while the GPUs can be read, 0 without a driver or GPU or when reading fails.",
                vec![point(Vec::new(), 0, now, Num::I(i64::from(available)))],
            ),
            gauge(
                "vla.gpu.count",
                "{gpu}",
                "GPUs seen by the latest poll.",
                vec![point(Vec::new(), 0, now, Num::int(readings.len() as u64))],
            ),
        ];
        if self.metrics.vla && !readings.is_empty() {
            let attrs: Vec<Vec<KeyValue>> = readings.iter().map(vla_attributes).collect();
            self.push_defs(&mut metrics, VLA, readings, &attrs, now);
            let mut ecc = Vec::new();
            for (r, a) in readings.iter().zip(&attrs) {
                for (error_type, v) in [
                    ("corrected", r.ecc_corrected_total),
                    ("uncorrected", r.ecc_uncorrected_total),
                ] {
                    if let Some(v) = v {
                        let mut a = a.clone();
                        a.push(str_kv("error_type", error_type));
                        ecc.push(point(a, self.start_unix_nanos, now, Num::int(v)));
                    }
                }
            }
            if !ecc.is_empty() {
                metrics.push(counter(
                    ECC_NAME,
                    "{error}",
                    "ECC memory errors since the driver loaded (volatile counters), by error_type.",
                    ecc,
                ));
            }
        }
        if self.metrics.dcgm && !readings.is_empty() {
            let attrs: Vec<Vec<KeyValue>> = readings
                .iter()
                .map(|r| dcgm_attributes(r, &self.host_name))
                .collect();
            self.push_defs(&mut metrics, DCGM, readings, &attrs, now);
        }
        ResourceMetrics {
            resource: Some(self.resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn push_defs(
        &self,
        out: &mut Vec<Metric>,
        defs: &[Def],
        readings: &[GpuReading],
        attrs: &[Vec<KeyValue>],
        now: u64,
    ) {
        for def in defs {
            let start = match def.kind {
                Kind::Gauge => 0,
                Kind::Counter => self.start_unix_nanos,
            };
            let points: Vec<NumberDataPoint> = readings
                .iter()
                .zip(attrs)
                .filter_map(|(r, a)| (def.value)(r).map(|v| point(a.clone(), start, now, v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            out.push(match def.kind {
                Kind::Gauge => gauge(def.name, def.unit, def.description, points),
                Kind::Counter => counter(def.name, def.unit, def.description, points),
            });
        }
    }
}

/// `gpu_id`, `uuid`, `model_name` (the last two only when known).
fn vla_attributes(r: &GpuReading) -> Vec<KeyValue> {
    let mut a = vec![str_kv("gpu_id", &r.index.to_string())];
    if !r.uuid.is_empty() {
        a.push(str_kv("uuid", &r.uuid));
    }
    if !r.model.is_empty() {
        a.push(str_kv("model_name", &r.model));
    }
    a
}

/// DCGM exporter's labels: `gpu`, `UUID`, `device`, `modelName`, `Hostname`.
fn dcgm_attributes(r: &GpuReading, host_name: &str) -> Vec<KeyValue> {
    let mut a = vec![str_kv("gpu", &r.index.to_string())];
    if !r.uuid.is_empty() {
        a.push(str_kv("UUID", &r.uuid));
    }
    a.push(str_kv("device", &format!("nvidia{}", r.index)));
    if !r.model.is_empty() {
        a.push(str_kv("modelName", &r.model));
    }
    if !host_name.is_empty() {
        a.push(str_kv("Hostname", host_name));
    }
    a
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn point(attributes: Vec<KeyValue>, start: u64, now: u64, v: Num) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(match v {
            Num::F(f) => number_data_point::Value::AsDouble(f),
            Num::I(i) => number_data_point::Value::AsInt(i),
        }),
        ..NumberDataPoint::default()
    }
}

fn gauge(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        metadata: Vec::new(),
    }
}

fn counter(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        metadata: Vec::new(),
    }
}

pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
