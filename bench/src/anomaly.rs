//! `tidemark bench anomaly`: the `score` transform's quality on the
//! development half of the Numenta Anomaly Benchmark (NAB), and its cost.
//!
//! Each NAB file is read as the benchmark gives it, one JSON-lines sample a
//! row (`{"name": "nab_value", "labels": {"file": "<category>/<file>.csv"},
//! "timestamp": <ms, UTC>, "value": v}`), through a plain `file` source into
//! a `score` transform and a `file` sink, one run per file, with one set of
//! defaults for every file; a second pass gives each file the range hint
//! NAB allows (the file's minimum and maximum). Each detector (`novelty`,
//! the default; `light`; `robust`) is measured so. The outputs are scored by
//! NAB's rules with the scorer `--scorer` names (`nab_score.py`, which
//! documents the layout it reads), and the figures written to
//! `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `tidemark bench anomaly`.
#[derive(Clone, Debug, clap::Args)]
pub struct AnomalyBenchOptions {
    /// The NAB development subset (its `data/` and `labels/`).
    #[arg(long, default_value = "../shared/nab-dev")]
    pub nab: PathBuf,
    /// NAB's scorer (`nab_score.py OUTDIR NAB_ROOT`).
    #[arg(long, default_value = "../shared/tools/nab_score.py")]
    pub scorer: PathBuf,
    /// Where inputs and outputs are written.
    #[arg(long, default_value = "target/bench-anomaly")]
    pub work: PathBuf,
    /// Markdown file whose anomaly section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Series counts of the cost measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    pub series: Vec<u64>,
    /// Samples per series in the cost measurement (the models fill their
    /// 256-value windows in the first 256).
    #[arg(long, default_value_t = 300)]
    pub samples: u64,
    /// Detectors measured (NAB and cost), the first the default.
    #[arg(long, value_delimiter = ',', default_values_t = DETECTORS.map(String::from))]
    pub detectors: Vec<String>,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

/// Samples per second of generator -> score -> blackhole with `series`
/// series on 1 worker, the median of three runs (one run past 5 M
/// samples); and the bytes a series holds once its model is full.
fn cost(detector: &str, series: u64, samples: u64) -> anyhow::Result<(f64, f64, f64)> {
    let yaml = format!(
        "name: cost\nsources:\n  gen: {{type: generator, series: {series}, interval: 1s, start: 2026-01-01T00:00:00Z, samples: {samples}, seed: 1}}\n\
         transforms:\n  s: {{type: score, inputs: [gen], detector: {detector}}}\nsinks:\n  out: {{type: blackhole, inputs: [s]}}\n\
         "
    );
    let baseline = format!(
        "name: cost\nsources:\n  gen: {{type: generator, series: {series}, interval: 1s, start: 2026-01-01T00:00:00Z, samples: {samples}, seed: 1}}\n\
         sinks:\n  out: {{type: blackhole, inputs: [gen]}}\n"
    );
    let rate = |text: &str| -> anyhow::Result<f64> {
        let mut rates = Vec::new();
        let runs = if series * samples > 5_000_000 { 1 } else { 3 };
        for _ in 0..runs {
            let plan = tidemark_pipelines::compile("cost.yaml", text)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let start = Instant::now();
            let report =
                tidemark_pipelines::run::run(plan, tidemark_pipelines::run::RunOptions::quiet(1))?;
            rates.push(report.totals.samples_in as f64 / start.elapsed().as_secs_f64());
        }
        Ok(crate::window::median(rates))
    };
    let scored = rate(&yaml)?;
    let generated = rate(&baseline)?;
    // Bytes per series: a full model, and its two output series.
    use tidemark_operators::score::{Detector, Model, Params};
    let p = Params {
        detector: match detector {
            "light" => Detector::Light,
            "robust" => Detector::Robust,
            _ => Detector::Novelty,
        },
        ..Params::default()
    };
    let mut m = Model::new(&p);
    for i in 0..(p.window as i64 * 2) {
        m.update(&p, i * 1000, (i % 17) as f64);
    }
    let out = tidemark_engine::Series::new(
        "cpu_usage:anomaly_score",
        [
            ("host", "host-0001"),
            ("region", "eu-west"),
            ("service", "web"),
        ],
    );
    let bytes = m.bytes() as f64 + 2.0 * out.heap_bytes() as f64 + 64.0;
    Ok((scored, generated, bytes))
}

/// One NAB file: its path under `data/` and its rows.
struct NabFile {
    rel: String,
    rows: Vec<(i64, f64)>,
}

fn read_nab(root: &Path) -> anyhow::Result<Vec<NabFile>> {
    let mut files = Vec::new();
    let data = root.join("data");
    let mut categories: Vec<_> = std::fs::read_dir(&data)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e} (pass --nab)", data.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    categories.sort();
    for dir in categories {
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path)?;
            let mut rows = Vec::new();
            for line in text.lines().skip(1) {
                let Some((ts, v)) = line.split_once(',') else {
                    continue;
                };
                let ts = chrono::NaiveDateTime::parse_from_str(ts.trim(), "%Y-%m-%d %H:%M:%S")
                    .map_err(|e| anyhow::anyhow!("{}: {ts}: {e}", path.display()))?;
                rows.push((ts.and_utc().timestamp_millis(), v.trim().parse()?));
            }
            let category = dir.file_name().unwrap_or_default().to_string_lossy();
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            files.push(NabFile {
                rel: format!("{category}/{file}"),
                rows,
            });
        }
    }
    anyhow::ensure!(!files.is_empty(), "no NAB files under {}", data.display());
    Ok(files)
}

