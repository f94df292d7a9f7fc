//! The `nvml` receiver: polls every NVIDIA GPU of the host on an interval and sends the
//! readings into the pipelines as OTLP metrics (the catalogue's `vla.gpu.*` names and,
//! optionally, the DCGM exporter's); it also publishes each good poll as a [`GpuSnapshot`] for
//! the `gpu_stats` processor. The readings come from a [`GpuSource`]: [`NvmlSource`] (NVIDIA's
//! NVML library, loaded at run time) or [`FakeGpuSource`] (simulated GPUs, for demos and
//! tests). Without a GPU or driver, or while a poll hangs, it reports `vla.gpu.available 0`
//! and keeps running; it never fails the collector.
//!
//! ```yaml
//! receivers:
//!   nvml:
//!     collection_interval: 10s        # default 10s, at least 100ms
//!     source: nvml                    # nvml (default) | fake
//!     metrics: { vla: true, dcgm: false }
//! ```
//!
//! The full manual: `docs/components/nvml.md`.

mod config;
mod metrics;
mod nvml_source;
mod source;
#[cfg(test)]
mod tests;
mod xid_totals;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use vla_pipeline::gpu::{GpuReading, GpuSnapshot, GpuSnapshots};
use vla_pipeline::lookup::SourceStatus;
use vla_pipeline::self_metrics::Counter;
use vla_pipeline::{
    BoxFuture, ComponentId, MetricBatch, Receiver, ReceiverContext, ReceiverError, SelfMetrics,
    SendError,
};

pub use config::{
    Config, DEFAULT_COLLECTION_INTERVAL, DEFAULT_OPEN_TIMEOUT, FakeConfig,
    MAX_DEFAULT_POLL_TIMEOUT, MAX_FAKE_GPUS, MIN_COLLECTION_INTERVAL, MetricsConfig, Scenario,
    SourceKind,
};
pub use nvml_source::DEFAULT_LIBRARY;
pub use source::{BoxError, FakeGpuSource, GpuError, GpuSource, NvmlSource};

use metrics::{Encoder, PollResult};
use xid_totals::XidTotals;

/// The config `type` of this receiver.
pub const TYPE: &str = "nvml";

/// Shortest wait between two attempts to open NVML.
const INIT_RETRY: Duration = Duration::from_secs(60);
/// Failed (or timed-out) polls in a row after which an openable source is dropped and opened
/// again (a reloaded driver needs a fresh NVML).
pub const REOPEN_AFTER_FAILED_POLLS: u32 = 5;

type BoxSource = Box<dyn GpuSource>;
type SharedSource = Arc<Mutex<BoxSource>>;
type Opener = Arc<dyn Fn() -> Result<BoxSource, GpuError> + Send + Sync>;

/// The `nvml` receiver.
pub struct NvmlReceiver {
    id: ComponentId,
    config: Config,
    slot: Slot,
    /// How to open the source again after repeated failures; `None` for a given source.
    reopen: Option<Opener>,
    /// Wait between two attempts to open the source.
    init_retry: Duration,
    /// Longest wait for one poll.
    poll_timeout: Duration,
    /// Longest wait for one attempt to open the source.
    open_timeout: Duration,
    gpus: GpuSnapshots,
    status: SourceStatus,
    polls_ok: Counter,
    polls_failed: Counter,
    polls_unavailable: Counter,
    polls_timeout: Counter,
}

/// The source, or how to open it.
enum Slot {
    Open(SharedSource),
    /// Not opened yet, or the last attempt failed, or dropped after failures.
    Closed(Opener),
}

impl std::fmt::Debug for NvmlReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlReceiver")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("open", &matches!(self.slot, Slot::Open(_)))
            .finish_non_exhaustive()
    }
}

impl NvmlReceiver {
    /// Picks the source from the config (NvmlSource opened lazily inside `run`, so a missing
    /// driver never fails start-up; FakeGpuSource for `source: fake`).
    pub fn new(
        id: ComponentId,
        config: &Config,
        gpus: GpuSnapshots,
        telemetry: &SelfMetrics,
    ) -> Self {
        match config.source {
            SourceKind::Fake => {
                let source = FakeGpuSource::new(&config.fake_or_default());
                Self::with_source(id, config, Box::new(source), gpus, telemetry)
            }
            SourceKind::Nvml => {
                let path: Option<PathBuf> = config.library_path.clone();
                let described = match &path {
                    Some(p) => format!("nvml ({})", p.display()),
                    None => "nvml".to_owned(),
                };
                let opener: Opener = Arc::new(move || {
                    NvmlSource::open(path.as_deref()).map(|s| Box::new(s) as BoxSource)
                });
                Self::build(id, config, Slot::Closed(opener), described, gpus, telemetry)
            }
        }
    }

