//! Building and running the component graph from a validated [`Config`], and stopping it
//! cleanly.
//!
//! Start-up, in an order that fails fast and leaks nothing:
//! 1. bind every listener (telemetry, receivers, scrape endpoints): a port clash fails here,
//!    naming the endpoint and the component, before any task runs;
//! 2. build the shared part of processors with a lookup table (`customer_tier`, once per
//!    component id, so a customer file that does not load fails start-up too), then every
//!    exporter and receiver object;
//! 3. spawn one driver per exporter (an exporter used by several pipelines is ONE instance
//!    with one queue), one task per pipeline (its own bounded input channel, its own processor
//!    instances, the built-in batcher when it lists `batch`), one task per receiver fed by a
//!    [`PipelineSender`] targeting every pipeline that lists it, and one background refresher
//!    per lookup table (file poll, PostgreSQL query), which runs until the pipelines have
//!    drained at shutdown (one that ends before, a bug, is logged and shown on `/ready`);
//! 4. serve the telemetry endpoint ([`crate::health`]).
//!
//! Shutdown ([`RunningCollector::shutdown`]), each phase logged, all within
//! `service.shutdown_timeout`: cancel the receivers and wait for them (they stop accepting and
//! finish requests in flight) → the pipelines drain and flush once their inputs close → the
//! exporter drivers drain their queues. When the deadline passes, the drivers' hard-stop token
//! is cancelled: they stop retrying and count what is left as dropped with reason `shutdown`,
//! so nothing accepted is lost silently. The telemetry endpoint stops last.

mod stop;
mod supervise;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use vla_pipeline::driver::wal::Wal;
use vla_pipeline::driver::{ExporterHandle, spawn_exporter_with_wal};
use vla_pipeline::gpu::GpuSnapshots;
use vla_pipeline::registry::{
    BuildContext, BuildError, BuiltReceiver, Listeners, ProcessorFactory,
};
use vla_pipeline::runner::{Pipeline, Stage, pipeline_channel};
use vla_pipeline::{
    ComponentId, Exporter, PipelineSender, Receiver, ReceiverContext, ReceiverError, SelfMetrics,
    error_chain,
};

use crate::build::{bind, bind_all, record};
use crate::config::Config;
use crate::health::{AppState, ComponentState, Health};
use supervise::{StateGuard, supervise_refresher, watch};

/// A pipeline's input as a receiver sees it: its channel and its memory limiter.
type PipelineInput = (
    tokio::sync::mpsc::Sender<vla_pipeline::MetricBatch>,
    Option<Arc<vla_pipeline::memory::MemoryLimiter>>,
    bool,
);

