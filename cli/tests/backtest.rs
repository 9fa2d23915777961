//! `tidemark backtest`: a pipeline run live (a file source, a window, a
//! detector, alert rules, a route) archives its input with a `parquet`
//! sink; the backtest replays that archive through the same pipeline and
//! must write exactly what the live run wrote, stream by stream, at another
//! number of workers, from a local directory and from a local S3 server
//! (`deploy/s3.sh start 19100`, which `./deploy/test.sh` starts;
//! `TIDEMARK_S3` points elsewhere).

use tidemark_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::temp_dir;

/// 2026-11-25T00:00:00Z.
const BASE: i64 = 1_795_564_800_000;
const HOSTS: usize = 6;
/// Three hours, so the archive spans several hour partitions.
const SECONDS: i64 = 3 * 3600;
const STEP: i64 = 10;

/// `cpu` of every host every 10 s; host h3 runs hot from 60 to 75 min.
/// Host h5's samples arrive 25 s late (within the source's 30 s of
/// out-of-orderness), so the archive's epochs overlap in event time and
/// the replay has to merge them.
fn input() -> (String, usize) {
    let mut arrivals = Vec::new();
    for s in (0..SECONDS).step_by(STEP as usize) {
        for h in 0..HOSTS {
            let hot = h == 3 && (3600..4500).contains(&s);
            let value = if hot {
                95 + (s / STEP) % 4
            } else {
                20 + ((h as i64) * 7 + s / STEP * 3) % 25
            };
            let at = BASE + s * 1000;
            let arrives = if h == 5 { at + 25_000 } else { at };
            arrivals.push((
                arrives,
                format!(
                    "{{\"name\":\"cpu\",\"labels\":{{\"host\":\"h{h}\"}},\"timestamp\":{at},\"value\":{value}}}\n"
                ),
            ));
        }
    }
    arrivals.sort_by_key(|(arrives, _)| *arrives);
    let n = arrivals.len();
    (arrivals.into_iter().map(|(_, line)| line).collect(), n)
}

/// The live pipeline; `archive` is the parquet sink's settings.
fn pipeline(dir: &Path, archive: &str) -> String {
    let d = dir.display();
    format!(
        r#"name: live
sources:
  in: {{type: file, path: {d}/in.jsonl, max_out_of_orderness: 30s}}
transforms:
  w: {{type: window, inputs: [in], window: {{tumbling: 1m}}, by: [host], aggregates: [avg, max]}}
  s: {{type: score, inputs: [in], match: cpu, range: {{min: 0, max: 100}}}}
  rules:
    type: alert
    inputs: [in]
    rules:
      groups:
        - name: cpu
          interval: 30s
          rules:
            - alert: HighCpu
              expr: cpu > 80
              for: 1m
              labels: {{severity: page}}
  page:
    type: route
    inputs: [rules.alerts]
    config:
      route: {{receiver: oncall, group_by: [alertname], group_wait: 30s, group_interval: 1m}}
      receivers:
        - name: oncall
          webhook_configs: [{{url: "http://oncall.example/hook"}}]
sinks:
  raw:
{archive}
  windows: {{type: file, inputs: [w], path: {d}/live/w.jsonl}}
  scores: {{type: file, inputs: [s], path: {d}/live/s.jsonl}}
  alerts: {{type: file, inputs: [rules.alerts], path: {d}/live/alerts.jsonl}}
  pages: {{type: file, inputs: [page], path: {d}/live/page.jsonl}}
"#
    )
}

