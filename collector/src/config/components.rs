//! The component registry: which `type`s exist for receivers, processors and exporters, how a
//! component's raw YAML value becomes its typed config, and which listen endpoints it claims.
//!
//! Adding a component type means one arm in each `match` here (and one in `crate::build`).

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde_json::Value;
use vla_pipeline::config::ConfigProblem;
use vla_pipeline::driver::DriverConfig;

use super::diag::{Diagnostic, YamlPath};
use super::suggest;

/// The three kinds of component sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `receivers`
    Receiver,
    /// `processors`
    Processor,
    /// `exporters`
    Exporter,
}

impl Kind {
    /// Every kind, in config order.
    pub const ALL: [Kind; 3] = [Kind::Receiver, Kind::Processor, Kind::Exporter];

    /// The top-level section and pipeline field name (`receivers`, ...).
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
        }
    }

    /// The singular noun (`receiver`, ...).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }

    /// The known component types of this kind.
    pub fn types(self) -> &'static [&'static str] {
        match self {
            Kind::Receiver => RECEIVER_TYPES,
            Kind::Processor => PROCESSOR_TYPES,
            Kind::Exporter => EXPORTER_TYPES,
        }
    }
}

/// Receiver types.
pub const RECEIVER_TYPES: &[&str] = &[vla_receivers::nvml::TYPE, "otlp"];
/// Processor types.
pub const PROCESSOR_TYPES: &[&str] = vla_processors::PROCESSOR_TYPES;
/// Exporter types.
pub const EXPORTER_TYPES: &[&str] = &["debug", "prometheus", "prometheusremotewrite"];

/// A receiver's typed config.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverConfig {
    /// `otlp`
    Otlp(vla_receivers::otlp::Config),
    /// `nvml`
    Nvml(Box<vla_receivers::nvml::Config>),
}

/// A processor's typed config.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    /// `attributes`
    Attributes(vla_processors::attributes::Config),
    /// `batch` (becomes the pipeline's built-in batcher)
    Batch(vla_processors::batch::Config),
    /// `customer_tier`
    CustomerTier(Box<vla_processors::customer_tier::Config>),
    /// `safety_labels`
    SafetyLabels(Box<vla_processors::safety_labels::Config>),
    /// `gpu_stats`
    GpuStats(Box<vla_processors::gpu_stats::Config>),
}

/// An exporter's typed config, with its driver (queue and retry) settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    /// `prometheusremotewrite`
    PrometheusRemoteWrite(
        Box<vla_exporters::prometheus_remote_write::Config>,
        DriverConfig,
    ),
    /// `prometheus`
    Prometheus(Box<vla_exporters::prometheus::Config>, DriverConfig),
    /// `debug`
    Debug(Box<vla_exporters::debug::Config>, DriverConfig),
}

impl ReceiverConfig {
    /// The endpoints this receiver listens on: (path below the receiver, `ip:port` text).
    pub fn listen_endpoints(&self) -> Vec<(&'static str, &str)> {
        match self {
            ReceiverConfig::Otlp(c) => {
                let mut out = Vec::new();
                if let Some(g) = &c.protocols.grpc {
                    out.push(("protocols.grpc.endpoint", g.endpoint.as_str()));
                }
                if let Some(h) = &c.protocols.http {
                    out.push(("protocols.http.endpoint", h.endpoint.as_str()));
                }
                out
            }
            ReceiverConfig::Nvml(_) => Vec::new(),
        }
    }
}

impl ExporterConfig {
    /// The endpoints this exporter listens on (the scrape endpoint of `prometheus`).
    pub fn listen_endpoints(&self) -> Vec<(&'static str, &str)> {
        match self {
            ExporterConfig::Prometheus(c, _) => vec![("endpoint", c.endpoint.as_str())],
            ExporterConfig::PrometheusRemoteWrite(..) | ExporterConfig::Debug(..) => Vec::new(),
        }
    }

