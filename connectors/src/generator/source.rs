//! The generator's runtime: worker `w` of `n` generates the series `i` with
//! `i % n == w`, tick by tick. All samples of tick `k` enter at the same
//! watermark, `start + k * interval - max_out_of_orderness`, whichever worker
//! makes them, so lateness and results do not depend on the worker count.
//!
//! In a checkpointed pipeline a worker records its series' positions for
//! every checkpoint its output crosses when it moves to the next tick
//! (everything of the ticks before entered below the cut), and once it has
//! generated every tick (or has no series), its final positions for every
//! later one ([`Cut::finish`]).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tidemark_engine::checkpoint::{Cut, Part, decode, encode};
use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{Capability, PipelineScope, SampleStream, raise, source};
use tidemark_engine::stats::add;
use tidemark_engine::time::{Millis, Time, to_time};
use tidemark_engine::{Sample, Series};

use super::config::Generator;
use super::values::{ANOMALY_KINDS, MARKER, METRICS, Shape, inject, series_for, unit, value};

/// Samples one activation may produce before yielding to other operators.
const BUDGET: usize = 16 * 1024;

struct Local {
    index: u64,
    shape: Shape,
    series: Series,
    counter: f64,
    /// The event time of its tick 0: the run's start, or, restored, that
    /// of the run that made its first sample (the processes of a cluster
    /// take `now` each).
    start: Millis,
    /// Its first tick to generate (after a restore, where the checkpoint
    /// left it).
    from: u64,
}

/// Where a series is at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The event time of its tick 0.
    start: Millis,
    /// Its next tick.
    tick: u64,
    /// Its counter's running total.
    counter: f64,
}

/// A worker's part of a checkpoint: where each of its series is, by index.
fn positions(tick: u64, locals: &[Local]) -> Vec<(u64, Position)> {
    locals
        .iter()
        .map(|l| {
            let p = Position {
                start: l.start,
                tick: tick.max(l.from),
                counter: l.counter,
            };
            (l.index, p)
        })
        .collect()
}

/// Writes this worker's positions (before `tick`) for every checkpoint its
/// output crosses moving from `from` to `to`: everything of the ticks
/// before entered below it.
fn record(cut: Option<&Cut>, from: Time, to: Time, tick: u64, locals: &[Local]) {
    let Some(cut) = cut else { return };
    let crossed = cut.crossed(from, to);
    if crossed.is_empty() {
        return;
    }
    let bytes = encode(&positions(tick, locals));
    for b in crossed {
        cut.write_at(b, bytes.clone());
    }
}

/// Every series' position, from every worker's part of a checkpoint
/// (written at any number of workers).
fn restore(parts: &[Part]) -> Result<HashMap<u64, Position>, String> {
    let mut series = HashMap::new();
    for part in parts {
        let p: Vec<(u64, Position)> = decode(part)?;
        series.extend(p);
    }
    Ok(series)
}

/// Drops the capability: the output is complete, and `positions`, the
/// series' final ones, are this instance's part of every later checkpoint.
fn finish(
    cut: Option<&Cut>,
    cap: &mut Option<Capability<Time>>,
    positions: impl FnOnce() -> Vec<(u64, Position)>,
) {
    if let (Some(cut), Some(c)) = (cut, cap.as_ref()) {
        cut.finish(*c.time(), encode(&positions()));
    }
    *cap = None;
}

