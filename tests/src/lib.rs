//! `vla-e2e`: a small harness that starts real servers for end-to-end tests.
//!
//! - [`Prometheus`]: the Debian `prometheus` binary on 127.0.0.1 with a free port, a temporary
//!   data dir and the remote-write receiver on; ready when `/-/ready` answers.
//! - [`Collector`]: the `vla-collector` binary with a YAML config written to a temp file;
//!   ready when its telemetry `/ready` answers 200.
//! - [`alertmanager`]: the Debian `prometheus-alertmanager` binary, the same way.
//! - [`grafana`]: the four dashboards as typed definitions, rendered to Grafana JSON.
//!
//! Every process is owned by a guard that kills it on drop, so a failing test never leaves a
//! server running. Readiness is polled with a deadline, never slept for.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod alertmanager;
pub mod grafana;
pub mod postgres;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of the harness; tests `expect` them with context.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary the test needs is not installed.
    #[error("{what} not found ({tried}); {how}")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// Where we looked.
        tried: String,
        /// How to install it.
        how: &'static str,
    },
    /// A process could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// Which process.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server did not become ready in time.
    #[error("{what} not ready after {secs} s; its log:\n{log}")]
    NotReady {
        /// Which server.
        what: &'static str,
        /// How long we waited.
        secs: u64,
        /// The server's output so far.
        log: String,
    },
    /// File system trouble.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP call failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// A path in the repository (`configs/...`, `docs/...`), from this crate's manifest.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A YAML file of the repository, as JSON values.
pub fn repo_yaml(relative: &str) -> Result<serde_json::Value, HarnessError> {
    let text = std::fs::read_to_string(repo_path(relative))
        .map_err(|e| HarnessError::Unexpected(format!("{relative}: {e}")))?;
    serde_saphyr::from_str(&text).map_err(|e| HarnessError::Unexpected(format!("{relative}: {e}")))
}

/// A test copy of a rule file of the repository: every group evaluated each second and every
/// `for:` set to `hold`, so alerts fire within seconds. Written as JSON, which Prometheus reads
/// as YAML. Returns the text and the names of its alerts.
pub fn fast_rules(relative: &str, hold: &str) -> Result<(String, Vec<String>), HarnessError> {
    let mut rules = repo_yaml(relative)?;
    let mut alerts = Vec::new();
    let groups = rules["groups"]
        .as_array_mut()
        .ok_or_else(|| HarnessError::Unexpected(format!("{relative}: no groups")))?;
    for group in groups {
        group["interval"] = serde_json::json!("1s");
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            if rule.get("for").is_some() {
                rule["for"] = serde_json::json!(hold);
            }
            if let Some(name) = rule["alert"].as_str() {
                alerts.push(name.to_owned());
            }
        }
    }
    let text = serde_json::to_string_pretty(&rules)
        .map_err(|e| HarnessError::Unexpected(format!("{relative}: {e}")))?;
    Ok((text, alerts))
}

