//! Every window kind checked against a from-scratch recomputation on seeded
//! random input with out-of-order and late samples, delivered in random
//! batches and orders with random frontier steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidemark_engine::time::{Millis, Time};
use tidemark_engine::{Sample, Series};
use tidemark_operators::aggregate::{Aggregate, Needs, QUANTILE_RELATIVE_ERROR};
use tidemark_operators::group::Grouping;
use tidemark_operators::window::{LatePolicy, Partial, WindowKind, WindowSpec, WindowState};

const AGGS: [Aggregate; 11] = [
    Aggregate::Count,
    Aggregate::Sum,
    Aggregate::Min,
    Aggregate::Max,
    Aggregate::Avg,
    Aggregate::Last,
    Aggregate::Stddev,
    Aggregate::Rate,
    Aggregate::Increase,
    Aggregate::Quantile(0.5),
    Aggregate::Quantile(0.99),
];

/// Expected windows: (series label, end) to (start, samples).
type Expected = BTreeMap<(String, Millis), (Millis, Vec<(Millis, f64)>)>;

/// A sample and the watermark at which it entered.
#[derive(Clone)]
struct Input {
    sample: Sample,
    time: Time,
}

/// Samples from `series` series every ~1s, with out-of-order jitter within
/// `ooo` and a fraction of late ones far behind; entry times as a source
/// computes them (max seen minus `ooo`).
fn generate(seed: u64, series: usize, steps: i64, ooo: Millis) -> Vec<Input> {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<Series> = (0..series)
        .map(|i| Series::new("m", [("s", i.to_string())]))
        .collect();
    let mut counters = vec![0.0f64; series];
    let mut max_seen = 0;
    let mut out = Vec::new();
    for step in 0..steps {
        for (i, s) in names.iter().enumerate() {
            let mut ts = 1_000 + step * 1_000 + rng.random_range(0..200);
            let r: f64 = rng.random();
            if r < 0.15 {
                ts -= rng.random_range(0..ooo.max(1));
            } else if r < 0.20 {
                ts -= rng.random_range(ooo..ooo + 20_000);
            }
            let ts = ts.max(0);
            counters[i] = if rng.random::<f64>() < 0.02 {
                rng.random_range(0.0..5.0)
            } else {
                counters[i] + rng.random_range(0.0..10.0)
            };
            let value = if i % 2 == 0 {
                counters[i]
            } else {
                rng.random_range(-50.0..50.0)
            };
            max_seen = ts.max(max_seen);
            let time = (max_seen - ooo).max(0) as Time;
            out.push(Input {
                sample: Sample::new(s.clone(), ts, value),
                time,
            });
        }
    }
    out
}

/// Feeds the state in random batches: records are delivered in any order
/// among those whose time the frontier has not passed, and the frontier
/// advances by random steps up to the least undelivered time. Returns every
/// emitted (timely time, sample).
fn run(state: &mut WindowState, inputs: &[Input], seed: u64) -> Vec<(Time, Sample)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pending: Vec<Input> = inputs.to_vec();
    pending.sort_by_key(|i| i.time);
    let mut out = Vec::new();
    let mut emit = |t: Time, batch: Vec<Sample>| out.extend(batch.into_iter().map(|s| (t, s)));
    let mut frontier = 0;
    while !pending.is_empty() {
        // Deliver a random subset of records from the next few times.
        let take = rng.random_range(1..=pending.len().min(64));
        let mut chunk: Vec<Input> = pending.drain(..take).collect();
        // Shuffle within the chunk: arrival order must not matter.
        for i in (1..chunk.len()).rev() {
            chunk.swap(i, rng.random_range(0..=i));
        }
        for input in &chunk {
            state.insert(&input.sample, &input.sample.series, input.time);
        }
        let next = pending.first().map_or(Time::MAX, |i| i.time);
        if next > frontier && rng.random::<f64>() < 0.5 {
            frontier = rng.random_range(frontier..=next.min(frontier + 5_000));
            state.advance(Some(frontier), &mut emit);
        }
    }
    state.advance(None, &mut emit);
    out
}

fn spec(kind: WindowKind, lateness: Millis, late: LatePolicy) -> WindowSpec {
    WindowSpec {
        kind,
        label: "w".into(),
        lateness,
        late,
        aggregates: Arc::from(AGGS.to_vec()),
        needs: Needs::of(&AGGS),
        grouping: Grouping::Series,
        partial: Partial::Emit,
        combine: false,
    }
}

