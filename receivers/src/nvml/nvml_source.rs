//! [`NvmlSource`]: the GPUs read through NVIDIA's NVML library (`libnvidia-ml.so.1`, loaded at
//! run time by `nvml-wrapper`, so the collector builds and runs without a driver).
//!
//! NVML answers "not supported" in two ways: an error (`NotSupported`, `FunctionNotFound` on
//! an old driver, ...) or a sentinel value (`0xFFFFFFFF`, `u64::MAX`, a temperature or clock of
//! 0). Both become `None` here: the small filter functions at the bottom are the one place
//! where raw NVML numbers turn into readings.
//!
//! XID errors come from an NVML event set registered for critical XID events on every GPU that
//! supports them, drained without waiting (timeout 0) at each poll; GPUs without support report
//! no XID values.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use vla_pipeline::gpu::GpuReading;
use vla_pipeline::ratelimit::LogLimiter;

use super::source::{GpuError, GpuSource};

/// The library NVML is loaded from when no path is configured.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// Most XID events handled in one poll, so a storm cannot stall the poller.
const MAX_EVENTS_PER_POLL: usize = 1024;

/// NVML handles opened by this process, one per library path, never shut down.
///
/// An `EventSet` borrows the `Nvml` it came from, so a source that keeps both needs an `Nvml`
/// that lives forever: each distinct library is initialised once and leaked (NVML reference-
/// counts its initialisation; the process exit releases it). Reopening, e.g. after a config
/// reload, reuses the handle instead of leaking another. Failed attempts are not cached.
static OPENED: Mutex<Vec<(Option<PathBuf>, &'static Nvml)>> = Mutex::new(Vec::new());

fn shared_nvml(library_path: Option<&Path>) -> Result<&'static Nvml, NvmlError> {
    let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, nvml)) = opened.iter().find(|(p, _)| p.as_deref() == library_path) {
        return Ok(nvml);
    }
    let nvml = match library_path {
        Some(path) => Nvml::builder().lib_path(path.as_os_str()).init()?,
        None => Nvml::init()?,
    };
    let nvml: &'static Nvml = Box::leak(Box::new(nvml));
    opened.push((library_path.map(Path::to_path_buf), nvml));
    Ok(nvml)
}

/// The GPUs of this host, read through NVML.
#[derive(Debug)]
pub struct NvmlSource {
    nvml: &'static Nvml,
    library: String,
    driver_version: String,
    xid: Option<XidWatch>,
    partial_failures: LogLimiter,
}

/// Critical XID events of the GPUs that support them, counted since the source opened.
#[derive(Debug)]
struct XidWatch {
    set: EventSet<'static>,
    /// `(gpu index, events seen, last XID code)`.
    counts: Vec<(u32, u64, u64)>,
}

impl NvmlSource {
    /// Loads and initialises NVML (from `library_path`, or the system's `libnvidia-ml.so.1`)
    /// and checks that it sees at least one GPU. Blocks while the library loads.
    pub fn open(library_path: Option<&Path>) -> Result<Self, GpuError> {
        let library =
            library_path.map_or_else(|| DEFAULT_LIBRARY.to_owned(), |p| p.display().to_string());
        let nvml = shared_nvml(library_path).map_err(|e| GpuError::Unavailable {
            message: format!("cannot load or initialise NVML ({library})"),
            source: Some(Box::new(e)),
        })?;
        let count = nvml.device_count().map_err(|e| GpuError::Unavailable {
            message: "NVML cannot count the GPUs".to_owned(),
            source: Some(Box::new(e)),
        })?;
        if count == 0 {
            return Err(GpuError::unavailable("NVML found no GPU"));
        }
        let driver_version = nvml
            .sys_driver_version()
            .unwrap_or_else(|_| "unknown".to_owned());
        Ok(Self {
            nvml,
            library,
            driver_version,
            xid: XidWatch::register(nvml, count),
            partial_failures: LogLimiter::default(),
        })
    }

    /// Reads one GPU; only a missing device handle fails, every other field is optional.
    fn read_device(&self, i: u32) -> Result<GpuReading, NvmlError> {
        let d = self.nvml.device_by_index(i)?;
        let mut r = GpuReading {
            index: d.index().unwrap_or(i),
            uuid: d.uuid().unwrap_or_default(),
            model: d.name().unwrap_or_default(),
            ..GpuReading::default()
        };
        if let Ok(u) = d.utilization_rates() {
            r.utilization_percent = percent(u.gpu);
            r.memory_utilization_percent = percent(u.memory);
        }
        if let Ok(m) = d.memory_info() {
            r.memory_total_bytes = memory_total_bytes(m.total);
            r.memory_used_bytes = memory_bytes(m.used);
            r.memory_free_bytes = memory_bytes(m.free);
        }
        r.temperature_celsius = d
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .and_then(temperature_celsius);
        r.power_watts = d.power_usage().ok().and_then(milliwatts_to_watts);
        r.energy_joules = d
            .total_energy_consumption()
            .ok()
            .and_then(millijoules_to_joules);
        r.sm_clock_mhz = d.clock_info(Clock::SM).ok().and_then(clock_mhz);
        r.memory_clock_mhz = d.clock_info(Clock::Memory).ok().and_then(clock_mhz);
        if d.is_ecc_enabled().is_ok_and(|m| m.currently_enabled) {
            let total = |kind| {
                d.total_ecc_errors(kind, EccCounter::Volatile)
                    .ok()
                    .and_then(error_count)
            };
            r.ecc_corrected_total = total(MemoryError::Corrected);
            r.ecc_uncorrected_total = total(MemoryError::Uncorrected);
        }
        if let Some(&(_, total, last)) = self
            .xid
            .as_ref()
            .and_then(|x| x.counts.iter().find(|(idx, _, _)| *idx == r.index))
        {
            r.xid_errors_total = Some(total);
            r.last_xid = Some(last);
        }
        Ok(r)
    }
}

