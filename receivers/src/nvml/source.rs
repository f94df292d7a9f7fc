//! Ways to read the GPUs: the [`GpuSource`] trait, its error, and [`FakeGpuSource`] (simulated
//! GPUs for demos and tests). The NVML implementation is in `nvml_source.rs`.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::time::Instant;

use vla_pipeline::gpu::GpuReading;

use super::config::{FakeConfig, Scenario};

pub use super::nvml_source::NvmlSource;

/// An error with its cause, boxed so that no NVML type leaks into this API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A way to read the GPUs.
///
/// Contract: `poll` reads every GPU now (it may block for a few ms; the receiver calls it on
/// the blocking pool); values the device doesn't support are `None`, never a sentinel.
pub trait GpuSource: Send + 'static {
    /// The source in words, e.g. `nvml 550.54.15 (libnvidia-ml.so.1)` or `fake (2 GPUs)`.
    fn describe(&self) -> String;
    /// Reads every GPU, ordered by index.
    fn poll(&mut self) -> Result<Vec<GpuReading>, GpuError>;
}

/// Why the GPUs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No NVIDIA driver, library or GPU (or no permission to use them): NVML could not be
    /// loaded or initialised, or it found no GPU. Retrying later may help (driver installed).
    #[error("{message}")]
    Unavailable {
        /// What was tried, e.g. `cannot load libnvidia-ml.so.1`.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// Reading the GPUs failed after the source had started (a GPU fell off the bus, the
    /// driver went away).
    #[error("{message}")]
    Read {
        /// What failed.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
}

impl GpuError {
    /// A read failure with no underlying error (fakes, tests).
    pub fn read(message: impl Into<String>) -> Self {
        GpuError::Read {
            message: message.into(),
            source: None,
        }
    }

    /// The error and its causes on one line, each said once (NVML's errors repeat their
    /// cause in their own message).
    pub fn one_line(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }

    /// An "unavailable" failure with no underlying error (fakes, tests).
    pub fn unavailable(message: impl Into<String>) -> Self {
        GpuError::Unavailable {
            message: message.into(),
            source: None,
        }
    }
}

/// Simulated GPUs: deterministic readings that follow smooth patterns over time, or readings
/// and failures given explicitly (tests).
#[derive(Debug)]
pub struct FakeGpuSource {
    mode: FakeMode,
    polls: u64,
}

#[derive(Debug)]
enum FakeMode {
    Simulated {
        config: FakeConfig,
        started: Instant,
    },
    /// One outcome per poll; the last one repeats.
    Scripted(VecDeque<Result<Vec<GpuReading>, String>>),
}

impl FakeGpuSource {
    /// GPUs simulated as `config` says; readings are a function of the time since creation.
    pub fn new(config: &FakeConfig) -> Self {
        Self {
            mode: FakeMode::Simulated {
                config: config.clone(),
                started: Instant::now(),
            },
            polls: 0,
        }
    }

    /// A source that returns `readings` on every poll.
    pub fn from_readings(readings: Vec<GpuReading>) -> Self {
        Self::scripted(vec![Ok(readings)])
    }

    /// A source whose every poll fails with a [`GpuError::Read`] of `message`.
    pub fn failing(message: impl Into<String>) -> Self {
        Self::scripted(vec![Err(message.into())])
    }

    /// A source that answers poll `i` with `outcomes[i]` (an `Err` becomes a
    /// [`GpuError::Read`]); the last outcome repeats forever. An empty script fails.
    pub fn scripted(outcomes: Vec<Result<Vec<GpuReading>, String>>) -> Self {
        Self {
            mode: FakeMode::Scripted(outcomes.into()),
            polls: 0,
        }
    }

    /// How many polls this source has answered.
    pub fn polls(&self) -> u64 {
        self.polls
    }
}

impl GpuSource for FakeGpuSource {
    fn describe(&self) -> String {
        match &self.mode {
            FakeMode::Simulated { config, .. } => {
                format!("fake ({} GPUs, {})", config.gpus, config.scenario.as_str())
            }
            FakeMode::Scripted(_) => "fake (scripted)".to_owned(),
        }
    }

    fn poll(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        self.polls += 1;
        match &mut self.mode {
            FakeMode::Simulated { config, started } => {
                let t = started.elapsed().as_secs_f64();
                Ok((0..config.gpus)
                    .map(|i| simulated_reading(config, i, t))
                    .collect())
            }
            FakeMode::Scripted(script) => {
                let outcome = if script.len() > 1 {
                    script.pop_front()
                } else {
                    script.front().cloned()
                };
                match outcome {
                    Some(Ok(readings)) => Ok(readings),
                    Some(Err(message)) => Err(GpuError::read(message)),
                    None => Err(GpuError::read("the fake source has no scripted outcome")),
                }
            }
        }
    }
}

/// Period of the simulated load pattern, seconds.
const PERIOD_S: f64 = 300.0;
/// Energy reported at t = 0 for GPU 0, joules (the driver was loaded before the receiver).
const ENERGY_AT_START_J: f64 = 1.0e6;
const MIB: f64 = 1024.0 * 1024.0;

/// A smooth wave: `mid ± amp`, shifted by `phase` radians.
fn wave(t: f64, mid: f64, amp: f64, phase: f64) -> f64 {
    mid + amp * (TAU * t / PERIOD_S + phase).sin()
}

/// Energy of a power draw `mid ± amp` (same wave) integrated from 0 to `t`, plus an offset.
fn energy(t: f64, mid: f64, amp: f64, phase: f64, offset: f64) -> f64 {
    let w = TAU / PERIOD_S;
    offset + mid * t + amp / w * (phase.cos() - (w * t + phase).cos())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// GPU `index`'s simulated reading `t` seconds after the source started: a pure function, so
/// tests can check any moment. Waves are phase-shifted by index so GPUs differ.
pub(crate) fn simulated_reading(config: &FakeConfig, index: u32, t: f64) -> GpuReading {
    let phase = f64::from(index) * 1.3;
    let hot = index == 0 && config.scenario == Scenario::Overheat;
    let full = index == 0 && config.scenario == Scenario::MemoryPressure;
    // Overheat: 91–99 % busy at 86–92 °C; otherwise 40–80 % at 55–71 °C (lagging the load).
    let (util, temp, power_mid, power_amp) = if hot {
        (
            wave(t, 95.0, 4.0, phase),
            wave(t, 89.0, 3.0, phase - 0.6),
            650.0,
            40.0,
        )
    } else {
        (
            wave(t, 60.0, 20.0, phase),
            wave(t, 63.0, 8.0, phase - 0.6),
            390.0,
            80.0,
        )
    };
    // Memory pressure: 95.5–98.5 % used; otherwise 40–70 %.
    let used_fraction = if full {
        wave(t, 0.97, 0.015, phase + 0.4)
    } else {
        wave(t, 0.55, 0.15, phase + 0.4)
    };
    let total = config.memory_total_mib.saturating_mul(1024 * 1024);
    let used = ((config.memory_total_mib as f64 * used_fraction).round() * MIB) as u64;
    let used = used.min(total);
    let power = wave(t, power_mid, power_amp, phase);
    GpuReading {
        index,
        uuid: format!("GPU-fa4e0000-0000-4000-8000-{index:012x}"),
        model: config.model.clone(),
        utilization_percent: Some(round1(util)),
        memory_utilization_percent: Some(round1(util * 0.5)),
        temperature_celsius: Some(temp.round()),
        memory_used_bytes: Some(used),
        memory_free_bytes: Some(total - used),
        memory_total_bytes: Some(total),
        power_watts: Some(round1(power)),
        energy_joules: Some(energy(
            t,
            power_mid,
            power_amp,
            phase,
            ENERGY_AT_START_J * (1.0 + f64::from(index) / 10.0),
        )),
        sm_clock_mhz: Some((1410.0 + 570.0 * util / 100.0).round() as u32),
        memory_clock_mhz: Some(2619),
        ecc_corrected_total: Some(0),
        ecc_uncorrected_total: Some(0),
        xid_errors_total: Some(0),
        last_xid: Some(0),
    }
}
