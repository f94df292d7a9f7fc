//! The catalogue's instruments, created once per [`Telemetry`](super::Telemetry), and the
//! bound on distinct customer ids.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::{KeyValue, Value};
use parking_lot::RwLock;

use super::CUSTOMER_OVERFLOW;
use crate::catalogue::{self as cat, MetricSpec};
use crate::labels::CustomerId;

/// Customer ids seen so far, bounded.
#[derive(Debug)]
pub(super) struct CustomerGuard {
    pub(super) max: usize,
    pub(super) seen: RwLock<HashSet<CustomerId>>,
    pub(super) warned: AtomicBool,
}

impl CustomerGuard {
    pub(super) fn value(&self, customer: &CustomerId) -> Value {
        if self.seen.read().contains(customer) {
            return customer.otel_value();
        }
        let mut seen = self.seen.write();
        // Another thread may have admitted it between the two locks.
        if seen.contains(customer) || seen.len() < self.max {
            seen.insert(customer.clone());
            return customer.otel_value();
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_customers = self.max,
                "more distinct customer ids than max_customers; new ones are recorded as {CUSTOMER_OVERFLOW}"
            );
        }
        Value::from(CUSTOMER_OVERFLOW)
    }
}

/// The instruments, one per catalogue entry that the API records.
pub(super) struct Instruments {
    pub(super) requests: Counter<u64>,
    pub(super) duration: Histogram<f64>,
    pub(super) queue_depth: Gauge<u64>,
    pub(super) gpu_utilization: Gauge<f64>,
    pub(super) gpu_temperature: Gauge<f64>,
    pub(super) gpu_memory_used: Gauge<u64>,
    pub(super) gpu_memory_total: Gauge<u64>,
    pub(super) safety_incidents: Counter<u64>,
    pub(super) safety_score: Gauge<f64>,
    pub(super) quota_used: Gauge<u64>,
    pub(super) quota_limit: Gauge<u64>,
    pub(super) revenue: Counter<f64>,
    pub(super) customers_total: Gauge<u64>,
    pub(super) customers_active: Gauge<u64>,
    pub(super) customers_churned: Gauge<u64>,
    pub(super) mrr: Gauge<f64>,
    pub(super) worker_active: Gauge<u64>,
    pub(super) worker_total: Gauge<u64>,
    pub(super) db_active: Gauge<u64>,
    pub(super) db_max: Gauge<u64>,
    pub(super) rate_limited: Counter<u64>,
    pub(super) errors: Counter<u64>,
    pub(super) validation_failures: Counter<u64>,
    pub(super) safety_rejections: Counter<u64>,
    pub(super) safety_check: Histogram<f64>,
    pub(super) safety_reviews: Counter<u64>,
    pub(super) compliance_score: Gauge<f64>,
    pub(super) customer_requests: Counter<u64>,
    pub(super) customer_duration: Histogram<f64>,
    pub(super) customer_incidents: Counter<u64>,
    pub(super) feedback: Counter<u64>,
    pub(super) service_up: Gauge<u64>,
}

fn counter_u64(m: &Meter, s: &'static MetricSpec) -> Counter<u64> {
    m.u64_counter(s.otel_name)
        .with_unit(s.unit)
        .with_description(s.description)
        .build()
}

fn counter_f64(m: &Meter, s: &'static MetricSpec) -> Counter<f64> {
    m.f64_counter(s.otel_name)
        .with_unit(s.unit)
        .with_description(s.description)
        .build()
}

fn gauge_u64(m: &Meter, s: &'static MetricSpec) -> Gauge<u64> {
    m.u64_gauge(s.otel_name)
        .with_unit(s.unit)
        .with_description(s.description)
        .build()
}

fn gauge_f64(m: &Meter, s: &'static MetricSpec) -> Gauge<f64> {
    m.f64_gauge(s.otel_name)
        .with_unit(s.unit)
        .with_description(s.description)
        .build()
}

