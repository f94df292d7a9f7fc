//! [`Telemetry`]: the typed recording API over the catalogue's instruments, and its builder.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{MetricExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Stream};
use parking_lot::{Mutex, RwLock};

use crate::catalogue::{self as cat, MetricSpec};
use crate::export::{CountingExporter, ExportStats};
use crate::labels::{
    Component, CustomerId, ErrorType, GpuId, InstructionCategory, ModelName, Rating, ReviewOutcome,
    RobotType, SafetyStage, Severity, Status, Tier, ValidationReason, ViolationType,
};
use crate::settings::{self, Env, Requested, Resolved, Temporality};
use crate::{BuildError, ShutdownError};

/// The `customer_id` written once a process has seen `max_customers` distinct customers.
pub const CUSTOMER_OVERFLOW: &str = "__overflow__";
/// The default bound on distinct customer ids per process.
pub const DEFAULT_MAX_CUSTOMERS: usize = 10_000;
/// How many distinct values the SDK budgets per open label (model, robot type, GPU) when it
/// sizes each metric's series limit.
const OPEN_LABEL_BUDGET: usize = 64;
/// OTel's own default series limit per metric, the floor of ours.
const MIN_SERIES_LIMIT: usize = 2_000;
/// The ceiling of a metric's series limit. The OTel SDK reserves a map slot for every series
/// it may hold when the instrument is made, so the limit is memory paid up front (about 4 MiB
/// of address space at this ceiling); series past it fold into OTel's overflow series
/// (`otel_metric_overflow="true"`).
pub(crate) const MAX_SERIES_LIMIT: usize = 100_000;

/// How an inference request ended. The status label follows from it, and the cause lands on
/// the matching breakdown metric (errors, safety rejections, validation failures, rate limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The model answered.
    Success,
    /// The model or the serving path failed.
    Error(ErrorType),
    /// The safety check refused it.
    Rejected(ViolationType),
    /// Input validation refused it.
    Invalid(ValidationReason),
    /// The customer was over their rate limit.
    RateLimited,
}

impl Outcome {
    /// The `status` label value.
    pub fn status(self) -> Status {
        match self {
            Outcome::Success => Status::Success,
            Outcome::Error(_) => Status::Error,
            Outcome::Rejected(_) => Status::Rejected,
            Outcome::Invalid(_) => Status::Invalid,
            Outcome::RateLimited => Status::RateLimited,
        }
    }

    /// Whether the request reached a model (only those have an inference latency).
    pub fn reached_model(self) -> bool {
        matches!(self, Outcome::Success | Outcome::Error(_))
    }
}

/// One inference request, as [`Telemetry::record_inference`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Inference<'a> {
    /// The model that served (or would have served) it.
    pub model: &'a ModelName,
    /// The robot that asked.
    pub robot_type: &'a RobotType,
    /// The customer's plan.
    pub tier: Tier,
    /// The customer.
    pub customer: &'a CustomerId,
    /// What the instruction asks for.
    pub instruction_category: InstructionCategory,
    /// How it ended.
    pub outcome: Outcome,
    /// Time from receipt to answer (recorded for requests that reached a model).
    pub duration: Duration,
}

/// One safety incident, as [`Telemetry::record_safety_incident`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct SafetyIncident<'a> {
    /// How bad it is.
    pub severity: Severity,
    /// What was violated.
    pub violation_type: ViolationType,
    /// Whose request it was.
    pub customer: &'a CustomerId,
}

/// One GPU's readings, as [`Telemetry::record_gpu`] takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuStats {
    /// The GPU's index on the host.
    pub gpu: GpuId,
    /// Compute utilization, 0 to 100.
    pub utilization_percent: f64,
    /// Core temperature.
    pub temperature_celsius: f64,
    /// Memory in use.
    pub memory_used_bytes: u64,
    /// Memory installed.
    pub memory_total_bytes: u64,
}

/// Customer counts, as [`Telemetry::set_customers`] takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerCounts {
    /// With an account.
    pub total: u64,
    /// Active in the last 30 days.
    pub active: u64,
    /// Cancelled in the last 30 days.
    pub churned: u64,
}

/// Builds a [`Telemetry`]; see the crate docs for the settings and their environment variables.
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    requested: Requested,
    max_customers: usize,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        Self {
            requested: Requested::default(),
            max_customers: DEFAULT_MAX_CUSTOMERS,
        }
    }
}

