//! Checkpoints of operator state (`tidemark serve --data-dir`): windows and
//! anomaly models survive `kill -9` and a restart at another number of
//! workers, and an in-place update keeps what did not change.

use tidemark_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::server::{Server, wait_until};
use common::temp_dir;
use serde_json::Value;
use tidemark_server::ingest::proto::WriteRequest;
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;

/// A minute boundary.
const MINUTE: i64 = 1_700_000_040_000;
/// Request `k` holds one sample of each series at `T0 + k * STEP`, so 1200
/// requests fill the one-minute window `(MINUTE, MINUTE + 1m]`.
const T0: i64 = MINUTE + STEP;
const STEP: i64 = 50;
const SERIES: i64 = 4;
const REQUESTS: i64 = 1200;
/// Kills at random moments (the issue's twenty).
const KILLS: usize = 20;

/// A value with a daily-like wave and, at request 1000, a spike: what an
/// anomaly model has to learn first.
fn value(k: i64, s: i64) -> f64 {
    let wave = ((k as f64) / 40.0).sin() * 10.0;
    let spike = if k == 1000 { 400.0 } else { 0.0 };
    100.0 + s as f64 * 7.0 + wave + spike + (k % 3) as f64
}

fn request(k: i64) -> WriteRequest {
    common::load_request(SERIES, T0 + k * STEP, |s| value(k, s))
}

/// One sample far ahead: closes every window.
fn closing() -> WriteRequest {
    let mut r = request(0);
    for s in &mut r.series {
        s.points[0].timestamp_ms = T0 + 3_600_000;
    }
    r
}

/// The rules: an alert whose pending and firing episodes span the kills
/// (series 1 and 2 cross 108 with the wave), and a recorded series.
const RULES: &str = "{groups: [{name: g, rules: [\
    {alert: High, expr: 'avg_over_time(load[5s]) > 108', for: 3s, annotations: {summary: '{{ $labels.s }} at {{ $value }}'}}, \
    {record: 'load:max5s', expr: 'max_over_time(load[5s])'}]}]}";

/// The rules of the new version (`explain`): a recorded series added
/// before the others, whose state the others keep.
const RULES_V2: &str = "{groups: [{name: g, rules: [\
    {record: 'load:min5s', expr: 'min_over_time(load[5s])'}, \
    {alert: High, expr: 'avg_over_time(load[5s]) > 108', for: 3s, annotations: {summary: '{{ $labels.s }} at {{ $value }}'}}, \
    {record: 'load:max5s', expr: 'max_over_time(load[5s])'}]}]}";

/// The routing: groups by alert name, told again every 10 s while firing.
const ROUTING: &str = "{route: {receiver: team, group_by: [alertname], group_wait: 2s, \
    group_interval: 5s, repeat_interval: 10s}, receivers: [{name: team}]}";

/// The pipeline; `explain` makes a new version of it: the score explains
/// (its model starts afresh), the window adds `avg` and the rules a
/// recorded series (their state is carried over).
fn pipeline(name: &str, r: &Run, explain: bool) -> String {
    format!(
        "name: {name}\nsources:\n  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 200ms}}\n\
         transforms:\n  w: {{type: window, inputs: [in], window: {{tumbling: 1m}}, by: [s], aggregates: [count, sum{avg}]}}\n  \
         sc: {{type: score, inputs: [in], explain: {explain}}}\n  \
         rules: {{type: alert, inputs: [in], interval: 1s, rules: {rules}}}\n  \
         page: {{type: route, inputs: [rules.alerts], config: {ROUTING}}}\n  \
         inc: {{type: correlate, inputs: [rules.alerts], rules: {{labels: {{by: [alertname], weight: 1}}}}}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}, append: true}}\n  \
         scores: {{type: file, inputs: [sc], path: {}, append: true}}\n  \
         recorded: {{type: file, inputs: [rules, inc], path: {}, append: true}}\n  \
         alerts: {{type: file, inputs: [rules.alerts], path: {}, append: true}}\n  \
         notes: {{type: file, inputs: [page], path: {}, append: true}}\n  \
         incidents: {{type: file, inputs: [inc.incidents], path: {}, append: true}}\n",
        r.out.display(),
        r.scores.display(),
        r.alerts.with_extension("samples").display(),
        r.alerts.display(),
        r.alerts.with_extension("notes").display(),
        r.alerts.with_extension("incidents").display(),
        avg = if explain { ", avg" } else { "" },
        rules = if explain { RULES_V2 } else { RULES },
    )
}

/// The lines of the rules' files (recorded samples, `ALERTS` and
/// `ALERTS_INCIDENT` in `<path>.samples`, alert changes in `path`, the
/// route's notifications in `<path>.notes`, incident records in
/// `<path>.incidents`) stamped at or before `until`, as a set: a line
/// written again after a restart is written the same.
fn rule_lines(path: &Path, until: i64) -> BTreeSet<String> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    [
        read(&path.with_extension("samples")),
        read(path),
        read(&path.with_extension("notes")),
        read(&path.with_extension("incidents")),
    ]
    .concat()
    .lines()
    .filter(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["timestamp"].as_i64().or(v["at"].as_i64()).unwrap() <= until
    })
    .map(str::to_owned)
    .collect()
}

struct Sender {
    runtime: tokio::runtime::Runtime,
    client: IngestServiceClient<tonic::transport::Channel>,
}

impl Sender {
    fn new(server: &Server) -> Sender {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let url = format!("http://127.0.0.1:{}", server.grpc);
        let client = runtime.block_on(IngestServiceClient::connect(url)).unwrap();
        Sender { runtime, client }
    }

    fn send(&mut self, r: WriteRequest) {
        let reply = self.runtime.block_on(self.client.write(r)).unwrap();
        assert_eq!(reply.into_inner().accepted, SERIES as u64);
    }
}

/// Rows of a file sink: (name, s, timestamp) to value, checking that a row
/// written twice was written the same.
fn rows(path: &Path) -> BTreeMap<(String, String, i64), f64> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["name"].as_str().unwrap().to_owned(),
            v["labels"]["s"].as_str().unwrap_or("").to_owned(),
            v["timestamp"].as_i64().unwrap(),
        );
        let value = v["value"].as_f64().unwrap();
        if let Some(old) = out.insert(key.clone(), value) {
            assert_eq!(old, value, "{key:?} written twice, differently");
        }
    }
    out
}

