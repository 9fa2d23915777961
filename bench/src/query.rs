//! `tidemark bench query`: latency of the Prometheus query API over a
//! `memory` sink, the Parquet archive and TimescaleDB, and what queries
//! cost ingest.
//!
//! Starts `tidemark serve` (a child process, 1 worker) with a gRPC source
//! into a `memory` sink (or only a `parquet` sink, or only a `timescaledb`
//! sink, so that every point comes from that tier; one sample of another
//! metric past the history moves the watermark past it), loads N series (`bench{job="j0".."j99",
//! instance="i<n>"}`, a counter each) with a point every 15 s over
//! `--minutes`, then times each query `--repeats` times from one client
//! (ureq, in this process): p50 and p99 of the wall time per request. Then
//! it sends the same number of new points twice as fast as the server takes
//! them, once alone and once while a client thread asks the heaviest
//! instant query in a loop, and reports both ingest rates: what queries
//! cost ingest on this machine, where the clients share its 2 cores.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidemark_codecs::ingest::proto::{Label, Point, Series, WriteRequest};
use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;

use crate::latency::{ServerChild, start_server_with};

/// Options of `tidemark bench query`.
#[derive(Clone, Debug, clap::Args)]
pub struct QueryBenchOptions {
    /// Series counts.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    pub series: Vec<usize>,
    /// Minutes of history loaded (a point every 15 s).
    #[arg(long, default_value_t = 15)]
    pub minutes: u64,
    /// Times each query is asked.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Where the history is queried from: `memory`, `parquet` (a local
    /// directory), `postgres` (the `timescaledb` sink's tables).
    #[arg(long, value_delimiter = ',', default_values_t = [Tier::Memory, Tier::Parquet, Tier::Postgres])]
    pub tiers: Vec<Tier>,
    /// PostgreSQL or TimescaleDB for the `postgres` tier
    /// (`deploy/postgres.sh start 15432` starts one).
    #[arg(
        long,
        env = "TIDEMARK_POSTGRES",
        default_value = "postgresql://postgres@127.0.0.1:15432/postgres"
    )]
    pub postgres: String,
    /// Markdown file whose query section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

/// Where a query finds the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// A `memory` sink.
    Memory,
    /// A `parquet` sink's files in a local directory.
    Parquet,
    /// A `timescaledb` sink's tables.
    Postgres,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Memory => "memory",
            Tier::Parquet => "parquet",
            Tier::Postgres => "postgres",
        })
    }
}

/// Tables and directories of this benchmark.
const TAG: &str = "bench_query";

fn pipeline(tier: Tier, o: &QueryBenchOptions) -> String {
    let sink = match tier {
        Tier::Memory => {
            "recent: {type: memory, inputs: [in], retention: 2h, max_series: 2000000, max_mb: 1024}"
                .to_owned()
        }
        Tier::Parquet => format!(
            "archive: {{type: parquet, inputs: [in], path: {}, roll_interval: 1m}}",
            archive_dir().display()
        ),
        Tier::Postgres => format!(
            "archive: {{type: timescaledb, inputs: [in], url: \"{}\", table: {TAG}_samples, series_table: {TAG}_series, timescaledb: disabled}}",
            o.postgres
        ),
    };
    format!("name: query\nsources:\n  in: {{type: grpc, idle_timeout: 1s}}\nsinks:\n  {sink}\n")
}

fn archive_dir() -> PathBuf {
    std::env::temp_dir().join(TAG)
}

/// Starts each tier empty.
fn clean(tier: Tier, o: &QueryBenchOptions) -> anyhow::Result<()> {
    match tier {
        Tier::Memory => {}
        Tier::Parquet => match std::fs::remove_dir_all(archive_dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
        Tier::Postgres => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::sinks::drop_tables(&o.postgres, TAG))
            .map_err(|e| {
                anyhow::anyhow!(
                    "no PostgreSQL at {} ({e:#}): start one with `deploy/postgres.sh start 15432`, or leave out `postgres` from --tiers",
                    o.postgres
                )
            })?,
    }
    Ok(())
}

const STEP_MS: i64 = 15_000;
const BATCH: usize = 5_000;

