//! `tidemark bench correlate`: incident correlation quality and speed on
//! generated scenarios with ground truth.
//!
//! A scenario is a service graph in tiers (each service depends on one to
//! three services of the next tier; the last tier are databases) and the
//! hosts the services run on (about five each). Faults start at a service
//! or a host and spread to what depends on it, hop by hop, with a delay
//! (30 s to 2 min a hop) and a probability that falls with each hop; each
//! affected service fires one to three alert names. Faults overlap in
//! time. Noise alerts, unrelated to any fault, are a third of all alerts.
//! Alerts are `ALERTS` samples every 30 s while they fire.
//!
//! Quality is scored over alert episodes: the adjusted Rand index (ARI)
//! between the incidents and the faults (each noise alert its own group),
//! pairwise precision and recall, and the event-time delay from an
//! alert's start to the first sample that names its final incident. Two
//! baselines in the same table: a time window only (starts within 10
//! minutes), and "adjacent in the topology within 10 minutes" (same
//! entity or one edge apart). Speed: alert samples per second of wall time
//! through the operator with 10 000 services.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::{Input, Inspect, Probe};

use tidemark_engine::spec::Validate;
use tidemark_engine::stats::ComponentStats;
use tidemark_engine::{Sample, Series};
use tidemark_operators::correlate::CorrelateConfig;
use tidemark_operators::correlate::model::LabelSet;
use tidemark_operators::correlate::operator::{Settings, correlate};

use crate::window::{median, write_section};

/// Options of `tidemark bench correlate`.
#[derive(Clone, Debug, clap::Args)]
pub struct CorrelateBenchOptions {
    /// Service counts of the quality scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [50usize, 500, 2_000])]
    pub services: Vec<usize>,
    /// Faults per quality scenario.
    #[arg(long, default_value_t = 60)]
    pub faults: usize,
    /// Seeds per size (scores are their medians).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Services of the speed run.
    #[arg(long, default_value_t = 10_000)]
    pub speed_services: usize,
    /// Faults of the speed run.
    #[arg(long, default_value_t = 3_000)]
    pub speed_faults: usize,
    /// Recurring pairs in the co-occurrence scenario (added to its faults
    /// and noise; 0: no such scenario).
    #[arg(long, default_value_t = 20)]
    pub recurring: usize,
    /// Services of the co-occurrence scenario.
    #[arg(long, default_value_t = 500)]
    pub recurring_services: usize,
    /// Worker counts of the speed run.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Rounds of the server-mode latency measurement (0: skip it).
    #[arg(long, default_value_t = 200)]
    pub latency_rounds: usize,
    /// Markdown file whose correlate section is rewritten.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Print only; do not write the file.
    #[arg(long)]
    pub no_write: bool,
}

const STEP: i64 = 30_000;
const NAMES: [&str; 3] = ["HighLatency", "ErrorRate", "Saturation"];

/// A generated scenario.
pub struct Scenario {
    /// Topology edges: (from, to).
    pub edges: Vec<(LabelSet, LabelSet)>,
    /// Episodes: labels, start, end (ms), ground truth (fault id, or
    /// `None` for noise).
    pub episodes: Vec<(Series, i64, i64, Option<usize>)>,
}

fn set(name: &str, value: String) -> LabelSet {
    LabelSet::from([(name.to_owned(), value)])
}

/// Generates a scenario of `services` services and `faults` faults.
pub fn scenario(seed: u64, services: usize, faults: usize) -> Scenario {
    scenario_with_recurring(seed, services, faults, 0)
}

/// Times a recurring pair fires together.
pub const RECURRING_TIMES: usize = 6;

/// Between two firings of a recurring pair.
const RECURRING_EVERY: i64 = 30 * 60_000;

