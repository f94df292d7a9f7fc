//! The `prometheusremotewrite` exporter's config and its pure validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use vla_pipeline::config::{ConfigProblem, RetryConfig, SendingQueueConfig, WalSection};
use vla_pipeline::driver::DriverConfig;

/// Headers the remote-write 1.0 spec reserves; user `headers` may not set them.
pub const RESERVED_HEADERS: [&str; 4] = [
    "content-encoding",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// Config of the `prometheusremotewrite` exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The remote-write URL, `http://host:port/path` (required).
    pub endpoint: String,
    /// Extra request headers (e.g. `X-Scope-OrgID`); the four reserved headers are refused.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one HTTP request (default `5s`).
    #[serde(
        default = "default_timeout",
        deserialize_with = "vla_pipeline::config::duration"
    )]
    pub timeout: Duration,
    /// Prefix of every metric name (`namespace_metric`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels added to every series; a series' own label of the same name wins.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Most samples in one remote-write request (default 2000).
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// Parallel senders; series are assigned by label-set hash, so a series' samples stay in
    /// order (default 4).
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// The `target_info` series per resource.
    #[serde(default)]
    pub target_info: TargetInfo,
    /// When true, the `otel_scope_name` / `otel_scope_version` labels are left out
    /// (default false: they are added, as the OpenTelemetry spec recommends).
    #[serde(default)]
    pub disable_scope_info: bool,
    /// Exponential histograms as native histograms (the receiver must accept them:
    /// Prometheus with `--enable-feature=native-histograms`, which otherwise answers 500 and
    /// loses the whole request); default false: classic buckets at
    /// `exponential_histogram_bounds`, which every receiver takes.
    #[serde(default)]
    pub send_native_histograms: bool,
    /// The classic bounds of exponential histograms when `send_native_histograms` is false
    /// (default: the OpenTelemetry SDKs' explicit-bucket defaults).
    #[serde(default)]
    pub exponential_histogram_bounds: Option<Vec<f64>>,
    /// The driver's queue.
    #[serde(default)]
    pub sending_queue: SendingQueueConfig,
    /// The driver's retries.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// A durable write-ahead queue on disk (off unless set): what clients were told is
    /// stored survives a crash, `kill -9` or a long backend outage.
    #[serde(default)]
    pub wal: Option<WalSection>,
    /// A request still unsent this long after it was prepared (with a `wal`: appended to
    /// the log) is dropped (counted, reason `sample_age_limit`) instead of sent: set it to
    /// what the backend still accepts (Prometheus: about 1h behind its newest sample). The age
    /// is the request's time in the collector, not its samples' timestamps. Unset: no limit.
    #[serde(default, deserialize_with = "vla_pipeline::config::optional_duration")]
    pub sample_age_limit: Option<Duration>,
    /// A series that gets no sample for this long is sent a Prometheus stale marker once, so
    /// it ends in queries at once instead of lingering for the 5-minute lookback. Set it to
    /// a few export intervals (e.g. `1m`). Unset: no stale markers.
    #[serde(default, deserialize_with = "vla_pipeline::config::optional_duration")]
    pub stale_after: Option<Duration>,
}

/// The `target_info` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    /// Emit one `target_info` series per resource with its non-identifying attributes.
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_samples() -> usize {
    2000
}

fn default_shards() -> usize {
    4
}