/// The newest complete checkpoint of `pipeline` (its cut), if any.
fn newest_checkpoint(data: &Path, pipeline: &str) -> Option<i64> {
    std::fs::read_dir(data.join("checkpoints").join(pipeline))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("MANIFEST.json").exists())
        .filter_map(|e| e.file_name().to_str()?.split_once('-')?.0.parse().ok())
        .max()
}

/// Lets the checkpoint interval pass, then sends 40 more requests (two
/// seconds of event time) to each sender: the first cut they cross is a
/// checkpoint. Waits until it is complete in `data` and returns it.
fn checkpoint_after(senders: &mut [&mut Sender], k: &mut i64, data: &Path, pipeline: &str) -> i64 {
    std::thread::sleep(Duration::from_millis(700));
    let before = T0 + (*k - 1) * STEP;
    for _ in 0..40 {
        for s in senders.iter_mut() {
            s.send(request(*k));
        }
        *k += 1;
    }
    wait_until("a checkpoint of what was sent", || {
        newest_checkpoint(data, pipeline).is_some_and(|at| at > before)
    });
    newest_checkpoint(data, pipeline).unwrap()
}

/// Samples of the requests before `k` at or after the cut `at`: what a
/// restore from it reads again.
fn after_cut(at: i64, k: i64) -> u64 {
    (0..k).filter(|k| T0 + k * STEP >= at).count() as u64 * SERIES as u64
}

fn samples_in(server: &Server, pipeline: &str) -> u64 {
    server
        .json("GET", &format!("/api/v1/pipelines/{pipeline}"), None)
        .1["samples_in"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// A server checkpointing every 100 ms, for sources that take only a
/// second or two to read.
fn often(data: &Path, workers: &str) -> Server {
    let mut a = common::server::checkpointed(data, workers);
    a[5] = "100ms".into();
    Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0)
}

fn start(data: &Path, workers: &str) -> Server {
    let a = common::server::checkpointed(data, workers);
    Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0)
}

/// Applies pipeline `p` writing to `r`'s files, and connects a sender.
fn apply(server: &Server, r: &Run) -> Sender {
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&pipeline("p", r, false)));
    assert_eq!(status, 201, "{body}");
    Sender::new(server)
}

struct Run {
    data: PathBuf,
    out: PathBuf,
    scores: PathBuf,
    alerts: PathBuf,
}

fn run(dir: &Path, name: &str) -> Run {
    Run {
        data: dir.join(format!("{name}-data")),
        out: dir.join(format!("{name}-windows.jsonl")),
        scores: dir.join(format!("{name}-scores.jsonl")),
        alerts: dir.join(format!("{name}-alerts.jsonl")),
    }
}

/// A server killed with `kill -9` three times, each time after a
/// checkpoint, and restarted on 2 and then 4 workers, against one that
/// runs through: the one-minute windows are equal and exact, every score
/// after each restart equals the uninterrupted run's (the models came back
/// as they were), and the restarted server read again only what came after
/// the checkpoint, not the window's samples.
#[test]
fn windows_and_models_survive_kill_9_and_a_restart_at_another_worker_count() {
    let dir = temp_dir("checkpoint-kill");
    let (a, b) = (run(&dir, "killed"), run(&dir, "through"));
    let (mut killed, through) = (start(&a.data, "1"), start(&b.data, "1"));
    let (mut to_a, mut to_b) = (apply(&killed, &a), apply(&through, &b));
    let kills = [(300, "2"), (600, "4"), (900, "1")];
    let mut cuts = Vec::new();
    let mut k = 0;
    for (until_k, workers) in kills {
        while k < until_k {
            to_a.send(request(k));
            to_b.send(request(k));
            k += 1;
        }
        let at = checkpoint_after(&mut [&mut to_a, &mut to_b], &mut k, &a.data, "p");
        cuts.push(at);
        killed.kill_hard();
        killed = start(&a.data, workers);
        to_a = Sender::new(&killed);
        // Only what came after the checkpoint is read again, not the
        // window's earlier samples: those are in the restored state.
        let again = after_cut(at, k);
        assert!(again <= 40 * SERIES as u64, "{again}");
        wait_until("the log read from the checkpoint", || {
            samples_in(&killed, "p") == again
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(samples_in(&killed, "p"), again, "read more again");
        // The incident of the alerts that fired before the checkpoint is
        // shown again at once, though nothing changed it since.
        let (_, shown) = killed.json("GET", "/api/v1/incidents", None);
        let shown = shown["data"]["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            shown
                .iter()
                .any(|i| i["openedAt"].as_i64().is_some_and(|t| t < at)),
            "no incident from before the checkpoint: {shown:?}"
        );
    }
    while k < REQUESTS {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    let rules_a = close_and_compare(&a, &b, std::slice::from_mut(&mut to_a), &mut to_b);
    // Some alert was pending or firing across a kill: its `activeAt` came
    // back with the restored state.
    let spans = |cut: i64| {
        rules_a.iter().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["activeAt"].as_i64().is_some_and(|t| t < cut)
                && v["at"].as_i64().is_some_and(|t| t >= cut)
        })
    };
    assert!(
        cuts.iter().any(|c| spans(*c)),
        "no alert spans a restart: {cuts:?}"
    );
    assert!(killed.stop().success());
    assert!(through.stop().success());
}

/// Rows of a file sink keyed by name, labels and timestamp, checking that
/// a row written twice was written the same.
fn keyed_rows(path: &Path) -> BTreeMap<(String, String, i64), f64> {
    let mut out = BTreeMap::new();
    for r in common::read_rows(path) {
        let key = (r.name, format!("{:?}", r.labels), r.timestamp);
        if let Some(old) = out.insert(key.clone(), r.value) {
            assert!(
                old == r.value || (old.is_nan() && r.value.is_nan()),
                "{key:?} written twice, differently"
            );
        }
    }
    out
}

/// Asserts that two sinks' rows are the same, naming the first few that
/// differ (the maps are large).
fn assert_same_rows(
    what: &str,
    got: &BTreeMap<(String, String, i64), f64>,
    want: &BTreeMap<(String, String, i64), f64>,
) {
    let same = |a: &f64, b: &f64| a == b || (a.is_nan() && b.is_nan());
    let differ: Vec<String> = want
        .iter()
        .filter(|(k, v)| !got.get(*k).is_some_and(|g| same(g, v)))
        .map(|(k, v)| format!("{k:?}: {:?} instead of {v}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k:?}: not expected")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} rows differ, such as {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}

/// A generator pipeline: 10 series, 400 samples each at `rate` samples/s
/// (0: as fast as it goes), anomalies injected, into a window and a score.
fn generator_pipeline(start: &str, rate: u32, windows: &Path, scores: &Path) -> String {
    format!(
        "name: gen\nsources:\n  g: {{type: generator, series: 10, interval: 1s, start: '{start}', samples: 400, \
         rate: {rate}, seed: 7, anomalies: {{probability: 0.5, every: 100}}}}\n\
         transforms:\n  w: {{type: window, inputs: [g], window: {{tumbling: 1m}}, by: [host], aggregates: [count, sum, max]}}\n  \
         sc: {{type: score, inputs: [g]}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}, append: true}}\n  \
         scores: {{type: file, inputs: [sc], path: {}, append: true}}\n",
        windows.display(),
        scores.display(),
    )
}

/// A generator (`start: now`) killed with `kill -9` after a checkpoint and
/// restarted at another number of workers goes on where the checkpoint
/// left it, with the start the first run took: its windows and scores
/// equal those of an uninterrupted run from that start, and the restarted
/// server generated only the samples after the checkpoint.
#[test]
fn a_generator_goes_on_from_its_checkpoint_after_kill_9() {
    let dir = temp_dir("checkpoint-generator");
    let data = dir.join("data");
    let (windows, scores) = (dir.join("windows.jsonl"), dir.join("scores.jsonl"));
    let mut server = start(&data, "2");
    let text = generator_pipeline("now", 500, &windows, &scores);
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&text));
    assert_eq!(status, 201, "{body}");
    wait_until("a checkpoint after a quarter of the samples", || {
        newest_checkpoint(&data, "gen").is_some() && samples_in(&server, "gen") >= 1_000
    });
    server.kill_hard();
    let cut = newest_checkpoint(&data, "gen").unwrap();
    server = start(&data, "1");
    wait_until("the pipeline finished", || {
        server.json("GET", "/api/v1/pipelines/gen", None).1["state"] == "finished"
    });
    // Tick 0 of every series is at the start, which the first run took.
    let got_scores = keyed_rows(&scores);
    let start_ms = got_scores.keys().map(|(_, _, t)| *t).min().unwrap();
    assert_eq!(start_ms % 1_000, 0, "now is taken at a whole second");
    // Only the ticks from the first one at or after the cut were made again.
    let first = (cut - start_ms + 999).div_euclid(1_000);
    assert!((1..400).contains(&first), "cut {cut}, start {start_ms}");
    assert_eq!(samples_in(&server, "gen"), 10 * (400 - first) as u64);
    assert!(server.stop().success());

    let start_text = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(start_ms as u64),
    )
    .to_string();
    let (ref_windows, ref_scores) = (dir.join("ref-windows.jsonl"), dir.join("ref-scores.jsonl"));
    common::run_text(
        &generator_pipeline(&start_text, 0, &ref_windows, &ref_scores),
        2,
    );
    let want_scores = keyed_rows(&ref_scores);
    assert!(
        want_scores.len() > 10 * 400 * 2,
        "a score and a flag per sample, and per injected anomaly's marker"
    );
    assert_same_rows("scores", &got_scores, &want_scores);
    let (got, want) = (keyed_rows(&windows), keyed_rows(&ref_windows));
    assert!(!want.is_empty());
    assert_same_rows("windows", &got, &want);
}