/// Scores every file with `score_yaml` (the transform's extra fields, or
/// a function of the file's range) and returns the samples per second.
fn score_all(
    files: &[NabFile],
    work: &Path,
    out: &Path,
    detector: &str,
    range_hint: bool,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(out)?;
    let (mut samples, mut seconds) = (0usize, 0.0);
    for f in files {
        let input = work
            .join("in")
            .join(format!("{}.jsonl", f.rel.replace('/', "__")));
        std::fs::create_dir_all(input.parent().unwrap_or(work))?;
        let mut text = String::new();
        for (ts, v) in &f.rows {
            let _ = writeln!(
                text,
                r#"{{"name":"nab_value","labels":{{"file":"{}"}},"timestamp":{ts},"value":{v}}}"#,
                f.rel
            );
        }
        std::fs::write(&input, text)?;
        let range = if range_hint {
            let lo = f.rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            let hi = f.rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
            let hi = if hi > lo { hi } else { lo + 1.0 };
            format!("\n    range: {{min: {lo}, max: {hi}}}")
        } else {
            String::new()
        };
        let output = out.join(format!("{}.jsonl", f.rel.replace('/', "__")));
        let yaml = format!(
            "name: nab\nsources:\n  in: {{type: file, path: '{}'}}\ntransforms:\n  s:\n    type: score\n    inputs: [in]\n    detector: {detector}{range}\nsinks:\n  out: {{type: file, inputs: [s], path: '{}'}}\n",
            input.display(),
            output.display()
        );
        let plan =
            tidemark_pipelines::compile("nab.yaml", &yaml).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let start = Instant::now();
        tidemark_pipelines::run::run(plan, tidemark_pipelines::run::RunOptions::quiet(1))?;
        seconds += start.elapsed().as_secs_f64();
        samples += f.rows.len();
    }
    Ok(samples as f64 / seconds)
}

