//! Building components from their typed configs, and binding their listen addresses.
//!
//! One `match` arm per component type; `config/components.rs` has the matching arm for
//! parsing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use vla_pipeline::gpu::GpuSnapshots;
use vla_pipeline::lookup::SourceStatus;
use vla_pipeline::{BoxFuture, ComponentId, Exporter, Processor, Receiver, SelfMetrics};
use vla_processors::customer_tier::CustomerTier;

use crate::config::{ExporterConfig, ProcessorConfig, ReceiverConfig};
use crate::service::{BoundAddrs, StartError};

/// The listeners of one component, by the relative path of their setting.
pub(crate) type Listeners = BTreeMap<&'static str, TcpListener>;

pub(crate) fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind {
        what: what.to_owned(),
        endpoint: addr,
        source,
    })
}

pub(crate) fn record(addrs: &mut BoundAddrs, what: String, listener: &TcpListener) {
    if let Ok(a) = listener.local_addr() {
        addrs.insert(what, a);
    }
}

/// Binds a component's endpoints (`(relative path, "ip:port")`) under `base`.
pub(crate) fn bind_all(
    base: &str,
    endpoints: Vec<(&'static str, &str)>,
    addrs: &mut BoundAddrs,
) -> Result<Listeners, StartError> {
    let mut out = Listeners::new();
    for (rest, endpoint) in endpoints {
        let what = format!("{base}.{rest}");
        let addr = vla_pipeline::config::parse_listen_addr(endpoint).map_err(|_| {
            StartError::Endpoint {
                what: what.clone(),
                endpoint: endpoint.to_owned(),
            }
        })?;
        let listener = bind(&what, addr)?;
        record(addrs, what, &listener);
        out.insert(rest, listener);
    }
    Ok(out)
}

pub(crate) fn build_exporter(
    id: &ComponentId,
    config: &ExporterConfig,
    mut listeners: Listeners,
    telemetry: &SelfMetrics,
) -> Result<Arc<dyn Exporter>, vla_exporters::ExporterBuildError> {
    use vla_exporters::{DebugExporter, PrometheusExporter, PrometheusRemoteWriteExporter};
    Ok(match config {
        ExporterConfig::PrometheusRemoteWrite(c, _) => Arc::new(
            PrometheusRemoteWriteExporter::new(id.clone(), c, telemetry)?,
        ),
        ExporterConfig::Prometheus(c, _) => {
            let listener = listeners.remove("endpoint").ok_or_else(|| {
                vla_exporters::ExporterBuildError::Listener(std::io::Error::other(
                    "no listener bound for the endpoint",
                ))
            })?;
            Arc::new(PrometheusExporter::new(id.clone(), c, listener, telemetry)?)
        }
        ExporterConfig::Debug(c, _) => Arc::new(DebugExporter::new(id.clone(), c)),
    })
}

/// A receiver object and, for a polling source (`nvml`), its health for `/ready`.
pub(crate) type BuiltReceiver = (Box<dyn Receiver>, Option<SourceStatus>);

pub(crate) fn build_receiver(
    id: &ComponentId,
    config: &ReceiverConfig,
    mut listeners: Listeners,
    telemetry: &SelfMetrics,
    gpus: &GpuSnapshots,
) -> Result<BuiltReceiver, vla_receivers::ReceiverBuildError> {
    Ok(match config {
        ReceiverConfig::Otlp(c) => {
            let grpc = listeners.remove("protocols.grpc.endpoint");
            let http = listeners.remove("protocols.http.endpoint");
            let r = vla_receivers::OtlpReceiver::new(id.clone(), c, grpc, http, telemetry)?;
            (Box::new(r), None)
        }
        ReceiverConfig::Nvml(c) => {
            let r = vla_receivers::nvml::NvmlReceiver::new(id.clone(), c, gpus.clone(), telemetry);
            let status = r.status();
            (Box::new(r), Some(status))
        }
    })
}

/// The part of a processor shared by every pipeline that lists it: a lookup table and the
/// background task that refreshes it. Built once per component id.
pub(crate) enum SharedProcessor {
    /// `customer_tier`: the customer table.
    CustomerTier(CustomerTier),
}

impl SharedProcessor {
    /// The lookup source's health, for `/ready`.
    pub(crate) fn status(&self) -> SourceStatus {
        match self {
            SharedProcessor::CustomerTier(t) => t.status(),
        }
    }

    /// The background refresher, if the source has one.
    pub(crate) fn refresher(&self, stop: CancellationToken) -> Option<BoxFuture<'static, ()>> {
        match self {
            SharedProcessor::CustomerTier(t) => t.refresher(stop),
        }
    }
}

/// The shared part of a processor, for the types that have one (a file that does not load
/// fails here, at start-up).
pub(crate) fn build_shared_processor(
    id: &ComponentId,
    config: &ProcessorConfig,
    telemetry: &SelfMetrics,
) -> Result<Option<SharedProcessor>, vla_processors::customer_tier::TierError> {
    Ok(match config {
        ProcessorConfig::CustomerTier(c) => Some(SharedProcessor::CustomerTier(CustomerTier::new(
            id.clone(),
            c,
            telemetry,
        )?)),
        _ => None,
    })
}

/// One processor instance (per pipeline); `batch` is the pipeline's batcher, not an object.
pub(crate) fn build_processor(
    id: &ComponentId,
    config: &ProcessorConfig,
    shared: Option<&SharedProcessor>,
    gpus: &GpuSnapshots,
    telemetry: &SelfMetrics,
) -> Option<Box<dyn Processor>> {
    use vla_processors::{attributes, gpu_stats, safety_labels};
    match (config, shared) {
        (ProcessorConfig::Attributes(c), _) => Some(Box::new(attributes::Attributes::new(c))),
        (ProcessorConfig::Batch(_), _) => None,
        (ProcessorConfig::CustomerTier(_), Some(SharedProcessor::CustomerTier(t))) => {
            Some(t.processor())
        }
        (ProcessorConfig::CustomerTier(_), None) => None,
        (ProcessorConfig::SafetyLabels(c), _) => Some(Box::new(
            safety_labels::SafetyLabels::new(c).with_telemetry(id, telemetry),
        )),
        (ProcessorConfig::GpuStats(c), _) => Some(Box::new(
            gpu_stats::GpuStats::new(c, gpus.clone()).with_telemetry(id, telemetry),
        )),
    }
}
