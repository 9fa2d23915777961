//! The `parquet` sink, read back with the real DuckDB, against a local
//! directory and against a local S3 server from `deploy/s3.sh start 19100`
//! (`TIDEMARK_S3` points elsewhere); `./deploy/test.sh` starts it and
//! installs DuckDB.

use tidemark_testkit as common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::duckdb::query;
use common::run_text;
use common::temp_dir;
use common::tumbling;

/// Runs `tidemark run` on `text` with 2 workers and `env`; returns its log.
fn run_process(dir: &Path, text: &str, env: &[(&str, &str)]) -> String {
    let yaml = dir.join("pipeline.yaml");
    std::fs::write(&yaml, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", yaml.to_str().unwrap(), "--workers", "2"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "tidemark run failed:\n{log}");
    log
}

/// The sink's rows, as DuckDB reads them with hive partitioning:
/// (metric, host, window end) -> value, failing on a duplicate row.
fn archive_rows(glob: &str, s3: Option<&str>) -> tumbling::Expected {
    let rows = query(
        &format!(
            "SELECT metric, host, labels['host'] AS label, epoch_ms(time) AS t, value, \
             pipeline, output, CAST(date AS DATE) - DATE '1970-01-01' AS day, CAST(hour AS INTEGER) AS hour \
             FROM read_parquet('{glob}', hive_partitioning = true)"
        ),
        s3,
    );
    let mut out = tumbling::Expected::new();
    for r in rows {
        let host = r["host"].as_str().unwrap().to_owned();
        // `labels['host']` is the map lookup analysts write.
        let label = match &r["label"] {
            Value::Array(a) => a[0].clone(),
            v => v.clone(),
        };
        assert_eq!(label.as_str(), Some(host.as_str()), "{r}");
        let t = r["t"].as_i64().unwrap();
        // The partition is the event time's UTC date and hour.
        assert_eq!(r["day"], t.div_euclid(86_400_000), "{r}");
        assert_eq!(r["hour"], t.div_euclid(3_600_000) % 24, "{r}");
        assert_eq!(
            (r["pipeline"].as_str(), r["output"].as_str()),
            (Some("pq"), Some("out"))
        );
        let key = (r["metric"].as_str().unwrap().to_owned(), host, t);
        let value = r["value"].as_f64().unwrap();
        assert!(out.insert(key.clone(), value).is_none(), "{key:?} twice");
    }
    out
}

fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn duckdb_reads_back_from_a_directory_what_a_from_scratch_computation_gives() {
    let dir = temp_dir("parquet-local");
    let input = dir.join("in.jsonl");
    // 2 hours and a bit: windows fall into three hour partitions.
    let (hosts, seconds) = (20, 7300);
    tumbling::write_input(&input, hosts, seconds);
    let archive = dir.join("archive");
    let sink = format!(
        "    type: parquet\n    path: {}\n    promote: [host]\n    roll_interval: 20m\n",
        archive.display()
    );
    let text = tumbling::pipeline("pq", input.to_str().unwrap(), &sink);
    let report = run_text(&text, 2);
    assert_eq!(report.errors, 0, "{report:?}");
    let glob = format!("{}/**/*.parquet", archive.display());
    let expected = tumbling::expected(hosts, seconds);
    assert_eq!(archive_rows(&glob, None), expected);

    // Files: per epoch of 20 minutes, per key group (the first run's
    // workers, recorded in the layout), per event hour; each epoch's
    // marker records them.
    let first = files_below(&archive);
    let parquet: Vec<&String> = first.iter().filter(|f| f.ends_with(".parquet")).collect();
    let markers: Vec<&String> = first.iter().filter(|f| f.contains("/epochs/")).collect();
    let layout = "_tidemark/pipeline=pq/output=out/layout";
    assert_eq!(
        std::fs::read_to_string(archive.join(layout)).unwrap(),
        "groups=2\n"
    );
    assert_eq!(parquet.len() + markers.len() + 1, first.len(), "{first:?}");
    assert!(
        parquet
            .iter()
            .all(|f| f.starts_with("pipeline=pq/output=out/date=2026-11-25/hour=0"))
    );
    // Windows end from 10 s to 7300 s: 7 epochs of 20 minutes, on both
    // workers.
    assert_eq!(markers.len(), 14, "{markers:?}");
    let listed: BTreeSet<String> = markers
        .iter()
        .flat_map(|m| {
            std::fs::read_to_string(archive.join(m))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(listed, parquet.iter().map(|s| s.to_string()).collect());
    // Within a file, rows are sorted by series and time.
    let sorted = query(
        &format!(
            "SELECT count(*) AS n FROM (SELECT filename, file_row_number, series_id, time, \
             lag(series_id) OVER w AS ps, lag(time) OVER w AS pt \
             FROM read_parquet('{glob}', filename = true, file_row_number = true) \
             WINDOW w AS (PARTITION BY filename ORDER BY file_row_number)) \
             WHERE ps > series_id OR (ps = series_id AND pt >= time)"
        ),
        None,
    );
    assert_eq!(sorted[0]["n"], 0);
    let codecs = query(
        &format!("SELECT DISTINCT compression FROM parquet_metadata('{glob}')"),
        None,
    );
    assert_eq!(codecs, vec![serde_json::json!({"compression": "ZSTD"})]);

    // The same input again: the same files, overwritten, nothing added;
    // also at another number of workers (series keep their key group).
    for workers in [2, 3, 1] {
        let report = run_text(&text, workers);
        assert_eq!(report.errors, 0);
        assert_eq!(
            files_below(&archive),
            first,
            "replayed on {workers} workers"
        );
        assert_eq!(
            archive_rows(&glob, None),
            expected,
            "replayed on {workers} workers"
        );
    }
}

#[test]
fn duckdb_reads_back_from_s3_and_a_replay_adds_no_object() {
    let endpoint = common::s3::endpoint();
    let host_port = endpoint.trim_start_matches("http://").to_owned();
    let bucket = common::s3::bucket(&endpoint, "pq-round-trip");
    let dir = temp_dir("parquet-s3");
    let input = dir.join("in.jsonl");
    let (hosts, seconds) = (10, 1200);
    tumbling::write_input(&input, hosts, seconds);
    // First from the standard AWS variables, as an operator would set
    // them; then (the replay) from the sink's own fields.
    let standard = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let sink = format!(
        "    type: parquet\n    path: s3://{bucket}/archive\n    promote: [host]\n    roll_interval: 5m\n"
    );
    let text = tumbling::pipeline("pq", input.to_str().unwrap(), &sink);
    let own = format!(
        "{sink}    endpoint: {endpoint}\n    region: us-east-1\n    access_key_id: test\n    \
         secret_access_key_env: ARCHIVE_SECRET\n"
    );
    let replay = tumbling::pipeline("pq", input.to_str().unwrap(), &own);
    let glob = format!("s3://{bucket}/archive/**/*.parquet");
    let objects = |bucket: &str| -> BTreeSet<String> {
        query(
            &format!("SELECT file FROM glob('s3://{bucket}/**')"),
            Some(&host_port),
        )
        .into_iter()
        .map(|r| r["file"].as_str().unwrap().to_owned())
        .collect()
    };
    let expected = tumbling::expected(hosts, seconds);
    run_process(&dir, &text, &standard);
    assert_eq!(archive_rows(&glob, Some(&host_port)), expected);
    let first = objects(&bucket);
    // An epoch of 5 minutes of a key group: one file (one event hour) and
    // its marker; and the archive's layout.
    let files = first.iter().filter(|o| o.ends_with(".parquet")).count();
    let markers = first.iter().filter(|o| o.contains("/epochs/")).count();
    assert_eq!(
        (files, files + markers + 1),
        (markers, first.len()),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|o| o.ends_with("/_tidemark/pipeline=pq/output=out/layout"))
    );
    assert!(files >= 8, "{first:?}");
    run_process(&dir, &replay, &[("ARCHIVE_SECRET", "test")]);
    assert_eq!(objects(&bucket), first);
    assert_eq!(archive_rows(&glob, Some(&host_port)), expected);
}

#[test]
fn raw_samples_flow_while_an_epoch_fills_far_beyond_the_in_flight_budget() {
    // An epoch of 1 minute holds 12 000 samples here; sources may have only
    // 200 in flight. The sink's holdback lets them run on to the epoch's
    // end instead of waiting for output that cannot be written before it.
    let dir = temp_dir("parquet-raw");
    let archive = dir.join("archive");
    let text = format!(
        "name: pq\nsources:\n  gen:\n    type: generator\n    series: 200\n    interval: 1s\n    \
         start: 2026-11-25T00:00:00Z\n    samples: 600\n    seed: 7\n\
         sinks:\n  out:\n    type: parquet\n    inputs: [gen]\n    path: {}\n    roll_interval: 1m\n    \
         row_group_rows: 5000\n",
        archive.display()
    );
    let plan = tidemark_pipelines::compile("raw.yaml", &text).unwrap();
    let mut options = tidemark_pipelines::run::RunOptions::quiet(2);
    options.max_in_flight = 200;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(tidemark_pipelines::run::run(plan, options).map(|r| r.errors));
    });
    let errors = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run did not finish: flow control waited for the parquet sink")
        .unwrap();
    assert_eq!(errors, 0);
    let stats = query(
        &format!(
            "SELECT count(*) AS n, count(DISTINCT series_id) AS series, \
             count(DISTINCT (series_id, time)) AS points \
             FROM read_parquet('{}/**/*.parquet')",
            archive.display()
        ),
        None,
    );
    assert_eq!(
        stats[0],
        serde_json::json!({"n": 120_000, "series": 200, "points": 120_000})
    );
}

