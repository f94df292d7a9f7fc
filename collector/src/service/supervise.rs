//! Watching the background tasks: lookup refreshers and component tasks whose early end
//! is a failure shown on `/ready`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;
use vla_pipeline::ComponentId;

use super::Task;
use crate::health::{ComponentState, Health};

/// How long a lookup refresher gets to stop once asked.
const REFRESHER_STOP_GRACE: Duration = Duration::from_secs(1);

/// Watches a lookup refresher. It should run until `stop`; ending earlier (or panicking) is a
/// bug that freezes the table, so it is logged and shown on `/ready` as the source failing.
/// Once `stop` is cancelled the refresher gets [`REFRESHER_STOP_GRACE`], then is aborted.
pub(super) fn supervise_refresher(
    id: ComponentId,
    status: vla_pipeline::lookup::SourceStatus,
    mut task: JoinHandle<()>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ended = tokio::select! {
            r = &mut task => r,
            _ = stop.cancelled() => {
                if tokio::time::timeout(REFRESHER_STOP_GRACE, &mut task).await.is_err() {
                    task.abort();
                }
                return;
            }
        };
        if stop.is_cancelled() {
            return; // it ended because it was asked to
        }
        let why = match ended {
            Ok(()) => "the refresher stopped".to_owned(),
            Err(e) => format!("the refresher failed: {e}"),
        };
        error!(processor = %id, "{why}; the lookup table is no longer refreshed");
        status.failure(format!("{why}; the table is no longer refreshed"));
    })
}

/// Records a component task's end in the health state, even when it panics: `Stopped` on a
/// normal end, `Failed` (and the collector-wide `failed` token cancelled) on a failure.
pub(super) struct StateGuard {
    pub(super) health: Arc<Health>,
    pub(super) failed: CancellationToken,
    pub(super) kind: &'static str,
    pub(super) id: Arc<str>,
}

impl StateGuard {
    pub(super) fn fail(&self) {
        self.health.set(self.kind, &self.id, ComponentState::Failed);
        self.failed.cancel();
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        let failed =
            self.health.readiness().components.iter().any(|c| {
                c.kind == self.kind && *c.id == *self.id && c.state == ComponentState::Failed
            });
        if std::thread::panicking() {
            self.fail();
        } else if !failed {
            self.health
                .set(self.kind, &self.id, ComponentState::Stopped);
        }
    }
}

/// Watches a task spawned elsewhere (the exporter driver, a pipeline) for the health state;
/// aborting the returned task's `abort` handle aborts the watched task itself.
pub(super) fn watch(
    join: JoinHandle<()>,
    health: &Arc<Health>,
    failed: &CancellationToken,
    kind: &'static str,
    id: Arc<str>,
) -> Task<Option<String>> {
    let abort = join.abort_handle();
    let guard = StateGuard {
        health: health.clone(),
        failed: failed.clone(),
        kind,
        id: id.clone(),
    };
    let watcher = tokio::spawn(async move {
        match join.await {
            Ok(()) => None,
            Err(e) if e.is_cancelled() => None,
            Err(e) => {
                error!(kind, id = %guard.id, error = %e, "task ended abnormally");
                guard.fail();
                Some(format!("{kind} {}: task ended abnormally: {e}", guard.id))
            }
        }
    });
    Task {
        id,
        join: watcher,
        abort,
    }
}