fn tidemark(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(output: &Output, what: &str) -> String {
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what} failed:\n{log}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The live run on `workers`, then a backtest of the whole archive at one
/// worker: the same lines in every stream. Returns the summary.
fn live_and_full_backtest(dir: &Path, archive: &str, env: &[(&str, &str)], workers: &str) -> Value {
    let (text, samples) = input();
    std::fs::write(dir.join("in.jsonl"), text).unwrap();
    let yaml = dir.join("live.yaml");
    std::fs::write(&yaml, pipeline(dir, archive)).unwrap();
    let yaml = yaml.to_str().unwrap();
    ok(
        &tidemark(
            &["run", yaml, "--workers", workers, "--progress", "off"],
            env,
        ),
        "tidemark run",
    );
    let out = dir.join("bt");
    let printed = ok(
        &tidemark(
            &[
                "backtest",
                yaml,
                "--out",
                out.to_str().unwrap(),
                "--workers",
                "1",
                "--progress",
                "off",
            ],
            env,
        ),
        "tidemark backtest",
    );
    for (live, replayed) in [
        ("w.jsonl", "w.jsonl"),
        ("s.jsonl", "s.jsonl"),
        ("alerts.jsonl", "rules.alerts.jsonl"),
        ("page.jsonl", "page.jsonl"),
    ] {
        let name = replayed;
        let (live, replayed) = (lines(&dir.join("live").join(live)), lines(&out.join(name)));
        assert!(!live.is_empty());
        assert_eq!(live.len(), replayed.len(), "lines of {name}");
        let first = live.iter().zip(&replayed).position(|(a, b)| a != b);
        assert_eq!(
            first, None,
            "{name}: the first line that differs from the live run's"
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["samples_replayed"], samples as u64, "{summary}");
    assert_eq!(summary["errors"], 0);
    let fired = summary["alerts_fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{summary}");
    assert_eq!(fired[0]["labels"]["host"], "h3");
    assert_eq!(fired[0]["labels"]["alertname"], "HighCpu");
    // Hot from 60 min; the rule evaluates every 30 s and waits 1 min.
    let at = |v: &Value| tidemark_engine::time::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let fired_at = at(&fired[0]["fired_at"]);
    assert!(
        (BASE + 3_660_000..=BASE + 3_690_000).contains(&fired_at),
        "{summary}"
    );
    assert!(
        at(&fired[0]["resolved_at"]) >= BASE + 4_500_000,
        "{summary}"
    );
    assert!(summary["notifications"]["oncall"]["firing"].as_u64() >= Some(1));
    assert!(summary["notifications"]["oncall"]["resolved"].as_u64() >= Some(1));
    assert!(printed.contains("Alerts that fired: 1"), "{printed}");
    // The detector flags h3's jump; counted from the `cpu:anomaly` samples.
    let flagged = lines(&out.join("s.jsonl"))
        .iter()
        .filter(|l| l.contains("\"cpu:anomaly\"") && l.ends_with("\"value\":1.0}"))
        .count();
    assert!(flagged >= 1);
    assert_eq!(summary["anomalies"]["cpu"], flagged as u64, "{summary}");
    let streams: Vec<&str> = summary["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["rules.alerts", "page", "s", "w"]);
    summary
}

/// A backtest of `dir`'s live pipeline from 00:30 to 02:00 (`from` and
/// `to` as given on the command line) replays only the samples in it, and
/// the windows inside it are the live run's; the first and last are the
/// partial ones at the edges.
fn range_as_live(dir: &Path, from_arg: &str, to_arg: &str, workers: &str) {
    let (from, to) = (BASE + 1_800_000, BASE + 7_200_000);
    let out = dir.join("bt-range");
    ok(
        &tidemark(
            &[
                "backtest",
                dir.join("live.yaml").to_str().unwrap(),
                "--from",
                from_arg,
                "--to",
                to_arg,
                "--out",
                out.to_str().unwrap(),
                "--workers",
                workers,
                "--progress",
                "off",
            ],
            &[],
        ),
        "tidemark backtest --from --to",
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let in_range = (to - from) / 1000 / STEP * HOSTS as i64;
    assert_eq!(summary["samples_replayed"], in_range, "{summary}");
    let stamp = |line: &String| -> i64 {
        serde_json::from_str::<Value>(line).unwrap()["timestamp"]
            .as_i64()
            .unwrap()
    };
    // A window stamped t holds (t - 1m, t]: those stamped inside the
    // range are whole; the one stamped `from` has only its last sample, the
    // one stamped `to` lacks its last.
    let inside = |path: &Path| -> Vec<String> {
        lines(path)
            .into_iter()
            .filter(|l| (from + 1..to).contains(&stamp(l)))
            .collect()
    };
    let live = inside(&dir.join("live/w.jsonl"));
    assert_eq!(live.len(), 89 * HOSTS * 2);
    assert_eq!(inside(&out.join("w.jsonl")), live);
    let replayed = lines(&out.join("w.jsonl"));
    assert_eq!(
        (stamp(&replayed[0]), stamp(replayed.last().unwrap())),
        (from, to),
        "the first and last windows are the partial ones at the edges"
    );
}

#[test]
fn a_backtest_writes_what_the_live_run_wrote() {
    let dir = temp_dir("backtest");
    let archive = format!(
        "    type: parquet\n    inputs: [in]\n    path: {}/archive\n    roll_interval: 5m",
        dir.display()
    );
    let summary = live_and_full_backtest(&dir, &archive, &[], "2");
    assert_eq!(
        summary["archives"][0]["archive"],
        format!("{}/archive/pipeline=live/output=raw", dir.display())
    );

    // Two processes of one worker each: each replays its share of the
    // files; process 0 writes the same streams, and the summary.
    let hosts = dir.join("hosts");
    common::write_host_file(&hosts);
    let clustered = dir.join("bt-cluster");
    let yaml = dir.join("live.yaml");
    let spawn = |process: &str| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["backtest", yaml.to_str().unwrap(), "--out"])
            .arg(&clustered)
            .args(["--progress", "off", "--hostfile"])
            .arg(&hosts)
            .args(["--process", process])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut p0, mut p1) = (spawn("0"), spawn("1"));
    assert!(p0.wait().unwrap().success());
    assert!(p1.wait().unwrap().success());
    for stream in ["w.jsonl", "s.jsonl", "rules.alerts.jsonl", "page.jsonl"] {
        assert!(
            lines(&clustered.join(stream)) == lines(&dir.join("bt").join(stream)),
            "{stream} of two processes differs"
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(clustered.join("summary.json")).unwrap())
            .unwrap();
    let share = summary["samples_replayed"].as_u64().unwrap();
    assert!(
        0 < share && share < input().1 as u64,
        "process 0 replayed {share}: the files were not shared"
    );

    // A range, from RFC 3339 to milliseconds, on two workers.
    range_as_live(
        dir.as_path(),
        "2026-11-25T00:30:00Z",
        &(BASE + 7_200_000).to_string(),
        "2",
    );

    // A damaged file is named and skipped; the rest is still replayed, and
    // the run says it is incomplete.
    let damaged =
        dir.join("archive/pipeline=live/output=raw/date=2026-11-25/hour=01/part-x.parquet");
    std::fs::write(&damaged, b"not parquet at all").unwrap();
    let out = dir.join("bt-damaged");
    let run = tidemark(
        &[
            "backtest",
            yaml.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--progress",
            "off",
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{said}");
    assert!(
        said.contains("part-x.parquet") && said.contains("damaged"),
        "{said}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["samples_replayed"], input().1 as u64, "{summary}");
    assert_eq!(summary["errors"], 1, "{summary}");
    std::fs::remove_file(&damaged).unwrap();

    // A source without an archive is refused, and says how to name one.
    let bare = dir.join("bare.yaml");
    std::fs::write(
        &bare,
        std::fs::read_to_string(&yaml)
            .unwrap()
            .replace("inputs: [in]\n    path:", "inputs: [s]\n    path:"),
    )
    .unwrap();
    let refused = tidemark(
        &[
            "backtest",
            bare.to_str().unwrap(),
            "--out",
            "/nonexistent/x",
        ],
        &[],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--archive in="), "{said}");

    // Named, but wrong: nothing was ever written there.
    let wrong = format!("in={}/archive/pipeline=nope/output=raw", dir.display());
    let out = dir.join("bt-wrong");
    let refused = tidemark(
        &[
            "backtest",
            bare.to_str().unwrap(),
            "--archive",
            &wrong,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("there is no archive at pipeline=nope/output=raw"),
        "{said}"
    );
}

#[test]
fn a_backtest_replays_an_archive_on_s3() {
    let endpoint = common::s3::endpoint();
    let bucket = common::s3::bucket(&endpoint, "backtest");
    let dir = temp_dir("backtest-s3");
    let archive = format!(
        "    type: parquet\n    inputs: [in]\n    path: s3://{bucket}/archive\n    endpoint: {endpoint}\n    \
         region: us-east-1\n    access_key_id: test\n    secret_access_key_env: ARCHIVE_SECRET\n    roll_interval: 5m"
    );
    let summary = live_and_full_backtest(&dir, &archive, &[("ARCHIVE_SECRET", "test")], "2");
    assert_eq!(
        summary["archives"][0]["archive"],
        format!("s3://{bucket}/archive/pipeline=live/output=raw")
    );
}

/// The same pipeline with a `timescaledb` sink as its archive, in
/// TimescaleDB (PGlite: `deploy/timescaledb.sh start 15440`, which
/// `./deploy/test.sh` starts; `TIDEMARK_TIMESCALEDB` points elsewhere): the
/// backtest replays the hypertable whole and a range of it, and names a
/// table that is not there.
#[test]
fn a_backtest_replays_a_timescaledb_range() {
    let dir = temp_dir("backtest-timescaledb");
    let url = common::pg::timescaledb();
    let (table, series) = common::pg::fresh_table(&url, "backtest");
    let archive = format!(
        "    type: timescaledb\n    inputs: [in]\n    url: \"{url}\"\n    table: {table}\n    series_table: {series}\n    method: insert"
    );
    // PGlite runs every connection in one session: one worker, live and
    // replayed (two readers' queries interleave there and lose rows).
    let summary = live_and_full_backtest(&dir, &archive, &[], "1");
    assert_eq!(
        summary["archives"][0]["archive"],
        format!("timescaledb public.{table} at 127.0.0.1:15440/postgres"),
        "{summary}"
    );

    // A range, from milliseconds to RFC 3339.
    range_as_live(
        &dir,
        &(BASE + 1_800_000).to_string(),
        "2026-11-25T02:00:00Z",
        "1",
    );

    // A table that is not there: named, and the run fails.
    let yaml = as_source(&dir, &url, "backtest_nothing_here", &series, 500);
    let run = tidemark(
        &[
            "backtest",
            yaml.to_str().unwrap(),
            "--out",
            dir.join("bt-missing").to_str().unwrap(),
            "--progress",
            "off",
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{said}");
    assert!(
        said.contains("there is no table public.backtest_nothing_here"),
        "{said}"
    );
}

/// The live pipeline of `dir` with its source replaced by a `timescaledb`
/// source over `table` in pages of `page_rows`.
fn as_source(dir: &Path, url: &str, table: &str, series: &str, page_rows: usize) -> PathBuf {
    let live = std::fs::read_to_string(dir.join("live.yaml")).unwrap();
    let file_source = live
        .lines()
        .find(|l| l.contains("type: file, path:"))
        .unwrap();
    let replaying = live.replace(
        file_source,
        &format!(
            "  in: {{type: timescaledb, url: \"{url}\", table: {table}, series_table: {series}, page_rows: {page_rows}}}"
        ),
    );
    let yaml = dir.join(format!("{table}.yaml"));
    std::fs::write(&yaml, replaying).unwrap();
    yaml
}

/// The same against PostgreSQL (`deploy/postgres.sh start 15432`;
/// `TIDEMARK_POSTGRES`), where connections are sessions of their own: the
/// live run and the replays on two workers, each reading its share of the
/// series a page of 500 rows at a time, write what the live run wrote.
#[test]
fn a_backtest_replays_postgresql_in_pages_on_two_workers() {
    let dir = temp_dir("backtest-postgres");
    let url = common::pg::postgres();
    let (table, series) = common::pg::fresh_table(&url, "backtest");
    let archive = format!(
        "    type: timescaledb\n    inputs: [in]\n    url: \"{url}\"\n    table: {table}\n    series_table: {series}"
    );
    live_and_full_backtest(&dir, &archive, &[], "2");
    let yaml = as_source(&dir, &url, &table, &series, 500);
    let out = dir.join("bt-paged");
    ok(
        &tidemark(
            &[
                "backtest",
                yaml.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--workers",
                "2",
                "--progress",
                "off",
            ],
            &[],
        ),
        "tidemark backtest of a timescaledb source",
    );
    for (live, replayed) in [
        ("w.jsonl", "w.jsonl"),
        ("s.jsonl", "s.jsonl"),
        ("alerts.jsonl", "rules.alerts.jsonl"),
        ("page.jsonl", "page.jsonl"),
    ] {
        assert!(
            lines(&dir.join("live").join(live)) == lines(&out.join(replayed)),
            "{replayed} replayed in pages on two workers differs from the live run's"
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["samples_replayed"], input().1 as u64, "{summary}");

    // A table of other column types is an error that says so, not a crash.
    common::pg::query(
        &url,
        "DROP TABLE IF EXISTS backtest_odd; CREATE TABLE backtest_odd (time timestamptz, series_id bigint, value text);
         INSERT INTO backtest_odd VALUES ('2026-11-25T00:00:00Z', 1, 'y');",
    );
    let yaml = as_source(&dir, &url, "backtest_odd", &series, 500);
    let run = tidemark(
        &[
            "backtest",
            yaml.to_str().unwrap(),
            "--out",
            dir.join("bt-odd").to_str().unwrap(),
            "--progress",
            "off",
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "public.backtest_odd is not a samples table as the timescaledb sink writes it"
        ),
        "{said}"
    );
}
