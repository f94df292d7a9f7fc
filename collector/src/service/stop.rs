//! Stopping a running collector: receivers, then pipelines, then exporters, within the
//! shutdown timeout.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use vla_pipeline::error_chain;

use super::{HARD_STOP_GRACE, RunningCollector, ShutdownReport, Task};

impl RunningCollector {
    /// Stops the collector: receivers, then pipelines, then exporters, within the shutdown
    /// timeout (see the module docs).
    pub async fn shutdown(self) -> ShutdownReport {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut failures = Vec::new();
        let mut clean = true;
        self.health.begin_shutdown();

        info!(
            timeout_ms = self.shutdown_timeout.as_millis() as u64,
            "shutdown: stopping receivers"
        );
        self.stop_receivers.cancel();
        let mut receivers = self.receivers;
        let mut pipelines = self.pipelines;
        let mut exporters = self.exporters;

        clean &= join_all(&mut receivers, deadline, &mut failures, |id, r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("receiver {id}: {}", error_chain(&e))),
            Err(e) => Some(format!("receiver {id}: task ended abnormally: {e}")),
        })
        .await;
        if clean {
            info!("shutdown: receivers stopped; draining pipelines");
        }
        clean &= join_all(&mut pipelines, deadline, &mut failures, watched).await;
        if clean {
            info!("shutdown: pipelines drained; flushing exporters");
        }
        // Nothing reads the lookup tables any more; each supervisor gives its refresher a
        // second to notice, then aborts it.
        self.stop_refreshers.cancel();
        for r in self.refreshers {
            let _ = r.await;
        }
        clean &= join_all(&mut exporters, deadline, &mut failures, watched).await;

        if !clean {
            warn!(
                receivers = receivers.len(),
                pipelines = pipelines.len(),
                exporters = exporters.len(),
                "shutdown: deadline passed; exporters stop retrying and count what is still \
                 queued as dropped (reason \"shutdown\")"
            );
            self.hard_stop.cancel();
            let grace = tokio::time::Instant::now() + HARD_STOP_GRACE;
            join_all(&mut receivers, grace, &mut failures, |_, _| None).await;
            join_all(&mut pipelines, grace, &mut failures, |_, _| None).await;
            join_all(&mut exporters, grace, &mut failures, |_, _| None).await;
            for (kind, left) in [
                ("receiver", names(&receivers)),
                ("pipeline", names(&pipelines)),
                ("exporter", names(&exporters)),
            ] {
                if !left.is_empty() {
                    error!(kind, tasks = %left.join(","), "shutdown: aborting tasks that did not stop");
                    failures.push(format!("{kind}s aborted at shutdown: {}", left.join(", ")));
                }
            }
            receivers.iter().for_each(|t| t.abort.abort());
            pipelines.iter().for_each(|t| t.abort.abort());
            exporters.iter().for_each(|t| t.abort.abort());
        }
        if clean {
            info!("shutdown: exporters flushed; stopping the telemetry endpoint");
        }
        self.stop_telemetry.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.telemetry_server).await;
        let elapsed = started.elapsed();
        info!(
            clean,
            elapsed_ms = elapsed.as_millis() as u64,
            "shutdown complete"
        );
        ShutdownReport {
            clean,
            elapsed,
            failures,
        }
    }
}

/// Awaits the tasks in order until `deadline`; finished ones are removed from `tasks`.
/// Returns whether all finished in time.
async fn join_all<T>(
    tasks: &mut Vec<Task<T>>,
    deadline: tokio::time::Instant,
    failures: &mut Vec<String>,
    check: impl Fn(&str, Result<T, tokio::task::JoinError>) -> Option<String>,
) -> bool {
    while let Some(task) = tasks.first_mut() {
        match tokio::time::timeout_at(deadline, &mut task.join).await {
            Ok(result) => {
                if let Some(f) = check(&task.id, result) {
                    failures.push(f);
                }
                tasks.remove(0);
            }
            Err(_) => return false,
        }
    }
    true
}

/// The failure a watcher reported, if any.
fn watched(id: &str, r: Result<Option<String>, tokio::task::JoinError>) -> Option<String> {
    match r {
        Ok(failure) => failure,
        Err(e) => Some(format!("{id}: watcher ended abnormally: {e}")),
    }
}

fn names<T>(tasks: &[Task<T>]) -> Vec<String> {
    tasks.iter().map(|t| t.id.to_string()).collect()
}
