//! The metric catalogue: every metric the VLA API emits, as data.
//!
//! This is the contract of the whole project: the SDK creates its instruments from it, the
//! collector's OTel→Prometheus translation turns each `otel_name` + `unit` into exactly
//! `prometheus_name` (an end-to-end test proves it), and every expression of the alert rules,
//! recording rules and dashboards names only its metrics and labels
//! (`tests/tests/monitoring_rules.rs`). The seed's "Metrics Reference" (Core, Business,
//! System) is here name for name and label for label; the `Dashboards` section adds the
//! signals the four dashboards and thirteen alerts need beyond it.
//!
//! ```
//! let spec = vla_sdk::catalogue::by_prometheus_name("vla_inference_requests_total").unwrap();
//! assert_eq!(spec.otel_name, "vla.inference.requests");
//! assert_eq!(spec.label_keys().collect::<Vec<_>>(), ["model", "robot_type", "status", "tier"]);
//! ```

use crate::labels::{
    Component, ErrorType, InstructionCategory, Rating, ReviewOutcome, SafetyStage, Severity,
    Status, Tier, ValidationReason, ViolationType,
};

/// The OTel instrument a metric is recorded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Instrument {
    /// A monotonic counter: a Prometheus counter (`_total`).
    Counter,
    /// A gauge that holds the last value set: a Prometheus gauge.
    Gauge,
    /// An explicit-bucket histogram: Prometheus `_bucket{le}`, `_sum`, `_count`.
    Histogram,
}

impl Instrument {
    /// The Prometheus metric type it becomes.
    pub fn prometheus_type(self) -> &'static str {
        match self {
            Instrument::Counter => "counter",
            Instrument::Gauge => "gauge",
            Instrument::Histogram => "histogram",
        }
    }
}

/// The numeric type of the recorded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Whole numbers (counts, bytes).
    U64,
    /// Floating point (seconds, percent, money).
    F64,
}

/// Which part of the seed's "Metrics Reference" a metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// The reference's core metrics.
    Core,
    /// The reference's business metrics.
    Business,
    /// The reference's system metrics.
    System,
    /// Not in the reference: added because a dashboard panel or an alert needs it.
    Dashboards,
}

impl Section {
    /// The heading used in `docs/metrics.md`.
    pub fn title(self) -> &'static str {
        match self {
            Section::Core => "Core",
            Section::Business => "Business",
            Section::System => "System",
            Section::Dashboards => "For the dashboards and alerts",
        }
    }
}

/// The values a label may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelValues {
    /// A closed set: exactly these strings.
    Closed(&'static [&'static str]),
    /// An open but checked value (see [`crate::labels::OPEN_VALUE_RULE`]).
    Open,
    /// A customer id: open, and bounded per process by the builder's `max_customers`.
    Customer,
    /// A GPU index on its host: decimal digits.
    GpuIndex,
}

/// One label of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// The Prometheus label name (also the OTel attribute key).
    pub key: &'static str,
    /// The values it may take.
    pub values: LabelValues,
}

/// The series a histogram family is stored as.
pub const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSpec {
    /// The OTel instrument name the SDK records.
    pub otel_name: &'static str,
    /// The Prometheus family name after the collector's standard translation.
    pub prometheus_name: &'static str,
    /// The instrument.
    pub instrument: Instrument,
    /// The value type.
    pub value_type: ValueType,
    /// The UCUM unit (`{...}` annotations add no suffix).
    pub unit: &'static str,
    /// What it measures, written as the Prometheus HELP text.
    pub description: &'static str,
    /// The labels, in Prometheus (sorted) order.
    pub labels: &'static [Label],
    /// Histogram bucket boundaries (upper bounds); empty for other instruments.
    pub buckets: &'static [f64],
    /// Where in the seed's reference it sits.
    pub section: Section,
    /// The dashboards panels and alerts that read it.
    pub used_by: &'static str,
}

