//! The `prometheus` exporter: a scrape endpoint serving the latest value of every series.
//!
//! Serves `GET /metrics` in the Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): one `# HELP` (when the
//! metric has a description) and `# TYPE` per family, families and series sorted for
//! deterministic output, a histogram's `_bucket`/`_sum`/`_count` lines together per label set,
//! label values escaped. Names and labels follow the OpenTelemetry compatibility spec, exactly
//! as the remote-write exporter does ([`crate::translate`]); cumulative data only (delta sums and
//! histograms and exponential histograms are reported dropped, as in remote write). No
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so that expiry can be tested with paused time.
use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hashbrown::{HashMap, HashTable};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::ratelimit::LogLimiter;
use vla_pipeline::self_metrics::Gauge;
use vla_pipeline::self_metrics::exposition;
use vla_pipeline::{
    BoxFuture, ComponentId, ExportError, ExportReport, Exporter, MetricBatch, PrepareError,
    Prepared, Request, SelfMetrics, SeriesKey,
};

use crate::ExporterBuildError;
use crate::translate::{
    DROP_DELTA, DROP_NAME_COLLISION, PromType, Sample, SampleSink, TranslateOptions, Translator,
};

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
        problems
    }

    /// The address to bind (after [`Config::validate`] passed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        vla_pipeline::config::parse_listen_addr(&self.endpoint).ok()
    }
}

/// One live series.
#[derive(Debug)]
struct Entry {
    hash: u64,
    key: Arc<SeriesKey>,
    family: Arc<str>,
    /// Order within the family: 0 for the plain series and `_bucket`, 1 `_sum`, 2 `_count`.
    rank: u8,
    /// The `le` / `quantile` value, for numeric ordering.
    bound: f64,
    value: f64,
    /// The point's own time (ms): a point older than this does not replace the value.
    timestamp_ms: i64,
    updated: Instant,
}

#[derive(Debug, Clone)]
struct FamilyMeta {
    ty: PromType,
    help: Arc<str>,
}

/// The latest value of every series.
#[derive(Debug, Default)]
struct Registry {
    series: HashTable<Entry>,
    families: HashMap<Arc<str>, FamilyMeta, foldhash::fast::RandomState>,
    last_sweep: Option<Instant>,
    /// `vla_collector_prometheus_series`, kept equal to `series.len()` after every change.
    series_gauge: Gauge,
}

impl Registry {
    fn count_series(&self) {
        self.series_gauge
            .set(i64::try_from(self.series.len()).unwrap_or(i64::MAX));
    }

    fn sweep(&mut self, now: Instant, expiration: Duration) {
        self.series
            .retain(|e| now.saturating_duration_since(e.updated) < expiration);
        if self.families.len() > self.series.len() {
            let live: hashbrown::HashSet<&str> = self.series.iter().map(|e| &*e.family).collect();
            self.families.retain(|name, _| live.contains(&**name));
        }
        self.last_sweep = Some(now);
        self.count_series();
    }
}

const HASH_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn sample_hash(sample: &Sample<'_>) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(HASH_SEED).build_hasher();
    sample.name.hash(&mut h);
    sample.for_each_label(|n, v| {
        if n != "__name__" {
            n.hash(&mut h);
            v.hash(&mut h);
        }
    });
    h.finish()
}

fn same_series(key: &SeriesKey, sample: &Sample<'_>) -> bool {
    if key.name() != sample.name {
        return false;
    }
    let labels = key.labels();
    let mut i = 0;
    let mut equal = true;
    sample.for_each_label(|n, v| {
        if n == "__name__" || !equal {
            return;
        }
        match labels.get(i) {
            Some((kn, kv)) if **kn == *n && **kv == *v => i += 1,
            _ => equal = false,
        }
    });
    equal && i == labels.len()
}

/// Updates the registry with a batch's samples.
struct RegistrySink<'a> {
    registry: &'a mut Registry,
    now: Instant,
    family: Option<Arc<str>>,
}

