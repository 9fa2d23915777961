use std::time::Duration;

use super::*;

fn members(offsets: &[(&str, u64, Time)]) -> Vec<Member> {
    offsets
        .iter()
        .map(|(name, fingerprint, offset)| Member {
            name: (*name).to_owned(),
            fingerprint: *fingerprint,
            identity: *fingerprint,
            offset: *offset,
        })
        .collect()
}

/// The cuts of pipeline `p`'s checkpoints in `store`.
fn cuts(store: &Store) -> Vec<Time> {
    store.listed("p").unwrap().iter().map(|l| l.at).collect()
}

fn every_cut() -> CheckpointOptions {
    CheckpointOptions {
        interval: Duration::ZERO,
        keep: 2,
    }
}

/// Waits for the writer thread.
fn until(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes checkpoint `at` with one part per member and worker, the bytes
/// naming the part, and waits until it is complete.
fn complete(c: &Arc<Checkpoints>, at: Time, workers: usize, tag: &str) {
    assert_eq!(c.crossed(at - 1, at), vec![at], "every cut is a checkpoint");
    for (i, m) in c.members.iter().enumerate() {
        for w in 0..workers {
            c.submit(at, i, w, format!("{tag} {} {w}", m.name).into_bytes());
        }
    }
    until("all parts written", || {
        c.poll(at);
        c.newest() == Some(at)
    });
}

/// Writes every part of checkpoint `at` (decided already) and waits until
/// it is complete.
fn finish(c: &Arc<Checkpoints>, at: Time) {
    for i in 0..c.members.len() {
        for w in 0..c.workers {
            c.submit(at, i, w, b"part".to_vec());
        }
    }
    until("all parts written", || {
        c.poll(at);
        c.newest() == Some(at)
    });
}

#[test]
fn a_cut_is_decided_once_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let c = Checkpoints::open(
        &Store::dir(dir.path()),
        "p",
        1,
        members(&[("w", 1, 0)]),
        CheckpointOptions {
            interval: Duration::from_millis(50),
            keep: 2,
        },
    )
    .unwrap();
    // The first cut is one; the next, too soon after it, is not, and that
    // stays decided.
    assert_eq!(c.crossed(0, 3_000), vec![3_000]);
    assert!(c.crossed(3_000, 5_500).is_empty());
    finish(&c, 3_000);
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        c.crossed(5_500, 5_999).is_empty(),
        "5000 was decided already"
    );
    // The next step is, and every later question gets the same answer.
    assert_eq!(c.crossed(5_999, 7_200), vec![7_000]);
    assert_eq!(c.crossed(3_000, 9_000), vec![7_000]);
    // In a hurry, every step is, but one at a time: none while 7000 is
    // under way.
    c.hurry(true);
    assert!(c.crossed(9_000, 11_500).is_empty(), "7000 is under way");
    finish(&c, 7_000);
    assert_eq!(c.crossed(11_500, 12_000), vec![12_000]);
    // An operator two seconds behind the sources cuts at 5000 and 10000.
    let mut cut = c.cut(0, 0);
    cut.offset = 2_000;
    assert!(!cut.holds(4_999));
    assert!(cut.holds(5_000), "input at the cut waits for it");
    assert!(cut.holds(9_000));
    assert_eq!(cut.due(4_999), None);
    assert_eq!(cut.due(9_999), Some(5_000), "the first cut first");
    cut.write(5_000, Vec::new());
    assert!(!cut.holds(9_999), "after the cut, input applies");
    assert!(cut.holds(10_000));
    assert_eq!(cut.due(10_000), Some(10_000));
    cut.write(10_000, Vec::new());
    assert_eq!(cut.due(13_999), None);
}