impl TelemetryBuilder {
    /// The collector's OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.requested.endpoint = Some(url.into());
        self
    }

    /// A header (gRPC metadata) sent with every export, e.g. an API key. Never logged.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.requested.headers.push((name.into(), value.into()));
        self
    }

    /// Compress exports with gzip.
    pub fn gzip(mut self, on: bool) -> Self {
        self.requested.gzip = Some(on);
        self
    }

    /// How often metrics are exported.
    pub fn export_interval(mut self, every: Duration) -> Self {
        self.requested.interval = Some(every);
        self
    }

    /// How long one export may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.requested.timeout = Some(timeout);
        self
    }

    /// Cumulative (default, what Prometheus wants) or delta.
    pub fn temporality(mut self, temporality: Temporality) -> Self {
        self.requested.temporality = Some(temporality);
        self
    }

    /// `service.name` (default `vla-api`).
    pub fn service_name(self, name: impl Into<String>) -> Self {
        self.resource_attribute("service.name", name)
    }

    /// `service.instance.id` (default `<host>-<pid>`).
    pub fn service_instance_id(self, id: impl Into<String>) -> Self {
        self.resource_attribute("service.instance.id", id)
    }

    /// `deployment.environment`, e.g. `prod`.
    pub fn deployment_environment(self, env: impl Into<String>) -> Self {
        self.resource_attribute("deployment.environment", env)
    }

    /// `host.name` (default: the machine's host name).
    pub fn host_name(self, host: impl Into<String>) -> Self {
        self.resource_attribute("host.name", host)
    }

    /// Any other resource attribute.
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.requested.resource.push((key.into(), value.into()));
        self
    }

    /// The PEM file of the CA that signs the collector's certificate, for `https://` endpoints
    /// (default: `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's roots). Needs the `tls`
    /// feature.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.requested.tls.ca = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM files) for collectors that require mutual TLS
    /// (default: `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`).
    pub fn tls_client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.requested.tls.client_cert = Some(cert.into());
        self.requested.tls.client_key = Some(key.into());
        self
    }

    /// The name the collector's certificate must carry, when it differs from the endpoint's
    /// host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.requested.tls.domain = Some(name.into());
        self
    }

    /// Export on or off; off makes every instrument a no-op (as `OTEL_SDK_DISABLED=true` does).
    pub fn enabled(mut self, on: bool) -> Self {
        self.requested.enabled = Some(on);
        self
    }

    /// The most distinct customer ids one process writes; later ones are written as
    /// [`CUSTOMER_OVERFLOW`] (default [`DEFAULT_MAX_CUSTOMERS`]).
    pub fn max_customers(mut self, max: usize) -> Self {
        self.max_customers = max.max(1);
        self
    }

    /// Resolves the settings against the process environment and starts exporting.
    ///
    /// Fails only on settings that cannot work (a malformed endpoint or variable); an absent
    /// collector is not an error: exports fail, are logged rate-limited, and are retried.
    pub fn build(self) -> Result<Telemetry, BuildError> {
        self.build_with_env(&settings::process_env)
    }

    /// [`Self::build`] with `env` in place of the process environment.
    #[doc(hidden)]
    pub fn build_with_env(self, env: Env<'_>) -> Result<Telemetry, BuildError> {
        let resolved = self.requested.resolve(env)?;
        Telemetry::start(resolved, self.max_customers)
    }
}

/// Customer ids seen so far, bounded.
#[derive(Debug)]
struct CustomerGuard {
    max: usize,
    seen: RwLock<HashSet<CustomerId>>,
    warned: AtomicBool,
}

