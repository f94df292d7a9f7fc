//! The write-ahead log of one exporter: prepared requests on disk until the backend has
//! acknowledged them.
//!
//! Layout of `directory`:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, named by the sequence number of their first record,
//!   each starting with an 8-byte magic. A record is `len: u32 | crc32(body): u32 | body`, the
//!   body `seq: u64 | lane: u32 | samples: u64 | points: u64 | written_unix_ms: i64 | payload`
//!   (all little-endian), the payload being exactly what the exporter sends (remote write:
//!   the snappy-compressed `WriteRequest`), so a replay never translates again.
//! - `acked`: the acknowledgement watermark (`seq: u64 | crc32: u32`): every record below it
//!   was acknowledged. Written at most every [`WATERMARK_EVERY`] and at close; losing it only
//!   means records are sent again (the backend keeps one copy of an identical sample).
//! - `lock`: held (advisory lock) while a collector uses the directory.
//! - `quarantine/`: segments that failed their checks, kept for inspection, never replayed
//!   twice and never a reason to stop.
//!
//! On open every segment is checked record by record. A torn last record (a crash in the
//! middle of a write) is cut off and logged. A bad record elsewhere quarantines the segment:
//! its good records are rewritten into a fresh segment of the same name and the original is
//! moved to `quarantine/`, so what can be read is replayed and the collector starts.
//!
//! Appends go to the newest segment; records are read back in sequence order by one reader
//! (the driver's feeder), which hands them to the lanes; a segment is deleted once every
//! record in it was acknowledged (sent, or refused by the backend for good).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

use crate::self_metrics::{Counter, SelfMetrics};

const MAGIC: &[u8; 8] = b"VLAWAL1\n";
const HEADER: usize = 8;
const BODY_FIXED: usize = 8 + 4 + 8 + 8 + 8;
/// The acknowledgement watermark is written at most this often (and at close).
pub const WATERMARK_EVERY: Duration = Duration::from_millis(100);
/// Longest record accepted when reading (a length above it is corruption).
const MAX_RECORD: usize = 256 << 20;
/// Most bytes read back in one go.
const READ_CHUNK: u64 = 1 << 20;

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// `fdatasync` after every batch, before the clients are answered.
    Always,
    /// `fdatasync` of what was written, at this interval.
    Interval(Duration),
    /// Left to the operating system.
    Never,
}

/// What an append does when the log holds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalWhenFull {
    /// Wait for the backend to acknowledge records (the pipeline slows down and the
    /// receivers answer retryable codes).
    #[default]
    Block,
    /// Drop the oldest segment none of whose records was read back yet (records being
    /// sent keep theirs), counted exactly.
    DropOldest,
}

/// Settings of one exporter's write-ahead log.
#[derive(Debug, Clone, PartialEq)]
pub struct WalConfig {
    /// Where the segments live (one directory per exporter).
    pub directory: PathBuf,
    /// Cap on the bytes of all segments.
    pub max_bytes: u64,
    /// When appends reach the disk.
    pub sync: WalSync,
    /// What happens when the cap is reached.
    pub when_full: WalWhenFull,
    /// Most bytes of records read back into memory and not yet acknowledged (the read-ahead
    /// the lanes send from): the backlog stays on disk.
    pub max_in_memory_bytes: u64,
}

impl WalConfig {
    /// The size at which a segment is closed and a new one started.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(64 << 10, 64 << 20)
    }
}

/// A record as the driver sees it.
#[derive(Debug, Clone)]
pub struct WalRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The lane it is sent in.
    pub lane: u32,
    /// Samples in it.
    pub samples: u64,
    /// Data points it carries.
    pub points: u64,
    /// When it was appended.
    pub written_unix_ms: i64,
    /// What is sent.
    pub payload: bytes::Bytes,
    /// Read back after a restart (written by an earlier run): the backend may already have
    /// it, if the run ended between the backend's answer and the next watermark.
    pub replayed: bool,
}