    /// The driver settings.
    pub fn driver_config(&self) -> &DriverConfig {
        match self {
            ExporterConfig::PrometheusRemoteWrite(_, d)
            | ExporterConfig::Prometheus(_, d)
            | ExporterConfig::Debug(_, d) => d,
        }
    }
}

/// Parses and checks a receiver of type `ty` at `path`.
pub(crate) fn receiver(
    ty: &str,
    value: &Value,
    path: &YamlPath,
) -> Option<Result<ReceiverConfig, Vec<Diagnostic>>> {
    Some(match ty {
        "otlp" => decode::<vla_receivers::otlp::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ReceiverConfig::Otlp(c))
        }),
        vla_receivers::nvml::TYPE => {
            decode::<vla_receivers::nvml::Config>(value, path).and_then(|c| {
                checked(path, c.validate(&path.to_string()))?;
                Ok(ReceiverConfig::Nvml(Box::new(c)))
            })
        }
        _ => return None,
    })
}

/// Parses and checks a processor of type `ty` at `path`.
pub(crate) fn processor(
    ty: &str,
    value: &Value,
    path: &YamlPath,
) -> Option<Result<ProcessorConfig, Vec<Diagnostic>>> {
    use vla_processors::{attributes, batch, customer_tier, gpu_stats, safety_labels};
    Some(match ty {
        attributes::TYPE => decode::<attributes::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ProcessorConfig::Attributes(c))
        }),
        batch::TYPE => decode::<batch::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ProcessorConfig::Batch(c))
        }),
        customer_tier::TYPE => decode::<customer_tier::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ProcessorConfig::CustomerTier(Box::new(c)))
        }),
        safety_labels::TYPE => decode::<safety_labels::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ProcessorConfig::SafetyLabels(Box::new(c)))
        }),
        gpu_stats::TYPE => decode::<gpu_stats::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&path.to_string()))?;
            Ok(ProcessorConfig::GpuStats(Box::new(c)))
        }),
        _ => return None,
    })
}

/// Parses and checks an exporter of type `ty` at `path`.
pub(crate) fn exporter(
    ty: &str,
    value: &Value,
    path: &YamlPath,
) -> Option<Result<ExporterConfig, Vec<Diagnostic>>> {
    use vla_exporters::{debug, prometheus, prometheus_remote_write as prw};
    let p = path.to_string();
    Some(match ty {
        "prometheusremotewrite" => decode::<prw::Config>(value, path).and_then(|c| {
            let problems = c.validate(&p);
            let driver = with_driver(path, problems, c.driver_config(&p))?;
            Ok(ExporterConfig::PrometheusRemoteWrite(Box::new(c), driver))
        }),
        "prometheus" => decode::<prometheus::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&p))?;
            Ok(ExporterConfig::Prometheus(
                Box::new(c),
                DriverConfig::default(),
            ))
        }),
        "debug" => decode::<debug::Config>(value, path).and_then(|c| {
            checked(path, c.validate(&p))?;
            Ok(ExporterConfig::Debug(Box::new(c), DriverConfig::default()))
        }),
        _ => return None,
    })
}

/// `Ok` when `problems` is empty, else the problems as diagnostics.
fn checked(path: &YamlPath, problems: Vec<ConfigProblem>) -> Result<(), Vec<Diagnostic>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems
            .iter()
            .map(|p| Diagnostic::from_problem(path, p))
            .collect())
    }
}

/// Merges a component's `validate` problems with its driver config's, without duplicates.
fn with_driver(
    path: &YamlPath,
    mut problems: Vec<ConfigProblem>,
    driver: Result<DriverConfig, Vec<ConfigProblem>>,
) -> Result<DriverConfig, Vec<Diagnostic>> {
    match driver {
        Ok(d) => checked(path, problems).map(|()| d),
        Err(more) => {
            for p in more {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            checked(path, problems).map(|()| DriverConfig::default())
        }
    }
}

/// Deserializes a component's value (`null`, a key with no value, means all defaults) and
/// turns a serde error into a diagnostic at the exact nested path.
pub(crate) fn decode<T: DeserializeOwned>(
    value: &Value,
    path: &YamlPath,
) -> Result<T, Vec<Diagnostic>> {
    let empty = Value::Object(serde_json::Map::new());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut at = path.clone();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => at = at.index(*index),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => at = at.key(key.clone()),
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        vec![serde_diagnostic(at, &err.into_inner().to_string())]
    })
}

