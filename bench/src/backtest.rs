//! `tidemark bench backtest`: how fast an archive replays.
//!
//! A generator pipeline first writes an archive of `series` series (one
//! sample every 10 s each) with a `parquet` sink to a local directory
//! (the page cache, so the store is not what is measured). Then the
//! archive is replayed through a `parquet` source, as `tidemark backtest`
//! runs it, into: nothing (the replay alone), a one-minute window by
//! series, and the window plus the default detector (`score`) on every
//! sample, all discarded. Figures are medians of several runs at 1 and 2
//! workers, measured in one invocation; issue 20's goal is 5 million
//! samples per second on 2 workers with a window and a detector.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tidemark_pipelines::compile;
use tidemark_pipelines::run::{RunOptions, run};

/// Options of `tidemark bench backtest`.
#[derive(Clone, Debug, clap::Args)]
pub struct BacktestBenchOptions {
    /// Series in the archive.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Samples in the archive.
    #[arg(long, default_value_t = 10_000_000)]
    pub samples: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where the archive is written (removed afterwards).
    #[arg(long, default_value = "/tmp/tidemark-bench-backtest")]
    pub dir: PathBuf,
    /// Markdown file whose `backtest` section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only.
    #[arg(long)]
    pub no_write: bool,
}

/// 2026-01-01.
const START: &str = "2026-01-01T00:00:00Z";

/// What the replay feeds.
const CASES: [(&str, &str); 4] = [
    ("replay only", ""),
    (
        "window (1m by series: count, sum, max, avg)",
        "  w: {type: window, inputs: [in], window: {tumbling: 1m}, aggregates: [count, sum, max, avg]}\n",
    ),
    (
        "window + score (default detector, `novelty`)",
        "  w: {type: window, inputs: [in], window: {tumbling: 1m}, aggregates: [count, sum, max, avg]}\n  s: {type: score, inputs: [in]}\n",
    ),
    (
        "window + score (`light`)",
        "  w: {type: window, inputs: [in], window: {tumbling: 1m}, aggregates: [count, sum, max, avg]}\n  s: {type: score, inputs: [in], detector: light}\n",
    ),
];

fn compiled(text: &str) -> anyhow::Result<tidemark_pipelines::plan::Plan> {
    compile("bench.yaml", text).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Writes the archive; returns the samples it holds.
fn write_archive(options: &BacktestBenchOptions, dir: &Path) -> anyhow::Result<u64> {
    let text = format!(
        "name: ingest\nsources:\n  in: {{type: generator, series: {}, interval: 10s, start: \"{START}\", samples: {}, rate: 0}}\nsinks:\n  raw: {{type: parquet, inputs: [in], path: {}, roll_interval: 5m}}\n",
        options.series,
        (options.samples / options.series.max(1)).max(1),
        dir.display()
    );
    let report = run(compiled(&text)?, RunOptions::quiet(2))?;
    anyhow::ensure!(report.errors == 0, "writing the archive failed");
    Ok(report.totals.samples_in)
}

/// Replays the archive into `transforms`; samples per second.
fn replay(dir: &Path, transforms: &str, workers: usize) -> anyhow::Result<(u64, f64)> {
    let inputs = if transforms.is_empty() {
        "[in]".to_owned()
    } else if transforms.contains("  s:") {
        "[w, s]".to_owned()
    } else {
        "[w]".to_owned()
    };
    let text = format!(
        "name: backtest\nsources:\n  in: {{type: parquet, path: {}, pipeline: ingest, output: raw}}\n{}sinks:\n  out: {{type: blackhole, inputs: {inputs}}}\n",
        dir.display(),
        if transforms.is_empty() {
            String::new()
        } else {
            format!("transforms:\n{transforms}")
        }
    );
    let report = run(compiled(&text)?, RunOptions::quiet(workers))?;
    anyhow::ensure!(report.errors == 0, "the replay failed");
    let n = report.totals.samples_in;
    Ok((n, n as f64 / report.elapsed.as_secs_f64().max(1e-9)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run_bench(options: &BacktestBenchOptions) -> anyhow::Result<()> {
    let dir = options.dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    let written = write_archive(options, &dir)?;
    let bytes = du(&dir);
    eprintln!(
        "Archive: {written} samples, {:.1} MB ({:.1} bytes a sample).",
        bytes as f64 / 1e6,
        bytes as f64 / written.max(1) as f64
    );
    let mut rows = Vec::new();
    for (label, transforms) in CASES {
        for &workers in &options.workers {
            let mut rates = Vec::new();
            for _ in 0..options.repeats.max(1) {
                let (n, rate) = replay(&dir, transforms, workers)?;
                anyhow::ensure!(n == written, "replayed {n} of {written} samples");
                rates.push(rate);
            }
            let rate = median(rates);
            eprintln!("{label}, {workers} workers: {:.2} M samples/s", rate / 1e6);
            rows.push((label, workers, rate));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let one = |label: &str| {
        rows.iter()
            .find(|(l, w, _)| *l == label && *w == 1)
            .map(|r| r.2)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench backtest` (release build): an archive of {written} samples of {} series (one every 10 s; {:.1} bytes a sample in Parquet) in a local directory, replayed by a `parquet` source as `tidemark backtest` replays it, into a blackhole. Medians of {} runs; the ratio is to 1 worker in the same row. Goal (issue 20): 5 M samples/s on 2 workers with a window and a detector.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.series,
        bytes as f64 / written.max(1) as f64,
        options.repeats
    );
    md.push_str("| replayed into | workers | samples/s | vs 1 worker |\n|---|---:|---:|---:|\n");
    for (label, workers, rate) in &rows {
        let ratio = one(label).map_or(String::new(), |base| format!("{:.2}", rate / base));
        let _ = writeln!(
            md,
            "| {label} | {workers} | {:.2} M | {ratio} |",
            rate / 1e6
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        crate::write_section(&options.output, "backtest", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}

/// Bytes of the files below `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => todo.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
