//! The write-ahead log of network ingest (`tidemark serve --data-dir`):
//! what a sender was told was accepted survives `kill -9` and is processed
//! exactly once; a full log refuses with backpressure.

use tidemark_testkit as common;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{Server, wait_until};
use common::temp_dir;
use serde_json::Value;
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

const T0: i64 = 1_700_000_000_000;
/// Requests the sender sends; request `k` holds one sample of each series
/// at `T0 + k * STEP`.
const REQUESTS: i64 = 1500;
const STEP: i64 = 50;
const SERIES: i64 = 8;
/// Times the server is killed while the sender sends.
const KILLS: usize = 3;

fn request(k: i64) -> WriteRequest {
    common::load_request(SERIES, T0 + k * STEP, |s| (k * 100 + s) as f64)
}

/// What the sender was told.
#[derive(Default)]
struct Outcomes {
    /// Requests whose acknowledgement it received.
    acked: Vec<i64>,
    /// Requests for which it got no answer at least once (the server died
    /// with the request in flight): the log may hold them, so sending them
    /// again may count them twice.
    uncertain: HashSet<i64>,
}

/// Sends every request until it is acknowledged, following the server's
/// gRPC port across restarts.
fn send_all(port: Arc<AtomicU16>, sent: Arc<AtomicU64>, outcomes: Arc<Mutex<Outcomes>>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut client = None;
        let mut k = 0;
        let deadline = Instant::now() + Duration::from_secs(240);
        while k <= REQUESTS {
            assert!(
                Instant::now() < deadline,
                "the sender could not get request {k} acknowledged"
            );
            let url = format!("http://127.0.0.1:{}", port.load(Ordering::SeqCst));
            if client.is_none() {
                client = IngestServiceClient::connect(url).await.ok();
                if client.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let Some(c) = client.as_mut() else { continue };
            // The last request moves the watermark past every window.
            let req = if k == REQUESTS {
                let mut r = request(k);
                for s in &mut r.series {
                    s.points[0].timestamp_ms += 60_000;
                }
                r
            } else {
                request(k)
            };
            match c.write(req).await {
                Ok(reply) => {
                    assert_eq!(reply.into_inner().accepted, SERIES as u64);
                    outcomes.lock().unwrap().acked.push(k);
                    sent.fetch_add(1, Ordering::SeqCst);
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                Err(status) => {
                    // Refused before anything was logged: sent again, certain.
                    let refused = matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::ResourceExhausted
                    ) || (status.code() == tonic::Code::Unavailable
                        && status.message().contains("shutting down"));
                    if !refused {
                        outcomes.lock().unwrap().uncertain.insert(k);
                    }
                    client = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

/// A runtime and an ingest client of `server`.
fn connect(
    server: &Server,
) -> (
    tokio::runtime::Runtime,
    IngestServiceClient<tonic::transport::Channel>,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let client = runtime.block_on(IngestServiceClient::connect(url)).unwrap();
    (runtime, client)
}

/// Rows of the file, one per (series, window end), after checking that
/// a row written twice (a window recomputed after a restart) was written
/// the same both times.
fn rows(path: &std::path::Path) -> BTreeMap<(String, String, i64), f64> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["name"].as_str().unwrap().to_owned(),
            v["labels"]["s"].as_str().unwrap().to_owned(),
            v["timestamp"].as_i64().unwrap(),
        );
        let value = v["value"].as_f64().unwrap();
        if let Some(old) = out.insert(key.clone(), value) {
            assert_eq!(old, value, "{key:?} written twice, differently");
        }
    }
    out
}

/// `kill -9` three times while a sender writes over gRPC, restarting the
/// server each time with the same data directory: every window in the
/// file equals one computed from what the sender was told was accepted,
/// nothing missing and nothing counted twice, except a request whose
/// answer the kill cut off (the log may hold it, and the sender sent it
/// again), which may be counted twice and nothing else.
#[test]
fn acknowledged_samples_survive_kill_9_and_count_once() {
    let dir = temp_dir("wal-kill");
    let data = dir.join("data");
    let output = dir.join("out.jsonl");
    // Small segments, so that the log deletes what every worker passed.
    let args = [
        "--workers",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
        "--wal-max-mb",
        "2",
        "--checkpoint-interval",
        "500ms",
    ];
    let server = Server::start(&args, 0);
    let pipeline = format!(
        "name: logged\nsources:\n  in: {{type: grpc, max_out_of_orderness: 500ms, idle_timeout: 200ms}}\n\
         transforms:\n  w: {{type: window, inputs: [in], window: {{tumbling: 1s}}, by: [s], aggregates: [count, sum]}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}, append: true}}\n",
        output.display()
    );
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&pipeline));
    assert_eq!(status, 201, "{body}");
    let port = Arc::new(AtomicU16::new(server.grpc));
    let sent = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (port, sent, outcomes, done) = (
            Arc::clone(&port),
            Arc::clone(&sent),
            Arc::clone(&outcomes),
            Arc::clone(&done),
        );
        std::thread::spawn(move || {
            send_all(port, sent, outcomes);
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut server = server;
    for cycle in 0..KILLS {
        // Kill at a different point of each cycle, while requests fly, and
        // late enough that positions were stored since the last start.
        let started = Instant::now();
        let at = (cycle as u64 + 1) * REQUESTS as u64 / (KILLS as u64 + 1) + cycle as u64 * 7;
        wait_until("the sender to get far enough", || {
            sent.load(Ordering::SeqCst) >= at && started.elapsed() > Duration::from_millis(2500)
        });
        server.kill_hard();
        server = Server::start(&args, 0);
        port.store(server.grpc, Ordering::SeqCst);
    }
    wait_until("the sender to finish", || done.load(Ordering::SeqCst));
    sender.join().unwrap();
    let outcomes = outcomes.lock().unwrap();
    let mut acked = outcomes.acked.clone();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (0..=REQUESTS).collect::<Vec<_>>(),
        "each acknowledged once"
    );

    // Expected per (series, window end): count and sum of what was acked.
    // Windows are (end - 1s, end].
    let window_end = |k: i64| (T0 + k * STEP + 999) / 1000 * 1000;
    let last_end = window_end(REQUESTS - 1);
    let mut expected: BTreeMap<(String, i64), (f64, f64)> = BTreeMap::new();
    for k in 0..REQUESTS {
        for s in 0..SERIES {
            let e = expected.entry((s.to_string(), window_end(k))).or_default();
            e.0 += 1.0;
            e.1 += (k * 100 + s) as f64;
        }
    }
    wait_until("every window in the file", || {
        rows(&output)
            .keys()
            .filter(|(_, _, t)| *t == last_end)
            .count()
            >= 2 * SERIES as usize
    });
    let got = rows(&output);
    let mut doubled = 0;
    for ((s, end), (count, sum)) in &expected {
        let c = got.get(&("load:1s_by_s_count".into(), s.clone(), *end));
        let v = got.get(&("load:1s_by_s_sum".into(), s.clone(), *end));
        let (Some(&c), Some(&v)) = (c, v) else {
            panic!("window {end} of series {s} is missing")
        };
        if (c, v) == (*count, *sum) {
            continue;
        }
        // Only a request the kill left unanswered may count twice.
        let k_in: Vec<i64> = (0..REQUESTS)
            .filter(|k| window_end(*k) == *end && outcomes.uncertain.contains(k))
            .collect();
        let s_n: i64 = s.parse().unwrap();
        let explained = (1..1u32 << k_in.len()).any(|mask| {
            let extra: Vec<i64> = (0..k_in.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| k_in[i])
                .collect();
            c == count + extra.len() as f64
                && v == sum + extra.iter().map(|k| (k * 100 + s_n) as f64).sum::<f64>()
        });
        assert!(
            explained,
            "window {end} of series {s}: count {c} sum {v}, expected {count} and {sum} (unanswered requests there: {k_in:?})"
        );
        doubled += 1;
    }
    eprintln!(
        "{KILLS} kills; {} requests went unanswered at a kill; {doubled} windows counted one twice",
        outcomes.uncertain.len()
    );
    let (_, status) = server.json("GET", "/api/v1/pipelines/logged", None);
    assert_eq!(status["state"], "running", "{status}");
    // The last start read the log from a stored position, not from its
    // beginning, and the log deleted the segments every worker had passed.
    let read = status["samples_in"].as_u64().unwrap();
    assert!(
        read < (REQUESTS * SERIES) as u64 / 2,
        "read {read} samples again: {status}"
    );
    assert!(
        !data.join("wal").join(format!("{:020}.seg", 0)).exists(),
        "the first segment is still there"
    );
    assert!(server.stop().success());
}

/// A log with no room refuses ingest with backpressure (gRPC
/// `RESOURCE_EXHAUSTED`; remote-write and OTLP/HTTP get 503) and accepts
/// again once the pipeline has passed what it holds; every sample
/// acknowledged is counted once.
#[test]
fn a_full_log_refuses_with_backpressure_and_loses_nothing() {
    let dir = temp_dir("wal-full");
    let data = dir.join("data");
    let args = ["--data-dir", data.to_str().unwrap(), "--wal-max-mb", "1"];
    fill_and_drain(&dir, &args, "write-ahead log is full");
}

/// Unmounts a file system when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A disk that fills up (a 4 MiB tmpfs under a log allowed 8 MiB): the
/// log leaves room for checkpoints and positions (1 MiB) and refuses
/// ingest with backpressure; checkpoints hurry (one after another) and,
/// once the burst has filled the disk and event time stands still, are
/// given up so that positions move on, segments go, and it takes again;
/// every sample acknowledged is counted once.
#[test]
fn a_full_disk_refuses_with_backpressure_and_loses_nothing() {
    let dir = temp_dir("wal-disk");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "this test mounts a 4 MiB tmpfs to fill a disk: run it as root (as deploy/test.sh does on its machine)"
    );
    let _unmount = Mounted(data.clone());
    let args = ["--data-dir", data.to_str().unwrap(), "--wal-max-mb", "8"];
    fill_and_drain(&dir, &args, "disk of the write-ahead log is nearly full");
}