fn histogram(m: &Meter, s: &'static MetricSpec) -> Histogram<f64> {
    m.f64_histogram(s.otel_name)
        .with_unit(s.unit)
        .with_description(s.description)
        .with_boundaries(s.buckets.to_vec())
        .build()
}

impl Instruments {
    pub(super) fn new(m: &Meter) -> Self {
        Self {
            requests: counter_u64(m, &cat::INFERENCE_REQUESTS),
            duration: histogram(m, &cat::INFERENCE_DURATION),
            queue_depth: gauge_u64(m, &cat::INFERENCE_QUEUE_DEPTH),
            gpu_utilization: gauge_f64(m, &cat::GPU_UTILIZATION),
            gpu_temperature: gauge_f64(m, &cat::GPU_TEMPERATURE),
            gpu_memory_used: gauge_u64(m, &cat::GPU_MEMORY_USED),
            gpu_memory_total: gauge_u64(m, &cat::GPU_MEMORY_TOTAL),
            safety_incidents: counter_u64(m, &cat::SAFETY_INCIDENTS),
            safety_score: gauge_f64(m, &cat::SAFETY_SCORE),
            quota_used: gauge_u64(m, &cat::QUOTA_USED),
            quota_limit: gauge_u64(m, &cat::QUOTA_LIMIT),
            revenue: counter_f64(m, &cat::REVENUE),
            customers_total: gauge_u64(m, &cat::CUSTOMERS_TOTAL),
            customers_active: gauge_u64(m, &cat::CUSTOMERS_ACTIVE),
            customers_churned: gauge_u64(m, &cat::CUSTOMERS_CHURNED),
            mrr: gauge_f64(m, &cat::MRR_TOTAL),
            worker_active: gauge_u64(m, &cat::WORKER_ACTIVE),
            worker_total: gauge_u64(m, &cat::WORKER_TOTAL),
            db_active: gauge_u64(m, &cat::DB_CONNECTIONS_ACTIVE),
            db_max: gauge_u64(m, &cat::DB_CONNECTIONS_MAX),
            rate_limited: counter_u64(m, &cat::RATE_LIMIT_EXCEEDED),
            errors: counter_u64(m, &cat::INFERENCE_ERRORS),
            validation_failures: counter_u64(m, &cat::VALIDATION_FAILURES),
            safety_rejections: counter_u64(m, &cat::SAFETY_REJECTIONS),
            safety_check: histogram(m, &cat::SAFETY_CHECK_DURATION),
            safety_reviews: counter_u64(m, &cat::SAFETY_REVIEWS),
            compliance_score: gauge_f64(m, &cat::SAFETY_COMPLIANCE_SCORE),
            customer_requests: counter_u64(m, &cat::CUSTOMER_REQUESTS),
            customer_duration: histogram(m, &cat::CUSTOMER_INFERENCE_DURATION),
            customer_incidents: counter_u64(m, &cat::CUSTOMER_SAFETY_INCIDENTS),
            feedback: counter_u64(m, &cat::FEEDBACK),
            service_up: gauge_u64(m, &cat::SERVICE_UP),
        }
    }
}

/// Records 0 on every label combination of a counter whose labels are all closed sets, so each
/// series exists before its first event: Prometheus's `increase()` needs a sample before the
/// first increment, or an alert on "any critical incident" misses the first one.
pub(super) fn zero_fill(counter: &Counter<u64>, spec: &MetricSpec) {
    let mut combos: Vec<Vec<KeyValue>> = vec![Vec::new()];
    for label in spec.labels {
        let cat::LabelValues::Closed(values) = label.values else {
            return;
        };
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push(KeyValue::new(label.key, *v));
                    next
                })
            })
            .collect();
    }
    for combo in combos {
        counter.add(0, &combo);
    }
}

/// Scores are ratios: NaN is dropped, the rest clamped to 0..=1.
pub(super) fn ratio(v: f64) -> Option<f64> {
    (!v.is_nan()).then(|| v.clamp(0.0, 1.0))
}
