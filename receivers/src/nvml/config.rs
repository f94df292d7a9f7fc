//! The `nvml` receiver's config.
//!
//! ```yaml
//! receivers:
//!   nvml:
//!     collection_interval: 10s        # default 10s, at least 100ms
//!     poll_timeout: 10s               # default: collection_interval, at most 10s
//!     open_timeout: 60s               # default 60s: opening NVML (nvmlInit) may be slow
//!     source: nvml                    # nvml (default) | fake
//!     library_path: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1   # optional, nvml only
//!     fake: { gpus: 2, model: "NVIDIA H100 80GB HBM3", memory_total_mib: 81559, scenario: steady }
//!     metrics: { vla: true, dcgm: false }
//!     resource_attributes: { deployment.environment: prod }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vla_pipeline::config::ConfigProblem;

/// Default poll interval.
pub const DEFAULT_COLLECTION_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest poll interval `validate` accepts.
pub const MIN_COLLECTION_INTERVAL: Duration = Duration::from_millis(100);
/// Longest default poll timeout (the default is the collection interval, capped at this).
pub const MAX_DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `open_timeout`: nvmlInit without persistence mode can take seconds per GPU.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Most GPUs a fake source may simulate.
pub const MAX_FAKE_GPUS: u32 = 64;

/// The `nvml` receiver's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often every GPU is read.
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub collection_interval: Duration,
    /// How long one poll may block before the source is reported failing; `None` =
    /// `collection_interval`, at most 10 s.
    #[serde(deserialize_with = "optional_duration")]
    pub poll_timeout: Option<Duration>,
    /// How long one attempt to open NVML may run before it is reported hung (until then the
    /// intervals report `vla.gpu.available 0` without a warning).
    #[serde(deserialize_with = "vla_pipeline::config::duration")]
    pub open_timeout: Duration,
    /// Where the readings come from.
    pub source: SourceKind,
    /// The NVML library to load instead of the system's `libnvidia-ml.so.1` (`source: nvml`).
    pub library_path: Option<PathBuf>,
    /// The simulated GPUs (`source: fake`); defaults apply when absent.
    pub fake: Option<FakeConfig>,
    /// Which metric names to send.
    pub metrics: MetricsConfig,
    /// Extra resource attributes; they win over `service.name`, `host.name` and
    /// `service.instance.id`.
    pub resource_attributes: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            collection_interval: DEFAULT_COLLECTION_INTERVAL,
            poll_timeout: None,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            source: SourceKind::Nvml,
            library_path: None,
            fake: None,
            metrics: MetricsConfig::default(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// Where the readings come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The NVIDIA driver's NVML library, loaded at run time.
    #[default]
    Nvml,
    /// Simulated GPUs ([`super::FakeGpuSource`]), for demos and tests.
    Fake,
}

/// Which metric names to send. `vla.gpu.available` and `vla.gpu.count` are always sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The catalogue's `vla.gpu.*` names (→ `vla_gpu_*`).
    pub vla: bool,
    /// The DCGM exporter's names as well (`DCGM_FI_DEV_GPU_UTIL`, ...).
    pub dcgm: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            vla: true,
            dcgm: false,
        }
    }
}

/// The simulated GPUs of `source: fake`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeConfig {
    /// How many GPUs (0 simulates a host without any).
    pub gpus: u32,
    /// The product name every simulated GPU reports.
    pub model: String,
    /// Memory installed per GPU, MiB.
    pub memory_total_mib: u64,
    /// What the readings do over time.
    pub scenario: Scenario,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            gpus: 2,
            model: "NVIDIA H100 80GB HBM3".to_owned(),
            memory_total_mib: 81_559,
            scenario: Scenario::Steady,
        }
    }
}

