//! End-to-end: a window pipeline over a JSON-lines file gives exactly the
//! from-scratch answer, the same bytes with 1, 2 and 4 workers and with two
//! processes on loopback; generator pipelines agree across worker counts;
//! the binary runs to completion and stops cleanly on SIGTERM.

use tidemark_testkit as common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{Row, increase, read_rows, run_text, temp_dir};

const SIZE: i64 = 10_000;
const LATENESS: i64 = 2_000;
const OOO: i64 = 3_000;

/// Writes a seeded input: counters for 4 hosts x 3 instances every second,
/// with jitter, out-of-order and late samples, resets, and a few bad lines.
fn write_input(path: &Path, seed: u64) -> Vec<(String, String, i64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut kept = Vec::new();
    let mut counters = [0.0f64; 12];
    for step in 0..300i64 {
        for (s, counter) in counters.iter_mut().enumerate() {
            let (host, instance) = (format!("h{}", s / 3), format!("i{}", s % 3));
            let mut ts = 1_700_000_000_000 + step * 1_000 + rng.random_range(0..300);
            let r: f64 = rng.random();
            if r < 0.1 {
                ts -= rng.random_range(1..OOO);
            } else if r < 0.14 {
                ts -= rng.random_range(OOO + LATENESS..OOO + LATENESS + 30_000);
            }
            *counter = if rng.random::<f64>() < 0.01 {
                0.0
            } else {
                *counter + rng.random_range(0..50) as f64
            };
            let v = *counter;
            writeln!(f, r#"{{"name":"req_total","labels":{{"host":"{host}","instance":"{instance}"}},"timestamp":{ts},"value":{v}}}"#).unwrap();
            kept.push((host, instance, ts, v));
        }
        if step % 97 == 5 {
            writeln!(
                f,
                r#"{{"name":"req_total","labels":{{"bad-label":"x"}},"timestamp":1,"value":1}}"#
            )
            .unwrap();
            writeln!(f, "this is not json").unwrap();
        }
    }
    kept
}

fn pipeline(input: &Path, output: &Path) -> String {
    format!(
        r#"name: reference
sources:
  in:
    type: file
    path: {}
    max_out_of_orderness: 3s
transforms:
  w:
    type: window
    inputs: [in]
    window: {{tumbling: 10s}}
    by: [host]
    aggregates: [count, sum, min, max, avg, last, stddev, increase, p90]
    lateness: 2s
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        input.display(),
        output.display()
    )
}

/// From scratch: the file source's watermark after each line, on-time iff
/// that watermark is before the window's end + lateness + 1 ms.
fn reference(samples: &[(String, String, i64, f64)]) -> BTreeMap<(String, String, i64), f64> {
    let mut watermark = 0i64;
    let mut max_seen = i64::MIN;
    // (host, window end) to (instance, timestamp, value).
    type Windows = BTreeMap<(String, i64), Vec<(String, i64, f64)>>;
    let mut windows: Windows = BTreeMap::new();
    for (host, instance, ts, v) in samples {
        max_seen = max_seen.max(*ts);
        watermark = watermark.max(max_seen - OOO);
        let end = (ts + SIZE - 1).div_euclid(SIZE) * SIZE;
        if watermark < end + LATENESS + 1 {
            windows
                .entry((host.clone(), end))
                .or_default()
                .push((instance.clone(), *ts, *v));
        }
    }
    let mut out = BTreeMap::new();
    for ((host, end), points) in windows {
        let values: Vec<f64> = points.iter().map(|p| p.2).collect();
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        let mean = sum / n;
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let last = points
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .unwrap()
            .2;
        let mut put = |agg: &str, v: f64| {
            out.insert((host.clone(), agg.to_owned(), end), v);
        };
        put("count", n);
        put("sum", sum);
        put("min", sorted[0]);
        put("max", sorted[sorted.len() - 1]);
        put("avg", mean);
        put("last", last);
        put(
            "stddev",
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt(),
        );
        put("p90", sorted[(0.9 * (n - 1.0)) as usize]);
        let mut per_series: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
        for (instance, ts, v) in &points {
            per_series.entry(instance).or_default().push((*ts, *v));
        }
        let mut total = None;
        for pts in per_series.values_mut() {
            pts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            if let Some(i) = increase(pts, end - SIZE, end) {
                total = Some(total.unwrap_or(0.0) + i);
            }
        }
        if let Some(t) = total {
            put("increase", t);
        }
    }
    out
}

fn as_map(rows: &[Row]) -> BTreeMap<(String, String, i64), f64> {
    rows.iter()
        .map(|r| {
            let agg = r.name.rsplit('_').next().unwrap().to_owned();
            assert!(r.name.starts_with("req_total:10s_by_host_"), "{}", r.name);
            assert_eq!(r.labels.keys().collect::<Vec<_>>(), vec!["host"]);
            ((r.labels["host"].clone(), agg, r.timestamp), r.value)
        })
        .collect()
}

#[test]
fn window_over_a_file_matches_from_scratch_with_1_2_and_4_workers() {
    let dir = temp_dir("reference");
    let input = dir.join("in.jsonl");
    let samples = write_input(&input, 7);
    let want = reference(&samples);
    let mut outputs = Vec::new();
    for workers in [1, 2, 4] {
        let output = dir.join(format!("out-{workers}.jsonl"));
        let report = run_text(&pipeline(&input, &output), workers);
        assert_eq!(report.errors, 0);
        assert_eq!(
            report.totals.rejected, 8,
            "bad lines are rejected alone and counted"
        );
        assert_eq!(report.totals.samples_in, samples.len() as u64);
        assert!(report.totals.late > 0, "the input has late samples");
        let rows = read_rows(&output);
        let got = as_map(&rows);
        assert_eq!(
            got.len(),
            want.len(),
            "{workers} workers: outputs {} vs reference {}",
            got.len(),
            want.len()
        );
        for (key, w) in &want {
            let g = got.get(key).unwrap_or_else(|| panic!("missing {key:?}"));
            let tolerance = if key.1 == "p90" {
                0.01 * w.abs()
            } else {
                1e-9 * w.abs().max(1.0)
            };
            assert!((g - w).abs() <= tolerance, "{key:?}: got {g}, want {w}");
        }
        outputs.push(std::fs::read(&output).unwrap());
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "outputs differ between worker counts"
    );
}

/// Runs the pipeline `text` as a cluster of two processes of two workers on
/// loopback, and waits for both to succeed.
fn run_two_processes(dir: &Path, text: &str) {
    let file = dir.join("p.yaml");
    std::fs::write(&file, text).unwrap();
    let hosts = dir.join("hosts");
    common::write_host_file(&hosts);
    let spawn = |process: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "run",
                file.to_str().unwrap(),
                "--workers",
                "2",
                "--progress",
                "off",
                "--process",
            ])
            .arg(process.to_string())
            .arg("--hostfile")
            .arg(&hosts)
            .spawn()
            .unwrap()
    };
    let mut p0 = spawn(0);
    let mut p1 = spawn(1);
    assert!(p0.wait().unwrap().success());
    assert!(p1.wait().unwrap().success());
}