/// As [`scenario`], with `recurring` pairs of alerts that fire together
/// [`RECURRING_TIMES`] times, every half hour, on two services of one
/// tier that share no dependency and no host (nothing in the topology ties
/// them: a batch job that fills a queue and lags a ledger). Each firing of
/// a pair is an incident of its own in the ground truth.
pub fn scenario_with_recurring(
    seed: u64,
    services: usize,
    faults: usize,
    recurring: usize,
) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let tiers = 4usize;
    let per_tier = services.div_ceil(tiers);
    let tier_of = |s: usize| s / per_tier;
    let hosts = services.div_ceil(5).max(1);
    let host_of: Vec<usize> = (0..services).map(|_| rng.random_range(0..hosts)).collect();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); services];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); services];
    for (s, mine) in deps.iter_mut().enumerate() {
        let t = tier_of(s);
        if t + 1 >= tiers {
            continue;
        }
        let lo = (t + 1) * per_tier;
        let hi = ((t + 2) * per_tier).min(services);
        if lo >= hi {
            continue;
        }
        for _ in 0..rng.random_range(1..=3) {
            let d = rng.random_range(lo..hi);
            if !mine.contains(&d) {
                mine.push(d);
                dependents[d].push(s);
            }
        }
    }
    let svc = |s: usize| set("service", format!("svc-{s}"));
    let host = |h: usize| set("host", format!("node-{h}"));
    let mut edges = Vec::new();
    for (s, mine) in deps.iter().enumerate() {
        for &d in mine {
            edges.push((svc(s), svc(d)));
        }
        edges.push((svc(s), host(host_of[s])));
    }
    let on_host: Vec<Vec<usize>> = {
        let mut v = vec![Vec::new(); hosts];
        for s in 0..services {
            v[host_of[s]].push(s);
        }
        v
    };
    // Faults spread over time, more often in a larger system (one every
    // 20 minutes with 50 services, every 2 with 500, every minute from
    // 1 000 on), so that several overlap.
    let every = (60_000_000 / services.max(1) as i64).max(60_000);
    let span = faults as i64 * every;
    let mut episodes: Vec<(Series, i64, i64, Option<usize>)> = Vec::new();
    let mut busy: HashMap<u64, i64> = HashMap::new();
    let gap = 5 * 60_000;
    let mut push = |episodes: &mut Vec<_>,
                    labels: Series,
                    start: i64,
                    truth: Option<usize>,
                    rng: &mut StdRng| {
        let start = start / STEP * STEP;
        let end = start + rng.random_range(5..=20i64) * 60_000 / STEP * STEP;
        let id = labels.id().0;
        // The same alert firing again within the gap would join its
        // earlier episode: leave it out.
        if busy
            .get(&id)
            .is_some_and(|&until| start <= until + gap + STEP)
        {
            return;
        }
        busy.insert(id, end);
        episodes.push((labels, start, end, truth));
    };
    let alert = |name: &str, service: usize| {
        Series::new(
            "",
            [("alertname", name), ("service", &format!("svc-{service}"))],
        )
    };
    for f in 0..faults {
        let t0 = rng.random_range(0..span);
        // Who is hit and when: (service, time).
        let mut hit: Vec<(usize, i64)> = Vec::new();
        if rng.random_bool(0.3) {
            let h = rng.random_range(0..hosts);
            let labels = Series::new(
                "",
                [("alertname", "NodeDown"), ("host", &format!("node-{h}"))],
            );
            push(&mut episodes, labels, t0, Some(f), &mut rng);
            for &s in &on_host[h] {
                if rng.random_bool(0.8) {
                    hit.push((s, t0 + rng.random_range(0..60_000)));
                }
            }
        } else {
            hit.push((rng.random_range(0..services), t0));
        }
        // Spread against the dependencies.
        let mut frontier = hit.clone();
        let mut seen: Vec<usize> = hit.iter().map(|h| h.0).collect();
        let mut p = 0.7;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for &(s, t) in &frontier {
                for &up in &dependents[s] {
                    if !seen.contains(&up) && rng.random_bool(p) {
                        seen.push(up);
                        next.push((up, t + rng.random_range(30_000..120_000)));
                    }
                }
            }
            hit.extend(next.iter().copied());
            frontier = next;
            p *= 0.7;
        }
        for (s, t) in hit {
            let n = rng.random_range(1..=3);
            for name in NAMES.iter().take(n) {
                push(
                    &mut episodes,
                    alert(name, s),
                    t + rng.random_range(0..30_000),
                    Some(f),
                    &mut rng,
                );
            }
        }
    }
    let mut truth = faults;
    for _ in 0..recurring {
        // Two services of one tier with nothing in common (none in a
        // graph too small to have them).
        let Some((a, b)) = (0..1_000).find_map(|_| {
            let a = rng.random_range(0..services);
            let t = tier_of(a);
            let b = rng.random_range(t * per_tier..((t + 1) * per_tier).min(services));
            let apart =
                a != b && host_of[a] != host_of[b] && deps[a].iter().all(|d| !deps[b].contains(d));
            apart.then_some((a, b))
        }) else {
            break;
        };
        let names = (
            NAMES[rng.random_range(0..NAMES.len())],
            NAMES[rng.random_range(0..NAMES.len())],
        );
        let first = rng.random_range(0..span.max(1));
        for k in 0..RECURRING_TIMES {
            let t = first + k as i64 * RECURRING_EVERY;
            push(&mut episodes, alert(names.0, a), t, Some(truth), &mut rng);
            let later = t + rng.random_range(0..40_000);
            push(
                &mut episodes,
                alert(names.1, b),
                later,
                Some(truth),
                &mut rng,
            );
            truth += 1;
        }
    }
    // Noise: half as many as the fault alerts, so a third of all.
    let noise = episodes.len() / 2;
    for _ in 0..noise {
        let s = rng.random_range(0..services);
        let name = NAMES[rng.random_range(0..NAMES.len())];
        let t = rng.random_range(0..span);
        push(&mut episodes, alert(name, s), t, None, &mut rng);
    }
    episodes.sort_by_key(|e| (e.1, e.0.id()));
    Scenario { edges, episodes }
}

