//! Config pieces shared by every component: problems with their YAML path, durations written
//! as `200ms` / `5s` / `1m30s`, and the `sending_queue` / `retry_on_failure` sections that
//! configure the exporter driver.
//!
//! ```yaml
//! exporters:
//!   prometheusremotewrite:
//!     endpoint: http://127.0.0.1:9090/api/v1/write
//!     sending_queue: { sizer: points, queue_size: 65536, when_full: block }
//!     retry_on_failure: { initial_interval: 100ms, max_interval: 30s, max_elapsed_time: 5m }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};

use crate::driver::wal::{WalConfig, WalSync, WalWhenFull};
use crate::driver::{DriverConfig, MAX_QUEUE_POINTS, QueueSizer, RetryPolicy, WhenFull};

/// One thing wrong with a config, at a YAML path such as `exporters.debug.verbosity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted YAML path of the offending value.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ConfigProblem {
    /// Several problems on one line, `; `-separated (for error messages).
    pub fn join(problems: &[ConfigProblem]) -> String {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Parses a listen endpoint: an IP address and port (`127.0.0.1:4317`, `0.0.0.0:4317`,
/// `[::1]:4317`); `localhost:PORT` means `127.0.0.1:PORT`. Other host names are refused, since
/// validation does no I/O and a listener must not depend on DNS.
pub fn parse_listen_addr(endpoint: &str) -> Result<SocketAddr, String> {
    let text = endpoint.trim();
    let parsed = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        None => text.parse().ok(),
    };
    parsed.ok_or_else(|| {
        format!(
            "invalid endpoint {endpoint:?}: expected an IP address and port, e.g. \
             127.0.0.1:4317, 0.0.0.0:4317 or [::1]:4317 (host names other than localhost are \
             not resolved)"
        )
    })
}

/// Parses `1h`, `5m`, `30s`, `200ms`, `10us`, `1m30s` (units may be combined, largest first).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!("invalid duration {text:?}: expected a number with a unit, e.g. 200ms, 5s, 1m30s")
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// `#[serde(default, deserialize_with = "vla_pipeline::config::optional_duration")]` for an
/// optional duration field: like [`duration`], with `null` (a key with no value) meaning unset.
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "duration")] Duration);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

/// `#[serde(deserialize_with = "vla_pipeline::config::duration")]` for duration fields: a
/// string such as `200ms`, `5s`, `1m30s`, or the bare number `0`. Any other bare number is
/// refused, because its unit would be a guess.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like 200ms, 5s or 1m30s")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            if v == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            if v == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(E::invalid_value(Unexpected::Signed(v), &self))
            }
        }
    }
    d.deserialize_any(V)
}

/// Parses a size in bytes: a bare number (`1048576`) or a number with a unit, binary (`KiB`,
/// `MiB`, `GiB`) or decimal (`kB`, `MB`, `GB`), e.g. `512MiB`, `1.5GiB`, `64 MB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "invalid size {text:?}: expected bytes, or a number with a unit such as 512MiB, \
             1GiB or 64MB"
        )
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if split == 0 {
        return Err(bad());
    }
    let value: f64 = s[..split].parse().map_err(|_| bad())?;
    let scale: f64 = match s[split..].trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `#[serde(deserialize_with = "vla_pipeline::config::bytes")]` for size fields: a number of
/// bytes, or a string with a unit (`512MiB`; see [`parse_bytes`]).
pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as 512MiB, 1GiB or a number of bytes")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
            parse_bytes(s).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// The `retry_on_failure` section of an exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Whether to retry retryable failures.
    pub enabled: bool,
    /// First wait.
    #[serde(deserialize_with = "duration")]
    pub initial_interval: Duration,
    /// Cap on one wait, including a server's `Retry-After`.
    #[serde(deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Growth factor between waits.
    pub multiplier: f64,
    /// Jitter: each wait is scaled by a random factor in `[1 - r, 1 + r]`; 0 ≤ r < 1.
    pub randomization_factor: f64,
    /// Give up after this long; `0` = never.
    #[serde(deserialize_with = "duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            enabled: p.enabled,
            initial_interval: p.initial_interval,
            max_interval: p.max_interval,
            multiplier: p.multiplier,
            randomization_factor: p.randomization_factor,
            max_elapsed_time: p.max_elapsed_time,
        }
    }
}