/// A cut at or before a kept component's offset is never a checkpoint:
/// that component would cut at time 0, which it never does, and the
/// checkpoint would hold every later one back.
#[test]
fn no_checkpoint_is_cut_before_every_component_can_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Checkpoints::open(
        &Store::dir(dir.path()),
        "p",
        1,
        members(&[("w", 1, 0), ("k", 1, 5_000)]),
        every_cut(),
    )
    .unwrap();
    assert!(c.crossed(0, 3_000).is_empty());
    assert!(c.crossed(3_000, 5_000).is_empty(), "at the offset");
    assert_eq!(c.crossed(5_000, 6_000), vec![6_000]);
}

#[test]
fn the_gate_applies_what_the_cut_allows_and_writes_at_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let c = Checkpoints::open(
        &Store::dir(dir.path()),
        "p",
        1,
        members(&[("w", 1, 0)]),
        every_cut(),
    )
    .unwrap();
    assert_eq!(c.crossed(0, 3_000), vec![3_000]);
    let mut gate: Gate<Vec<u64>> = Gate::new(Some(c.cut(0, 0)));
    let mut early = vec![1];
    assert!(gate.wait(2_000, &mut early), "waits for the restored state");
    assert_eq!(gate.restored(), None, "nothing was restored");
    let mut log = Vec::new();
    let mut on = |step: Step<Vec<u64>>| match step {
        Step::Apply(t, d) => {
            log.push(format!("apply {t} {d:?}"));
            Vec::new()
        }
        Step::Cut(x) => {
            log.push(format!("cut {x}"));
            b"state".to_vec()
        }
    };
    let mut late = vec![2];
    assert!(gate.wait(3_000, &mut late), "at the cut: waits");
    assert!(late.is_empty(), "taken");
    let mut before = vec![3];
    assert!(
        gate.wait(2_999, &mut before),
        "behind waiting input, input waits too"
    );
    gate.advance(Some(2_999), &mut on);
    let mut next = vec![4];
    assert!(gate.wait(2_999, &mut next), "still behind the held input");
    gate.advance(Some(3_000), &mut on);
    assert_eq!(
        log,
        [
            "apply 2000 [1]",
            "apply 2999 [3]",
            "apply 2999 [4]",
            "cut 3000",
            "apply 3000 [2]"
        ]
    );
    let mut after = vec![5];
    assert!(
        !gate.wait(3_001, &mut after),
        "nothing waits: applies at once"
    );
    assert!(!gate.is_waiting());
    until("the part is written", || {
        lock(&c.state)
            .written
            .get(&3_000)
            .is_some_and(|p| p.len() == 1)
    });
}

#[test]
fn checkpoints_read_back_and_a_changed_component_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let ms = members(&[("src", 1, 0), ("w", 2, 0)]);
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 2, ms.clone(), every_cut()).unwrap();
    assert!(c.restored().is_none());
    for i in 0..2 {
        c.submit(2_000, i, 0, b"x".to_vec());
    }
    // Parts of one worker only: never complete.
    c.poll(Time::MAX);
    complete(&c, 5_000, 2, "a");
    drop(c);

    let again =
        Checkpoints::open(&Store::dir(dir.path()), "p", 3, ms.clone(), every_cut()).unwrap();
    let r = again.restored().expect("restored");
    assert_eq!((r.at, r.workers), (5_000, 2));
    let parts: Vec<Vec<u8>> = r.take("w", 3).unwrap().iter().map(|p| p.to_vec()).collect();
    assert_eq!(parts, [b"a w 0".to_vec(), b"a w 1".to_vec()]);
    // Let go once each of the three workers has taken them.
    assert!(r.take("w", 3).is_some() && r.take("w", 3).is_some());
    assert!(!r.has("w") && r.take("w", 3).is_none());
    assert!(r.fresh.is_empty());
    // The restored cut is taken: operators start after it.
    assert_eq!(again.cut(1, 0).taken(), 5_000);
    drop(again);

    let changed = members(&[("src", 1, 0), ("w", 3, 0), ("new", 4, 0)]);
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 2, changed, every_cut()).unwrap();
    let r = c.restored().unwrap();
    assert!(r.has("src"));
    assert!(!r.has("w"), "its configuration changed");
    assert_eq!(r.fresh, ["w", "new"]);
}

