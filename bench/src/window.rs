//! `tidemark bench window`: engine throughput.
//!
//! Generator input (1 s interval, as fast as possible) into a 10 s tumbling
//! window per series, output discarded, for several series counts, worker
//! counts and aggregate sets, plus a baseline without the window (generator
//! straight into the discard sink) that shows how much of the time the
//! window itself takes. Every figure is the median of several runs measured
//! in one invocation; the table goes to `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use tidemark_connectors::blackhole::BlackholeConfig;
use tidemark_connectors::generator::Generator;
use tidemark_engine::validate::Limits;
use tidemark_operators::aggregate::{Aggregate, Needs};
use tidemark_operators::group::Grouping;
use tidemark_operators::window::{LatePolicy, Partial, WindowKind, WindowSpec};

use tidemark_operators::window::{PreAggregate, WindowPlan};
use tidemark_pipelines::plan::{Downstream, Plan};
use tidemark_pipelines::run::{RunOptions, run};

/// Options of `tidemark bench window`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOptions {
    /// Series counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    pub series: Vec<u64>,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Samples per run (rounded to whole ticks of all series).
    #[arg(long, default_value_t = 20_000_000)]
    pub samples: u64,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Markdown file whose window section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
    /// Skip the comparison of two processes of one worker against one
    /// process of two.
    #[arg(long)]
    pub no_cluster: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// The hand-written timely loop of [`crate::window_loop`].
    Limit,
    Baseline,
    Basic,
    /// `Basic` pre-aggregated on each worker (`pre_aggregate: true`; in
    /// one process the default leaves it off).
    Folded,
    Quantile,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Limit => "hand-written timely loop: count,sum,min,max,avg",
            Case::Baseline => "none (generator -> discard)",
            Case::Basic => "count,sum,min,max,avg",
            Case::Folded => "count,sum,min,max,avg, pre-aggregated",
            Case::Quantile => "count,sum,min,max,avg,p99",
        }
    }

    /// Issue 21's goal on 2 workers, in samples/s for the whole process.
    fn target(self) -> Option<f64> {
        match self {
            Case::Limit | Case::Baseline | Case::Folded => None,
            Case::Basic => Some(10e6),
            Case::Quantile => Some(4e6),
        }
    }
}

/// The generator's first timestamp (2026-01-01).
const START: i64 = 1_767_225_600_000;

fn plan(series: u64, samples: u64, case: Case) -> Plan {
    let generator = Generator {
        series,
        interval: 1_000,
        start: Some(START),
        ticks: Some((samples / series).max(1)),
        rate: 0.0,
        seed: 1,
        out_of_order: 0.0,
        late: 0.0,
        max_out_of_orderness: 0,
        anomalies: None,
    };
    let window = spec(case);
    let holdback = if case == Case::Baseline {
        0
    } else {
        window.holdback()
    };
    let (transforms, sink_input) = if case == Case::Baseline {
        (vec![], "gen")
    } else {
        (
            vec![(
                "w".to_owned(),
                Arc::new(WindowPlan {
                    selector: None,
                    pre_aggregate: if case == Case::Folded {
                        PreAggregate::Always
                    } else {
                        PreAggregate::Never
                    },
                    spec: window,
                }) as Arc<dyn tidemark_engine::spec::TransformSpec>,
                vec!["gen".to_owned()],
            )],
            "w",
        )
    };
    Plan {
        name: "bench".into(),
        limits: Limits::default(),
        sources: vec![(
            "gen".into(),
            Arc::new(generator),
            Downstream {
                holdback,
                reach: Some(0),
            },
        )],
        transforms,
        sinks: vec![(
            "out".into(),
            Arc::new(BlackholeConfig {}),
            vec![sink_input.into()],
        )],
    }
}

