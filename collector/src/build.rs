//! Building components from their typed configs, and binding their listen addresses.
//!
//! One `match` arm per component type; `config/components.rs` has the matching arm for
//! parsing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use vla_pipeline::{ComponentId, Exporter, Processor, Receiver, Telemetry};

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
    telemetry: &Telemetry,
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

pub(crate) fn build_receiver(
    id: &ComponentId,
    config: &ReceiverConfig,
    mut listeners: Listeners,
    telemetry: &Telemetry,
) -> Result<Box<dyn Receiver>, vla_receivers::ReceiverBuildError> {
    Ok(match config {
        ReceiverConfig::Otlp(c) => {
            let grpc = listeners.remove("protocols.grpc.endpoint");
            let http = listeners.remove("protocols.http.endpoint");
            Box::new(vla_receivers::OtlpReceiver::new(
                id.clone(),
                c,
                grpc,
                http,
                telemetry,
            )?)
        }
    })
}

/// One processor instance (per pipeline); `batch` is the pipeline's batcher, not an object.
pub(crate) fn build_processor(config: &ProcessorConfig) -> Option<Box<dyn Processor>> {
    match config {
        ProcessorConfig::Attributes(c) => {
            Some(Box::new(vla_processors::attributes::Attributes::new(c)))
        }
        ProcessorConfig::Batch(_) => None,
    }
}
