//! `tidemark bench alert`: rule evaluation throughput.
//!
//! The generator (100 000 series by default: five metrics of 20 000
//! hosts, a sample a second each, unthrottled) feeds an `alert` transform
//! with 100, 1 000 and 10 000 rules in groups of 100 (interval 10 s), whose
//! output is discarded. Rules are what an SRE writes per host (a
//! threshold with `for`, a rate over a minute, a recorded average) plus,
//! for every 1 000 rules, one aggregation over every host of a region.
//! Each figure is the median of several runs in one invocation; the table
//! goes to `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tidemark_connectors::blackhole::BlackholeConfig;
use tidemark_connectors::generator::Generator;
use tidemark_engine::spec::{TransformSpec, Validate};
use tidemark_engine::validate::Limits;
use tidemark_operators::alert::config::{AlertConfig, RulesField};
use tidemark_pipelines::plan::{Downstream, Plan};
use tidemark_pipelines::run::{RunOptions, run};

use crate::window::{median, write_section};

/// Options of `tidemark bench alert`.
#[derive(Clone, Debug, clap::Args)]
pub struct AlertBenchOptions {
    /// Rule counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1_000, 10_000])]
    pub rules: Vec<usize>,
    /// Series the generator writes.
    #[arg(long, default_value_t = 100_000)]
    pub series: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Samples per run (rounded to whole ticks of all series).
    #[arg(long, default_value_t = 10_000_000)]
    pub samples: u64,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Markdown file whose alert section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
    /// Rounds of the server-mode latency measurement (0: skip it).
    #[arg(long, default_value_t = 200)]
    pub latency_rounds: usize,
}

const GROUP_SIZE: usize = 100;
const INTERVAL_S: u64 = 10;

/// Rule `i` of the benchmark, for a generator of `hosts` hosts.
fn rule(i: usize, hosts: u64) -> serde_json::Value {
    let host = format!("host-{:04}", (i as u64 * 7919) % hosts.max(1));
    if i % 1000 == 999 {
        return json!({
            "record": "region:http_requests:rate1m",
            "expr": "sum by (region) (rate(http_requests_total[1m]))",
        });
    }
    match i % 4 {
        0 => json!({
            "alert": "HostCpuHigh",
            "expr": format!("cpu_usage{{host=\"{host}\"}} > 90"),
            "for": "1m",
            "labels": {"severity": "page"},
            "annotations": {"summary": "{{ $labels.host }} cpu at {{ $value }}"},
        }),
        1 => json!({
            "alert": "HostRequestsHigh",
            "expr": format!("rate(http_requests_total{{host=\"{host}\"}}[1m]) > 100"),
        }),
        2 => json!({
            "record": "host:memory_usage_bytes:avg1m",
            "expr": format!("avg_over_time(memory_usage_bytes{{host=\"{host}\"}}[1m])"),
        }),
        _ => json!({
            "alert": "HostSlow",
            "expr": format!("http_request_duration_seconds{{host=\"{host}\"}} > 0.5"),
            "for": "30s",
        }),
    }
}

fn transform(rules: usize, series: u64) -> anyhow::Result<Arc<dyn TransformSpec>> {
    let hosts = series / 5;
    let groups: Vec<serde_json::Value> = (0..rules)
        .collect::<Vec<_>>()
        .chunks(GROUP_SIZE)
        .enumerate()
        .map(|(g, chunk)| {
            json!({
                "name": format!("g{g}"),
                "interval": format!("{INTERVAL_S}s"),
                "rules": chunk.iter().map(|i| rule(*i, hosts)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let config = AlertConfig {
        rules: RulesField::Inline(json!({ "groups": groups })),
        interval: None,
        lookback: None,
        lateness: None,
        external_labels: Default::default(),
        external_url: String::new(),
    };
    config
        .validated()
        .map_err(|e| anyhow::anyhow!("the benchmark's rules do not validate: {e:?}"))
}

fn plan(rules: usize, series: u64, samples: u64) -> anyhow::Result<Plan> {
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
    let t = transform(rules, series)?;
    Ok(Plan {
        name: "bench-alert".into(),
        limits: Limits::default(),
        sources: vec![(
            "gen".into(),
            Arc::new(generator),
            Downstream {
                holdback: t.holdback(),
                reach: t.reach(),
            },
        )],
        transforms: vec![("rules".into(), t, vec!["gen".into()])],
        sinks: vec![(
            "out".into(),
            Arc::new(BlackholeConfig {}),
            vec!["rules".into()],
        )],
    })
}

/// Runs the benchmark, prints the table and writes it.
pub fn alert(options: &AlertBenchOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let ticks = (options.samples / options.series).max(1);
    let steps = ticks / INTERVAL_S;
    for &rules in &options.rules {
        for &workers in &options.workers {
            let mut rates = Vec::new();
            for _ in 0..options.repeats.max(1) {
                let report = run(
                    plan(rules, options.series, options.samples)?,
                    RunOptions::quiet(workers),
                )?;
                rates.push(report.totals.samples_in as f64 / report.elapsed.as_secs_f64());
            }
            let rate = median(rates.clone());
            // Rule evaluations per second of wall time: every rule at every
            // step, over the time the run took.
            let evals = rules as f64 * steps as f64 * rate / (ticks * options.series) as f64;
            eprintln!(
                "rules {rules:>6}  workers {workers}  {:>7.2} M samples/s  {:>9.0} rule evaluations/s (runs: {})",
                rate / 1e6,
                evals,
                rates
                    .iter()
                    .map(|r| format!("{:.2}", r / 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push((rules, workers, rate, evals));
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench alert --series {} --samples {} --repeats {}` (release build): the generator \
         ({} series, 1 s interval, unthrottled) feeds an `alert` transform whose rules are in groups of {GROUP_SIZE} \
         (interval {INTERVAL_S} s; per host: a threshold with `for`, a 1-minute rate, a recorded 1-minute average; one \
         aggregation over all hosts per 1 000 rules); output discarded. Medians of {} runs in one invocation. Goal \
         (issue 16): 10 000 rules over 100 000 series at 1 M samples/s or more.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.series,
        options.samples,
        options.repeats,
        options.series,
        options.repeats
    );
    let _ = writeln!(
        md,
        "| rules | workers | samples/s | rule evaluations/s | goal |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---|");
    for &(rules, workers, rate, evals) in &rows {
        let goal = if rules >= 10_000 && options.series >= 100_000 {
            if rate >= 1e6 { "met" } else { "missed" }
        } else {
            "-"
        };
        let _ = writeln!(
            md,
            "| {rules} | {workers} | {:.2} M | {:.0} | {goal} |",
            rate / 1e6,
            evals
        );
    }
    if options.latency_rounds > 0 {
        let (p50, p99, max) = crate::alert_latency::measure(options.latency_rounds)?;
        eprintln!("latency p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");
        let _ = writeln!(
            md,
            "\nLatency in server mode (`tidemark serve`, 1 worker; {} rounds): from sending the sample that \
             moves the watermark past a step (gRPC) to a WebSocket subscriber receiving the `ALERTS` sample \
             that step fires: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (goal: under 100 ms). \
             Before that sample, the step waits for the watermark: with real-time data, up to one \
             interval plus the sources' `max_out_of_orderness`.",
            options.latency_rounds
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        write_section(&options.output, "alert", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}
