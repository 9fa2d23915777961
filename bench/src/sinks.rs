//! `tidemark bench sinks`: how fast the `timescaledb`, `redis` and
//! `parquet` sinks write.
//!
//! For each sink setting and worker count: a generator makes `--samples`
//! samples over `--series` series (one a second of event time, no window),
//! written by the sink into a fresh table or key prefix, which is removed
//! afterwards. A run ends when the sink has written everything, so the time
//! is the sink's (setup included). The discard sink on the same input is
//! the baseline. Each figure is the median of `--repeats` runs in one
//! invocation; the table goes to `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::PathBuf;

use tidemark_pipelines::compile;
use tidemark_pipelines::run::{RunOptions, run};

/// Options of `tidemark bench sinks`.
#[derive(Clone, Debug, clap::Args)]
pub struct SinkBenchOptions {
    /// PostgreSQL to write to (`deploy/postgres.sh start 15432` starts one).
    #[arg(
        long,
        env = "TIDEMARK_POSTGRES",
        default_value = "postgresql://postgres@127.0.0.1:15432/postgres"
    )]
    pub postgres: String,
    /// Redis to write to (`deploy/redis.sh start 16379` starts one).
    #[arg(
        long,
        env = "TIDEMARK_REDIS",
        default_value = "redis://127.0.0.1:16379/"
    )]
    pub redis: String,
    /// Samples per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub samples: u64,
    /// Series.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Markdown file whose sinks section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Discard,
    Copy,
    Insert,
    Redis,
    RedisLatest,
    ParquetMemory,
    ParquetDirectory,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Discard => "discard (baseline)",
            Target::Copy => "timescaledb, method: copy (PostgreSQL)",
            Target::Insert => "timescaledb, method: insert (PostgreSQL)",
            Target::Redis => "redis (history 100, pub/sub)",
            Target::RedisLatest => "redis (latest only: history 0, no pub/sub)",
            Target::ParquetMemory => "parquet to memory:// (encoding, zstd 3)",
            Target::ParquetDirectory => "parquet to a local directory",
        }
    }
}

fn pipeline(o: &SinkBenchOptions, target: Target, tag: &str) -> String {
    let sink = match target {
        Target::Discard => "    type: blackhole\n".to_owned(),
        Target::Copy | Target::Insert => format!(
            "    type: timescaledb\n    url: \"{}\"\n    table: {tag}_samples\n    series_table: {tag}_series\n    method: {}\n",
            o.postgres,
            if matches!(target, Target::Copy) {
                "copy"
            } else {
                "insert"
            }
        ),
        Target::Redis => format!(
            "    type: redis\n    url: \"{}\"\n    key_prefix: {tag}\n",
            o.redis
        ),
        Target::RedisLatest => format!(
            "    type: redis\n    url: \"{}\"\n    key_prefix: {tag}\n    history: 0\n    channel: \"off\"\n",
            o.redis
        ),
        Target::ParquetMemory => {
            "    type: parquet\n    path: memory://\n    promote: [host]\n".to_owned()
        }
        Target::ParquetDirectory => format!(
            "    type: parquet\n    path: \"{}\"\n    promote: [host]\n",
            parquet_dir(tag).display()
        ),
    };
    format!(
        "name: bench-sinks\nsources:\n  g:\n    type: generator\n    series: {}\n    interval: 1s\n    samples: {}\n    seed: 1\nsinks:\n  out:\n    inputs: [g]\n{sink}",
        o.series,
        o.samples.div_ceil(o.series)
    )
}

fn parquet_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(tag)
}

pub(crate) async fn drop_tables(url: &str, tag: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP VIEW IF EXISTS {tag}_samples_labeled; DROP TABLE IF EXISTS {tag}_samples CASCADE;
             DROP TABLE IF EXISTS {tag}_series;
             DO $$ BEGIN
               IF to_regclass('tidemark_schema') IS NOT NULL THEN
                 DELETE FROM tidemark_schema WHERE samples_table = '{tag}_samples';
               END IF;
             END $$;"
        ))
        .await?;
    Ok(())
}

fn clean(o: &SinkBenchOptions, target: Target, tag: &str) -> anyhow::Result<()> {
    match target {
        Target::Discard | Target::ParquetMemory => {}
        Target::ParquetDirectory => std::fs::remove_dir_all(parquet_dir(tag))?,
        Target::Copy | Target::Insert => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drop_tables(&o.postgres, tag))?;
        }
        Target::Redis | Target::RedisLatest => {
            let mut con = redis::Client::open(o.redis.as_str())?.get_connection()?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{tag}:*"))
                    .arg("COUNT")
                    .arg(10_000)
                    .query(&mut con)?;
                if !keys.is_empty() {
                    let _: () = redis::cmd("UNLINK").arg(keys).query(&mut con)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    Ok(())
}

/// Runs the benchmark, prints the table and writes it.
pub fn sinks(o: &SinkBenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut n = 0;
    for &workers in &o.workers {
        for target in [
            Target::Discard,
            Target::Copy,
            Target::Insert,
            Target::Redis,
            Target::RedisLatest,
            Target::ParquetMemory,
            Target::ParquetDirectory,
        ] {
            let mut rates = Vec::new();
            for _ in 0..o.repeats.max(1) {
                n += 1;
                let tag = format!("bench_{}_{n}", std::process::id());
                let plan = compile("bench.yaml", &pipeline(o, target, &tag))
                    .map_err(|e| anyhow::anyhow!("benchmark pipeline: {e:?}"))?;
                let report = run(plan, RunOptions::quiet(workers))?;
                clean(o, target, &tag)?;
                anyhow::ensure!(
                    report.errors == 0,
                    "{}: errors while writing",
                    target.label()
                );
                rates.push(report.totals.samples_out as f64 / report.elapsed.as_secs_f64());
            }
            let rate = crate::window::median(rates.clone());
            eprintln!(
                "{workers} worker(s), {}: {:.0} K samples/s (runs: {})",
                target.label(),
                rate / 1e3,
                rates
                    .iter()
                    .map(|r| format!("{:.0} K", r / 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push((workers, target, rate));
        }
    }
    let mut md = format!(
        "Sinks (`tidemark bench sinks`, {} samples over {} series, no window; PostgreSQL {} and Redis on the same 2 cores; median of {}):\n\n\
         | workers | sink | samples written/s | of baseline |\n|---|---|---|---|\n",
        o.samples,
        o.series,
        "15 from deploy/postgres.sh (fsync off)",
        o.repeats.max(1)
    );
    for (workers, target, rate) in &rows {
        let base = rows
            .iter()
            .find(|(w, t, _)| w == workers && matches!(t, Target::Discard))
            .map_or(f64::NAN, |r| r.2);
        let _ = writeln!(
            md,
            "| {workers} | {} | {:.0} K | {:.2} |",
            target.label(),
            rate / 1e3,
            rate / base
        );
    }
    eprintln!("\n{md}");
    if !o.no_write {
        crate::write_section(&o.output, "sinks", &md)?;
        eprintln!("Wrote {}.", o.output.display());
    }
    Ok(())
}