/// Writes the input of the file test: `LINES` samples of 4 series, one
/// tick of the four every 100 ms of event time from `MINUTE`, `shift`
/// added to every value.
fn write_samples(path: &Path, shift: f64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for j in 0..FILE_LINES {
        let (s, k) = (j % 4, j / 4);
        let v = value(k % 1_500, s) + shift;
        writeln!(
            f,
            r#"{{"name":"load","labels":{{"s":"{s}"}},"timestamp":{},"value":{v}}}"#,
            MINUTE + k * 100
        )
        .unwrap();
    }
    f.flush().unwrap();
}

const FILE_LINES: i64 = 400_000;

fn file_pipeline(input: &Path, windows: &Path, scores: &Path) -> String {
    format!(
        "name: fp\nsources:\n  f: {{type: file, path: {}}}\n\
         transforms:\n  w: {{type: window, inputs: [f], window: {{tumbling: 1m}}, by: [s], aggregates: [count, sum]}}\n  \
         sc: {{type: score, inputs: [f]}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}, append: true}}\n  \
         scores: {{type: file, inputs: [sc], path: {}, append: true}}\n",
        input.display(),
        windows.display(),
        scores.display(),
    )
}

/// A file source killed with `kill -9` once a checkpoint is complete and
/// restarted at another number of workers reads on from the checkpoint's
/// position: its windows and scores equal those of a run from scratch,
/// and the restarted server read only the lines after that position. A
/// file changed before that position stops the pipeline with an error
/// that says so, and nothing more is written.
#[test]
fn a_file_source_reads_on_from_its_checkpoint_and_refuses_a_changed_file() {
    let dir = temp_dir("checkpoint-file");
    let data = dir.join("data");
    let input = dir.join("input.jsonl");
    write_samples(&input, 0.0);
    let (windows, scores) = (dir.join("windows.jsonl"), dir.join("scores.jsonl"));
    let mut server = often(&data, "1");
    let text = file_pipeline(&input, &windows, &scores);
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&text));
    assert_eq!(status, 201, "{body}");
    // (The first checkpoint is cut at the first sample.)
    wait_until("a checkpoint after the first sample", || {
        newest_checkpoint(&data, "fp").is_some_and(|at| at > MINUTE)
    });
    server.kill_hard();
    let cut = newest_checkpoint(&data, "fp").unwrap();
    server = start(&data, "2");
    let finished = || server.json("GET", "/api/v1/pipelines/fp", None).1["state"] == "finished";
    wait_until("the pipeline finished", finished);
    // The lines of the ticks at or after the cut, and no other.
    let after = (0..FILE_LINES)
        .filter(|j| MINUTE + j / 4 * 100 >= cut)
        .count() as u64;
    assert!(after < FILE_LINES as u64, "cut {cut}");
    assert_eq!(samples_in(&server, "fp"), after, "cut {cut}");
    assert!(server.stop().success());

    let (ref_windows, ref_scores) = (dir.join("ref-windows.jsonl"), dir.join("ref-scores.jsonl"));
    common::run_text(&file_pipeline(&input, &ref_windows, &ref_scores), 1);
    let want = keyed_rows(&ref_scores);
    assert_eq!(
        want.len(),
        2 * FILE_LINES as usize,
        "a score and a flag per sample"
    );
    assert_same_rows("scores", &keyed_rows(&scores), &want);
    let want = keyed_rows(&ref_windows);
    assert!(!want.is_empty());
    assert_same_rows("windows", &keyed_rows(&windows), &want);

    // The same pipeline over a file that was written again: refused.
    write_samples(&input, 1.0);
    let before = (
        std::fs::read(&windows).unwrap(),
        std::fs::read(&scores).unwrap(),
    );
    let server = start(&data, "1");
    wait_until("the pipeline failed", || {
        server.json("GET", "/api/v1/pipelines/fp", None).1["state"] == "failed"
    });
    let (_, status) = server.json("GET", "/api/v1/pipelines/fp", None);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("where the checkpoint left it") && error.contains("replaced"),
        "{status}"
    );
    assert_eq!(samples_in(&server, "fp"), 0);
    assert!(server.stop().success());
    let after = (
        std::fs::read(&windows).unwrap(),
        std::fs::read(&scores).unwrap(),
    );
    assert!(before == after, "output written from a changed file");
}

