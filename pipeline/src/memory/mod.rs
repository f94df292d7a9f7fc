//! Byte-accounted admission: the `memory_limiter`'s core.
//!
//! A [`MemoryLimiter`] counts the bytes of every batch in flight between a receiver's
//! acceptance and the moment the last exporter is done with it (delivered, dropped or given
//! up on). A receiver's [`crate::PipelineSender`] asks it for a [`Reservation`] of the batch's
//! [`crate::MetricBatch::memory_bytes`] before handing the batch on; the reservation travels inside
//! the batch (merged when the batcher appends batches, duplicated when a batch is cloned for a
//! second pipeline) and gives its bytes back when the batch is dropped, which, with the
//! pipeline fanning one `Arc` out to the exporter drivers, is when the last exporter has
//! finished with it. Nothing has to remember to release: the accounting cannot leak.
//!
//! Admission: a batch is admitted while the bytes in use plus its own stay at or below the
//! soft limit (`limit_bytes − spike_limit_bytes`); a batch arriving to an empty limiter is
//! always admitted, so a request larger than the soft limit cannot be refused forever. The
//! room between the soft and the hard limit absorbs what is not admitted but still held:
//! batches that stateful processors emit at their flush ([`MemoryLimiter::force`], counted but
//! never refused), the exporters' encoded requests, and request bodies being decoded.
//! Receivers also check [`MemoryLimiter::refusing`] before they read or decode a body (it says
//! whether a batch of the typical admitted size would still fit), so an overloaded collector
//! spends neither memory nor CPU on most of the data it refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, Metric, ResourceMetrics, ScopeMetrics, metric,
};

use crate::ComponentId;
use crate::self_metrics::{Counter, SelfMetrics};

/// What a limiter does with a batch it cannot admit (the config's `mode: refuse | drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Refuse it: the receiver answers its client with a retryable status (gRPC
    /// `UNAVAILABLE`, HTTP 503 with `Retry-After`), so the client keeps the data and retries.
    #[default]
    Refuse,
    /// Accept and drop it, counted: for clients that cannot retry.
    Drop,
}

/// The limits of one limiter, validated (`spike < limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The hard limit on bytes in flight.
    pub limit_bytes: u64,
    /// Headroom kept free for what is held without being admitted.
    pub spike_limit_bytes: u64,
    /// What to do over the soft limit.
    pub mode: LimitMode,
}

impl Limits {
    /// Where admission stops: `limit_bytes − spike_limit_bytes`.
    pub fn soft_limit(&self) -> u64 {
        self.limit_bytes.saturating_sub(self.spike_limit_bytes)
    }
}

/// One `memory_limiter` (shared by every pipeline that lists its id).
#[derive(Debug)]
pub struct MemoryLimiter {
    id: ComponentId,
    limits: Limits,
    used: AtomicU64,
    peak: AtomicU64,
    /// A moving average of admitted batches' bytes: what the next request will likely need.
    typical: AtomicU64,
    refused: Counter,
    dropped: Counter,
}

/// Bytes held for a batch; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<MemoryLimiter>,
    bytes: u64,
}