/// The scenario's `ALERTS` samples, in time order.
pub fn samples(s: &Scenario) -> Vec<Sample> {
    let mut out = Vec::new();
    for (labels, start, end, _) in &s.episodes {
        let series = Series::new("ALERTS", labels.tags().chain([("alertstate", "firing")]));
        let mut t = *start;
        while t <= *end {
            out.push(Sample::new(series.clone(), t, 1.0));
            t += STEP;
        }
    }
    out.sort_by_key(|s| (s.timestamp, s.series.id()));
    out
}

/// The default `correlate` of a scenario's topology.
pub fn settings(s: &Scenario) -> anyhow::Result<Settings> {
    settings_of(s, serde_json::json!({}))
}

/// `correlate` of a scenario's topology with the rest of its
/// configuration from `config` (an object).
pub fn settings_of(s: &Scenario, mut config: serde_json::Value) -> anyhow::Result<Settings> {
    let edges: Vec<serde_json::Value> = s
        .edges
        .iter()
        .map(|(f, t)| serde_json::json!({"from": f, "to": t}))
        .collect();
    config["topology"] = serde_json::json!({ "edges": edges });
    let config: CorrelateConfig = serde_json::from_value(config)?;
    let t = config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid bench config: {e:?}"))?;
    let _ = config.validated();
    Ok(t.settings().clone())
}

/// Runs the operator; returns each `ALERTS_INCIDENT` sample's (series id
/// of the alert, timestamp, incident) and the wall time.
fn run(samples: Vec<Sample>, settings: Settings, workers: usize) -> (Vec<(u64, i64, String)>, f64) {
    let out: Arc<Mutex<Vec<(u64, i64, String)>>> = Arc::default();
    let sink = Arc::clone(&out);
    let samples = Arc::new(samples);
    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let mut input: InputHandleVec<u64, Sample> = InputHandleVec::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let (labelled, incidents) = correlate(
                scope.input_from(&mut input),
                "bench",
                settings.clone(),
                Arc::new(ComponentStats::default()),
            );
            labelled.inspect_core(move |event| {
                let Ok((_, batch)) = event else { return };
                let mut local = Vec::with_capacity(batch.len());
                for s in batch {
                    let alert = Series::new(
                        "ALERTS",
                        s.series
                            .tags()
                            .filter(|(n, _)| *n != "incident")
                            .chain([("alertstate", "firing")]),
                    );
                    local.push((
                        alert.id().0,
                        s.timestamp,
                        s.series.get("incident").unwrap_or("").to_owned(),
                    ));
                }
                sink.lock().unwrap().append(&mut local);
            });
            incidents.probe().0
        });
        if worker.index() == 0 {
            // Batches of 10 000 samples, as a source reads them, each
            // stamped with its earliest time (the watermark).
            for chunk in samples.chunks(10_000) {
                let t = chunk[0].timestamp as u64;
                if t > *input.time() {
                    input.advance_to(t);
                }
                for s in chunk {
                    input.send(s.clone());
                }
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    });
    if let Ok(g) = guards {
        let _ = g.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let got = std::mem::take(&mut *out.lock().unwrap());
    (got, secs)
}