/// A replay of an archive (`source`, a flow mapping): a window per series
/// and a score of every `cpu_usage` sample (a fifth of them), each into a
/// file. (The window's aggregates do not depend on the order samples
/// arrive in: two readers' samples of one series, from two files, meet in
/// no fixed order, and with it the last bits of a sum.)
fn replay_pipeline(source: &str, windows: &Path, scores: &Path) -> String {
    format!(
        "name: rp\nsources:\n  a: {source}\n\
         transforms:\n  w: {{type: window, inputs: [a], window: {{tumbling: 1m}}, aggregates: [count, min, max]}}\n  \
         sc: {{type: score, inputs: [a], detector: light, match: cpu_usage}}\n\
         sinks:\n  out: {{type: file, inputs: [w], path: {}, append: true}}\n  \
         scores: {{type: file, inputs: [sc], path: {}, append: true}}\n",
        windows.display(),
        scores.display(),
    )
}

/// Writes `series` generator series of `samples` each (one a second from
/// 2026-01-01) into the sink `sink` (a flow mapping without `inputs`).
fn write_archive(series: u64, samples: u64, sink: &str) {
    let sink = sink.replacen('{', "{inputs: [g], ", 1);
    common::run_text(
        &format!(
            "name: arch\nsources:\n  g: {{type: generator, series: {series}, interval: 1s, start: '2026-01-01T00:00:00Z', \
             samples: {samples}, rate: 0, seed: 3}}\n\
             sinks:\n  raw: {sink}\n"
        ),
        2,
    );
}

/// A replay of `source` (an archive of `series` x `samples` written by
/// [`write_archive`]) on 2 workers, killed with `kill -9` once a
/// checkpoint is complete and restarted on 1, reads each series on from
/// where the worker that read it had got to: its windows and scores equal
/// those of a replay from scratch (a sample read twice, or missed, would
/// change a count or a score), and the restarted server read only samples
/// after the cut.
fn replay_survives_kill_9(dir: &Path, source: &str, series: u64, samples: u64) {
    let data = dir.join("data");
    let (windows, scores) = (dir.join("windows.jsonl"), dir.join("scores.jsonl"));
    let total = series * samples;
    let start_ms = 1_767_225_600_000; // 2026-01-01
    let mut server = often(&data, "2");
    let text = replay_pipeline(source, &windows, &scores);
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&text));
    assert_eq!(status, 201, "{body}");
    wait_until("a checkpoint inside the replay", || {
        newest_checkpoint(&data, "rp").is_some_and(|at| at > start_ms)
    });
    server.kill_hard();
    let cut = newest_checkpoint(&data, "rp").unwrap();
    server = often(&data, "1");
    let finished = || server.json("GET", "/api/v1/pipelines/rp", None).1["state"] == "finished";
    wait_until("the pipeline finished", finished);
    // Samples at or after the cut only (one per series and second), but
    // not all of them: those already handed on when the cut was crossed
    // are in the state.
    let first = (cut - start_ms + 999).div_euclid(1_000) as u64;
    assert!((1..samples).contains(&first), "cut {cut}");
    let read = samples_in(&server, "rp");
    assert!(
        read > 0 && read <= series * (samples - first),
        "cut {cut}: {read} read again"
    );
    assert!(server.stop().success());

    let (ref_windows, ref_scores) = (dir.join("ref-windows.jsonl"), dir.join("ref-scores.jsonl"));
    common::run_text(&replay_pipeline(source, &ref_windows, &ref_scores), 2);
    let want = keyed_rows(&ref_scores);
    assert_eq!(
        want.len(),
        2 * total as usize / 5,
        "a score and a flag per cpu_usage sample"
    );
    assert_same_rows("scores", &keyed_rows(&scores), &want);
    let want = keyed_rows(&ref_windows);
    assert!(!want.is_empty());
    assert_same_rows("windows", &keyed_rows(&windows), &want);
}

/// [`replay_survives_kill_9`] for a `parquet` replay: files are split
/// among workers by their names.
#[test]
fn a_replay_reads_on_from_its_checkpoint_after_kill_9() {
    // Enough that a test build takes seconds to replay it.
    let (series, samples) = (100, 30_000);
    let dir = temp_dir("checkpoint-replay");
    let archive = dir.join("archive");
    write_archive(
        series,
        samples,
        &format!(
            "{{type: parquet, path: {}, roll_interval: 5m}}",
            archive.display()
        ),
    );
    let source = format!(
        "{{type: parquet, path: {}, pipeline: arch, output: raw}}",
        archive.display()
    );
    replay_survives_kill_9(&dir, &source, series, samples);
}

/// [`replay_survives_kill_9`] for a `timescaledb` replay against
/// PostgreSQL (`deploy/postgres.sh start 15432`; `TIDEMARK_POSTGRES`), in
/// pages of 200 rows, which end inside the rows of one time: series are
/// split among workers by their ids.
#[test]
fn a_timescaledb_replay_reads_on_from_its_checkpoint_after_kill_9() {
    let (series, samples) = (50, 4_000);
    let dir = temp_dir("checkpoint-replay-pg");
    let url = common::pg::postgres();
    let (table, series_table) = common::pg::fresh_table(&url, "replay_checkpoint");
    let tables = format!("url: \"{url}\", table: {table}, series_table: {series_table}");
    write_archive(series, samples, &format!("{{type: timescaledb, {tables}}}"));
    let source = format!("{{type: timescaledb, {tables}, page_rows: 200}}");
    replay_survives_kill_9(&dir, &source, series, samples);
}

