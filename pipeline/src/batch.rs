//! `MetricBatch`: the currency between pipeline stages.
//!
//! A batch is OTLP `ResourceMetrics` plus metadata. Processors mutate it in place through the
//! small API here (visit data points with their metric and attributes; read, upsert or remove
//! an attribute) rather than poking proto fields everywhere, so the representation can become
//! cheaper later without rewriting every processor.

use std::time::SystemTime;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::ComponentId;
use crate::ack::{Ack, Acks};
use crate::memory::{MemoryLimiter, Reservation};

/// Where a batch came from and what it holds.
#[derive(Debug, Clone)]
pub struct BatchMeta {
    /// The receiver that accepted it.
    pub source: ComponentId,
    /// When the receiver accepted it.
    pub received_at: SystemTime,
}

/// A unit of metric data travelling through a pipeline.
#[derive(Debug, Clone)]
pub struct MetricBatch {
    resource_metrics: Vec<ResourceMetrics>,
    data_points: usize,
    meta: BatchMeta,
    /// The bytes memory limiters hold for it (one per limiter), given back when it is
    /// dropped.
    reservations: Vec<Reservation>,
    /// The acknowledgements of the requests whose data it carries, when a durable exporter
    /// must persist it before the clients are answered ([`crate::ack`]).
    acks: Acks,
}

/// The OTLP shape of a metric, as far as processors and exporters need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A gauge.
    Gauge,
    /// A sum (monotonic or not, cumulative or delta).
    Sum,
    /// An explicit-bucket histogram.
    Histogram,
    /// An exponential histogram.
    ExponentialHistogram,
    /// A summary.
    Summary,
    /// A metric with no data.
    Empty,
}

/// What a point visitor can see of the point's surroundings.
#[derive(Debug, Clone, Copy)]
pub struct PointContext<'a> {
    /// The resource the point belongs to (may be absent in OTLP).
    pub resource: Option<&'a Resource>,
    /// The metric's name, as sent.
    pub metric_name: &'a str,
    /// The metric's unit, as sent.
    pub metric_unit: &'a str,
    /// The metric's kind.
    pub kind: MetricKind,
}

impl MetricBatch {
    /// Wraps OTLP data accepted by `source`, counting its data points once.
    pub fn new(source: ComponentId, resource_metrics: Vec<ResourceMetrics>) -> Self {
        let data_points = count_data_points(&resource_metrics);
        Self {
            resource_metrics,
            data_points,
            meta: BatchMeta {
                source,
                received_at: SystemTime::now(),
            },
            reservations: Vec::new(),
            acks: Acks::none(),
        }
    }

    /// The same batch, as if accepted at `at` (replays, tests of time-based state).
    pub fn with_received_at(mut self, at: SystemTime) -> Self {
        self.meta.received_at = at;
        self
    }

    /// The OTLP data, read-only.
    pub fn resource_metrics(&self) -> &[ResourceMetrics] {
        &self.resource_metrics
    }

    /// The OTLP data for structural edits; the point count is refreshed when the guard is
    /// dropped, so it can never go stale.
    pub fn resource_metrics_mut(&mut self) -> ResourceMetricsMut<'_> {
        ResourceMetricsMut { batch: self }
    }

    /// Gives the OTLP data back.
    pub fn into_resource_metrics(self) -> Vec<ResourceMetrics> {
        self.resource_metrics
    }

    /// Number of OTLP data points (a histogram point counts once).
    pub fn data_points(&self) -> usize {
        self.data_points
    }

    /// Whether the batch holds no data points.
    pub fn is_empty(&self) -> bool {
        self.data_points == 0
    }

    /// Where the batch came from.
    pub fn meta(&self) -> &BatchMeta {
        &self.meta
    }

    /// Moves all of `other`'s data, and the memory it holds, into this batch (used by the
    /// batcher).
    pub fn append(&mut self, other: MetricBatch) {
        self.data_points += other.data_points;
        self.resource_metrics.extend(other.resource_metrics);
        for r in other.reservations {
            self.hold(r);
        }
        self.acks.extend(other.acks);
    }

    /// Makes the batch carry `ack` until it is persisted (or dropped).
    pub fn carry_ack(&mut self, ack: Ack) {
        self.acks.push(ack);
    }

    /// Takes the acknowledgements out (the pipeline hands them to durable exporters only).
    pub fn take_acks(&mut self) -> Acks {
        std::mem::take(&mut self.acks)
    }

    /// Makes the batch hold `reservation` until it is dropped (merged with one it already
    /// holds on the same limiter).
    pub fn hold(&mut self, reservation: Reservation) {
        match self
            .reservations
            .iter_mut()
            .find(|r| r.same_limiter(&reservation))
        {
            Some(held) => held.absorb(reservation),
            None => self.reservations.push(reservation),
        }
    }

    /// The bytes `limiter` holds for this batch.
    pub fn held_bytes(&self, limiter: &std::sync::Arc<MemoryLimiter>) -> u64 {
        self.reservations
            .iter()
            .filter(|r| r.is_on(limiter))
            .map(Reservation::bytes)
            .sum()
    }

    /// What the batch holds in memory, estimated from its decoded data (every vector's and
    /// string's capacity plus an allocator overhead each; [`crate::memory::heap_bytes`]).
    pub fn memory_bytes(&self) -> u64 {
        (crate::memory::heap_bytes(&self.resource_metrics) + size_of::<MetricBatch>()) as u64
    }

    /// The protobuf-encoded size, an estimate of the memory the batch holds.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        self.resource_metrics
            .iter()
            .map(|rm| rm.encoded_len())
            .sum()
    }

    /// Visits every data point with its context and a mutable view of its attributes.
    pub fn for_each_point_mut(&mut self, mut f: impl FnMut(PointContext<'_>, &mut Vec<KeyValue>)) {
        for rm in &mut self.resource_metrics {
            let resource = rm.resource.as_ref();
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    let Metric {
                        name, unit, data, ..
                    } = m;
                    let kind = kind_of(data.as_ref());
                    let ctx = PointContext {
                        resource,
                        metric_name: name,
                        metric_unit: unit,
                        kind,
                    };
                    match data {
                        Some(metric::Data::Gauge(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| f(ctx, &mut p.attributes)),
                        Some(metric::Data::Sum(s)) => s
                            .data_points
                            .iter_mut()
                            .for_each(|p| f(ctx, &mut p.attributes)),
                        Some(metric::Data::Histogram(h)) => h
                            .data_points
                            .iter_mut()
                            .for_each(|p| f(ctx, &mut p.attributes)),
                        Some(metric::Data::ExponentialHistogram(h)) => h
                            .data_points
                            .iter_mut()
                            .for_each(|p| f(ctx, &mut p.attributes)),
                        Some(metric::Data::Summary(s)) => s
                            .data_points
                            .iter_mut()
                            .for_each(|p| f(ctx, &mut p.attributes)),
                        None => {}
                    }
                }
            }
        }
    }
}

