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

use std::collections::{BTreeMap, BTreeSet};
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
    /// Samples per series in the cost measurement (`robust` fills its
    /// 256-value window in the first 256).
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
/// samples); and the bytes of a series' model once it has learnt, alone
/// and with its output series and map entry.
fn cost(detector: &str, series: u64, samples: u64) -> anyhow::Result<(f64, f64, f64, f64)> {
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
    let model = m.bytes() as f64;
    let bytes = model + 2.0 * out.heap_bytes() as f64 + 64.0;
    Ok((scored, generated, model, bytes))
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

/// Ticks after an injected anomaly's start within which a flag of its
/// series finds it (a quarter block of 500, the longest anomaly, and 10).
const FOUND_WITHIN: i64 = 135;

/// One detector on the generator's injected anomalies: 200 series of 5 000
/// samples a minute apart, each block of 500 with a 50% chance of an
/// anomaly. Per kind: (injected, found, median ticks from its start to the
/// first flag); and (flags, flags that found an anomaly).
#[allow(clippy::type_complexity)]
fn scenarios(
    detector: &str,
    work: &Path,
) -> anyhow::Result<(BTreeMap<String, (usize, usize, f64)>, (usize, usize))> {
    std::fs::create_dir_all(work)?;
    let (scores, markers) = (
        work.join(format!("scenario-{detector}-scores.jsonl")),
        work.join(format!("scenario-{detector}-markers.jsonl")),
    );
    for f in [&scores, &markers] {
        let _ = std::fs::remove_file(f);
    }
    let yaml = format!(
        "name: scenarios\nsources:\n  gen:\n    type: generator\n    series: 200\n    interval: 1m\n    \
         start: 2026-01-01T00:00:00Z\n    samples: 5000\n    seed: 7\n    anomalies: {{probability: 0.5, every: 500}}\n\
         transforms:\n  s:\n    type: score\n    detector: {detector}\n    inputs: [gen]\n    match: '{{__name__=~\".+\", __name__!=\"tidemark_injected_anomaly\"}}'\n  \
         m: {{type: filter, inputs: [gen], match: tidemark_injected_anomaly}}\n\
         sinks:\n  scores: {{type: file, inputs: [s], path: '{}'}}\n  markers: {{type: file, inputs: [m], path: '{}'}}\n",
        scores.display(),
        markers.display()
    );
    let plan = tidemark_pipelines::compile("scenarios.yaml", &yaml)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    tidemark_pipelines::run::run(plan, tidemark_pipelines::run::RunOptions::quiet(1))?;
    let rows = |path: &Path| -> anyhow::Result<Vec<serde_json::Value>> {
        std::fs::read_to_string(path)?
            .lines()
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    };
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    // Flags by (metric, host) and tick.
    let mut flags: BTreeSet<(String, String, i64)> = BTreeSet::new();
    for r in rows(&scores)? {
        let name = text(&r, "name");
        if let Some(metric) = name.strip_suffix(":anomaly")
            && r["value"].as_f64() == Some(1.0)
        {
            let tick = (r["timestamp"].as_i64().unwrap_or(0) - START_MS) / 60_000;
            flags.insert((metric.to_owned(), text(&r["labels"], "host"), tick));
        }
    }
    let mut kinds: BTreeMap<String, (usize, usize, Vec<f64>)> = BTreeMap::new();
    let mut found_flags = BTreeSet::new();
    for m in rows(&markers)? {
        let (metric, host) = (text(&m["labels"], "metric"), text(&m["labels"], "host"));
        let start = (m["timestamp"].as_i64().unwrap_or(0) - START_MS) / 60_000;
        let hits: Vec<_> = flags
            .range((metric.clone(), host.clone(), start)..=(metric, host, start + FOUND_WITHIN))
            .cloned()
            .collect();
        let kind = kinds.entry(text(&m["labels"], "kind")).or_default();
        kind.0 += 1;
        if let Some(first) = hits.first() {
            kind.1 += 1;
            kind.2.push((first.2 - start) as f64);
        }
        found_flags.extend(hits);
    }
    let kinds = kinds
        .into_iter()
        .map(|(k, (n, found, delays))| {
            let delay = if delays.is_empty() {
                f64::NAN
            } else {
                crate::window::median(delays)
            };
            (k, (n, found, delay))
        })
        .collect();
    Ok((kinds, (flags.len(), found_flags.len())))
}

/// 2026-01-01T00:00:00Z, the scenarios' start, in ms.
const START_MS: i64 = 1_767_225_600_000;

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
        "Injected anomalies (the generator's `anomalies: {{probability: 0.5, every: 500}}`, 200 series of 5 000 samples, seed 7; found: a flag of the series within {FOUND_WITHIN} samples of the anomaly's start; delay: the median samples from its start to the first flag; precision: flags that found an anomaly, of all flags):\n\n| detector | kind | injected | found | recall | median delay |\n|---|---|---:|---:|---:|---:|"
    );
    let mut precision = String::new();
    for detector in o.detectors.iter().map(String::as_str) {
        let (kinds, (flags, true_flags)) = scenarios(detector, &o.work)?;
        for (kind, (n, found, delay)) in &kinds {
            eprintln!("{detector}, {kind}: {found} of {n} found, median delay {delay}");
            let _ = writeln!(
                md,
                "| `{detector}` | {kind} | {n} | {found} | {:.2} | {delay} |",
                *found as f64 / (*n).max(1) as f64
            );
        }
        let _ = write!(
            precision,
            "{}`{detector}` {true_flags} of {flags} flags ({:.2})",
            if precision.is_empty() { "" } else { ", " },
            true_flags as f64 / flags.max(1) as f64
        );
    }
    let _ = writeln!(md, "\nPrecision: {precision}.\n");
    let _ = writeln!(
        md,
        "Cost ({build} build, 1 worker, generator -> score -> blackhole, {} samples per series, median of 3 runs, 1 run past 5 M samples; the generator alone beside it; model bytes: one series' model once it has learnt; bytes per series: the model, its two output series and the map entry):\n\n| detector | series | samples/s scored | generator alone | model bytes | bytes per series |\n|---|---:|---:|---:|---:|---:|",
        o.samples
    );
    for detector in o.detectors.iter().map(String::as_str) {
        for &n in &o.series {
            let (scored, generated, model, bytes) = cost(detector, n, o.samples)?;
            eprintln!(
                "{detector}, {n} series: {scored:.0} samples/s scored, {generated:.0} generated, {bytes:.0} bytes per series"
            );
            let _ = writeln!(
                md,
                "| `{detector}` | {n} | {:.0} K | {:.0} K | {model:.0} | {bytes:.0} |",
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