impl Generator {
    /// Builds the source on a worker.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        let g = self.clone();
        let (index, peers) = (scope.index() as u64, scope.peers() as u64);
        source(scope, &ctx.name.clone(), move |capability, info| {
            let activator = scope.activator_for(Rc::clone(&info.address));
            // `now`: when the pipeline started in this process (the same
            // for every worker), at a whole second.
            let start: Millis = g.start.unwrap_or_else(|| ctx.clock.started() / 1000 * 1000);
            // Restored: every series' position.
            let mut restored = HashMap::new();
            let restored_at = ctx.checkpoint.as_ref().and_then(Cut::restored_at);
            if let Some(parts) = ctx.checkpoint.as_ref().and_then(Cut::restored) {
                match restore(&parts) {
                    Ok(series) => restored = series,
                    Err(error) => {
                        add(&ctx.stats.errors, 1);
                        tracing::error!(source = %ctx.name, %error, "This source's positions in the checkpoint do not decode; it starts again from its first sample.");
                    }
                }
            }
            let mut locals: Vec<Local> = (index..g.series)
                .step_by(peers as usize)
                .map(|i| {
                    let p = restored.get(&i).copied().unwrap_or(Position {
                        start,
                        tick: 0,
                        counter: 0.0,
                    });
                    Local {
                        index: i,
                        shape: Shape::new(g.seed, i),
                        series: series_for(i),
                        counter: p.counter,
                        start: p.start,
                        from: p.tick,
                    }
                })
                .collect();
            let mut capability = capability;
            if let Some(at) = restored_at {
                // Sinks skip what the run that wrote it made durable.
                ctx.resume.resume_from(at);
                raise(&mut capability, at);
            }
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight)
                .with_gauge(Arc::clone(&ctx.stats));
            // (Restored series that had made every sample before the
            // checkpoint stay, for their positions: they are skipped.)
            let mut tick = locals.iter().map(|l| l.from).min().unwrap_or(0);
            let mut next = 0usize;
            let began = Instant::now();
            let mut produced = 0u64;
            let local_rate = g.rate * locals.len() as f64 / g.series as f64;
            // Every sample of a tick enters at the earliest series' time.
            let start = locals.iter().map(|l| l.start).min().unwrap_or(start);
            let watermark = move |tick: u64| -> Time {
                to_time(
                    start
                        .saturating_add(tick as i64 * g.interval)
                        .saturating_sub(g.max_out_of_orderness),
                )
            };
            // Its output starts at its first tick: nothing of it is before
            // a checkpoint on the way.
            let first = watermark(tick).max(*capability.time());
            record(ctx.checkpoint.as_ref(), *capability.time(), first, tick, &locals);
            raise(&mut capability, first);
            ctx.clock.publish(first);
            let mut cap = Some(capability);
            let done = g.ticks.unwrap_or(u64::MAX);
            if locals.is_empty() {
                finish(ctx.checkpoint.as_ref(), &mut cap, || positions(done, &locals));
            }
            let ooo_span = g.max_out_of_orderness.max(1) as u64;
            let late_span = (10 * g.interval).max(1) as u64;
            let _ = METRICS;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if let Some(cut) = &ctx.checkpoint {
                    cut.checkpoints().poll(ctx.probe.with_frontier(|f| f.iter().min().copied()).unwrap_or(Time::MAX));
                }
                if ctx.shutdown.is_triggered() {
                    // Checkpointed, it stops without draining, as the other
                    // sources do: a restart goes on from the checkpoint.
                    if ctx.checkpoint.is_some() {
                        ctx.resume.abandon();
                    }
                    cap = None;
                    return;
                }
                if g.ticks.is_some_and(|t| tick >= t) {
                    finish(ctx.checkpoint.as_ref(), &mut cap, || positions(done, &locals));
                    return;
                }
                if !flow.may_send(*c.time()) {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
                let mut budget = BUDGET;
                if local_rate > 0.0 {
                    let due = (began.elapsed().as_secs_f64() * local_rate) as u64;
                    if due <= produced {
                        activator.activate_after(Duration::from_millis(5));
                        return;
                    }
                    budget = budget.min((due - produced) as usize);
                }
                let mut session = output.session(&*c);
                let mut made = 0usize;
                let mut memo = None;
                while made < budget && next < locals.len() {
                    let l = &mut locals[next];
                    next += 1;
                    if l.from > tick {
                        continue;
                    }
                    let ts0 = l.start.saturating_add(tick as i64 * g.interval);
                    let mut v =
                        l.shape
                            .value(g.seed, tick, ts0, g.interval, &mut l.counter, &mut memo);
                    if let Some((kind, first)) =
                        g.anomalies.and_then(|a| a.active(g.seed, l.index, tick))
                    {
                        // Gauges are pure functions of the tick: the value
                        // at the anomaly's start is computed again.
                        let first_ts = l.start.saturating_add(first as i64 * g.interval);
                        let at_start =
                            value(g.seed, l.index, first, first_ts, g.interval, &mut 0.0);
                        let noise = 2.0 * unit(g.seed, l.index, tick, 14) - 1.0;
                        v = inject(kind, v, tick - first, at_start, noise);
                        if l.index.is_multiple_of(METRICS.len() as u64) {
                            v = v.clamp(0.0, 100.0);
                        }
                        if tick == first {
                            let mut labels: Vec<(&str, &str)> = l.series.tags().collect();
                            labels.push(("metric", l.series.name()));
                            labels.push(("kind", ANOMALY_KINDS[kind]));
                            session.give(Sample::new(Series::new(MARKER, labels), ts0, 1.0));
                        }
                    }
                    let mut ts = ts0;
                    if g.out_of_order > 0.0 || g.late > 0.0 {
                        let u = unit(g.seed, l.index, tick, 9);
                        let h = (unit(g.seed, l.index, tick, 10) * (1u64 << 40) as f64) as u64;
                        if u < g.out_of_order {
                            ts -= 1 + (h % ooo_span) as i64;
                        } else if u < g.out_of_order + g.late {
                            ts -= g.max_out_of_orderness + 1 + (h % late_span) as i64;
                        }
                    }
                    session.give(Sample::new(l.series.clone(), ts.max(0), v));
                    made += 1;
                }
                drop(session);
                flow.sent(*c.time(), made as u64);
                produced += made as u64;
                add(&ctx.stats.received, made as u64);
                if next == locals.len() {
                    next = 0;
                    tick += 1;
                    if g.ticks.is_some_and(|t| tick >= t) {
                        finish(ctx.checkpoint.as_ref(), &mut cap, || positions(done, &locals));
                        return;
                    }
                    let to = watermark(tick).max(*c.time());
                    // Every checkpoint on the way: the ticks before entered
                    // below it.
                    record(ctx.checkpoint.as_ref(), *c.time(), to, tick, &locals);
                    c.downgrade(&to);
                    ctx.clock.publish(to);
                }
                activator.activate();
            }
        })
        .container::<Vec<Sample>>()
    }
}