impl MetricSpec {
    /// The label keys, in order.
    pub fn label_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.labels.iter().map(|l| l.key)
    }

    /// Whether it carries a customer-level label.
    pub fn is_per_customer(&self) -> bool {
        self.labels
            .iter()
            .any(|l| l.values == LabelValues::Customer)
    }

    /// The Prometheus series names it produces (`_bucket`, `_sum`, `_count` for histograms).
    pub fn prometheus_series_names(&self) -> Vec<String> {
        match self.instrument {
            Instrument::Histogram => HISTOGRAM_SUFFIXES
                .iter()
                .map(|s| format!("{}{s}", self.prometheus_name))
                .collect(),
            _ => vec![self.prometheus_name.to_owned()],
        }
    }

    /// The most series the SDK keeps for it before folding new label sets into OTel's
    /// overflow series: the product of the closed sets' sizes, with `open_budget` values per
    /// open label and `max_customers` per customer label.
    pub fn series_limit(&self, open_budget: usize, max_customers: usize) -> usize {
        self.labels
            .iter()
            .map(|l| match l.values {
                LabelValues::Closed(v) => v.len(),
                LabelValues::Open | LabelValues::GpuIndex => open_budget,
                LabelValues::Customer => max_customers,
            })
            .fold(1usize, usize::saturating_mul)
    }
}

const fn closed(key: &'static str, values: &'static [&'static str]) -> Label {
    Label {
        key,
        values: LabelValues::Closed(values),
    }
}

const fn open(key: &'static str) -> Label {
    Label {
        key,
        values: LabelValues::Open,
    }
}

const CUSTOMER: Label = Label {
    key: "customer_id",
    values: LabelValues::Customer,
};
const GPU: Label = Label {
    key: "gpu_id",
    values: LabelValues::GpuIndex,
};
const MODEL: Label = open("model");
const ROBOT_TYPE: Label = open("robot_type");
const TIER: Label = closed("tier", Tier::VALUES);
const STATUS: Label = closed("status", Status::VALUES);
const SEVERITY: Label = closed("severity", Severity::VALUES);
const VIOLATION: Label = closed("violation_type", ViolationType::VALUES);

/// Request latency buckets: 5 ms to 10 s, dense around the 2 s alert threshold.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
];
/// Per-customer latency buckets: coarser, since every customer multiplies them.
pub const CUSTOMER_LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Safety-check latency buckets: 1 ms to 1 s.
pub const SAFETY_CHECK_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

macro_rules! spec {
    ($otel:literal => $prom:literal, $inst:ident $vt:ident, unit $unit:literal, [$($label:expr),* $(,)?],
     $section:ident, $desc:literal, used_by $used:literal $(, buckets $buckets:expr)?) => {
        MetricSpec {
            otel_name: $otel,
            prometheus_name: $prom,
            instrument: Instrument::$inst,
            value_type: ValueType::$vt,
            unit: $unit,
            description: $desc,
            labels: &[$($label),*],
            buckets: spec!(@buckets $($buckets)?),
            section: Section::$section,
            used_by: $used,
        }
    };
    (@buckets) => { &[] };
    (@buckets $b:expr) => { $b };
}

// ---- Core ----
/// `vla_inference_requests_total`.
pub const INFERENCE_REQUESTS: MetricSpec = spec!("vla.inference.requests" => "vla_inference_requests_total", Counter U64, unit "{request}",
        [MODEL, ROBOT_TYPE, STATUS, TIER], Core,
        "Inference requests by model, robot type, outcome and customer tier.",
        used_by "Operations: request rate, error rate, success rate; Business: daily inferences by tier, usage by model; alerts HighErrorRate, ModelInferenceFailure, HighValidationFailureRate");
/// `vla_inference_duration_seconds`.
pub const INFERENCE_DURATION: MetricSpec = spec!("vla.inference.duration" => "vla_inference_duration_seconds", Histogram F64, unit "s",
        [MODEL, ROBOT_TYPE], Core,
        "Time from request received to action returned, for requests that reached a model.",
        used_by "Operations: latency p50/p95/p99; alert HighLatency", buckets LATENCY_BUCKETS);
/// `vla_inference_queue_depth`.
pub const INFERENCE_QUEUE_DEPTH: MetricSpec = spec!("vla.inference.queue_depth" => "vla_inference_queue_depth", Gauge U64, unit "{request}",
        [], Core,
        "Requests waiting for a free inference worker.",
        used_by "Operations: queue depth; alert HighQueueDepth");
