//! What the replay sources share (`parquet`, `timescaledb`): a reader on a
//! thread of its own reads a store in event-time order and hands the
//! operator sorted chunks, each with a floor under everything it will hand
//! on later; the operator gives each chunk at the time of its first sample
//! and then moves its capability to the floor, so windows downstream close
//! as the replay goes.
//!
//! The reader runs an async store client on a current-thread tokio runtime;
//! the channel between the two holds a few chunks, so a reader never runs
//! far ahead of the dataflow, and the operator's flow control holds the
//! reader back while the dataflow is behind.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;

use tidemark_engine::Sample;
use tidemark_engine::component::{Shutdown, SourceContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::flow::FlowControl;
use tidemark_engine::runtime::{PipelineScope, SampleStream, SyncActivator, source};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::to_time;

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
}

impl Feed {
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
/// runtime. An error it returns is counted and logged, and ends the
/// source (the run then ends with errors).
fn spawn<F, Fut>(
    ctx: &SourceContext,
    thread: String,
    activator: SyncActivator,
    read: F,
) -> Receiver<Chunk>
where
    F: FnOnce(Feed) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ComponentError>>,
{
    let (tx, rx) = sync_channel(CHANNEL);
    let (name, stats) = (ctx.name.clone(), Arc::clone(&ctx.stats));
    let wake = activator.clone();
    let feed = Feed { tx, activator };
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
                add(&stats.errors, 1);
                tracing::error!(error = %error.chain(), source = %name, "Cannot replay; this source stops.");
            }
            let _ = wake.activate();
        }
    });
    if let Err(error) = spawned {
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
        let rx = spawn(&ctx, thread, sync, read);
        let mut cap = Some(capability);
        let mut flow = FlowControl::new(ctx.probe.clone(), ctx.holdback, ctx.max_in_flight)
            .with_gauge(Arc::clone(&ctx.stats));
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if ctx.shutdown.is_triggered() {
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
                        cap = None;
                        return;
                    }
                };
                if let Some(first) = samples.first() {
                    let at = to_time(first.timestamp);
                    if at > *c.time() {
                        c.downgrade(&at);
                    }
                    flow.sent(*c.time(), samples.len() as u64);
                    output.session(&*c).give_container(&mut samples);
                }
                // The last floor is "nothing more": the capability is
                // dropped when the reader ends instead, so the frontier
                // empties rather than jumping to the end of time (which
                // an alert rule would evaluate its way towards).
                let floor = to_time(floor);
                if floor > *c.time() && floor < to_time(i64::MAX) {
                    c.downgrade(&floor);
                }
                ctx.clock.publish(*c.time());
            }
            activator.activate();
        }
    })
    .container::<Vec<Sample>>()
}
