//! The background refreshers: the file poll and the PostgreSQL query loop. Both stop as soon
//! as the shutdown token is cancelled, never panic, and keep the last good table on failure.

use std::hash::BuildHasher;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::postgres::PgSource;
use super::table::{self, RawRow};
use super::{Shared, TierError};

/// The customer file and where its path came from, for errors.
#[derive(Debug, Clone)]
pub(crate) struct CustomerFile {
    /// The path as configured.
    pub(crate) path: PathBuf,
    /// The YAML path of the setting: `processors.<id>.source.file`.
    pub(crate) setting: String,
    /// The working directory when the component was built (a relative path's base).
    pub(crate) cwd: Option<PathBuf>,
}

impl CustomerFile {
    fn read_error(&self, source: std::io::Error) -> TierError {
        TierError::Read {
            path: self.path.clone(),
            setting: self.setting.clone(),
            cwd: self.cwd.clone(),
            source,
        }
    }

    /// The file's stamp, taken before its content is read.
    fn stamp(&self) -> Result<Stamp, TierError> {
        std::fs::metadata(&self.path)
            .map(|meta| Stamp::of(&meta))
            .map_err(|e| self.read_error(e))
    }

    fn read(&self) -> Result<(Stamp, Vec<u8>), TierError> {
        let stamp = self.stamp()?;
        let bytes = std::fs::read(&self.path).map_err(|e| self.read_error(e))?;
        Ok((stamp, bytes))
    }
}

/// What identifies a version of the file cheaply. Besides size and modification time (which
/// `cp -p`, `rsync -a` and a same-length edit within one timestamp tick leave equal) it holds
/// the inode and device (a rename or a new file changes them) and the status-change time
/// (which every write and every `touch -d`/`utimes` moves, and no user can set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
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

/// Reads and parses the file for the first time.
pub(crate) fn load_file(file: &CustomerFile) -> Result<(Vec<RawRow>, FileState), TierError> {
    let (stamp, bytes) = file.read()?;
    let rows = table::parse_file(&file.path, &bytes)?;
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

fn poll(file: &CustomerFile, state: &FileState) -> Poll {
    let stamp = match file.stamp() {
        Ok(stamp) => stamp,
        Err(e) => return Poll::Unreadable(e),
    };
    if state.seen == Some(stamp) {
        return Poll::Unchanged;
    }
    // The stamp was taken before reading: a write racing with the read shows up as a new
    // stamp at the next check.
    let bytes = match std::fs::read(&file.path) {
        Ok(b) => b,
        Err(e) => return Poll::Unreadable(file.read_error(e)),
    };
    let hash = content_hash(&bytes);
    if hash == state.good_hash {
        return Poll::SameAsGood(stamp);
    }
    if state.seen.is_some() && hash == state.seen_hash {
        return Poll::SameAsSeen(stamp);
    }
    match table::parse_file(&file.path, &bytes) {
        Ok(rows) => Poll::Loaded(rows, stamp, hash),
        Err(e) => Poll::Invalid(e, stamp, hash),
    }
}

/// Checks the file every `interval` until `shutdown`.
pub(crate) async fn file_loop(
    shared: Arc<Shared>,
    file: CustomerFile,
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
        let (f, s) = (file.clone(), state.clone());
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::task::spawn_blocking(move || poll(&f, &s)) => r,
        };
        let polled = polled.unwrap_or_else(|e| {
            Poll::Unreadable(TierError::Parse {
                path: file.path.clone(),
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
                    let entries = shared.table.load().as_ref().map_or(0, |t| t.len());
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn file(path: PathBuf) -> CustomerFile {
        CustomerFile {
            path,
            setting: "processors.customer_tier.source.file".into(),
            cwd: None,
        }
    }

    fn loaded_tiers(polled: Poll) -> Vec<String> {
        match polled {
            Poll::Loaded(rows, ..) => rows.into_iter().map(|r| r.tier).collect(),
            Poll::Unchanged => panic!("the change was not seen"),
            _ => panic!("expected a new valid version"),
        }
    }

    #[test]
    fn same_length_and_mtime_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.csv");
        std::fs::write(&path, "customer_id,tier\nc1,pro\n").unwrap();
        let f = file(path.clone());
        let (_, state) = load_file(&f).unwrap();
        let original = std::fs::metadata(&path).unwrap();
        let (mtime, len) = (original.modified().unwrap(), original.len());
        assert!(matches!(poll(&f, &state), Poll::Unchanged));

        // `rsync -a`: a new file of the same length and mtime renamed over the old one.
        let tmp = dir.path().join("customers.tmp");
        std::fs::write(&tmp, "customer_id,tier\nc1,ent\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.modified().unwrap(), meta.len()), (mtime, len));
        let polled = poll(&f, &state);
        let Poll::Loaded(_, stamp, hash) = &polled else {
            panic!("the renamed file was not seen")
        };
        let state = FileState {
            seen: Some(*stamp),
            seen_hash: *hash,
            good_hash: *hash,
        };
        assert_eq!(loaded_tiers(polled), vec!["ent"]);

        // `cp -p` onto the file: same inode, length and mtime; only the ctime moves. Wait
        // out the coarse timestamp clock so the ctime differs.
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(&path, "customer_id,tier\nc1,biz\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.modified().unwrap(), meta.len()), (mtime, len));
        assert_eq!(loaded_tiers(poll(&f, &state)), vec!["biz"]);
    }

    #[test]
    fn read_errors_name_the_setting_and_the_base_once() {
        let mut f = file(PathBuf::from("configs/missing-customers.yaml"));
        f.cwd = Some(PathBuf::from("/srv/vla"));
        let err = load_file(&f).err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot read customer file configs/missing-customers.yaml \
             (processors.customer_tier.source.file, relative to the working directory /srv/vla)"
        );
        let chain = vla_pipeline::error_chain(&err);
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        let f = file(PathBuf::from("/nonexistent/customers.yaml"));
        assert_eq!(
            load_file(&f).err().unwrap().to_string(),
            "cannot read customer file /nonexistent/customers.yaml \
             (processors.customer_tier.source.file)"
        );
    }
}