impl MemoryLimiter {
    /// A limiter named `id`, its gauges and counters registered in `telemetry`.
    pub fn new(id: ComponentId, limits: Limits, telemetry: &SelfMetrics) -> Arc<Self> {
        let labels = [("processor", &*id)];
        let counter = |name, help| telemetry.counter(name, help, &labels);
        let me = Arc::new(Self {
            refused: counter(
                "vla_collector_memory_limiter_refused_data_points_total",
                "Data points a memory_limiter refused (the client was told to retry).",
            ),
            dropped: counter(
                "vla_collector_memory_limiter_dropped_data_points_total",
                "Data points a memory_limiter in drop mode accepted and dropped.",
            ),
            id: id.clone(),
            limits,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            typical: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&me);
        telemetry.gauge_fn(
            "vla_collector_memory_limiter_used_bytes",
            "Bytes of batches in flight that a memory_limiter accounts.",
            &labels,
            move || weak.upgrade().map_or(0, |m| m.used() as i64),
        );
        let weak = Arc::downgrade(&me);
        telemetry.gauge_fn(
            "vla_collector_memory_limiter_peak_bytes",
            "The most bytes a memory_limiter has accounted at once since start.",
            &labels,
            move || weak.upgrade().map_or(0, |m| m.peak() as i64),
        );
        let (hard, soft) = (limits.limit_bytes as i64, limits.soft_limit() as i64);
        telemetry.gauge_fn(
            "vla_collector_memory_limiter_limit_bytes",
            "A memory_limiter's hard limit (limit_bytes).",
            &labels,
            move || hard,
        );
        telemetry.gauge_fn(
            "vla_collector_memory_limiter_soft_limit_bytes",
            "Where a memory_limiter stops admitting (limit_bytes - spike_limit_bytes).",
            &labels,
            move || soft,
        );
        me
    }

    /// Its id.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes in flight now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes in flight at once since start.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Whether it refuses new data now: in refuse mode, when a batch of the typical size
    /// (the moving average of those admitted) would not fit. Receivers ask before they read a
    /// body, so under overload the refusals cost neither decoding nor memory.
    pub fn refusing(&self) -> bool {
        let used = self.used();
        self.limits.mode == LimitMode::Refuse
            && used > 0
            && used.saturating_add(self.typical.load(Ordering::Relaxed)) > self.limits.soft_limit()
    }

    /// Admits `bytes` if they fit under the soft limit (or the limiter is empty).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let soft = self.limits.soft_limit();
        let admitted = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.saturating_add(bytes);
                (used == 0 || after <= soft).then_some(after)
            });
        match admitted {
            Ok(before) => {
                self.peak
                    .fetch_max(before.saturating_add(bytes), Ordering::Relaxed);
                // Updates may race and lose one; it is an estimate.
                let t = self.typical.load(Ordering::Relaxed);
                let next = if t == 0 { bytes } else { t - t / 8 + bytes / 8 };
                self.typical.store(next, Ordering::Relaxed);
                Some(Reservation {
                    limiter: self.clone(),
                    bytes,
                })
            }
            Err(_) => None,
        }
    }

    /// Accounts `bytes` that are held whether or not they fit (what a stateful processor
    /// emits at its flush, a batch cloned for one more pipeline): they delay admission of new
    /// data until they are gone.
    pub fn force(self: &Arc<Self>, bytes: u64) -> Reservation {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        self.peak
            .fetch_max(before.saturating_add(bytes), Ordering::Relaxed);
        Reservation {
            limiter: self.clone(),
            bytes,
        }
    }

    /// Counts points refused (refuse mode) or dropped (drop mode).
    pub fn count_not_admitted(&self, points: u64) {
        match self.limits.mode {
            LimitMode::Refuse => self.refused.add(points),
            LimitMode::Drop => self.dropped.add(points),
        }
    }
}

impl Reservation {
    /// The bytes it holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether it is held on `limiter`.
    pub fn is_on(&self, limiter: &Arc<MemoryLimiter>) -> bool {
        Arc::ptr_eq(&self.limiter, limiter)
    }

    /// Whether both are held on the same limiter.
    pub(crate) fn same_limiter(&self, other: &Reservation) -> bool {
        Arc::ptr_eq(&self.limiter, &other.limiter)
    }

    /// Holds `bytes` more, whether or not they fit (a batch decoded to be changed grows).
    pub(crate) fn grow(&mut self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let before = self.limiter.used.fetch_add(bytes, Ordering::AcqRel);
        self.limiter
            .peak
            .fetch_max(before.saturating_add(bytes), Ordering::Relaxed);
        self.bytes += bytes;
    }