/// `vla_gpu_utilization_percent`.
pub const GPU_UTILIZATION: MetricSpec = spec!("vla.gpu.utilization" => "vla_gpu_utilization_percent", Gauge F64, unit "%",
        [GPU], Core,
        "GPU compute utilization, 0 to 100.",
        used_by "Operations: GPU utilization");
/// `vla_gpu_temperature_celsius`.
pub const GPU_TEMPERATURE: MetricSpec = spec!("vla.gpu.temperature" => "vla_gpu_temperature_celsius", Gauge F64, unit "Cel",
        [GPU], Core,
        "GPU core temperature.",
        used_by "Operations: GPU temperature; alert GPUOverheating");
/// `vla_gpu_memory_used_bytes`.
pub const GPU_MEMORY_USED: MetricSpec = spec!("vla.gpu.memory.used" => "vla_gpu_memory_used_bytes", Gauge U64, unit "By",
        [GPU], Core,
        "GPU memory in use.",
        used_by "alert GPUMemoryHigh (with vla_gpu_memory_total_bytes)");
/// `vla_safety_incidents_total`.
pub const SAFETY_INCIDENTS: MetricSpec = spec!("vla.safety.incidents" => "vla_safety_incidents_total", Counter U64, unit "{incident}",
        [SEVERITY, VIOLATION], Core,
        "Safety incidents by severity and violation type.",
        used_by "Safety: incidents by severity, violation types, critical alerts; alert CriticalSafetyIncident");
/// `vla_safety_score`.
pub const SAFETY_SCORE: MetricSpec = spec!("vla.safety.score" => "vla_safety_score", Gauge F64, unit "",
        [], Core,
        "Fleet safety score as the safety service computes it, from 0 (unsafe) to 1 (no incidents).",
        used_by "Safety: safety score trend");
/// `vla_quota_used`.
pub const QUOTA_USED: MetricSpec = spec!("vla.quota.used" => "vla_quota_used", Gauge U64, unit "{request}",
        [CUSTOMER, TIER], Core,
        "Requests the customer used in the current quota period.",
        used_by "Business, Customer: quota utilization; alert QuotaExceeded");
/// `vla_quota_limit`.
pub const QUOTA_LIMIT: MetricSpec = spec!("vla.quota.limit" => "vla_quota_limit", Gauge U64, unit "{request}",
        [CUSTOMER, TIER], Core,
        "Requests the customer may make in the current quota period.",
        used_by "Business, Customer: quota utilization; alert QuotaExceeded");
// ---- Business ----
/// `vla_revenue_total`.
pub const REVENUE: MetricSpec = spec!("vla.revenue" => "vla_revenue_total", Counter F64, unit "{USD}",
        [TIER], Business,
        "Revenue earned, in US dollars, by tier.",
        used_by "Business: revenue distribution, ARPU");
/// `vla_customers_total`.
pub const CUSTOMERS_TOTAL: MetricSpec = spec!("vla.customers.total" => "vla_customers_total", Gauge U64, unit "{customer}",
        [], Business,
        "Customers with an account.",
        used_by "Business: customer growth, churn rate");
/// `vla_customers_active`.
pub const CUSTOMERS_ACTIVE: MetricSpec = spec!("vla.customers.active" => "vla_customers_active", Gauge U64, unit "{customer}",
        [], Business,
        "Customers who made a request in the last 30 days.",
        used_by "Business: customer growth, ARPU");
/// `vla_customers_churned`.
pub const CUSTOMERS_CHURNED: MetricSpec = spec!("vla.customers.churned" => "vla_customers_churned", Gauge U64, unit "{customer}",
        [], Business,
        "Customers who cancelled in the last 30 days.",
        used_by "Business: churn rate");
/// `vla_mrr_total`.
pub const MRR_TOTAL: MetricSpec = spec!("vla.mrr.total" => "vla_mrr_total", Gauge F64, unit "{USD}",
        [], Business,
        "Monthly recurring revenue, in US dollars.",
        used_by "Business: MRR, ARPU");
