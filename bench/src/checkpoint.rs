//! `tidemark bench checkpoint`: what a checkpoint of operator state costs
//! for many series: the bytes written and the time to cut (snapshot and
//! encode, on the worker's thread) and to restore, for a window (one
//! minute, four aggregates, by series), an anomaly score and an alert rule
//! (a rate over five minutes, pending) over the same series, and a
//! `correlate` with one firing alert per ten series, each measured as the
//! median of several cuts of one state.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tidemark_engine::checkpoint::{decode, encode};
use tidemark_engine::{Sample, Series};
use tidemark_operators::aggregate::{Aggregate, Needs};
use tidemark_operators::alert::unit::{SavedUnit, UnitState};
use tidemark_operators::group::Grouping;
use tidemark_operators::score::Params;
use tidemark_operators::score::operator::{ScoreSpec, Scorer};
use tidemark_operators::window::{LatePolicy, Partial, WindowKind, WindowSpec, WindowState};

/// Options of `tidemark bench checkpoint`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckpointBenchOptions {
    /// Series in the state.
    #[arg(long, default_value_t = 100_000)]
    pub series: u64,
    /// Samples per series fed before the cut (one every 10 s).
    #[arg(long, default_value_t = 30)]
    pub samples: u64,
    /// Cuts measured (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Markdown file whose `checkpoint` section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only.
    #[arg(long)]
    pub no_write: bool,
}