impl WalRecord {
    /// Bytes it takes in a segment.
    pub fn stored_len(&self) -> u64 {
        (HEADER + BODY_FIXED + self.payload.len()) as u64
    }
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A filesystem operation failed.
    #[error("write-ahead log {path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "write-ahead log {0}: the directory is in use by another collector (its lock file is held); give each collector its own directory"
    )]
    Locked(PathBuf),
    /// The log was closed (shutdown) while an append waited for room.
    #[error("write-ahead log closed")]
    Closed,
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Bytes written (the file's length).
    end: u64,
    records: u64,
    points: u64,
    /// Sequence number of its last record, if any.
    last_seq: Option<u64>,
    /// Append time of its first record.
    first_written_ms: Option<i64>,
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// Index into `segments`.
    segment: usize,
    offset: u64,
    /// Records and points of `segment` already read.
    records_read: u64,
    points_read: u64,
}

impl Cursor {
    fn start(segment: usize) -> Self {
        Self {
            segment,
            offset: HEADER as u64,
            records_read: 0,
            points_read: 0,
        }
    }
}

struct State {
    segments: VecDeque<Segment>,
    /// The newest segment's file, for appends.
    active: Option<Arc<File>>,
    next_seq: u64,
    bytes: u64,
    cursor: Cursor,
    /// Read back and not yet acknowledged: sequence number → append time (the first entry
    /// is the watermark and the oldest unsent record).
    in_flight: BTreeMap<u64, i64>,
    /// Sequence number of the next record the reader will see (records below it are read,
    /// dropped or acknowledged).
    read_seq: u64,
    watermark_written: u64,
    watermark_at: std::time::Instant,
    /// Written since the last sync.
    dirty: bool,
    closed: bool,
    /// Records below this sequence number were written before this start (replayed).
    replay_below: u64,
    /// Append time of the last record read.
    last_read_written_ms: Option<i64>,
    /// Appends waiting for room.
    waiting: usize,
    /// Points of records found unreadable at run time, not yet reported.
    lost_points: u64,
}

/// Counters of the log.
struct Metrics {
    replayed: Counter,
    truncated: Counter,
    torn: Counter,
    corrupt: Counter,
}

/// What an append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Records written.
    pub records: u64,
    /// Points dropped from the oldest records to make room (`drop_oldest`).
    pub dropped_points: u64,
    /// Records dropped to make room.
    pub dropped_records: u64,
}

/// An append that failed part-way.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AppendError {
    /// What was appended before the error.
    pub done: Appended,
    /// The error.
    #[source]
    pub error: WalError,
}

/// One exporter's write-ahead log.
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    state: Mutex<State>,
    /// Signalled when bytes are freed, or the log is closed.
    room: Condvar,
    /// Signalled when records are appended, or the log is closed.
    data: tokio::sync::Notify,
    metrics: Metrics,
    /// The held lock file (released when the log is dropped).
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// Encodes one record, appending to `out`.
fn encode(out: &mut Vec<u8>, r: &WalRecord) {
    let body_len = BODY_FIXED + r.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.lane.to_le_bytes());
    out.extend_from_slice(&r.samples.to_le_bytes());
    out.extend_from_slice(&r.points.to_le_bytes());
    out.extend_from_slice(&r.written_unix_ms.to_le_bytes());
    out.extend_from_slice(&r.payload);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

/// Decodes the record at the start of `buf`: the record and its stored length, or `None` when
/// the bytes there are not a whole, intact record.
fn decode(buf: &[u8]) -> Option<(WalRecord, usize)> {
    if buf.len() < HEADER + BODY_FIXED {
        return None;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().ok()?) as usize;
    if !(BODY_FIXED..=MAX_RECORD).contains(&len) || buf.len() < HEADER + len {
        return None;
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let body = &buf[HEADER..HEADER + len];
    if crc32fast::hash(body) != crc {
        return None;
    }
    let record = WalRecord {
        seq: le_u64(&body[0..]),
        lane: u32::from_le_bytes(body[8..12].try_into().ok()?),
        samples: le_u64(&body[12..]),
        points: le_u64(&body[20..]),
        written_unix_ms: le_u64(&body[28..]) as i64,
        payload: bytes::Bytes::copy_from_slice(&body[BODY_FIXED..]),
        replayed: false,
    };
    Some((record, HEADER + len))
}

/// What the check of one segment found.
struct Scan {
    records: Vec<(WalRecord, u64)>,
    /// Bytes of intact records from the start (the offset of the first problem, if any).
    good_prefix: u64,
    /// Whether anything after `good_prefix` was bad.
    damaged: bool,
    /// Whether intact records were found after a bad stretch.
    resynced: bool,
}

/// Reads every intact record of a segment's bytes; after a bad stretch, looks for the next
/// intact record with a higher sequence number.
fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = HEADER;
    let mut good_prefix = None;
    let mut resynced = false;
    let mut last_seq = None::<u64>;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Some((r, n)) if last_seq.is_none_or(|l| r.seq > l) => {
                last_seq = Some(r.seq);
                if good_prefix.is_some() {
                    resynced = true;
                }
                records.push((r, at as u64));
                at += n;
            }
            _ => {
                good_prefix.get_or_insert(at as u64);
                at += 1;
            }
        }
    }
    Scan {
        records,
        damaged: good_prefix.is_some(),
        good_prefix: good_prefix.unwrap_or(bytes.len() as u64),
        resynced,
    }
}