/// Aggregates computed from scratch over a window's samples.
fn reference(mut points: Vec<(Millis, f64)>, start: Millis, end: Millis) -> Vec<(String, f64)> {
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let n = points.len() as f64;
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let sum: f64 = values.iter().sum();
    let mean = sum / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |q: f64| sorted[(q * (n - 1.0)) as usize];
    let mut out = vec![
        ("count".to_string(), n),
        ("sum".into(), sum),
        ("min".into(), sorted[0]),
        ("max".into(), sorted[sorted.len() - 1]),
        ("avg".into(), mean),
        (
            "last".into(),
            points.last().map(|p| p.1).unwrap_or(f64::NAN),
        ),
        ("stddev".into(), var.sqrt()),
        ("p50".into(), q(0.5)),
        ("p99".into(), q(0.99)),
    ];
    // Prometheus extrapolatedRate, written out step by step.
    if points.len() >= 2 && points[0].0 != points[points.len() - 1].0 {
        let (t0, v0) = points[0];
        let (t1, v1) = points[points.len() - 1];
        let mut increase = 0.0;
        for w in points.windows(2) {
            increase += if w[1].1 < w[0].1 {
                w[1].1
            } else {
                w[1].1 - w[0].1
            };
        }
        let _ = v1;
        let sampled = (t1 - t0) as f64 / 1000.0;
        let avg = sampled / (n - 1.0);
        let mut to_start = (t0 - start) as f64 / 1000.0;
        let mut to_end = (end - t1) as f64 / 1000.0;
        if to_start >= avg * 1.1 {
            to_start = avg / 2.0;
        }
        if increase > 0.0 && v0 >= 0.0 {
            to_start = to_start.min(sampled * v0 / increase);
        }
        if to_end >= avg * 1.1 {
            to_end = avg / 2.0;
        }
        let inc = increase * (sampled + to_start + to_end) / sampled;
        out.push(("increase".into(), inc));
        out.push(("rate".into(), inc / ((end - start) as f64 / 1000.0)));
    }
    out
}

fn close(name: &str, got: f64, want: f64) -> bool {
    if name.starts_with('p') {
        (got - want).abs() <= QUANTILE_RELATIVE_ERROR * want.abs() + 1e-9
    } else {
        (got - want).abs() <= 1e-6 * want.abs().max(1.0)
    }
}

/// Compares emitted results with expected windows: `expected` maps
/// (series label, stamp) to the window's start and samples. Rates span
/// `(start, stamp - gap]` (sessions are stamped `gap` after their last sample).
fn compare(out: &[(Time, Sample)], expected: &Expected, gap: Millis) {
    // The last emission per output series and end wins (corrections).
    let mut got: BTreeMap<(String, String, Millis), f64> = BTreeMap::new();
    for (_, s) in out {
        let agg = s.series.name().rsplit('_').next().unwrap().to_string();
        got.insert(
            (s.series.get("s").unwrap().to_string(), agg, s.timestamp),
            s.value,
        );
    }
    let mut want_count = 0;
    for ((series, end), (start, points)) in expected {
        for (agg, want) in reference(points.clone(), *start, *end - gap) {
            want_count += 1;
            let g = got.get(&(series.clone(), agg.clone(), *end)).copied();
            let g = g.unwrap_or_else(|| panic!("missing {agg} for s={series} end={end}"));
            assert!(
                close(&agg, g, want),
                "{agg} for s={series} end={end}: got {g}, want {want}"
            );
        }
    }
    assert_eq!(got.len(), want_count, "unexpected extra outputs");
}

fn aligned_expected(
    inputs: &[Input],
    size: Millis,
    every: Millis,
    lateness: Millis,
    horizon: Option<Millis>,
) -> Expected {
    let mut expected: Expected = BTreeMap::new();
    for i in inputs {
        let ts = i.sample.timestamp;
        // Every end that is a multiple of `every` with ts in (end - size, end].
        let mut end = ((ts + every - 1).div_euclid(every)) * every;
        while end - size < ts {
            let limit = end + lateness + horizon.unwrap_or(0);
            let on_time = (i.time as Millis) < end + lateness + 1;
            let accepted = on_time || horizon.is_some_and(|_| i.time as Millis <= limit);
            if accepted {
                expected
                    .entry((i.sample.series.get("s").unwrap().to_string(), end))
                    .or_insert((end - size, Vec::new()))
                    .1
                    .push((ts, i.sample.value));
            }
            end += every;
        }
    }
    expected
}