/// Twenty `kill -9` at random moments (not after a checkpoint: while
/// requests are being taken in, windows cut and checkpoints written), each
/// restart on 1, 2 or 4 workers, against a server that runs through:
/// every window, score, recorded sample and alert change is equal.
#[test]
fn twenty_kills_at_random_moments_change_no_output() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let dir = temp_dir("checkpoint-random");
    let (a, b) = (run(&dir, "killed"), run(&dir, "through"));
    let (mut killed, through) = (start(&a.data, "2"), start(&b.data, "1"));
    let (mut to_a, mut to_b) = (apply(&killed, &a), apply(&through, &b));
    let mut k = 0;
    // A checkpoint first: before one, a restart starts with empty models.
    while k < 100 {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    checkpoint_after(&mut [&mut to_a, &mut to_b], &mut k, &a.data, "p");
    for _ in 0..KILLS {
        for _ in 0..rng.random_range(10..50) {
            to_a.send(request(k));
            to_b.send(request(k));
            k += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..800)));
        killed.kill_hard();
        killed = start(&a.data, ["1", "2", "4"][rng.random_range(0..3)]);
        wait_until("the pipeline back", || {
            killed.json("GET", "/api/v1/pipelines/p", None).1["state"] == "running"
        });
        to_a = Sender::new(&killed);
    }
    while k < REQUESTS {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    close_and_compare(&a, &b, std::slice::from_mut(&mut to_a), &mut to_b);
    assert!(killed.stop().success());
    assert!(through.stop().success());
}

/// Closes the minute's window in both runs, waits for their outputs and
/// checks that they are equal: the windows exact, every score and flag,
/// every recorded sample and alert change up to the minute's end. Returns
/// the rules' output.
fn close_and_compare(a: &Run, b: &Run, to_a: &mut [Sender], to_b: &mut Sender) -> BTreeSet<String> {
    for s in to_a {
        s.send(closing());
    }
    to_b.send(closing());
    let minute = MINUTE + 60_000;
    for r in [a, b] {
        wait_until("the minute's window", || {
            rows(&r.out).keys().filter(|(_, _, t)| *t == minute).count() == 2 * SERIES as usize
        });
        wait_until("every score", || {
            rows(&r.scores)
                .keys()
                .filter(|(n, _, t)| n == "load:anomaly_score" && *t < T0 + REQUESTS * STEP)
                .count()
                == (REQUESTS * SERIES) as usize
        });
    }
    // The rules' steps: every sample and alert change up to the minute's
    // end equal (once the step after it is written).
    for r in [a, b] {
        wait_until("the rules' step after the last sample", || {
            rule_lines(&r.alerts, i64::MAX).len() > rule_lines(&r.alerts, minute).len()
        });
    }
    let (rules_a, rules_b) = (rule_lines(&a.alerts, minute), rule_lines(&b.alerts, minute));
    let only_a: Vec<_> = rules_a.difference(&rules_b).take(5).collect();
    let only_b: Vec<_> = rules_b.difference(&rules_a).take(5).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "the rules' output: only in the killed run {only_a:#?}, only in the other {only_b:#?}"
    );
    assert!(
        rules_a.iter().any(|l| l.contains("\"firing\"")),
        "nothing fired"
    );
    // Both alerts of the rule were one incident, in both runs alike.
    assert!(
        rules_a
            .iter()
            .any(|l| l.contains("ALERTS_INCIDENT") && l.contains("\"s\":\"2\"")),
        "no alert was labelled with its incident"
    );
    assert!(
        rules_a
            .iter()
            .any(|l| l.contains("\"members\"") && l.matches("\"alertname\":\"High\"").count() >= 2),
        "no incident of both alerts"
    );
    let notes =
        |r: &Run| std::fs::read_to_string(r.alerts.with_extension("notes")).unwrap_or_default();
    assert!(
        notes(a)
            .lines()
            .filter(|l| l.contains("\"groupKey\""))
            .count()
            >= 3,
        "too few notifications: {}",
        notes(a)
    );
    let windows = rows(&a.out);
    for s in 0..SERIES {
        let count = windows[&("load:1m_by_s_count".into(), s.to_string(), minute)];
        let sum = windows[&("load:1m_by_s_sum".into(), s.to_string(), minute)];
        let expected: f64 = (0..REQUESTS).map(|k| value(k, s)).sum();
        assert_eq!(count, REQUESTS as f64, "series {s}: every sample once");
        assert!(
            (sum - expected).abs() < 1e-6,
            "series {s}: sum {sum}, expected {expected}"
        );
    }
    let through_windows = rows(&b.out);
    assert_eq!(
        windows.keys().collect::<Vec<_>>(),
        through_windows.keys().collect::<Vec<_>>()
    );
    for (key, v) in &through_windows {
        // Sums of samples that came from several workers may add in
        // another order.
        assert!((windows[key] - v).abs() < 1e-6, "{key:?}");
    }
    let (scores_a, scores_b) = (rows(&a.scores), rows(&b.scores));
    let mut compared = 0;
    for (key, v) in &scores_b {
        if key.2 >= T0 + REQUESTS * STEP {
            continue;
        }
        assert_eq!(scores_a.get(key), Some(v), "{key:?}");
        compared += 1;
    }
    assert_eq!(
        compared,
        (REQUESTS * SERIES * 2) as usize,
        "scores and flags"
    );
    rules_a
}