/// Runs `check` every 100 ms until it answers `Ok`, or `timeout` passes; the error then holds
/// `check`'s last complaint.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(why) if Instant::now() >= deadline => {
                return Err(HarnessError::Unexpected(format!(
                    "after {timeout:?}: {why}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process killed on drop, with its output captured to a file.
pub struct ProcessGuard {
    what: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl ProcessGuard {
    fn spawn(what: &'static str, mut cmd: Command, log: PathBuf) -> Result<Self, HarnessError> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| HarnessError::Spawn { what, source })?;
        Ok(Self {
            what,
            child: Some(child),
            log,
        })
    }

    /// Spawns `cmd` and waits until `ready_url` answers 2xx; fails with the process's log
    /// when it exits first or `timeout` passes.
    async fn start_ready(
        what: &'static str,
        cmd: Command,
        log: PathBuf,
        ready_url: &str,
        timeout: Duration,
    ) -> Result<Self, HarnessError> {
        let mut process = Self::spawn(what, cmd, log)?;
        wait_ready(what, ready_url, &mut process, timeout).await?;
        Ok(process)
    }

    /// A guard with no process (yet).
    fn stopped(what: &'static str, log: PathBuf) -> Self {
        Self {
            what,
            child: None,
            log,
        }
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>, HarnessError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Unexpected(format!(
                    "{} did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.what,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl ProcessGuard {
    /// Sends SIGKILL (no clean stop: what a crash or an OOM kill does) and reaps the process.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_ready(
    what: &'static str,
    url: &str,
    guard: &mut ProcessGuard,
    timeout: Duration,
) -> Result<(), HarnessError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(1)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        let exited = guard
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            return Err(HarnessError::NotReady {
                what,
                secs: timeout.as_secs(),
                log: guard.log(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .collect::<Vec<_>>()
    });
    from_path
        .chain(extra.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// A real Prometheus server with the remote-write receiver enabled.
pub struct Prometheus {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The process.
    pub process: ProcessGuard,
    /// Its command line, to start it again on the same data ([`Prometheus::restart`]).
    command: (PathBuf, Vec<String>),
    _dir: tempfile::TempDir,
}

/// One sample of an instant-query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// All labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus on a free port; `scrape_targets` are scraped every second.
    pub async fn start(scrape_targets: &[String]) -> Result<Self, HarnessError> {
        Self::start_on(free_port(), scrape_targets).await
    }

    /// Starts Prometheus on `port`.
    pub async fn start_on(port: u16, scrape_targets: &[String]) -> Result<Self, HarnessError> {
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !scrape_targets.is_empty() {
            config.push_str("scrape_configs:\n  - job_name: vla-collector-exporter\n    honor_labels: true\n    static_configs:\n      - targets: [");
            config.push_str(
                &scrape_targets
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            config.push_str("]\n");
        }
        Self::start_with(port, &config, &[]).await
    }

    /// Starts Prometheus on `port` with `config` as its `prometheus.yml`, and `files` (name,
    /// content) written beside it, where relative `rule_files` entries find them.
    pub async fn start_with(
        port: u16,
        config: &str,
        files: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        Self::start_with_args(port, config, files, &[]).await
    }

    /// [`Prometheus::start_with`] with extra command-line flags
    /// (`--enable-feature=native-histograms`).
    pub async fn start_with_args(
        port: u16,
        config: &str,
        files: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self, HarnessError> {
        let bin =
            find_binary("prometheus", &["/usr/bin/prometheus"]).ok_or(HarnessError::Missing {
                what: "prometheus",
                tried: "PATH and /usr/bin/prometheus".into(),
                how: "run scripts/test, which installs it, or `apt-get install -y prometheus`",
            })?;
        let dir = tempfile::tempdir()?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)?;
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let mut argv = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let url = format!("http://127.0.0.1:{port}");
        let mut me = Self {
            url,
            process: ProcessGuard::stopped("prometheus", dir.path().join("prometheus.log")),
            command: (bin, argv),
            _dir: dir,
        };
        me.restart().await?;
        Ok(me)
    }

    /// Stops the server (SIGTERM), keeping its data: a backend outage.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.process.terminate(Duration::from_secs(30)).map(|_| ())
    }

    /// Starts the server again on the same port and data, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        let (bin, argv) = &self.command;
        let mut cmd = Command::new(bin);
        cmd.args(argv);
        let log = self._dir.path().join(format!(
            "prometheus-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        self.process = ProcessGuard::start_ready(
            "prometheus",
            cmd,
            log,
            &format!("{}/-/ready", self.url),
            Duration::from_secs(60),
        )
        .await?;
        Ok(())
    }

    /// Every raw sample of `selector` within the last `range` (e.g. `1h`), per series:
    /// labels and `(timestamp ms, value)` in timestamp order.
    pub async fn raw_samples(
        &self,
        selector: &str,
        range: &str,
    ) -> Result<Vec<RawSeries>, HarnessError> {
        raw_samples(&self.url, selector, range).await
    }

    /// The remote-write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Runs an instant query.
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, HarnessError> {
        instant_query(&self.url, expr).await
    }

    /// Polls `expr` until it returns at least `min` samples or `timeout` passes.
    pub async fn wait_for(
        &self,
        expr: &str,
        min: usize,
        timeout: Duration,
    ) -> Result<Vec<Sample>, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.query(expr).await?;
            if got.len() >= min {
                return Ok(got);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Unexpected(format!(
                    "query {expr:?} returned {} samples after {timeout:?}, wanted {min}: {got:?}",
                    got.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One series of [`Prometheus::raw_samples`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    /// All labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// `(timestamp ms, value)`, in timestamp order.
    pub samples: Vec<(i64, f64)>,
}

/// The `data.result` array of `/api/v1/query?query=expr` at `base_url`.
async fn query_result(base_url: &str, expr: &str) -> Result<Vec<serde_json::Value>, HarnessError> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{base_url}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await?
        .json()
        .await?;
    if body["status"] != "success" {
        return Err(HarnessError::Unexpected(body.to_string()));
    }
    body["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| HarnessError::Unexpected(body.to_string()))
}

/// The labels of one result entry.
fn result_labels(r: &serde_json::Value) -> BTreeMap<String, String> {
    r["metric"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// An instant query against a Prometheus-compatible API at `base_url`.
pub async fn instant_query(base_url: &str, expr: &str) -> Result<Vec<Sample>, HarnessError> {
    query_result(base_url, expr)
        .await?
        .iter()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| HarnessError::Unexpected(r.to_string()))?;
            Ok(Sample {
                labels: result_labels(r),
                value,
            })
        })
        .collect()
}

/// Raw samples of `selector[range]` from a Prometheus-compatible API at `base_url`.
pub async fn raw_samples(
    base_url: &str,
    selector: &str,
    range: &str,
) -> Result<Vec<RawSeries>, HarnessError> {
    query_result(base_url, &format!("{selector}[{range}]"))
        .await?
        .iter()
        .map(|r| {
            let samples = r["values"]
                .as_array()
                .ok_or_else(|| HarnessError::Unexpected(r.to_string()))?
                .iter()
                .map(|v| {
                    let ts = v[0]
                        .as_f64()
                        .ok_or_else(|| HarnessError::Unexpected(v.to_string()))?;
                    let value = v[1]
                        .as_str()
                        .and_then(|x| x.parse::<f64>().ok())
                        .ok_or_else(|| HarnessError::Unexpected(v.to_string()))?;
                    Ok(((ts * 1000.0).round() as i64, value))
                })
                .collect::<Result<Vec<_>, HarnessError>>()?;
            Ok(RawSeries {
                labels: result_labels(r),
                samples,
            })
        })
        .collect()
}

/// A real VictoriaMetrics single-node server (Debian `victoria-metrics`), accepting
/// Prometheus remote write at `/api/v1/write` and answering PromQL at `/api/v1/query`.
pub struct VictoriaMetrics {
    /// Base URL.
    pub url: String,
    /// The process.
    pub process: ProcessGuard,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// Starts it on `port` with a fresh data directory; what it receives is queryable
    /// at once (no search latency offset).
    pub async fn start_on(port: u16) -> Result<Self, HarnessError> {
        let bin = find_binary("victoria-metrics", &["/usr/bin/victoria-metrics"]).ok_or(
            HarnessError::Missing {
                what: "victoria-metrics",
                tried: "PATH and /usr/bin/victoria-metrics".into(),
                how: "run scripts/test, which installs it, or `apt-get install -y victoria-metrics`",
            },
        )?;
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!(
            "-storageDataPath={}",
            dir.path().join("data").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=1")
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .arg("-loggerLevel=WARN");
        let url = format!("http://127.0.0.1:{port}");
        let process = ProcessGuard::start_ready(
            "victoria-metrics",
            cmd,
            dir.path().join("victoria-metrics.log"),
            &format!("{url}/health"),
            Duration::from_secs(60),
        )
        .await?;
        Ok(Self {
            url,
            process,
            _dir: dir,
        })
    }

    /// The remote-write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Runs an instant query.
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, HarnessError> {
        instant_query(&self.url, expr).await
    }

    /// Raw samples, as [`Prometheus::raw_samples`].
    pub async fn raw_samples(
        &self,
        selector: &str,
        range: &str,
    ) -> Result<Vec<RawSeries>, HarnessError> {
        raw_samples(&self.url, selector, range).await
    }
}

/// A running `vla-collector` process.
pub struct Collector {
    /// Base URL of its telemetry server.
    pub telemetry_url: String,
    /// The process.
    pub process: ProcessGuard,
    _dir: tempfile::TempDir,
}

/// Where the `vla-collector` binary is: `$VLA_COLLECTOR_BIN`, or next to the test binary in
/// cargo's target directory (`cargo test --workspace` builds it).
pub fn collector_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary(
        "vla-collector",
        "VLA_COLLECTOR_BIN",
        "build it with `cargo build -p vla-collector` (scripts/test does), or set VLA_COLLECTOR_BIN",
    )
}

/// Where the `vla-api-sim` binary is: `$VLA_API_SIM_BIN`, or next to the test binary.
pub fn simulator_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary(
        "vla-api-sim",
        "VLA_API_SIM_BIN",
        "build it with `cargo build -p vla-sdk` (scripts/test does), or set VLA_API_SIM_BIN",
    )
}

/// Where the `vla-loadgen` binary is: `$VLA_LOADGEN_BIN`, or next to the test binary.
pub fn loadgen_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary(
        "vla-loadgen",
        "VLA_LOADGEN_BIN",
        "build it with `cargo build -p vla-e2e` (scripts/test does), or set VLA_LOADGEN_BIN",
    )
}

/// A binary of this workspace: `$env_var`, or in cargo's target directory above the running
/// test binary.
fn workspace_binary(name: &str, env_var: &str, how: &'static str) -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(HarnessError::Missing {
            what: "a workspace binary",
            tried: format!("{candidates:?}"),
            how,
        })
}

impl Collector {
    /// Writes `config_yaml` to a temp file and starts the collector on it; `telemetry_port`
    /// must be the port of `service.telemetry.metrics.address` in that config.
    pub async fn start(config_yaml: &str, telemetry_port: u16) -> Result<Self, HarnessError> {
        let bin = collector_binary()?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("collector.yaml");
        std::fs::write(&config, config_yaml)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
        let telemetry_url = format!("http://127.0.0.1:{telemetry_port}");
        let process = ProcessGuard::start_ready(
            "vla-collector",
            cmd,
            dir.path().join("collector.log"),
            &format!("{telemetry_url}/ready"),
            Duration::from_secs(30),
        )
        .await?;
        Ok(Self {
            telemetry_url,
            process,
            _dir: dir,
        })
    }

    /// The collector's own metrics, parsed as `series → value` (series as written).
    pub async fn self_metrics(&self) -> Result<BTreeMap<String, f64>, HarnessError> {
        let text = reqwest::get(format!("{}/metrics", self.telemetry_url))
            .await?
            .text()
            .await?;
        Ok(parse_exposition(&text))
    }

    /// The config file's directory.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// The ports of one collector under test, each free when picked.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// OTLP gRPC.
    pub grpc: u16,
    /// OTLP HTTP.
    pub http: u16,
    /// The `prometheus` exporter's scrape endpoint.
    pub scrape: u16,
    /// The collector's own telemetry (`/ready`, `/metrics`).
    pub telemetry: u16,
}

impl Ports {
    /// Four free ports, distinct: all four are held bound until each is picked (separate
    /// [`free_port`] calls can return the same port twice).
    pub fn new() -> Self {
        let held: Vec<TcpListener> = (0..4)
            .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
            .collect();
        let port = |i: usize| {
            held.get(i)
                .and_then(|l| l.local_addr().ok())
                .map_or_else(free_port, |a| a.port())
        };
        Self {
            grpc: port(0),
            http: port(1),
            scrape: port(2),
            telemetry: port(3),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// The end-to-end pipeline: OTLP gRPC and HTTP in, batch, remote write to `write_url`
/// (external label `cluster=e2e`) and the scrape endpoint out.
pub fn pipeline_config(p: &Ports, write_url: &str, batch_timeout: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
      http: {{ endpoint: "127.0.0.1:{http}" }}
processors:
  batch: {{ timeout: {batch_timeout} }}
exporters:
  prometheusremotewrite:
    endpoint: "{write_url}"
    external_labels: {{ cluster: e2e }}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 500ms }}
  prometheus:
    endpoint: "127.0.0.1:{scrape}"
service:
  telemetry:
    metrics: {{ address: "127.0.0.1:{telemetry}" }}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [prometheusremotewrite, prometheus]
"#,
        grpc = p.grpc,
        http = p.http,
        scrape = p.scrape,
        telemetry = p.telemetry,
    )
}

/// [`pipeline_config`] with the processor `name` (its settings `section`, one line of YAML
/// such as `{ max_stale: 5m }`) first in the pipeline, before `batch`.
#[allow(clippy::panic)]
pub fn pipeline_config_with(
    p: &Ports,
    write_url: &str,
    batch_timeout: &str,
    name: &str,
    section: &str,
) -> String {
    let base = pipeline_config(p, write_url, batch_timeout);
    let out = base
        .replace(
            "processors:\n  batch:",
            &format!("processors:\n  {name}: {section}\n  batch:"),
        )
        .replace(
            "processors: [batch]",
            &format!("processors: [{name}, batch]"),
        );
    if out == base {
        panic!("pipeline_config changed shape: {name} could not be inserted");
    }
    out
}

/// `configs/collector.yaml` as shipped (its receivers, its enrichment processors, its rules),
/// on the test's ports: OTLP on `p.grpc`/`p.http`, the scrape endpoint on `p.scrape`, remote
/// write to `write_url` beside it, the batch `timeout` set to `batch_timeout`, and the
/// customer file by absolute path. `edit` may change the document (as JSON) before it is
/// rendered; the result is JSON, which is YAML.
pub fn shipped_pipeline_config(
    p: &Ports,
    write_url: &str,
    batch_timeout: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<String, HarnessError> {
    use serde_json::json;
    let mut doc = repo_yaml("configs/collector.yaml")?;
    let bad =
        |what: &str| HarnessError::Unexpected(format!("configs/collector.yaml has no {what}"));
    doc["receivers"]["otlp"]["protocols"] = json!({
        "grpc": { "endpoint": format!("127.0.0.1:{}", p.grpc) },
        "http": { "endpoint": format!("127.0.0.1:{}", p.http) },
    });
    let customers = repo_path("configs/customers.yaml");
    doc["processors"]["customer_tier"]["source"]["file"] = json!(customers);
    doc["processors"]["batch"]["timeout"] = json!(batch_timeout);
    doc["exporters"] = json!({
        "prometheus": { "endpoint": format!("127.0.0.1:{}", p.scrape) },
        "prometheusremotewrite": {
            "endpoint": write_url,
            "external_labels": { "cluster": "e2e" },
            "retry_on_failure": { "initial_interval": "50ms", "max_interval": "500ms" },
        },
    });
    let pipeline = doc["service"]["pipelines"]
        .get_mut("metrics")
        .ok_or_else(|| bad("service.pipelines.metrics"))?;
    pipeline["exporters"] = json!(["prometheusremotewrite", "prometheus"]);
    doc["service"]["telemetry"]["metrics"]["address"] = json!(format!("127.0.0.1:{}", p.telemetry));
    edit(&mut doc);
    Ok(doc.to_string())
}

/// A collector on [`pipeline_config`] remote-writing into `prom`, on fresh ports.
pub async fn collector_into(
    prom: &Prometheus,
    batch_timeout: &str,
) -> Result<(Ports, Collector), HarnessError> {
    let ports = Ports::new();
    let config = pipeline_config(&ports, &prom.write_url(), batch_timeout);
    let collector = Collector::start(&config, ports.telemetry).await?;
    Ok((ports, collector))
}

/// A Prometheus and a collector on [`pipeline_config`] remote-writing into it. A test helper:
/// a server that cannot start ends the test with its log.
#[allow(clippy::expect_used)]
pub async fn start_stack(batch_timeout: &str) -> (Prometheus, Ports, Collector) {
    let prom = Prometheus::start(&[]).await.expect("prometheus");
    let (ports, collector) = collector_into(&prom, batch_timeout)
        .await
        .expect("collector");
    (prom, ports, collector)
}

/// The API's telemetry as the end-to-end tests send it: `vla-sdk` to a collector's OTLP gRPC
/// port, as service `vla/vla-api` (so `job="vla/vla-api"`) with `instance`, exporting only when
/// flushed or shut down.
pub fn api_telemetry(
    grpc_port: u16,
    instance: &str,
) -> Result<vla_sdk::Telemetry, vla_sdk::BuildError> {
    vla_sdk::Telemetry::builder()
        .endpoint(format!("http://127.0.0.1:{grpc_port}"))
        .service_name("vla-api")
        .resource_attribute("service.namespace", "vla")
        .service_instance_id(instance)
        .export_interval(Duration::from_secs(3600))
        .build()
}

/// Parses Prometheus text exposition into `series → value`, skipping comments.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((series.to_owned(), value))
        })
        .collect()
}

/// Parses Prometheus text exposition into samples with their full label sets (`__name__`
/// included), unescaping label values.
pub fn parse_samples(text: &str) -> Result<Vec<Sample>, HarnessError> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            parse_sample_line(line).ok_or_else(|| {
                HarnessError::Unexpected(format!("unparsable exposition line: {line}"))
            })
        })
        .collect()
}

fn parse_sample_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let mut labels = BTreeMap::from([("__name__".to_owned(), line[..name_end].to_owned())]);
    let bytes = line.as_bytes();
    let mut i = name_end;
    if bytes.get(i) == Some(&b'{') {
        i += 1;
        loop {
            match bytes.get(i)? {
                b'}' => {
                    i += 1;
                    break;
                }
                b',' => i += 1,
                _ => {
                    let eq = i + line[i..].find("=\"")?;
                    let key = line[i..eq].to_owned();
                    let mut value = String::new();
                    let mut chars = line[eq + 2..].char_indices();
                    let close = loop {
                        match chars.next()? {
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            (j, '"') => break eq + 2 + j,
                            (_, c) => value.push(c),
                        }
                    };
                    labels.insert(key, value);
                    i = close + 1;
                }
            }
        }
    }
    let value = match line[i..].split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_lines() {
        let m = parse_exposition(
            "# HELP a x\n# TYPE a gauge\na{b=\"c d\"} 1.5\nc_total 3\nh_bucket{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(m.get("a{b=\"c d\"}"), Some(&1.5));
        assert_eq!(m.get("c_total"), Some(&3.0));
        assert_eq!(m.get("h_bucket{le=\"+Inf\"}"), Some(&f64::INFINITY));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn parses_samples_with_escaped_labels() {
        let got = parse_samples("# TYPE a gauge\na{b=\"c, d\",e=\"q\\\"x\\\\y\"} 1.5\nc_total 3\n")
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].labels["__name__"], "a");
        assert_eq!(got[0].labels["b"], "c, d");
        assert_eq!(got[0].labels["e"], "q\"x\\y");
        assert_eq!(got[0].value, 1.5);
        assert_eq!(got[1].labels.len(), 1);
        assert_eq!(got[1].value, 3.0);
        assert!(parse_samples("a{b=\"unterminated} 1\n").is_err());
    }
}
