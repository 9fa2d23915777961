//! The network sources' runtime: every worker's instance pops batches from
//! the source's shared queue. Each instance's watermark is the largest
//! timestamp it has taken minus `max_out_of_orderness`; an instance with
//! nothing to take for `idle_timeout` advances to the pipeline's source
//! clock, so quiet workers and quiet senders do not hold windows back.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_engine::Sample;
use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, source};
use tidemark_engine::stats::add;
use tidemark_engine::watermark::Watermarks;

use super::config::NetworkSource;

impl NetworkSource {
    /// Builds the source on a worker. Without an ingest hub (outside
    /// `tidemark serve`) it logs an error and ends at once.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        if let Some(hub) = ctx.ingest.clone()
            && let Some(logged) = hub.wal().cloned()
        {
            return self.build_logged(scope, ctx, hub, logged);
        }
        let config = self.clone();
        source(scope, &ctx.name.clone(), move |capability, info| {
            let activator = scope.activator_for(Rc::clone(&info.address));
            let subscription = match &ctx.ingest {
                Some(hub) => {
                    let s = hub.subscribe(config.protocol, config.selector.clone(), ctx.tenant.as_deref(), &ctx.pipeline, &ctx.name, config.queue);
                    s.wake(scope.worker().sync_activator_for(info.address.to_vec()));
                    Some(s)
                }
                None => {
                    add(&ctx.stats.errors, 1);
                    tracing::error!(source = %ctx.name, "Network sources need `tidemark serve`; this source ends.");
                    None
                }
            };
            let mut cap = subscription.as_ref().map(|_| capability);
            let mut watermarks = Watermarks::new(1, config.max_out_of_orderness, None);
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight).with_gauge(Arc::clone(&ctx.stats));
            let mut last_data = Instant::now();
            move |output| {
                let (Some(c), Some(sub)) = (cap.as_mut(), subscription.as_ref()) else { return };
                if ctx.shutdown.is_triggered() {
                    cap = None;
                    return;
                }
                for _ in 0..64 {
                    if !flow.may_send(*c.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    let Some(mut batch) = sub.pop() else { break };
                    let now = Instant::now();
                    last_data = now;
                    add(&ctx.stats.received, batch.len() as u64);
                    // Each sample enters at the watermark after it, as in the
                    // file source; runs of one watermark go out together.
                    let mut run: Vec<Sample> = Vec::with_capacity(batch.len());
                    for sample in batch.drain(..) {
                        watermarks.observe(0, sample.timestamp, now);
                        let time = watermarks.advance(now).max(*c.time());
                        if time != *c.time() {
                            if !run.is_empty() {
                                flow.sent(*c.time(), run.len() as u64);
                                output.session(&*c).give_container(&mut run);
                                run.clear();
                            }
                            c.downgrade(&time);
                        }
                        run.push(sample);
                    }
                    if !run.is_empty() {
                        flow.sent(*c.time(), run.len() as u64);
                        output.session(&*c).give_container(&mut run);
                    }
                    ctx.clock.publish(*c.time());
                }
                if last_data.elapsed() >= config.idle_timeout {
                    let target = ctx.clock.max();
                    if target > *c.time() {
                        c.downgrade(&target);
                    }
                }
                activator.activate_after(config.idle_timeout.min(Duration::from_millis(100)));
            }
        })
        .container::<Vec<Sample>>()
    }
}
