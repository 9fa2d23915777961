use std::time::Instant;

use super::*;
use crate::Series;

fn samples(from: i64, n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            Sample::new(
                Series::new("m", [("i", i.to_string())]),
                from + i as i64,
                i as f64 * 0.5,
            )
        })
        .collect()
}

fn options(fsync: Fsync) -> WalOptions {
    WalOptions {
        fsync,
        segment_bytes: 1 << 20,
        max_bytes: 64 << 20,
        cache_bytes: 0,
        reserve_bytes: 0,
    }
}

/// Waits (up to 5 s) until `offset` is readable.
fn readable(wal: &Wal, offset: u64) {
    let t = Instant::now();
    while wal.readable() <= offset {
        assert!(t.elapsed() < Duration::from_secs(5), "never synced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every record from `offset`, as (offset, samples) or what else was read.
fn read_all(wal: &Arc<Wal>, offset: u64) -> Vec<Result<(u64, Vec<Sample>), String>> {
    let mut r = wal.reader(offset);
    let mut out = Vec::new();
    while let Some(n) = r.next(|_, _| true) {
        out.push(match n {
            Next::Entry(o, e) => Ok((o, e.samples.clone())),
            Next::Skipped(o, _) => Err(format!("skipped {o}")),
            Next::Lost(a, b) => Err(format!("lost {a}..{b}")),
            Next::Bad(o, why) => Err(format!("bad {o}: {why}")),
        });
    }
    out
}

#[test]
fn records_read_back_from_memory_from_disk_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Vec<Sample>> = (0..20).map(|i| samples(i * 100, 50)).collect();
    for cache_bytes in [0, 64 << 20] {
        let dir = dir.path().join(cache_bytes.to_string());
        let wal = Wal::open(
            &dir,
            WalOptions {
                cache_bytes,
                // Several segments.
                segment_bytes: 4 << 10,
                ..options(Fsync::Always)
            },
        )
        .unwrap();
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(wal.append(Protocol::Grpc, None, b).unwrap(), i as u64);
        }
        readable(&wal, 19);
        let want: Vec<_> = batches
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, b)| Ok((i as u64, b)))
            .collect();
        assert_eq!(read_all(&wal, 0), want);
        assert_eq!(read_all(&wal, 7), want[7..]);
        assert!(
            std::fs::read_dir(wal.dir()).unwrap().count() > 3,
            "segments rolled"
        );
        drop(wal);
        let wal = Wal::open(&dir, options(Fsync::Always)).unwrap();
        assert_eq!(wal.end(), 20);
        assert_eq!(read_all(&wal, 0), want, "read back after a restart");
        assert_eq!(wal.append(Protocol::Grpc, None, &batches[0]).unwrap(), 20);
    }
}

#[test]
fn headers_are_read_without_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    wal.append(Protocol::Otlp, Some("acme"), &samples(1_000, 3))
        .unwrap();
    let mut r = wal.reader(0);
    let Some(Next::Skipped(0, h)) = r.next(|_, h| h.protocol == Protocol::Grpc) else {
        panic!("not skipped")
    };
    assert_eq!(
        h,
        Header {
            protocol: Protocol::Otlp,
            tenant: Some(Arc::from("acme")),
            max_ts: 1_002,
            count: 3
        }
    );
    assert!(r.next(|_, _| true).is_none(), "at the end");
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Always)).unwrap();
    for i in 0..3 {
        wal.append(Protocol::Grpc, None, &samples(i, 4)).unwrap();
    }
    readable(&wal, 2);
    drop(wal);
    let seg = dir.path().join("wal").join(segment_name(0));
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Always)).unwrap();
    assert_eq!(wal.end(), 2, "the torn record is gone");
    wal.append(Protocol::Grpc, None, &samples(9, 1)).unwrap();
    readable(&wal, 2);
    let read = read_all(&wal, 0);
    assert_eq!(read.len(), 3);
    assert_eq!(read[2], Ok((2, samples(9, 1))));
}

