//! The `timescaledb` sink against real servers: PostgreSQL from
//! `deploy/postgres.sh start 15432` (`TIDEMARK_POSTGRES` points elsewhere),
//! and TimescaleDB 2.23 in PGlite from `deploy/timescaledb.sh start 15440`
//! (`TIDEMARK_TIMESCALEDB`). The outage test starts and stops a PostgreSQL
//! of its own on port 15433 with `deploy/postgres.sh`. `./deploy/test.sh`
//! starts them all.

use tidemark_testkit as common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{count_or_zero, fresh_table, one, postgres, query, rows, sink, timescaledb};
use common::tumbling;
use common::{read_rows, run_text, temp_dir};

#[test]
fn window_rows_equal_a_from_scratch_computation_and_a_replay_changes_nothing() {
    let url = postgres();
    let (table, series) = fresh_table(&url, "pg_window");
    let dir = temp_dir("pg-window");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, 40, 300);
    let expected = tumbling::expected(40, 300);

    // Binary COPY (the default), two workers.
    let text = tumbling::pipeline(
        "pg-window",
        &input.display().to_string(),
        &sink(&url, &table, &series, ""),
    );
    let report = run_text(&text, 2);
    assert_eq!(report.errors, 0);
    assert_eq!(rows(&url, &table), expected);
    assert_eq!(one(&url, &format!("SELECT count(*) FROM {series}")), "120");
    let schema = query(
        &url,
        &format!("SELECT version, layout FROM tidemark_schema WHERE samples_table = '{table}'"),
    );
    assert_eq!(
        schema,
        vec![vec![Some("1".into()), Some("partitioned".into())]]
    );
    let partitions = one(
        &url,
        &format!("SELECT count(*) FROM pg_inherits WHERE inhparent = '{table}'::regclass"),
    );
    assert_eq!(partitions, "1");

    // The same input again, with the other write method and one worker:
    // schema setup runs again, and nothing changes (not even a row version:
    // equal values are not rewritten).
    let before = one(
        &url,
        &format!("SELECT sum(xmin::text::bigint) FROM {table}"),
    );
    let text = tumbling::pipeline(
        "pg-window",
        &input.display().to_string(),
        &sink(&url, &table, &series, "    method: insert\n"),
    );
    assert_eq!(run_text(&text, 1).errors, 0);
    assert_eq!(rows(&url, &table), expected);
    assert_eq!(
        one(
            &url,
            &format!("SELECT sum(xmin::text::bigint) FROM {table}")
        ),
        before
    );
    assert_eq!(
        one(
            &url,
            &format!("SELECT count(*) FROM tidemark_schema WHERE samples_table = '{table}'")
        ),
        "1"
    );
}

#[test]
fn a_late_correction_updates_its_row() {
    let url = postgres();
    let (table, series) = fresh_table(&url, "pg_late");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/late_update");
    let dir = temp_dir("pg-late");
    let golden = std::fs::read_to_string(case.join("pipeline.yaml")).unwrap();
    let text = golden
        .replace("${DIR}", &case.display().to_string())
        .replace("${OUT}", &dir.join("out.jsonl").display().to_string())
        .replace("  out:\n    type: file\n", "  db:\n    type: timescaledb\n    inputs: [w]\n    url: \"URL\"\n    table: TABLE\n    series_table: SERIES\n  out:\n    type: file\n")
        .replace("URL", &url)
        .replace("TABLE", &table)
        .replace("SERIES", &series);
    assert_eq!(run_text(&text, 2).errors, 0);
    // The golden output holds the window twice, then corrected; the table
    // holds the last of each.
    let mut last: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    let emitted = read_rows(&case.join("expected.jsonl"));
    for r in &emitted {
        last.insert(
            (r.name.clone(), r.labels["host"].clone(), r.timestamp),
            r.value,
        );
    }
    assert!(
        emitted.len() > last.len(),
        "the golden case has a correction"
    );
    assert_eq!(rows(&url, &table), last);
}

fn deploy(script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("deploy").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stopping_postgres_mid_run_holds_the_input_and_loses_nothing() {
    let url = deploy("postgres.sh", &["start", "15433"]);
    let (table, series) = fresh_table(&url, "pg_outage");
    let dir = temp_dir("pg-outage");
    let (hosts, seconds) = (20, 240);
    let text = tumbling::pipeline("pg-outage", "-", &sink(&url, &table, &series, ""));
    let yaml = dir.join("p.yaml");
    std::fs::write(&yaml, text).unwrap();
    let log = dir.join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "run",
            yaml.to_str().unwrap(),
            "--workers",
            "2",
            "--max-in-flight",
            "200",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The first half, written and visible.
    stdin
        .write_all(tumbling::input(hosts, 0, seconds / 2).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    wait_until(
        "the first windows in PostgreSQL",
        Duration::from_secs(60),
        || count_or_zero(&url, &table) > 0,
    );
    // The server goes away; the second half arrives while it is down.
    deploy("postgres.sh", &["stop", "15433"]);
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(tumbling::input(hosts, seconds / 2, seconds).as_bytes())
            .unwrap();
    });
    std::thread::sleep(Duration::from_secs(3));
    deploy("postgres.sh", &["start", "15433"]);
    writer.join().unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("Failed to write a batch; retrying."),
        "the outage was not noticed:\n{log}"
    );
    assert_eq!(rows(&url, &table), tumbling::expected(hosts, seconds));
}

