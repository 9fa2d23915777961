//! The shared shape of the sinks that write to a networked store
//! (`timescaledb`, `redis`): a timely operator that gathers each worker's
//! samples by series, and a writer thread of its own (a current-thread tokio
//! runtime holding the connection) that writes them in batches.
//!
//! - Once the frontier has passed a time, its samples join the batch being
//!   filled (at most `batch_size` samples; a large time spans several). A
//!   batch goes to the writer as soon as the writer can take it, so batches
//!   grow by themselves while the store is slow and stay small (low latency)
//!   while it keeps up.
//! - The writer writes batches in order and retries a failed one with
//!   exponential backoff (100 ms up to 10 s) until it succeeds, re-connecting
//!   in between, as long as the error says a retry can help
//!   ([`ComponentError::retryable`]). Writes are idempotent, so writing a
//!   batch again is harmless. An error no retry can mend (a refused
//!   password, a value the schema refuses) fails the pipeline with its
//!   cause ([`Failure`]); the batch stays unacknowledged.
//! - The operator holds the capability of every time until the batch holding
//!   its last sample is written: the sink's frontier is its durable frontier.
//!   While the store is down nothing is acknowledged, the frontier stops, and
//!   the sources' flow control stops reading: backpressure, not buffering.
//! - Times the pipeline's [`Resume`](tidemark_engine::component::Resume)
//!   says an earlier run wrote are skipped.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use timely::dataflow::operators::Capability;
use tokio::sync::mpsc::{self, error::TrySendError};

use tidemark_engine::Sample;
use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::ComponentError;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, SyncActivator, by_series, frontier_min,
};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

/// A driver's error before it is classified into a [`ComponentError`].
pub(crate) type WriteError = Box<dyn std::error::Error + Send + Sync>;

/// Writes batches to a store. Runs on the sink's writer thread.
pub(crate) trait BatchWriter: Send + 'static {
    /// Writes one batch (connecting first if needed). The batch holds the
    /// samples of one or more closed times, oldest first; a series and
    /// timestamp may appear more than once (a late correction), and the
    /// last one must win.
    fn write(&mut self, batch: &[Sample]) -> impl Future<Output = Result<(), ComponentError>>;

    /// Forgets the connection after an error, so the next write re-connects
    /// (and re-checks its schema).
    fn reset(&mut self);
}

pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Samples to write together, and the capabilities to release after.
type Chunk<C> = (Vec<Sample>, Vec<C>);

/// Messages on their way to a sink's writer thread, in order, and the
/// capabilities held until the writer has finished the message they went
/// with. The writer stores the sequence number of the last message it
/// finished in `done`.
pub(crate) struct Handoff<M, C> {
    /// Waiting for room in the channel, oldest first.
    pub(crate) ready: VecDeque<(M, C)>,
    held: VecDeque<(u64, C)>,
    seq: u64,
    stopped: bool,
}

impl<M, C> Default for Handoff<M, C> {
    fn default() -> Self {
        Handoff {
            ready: VecDeque::new(),
            held: VecDeque::new(),
            seq: 0,
            stopped: false,
        }
    }
}

impl<M, C> Handoff<M, C> {
    /// Sends what the writer has room for, then drops the capabilities of
    /// what it has finished. True while something still waits or is held
    /// (the caller schedules itself again).
    pub(crate) fn pump(
        &mut self,
        tx: &mpsc::Sender<(u64, M)>,
        done: &AtomicU64,
        ctx: &SinkContext,
    ) -> bool {
        while let Some((message, cap)) = self.ready.pop_front() {
            match tx.try_send((self.seq + 1, message)) {
                Ok(()) => {
                    self.seq += 1;
                    self.held.push_back((self.seq, cap));
                }
                Err(TrySendError::Full((_, message))) => {
                    self.ready.push_front((message, cap));
                    break;
                }
                Err(TrySendError::Closed((_, message))) => {
                    if !self.stopped {
                        self.stopped = true;
                        add(&ctx.stats.errors, 1);
                        tracing::error!(sink = %ctx.name, "The sink's writer thread has stopped; this sink holds its input.");
                    }
                    self.ready.push_front((message, cap));
                    break;
                }
            }
        }
        let written = done.load(Ordering::Acquire);
        while self.held.front().is_some_and(|(s, _)| *s <= written) {
            self.held.pop_front();
        }
        !self.ready.is_empty() || !self.held.is_empty()
    }
}

/// A sink operator's input, gathered by time (with the time's capability)
/// until the frontier has passed it.
#[derive(Default)]
pub(crate) struct ByTime(BTreeMap<Time, (Capability<Time>, Vec<Sample>)>);

impl ByTime {
    /// Adds samples that arrived at `cap`'s time.
    pub(crate) fn add(&mut self, cap: Capability<Time>, data: &mut Vec<Sample>) {
        self.0
            .entry(*cap.time())
            .or_insert_with(|| (cap, Vec::new()))
            .1
            .append(data);
    }

    /// Takes the oldest time if the frontier `f` has passed it.
    pub(crate) fn pop_closed(&mut self, f: Time) -> Option<(Capability<Time>, Vec<Sample>)> {
        let entry = self.0.first_entry()?;
        (*entry.key() < f).then(|| entry.remove())
    }
}

