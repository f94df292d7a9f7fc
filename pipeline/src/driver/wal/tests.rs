use super::*;

fn config(dir: &Path, max_bytes: u64) -> WalConfig {
    WalConfig {
        directory: dir.to_owned(),
        max_bytes,
        sync: WalSync::Always,
        when_full: WalWhenFull::Block,
        max_in_memory_bytes: 1 << 20,
    }
}

fn record(lane: u32, points: u64, payload_len: usize, fill: u8) -> WalRecord {
    WalRecord {
        seq: 0,
        lane,
        samples: points * 2,
        points,
        written_unix_ms: 0,
        payload: bytes::Bytes::from(vec![fill; payload_len]),
        replayed: false,
    }
}

fn open(c: &WalConfig) -> (Arc<Wal>, SelfMetrics) {
    let t = SelfMetrics::new();
    (Wal::open(c.clone(), &t, "prw").expect("open"), t)
}

fn append(w: &Wal, records: Vec<WalRecord>) -> Appended {
    let mut records = records;
    w.append(&mut records).expect("append")
}

fn read_all(w: &Wal) -> Vec<WalRecord> {
    let mut out = Vec::new();
    loop {
        let r = w.read(1 << 20).expect("read");
        if r.is_empty() {
            return out;
        }
        out.extend(r);
    }
}

/// Polls until an append is waiting for room (the log counts its waiters).
fn wait_until_waiting(w: &Wal) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.state.lock().waiting == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no append started waiting"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_reads_in_order_and_deletes_acknowledged_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    let (w, t) = open(&c);
    // 40 records of ~4 KiB across 128 KiB segments: several segments.
    for i in 0..40u8 {
        append(&w, vec![record(u32::from(i % 3), 10, 4000, i)]);
    }
    assert!(segments(dir.path()).len() > 1);
    let got = read_all(&w);
    assert_eq!(got.len(), 40);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert_eq!(r.payload[0], i as u8);
        assert_eq!(r.lane, u32::from(i as u8 % 3));
        assert!(r.written_unix_ms > 0);
    }
    assert_eq!(w.pending_records(), 40);
    for r in &got {
        w.ack(r.seq).expect("ack");
    }
    assert_eq!(w.pending_records(), 0);
    // Only the active segment is left.
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(
        t.value(
            "vla_collector_exporter_wal_truncated_segments_total",
            &[("exporter", "prw")]
        )
        .is_some_and(|n| n > 0)
    );
}

#[test]
fn reopening_replays_what_was_not_acknowledged_and_continues_the_sequence() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    {
        let (w, _) = open(&c);
        for i in 0..10u8 {
            append(&w, vec![record(0, 1, 100, i)]);
        }
        let got = w.read(1 << 20).expect("read");
        assert_eq!(got.len(), 10);
        for r in &got[..4] {
            w.ack(r.seq).expect("ack");
        }
        w.close().expect("close");
    }
    let (w, t) = open(&c);
    let got = read_all(&w);
    assert_eq!(
        got.iter().map(|r| r.payload[0]).collect::<Vec<_>>(),
        (4..10).collect::<Vec<u8>>()
    );
    assert_eq!(
        t.value(
            "vla_collector_exporter_wal_replayed_records_total",
            &[("exporter", "prw")]
        ),
        Some(6)
    );
    append(&w, vec![record(0, 1, 100, 99)]);
    let next = w.read(1 << 20).expect("read");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, 10, "the sequence goes on after a restart");
}

#[test]
fn a_second_collector_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    let (_w, _) = open(&c);
    let err = Wal::open(c, &SelfMetrics::new(), "other").expect_err("locked");
    assert!(matches!(err, WalError::Locked(_)), "{err}");
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    {
        let (w, _) = open(&c);
        for i in 0..5u8 {
            append(&w, vec![record(0, 1, 100, i)]);
        }
    }
    let seg = segments(dir.path()).pop().expect("segment");
    let len = fs::metadata(&seg).expect("meta").len();
    // A crash in the middle of the sixth record: half of it on disk.
    let mut tail = Vec::new();
    encode(
        &mut tail,
        &WalRecord {
            seq: 5,
            ..record(0, 1, 100, 5)
        },
    );
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&tail[..tail.len() / 2]).expect("write");
    drop(f);
    let (w, t) = open(&c);
    assert_eq!(fs::metadata(&seg).expect("meta").len(), len, "cut back");
    assert_eq!(read_all(&w).len(), 5);
    assert_eq!(
        t.value(
            "vla_collector_exporter_wal_corrupt_total",
            &[("exporter", "prw"), ("kind", "torn")]
        ),
        Some(1)
    );
}