    /// Takes over `other`'s bytes (both on the same limiter; checked by the caller).
    pub(crate) fn absorb(&mut self, mut other: Reservation) {
        debug_assert!(self.same_limiter(&other));
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Clone for Reservation {
    /// A clone of a batch is a second copy of its memory: it is accounted again.
    fn clone(&self) -> Self {
        self.limiter.force(self.bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.limiter.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// The heap bytes one allocation costs beyond its contents (the allocator's header and size
/// class rounding), an average for small blocks.
pub(crate) const ALLOC_OVERHEAD: usize = 16;

/// A vector's or string's heap block: `capacity` elements of `T`, plus the overhead.
fn block<T>(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity * size_of::<T>() + ALLOC_OVERHEAD
    }
}

fn string(s: &String) -> usize {
    block::<u8>(s.capacity())
}

fn any_value(v: &AnyValue) -> usize {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => string(s),
        Some(any_value::Value::BytesValue(b)) => block::<u8>(b.capacity()),
        Some(any_value::Value::ArrayValue(a)) => {
            block::<AnyValue>(a.values.capacity()) + a.values.iter().map(any_value).sum::<usize>()
        }
        Some(any_value::Value::KvlistValue(l)) => attrs(&l.values),
        _ => 0,
    }
}

fn attrs(kvs: &Vec<KeyValue>) -> usize {
    block::<KeyValue>(kvs.capacity())
        + kvs
            .iter()
            .map(|kv| string(&kv.key) + kv.value.as_ref().map_or(0, any_value))
            .sum::<usize>()
}

fn exemplars(e: &Vec<Exemplar>) -> usize {
    block::<Exemplar>(e.capacity())
        + e.iter()
            .map(|x| {
                attrs(&x.filtered_attributes)
                    + block::<u8>(x.span_id.capacity())
                    + block::<u8>(x.trace_id.capacity())
            })
            .sum::<usize>()
}

fn points<P>(points: &Vec<P>, each: impl Fn(&P) -> usize) -> usize {
    block::<P>(points.capacity()) + points.iter().map(each).sum::<usize>()
}

fn buckets(b: &Option<Buckets>) -> usize {
    b.as_ref()
        .map_or(0, |b| block::<u64>(b.bucket_counts.capacity()))
}

fn metric_data(data: &Option<metric::Data>) -> usize {
    match data {
        Some(metric::Data::Gauge(g)) => points(&g.data_points, |p| {
            attrs(&p.attributes) + exemplars(&p.exemplars)
        }),
        Some(metric::Data::Sum(s)) => points(&s.data_points, |p| {
            attrs(&p.attributes) + exemplars(&p.exemplars)
        }),
        Some(metric::Data::Histogram(h)) => points(&h.data_points, |p| {
            attrs(&p.attributes)
                + exemplars(&p.exemplars)
                + block::<u64>(p.bucket_counts.capacity())
                + block::<f64>(p.explicit_bounds.capacity())
        }),
        Some(metric::Data::ExponentialHistogram(h)) => points(&h.data_points, |p| {
            attrs(&p.attributes)
                + exemplars(&p.exemplars)
                + buckets(&p.positive)
                + buckets(&p.negative)
        }),
        Some(metric::Data::Summary(s)) => points(&s.data_points, |p| {
            attrs(&p.attributes) + block::<ValueAtQuantile>(p.quantile_values.capacity())
        }),
        None => 0,
    }
}

/// An estimate of the heap memory decoded OTLP data holds: every vector's and string's
/// capacity plus an allocator overhead per allocation. It walks the data once and allocates
/// nothing; a test checks it against what the allocator really hands out.
pub fn heap_bytes(rms: &Vec<ResourceMetrics>) -> usize {
    let mut total = block::<ResourceMetrics>(rms.capacity());
    for rm in rms {
        total += string(&rm.schema_url);
        if let Some(r) = &rm.resource {
            total += attrs(&r.attributes) + block::<EntityRef>(r.entity_refs.capacity());
        }
        total += block::<ScopeMetrics>(rm.scope_metrics.capacity());
        for sm in &rm.scope_metrics {
            total += string(&sm.schema_url);
            if let Some(s) = &sm.scope {
                total += string(&s.name) + string(&s.version) + attrs(&s.attributes);
            }
            total += block::<Metric>(sm.metrics.capacity());
            for m in &sm.metrics {
                total += string(&m.name)
                    + string(&m.description)
                    + string(&m.unit)
                    + attrs(&m.metadata)
                    + metric_data(&m.data);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
