//! Builders of OTLP data for tests (feature `test-util`).

#![allow(missing_docs)]

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point,
    summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A fixed timestamp (2026-01-01T00:00:00Z) in nanoseconds, so tests are reproducible.
pub const T0_NANOS: u64 = 1_767_225_600_000_000_000;

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