#[test]
fn two_processes_on_loopback_match_one() {
    let dir = temp_dir("cluster");
    let input = dir.join("in.jsonl");
    write_input(&input, 11);
    let single = dir.join("single.jsonl");
    run_text(&pipeline(&input, &single), 1);

    let clustered = dir.join("cluster.jsonl");
    run_two_processes(&dir, &pipeline(&input, &clustered));
    let (a, b) = (
        std::fs::read(&single).unwrap(),
        std::fs::read(&clustered).unwrap(),
    );
    assert!(!a.is_empty());
    assert!(
        a == b,
        "two processes gave different output than one worker"
    );
}

/// Windows of `count`, `sum`, `min`, `max`, `avg` and `last` can be
/// pre-aggregated on each worker (`pre_aggregate: true`, and by default in a
/// cluster): the file they write is the same, byte for byte, as with
/// `pre_aggregate: false`, on 1, 2 and 4 workers and on two processes, with
/// the same samples counted late, and its values are the from-scratch
/// reference's.
#[test]
fn pre_aggregated_windows_write_the_same_bytes_as_windows_sent_every_sample() {
    let dir = temp_dir("pre-aggregate");
    let input = dir.join("in.jsonl");
    let samples = write_input(&input, 5);
    let want = reference(&samples);
    let text = |output: &Path, pre_aggregate: &str| {
        pipeline(&input, output).replace(
            "aggregates: [count, sum, min, max, avg, last, stddev, increase, p90]",
            &format!(
                "aggregates: [count, sum, min, max, avg, last]\n    pre_aggregate: {pre_aggregate}"
            ),
        )
    };
    let unfolded = dir.join("unfolded.jsonl");
    let report = run_text(&text(&unfolded, "false"), 2);
    assert!(report.totals.late > 0, "the input has late samples");
    let got = as_map(&read_rows(&unfolded));
    let kept = ["count", "sum", "min", "max", "avg", "last"];
    let want: BTreeMap<_, _> = want
        .into_iter()
        .filter(|(k, _)| kept.contains(&k.1.as_str()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (key, w) in &want {
        let g = got[key];
        assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{key:?}: {g} vs {w}"
        );
    }
    let bytes = std::fs::read(&unfolded).unwrap();
    for workers in [1, 2, 4] {
        let output = dir.join(format!("pre-{workers}.jsonl"));
        let again = run_text(&text(&output, "true"), workers);
        assert_eq!(again.totals.late, report.totals.late, "{workers} workers");
        assert_eq!(again.totals.samples_in, report.totals.samples_in);
        assert!(
            std::fs::read(&output).unwrap() == bytes,
            "{workers} workers: pre-aggregated windows wrote another file"
        );
    }
    let clustered = dir.join("pre-cluster.jsonl");
    // The default, `auto`, pre-aggregates in a cluster.
    run_two_processes(&dir, &text(&clustered, "auto"));
    assert!(
        std::fs::read(&clustered).unwrap() == bytes,
        "two processes: pre-aggregated windows wrote another file"
    );
}

fn generator_pipeline(output: &Path) -> String {
    format!(
        r#"name: generated
sources:
  gen:
    type: generator
    series: 250
    interval: 1s
    start: 2026-01-01T00:00:00Z
    samples: 400
    seed: 3
    out_of_order: 0.1
    late: 0.02
    max_out_of_orderness: 2s
transforms:
  per_series:
    type: window
    inputs: [gen]
    match: '{{__name__=~"cpu_usage|http_requests_total"}}'
    window: {{hopping: 30s, every: 10s}}
    aggregates: [count, avg, max, p50, increase]
    lateness: 1s
  by_region:
    type: window
    inputs: [gen]
    window: {{tumbling: 1m}}
    by: [region]
    aggregates: [count, sum, min, max, stddev, rate]
    lateness: 5s
    late: update
  sessions:
    type: window
    inputs: [gen]
    match: 'http_request_duration_seconds'
    window: {{session: 5s}}
    without: [service]
    aggregates: [count, last]
  renamed:
    type: labels
    inputs: [by_region]
    rename: {{region: zone}}
    set: {{env: test}}
sinks:
  out:
    type: file
    inputs: [per_series, renamed, sessions]
    path: {}
"#,
        output.display()
    )
}

#[test]
fn generator_pipelines_agree_across_worker_counts() {
    let dir = temp_dir("generator");
    let mut results: Vec<Vec<Row>> = Vec::new();
    for workers in [1, 2, 4] {
        let output = dir.join(format!("out-{workers}.jsonl"));
        let report = run_text(&generator_pipeline(&output), workers);
        assert_eq!(report.totals.samples_in, 250 * 400);
        assert!(report.totals.late > 0 || report.totals.corrections > 0);
        results.push(read_rows(&output));
    }
    let first = &results[0];
    assert!(first.len() > 1000, "{} rows", first.len());
    assert!(
        first
            .iter()
            .any(|r| r.labels.get("env").is_some_and(|e| e == "test")
                && r.labels.contains_key("zone"))
    );
    assert!(first.iter().any(|r| {
        r.name
            .starts_with("http_request_duration_seconds:session_5s_without_service_")
    }));
    for other in &results[1..] {
        assert_eq!(other.len(), first.len());
        for (a, b) in first.iter().zip(other) {
            assert_eq!(
                (&a.name, &a.labels, a.timestamp),
                (&b.name, &b.labels, b.timestamp)
            );
            // Groups that merge series from several workers sum in another
            // order: equal up to rounding.
            assert!(
                (a.value - b.value).abs() <= 1e-9 * a.value.abs().max(1.0),
                "{a:?} vs {b:?}"
            );
        }
    }
}

#[test]
fn the_binary_runs_a_finite_pipeline_and_stops_cleanly_on_sigterm() {
    let dir = temp_dir("binary");
    let output = dir.join("out.jsonl");
    let file = dir.join("p.yaml");
    std::fs::write(&file, generator_pipeline(&output)).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--workers", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!read_rows(&output).is_empty());

    // An endless, throttled source: SIGTERM stops it, open windows flush.
    let endless = generator_pipeline(&output).replace("    samples: 400\n", "    rate: 20000\n");
    std::fs::write(&file, endless).unwrap();
    let _ = std::fs::remove_file(&output);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--progress", "log"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_rows(&output);
    // 3 s of samples at 20 K/s is ~48 s of event time: the flushed windows
    // include the last, partial one.
    assert!(
        rows.iter().any(|r| r.name.contains(":1m_by_region_count")),
        "{} rows",
        rows.len()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Finished."));
}

#[test]
fn with_its_log_pipe_closed_the_binary_keeps_running_and_stops_on_sigterm() {
    // `tidemark run ... 2>&1 | head` leaves the process writing its log
    // into a pipe nobody reads: it must neither die nor ignore SIGTERM.
    let (file, output) = endless_pipeline("closed-stderr");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--progress", "log"])
        .stderr(writer)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended when its log could not be written"
    );
    sigterm(&child);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("SIGTERM did not stop the run");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Open windows were flushed on the way out.
    assert!(!read_rows(&output).is_empty());
}

/// An endless, throttled generator pipeline in a fresh directory: its file
/// and its output.
fn endless_pipeline(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let output = dir.join("out.jsonl");
    let file = dir.join("p.yaml");
    let endless = generator_pipeline(&output).replace("    samples: 400\n", "    rate: 20000\n");
    std::fs::write(&file, endless).unwrap();
    (file, output)
}

fn sigterm(child: &std::process::Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn a_tiny_in_flight_budget_changes_nothing_but_speed() {
    // Flow control pauses sources while too many records are unretired;
    // windows hold output back by their lateness, which the budget must
    // allow for or the pipeline would stall. The result must not change.
    let dir = temp_dir("flow");
    let (normal, tiny) = (dir.join("normal.jsonl"), dir.join("tiny.jsonl"));
    run_text(&generator_pipeline(&normal), 2);
    let plan = tidemark_pipelines::compile("flow.yaml", &generator_pipeline(&tiny)).unwrap();
    let mut options = tidemark_pipelines::run::RunOptions::quiet(2);
    options.max_in_flight = 300;
    let report = tidemark_pipelines::run::run(plan, options).unwrap();
    assert_eq!(report.totals.samples_in, 250 * 400);
    assert_same_rows(&read_rows(&normal), &read_rows(&tiny));
}

/// The same rows in the same order, values equal to rounding.
fn assert_same_rows(a: &[Row], b: &[Row]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (&x.name, &x.labels, x.timestamp),
            (&y.name, &y.labels, y.timestamp)
        );
        assert!((x.value - y.value).abs() <= 1e-9 * x.value.abs().max(1.0));
    }
}

