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
use tidemark_operators::window::{LatePolicy, WindowKind, WindowSpec};

use tidemark_operators::window::WindowPlan;
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Baseline,
    Basic,
    Quantile,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Baseline => "none (generator -> discard)",
            Case::Basic => "count,sum,min,max,avg",
            Case::Quantile => "count,sum,min,max,avg,p99",
        }
    }

    fn target(self) -> Option<f64> {
        match self {
            Case::Baseline => None,
            Case::Basic => Some(5e6),
            Case::Quantile => Some(2e6),
        }
    }
}

fn plan(series: u64, samples: u64, case: Case) -> Plan {
    let generator = Generator {
        series,
        interval: 1_000,
        start: Some(1_767_225_600_000),
        ticks: Some((samples / series).max(1)),
        rate: 0.0,
        seed: 1,
        out_of_order: 0.0,
        late: 0.0,
        max_out_of_orderness: 0,
        anomalies: None,
    };
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
    let window = WindowSpec {
        kind: WindowKind::Tumbling { size: 10_000 },
        label: "10s".into(),
        lateness: 0,
        late: LatePolicy::Drop,
        needs: Needs::of(&aggregates),
        aggregates: Arc::from(aggregates),
        grouping: Grouping::Series,
    };
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

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the window benchmark, prints the table and writes it.
pub fn window(options: &BenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &series in &options.series {
        for &workers in &options.workers {
            for case in [Case::Baseline, Case::Basic, Case::Quantile] {
                let mut rates = Vec::new();
                for _ in 0..options.repeats.max(1) {
                    let report = run(
                        plan(series, options.samples, case),
                        RunOptions::quiet(workers),
                    )?;
                    rates.push(report.totals.samples_in as f64 / report.elapsed.as_secs_f64());
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
         window adds per sample over the baseline row of the same series and workers.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.samples,
        options.repeats,
        options.repeats
    );
    let _ = writeln!(
        md,
        "| series | workers | aggregates | samples/s | per worker | window ns/sample | target per worker |"
    );
    let _ = writeln!(md, "|---:|---:|---|---:|---:|---:|---|");
    for &(series, workers, case, rate) in &rows {
        let base = rows
            .iter()
            .find(|r| r.0 == series && r.1 == workers && r.2 == Case::Baseline)
            .map(|r| r.3);
        let cost = match (case, base) {
            (Case::Baseline, _) | (_, None) => "-".to_owned(),
            (_, Some(b)) => format!("{:.0}", (1e9 / rate - 1e9 / b) * workers as f64),
        };
        let per = rate / workers as f64;
        let target = match case.target() {
            None => "-".to_owned(),
            Some(t) => format!(
                "{:.0} M: {}",
                t / 1e6,
                if per >= t { "met" } else { "missed" }
            ),
        };
        let _ = writeln!(
            md,
            "| {series} | {workers} | {} | {:.2} M | {:.2} M | {cost} | {target} |",
            case.label(),
            rate / 1e6,
            per / 1e6
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        write_section(&options.output, "window", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
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