struct Measured {
    what: String,
    /// What the bytes are counted per (series, or alerts).
    per: u64,
    bytes: usize,
    cut_ms: f64,
    restore_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `runs` cuts (snapshot and encode) and restores of a state.
fn measure(
    what: &str,
    per: u64,
    runs: usize,
    snapshot: impl Fn() -> Vec<(u64, Vec<u8>)>,
    restore: impl Fn(&[(u64, Vec<u8>)]),
) -> anyhow::Result<Measured> {
    let (mut cuts, mut restores, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let part = encode(&snapshot());
        cuts.push(start.elapsed().as_secs_f64() * 1e3);
        bytes = part.len();
        let start = Instant::now();
        let entries: Vec<(u64, Vec<u8>)> = decode(&part).map_err(anyhow::Error::msg)?;
        restore(&entries);
        restores.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Measured {
        what: what.to_owned(),
        per,
        bytes,
        cut_ms: median(cuts),
        restore_ms: median(restores),
    })
}

/// Runs the benchmark.
pub fn checkpoint(options: &CheckpointBenchOptions) -> anyhow::Result<()> {
    let series: Vec<Series> = (0..options.series)
        .map(|i| {
            Series::new(
                "http_requests",
                [("instance", format!("pod-{i}")), ("job", "api".into())],
            )
        })
        .collect();
    let aggregates: Arc<[Aggregate]> = Arc::from(vec![
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
    ]);
    let spec = WindowSpec {
        kind: WindowKind::Tumbling { size: 60_000 },
        label: "1m".into(),
        lateness: 0,
        late: LatePolicy::Drop,
        needs: Needs::of(&aggregates),
        aggregates,
        grouping: Grouping::Series,
        partial: Partial::Emit,
        combine: false,
    };
    let t0: i64 = 1_700_000_040_000;
    let mut window = WindowState::new(spec.clone());
    let score_spec = ScoreSpec {
        params: Params::default(),
        explain: false,
        passthrough: false,
        idle_ms: 3_600_000,
    };
    let mut scorer = Scorer::new(score_spec.clone());
    for k in 0..options.samples as i64 {
        let ts = t0 + 1 + k * 10_000 % 59_000;
        for (i, s) in series.iter().enumerate() {
            let sample = Sample::new(s.clone(), t0 + k * 1_000 + 1, (i as f64) + (k as f64).sin());
            window.insert(&sample, s, 0);
            scorer.insert(Sample::new(s.clone(), ts + k * 10_000, sample.value));
        }
        scorer.advance(Some((t0 + k * 10_000 + 5_000) as u64), &mut |_, _| {});
    }
    // Alert rules over the same series: a rate over 5 minutes, pending
    // for 10 minutes wherever it is above 0 (every series), with samples
    // every 10 s: the unit keeps 5 minutes plus the lookback of each.
    let alert_spec = tidemark_operators::alert::config::AlertConfig {
        rules: tidemark_operators::alert::config::RulesField::Inline(
            serde_json::json!({"groups": [
                {"name": "api", "interval": "30s", "rules": [
                    {"alert": "Busy", "expr": "rate(http_requests[5m]) > 0", "for": "10m"},
                ]},
            ]}),
        ),
        interval: None,
        lookback: Some("1m".into()),
        lateness: None,
        external_labels: Default::default(),
        external_url: String::new(),
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("the benchmark's rules do not validate: {e:?}"))?
    .spec()
    .clone();
    let mut unit = UnitState::new(&alert_spec, 0);
    for k in 0..options.samples.max(40) as i64 {
        for (i, s) in series.iter().enumerate() {
            unit.insert(&Sample::new(
                s.clone(),
                t0 + k * 10_000,
                (i as f64) + k as f64,
            ));
        }
        unit.advance(Some((t0 + k * 10_000) as u64), &alert_spec, &mut |_, _| {});
    }
    let unit_key = alert_spec.units[0].key;
    let open = window.footprint().open_groups;
    anyhow::ensure!(
        open as u64 == options.series,
        "the window holds {open} groups"
    );
    let rows = [
        measure(
            "window (1m tumbling, count/sum/min/max by series)",
            options.series,
            options.runs,
            || window.snapshot(),
            |entries| {
                let mut w = WindowState::new(spec.clone());
                for (k, bytes) in entries {
                    let _ = w.restore(*k, bytes);
                }
            },
        )?,
        measure(
            "score (default detector)",
            options.series,
            options.runs,
            || scorer.snapshot(),
            |entries| {
                let mut s = Scorer::new(score_spec.clone());
                for (k, bytes) in entries {
                    let _ = s.restore(*k, bytes);
                }
            },
        )?,
        measure(
            "alert (rate over 5m, pending: samples and instances)",
            options.series,
            options.runs,
            || vec![(unit_key, encode(&(0u64, unit.save())))],
            |entries| {
                let mut u = UnitState::new(&alert_spec, 0);
                for (_, bytes) in entries {
                    if let Ok((_, saved)) = decode::<(u64, SavedUnit)>(bytes) {
                        let _ = u.restore(saved);
                    }
                }
            },
        )?,
        correlate_row(options)?,
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench checkpoint` (release build, in one process): the state of {} series after {} samples each; a cut is the snapshot and its encoding on the worker's thread (writing and `fsync` happen on the checkpoint thread), a restore decodes the part and rebuilds the state (for `correlate`, the tracker's and the keeper's; the dataflow rebuilds its differential arrangements from the restored alerts afterwards, not counted here). Medians of {} runs.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.series,
        options.samples,
        options.runs
    );
    md.push_str("| state | part bytes | bytes per series (alert) | cut ms | restore ms |\n|---|---:|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.1} | {:.1} |",
            r.what,
            r.bytes,
            r.bytes as f64 / r.per.max(1) as f64,
            r.cut_ms,
            r.restore_ms
        );
        eprintln!(
            "{}: {} bytes, cut {:.1} ms, restore {:.1} ms",
            r.what, r.bytes, r.cut_ms, r.restore_ms
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        crate::write_section(&options.output, "checkpoint", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}

/// A `correlate` transform's state with one firing alert per ten series,
/// in incidents of ten tied alerts: the tracker's part (every alert's
/// episode) and the keeper's (episodes, components, ties, ids and
/// records), cut and restored together.
fn correlate_row(options: &CheckpointBenchOptions) -> anyhow::Result<Measured> {
    use tidemark_operators::correlate::episodes::{Episode, Tracker};
    use tidemark_operators::correlate::keeper::Keeper;
    let alerts = (options.series / 10).max(10);
    let service = |name: &str| {
        tidemark_operators::correlate::model::LabelSet::from([(
            "service".to_owned(),
            name.to_owned(),
        )])
    };
    let scenario = crate::correlate::Scenario {
        edges: vec![(service("api"), service("db"))],
        episodes: Vec::new(),
    };
    let settings = crate::correlate::settings(&scenario)?;
    let t0: u64 = 1_700_000_040_000;
    let mut tracker = Tracker::new(settings.gap, settings.horizon);
    let mut keeper = Keeper::new(Arc::clone(&settings.model));
    let samples: Vec<Sample> = (0..alerts)
        .map(|i| {
            let series = Series::new(
                "ALERTS",
                [
                    ("alertname", "HighLatency".to_owned()),
                    ("instance", format!("pod-{i}")),
                    ("alertstate", "firing".to_owned()),
                ],
            );
            Sample::new(series, t0 as i64, 1.0)
        })
        .collect();
    let mut events = Vec::new();
    tracker.step(t0, &samples, &mut events);
    let keys: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Episode::Started { key, labels } => Some((*key, labels.clone())),
            _ => None,
        })
        .collect();
    for (key, labels) in &keys {
        keeper.started(*key, labels.clone());
    }
    for group in keys.chunks(10) {
        let root = group[0].0;
        for (key, _) in group {
            keeper.member(*key, root, 1);
        }
        for pair in group.windows(2) {
            let why = tidemark_operators::correlate::model::Why {
                labels: true,
                ..Default::default()
            };
            keeper.tie(pair[0].0, pair[1].0, why, 1);
        }
    }
    let records = keeper.finish_step(t0);
    anyhow::ensure!(
        records.len() as u64 == alerts.div_ceil(10),
        "{} incidents",
        records.len()
    );
    measure(
        &format!("correlate ({alerts} firing alerts in incidents of 10: tracker and keeper)"),
        alerts,
        options.runs,
        || {
            let mut entries: Vec<(u64, Vec<u8>)> = tracker
                .snapshot()
                .into_iter()
                .map(|(id, s)| (id, encode(&s)))
                .collect();
            entries.push((0, encode(&keeper.snapshot())));
            entries
        },
        |entries| {
            let (mut t, mut k) = (
                Tracker::new(settings.gap, settings.horizon),
                Keeper::new(Arc::clone(&settings.model)),
            );
            let (keeper_part, series) = entries.split_last().expect("parts");
            for (id, bytes) in series {
                if let Ok(saved) = decode(bytes) {
                    t.restore(*id, saved);
                }
            }
            if let Ok(saved) = decode(&keeper_part.1) {
                let _ = k.restore(saved);
            }
        },
    )
}