/// What to do when an exporter's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFullConfig {
    /// Slow the pipeline down (receivers then refuse with retryable statuses).
    #[default]
    Block,
    /// Drop for this exporter only, counted.
    Drop,
}

/// The `sending_queue` section of an exporter.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueueConfig {
    /// What `queue_size` counts (default `points`).
    pub sizer: QueueSizer,
    /// Capacity, in `sizer` units (default 65536 points, or 32 batches).
    pub queue_size: Option<usize>,
    /// Behaviour when full.
    pub when_full: WhenFullConfig,
}

impl SendingQueueConfig {
    /// The capacity, in `sizer` units (the sizer's default when not set).
    pub fn queue_size(&self) -> usize {
        self.queue_size
            .unwrap_or_else(|| self.sizer.default_queue_size())
    }
}

/// Builds the driver settings from an exporter's two sections, checking them; problems are
/// reported under `path` (the exporter's own path, e.g. `exporters.prometheusremotewrite`).
pub fn driver_config(
    path: &str,
    queue: &SendingQueueConfig,
    retry: &RetryConfig,
) -> Result<DriverConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let queue_size = queue.queue_size();
    if queue_size == 0 {
        problems.push(ConfigProblem::new(
            format!("{path}.sending_queue.queue_size"),
            "must be at least 1",
        ));
    } else if queue_size > MAX_QUEUE_POINTS {
        problems.push(ConfigProblem::new(
            format!("{path}.sending_queue.queue_size"),
            format!(
                "must be at most {MAX_QUEUE_POINTS} {}, got {queue_size}",
                queue.sizer.name()
            ),
        ));
    }
    if retry.multiplier < 1.0 || !retry.multiplier.is_finite() {
        problems.push(ConfigProblem::new(
            format!("{path}.retry_on_failure.multiplier"),
            format!("must be a number ≥ 1, got {}", retry.multiplier),
        ));
    }
    if !(0.0..=1.0).contains(&retry.randomization_factor) {
        problems.push(ConfigProblem::new(
            format!("{path}.retry_on_failure.randomization_factor"),
            format!(
                "must be between 0 and 1, got {}",
                retry.randomization_factor
            ),
        ));
    }
    if retry.enabled && retry.initial_interval.is_zero() {
        problems.push(ConfigProblem::new(
            format!("{path}.retry_on_failure.initial_interval"),
            "must be greater than 0 when retries are enabled",
        ));
    }
    if retry.max_interval < retry.initial_interval {
        problems.push(ConfigProblem::new(
            format!("{path}.retry_on_failure.max_interval"),
            "must not be shorter than initial_interval",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(DriverConfig {
        queue_size,
        sizer: queue.sizer,
        when_full: match queue.when_full {
            WhenFullConfig::Block => WhenFull::Block,
            WhenFullConfig::Drop => WhenFull::Drop,
        },
        retry: RetryPolicy {
            enabled: retry.enabled,
            initial_interval: retry.initial_interval,
            max_interval: retry.max_interval,
            multiplier: retry.multiplier,
            randomization_factor: retry.randomization_factor,
            max_elapsed_time: retry.max_elapsed_time,
        },
        sample_age_limit: None,
        wal: None,
    })
}

/// `wal.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalSyncConfig {
    /// fsync every batch before the clients are answered.
    Always,
    /// fsync every `sync_interval`.
    #[default]
    Interval,
    /// Leave it to the operating system.
    Never,
}

/// `wal.when_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalWhenFullConfig {
    /// Wait for room (receivers answer retryable codes meanwhile).
    #[default]
    Block,
    /// Drop the oldest unsent records, counted.
    DropOldest,
}

