//! `service.telemetry`: where the collector serves its own metrics and health, and how it logs.
//!
//! ```yaml
//! service:
//!   telemetry:
//!     metrics:
//!       address: 127.0.0.1:8888   # GET /metrics, /health, /ready
//!     logs:
//!       level: info               # trace | debug | info | warn | error (RUST_LOG overrides)
//!       format: text              # text | json
//! ```

use std::net::SocketAddr;

use serde_json::Value;

use super::diag::YamlPath;
use super::{Validator, components, describe};

/// Default of `service.telemetry.metrics.address`.
pub const DEFAULT_TELEMETRY_ADDRESS: &str = "127.0.0.1:8888";

/// `service.telemetry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `metrics.address`: the self-metrics and health endpoint.
    pub metrics: MetricsTelemetry,
    /// `logs`.
    pub logs: LogsConfig,
}

/// `service.telemetry.metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsTelemetry {
    /// Where `/metrics`, `/health` and `/ready` are served.
    pub address: SocketAddr,
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogsConfig {
    /// The least severe level logged.
    pub level: LogLevel,
    /// Human-readable lines or JSON objects.
    pub format: LogFormat,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Lifecycle events (the default).
    #[default]
    Info,
    /// Problems that do not stop the collector.
    Warn,
    /// Failures.
    Error,
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
const FORMATS: &[&str] = &["text", "json"];

impl LogLevel {
    /// The level's name, as written in the config and in `RUST_LOG`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics: MetricsTelemetry {
                address: SocketAddr::from(([127, 0, 0, 1], 8888)),
            },
            logs: LogsConfig::default(),
        }
    }
}

/// Parses `service.telemetry`; `None` when it has problems (reported to `v`).
pub(super) fn parse(
    v: &mut Validator,
    value: Option<&Value>,
    service: &YamlPath,
) -> Option<TelemetryConfig> {
    let mut out = TelemetryConfig::default();
    let Some(value) = value else {
        return Some(out);
    };
    let path = service.key("telemetry");
    let errors_before = v.errors.len();
    let map = v.mapping(value, &path, Some(&["metrics", "logs"]))?;
    if let Some(metrics) = map.get("metrics") {
        let mpath = path.key("metrics");
        if let Some(m) = v.mapping(metrics, &mpath, Some(&["address"]))
            && let Some(addr) = m.get("address")
        {
            let apath = mpath.key("address");
            match addr {
                Value::String(s) => match s.trim().parse::<SocketAddr>() {
                    Ok(a) => out.metrics.address = a,
                    Err(_) => v.error(
                        apath,
                        format!(
                            "invalid address {s:?}: expected an IP address and port, e.g. \
                             {DEFAULT_TELEMETRY_ADDRESS} or 0.0.0.0:8888"
                        ),
                    ),
                },
                other => v.error(
                    apath,
                    format!(
                        "expected an address like {DEFAULT_TELEMETRY_ADDRESS}, got {}",
                        describe(other)
                    ),
                ),
            }
        }
    }
    if let Some(logs) = map.get("logs") {
        let lpath = path.key("logs");
        if let Some(l) = v.mapping(logs, &lpath, Some(&["level", "format"])) {
            if let Some(level) = l.get("level")
                && let Some(s) = word(v, level, &lpath.key("level"), LEVELS)
            {
                out.logs.level = LogLevel::parse(s).unwrap_or_default();
            }
            if let Some(format) = l.get("format")
                && let Some(s) = word(v, format, &lpath.key("format"), FORMATS)
            {
                out.logs.format = if s == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                };
            }
        }
    }
    (v.errors.len() == errors_before).then_some(out)
}

/// A string that must be one of `valid`.
fn word<'a>(
    v: &mut Validator,
    value: &'a Value,
    path: &YamlPath,
    valid: &[&str],
) -> Option<&'a str> {
    match value {
        Value::String(s) if valid.contains(&s.as_str()) => Some(s),
        Value::String(s) => {
            v.error(path.clone(), components::unknown("value", s, valid));
            None
        }
        other => {
            v.error(
                path.clone(),
                format!(
                    "expected one of {}, got {}",
                    valid.join(", "),
                    describe(other)
                ),
            );
            None
        }
    }
}
