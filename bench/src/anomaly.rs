//! `tidemark bench anomaly`: the `score` transform's quality on the
//! development half of the Numenta Anomaly Benchmark (NAB), and its cost.
//!
//! Each NAB file is read as the benchmark gives it, one JSON-lines sample a
//! row (`{"name": "nab_value", "labels": {"file": "<category>/<file>.csv"},
//! "timestamp": <ms, UTC>, "value": v}`), through a plain `file` source into
//! a `score` transform and a `file` sink, one run per file, with one set of
//! defaults for every file; a second pass gives each file the range hint
//! NAB allows (the file's minimum and maximum). The outputs are scored by
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
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
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
fn score_all(files: &[NabFile], work: &Path, out: &Path, range_hint: bool) -> anyhow::Result<f64> {
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
            "name: nab\nsources:\n  in: {{type: file, path: '{}'}}\ntransforms:\n  s:\n    type: score\n    inputs: [in]{range}\nsinks:\n  out: {{type: file, inputs: [s], path: '{}'}}\n",
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

/// Runs the benchmark.
pub fn anomaly(o: &AnomalyBenchOptions) -> anyhow::Result<()> {
    let files = read_nab(&o.nab)?;
    let rows: usize = files.iter().map(|f| f.rows.len()).sum();
    eprintln!("{} NAB files, {rows} rows.", files.len());
    let mut md = format!(
        "Anomaly scoring on the NAB development subset (`tidemark bench anomaly`: {} files, {rows} rows; each file through a `file` source, a `score` transform with its defaults (`detector: robust`) and a `file` sink, one run per file, 1 worker; scored by NAB v1.1's rules with `nab_score.py`; \"tuned\" is the score with the best single threshold over all files, as the public scoreboard computes it, \"own flags\" the score of `<metric>:anomaly`, what a user gets):\n\n",
        files.len()
    );
    for (label, hint) in [("defaults", false), ("with the range hint", true)] {
        let out = o.work.join(if hint { "out-range" } else { "out-defaults" });
        let rate = score_all(&files, &o.work, &out, hint)?;
        let report = nab_score(o, &out)?;
        eprintln!("{label}: {:.0} samples/s end to end\n{report}", rate);
        let _ = writeln!(
            md,
            "{label} ({:.0} K samples/s through the whole pipeline, files read and written and a pipeline started per file included, {} build):\n\n```\n{}```\n",
            rate / 1e3,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            report
        );
    }
    eprintln!("\n{md}");
    if !o.no_write {
        crate::write_section(&o.output, "anomaly", &md)?;
        eprintln!("Wrote {}.", o.output.display());
    }
    Ok(())
}
