//! Where `deltatocumulative` keeps its streams across restarts: a snapshot of every stream,
//! written to a temporary file, fsynced and renamed on an interval and at shutdown, plus a
//! journal of the streams each batch changed since (one CRC'd record per batch, written
//! without fsync: it survives the collector's crash or `kill -9`, and a host crash loses at
//! most one snapshot interval).
//!
//! Files, in `storage.directory`: `<processor id>.<pipeline>.snapshot` and `.journal` (ids
//! with `/` and other non-name characters are escaped), the journal locked while the
//! collector runs so two collectors cannot share it. Both start with [`MAGIC`]; every stream
//! is a fixed little-endian record carrying its identity hash, so a restore re-keys nothing.
//!
//! A restore reads the snapshot, then replays the journal: a torn last record (a crash while
//! writing) is skipped and logged; a file that fails its checksum is renamed `*.corrupt` and
//! what it held is lost (logged, counted), never a crash loop.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hashbrown::HashMap;

use super::state::{Acc, Buckets, Exp, Hist, Stream};
use crate::identity::Key;

/// The first bytes of both files; the last byte is the format version.
pub(super) const MAGIC: &[u8; 8] = b"VLAD2C\0\x01";

/// The streams, by identity.
pub(super) type Streams = HashMap<Key, Stream>;

/// What a restore found.
#[derive(Debug, Default)]
pub(super) struct Restored {
    /// Streams read from the snapshot and the journal.
    pub streams: Streams,
    /// Journal records replayed.
    pub records: u64,
    /// Files renamed `*.corrupt`.
    pub corrupt: Vec<PathBuf>,
    /// Whether the journal ended in a torn record.
    pub torn: bool,
}

/// The open files of one processor instance.
#[derive(Debug)]
pub(super) struct Storage {
    snapshot: PathBuf,
    journal_path: PathBuf,
    journal: File,
    buf: Vec<u8>,
}

/// Escapes a component id or pipeline name into a file-name part: letters, digits, `-` and
/// `_` stay, every other byte becomes `%XX`.
pub(super) fn file_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Storage {
    /// Opens (creating) the directory and the files of `id` in `pipeline`, locks the journal
    /// and restores what they hold.
    pub fn open(dir: &Path, id: &str, pipeline: &str) -> io::Result<(Self, Restored)> {
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
        let base = format!("{}.{}", file_part(id), file_part(pipeline));
        let snapshot = dir.join(format!("{base}.snapshot"));
        let journal_path = dir.join(format!("{base}.journal"));
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&journal_path)
            .map_err(|e| with_path(e, &journal_path))?;
        match journal.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(format!(
                    "{} is in use by another collector (or another pipeline of this one); \
                     give each its own storage.directory",
                    journal_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(with_path(e, &journal_path)),
        }
        let mut restored = Restored::default();
        match read_snapshot(&snapshot) {
            Ok(streams) => restored.streams = streams,
            Err(Corrupt(why)) => {
                tracing::warn!(file = %snapshot.display(), "deltatocumulative snapshot is corrupt ({why}); renamed *.corrupt, its streams start over");
                restored.corrupt.push(quarantine(&snapshot)?);
            }
        }
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(|e| with_path(e, &journal_path))?;
        match replay(&bytes, &mut restored) {
            Ok(()) => {}
            Err(Corrupt(why)) => {
                tracing::warn!(file = %journal_path.display(), "deltatocumulative journal is corrupt ({why}); kept the records before it, renamed the file *.corrupt");
                let copy = corrupt_path(&journal_path);
                std::fs::write(&copy, &bytes).map_err(|e| with_path(e, &copy))?;
                restored.corrupt.push(copy);
            }
        }
        if restored.torn {
            tracing::info!(file = %journal_path.display(), "deltatocumulative journal ended in a torn record (a crash while writing); skipped it");
        }
        Ok((
            Self {
                snapshot,
                journal_path,
                journal,
                buf: Vec::new(),
            },
            restored,
        ))
    }

    /// Appends one journal record with the current state of `keys` (streams no longer held
    /// are skipped).
    pub fn append<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a Key>,
        streams: &Streams,
    ) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 8]);
        for key in keys {
            if let Some(s) = streams.get(key) {
                encode(&mut self.buf, *key, s);
            }
        }
        let payload = self.buf.len() - 8;
        if payload == 0 {
            return Ok(());
        }
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[..4].copy_from_slice(&(payload as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        if self.journal.metadata()?.len() == 0 {
            self.journal.write_all(MAGIC)?;
        }
        self.journal.write_all(&self.buf)
    }

    /// Writes every stream to a new snapshot (temporary file, fsync, rename, fsync of the
    /// directory), then empties the journal.
    pub fn snapshot(&mut self, streams: &Streams) -> io::Result<()> {
        let mut buf = Vec::with_capacity(16 + streams.len() * 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(streams.len() as u64).to_le_bytes());
        for (key, s) in streams {
            encode(&mut buf, *key, s);
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.snapshot.with_extension("snapshot.tmp");
        {
            let mut f = File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
            f.write_all(&buf).map_err(|e| with_path(e, &tmp))?;
            f.sync_all().map_err(|e| with_path(e, &tmp))?;
        }
        std::fs::rename(&tmp, &self.snapshot).map_err(|e| with_path(e, &self.snapshot))?;
        if let Some(dir) = self.snapshot.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.journal
            .set_len(0)
            .map_err(|e| with_path(e, &self.journal_path))
    }
}

/// Why a file cannot be read.
#[derive(Debug)]
pub(super) struct Corrupt(pub String);

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn corrupt_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    PathBuf::from(name)
}

fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let to = corrupt_path(path);
    std::fs::rename(path, &to).map_err(|e| with_path(e, path))?;
    Ok(to)
}

/// Reads a snapshot; a missing file is an empty one.
fn read_snapshot(path: &Path) -> Result<Streams, Corrupt> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Streams::new()),
        Err(e) => return Err(Corrupt(format!("cannot read: {e}"))),
    };
    decode_snapshot(&bytes)
}

/// Decodes a snapshot file's bytes.
pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<Streams, Corrupt> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..8] != MAGIC {
        return Err(Corrupt("not a snapshot of this version".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(Corrupt("checksum mismatch".into()));
    }
    let mut r = Reader(&body[8..]);
    let n = r.u64().ok_or_else(|| Corrupt("truncated header".into()))?;
    let mut streams = Streams::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let (key, s) = decode(&mut r).ok_or_else(|| Corrupt("truncated stream".into()))?;
        streams.insert(key, s);
    }
    if !r.0.is_empty() {
        return Err(Corrupt("bytes after the last stream".into()));
    }
    Ok(streams)
}

/// Replays journal bytes into `restored`, record by record.
pub(super) fn replay(bytes: &[u8], restored: &mut Restored) -> Result<(), Corrupt> {
    if bytes.is_empty() {
        return Ok(());
    }
    if bytes.len() < MAGIC.len() {
        restored.torn = true;
        return Ok(());
    }
    if &bytes[..8] != MAGIC {
        return Err(Corrupt("not a journal of this version".into()));
    }
    let mut rest = &bytes[8..];
    while !rest.is_empty() {
        if rest.len() < 8 {
            restored.torn = true;
            return Ok(());
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(8..8 + len) else {
            restored.torn = true;
            return Ok(());
        };
        if crc32fast::hash(payload) != crc {
            // The last record may have been cut mid-write and the file extended later only by
            // a crash; anything after a bad record is not trusted either way.
            return Err(Corrupt(format!(
                "checksum mismatch in record {}",
                restored.records + 1
            )));
        }
        let mut r = Reader(payload);
        while !r.0.is_empty() {
            let (key, s) = decode(&mut r)
                .ok_or_else(|| Corrupt(format!("bad stream in record {}", restored.records + 1)))?;
            restored.streams.insert(key, s);
        }
        restored.records += 1;
        rest = &rest[8 + len..];
    }
    Ok(())
}

const INT: u8 = 1;
const DOUBLE: u8 = 2;
const HIST: u8 = 3;
const EXP: u8 = 4;

/// Appends one stream's record.
pub(super) fn encode(out: &mut Vec<u8>, key: Key, s: &Stream) {
    out.extend_from_slice(&key.to_le_bytes());
    for v in [s.start, s.last, s.seen] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match &s.acc {
        Acc::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Acc::Double(d) => {
            out.push(DOUBLE);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Acc::Hist(h) => {
            out.push(HIST);
            summary(out, h.count, h.sum, h.min, h.max);
            out.extend_from_slice(&h.bounds.to_le_bytes());
            counts(out, &h.buckets);
        }
        Acc::Exp(e) => {
            out.push(EXP);
            summary(out, e.count, e.sum, e.min, e.max);
            out.extend_from_slice(&e.scale.to_le_bytes());
            out.extend_from_slice(&e.zero_count.to_le_bytes());
            out.extend_from_slice(&e.zero_threshold.to_bits().to_le_bytes());
            for b in [&e.positive, &e.negative] {
                out.extend_from_slice(&b.offset.to_le_bytes());
                counts(out, &b.counts);
            }
        }
    }
}

fn summary(out: &mut Vec<u8>, count: u64, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
    out.extend_from_slice(&count.to_le_bytes());
    let flags =
        u8::from(sum.is_some()) | u8::from(min.is_some()) << 1 | u8::from(max.is_some()) << 2;
    out.push(flags);
    for v in [sum, min, max] {
        out.extend_from_slice(&v.unwrap_or(0.0).to_bits().to_le_bytes());
    }
}

fn counts(out: &mut Vec<u8>, counts: &[u64]) {
    out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

/// Reads one stream's record.
pub(super) fn decode(r: &mut Reader<'_>) -> Option<(Key, Stream)> {
    let key = u128::from_le_bytes(r.take()?);
    let (start, last, seen) = (r.u64()?, r.u64()?, r.u64()?);
    let acc = match r.u8()? {
        INT => Acc::Int(i64::from_le_bytes(r.take()?)),
        DOUBLE => Acc::Double(f64::from_bits(r.u64()?)),
        HIST => {
            let (count, sum, min, max) = r.summary()?;
            let bounds = r.u64()?;
            Acc::Hist(Box::new(Hist {
                count,
                sum,
                min,
                max,
                buckets: r.counts()?,
                bounds,
            }))
        }
        EXP => {
            let (count, sum, min, max) = r.summary()?;
            let scale = i32::from_le_bytes(r.take()?);
            let zero_count = r.u64()?;
            let zero_threshold = f64::from_bits(r.u64()?);
            let mut sides = [Buckets::default(), Buckets::default()];
            for side in &mut sides {
                side.offset = i32::from_le_bytes(r.take()?);
                side.counts = r.counts()?;
            }
            let [positive, negative] = sides;
            Acc::Exp(Box::new(Exp {
                count,
                sum,
                min,
                max,
                scale,
                zero_count,
                zero_threshold,
                positive,
                negative,
            }))
        }
        _ => return None,
    };
    Some((
        key,
        Stream {
            start,
            last,
            seen,
            acc,
        },
    ))
}

/// A histogram's count, sum, min and max.
type Summary = (u64, Option<f64>, Option<f64>, Option<f64>);

/// A cursor over record bytes.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take()?))
    }

    fn summary(&mut self) -> Option<Summary> {
        let count = self.u64()?;
        let flags = self.u8()?;
        let mut vals = [None; 3];
        for (i, v) in vals.iter_mut().enumerate() {
            let x = f64::from_bits(self.u64()?);
            *v = (flags & (1 << i) != 0).then_some(x);
        }
        Some((count, vals[0], vals[1], vals[2]))
    }

    fn counts(&mut self) -> Option<Vec<u64>> {
        let n = u32::from_le_bytes(self.take()?) as usize;
        if n > self.0.len() / 8 {
            return None;
        }
        (0..n).map(|_| self.u64()).collect()
    }
}
