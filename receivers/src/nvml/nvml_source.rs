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
//!
//! **One thread per source.** An `EventSet` borrows the `Nvml` it came from, so a struct that
//! kept both would need an `Nvml` that lives forever (leaked) or unsafe code. Instead each
//! [`NvmlSource`] owns a thread (`nvml`) that initialises NVML, keeps the handle and the event
//! set on its own stack and answers poll requests over a channel. Dropping the source closes
//! the channel: the thread frees the event set and shuts NVML down (`nvmlShutdown`, which NVML
//! reference-counts), so opening a new source later initialises NVML afresh, which is what
//! picks up a reloaded driver (the receiver does that after repeated failed polls). If two
//! sources share the process (two `nvml` receivers), NVML stays initialised until both are
//! dropped. A call that hangs in the driver blocks that thread, and also the caller waiting for
//! its answer (`open` waits for the initialisation, `poll` for the reply): in the receiver, a
//! thread of tokio's blocking pool, pinned until the driver call returns. The receiver stops
//! waiting after its timeout and starts no other call until that one returns, so a hung
//! driver holds at most one pool thread (and the `nvml` thread) per receiver.
//!
//! **Driver version.** Memory comes from `nvmlDeviceGetMemoryInfo_v2` only (what
//! `nvml-wrapper` 0.13 calls), which drivers R510 (510.39) and later provide; an older driver
//! reports no memory values (the other fields still work). With v2, `used` excludes the
//! memory the driver reserves, so `used + free` is less than `total` by that reserve.
//! Energy needs Volta or newer.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

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

type Readings = Result<Vec<GpuReading>, GpuError>;

/// The GPUs of this host, read through NVML on the source's own thread.
#[derive(Debug)]
pub struct NvmlSource {
    library: String,
    driver_version: String,
    /// One `()` per poll; dropping it stops the thread.
    requests: mpsc::Sender<()>,
    /// One answer per request, in order.
    replies: mpsc::Receiver<Readings>,
}

impl NvmlSource {
    /// Loads and initialises NVML (from `library_path`, or the system's `libnvidia-ml.so.1`)
    /// on a new thread and checks that it sees at least one GPU. Blocks while the library
    /// loads.
    pub fn open(library_path: Option<&Path>) -> Result<Self, GpuError> {
        let library =
            library_path.map_or_else(|| DEFAULT_LIBRARY.to_owned(), |p| p.display().to_string());
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let (requests, request_rx) = mpsc::channel();
        let (reply_tx, replies) = mpsc::channel();
        let path = library_path.map(Path::to_path_buf);
        let described = library.clone();
        std::thread::Builder::new()
            .name("nvml".to_owned())
            .spawn(move || serve(path, &described, &init_tx, &request_rx, &reply_tx))
            .map_err(|e| GpuError::Unavailable {
                message: "cannot start the NVML thread".to_owned(),
                source: Some(Box::new(e)),
            })?;
        let driver_version = init_rx.recv().map_err(|_| {
            GpuError::unavailable(format!("the NVML thread stopped while opening {library}"))
        })??;
        Ok(Self {
            library,
            driver_version,
            requests,
            replies,
        })
    }
}

impl GpuSource for NvmlSource {
    fn describe(&self) -> String {
        format!("nvml {} ({})", self.driver_version, self.library)
    }

    fn poll(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        let stopped = || GpuError::read("the NVML thread stopped");
        self.requests.send(()).map_err(|_| stopped())?;
        self.replies.recv().map_err(|_| stopped())?
    }
}

/// The source's thread: opens NVML, reports the driver version (or why it failed) on `init`,
/// then answers each request until the source is dropped. NVML is shut down on return.
fn serve(
    path: Option<PathBuf>,
    library: &str,
    init: &mpsc::SyncSender<Result<String, GpuError>>,
    requests: &mpsc::Receiver<()>,
    replies: &mpsc::Sender<Readings>,
) {
    let opened = match &path {
        Some(p) => Nvml::builder().lib_path(p.as_os_str()).init(),
        None => Nvml::init(),
    };
    let nvml = match opened {
        Ok(nvml) => nvml,
        Err(e) => {
            let _ = init.send(Err(GpuError::Unavailable {
                message: format!("cannot load or initialise NVML ({library})"),
                source: Some(Box::new(e)),
            }));
            return;
        }
    };
    let count = match nvml.device_count() {
        Ok(0) => {
            let _ = init.send(Err(GpuError::unavailable("NVML found no GPU")));
            return;
        }
        Ok(n) => n,
        Err(e) => {
            let _ = init.send(Err(GpuError::Unavailable {
                message: "NVML cannot count the GPUs".to_owned(),
                source: Some(Box::new(e)),
            }));
            return;
        }
    };
    let driver_version = nvml
        .sys_driver_version()
        .unwrap_or_else(|_| "unknown".to_owned());
    // Declared after `nvml`, so dropped (event set freed) before NVML shuts down.
    let mut session = Session {
        nvml: &nvml,
        xid: XidWatch::register(&nvml, count),
        partial_failures: LogLimiter::default(),
    };
    if init.send(Ok(driver_version)).is_err() {
        return;
    }
    while requests.recv().is_ok() {
        if replies.send(session.poll()).is_err() {
            break;
        }
    }
}

/// An open NVML handle and what the source keeps between polls.
struct Session<'n> {
    nvml: &'n Nvml,
    xid: Option<XidWatch<'n>>,
    partial_failures: LogLimiter,
}

/// Critical XID events of the GPUs that support them, counted since the source opened.
struct XidWatch<'n> {
    set: EventSet<'n>,
    /// `(gpu index, events seen, last XID code)`.
    counts: Vec<(u32, u64, u64)>,
}

impl Session<'_> {
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
        // nvmlDeviceGetMemoryInfo_v2 (driver R510+); `used` excludes the reserved memory.
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

    /// Reads every GPU, ordered by index; fails only when no GPU could be read.
    fn poll(&mut self) -> Readings {
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

impl<'n> XidWatch<'n> {
    /// Registers every GPU that supports critical XID events; `None` when none does.
    fn register(nvml: &'n Nvml, count: u32) -> Option<Self> {
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

    fn rebuild(nvml: &'n Nvml, indices: &[u32]) -> Option<EventSet<'n>> {
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
