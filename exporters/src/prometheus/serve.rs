//! Rendering the registry as text exposition, and the `GET /metrics` route.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use tokio::time::Instant;
use vla_pipeline::SeriesKey;
use vla_pipeline::self_metrics::exposition;

use super::registry::Registry;

pub(super) struct Shared {
    pub(super) registry: Mutex<Registry>,
    pub(super) expiration: Duration,
}

/// A scrape's view of one series, taken under the lock and rendered outside it.
struct Row {
    key: Arc<SeriesKey>,
    family: Arc<str>,
    rank: u8,
    bound: f64,
    value: f64,
}

impl Shared {
    pub(super) fn render(&self) -> String {
        let (mut rows, families) = {
            let mut reg = self.registry.lock();
            reg.sweep(Instant::now(), self.expiration);
            let rows: Vec<Row> = reg
                .series
                .iter()
                .map(|e| Row {
                    key: e.key.clone(),
                    family: e.family.clone(),
                    rank: e.rank,
                    bound: e.bound,
                    value: e.value,
                })
                .collect();
            (rows, reg.families.clone())
        };
        rows.sort_by(|a, b| {
            a.family
                .cmp(&b.family)
                .then_with(|| shared_labels(a).cmp(shared_labels(b)))
                .then(a.rank.cmp(&b.rank))
                .then(a.bound.total_cmp(&b.bound))
        });
        let mut out = String::with_capacity(rows.len() * 96);
        let mut last: Option<&str> = None;
        for row in &rows {
            if last != Some(&*row.family) {
                let meta = families.get(&row.family);
                if let Some(help) = meta.map(|m| &*m.help).filter(|h| !h.is_empty()) {
                    out.push_str("# HELP ");
                    out.push_str(&row.family);
                    out.push(' ');
                    exposition::push_help(&mut out, help);
                    out.push('\n');
                }
                let ty = meta.map_or("untyped", |m| m.ty.as_str());
                let _ = writeln!(out, "# TYPE {} {ty}", row.family);
                last = Some(&row.family);
            }
            out.push_str(row.key.name());
            exposition::push_labels(&mut out, row.key.labels().iter().map(|(n, v)| (&**n, &**v)));
            out.push(' ');
            exposition::push_value(&mut out, row.value);
            out.push('\n');
        }
        out
    }
}

/// A row's labels without `le` / `quantile`: what the lines of one histogram share.
fn shared_labels(r: &Row) -> impl Iterator<Item = (&str, &str)> {
    r.key
        .labels()
        .iter()
        .filter(|(n, _)| !matches!(&**n, "le" | "quantile"))
        .map(|(n, v)| (&**n, &**v))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

pub(super) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared)
}