/// A source instance whose output is complete (a finite source that
/// finished, or one with nothing to read on its worker) still has its part
/// in every later checkpoint: the one decided before it finished and those
/// decided after.
#[test]
fn a_finished_source_has_its_part_in_every_later_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ms = members(&[("src", 1, 0), ("w", 2, 0)]);
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 2, ms.clone(), every_cut()).unwrap();
    // Worker 1's instance has nothing to read.
    c.cut(0, 1).finish(0, b"empty".to_vec());
    assert_eq!(c.crossed(0, 1_000), vec![1_000]);
    c.submit(1_000, 0, 0, b"at 1000".to_vec());
    for w in 0..2 {
        c.submit(1_000, 1, w, b"w".to_vec());
    }
    until("complete without worker 1's own part", || {
        c.poll(1_000);
        c.newest() == Some(1_000)
    });
    // Worker 0's finishes at 2500, after 3000 was decided: 3000 does
    // not wait for it, 4000 (decided later) neither.
    assert_eq!(c.crossed(1_000, 3_000), vec![3_000]);
    c.cut(0, 0).finish(2_500, b"done".to_vec());
    for at in [3_000, 4_000] {
        if at == 4_000 {
            assert_eq!(c.crossed(3_000, 4_000), vec![4_000]);
        }
        for w in 0..2 {
            c.submit(at, 1, w, b"w".to_vec());
        }
        until("complete with the finished parts", || {
            c.poll(at);
            c.newest() == Some(at)
        });
    }
    drop(c);
    let again = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms, every_cut()).unwrap();
    let r = again.restored().expect("restored");
    assert_eq!(r.at, 4_000);
    let parts: Vec<Vec<u8>> = r
        .take("src", 1)
        .unwrap()
        .iter()
        .map(|p| p.to_vec())
        .collect();
    assert_eq!(parts, [b"done".to_vec(), b"empty".to_vec()]);
}

#[test]
fn a_damaged_checkpoint_is_reported_and_the_one_before_used() {
    let dir = tempfile::tempdir().unwrap();
    let ms = members(&[("w", 1, 0)]);
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms.clone(), every_cut()).unwrap();
    complete(&c, 1_000, 1, "first");
    complete(&c, 2_000, 1, "second");
    complete(&c, 3_000, 1, "third");
    drop(c);
    let kept: Vec<Time> = cuts(&Store::dir(dir.path()));
    assert_eq!(kept, [2_000, 3_000], "two kept");
    // Flip a byte of the newest part.
    let newest = Store::dir(dir.path()).listed("p").unwrap().pop().unwrap();
    let newest = dir.path().join("p").join(newest.name);
    let part = newest.join("0.0");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms.clone(), every_cut()).unwrap();
    let r = c.restored().unwrap();
    assert_eq!(r.at, 2_000);
    assert_eq!(r.take("w", 1).unwrap()[0].as_slice(), b"second w 0");
    drop(c);
    // A truncated manifest: the same.
    std::fs::write(newest.join("MANIFEST.json"), b"{\"pipe").unwrap();
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms, every_cut()).unwrap();
    assert_eq!(c.restored().unwrap().at, 2_000);
}