/// A pre-aggregated window holds a window of samples folded on each worker
/// until it closes; a source's flow control must count them as taken, or a
/// window of more samples than the budget would stall the source that has
/// to close it (it did: a run of a few seconds never ended).
#[test]
fn a_tiny_in_flight_budget_does_not_stall_a_pre_aggregated_window() {
    let dir = temp_dir("flow-pre");
    let text = |output: &Path| {
        generator_pipeline(output).replace(
            "    aggregates: [count, sum, min, max, stddev, rate]\n",
            "    aggregates: [count, sum, min, max, avg]\n    pre_aggregate: true\n",
        )
    };
    let (normal, tiny) = (dir.join("normal.jsonl"), dir.join("tiny.jsonl"));
    run_text(&text(&normal), 2);
    let plan = tidemark_pipelines::compile("flow.yaml", &text(&tiny)).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut options = tidemark_pipelines::run::RunOptions::quiet(2);
        // A minute's window holds 15 000 samples of the 250 series.
        options.max_in_flight = 300;
        let _ = done.send(tidemark_pipelines::run::run(plan, options));
    });
    let report = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the run stalled: flow control waits for samples the window holds")
        .unwrap();
    assert_eq!(report.totals.samples_in, 250 * 400);
    let (a, b) = (read_rows(&normal), read_rows(&tiny));
    assert!(a.iter().any(|r| r.name.ends_with(":1m_by_region_avg")));
    assert_same_rows(&a, &b);
}