/// The queries timed: (what, kind, expression).
const QUERIES: &[(&str, Kind, &str)] = &[
    ("one series", Kind::Instant, r#"bench{instance="i7"}"#),
    ("1% of series", Kind::Instant, r#"bench{job="j7"}"#),
    (
        "sum by job of rate, all series",
        Kind::Instant,
        "sum by (job) (rate(bench[5m]))",
    ),
    (
        "one series' rate, every 15 s",
        Kind::Range,
        r#"rate(bench{instance="i7"}[1m])"#,
    ),
    (
        "sum by job of rate, all series, every minute",
        Kind::Range,
        "sum by (job) (rate(bench[5m]))",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Instant,
    Range,
}

fn request(series: std::ops::Range<usize>, t: i64, step: i64) -> WriteRequest {
    WriteRequest {
        series: series
            .map(|i| Series {
                name: "bench".into(),
                labels: vec![
                    Label {
                        name: "job".into(),
                        value: format!("j{}", i % 100),
                    },
                    Label {
                        name: "instance".into(),
                        value: format!("i{i}"),
                    },
                ],
                points: vec![Point {
                    timestamp_ms: t,
                    // A counter: +i%7 a step.
                    value: (step * (i % 7) as i64) as f64,
                }],
            })
            .collect(),
    }
}

/// Sends `steps` points of every series, from `first`, as fast as the
/// server takes them; returns samples/s.
async fn load(server: &ServerChild, series: usize, first: i64, steps: i64) -> anyhow::Result<f64> {
    let mut client = IngestServiceClient::connect(server.grpc.clone()).await?;
    let start = Instant::now();
    for s in 0..steps {
        let t = first + s * STEP_MS;
        let step = (t / STEP_MS) % 1_000_000;
        for from in (0..series).step_by(BATCH) {
            let batch = request(from..(from + BATCH).min(series), t, step);
            // A full pipeline answers RESOURCE_EXHAUSTED (backpressure):
            // send the batch again shortly, as a client should.
            loop {
                match client.write(batch.clone()).await {
                    Ok(_) => break,
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(status) => return Err(status.into()),
                }
            }
        }
    }
    Ok((series as f64 * steps as f64) / start.elapsed().as_secs_f64())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str) -> anyhow::Result<String> {
    let mut r = agent.get(url).call()?;
    let body = r.body_mut().with_config().limit(1 << 30).read_to_string()?;
    anyhow::ensure!(r.status() == 200, "{url}: {} {body}", r.status());
    Ok(body)
}

/// Points the memory sink holds, from `/metrics`.
fn held(agent: &ureq::Agent, server: &ServerChild) -> anyhow::Result<u64> {
    let text = get(agent, &format!("{}/metrics", server.http))?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("tidemark_memory_points{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Points the archiving sink has written, from the pipeline's status.
fn archived(agent: &ureq::Agent, server: &ServerChild) -> anyhow::Result<u64> {
    let text = get(agent, &format!("{}/api/v1/pipelines/query", server.http))?;
    let status: serde_json::Value = serde_json::from_str(&text)?;
    Ok(status["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "archive"))
        .and_then(|c| c["sent"].as_u64())
        .unwrap_or(0))
}

fn wait_for(
    agent: &ureq::Agent,
    server: &ServerChild,
    tier: Tier,
    points: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let have = || match tier {
        Tier::Memory => held(agent, server),
        Tier::Parquet | Tier::Postgres => archived(agent, server),
    };
    while have()? < points {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {tier} sink holds {} points, not {points}",
            have()?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One sample of another metric a few minutes past the history, so that
/// the watermark passes the history's last step: sinks write only what is
/// behind it (the `parquet` sink closes its last files).
async fn close_epochs(server: &ServerChild, after: i64) -> anyhow::Result<()> {
    let mut client = IngestServiceClient::connect(server.grpc.clone()).await?;
    let request = WriteRequest {
        series: vec![Series {
            name: "bench_marker".into(),
            labels: Vec::new(),
            points: vec![Point {
                timestamp_ms: after + 3 * 60_000,
                value: 1.0,
            }],
        }],
    };
    client.write(request).await?;
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn url(server: &ServerChild, kind: Kind, expr: &str, first: i64, last: i64) -> String {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    match kind {
        Kind::Instant => format!(
            "{}/api/v1/query?query={}&time={}",
            server.http,
            encode(expr),
            seconds(last)
        ),
        Kind::Range => {
            let step = if expr.contains("instance") { 15 } else { 60 };
            format!(
                "{}/api/v1/query_range?query={}&start={}&end={}&step={step}",
                server.http,
                encode(expr),
                seconds(first),
                seconds(last)
            )
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    series: usize,
    tier: Tier,
    what: &'static str,
    kind: Kind,
    p50: f64,
    p99: f64,
    bytes: usize,
}

struct Cost {
    series: usize,
    alone: f64,
    queried: f64,
    queries: u64,
}

/// Runs the benchmark, prints the tables and writes them.
pub fn query(o: &QueryBenchOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let agent = agent();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let steps = (o.minutes * 60_000) as i64 / STEP_MS;
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    let mut loads = Vec::new();
    for (&series, &tier) in o
        .series
        .iter()
        .flat_map(|s| o.tiers.iter().map(move |t| (s, t)))
    {
        clean(tier, o)?;
        // The archive's directory and the database, as the server's access
        // policy must allow them.
        let dir = archive_dir().display().to_string();
        let server = start_server_with(
            1,
            &["--allow-write-dir", &dir, "--allow-host", "*"],
            Some(&pipeline(tier, o)),
        )?;
        // History ends a minute before now; the ingest runs add after it.
        let first = (now - 60_000) / STEP_MS * STEP_MS - (steps - 1) * STEP_MS;
        let last = first + (steps - 1) * STEP_MS;
        let rate = runtime.block_on(load(&server, series, first, steps))?;
        if tier != Tier::Memory {
            runtime.block_on(close_epochs(&server, last))?;
        }
        wait_for(&agent, &server, tier, series as u64 * steps as u64)?;
        eprintln!(
            "{series} series, {tier}: loaded {} points at {:.0} K samples/s",
            series as i64 * steps,
            rate / 1e3
        );
        loads.push((series, tier, rate));
        for &(what, kind, expr) in QUERIES {
            let u = url(&server, kind, expr, first, last);
            let mut times = Vec::with_capacity(o.repeats);
            let mut bytes = 0;
            for _ in 0..o.repeats {
                let start = Instant::now();
                bytes = get(&agent, &u)?.len();
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let row = Row {
                series,
                tier,
                what,
                kind,
                p50: percentile(&times, 0.5),
                p99: percentile(&times, 0.99),
                bytes,
            };
            eprintln!("{}", row_text(&row));
            rows.push(row);
        }
        if tier != Tier::Memory {
            drop(server);
            clean(tier, o)?;
            continue;
        }
        // Ingest alone, then with a client asking the heaviest instant
        // query in a loop; each run adds `extra` new steps.
        let extra = (2_000_000 / series as i64).max(2);
        let mut t = last + STEP_MS;
        let alone = runtime.block_on(load(&server, series, t, extra))?;
        t += extra * STEP_MS;
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let heavy = url(&server, Kind::Instant, QUERIES[2].2, first, t);
        let asker = {
            let (stop, asked) = (Arc::clone(&stop), Arc::clone(&asked));
            std::thread::spawn(move || {
                let agent = self::agent();
                while !stop.load(Ordering::Relaxed) {
                    if get(&agent, &heavy).is_ok() {
                        asked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let queried = runtime.block_on(load(&server, series, t, extra))?;
        stop.store(true, Ordering::Relaxed);
        let _ = asker.join();
        let cost = Cost {
            series,
            alone,
            queried,
            queries: asked.load(Ordering::Relaxed),
        };
        eprintln!("{}", cost_text(&cost));
        costs.push(cost);
        drop(server);
    }
    let mut md = format!(
        "Query API (`tidemark bench query`, `tidemark serve` with 1 worker, a gRPC source into one sink per tier: `memory`; `parquet` in a local directory, 1-minute files, no memory sink; `postgres`: the `timescaledb` sink into PostgreSQL 15 on the same machine, no memory sink. `bench{{job, instance}}` counters with a point every 15 s for {} minutes; each query asked {} times in a row by one client in the benchmark process, on the same 2 cores; wall time per request, JSON included; range queries span the whole history, one series every 15 s, the aggregation every minute):\n\n\
         | series | tier | query | kind | p50 | p99 | answer |\n|---|---|---|---|---|---|---|\n",
        o.minutes, o.repeats
    );
    for r in &rows {
        let _ = writeln!(md, "{}", row_text(r));
    }
    let _ = writeln!(
        md,
        "\nLoading the history over gRPC: {}.\n\nWhat queries cost ingest: the same number of new points sent as fast as the server takes them, alone and while another client asks `sum by (job) (rate(bench[5m]))` over all series in a loop:\n\n| series | ingest alone | ingest while queried | ratio | queries answered meanwhile |\n|---|---|---|---|---|",
        loads
            .iter()
            .map(|(s, t, r)| format!("{:.0} K samples/s for {s} series into {t}", r / 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &costs {
        let _ = writeln!(md, "{}", cost_text(c));
    }
    eprintln!("\n{md}");
    if !o.no_write {
        crate::write_section(&o.output, "query", &md)?;
        eprintln!("Wrote {}.", o.output.display());
    }
    Ok(())
}

fn row_text(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} KB |",
        r.series,
        r.tier,
        r.what,
        match r.kind {
            Kind::Instant => "instant",
            Kind::Range => "range",
        },
        r.p50,
        r.p99,
        r.bytes as f64 / 1024.0
    )
}

fn cost_text(c: &Cost) -> String {
    format!(
        "| {} | {:.0} K samples/s | {:.0} K samples/s | {:.2} | {} |",
        c.series,
        c.alone / 1e3,
        c.queried / 1e3,
        c.queried / c.alone,
        c.queries
    )
}