    /// With an explicit source (tests); it is kept however often it fails.
    pub fn with_source(
        id: ComponentId,
        config: &Config,
        source: Box<dyn GpuSource>,
        gpus: GpuSnapshots,
        telemetry: &SelfMetrics,
    ) -> Self {
        let described = source.describe();
        let slot = Slot::Open(Arc::new(Mutex::new(source)));
        Self::build(id, config, slot, described, gpus, telemetry)
    }

    fn build(
        id: ComponentId,
        config: &Config,
        slot: Slot,
        described: String,
        gpus: GpuSnapshots,
        telemetry: &SelfMetrics,
    ) -> Self {
        let polls = |result: &str| {
            telemetry.counter(
                "vla_collector_receiver_gpu_polls_total",
                "GPU polls of an nvml receiver, one per interval, by result (ok, failed, \
                 unavailable, timeout).",
                &[("receiver", &id), ("result", result)],
            )
        };
        let reopen = match &slot {
            Slot::Closed(opener) => Some(opener.clone()),
            Slot::Open(_) => None,
        };
        Self {
            polls_ok: polls("ok"),
            polls_failed: polls("failed"),
            polls_unavailable: polls("unavailable"),
            polls_timeout: polls("timeout"),
            id: id.clone(),
            config: config.clone(),
            slot,
            reopen,
            init_retry: INIT_RETRY.max(config.collection_interval),
            poll_timeout: config.effective_poll_timeout(),
            open_timeout: config.open_timeout,
            gpus,
            status: SourceStatus::new(described),
        }
    }

    /// The source's health, for `/ready`.
    pub fn status(&self) -> SourceStatus {
        self.status.clone()
    }