// ---- System ----
/// `vla_worker_active`.
pub const WORKER_ACTIVE: MetricSpec = spec!("vla.worker.active" => "vla_worker_active", Gauge U64, unit "{worker}",
        [], System,
        "Inference workers busy with a request.",
        used_by "Operations: worker utilization; alert WorkerOverloaded");
/// `vla_worker_total`.
pub const WORKER_TOTAL: MetricSpec = spec!("vla.worker.total" => "vla_worker_total", Gauge U64, unit "{worker}",
        [], System,
        "Inference workers running.",
        used_by "Operations: worker utilization; alert WorkerOverloaded");
/// `vla_db_connections_active`.
pub const DB_CONNECTIONS_ACTIVE: MetricSpec = spec!("vla.db.connections.active" => "vla_db_connections_active", Gauge U64, unit "{connection}",
        [], System,
        "Database connections in use.",
        used_by "Operations: database pool");
/// `vla_db_connections_max`.
pub const DB_CONNECTIONS_MAX: MetricSpec = spec!("vla.db.connections.max" => "vla_db_connections_max", Gauge U64, unit "{connection}",
        [], System,
        "Size of the database connection pool.",
        used_by "Operations: database pool");
/// `vla_rate_limit_exceeded_total`.
pub const RATE_LIMIT_EXCEEDED: MetricSpec = spec!("vla.rate_limit.exceeded" => "vla_rate_limit_exceeded_total", Counter U64, unit "{request}",
        [], System,
        "Requests refused because the customer was over their rate limit.",
        used_by "alert RateLimitHitRate");
// ---- Added for the dashboards and alerts ----
/// `vla_gpu_memory_total_bytes`.
pub const GPU_MEMORY_TOTAL: MetricSpec = spec!("vla.gpu.memory.total" => "vla_gpu_memory_total_bytes", Gauge U64, unit "By",
        [GPU], Dashboards,
        "GPU memory installed.",
        used_by "alert GPUMemoryHigh (used / total)");
/// `vla_inference_errors_total`.
pub const INFERENCE_ERRORS: MetricSpec = spec!("vla.inference.errors" => "vla_inference_errors_total", Counter U64, unit "{error}",
        [closed("error_type", ErrorType::VALUES), MODEL], Dashboards,
        "Failed inference requests by model and cause.",
        used_by "Operations: top errors by type");
/// `vla_validation_failures_total`.
pub const VALIDATION_FAILURES: MetricSpec = spec!("vla.validation.failures" => "vla_validation_failures_total", Counter U64, unit "{request}",
        [closed("reason", ValidationReason::VALUES)], Dashboards,
        "Requests refused by input validation, by reason.",
        used_by "alert HighValidationFailureRate");
/// `vla_safety_rejections_total`.
pub const SAFETY_REJECTIONS: MetricSpec = spec!("vla.safety.rejections" => "vla_safety_rejections_total", Counter U64, unit "{request}",
        [VIOLATION], Dashboards,
        "Requests refused by the safety check, by violation type.",
        used_by "Safety: rejection rate; alert SafetyIncidentSurge");
/// `vla_safety_check_duration_seconds`.
pub const SAFETY_CHECK_DURATION: MetricSpec = spec!("vla.safety.check.duration" => "vla_safety_check_duration_seconds", Histogram F64, unit "s",
        [closed("stage", SafetyStage::VALUES)], Dashboards,
        "Time one safety check took, on the instruction or on the action.",
        used_by "Safety: safety check latency", buckets SAFETY_CHECK_BUCKETS);
/// `vla_safety_reviews_total`.
pub const SAFETY_REVIEWS: MetricSpec = spec!("vla.safety.reviews" => "vla_safety_reviews_total", Counter U64, unit "{review}",
        [closed("outcome", ReviewOutcome::VALUES), VIOLATION], Dashboards,
        "Safety incidents reviewed by a person, by outcome.",
        used_by "Safety: false positive rate");
