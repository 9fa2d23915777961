//! The window operator with pre-aggregation on each worker before the
//! exchange (`WindowSpec::combine`) against the operator without it, on 1,
//! 2 and 4 workers: the same results, bit for bit, when each group's
//! samples come from one worker, and the same counts, extremes and (to
//! rounding) sums when they come from any worker.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::{Input, Inspect, Probe};

use tidemark_engine::stats::{ComponentStats, DropReason};
use tidemark_engine::time::{Millis, Time};
use tidemark_engine::{Sample, Series};
use tidemark_operators::aggregate::{Aggregate, Needs};
use tidemark_operators::group::Grouping;
use tidemark_operators::window::{LatePolicy, Partial, Window, WindowKind, WindowSpec};

const SERIES: usize = 24;

/// A sample, the watermark at which it entered, and the worker that reads
/// it.
#[derive(Clone)]
struct Record {
    sample: Sample,
    time: Time,
    worker: usize,
}

/// Samples every ~1 s of series in 6 groups (label `g`), with out-of-order
/// ones and late ones; entry times as a source computes them (the latest
/// timestamp seen minus 3 s). `spread`: each sample is read by a random
/// worker of `workers`; otherwise every sample of a group by one worker.
fn generate(seed: u64, workers: usize, spread: bool) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Which worker reads a sample is drawn apart, so that the samples are
    // the same for any number of workers.
    let mut readers = StdRng::seed_from_u64(seed ^ 0x5eed);
    let names: Vec<Series> = (0..SERIES)
        .map(|i| Series::new("m", [("s", i.to_string()), ("g", (i % 6).to_string())]))
        .collect();
    let mut max_seen: Millis = 0;
    let mut out = Vec::new();
    for step in 0..120i64 {
        for (i, series) in names.iter().enumerate() {
            let mut ts = 20_000 + step * 1_000 + rng.random_range(0..300);
            let r: f64 = rng.random();
            if r < 0.1 {
                ts -= rng.random_range(0..3_000);
            } else if r < 0.14 {
                ts -= rng.random_range(3_000..25_000);
            }
            // Values whose sums depend on the order they are added in.
            let value = if rng.random::<f64>() < 0.01 {
                f64::NAN
            } else {
                rng.random_range(-1.0..1.0) * 10f64.powi(rng.random_range(-3..12))
            };
            max_seen = max_seen.max(ts);
            let worker = if spread {
                readers.random_range(0..workers)
            } else {
                (i % 6) % workers
            };
            out.push(Record {
                sample: Sample::new(series.clone(), ts, value),
                time: (max_seen - 3_000).max(0) as Time,
                worker,
            });
        }
    }
    out
}

fn spec(kind: WindowKind, grouping: Grouping, late: LatePolicy, combine: bool) -> WindowSpec {
    let aggregates = vec![
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
        Aggregate::Last,
    ];
    WindowSpec {
        kind,
        label: "10s".into(),
        lateness: 2_000,
        late,
        needs: Needs::of(&aggregates),
        aggregates: Arc::from(aggregates),
        grouping,
        partial: Partial::Mark,
        combine,
    }
}

/// An output: timely time, series, timestamp, value.
type Row = (Time, String, i64, f64);

/// What the window counted.
#[derive(Debug, PartialEq)]
struct Counted {
    received: u64,
    dropped: Vec<(DropReason, u64)>,
    corrections: u64,
    partial_windows: u64,
}

/// Runs the window on `workers` workers, each reading its inputs in order;
/// returns the outputs sorted, and what the window counted.
fn run(spec: WindowSpec, inputs: &[Record], workers: usize) -> (Vec<Row>, Counted) {
    let out: Arc<Mutex<Vec<Row>>> = Arc::default();
    let sink = Arc::clone(&out);
    let stats = Arc::new(ComponentStats::default());
    let counted = Arc::clone(&stats);
    let inputs = inputs.to_vec();
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut handle: InputHandleVec<Time, Sample> = InputHandleVec::new();
        let (sink, stats, spec) = (Arc::clone(&sink), Arc::clone(&counted), spec.clone());
        let probe = worker.dataflow::<Time, _, _>(|scope| {
            scope
                .input_from(&mut handle)
                .window("w", spec, stats, None)
                .inspect_core(move |event| {
                    if let Ok((t, data)) = event {
                        let t = *t.least().unwrap();
                        sink.lock().unwrap().extend(
                            data.iter()
                                .map(|s| (t, format!("{:?}", s.series), s.timestamp, s.value)),
                        );
                    }
                })
                .probe()
                .0
        });
        for input in inputs.iter() {
            if input.time > *handle.time() {
                handle.advance_to(input.time);
            }
            if input.worker == index {
                handle.send(input.sample.clone());
            }
            worker.step();
        }
        handle.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut rows = std::mem::take(&mut *out.lock().unwrap());
    rows.sort_by(|a, b| {
        (a.0, &a.1, a.2)
            .cmp(&(b.0, &b.1, b.2))
            .then(a.3.total_cmp(&b.3))
    });
    let counted = Counted {
        received: stats.received.load(Ordering::Relaxed),
        dropped: stats.drop_counts(),
        corrections: stats.corrections.load(Ordering::Relaxed),
        partial_windows: stats.partial_windows.load(Ordering::Relaxed),
    };
    (rows, counted)
}