/// A generator and a silent standard input feed one window.
fn idle_pipeline(output: &Path, idle: bool) -> String {
    format!(
        r#"name: idle
sources:
  busy:
    type: generator
    series: 100
    interval: 1s
    start: 2026-01-01T00:00:00Z
    rate: 20000
  quiet:
    type: file
    path: "-"
{}transforms:
  w:
    type: window
    inputs: [busy, quiet]
    window: {{tumbling: 10s}}
    aggregates: [count]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        if idle {
            "    idle_timeout: 500ms\n"
        } else {
            ""
        },
        output.display()
    )
}

#[test]
fn an_idle_source_does_not_hold_the_watermark_back() {
    let dir = temp_dir("idle");
    let mut rows = Vec::new();
    for idle in [false, true] {
        let output = dir.join(format!("out-{idle}.jsonl"));
        let file = dir.join(format!("p-{idle}.yaml"));
        std::fs::write(&file, idle_pipeline(&output, idle)).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["run", file.to_str().unwrap(), "--progress", "off"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        // Read while standard input is still open and silent.
        rows.push(
            std::fs::read_to_string(&output)
                .unwrap_or_default()
                .lines()
                .count(),
        );
        drop(child.stdin.take());
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(
        rows[0], 0,
        "without idle_timeout the silent source holds every window open"
    );
    assert!(
        rows[1] > 100,
        "with idle_timeout windows close while the source is silent: {} rows",
        rows[1]
    );
}

#[test]
fn network_sources_need_the_server() {
    let dir = temp_dir("network-run");
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "name: n\nsources:\n  in: {type: grpc}\nsinks:\n  out: {type: console, inputs: [in]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("apply this pipeline to `tidemark serve`")
    );
}

/// A `file` sink on a device is written and flushed but not synced (which
/// devices refuse): the whole output goes to `/dev/null` and the run ends
/// cleanly. Before, the first sync failed with EINVAL and the sink gave up.
#[test]
fn a_file_sink_on_dev_null_writes_everything() {
    let dir = temp_dir("e2e-dev-null");
    let input = dir.join("in.jsonl");
    write_input(&input, 5);
    let to_file = run_text(&pipeline(&input, &dir.join("out.jsonl")), 2);
    let to_null = run_text(&pipeline(&input, Path::new("/dev/null")), 2);
    assert_eq!(to_null.errors, 0);
    assert!(to_file.totals.samples_out > 0);
    assert_eq!(to_null.totals.samples_out, to_file.totals.samples_out);
}

/// A `file` sink whose path can never be created (below a regular file)
/// fails the run with the cause instead of dropping its output; nothing
/// is released as durable.
#[test]
fn a_file_sink_that_can_never_write_fails_the_run() {
    let dir = temp_dir("e2e-not-a-dir");
    let input = dir.join("in.jsonl");
    write_input(&input, 6);
    let blocker = dir.join("plain-file");
    std::fs::write(&blocker, "x").unwrap();
    let output = blocker.join("out.jsonl");
    let plan = tidemark_pipelines::compile("test.yaml", &pipeline(&input, &output)).unwrap();
    let error = tidemark_pipelines::run::run(plan, tidemark_pipelines::run::RunOptions::quiet(2))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(error.contains("cannot create"), "{error}");
    assert!(
        error.contains("configuration error, not retried"),
        "{error}"
    );
}

/// A timestamp near `i64::MAX` is rejected at the source (it made the
/// window spin forever); the rest of the file is windowed as usual.
#[test]
fn timestamps_past_the_year_9999_are_rejected_and_the_run_ends() {
    let dir = temp_dir("e2e-far-future");
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"name\":\"c\",\"labels\":{\"host\":\"a\"},\"timestamp\":1000,\"value\":1}\n\
         {\"name\":\"c\",\"labels\":{\"host\":\"a\"},\"timestamp\":9223372036854775000,\"value\":2}\n",
    )
    .unwrap();
    let output = dir.join("out.jsonl");
    let report = run_text(&pipeline(&input, &output), 2);
    assert_eq!(report.totals.rejected, 1);
    let rows = read_rows(&output);
    assert!(
        rows.iter()
            .any(|r| r.name == "c:10s_by_host_count" && r.value == 1.0),
        "{rows:?}"
    );
}