impl Config {
    /// A config with every default and the given endpoint.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            namespace: None,
            external_labels: BTreeMap::new(),
            max_samples_per_send: default_max_samples(),
            shards: default_shards(),
            target_info: TargetInfo::default(),
            disable_scope_info: false,
            send_native_histograms: false,
            exponential_histogram_bounds: None,
            sending_queue: SendingQueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            wal: None,
            sample_age_limit: None,
            stale_after: None,
        }
    }

    /// Checks the config without I/O; every problem is reported at `{path}.field`.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(msg) = check_endpoint(&self.endpoint) {
            problems.push(ConfigProblem::new(format!("{path}.endpoint"), msg));
        }
        for (name, value) in &self.headers {
            let at = format!("{path}.headers.{name}");
            if RESERVED_HEADERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                problems.push(ConfigProblem::new(
                    at,
                    format!(
                        "header {name:?} is set by the remote-write protocol and cannot be \
                         overridden (reserved: Content-Encoding, Content-Type, User-Agent, \
                         X-Prometheus-Remote-Write-Version)"
                    ),
                ));
            } else if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(ConfigProblem::new(
                    at,
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            } else if http::HeaderValue::from_str(value).is_err() {
                // Never echo the value: headers often carry secrets.
                problems.push(ConfigProblem::new(
                    at,
                    "the value is not a valid HTTP header value (visible ASCII expected)",
                ));
            }
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.timeout"),
                "must be greater than 0",
            ));
        }
        if let Some(b) = &self.exponential_histogram_bounds {
            problems.extend(crate::translate::check_classic_bounds(
                &format!("{path}.exponential_histogram_bounds"),
                b,
            ));
        }
        problems.extend(crate::translate::check_naming_settings(
            path,
            self.namespace.as_deref(),
            "external_labels",
            &self.external_labels,
        ));
        if self.max_samples_per_send == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.max_samples_per_send"),
                "must be at least 1",
            ));
        }
        if self.shards == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.shards"),
                "must be at least 1",
            ));
        }
        if let Err(more) = self.driver_config(path) {
            problems.extend(more);
        }
        problems
    }

    /// The driver's queue, retry and write-ahead log settings, checked.
    pub fn driver_config(&self, path: &str) -> Result<DriverConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let driver =
            vla_pipeline::config::driver_config(path, &self.sending_queue, &self.retry_on_failure)
                .map_err(|p| problems.extend(p))
                .ok();
        let wal = match &self.wal {
            Some(w) => vla_pipeline::config::wal_config(path, w)
                .map_err(|p| problems.extend(p))
                .ok(),
            None => None,
        };
        if self.stale_after.is_some_and(|d| d.is_zero()) {
            problems.push(ConfigProblem::new(
                format!("{path}.stale_after"),
                "must be greater than 0 (leave it out for no stale markers)",
            ));
        }
        if self.sample_age_limit.is_some_and(|d| d.is_zero()) {
            problems.push(ConfigProblem::new(
                format!("{path}.sample_age_limit"),
                "must be greater than 0 (leave it out for no limit)",
            ));
        }
        match driver {
            Some(d) if problems.is_empty() => Ok(DriverConfig {
                wal,
                sample_age_limit: self.sample_age_limit,
                ..d
            }),
            _ => Err(problems),
        }
    }
}

/// Accepts `http://host[:port][/path]`; TLS is not built in.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let expected = "expected an http:// URL such as http://127.0.0.1:9090/api/v1/write";
    if endpoint.is_empty() {
        return Err(format!("is required: {expected}"));
    }
    if endpoint.starts_with("https://") {
        return Err(format!(
            "https is not supported by this build (no TLS): {expected}"
        ));
    }
    // Messages show the URL without user info or query: either may hold a secret.
    let shown = super::client::shown_url(endpoint);
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("not a valid URL: {expected}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} is not an http:// URL: {expected}"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "{shown:?}: credentials in the URL are not accepted (they would end up in logs); \
             send them as a header instead, e.g. headers: {{ Authorization: \"Basic ...\" }}"
        ));
    }
    Ok(())
}

impl Config {
    /// How the translator writes exponential histograms.
    pub fn exponential(&self) -> crate::translate::ExponentialHistograms {
        match (
            &self.exponential_histogram_bounds,
            self.send_native_histograms,
        ) {
            (_, true) => crate::translate::ExponentialHistograms::Native,
            (Some(b), false) => crate::translate::ExponentialHistograms::Classic(b.clone()),
            (None, false) => crate::translate::ExponentialHistograms::default(),
        }
    }
}