    async fn serve(mut self, ctx: ReceiverContext) -> Result<(), ReceiverError> {
        let started = SystemTime::now();
        let encoder = Encoder::new(
            self.config.metrics,
            &host_name(),
            self.config
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            started,
        );
        let mut state = PollState::default();
        let mut ticker = tokio::time::interval(self.config.collection_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        debug!(receiver = %self.id, interval = ?self.config.collection_interval, timeout = ?self.poll_timeout, "nvml receiver started");
        loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let readings = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                r = self.poll_once(&mut state) => r,
            };
            let result = match &readings {
                Some(r) => PollResult::Readings(r),
                None => PollResult::Unavailable,
            };
            let batch = MetricBatch::new(
                self.id.clone(),
                vec![encoder.encode(result, SystemTime::now())],
            );
            let sent = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                r = ctx.output.send(batch) => r,
            };
            match sent {
                // Refused points are counted by the sender; the next poll sends fresh values.
                Ok(())
                | Err(SendError::Full | SendError::MemoryLimit | SendError::NotPersisted) => {}
                Err(SendError::Closed) => {
                    debug!(receiver = %self.id, "pipelines closed; nvml receiver stops");
                    break;
                }
            }
        }
        debug!(receiver = %self.id, "nvml receiver stopped");
        Ok(())
    }

    /// One poll: opens the source first if needed. `None` when no reading could be taken.
    async fn poll_once(&mut self, state: &mut PollState) -> Option<Vec<GpuReading>> {
        if let Some(call) = state.outstanding.take() {
            if !call.is_finished() {
                // Still running: starting another call would only pile up blocked threads.
                self.still_running(call, state);
                return None;
            }
            match call {
                // A late answer is stale: poll afresh below.
                Outstanding::Poll(h) => {
                    info!(receiver = %self.id, "nvml receiver: the GPU call that timed out has returned");
                    drop(h.await);
                }
                Outstanding::Open { call, hung, .. } => {
                    if hung {
                        info!(receiver = %self.id, "nvml receiver: opening the GPU source has returned");
                    }
                    // A late successful open is used; a failure is retried after `init_retry`.
                    drop(self.open_finished(state, flatten(call.await)));
                }
            }
        }
        let source = match &self.slot {
            Slot::Open(s) => s.clone(),
            Slot::Closed(opener) => {
                if state.next_open.is_some_and(|t| Instant::now() < t) {
                    self.polls_unavailable.inc();
                    return None;
                }
                let opener = opener.clone();
                let deadline = Instant::now() + self.open_timeout;
                let mut call = tokio::task::spawn_blocking(move || opener());
                // Waited on for one poll's time; a slower open (nvmlInit without persistence
                // mode) goes on in the background while the intervals report "unavailable".
                let wait = self.poll_timeout.min(self.open_timeout);
                let opened = match tokio::time::timeout(wait, &mut call).await {
                    Ok(joined) => flatten(joined),
                    Err(_) => {
                        debug!(receiver = %self.id, "nvml receiver: opening the GPU source is slow; reporting vla_gpu_available 0 meanwhile");
                        let call = Outstanding::Open {
                            call,
                            deadline,
                            hung: false,
                        };
                        self.still_running(call, state);
                        return None;
                    }
                };
                match self.open_finished(state, opened) {
                    Some(source) => source,
                    None => {
                        self.polls_unavailable.inc();
                        return None;
                    }
                }
            }
        };
        let mut call = tokio::task::spawn_blocking(move || {
            source.lock().unwrap_or_else(PoisonError::into_inner).poll()
        });
        let polled = match tokio::time::timeout(self.poll_timeout, &mut call).await {
            Ok(joined) => flatten(joined),
            Err(_) => {
                state.outstanding = Some(Outstanding::Poll(call));
                self.poll_hung(state);
                self.failed_poll(state);
                return None;
            }
        };
        match polled {
            Ok(mut readings) => {
                readings.sort_by_key(|r| r.index);
                state.xid.apply(&mut readings);
                state.failed_polls = 0;
                if state.failing {
                    state.failing = false;
                    info!(receiver = %self.id, gpus = readings.len(), "nvml receiver: reading the GPUs again");
                }
                self.gpus.publish(GpuSnapshot {
                    gpus: readings.clone(),
                    taken_at: Some(SystemTime::now()),
                });
                self.status.success(readings.len() as u64);
                self.polls_ok.inc();
                Some(readings)
            }
            Err(e) => {
                let error = e.one_line();
                if !state.failing {
                    state.failing = true;
                    warn!(receiver = %self.id, %error, "nvml receiver: reading the GPUs failed; reporting vla_gpu_available 0 until it works again");
                }
                self.status.failure(error);
                self.polls_failed.inc();
                self.failed_poll(state);
                None
            }
        }
    }

    /// Handles the end of an attempt to open the source: the source, or `None` (warned once,
    /// tried again after `init_retry`).
    fn open_finished(
        &mut self,
        state: &mut PollState,
        opened: Result<BoxSource, GpuError>,
    ) -> Option<SharedSource> {
        match opened {
            Ok(source) => Some(self.opened(state, source)),
            Err(e) => {
                let error = e.one_line();
                if !state.open_warned {
                    state.open_warned = true;
                    warn!(receiver = %self.id, "nvml receiver: no NVIDIA driver/GPU found ({error}); reporting vla_gpu_available 0 and retrying every {:?}", self.init_retry);
                } else {
                    debug!(receiver = %self.id, %error, "nvml receiver: still no NVIDIA driver/GPU");
                }
                self.status.failure(error);
                state.next_open = Some(Instant::now() + self.init_retry);
                None
            }
        }
    }

    /// Counts an interval spent waiting on a call still running, and keeps the call. An open
    /// is "unavailable" until `open_timeout`, then hung ("timeout", warned once); a poll that
    /// outlived `poll_timeout` is hung.
    fn still_running(&mut self, mut call: Outstanding, state: &mut PollState) {
        match &mut call {
            Outstanding::Poll(_) => self.polls_timeout.inc(),
            Outstanding::Open { deadline, hung, .. } => {
                if *hung {
                    self.polls_timeout.inc();
                } else if Instant::now() >= *deadline {
                    *hung = true;
                    self.open_hung();
                } else {
                    self.polls_unavailable.inc();
                }
            }
        }
        state.outstanding = Some(call);
    }

    /// Puts a freshly opened source in the slot.
    fn opened(&mut self, state: &mut PollState, source: BoxSource) -> SharedSource {
        info!(receiver = %self.id, source = %source.describe(), "nvml receiver: NVIDIA driver found; reading the GPUs");
        let source = Arc::new(Mutex::new(source));
        self.slot = Slot::Open(source.clone());
        state.next_open = None;
        state.failed_polls = 0;
        source
    }

    /// Reports a poll that did not return within `poll_timeout`.
    fn poll_hung(&self, state: &mut PollState) {
        let error = format!(
            "reading the GPUs did not return within {:?} (a GPU may have fallen off the bus); \
             no new GPU call until it returns",
            self.poll_timeout
        );
        if !state.failing {
            state.failing = true;
            warn!(receiver = %self.id, %error, "nvml receiver: GPU call hung; reporting vla_gpu_available 0 until it works again");
        }
        self.status.failure(error);
        self.polls_timeout.inc();
    }

    /// Reports an attempt to open the source that did not return within `open_timeout`.
    fn open_hung(&self) {
        let error = format!(
            "opening the GPU source did not return within {:?} (the driver may be hung); no \
             new GPU call until it returns",
            self.open_timeout
        );
        warn!(receiver = %self.id, %error, "nvml receiver: opening NVML hung; reporting vla_gpu_available 0 until it returns");
        self.status.failure(error);
        self.polls_timeout.inc();
    }

    /// Counts a failed poll; after [`REOPEN_AFTER_FAILED_POLLS`] in a row, drops an openable
    /// source so the next interval opens it afresh.
    fn failed_poll(&mut self, state: &mut PollState) {
        state.failed_polls += 1;
        let Some(opener) = &self.reopen else {
            return;
        };
        if state.failed_polls < REOPEN_AFTER_FAILED_POLLS {
            return;
        }
        warn!(receiver = %self.id, failed_polls = state.failed_polls, "nvml receiver: GPU polls keep failing; closing the GPU source and opening it again (driver reloaded?)");
        // A hung poll still holds the source; it is released when that call returns.
        self.slot = Slot::Closed(opener.clone());
        state.xid.source_dropped();
        state.next_open = None;
        state.failed_polls = 0;
    }
}