impl CustomerGuard {
    fn value(&self, customer: &CustomerId) -> Value {
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
struct Instruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    queue_depth: Gauge<u64>,
    gpu_utilization: Gauge<f64>,
    gpu_temperature: Gauge<f64>,
    gpu_memory_used: Gauge<u64>,
    gpu_memory_total: Gauge<u64>,
    safety_incidents: Counter<u64>,
    safety_score: Gauge<f64>,
    quota_used: Gauge<u64>,
    quota_limit: Gauge<u64>,
    revenue: Counter<f64>,
    customers_total: Gauge<u64>,
    customers_active: Gauge<u64>,
    customers_churned: Gauge<u64>,
    mrr: Gauge<f64>,
    worker_active: Gauge<u64>,
    worker_total: Gauge<u64>,
    db_active: Gauge<u64>,
    db_max: Gauge<u64>,
    rate_limited: Counter<u64>,
    errors: Counter<u64>,
    validation_failures: Counter<u64>,
    safety_rejections: Counter<u64>,
    safety_check: Histogram<f64>,
    safety_reviews: Counter<u64>,
    compliance_score: Gauge<f64>,
    customer_requests: Counter<u64>,
    customer_duration: Histogram<f64>,
    customer_incidents: Counter<u64>,
    feedback: Counter<u64>,
    service_up: Gauge<u64>,
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
    fn new(m: &Meter) -> Self {
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
fn zero_fill(counter: &Counter<u64>, spec: &MetricSpec) {
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
fn ratio(v: f64) -> Option<f64> {
    (!v.is_nan()).then(|| v.clamp(0.0, 1.0))
}

struct Inner {
    provider: SdkMeterProvider,
    instruments: Instruments,
    customers: CustomerGuard,
    stats: Arc<ExportStats>,
    settings: Resolved,
    shut_down: AtomicBool,
    /// Hosts the gRPC channel's connection tasks, so export needs nothing from the caller's
    /// runtime (and works without one).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shut_down.swap(true, Ordering::AcqRel) {
            let _ = self.provider.shutdown();
        }
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// The VLA API's metrics. Cheap to clone; every clone records into the same instruments.
///
/// Recording never blocks on the network and never fails: values aggregate in memory and a
/// background thread exports them every `export_interval`. Call [`Telemetry::shutdown`] before
/// the process exits so the last values are sent; dropping the last clone without it does the
/// same, blocking the dropping thread for up to about 5 s while the final export is answered.
///
/// ```compile_fail
/// # fn f(t: &vla_sdk::Telemetry) {
/// // Customer ids are written only where the catalogue allows them, and only as `CustomerId`.
/// t.set_quota("acme", vla_sdk::Tier::Pro, 10, 100);
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(t: &vla_sdk::Telemetry, c: &vla_sdk::CustomerId) {
/// // GPU metrics have no customer label, so there is nowhere to put one.
/// t.record_gpu(&vla_sdk::GpuStats { gpu: vla_sdk::GpuId(0), customer: c, utilization_percent: 1.0,
///     temperature_celsius: 50.0, memory_used_bytes: 1, memory_total_bytes: 2 });
/// # }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("endpoint", &self.inner.settings.endpoint)
            .field("enabled", &self.inner.settings.enabled)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// A builder with every setting unset (environment, then defaults).
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    fn start(settings: Resolved, max_customers: usize) -> Result<Self, BuildError> {
        let stats = Arc::new(ExportStats::default());
        let resource = Resource::builder_empty()
            .with_attributes(
                settings
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_view(move |i: &opentelemetry_sdk::metrics::Instrument| {
                let spec = cat::by_otel_name(i.name())?;
                // One more customer than the cap: the overflow id is a series of its own.
                let limit = spec
                    .series_limit(OPEN_LABEL_BUDGET, max_customers.saturating_add(1))
                    .clamp(MIN_SERIES_LIMIT, MAX_SERIES_LIMIT);
                Stream::builder().with_cardinality_limit(limit).build().ok()
            });
        let mut runtime = None;
        if settings.enabled {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("vla-sdk-export")
                .enable_all()
                .build()
                .map_err(BuildError::Runtime)?;
            let exporter = {
                let _guard = rt.enter();
                otlp_exporter(&settings)?
            };
            let exporter =
                CountingExporter::new(exporter, settings.endpoint.clone(), stats.clone());
            let reader = PeriodicReader::builder(exporter)
                .with_interval(settings.interval)
                .build();
            builder = builder.with_reader(reader);
            runtime = Some(rt);
        }
        let provider = builder.build();
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder("vla-sdk")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let instruments = Instruments::new(&meter);
        for (counter, spec) in [
            (&instruments.safety_incidents, &cat::SAFETY_INCIDENTS),
            (&instruments.safety_rejections, &cat::SAFETY_REJECTIONS),
            (&instruments.safety_reviews, &cat::SAFETY_REVIEWS),
            (&instruments.validation_failures, &cat::VALIDATION_FAILURES),
            (&instruments.rate_limited, &cat::RATE_LIMIT_EXCEEDED),
        ] {
            zero_fill(counter, spec);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                provider,
                instruments,
                customers: CustomerGuard {
                    max: max_customers,
                    seen: RwLock::new(HashSet::new()),
                    warned: AtomicBool::new(false),
                },
                stats,
                settings,
                shut_down: AtomicBool::new(false),
                runtime: Mutex::new(runtime),
            }),
        })
    }

    /// Records one inference request on every metric it belongs to: request counts (fleet and
    /// per customer), latency when it reached a model, and the cause of a failure.
    pub fn record_inference(&self, r: &Inference<'_>) {
        let i = &self.inner.instruments;
        let status = r.outcome.status().as_str();
        let customer = self.inner.customers.value(r.customer);
        i.requests.add(
            1,
            &[
                KeyValue::new("model", r.model.otel_value()),
                KeyValue::new("robot_type", r.robot_type.otel_value()),
                KeyValue::new("status", status),
                KeyValue::new("tier", r.tier.as_str()),
            ],
        );
        i.customer_requests.add(
            1,
            &[
                KeyValue::new("customer_id", customer.clone()),
                KeyValue::new("instruction_category", r.instruction_category.as_str()),
                KeyValue::new("robot_type", r.robot_type.otel_value()),
                KeyValue::new("status", status),
            ],
        );
        if r.outcome.reached_model() {
            let secs = r.duration.as_secs_f64();
            i.duration.record(
                secs,
                &[
                    KeyValue::new("model", r.model.otel_value()),
                    KeyValue::new("robot_type", r.robot_type.otel_value()),
                ],
            );
            i.customer_duration
                .record(secs, &[KeyValue::new("customer_id", customer)]);
        }
        match r.outcome {
            Outcome::Success => {}
            Outcome::Error(e) => i.errors.add(
                1,
                &[
                    KeyValue::new("error_type", e.as_str()),
                    KeyValue::new("model", r.model.otel_value()),
                ],
            ),
            Outcome::Rejected(v) => i
                .safety_rejections
                .add(1, &[KeyValue::new("violation_type", v.as_str())]),
            Outcome::Invalid(reason) => i
                .validation_failures
                .add(1, &[KeyValue::new("reason", reason.as_str())]),
            Outcome::RateLimited => i.rate_limited.add(1, &[]),
        }
    }

    /// Records a safety incident (fleet-wide and on the customer's tally).
    pub fn record_safety_incident(&self, incident: &SafetyIncident<'_>) {
        let i = &self.inner.instruments;
        i.safety_incidents.add(
            1,
            &[
                KeyValue::new("severity", incident.severity.as_str()),
                KeyValue::new("violation_type", incident.violation_type.as_str()),
            ],
        );
        i.customer_incidents.add(
            1,
            &[
                KeyValue::new("customer_id", self.inner.customers.value(incident.customer)),
                KeyValue::new("severity", incident.severity.as_str()),
            ],
        );
    }

    /// Records how long one safety check took.
    pub fn record_safety_check(&self, stage: SafetyStage, took: Duration) {
        self.inner.instruments.safety_check.record(
            took.as_secs_f64(),
            &[KeyValue::new("stage", stage.as_str())],
        );
    }

    /// Records a person's review of a safety incident.
    pub fn record_safety_review(&self, violation_type: ViolationType, outcome: ReviewOutcome) {
        self.inner.instruments.safety_reviews.add(
            1,
            &[
                KeyValue::new("outcome", outcome.as_str()),
                KeyValue::new("violation_type", violation_type.as_str()),
            ],
        );
    }

    /// Sets the fleet safety score (0 to 1; clamped, NaN ignored).
    pub fn set_safety_score(&self, score: f64) {
        if let Some(v) = ratio(score) {
            self.inner.instruments.safety_score.record(v, &[]);
        }
    }

    /// Sets the compliance score (0 to 1; clamped, NaN ignored).
    pub fn set_compliance_score(&self, score: f64) {
        if let Some(v) = ratio(score) {
            self.inner.instruments.compliance_score.record(v, &[]);
        }
    }

    /// Sets how many requests wait for a worker.
    pub fn set_queue_depth(&self, depth: u64) {
        self.inner.instruments.queue_depth.record(depth, &[]);
    }

    /// Records one GPU's readings (NaN readings are skipped).
    pub fn record_gpu(&self, g: &GpuStats) {
        let i = &self.inner.instruments;
        let id = [KeyValue::new("gpu_id", g.gpu.to_string())];
        if !g.utilization_percent.is_nan() {
            i.gpu_utilization
                .record(g.utilization_percent.clamp(0.0, 100.0), &id);
        }
        if !g.temperature_celsius.is_nan() {
            i.gpu_temperature.record(g.temperature_celsius, &id);
        }
        i.gpu_memory_used.record(g.memory_used_bytes, &id);
        i.gpu_memory_total.record(g.memory_total_bytes, &id);
    }

    /// Sets a customer's quota use and limit for the current period.
    pub fn set_quota(&self, customer: &CustomerId, tier: Tier, used: u64, limit: u64) {
        let i = &self.inner.instruments;
        let labels = [
            KeyValue::new("customer_id", self.inner.customers.value(customer)),
            KeyValue::new("tier", tier.as_str()),
        ];
        i.quota_used.record(used, &labels);
        i.quota_limit.record(limit, &labels);
    }

    /// Adds revenue in US dollars (negative and NaN amounts are ignored: it is a counter).
    pub fn record_revenue(&self, tier: Tier, usd: f64) {
        if usd > 0.0 && usd.is_finite() {
            self.inner
                .instruments
                .revenue
                .add(usd, &[KeyValue::new("tier", tier.as_str())]);
        }
    }

    /// Sets the customer counts.
    pub fn set_customers(&self, c: CustomerCounts) {
        let i = &self.inner.instruments;
        i.customers_total.record(c.total, &[]);
        i.customers_active.record(c.active, &[]);
        i.customers_churned.record(c.churned, &[]);
    }

    /// Sets monthly recurring revenue in US dollars.
    pub fn set_mrr(&self, usd: f64) {
        if usd.is_finite() {
            self.inner.instruments.mrr.record(usd, &[]);
        }
    }

    /// Sets busy and running inference workers.
    pub fn set_workers(&self, active: u64, total: u64) {
        let i = &self.inner.instruments;
        i.worker_active.record(active, &[]);
        i.worker_total.record(total, &[]);
    }

    /// Sets database connections in use and the pool size.
    pub fn set_db_connections(&self, active: u64, max: u64) {
        let i = &self.inner.instruments;
        i.db_active.record(active, &[]);
        i.db_max.record(max, &[]);
    }

    /// Records a customer's rating of a response.
    pub fn record_feedback(&self, customer: &CustomerId, rating: Rating) {
        self.inner.instruments.feedback.add(
            1,
            &[
                KeyValue::new("customer_id", self.inner.customers.value(customer)),
                KeyValue::new("rating", rating.as_str()),
            ],
        );
    }

    /// Sets whether a component's health check passes.
    pub fn set_service_up(&self, component: Component, up: bool) {
        self.inner.instruments.service_up.record(
            u64::from(up),
            &[KeyValue::new("component", component.as_str())],
        );
    }

    /// Counts of export attempts so far.
    pub fn export_stats(&self) -> &ExportStats {
        &self.inner.stats
    }

    /// The endpoint export goes to.
    pub fn endpoint(&self) -> &str {
        &self.inner.settings.endpoint
    }

    /// Exports now and waits for the answer (blocks the calling thread up to the timeout).
    pub fn force_flush(&self) -> Result<(), ShutdownError> {
        self.inner
            .provider
            .force_flush()
            .map_err(ShutdownError::Export)
    }

    /// Exports the last values and stops exporting. Blocks the calling thread until the final
    /// export is answered or times out; from async code, call it in `spawn_blocking`. Later
    /// records are accepted and go nowhere; a second call returns
    /// [`ShutdownError::AlreadyShutDown`].
    pub fn shutdown(&self) -> Result<(), ShutdownError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::AlreadyShutDown);
        }
        self.inner
            .provider
            .shutdown()
            .map_err(ShutdownError::Export)
    }
}