/// Runs NAB's scorer on `out`; its report.
fn nab_score(o: &AnomalyBenchOptions, out: &Path) -> anyhow::Result<String> {
    let run = std::process::Command::new("python3")
        .arg(&o.scorer)
        .arg(out)
        .arg(&o.nab)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", o.scorer.display()))?;
    anyhow::ensure!(
        run.status.success(),
        "{} failed: {}",
        o.scorer.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(String::from_utf8_lossy(&run.stdout).into_owned())
}

/// The standard profile's (tuned, own-flag) scores in a scorer's report.
fn standard(report: &str) -> (String, String) {
    let line = report
        .lines()
        .find(|l| l.starts_with("standard:"))
        .unwrap_or("");
    let after = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).find(|w| !w.is_empty()))
            .unwrap_or("?")
            .to_owned()
    };
    (after("tuned-threshold score"), after("own-flag score"))
}

/// The detectors measured, the default first.
const DETECTORS: [&str; 3] = ["novelty", "light", "robust"];

/// Runs the benchmark.
pub fn anomaly(o: &AnomalyBenchOptions) -> anyhow::Result<()> {
    if let Some(bad) = o
        .detectors
        .iter()
        .find(|d| !DETECTORS.contains(&d.as_str()))
    {
        anyhow::bail!(
            "no detector {bad}: the detectors are {}",
            DETECTORS.join(", ")
        );
    }
    let files = read_nab(&o.nab)?;
    let rows: usize = files.iter().map(|f| f.rows.len()).sum();
    eprintln!("{} NAB files, {rows} rows.", files.len());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut md = format!(
        "Anomaly scoring on the NAB development subset (`tidemark bench anomaly`: {} files, {rows} rows; each file through a `file` source, a `score` transform with one detector and its defaults, and a `file` sink, one run per file, 1 worker; then again with each file's range hint; scored by NAB v1.1's rules with `nab_score.py`; \"tuned\" is the score with the best single threshold over all files, as the public scoreboard computes it, \"own flags\" the score of `<metric>:anomaly`, what a user gets). Standard profile:\n\n| detector | defaults, tuned | defaults, own flags | range hint, tuned | range hint, own flags |\n|---|---:|---:|---:|---:|\n",
        files.len()
    );
    let mut reports = String::new();
    for detector in o.detectors.iter().map(String::as_str) {
        let mut row = format!("| `{detector}` |");
        for (label, hint) in [("defaults", false), ("with the range hint", true)] {
            let out = o.work.join(format!(
                "out-{detector}-{}",
                if hint { "range" } else { "defaults" }
            ));
            let rate = score_all(&files, &o.work, &out, detector, hint)?;
            let report = nab_score(o, &out)?;
            eprintln!(
                "{detector}, {label}: {:.0} samples/s end to end\n{report}",
                rate
            );
            let (tuned, own) = standard(&report);
            let _ = write!(row, " {tuned} | {own} |");
            let _ = writeln!(
                reports,
                "`{detector}`, {label} ({:.0} K samples/s through the whole pipeline, files read and written and a pipeline started per file included, {build} build):\n\n```\n{}```\n",
                rate / 1e3,
                report
            );
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = write!(md, "\nAll three profiles:\n\n{reports}");
    let _ = writeln!(
        md,
        "Cost ({build} build, 1 worker, generator -> score -> blackhole, {} samples per series, median of 3 runs, 1 run past 5 M samples; the generator alone beside it; bytes per series: the model once it has learnt, its two output series and the map entry):\n\n| detector | series | samples/s scored | generator alone | bytes per series |\n|---|---:|---:|---:|---:|",
        o.samples
    );
    for detector in o.detectors.iter().map(String::as_str) {
        for &n in &o.series {
            let (scored, generated, bytes) = cost(detector, n, o.samples)?;
            eprintln!(
                "{detector}, {n} series: {scored:.0} samples/s scored, {generated:.0} generated, {bytes:.0} bytes per series"
            );
            let _ = writeln!(
                md,
                "| `{detector}` | {n} | {:.0} K | {:.0} K | {bytes:.0} |",
                scored / 1e3,
                generated / 1e3
            );
        }
    }
    md.push('\n');
    eprintln!("\n{md}");
    if !o.no_write {
        crate::write_section(&o.output, "anomaly", &md)?;
        eprintln!("Wrote {}.", o.output.display());
    }
    Ok(())
}