/// Two signals back to back (GNU `timeout` signals the process and its
/// group) are one request: the run flushes and exits 0, not 130.
#[test]
fn two_signals_back_to_back_still_flush() {
    let (file, output) = endless_pipeline("two-signals");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--progress", "off"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    sigterm(&child);
    std::thread::sleep(std::time::Duration::from_millis(20));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {log}", out.status);
    assert!(log.contains("Finished."), "{log}");
    assert!(!read_rows(&output).is_empty());
}

/// With a sink whose store is gone (nothing listens on its port), SIGTERM
/// cannot flush: the run gives up after `--shutdown-timeout`, exits 1 and
/// says what was not written, instead of retrying forever.
#[test]
fn a_stop_with_a_sink_down_is_bounded_by_the_shutdown_timeout() {
    let dir = temp_dir("bounded-stop");
    let file = dir.join("p.yaml");
    let pipeline = r#"name: bounded
sources:
  gen: {type: generator, series: 20, rate: 2000}
sinks:
  pg:
    type: timescaledb
    inputs: [gen]
    url: "postgresql://postgres@127.0.0.1:1/postgres"
    table: nowhere
"#;
    std::fs::write(&file, pipeline).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--progress", "off"])
        .args(["--shutdown-timeout", "2s"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("did not stop within 2s"), "{log}");
    assert!(log.contains("sink \"pg\" holds"), "{log}");
}

/// A line on standard input goes on at once, not when 1 024 have
/// gathered or at EOF (before, nothing was written until then); SIGTERM stops the run while standard input is
/// still open.
#[test]
fn standard_input_is_read_line_by_line_and_a_stop_does_not_wait_for_eof() {
    use std::io::Write;
    let dir = temp_dir("e2e-stdin");
    let output = dir.join("out.jsonl");
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        format!(
            "name: stdin\nsources:\n  in: {{type: file, path: \"-\"}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
            output.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", file.to_str().unwrap(), "--progress", "off"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Each line moves the watermark past the one before it, which the
    // sink then writes.
    for i in 0..4 {
        let ts = 1_000 * (i + 1);
        writeln!(stdin, r#"{{"name":"m","timestamp":{ts},"value":{i}}}"#).unwrap();
        stdin.flush().unwrap();
        wait_until_lines(&output, i);
    }
    // Standard input stays open: the stop must not wait for it.
    sigterm(&child);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the run waited for standard input to end"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    drop(stdin);
    // The stop flushed the last one.
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 4);
}

/// Waits up to 10 s for `path` to hold `n` lines.
fn wait_until_lines(path: &Path, n: usize) {
    let start = std::time::Instant::now();
    loop {
        let lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count();
        if lines >= n {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{} holds {lines} lines, not {n}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A Kafka producer that can never be created (a property librdkafka
/// refuses) fails the run with its cause; before, the sink held its input
/// and the run never ended.
#[test]
fn a_kafka_sink_that_can_never_write_fails_the_run() {
    let yaml = "name: k\nsources:\n  gen: {type: generator, series: 5, samples: 100}\n\
                sinks:\n  out:\n    type: kafka\n    inputs: [gen]\n    brokers: 127.0.0.1:1\n    topic: t\n    \
                options: {compression.type: nonsense}\n";
    let plan = tidemark_pipelines::compile("kafka.yaml", yaml).unwrap();
    let error = tidemark_pipelines::run::run(plan, tidemark_pipelines::run::RunOptions::quiet(1))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(error.contains("cannot write to Kafka"), "{error}");
    assert!(error.contains("compression.type"), "{error}");
    assert!(
        error.contains("configuration error, not retried"),
        "{error}"
    );
}

/// The first and last windows of a run over a file are partial: the first
/// began before the file's first watermark, the end of the file closed the
/// last before the watermark passed its end. `partial: mark` labels them
/// `partial="true"` (and only them, with the values of any other window),
/// `partial: drop` leaves them out; both count them.
#[test]
fn partial_first_and_last_windows_are_marked_or_dropped() {
    let dir = temp_dir("e2e-partial");
    let input = dir.join("in.jsonl");
    let samples = write_input(&input, 7);
    let want = reference(&samples);
    let ends: std::collections::BTreeSet<i64> = want.keys().map(|k| k.2).collect();
    let (first, last) = (*ends.first().unwrap(), *ends.last().unwrap());
    // One partial result per host with samples in a partial window.
    let partial: std::collections::BTreeSet<(&String, i64)> = want
        .keys()
        .filter(|k| k.2 == first || k.2 == last)
        .map(|k| (&k.0, k.2))
        .collect();
    let partial = partial.len() as u64;
    let with = |partial: &str, output: &Path| {
        pipeline(&input, output).replace(
            "    lateness: 2s\n",
            &format!("    lateness: 2s\n    partial: {partial}\n"),
        )
    };

    let output = dir.join("mark.jsonl");
    let report = run_text(&with("mark", &output), 2);
    assert_eq!(report.totals.partial_windows, partial);
    let rows = read_rows(&output);
    let mut marked = std::collections::BTreeSet::new();
    let mut got = BTreeMap::new();
    for mut r in rows {
        if r.labels.remove("partial").is_some() {
            marked.insert(r.timestamp);
        }
        got.insert(
            (
                r.labels["host"].clone(),
                r.name.rsplit('_').next().unwrap().to_owned(),
                r.timestamp,
            ),
            r.value,
        );
    }
    assert_eq!(marked, [first, last].into(), "marked window ends");
    assert_eq!(got.len(), want.len());
    for (key, w) in &want {
        let g = got[key];
        assert!(
            (g - w).abs() <= 0.01 * w.abs().max(1.0),
            "{key:?}: {g} vs {w}"
        );
    }

    let output = dir.join("drop.jsonl");
    let report = run_text(&with("drop", &output), 1);
    assert_eq!(report.totals.partial_windows, partial);
    let got = as_map(&read_rows(&output));
    let kept: Vec<_> = want
        .keys()
        .filter(|k| k.2 != first && k.2 != last)
        .collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), kept);

    // The default emits them as any other window.
    let output = dir.join("emit.jsonl");
    let report = run_text(&pipeline(&input, &output), 1);
    assert_eq!(report.totals.partial_windows, partial);
    assert_eq!(as_map(&read_rows(&output)).len(), want.len());
}
