//! A network source over the write-ahead log (`tidemark serve
//! --data-dir`): every worker of the process reads the log's headers and
//! decodes its own share of the records (offset modulo the workers), so
//! each acknowledged request is emitted once. A record's samples enter at
//! the watermark of the log's records of its protocol (and tenant) up to
//! its first sample, the same on every worker and on every replay.
//!
//! In a checkpointed pipeline (`tidemark_engine::checkpoint`) each worker
//! records its position where its output first reaches a checkpoint's cut,
//! stores its position at the newest complete checkpoint, and a restart
//! resumes from the checkpoint's positions. Otherwise the source commits,
//! per worker, the offset below which nothing can change output that is
//! not durable, and a restart resumes from the smallest (see
//! `tidemark_engine::wal`).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_engine::Sample;
use tidemark_engine::checkpoint::{decode, encode};
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
/// How long ingest may be refused with no checkpoint moving a source's
/// position before its checkpoints are given up.
const STUCK: Duration = Duration::from_secs(5);

/// Where a restart with empty state reads from: the newest such position
/// of a worker, and the last it stored.
#[derive(Default)]
struct Reach {
    now: Option<Position>,
    stored: Option<Position>,
}

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
            let mut resumed = sub.resumed.unwrap_or(tidemark_engine::wal::Resumed { offset: logged.wal.end(), max_seen: None, durable: 0 });
            let (workers, local) = (logged.workers as u64, (scope.index() % logged.workers) as u64);
            // With a checkpoint, every worker starts where the slowest of
            // the run that wrote it was, and skips what that run's worker
            // of each record had already taken in.
            let mut done: Vec<u64> = Vec::new();
            let mut start_at: Time = 0;
            // (In a cluster each process reads its own log: the positions
            // of the workers this process had when the checkpoint was cut.)
            let process = scope.index() / logged.workers.max(1);
            if let Some(cut) = &ctx.checkpoint
                && let (Some(at), Some(parts)) = (cut.restored_at(), cut.restored_of_process(process))
            {
                let positions: Vec<Position> = parts.iter().filter_map(|p| decode(p).ok()).collect();
                if positions.len() == parts.len() && !positions.is_empty() {
                    let min = positions.iter().min_by_key(|p| p.offset).copied().unwrap_or(positions[0]);
                    resumed = tidemark_engine::wal::Resumed { offset: min.offset, max_seen: min.max_seen, durable: at };
                    done = positions.iter().map(|p| p.offset).collect();
                    start_at = at;
                } else {
                    add(&ctx.stats.errors, 1);
                    tracing::error!(source = %ctx.name, "This source's positions in the checkpoint do not decode; it resumes from the write-ahead log's stored position instead.");
                }
            }
            // Before anything is emitted: sinks skip what an earlier run made durable.
            ctx.resume.resume_from(resumed.durable);
            logged.wal.wake(scope.worker().sync_activator_for(info.address.to_vec()));
            let mut reader = logged.wal.reader(resumed.offset);
            let ooo = millis(config.max_out_of_orderness);
            let mut stamper = Stamper::new(ooo, resumed.max_seen, ctx.reach);
            let mut uncommitted = Uncommitted::default();
            // In a checkpointed pipeline: this worker's position at each
            // checkpoint not yet superseded, and the last stored.
            let mut at_checkpoint: BTreeMap<Time, Position> = BTreeMap::new();
            let mut stored: Option<Time> = None;
            // When a checkpoint last moved the stored position (or the
            // checkpoints were last given up).
            let mut moved = Instant::now();
            let mut reach = Reach::default();
            let mut next_offset = resumed.offset;
            let mut capability = capability;
            if start_at > *capability.time() {
                capability.downgrade(&start_at);
            }
            let mut reported = *capability.time();
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
                let store = |position: Position| {
                    if let Err(error) = logged.wal.commit(&ctx.pipeline, &ctx.name, local as usize, workers as usize, position) {
                        add(&ctx.stats.errors, 1);
                        tracing::error!(source = %ctx.name, %error, "Cannot store this source's position in the write-ahead log; a restart reads more again.");
                    }
                };
                let commit = |uncommitted: &mut Uncommitted, at_checkpoint: &mut BTreeMap<Time, Position>, stored: &mut Option<Time>, moved: &mut Instant, reach: &mut Reach| {
                    // Checkpointed: once a checkpoint is complete, the log
                    // keeps what a restore from the newest one reads; until
                    // then, what a restart with empty state reads.
                    if let Some((offset, checkpoint)) = uncommitted.commit(durable()) {
                        reach.now = Some(Position { offset: offset as u64, max_seen: checkpoint.max_seen, durable: checkpoint.durable });
                    }
                    if let Some(cut) = &ctx.checkpoint {
                        let checkpoints = cut.checkpoints();
                        checkpoints.hurry(logged.wal.filling());
                        checkpoints.poll(durable());
                        // A full log refuses ingest, so event time may
                        // stand still before the next cut: no checkpoint
                        // could then move the positions again. Give them up
                        // and store what a restart with empty state reads.
                        if logged.wal.refusing_for().is_some_and(|d| d >= STUCK) && moved.elapsed() >= STUCK {
                            add(&ctx.stats.errors, 1);
                            tracing::warn!(source = %ctx.name, "The write-ahead log has refused ingest for {} s and no checkpoint moved this source's position: the checkpoints are given up, so that the log can delete what windows no longer need (a restart before the next checkpoint starts with empty state: anomaly models and alerts start afresh). A larger --wal-max-mb avoids this.", STUCK.as_secs());
                            checkpoints.abandon();
                            *moved = Instant::now();
                        }
                        if let Some(through) = checkpoints.abandoned() {
                            at_checkpoint.retain(|b, _| *b > through);
                            if stored.is_some_and(|s| s <= through) {
                                *stored = None;
                            }
                        }
                        if let Some(newest) = checkpoints.newest() {
                            if *stored != Some(newest)
                                && let Some(p) = at_checkpoint.get(&newest)
                            {
                                store(*p);
                                *stored = Some(newest);
                                *moved = Instant::now();
                                at_checkpoint.retain(|b, _| *b > newest);
                            }
                            return;
                        }
                    }
                    if let Some(mut position) = reach.now {
                        // A checkpoint under way reads the log from its
                        // position: keep it.
                        if let Some(p) = at_checkpoint.values().min_by_key(|p| p.offset)
                            && p.offset < position.offset
                        {
                            position.offset = p.offset;
                            position.max_seen = p.max_seen;
                        }
                        if reach.stored != Some(position) {
                            store(position);
                            reach.stored = Some(position);
                        }
                    }
                };
                // The output moves to `to`: this worker's position for every
                // checkpoint on the way (everything before `offset` entered
                // below it).
                let mut cross = |to: Time, offset: u64, max_seen, at_checkpoint: &mut BTreeMap<Time, Position>| {
                    if to <= reported {
                        return;
                    }
                    if let Some(cut) = &ctx.checkpoint {
                        // Every cut is a checkpoint while the log fills up;
                        // the next is decided once the last is complete.
                        cut.checkpoints().hurry(logged.wal.filling());
                        cut.checkpoints().poll(durable());
                        for b in cut.crossed(reported, to) {
                            let position = Position { offset, max_seen, durable: b };
                            cut.write_at(b, encode(&position));
                            at_checkpoint.insert(b, position);
                        }
                    }
                    reported = to;
                };
                if ctx.shutdown.is_triggered() {
                    // As the Kafka source: stop without draining, store what
                    // is durable, and let the next run read the rest again.
                    ctx.resume.abandon();
                    // (A checkpointed one stores only what its checkpoints
                    // completed: a newer installation may already have
                    // restored from one.)
                    if ctx.checkpoint.is_none() {
                        commit(&mut uncommitted, &mut at_checkpoint, &mut stored, &mut moved, &mut reach);
                    }
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
                    // After a restore: records the earlier run's worker of
                    // each had taken in are in the restored state.
                    let restored = |o: u64| done.get((o % done.len().max(1) as u64) as usize).is_some_and(|d| o < *d);
                    let Some(read) = reader.next(|o, h| o % workers == local && counts(h) && !restored(o)) else { break };
                    last_data = Instant::now();
                    match read {
                        Next::Entry(offset, entry) => {
                            let before = stamper.max_seen();
                            let mut reach = 0;
                            let mut run: Vec<Sample> = Vec::new();
                            // A record enters at one time: the watermark at
                            // its first sample, so that a checkpoint cuts
                            // between records.
                            let mut at = None;
                            for sample in &entry.samples {
                                let wanted = tenant.as_deref().is_none_or(|t| sample.series.get(TENANT_LABEL) == Some(t))
                                    && config.selector.as_ref().is_none_or(|sel| sel.matches(&sample.series));
                                if !wanted {
                                    continue;
                                }
                                let (t, r) = stamper.stamp(sample.timestamp);
                                let at = *at.get_or_insert(t.max(*c.time()));
                                // A sample that goes out later than its time
                                // reaches as far as when it went out.
                                reach = reach.max(r).max(at);
                                run.push(sample.clone());
                            }
                            if let Some(at) = at {
                                cross(at, offset, before, &mut at_checkpoint);
                                add(&ctx.stats.received, run.len() as u64);
                                flow.sent(at, run.len() as u64);
                                output.session(&c.delayed(&at)).give_container(&mut run);
                            }
                            stamper.observe(entry.header.max_ts);
                            uncommitted.push(offset as i64 + 1, reach, stamper.max_seen());
                            next_offset = offset + 1;
                        }
                        Next::Skipped(offset, header) => {
                            if counts(&header) {
                                stamper.observe(header.max_ts);
                            }
                            uncommitted.push(offset as i64 + 1, 0, stamper.max_seen());
                            next_offset = offset + 1;
                        }
                        Next::Lost(from, to) => {
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, from, to, "Records of the write-ahead log are lost (cut off as corrupt when the server started); this source goes on after them.");
                            uncommitted.push(to as i64, 0, stamper.max_seen());
                            next_offset = to;
                        }
                        Next::Bad(offset, why) => {
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, offset, "The write-ahead log holds {why}; this source skips it.");
                            uncommitted.push(offset as i64 + 1, 0, stamper.max_seen());
                            next_offset = offset + 1;
                        }
                    }
                    if let Some(w) = stamper.watermark()
                        && w > *c.time()
                    {
                        cross(w, next_offset, stamper.max_seen(), &mut at_checkpoint);
                        c.downgrade(&w);
                    }
                }
                if last_data.elapsed() >= config.idle_timeout {
                    let target = ctx.clock.max();
                    if target > *c.time() {
                        cross(target, next_offset, stamper.max_seen(), &mut at_checkpoint);
                        c.downgrade(&target);
                    }
                }
                ctx.clock.publish(*c.time());
                if last_commit.elapsed() >= COMMIT_EVERY {
                    last_commit = Instant::now();
                    commit(&mut uncommitted, &mut at_checkpoint, &mut stored, &mut moved, &mut reach);
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