fn bits(rows: &[Row]) -> Vec<(Time, &str, i64, u64)> {
    rows.iter()
        .map(|r| (r.0, r.1.as_str(), r.2, r.3.to_bits()))
        .collect()
}

fn cases() -> Vec<(WindowKind, Grouping, LatePolicy)> {
    let mut cases = Vec::new();
    for kind in [
        WindowKind::Tumbling { size: 10_000 },
        WindowKind::Hopping {
            size: 10_000,
            every: 5_000,
        },
    ] {
        for grouping in [
            Grouping::Series,
            Grouping::new(Some(vec!["g".into()]), None),
        ] {
            for late in [LatePolicy::Drop, LatePolicy::Update { horizon: 20_000 }] {
                cases.push((kind.clone(), grouping.clone(), late));
            }
        }
    }
    cases
}

#[test]
fn combined_windows_are_the_same_bits_on_any_number_of_workers() {
    for (kind, grouping, late) in cases() {
        let case = format!("{kind:?}, {grouping:?}, {late:?}");
        let inputs = generate(7, 1, false);
        let (want, want_counted) = run(
            spec(kind.clone(), grouping.clone(), late, false),
            &inputs,
            1,
        );
        assert!(want.len() > 100, "{case}: {}", want.len());
        let late_samples = want_counted.corrections
            + want_counted
                .dropped
                .iter()
                .filter(|(r, _)| matches!(r, DropReason::Late | DropReason::TooLate))
                .map(|(_, n)| n)
                .sum::<u64>();
        assert!(late_samples > 0, "{case}: the input has late samples");
        assert!(want_counted.partial_windows > 0, "{case}");
        assert!(
            want.iter().any(|r| r.1.contains("partial")),
            "{case}: the input begins and ends inside windows"
        );
        for workers in [1, 2, 4] {
            for combine in [false, true] {
                let inputs = generate(7, workers, false);
                let (got, counted) = run(
                    spec(kind.clone(), grouping.clone(), late, combine),
                    &inputs,
                    workers,
                );
                let (got, want) = (bits(&got), bits(&want));
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                assert!(
                    got.len() == want.len() && first.is_none(),
                    "{case}: {workers} workers, combine {combine}: {} rows against {}, first difference {:?}",
                    got.len(),
                    want.len(),
                    first.map(|i| (got[i], want[i])),
                );
                assert_eq!(counted, want_counted, "{case}: {workers} workers");
            }
        }
    }
}

#[test]
fn combined_windows_of_samples_read_by_any_worker_agree_to_rounding() {
    for (kind, grouping, late) in cases() {
        let case = format!("{kind:?}, {grouping:?}, {late:?}");
        let (want, want_counted) = run(
            spec(kind.clone(), grouping.clone(), late, false),
            &generate(11, 1, true),
            1,
        );
        for workers in [2, 4] {
            let inputs = generate(11, workers, true);
            let (got, counted) = run(
                spec(kind.clone(), grouping.clone(), late, true),
                &inputs,
                workers,
            );
            assert_eq!(counted, want_counted, "{case}: {workers} workers");
            assert_eq!(got.len(), want.len(), "{case}: {workers} workers");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0, &g.1, g.2), (w.0, &w.1, w.2), "{case}");
                let exact = !(g.1.contains("_sum") || g.1.contains("_avg"));
                if exact {
                    assert_eq!(g.3.to_bits(), w.3.to_bits(), "{case}: {g:?} {w:?}");
                } else {
                    // Sums of values up to 1e12 in another order.
                    assert!((g.3 - w.3).abs() <= 1e-3, "{case}: {g:?} {w:?}");
                }
            }
        }
    }
}