/// Given up (a full log whose event time stands still): complete and
/// pending checkpoints are deleted and never complete; later cuts are
/// checkpoints again, and a restart restores from those only.
#[test]
fn abandoned_checkpoints_are_deleted_and_later_ones_taken() {
    let dir = tempfile::tempdir().unwrap();
    let ms = members(&[("w", 1, 0)]);
    let c = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms.clone(), every_cut()).unwrap();
    complete(&c, 1_000, 1, "first");
    assert_eq!(c.crossed(1_000, 2_000), vec![2_000], "under way");
    c.abandon();
    assert_eq!((c.newest(), c.abandoned()), (None, Some(2_000)));
    assert!(cuts(&Store::dir(dir.path())).is_empty(), "deleted");
    // The part of the abandoned cut that comes late completes nothing.
    c.submit(2_000, 0, 0, b"late".to_vec());
    std::thread::sleep(Duration::from_millis(50));
    c.poll(Time::MAX);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.newest(), None);
    complete(&c, 3_000, 1, "after");
    drop(c);
    let again = Checkpoints::open(&Store::dir(dir.path()), "p", 1, ms, every_cut()).unwrap();
    assert_eq!(again.restored().map(|r| r.at), Some(3_000));
    let kept: Vec<Time> = cuts(&Store::dir(dir.path()));
    assert_eq!(kept, [3_000]);
}

/// A bucket (`object_store`, here its in-memory store; S3 itself in
/// `cli/tests/checkpoint.rs`) keeps checkpoints as a directory does: the
/// manifest written last, old ones deleted, a damaged one passed over,
/// and deleting a pipeline deletes its objects only.
#[test]
fn a_bucket_keeps_checkpoints_as_a_directory_does() {
    use object_store::memory::InMemory;
    use object_store::path::Path as Key;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Store::bucket(Arc::clone(&objects), "memory://b/ckpt", "ckpt/").unwrap();
    let ms = members(&[("w", 1, 0)]);
    let c = Checkpoints::open(&store, "p", 2, ms.clone(), every_cut()).unwrap();
    // Parts without a manifest: listed, not complete, never restored.
    c.submit(500, 0, 0, b"alone".to_vec());
    complete(&c, 1_000, 2, "first");
    complete(&c, 2_000, 2, "second");
    complete(&c, 3_000, 2, "third");
    drop(c);
    assert_eq!(cuts(&store), [2_000, 3_000], "two kept, the rest deleted");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = |under: &str| -> Vec<String> {
        let list = objects.list(Some(&Key::from(under)));
        runtime
            .block_on(futures_util::TryStreamExt::try_collect::<Vec<_>>(list))
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect()
    };
    let newest = store.listed("p").unwrap().pop().unwrap();
    assert!(newest.complete);
    let prefix = format!("ckpt/p/{}", newest.name);
    let mut files: Vec<String> = keys(&prefix);
    files.sort();
    assert_eq!(
        files,
        ["0.0", "0.1", MANIFEST].map(|f| format!("{prefix}/{f}")),
        "one object per part, and the manifest"
    );
    let again = Checkpoints::open(&store, "p", 1, ms.clone(), every_cut()).unwrap();
    let r = again.restored().unwrap();
    assert_eq!((r.at, r.workers), (3_000, 2));
    assert_eq!(r.take("w", 1).unwrap()[1].as_slice(), b"third w 1");
    drop(again);
    // A flipped byte in the newest part: the one before is used.
    let part = Key::from(format!("{prefix}/0.1"));
    runtime
        .block_on(objects.put(&part, PutPayload::from(b"third w 9".to_vec())))
        .unwrap();
    let c = Checkpoints::open(&store, "p", 1, ms, every_cut()).unwrap();
    assert_eq!(c.restored().unwrap().at, 2_000);
    drop(c);
    // Another pipeline's objects stay when `p`'s are deleted.
    store.write("q", "x", "0.0", b"other").unwrap();
    store.remove("p", None).unwrap();
    assert!(keys("ckpt/p").is_empty());
    assert_eq!(keys("ckpt/q"), ["ckpt/q/x/0.0"]);
}