impl GpuSource for NvmlSource {
    fn describe(&self) -> String {
        format!("nvml {} ({})", self.driver_version, self.library)
    }

    fn poll(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        let count = self.nvml.device_count().map_err(|e| GpuError::Read {
            message: "NVML cannot count the GPUs".to_owned(),
            source: Some(Box::new(e)),
        })?;
        if let Some(xid) = &mut self.xid {
            xid.drain();
        }
        let mut readings = Vec::with_capacity(count as usize);
        let mut failed = None;
        for i in 0..count {
            match self.read_device(i) {
                Ok(r) => readings.push(r),
                Err(e) => {
                    if failed.is_none() {
                        failed = Some((i, e));
                    }
                }
            }
        }
        match failed {
            Some((i, e)) if readings.is_empty() => {
                return Err(GpuError::Read {
                    message: format!("cannot read GPU {i}"),
                    source: Some(Box::new(e)),
                });
            }
            Some((i, e)) => {
                if let Some(suppressed) = self.partial_failures.allow() {
                    tracing::warn!(gpu = i, suppressed, error = %e, "nvml: cannot read one GPU; reporting the others");
                }
            }
            None if readings.is_empty() => {
                return Err(GpuError::read("NVML reports no GPU"));
            }
            None => {}
        }
        readings.sort_by_key(|r| r.index);
        Ok(readings)
    }
}

impl XidWatch {
    /// Registers every GPU that supports critical XID events; `None` when none does.
    fn register(nvml: &'static Nvml, count: u32) -> Option<Self> {
        let mut registered: Vec<u32> = Vec::new();
        let mut set = nvml.create_event_set().ok()?;
        for i in 0..count {
            let Ok(device) = nvml.device_by_index(i) else {
                continue;
            };
            let supported = device
                .supported_event_types()
                .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
            if !supported {
                continue;
            }
            match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(s) => {
                    set = s;
                    registered.push(device.index().unwrap_or(i));
                }
                // A failed registration releases the set: rebuild it without this GPU.
                Err(_) => set = Self::rebuild(nvml, &registered)?,
            }
        }
        if registered.is_empty() {
            return None;
        }
        Some(Self {
            set,
            counts: registered.into_iter().map(|i| (i, 0, 0)).collect(),
        })
    }

    fn rebuild(nvml: &'static Nvml, indices: &[u32]) -> Option<EventSet<'static>> {
        let mut set = nvml.create_event_set().ok()?;
        for &i in indices {
            let device = nvml.device_by_index(i).ok()?;
            set = device
                .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                .ok()?;
        }
        Some(set)
    }

    /// Counts the events that arrived since the last poll, without waiting.
    fn drain(&mut self) {
        for _ in 0..MAX_EVENTS_PER_POLL {
            // `Timeout` means no event is pending; any other error ends this drain too.
            let Ok(event) = self.set.wait(0) else {
                break;
            };
            if !event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                continue;
            }
            let Ok(index) = event.device.index() else {
                continue;
            };
            if let Some((_, total, last)) = self.counts.iter_mut().find(|(i, _, _)| *i == index) {
                *total += 1;
                if let Some(XidError::Value(code)) = event.event_data {
                    *last = code;
                }
            }
        }
    }
}

// The filters from raw NVML numbers to readings: sentinels and impossible values become None.

/// A utilization percentage: 0 to 100, anything else (e.g. `0xFFFFFFFF`) is a sentinel.
pub(crate) fn percent(v: u32) -> Option<f64> {
    (v <= 100).then(|| f64::from(v))
}

/// A core temperature: NVML reports 0 (and sentinels) where the sensor is not supported.
pub(crate) fn temperature_celsius(v: u32) -> Option<f64> {
    (1..=200).contains(&v).then(|| f64::from(v))
}

/// A clock in MHz: 0 means not supported; more than 100 GHz is a sentinel.
pub(crate) fn clock_mhz(v: u32) -> Option<u32> {
    (1..100_000).contains(&v).then_some(v)
}

/// Power draw: a working GPU never draws 0 mW; `0xFFFFFFFF` is a sentinel.
pub(crate) fn milliwatts_to_watts(v: u32) -> Option<f64> {
    (v != 0 && v != u32::MAX).then(|| f64::from(v) / 1000.0)
}

/// Total energy in mJ (it can pass `u32::MAX` legitimately, so only `u64::MAX` is a sentinel).
pub(crate) fn millijoules_to_joules(v: u64) -> Option<f64> {
    (v != u64::MAX).then(|| v as f64 / 1000.0)
}

/// Memory used or free, bytes.
pub(crate) fn memory_bytes(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

/// Memory installed, bytes: a GPU without memory is a sentinel.
pub(crate) fn memory_total_bytes(v: u64) -> Option<u64> {
    (v != 0 && v != u64::MAX).then_some(v)
}

/// An error counter: `u64::MAX` and a widened `u32::MAX` are sentinels.
pub(crate) fn error_count(v: u64) -> Option<u64> {
    (v != u64::MAX && v != u64::from(u32::MAX)).then_some(v)
}