#[test]
fn timescaledb_gets_a_hypertable_with_compression_and_retention_policies() {
    let url = timescaledb();
    let (table, series) = fresh_table(&url, "ts_window");
    let dir = temp_dir("ts-window");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, 10, 120);
    let extra =
        "    method: insert\n    chunk_interval: 6h\n    compress_after: 2d\n    retention: 30d\n";
    let text = tumbling::pipeline(
        "ts-window",
        &input.display().to_string(),
        &sink(&url, &table, &series, extra),
    );
    for _ in 0..2 {
        // Twice: setting up again changes nothing. One worker: PGlite runs
        // every connection in one session, so two writers' transactions
        // would interleave.
        assert_eq!(run_text(&text, 1).errors, 0);
        assert_eq!(rows(&url, &table), tumbling::expected(10, 120));
    }
    let hyper = query(
        &url,
        &format!(
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = '{table}'"
        ),
    );
    assert_eq!(hyper, vec![vec![Some("t".into())]]);
    let jobs = query(
        &url,
        &format!(
            "SELECT proc_name, config->>'compress_after', config->>'drop_after' FROM timescaledb_information.jobs
             WHERE hypertable_name = '{table}' ORDER BY proc_name"
        ),
    );
    assert_eq!(
        jobs,
        vec![
            vec![
                Some("policy_compression".into()),
                Some("48:00:00".into()),
                None
            ],
            vec![
                Some("policy_retention".into()),
                None,
                Some("720:00:00".into())
            ],
        ]
    );
    let segment = one(
        &url,
        &format!(
            "SELECT attname FROM timescaledb_information.compression_settings
             WHERE hypertable_name = '{table}' AND segmentby_column_index = 1"
        ),
    );
    assert_eq!(segment, "series_id");
    let chunk = one(
        &url,
        &format!(
            "SELECT time_interval::text FROM timescaledb_information.dimensions WHERE hypertable_name = '{table}'"
        ),
    );
    assert_eq!(chunk, "06:00:00");
}

#[test]
fn a_ca_file_makes_the_sink_verify_the_server_over_tls() {
    let url = postgres();
    let cert = deploy("postgres.sh", &["cert", "15432"]);
    let (table, series) = fresh_table(&url, "pg_tls");
    let dir = temp_dir("pg-tls");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, 3, 30);

    // The server's own certificate as the CA: verified, written.
    let extra = format!("    ca_file: {cert}\n");
    let text = tumbling::pipeline(
        "pg-tls",
        &input.display().to_string(),
        &sink(&url, &table, &series, &extra),
    );
    assert_eq!(run_text(&text, 1).errors, 0);
    assert_eq!(rows(&url, &table), tumbling::expected(3, 30));

    // Another CA: the handshake fails, the sink retries and holds its
    // input, and writes nothing.
    let (other_table, other_series) = fresh_table(&url, "pg_tls_other");
    let other = dir.join("other.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-keyout",
            dir.join("other.key").to_str().unwrap(),
            "-out",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let extra = format!("    ca_file: {}\n", other.display());
    let yaml = dir.join("p.yaml");
    std::fs::write(
        &yaml,
        tumbling::pipeline(
            "pg-tls",
            &input.display().to_string(),
            &sink(&url, &other_table, &other_series, &extra),
        ),
    )
    .unwrap();
    let log = dir.join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", yaml.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("a failed verification", Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("certificate verify failed")
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run should wait for the database"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(count_or_zero(&url, &other_table), 0);
}

/// A write no retry can mend (here: a database that does not exist,
/// SQLSTATE 3D000) stops the run at once with the cause and a non-zero
/// exit, instead of retrying forever; a server that is down is retried
/// (the outage test above).
#[test]
fn a_write_that_can_never_succeed_fails_the_run_with_its_cause() {
    let url = postgres();
    let missing = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/tidemark_no_such_database"),
        None => panic!("unexpected URL {url}"),
    };
    let dir = temp_dir("pg-missing-db");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, 2, 60);
    let yaml = dir.join("pipeline.yaml");
    std::fs::write(
        &yaml,
        tumbling::pipeline(
            "pg-missing-db",
            &input.display().to_string(),
            &sink(&missing, "never_samples", "never_series", ""),
        ),
    )
    .unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "--progress", "off", "--http", "127.0.0.1:0"])
        .arg(&yaml)
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Before, it retried forever: give it a minute, then call it a hang.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "still retrying after a minute: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("tidemark_no_such_database"), "{log}");
    assert!(log.contains("does not exist"), "{log}");
    assert!(log.contains("configuration error, not retried"), "{log}");
    assert!(log.contains("failed"), "{log}");
}