#[test]
fn tumbling_matches_reference() {
    for seed in 0..6 {
        let inputs = generate(seed, 4, 120, 3_000);
        let mut state = WindowState::new(spec(
            WindowKind::Tumbling { size: 10_000 },
            2_000,
            LatePolicy::Drop,
        ));
        let out = run(&mut state, &inputs, seed + 100);
        assert!(
            state.take_counts().late > 0,
            "the input should contain late samples"
        );
        compare(
            &out,
            &aligned_expected(&inputs, 10_000, 10_000, 2_000, None),
            0,
        );
    }
}

#[test]
fn hopping_matches_reference() {
    for seed in 0..4 {
        let inputs = generate(seed, 3, 100, 2_000);
        let mut state = WindowState::new(spec(
            WindowKind::Hopping {
                size: 15_000,
                every: 5_000,
            },
            1_000,
            LatePolicy::Drop,
        ));
        let out = run(&mut state, &inputs, seed + 7);
        compare(
            &out,
            &aligned_expected(&inputs, 15_000, 5_000, 1_000, None),
            0,
        );
    }
}

#[test]
fn late_update_re_emits_corrected_windows() {
    for seed in 0..4 {
        let inputs = generate(seed, 3, 100, 2_000);
        let horizon = 10_000;
        let mut state = WindowState::new(spec(
            WindowKind::Tumbling { size: 10_000 },
            0,
            LatePolicy::Update { horizon },
        ));
        let out = run(&mut state, &inputs, seed + 3);
        let counts = state.take_counts();
        assert!(counts.corrections > 0 && counts.too_late > 0, "{counts:?}");
        compare(
            &out,
            &aligned_expected(&inputs, 10_000, 10_000, 0, Some(horizon)),
            0,
        );
        // Corrections are emitted after the original, never before.
        let mut seen: BTreeMap<(String, i64), Time> = BTreeMap::new();
        for (t, s) in &out {
            if let Some(prev) = seen.insert((s.series.to_string(), s.timestamp), *t) {
                assert!(*t >= prev);
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_delivery() {
    let inputs = generate(42, 5, 80, 2_000);
    let make = || {
        WindowState::new(spec(
            WindowKind::Tumbling { size: 5_000 },
            1_000,
            LatePolicy::Update { horizon: 5_000 },
        ))
    };
    let normalize = |mut v: Vec<(Time, Sample)>| {
        v.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.series.cmp(&b.1.series))
                .then(a.1.timestamp.cmp(&b.1.timestamp))
        });
        v.into_iter()
            .map(|(t, s)| (t, s.series.to_string(), s.timestamp, s.value))
            .collect::<Vec<_>>()
    };
    let a = normalize(run(&mut make(), &inputs, 1));
    let b = normalize(run(&mut make(), &inputs, 2));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Same records at the same timely times; values agree up to the
        // rounding of sums taken in another order.
        assert_eq!((x.0, &x.1, x.2), (y.0, &y.1, y.2));
        assert!(
            (x.3 - y.3).abs() <= 1e-9 * x.3.abs().max(1.0),
            "{x:?} vs {y:?}"
        );
    }
}

