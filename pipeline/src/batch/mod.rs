//! `MetricBatch`: the currency between pipeline stages.
//!
//! A batch is OTLP `ResourceMetrics` plus metadata. Processors mutate it in place through the
//! small API here (visit data points with their metric and attributes; read, upsert or remove
//! an attribute) rather than poking proto fields everywhere, so the representation can become
//! cheaper later without rewriting every processor.
//!
//! A batch a receiver accepted as protobuf stays encoded, as the request's bytes, until a
//! stage reads it ([`MetricBatch::from_request`]): the receiver only checks the bytes
//! ([`scan`]), batches merge by concatenating them (two encoded requests one after the other
//! are one request holding both), and a batch that passes only through stages that do not
//! look inside (`batch`, `deltatocumulative` when it holds no delta) waits in the queues at
//! its encoded size (about a fifth of the decoded one). A reader can walk the bytes
//! ([`MetricBatch::encoded_requests`], as the remote-write exporter does); the first read of
//! the decoded data decodes it once; a change drops the bytes, and the decoded data is the
//! batch from then on.

mod scan;

use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::Bytes;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, ResourceMetrics, metric,
};
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
    /// The data as received: encoded `ExportMetricsServiceRequest`s (checked by [`scan`]) that
    /// together are the batch. While there are any, they are the batch and `decoded` caches
    /// their decode; when there are none, `decoded` is the batch (unset: empty).
    encoded: Vec<Bytes>,
    /// Whether `encoded` holds a delta sum or histogram.
    encoded_delta: bool,
    decoded: OnceLock<Vec<ResourceMetrics>>,
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
            encoded: Vec::new(),
            encoded_delta: false,
            decoded: OnceLock::from(resource_metrics),
            data_points,
            meta: BatchMeta {
                source,
                received_at: SystemTime::now(),
            },
            reservations: Vec::new(),
            acks: Acks::none(),
        }
    }

    /// A batch of an encoded `ExportMetricsServiceRequest` accepted by `source`: kept encoded
    /// when [`scan`] finds it plain, else decoded now, with prost's error when it does not
    /// decode. The batch holds `request` (a `Bytes` shares its buffer: hand in one that owns
    /// no more than the request, or the memory estimate misses the rest).
    pub fn from_request(source: ComponentId, request: Bytes) -> Result<Self, prost::DecodeError> {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use prost::Message;
        match scan::scan(&request) {
            Some(scan) => {
                let mut batch = Self::new(source, Vec::new());
                batch.decoded = OnceLock::new();
                batch.data_points = scan.points;
                batch.encoded_delta = scan.has_delta;
                if scan.points > 0 {
                    batch.encoded.push(request);
                }
                Ok(batch)
            }
            None => {
                let decoded = ExportMetricsServiceRequest::decode(request)?;
                Ok(Self::new(source, decoded.resource_metrics))
            }
        }
    }

    /// The same batch, as if accepted at `at` (replays, tests of time-based state).
    pub fn with_received_at(mut self, at: SystemTime) -> Self {
        self.meta.received_at = at;
        self
    }

    /// The OTLP data, read-only (decoded on the first read of an encoded batch, once).
    pub fn resource_metrics(&self) -> &[ResourceMetrics] {
        self.decoded.get_or_init(|| decode(&self.encoded))
    }

    /// The OTLP data for structural edits; the point count is refreshed when the guard is
    /// dropped, so it can never go stale.
    pub fn resource_metrics_mut(&mut self) -> ResourceMetricsMut<'_> {
        let rms = self.take_decoded();
        ResourceMetricsMut { batch: self, rms }
    }

    /// Gives the OTLP data back.
    pub fn into_resource_metrics(self) -> Vec<ResourceMetrics> {
        match self.decoded.into_inner() {
            Some(rms) => rms,
            None => decode(&self.encoded),
        }
    }

    /// Whether the batch is still held as the encoded request(s) it was received as.
    pub fn is_encoded(&self) -> bool {
        !self.encoded.is_empty()
    }

    /// The encoded `ExportMetricsServiceRequest`s of a batch still held encoded, in order
    /// (their concatenated `resource_metrics` are [`MetricBatch::resource_metrics`]); `None`
    /// once it is decoded for a change. Each one is known to decode with prost ([`scan`]),
    /// so a reader that follows prost's rules can walk them without checking again.
    pub fn encoded_requests(&self) -> Option<&[Bytes]> {
        self.is_encoded().then_some(self.encoded.as_slice())
    }

    /// Whether a sum or histogram in it has delta temporality (known without decoding an
    /// encoded batch).
    pub fn has_delta(&self) -> bool {
        if self.is_encoded() {
            return self.encoded_delta;
        }
        self.resource_metrics()
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .any(is_delta)
    }

    /// The decoded data, taken out to be changed: the encoded bytes are let go (the decoded
    /// data is the batch from now on) and the memory held for the batch grows to its decoded
    /// size.
    fn take_decoded(&mut self) -> Vec<ResourceMetrics> {
        let rms = match self.decoded.take() {
            Some(rms) => rms,
            None => decode(&self.encoded),
        };
        if self.is_encoded() {
            let before = self.memory_bytes();
            self.encoded = Vec::new();
            self.encoded_delta = false;
            let after = (crate::memory::heap_bytes(&rms) + size_of::<MetricBatch>()) as u64;
            for r in &mut self.reservations {
                r.grow(after.saturating_sub(before));
            }
        }
        rms
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
    pub fn append(&mut self, mut other: MetricBatch) {
        self.data_points += other.data_points;
        let other_is_empty =
            !other.is_encoded() && other.decoded.get().is_none_or(|rms| rms.is_empty());
        if self.is_encoded() && other.is_encoded() {
            // One request after another is one request with both.
            self.encoded.append(&mut other.encoded);
            self.encoded_delta |= other.encoded_delta;
            self.decoded = OnceLock::new();
        } else if !other_is_empty {
            let mut rms = self.take_decoded();
            rms.extend(other.take_decoded());
            self.decoded = OnceLock::from(rms);
        }
        for r in std::mem::take(&mut other.reservations) {
            self.hold(r);
        }
        self.acks.extend(std::mem::take(&mut other.acks));
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

    /// What the batch holds in memory: its encoded bytes, and its decoded data estimated
    /// (every vector's and string's capacity plus an allocator overhead each;
    /// [`crate::memory::heap_bytes`]). The decode of an encoded batch that is only read (by
    /// an exporter) is not accounted: it lives while the exporter prepares its requests.
    pub fn memory_bytes(&self) -> u64 {
        let encoded: usize = self
            .encoded
            .iter()
            .map(|b| b.len() + crate::memory::ALLOC_OVERHEAD)
            .sum::<usize>()
            + self.encoded.capacity() * size_of::<Bytes>();
        let decoded = match (self.is_encoded(), self.decoded.get()) {
            (false, Some(rms)) => crate::memory::heap_bytes(rms),
            _ => 0,
        };
        (encoded + decoded + size_of::<MetricBatch>()) as u64
    }

    /// The protobuf-encoded size.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        if self.is_encoded() {
            return self.encoded.iter().map(Bytes::len).sum();
        }
        self.resource_metrics()
            .iter()
            .map(|rm| rm.encoded_len())
            .sum()
    }

    /// Visits every data point with its context and a mutable view of its attributes.
    pub fn for_each_point_mut(&mut self, mut f: impl FnMut(PointContext<'_>, &mut Vec<KeyValue>)) {
        let mut rms = self.take_decoded();
        for_each_point(&mut rms, &mut f);
        self.decoded = OnceLock::from(rms);
    }
}

