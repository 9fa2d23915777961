//! What the replay sources share (`parquet`, `timescaledb`): a reader on a
//! thread of its own reads a store in event-time order and hands the
//! operator sorted chunks, each with a floor under everything it will hand
//! on later; the operator gives each chunk at the time of its first sample
//! and then moves its capability to the floor, so windows downstream close
//! as the replay goes.
//!
//! In a checkpointed pipeline (`tidemark serve --data-dir`) a worker's
//! position at a checkpoint is the event time its capability moved to
//! when it crossed the cut: every sample before it has been handed on
//! (at capabilities before the cut, so it is in the state cut there) and
//! none at or after it (chunks end between two event times). Restored, a
//! reader reads each file (`parquet`) or series (`timescaledb`) on from the
//! position of the worker that read it in the run that wrote the
//! checkpoint, so a replay restores at any number of workers; sinks skip
//! what the run before made durable.
//!
//! The reader runs an async store client on a current-thread tokio runtime;
//! the channel between the two holds a few chunks, so a reader never runs
//! far ahead of the dataflow, and the operator's flow control holds the
//! reader back while the dataflow is behind.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;

use tidemark_engine::Sample;
use tidemark_engine::checkpoint::{Cut, decode, encode};
use tidemark_engine::component::{Shutdown, SourceContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{Capability, PipelineScope, SampleStream, SyncActivator, source};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::{Millis, Time, to_time};

/// Samples handed to the operator at a time.
/// Small enough that a chunk's buffer is reused from the allocator's
/// caches rather than fresh pages (65 536 cost a fifth of the replay's CPU
/// time in zeroing new pages).
const CHUNK: usize = 4_096;

/// Chunks the channel holds: a reader runs at most this far ahead.
const CHANNEL: usize = 64;

/// What a reader hands its operator: samples sorted by time, and a bound on
/// everything it will hand on later.
struct Chunk {
    samples: Vec<Sample>,
    /// No later sample of this reader is older than this.
    floor: i64,
}

/// Where a reader runs: its worker among its peers, and its source's
/// name, counters and stop request.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) peers: usize,
    pub(crate) name: String,
    pub(crate) stats: Arc<ComponentStats>,
    pub(crate) shutdown: Shutdown,
}

impl Worker {
    pub(crate) fn of(scope: &PipelineScope<'_>, ctx: &SourceContext) -> Worker {
        Worker {
            index: scope.index(),
            peers: scope.peers(),
            name: ctx.name.clone(),
            stats: Arc::clone(&ctx.stats),
            shutdown: ctx.shutdown.clone(),
        }
    }

    /// There is nothing to replay where the source points (a wrong path
    /// or table, most likely): worker 0 says so, once, and the run ends
    /// with an error; the other workers end quietly.
    pub(crate) fn nothing_there(&self, what: String) -> Result<(), ComponentError> {
        if self.index != 0 {
            return Ok(());
        }
        Err(ComponentError::permanent(Fault::Config, what))
    }
}

/// A reader's end of the channel to its operator.
pub(crate) struct Feed {
    tx: SyncSender<Chunk>,
    activator: SyncActivator,
    /// Restored from a checkpoint: the position of each worker of the run
    /// that wrote it, in worker order.
    resumed: Option<Vec<Millis>>,
}

impl Feed {
    /// Restored from a checkpoint: where each worker of the run that wrote
    /// it had got to (it had handed on every sample before its position
    /// and none at or after it), in worker order.
    pub(crate) fn resumed(&self) -> Option<&[Millis]> {
        self.resumed.as_deref().filter(|p| !p.is_empty())
    }

    /// The first event time any reader reads: `from`, or, restored, the
    /// earliest position if that is later.
    pub(crate) fn earliest(&self, from: Millis) -> Millis {
        self.resumed()
            .and_then(|p| p.iter().min().copied())
            .map_or(from, |m| m.max(from))
    }

    /// Hands on `ready`, sorted by time, in chunks; nothing handed on later
    /// will be older than `floor_after`. An empty `ready` still moves the
    /// floor. False once the operator is gone (the run is stopping).
    pub(crate) fn send_sorted(
        &self,
        ready: impl IntoIterator<Item = Sample>,
        floor_after: i64,
    ) -> bool {
        let mut ready = ready.into_iter().peekable();
        if ready.peek().is_none() {
            return self.send(Chunk {
                samples: Vec::new(),
                floor: floor_after,
            });
        }
        while ready.peek().is_some() {
            let mut samples = Vec::with_capacity(CHUNK);
            samples.extend(ready.by_ref().take(CHUNK));
            // A chunk ends between two event times, so a checkpoint's
            // position (the next chunk's first time) splits none.
            if let Some(last) = samples.last().map(|s| s.timestamp) {
                while let Some(s) = ready.next_if(|s| s.timestamp == last) {
                    samples.push(s);
                }
            }
            let floor = ready.peek().map_or(floor_after, |s| s.timestamp);
            if !self.send(Chunk { samples, floor }) {
                return false;
            }
        }
        true
    }

    fn send(&self, chunk: Chunk) -> bool {
        let sent = self.tx.send(chunk).is_ok();
        let _ = self.activator.activate();
        sent
    }
}