/// A component whose configuration changed but whose identity did not
/// gets its state back and is reported as migrated; one whose identity
/// changed starts fresh.
#[test]
fn a_component_with_the_same_identity_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::dir(dir.path());
    let member = |name: &str, fingerprint, identity| Member {
        name: name.to_owned(),
        fingerprint,
        identity,
        offset: 0,
    };
    let c = Checkpoints::open(
        &store,
        "p",
        1,
        vec![member("w", 1, 10), member("s", 2, 20)],
        every_cut(),
    )
    .unwrap();
    complete(&c, 1_000, 1, "first");
    drop(c);
    let changed = vec![member("w", 3, 10), member("s", 4, 21)];
    let c = Checkpoints::open(&store, "p", 1, changed, every_cut()).unwrap();
    let r = c.restored().unwrap();
    assert_eq!(r.migrated, ["w"]);
    assert_eq!(r.fresh, ["s"]);
    assert_eq!(r.take("w", 1).unwrap()[0].as_slice(), b"first w 0");
    assert!(!r.has("s"));
}

/// Two processes of a cluster over one store: they decide the same cuts
/// from event time alone, a checkpoint completes only once both have
/// written their share (either may merge the manifest, and the other sees
/// it), and one process of three workers restores it whole.
#[test]
fn a_clusters_checkpoint_completes_when_every_process_has_written_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::dir(dir.path());
    let ms = members(&[("src", 1, 0), ("w", 2, 0)]);
    let every_2s = CheckpointOptions {
        interval: Duration::from_millis(1_500),
        keep: 2,
    };
    let open = |process| {
        let installation = Installation {
            process,
            processes: 2,
            workers: 1,
            id: Some(7),
            per_process: false,
        };
        Checkpoints::open_as(&store, "p", installation, ms.clone(), every_2s).unwrap()
    };
    let (p0, p1) = (open(0), open(1));
    // The interval rounds up to whole steps (2 s); a jump takes the last
    // multiple it passes, whoever gets there and however the jumps fall.
    assert_eq!(p0.crossed(0, 5_500), [4_000]);
    assert_eq!(p1.crossed(0, 3_000), [2_000]);
    assert_eq!(p1.crossed(3_000, 5_500), [4_000]);
    assert_eq!(p0.crossed(5_500, 5_999), Vec::<Time>::new());
    let share = |c: &Arc<Checkpoints>, at: Time, worker: usize| {
        for i in 0..2 {
            c.submit(at, i, worker, format!("{at} {i} {worker}").into_bytes());
        }
        c.poll(Time::MAX);
    };
    share(&p1, 2_000, 1);
    share(&p0, 4_000, 0);
    // Process 0's share alone completes nothing, however long it waits.
    std::thread::sleep(Duration::from_millis(600));
    p0.poll(Time::MAX);
    assert_eq!(p0.newest(), None);
    assert!(store.listed("p").unwrap().iter().all(|l| !l.complete));
    share(&p1, 4_000, 1);
    until("both processes see checkpoint 4 s complete", || {
        p0.poll(Time::MAX);
        p1.poll(Time::MAX);
        p0.newest() == Some(4_000) && p1.newest() == Some(4_000)
    });
    // The cut only process 1 took never completes, and is deleted.
    until("the cut process 0 never took deleted", || {
        cuts(&store) == [4_000]
    });
    drop((p0, p1));

    let one = Checkpoints::open(&store, "p", 3, ms.clone(), every_cut()).unwrap();
    let r = one.restored().expect("restored");
    assert_eq!((r.at, r.workers), (4_000, 2));
    let parts: Vec<Vec<u8>> = r.take("w", 3).unwrap().iter().map(|p| p.to_vec()).collect();
    assert_eq!(parts, [b"4000 1 0".to_vec(), b"4000 1 1".to_vec()]);
    drop(one);

    // A pipeline whose sources read each process's own log restores only
    // on as many processes, each process its own workers' positions.
    let pinned = |process, processes, workers| {
        let installation = Installation {
            process,
            processes,
            workers,
            id: None,
            per_process: true,
        };
        Checkpoints::open_as(&store, "p", installation, ms.clone(), every_cut()).unwrap()
    };
    assert!(pinned(0, 1, 2).restored().is_none());
    let second = pinned(1, 2, 2);
    assert_eq!(second.restored().map(|r| r.processes), Some(2));
    let positions: Vec<Vec<u8>> = second
        .cut(0, 2)
        .restored_of_process(1)
        .unwrap()
        .iter()
        .map(|p| p.to_vec())
        .collect();
    assert_eq!(positions, [b"4000 0 1".to_vec()]);
}