fn for_each_point(
    rms: &mut [ResourceMetrics],
    f: &mut impl FnMut(PointContext<'_>, &mut Vec<KeyValue>),
) {
    {
        for rm in rms {
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
    /// The data, out of the batch while the guard lives.
    rms: Vec<ResourceMetrics>,
}

impl std::ops::Deref for ResourceMetricsMut<'_> {
    type Target = Vec<ResourceMetrics>;
    fn deref(&self) -> &Self::Target {
        &self.rms
    }
}

impl std::ops::DerefMut for ResourceMetricsMut<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rms
    }
}

impl Drop for ResourceMetricsMut<'_> {
    fn drop(&mut self) {
        self.batch.data_points = count_data_points(&self.rms);
        self.batch.decoded = OnceLock::from(std::mem::take(&mut self.rms));
    }
}

/// Decodes encoded requests that [`scan`] found plain (so prost decodes them).
fn decode(encoded: &[Bytes]) -> Vec<ResourceMetrics> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    let mut rms = Vec::new();
    for request in encoded {
        match ExportMetricsServiceRequest::decode(request.as_ref()) {
            Ok(r) if rms.is_empty() => rms = r.resource_metrics,
            Ok(r) => rms.extend(r.resource_metrics),
            // Not reached: the scan accepts only what prost decodes
            // (`scan::tests::agrees_with_prost_on_mutated_requests`).
            Err(e) => tracing::error!(
                error = %e,
                bytes = request.len(),
                "an accepted request no longer decodes; its data is lost (a bug: please report it)"
            ),
        }
    }
    rms
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

