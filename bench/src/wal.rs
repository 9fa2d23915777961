//! `tidemark bench wal`: what the write-ahead log of network ingest costs
//! (ack latency and throughput with each `--wal-fsync` policy against no
//! log) and how long a restart after `kill -9` takes to replay it.
//!
//! For each configuration it starts `tidemark serve` as a child process
//! with a window pipeline over a `grpc` source, offers each rate with the
//! open-loop load generator ([`crate::loadgen`]) in this process, and reads
//! the server's CPU. Then, with `fsync: always`, it kills the server with
//! `SIGKILL` right after a step and starts it again on the same data
//! directory: the time to ready and the time until the source has read
//! back what the log held for it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::latency::{ServerChild, load_with_cpu, start_server_with};
use crate::loadgen::{LoadOptions, LoadProtocol, LoadReport};

/// Options of `tidemark bench wal`.
#[derive(Clone, Debug, clap::Args)]
pub struct WalBenchOptions {
    /// Offered rates in samples per second.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000.0f64, 1_000_000.0])]
    pub rates: Vec<f64>,
    /// `--wal-fsync` policies measured, beside `off` (no `--data-dir`).
    #[arg(long, value_delimiter = ',', default_values_t = ["off".to_owned(), "always".to_owned(), "100ms".to_owned()])]
    pub fsync: Vec<String>,
    /// `--checkpoint-interval` values measured with `fsync: always` (the
    /// first one also with the other policies).
    #[arg(long, value_delimiter = ',', default_values_t = ["10s".to_owned(), "off".to_owned()])]
    pub checkpoints: Vec<String>,
    /// How long each rate is offered.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Samples per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Load generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Distinct series.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Server worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Where the data directories go (removed after).
    #[arg(long, default_value = "/tmp/tidemark-bench-wal")]
    pub dir: PathBuf,
    /// Markdown file whose `wal` section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only.
    #[arg(long)]
    pub no_write: bool,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    tidemark_engine::time::parse_duration(text).map_err(|e| e.to_string())
}

const PIPELINE: &str = "name: wal
sources:
  g: {type: grpc, max_out_of_orderness: 1s}
transforms:
  w:
    type: window
    inputs: [g]
    window: {tumbling: 10s}
    by: [series]
    aggregates: [count, sum, max]
sinks:
  out: {type: blackhole, inputs: [w]}
";

struct Row {
    fsync: String,
    checkpoints: String,
    report: LoadReport,
    server_cpu: f64,
}

fn offer(
    server: &ServerChild,
    options: &WalBenchOptions,
    rate: f64,
) -> anyhow::Result<(LoadReport, f64)> {
    let load = LoadOptions {
        protocol: LoadProtocol::Grpc,
        target: server.grpc.clone(),
        rate,
        series: options.series,
        batch: options.batch,
        connections: options.connections,
        duration: options.duration,
        metric: "loadgen_value".into(),
        token: None,
    };
    load_with_cpu(server, &load)
}

fn samples_in(server: &ServerChild) -> Option<u64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("{}/api/v1/pipelines/wal", server.http))
        .call()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    v["samples_in"].as_u64()
}

