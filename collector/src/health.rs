//! The telemetry endpoint (`service.telemetry.metrics.address`): the collector's own metrics
//! and its health.
//!
//! - `GET /health`: liveness, `200 ok` while the process serves HTTP at all.
//! - `GET /ready`: `200` when every receiver, pipeline and exporter task is running and the
//!   collector is not shutting down, else `503`; the JSON body lists each component's state:
//!   `{"status":"ready","components":[{"kind":"receiver","id":"otlp","state":"running"}, ...]}`.
//!   Components with a lookup source refreshed in the background (`customer_tier`'s table,
//!   `nvml`'s GPUs) add `"source":{"source":"postgres db:5432/billing","status":"failing",
//!   "entries":120,"consecutive_failures":3,"last_error":"..."...}`. A failing source does not
//!   make the collector unready: the component keeps serving its last good snapshot, and
//!   taking every collector out of service because a database is down would lose data.
//! - `GET /metrics`: the self-metrics in the Prometheus text format 0.0.4 (see
//!   [`vla_pipeline::SelfMetrics`]) plus `vla_collector_uptime_seconds`,
//!   `vla_collector_build_info{version}` and `vla_collector_process_resident_memory_bytes`
//!   (from `/proc/self/status`, when there is one).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde::Serialize;
use vla_pipeline::SelfMetrics;
use vla_pipeline::driver::WalHealth;
use vla_pipeline::lookup::{SourceReport, SourceStatus};

/// The state of one component task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Serving / processing.
    Running,
    /// Finished (after shutdown began, or its input closed).
    Stopped,
    /// Ended with an error.
    Failed,
}

/// One component's entry in `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// `receiver`, `processor` (one with a lookup source), `pipeline` or `exporter`.
    pub kind: &'static str,
    /// The component id or pipeline name.
    pub id: String,
    /// Its state.
    pub state: ComponentState,
    /// Its lookup source's health, for components that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceReport>,
    /// Why its write-ahead log cannot be written, while it cannot (the collector is then
    /// not ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_error: Option<String>,
}

/// The body of `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `ready`, `shutting_down` or `not_ready`.
    pub status: &'static str,
    /// Every component task.
    pub components: Vec<ComponentStatus>,
}

/// The shared health state: component task states and the shutting-down flag.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<Vec<ComponentStatus>>,
    sources: Mutex<Vec<(&'static str, String, SourceStatus)>>,
    wals: Mutex<Vec<(String, WalHealth)>>,
    shutting_down: AtomicBool,
}

impl Health {
    /// Records (or updates) a component's state.
    pub fn set(&self, kind: &'static str, id: &str, state: ComponentState) {
        let mut components = self.components.lock();
        match components.iter_mut().find(|c| c.kind == kind && c.id == id) {
            Some(c) => c.state = state,
            None => components.push(ComponentStatus {
                kind,
                id: id.to_owned(),
                state,
                source: None,
                wal_error: None,
            }),
        }
    }

    /// Shows `status` in the `/ready` entry of the component `kind`/`id`.
    pub fn attach_source(&self, kind: &'static str, id: &str, status: SourceStatus) {
        self.sources.lock().push((kind, id.to_owned(), status));
    }

    /// Makes `/ready` report exporter `id` not ready while its write-ahead log cannot be
    /// written.
    pub fn attach_wal(&self, id: &str, wal: WalHealth) {
        self.wals.lock().push((id.to_owned(), wal));
    }

    /// Marks the collector as shutting down (`/ready` answers 503 from now on).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The readiness verdict and the component list.
    pub fn readiness(&self) -> Readiness {
        let mut components = self.components.lock().clone();
        for (kind, id, status) in self.sources.lock().iter() {
            if let Some(c) = components
                .iter_mut()
                .find(|c| c.kind == *kind && c.id == *id)
            {
                c.source = Some(status.report());
            }
        }
        let mut wal_failing = false;
        for (id, wal) in self.wals.lock().iter() {
            if let Some(error) = wal.error()
                && let Some(c) = components
                    .iter_mut()
                    .find(|c| c.kind == "exporter" && c.id == *id)
            {
                c.wal_error = Some(error);
                wal_failing = true;
            }
        }
        let status = if self.shutting_down.load(Ordering::Relaxed) {
            "shutting_down"
        } else if !wal_failing
            && !components.is_empty()
            && components
                .iter()
                .all(|c| c.state == ComponentState::Running)
        {
            "ready"
        } else {
            "not_ready"
        };
        Readiness { status, components }
    }
}

