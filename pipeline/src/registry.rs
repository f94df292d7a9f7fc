//! The component registry's contract: what a component type declares once (its `type` name,
//! config type, documented example, pure validation and how it is built), and the
//! [`Registry`] each component crate fills with its types.
//!
//! The collector walks those tables for everything it does with a type: parsing and
//! validating its YAML, the `components` listing, the listen endpoints it binds before start,
//! and building it. A new component implements [`Component`] and one of [`ReceiverType`],
//! [`ProcessorType`] or [`ExporterType`] in its own file, and adds one line to its crate's
//! `register` function.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigProblem;
use crate::driver::DriverConfig;
use crate::gpu::GpuSnapshots;
use crate::lookup::SourceStatus;
use crate::runner::Stage;
use crate::{BoxFuture, ComponentId, Exporter, Processor, Receiver, SelfMetrics};

/// Why a component could not be built from its validated config.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The listeners the collector bound for a component, by the relative path of their setting
/// (`protocols.grpc.endpoint`), before anything started.
pub type Listeners = BTreeMap<&'static str, TcpListener>;

/// What building a component may use.
pub struct BuildContext<'a> {
    /// The component's id (`type` or `type/name`).
    pub id: &'a ComponentId,
    /// The collector's self-metrics.
    pub self_metrics: &'a SelfMetrics,
    /// The GPU readings shared by the `nvml` receiver and the `gpu_stats` processor.
    pub gpus: &'a GpuSnapshots,
    /// The listeners bound for [`Component::listen_endpoints`].
    pub listeners: Listeners,
}

impl BuildContext<'_> {
    /// Takes the listener bound for `setting` (one of the component's listen endpoints).
    pub fn listener(&mut self, setting: &str) -> Result<TcpListener, BuildError> {
        self.listeners
            .remove(setting)
            .ok_or_else(|| format!("no listener was bound for {setting}").into())
    }
}

/// A component type: its name in configs, its settings, and how they are checked.
pub trait Component: 'static {
    /// The config `type` (the part of a component id before `/`).
    const TYPE: &'static str;
    /// A documented example of its settings (the YAML under the component's id). It must
    /// parse, validate and build: a test walks every registered type.
    const EXAMPLE: &'static str;
    /// The typed settings (`deny_unknown_fields`; a missing value means all defaults).
    type Config: DeserializeOwned + std::fmt::Debug + Send + Sync + 'static;

    /// Checks the settings, without I/O; problems are reported under `path`
    /// (`processors.attributes/env`).
    fn validate(config: &Self::Config, path: &str) -> Vec<ConfigProblem>;

    /// The addresses it listens on: (setting below the component, `ip:port` text). The
    /// collector binds them all before any component starts, so a clash fails start-up.
    fn listen_endpoints(_config: &Self::Config) -> Vec<(&'static str, &str)> {
        Vec::new()
    }
}

/// A built receiver, and for a polling source its health as `/ready` shows it.
pub struct BuiltReceiver {
    /// The receiver.
    pub receiver: Box<dyn Receiver>,
    /// The health of its source, when it polls one (`nvml`).
    pub status: Option<SourceStatus>,
}

/// A receiver type.
pub trait ReceiverType: Component {
    /// Builds the receiver (its listeners are in `ctx`).
    fn build(config: &Self::Config, ctx: BuildContext<'_>) -> Result<BuiltReceiver, BuildError>;
}

/// A processor built once per component id; it makes one [`Stage`] per pipeline that lists it
/// and owns what those share (a lookup table and its background refresher).
pub trait ProcessorFactory: Send + Sync {
    /// The stage for one more pipeline, named `pipeline` (a stateful processor keys what it
    /// persists by it). Fails at start-up when that state cannot be opened.
    fn stage(&self, pipeline: &str) -> Result<Stage, BuildError>;

    /// The health of its lookup source, for `/ready`.
    fn status(&self) -> Option<SourceStatus> {
        None
    }

    /// The byte-accounting admission it stands for (`memory_limiter`): the collector has the
    /// receivers feeding a pipeline that lists it admit through it.
    fn memory_limiter(&self) -> Option<Arc<crate::memory::MemoryLimiter>> {
        None
    }

    /// The background task refreshing its lookup source, run until `stop`.
    fn refresher(&self, _stop: CancellationToken) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// The [`ProcessorFactory`] of a processor with no shared state: each pipeline gets a
/// processor made by the closure.
pub struct PerPipeline<F>(pub F);

impl<F> ProcessorFactory for PerPipeline<F>
where
    F: Fn() -> Box<dyn Processor> + Send + Sync,
{
    fn stage(&self, _pipeline: &str) -> Result<Stage, BuildError> {
        Ok(Stage::Process((self.0)()))
    }
}

/// A processor type.
pub trait ProcessorType: Component {
    /// Builds the processor (a file that does not load fails here, at start-up).
    fn build(
        config: &Self::Config,
        ctx: BuildContext<'_>,
    ) -> Result<Box<dyn ProcessorFactory>, BuildError>;
}

/// An exporter type.
pub trait ExporterType: Component {
    /// Its queue and retry settings (`sending_queue`, `retry_on_failure`), checked with the
    /// rest; the defaults for exporters without such settings.
    fn driver(_config: &Self::Config, _path: &str) -> Result<DriverConfig, Vec<ConfigProblem>> {
        Ok(DriverConfig::default())
    }

    /// Builds the exporter (its listeners are in `ctx`; it may need a tokio runtime).
    fn build(config: &Self::Config, ctx: BuildContext<'_>)
    -> Result<Arc<dyn Exporter>, BuildError>;
}

/// A table of component types, filled by each component crate's `register` function.
pub trait Registry {
    /// Adds a receiver type.
    fn receiver<C: ReceiverType>(&mut self);
    /// Adds a processor type.
    fn processor<C: ProcessorType>(&mut self);
    /// Adds an exporter type.
    fn exporter<C: ExporterType>(&mut self);
}