fn read_watermark(path: &Path) -> u64 {
    let Ok(b) = fs::read(path) else { return 0 };
    if b.len() != 12 || crc32fast::hash(&b[..8]).to_le_bytes() != b[8..12] {
        return 0;
    }
    le_u64(&b)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "syncing the directory"))
}

impl Wal {
    /// Opens (or creates) the log in `config.directory`: checks every segment, cuts a torn
    /// tail, quarantines damaged segments, and positions the reader on the first record not
    /// yet acknowledged.
    pub fn open(
        config: WalConfig,
        telemetry: &SelfMetrics,
        exporter: &str,
    ) -> Result<Arc<Wal>, WalError> {
        let dir = config.directory.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir, "creating the directory"))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "opening the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(WalError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "locking")(e));
            }
        }
        let labels = [("exporter", exporter)];
        let counter = |name, help, extra: Option<(&str, &str)>| {
            let mut l = labels.to_vec();
            l.extend(extra);
            telemetry.counter(name, help, &l)
        };
        let corrupt_help = "Write-ahead log records found damaged at start-up, by kind (torn: a \
                            record cut short by a crash, cut off; corrupt: a segment that \
                            failed its checks, quarantined).";
        let metrics = Metrics {
            replayed: counter(
                "vla_collector_exporter_wal_replayed_records_total",
                "Records found in the write-ahead log at start-up and read back for sending.",
                None,
            ),
            truncated: counter(
                "vla_collector_exporter_wal_truncated_segments_total",
                "Write-ahead log segments deleted once all their records were acknowledged.",
                None,
            ),
            torn: counter(
                "vla_collector_exporter_wal_corrupt_total",
                corrupt_help,
                Some(("kind", "torn")),
            ),
            corrupt: counter(
                "vla_collector_exporter_wal_corrupt_total",
                corrupt_help,
                Some(("kind", "corrupt")),
            ),
        };
        let watermark = read_watermark(&dir.join("acked"));
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(io_err(&dir, "listing"))?
            .filter_map(|e| {
                let path = e.ok()?.path();
                let stem = path.file_name()?.to_str()?.strip_suffix(".seg")?;
                Some((stem.parse().ok()?, path))
            })
            .collect();
        names.sort();
        let mut segments = VecDeque::new();
        let mut bytes_total = 0u64;
        let mut next_seq = watermark;
        let mut unacked = 0u64;
        let count = names.len();
        for (i, (_, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let data = fs::read(&path).map_err(io_err(&path, "reading a segment"))?;
            if data.len() < HEADER || &data[..HEADER] != MAGIC {
                if last && data.len() < HEADER && MAGIC.starts_with(&data) {
                    // Created, magic not fully written: nothing in it.
                    fs::remove_file(&path).map_err(io_err(&path, "removing an empty segment"))?;
                    continue;
                }
                quarantine(&dir, &path)?;
                metrics.corrupt.inc();
                error!(segment = %path.display(), "write-ahead log segment has no valid header; quarantined, not replayed");
                continue;
            }
            let s = scan(&data);
            let mut end = data.len() as u64;
            if s.damaged {
                if last && !s.resynced {
                    // A crash mid-write: cut the torn record off.
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path, "opening a segment"))?;
                    f.set_len(s.good_prefix)
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(&path, "cutting a torn record"))?;
                    end = s.good_prefix;
                    metrics.torn.inc();
                    warn!(
                        segment = %path.display(),
                        offset = s.good_prefix,
                        bytes = data.len() as u64 - s.good_prefix,
                        "write-ahead log ends in a torn record (a crash mid-write); it was cut off, the records before it are replayed"
                    );
                } else {
                    // Damage elsewhere: keep what is intact, quarantine the original.
                    let mut fresh = MAGIC.to_vec();
                    for (r, _) in &s.records {
                        encode(&mut fresh, r);
                    }
                    let q = quarantine(&dir, &path)?;
                    write_file(&path, &fresh)?;
                    end = fresh.len() as u64;
                    metrics.corrupt.inc();
                    error!(
                        segment = %path.display(),
                        quarantined = %q.display(),
                        records_kept = s.records.len(),
                        "write-ahead log segment is damaged; its intact records are replayed and the original is quarantined"
                    );
                }
            }
            let live: Vec<&WalRecord> = s
                .records
                .iter()
                .map(|(r, _)| r)
                .filter(|r| r.seq >= watermark)
                .collect();
            if let Some((r, _)) = s.records.last() {
                next_seq = next_seq.max(r.seq + 1);
            }
            if live.is_empty() {
                fs::remove_file(&path)
                    .map_err(io_err(&path, "removing an acknowledged segment"))?;
                continue;
            }
            unacked += live.len() as u64;
            // Records below the watermark at the start of the first live segment are read
            // past by the cursor; they still count in the segment's totals.
            segments.push_back(Segment {
                path,
                end,
                records: s.records.len() as u64,
                points: s.records.iter().map(|(r, _)| r.points).sum(),
                last_seq: s.records.last().map(|(r, _)| r.seq),
                first_written_ms: s.records.first().map(|(r, _)| r.written_unix_ms),
            });
            bytes_total += end;
        }
        // The reader starts at the first record not acknowledged.
        let mut cursor = Cursor::start(0);
        if let Some(first) = segments.front() {
            let data = fs::read(&first.path).map_err(io_err(&first.path, "reading a segment"))?;
            for (r, at) in scan(&data).records {
                if r.seq >= watermark {
                    cursor.offset = at;
                    break;
                }
                cursor.records_read += 1;
                cursor.points_read += r.points;
            }
        }
        if unacked > 0 {
            info!(
                directory = %dir.display(),
                records = unacked,
                bytes = bytes_total,
                "write-ahead log holds unsent records; they are sent before new data"
            );
        }
        let wal = Wal {
            dir,
            state: Mutex::new(State {
                segments,
                active: None,
                next_seq,
                bytes: bytes_total,
                cursor,
                in_flight: BTreeMap::new(),
                read_seq: watermark,
                watermark_written: watermark,
                watermark_at: std::time::Instant::now(),
                dirty: false,
                closed: false,
                replay_below: next_seq,
                last_read_written_ms: None,
                waiting: 0,
                lost_points: 0,
            }),
            config,
            room: Condvar::new(),
            data: tokio::sync::Notify::new(),
            metrics,
            _lock: lock,
        };
        let wal = Arc::new(wal);
        wal.register_gauges(telemetry, exporter);
        Ok(wal)
    }

    fn register_gauges(self: &Arc<Self>, telemetry: &SelfMetrics, exporter: &str) {
        let labels = [("exporter", exporter)];
        let w = Arc::downgrade(self);
        telemetry.gauge_fn(
            "vla_collector_exporter_wal_bytes",
            "Bytes of the write-ahead log's segments on disk.",
            &labels,
            move || w.upgrade().map_or(0, |w| w.state.lock().bytes as i64),
        );
        let max = self.config.max_bytes as i64;
        telemetry.gauge_fn(
            "vla_collector_exporter_wal_max_bytes",
            "The write-ahead log's cap on disk (max_bytes).",
            &labels,
            move || max,
        );
        let w = Arc::downgrade(self);
        telemetry.gauge_fn(
            "vla_collector_exporter_wal_records",
            "Records in the write-ahead log not yet acknowledged by the backend.",
            &labels,
            move || w.upgrade().map_or(0, |w| w.pending_records() as i64),
        );
        let w = Arc::downgrade(self);
        telemetry.gauge_fn(
            "vla_collector_exporter_wal_oldest_unsent_age_seconds",
            "Age of the oldest record in the write-ahead log not yet acknowledged (0 when empty).",
            &labels,
            move || {
                w.upgrade()
                    .and_then(|w| w.oldest_unsent_ms())
                    .map_or(0, |t| (now_ms() - t).max(0) / 1000)
            },
        );
    }

    /// The log's settings.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// Records not yet acknowledged (in flight, or still on disk unread).
    pub fn pending_records(&self) -> u64 {
        let s = self.state.lock();
        let unread: u64 = s
            .segments
            .iter()
            .enumerate()
            .skip(s.cursor.segment)
            .map(|(i, seg)| {
                if i == s.cursor.segment {
                    seg.records - s.cursor.records_read
                } else {
                    seg.records
                }
            })
            .sum();
        unread + s.in_flight.len() as u64
    }

    /// Append time of the oldest record not yet acknowledged (for an unread one inside a
    /// segment, the time of the record read before it: close, never older).
    fn oldest_unsent_ms(&self) -> Option<i64> {
        let s = self.state.lock();
        if let Some((_, t)) = s.in_flight.first_key_value() {
            return Some(*t);
        }
        let seg = s.segments.get(s.cursor.segment)?;
        if s.cursor.offset >= seg.end && s.cursor.segment + 1 >= s.segments.len() {
            return None;
        }
        if s.cursor.records_read == 0 || s.cursor.offset >= seg.end {
            let next = if s.cursor.offset >= seg.end {
                s.segments.get(s.cursor.segment + 1)?
            } else {
                seg
            };
            next.first_written_ms
        } else {
            s.last_read_written_ms
        }
    }

    /// Appends `records` (their `seq` and `written_unix_ms` are assigned here), waiting for
    /// room or dropping the oldest unread records per `when_full`, and syncs per `sync`.
    /// On an error, the first `done.records` records were written. Blocking: call it from a
    /// blocking thread.
    pub fn append(&self, records: &mut [WalRecord]) -> Result<Appended, AppendError> {
        let mut done = Appended::default();
        self.append_into(records, &mut done)
            .map(|()| done)
            .map_err(|error| AppendError { done, error })
    }

    fn append_into(&self, records: &mut [WalRecord], done: &mut Appended) -> Result<(), WalError> {
        let mut buf = Vec::new();
        let mut to_sync: Option<Arc<File>> = None;
        let now = now_ms();
        for r in records.iter_mut() {
            let need = r.stored_len();
            let mut s = self.state.lock();
            loop {
                if s.closed {
                    return Err(WalError::Closed);
                }
                // A record larger than the whole cap is let through alone, into an empty log.
                if s.bytes + need <= self.config.max_bytes || s.bytes == 0 {
                    break;
                }
                // An active segment whose records are all acknowledged only waits for its
                // deletion: seal it so `truncate` may delete it.
                if self.seal_if_done(&mut s)? {
                    continue;
                }
                if self.config.when_full == WalWhenFull::DropOldest
                    && let Some((records, points)) = self.drop_oldest_unread(&mut s)?
                {
                    done.dropped_records += records;
                    done.dropped_points += points;
                    continue;
                }
                s.waiting += 1;
                self.room.wait(&mut s);
                s.waiting -= 1;
            }
            let active_full = s
                .segments
                .back()
                .is_some_and(|seg| seg.end + need > self.config.segment_bytes() && seg.records > 0);
            if s.active.is_none() || active_full {
                if let Some(old) = s.active.take()
                    && self.config.sync != WalSync::Never
                {
                    old.sync_data()
                        .map_err(io_err(&self.dir, "syncing a full segment"))?;
                }
                let first_seq = s.next_seq;
                let path = self.dir.join(segment_name(first_seq));
                let mut f = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path, "creating a segment"))?;
                if let Err(e) = f.write_all(MAGIC) {
                    drop(f);
                    let _ = fs::remove_file(&path);
                    return Err(io_err(&path, "writing a segment header")(e));
                }
                if self.config.sync == WalSync::Always {
                    sync_dir(&self.dir)?;
                }
                s.active = Some(Arc::new(f));
                s.bytes += HEADER as u64;
                s.segments.push_back(Segment {
                    path,
                    end: HEADER as u64,
                    records: 0,
                    points: 0,
                    last_seq: None,
                    first_written_ms: None,
                });
            }
            r.seq = s.next_seq;
            r.written_unix_ms = now;
            buf.clear();
            encode(&mut buf, r);
            let Some(file) = s.active.clone() else {
                return Err(WalError::Closed);
            };
            if let Err(e) = (&*file).write_all(&buf) {
                // Whatever part was written is cut off when the segment is next checked;
                // start a fresh segment for what follows. A segment left with no record goes
                // (its name is the next sequence number, which the next segment needs).
                s.active = None;
                if s.segments.back().is_some_and(|seg| seg.records == 0) {
                    let last = s.segments.len() - 1;
                    if s.cursor.segment <= last {
                        if let Some(seg) = s.segments.pop_back() {
                            s.bytes = s.bytes.saturating_sub(seg.end);
                            let _ = fs::remove_file(&seg.path);
                        }
                        if s.cursor.segment > s.segments.len() {
                            s.cursor = Cursor::start(s.segments.len());
                        }
                    }
                }
                return Err(io_err(&self.dir, "appending a record")(e));
            }
            s.next_seq += 1;
            s.bytes += need;
            s.dirty = true;
            if let Some(seg) = s.segments.back_mut() {
                seg.end += need;
                seg.records += 1;
                seg.points += r.points;
                seg.last_seq = Some(r.seq);
                seg.first_written_ms.get_or_insert(now);
            }
            done.records += 1;
            to_sync = Some(file);
        }
        if let (WalSync::Always, Some(f)) = (self.config.sync, to_sync) {
            f.sync_data()
                .map_err(io_err(&self.dir, "syncing appended records"))?;
        }
        if done.records > 0 {
            self.data.notify_one();
        }
        Ok(())
    }

    /// Seals the active segment when everything in it was read and acknowledged, and
    /// deletes it (a full log with nothing left to send would otherwise wait for ever).
    /// Whether it freed anything.
    fn seal_if_done(&self, s: &mut State) -> Result<bool, WalError> {
        let done = s.active.is_some()
            && s.segments.len() == 1
            && s.in_flight.is_empty()
            && s.segments
                .front()
                .is_some_and(|seg| s.cursor.offset >= seg.end);
        if !done {
            return Ok(false);
        }
        s.active = None;
        let before = s.bytes;
        self.truncate(s)?;
        Ok(s.bytes < before)
    }

    /// Makes room for `drop_oldest`: deletes the oldest segment none of whose records was
    /// read yet (records being sent from memory keep their segment, so a crash still finds
    /// them), counting what it held; or, when the only unread records are the tail of the
    /// segment being read, skips the reader past them (their segment goes once the records
    /// before them are acknowledged). What it dropped (records, points), or `None` when
    /// nothing unread is left to drop.
    fn drop_oldest_unread(&self, s: &mut State) -> Result<Option<(u64, u64)>, WalError> {
        let c = s.cursor;
        let whole = (c.segment..s.segments.len()).find(|&j| {
            let unread_whole = j > c.segment || c.records_read == 0;
            let has_records = s.segments.get(j).is_some_and(|seg| seg.records > 0);
            unread_whole && has_records
        });
        if let Some(j) = whole {
            let Some(seg) = s.segments.get(j) else {
                return Ok(None);
            };
            let dropped = (seg.records, seg.points);
            let last_seq = seg.last_seq;
            if j + 1 == s.segments.len() {
                // The active segment: seal it, new records go to a fresh one.
                s.active = None;
            }
            fs::remove_file(&seg.path).map_err(io_err(&seg.path, "deleting a segment"))?;
            if let Some(seg) = s.segments.remove(j) {
                s.bytes = s.bytes.saturating_sub(seg.end);
            }
            if j == c.segment {
                // The reader stays at the start of what is now segment `j`.
                s.cursor = Cursor::start(j);
                if let Some(l) = last_seq {
                    s.read_seq = s.read_seq.max(l + 1);
                }
            }
            self.metrics.truncated.inc();
            self.room.notify_all();
            self.truncate(s)?;
            return Ok(Some(dropped));
        }
        // Only the tail of the segment being read is unread.
        let Some(seg) = s.segments.get(c.segment) else {
            return Ok(None);
        };
        let unread = (seg.records - c.records_read, seg.points - c.points_read);
        if unread.0 == 0 {
            return Ok(None);
        }
        let (end, last_seq) = (seg.end, seg.last_seq);
        if c.segment + 1 == s.segments.len() {
            s.active = None;
        }
        s.cursor.offset = end;
        s.cursor.records_read += unread.0;
        s.cursor.points_read += unread.1;
        if let Some(l) = last_seq {
            s.read_seq = s.read_seq.max(l + 1);
        }
        self.truncate(s)?;
        Ok(Some(unread))
    }

    /// Deletes the oldest segment (the reader is past it).
    fn delete_front(&self, s: &mut State) -> Result<(), WalError> {
        let Some(seg) = s.segments.front() else {
            return Ok(());
        };
        fs::remove_file(&seg.path).map_err(io_err(&seg.path, "deleting a segment"))?;
        let Some(seg) = s.segments.pop_front() else {
            return Ok(());
        };
        s.cursor = if s.cursor.segment > 0 {
            Cursor {
                segment: s.cursor.segment - 1,
                ..s.cursor
            }
        } else {
            Cursor::start(0)
        };
        s.bytes = s.bytes.saturating_sub(seg.end);
        self.metrics.truncated.inc();
        self.room.notify_all();
        Ok(())
    }

    /// Reads the next records (about `max_bytes` of them, at least one when there is one)
    /// in sequence order, marking them in flight; empty when there is nothing unread.
    /// Blocking.
    pub fn read(&self, max_bytes: u64) -> Result<Vec<WalRecord>, WalError> {
        let mut s = self.state.lock();
        let mut out = Vec::new();
        let mut taken = 0u64;
        while out.is_empty() || taken < max_bytes {
            let i = s.cursor.segment;
            let Some(seg) = s.segments.get(i) else { break };
            if s.cursor.offset >= seg.end {
                if i + 1 < s.segments.len() {
                    s.cursor = Cursor::start(i + 1);
                    continue;
                }
                break;
            }
            let (path, offset, end) = (seg.path.clone(), s.cursor.offset, seg.end);
            let file = File::open(&path).map_err(io_err(&path, "opening a segment to read"))?;
            let mut buf = vec![0u8; (end - offset).min(READ_CHUNK.max(max_bytes)) as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(io_err(&path, "reading a segment"))?;
            let mut at = 0usize;
            loop {
                let record = match decode(&buf[at..]) {
                    Some(r) => Some(r),
                    None if at == 0 && buf.len() >= 4 => {
                        // A record longer than the chunk: read it whole.
                        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
                        let whole = HEADER as u64 + len;
                        if whole > buf.len() as u64 && whole <= end - offset {
                            buf = vec![0u8; whole as usize];
                            file.read_exact_at(&mut buf, offset)
                                .map_err(io_err(&path, "reading a segment"))?;
                            decode(&buf)
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                let Some((mut r, n)) = record else { break };
                at += n;
                taken += n as u64;
                s.cursor.offset += n as u64;
                s.cursor.records_read += 1;
                s.cursor.points_read += r.points;
                s.read_seq = r.seq + 1;
                s.last_read_written_ms = Some(r.written_unix_ms);
                if r.seq < s.replay_below {
                    r.replayed = true;
                    self.metrics.replayed.inc();
                }
                s.in_flight.insert(r.seq, r.written_unix_ms);
                out.push(r);
                if taken >= max_bytes {
                    break;
                }
            }
            if at == 0 {
                // Every segment was checked at open and written whole since: this is damage
                // at run time. Skip the rest of the segment rather than stop sending.
                error!(segment = %path.display(), offset, "write-ahead log record unreadable at run time; the rest of the segment is skipped");
                self.metrics.corrupt.inc();
                if let Some(seg) = s.segments.get(i) {
                    let (records, points, last) = (seg.records, seg.points, seg.last_seq);
                    s.lost_points += points.saturating_sub(s.cursor.points_read);
                    s.cursor.offset = end;
                    s.cursor.records_read = records;
                    s.cursor.points_read = points;
                    s.read_seq = s.read_seq.max(last.map_or(0, |l| l + 1));
                }
            }
        }
        Ok(out)
    }

    /// Points of records found unreadable at run time since the last call (the driver
    /// counts them as dropped).
    pub fn take_lost_points(&self) -> u64 {
        std::mem::take(&mut self.state.lock().lost_points)
    }

    /// Waits until records may have been appended (or the log closed).
    pub async fn appended(&self) {
        self.data.notified().await;
    }

    /// Whether there are records not yet read back.
    pub fn has_unread(&self) -> bool {
        let s = self.state.lock();
        let i = s.cursor.segment;
        s.segments
            .get(i)
            .is_some_and(|seg| s.cursor.offset < seg.end || i + 1 < s.segments.len())
    }

    /// Marks `seq` acknowledged (delivered, or given up on for good): deletes segments that
    /// hold nothing unacknowledged any more and writes the watermark now and then.
    pub fn ack(&self, seq: u64) -> Result<(), WalError> {
        let mut s = self.state.lock();
        s.in_flight.remove(&seq);
        self.truncate(&mut s)?;
        if s.watermark_at.elapsed() >= WATERMARK_EVERY {
            self.write_watermark(&mut s)?;
        }
        Ok(())
    }

    fn watermark(s: &State) -> u64 {
        s.in_flight
            .first_key_value()
            .map_or(s.read_seq, |(seq, _)| *seq)
    }

    /// Deletes the oldest segments once they are sealed, read past and acknowledged.
    fn truncate(&self, s: &mut State) -> Result<(), WalError> {
        let w = Self::watermark(s);
        if s.waiting > 0 && s.in_flight.is_empty() {
            // A writer waits for room and everything is acknowledged: the active segment may
            // go too.
            let done = s.segments.len() == 1
                && s.segments
                    .front()
                    .is_some_and(|seg| s.cursor.offset >= seg.end);
            if done {
                s.active = None;
            }
        }
        while let Some(seg) = s.segments.front() {
            let active = s.active.is_some() && s.segments.len() == 1;
            let acknowledged = seg.last_seq.is_none_or(|l| l < w);
            let read_past = s.cursor.segment > 0 || s.cursor.offset >= seg.end;
            if active || !acknowledged || !read_past {
                break;
            }
            self.delete_front(s)?;
        }
        Ok(())
    }

    fn write_watermark(&self, s: &mut State) -> Result<(), WalError> {
        let w = Self::watermark(s);
        s.watermark_at = std::time::Instant::now();
        if w == s.watermark_written {
            return Ok(());
        }
        let mut b = w.to_le_bytes().to_vec();
        b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
        // Not synced: a watermark lost in a host crash only means records are sent again.
        let tmp = self.dir.join("acked.tmp");
        fs::write(&tmp, &b).map_err(io_err(&tmp, "writing the watermark"))?;
        let path = self.dir.join("acked");
        fs::rename(&tmp, &path).map_err(io_err(&path, "writing the watermark"))?;
        s.watermark_written = w;
        Ok(())
    }

    /// Writes the acknowledgement watermark if it moved and was last written
    /// [`WATERMARK_EVERY`] ago or more (the driver calls it on a timer, so the last
    /// acknowledgements before a quiet spell are recorded too). Blocking.
    pub fn flush_watermark(&self) -> Result<(), WalError> {
        let mut s = self.state.lock();
        if s.watermark_at.elapsed() >= WATERMARK_EVERY {
            self.write_watermark(&mut s)?;
        }
        Ok(())
    }

    /// Syncs what was appended since the last sync (the `interval` mode's timer). Blocking.
    pub fn sync(&self) -> Result<(), WalError> {
        let file = {
            let mut s = self.state.lock();
            if !s.dirty {
                return Ok(());
            }
            s.dirty = false;
            s.active.clone()
        };
        if let Some(f) = file {
            f.sync_data()
                .map_err(io_err(&self.dir, "syncing appended records"))?;
        }
        Ok(())
    }

    /// Stops appends (a waiting one returns [`WalError::Closed`]), syncs, and writes the
    /// watermark; what is unacknowledged stays for the next start. Blocking.
    pub fn close(&self) -> Result<(), WalError> {
        let file = {
            let mut s = self.state.lock();
            s.closed = true;
            self.room.notify_all();
            self.write_watermark(&mut s)?;
            s.active.clone()
        };
        self.data.notify_one();
        if let Some(f) = file {
            f.sync_data()
                .map_err(io_err(&self.dir, "syncing at close"))?;
        }
        Ok(())
    }

    /// Whether [`Wal::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let mut f = File::create(path).map_err(io_err(path, "creating"))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(io_err(path, "writing"))
}

/// Moves `path` into `dir/quarantine/`, returning where it went.
fn quarantine(dir: &Path, path: &Path) -> Result<PathBuf, WalError> {
    let qdir = dir.join("quarantine");
    fs::create_dir_all(&qdir).map_err(io_err(&qdir, "creating the quarantine directory"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = qdir.join(format!("{name}.{}", now_ms()));
    let mut n = 0;
    while target.exists() {
        n += 1;
        target = qdir.join(format!("{name}.{}.{n}", now_ms()));
    }
    fs::rename(path, &target).map_err(io_err(path, "quarantining a segment"))?;
    Ok(target)
}

#[cfg(test)]
mod tests;