/// The `wal` section of an exporter: its durable write-ahead queue.
///
/// ```yaml
/// wal:
///   directory: /var/lib/vla-collector/wal/prom
///   max_bytes: 1GiB
///   sync: interval        # always | interval | never
///   sync_interval: 1s
///   when_full: block      # block | drop_oldest
///   max_in_memory: 16MiB  # read-ahead of the senders; the backlog stays on disk
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSection {
    /// Where the log lives (required; one directory per exporter).
    pub directory: String,
    /// Disk cap (default 1GiB).
    #[serde(default = "default_wal_max_bytes", deserialize_with = "bytes")]
    pub max_bytes: u64,
    /// When appends reach the disk (default `interval`).
    #[serde(default)]
    pub sync: WalSyncConfig,
    /// The `interval` mode's period (default 1s).
    #[serde(default = "default_sync_interval", deserialize_with = "duration")]
    pub sync_interval: Duration,
    /// What to do when the log holds `max_bytes` (default `block`).
    #[serde(default)]
    pub when_full: WalWhenFullConfig,
    /// Most bytes of records read back into memory for sending (default the smaller of
    /// 16MiB and a quarter of `max_bytes`).
    #[serde(default, deserialize_with = "optional_bytes")]
    pub max_in_memory: Option<u64>,
}

fn default_wal_max_bytes() -> u64 {
    1 << 30
}

fn default_sync_interval() -> Duration {
    Duration::from_secs(1)
}

fn optional_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bytes(d).map(Some)
}

/// Smallest `max_bytes` accepted.
pub const WAL_MIN_BYTES: u64 = 1 << 20;