/// Starts a sink's writer thread, named after the sink and the worker. If
/// it cannot start, the error is counted and logged, and the sink holds its
/// input (its frontier stops) rather than dropping it.
pub(crate) fn spawn_writer(ctx: &SinkContext, worker: usize, run: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(format!("tidemark-sink-{}-{worker}", ctx.name))
        .spawn(run);
    if let Err(error) = spawned {
        add(&ctx.stats.errors, 1);
        tracing::error!(%error, sink = %ctx.name, "Cannot start the sink's writer thread; it holds its input.");
    }
}

/// Builds a batching sink on a worker around `make`, which builds the
/// writer on the writer thread.
pub(crate) fn batch_sink<'scope, W: BatchWriter>(
    stream: SampleStream<'scope>,
    ctx: SinkContext,
    batch_size: usize,
    make: impl FnOnce() -> W + Send + 'static,
) -> ProgressStream<'scope> {
    let scope = stream.scope();
    let name = ctx.name.clone();
    let batch_size = batch_size.max(1);
    stream
        .unary_frontier::<ProgressBuilder, _, _, _>(by_series(), &name, move |_cap, info| {
            let (tx, rx) = mpsc::channel::<(u64, Vec<Sample>)>(1);
            let done = Arc::new(AtomicU64::new(0));
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            let (stats, label, written) =
                (Arc::clone(&ctx.stats), ctx.name.clone(), Arc::clone(&done));
            let failure = Arc::clone(&ctx.failure);
            spawn_writer(&ctx, scope.index(), move || {
                writer_thread(make(), rx, written, activator, stats, label, failure)
            });
            let retry = scope.activator_for(std::rc::Rc::clone(&info.address));
            let mut stash = ByTime::default();
            let mut handoff: Handoff<Vec<Sample>, Vec<Capability<Time>>> = Handoff::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    add(&ctx.stats.received, data.len() as u64);
                    stash.add(cap, data);
                });
                let f = frontier_min(frontier).unwrap_or(Time::MAX);
                while let Some((cap, samples)) = stash.pop_closed(f) {
                    if !ctx.resume.writes(*cap.time()) || samples.is_empty() {
                        continue;
                    }
                    append(&mut handoff.ready, samples, cap, batch_size);
                }
                // The writer wakes this operator when it takes or finishes a
                // batch; this is a fallback.
                if handoff.pump(&tx, &done, &ctx) {
                    retry.activate_after(Duration::from_millis(100));
                }
            }
        })
        .container::<Vec<()>>()
}

/// Adds a closed time's samples to the tail of `ready`, in chunks of at most
/// `size`; its capability goes with the chunk holding its last sample.
fn append<C>(ready: &mut VecDeque<Chunk<C>>, mut samples: Vec<Sample>, cap: C, size: usize) {
    if let Some((tail, _)) = ready.back_mut()
        && tail.len() < size
    {
        let take = (size - tail.len()).min(samples.len());
        tail.extend(samples.drain(..take));
    }
    while !samples.is_empty() {
        let rest = if samples.len() > size {
            samples.split_off(size)
        } else {
            Vec::new()
        };
        ready.push_back((samples, Vec::new()));
        samples = rest;
    }
    if let Some((_, caps)) = ready.back_mut() {
        caps.push(cap);
    }
}

fn writer_thread<W: BatchWriter>(
    mut writer: W,
    mut rx: mpsc::Receiver<(u64, Vec<Sample>)>,
    done: Arc<AtomicU64>,
    activator: SyncActivator,
    stats: Arc<ComponentStats>,
    name: String,
    failure: Arc<Failure>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            add(&stats.errors, 1);
            tracing::error!(%error, sink = %name, "Cannot start the sink's runtime; it holds its input.");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some((seq, batch)) = rx.recv().await {
            let _ = activator.activate();
            let mut backoff = FIRST_BACKOFF;
            loop {
                match writer.write(&batch).await {
                    Ok(()) => {
                        add(&stats.sent, batch.len() as u64);
                        done.store(seq, Ordering::Release);
                        let _ = activator.activate();
                        break;
                    }
                    Err(error) if !error.retryable => {
                        add(&stats.errors, 1);
                        tracing::error!(error = %error.chain(), fault = %error.fault, sink = %name, "Cannot write a batch, and retrying cannot help; the pipeline stops.");
                        failure.fail(&name, &error);
                        return;
                    }
                    Err(error) => {
                        writer.reset();
                        let error = error.chain();
                        stats.retried(&error);
                        if rx.is_closed() {
                            add(&stats.errors, 1);
                            tracing::warn!(%error, sink = %name, "Failed to write a batch, and the pipeline has stopped; giving up.");
                            return;
                        }
                        tracing::warn!(%error, sink = %name, retry_in = ?backoff, "Failed to write a batch; retrying.");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::Series;

    fn samples(n: usize) -> Vec<Sample> {
        let s = Series::new("m", [("a", "b")]);
        (0..n)
            .map(|i| Sample::new(s.clone(), i as i64, 0.0))
            .collect()
    }

    #[test]
    fn times_fill_chunks_and_caps_go_with_their_last_sample() {
        let mut ready: VecDeque<Chunk<u64>> = VecDeque::new();
        append(&mut ready, samples(3), 1, 4);
        append(&mut ready, samples(6), 2, 4);
        append(&mut ready, samples(1), 3, 4);
        let shape: Vec<(usize, Vec<u64>)> =
            ready.iter().map(|(s, c)| (s.len(), c.clone())).collect();
        // 3 + 1 of the second time; 4 more; the last of it and the third.
        assert_eq!(shape, vec![(4, vec![1]), (4, vec![]), (2, vec![2, 3])]);
    }
}
