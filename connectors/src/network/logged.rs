//! A network source over the write-ahead log (`tidemark serve
//! --data-dir`): every worker of the process reads the log's headers and
//! decodes its own share of the records (offset modulo the workers), so
//! each acknowledged request is emitted once. A sample enters at the
//! watermark of the log's records of its protocol (and tenant) up to it,
//! the same on every worker and on every replay; the source commits, per
//! worker, the offset below which nothing can change output that is not
//! durable, and a restart resumes from the smallest (see
//! `tidemark_engine::wal`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_engine::Sample;
use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::ingest::{IngestHub, Logged, TENANT_LABEL};
use tidemark_engine::runtime::{PipelineScope, SampleStream, source};
use tidemark_engine::stats::add;
use tidemark_engine::time::{Time, millis};
use tidemark_engine::wal::{Header, Next, Position};

use super::config::NetworkSource;
use crate::progress::{Stamper, Uncommitted};

/// How often a worker stores its position.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

impl NetworkSource {
    /// Builds the source on a worker, reading `logged`, the log of `hub`.
    pub(super) fn build_logged<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
        hub: Arc<IngestHub>,
        logged: Logged,
    ) -> SampleStream<'scope> {
        let config = self.clone();
        source(scope, &ctx.name.clone(), move |capability, info| {
            let activator = scope.activator_for(Rc::clone(&info.address));
            // One installation of the pipeline shares one `Resume` per process.
            let installation = Arc::as_ptr(&ctx.resume) as usize;
            let sub = hub.subscribe_logged(config.protocol, ctx.tenant.as_deref(), &ctx.pipeline, &ctx.name, installation);
            let resumed = sub.resumed.unwrap_or(tidemark_engine::wal::Resumed { offset: logged.wal.end(), max_seen: None, durable: 0 });
            // Before anything is emitted: sinks skip what an earlier run made durable.
            ctx.resume.resume_from(resumed.durable);
            logged.wal.wake(scope.worker().sync_activator_for(info.address.to_vec()));
            let (workers, local) = (logged.workers as u64, (scope.index() % logged.workers) as u64);
            let mut reader = logged.wal.reader(resumed.offset);
            let ooo = millis(config.max_out_of_orderness);
            let mut stamper = Stamper::new(ooo, resumed.max_seen, ctx.reach);
            let mut uncommitted = Uncommitted::default();
            let mut cap = Some(capability);
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight).with_gauge(Arc::clone(&ctx.stats));
            let mut last_data = Instant::now();
            let mut last_commit = Instant::now();
            let tenant = ctx.tenant.clone();
            // Records of the protocol, from the pipeline's tenant or from
            // senders without one: those move this source's watermark.
            let counts = move |h: &Header| {
                h.protocol == config.protocol
                    && tenant.as_deref().is_none_or(|t| h.tenant.as_deref().is_none_or(|h| h == t))
            };
            let tenant = ctx.tenant.clone();
            move |output| {
                // Held: the server refuses what no subscription reads.
                let _held = &sub;
                let Some(c) = cap.as_mut() else { return };
                let durable = || ctx.probe.with_frontier(|f| f.iter().min().copied()).unwrap_or(Time::MAX);
                let commit = |uncommitted: &mut Uncommitted| {
                    if let Some((offset, checkpoint)) = uncommitted.commit(durable()) {
                        let position = Position { offset: offset as u64, max_seen: checkpoint.max_seen, durable: checkpoint.durable };
                        if let Err(error) = logged.wal.commit(&ctx.pipeline, &ctx.name, local as usize, workers as usize, position) {
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, %error, "Cannot store this source's position in the write-ahead log; a restart reads more again.");
                        }
                    }
                };
                if ctx.shutdown.is_triggered() {
                    // As the Kafka source: stop without draining, store what
                    // is durable, and let the next run read the rest again.
                    ctx.resume.abandon();
                    commit(&mut uncommitted);
                    cap = None;
                    return;
                }
                let mut next = config.idle_timeout.min(Duration::from_millis(100));
                for round in 0..=256 {
                    if !flow.may_send(*c.time()) {
                        next = Duration::from_millis(1);
                        break;
                    }
                    if round == 256 {
                        next = Duration::ZERO;
                        break;
                    }
                    let Some(read) = reader.next(|o, h| o % workers == local && counts(h)) else { break };
                    last_data = Instant::now();
                    match read {
                        Next::Entry(offset, entry) => {
                            let mut reach = 0;
                            let mut run: Vec<Sample> = Vec::new();
                            let mut at_run = *c.time();
                            let mut taken = 0u64;
                            for sample in &entry.samples {
                                let wanted = tenant.as_deref().is_none_or(|t| sample.series.get(TENANT_LABEL) == Some(t))
                                    && config.selector.as_ref().is_none_or(|sel| sel.matches(&sample.series));
                                if !wanted {
                                    continue;
                                }
                                taken += 1;
                                let (t, r) = stamper.stamp(sample.timestamp);
                                let at = t.max(*c.time());
                                // A sample that goes out later than its time
                                // reaches as far as when it went out.
                                reach = reach.max(r).max(at);
                                if at != at_run && !run.is_empty() {
                                    flow.sent(at_run, run.len() as u64);
                                    output.session(&c.delayed(&at_run)).give_container(&mut run);
                                    run.clear();
                                }
                                at_run = at;
                                run.push(sample.clone());
                            }
                            if !run.is_empty() {
                                flow.sent(at_run, run.len() as u64);
                                output.session(&c.delayed(&at_run)).give_container(&mut run);
                            }
                            add(&ctx.stats.received, taken);
                            stamper.observe(entry.header.max_ts);
                            uncommitted.push(offset as i64 + 1, reach, stamper.max_seen());
                        }
                        Next::Skipped(offset, header) => {
                            if counts(&header) {
                                stamper.observe(header.max_ts);
                            }
                            uncommitted.push(offset as i64 + 1, 0, stamper.max_seen());
                        }
                        Next::Lost(from, to) => {
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, from, to, "Records of the write-ahead log are lost (cut off as corrupt when the server started); this source goes on after them.");
                            uncommitted.push(to as i64, 0, stamper.max_seen());
                        }
                        Next::Bad(offset, why) => {
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, offset, "The write-ahead log holds {why}; this source skips it.");
                            uncommitted.push(offset as i64 + 1, 0, stamper.max_seen());
                        }
                    }
                    if let Some(w) = stamper.watermark()
                        && w > *c.time()
                    {
                        c.downgrade(&w);
                    }
                }
                if last_data.elapsed() >= config.idle_timeout {
                    let target = ctx.clock.max();
                    if target > *c.time() {
                        c.downgrade(&target);
                    }
                }
                ctx.clock.publish(*c.time());
                if last_commit.elapsed() >= COMMIT_EVERY {
                    last_commit = Instant::now();
                    commit(&mut uncommitted);
                }
                if next.is_zero() {
                    activator.activate();
                } else {
                    activator.activate_after(next);
                }
            }
        })
        .container::<Vec<Sample>>()
    }
}