/// What the telemetry endpoint serves from.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The self-metrics registry.
    pub telemetry: SelfMetrics,
    /// Component states.
    pub health: Arc<Health>,
    /// When the collector started.
    pub started: Instant,
}

/// The telemetry endpoint's routes (tests call it without a network).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(s): State<AppState>) -> Response {
    let r = s.health.readiness();
    let code = if r.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&s),
    )
        .into_response()
}

/// The registry's series plus the process-level ones.
pub fn render_metrics(s: &AppState) -> String {
    let mut out = s.telemetry.render();
    let _ = writeln!(
        out,
        "# HELP vla_collector_uptime_seconds Seconds since the collector started.\n\
         # TYPE vla_collector_uptime_seconds gauge\n\
         vla_collector_uptime_seconds {:.3}",
        s.started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP vla_collector_build_info The collector's version; always 1.\n\
         # TYPE vla_collector_build_info gauge\n\
         vla_collector_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(rss) = resident_memory_bytes() {
        let _ = writeln!(
            out,
            "# HELP vla_collector_process_resident_memory_bytes Resident set size of the \
             collector process.\n\
             # TYPE vla_collector_process_resident_memory_bytes gauge\n\
             vla_collector_process_resident_memory_bytes {rss}"
        );
    }
    out
}

/// `VmRSS` from `/proc/self/status` (Linux), in bytes.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let state = AppState {
            telemetry: SelfMetrics::new(),
            health: Arc::new(Health::default()),
            started: Instant::now(),
        };
        state.telemetry.counter("x_total", "X.", &[]).add(3);
        let app = app(state.clone());
        assert_eq!(
            get(app.clone(), "/health").await,
            (StatusCode::OK, "ok".into())
        );
        // Nothing registered yet: not ready.
        assert_eq!(
            get(app.clone(), "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state
            .health
            .set("receiver", "otlp", ComponentState::Running);
        state
            .health
            .set("pipeline", "metrics", ComponentState::Running);
        let (code, body) = get(app.clone(), "/ready").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"ready","components":[{"kind":"receiver","id":"otlp","state":"running"},{"kind":"pipeline","id":"metrics","state":"running"}]}"#
        );
        let tier = SourceStatus::new("file customers.yaml");
        state
            .health
            .set("processor", "customer_tier", ComponentState::Running);
        state
            .health
            .attach_source("processor", "customer_tier", tier.clone());
        tier.success(2);
        tier.failure("customers.yaml:3: missing tier");
        let (code, body) = get(app.clone(), "/ready").await;
        assert_eq!(
            code,
            StatusCode::OK,
            "a failing source keeps the collector ready"
        );
        assert!(
            body.contains(
                r#""source":{"source":"file customers.yaml","status":"failing","entries":2,"#
            ),
            "{body}"
        );
        assert!(
            body.contains(r#""consecutive_failures":1,"failures_total":1,"last_error":"customers.yaml:3: missing tier"}"#),
            "{body}"
        );
        state.health.set("receiver", "otlp", ComponentState::Failed);
        let (code, body) = get(app.clone(), "/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""status":"not_ready""#), "{body}");
        state
            .health
            .set("receiver", "otlp", ComponentState::Running);
        // A write-ahead log that cannot be written makes the collector not ready, with why.
        let wal = vla_pipeline::driver::WalHealth::default();
        state
            .health
            .set("exporter", "prometheusremotewrite", ComponentState::Running);
        state
            .health
            .attach_wal("prometheusremotewrite", wal.clone());
        assert_eq!(get(app.clone(), "/ready").await.0, StatusCode::OK);
        wal.report(Some(
            "write-ahead log /wal: appending a record: No space left on device".into(),
        ));
        let (code, body) = get(app.clone(), "/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains(
                r#""wal_error":"write-ahead log /wal: appending a record: No space left on device""#
            ),
            "{body}"
        );
        wal.report(None);
        assert_eq!(get(app.clone(), "/ready").await.0, StatusCode::OK);
        state.health.begin_shutdown();
        let (code, body) = get(app.clone(), "/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""status":"shutting_down""#), "{body}");
        let (code, text) = get(app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(text.contains("x_total 3\n"), "{text}");
        assert!(
            text.contains(
                "# TYPE vla_collector_uptime_seconds gauge\nvla_collector_uptime_seconds "
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "vla_collector_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        if std::path::Path::new("/proc/self/status").exists() {
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("vla_collector_process_resident_memory_bytes "))
                .expect("rss line");
            assert!(rss.parse::<u64>().unwrap() > 1024 * 1024, "{rss}");
        }
    }
}
