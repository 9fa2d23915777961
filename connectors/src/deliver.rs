//! The shared shape of the sinks that deliver records to a receiver over
//! the network one event time at a time (`alertmanager`, `notify`): every
//! record goes to worker 0 (alerts and notifications are few, and one
//! sender keeps their order), whose operator hands each closed time's
//! records to a delivery thread of the sink's own.
//!
//! The thread queues what arrives ([`Deliverer::accept`]) and sends
//! from its queue ([`Deliverer::work`]) with retries of its own, so a
//! receiver that is down or slow holds back neither the pipeline nor
//! other records' times; the `alertmanager` sink also re-sends firing
//! alerts from there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use timely::ExchangeData;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use tokio::sync::mpsc;

use tidemark_engine::component::SinkContext;
use tidemark_engine::runtime::{ProgressBuilder, ProgressStream, SyncActivator, frontier_min};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

use crate::batch::{Handoff, spawn_writer};

/// What a deliverer has left to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// When to call [`Deliverer::work`] again (a retry's backoff, a
    /// re-send); `None`: only when records arrive.
    pub(crate) wait: Option<Duration>,
    /// Records accepted and not yet delivered or given up: while any are
    /// left when the input ends, the sink holds its frontier (a finite run
    /// ends only once they are out).
    pub(crate) undelivered: usize,
}

/// Delivers records on a sink's delivery thread.
pub(crate) trait Deliverer<R>: Send + 'static {
    /// Takes the records of the event time `time` into its queue (fast:
    /// no network).
    fn accept(&mut self, records: Vec<R>, time: Time, stats: &ComponentStats);

    /// Makes the attempts that are due (one per queued record at most),
    /// and says what is left.
    fn work(&mut self, stats: &ComponentStats) -> Work;

    /// Records queued and not yet delivered or given up.
    fn undelivered(&self) -> usize;
}

/// Builds a delivering sink around `make`, which builds the deliverer on
/// its thread (on worker 0 only). The sink's frontier follows its input's
/// as soon as records are queued, so a receiver that is down never holds
/// the pipeline back; when the input ends, it holds until the queue is
/// empty.
pub(crate) fn deliver_sink<'scope, R, D>(
    stream: Stream<'scope, Time, Vec<R>>,
    ctx: SinkContext,
    make: impl FnOnce() -> D + Send + 'static,
) -> ProgressStream<'scope>
where
    R: ExchangeData,
    D: Deliverer<R>,
{
    let scope = stream.scope();
    let name = ctx.name.clone();
    stream
        .unary_frontier::<ProgressBuilder, _, _, _>(
            Exchange::new(|_: &R| 0u64),
            &name,
            move |cap, info| {
                let (tx, rx) = mpsc::channel::<(u64, (Vec<R>, Time))>(16);
                let done = Arc::new(AtomicU64::new(0));
                // Worker 0 counts one undelivered record until its
                // delivery thread's first round says what it holds (what
                // a deliverer restored must go out before a finite run
                // ends); the others deliver nothing.
                let undelivered = Arc::new(AtomicU64::new(u64::from(scope.index() == 0)));
                if scope.index() == 0 {
                    let activator = scope.worker().sync_activator_for(info.address.to_vec());
                    let shared = (
                        Arc::clone(&ctx.stats),
                        Arc::clone(&done),
                        Arc::clone(&undelivered),
                    );
                    spawn_writer(&ctx, 0, move || {
                        delivery_thread(make(), rx, shared, activator)
                    });
                }
                let retry = scope.activator_for(std::rc::Rc::clone(&info.address));
                let mut held = Some(cap);
                let mut stash: BTreeMap<Time, (Capability<Time>, Vec<R>)> = BTreeMap::new();
                let mut handoff: Handoff<(Vec<R>, Time), Capability<Time>> = Handoff::default();
                move |(input, frontier), _output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else {
                            return;
                        };
                        add(&ctx.stats.received, data.len() as u64);
                        stash
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, Vec::new()))
                            .1
                            .append(data);
                    });
                    let f = frontier_min(frontier);
                    let limit = f.unwrap_or(Time::MAX);
                    while let Some(entry) = stash.first_entry() {
                        if *entry.key() >= limit {
                            break;
                        }
                        let (time, (cap, records)) = entry.remove_entry();
                        if ctx.resume.writes(time) && !records.is_empty() {
                            handoff.ready.push_back(((records, time), cap));
                        }
                    }
                    let busy = handoff.pump(&tx, &done, &ctx);
                    match f {
                        Some(f) => {
                            if let Some(h) = held.as_mut()
                                && f > *h.time()
                            {
                                h.downgrade(&f);
                            }
                        }
                        None if !busy && undelivered.load(Ordering::Acquire) == 0 => held = None,
                        None => {}
                    }
                    if busy || (f.is_none() && held.is_some()) {
                        retry.activate_after(Duration::from_millis(100));
                    }
                }
            },
        )
        .container::<Vec<()>>()
}

type Shared = (Arc<ComponentStats>, Arc<AtomicU64>, Arc<AtomicU64>);

fn delivery_thread<R, D: Deliverer<R>>(
    mut deliverer: D,
    mut rx: mpsc::Receiver<(u64, (Vec<R>, Time))>,
    (stats, done, undelivered): Shared,
    activator: SyncActivator,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            add(&stats.errors, 1);
            tracing::error!(%error, "Cannot start a sink's delivery runtime; it holds its input.");
            return;
        }
    };
    runtime.block_on(async move {
        // A first round before anything arrives: what a deliverer
        // restored (a notification log's undelivered entries) goes out
        // without waiting for new records.
        let work = deliverer.work(&stats);
        let mut wait = work.wait;
        undelivered.store(work.undelivered as u64, Ordering::Release);
        loop {
            let next = match wait {
                None => Some(rx.recv().await),
                Some(d) => tokio::time::timeout(d, rx.recv()).await.ok(),
            };
            match next {
                Some(Some((seq, (records, time)))) => {
                    deliverer.accept(records, time, &stats);
                    // Before the operator may release the time: it ends
                    // the run only once nothing is left undelivered.
                    undelivered.store(deliverer.undelivered() as u64, Ordering::Release);
                    done.store(seq, Ordering::Release);
                }
                Some(None) => return,
                None => {}
            }
            let work = deliverer.work(&stats);
            wait = work.wait;
            undelivered.store(work.undelivered as u64, Ordering::Release);
            let _ = activator.activate();
        }
    });
}

/// Replaces the file at `path` with `lines` (one a line) through a synced
/// temporary file renamed over it, then syncs the directory, so that the
/// rename (and what is appended to the new file after) survives a power
/// cut; returns the new file, opened for appending. The files the
/// delivering sinks keep beside a checkpoint are compacted this way.
pub(crate) fn replace_lines(
    path: &std::path::Path,
    lines: impl IntoIterator<Item = String>,
) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    std::fs::OpenOptions::new().append(true).open(path)
}