impl SampleSink for RegistrySink<'_> {
    fn sample(&mut self, sample: &Sample<'_>) {
        let hash = sample_hash(sample);
        if sample.value.is_nan() && sample.value.to_bits() == crate::translate::STALE_NAN_BITS {
            if let Ok(e) = self
                .registry
                .series
                .find_entry(hash, |e| same_series(&e.key, sample))
            {
                e.remove();
            }
            return;
        }
        if let Some(e) = self
            .registry
            .series
            .find_mut(hash, |e| same_series(&e.key, sample))
        {
            // The newest point wins, whatever order points arrive in; one that is older than
            // the value served still counts as a sign of life.
            if sample.timestamp_ms >= e.timestamp_ms {
                e.value = sample.value;
                e.timestamp_ms = sample.timestamp_ms;
            }
            e.updated = self.now;
            return;
        }
        // A new series: the only allocations of the export path.
        let family = match &self.family {
            Some(f) if **f == *sample.family.name => f.clone(),
            _ => {
                let f: Arc<str> = match self.registry.families.get_key_value(sample.family.name) {
                    Some((k, _)) => k.clone(),
                    None => sample.family.name.into(),
                };
                self.family = Some(f.clone());
                f
            }
        };
        let meta = FamilyMeta {
            ty: sample.family.ty,
            help: sample.family.help.into(),
        };
        self.registry.families.insert(family.clone(), meta);
        let mut labels = Vec::with_capacity(sample.labels.len() + 1);
        sample.for_each_label(|n, v| {
            if n != "__name__" {
                labels.push((Box::<str>::from(n), Box::<str>::from(v)));
            }
        });
        let rank = if sample.name.len() > family.len() {
            match &sample.name[family.len()..] {
                "_sum" => 1,
                "_count" => 2,
                _ => 0,
            }
        } else {
            0
        };
        let bound = sample.extra.map_or(0.0, |(_, v)| parse_bound(v));
        let entry = Entry {
            hash,
            key: Arc::new(SeriesKey::new(sample.name.into(), labels)),
            family,
            rank,
            bound,
            value: sample.value,
            timestamp_ms: sample.timestamp_ms,
            updated: self.now,
        };
        self.registry.series.insert_unique(hash, entry, |e| e.hash);
    }
}

fn parse_bound(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or(f64::NAN),
    }
}

struct Shared {
    registry: Mutex<Registry>,
    expiration: Duration,
}

/// A scrape's view of one series, taken under the lock and rendered outside it.
struct Row {
    key: Arc<SeriesKey>,
    family: Arc<str>,
    rank: u8,
    bound: f64,
    value: f64,
}

impl Shared {
    fn render(&self) -> String {
        let (mut rows, families) = {
            let mut reg = self.registry.lock();
            reg.sweep(Instant::now(), self.expiration);
            let rows: Vec<Row> = reg
                .series
                .iter()
                .map(|e| Row {
                    key: e.key.clone(),
                    family: e.family.clone(),
                    rank: e.rank,
                    bound: e.bound,
                    value: e.value,
                })
                .collect();
            (rows, reg.families.clone())
        };
        rows.sort_by(|a, b| {
            a.family
                .cmp(&b.family)
                .then_with(|| shared_labels(a).cmp(shared_labels(b)))
                .then(a.rank.cmp(&b.rank))
                .then(a.bound.total_cmp(&b.bound))
        });
        let mut out = String::with_capacity(rows.len() * 96);
        let mut last: Option<&str> = None;
        for row in &rows {
            if last != Some(&*row.family) {
                let meta = families.get(&row.family);
                if let Some(help) = meta.map(|m| &*m.help).filter(|h| !h.is_empty()) {
                    out.push_str("# HELP ");
                    out.push_str(&row.family);
                    out.push(' ');
                    exposition::push_help(&mut out, help);
                    out.push('\n');
                }
                let ty = meta.map_or("untyped", |m| m.ty.as_str());
                let _ = writeln!(out, "# TYPE {} {ty}", row.family);
                last = Some(&row.family);
            }
            out.push_str(row.key.name());
            exposition::push_labels(&mut out, row.key.labels().iter().map(|(n, v)| (&**n, &**v)));
            out.push(' ');
            exposition::push_value(&mut out, row.value);
            out.push('\n');
        }
        out
    }
}

/// A row's labels without `le` / `quantile`: what the lines of one histogram share.
fn shared_labels(r: &Row) -> impl Iterator<Item = (&str, &str)> {
    r.key
        .labels()
        .iter()
        .filter(|(n, _)| !matches!(&**n, "le" | "quantile"))
        .map(|(n, v)| (&**n, &**v))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared)
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