/// Builds the log's settings from an exporter's `wal` section, checking them; problems are
/// reported under `path` (the exporter's own path).
pub fn wal_config(path: &str, wal: &WalSection) -> Result<WalConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    if wal.directory.trim().is_empty() {
        problems.push(ConfigProblem::new(
            format!("{path}.wal.directory"),
            "is required: the directory of this exporter's write-ahead log, e.g. /var/lib/vla-collector/wal/prom",
        ));
    }
    if wal.max_bytes < WAL_MIN_BYTES {
        problems.push(ConfigProblem::new(
            format!("{path}.wal.max_bytes"),
            format!("must be at least 1MiB, got {} bytes", wal.max_bytes),
        ));
    }
    if wal.sync == WalSyncConfig::Interval && wal.sync_interval.is_zero() {
        problems.push(ConfigProblem::new(
            format!("{path}.wal.sync_interval"),
            "must be greater than 0 (or use sync: always)",
        ));
    }
    let in_memory = wal
        .max_in_memory
        .unwrap_or_else(|| (16 << 20).min(wal.max_bytes / 4));
    if let Some(m) = wal.max_in_memory
        && (m < 64 << 10 || m > wal.max_bytes / 2)
    {
        problems.push(ConfigProblem::new(
            format!("{path}.wal.max_in_memory"),
            format!(
                "must be between 64KiB and half of max_bytes ({} bytes), got {m} bytes: the backlog is meant to stay on disk",
                wal.max_bytes / 2
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(WalConfig {
        directory: wal.directory.clone().into(),
        max_bytes: wal.max_bytes,
        sync: match wal.sync {
            WalSyncConfig::Always => WalSync::Always,
            WalSyncConfig::Interval => WalSync::Interval(wal.sync_interval),
            WalSyncConfig::Never => WalSync::Never,
        },
        when_full: match wal.when_full {
            WalWhenFullConfig::Block => WalWhenFull::Block,
            WalWhenFullConfig::DropOldest => WalWhenFull::DropOldest,
        },
        max_in_memory_bytes: in_memory.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:4317"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 4317)))
        );
        assert_eq!(
            parse_listen_addr("localhost:9464"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(parse_listen_addr(" [::1]:0 ").map(|a| a.port()), Ok(0));
        for bad in ["example.com:4317", "127.0.0.1", "localhost:x", ":4317"] {
            let e = parse_listen_addr(bad).expect_err(bad);
            assert!(
                e.starts_with(&format!("invalid endpoint {bad:?}: expected an IP address")),
                "{e}"
            );
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("1048576", 1 << 20),
            ("512MiB", 512 << 20),
            ("1.5GiB", 3 << 29),
            ("64 MB", 64_000_000),
            ("100kB", 100_000),
            ("8KiB", 8192),
            ("0", 0),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for bad in ["", "MiB", "12 furlongs", "1e3", "-5MiB"] {
            let e = parse_bytes(bad).expect_err(bad);
            assert!(e.starts_with(&format!("invalid size {bad:?}")), "{e}");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("0", 0.0),
            ("200ms", 0.2),
            ("5s", 5.0),
            ("1m30s", 90.0),
            ("1.5h", 5400.0),
            ("10us", 0.00001),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs_f64(secs)),
                "{text}"
            );
        }
        for bad in ["", "5", "s", "5 sec", "-1s", "1d"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains("expected a number with a unit"),
                "{bad}: {err}"
            );
        }
    }

    #[derive(Debug, Deserialize)]
    struct D {
        #[serde(deserialize_with = "duration")]
        d: Duration,
    }

    #[test]
    fn duration_fields_take_strings_and_bare_zero() {
        let parse =
            |v: serde_json::Value| serde_json::from_value::<D>(serde_json::json!({ "d": v }));
        assert_eq!(
            parse("1m30s".into()).map(|d| d.d).ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse(0.into()).map(|d| d.d).ok(), Some(Duration::ZERO));
        let err = parse(5.into()).expect_err("bare 5").to_string();
        assert_eq!(
            err,
            "invalid value: integer `5`, expected a duration like 200ms, 5s or 1m30s"
        );
    }

    #[test]
    fn driver_config_checks_every_field() {
        let queue = SendingQueueConfig {
            queue_size: Some(0),
            when_full: WhenFullConfig::Drop,
            ..SendingQueueConfig::default()
        };
        let retry = RetryConfig {
            multiplier: 0.5,
            randomization_factor: 2.0,
            initial_interval: Duration::ZERO,
            ..RetryConfig::default()
        };
        let problems = driver_config("exporters.x", &queue, &retry).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "exporters.x.sending_queue.queue_size",
                "exporters.x.retry_on_failure.multiplier",
                "exporters.x.retry_on_failure.randomization_factor",
                "exporters.x.retry_on_failure.initial_interval",
            ]
        );
        let ok = driver_config("e", &SendingQueueConfig::default(), &RetryConfig::default())
            .expect("defaults valid");
        assert_eq!(ok, DriverConfig::default());
        assert_eq!((ok.sizer, ok.queue_size), (QueueSizer::Points, 65_536));
        let batches: SendingQueueConfig =
            serde_json::from_value(serde_json::json!({ "sizer": "batches" })).expect("parses");
        let d = driver_config("e", &batches, &RetryConfig::default()).expect("valid");
        assert_eq!((d.sizer, d.queue_size), (QueueSizer::Batches, 32));
        let huge = SendingQueueConfig {
            queue_size: Some(MAX_QUEUE_POINTS + 1),
            ..SendingQueueConfig::default()
        };
        let p = driver_config("e", &huge, &RetryConfig::default()).expect_err("too large");
        assert_eq!(p[0].path, "e.sending_queue.queue_size");
        assert_eq!(
            p[0].message,
            format!(
                "must be at most 4294967295 points, got {}",
                MAX_QUEUE_POINTS + 1
            )
        );
        let unknown =
            serde_json::from_value::<SendingQueueConfig>(serde_json::json!({ "sizer": "bytes" }))
                .expect_err("unknown sizer")
                .to_string();
        assert!(
            unknown.contains("points") && unknown.contains("batches"),
            "{unknown}"
        );
    }
}