/// `vla_safety_compliance_score`.
pub const SAFETY_COMPLIANCE_SCORE: MetricSpec = spec!("vla.safety.compliance_score" => "vla_safety_compliance_score", Gauge F64, unit "",
        [], Dashboards,
        "Share of the compliance checklist passed, 0 to 1.",
        used_by "Safety: compliance score");
/// `vla_customer_requests_total`.
pub const CUSTOMER_REQUESTS: MetricSpec = spec!("vla.customer.requests" => "vla_customer_requests_total", Counter U64, unit "{request}",
        [CUSTOMER, closed("instruction_category", InstructionCategory::VALUES), ROBOT_TYPE, STATUS], Dashboards,
        "Inference requests per customer, by robot type, instruction category and outcome.",
        used_by "Customer: usage by robot type, instruction categories, success rate by robot, total requests, error rate, peak hours; Business: top 10 customers");
/// `vla_customer_inference_duration_seconds`.
pub const CUSTOMER_INFERENCE_DURATION: MetricSpec = spec!("vla.customer.inference.duration" => "vla_customer_inference_duration_seconds", Histogram F64, unit "s",
        [CUSTOMER], Dashboards,
        "Inference latency per customer, for requests that reached a model.",
        used_by "Customer: customer-specific latency", buckets CUSTOMER_LATENCY_BUCKETS);
/// `vla_customer_safety_incidents_total`.
pub const CUSTOMER_SAFETY_INCIDENTS: MetricSpec = spec!("vla.customer.safety_incidents" => "vla_customer_safety_incidents_total", Counter U64, unit "{incident}",
        [CUSTOMER, SEVERITY], Dashboards,
        "Safety incidents per customer, by severity.",
        used_by "Safety: top violating customers");
/// `vla_feedback_total`.
pub const FEEDBACK: MetricSpec = spec!("vla.feedback" => "vla_feedback_total", Counter U64, unit "{feedback}",
        [CUSTOMER, closed("rating", Rating::VALUES)], Dashboards,
        "Ratings customers gave to responses.",
        used_by "Customer: feedback rate");
/// `vla_service_up`.
pub const SERVICE_UP: MetricSpec = spec!("vla.service.up" => "vla_service_up", Gauge U64, unit "",
        [closed("component", Component::VALUES)], Dashboards,
        "1 while the component's health check passes, 0 when it fails.",
        used_by "alert ServiceDown");

/// Every metric, seed reference first, in a stable order.
pub static CATALOGUE: &[MetricSpec] = &[
    INFERENCE_REQUESTS,
    INFERENCE_DURATION,
    INFERENCE_QUEUE_DEPTH,
    GPU_UTILIZATION,
    GPU_TEMPERATURE,
    GPU_MEMORY_USED,
    SAFETY_INCIDENTS,
    SAFETY_SCORE,
    QUOTA_USED,
    QUOTA_LIMIT,
    REVENUE,
    CUSTOMERS_TOTAL,
    CUSTOMERS_ACTIVE,
    CUSTOMERS_CHURNED,
    MRR_TOTAL,
    WORKER_ACTIVE,
    WORKER_TOTAL,
    DB_CONNECTIONS_ACTIVE,
    DB_CONNECTIONS_MAX,
    RATE_LIMIT_EXCEEDED,
    GPU_MEMORY_TOTAL,
    INFERENCE_ERRORS,
    VALIDATION_FAILURES,
    SAFETY_REJECTIONS,
    SAFETY_CHECK_DURATION,
    SAFETY_REVIEWS,
    SAFETY_COMPLIANCE_SCORE,
    CUSTOMER_REQUESTS,
    CUSTOMER_INFERENCE_DURATION,
    CUSTOMER_SAFETY_INCIDENTS,
    FEEDBACK,
    SERVICE_UP,
];

/// The whole catalogue.
pub fn catalogue() -> &'static [MetricSpec] {
    CATALOGUE
}

/// The metric recorded under an OTel instrument name.
pub fn by_otel_name(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|m| m.otel_name == name)
}