impl Receiver for NvmlReceiver {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> BoxFuture<'static, Result<(), ReceiverError>> {
        Box::pin(self.serve(ctx))
    }
}

/// What the poll loop remembers between ticks.
#[derive(Default)]
struct PollState {
    /// No attempt to open the source before this.
    next_open: Option<Instant>,
    /// The "no driver" warning was logged.
    open_warned: bool,
    /// Polls are failing (warned once for the streak).
    failing: bool,
    /// Failed or timed-out polls in a row.
    failed_polls: u32,
    /// A blocking call still running after this interval's wait.
    outstanding: Option<Outstanding>,
    /// XID totals carried across re-opens of the source.
    xid: XidTotals,
}

/// A blocking call still running after this interval's wait.
enum Outstanding {
    Open {
        call: JoinHandle<Result<BoxSource, GpuError>>,
        /// When it counts as hung (started + `open_timeout`).
        deadline: Instant,
        /// Reported hung (warned).
        hung: bool,
    },
    /// A poll past `poll_timeout`.
    Poll(JoinHandle<Result<Vec<GpuReading>, GpuError>>),
}

impl Outstanding {
    fn is_finished(&self) -> bool {
        match self {
            Outstanding::Open { call, .. } => call.is_finished(),
            Outstanding::Poll(h) => h.is_finished(),
        }
    }
}

/// A blocking call's result; a panic there becomes a [`GpuError::Read`].
fn flatten<T>(joined: Result<Result<T, GpuError>, tokio::task::JoinError>) -> Result<T, GpuError> {
    joined.unwrap_or_else(|e| {
        Err(GpuError::Read {
            message: "the GPU source stopped unexpectedly".to_owned(),
            source: Some(Box::new(e)),
        })
    })
}

/// The host's name: `/etc/hostname`, else `$HOSTNAME`, else the kernel's; empty if none.
fn host_name() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    read("/etc/hostname")
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .unwrap_or_default()
}

impl vla_pipeline::registry::Component for NvmlReceiver {
    const TYPE: &'static str = TYPE;
    const EXAMPLE: &'static str = "\
collection_interval: 10s
source: fake                # nvml (default) reads the host's GPUs; fake needs none
fake: { gpus: 2, model: \"NVIDIA H100 80GB HBM3\", scenario: steady }
metrics: { vla: true, dcgm: false }
";
    type Config = Config;

    fn validate(config: &Config, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        config.validate(path)
    }
}

impl vla_pipeline::registry::ReceiverType for NvmlReceiver {
    fn build(
        config: &Config,
        ctx: vla_pipeline::registry::BuildContext<'_>,
    ) -> Result<vla_pipeline::registry::BuiltReceiver, vla_pipeline::registry::BuildError> {
        let r = Self::new(ctx.id.clone(), config, ctx.gpus.clone(), ctx.self_metrics);
        let status = Some(r.status());
        Ok(vla_pipeline::registry::BuiltReceiver {
            receiver: Box::new(r),
            status,
        })
    }
}