/// A guard over the batch's OTLP data; recounts data points when dropped.
pub struct ResourceMetricsMut<'a> {
    batch: &'a mut MetricBatch,
}

impl std::ops::Deref for ResourceMetricsMut<'_> {
    type Target = Vec<ResourceMetrics>;
    fn deref(&self) -> &Self::Target {
        &self.batch.resource_metrics
    }
}

impl std::ops::DerefMut for ResourceMetricsMut<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.batch.resource_metrics
    }
}

impl Drop for ResourceMetricsMut<'_> {
    fn drop(&mut self) {
        self.batch.data_points = count_data_points(&self.batch.resource_metrics);
    }
}

/// The kind of a metric's data.
pub fn kind_of(data: Option<&metric::Data>) -> MetricKind {
    match data {
        Some(metric::Data::Gauge(_)) => MetricKind::Gauge,
        Some(metric::Data::Sum(_)) => MetricKind::Sum,
        Some(metric::Data::Histogram(_)) => MetricKind::Histogram,
        Some(metric::Data::ExponentialHistogram(_)) => MetricKind::ExponentialHistogram,
        Some(metric::Data::Summary(_)) => MetricKind::Summary,
        None => MetricKind::Empty,
    }
}

/// Number of data points in one metric.
pub fn metric_data_points(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Number of data points in OTLP data.
pub fn count_data_points(rms: &[ResourceMetrics]) -> usize {
    rms.iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(metric_data_points)
        .sum()
}

/// Reads a string attribute.
pub fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// Sets a string attribute, replacing any existing value of that key (without allocating when
/// it already holds `value`).
pub fn upsert_str(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    let new_value = || {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        })
    };
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => {
            let same = matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(s)) if s == value
            );
            if !same {
                kv.value = new_value();
            }
        }
        None => attrs.push(KeyValue {
            key: key.to_owned(),
            value: new_value(),
            ..Default::default()
        }),
    }
}

/// Removes an attribute, returning its value.
pub fn remove_attr(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let idx = attrs.iter().position(|kv| kv.key == key)?;
    attrs.remove(idx).value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn counts_points_and_recounts_after_structural_edit() {
        let rms = vec![fixtures::resource(
            "api",
            vec![
                fixtures::gauge("g", "1", &[(1.0, &[("a", "x")]), (2.0, &[("a", "y")])]),
                fixtures::cumulative_sum("c", "", true, &[(3.0, &[])]),
            ],
        )];
        let mut batch = MetricBatch::new("otlp".into(), rms);
        assert_eq!(batch.data_points(), 3);
        batch.resource_metrics_mut()[0].scope_metrics[0]
            .metrics
            .pop();
        assert_eq!(batch.data_points(), 2);
        let other = batch.clone();
        batch.append(other);
        assert_eq!(batch.data_points(), 4);
    }

    #[test]
    fn visits_points_with_context_and_edits_attributes() {
        let rms = vec![fixtures::resource(
            "api",
            vec![fixtures::gauge("temp", "Cel", &[(1.0, &[("gpu_id", "0")])])],
        )];
        let mut batch = MetricBatch::new("otlp".into(), rms);
        let mut seen = Vec::new();
        batch.for_each_point_mut(|ctx, attrs| {
            seen.push((
                ctx.metric_name.to_owned(),
                ctx.metric_unit.to_owned(),
                ctx.kind,
            ));
            upsert_str(attrs, "gpu_model", "H100");
            upsert_str(attrs, "gpu_id", "1");
            assert!(remove_attr(attrs, "missing").is_none());
        });
        assert_eq!(
            seen,
            vec![("temp".to_owned(), "Cel".to_owned(), MetricKind::Gauge)]
        );
        batch.for_each_point_mut(|_, attrs| {
            assert_eq!(attr_str(attrs, "gpu_model"), Some("H100"));
            assert_eq!(attr_str(attrs, "gpu_id"), Some("1"));
            assert_eq!(attrs.len(), 2);
        });
    }
}
