//! The `prometheus` exporter: a scrape endpoint serving the latest value of every series.
//!
//! Serves `GET /metrics` in the Prometheus text exposition format 0.0.4: one `# HELP` (when the
//! metric has a description) and `# TYPE` per family, families and series sorted for
//! deterministic output, a histogram's `_bucket`/`_sum`/`_count` lines together per label set,
//! label values escaped. Names and labels follow the OpenTelemetry compatibility spec, exactly
//! as the remote-write exporter does ([`crate::translate`]); cumulative data only (delta sums and
//! histograms, which `deltatocumulative` converts, are reported dropped, as in remote write).
//! Exponential histograms are served as classic buckets at `exponential_histogram_bounds`
//! (default: the OpenTelemetry SDKs' explicit-bucket bounds; the text format has no native
//! histograms; see `translate/exponential.rs` for the rounding). No
//! timestamps are written: Prometheus stamps samples with the scrape time.
//!
//! A series not updated for `metric_expiration` disappears (checked at every scrape and
//! periodically on export); a point flagged "no recorded value" removes its series at once.
//!
//! ```yaml
//! exporters:
//!   prometheus:
//!     endpoint: 127.0.0.1:9464
//!     metric_expiration: 5m
//!     namespace: vla                 # optional
//!     const_labels: { region: eu }   # never override a series' own labels
//!     target_info: { enabled: true }
//!     disable_scope_info: false
//! ```
//!
//! The export path only updates the registry under a short lock (one per batch); a scrape
//! copies `Arc` handles of the live series under the lock and renders outside it.

mod registry;
mod serve;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so that expiry can be tested with paused time.
use tokio::time::Instant;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::ratelimit::LogLimiter;
use vla_pipeline::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, MetricBatch, PrepareError,
    Prepared, Request, SelfMetrics,
};

use crate::ExporterBuildError;
use crate::translate::{DROP_DELTA, DROP_NAME_COLLISION, TranslateOptions, Translator};

use registry::{Registry, RegistrySink};
use serve::{Shared, app};

pub use crate::prometheus_remote_write::TargetInfo;

/// Config of the `prometheus` exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address, `host:port` (default `127.0.0.1:9464`).
    pub endpoint: String,
    /// Series not updated for this long are removed (default `5m`).
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub metric_expiration: Duration,
    /// Prefix of every metric name.
    pub namespace: Option<String>,
    /// Labels added to every series unless it has its own of that name.
    pub const_labels: BTreeMap<String, String>,
    /// The `target_info` series per resource.
    pub target_info: TargetInfo,
    /// When true, `otel_scope_name` / `otel_scope_version` are left out (default false).
    pub disable_scope_info: bool,
    /// The classic bounds exponential histograms are served at (the text format has no
    /// native histograms; default: the OpenTelemetry SDKs' explicit-bucket defaults).
    pub exponential_histogram_bounds: Option<Vec<f64>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9464".to_owned(),
            metric_expiration: Duration::from_secs(300),
            namespace: None,
            const_labels: BTreeMap::new(),
            target_info: TargetInfo::default(),
            disable_scope_info: false,
            exponential_histogram_bounds: None,
        }
    }
}

impl Config {
    /// Checks the config without I/O; every problem is reported at `{path}.field`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(message) = vla_pipeline::config::parse_listen_addr(&self.endpoint) {
            problems.push(ConfigProblem::new(format!("{path}.endpoint"), message));
        }
        if self.metric_expiration.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.metric_expiration"),
                "must be greater than 0",
            ));
        }
        problems.extend(crate::translate::check_naming_settings(
            path,
            self.namespace.as_deref(),
            "const_labels",
            &self.const_labels,
        ));
        if let Some(b) = &self.exponential_histogram_bounds {
            problems.extend(crate::translate::check_classic_bounds(
                &format!("{path}.exponential_histogram_bounds"),
                b,
            ));
        }
        problems
    }

    /// The address to bind (after [`Config::validate`] passed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        vla_pipeline::config::parse_listen_addr(&self.endpoint).ok()
    }
}