#[test]
fn a_damaged_segment_is_quarantined_and_its_intact_records_replayed() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    {
        let (w, _) = open(&c);
        for i in 0..6u8 {
            append(&w, vec![record(0, 1, 100, i)]);
        }
    }
    let seg = segments(dir.path()).pop().expect("segment");
    let mut bytes = fs::read(&seg).expect("read");
    // Flip a byte in the payload of the third record.
    let rec = HEADER + BODY_FIXED + 100;
    bytes[HEADER + 2 * rec + HEADER + BODY_FIXED + 10] ^= 0xff;
    fs::write(&seg, &bytes).expect("write");
    let (w, t) = open(&c);
    let got: Vec<u8> = read_all(&w).iter().map(|r| r.payload[0]).collect();
    assert_eq!(got, vec![0, 1, 3, 4, 5], "only the damaged record is lost");
    assert_eq!(
        t.value(
            "vla_collector_exporter_wal_corrupt_total",
            &[("exporter", "prw"), ("kind", "corrupt")]
        ),
        Some(1)
    );
    let q: Vec<_> = fs::read_dir(dir.path().join("quarantine"))
        .expect("quarantine")
        .collect();
    assert_eq!(q.len(), 1, "the original is kept for inspection");
    // A segment whose header is garbage is quarantined whole and does not stop the start.
    drop(w);
    let bad = dir.path().join(segment_name(1000));
    fs::write(&bad, b"garbage, not a segment").expect("write");
    let (w, _) = open(&c);
    assert_eq!(read_all(&w).len(), 5);
    assert!(!bad.exists());
}

#[test]
fn drop_oldest_drops_unread_records_and_counts_them_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = config(dir.path(), 1 << 20);
    c.when_full = WalWhenFull::DropOldest;
    c.sync = WalSync::Never;
    let (w, _) = open(&c);
    let mut dropped = Appended::default();
    let mut written = 0u64;
    let mut in_flight = Vec::new();
    for i in 0..600u32 {
        if i == 100 {
            // Records read back and still being sent pin nothing: their segment may go.
            in_flight = w.read(20_000).expect("read");
        }
        let a = append(&w, vec![record(0, 3, 4000, (i % 250) as u8)]);
        written += a.records;
        dropped.dropped_records += a.dropped_records;
        dropped.dropped_points += a.dropped_points;
        assert!(w.state.lock().bytes <= c.max_bytes, "never over max_bytes");
    }
    assert_eq!(written, 600);
    assert!(dropped.dropped_records > 0);
    assert_eq!(dropped.dropped_points, dropped.dropped_records * 3);
    assert!(!in_flight.is_empty());
    let left = read_all(&w);
    assert_eq!(
        left.len() as u64 + in_flight.len() as u64 + dropped.dropped_records,
        600
    );
    // What is left ends with the newest data, in order.
    assert_eq!(left.last().map(|r| r.seq), Some(599));
    assert!(left.windows(2).all(|p| p[1].seq > p[0].seq));
    // The records that were being sent kept their segment: a crash now still finds them.
    drop(w);
    let (w, _) = open(&c);
    let replayed: Vec<u64> = read_all(&w).iter().map(|r| r.seq).collect();
    for r in &in_flight {
        assert!(replayed.contains(&r.seq), "in-flight {} lost", r.seq);
    }
}

#[test]
fn a_full_log_whose_records_are_all_acknowledged_takes_a_large_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    let (w, _) = open(&c);
    append(&w, vec![record(0, 1, 600_000, 1)]);
    for r in read_all(&w) {
        w.ack(r.seq).expect("ack");
    }
    // Only the (acknowledged) active segment is left; the next record does not fit beside
    // it, and must not wait for ever.
    let writer = {
        let w = w.clone();
        std::thread::spawn(move || w.append(&mut [record(0, 1, 600_000, 2)]))
    };
    let done = writer.join().expect("writer").expect("append");
    assert_eq!(done.records, 1);
    assert_eq!(read_all(&w).len(), 1);
}

#[test]
fn block_waits_for_room_until_records_are_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = config(dir.path(), 1 << 20);
    let (w, _) = open(&c);
    let mut n = 0;
    while w.state.lock().bytes + 5000 <= c.max_bytes {
        append(&w, vec![record(0, 1, 4000, 0)]);
        n += 1;
    }
    let writer = {
        let w = w.clone();
        std::thread::spawn(move || append(&w, vec![record(0, 1, 4000, 7)]))
    };
    wait_until_waiting(&w);
    assert!(!writer.is_finished(), "the append waits for room");
    for r in read_all(&w) {
        w.ack(r.seq).expect("ack");
    }
    let a = writer.join().expect("writer");
    assert_eq!(a.records, 1);
    let last = read_all(&w);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, n);
    // Close wakes a waiting append with an error.
    while w.state.lock().bytes + 5000 <= c.max_bytes {
        append(&w, vec![record(0, 1, 4000, 0)]);
    }
    let writer = {
        let w = w.clone();
        std::thread::spawn(move || w.append(&mut [record(0, 1, 4000, 7)]))
    };
    wait_until_waiting(&w);
    w.close().expect("close");
    assert!(matches!(
        writer.join().expect("writer"),
        Err(AppendError {
            error: WalError::Closed,
            ..
        })
    ));
}
