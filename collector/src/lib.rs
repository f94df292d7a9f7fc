//! `vla-collector`: receives OpenTelemetry metrics (OTLP over gRPC and HTTP), runs them
//! through pipelines described in YAML, and exports them to Prometheus (remote write, or a
//! scrape endpoint).
//!
//! - [`config`]: load, substitute `${env:...}`, validate (pure; backs `vla-collector validate`)
//!   into a typed [`config::Config`];
//! - [`service`]: bind, build, run and stop the component graph ([`run`],
//!   [`RunningCollector`]);
//! - [`health`]: the telemetry endpoint: `/health`, `/ready`, `/metrics`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = vla_collector::config::Source::embedded().validate()?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let report = vla_collector::run(config, shutdown).await?;
//! assert!(report.clean);
//! # Ok(()) }
//! ```

mod build;
pub mod config;
pub mod health;
pub mod service;

pub use service::{BoundAddrs, RunningCollector, ShutdownReport, StartError, run};