/// Whether a metric is a sum or histogram of delta temporality (what `deltatocumulative`
/// converts).
pub fn is_delta(m: &Metric) -> bool {
    const DELTA: i32 = AggregationTemporality::Delta as i32;
    match &m.data {
        Some(metric::Data::Sum(s)) => s.aggregation_temporality == DELTA,
        Some(metric::Data::Histogram(h)) => h.aggregation_temporality == DELTA,
        Some(metric::Data::ExponentialHistogram(h)) => h.aggregation_temporality == DELTA,
        _ => false,
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
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;

    use super::*;
    use crate::fixtures;

    fn request(rms: Vec<ResourceMetrics>) -> Bytes {
        ExportMetricsServiceRequest {
            resource_metrics: rms,
        }
        .encode_to_vec()
        .into()
    }

    fn cumulative(service: &str) -> Vec<ResourceMetrics> {
        vec![fixtures::resource(
            service,
            vec![
                fixtures::gauge("g", "1", &[(1.0, &[("a", "x")]), (2.0, &[("a", "y")])]),
                fixtures::cumulative_sum("c", "", true, &[(3.0, &[])]),
            ],
        )]
    }

    fn delta() -> Vec<ResourceMetrics> {
        vec![fixtures::resource(
            "d",
            vec![fixtures::delta_sum("d", "", true, &[(1.0, &[])])],
        )]
    }

    /// An encoded batch reads as its decode, merges with another encoded one by
    /// concatenation, knows its deltas without decoding, and holds only its bytes.
    #[test]
    fn an_encoded_batch_stays_encoded_until_changed() {
        let mut batch = MetricBatch::from_request("otlp".into(), request(cumulative("a"))).unwrap();
        assert!(batch.is_encoded());
        assert_eq!(batch.data_points(), 3);
        assert!(!batch.has_delta());
        let decoded = MetricBatch::new("otlp".into(), cumulative("a"));
        assert!(
            batch.memory_bytes() * 2 < decoded.memory_bytes(),
            "encoded {} B, decoded {} B",
            batch.memory_bytes(),
            decoded.memory_bytes()
        );
        assert_eq!(batch.resource_metrics(), decoded.resource_metrics());
        assert!(batch.is_encoded(), "a read keeps the bytes");

        let other = MetricBatch::from_request("otlp".into(), request(delta())).unwrap();
        batch.append(other);
        assert!(batch.is_encoded());
        assert!(batch.has_delta());
        assert_eq!(batch.data_points(), 4);
        let mut both = cumulative("a");
        both.extend(delta());
        assert_eq!(batch.resource_metrics(), both.as_slice());
        assert_eq!(batch.encoded_len(), request(both.clone()).len());

        batch.resource_metrics_mut().truncate(1);
        assert!(
            !batch.is_encoded(),
            "a change makes the decoded data the batch"
        );
        assert_eq!(batch.data_points(), 3);
        assert!(!batch.has_delta());
        assert_eq!(batch.into_resource_metrics(), cumulative("a"));
    }

    /// An encoded batch and a decoded one merge into a decoded one, in order, either way.
    #[test]
    fn encoded_and_decoded_batches_merge() {
        let mut encoded =
            MetricBatch::from_request("otlp".into(), request(cumulative("a"))).unwrap();
        encoded.append(MetricBatch::new("otlp".into(), cumulative("b")));
        assert!(!encoded.is_encoded());
        let mut decoded = MetricBatch::new("otlp".into(), cumulative("b"));
        decoded.append(MetricBatch::from_request("otlp".into(), request(cumulative("a"))).unwrap());
        let (mut ab, mut ba) = (cumulative("a"), cumulative("b"));
        ab.extend(cumulative("b"));
        ba.extend(cumulative("a"));
        assert_eq!(encoded.into_resource_metrics(), ab);
        assert_eq!(decoded.into_resource_metrics(), ba);
        // Appending an empty batch leaves an encoded one encoded.
        let mut encoded =
            MetricBatch::from_request("otlp".into(), request(cumulative("a"))).unwrap();
        encoded.append(MetricBatch::new("otlp".into(), Vec::new()));
        assert!(encoded.is_encoded());
    }

    /// What is not plain is decoded at once, and what does not decode is prost's error.
    #[test]
    fn requests_the_scan_leaves_to_prost_are_decoded_or_refused() {
        let mut bytes = request(cumulative("a")).to_vec();
        // An unknown group field at the end: valid protobuf the scan does not follow.
        bytes.extend_from_slice(&[0x7b, 0x7c]);
        let batch = MetricBatch::from_request("otlp".into(), bytes.into()).unwrap();
        assert!(!batch.is_encoded());
        assert_eq!(batch.data_points(), 3);
        let mut bytes = request(cumulative("a")).to_vec();
        bytes.truncate(bytes.len() - 1);
        assert!(MetricBatch::from_request("otlp".into(), bytes.into()).is_err());
        let empty = MetricBatch::from_request("otlp".into(), Bytes::new()).unwrap();
        assert!(empty.is_empty() && !empty.is_encoded());
    }

    /// Decoding an encoded batch to change it grows what its memory limiter holds for it.
    #[test]
    fn a_change_accounts_the_decoded_size() {
        let telemetry = crate::SelfMetrics::new();
        let limiter = crate::memory::MemoryLimiter::new(
            "memory_limiter".into(),
            crate::memory::Limits {
                limit_bytes: 1 << 30,
                spike_limit_bytes: 0,
                mode: crate::memory::LimitMode::Refuse,
            },
            &telemetry,
        );
        let mut batch = MetricBatch::from_request("otlp".into(), request(cumulative("a"))).unwrap();
        batch.hold(limiter.force(batch.memory_bytes()));
        let encoded = limiter.used();
        // (Growth from the change itself is not accounted, as for any batch.)
        batch.for_each_point_mut(|_, _| {});
        assert_eq!(limiter.used(), batch.memory_bytes());
        assert!(
            limiter.used() > 2 * encoded,
            "{} after {encoded}",
            limiter.used()
        );
        drop(batch);
        assert_eq!(limiter.used(), 0);
    }

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