/// While a cluster's sinks are not durable, a process takes no more than a
/// few checkpoints (each holds a copy of the state in the store); once one
/// is sealed, cuts are checkpoints again.
#[test]
fn a_cluster_process_keeps_few_checkpoints_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let installation = Installation {
        process: 0,
        processes: 2,
        workers: 1,
        id: Some(1),
        per_process: false,
    };
    let c = Checkpoints::open_as(
        &Store::dir(dir.path()),
        "p",
        installation,
        members(&[("w", 1, 0)]),
        every_cut(),
    )
    .unwrap();
    let taken: Vec<Time> = (1..=6)
        .flat_map(|i| c.crossed((i - 1) * 1_000, i * 1_000))
        .collect();
    assert_eq!(taken, [1_000, 2_000, 3_000, 4_000]);
    c.submit(1_000, 0, 0, b"x".to_vec());
    // (Each look crosses a cut not decided yet.)
    let t = std::cell::Cell::new(6_000);
    until("checkpoint 1 s sealed here", || {
        c.poll(1_000);
        t.set(t.get() + 1_000);
        c.crossed(t.get() - 1_000, t.get()) == [t.get()]
    });
    assert!(
        c.crossed(t.get(), t.get() + 1_000).is_empty(),
        "4 under way again"
    );
}

/// A new version applied to a cluster: each process stops the old
/// version's checkpoints and waits until every process has, so none of the
/// old version's completes after a process looked for the newest; the
/// hand-over's files go once the new version completes a checkpoint.
#[test]
fn a_new_version_in_a_cluster_waits_until_every_process_has_stopped_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::dir(dir.path());
    let ms = members(&[("w", 1, 0)]);
    let open = |process, id| {
        let installation = Installation {
            process,
            processes: 2,
            workers: 1,
            id: Some(id),
            per_process: false,
        };
        Checkpoints::open_as(&store, "p", installation, ms.clone(), every_cut()).unwrap()
    };
    let (p0, p1) = (open(0, 1), open(1, 1));
    for c in [&p0, &p1] {
        assert_eq!(c.crossed(0, 2_000), [2_000]);
    }
    p0.submit(2_000, 0, 0, b"x".to_vec());
    until("process 0's share written", || {
        p0.poll(Time::MAX);
        store
            .read("p", &dir_name(2_000, &p0.nonce), &process_file(0))
            .is_ok()
    });
    let waiting = {
        let p0 = Arc::clone(&p0);
        std::thread::spawn(move || p0.hand_over())
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "process 0 waits for process 1");
    p1.hand_over();
    waiting.join().unwrap();
    // Process 1's share comes too late: the old version's checkpoint never
    // completes, so the new version finds none in either process.
    p1.submit(2_000, 0, 1, b"y".to_vec());
    p1.poll(Time::MAX);
    std::thread::sleep(Duration::from_millis(300));
    assert!(store.listed("p").unwrap().iter().all(|l| !l.complete));
    let (n0, n1) = (open(0, 2), open(1, 2));
    assert!(n0.restored().is_none() && n1.restored().is_none());
    assert_eq!(
        store.handovers("p").unwrap(),
        [format!("handover-{:016x}", 1)]
    );
    for (w, c) in [&n0, &n1].into_iter().enumerate() {
        assert_eq!(c.crossed(2_000, 4_000), [4_000]);
        c.submit(4_000, 0, w, b"z".to_vec());
    }
    until(
        "the new version's checkpoint, and the hand-over gone",
        || {
            n0.poll(Time::MAX);
            n1.poll(Time::MAX);
            n0.newest() == Some(4_000) && store.handovers("p").unwrap().is_empty()
        },
    );
}
