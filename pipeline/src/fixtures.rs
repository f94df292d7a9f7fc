//! Builders of OTLP data for tests (feature `test-util`).

#![allow(missing_docs)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, metric, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A fixed timestamp (2026-01-01T00:00:00Z) in nanoseconds, so tests are reproducible.
pub const T0_NANOS: u64 = 1_767_225_600_000_000_000;

/// Varint values at the edges of its byte lengths (one byte, two, ten), for encoder and
/// reader tests.
pub const VARINT_EDGES: [u64; 9] = [
    0,
    1,
    127,
    128,
    300,
    16_383,
    16_384,
    u32::MAX as u64,
    u64::MAX,
];

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

pub fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| kv(k, v)).collect()
}

/// One resource with `service.name` and one scope holding `metrics`.
pub fn resource(service_name: &str, metrics: Vec<Metric>) -> ResourceMetrics {
    resource_with(&[("service.name", service_name)], metrics)
}

/// One resource with the given attributes and one scope holding `metrics`.
pub fn resource_with(resource_attrs: &[(&str, &str)], metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: attrs(resource_attrs),
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "vla-test".to_owned(),
                version: "1.0".to_owned(),
                ..Default::default()
            }),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn number_point(value: f64, labels: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: T0_NANOS - 60_000_000_000,
        time_unix_nano: T0_NANOS,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.to_owned(),
        description: format!("{name} for tests"),
        unit: unit.to_owned(),
        data: Some(data),
        metadata: Vec::new(),
    }
}

pub fn gauge(name: &str, unit: &str, points: &[(f64, &[(&str, &str)])]) -> Metric {
    metric(
        name,
        unit,
        metric::Data::Gauge(Gauge {
            data_points: points.iter().map(|(v, l)| number_point(*v, l)).collect(),
        }),
    )
}

fn sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    temporality: AggregationTemporality,
    points: &[(f64, &[(&str, &str)])],
) -> Metric {
    metric(
        name,
        unit,
        metric::Data::Sum(Sum {
            data_points: points.iter().map(|(v, l)| number_point(*v, l)).collect(),
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        }),
    )
}

pub fn cumulative_sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    points: &[(f64, &[(&str, &str)])],
) -> Metric {
    sum(
        name,
        unit,
        monotonic,
        AggregationTemporality::Cumulative,
        points,
    )
}

pub fn delta_sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    points: &[(f64, &[(&str, &str)])],
) -> Metric {
    sum(name, unit, monotonic, AggregationTemporality::Delta, points)
}

/// A cumulative histogram with one point: `bounds`, per-bucket `counts` (len = bounds + 1), `sum`.
pub fn histogram(
    name: &str,
    unit: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
    labels: &[(&str, &str)],
) -> Metric {
    histogram_with(
        name,
        unit,
        AggregationTemporality::Cumulative,
        bounds,
        counts,
        sum,
        labels,
    )
}

pub fn histogram_with(
    name: &str,
    unit: &str,
    temporality: AggregationTemporality,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
    labels: &[(&str, &str)],
) -> Metric {
    metric(
        name,
        unit,
        metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs(labels),
                start_time_unix_nano: T0_NANOS - 60_000_000_000,
                time_unix_nano: T0_NANOS,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts.to_vec(),
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
        }),
    )
}

/// A summary with one point: `quantiles` as (quantile, value), `count`, `sum`.
pub fn summary(
    name: &str,
    unit: &str,
    quantiles: &[(f64, f64)],
    count: u64,
    sum: f64,
    labels: &[(&str, &str)],
) -> Metric {
    metric(
        name,
        unit,
        metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attrs(labels),
                start_time_unix_nano: T0_NANOS - 60_000_000_000,
                time_unix_nano: T0_NANOS,
                count,
                sum,
                quantile_values: quantiles
                    .iter()
                    .map(|(q, v)| summary_data_point::ValueAtQuantile {
                        quantile: *q,
                        value: *v,
                    })
                    .collect(),
                flags: 0,
            }],
        }),
    )
}