/// Issue 19: network ingest on a cluster of two processes (each logs what
/// its own listener acknowledged, in its own data directory; checkpoints
/// go to one store both see), requests sent to the processes in turn,
/// killed with `kill -9` three times after a checkpoint and restarted with
/// 2, then 1 worker per process, against a server that runs through:
/// every window, score, recorded sample, alert change and incident is
/// equal (each process read its own log from its own workers' positions).
#[test]
fn a_cluster_with_network_sources_survives_kill_9_with_its_logs_and_checkpoints() {
    let dir = temp_dir("checkpoint-cluster");
    let (a, b) = (run(&dir, "cluster"), run(&dir, "through"));
    let shared = dir.join("shared");
    let cluster = |workers: &str| -> Vec<Server> {
        let hosts = dir.join("hosts");
        common::write_host_file(&hosts);
        let flags = |p: usize| {
            let mut f = common::server::checkpointed(&a.data.join(p.to_string()), workers);
            let store = shared.join("checkpoints").display().to_string();
            f.extend(["--checkpoint-store".to_owned(), store]);
            f
        };
        Server::start_cluster(&hosts, &[flags(0), flags(1)])
    };
    let running = |servers: &[Server]| {
        for s in servers {
            wait_until("the pipeline running on both processes", || {
                s.json("GET", "/api/v1/pipelines/p", None).1["state"] == "running"
            });
        }
    };
    let mut killed = cluster("1");
    let through = start(&b.data, "1");
    let (status, body) =
        killed[0].json("POST", "/api/v1/pipelines", Some(&pipeline("p", &a, false)));
    assert_eq!(status, 201, "{body}");
    running(&killed);
    let mut to_b = apply(&through, &b);
    let mut to_a: Vec<Sender> = killed.iter().map(Sender::new).collect();
    let send = |to_a: &mut [Sender], to_b: &mut Sender, k: i64| {
        to_a[(k % 2) as usize].send(request(k));
        to_b.send(request(k));
    };
    let mut k = 0;
    for (until_k, workers) in [(300, "2"), (600, "1"), (900, "1")] {
        while k < until_k {
            send(&mut to_a, &mut to_b, k);
            k += 1;
        }
        // Past the interval, two more seconds: a checkpoint of what was
        // sent.
        std::thread::sleep(Duration::from_millis(700));
        let before = T0 + (k - 1) * STEP;
        for _ in 0..40 {
            send(&mut to_a, &mut to_b, k);
            k += 1;
        }
        wait_until("a checkpoint of what was sent", || {
            newest_checkpoint(&shared, "p").is_some_and(|at| at > before)
        });
        let at = newest_checkpoint(&shared, "p").unwrap();
        for s in killed.drain(..) {
            s.kill_hard();
        }
        killed = cluster(workers);
        running(&killed);
        // Both processes restored one checkpoint, at or after the one seen
        // (the next second's may have completed before the kill).
        let restored: Vec<_> = killed
            .iter()
            .map(|s| {
                let c = s.json("GET", "/api/v1/pipelines/p", None).1["checkpoints"].clone();
                assert_eq!(c["fresh"], serde_json::json!([]), "{c}");
                c["restored_from"].as_i64().unwrap()
            })
            .collect();
        assert!(
            restored[0] >= at && restored[0] == restored[1],
            "{restored:?}, {at}"
        );
        to_a = killed.iter().map(Sender::new).collect();
    }
    while k < REQUESTS {
        send(&mut to_a, &mut to_b, k);
        k += 1;
    }
    close_and_compare(&a, &b, &mut to_a, &mut to_b);
    for s in killed {
        assert!(s.stop().success());
    }
    assert!(through.stop().success());
}