/// Capacity of each pipeline's input channel, in batches (one batch per accepted request).
pub const PIPELINE_QUEUE_SIZE: usize = 32;
/// How long a receiver waits for room in a full pipeline before refusing with a retryable
/// status.
pub const RECEIVER_MAX_WAIT: Duration = Duration::from_millis(200);
/// After the hard stop, how long the tasks get to notice it before they are aborted.
const HARD_STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {endpoint} for {what}")]
    Bind {
        /// The YAML path of the endpoint, e.g. `receivers.otlp.protocols.grpc.endpoint`.
        what: String,
        /// The address.
        endpoint: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An endpoint that validation accepted did not parse (should not happen).
    #[error("invalid endpoint {endpoint:?} for {what}")]
    Endpoint {
        /// The YAML path of the endpoint.
        what: String,
        /// The text.
        endpoint: String,
    },
    /// A receiver could not be built.
    #[error("cannot build receiver {id}")]
    Receiver {
        /// The receiver's id.
        id: ComponentId,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// A processor could not be built (its lookup file did not load).
    #[error("cannot build processor {id}")]
    Processor {
        /// The processor's id.
        id: ComponentId,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// An exporter could not be built.
    #[error("cannot build exporter {id}")]
    Exporter {
        /// The exporter's id.
        id: ComponentId,
        /// Why.
        #[source]
        source: BuildError,
    },
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Everything drained before the deadline (no hard stop was needed).
    pub clean: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
    /// Components that failed while running (`receiver otlp: ...`).
    pub failures: Vec<String>,
}

/// Every bound listen address, by the YAML path of its setting: e.g.
/// `receivers.otlp.protocols.grpc.endpoint`, `exporters.prometheus.endpoint`,
/// `service.telemetry.metrics.address`. With port 0 in the config, these are the real ports.
pub type BoundAddrs = BTreeMap<String, SocketAddr>;

/// A started collector.
pub struct RunningCollector {
    telemetry: SelfMetrics,
    health: Arc<Health>,
    addrs: BoundAddrs,
    shutdown_timeout: Duration,
    stop_receivers: CancellationToken,
    hard_stop: CancellationToken,
    stop_telemetry: CancellationToken,
    failed: CancellationToken,
    stop_refreshers: CancellationToken,
    refreshers: Vec<JoinHandle<()>>,
    receivers: Vec<Task<Result<(), ReceiverError>>>,
    pipelines: Vec<Task<Option<String>>>,
    exporters: Vec<Task<Option<String>>>,
    telemetry_server: JoinHandle<()>,
}

impl std::fmt::Debug for RunningCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningCollector")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// Runs the collector until `shutdown` is cancelled (or a component fails), then stops it
/// cleanly.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ShutdownReport, StartError> {
    let collector = RunningCollector::start(config).await?;
    tokio::select! {
        _ = shutdown.cancelled() => info!("shutdown requested"),
        _ = collector.failed.cancelled() => error!("a component failed; shutting down"),
    }
    Ok(collector.shutdown().await)
}

/// A spawned component task: what to await, and what to abort if it never ends.
struct Task<T> {
    id: Arc<str>,
    join: JoinHandle<T>,
    abort: AbortHandle,
}

impl RunningCollector {
    /// Binds, builds and starts everything `config` describes.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let started = Instant::now();
        let telemetry = SelfMetrics::new();
        let health = Arc::new(Health::default());
        let mut addrs = BoundAddrs::new();

        // 1. Listeners first, so a clash fails before anything runs.
        let telemetry_path = "service.telemetry.metrics.address".to_owned();
        let telemetry_listener = bind(&telemetry_path, config.telemetry.metrics.address)?;
        record(&mut addrs, telemetry_path, &telemetry_listener);
        let telemetry_addr = config.telemetry.metrics.address;
        let telemetry_listener = telemetry_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(telemetry_listener))
            .map_err(|source| StartError::Bind {
                what: "service.telemetry.metrics.address".to_owned(),
                endpoint: telemetry_addr,
                source,
            })?;
        let mut receiver_listeners: BTreeMap<ComponentId, Listeners> = BTreeMap::new();
        for (id, rc) in &config.receivers {
            let listeners = bind_all(
                &format!("receivers.{id}"),
                rc.listen_endpoints(),
                &mut addrs,
            )?;
            receiver_listeners.insert(id.clone(), listeners);
        }
        let mut exporter_listeners: BTreeMap<ComponentId, Listeners> = BTreeMap::new();
        for (id, ec) in &config.exporters {
            let listeners = bind_all(
                &format!("exporters.{id}"),
                ec.listen_endpoints(),
                &mut addrs,
            )?;
            exporter_listeners.insert(id.clone(), listeners);
        }

        // 2. Component objects: lookup tables first (a customer file that does not load fails
        // here, before anything runs), then exporters and receivers.
        let gpus = GpuSnapshots::new();
        let ctx = |id, listeners| BuildContext {
            id,
            self_metrics: &telemetry,
            gpus: &gpus,
            listeners,
        };
        let mut processors: BTreeMap<ComponentId, Box<dyn ProcessorFactory>> = BTreeMap::new();
        for (id, pc) in &config.processors {
            match pc.build_processor(ctx(id, Listeners::new())) {
                Ok(factory) => {
                    if let Some(status) = factory.status() {
                        health.set("processor", id, ComponentState::Running);
                        health.attach_source("processor", id, status);
                    }
                    processors.insert(id.clone(), factory);
                }
                Err(source) => {
                    return Err(StartError::Processor {
                        id: id.clone(),
                        source,
                    });
                }
            }
        }
        // Each pipeline's stages (a persisted state that cannot be opened fails here).
        let mut stages_of: Vec<Vec<Stage>> = Vec::with_capacity(config.pipelines.len());
        for p in &config.pipelines {
            let mut stages = Vec::with_capacity(p.processors.len());
            for id in &p.processors {
                let Some(factory) = processors.get(id) else {
                    continue;
                };
                match factory.stage(&p.name) {
                    Ok(stage) => stages.push(stage),
                    Err(source) => {
                        return Err(StartError::Processor {
                            id: id.clone(),
                            source,
                        });
                    }
                }
            }
            stages_of.push(stages);
        }
        let mut exporters: Vec<(ComponentId, Arc<dyn Exporter>)> = Vec::new();
        for (id, ec) in &config.exporters {
            let listeners = exporter_listeners.remove(id).unwrap_or_default();
            match ec.build_exporter(ctx(id, listeners)) {
                Ok(e) => exporters.push((id.clone(), e)),
                Err(source) => {
                    for (_, e) in &exporters {
                        e.shutdown().await;
                    }
                    return Err(StartError::Exporter {
                        id: id.clone(),
                        source,
                    });
                }
            }
        }
        let mut receivers: Vec<(ComponentId, Box<dyn Receiver>)> = Vec::new();
        for (id, rc) in &config.receivers {
            let listeners = receiver_listeners.remove(id).unwrap_or_default();
            match rc.build_receiver(ctx(id, listeners)) {
                Ok(BuiltReceiver { receiver, status }) => {
                    if let Some(status) = status {
                        health.attach_source("receiver", id, status);
                    }
                    receivers.push((id.clone(), receiver));
                }
                Err(source) => {
                    for (_, e) in &exporters {
                        e.shutdown().await;
                    }
                    return Err(StartError::Receiver {
                        id: id.clone(),
                        source,
                    });
                }
            }
        }

        // Write-ahead logs: one that cannot be opened (or is in use) fails the start-up.
        let mut wals: BTreeMap<ComponentId, Arc<Wal>> = BTreeMap::new();
        for (id, ec) in &config.exporters {
            let Some(wc) = ec.driver_config().wal.clone() else {
                continue;
            };
            match Wal::open(wc, &telemetry, id) {
                Ok(w) => {
                    wals.insert(id.clone(), w);
                }
                Err(e) => {
                    for (_, e) in &exporters {
                        e.shutdown().await;
                    }
                    return Err(StartError::Exporter {
                        id: id.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }

        // 3. Tasks: exporter drivers, pipelines, receivers.
        let hard_stop = CancellationToken::new();
        let failed = CancellationToken::new();
        let mut handles: BTreeMap<ComponentId, ExporterHandle> = BTreeMap::new();
        let mut exporter_tasks = Vec::new();
        for (id, exporter) in exporters {
            let driver = config
                .exporters
                .get(&id)
                .map(|c| c.driver_config().clone())
                .unwrap_or_default();
            let wal = wals.remove(&id);
            let (handle, join) = spawn_exporter_with_wal(
                id.clone(),
                exporter,
                driver,
                &telemetry,
                hard_stop.clone(),
                wal,
            );
            if let Some(wal) = handle.wal_health() {
                health.attach_wal(&id, wal);
            }
            health.set("exporter", &id, ComponentState::Running);
            exporter_tasks.push(watch(join, &health, &failed, "exporter", id.clone()));
            handles.insert(id, handle);
        }
        let mut inputs: BTreeMap<ComponentId, Vec<PipelineInput>> = BTreeMap::new();
        let mut pipeline_tasks = Vec::new();
        for (p, stages) in config.pipelines.iter().zip(stages_of) {
            let (tx, rx) = pipeline_channel(&p.name, PIPELINE_QUEUE_SIZE, &telemetry);
            let outputs: Vec<ExporterHandle> = p
                .exporters
                .iter()
                .filter_map(|id| handles.get(id).cloned())
                .collect();
            // Validation allows one memory_limiter per pipeline, listed first.
            let limiter = p
                .processors
                .iter()
                .find_map(|id| processors.get(id)?.memory_limiter());
            // A pipeline with a write-ahead log answers its clients once the log has the data.
            let durable = outputs.iter().any(ExporterHandle::is_durable);
            let pipeline = Pipeline::new(p.name.clone(), stages, outputs, &telemetry)
                .with_memory_limiter(limiter.clone());
            for r in &p.receivers {
                inputs
                    .entry(r.clone())
                    .or_default()
                    .push((tx.clone(), limiter.clone(), durable));
            }
            health.set("pipeline", &p.name, ComponentState::Running);
            let join = tokio::spawn(pipeline.run(rx));
            pipeline_tasks.push(watch(join, &health, &failed, "pipeline", p.name.clone()));
        }
        // The pipelines keep only their exporters' handles: once every pipeline has drained,
        // the drivers see their queues close and finish.
        drop(handles);

        // Lookup refreshers run until the pipelines have drained.
        let stop_refreshers = CancellationToken::new();
        let refreshers: Vec<JoinHandle<()>> = processors
            .iter()
            .filter_map(|(id, f)| {
                let task = f.refresher(stop_refreshers.clone())?;
                Some(supervise_refresher(
                    id.clone(),
                    f.status()?,
                    tokio::spawn(task),
                    stop_refreshers.clone(),
                ))
            })
            .collect();

        let stop_receivers = CancellationToken::new();
        let mut receiver_tasks = Vec::new();
        for (id, receiver) in receivers {
            let mut targets = Vec::new();
            let mut limiters = Vec::new();
            let mut durable = Vec::new();
            for (tx, limiter, d) in inputs.remove(&id).unwrap_or_default() {
                targets.push(tx);
                limiters.push(limiter);
                durable.push(d);
            }
            let output = PipelineSender::new(&id, targets, RECEIVER_MAX_WAIT, &telemetry)
                .with_memory_limiters(limiters)
                .with_durable(durable);
            let ctx = ReceiverContext {
                output,
                shutdown: stop_receivers.child_token(),
            };
            health.set("receiver", &id, ComponentState::Running);
            let guard = StateGuard {
                health: health.clone(),
                failed: failed.clone(),
                kind: "receiver",
                id: id.clone(),
            };
            let join = tokio::spawn(async move {
                let result = receiver.run(ctx).await;
                if let Err(e) = &result {
                    error!(receiver = %guard.id, error = %error_chain(e), "receiver failed");
                    guard.fail();
                }
                drop(guard);
                result
            });
            receiver_tasks.push(Task {
                id,
                abort: join.abort_handle(),
                join,
            });
        }
        drop(inputs);

        // 4. The telemetry endpoint.
        let stop_telemetry = CancellationToken::new();
        let app = crate::health::app(AppState {
            telemetry: telemetry.clone(),
            health: health.clone(),
            started,
        });
        let telemetry_server = {
            let stop = stop_telemetry.clone();
            tokio::spawn(async move {
                let serve = axum::serve(telemetry_listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    error!(addr = %telemetry_addr, error = %e, "telemetry endpoint failed");
                }
            })
        };

        info!(
            source = %config.source,
            summary = %config.summary(),
            telemetry = %addrs.get("service.telemetry.metrics.address").map(ToString::to_string).unwrap_or_default(),
            "collector started"
        );
        for (what, addr) in &addrs {
            info!(setting = %what, %addr, "listening");
        }
        Ok(Self {
            telemetry,
            health,
            addrs,
            shutdown_timeout: config.shutdown_timeout,
            stop_receivers,
            hard_stop,
            stop_telemetry,
            failed,
            stop_refreshers,
            refreshers,
            receivers: receiver_tasks,
            pipelines: pipeline_tasks,
            exporters: exporter_tasks,
            telemetry_server,
        })
    }

    /// Every bound listen address, by the YAML path of its setting.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// The bound address of one setting, e.g. `receivers.otlp.protocols.http.endpoint`.
    pub fn addr(&self, setting: &str) -> Option<SocketAddr> {
        self.addrs.get(setting).copied()
    }

    /// The self-metrics registry.
    pub fn telemetry(&self) -> &SelfMetrics {
        &self.telemetry
    }

    /// Cancelled when a component fails while running.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }
}
