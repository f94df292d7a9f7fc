//! The background refreshers: the file poll and the PostgreSQL query loop. Both stop as soon
//! as the shutdown token is cancelled, never panic, and keep the last good table on failure.
//! Until a table has loaded once they try every `min(interval, 1s)` rather than every
//! `interval`, so a source that comes up just after the collector is picked up quickly.

use std::hash::BuildHasher;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::postgres::PgSource;
use super::table::{self, RawRow};
use super::{Shared, TierError};

/// The longest wait between attempts before the first good load: the points pass untouched
/// until then, so a database or file that appears just after start-up should not cost a whole
/// `refresh_interval`/`reload_interval` of untiered data.
pub(crate) const FIRST_LOAD_RETRY: Duration = Duration::from_secs(1);

/// The wait before the next attempt: `interval`, or at most [`FIRST_LOAD_RETRY`] until a
/// table has loaded.
fn next_wait(interval: Duration, loaded: bool) -> Duration {
    if loaded {
        interval
    } else {
        interval.min(FIRST_LOAD_RETRY)
    }
}

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

    /// The error for an optional file (`required: false`) that does not exist yet.
    pub(crate) fn missing_error(&self) -> TierError {
        TierError::Missing {
            path: self.path.clone(),
            cwd: self.cwd.clone(),
        }
    }

    /// The file's stamp, taken before its content is read.
    fn stamp(&self) -> Result<Stamp, std::io::Error> {
        std::fs::metadata(&self.path).map(|meta| Stamp::of(&meta))
    }

    fn read(&self) -> Result<(Stamp, Vec<u8>), TierError> {
        let stamp = self.stamp().map_err(|e| self.read_error(e))?;
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
    /// The content hash of the table in use (`None` before the first good load).
    good_hash: Option<u64>,
}

impl FileState {
    /// The state of an optional file that did not exist at start-up: nothing seen, no table.
    pub(crate) fn missing() -> Self {
        Self {
            seen: None,
            seen_hash: 0,
            good_hash: None,
        }
    }
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
        good_hash: Some(hash),
    };
    Ok((rows, state))
}

/// The result of one check of the file.
enum Poll {
    /// The same stamp (size, modification and status-change times, inode, device): not read.
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
        // An optional file that has not appeared yet keeps its own message.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && state.good_hash.is_none() => {
            return Poll::Unreadable(file.missing_error());
        }
        Err(e) => return Poll::Unreadable(file.read_error(e)),
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
    if Some(hash) == state.good_hash {
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

/// Counts a check of the source when dropped, after its outcome is applied.
struct Counted<'a>(&'a Shared);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.checks.inc();
    }
}

/// Checks the file every `interval` (more often until a table has loaded) until `shutdown`.
pub(crate) async fn file_loop(
    shared: Arc<Shared>,
    file: CustomerFile,
    interval: Duration,
    mut state: FileState,
    shutdown: CancellationToken,
) {
    // Without a table the file was missing at start-up, which `CustomerTier::new` has
    // reported (and warned about) already: the streak is on.
    let mut failing = state.good_hash.is_none();
    loop {
        let wait = next_wait(interval, state.good_hash.is_some());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
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
        // Counted after its outcome is applied, so whoever waits on the count sees it.
        let _counted = Counted(&shared);
        match polled {
            Poll::Unchanged => {}
            Poll::SameAsGood(stamp) => {
                state.seen = Some(stamp);
                state.seen_hash = state.good_hash.unwrap_or_default();
                if failing {
                    let entries = shared.still_good();
                    shared.recovered(&mut failing, entries);
                }
            }
            Poll::SameAsSeen(stamp) => state.seen = Some(stamp),
            Poll::Loaded(rows, stamp, hash) => {
                let entries = shared.install(rows);
                state = FileState {
                    seen: Some(stamp),
                    seen_hash: hash,
                    good_hash: Some(hash),
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

/// Runs the query at once, then every `refresh_interval` (more often until a table has
/// loaded), until `shutdown`.
pub(crate) async fn postgres_loop(shared: Arc<Shared>, pg: PgSource, shutdown: CancellationToken) {
    let mut failing = false;
    let mut loaded = false;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pg.load() => r,
        };
        match result {
            Ok(rows) => {
                loaded = true;
                let entries = shared.install(rows);
                shared.recovered(&mut failing, entries);
            }
            Err(e) => shared.failed(&e, &mut failing),
        }
        shared.checks.inc();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next_wait(pg.refresh_interval, loaded)) => {}
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
            good_hash: Some(*hash),
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
    fn waits_at_most_a_second_until_the_first_load() {
        let cases = [
            (Duration::from_secs(30), false, Duration::from_secs(1)),
            (
                Duration::from_millis(200),
                false,
                Duration::from_millis(200),
            ),
            (Duration::from_secs(30), true, Duration::from_secs(30)),
            (Duration::from_millis(200), true, Duration::from_millis(200)),
        ];
        for (interval, loaded, want) in cases {
            assert_eq!(next_wait(interval, loaded), want, "{interval:?} {loaded}");
        }
    }

    #[test]
    fn a_missing_optional_file_says_so_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.csv");
        let f = file(path.clone());
        let state = FileState::missing();
        let Poll::Unreadable(err) = poll(&f, &state) else {
            panic!("a missing file must be unreadable")
        };
        assert_eq!(
            err.to_string(),
            format!(
                "customer file {} not found; customers get no tier until it appears",
                path.display()
            )
        );
        let mut relative = file(PathBuf::from("configs/customers.yaml"));
        relative.cwd = Some(PathBuf::from("/x"));
        assert_eq!(
            relative.missing_error().to_string(),
            "customer file configs/customers.yaml not found (relative to the working directory \
             /x); customers get no tier until it appears"
        );
        std::fs::write(&path, "customer_id,tier\nc1,pro\n").unwrap();
        assert_eq!(loaded_tiers(poll(&f, &state)), vec!["pro"]);
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
