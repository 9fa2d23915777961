//! The engine's limit for `tidemark bench window`: the same generator and
//! the same 10 s tumbling window written directly against timely, with
//! records of `(series id, timestamp, value)` and nothing else (no labels,
//! no statistics, no late handling, no configurable aggregates). What
//! Tidemark reaches is reported as a share of what this loop reaches on the
//! same machine in the same invocation.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Operator, Probe};

use tidemark_connectors::generator::{Shape, series_for};
use tidemark_engine::flow::{DEFAULT_MAX_IN_FLIGHT, FlowControl};
use tidemark_engine::time::Time;

/// A sample as the loop carries it.
type Record = (u64, i64, f64);

/// The window's accumulator for count, sum, min and max (avg is derived).
#[derive(Clone, Copy)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Samples one activation of the generator may produce.
const BUDGET: usize = 16 * 1024;

/// Runs the loop once: `series` series at a 1 s interval for `ticks` ticks
/// from `start`, into a 10 s tumbling window per series whose five results
/// per window are counted and dropped. Returns the samples generated and the
/// wall time from start until every worker finished.
pub fn run(series: u64, ticks: u64, start: i64, workers: usize) -> anyhow::Result<(u64, Duration)> {
    const INTERVAL: i64 = 1_000;
    const SIZE: i64 = 10_000;
    const SEED: u64 = 1;
    let config = if workers > 1 {
        timely::Config::process(workers)
    } else {
        timely::Config::thread()
    };
    let began = Instant::now();
    let guards = timely::execute(config, move |worker| {
        let probe = ProbeHandle::<Time>::new();
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        worker.dataflow::<Time, _, _>(|scope| {
            let flow_probe = probe.clone();
            source(scope, "gen", move |capability, info| {
                let activator = scope.activator_for(Rc::clone(&info.address));
                let mut locals: Vec<(Shape, u64, f64)> = (index..series)
                    .step_by(peers as usize)
                    .map(|i| (Shape::new(SEED, i), series_for(i).id().0, 0.0))
                    .collect();
                let watermark = move |tick: u64| (start + tick as i64 * INTERVAL) as Time;
                let mut cap = (!locals.is_empty()).then_some(capability);
                if let Some(c) = cap.as_mut() {
                    c.downgrade(&watermark(0));
                }
                // The window holds its output back by its size.
                let mut flow = FlowControl::new(flow_probe, SIZE as Time, DEFAULT_MAX_IN_FLIGHT);
                let (mut tick, mut next) = (0u64, 0usize);
                move |output| {
                    let Some(c) = cap.as_mut() else { return };
                    if !flow.may_send(*c.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    let ts = start + tick as i64 * INTERVAL;
                    let mut session = output.session(&*c);
                    let mut made = 0;
                    let mut memo = None;
                    while made < BUDGET && next < locals.len() {
                        let (shape, id, counter) = &mut locals[next];
                        let v = shape.value(SEED, tick, ts, INTERVAL, counter, &mut memo);
                        session.give((*id, ts, v));
                        made += 1;
                        next += 1;
                    }
                    drop(session);
                    flow.sent(*c.time(), made as u64);
                    if next == locals.len() {
                        next = 0;
                        tick += 1;
                        if tick >= ticks {
                            cap = None;
                            return;
                        }
                        c.downgrade(&watermark(tick));
                    }
                    activator.activate();
                }
            })
            .container::<Vec<Record>>()
            .unary_frontier(
                Exchange::new(|r: &Record| r.0),
                "window",
                |capability, _info| {
                    let mut held = Some(capability);
                    let mut open: BTreeMap<i64, FxHashMap<u64, Acc>> = BTreeMap::new();
                    let mut spare: Vec<FxHashMap<u64, Acc>> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each(|_cap, data| {
                            for &(id, ts, v) in data.iter() {
                                let end = (ts + SIZE - 1).div_euclid(SIZE) * SIZE;
                                let groups = open
                                    .entry(end)
                                    .or_insert_with(|| spare.pop().unwrap_or_default());
                                let acc = groups.entry(id).or_insert(Acc {
                                    count: 0,
                                    sum: 0.0,
                                    min: f64::INFINITY,
                                    max: f64::NEG_INFINITY,
                                });
                                acc.count += 1;
                                acc.sum += v;
                                acc.min = acc.min.min(v);
                                acc.max = acc.max.max(v);
                            }
                            data.clear();
                        });
                        let f = frontier.frontier().iter().min().copied();
                        let Some(cap) = held.as_mut() else { return };
                        while let Some((&end, _)) = open.first_key_value() {
                            if f.is_some_and(|f| (end as Time) >= f) {
                                break;
                            }
                            let Some((_, mut groups)) = open.pop_first() else {
                                break;
                            };
                            let mut batch: Vec<Record> = Vec::with_capacity(groups.len() * 5);
                            for (&id, a) in &groups {
                                batch.push((id, end, a.count as f64));
                                batch.push((id, end, a.sum));
                                batch.push((id, end, a.min));
                                batch.push((id, end, a.max));
                                batch.push((id, end, a.sum / a.count as f64));
                            }
                            let at = cap.delayed(&(end as Time).max(*cap.time()));
                            output.session(&at).give_container(&mut batch);
                            groups.clear();
                            spare.push(groups);
                        }
                        match f {
                            Some(f) => {
                                let to = f.saturating_sub(SIZE as Time);
                                if to > *cap.time() {
                                    cap.downgrade(&to);
                                }
                            }
                            None => held = None,
                        }
                    }
                },
            )
            .container::<Vec<Record>>()
            .probe_with(&probe)
            .sink(Pipeline, "discard", |(input, _frontier)| {
                input.for_each(|_, data| data.clear());
            })
        });
        while worker.step_or_park(None) {}
    })
    .map_err(|e| anyhow::anyhow!("cannot start the loop's workers: {e}"))?;
    guards
        .join()
        .into_iter()
        .collect::<Result<Vec<()>, String>>()
        .map_err(|e| anyhow::anyhow!("a worker of the loop failed: {e}"))?;
    Ok((series * ticks, began.elapsed()))
}