#[test]
fn sessions_match_reference() {
    for seed in 0..4 {
        let mut inputs = generate(seed, 3, 60, 2_000);
        // Make gaps: drop a band of steps so sessions split.
        inputs.retain(|i| !(20_000..32_000).contains(&i.sample.timestamp));
        let (gap, lateness) = (3_000, 1_000);
        let mut state = WindowState::new(spec(
            WindowKind::Session { gap },
            lateness,
            LatePolicy::Drop,
        ));
        let out = run(&mut state, &inputs, seed);
        // From scratch: process by entry time; close components first.
        let mut by_time: BTreeMap<Time, Vec<&Input>> = BTreeMap::new();
        for i in &inputs {
            by_time.entry(i.time).or_default().push(i);
        }
        let mut open: BTreeMap<String, Vec<(Millis, f64)>> = BTreeMap::new();
        let mut expected = BTreeMap::new();
        let components = |pts: &mut Vec<(Millis, f64)>| {
            pts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut comps: Vec<Vec<(Millis, f64)>> = Vec::new();
            for p in pts.iter() {
                match comps.last_mut() {
                    Some(c) if p.0 - c.last().unwrap().0 <= gap => c.push(*p),
                    _ => comps.push(vec![*p]),
                }
            }
            comps
        };
        let close_until = |limit: Time,
                           open: &mut BTreeMap<String, Vec<(Millis, f64)>>,
                           expected: &mut Expected| {
            for (s, pts) in open.iter_mut() {
                let mut keep = Vec::new();
                for c in components(pts) {
                    let last = c.last().unwrap().0;
                    if ((last + gap + lateness + 1) as Time) <= limit {
                        expected.insert((s.clone(), last + gap), (c[0].0, c));
                    } else {
                        keep.extend(c);
                    }
                }
                *pts = keep;
            }
        };
        for (t, batch) in &by_time {
            close_until(*t, &mut open, &mut expected);
            for i in batch {
                let ts = i.sample.timestamp;
                if ((ts + gap + lateness + 1) as Time) <= *t {
                    continue;
                }
                open.entry(i.sample.series.get("s").unwrap().to_string())
                    .or_default()
                    .push((ts, i.sample.value));
            }
        }
        close_until(Time::MAX, &mut open, &mut expected);
        // Sessions report rate over (first sample, last sample].
        let expected = expected
            .into_iter()
            .map(|(k, (_, pts))| (k, (pts[0].0, pts)))
            .collect::<BTreeMap<_, _>>();
        assert!(
            expected.len() >= 6,
            "expected sessions on both sides of the gap, got {}",
            expected.len()
        );
        compare(&out, &expected, gap);
    }
}

#[test]
fn nan_values_are_ignored_and_counted() {
    let mut state = WindowState::new(spec(WindowKind::Tumbling { size: 10 }, 0, LatePolicy::Drop));
    let s = Series::new("m", [("s", "0")]);
    for (ts, v) in [(1, 1.0), (2, f64::NAN), (3, 3.0)] {
        state.insert(&Sample::new(s.clone(), ts, v), &s, 0);
    }
    let mut out = Vec::new();
    state.advance(None, &mut |_, batch| out.extend(batch));
    let count = out.iter().find(|x| x.series.name() == "m:w_count").unwrap();
    assert_eq!(count.value, 2.0);
    assert_eq!(state.take_counts().nan, 1);
}

/// Series that come and go (pods replaced every few windows) do not make a
/// window grow: a group in no window of the last two sizes (sessions: two
/// gaps) is forgotten, and one that comes back is named as before.
#[test]
fn series_that_come_and_go_are_forgotten() {
    for kind in [
        WindowKind::Tumbling { size: 10_000 },
        WindowKind::Hopping {
            size: 10_000,
            every: 5_000,
        },
        WindowKind::Session { gap: 10_000 },
    ] {
        let mut state = WindowState::new(spec(kind.clone(), 0, LatePolicy::Drop));
        let mut peak = 0;
        let mut out: Vec<Sample> = Vec::new();
        // 100 generations of 50 series, each alive for 30 s; generation 0
        // comes back at the end.
        for (step, generation) in (0..100).chain([0]).enumerate() {
            let series: Vec<Series> = (0..50)
                .map(|i| Series::new("m", [("pod", format!("{generation}-{i}"))]))
                .collect();
            let base = step as Millis * 30_000;
            for t in 0..30 {
                let ts = base + t * 1_000 + 1;
                for s in &series {
                    state.insert(&Sample::new(s.clone(), ts, 1.0), s, ts as Time);
                }
                state.advance(Some(ts as Time), &mut |_, batch| out.extend(batch));
                peak = peak.max(state.footprint().known_groups);
            }
        }
        state.advance(None, &mut |_, batch| out.extend(batch));
        assert!(
            peak <= 4 * 50,
            "{kind:?}: {peak} groups remembered at once for 50 live series"
        );
        let back: Vec<&Sample> = out
            .iter()
            .filter(|s| s.series.get("pod") == Some("0-7") && s.series.name() == "m:w_count")
            .collect();
        assert!(back.len() >= 2, "{kind:?}: {}", back.len());
        let last = back.last().unwrap();
        assert!(
            last.timestamp > 100 * 30_000,
            "{kind:?}: {}",
            last.timestamp
        );
    }
}