/// What a restart after `kill -9` took.
struct Recovery {
    log_mb: f64,
    ready_s: f64,
    replayed: u64,
    replay_s: f64,
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the benchmark.
pub fn wal(options: &WalBenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut recovery = None;
    let first = options
        .checkpoints
        .first()
        .cloned()
        .unwrap_or_else(|| "10s".into());
    let mut configs: Vec<(String, String)> = Vec::new();
    for fsync in &options.fsync {
        match fsync.as_str() {
            "off" => configs.push((fsync.clone(), "-".into())),
            "always" => configs.extend(
                options
                    .checkpoints
                    .iter()
                    .map(|c| (fsync.clone(), c.clone())),
            ),
            _ => configs.push((fsync.clone(), first.clone())),
        }
    }
    for (fsync, checkpoints) in &configs {
        let data = options.dir.join(
            format!("{fsync}-{checkpoints}").replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        );
        let _ = std::fs::remove_dir_all(&data);
        let data_s = data.display().to_string();
        let args: Vec<&str> = if fsync == "off" {
            Vec::new()
        } else {
            vec![
                "--data-dir",
                &data_s,
                "--wal-fsync",
                fsync,
                "--checkpoint-interval",
                checkpoints,
            ]
        };
        let server = start_server_with(options.workers, &args, Some(PIPELINE))?;
        let _ = offer(&server, options, 10_000.0)?;
        for (i, &rate) in options.rates.iter().enumerate() {
            let (report, server_cpu) = offer(&server, options, rate)?;
            eprintln!(
                "fsync {fsync:>6} checkpoints {checkpoints:>4} {rate:>9.0}/s: achieved {:>9.0}/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, refused {}, server CPU {server_cpu:.0}%",
                report.achieved_rate,
                report.p50_ms,
                report.p99_ms,
                report.p999_ms,
                report.batches_refused
            );
            rows.push(Row {
                fsync: fsync.clone(),
                checkpoints: checkpoints.clone(),
                report,
                server_cpu,
            });
            let last = i + 1 == options.rates.len();
            let recovered = fsync == "always" && *checkpoints == first;
            if !(last && recovered) {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if !(fsync == "always" && *checkpoints == first) {
            drop(server);
            continue;
        }
        // Kill right after the last step: the log holds what the open
        // windows read (and the positions trail by up to a second).
        let log_mb = dir_bytes(&data.join("wal")) as f64 / (1 << 20) as f64;
        let mut server = server;
        Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()?;
        let _ = server.child.wait();
        let start = Instant::now();
        let server = start_server_with(options.workers, &args, None)?;
        let ready_s = start.elapsed().as_secs_f64();
        // Replayed once samples_in stops moving for a second.
        let (mut last, mut since) = (0, Instant::now());
        let replay_s = loop {
            let n = samples_in(&server).unwrap_or(0);
            if n != last {
                (last, since) = (n, Instant::now());
            } else if n > 0 && since.elapsed() > Duration::from_secs(1) {
                break (since - start).as_secs_f64();
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(300),
                "the replay did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!(
            "recovery: log {log_mb:.0} MiB, ready after {ready_s:.2} s, {last} samples replayed in {replay_s:.2} s"
        );
        recovery = Some(Recovery {
            log_mb,
            ready_s,
            replayed: last,
            replay_s,
        });
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&options.dir);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench wal` (release build): `tidemark serve --workers {}` with a 10 s tumbling window by series over a `grpc` source into a discard sink, without a log (`off`) and with `--data-dir` and each `--wal-fsync` (with `always`, also with each `--checkpoint-interval`: the window's state is checkpointed, or not); the load generator in the benchmark's process on the same 2-core machine, `grpc` batches of {} samples over {} series on {} connections, {} s per rate. Latency runs from each batch's due time to its acknowledgement.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.workers,
        options.batch,
        options.series,
        options.connections,
        options.duration.as_secs_f64(),
    );
    md.push_str("| wal fsync | checkpoints | offered samples/s | achieved samples/s | p50 ms | p99 ms | p99.9 ms | refused batches | server CPU |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0}% |",
            r.fsync,
            r.checkpoints,
            r.report.offered_rate,
            r.report.achieved_rate,
            r.report.p50_ms,
            r.report.p99_ms,
            r.report.p999_ms,
            r.report.batches_refused,
            r.server_cpu
        );
    }
    if let Some(r) = recovery {
        let _ = writeln!(
            md,
            "\nRecovery after `kill -9` (fsync `always`, killed right after the last step): the log held {:.0} MiB; the restarted server was ready after {:.2} s (opening the log checks every record's checksum) and its source had read back {} samples {:.2} s after the start ({:.0} samples/s).",
            r.log_mb,
            r.ready_s,
            r.replayed,
            r.replay_s,
            r.replayed as f64 / r.replay_s.max(1e-9)
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        crate::write_section(&options.output, "wal", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}
