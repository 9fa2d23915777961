//! # tidemark-testkit
//!
//! Helpers shared by Tidemark's end-to-end tests (a dev-dependency only):
//! the services the tests talk to ([`pg`], [`duckdb`], a [`browser`]), a
//! `tidemark serve` child process ([`server`]), reference computations
//! ([`tumbling`], [`increase`]) and output readers.

#![allow(missing_docs)] // test helpers, documented where not obvious

pub mod alertmanager;
pub mod amtool;
pub mod browser;
pub mod duckdb;
pub mod http;
pub mod pg;
pub mod prometheus;
pub mod promtool;
pub mod s3;
pub mod server;
pub mod smtp;
pub mod tumbling;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tidemark_pipelines::compile;
use tidemark_pipelines::run::{RunOptions, RunReport, run};

/// An ingest request with one sample of `load{s="0"}` ... `load{s="n-1"}`
/// at `timestamp_ms`, series `s` valued `value(s)`.
pub fn load_request(
    n: i64,
    timestamp_ms: i64,
    value: impl Fn(i64) -> f64,
) -> tidemark_server::ingest::proto::WriteRequest {
    use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};
    WriteRequest {
        series: (0..n)
            .map(|s| Series {
                name: "load".into(),
                labels: vec![Label {
                    name: "s".into(),
                    value: s.to_string(),
                }],
                points: vec![Point {
                    timestamp_ms,
                    value: value(s),
                }],
            })
            .collect(),
    }
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a two-process timely host file on two ports the system hands out
/// (held together while chosen, so they differ; `port + 1` may be another
/// test's).
pub fn write_host_file(path: &Path) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    std::fs::write(
        path,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", port(&a), port(&b)),
    )
    .unwrap();
}

/// The `tidemark` binary of this build: cargo builds it beside the test
/// executables (`target/<profile>/tidemark`, tests in
/// `target/<profile>/deps/`) for the `tidemark-cli` tests that use this.
pub fn tidemark_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable in target/<profile>/deps");
    let bin = profile_dir.join(format!("tidemark{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: run the tests of tidemark-cli (cargo test -p tidemark-cli), which build it",
        bin.display()
    );
    bin
}

/// Compiles and runs pipeline text with `workers` threads.
pub fn run_text(text: &str, workers: usize) -> RunReport {
    let plan = compile("test.yaml", text).unwrap_or_else(|e| panic!("{e:#?}"));
    run(plan, RunOptions::quiet(workers)).unwrap()
}

/// One output line.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Milliseconds.
    pub timestamp: i64,
    /// Value (NaN where the file says a string).
    pub value: f64,
}

/// The rows of a JSON-lines output file.
pub fn read_rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Row {
                name: v["name"].as_str().unwrap().to_owned(),
                labels: v["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect(),
                timestamp: v["timestamp"].as_i64().unwrap(),
                value: v["value"].as_f64().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// Prometheus' extrapolatedRate, written out independently of the engine.
pub fn increase(points: &[(i64, f64)], start: i64, end: i64) -> Option<f64> {
    if points.len() < 2 || points[0].0 == points[points.len() - 1].0 {
        return None;
    }
    let (t0, v0) = points[0];
    let t1 = points[points.len() - 1].0;
    let mut inc = 0.0;
    for w in points.windows(2) {
        inc += if w[1].1 < w[0].1 {
            w[1].1
        } else {
            w[1].1 - w[0].1
        };
    }
    let sampled = (t1 - t0) as f64 / 1000.0;
    let avg = sampled / (points.len() - 1) as f64;
    let mut to_start = (t0 - start) as f64 / 1000.0;
    let mut to_end = (end - t1) as f64 / 1000.0;
    if to_start >= avg * 1.1 {
        to_start = avg / 2.0;
    }
    if inc > 0.0 && v0 >= 0.0 {
        to_start = to_start.min(sampled * v0 / inc);
    }
    if to_end >= avg * 1.1 {
        to_end = avg / 2.0;
    }
    Some(inc * (sampled + to_start + to_end) / sampled)
}

/// Labels and (timestamp, value) points of one remote-write series.
pub type RwSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

/// A Prometheus remote-write request body (snappy-compressed protobuf).
pub fn remote_write_body(series: &[RwSeries<'_>]) -> Vec<u8> {
    use prost::Message;
    use tidemark_server::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| Sample { value, timestamp })
                    .collect(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}