/// The metric with a Prometheus family name (`_bucket`/`_sum`/`_count` series resolve to their
/// histogram).
pub fn by_prometheus_name(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|m| {
        m.prometheus_name == name
            || (m.instrument == Instrument::Histogram
                && HISTOGRAM_SUFFIXES
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(m.prometheus_name)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's "Metrics Reference", verbatim: name and label set.
    const SEED_REFERENCE: &[(&str, &[&str])] = &[
        (
            "vla_inference_requests_total",
            &["model", "robot_type", "status", "tier"],
        ),
        ("vla_inference_duration_seconds", &["model", "robot_type"]),
        ("vla_inference_queue_depth", &[]),
        ("vla_gpu_utilization_percent", &["gpu_id"]),
        ("vla_gpu_temperature_celsius", &["gpu_id"]),
        ("vla_gpu_memory_used_bytes", &["gpu_id"]),
        (
            "vla_safety_incidents_total",
            &["severity", "violation_type"],
        ),
        ("vla_safety_score", &[]),
        ("vla_quota_used", &["customer_id", "tier"]),
        ("vla_quota_limit", &["customer_id", "tier"]),
        ("vla_revenue_total", &["tier"]),
        ("vla_customers_total", &[]),
        ("vla_customers_active", &[]),
        ("vla_customers_churned", &[]),
        ("vla_mrr_total", &[]),
        ("vla_worker_active", &[]),
        ("vla_worker_total", &[]),
        ("vla_db_connections_active", &[]),
        ("vla_db_connections_max", &[]),
        ("vla_rate_limit_exceeded_total", &[]),
    ];

    #[test]
    fn holds_the_seed_reference_exactly() {
        for (name, labels) in SEED_REFERENCE {
            let spec = by_prometheus_name(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(spec.prometheus_name, *name);
            assert_ne!(spec.section, Section::Dashboards, "{name}");
            let mut want = labels.to_vec();
            want.sort_unstable();
            assert_eq!(spec.label_keys().collect::<Vec<_>>(), want, "{name}");
        }
        let in_reference = CATALOGUE
            .iter()
            .filter(|m| m.section != Section::Dashboards)
            .count();
        assert_eq!(in_reference, SEED_REFERENCE.len());
    }

    #[test]
    fn names_are_unique_and_labels_sorted() {
        let mut otel: Vec<_> = CATALOGUE.iter().map(|m| m.otel_name).collect();
        let mut prom: Vec<_> = CATALOGUE.iter().map(|m| m.prometheus_name).collect();
        otel.sort_unstable();
        otel.dedup();
        prom.sort_unstable();
        prom.dedup();
        assert_eq!(otel.len(), CATALOGUE.len());
        assert_eq!(prom.len(), CATALOGUE.len());
        for m in CATALOGUE {
            let keys: Vec<_> = m.label_keys().collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(keys, sorted, "{}: labels sorted and unique", m.otel_name);
            assert_eq!(
                m.instrument == Instrument::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.otel_name
            );
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.otel_name);
            assert!(m.description.ends_with('.'), "{}", m.otel_name);
        }
    }

    #[test]
    fn histogram_series_resolve_to_their_family() {
        let spec = by_prometheus_name("vla_inference_duration_seconds_bucket").unwrap();
        assert_eq!(spec.otel_name, "vla.inference.duration");
        assert!(by_prometheus_name("vla_inference_requests_total_bucket").is_none());
        assert_eq!(
            spec.prometheus_series_names(),
            [
                "vla_inference_duration_seconds_bucket",
                "vla_inference_duration_seconds_sum",
                "vla_inference_duration_seconds_count"
            ]
        );
    }

    #[test]
    fn customer_labels_only_where_marked() {
        let per_customer: Vec<_> = CATALOGUE
            .iter()
            .filter(|m| m.is_per_customer())
            .map(|m| m.prometheus_name)
            .collect();
        assert_eq!(
            per_customer,
            [
                "vla_quota_used",
                "vla_quota_limit",
                "vla_customer_requests_total",
                "vla_customer_inference_duration_seconds",
                "vla_customer_safety_incidents_total",
                "vla_feedback_total"
            ]
        );
        let requests = by_otel_name("vla.customer.requests").unwrap();
        assert_eq!(requests.series_limit(8, 100), 100 * 6 * 8 * 5);
    }
}