#[test]
fn flipped_bytes_lose_the_rest_of_their_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let small = WalOptions {
        segment_bytes: 2 << 10,
        ..options(Fsync::Always)
    };
    let wal = Wal::open(dir.path(), small.clone()).unwrap();
    for i in 0..12 {
        wal.append(Protocol::Grpc, None, &samples(i * 10, 10))
            .unwrap();
    }
    readable(&wal, 11);
    drop(wal);
    // Flip a byte in the second record of the first segment.
    let seg = dir.path().join("wal").join(segment_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let first = 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[first + 40] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let wal = Wal::open(dir.path(), small).unwrap();
    assert_eq!(wal.end(), 12, "later segments are kept");
    let read = read_all(&wal, 0);
    assert_eq!(read[0], Ok((0, samples(0, 10))));
    let Err(lost) = &read[1] else {
        panic!("{:?}", read[1])
    };
    let (from, to) = lost
        .strip_prefix("lost ")
        .unwrap()
        .split_once("..")
        .unwrap();
    assert_eq!(from, "1");
    let to: u64 = to.parse().unwrap();
    assert!(to > 1 && to < 12, "the next segment's records remain: {to}");
    assert_eq!(read.len(), 2 + (12 - to as usize));
    assert_eq!(read.last(), Some(&Ok((11, samples(110, 10)))));
}

#[test]
fn a_full_log_refuses_until_sources_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes: 4 << 10,
            max_bytes: 16 << 10,
            ..options(Fsync::Never)
        },
    )
    .unwrap();
    assert_eq!(wal.subscribe("p", "s").unwrap().offset, 0);
    let mut n = 0;
    let err = loop {
        match wal.append(Protocol::Grpc, None, &samples(n, 20)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, WalError::Full(_)), "{err}");
    assert!(n > 4);
    // The source passes everything: old segments go, there is room again.
    let at = |offset| Position {
        offset,
        max_seen: Some(1),
        durable: 5,
    };
    wal.commit("p", "s", 0, 1, at(wal.readable())).unwrap();
    assert!(wal.bytes() < 8 << 10, "{}", wal.bytes());
    wal.append(Protocol::Grpc, None, &samples(0, 20)).unwrap();
}

#[test]
fn positions_resume_at_the_slowest_worker_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    wal.append(Protocol::Grpc, None, &samples(0, 1)).unwrap();
    // A new source starts at the end.
    let new = wal.subscribe("p", "s").unwrap();
    assert_eq!(
        new,
        Resumed {
            offset: 1,
            max_seen: None,
            durable: 0
        }
    );
    for _ in 0..5 {
        wal.append(Protocol::Grpc, None, &samples(0, 1)).unwrap();
    }
    let pos = |offset, max_seen, durable| Position {
        offset,
        max_seen: Some(max_seen),
        durable,
    };
    wal.commit("p", "s", 1, 2, pos(5, 50, 700)).unwrap();
    assert_eq!(
        wal.subscribe("p", "s").unwrap().offset,
        1,
        "worker 0 stored nothing yet"
    );
    wal.commit("p", "s", 0, 2, pos(3, 30, 600)).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    assert_eq!(
        wal.subscribe("p", "s").unwrap(),
        Resumed {
            offset: 3,
            max_seen: Some(30),
            durable: 700
        }
    );
    // Restored at another worker count: every worker from the same place.
    wal.commit("p", "s", 0, 3, pos(4, 40, 800)).unwrap();
    assert_eq!(wal.subscribe("p", "s").unwrap().offset, 3);
    wal.forget("p").unwrap();
    assert_eq!(
        wal.subscribe("p", "s").unwrap().offset,
        6,
        "forgotten: from the end"
    );
}

#[test]
fn fsync_policies_parse() {
    assert_eq!("always".parse(), Ok(Fsync::Always));
    assert_eq!("never".parse(), Ok(Fsync::Never));
    assert_eq!(
        "100ms".parse(),
        Ok(Fsync::Every(Duration::from_millis(100)))
    );
    assert!("0s".parse::<Fsync>().is_err());
    assert!("sometimes".parse::<Fsync>().unwrap_err().contains("always"));
}

#[test]
fn every_interval_syncs_later() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Every(Duration::from_millis(20)))).unwrap();
    wal.append(Protocol::Grpc, None, &samples(0, 1)).unwrap();
    readable(&wal, 0);
}

#[test]
fn a_new_source_resumes_where_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    wal.append(Protocol::Grpc, None, &samples(0, 1)).unwrap();
    assert_eq!(wal.subscribe("p", "s").unwrap().offset, 1);
    wal.append(Protocol::Grpc, None, &samples(0, 1)).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    assert_eq!(wal.subscribe("p", "s").unwrap().offset, 1);
}

#[test]
fn one_process_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(Fsync::Never)).unwrap();
    let Err(e) = Wal::open(dir.path(), options(Fsync::Never)) else {
        panic!("opened twice")
    };
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(wal);
    Wal::open(dir.path(), options(Fsync::Never)).unwrap();
}
