//! The `kafka` source's timely operator: it takes batches from its consumer
//! thread, emits each sample at its partition's entry time, holds its
//! capability at the minimum watermark over partitions that are not idle,
//! and commits offsets once the sinks' durable frontier (the probe on the
//! sinks, whose capabilities they hold until their output is durable) has
//! passed everything before them.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use tidemark_engine::Sample;
use tidemark_engine::checkpoint::encode;
use tidemark_engine::component::SourceContext;
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, source};
use tidemark_engine::stats::add;
use tidemark_engine::time::Time;

use super::checkpoint::{Held, Restore};
use super::config::KafkaSource;
use super::service::{Command, Event, Service};
use crate::progress::Uncommitted;
use tidemark_codecs::Decoder;
use tidemark_engine::validate::EdgeCheck;

struct Slot {
    watermark: Option<Time>,
    /// The consumer thread said the partition is idle (no batch since).
    idle: bool,
    uncommitted: Uncommitted,
    /// In a checkpointed pipeline: where the partition is (after the last
    /// message emitted), the time of its last emitted message, and its
    /// position at each checkpoint its messages reached before this
    /// worker's output did.
    at: Held,
    reported: Time,
    crossed: BTreeMap<Time, Held>,
}

impl Slot {
    /// Its position at checkpoint `b`, which the source's output reaches
    /// now: where its messages first reached `b`, else where it is.
    fn held_at(&mut self, b: Time) -> Held {
        let held = self.crossed.remove(&b).unwrap_or_else(|| self.at.clone());
        self.crossed.retain(|t, _| *t > b);
        held
    }
}