/// One delivery of `batch` through `exporter` without the driver: prepare, then send each
/// request once, in order. The report adds what was handled while preparing, the requests
/// delivered (sent) and those refused (dropped under their reason); the first retryable
/// failure is returned as is, and so is a permanent one when it refused everything.
pub async fn export_once(
    exporter: &dyn crate::Exporter,
    batch: &crate::MetricBatch,
) -> Result<crate::ExportReport, crate::ExportError> {
    let prepared = exporter
        .prepare(batch)
        .map_err(|e| crate::ExportError::Permanent {
            reason: e.reason,
            message: e.message,
        })?;
    let mut report = prepared.done;
    let mut first_refusal = None;
    let requests = prepared.requests.len();
    let mut refused = 0;
    for r in &prepared.requests {
        match exporter.send(r).await {
            Ok(()) => report.sent += r.points,
            Err(crate::ExportError::Permanent { reason, message }) => {
                refused += 1;
                report.dropped.push((reason, r.points));
                first_refusal.get_or_insert(crate::ExportError::Permanent { reason, message });
            }
            Err(e) => return Err(e),
        }
    }
    match first_refusal {
        Some(e) if refused == requests && report.sent == 0 => Err(e),
        _ => Ok(report),
    }
}

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// A request with every field of every message of the OTLP metrics schema (each attribute
/// value kind, exemplars, summaries, exponential histograms, a metric without data), for
/// tests of what reads encoded requests.
pub fn every_field_request() -> ExportMetricsServiceRequest {
    use any_value::Value as V;
    let exemplar = Exemplar {
        filtered_attributes: attrs(&[("trace", "t")]),
        time_unix_nano: 7,
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        trace_id: vec![9; 16],
        value: Some(exemplar::Value::AsInt(-3)),
    };
    let attributes = vec![
        KeyValue {
            key: "s".into(),
            value: any(V::StringValue("ü".into())),
            key_strindex: 0,
        },
        KeyValue {
            key: "b".into(),
            value: any(V::BoolValue(true)),
            key_strindex: 3,
        },
        KeyValue {
            key: "i".into(),
            value: any(V::IntValue(-42)),
            ..Default::default()
        },
        KeyValue {
            key: "d".into(),
            value: any(V::DoubleValue(2.5)),
            ..Default::default()
        },
        KeyValue {
            key: "a".into(),
            value: any(V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::IntValue(1)),
                }],
            })),
            ..Default::default()
        },
        KeyValue {
            key: "m".into(),
            value: any(V::KvlistValue(KeyValueList {
                values: attrs(&[("k", "v")]),
            })),
            ..Default::default()
        },
        KeyValue {
            key: "y".into(),
            value: any(V::BytesValue(vec![0, 255])),
            ..Default::default()
        },
        KeyValue {
            key: "x".into(),
            value: any(V::StringValueStrindex(5)),
            ..Default::default()
        },
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
    ];
    let number = NumberDataPoint {
        attributes: attributes.clone(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: vec![exemplar.clone()],
        flags: 1,
        value: Some(number_data_point::Value::AsInt(i64::MIN)),
    };
    let histogram_point = HistogramDataPoint {
        attributes,
        start_time_unix_nano: 3,
        time_unix_nano: 4,
        count: 6,
        sum: Some(-1.5),
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![0.5, 1.0],
        exemplars: vec![exemplar],
        flags: 0,
        min: Some(0.1),
        max: Some(f64::INFINITY),
    };
    let exponential = ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint {
            scale: -2,
            zero_count: 1,
            positive: Some(Buckets {
                offset: -1,
                bucket_counts: vec![1, 2],
            }),
            ..Default::default()
        }],
        aggregation_temporality: 1,
    };
    let metrics = vec![
        Metric {
            name: "g".into(),
            description: "a gauge".into(),
            unit: "1".into(),
            metadata: attrs(&[("meta", "data")]),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![
                    number.clone(),
                    NumberDataPoint {
                        value: Some(number_data_point::Value::AsDouble(f64::NAN)),
                        ..NumberDataPoint::default()
                    },
                ],
            })),
        },
        Metric {
            name: "s".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![number],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "h".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![histogram_point],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        },
        Metric {
            name: "e".into(),
            data: Some(metric::Data::ExponentialHistogram(exponential)),
            ..Default::default()
        },
        summary("q", "ms", &[(0.5, 2.0)], 4, 9.0, &[("x", "y")]),
        Metric {
            name: "no data".into(),
            ..Default::default()
        },
    ];
    let mut rm = resource_with(&[("service.name", "api")], metrics);
    rm.schema_url = "https://schema/1".into();
    rm.scope_metrics[0].schema_url = "https://schema/2".into();
    rm.scope_metrics[0].scope = Some(InstrumentationScope {
        name: "scope".into(),
        version: "1.0".into(),
        attributes: attrs(&[("a", "b")]),
        dropped_attributes_count: 2,
    });
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            rm,
            ResourceMetrics::default(),
            resource(
                "other",
                vec![
                    delta_sum("d", "", true, &[(1.0, &[("a", "b")])]),
                    histogram("lat", "s", &[0.1], &[1, 2], 0.3, &[("m", "x")]),
                ],
            ),
        ],
    }
}

/// Random damage to encoded requests, for differential tests of what reads them: each call
/// flips, overwrites, inserts, deletes, duplicates or truncates bytes, one to three times.
/// Deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Damage(u64);

impl Damage {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A number below `n` (xorshift).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    /// A damaged copy of `bytes` (never empty).
    pub fn damage(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        if bytes.is_empty() {
            bytes.push(0x0a);
        }
        for _ in 0..=self.below(3) {
            let at = self.below(bytes.len());
            let last = at.min(bytes.len() - 1);
            match self.below(6) {
                0 => bytes[last] ^= 1 << self.below(8),
                1 => bytes[last] = self.below(256) as u8,
                2 => bytes.insert(at, self.below(256) as u8),
                3 => {
                    let end = (at + self.below(16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                4 => {
                    let end = (at + self.below(64)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    let to = self.below(bytes.len());
                    bytes.splice(to..to, copy);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                bytes.push(0x0a);
            }
        }
        bytes
    }
}
