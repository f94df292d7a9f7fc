//! `vla-sdk`: the library the VLA inference API links to emit its metrics.
//!
//! - [`catalogue()`]: every metric as data (OTel name, Prometheus name, instrument, unit, labels
//!   and their allowed values); the contract between the API, the collector's translation and
//!   the alert rules and dashboards of `configs/`, each checked against it by a test in
//!   `tests/`. `docs/metrics.md` is generated from it ([`catalogue_markdown`]).
//! - [`Telemetry`]: a typed recording API over those instruments. Closed label sets are enums,
//!   open ones validated strings, customer ids appear only on the metrics the catalogue marks
//!   and are capped per process, so a wrong label cannot be written.
//! - Export: OTLP over gRPC through the OpenTelemetry SDK, on a background thread with its own
//!   small runtime, so a slow or absent collector never blocks or crashes the API; failures are
//!   counted ([`Telemetry::export_stats`]) and logged rate-limited.
//! - [`sim`] (feature `simulator`, on by default): a deterministic fleet simulator, also the
//!   `vla-api-sim` binary.
//!
//! The OTel instrument names translate to the seed's Prometheus names under the
//! OpenTelemetry-to-Prometheus compatibility rules the collector implements, e.g.
//! `vla.inference.requests` (counter) → `vla_inference_requests_total`,
//! `vla.inference.duration` (histogram, `s`) → `vla_inference_duration_seconds_*`,
//! `vla.gpu.temperature` (gauge, `Cel`) → `vla_gpu_temperature_celsius`.
//!
//! ```no_run
//! use std::time::Duration;
//! use vla_sdk::{CustomerId, Inference, InstructionCategory, ModelName, Outcome, RobotType, Telemetry, Tier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::builder()
//!     .endpoint("http://127.0.0.1:4317")
//!     .service_name("vla-api")
//!     .deployment_environment("prod")
//!     .header("x-api-key", std::env::var("COLLECTOR_KEY").unwrap_or_default())
//!     .export_interval(Duration::from_secs(10))
//!     .build()?;
//! let model = ModelName::new("pi0")?;
//! let robot = RobotType::new("franka-panda")?;
//! let customer = CustomerId::new("acme-robotics")?;
//! telemetry.record_inference(&Inference {
//!     model: &model,
//!     robot_type: &robot,
//!     tier: Tier::Pro,
//!     customer: &customer,
//!     instruction_category: InstructionCategory::PickPlace,
//!     outcome: Outcome::Success,
//!     duration: Duration::from_millis(180),
//! });
//! telemetry.shutdown()?; // sends the last values
//! # Ok(()) }
//! ```
//!
//! Settings set in code win over the standard environment variables
//! (`OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`, `_HEADERS`, `_COMPRESSION`, `_TIMEOUT`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`), which win over the
//! defaults. One exception comes from the OTLP exporter underneath: with
//! `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` set, `gzip(false)` cannot turn gzip off.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod catalogue;
mod docs;
mod export;
pub mod labels;
mod settings;
#[cfg(feature = "simulator")]
pub mod sim;
mod telemetry;

pub use catalogue::{MetricSpec, catalogue};
pub use docs::catalogue_markdown;
pub use export::ExportStats;
pub use labels::{
    Component, CustomerId, ErrorType, GpuId, InstructionCategory, LabelError, ModelName, Rating,
    ReviewOutcome, RobotType, SafetyStage, Severity, Status, Tier, ValidationReason, ViolationType,
};
pub use settings::{DEFAULT_GRPC_ENDPOINT, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Temporality};
pub use telemetry::{
    CUSTOMER_OVERFLOW, CustomerCounts, DEFAULT_MAX_CUSTOMERS, GpuStats, Inference, Outcome,
    SafetyIncident, Telemetry, TelemetryBuilder,
};

/// Why a [`Telemetry`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting made in code (or resolved from the environment) cannot work.
    #[error("{field}: {problem}")]
    Setting {
        /// The builder setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An environment variable holds a value that cannot be used.
    #[error("{var}={value:?}: expected {expected}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: String,
    },
    /// The export thread's runtime could not start.
    #[error("could not start the export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter refused its settings.
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Why a flush or shutdown did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// `shutdown` was already called.
    #[error("telemetry was already shut down")]
    AlreadyShutDown,
    /// The final export failed or timed out.
    #[error("final export: {0}")]
    Export(#[source] opentelemetry_sdk::error::OTelSdkError),
}