/// Sends large requests to a server started with `args` until its log has
/// refused with `refusal` and taken again, then checks that every accepted
/// sample was counted once.
fn fill_and_drain(dir: &std::path::Path, args: &[&str], refusal: &str) {
    let output = dir.join("out.jsonl");
    let server = Server::start(args, 0);
    let pipeline = format!(
        "name: filled\nsources:\n  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 100ms}}\n\
         transforms:\n  w: {{type: window, inputs: [in], window: {{tumbling: 1s}}, aggregates: [count]}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let (runtime, mut client) = connect(&server);
    // About 20 KB a request, 200 ms apart: the log holds about 50 of them,
    // ten seconds, more than a window (a log that holds less than a
    // window would wait for a sample that closes it, which it cannot take).
    let big = |k: i64, at: i64| WriteRequest {
        series: (0..200)
            .map(|s| Series {
                name: "fill".into(),
                labels: vec![Label {
                    name: "s".into(),
                    value: format!("{s:04}-{k}-padding-to-make-the-record-larger"),
                }],
                points: vec![Point {
                    timestamp_ms: at,
                    value: 1.0,
                }],
            })
            .collect(),
    };
    let (mut accepted, mut refused, mut k) = (0u64, 0u64, 0i64);
    let start = Instant::now();
    // Send as fast as the server answers, for a few seconds of event time,
    // until the log has refused and then accepted again.
    while k < 400 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the log never made room"
        );
        match runtime.block_on(client.write(big(k, T0 + k * 200))) {
            Ok(r) => {
                accepted += r.into_inner().accepted;
                k += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                assert!(status.message().contains(refusal), "{status}");
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(refused > 0, "the log never filled");
    // One sample far ahead closes every window.
    let last = WriteRequest {
        series: vec![Series {
            name: "fill".into(),
            labels: vec![],
            points: vec![Point {
                timestamp_ms: T0 + 3_600_000,
                value: 1.0,
            }],
        }],
    };
    wait_until("room for the last request", || {
        runtime.block_on(client.write(last.clone())).is_ok()
    });
    // (Complete lines: the sink may be writing the last one.)
    let counted = || -> u64 {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        text[..text.rfind('\n').map_or(0, |i| i + 1)]
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["value"]
                    .as_f64()
                    .unwrap() as u64
            })
            .sum()
    };
    wait_until("every accepted sample counted", || counted() >= accepted);
    assert_eq!(
        counted(),
        accepted,
        "counted once ({refused} requests refused)"
    );
    assert!(server.stop().success());
}

