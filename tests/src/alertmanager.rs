//! A real Alertmanager (Debian `prometheus-alertmanager`) for end-to-end tests.
//!
//! [`Alertmanager::start`] writes the given `alertmanager.yml` to a temp dir and runs
//! `/usr/bin/prometheus-alertmanager` on it: web API on a free 127.0.0.1 port, clustering off
//! (`--cluster.listen-address=` empty, so no gossip port and no peer wait), silences and
//! notification log in the temp dir. It is ready when `/-/ready` answers and is killed when the
//! value is dropped. [`amtool_binary`] finds `amtool` from the same package for config checks.
//! [`Webhook`] is a receiver for a test copy of a config: an in-process HTTP server that keeps
//! every notification Alertmanager posts to it (the `webhook_configs` payload).
//!
//! ```no_run
//! # async fn f() -> Result<(), vla_e2e::HarnessError> {
//! let am = vla_e2e::alertmanager::Alertmanager::start(
//!     "route: { receiver: hook }\nreceivers: [{ name: hook }]\n",
//! )
//! .await?;
//! am.post_alerts(&serde_json::json!([{ "labels": { "alertname": "Test" } }])).await?;
//! let _held = am.alerts().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use crate::{HarnessError, ProcessGuard, find_binary, free_port};

const HOW: &str =
    "run scripts/test, which installs it, or `apt-get install -y prometheus-alertmanager`";

/// Where `amtool` is (Debian's `prometheus-alertmanager` package ships it).
pub fn amtool_binary() -> Result<PathBuf, HarnessError> {
    find_binary("amtool", &["/usr/bin/amtool"]).ok_or(HarnessError::Missing {
        what: "amtool",
        tried: "PATH and /usr/bin/amtool".into(),
        how: HOW,
    })
}

/// A running Alertmanager, killed on drop.
pub struct Alertmanager {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The process.
    pub process: ProcessGuard,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with `config_yaml` as its `alertmanager.yml` on a free port and
    /// waits until it is ready.
    pub async fn start(config_yaml: &str) -> Result<Self, HarnessError> {
        let bin = find_binary(
            "prometheus-alertmanager",
            &["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"],
        )
        .ok_or(HarnessError::Missing {
            what: "prometheus-alertmanager",
            tried: "PATH, /usr/bin/prometheus-alertmanager and /usr/bin/alertmanager".into(),
            how: HOW,
        })?;
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config_yaml)?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Empty: no cluster listener, so no second port and no wait for peers to settle.
            .arg("--cluster.listen-address=")
            .arg("--log.level=info");
        let url = format!("http://127.0.0.1:{port}");
        let process = ProcessGuard::start_ready(
            "alertmanager",
            cmd,
            dir.path().join("alertmanager.log"),
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await?;
        Ok(Self { url, process, dir })
    }

    /// The config file it runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("alertmanager.yml")
    }

    /// Posts alerts (a JSON array of `{labels, annotations, startsAt, ...}`, the
    /// `/api/v2/alerts` body) as Prometheus would.
    pub async fn post_alerts(&self, alerts: &serde_json::Value) -> Result<(), HarnessError> {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(HarnessError::Unexpected(format!(
                "POST /api/v2/alerts answered {status}: {body}"
            )));
        }
        Ok(())
    }

    /// Every alert it holds, active, silenced and inhibited alike, as `/api/v2/alerts` returns
    /// them (each with `labels` and `status.{state, inhibitedBy, silencedBy}`).
    pub async fn alerts(&self) -> Result<Vec<serde_json::Value>, HarnessError> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v2/alerts", self.url))
            .query(&[
                ("active", "true"),
                ("silenced", "true"),
                ("inhibited", "true"),
                ("unprocessed", "true"),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match body {
            serde_json::Value::Array(alerts) => Ok(alerts),
            other => Err(HarnessError::Unexpected(format!(
                "GET /api/v2/alerts: not an array: {other}"
            ))),
        }
    }
}

type Received = Arc<Mutex<Vec<Value>>>;

/// An HTTP server on 127.0.0.1 that keeps every JSON body posted to `/`; stopped on drop.
pub struct Webhook {
    url: String,
    received: Received,
    server: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Starts the server on a free port (call from a Tokio runtime).
    pub async fn start() -> Result<Self, HarnessError> {
        let received = Received::default();
        let app = Router::new()
            .route("/", post(keep))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let server = tokio::spawn(async move {
            // Ends only when aborted on drop; a failed accept loop shows as no notifications.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            received,
            server,
        })
    }

    /// The URL to put in `webhook_configs`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every notification received so far, in order of arrival.
    pub fn notifications(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `(receiver, notification status, alert)` for every alert of every notification so far.
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for n in self.notifications() {
            let receiver = n["receiver"].as_str().unwrap_or_default();
            let status = n["status"].as_str().unwrap_or_default();
            for a in n["alerts"].as_array().into_iter().flatten() {
                out.push((receiver.to_owned(), status.to_owned(), a.clone()));
            }
        }
        out
    }

    /// The receivers notified of a firing alert named `alertname` with label `service`.
    pub fn receivers_of(&self, alertname: &str, service: &str) -> BTreeSet<String> {
        self.alerts()
            .into_iter()
            .filter(|(_, _, a)| {
                a["labels"]["alertname"] == alertname
                    && a["labels"]["service"] == service
                    && a["status"] == "firing"
            })
            .map(|(receiver, _, _)| receiver)
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn keep(State(received): State<Received>, Json(body): Json<Value>) {
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(body);
}
