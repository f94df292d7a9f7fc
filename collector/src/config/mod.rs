//! The collector's YAML config: loading, `${env:...}` substitution, validation and the typed,
//! validated result that `crate::build` turns into running components.
//!
//! The shape is the OpenTelemetry Collector's, so its users feel at home:
//!
//! ```yaml
//! receivers:                      # component id → settings; ids are `type` or `type/name`
//!   otlp:
//!     protocols:
//!       grpc: { endpoint: 127.0.0.1:4317 }
//!       http: { endpoint: 127.0.0.1:4318 }
//! processors:
//!   batch: { send_batch_size: 2048, timeout: 200ms }
//! exporters:
//!   prometheus: { endpoint: 127.0.0.1:9464 }
//!   prometheusremotewrite: { endpoint: "${env:PROM_RW_URL:-http://127.0.0.1:9090/api/v1/write}" }
//! service:
//!   pipelines:                    # `metrics` or `metrics/<name>` (only metrics exist)
//!     metrics: { receivers: [otlp], processors: [batch], exporters: [prometheus] }
//!   telemetry:
//!     metrics: { address: 127.0.0.1:8888 }   # /metrics, /health, /ready
//!     logs: { level: info, format: text }     # level: trace|debug|info|warn|error; format: text|json
//!   shutdown_timeout: 15s         # how long a clean stop may take to drain and flush
//! ```
//!
//! Loading is text → [`env::substitute`] (before YAML parsing) → YAML → typed checks. It does
//! no I/O besides reading the file, and reports every problem at once, each as
//! `<file>:<line>: <yaml.path>: <message>`. Unknown fields are errors; a component defined but
//! used by no pipeline is a warning (it is not started).

mod components;
mod diag;
pub mod env;
mod locate;
mod pipelines;
mod suggest;
mod telemetry;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vla_pipeline::ComponentId;

pub use components::{
    ComponentConfig, ComponentType, ExporterConfig, Kind, ProcessorConfig, REGISTRY,
    ReceiverConfig, Types,
};
pub use diag::{Diagnostic, Diagnostics, Seg, YamlPath};
pub use telemetry::{LogFormat, LogLevel, LogsConfig, TelemetryConfig};
pub(crate) use validate::describe;
use validate::{EMPTY, Validator, article};

/// The default config, compiled into the binary; used when no `--config` is given.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../configs/collector.yaml");
/// The name of the embedded config in messages.
pub const EMBEDDED_NAME: &str = "<embedded configs/collector.yaml>";
/// Default of `service.shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config has problems; every one is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A config's text and its name in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file path as given, or [`EMBEDDED_NAME`].
    pub name: String,
    /// The raw text, before substitution.
    pub text: String,
}

impl Source {
    /// Reads a config file.
    pub fn file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            name: path.display().to_string(),
            text,
        })
    }

    /// The embedded default config.
    pub fn embedded() -> Self {
        Self {
            name: EMBEDDED_NAME.to_owned(),
            text: EMBEDDED_CONFIG.to_owned(),
        }
    }

    /// A config given as text (tests, tools).
    pub fn text(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Validates this source with the process environment.
    pub fn validate(&self) -> Result<Config, Diagnostics> {
        validate(self, &|name| std::env::var(name).ok())
    }
}

/// Loads `path` (or the embedded default when `None`) and validates it with the process
/// environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let source = match path {
        Some(p) => Source::file(p)?,
        None => Source::embedded(),
    };
    source.validate().map_err(ConfigError::Invalid)
}

/// One pipeline, validated: component ids resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// `metrics` or `metrics/<name>`.
    pub name: Arc<str>,
    /// The receivers feeding it.
    pub receivers: Vec<ComponentId>,
    /// Its processors in order, `batch` included (one stage of each per pipeline).
    pub processors: Vec<ComponentId>,
    /// The exporters it fans out to.
    pub exporters: Vec<ComponentId>,
}

/// A validated config: every component typed and checked, every reference resolved. Only
/// components used by a pipeline are kept (unused ones are reported in `warnings`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (for messages).
    pub source: String,
    /// Receivers used by at least one pipeline.
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    /// Processors used by at least one pipeline (`batch` included).
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    /// Exporters used by at least one pipeline.
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    /// The pipelines, by name.
    pub pipelines: Vec<PipelineConfig>,
    /// `service.telemetry`.
    pub telemetry: TelemetryConfig,
    /// `service.shutdown_timeout`: how long a clean stop may take.
    pub shutdown_timeout: Duration,
    /// Warnings, rendered (`<file>:<line>: <path>: <message>`).
    pub warnings: Vec<String>,
}

impl Config {
    /// `2 pipelines, 1 receiver, 1 processor, 2 exporters`.
    pub fn summary(&self) -> String {
        fn n(count: usize, noun: &str) -> String {
            format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
        }
        format!(
            "{}, {}, {}, {}",
            n(self.pipelines.len(), "pipeline"),
            n(self.receivers.len(), "receiver"),
            n(self.processors.len(), "processor"),
            n(self.exporters.len(), "exporter"),
        )
    }
}

/// Validates `source`, resolving `${env:...}` with `env`; every problem is reported at once.
pub fn validate(
    source: &Source,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    let mut diags = Diagnostics {
        source: source.name.clone(),
        ..Diagnostics::default()
    };
    let text = match env::substitute(&source.text, env) {
        Ok(t) => t,
        Err(problems) => {
            diags.errors = problems
                .into_iter()
                .map(|p| Diagnostic::on_line(Some(p.line), p.message))
                .collect();
            return Err(diags);
        }
    };
    let opts = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    let root: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        match serde_saphyr::from_str_with_options(&text, opts) {
            Ok(v) => v,
            Err(e) => {
                let location = e.location();
                let line = location.map(|l| l.line() as usize);
                let message = yaml_error_message(&e.without_snippet().to_string());
                let column = location
                    .map(|l| format!(" (column {})", l.column()))
                    .unwrap_or_default();
                diags.errors.push(Diagnostic::on_line(
                    line,
                    format!("invalid YAML: {message}{column}"),
                ));
                return Err(diags);
            }
        }
    };
    let mut v = Validator::default();
    let config = v.root(&root, &source.name);
    // Lines are looked up in the raw text, so they match the file even when a substituted
    // value spans lines.
    let locator = locate::Locator::new(&source.text);
    for d in v.errors.iter_mut().chain(v.warnings.iter_mut()) {
        if d.line.is_none() {
            d.line = locator.line_of(&d.path);
        }
    }
    // Errors in file order; those without a line last. The sort is stable.
    v.errors.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    v.warnings.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    diags.errors = v.errors;
    diags.warnings = v.warnings;
    match config {
        Some(mut c) if diags.errors.is_empty() => {
            c.warnings = diags.warning_lines();
            Ok(c)
        }
        _ => Err(diags),
    }
}

/// The YAML parser's message without its position (we print it in front) and without advice
/// meant for programmers.
fn yaml_error_message(message: &str) -> String {
    let mut m = message;
    if let Some(i) = m.rfind(" at line ")
        && m[i..].contains(", column ")
    {
        m = &m[..i];
    }
    m.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}