impl KafkaSource {
    /// Builds the source on a worker.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        let config = self.clone();
        // The pipeline's label limits, and the default time bounds (ten
        // minutes ahead; no age limit, since a topic's backlog is
        // legitimately old).
        let decoder = Arc::new(Decoder {
            codec: self.format,
            check: EdgeCheck {
                limits: ctx.limits.clone(),
                ..EdgeCheck::default()
            },
        });
        source(scope, &ctx.name.clone(), move |capability, info| {
            let activator = scope.activator_for(Rc::clone(&info.address));
            // About `queue` samples wait here, in batches of up to 4096;
            // when it is full the consumer thread pauses its partitions.
            let (events_tx, events) = sync_channel((config.queue / config.queue.min(4096)).max(1));
            let (commands, commands_rx) = sync_channel(16);
            if ctx.reach.is_none() && ctx.checkpoint.is_none() {
                tracing::warn!(source = %ctx.name, "A session window is downstream: offsets are committed only as far as nothing is open, so a restart may read much again.");
            }
            // Restored from a checkpoint: the partitions resume at its
            // positions, and this worker's output at its cut.
            let mut restored = None;
            let restored_at = ctx.checkpoint.as_ref().and_then(|c| c.restored_at());
            if let Some(cut) = &ctx.checkpoint
                && let Some(at) = restored_at
            {
                match cut.restored().map(|parts| Restore::decode(at, &parts)) {
                    Some(Ok(r)) => restored = Some(r),
                    // A source whose cluster changed: its group's offsets.
                    None => {}
                    Some(Err(error)) => {
                        add(&ctx.stats.errors, 1);
                        tracing::error!(source = %ctx.name, %error, "This source's positions in the checkpoint do not decode; it resumes from its group's offsets, which the restored state may already hold in part.");
                    }
                }
            }
            let mut capability = capability;
            if let Some(at) = restored_at {
                ctx.resume.resume_from(at);
                tidemark_engine::runtime::raise(&mut capability, at);
            }
            let service = Service {
                config: config.clone(),
                decoder,
                stats: Arc::clone(&ctx.stats),
                name: ctx.name.clone(),
                client_id: format!("tidemark-{}-{}-{}", ctx.pipeline, ctx.name, scope.index()),
                worker: scope.index(),
                peers: scope.peers(),
                reach: ctx.reach,
                events: events_tx,
                commands: commands_rx,
                activator: scope.worker().sync_activator_for(info.address.to_vec()),
                restored,
            };
            let thread = std::thread::Builder::new()
                .name(format!("kafka-{}", ctx.name))
                .spawn(move || service.run());
            let mut thread = match thread {
                Ok(t) => Some(t),
                Err(error) => {
                    add(&ctx.stats.errors, 1);
                    tracing::error!(%error, "Cannot start the Kafka consumer thread.");
                    None
                }
            };
            if thread.is_none() {
                ctx.resume.abandon();
            }
            let mut cap = thread.is_some().then_some(capability);
            let mut slots: Vec<Slot> = Vec::new();
            let mut ready = false;
            let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight)
                .with_gauge(Arc::clone(&ctx.stats));
            let mut last_commit = Instant::now();
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                let durable = || {
                    ctx.probe
                        .with_frontier(|f| f.iter().min().copied())
                        .unwrap_or(Time::MAX)
                };
                let commits = |slots: &mut Vec<Slot>, durable: Time| -> Vec<_> {
                    slots
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, s)| s.uncommitted.commit(durable).map(|(o, c)| (i, o, c)))
                        .collect()
                };
                if ctx.shutdown.is_triggered() {
                    // Stop without draining: windows still open would close
                    // with part of their input. Commit what is durable, tell
                    // the sinks to write nothing more, and let go.
                    ctx.resume.abandon();
                    let list = commits(&mut slots, durable());
                    if !list.is_empty() {
                        let _ = commands.send(Command::Commit(list));
                    }
                    let _ = commands.send(Command::Stop);
                    if let Some(t) = thread.take() {
                        let _ = t.join();
                    }
                    cap = None;
                    return;
                }
                let now = Instant::now();
                // Activated again at once while batches wait, after 1 ms
                // while flow control holds them, else on the next batch
                // (the consumer thread wakes it) or for housekeeping.
                let mut next = Duration::from_millis(50);
                for round in 0..=64 {
                    if !flow.may_send(*c.time()) {
                        next = Duration::from_millis(1);
                        break;
                    }
                    if round == 64 {
                        next = Duration::ZERO;
                        break;
                    }
                    let event = match events.try_recv() {
                        Ok(e) => e,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            // The consumer thread is gone (it failed): stop
                            // as on shutdown, so no partial window is written.
                            add(&ctx.stats.errors, 1);
                            tracing::error!(source = %ctx.name, "The Kafka consumer thread stopped; this source stops without draining.");
                            ctx.resume.abandon();
                            cap = None;
                            return;
                        }
                    };
                    match event {
                        Event::Assigned { resume, partitions } => {
                            // (Restored: the checkpoint's cut, set above.)
                            if restored_at.is_none() {
                                ctx.resume.resume_from(resume);
                            }
                            for p in partitions {
                                debug_assert_eq!(p.slot, slots.len());
                                slots.push(Slot {
                                    watermark: p.watermark,
                                    idle: false,
                                    uncommitted: Uncommitted::default(),
                                    at: p.start,
                                    reported: *c.time(),
                                    crossed: BTreeMap::new(),
                                });
                            }
                            ready = true;
                        }
                        Event::Batch(batch) => {
                            add(&ctx.stats.received, batch.samples.len() as u64);
                            let mut samples = batch.samples.into_iter();
                            let slot = &mut slots[batch.slot];
                            // A sample of a partition that was idle may go
                            // out later than its partition's time; its reach
                            // is then counted from when it went out.
                            let mut delayed = 0;
                            for r in &batch.runs {
                                let mut run: Vec<Sample> = samples.by_ref().take(r.n).collect();
                                let at = r.at.max(*c.time());
                                if at > r.at {
                                    delayed = delayed.max(at);
                                }
                                if let Some(cut) = &ctx.checkpoint {
                                    for b in cut.crossed(slot.reported, at) {
                                        let held = Held { offset: Some(r.offset), max_seen: r.max_seen, ..slot.at.clone() };
                                        slot.crossed.insert(b, held);
                                    }
                                }
                                slot.reported = slot.reported.max(at);
                                flow.sent(at, run.len() as u64);
                                output.session(&c.delayed(&at)).give_container(&mut run);
                            }
                            slot.watermark = batch.watermark.or(slot.watermark);
                            slot.idle = false;
                            for chunk in batch.chunks {
                                slot.at.offset = Some(chunk.next_offset);
                                slot.at.max_seen = chunk.max_seen;
                                slot.uncommitted.push(chunk.next_offset, chunk.reach.max(delayed), chunk.max_seen);
                            }
                        }
                        Event::Idle(slot) => slots[slot].idle = true,
                    }
                }
                if ready {
                    // The minimum over partitions that are not idle; with
                    // none (all quiet, or no partition here), the
                    // pipeline's clock, so this worker holds nothing back.
                    let active = slots.iter().filter(|s| !s.idle);
                    let mut min: Option<Time> = None;
                    let mut any = false;
                    for s in active {
                        any = true;
                        let w = s.watermark.unwrap_or(*c.time());
                        min = Some(min.map_or(w, |m: Time| m.min(w)));
                    }
                    let target = if any { min.unwrap_or(*c.time()) } else { ctx.clock.max() };
                    if target > *c.time() {
                        // Every partition's position for each checkpoint
                        // on the way: what is emitted from here on enters
                        // at or after it.
                        if let Some(cut) = &ctx.checkpoint {
                            for b in cut.crossed(*c.time(), target) {
                                let held: Vec<Held> = slots.iter_mut().map(|s| s.held_at(b)).collect();
                                cut.write_at(b, encode(&held));
                            }
                        }
                        c.downgrade(&target);
                    }
                    ctx.clock.publish(*c.time());
                }
                if let Some(cut) = &ctx.checkpoint {
                    cut.checkpoints().poll(durable());
                }
                if last_commit.elapsed() >= config.commit_interval {
                    last_commit = now;
                    let list = commits(&mut slots, durable());
                    if !list.is_empty() {
                        let _ = commands.send(Command::Commit(list));
                    }
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