/// The `prometheus` exporter.
pub struct PrometheusExporter {
    id: ComponentId,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    translator: Mutex<Translator>,
    stop: CancellationToken,
    server: Mutex<Option<JoinHandle<()>>>,
    delta_log: LogLimiter,
    collision_log: LogLimiter,
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusExporter")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl PrometheusExporter {
    /// Builds the exporter and starts serving `GET /metrics` on `listener` (already bound, so
    /// port clashes fail at start-up). Must be called inside a tokio runtime.
    pub fn new(
        id: ComponentId,
        config: &Config,
        listener: std::net::TcpListener,
        telemetry: &SelfMetrics,
    ) -> Result<Self, ExporterBuildError> {
        let problems = config.validate(&format!("exporters.{id}"));
        if !problems.is_empty() {
            return Err(ExporterBuildError::InvalidConfig(problems));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ExporterBuildError::NoRuntime)?;
        listener
            .set_nonblocking(true)
            .map_err(ExporterBuildError::Listener)?;
        let local_addr = listener
            .local_addr()
            .map_err(ExporterBuildError::Listener)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(ExporterBuildError::Listener)?
        };
        let series_gauge = telemetry.gauge(
            "vla_collector_prometheus_series",
            "Series held by a prometheus scrape exporter.",
            &[("exporter", &id)],
        );
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry {
                series_gauge,
                ..Registry::default()
            }),
            expiration: config.metric_expiration,
        });
        let stop = CancellationToken::new();
        let server = {
            let app = app(shared.clone());
            let stop = stop.clone();
            let id = id.clone();
            runtime.spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    error!(exporter = %id, error = %e, "scrape endpoint failed");
                }
            })
        };
        let options = TranslateOptions {
            namespace: config.namespace.clone(),
            extra_labels: config
                .const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target_info: config.target_info.enabled,
            scope_info: !config.disable_scope_info,
            exponential: crate::translate::ExponentialHistograms::Classic(
                config
                    .exponential_histogram_bounds
                    .clone()
                    .unwrap_or_else(|| crate::translate::DEFAULT_CLASSIC_BOUNDS.to_vec()),
            ),
        };
        Ok(Self {
            id,
            local_addr,
            shared,
            translator: Mutex::new(Translator::new(options)),
            stop,
            server: Mutex::new(Some(server)),
            delta_log: LogLimiter::new(Duration::from_secs(60)),
            collision_log: LogLimiter::new(Duration::from_secs(60)),
        })
    }

    /// The address the scrape endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The current exposition text (what `GET /metrics` returns).
    pub fn render(&self) -> String {
        self.shared.render()
    }

    fn update(&self, batch: &MetricBatch) -> ExportReport {
        let now = Instant::now();
        let mut translator = self.translator.lock();
        let mut registry = self.shared.registry.lock();
        let stats = {
            let mut sink = RegistrySink {
                registry: &mut registry,
                now,
                family: None,
            };
            translator.translate(batch, &mut sink)
        };
        let sweep_every = self.shared.expiration.min(Duration::from_secs(30));
        if registry
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= sweep_every)
        {
            registry.sweep(now, self.shared.expiration);
        }
        registry.count_series();
        drop(registry);
        drop(translator);
        crate::translate::warn_delta_dropped(
            &self.id,
            stats.dropped_for(DROP_DELTA),
            &self.delta_log,
        );
        crate::translate::warn_name_collision(
            &self.id,
            stats.collision.as_deref(),
            stats.dropped_for(DROP_NAME_COLLISION),
            &self.collision_log,
        );
        ExportReport {
            sent: stats.points,
            dropped: stats.dropped,
        }
    }
}

impl Exporter for PrometheusExporter {
    /// Stores the batch's latest values for the next scrape: everything is handled here, no
    /// request is left to send.
    fn prepare(&self, batch: &MetricBatch) -> Result<Prepared, PrepareError> {
        Ok(Prepared {
            requests: Vec::new(),
            done: self.update(batch),
        })
    }

    fn send<'a>(&'a self, _: &'a Request) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.cancel();
            let server = self.server.lock().take();
            if let Some(server) = server {
                let _ = server.await;
            }
        })
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl vla_pipeline::registry::Component for PrometheusExporter {
    const TYPE: &'static str = "prometheus";
    const EXAMPLE: &'static str = "\
endpoint: 127.0.0.1:9464
metric_expiration: 5m
const_labels: { region: eu }
target_info: { enabled: true }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<ConfigProblem> {
        config.validate(path)
    }

    fn listen_endpoints(config: &Config) -> Vec<(&'static str, &str)> {
        vec![("endpoint", config.endpoint.as_str())]
    }
}

impl vla_pipeline::registry::ExporterType for PrometheusExporter {
    fn build(
        config: &Config,
        mut ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<Arc<dyn Exporter>, vla_pipeline::registry::BuildError> {
        let listener = ctx.listener("endpoint")?;
        Ok(Arc::new(Self::new(
            ctx.id.clone(),
            config,
            listener,
            ctx.self_metrics,
        )?))
    }
}

#[cfg(test)]
mod tests;