/// Scores of one partition against the truth.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scores {
    /// Adjusted Rand index.
    pub ari: f64,
    /// Pairs put together that belong together, over pairs put together.
    pub precision: f64,
    /// Pairs put together that belong together, over pairs that do.
    pub recall: f64,
}

fn pairs(n: u64) -> f64 {
    (n * n.saturating_sub(1)) as f64 / 2.0
}

/// Scores `predicted` (a group per episode) against `truth`.
pub fn score(truth: &[usize], predicted: &[usize]) -> Scores {
    let mut table: HashMap<(usize, usize), u64> = HashMap::new();
    let mut rows: HashMap<usize, u64> = HashMap::new();
    let mut cols: HashMap<usize, u64> = HashMap::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        *table.entry((t, p)).or_default() += 1;
        *rows.entry(t).or_default() += 1;
        *cols.entry(p).or_default() += 1;
    }
    let both: f64 = table.values().map(|&n| pairs(n)).sum();
    let a: f64 = rows.values().map(|&n| pairs(n)).sum();
    let b: f64 = cols.values().map(|&n| pairs(n)).sum();
    let all = pairs(truth.len() as u64);
    let expected = a * b / all.max(1.0);
    let max = (a + b) / 2.0;
    Scores {
        ari: if max - expected == 0.0 {
            1.0
        } else {
            (both - expected) / (max - expected)
        },
        precision: if b == 0.0 { 1.0 } else { both / b },
        recall: if a == 0.0 { 1.0 } else { both / a },
    }
}

fn union_find(
    n: usize,
    mut tied: impl FnMut(usize, usize) -> bool,
    window: i64,
    starts: &[i64],
) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if starts[j] - starts[i] > window {
                break;
            }
            if tied(i, j) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    (0..n).map(|i| find(&mut parent, i)).collect()
}

/// The entities an episode is on (its service or host label).
fn entity(labels: &Series) -> LabelSet {
    match labels.get("service") {
        Some(s) => set("service", s.to_owned()),
        None => set("host", labels.get("host").unwrap_or("").to_owned()),
    }
}

/// The ground truth: each episode's fault, each noise alert a group of
/// its own.
fn truth(s: &Scenario) -> Vec<usize> {
    s.episodes
        .iter()
        .enumerate()
        .map(|(i, e)| e.3.unwrap_or(1_000_000 + i))
        .collect()
}