fn otlp_exporter(s: &Resolved) -> Result<MetricExporter, BuildError> {
    let headers = s
        .headers
        .iter()
        .map(|(k, v)| {
            let name = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).map_err(|_| {
                BuildError::Setting {
                    field: "headers",
                    problem: format!("{k:?} is not a valid gRPC metadata key"),
                }
            })?;
            let value = tonic::metadata::MetadataValue::try_from(v.as_str()).map_err(|_| {
                BuildError::Setting {
                    field: "headers",
                    problem: format!("the value of {k:?} is not valid header text"),
                }
            })?;
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    // The interceptor runs after the OTLP exporter's own header handling, so values set in
    // code replace any the exporter read from OTEL_EXPORTER_OTLP_HEADERS itself.
    let interceptor = move |mut req: tonic::Request<()>| {
        for (name, value) in &headers {
            req.metadata_mut().insert(name.clone(), value.clone());
        }
        Ok(req)
    };
    let mut b = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(s.endpoint.clone())
        .with_timeout(s.timeout)
        .with_interceptor(interceptor)
        .with_temporality(match s.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
        });
    if s.gzip {
        b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &s.tls {
        b = b.with_tls_config(tls_config(tls));
    }
    b.build().map_err(BuildError::Exporter)
}

#[cfg(feature = "tls")]
fn tls_config(tls: &crate::settings::TlsPem) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut c = ClientTlsConfig::new();
    c = match &tls.ca {
        Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
        None => c.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        c = c.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        c = c.domain_name(domain.clone());
    }
    c
}
