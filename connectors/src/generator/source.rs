//! The generator's runtime: worker `w` of `n` generates the series `i` with
//! `i % n == w`, tick by tick. All samples of tick `k` enter at the same
//! watermark, `start + k * interval - max_out_of_orderness`, whichever worker
//! makes them, so lateness and results do not depend on the worker count.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, source};
use tidemark_engine::stats::add;
use tidemark_engine::time::{Millis, Time, now_millis, to_time};
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
            let start: Millis = g.start.unwrap_or_else(now_millis);
            let mut locals: Vec<Local> = (index..g.series)
                .step_by(peers as usize)
                .map(|i| Local {
                    index: i,
                    shape: Shape::new(g.seed, i),
                    series: series_for(i),
                    counter: 0.0,
                })
                .collect();
            let mut cap = (!locals.is_empty()).then_some(capability);
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight)
                .with_gauge(Arc::clone(&ctx.stats));
            let (mut tick, mut next) = (0u64, 0usize);
            let began = Instant::now();
            let mut produced = 0u64;
            let local_rate = g.rate * locals.len() as f64 / g.series as f64;
            let watermark = move |tick: u64| -> Time {
                to_time(
                    start
                        .saturating_add(tick as i64 * g.interval)
                        .saturating_sub(g.max_out_of_orderness),
                )
            };
            if let Some(c) = cap.as_mut() {
                c.downgrade(&watermark(0));
                ctx.clock.publish(watermark(0));
            }
            let ooo_span = g.max_out_of_orderness.max(1) as u64;
            let late_span = (10 * g.interval).max(1) as u64;
            let _ = METRICS;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if ctx.shutdown.is_triggered() || g.ticks.is_some_and(|t| tick >= t) {
                    cap = None;
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
                let ts0 = start.saturating_add(tick as i64 * g.interval);
                let mut memo = None;
                while made < budget && next < locals.len() {
                    let l = &mut locals[next];
                    let mut v =
                        l.shape
                            .value(g.seed, tick, ts0, g.interval, &mut l.counter, &mut memo);
                    if let Some((kind, first)) =
                        g.anomalies.and_then(|a| a.active(g.seed, l.index, tick))
                    {
                        // Gauges are pure functions of the tick: the value
                        // at the anomaly's start is computed again.
                        let first_ts = start.saturating_add(first as i64 * g.interval);
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
                    next += 1;
                }
                drop(session);
                flow.sent(*c.time(), made as u64);
                produced += made as u64;
                add(&ctx.stats.received, made as u64);
                if next == locals.len() {
                    next = 0;
                    tick += 1;
                    if g.ticks.is_some_and(|t| tick >= t) {
                        cap = None;
                        return;
                    }
                    c.downgrade(&watermark(tick));
                    ctx.clock.publish(watermark(tick));
                }
                activator.activate();
            }
        })
        .container::<Vec<Sample>>()
    }
}
