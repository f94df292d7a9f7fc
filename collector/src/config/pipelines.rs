//! `service.pipelines`: pipeline names, the component ids each lists (resolved against the
//! defined ones, with a did-you-mean), and listen endpoints claimed once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vla_pipeline::ComponentId;

use super::components::{self, ExporterConfig, Kind, ReceiverConfig};
use super::diag::YamlPath;
use super::telemetry::TelemetryConfig;
use super::{EMPTY, Validator, article, describe, suggest};

/// Fields of one pipeline.
const PIPELINE: &[&str] = &["receivers", "processors", "exporters"];

impl Validator {
    pub(super) fn pipelines(
        &mut self,
        value: Option<&Value>,
        service: &YamlPath,
        ids: &Ids,
    ) -> Vec<RawPipeline> {
        let path = service.key("pipelines");
        let map = match value {
            None | Some(Value::Null) => &*EMPTY,
            Some(v) => match self.mapping(v, &path, None) {
                Some(m) => m,
                None => return Vec::new(),
            },
        };
        if map.is_empty() {
            let at = if value.is_some() {
                path
            } else {
                service.clone()
            };
            self.error(
                at,
                "no pipelines defined: add service.pipelines.metrics with receivers and exporters",
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, v) in map {
            let at = path.key(name.clone());
            let (signal, suffix) = match name.split_once('/') {
                Some((s, n)) => (s, Some(n)),
                None => (name.as_str(), None),
            };
            match signal {
                "metrics" if suffix.is_none_or(|n| !n.is_empty() && !n.contains('/')) => {}
                "traces" | "logs" | "profiles" => {
                    self.error(
                        at,
                        format!(
                            "{signal} pipelines are not supported: vla-collector handles metrics \
                             only; name the pipeline \"metrics\" or \"metrics/<name>\""
                        ),
                    );
                    continue;
                }
                _ => {
                    self.error(
                        at,
                        format!(
                            "invalid pipeline name {name:?}: expected \"metrics\" or \"metrics/<name>\""
                        ),
                    );
                    continue;
                }
            }
            let Some(fields) = self.mapping(v, &at, Some(PIPELINE)) else {
                continue;
            };
            let receivers = self.refs(fields.get("receivers"), &at, Kind::Receiver, ids);
            let processors = self.refs(fields.get("processors"), &at, Kind::Processor, ids);
            let exporters = self.refs(fields.get("exporters"), &at, Kind::Exporter, ids);
            out.push(RawPipeline {
                name: Arc::from(name.as_str()),
                receivers,
                all_processors: processors,
                exporters,
            });
        }
        out
    }

    /// One pipeline's list of component ids, each checked against the defined ones.
    fn refs(
        &mut self,
        value: Option<&Value>,
        pipeline: &YamlPath,
        kind: Kind,
        ids: &Ids,
    ) -> Vec<ComponentId> {
        let field = kind.section();
        let path = pipeline.key(field);
        let items: &[Value] = match value {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.error(
                    path,
                    format!(
                        "expected a list of {} ids, got {}",
                        kind.noun(),
                        describe(other)
                    ),
                );
                return Vec::new();
            }
        };
        if items.is_empty() && kind != Kind::Processor {
            self.error(
                if value.is_some() {
                    path.clone()
                } else {
                    pipeline.clone()
                },
                format!(
                    "a pipeline needs at least one {}: add `{field}: [...]`",
                    kind.noun()
                ),
            );
        }
        let mut out: Vec<ComponentId> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let Value::String(id) = item else {
                self.error(
                    at,
                    format!("expected a {} id, got {}", kind.noun(), describe(item)),
                );
                continue;
            };
            if out.iter().any(|o| o.as_ref() == id) {
                self.error(at, format!("{} {id:?} is listed twice", kind.noun()));
                continue;
            }
            let defined = ids.of(kind);
            if !defined.contains_key(id.as_str()) {
                let other = Kind::ALL
                    .into_iter()
                    .find(|k| *k != kind && ids.of(*k).contains_key(id.as_str()));
                let message = match other {
                    Some(k) => format!(
                        "{id:?} is {} {}, not {} {} (it is defined under {})",
                        article(k.noun()),
                        k.noun(),
                        article(kind.noun()),
                        kind.noun(),
                        k.section()
                    ),
                    None => {
                        let hint = suggest::hint(id, defined.keys().map(|k| k.as_ref()));
                        format!(
                            "{} {id:?} is not defined under {}{hint}",
                            kind.noun(),
                            kind.section()
                        )
                    }
                };
                self.error(at, message);
            }
            out.push(ComponentId::from(id.as_str()));
        }
        out
    }

    /// A listen endpoint may be claimed once (port 0 excepted).
    pub(super) fn check_endpoints(
        &mut self,
        receivers: &BTreeMap<ComponentId, ReceiverConfig>,
        exporters: &BTreeMap<ComponentId, ExporterConfig>,
        telemetry: Option<&TelemetryConfig>,
    ) {
        let mut claims: Vec<(YamlPath, SocketAddr)> = Vec::new();
        let mut add = |v: &mut Self, path: YamlPath, endpoint: &str| {
            let Some(addr) = components::claimable(endpoint) else {
                return;
            };
            if let Some((first, _)) = claims.iter().find(|(_, a)| components::clash(*a, addr)) {
                v.error(
                    path.clone(),
                    format!("{addr} is already claimed by {first}: use another port"),
                );
            }
            claims.push((path, addr));
        };
        if let Some(t) = telemetry {
            add(
                self,
                YamlPath::root().join_dotted("service.telemetry.metrics.address"),
                &t.metrics.address.to_string(),
            );
        }
        for (id, r) in receivers {
            for (rest, endpoint) in r.listen_endpoints() {
                let path = YamlPath::root()
                    .key("receivers")
                    .key(id.as_ref())
                    .join_dotted(rest);
                add(self, path, endpoint);
            }
        }
        for (id, e) in exporters {
            for (rest, endpoint) in e.listen_endpoints() {
                let path = YamlPath::root()
                    .key("exporters")
                    .key(id.as_ref())
                    .join_dotted(rest);
                add(self, path, endpoint);
            }
        }
    }
}

/// The ids defined in each section, with their types.
pub(super) struct Ids {
    pub(super) receivers: BTreeMap<ComponentId, String>,
    pub(super) processors: BTreeMap<ComponentId, String>,
    pub(super) exporters: BTreeMap<ComponentId, String>,
}

impl Ids {
    fn of(&self, kind: Kind) -> &BTreeMap<ComponentId, String> {
        match kind {
            Kind::Receiver => &self.receivers,
            Kind::Processor => &self.processors,
            Kind::Exporter => &self.exporters,
        }
    }
}

/// A pipeline as listed, with its component ids resolved.
pub(super) struct RawPipeline {
    pub(super) name: Arc<str>,
    pub(super) receivers: Vec<ComponentId>,
    pub(super) all_processors: Vec<ComponentId>,
    pub(super) exporters: Vec<ComponentId>,
}
