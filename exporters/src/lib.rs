//! `vla-exporters`: where pipeline data leaves the collector.
//!
//! - [`prometheus_remote_write`] (config type `prometheusremotewrite`): Prometheus remote write
//!   1.0 to Prometheus, VictoriaMetrics, Mimir, ...; sharded by series so per-series order holds.
//! - [`prometheus`] (config type `prometheus`): a scrape endpoint serving the latest value of
//!   every series in the Prometheus text format 0.0.4.
//! - [`debug`] (config type `debug`): logs a summary, or every point, of each batch.
//!
//! The OpenTelemetry → Prometheus translation (names, unit suffixes, labels, `job`/`instance`,
//! `target_info`) follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec and
//! is written once, in [`translate`], for both Prometheus exporters.
//!
//! ```yaml
//! exporters:
//!   prometheusremotewrite: { endpoint: "http://127.0.0.1:9090/api/v1/write" }
//!   prometheus: { endpoint: 127.0.0.1:9464 }
//!   debug: { verbosity: basic }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod debug;
pub mod prometheus;
pub mod prometheus_remote_write;
pub mod translate;

use vla_pipeline::config::ConfigProblem;

pub use debug::DebugExporter;
pub use prometheus::PrometheusExporter;
pub use prometheus_remote_write::PrometheusRemoteWriteExporter;

/// The registry table of this crate's exporter types.
pub fn register(r: &mut impl vla_pipeline::registry::Registry) {
    r.exporter::<DebugExporter>();
    r.exporter::<PrometheusExporter>();
    r.exporter::<PrometheusRemoteWriteExporter>();
}

/// Why an exporter could not be built from its (already validated) config.
#[derive(Debug, thiserror::Error)]
pub enum ExporterBuildError {
    /// The config has problems (the same ones `validate` reports).
    #[error("invalid exporter config: {}", ConfigProblem::join(.0))]
    InvalidConfig(Vec<ConfigProblem>),
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The listener could not be handed to the server.
    #[error("cannot serve on the given listener")]
    Listener(#[source] std::io::Error),
    /// The constructor needs a running tokio runtime and was called outside of one.
    #[error("exporter must be built inside a tokio runtime")]
    NoRuntime,
}