/// Rewrites serde's messages into ours: unknown fields and values get a did-you-mean (and the
/// unknown key goes into the path), type errors say what was expected in YAML words.
pub(crate) fn serde_diagnostic(at: YamlPath, msg: &str) -> Diagnostic {
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let valid = backticked(expected);
        // serde_path_to_error's path usually ends at the unknown key already.
        let ends_with_field =
            matches!(at.segments().last(), Some(super::diag::Seg::Key(k)) if k == field);
        let at = if ends_with_field { at } else { at.key(field) };
        return Diagnostic::at(at, unknown("field", field, &valid));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((variant, expected)) = rest.split_once('`')
    {
        let valid = backticked(expected);
        return Diagnostic::at(at, unknown("value", variant, &valid));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return Diagnostic::at(at, format!("missing required field {field:?}"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            let got = if got.starts_with("string ") && may_hold_a_secret(&at, got) {
                "a string (not shown: it may hold a secret)"
            } else {
                got
            };
            return Diagnostic::at(
                at,
                format!("expected {}, got {}", yaml_words(expected), got),
            );
        }
    }
    Diagnostic::at(at, msg)
}

/// Whether a string value (`got`, as serde quotes it) at `at` may be a credential (a
/// connection string, a password, a header), so an error must not echo it: judged by the
/// setting's name and by the value's shape.
fn may_hold_a_secret(at: &YamlPath, got: &str) -> bool {
    const NAMES: &[&str] = &[
        "dsn",
        "password",
        "secret",
        "token",
        "auth",
        "header",
        "credential",
    ];
    const SHAPES: &[&str] = &[
        "password=",
        "passwd=",
        "secret",
        "token",
        "apikey",
        "api_key",
    ];
    let by_name = at.segments().iter().any(|seg| match seg {
        super::diag::Seg::Key(k) => {
            let k = k.to_ascii_lowercase();
            NAMES.iter().any(|w| k.contains(w))
        }
        super::diag::Seg::Index(_) => false,
    });
    let value = got.to_ascii_lowercase();
    // `scheme://user:password@host`
    let userinfo = value
        .split_once("://")
        .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')));
    by_name || userinfo || SHAPES.iter().any(|s| value.contains(s))
}

/// `unknown field "endpont" (did you mean "endpoint"?)`, or the valid names when none is close.
pub(crate) fn unknown(what: &str, name: &str, valid: &[&str]) -> String {
    match suggest::did_you_mean(name, valid.iter().copied()) {
        Some(s) => format!("unknown {what} {name:?} (did you mean {s:?}?)"),
        None if valid.is_empty() => format!("unknown {what} {name:?} (none are allowed here)"),
        None => format!(
            "unknown {what} {name:?}; valid {what}s: {}",
            valid.join(", ")
        ),
    }
}

/// The names between backticks in serde's "expected one of `a`, `b`".
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Serde's Rust type names in the words of a YAML author.
fn yaml_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".to_owned(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer".to_owned(),
        "f64" | "f32" => "a number".to_owned(),
        "a map" => "a mapping".to_owned(),
        "a sequence" => "a list".to_owned(),
        e if e.starts_with("struct ") => "a mapping".to_owned(),
        e if e.starts_with("a boolean") => "true or false".to_owned(),
        e => e.to_owned(),
    }
}

/// A parsed listen endpoint for the clash check: `None` for port 0 (never clashes).
pub(crate) fn claimable(endpoint: &str) -> Option<SocketAddr> {
    vla_pipeline::config::parse_listen_addr(endpoint)
        .ok()
        .filter(|a| a.port() != 0)
}

/// Whether two listen addresses cannot both be bound (same port, same or wildcard IP).
pub(crate) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()
            || b.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()
            || a.ip().is_unspecified() && b.ip().is_unspecified())
}