/// An in-place update (`apply` of a new version) keeps the state of the
/// components that did not change, and migrates what can be: the window,
/// which gained `avg`, is whole at the update (its count and its new
/// average), though the log was read only from the checkpoint; the score,
/// whose model changed, starts a new one.
#[test]
fn an_update_keeps_the_state_of_unchanged_components() {
    let dir = temp_dir("checkpoint-update");
    let r = run(&dir, "updated");
    let server = start(&r.data, "2");
    let apply = |explain: bool| {
        server.json(
            "POST",
            "/api/v1/pipelines",
            Some(&pipeline("u", &r, explain)),
        )
    };
    let (status, body) = apply(false);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["checkpoints"]["restored_from"], Value::Null, "{body}");
    let mut sender = Sender::new(&server);
    let mut k = 0;
    while k < 400 {
        sender.send(request(k));
        k += 1;
    }
    let at = checkpoint_after(&mut [&mut sender], &mut k, &r.data, "u");
    // (The old version saw nothing after this: what is stamped later is the
    // new version's.)
    let old_saw = T0 + k * STEP;
    // The reply says which state came back and which starts empty.
    let (status, body) = apply(true);
    assert_eq!(status, 200, "{body}");
    let c = &body["checkpoints"];
    assert_eq!(c["restored_from"], at, "{body}");
    assert_eq!(
        c["restored"],
        serde_json::json!(["in", "rules", "inc", "inc/incidents", "page", "w"]),
        "{body}"
    );
    assert_eq!(c["fresh"], serde_json::json!(["sc"]), "{body}");
    assert_eq!(c["migrated"], serde_json::json!(["rules", "w"]), "{body}");
    let again = after_cut(at, k);
    wait_until("the new version, from the checkpoint", || {
        let status = server.json("GET", "/api/v1/pipelines/u", None).1;
        status["state"] == "running" && status["samples_in"] == again
    });
    while k < REQUESTS {
        sender.send(request(k));
        k += 1;
    }
    sender.send(closing());
    let minute = MINUTE + 60_000;
    wait_until("the minute's window", || {
        rows(&r.out).keys().filter(|(_, _, t)| *t == minute).count() == 3 * SERIES as usize
    });
    let windows = rows(&r.out);
    for s in 0..SERIES {
        let count = windows[&("load:1m_by_s_count".into(), s.to_string(), minute)];
        assert_eq!(
            count, REQUESTS as f64,
            "series {s}: the window kept its state"
        );
        // The aggregate the new version added covers the whole window.
        let avg = windows[&("load:1m_by_s_avg".into(), s.to_string(), minute)];
        let expected: f64 = (0..REQUESTS).map(|k| value(k, s)).sum::<f64>() / REQUESTS as f64;
        assert!(
            (avg - expected).abs() < 1e-9,
            "series {s}: avg {avg}, expected {expected}"
        );
    }
    // The new score version explains; it scores from the checkpoint it
    // started from on, with a new model.
    // (The old version's scores after the checkpoint are written again by
    // the new one, from a new model: the file holds both.)
    let explained = || -> Vec<i64> {
        std::fs::read_to_string(&r.scores)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["name"] == "load:expected")
            .map(|v| v["timestamp"].as_i64().unwrap())
            .collect()
    };
    wait_until("explained scores", || !explained().is_empty());
    let first_explained = explained().into_iter().min().unwrap();
    assert_eq!(first_explained, at, "a new model from the checkpoint on");
    // The rules' state came with them: alerts firing before the update
    // keep their `activeAt` (ALERTS_FOR_STATE's value, in seconds) after
    // it, and the new rule records from the checkpoint on.
    let recorded: Vec<Value> = std::fs::read_to_string(r.alerts.with_extension("samples"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        recorded.iter().any(|v| v["name"] == "ALERTS_FOR_STATE"
            && v["timestamp"].as_i64().unwrap() > old_saw
            && v["value"].as_f64().unwrap() * 1000.0 < at as f64),
        "no alert kept its activeAt across the update"
    );
    let new_rule: Vec<i64> = recorded
        .iter()
        .filter(|v| v["name"] == "load:min5s")
        .map(|v| v["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        !new_rule.is_empty() && new_rule.iter().all(|t| *t >= at),
        "the new rule records from the checkpoint on: {new_rule:?}"
    );
    assert!(server.stop().success());
}

/// Checkpoints in S3 (`--checkpoint-store s3://bucket/ckpt`, against moto):
/// a server killed with `kill -9` twice, after a checkpoint, and
/// restarted on 2 workers and then 1 restores from the bucket (nothing
/// under the data directory) and reads the log only from the cut; its
/// output equals an uninterrupted server's; deleting the pipeline deletes
/// its objects.
#[test]
fn checkpoints_in_s3_survive_kill_9() {
    let endpoint = common::s3::endpoint();
    let bucket = common::s3::bucket(&endpoint, "checkpoints");
    let env = common::s3::env(&endpoint);
    let dir = temp_dir("checkpoint-s3");
    let (a, b) = (run(&dir, "killed"), run(&dir, "through"));
    let start_s3 = |workers: &str| {
        let mut a_args = common::server::checkpointed(&a.data, workers);
        a_args.extend([
            "--checkpoint-store".to_owned(),
            format!("s3://{bucket}/ckpt"),
        ]);
        Server::start_with_env(
            &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
            0,
            &env,
        )
    };
    let (mut killed, through) = (start_s3("1"), start(&b.data, "1"));
    let (mut to_a, mut to_b) = (apply(&killed, &a), apply(&through, &b));
    let newest =
        |s: &Server| s.json("GET", "/api/v1/pipelines/p", None).1["checkpoints"]["newest"].as_i64();
    let mut k = 0;
    for (until_k, workers) in [(300, "2"), (600, "1")] {
        while k < until_k {
            to_a.send(request(k));
            to_b.send(request(k));
            k += 1;
        }
        std::thread::sleep(Duration::from_millis(700));
        let before = T0 + (k - 1) * STEP;
        for _ in 0..40 {
            to_a.send(request(k));
            to_b.send(request(k));
            k += 1;
        }
        wait_until("a checkpoint of what was sent", || {
            newest(&killed).is_some_and(|at| at > before)
        });
        let at = newest(&killed).unwrap();
        killed.kill_hard();
        killed = start_s3(workers);
        let restored = || killed.json("GET", "/api/v1/pipelines/p", None).1["checkpoints"].clone();
        wait_until("the pipeline back", || {
            !restored()["restored_from"].is_null()
        });
        assert_eq!(
            restored()["restored_from"].as_i64(),
            Some(at),
            "{}",
            restored()
        );
        to_a = Sender::new(&killed);
        let again = after_cut(at, k);
        wait_until("the log read from the checkpoint", || {
            samples_in(&killed, "p") == again
        });
    }
    assert!(
        !a.data.join("checkpoints").exists(),
        "checkpoints were written under the data directory"
    );
    let stored = common::s3::keys(&endpoint, &bucket, "ckpt/p/");
    assert!(
        stored.iter().any(|k| k.ends_with("/MANIFEST.json")),
        "{stored:?}"
    );
    while k < REQUESTS {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    close_and_compare(&a, &b, std::slice::from_mut(&mut to_a), &mut to_b);
    let (status, _) = killed.json("DELETE", "/api/v1/pipelines/p", None);
    assert_eq!(status, 204);
    wait_until("the pipeline's checkpoints deleted", || {
        common::s3::keys(&endpoint, &bucket, "ckpt/p/").is_empty()
    });
    assert!(killed.stop().success());
    assert!(through.stop().success());
}

/// The paging pipeline: the rules' alerts routed and delivered to a
/// webhook at `url` by a `notify` sink with no `log:` of its own (under
/// `--data-dir` it keeps one in the pipeline's state directory). The
/// routing is written to `dir/<port>.yml`.
fn paging(dir: &Path, url: &str) -> String {
    let config = dir.join(format!("{}.yml", url.rsplit(':').next().unwrap()));
    std::fs::write(
        &config,
        format!(
            "route: {{receiver: team, group_by: [alertname], group_wait: 2s, group_interval: 5s, \
             repeat_interval: 10s}}\nreceivers: [{{name: team, webhook_configs: [{{url: '{url}/hook'}}]}}]\n"
        ),
    )
    .unwrap();
    let config = config.display();
    format!(
        "name: pg\nsources:\n  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 200ms}}\n\
         transforms:\n  rules: {{type: alert, inputs: [in], interval: 1s, rules: {RULES}}}\n  \
         page: {{type: route, inputs: [rules.alerts], config: {config}}}\n\
         sinks:\n  hook: {{type: notify, inputs: [page], config: {config}, max_age: off}}\n"
    )
}

/// A webhook receiver that answers 503 while `down` is set, and the
/// bodies it took (answered 200), without the links back (which name the
/// server's port).
struct Receiver {
    hook: common::http::Recorder,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    taken: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::sync::atomic::Ordering;
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, t) = (std::sync::Arc::clone(&down), std::sync::Arc::clone(&taken));
        let hook = common::http::Recorder::start(move |_, r| {
            if d.load(Ordering::SeqCst) {
                return (503, vec![], "down".into());
            }
            let mut body = r.json.clone();
            body.as_object_mut().unwrap().remove("externalURL");
            for a in body["alerts"].as_array_mut().unwrap() {
                a.as_object_mut().unwrap().remove("generatorURL");
            }
            t.lock().unwrap().push(body.to_string());
            (200, vec![], String::new())
        });
        Receiver { hook, down, taken }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// What it took, each body with how many times.
    fn taken(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for body in self.taken.lock().unwrap().iter() {
            *counts.entry(body.clone()).or_default() += 1;
        }
        counts
    }
}

/// `kill -9` while notifications wait for a receiver that is down, after
/// a checkpoint covers them: the restarted server delivers them. Against
/// a server that runs through, the receiver of the killed one took every
/// page the other's took, as many times, and at most one more per kill (a
/// delivery in the instant before the kill, before its log line).
#[test]
fn kill_9_while_a_receiver_is_down_loses_no_page() {
    const KILLS: usize = 3;
    let dir = temp_dir("checkpoint-paging");
    let (data_a, data_b) = (dir.join("killed-data"), dir.join("through-data"));
    let (hook_a, hook_b) = (Receiver::start(), Receiver::start());
    let (mut killed, through) = (start(&data_a, "2"), start(&data_b, "1"));
    let install = |server: &Server, hook: &Receiver| {
        let (status, body) = server.json(
            "POST",
            "/api/v1/pipelines",
            Some(&paging(&dir, &hook.hook.url)),
        );
        assert_eq!(status, 201, "{body}");
        Sender::new(server)
    };
    let (mut to_a, mut to_b) = (install(&killed, &hook_a), install(&through, &hook_b));
    let mut k = 0;
    while k < 200 {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    for kill in 0..KILLS {
        hook_a.set_down(true);
        let refused = hook_a.hook.received().len() - hook_a.taken.lock().unwrap().len();
        // Enough event time for a flush of the group (group_interval 5 s).
        for _ in 0..150 {
            to_a.send(request(k));
            to_b.send(request(k));
            k += 1;
        }
        checkpoint_after(&mut [&mut to_a, &mut to_b], &mut k, &data_a, "pg");
        wait_until("a page refused by the receiver that is down", || {
            hook_a.hook.received().len() - hook_a.taken.lock().unwrap().len() > refused
        });
        killed.kill_hard();
        hook_a.set_down(false);
        killed = start(&data_a, ["1", "2", "4"][kill % 3]);
        wait_until("the pipeline back", || {
            killed.json("GET", "/api/v1/pipelines/pg", None).1["state"] == "running"
        });
        to_a = Sender::new(&killed);
    }
    while k < REQUESTS {
        to_a.send(request(k));
        to_b.send(request(k));
        k += 1;
    }
    to_a.send(closing());
    to_b.send(closing());
    // Every page the uninterrupted server's receiver took, as many times.
    let missing = || {
        let (a, b) = (hook_a.taken(), hook_b.taken());
        b.into_iter()
            .filter(|(body, n)| a.get(body).copied().unwrap_or(0) < *n)
            .map(|(body, _)| body)
            .collect::<Vec<_>>()
    };
    let start = std::time::Instant::now();
    while !missing().is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let late duplicates arrive before counting them.
    std::thread::sleep(Duration::from_secs(2));
    let (a, b) = (hook_a.taken(), hook_b.taken());
    assert!(
        b.values().sum::<usize>() >= 8,
        "too few pages to compare: {b:#?}"
    );
    let at = |body: &String| serde_json::from_str::<Value>(body).unwrap()["at"].clone();
    assert!(
        missing().is_empty(),
        "pages lost by the killed server: {:#?}\nit took, at those times: {:#?}",
        missing(),
        a.keys()
            .filter(|body| missing().iter().any(|m| at(m) == at(body)))
            .collect::<Vec<_>>()
    );
    let extra: usize = a
        .iter()
        .map(|(body, n)| n.saturating_sub(b.get(body).copied().unwrap_or(0)))
        .sum();
    assert!(
        extra <= KILLS,
        "{extra} pages more than the other server's: {a:#?}"
    );
    assert!(
        a.keys().all(|body| b.contains_key(body)),
        "pages the other server never sent"
    );
    assert!(killed.stop().success());
    assert!(through.stop().success());
}

/// `kill -9` of a server whose `alertmanager` sink keeps an alert firing
/// in a real Alertmanager, then a restart with no new input: the
/// restarted sink goes on sending it (read back from its state
/// directory), so Alertmanager does not resolve an alert that still
/// fires four `resend_delay`s after the last send before the kill.
#[test]
fn kill_9_does_not_let_alertmanager_resolve_a_firing_alert() {
    let dir = temp_dir("checkpoint-am");
    let am = common::alertmanager::Alertmanager::start(
        &dir.join("am"),
        "route: {receiver: none}\nreceivers: [{name: none}]\n",
    );
    let data = dir.join("data");
    let server = start(&data, "2");
    let text = format!(
        "name: am\nsources:\n  in: {{type: grpc, max_out_of_orderness: 0s, idle_timeout: 200ms}}\n\
         transforms:\n  rules: {{type: alert, inputs: [in], interval: 1s, rules: {RULES}}}\n\
         sinks:\n  am: {{type: alertmanager, inputs: [rules.alerts], url: '{}', resend_delay: 1s, max_age: off}}\n",
        am.url
    );
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&text));
    assert_eq!(status, 201, "{body}");
    let mut sender = Sender::new(&server);
    let mut k = 0;
    while k < 200 {
        sender.send(request(k));
        k += 1;
    }
    checkpoint_after(&mut [&mut sender], &mut k, &data, "am");
    // Series 3 (121 and more) fires throughout.
    let firing = |am: &common::alertmanager::Alertmanager| {
        am.alerts().iter().any(|a| {
            a["labels"]["alertname"] == "High"
                && a["labels"]["s"] == "3"
                && a["status"]["state"] == "active"
        })
    };
    wait_until("series 3 firing in Alertmanager", || firing(&am));
    server.kill_hard();
    let server = start(&data, "1");
    wait_until("the pipeline back", || {
        server.json("GET", "/api/v1/pipelines/am", None).1["state"] == "running"
    });
    // Past four resend_delays after the last send before the kill.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        firing(&am),
        "Alertmanager let the firing alert go: {:#?}",
        am.alerts()
    );
    // A new version whose group has another name: its state cannot be
    // carried, so the old group's firing alerts are resolved at the update
    // (nothing else would resolve them), and Alertmanager lets the alert
    // go rather than holding it forever (once the input moves past the
    // update, as it does; the renamed group's rule is pending again, which
    // Alertmanager is not told). A renamed rule is resolved the same way
    // (the alert unit test).
    let renamed = text.replace("{groups: [{name: g,", "{groups: [{name: g2,");
    assert_ne!(renamed, text);
    let (status, body) = server.json("POST", "/api/v1/pipelines", Some(&renamed));
    assert_eq!(status, 200, "{body}");
    let mut sender = Sender::new(&server);
    for _ in 0..40 {
        sender.send(request(k));
        k += 1;
    }
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !firing(&am),
        "an alert of rules that changed is still sent: {:#?}",
        am.alerts()
    );
    assert!(server.stop().success());
}
