//! The background refreshers: the file poll and the PostgreSQL query loop. Both stop as soon
//! as the shutdown token is cancelled, never panic, and keep the last good table on failure.

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::postgres::PgSource;
use super::table::{self, RawRow};
use super::{Shared, TierError};

/// What identifies a version of the file cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// What the poll remembers between checks.
#[derive(Debug, Clone)]
pub(crate) struct FileState {
    /// The version last looked at (`None` after a read failure, so it is read again).
    seen: Option<Stamp>,
    /// The content hash of that version.
    seen_hash: u64,
    /// The content hash of the table in use.
    good_hash: u64,
}

fn content_hash(bytes: &[u8]) -> u64 {
    foldhash::quality::FixedState::default().hash_one(bytes)
}

fn read(path: &Path) -> Result<(Stamp, Vec<u8>), TierError> {
    let read_error = |source| TierError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let stamp = Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    };
    let bytes = std::fs::read(path).map_err(read_error)?;
    Ok((stamp, bytes))
}

/// Reads and parses the file for the first time.
pub(crate) fn load_file(path: &Path) -> Result<(Vec<RawRow>, FileState), TierError> {
    let (stamp, bytes) = read(path)?;
    let rows = table::parse_file(path, &bytes)?;
    let hash = content_hash(&bytes);
    let state = FileState {
        seen: Some(stamp),
        seen_hash: hash,
        good_hash: hash,
    };
    Ok((rows, state))
}

/// The result of one check of the file.
enum Poll {
    /// Same size and modification time.
    Unchanged,
    /// Touched, but the content is the table in use.
    SameAsGood(Stamp),
    /// Touched, but the content is the invalid version already reported.
    SameAsSeen(Stamp),
    /// A new, valid version.
    Loaded(Vec<RawRow>, Stamp, u64),
    /// A new, invalid version.
    Invalid(TierError, Stamp, u64),
    /// The file could not be read.
    Unreadable(TierError),
}

fn poll(path: &Path, state: &FileState) -> Poll {
    let stamp = match std::fs::metadata(path) {
        Ok(meta) => Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        },
        Err(source) => {
            return Poll::Unreadable(TierError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if state.seen == Some(stamp) {
        return Poll::Unchanged;
    }
    // The stamp was taken before reading: a write racing with the read shows up as a new
    // stamp at the next check.
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(source) => {
            return Poll::Unreadable(TierError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let hash = content_hash(&bytes);
    if hash == state.good_hash {
        return Poll::SameAsGood(stamp);
    }
    if state.seen.is_some() && hash == state.seen_hash {
        return Poll::SameAsSeen(stamp);
    }
    match table::parse_file(path, &bytes) {
        Ok(rows) => Poll::Loaded(rows, stamp, hash),
        Err(e) => Poll::Invalid(e, stamp, hash),
    }
}

/// Checks the file every `interval` until `shutdown`.
pub(crate) async fn file_loop(
    shared: Arc<Shared>,
    path: PathBuf,
    interval: Duration,
    mut state: FileState,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (p, s) = (path.clone(), state.clone());
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::task::spawn_blocking(move || poll(&p, &s)) => r,
        };
        let polled = polled.unwrap_or_else(|e| {
            Poll::Unreadable(TierError::Parse {
                path: path.clone(),
                line: None,
                message: format!("the file check failed: {e}"),
            })
        });
        match polled {
            Poll::Unchanged => {}
            Poll::SameAsGood(stamp) => {
                state.seen = Some(stamp);
                state.seen_hash = state.good_hash;
                if failing {
                    let entries = shared.table.load().len();
                    shared.status.success(entries as u64);
                    shared.refreshes_ok.inc();
                    shared.recovered(&mut failing, entries);
                }
            }
            Poll::SameAsSeen(stamp) => state.seen = Some(stamp),
            Poll::Loaded(rows, stamp, hash) => {
                let entries = shared.install(rows);
                state = FileState {
                    seen: Some(stamp),
                    seen_hash: hash,
                    good_hash: hash,
                };
                shared.recovered(&mut failing, entries);
            }
            Poll::Invalid(e, stamp, hash) => {
                state.seen = Some(stamp);
                state.seen_hash = hash;
                shared.failed(&e, &mut failing);
            }
            Poll::Unreadable(e) => {
                state.seen = None;
                shared.failed(&e, &mut failing);
            }
        }
    }
}

/// Runs the query at once, then every `refresh_interval`, until `shutdown`.
pub(crate) async fn postgres_loop(shared: Arc<Shared>, pg: PgSource, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pg.load() => r,
        };
        match result {
            Ok(rows) => {
                let entries = shared.install(rows);
                shared.recovered(&mut failing, entries);
            }
            Err(e) => shared.failed(&e, &mut failing),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pg.refresh_interval) => {}
        }
    }
}