/// Our incidents' scores, and the mean delay (s).
fn evaluate(s: &Scenario, labelled: &[(u64, i64, String)]) -> (Scores, f64) {
    let n = s.episodes.len();
    // Our incident per episode: the one its last sample names.
    let mut by_series: BTreeMap<u64, Vec<(i64, &str)>> = BTreeMap::new();
    for (id, t, inc) in labelled {
        by_series.entry(*id).or_default().push((*t, inc));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ours = vec![usize::MAX; n];
    let mut delays = Vec::new();
    for (i, (labels, start, end, _)) in s.episodes.iter().enumerate() {
        let id = Series::new("ALERTS", labels.tags().chain([("alertstate", "firing")]))
            .id()
            .0;
        let list = by_series.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mine: Vec<&(i64, &str)> = list
            .iter()
            .filter(|(t, _)| t >= start && t <= end)
            .collect();
        let Some(last) = mine.last() else {
            ours[i] = 2_000_000 + i;
            continue;
        };
        let next = names.len();
        ours[i] = *names.entry(last.1.to_owned()).or_insert(next);
        if let Some(first) = mine.iter().find(|(_, inc)| *inc == last.1) {
            delays.push((first.0 - start) as f64 / 1000.0);
        }
    }
    let mean = delays.iter().sum::<f64>() / delays.len().max(1) as f64;
    (score(&truth(s), &ours), mean)
}

/// The two baselines' scores: a time window only, and adjacent in the
/// topology within 10 minutes.
fn baselines(s: &Scenario) -> (Scores, Scores) {
    let n = s.episodes.len();
    let starts: Vec<i64> = s.episodes.iter().map(|e| e.1).collect();
    let window = 600_000;
    let time_only = union_find(n, |_, _| true, window, &starts);
    let adjacent: std::collections::HashSet<(LabelSet, LabelSet)> = s
        .edges
        .iter()
        .flat_map(|(a, b)| [(a.clone(), b.clone()), (b.clone(), a.clone())])
        .collect();
    let ents: Vec<LabelSet> = s.episodes.iter().map(|e| entity(&e.0)).collect();
    let adjacent_only = union_find(
        n,
        |i, j| ents[i] == ents[j] || adjacent.contains(&(ents[i].clone(), ents[j].clone())),
        window,
        &starts,
    );
    let truth = truth(s);
    (score(&truth, &time_only), score(&truth, &adjacent_only))
}

/// The co-occurrence scenario's table: faults and noise as in the other
/// scenarios, with recurring pairs that nothing in the topology ties.
fn recurring_table(
    md: &mut String,
    options: &CorrelateBenchOptions,
    services: usize,
) -> anyhow::Result<()> {
    let _ = writeln!(
        md,
        "\nAlerts that recur together: a scenario of {services} services as above with {} pairs of alerts \
         added, each firing together {RECURRING_TIMES} times (every 30 minutes, the second alert up to 40 s \
         after the first) on two services of one tier that share no dependency and no host; each firing is an \
         incident of its own in the truth. Medians of {} seeds. The co-occurrence rule can tie a pair from its \
         third firing on (`min_count: 3`), so at most {} of its {RECURRING_TIMES} firings.\n",
        options.recurring,
        options.seeds,
        RECURRING_TIMES - 2,
    );
    let _ = writeln!(
        md,
        "| services | episodes | method | ARI | pairwise precision | pairwise recall | recurring firings tied |"
    );
    let _ = writeln!(md, "|---:|---:|---|---:|---:|---:|---:|");
    let mut rows: Vec<Vec<(Scores, f64)>> = Vec::new();
    let mut episodes = 0;
    let methods = [
        ("correlate (defaults)", serde_json::json!({})),
        (
            "correlate + cooccurrence (defaults)",
            serde_json::json!({"rules": {"cooccurrence": {}}}),
        ),
        (
            "correlate + cooccurrence, `link: all`",
            serde_json::json!({"rules": {"cooccurrence": {}}, "link": "all"}),
        ),
    ];
    for seed in 0..options.seeds {
        let s = scenario_with_recurring(seed, services, options.faults, options.recurring);
        episodes = s.episodes.len();
        let mut row = Vec::new();
        for (_, config) in &methods {
            let (labelled, _) = run(samples(&s), settings_of(&s, config.clone())?, 1);
            let (ours, _) = evaluate(&s, &labelled);
            row.push((ours, recurring_tied(&s, options.faults, &labelled)));
        }
        rows.push(row);
    }
    for (m, (method, _)) in methods.iter().enumerate() {
        let pick = |f: fn(&Scores) -> f64| median(rows.iter().map(|r| f(&r[m].0)).collect());
        let line = format!(
            "| {services} | {episodes} | {method} | {:.3} | {:.3} | {:.3} | {:.0}% |",
            pick(|s| s.ari),
            pick(|s| s.precision),
            pick(|s| s.recall),
            100.0 * median(rows.iter().map(|r| r[m].1).collect()),
        );
        eprintln!("{line}");
        let _ = writeln!(md, "{line}");
    }
    Ok(())
}

/// The share of recurring firings (truth ids from `faults` on) whose two
/// alerts ended in one incident.
fn recurring_tied(s: &Scenario, faults: usize, labelled: &[(u64, i64, String)]) -> f64 {
    let mut last: HashMap<u64, Vec<(i64, &str)>> = HashMap::new();
    for (id, t, inc) in labelled {
        last.entry(*id).or_default().push((*t, inc));
    }
    let mut firings: BTreeMap<usize, Vec<Option<&str>>> = BTreeMap::new();
    for (labels, start, end, truth) in &s.episodes {
        let Some(t) = truth.filter(|t| *t >= faults) else {
            continue;
        };
        let id = Series::new("ALERTS", labels.tags().chain([("alertstate", "firing")]))
            .id()
            .0;
        let incident = last
            .get(&id)
            .and_then(|l| l.iter().rev().find(|(at, _)| at >= start && at <= end))
            .map(|(_, inc)| *inc);
        firings.entry(t).or_default().push(incident);
    }
    let pairs: Vec<_> = firings.values().filter(|f| f.len() == 2).collect();
    let tied = pairs
        .iter()
        .filter(|f| f[0].is_some() && f[0] == f[1])
        .count();
    tied as f64 / pairs.len().max(1) as f64
}

/// Runs the benchmark.
pub fn correlate_bench(options: &CorrelateBenchOptions) -> anyhow::Result<()> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} with `tidemark bench correlate` (release build) on generated scenarios with ground truth \
         (service graphs in 4 tiers, about 5 services a host; {} faults each starting at a service or a host \
         and spreading to dependents, 30 s to 2 min and a falling probability a hop; one to three alert names \
         per hit service; noise alerts a third of all; alerts as `ALERTS` samples every 30 s). Scores over alert \
         episodes, medians of {} seeds; `correlate` with its defaults (window 10m; topology hops 2, weight 1, \
         decay 0.5, max_delay 2m, lead 30s; threshold 1; `link: strongest`), with `link: all` (every tie \
         links, the default before 2026-12-07), and with `rules.cooccurrence` at its defaults \
         (within 1m, min_count 3, history 7d, weight 1, identity all labels). Goal (issue 18): ARI at least 0.9.\n",
        tidemark_engine::time::format_millis(tidemark_engine::time::now_millis()),
        options.faults,
        options.seeds,
    );
    let _ = writeln!(
        md,
        "| services | episodes | method | ARI | pairwise precision | pairwise recall | mean delay to final incident |"
    );
    let _ = writeln!(md, "|---:|---:|---|---:|---:|---:|---:|");
    let variants = [
        ("correlate (defaults)", serde_json::json!({})),
        ("correlate, `link: all`", serde_json::json!({"link": "all"})),
        (
            "correlate + cooccurrence (defaults)",
            serde_json::json!({"rules": {"cooccurrence": {}}}),
        ),
    ];
    for &services in &options.services {
        let mut rows: Vec<Vec<Scores>> = Vec::new();
        let mut delays: Vec<Vec<f64>> = Vec::new();
        let mut episodes = 0;
        for seed in 0..options.seeds {
            let s = scenario(seed, services, options.faults);
            episodes = s.episodes.len();
            let (mut row, mut delay) = (Vec::new(), Vec::new());
            for (_, config) in &variants {
                let (labelled, _) = run(samples(&s), settings_of(&s, config.clone())?, 1);
                let (ours, mean) = evaluate(&s, &labelled);
                row.push(ours);
                delay.push(mean);
            }
            let (time_only, adjacent) = baselines(&s);
            row.extend([time_only, adjacent]);
            rows.push(row);
            delays.push(delay);
        }
        let methods = variants
            .iter()
            .map(|(name, _)| *name)
            .chain(["time window only", "adjacent within 10m"]);
        for (m, method) in methods.enumerate() {
            let pick = |f: fn(&Scores) -> f64| median(rows.iter().map(|r| f(&r[m])).collect());
            let delay = if m < variants.len() {
                format!("{:.0} s", median(delays.iter().map(|d| d[m]).collect()))
            } else {
                "-".into()
            };
            let line = format!(
                "| {services} | {episodes} | {method} | {:.3} | {:.3} | {:.3} | {delay} |",
                pick(|s| s.ari),
                pick(|s| s.precision),
                pick(|s| s.recall),
            );
            eprintln!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }
    if options.recurring > 0 {
        recurring_table(&mut md, options, options.recurring_services)?;
    }
    let s = scenario(99, options.speed_services, options.speed_faults);
    let input = samples(&s);
    let _ = writeln!(
        md,
        "\nSpeed: {} services ({} topology edges), {} faults, {} episodes, {} `ALERTS` samples, fed as fast as \
         the operator takes them, in batches of 10 000 (in process, no sources or sinks). Goal: 100 000 alert events/s.\n",
        options.speed_services,
        s.edges.len(),
        options.speed_faults,
        s.episodes.len(),
        input.len()
    );
    let _ = writeln!(md, "| rules | workers | alert samples/s | wall time |");
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let runs = options
        .workers
        .iter()
        .map(|&w| ("defaults", w, serde_json::json!({})))
        .chain(options.workers.first().into_iter().flat_map(|&w| {
            [
                ("`link: all`", w, serde_json::json!({"link": "all"})),
                (
                    "defaults + cooccurrence",
                    w,
                    serde_json::json!({"rules": {"cooccurrence": {}}}),
                ),
            ]
        }));
    for (name, workers, config) in runs {
        let (_, secs) = run(input.clone(), settings_of(&s, config)?, workers);
        let rate = input.len() as f64 / secs;
        let line = format!("| {name} | {workers} | {rate:.0} | {secs:.2} s |");
        eprintln!("{line}");
        let _ = writeln!(md, "{line}");
    }
    if options.latency_rounds > 0 {
        let (p50, p99, max) = crate::alert_latency::measure_incidents(options.latency_rounds)?;
        eprintln!("incident latency p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");
        let _ = writeln!(
            md,
            "\nLatency in server mode (`tidemark serve`, 1 worker; {} rounds; goal: the incident updated \
             within 1 s of the alert): a gRPC source into an `alert` transform (interval 1 s) into `correlate` \
             (`rules.labels` by `job`, so every round's alert joins one incident that grows to {} alerts), its \
             `ALERTS_INCIDENT` samples to a WebSocket subscriber. From sending the sample that moves the \
             watermark past a step to receiving the `ALERTS_INCIDENT` sample of the alert that step fires: \
             p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms.",
            options.latency_rounds,
            options.latency_rounds + 10,
        );
    }
    eprintln!("\n{md}");
    if !options.no_write {
        write_section(&options.output, "correlate", &md)?;
        eprintln!("Wrote {}.", options.output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_is_one_for_equal_partitions_and_low_for_one_group() {
        let truth = [0, 0, 1, 1, 2, 3];
        assert!((score(&truth, &[5, 5, 7, 7, 8, 9]).ari - 1.0).abs() < 1e-12);
        let all = score(&truth, &[0; 6]);
        assert!(all.ari < 0.1 && all.recall == 1.0 && all.precision < 0.2);
        let singles = score(&truth, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(singles.precision, 1.0);
        assert_eq!(singles.recall, 0.0);
    }

    /// The firings of a recurring pair: two episodes each, starting less
    /// than a minute apart, on services nothing in the topology ties.
    #[test]
    fn recurring_pairs_fire_together_apart_from_the_faults() {
        let plain = scenario(3, 200, 20);
        let s = scenario_with_recurring(3, 200, 20, 5);
        let groups = |s: &Scenario| {
            let mut g: BTreeMap<usize, Vec<(String, i64)>> = BTreeMap::new();
            for e in &s.episodes {
                if let Some(t) = e.3 {
                    g.entry(t)
                        .or_default()
                        .push((e.0.get("service").unwrap_or("").to_owned(), e.1));
                }
            }
            g
        };
        let faults = groups(&plain).len();
        let recurring: Vec<_> = groups(&s).into_iter().filter(|(t, _)| *t >= 20).collect();
        assert!(faults > 0);
        // (A firing may be left out where its alert still fired shortly
        // before: most are there.)
        assert!(
            recurring.len() >= 5 * RECURRING_TIMES / 2,
            "{}",
            recurring.len()
        );
        let linked: std::collections::HashSet<(String, String)> = s
            .edges
            .iter()
            .map(|(a, b)| (format!("{a:?}"), format!("{b:?}")))
            .collect();
        for (_, firing) in &recurring {
            if let [(a, ta), (b, tb)] = firing.as_slice() {
                assert!((ta - tb).abs() < 60_000);
                assert_ne!(a, b);
                let (sa, sb) = (set("service", a.clone()), set("service", b.clone()));
                assert!(!linked.contains(&(format!("{sa:?}"), format!("{sb:?}"))));
            }
        }
    }

    #[test]
    fn scenarios_have_a_third_noise() {
        let s = scenario(1, 200, 30);
        let noise = s.episodes.iter().filter(|e| e.3.is_none()).count();
        let share = noise as f64 / s.episodes.len() as f64;
        assert!((0.25..0.4).contains(&share), "{share}");
    }
}