/// The window of a case.
fn spec(case: Case) -> WindowSpec {
    let mut aggregates = vec![
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
    ];
    if case == Case::Quantile {
        aggregates.push(Aggregate::Quantile(0.99));
    }
    WindowSpec {
        kind: WindowKind::Tumbling { size: 10_000 },
        label: "10s".into(),
        lateness: 0,
        late: LatePolicy::Drop,
        needs: Needs::of(&aggregates),
        aggregates: Arc::from(aggregates),
        grouping: Grouping::Series,
        partial: Partial::Emit,
        combine: case == Case::Folded,
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the window benchmark, prints the table and writes it.
pub fn window(options: &BenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &series in &options.series {
        for &workers in &options.workers {
            for case in [
                Case::Limit,
                Case::Baseline,
                Case::Basic,
                Case::Folded,
                Case::Quantile,
            ] {
                let mut rates = Vec::new();
                for _ in 0..options.repeats.max(1) {
                    let (samples, elapsed) = if case == Case::Limit {
                        let ticks = (options.samples / series).max(1);
                        crate::window_loop::run(series, ticks, START, workers)?
                    } else {
                        let report = run(
                            plan(series, options.samples, case),
                            RunOptions::quiet(workers),
                        )?;
                        (report.totals.samples_in, report.elapsed)
                    };
                    rates.push(samples as f64 / elapsed.as_secs_f64());
                }
                let rate = median(rates.clone());
                eprintln!(
                    "series {series:>7}  workers {workers}  {:<28} {:>7.2} M samples/s ({:.2} M per worker; runs: {})",
                    case.label(),
                    rate / 1e6,
                    rate / 1e6 / workers as f64,
                    rates
                        .iter()
                        .map(|r| format!("{:.2}", r / 1e6))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                rows.push((series, workers, case, rate));
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench window --samples {} --repeats {}` (release build): a generator (1 s interval, \
         unthrottled) feeds a 10 s tumbling window per series whose output is discarded. Each figure is the median of {} \
         runs in one invocation, wall time from start to the last window flushed. \"window ns/sample\" is the time the \
         window adds per sample over the baseline row of the same series and workers. \"of the loop\" is the share of \
         the hand-written timely loop's rate (same generator values and series, records of id, time and value only, the \
         same window with a fixed accumulator): the engine's limit on this machine. Goals (issue 21, on 2 workers): \
         10 M samples/s and half the loop with count,sum,min,max,avg at 100 000 series, 4 M with p99.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.samples,
        options.repeats,
        options.repeats
    );
    let _ = writeln!(
        md,
        "| series | workers | aggregates | samples/s | per worker | of the loop | window ns/sample | goal |"
    );
    let _ = writeln!(md, "|---:|---:|---|---:|---:|---:|---:|---|");
    for &(series, workers, case, rate) in &rows {
        let base = rows
            .iter()
            .find(|r| r.0 == series && r.1 == workers && r.2 == Case::Baseline)
            .map(|r| r.3);
        let limit = rows
            .iter()
            .find(|r| r.0 == series && r.1 == workers && r.2 == Case::Limit)
            .map_or(f64::NAN, |r| r.3);
        let cost = match (case, base) {
            (Case::Limit | Case::Baseline, _) | (_, None) => "-".to_owned(),
            (_, Some(b)) => format!("{:.0}", (1e9 / rate - 1e9 / b) * workers as f64),
        };
        let per = rate / workers as f64;
        let target = match case.target() {
            Some(t) if workers == 2 => {
                let share = if case == Case::Basic {
                    format!(
                        ", half the loop: {}",
                        if rate >= limit / 2.0 { "met" } else { "missed" }
                    )
                } else {
                    String::new()
                };
                format!(
                    "{:.0} M: {}{share}",
                    t / 1e6,
                    if rate >= t { "met" } else { "missed" }
                )
            }
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {series} | {workers} | {} | {:.2} M | {:.2} M | {:.0}% | {cost} | {target} |",
            case.label(),
            rate / 1e6,
            per / 1e6,
            100.0 * rate / limit
        );
    }
    // How far two workers go beyond one (goal: 1.8x).
    let mut scaling = Vec::new();
    for &(series, workers, case, rate) in &rows {
        let one = rows
            .iter()
            .find(|r| r.0 == series && r.1 == 1 && r.2 == case)
            .map(|r| r.3);
        if let (2, Some(one)) = (workers, one) {
            scaling.push(format!(
                "{series} series, {}: {:.2}x",
                case.label(),
                rate / one
            ));
        }
    }
    if !scaling.is_empty() {
        let _ = writeln!(
            md,
            "\nTwo workers over one (goal 1.8x): {}.",
            scaling.join("; ")
        );
    }
    if !options.no_cluster {
        md.push_str(&cluster(options)?);
    }
    md.push_str(&memory());
    eprintln!("\n{md}");
    if !options.no_write {
        write_section(&options.output, "window", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}

/// Two processes of one worker against one process of two, for every
/// series count (goal, issue 21: within 70%).
fn cluster(options: &BenchOptions) -> anyhow::Result<String> {
    let mut md = format!(
        "\nTwo processes of one worker on loopback against one process of two workers (issue 21's goal: within 70%): \
         `tidemark run` of the same pipeline (count,sum,min,max,avg), {} samples, started as child processes in both \
         cases, median of {} runs alternating; samples/s are all processes' samples over the slower one's time from \
         its start to the end of its run, connecting included; with the window's default `pre_aggregate: auto` \
         (pre-aggregated in the two processes, not in the one) and with `pre_aggregate: false` (every sample that \
         changes worker is sent).\n\n\
         | series | pre_aggregate | 1 process x 2 workers | 2 processes x 1 worker | ratio | goal |\n\
         |---:|---|---:|---:|---:|---|\n",
        options.samples,
        options.repeats.max(1)
    );
    for (&series, pre_aggregate) in options
        .series
        .iter()
        .flat_map(|s| [(s, "auto"), (s, "false")])
    {
        let row = crate::cluster::measure(series, options.samples, options.repeats, pre_aggregate)?;
        let show = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "series {series:>7}  pre_aggregate {pre_aggregate:<5}  1 process x 2 workers {:.2} M ({}), 2 processes x 1 worker {:.2} M ({})",
            row.one_process / 1e6,
            show(&row.runs.0),
            row.two_processes / 1e6,
            show(&row.runs.1)
        );
        let ratio = row.two_processes / row.one_process;
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} M | {:.2} M | {:.0}% | {} |",
            row.series,
            row.pre_aggregate,
            row.one_process / 1e6,
            row.two_processes / 1e6,
            100.0 * ratio,
            match (row.pre_aggregate, ratio >= 0.7) {
                ("auto", true) => "70%: met",
                ("auto", false) => "70%: missed",
                _ => "-",
            }
        );
    }
    Ok(md)
}

/// The window's memory per series: 100 000 series with 10 samples each in
/// one 10 s tumbling window (as the throughput runs), measured by the
/// state's own accounting ([`WindowState::footprint`]) while the window is
/// open, once it closed (output names cached for the next window), and two
/// windows after the series went quiet.
fn memory() -> String {
    use tidemark_connectors::generator::series_for;
    use tidemark_engine::Sample;
    use tidemark_operators::window::WindowState;
    use tidemark_operators::window::combine::{Combiner, Piece};
    const SERIES: u64 = 100_000;
    let mut md = String::from(
        "\nMemory of the window operator per series (its own accounting: tables with their empty slots, \
         accumulators, cached output series, and pre-aggregated, the partials each worker holds until the window \
         closes; input series' labels are shared with the sources and not counted), 100 000 series with 10 samples each in a 10 s tumbling window. Goal (issue 21): under 200 bytes of window \
         state per series for count,sum,min,max,avg.\n\n\
         | aggregates | open window, per series | output names cached while active, per series | idle series after two windows, per series |\n\
         |---|---:|---:|---:|\n",
    );
    for case in [Case::Basic, Case::Folded, Case::Quantile] {
        let spec = spec(case);
        let mut state = WindowState::new(spec.clone());
        // Pre-aggregated, the open window is held by each worker's combiner
        // and the window only sees it when it closes.
        let mut combiner = Combiner::new(&spec).filter(|_| spec.combines());
        let series: Vec<_> = (0..SERIES).map(series_for).collect();
        for t in 0..10 {
            let ts = START + t * 1_000 + 1;
            for s in &series {
                let sample = Sample::new(s.clone(), ts, t as f64);
                if !combiner
                    .as_mut()
                    .is_some_and(|c| c.insert(&sample, s, ts as u64))
                {
                    state.insert(&sample, s, ts as u64);
                }
            }
        }
        let held = |state: &WindowState, combiner: &Option<Combiner>| {
            state.footprint().bytes + combiner.as_ref().map_or(0, Combiner::bytes)
        };
        let groups = state.footprint().open_groups + combiner.as_ref().map_or(0, Combiner::len);
        let open = held(&state, &combiner);
        let close = |state: &mut WindowState, combiner: &mut Option<Combiner>, f: u64| {
            if let Some(c) = combiner.as_mut() {
                c.flush(Some(f), &mut |_, batch| {
                    for piece in batch {
                        match piece {
                            Piece::Part(part) => state.merge(part),
                            Piece::Sample(s) => state.insert(&s, &s.series, f),
                        }
                    }
                });
            }
            state.advance(Some(f), &mut |_, _| {});
        };
        close(&mut state, &mut combiner, (START + 10_001) as u64);
        let names = held(&state, &combiner);
        close(&mut state, &mut combiner, (START + 40_001) as u64);
        let idle = held(&state, &combiner);
        let per = |bytes: usize| bytes as f64 / SERIES as f64;
        eprintln!(
            "memory {:<28} open {:.0} B/series ({} groups), names {:.0} B/series, idle {:.1} B/series",
            case.label(),
            per(open),
            groups,
            per(names),
            per(idle)
        );
        let _ = writeln!(
            md,
            "| {} | {:.0} B | {:.0} B | {:.1} B |",
            case.label(),
            per(open),
            per(names),
            per(idle)
        );
    }
    md
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// in `path`, appending the section if it is missing.
pub fn write_section(path: &std::path::Path, name: &str, body: &str) -> anyhow::Result<()> {
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{open}\n{body}{close}");
    let new = match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &text[..a], section, &text[b + close.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}