#[test]
fn a_run_killed_mid_upload_leaves_no_partial_object() {
    let endpoint = common::s3::endpoint();
    let host_port = endpoint.trim_start_matches("http://").to_owned();
    let bucket = common::s3::bucket(&endpoint, "pq-killed");
    let dir = temp_dir("parquet-killed");
    // Raw samples as fast as they come; files close at 20 MiB, so each is
    // a multipart upload (parts of 16 MiB) that takes a while to finish.
    let yaml = dir.join("pipeline.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: pq\nsources:\n  gen:\n    type: generator\n    series: 10000\n    interval: 1s\n    \
             start: 2026-11-25T00:00:00Z\n    seed: 3\n\
             sinks:\n  out:\n    type: parquet\n    inputs: [gen]\n    path: s3://{bucket}/archive\n    \
             roll_interval: 1h\n    max_file_mb: 20\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", yaml.to_str().unwrap(), "--workers", "2"])
        .envs([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a multipart upload is in progress, then kill -9.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let uploads = || -> Vec<String> {
        let xml = agent
            .get(&format!("{endpoint}/{bucket}?uploads"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    };
    let start = std::time::Instant::now();
    let in_progress = loop {
        let keys = uploads();
        if !keys.is_empty() {
            let _ = child.kill();
            break keys;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120) && child.try_wait().unwrap().is_none(),
            "no multipart upload was seen in progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(500));
    // Every object there is a whole Parquet file, and the upload that was
    // cut off is not among them.
    let objects: BTreeSet<String> = query(
        &format!("SELECT file FROM glob('s3://{bucket}/**')"),
        Some(&host_port),
    )
    .into_iter()
    .map(|r| r["file"].as_str().unwrap().to_owned())
    .collect();
    for key in &in_progress {
        assert!(
            !objects.contains(&format!("s3://{bucket}/{key}")) || !uploads().contains(key),
            "{key} is visible while its upload is incomplete"
        );
    }
    let parquet: Vec<&String> = objects.iter().filter(|o| o.ends_with(".parquet")).collect();
    for file in &parquet {
        // Reading the footer and every row fails on a truncated file.
        let rows = query(
            &format!("SELECT count(*) AS n FROM read_parquet('{file}')"),
            Some(&host_port),
        );
        assert!(rows[0]["n"].as_i64().unwrap() > 0, "{file}");
    }
    assert!(
        objects
            .iter()
            .all(|o| o.ends_with(".parquet") || o.contains("/_tidemark/")),
        "{objects:?}"
    );
}