/// What the simulated readings do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Every GPU busy but healthy: 40–80 % utilization, 55–71 °C, 40–70 % memory used.
    #[default]
    Steady,
    /// GPU 0 runs hot, always above the GPUOverheating threshold (85 °C); the rest steady.
    Overheat,
    /// GPU 0's memory stays above the GPUMemoryHigh threshold (95 % used); the rest steady.
    MemoryPressure,
}

impl Scenario {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Overheat => "overheat",
            Scenario::MemoryPressure => "memory_pressure",
        }
    }
}

impl Config {
    /// Checks the config without I/O; problems are reported under `path` (the receiver's own
    /// YAML path, e.g. `receivers.nvml`).
    pub fn validate(&self, path: &str) -> Vec<vla_pipeline::config::ConfigProblem> {
        let mut problems = Vec::new();
        if self.collection_interval < MIN_COLLECTION_INTERVAL {
            problems.push(ConfigProblem::new(
                format!("{path}.collection_interval"),
                format!(
                    "must be at least 100ms (NVML polls are not free), got {:?}; e.g. 10s",
                    self.collection_interval
                ),
            ));
        }
        if self.poll_timeout.is_some_and(|t| t.is_zero()) {
            problems.push(ConfigProblem::new(
                format!("{path}.poll_timeout"),
                "must be longer than 0, e.g. 5s (leave it out for the collection interval, at \
                 most 10s)",
            ));
        }
        if self.open_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.open_timeout"),
                "must be longer than 0, e.g. 60s (opening NVML can take seconds per GPU)",
            ));
        }
        match self.source {
            SourceKind::Nvml => {
                if self.fake.is_some() {
                    problems.push(ConfigProblem::new(
                        format!("{path}.fake"),
                        "is only used with `source: fake`; remove it or set `source: fake`",
                    ));
                }
                if let Some(lib) = &self.library_path
                    && lib.as_os_str().is_empty()
                {
                    problems.push(ConfigProblem::new(
                        format!("{path}.library_path"),
                        "must not be empty (leave it out to load the system's libnvidia-ml.so.1)",
                    ));
                }
            }
            SourceKind::Fake => {
                if self.library_path.is_some() {
                    problems.push(ConfigProblem::new(
                        format!("{path}.library_path"),
                        "is only used with `source: nvml`",
                    ));
                }
                if let Some(fake) = &self.fake {
                    fake.validate(&format!("{path}.fake"), &mut problems);
                }
            }
        }
        for key in self.resource_attributes.keys() {
            if key.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{path}.resource_attributes"),
                    "attribute names must not be empty",
                ));
            }
        }
        problems
    }

    /// The poll timeout in effect: `poll_timeout`, else `collection_interval` capped at 10 s.
    pub fn effective_poll_timeout(&self) -> Duration {
        self.poll_timeout
            .unwrap_or_else(|| self.collection_interval.min(MAX_DEFAULT_POLL_TIMEOUT))
    }

    /// The fake source's settings: the configured ones or the defaults.
    pub fn fake_or_default(&self) -> FakeConfig {
        self.fake.clone().unwrap_or_default()
    }
}

/// A duration that may be left out (`None`).
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    vla_pipeline::config::duration(d).map(Some)
}

impl FakeConfig {
    fn validate(&self, path: &str, problems: &mut Vec<ConfigProblem>) {
        if self.gpus > MAX_FAKE_GPUS {
            problems.push(ConfigProblem::new(
                format!("{path}.gpus"),
                format!("must be between 0 and {MAX_FAKE_GPUS}, got {}", self.gpus),
            ));
        }
        if self.model.trim().is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.model"),
                "must not be empty, e.g. \"NVIDIA H100 80GB HBM3\"",
            ));
        }
        if self.memory_total_mib == 0 || self.memory_total_mib > 16 * 1024 * 1024 {
            problems.push(ConfigProblem::new(
                format!("{path}.memory_total_mib"),
                format!(
                    "must be between 1 and 16777216 (MiB), got {}",
                    self.memory_total_mib
                ),
            ));
        }
    }
}
