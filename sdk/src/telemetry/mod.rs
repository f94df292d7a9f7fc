//! [`Telemetry`]: the typed recording API over the catalogue's instruments, and its builder.

mod builder;
mod instruments;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Stream};
use parking_lot::{Mutex, RwLock};

use crate::catalogue as cat;
use crate::export::{CountingExporter, ExportStats};
use crate::labels::{
    Component, CustomerId, ErrorType, GpuId, InstructionCategory, ModelName, Rating, ReviewOutcome,
    RobotType, SafetyStage, Severity, Status, Tier, ValidationReason, ViolationType,
};
use crate::settings::Resolved;
use crate::{BuildError, ShutdownError};

pub use builder::TelemetryBuilder;
use builder::otlp_exporter;
use instruments::{CustomerGuard, Instruments, ratio, zero_fill};

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