/// Starts `read` on a thread named `thread` with a current-thread tokio
/// runtime. An error it returns is counted and logged, sets `failed`, and
/// ends the source (the run then ends with errors).
fn spawn<F, Fut>(
    ctx: &SourceContext,
    thread: String,
    activator: SyncActivator,
    resumed: Option<Vec<Millis>>,
    failed: Arc<AtomicBool>,
    read: F,
) -> Receiver<Chunk>
where
    F: FnOnce(Feed) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ComponentError>>,
{
    let (tx, rx) = sync_channel(CHANNEL);
    let (name, stats) = (ctx.name.clone(), Arc::clone(&ctx.stats));
    let wake = activator.clone();
    let failed_to_start = Arc::clone(&failed);
    let feed = Feed {
        tx,
        activator,
        resumed,
    };
    let spawned = std::thread::Builder::new().name(thread).spawn({
        let stats = Arc::clone(&stats);
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(read(feed)),
                Err(e) => Err(ComponentError::io("cannot start the reader's runtime", e)),
            };
            if let Err(error) = result {
                failed.store(true, Ordering::SeqCst);
                add(&stats.errors, 1);
                tracing::error!(error = %error.chain(), source = %name, "Cannot replay; this source stops.");
            }
            let _ = wake.activate();
        }
    });
    if let Err(error) = spawned {
        failed_to_start.store(true, Ordering::SeqCst);
        add(&stats.errors, 1);
        tracing::error!(%error, "Cannot start the replay's reader thread.");
    }
    rx
}

/// The replay operator on a worker: `read` (started on a thread named
/// `thread`) feeds it.
pub(crate) fn replay<'scope, F, Fut>(
    scope: PipelineScope<'scope>,
    ctx: SourceContext,
    thread: String,
    read: F,
) -> SampleStream<'scope>
where
    F: FnOnce(Feed) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ComponentError>>,
{
    source(scope, &ctx.name.clone(), move |capability, info| {
        let activator = scope.activator_for(Rc::clone(&info.address));
        let sync = scope.worker().sync_activator_for(info.address.to_vec());
        let mut capability = capability;
        // Restored: every worker's output starts at the cut, and its
        // reader where the worker that read each file had got to.
        let (resumed, mut refused) =
            match ctx.restore(&mut capability, |parts| positions(&parts).map(Some)) {
                Ok(p) => (p, None),
                Err(why) => (None, Some(why)),
            };
        let failed = Arc::new(AtomicBool::new(false));
        let rx = refused
            .is_none()
            .then(|| spawn(&ctx, thread, sync, resumed, Arc::clone(&failed), read));
        let mut cap = Some(capability);
        let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight)
            .with_gauge(Arc::clone(&ctx.stats));
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let Some(rx) = rx.as_ref() else {
                // The pipeline cannot go on: stop it, writing nothing more.
                let why = refused.take().unwrap_or_default();
                add(&ctx.stats.errors, 1);
                tracing::error!(source = %ctx.name, "{why}");
                ctx.failure
                    .fail(&ctx.name, &ComponentError::permanent(Fault::Config, why));
                ctx.resume.abandon();
                cap = None;
                return;
            };
            if let Some(cut) = &ctx.checkpoint {
                cut.checkpoints().poll(
                    ctx.probe
                        .with_frontier(|f| f.iter().min().copied())
                        .unwrap_or(Time::MAX),
                );
            }
            if ctx.shutdown.is_triggered() {
                // Checkpointed, it stops without draining, as the other
                // sources do: a restart reads on from the checkpoint.
                if ctx.checkpoint.is_some() {
                    ctx.resume.abandon();
                }
                cap = None;
                return;
            }
            for _ in 0..16 {
                if !flow.may_send(*c.time()) {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
                let Chunk { mut samples, floor } = match rx.try_recv() {
                    Ok(chunk) => chunk,
                    Err(TryRecvError::Empty) => {
                        activator.activate_after(Duration::from_millis(100));
                        return;
                    }
                    Err(TryRecvError::Disconnected) => {
                        end(ctx.checkpoint.as_ref(), &ctx, &failed, *c.time());
                        cap = None;
                        return;
                    }
                };
                if let Some(first) = samples.first() {
                    move_to(ctx.checkpoint.as_ref(), c, to_time(first.timestamp));
                    flow.sent(*c.time(), samples.len() as u64);
                    output.session(&*c).give_container(&mut samples);
                }
                // The last floor is "nothing more": the capability is
                // dropped when the reader ends instead, so the frontier
                // empties rather than jumping to the end of time (which
                // an alert rule would evaluate its way towards).
                let floor = to_time(floor);
                if floor < to_time(i64::MAX) {
                    move_to(ctx.checkpoint.as_ref(), c, floor);
                }
                ctx.clock.publish(*c.time());
            }
            activator.activate();
        }
    })
    .container::<Vec<Sample>>()
}

/// Every worker's position, from the parts of a checkpoint in worker order.
fn positions(parts: &[tidemark_engine::checkpoint::Part]) -> Result<Vec<Millis>, String> {
    parts.iter().map(|p| decode::<Millis>(p)).collect()
}

/// Moves the capability up to `to`, recording `to` as this worker's
/// position for every checkpoint it crosses: everything before it has
/// been handed on, nothing at or after it.
fn move_to(cut: Option<&Cut>, c: &mut Capability<Time>, to: Time) {
    if to <= *c.time() {
        return;
    }
    if let Some(cut) = cut {
        let crossed = cut.crossed(*c.time(), to);
        if !crossed.is_empty() {
            let bytes = encode(&Millis::try_from(to).unwrap_or(Millis::MAX));
            for b in crossed {
                cut.write_at(b, bytes.clone());
            }
        }
    }
    c.downgrade(&to);
}

/// The reader has ended. Checkpointed, a replay that read everything has
/// handed on all it will (its position is the end of time in every later
/// checkpoint); one whose reader failed is not (no later checkpoint
/// completes, so a restart reads on from the last one), and its output
/// from here is incomplete.
fn end(cut: Option<&Cut>, ctx: &SourceContext, failed: &AtomicBool, at: Time) {
    let Some(cut) = cut else { return };
    if failed.load(Ordering::SeqCst) {
        ctx.resume.abandon();
    } else {
        cut.finish(at, encode(&Millis::MAX));
    }
}