/// Replacing a pipeline starts its new version from the stored positions:
/// windows the old version made durable are not written again, and those
/// it left open are computed whole from the log.
#[test]
fn a_replaced_pipeline_resumes_from_the_stored_positions() {
    let dir = temp_dir("wal-replace");
    let data = dir.join("data");
    // Without checkpoints: the new version computes its windows from the
    // log (with them, a changed window starts empty at the checkpoint; see
    // cli/tests/checkpoint.rs).
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--checkpoint-interval",
            "off",
        ],
        0,
    );
    let pipeline = |out: &std::path::Path, extra: &str| {
        format!(
            "name: swapped\nsources:\n  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 100ms}}\n\
             transforms:\n  w: {{type: window, inputs: [in], window: {{tumbling: 1s}}, by: [s], aggregates: [count{extra}]}}\n\
             sinks:\n  out: {{type: file, inputs: [w], path: {}}}\n",
            out.display()
        )
    };
    let (first, second) = (dir.join("first.jsonl"), dir.join("second.jsonl"));
    assert_eq!(
        server
            .json("POST", "/api/v1/pipelines", Some(&pipeline(&first, "")))
            .0,
        201
    );
    let (runtime, mut client) = connect(&server);
    // Ten windows of 20 requests, then five more requests into the next one.
    let send = |client: &mut IngestServiceClient<_>, ks: std::ops::Range<i64>| {
        for k in ks {
            runtime.block_on(client.write(request(k))).unwrap();
        }
    };
    send(&mut client, 0..205);
    wait_until("the first ten windows", || {
        rows(&first)
            .keys()
            .filter(|(n, _, _)| n.ends_with("count"))
            .count()
            >= 10 * SERIES as usize
    });
    // Positions are stored every second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        server
            .json(
                "POST",
                "/api/v1/pipelines",
                Some(&pipeline(&second, ", sum"))
            )
            .0,
        200
    );
    wait_until("the new version", || {
        server.json("GET", "/api/v1/pipelines/swapped", None).1["state"] == "running"
    });
    send(&mut client, 205..260);
    let window_end = |k: i64| (T0 + k * STEP + 999) / 1000 * 1000;
    wait_until("the windows after the replace", || {
        rows(&second).keys().any(|(_, _, t)| *t == window_end(239))
    });
    let got = rows(&second);
    let ends: std::collections::BTreeSet<i64> = got.keys().map(|(_, _, t)| *t).collect();
    assert!(
        !ends.contains(&window_end(100)),
        "a window the old version made durable was written again: {ends:?}"
    );
    // The window open at the replace is whole: 20 requests.
    let open = window_end(204);
    assert_eq!(
        got.get(&("load:1s_by_s_count".into(), "0".into(), open)),
        Some(&20.0),
        "{got:?}"
    );
    assert!(server.stop().success());
}
