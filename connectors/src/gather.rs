//! The shared shape of the `file` and `console` sinks: gather every record
//! (samples, or alerts, incidents and notifications for the `file` sink) on
//! worker 0, keep them per timely time (holding a capability, so the
//! pipeline is not done before they are written), and once the frontier has
//! passed a time, write its records in a canonical order ([`Record::order`]:
//! samples by series, then timestamp). Output is therefore the same for any
//! number of workers.
//!
//! A time's capability is released only once its samples are written and
//! flushed, so the sink's frontier is its durable frontier; times the
//! pipeline's [`Resume`] says were written by an earlier run are skipped.
//! A failed write or flush releases nothing: the writer undoes what it
//! wrote partly ([`Writer::reset`]), and the times are written again after
//! a backoff (100 ms to 10 s) while the error may heal (a full disk); an
//! error that cannot heal (a path below a regular file, a pipe whose reader
//! left) fails the pipeline with its cause ([`Failure`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::operators::Capability;

use timely::dataflow::channels::pact::Exchange;

use tidemark_engine::Sample;
use tidemark_engine::alert::Alert;
use tidemark_engine::component::{Failure, Resume, SinkContext};
use tidemark_engine::error::ComponentError;
use tidemark_engine::incident::Incident;
use tidemark_engine::notify::Notification;
use tidemark_engine::runtime::{Operator, ProgressBuilder, ProgressStream, Stream, frontier_min};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

use crate::batch::{FIRST_BACKOFF, MAX_BACKOFF};

/// A record a gathering sink writes: how a time's records are ordered.
pub(crate) trait Record:
    Clone + Send + serde::Serialize + for<'de> serde::Deserialize<'de> + 'static
{
    /// The canonical order within a time.
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering;
}

impl Record for Sample {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.series
            .cmp(&b.series)
            .then(a.timestamp.cmp(&b.timestamp))
            .then(a.value.total_cmp(&b.value))
    }
}

impl Record for Alert {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        (a.at, &a.labels, a.state.word()).cmp(&(b.at, &b.labels, b.state.word()))
    }
}

impl Record for Incident {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        (a.at, &a.id).cmp(&(b.at, &b.id))
    }
}

impl Record for Notification {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        (a.at, &a.receiver, &a.group_key).cmp(&(b.at, &b.receiver, &b.group_key))
    }
}

/// Writes one time's sorted records.
pub(crate) trait Writer<R>: 'static {
    /// Writes (or buffers) a time's records.
    fn write(&mut self, records: &[R]) -> Result<(), ComponentError>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), ComponentError>;
    /// After a failure: forgets what was written since the last flush that
    /// succeeded, so those times can be written again whole.
    fn reset(&mut self);
}

/// What the sink is given besides its writer.
pub(crate) struct Gather {
    pub(crate) name: String,
    pub(crate) stats: Arc<ComponentStats>,
    pub(crate) resume: Arc<Resume>,
    pub(crate) failure: Arc<Failure>,
}

/// A time's capability and records.
type Held<R> = (Capability<Time>, Vec<R>);

type Stash<R> = BTreeMap<Time, Held<R>>;

impl From<SinkContext> for Gather {
    fn from(ctx: SinkContext) -> Gather {
        Gather {
            name: ctx.name,
            stats: ctx.stats,
            resume: ctx.resume,
            failure: ctx.failure,
        }
    }
}

pub(crate) fn gather_sink<'scope, R: Record>(
    stream: Stream<'scope, Time, Vec<R>>,
    sink: Gather,
    mut writer: impl Writer<R>,
) -> ProgressStream<'scope> {
    let scope = stream.scope();
    let name = sink.name.clone();
    stream
        .unary_frontier::<ProgressBuilder, _, _, _>(Exchange::new(|_: &R| 0), &name, move |_cap, info| {
            let retry = scope.activator_for(std::rc::Rc::clone(&info.address));
            let mut stash: Stash<R> = BTreeMap::new();
            let mut backoff = FIRST_BACKOFF;
            let mut next_try: Option<Instant> = None;
            let mut failed = false;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else { return };
                    add(&sink.stats.received, data.len() as u64);
                    let time = *cap.time();
                    stash.entry(time).or_insert_with(|| (cap, Vec::new())).1.append(data);
                });
                // Failed: the pipeline stops; nothing more is written or
                // released. Backing off: input waits in the stash.
                if failed || next_try.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                let f = frontier_min(frontier).unwrap_or(Time::MAX);
                match write_closed(&mut stash, f, &sink, &mut writer) {
                    Ok(()) => {
                        backoff = FIRST_BACKOFF;
                        next_try = None;
                    }
                    Err(error) if error.retryable => {
                        sink.stats.retried(&error.chain());
                        tracing::warn!(error = %error.chain(), sink = %sink.name, retry_in = ?backoff, "Failed to write; writing it again later.");
                        retry.activate_after(backoff);
                        next_try = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(error) => {
                        add(&sink.stats.errors, 1);
                        tracing::error!(error = %error.chain(), fault = %error.fault, sink = %sink.name, "Cannot write, and retrying cannot help; the pipeline stops.");
                        sink.failure.fail(&sink.name, &error);
                        failed = true;
                    }
                }
            }
        })
        .container::<Vec<()>>()
}

/// Writes every stashed time below `f` and flushes; the capabilities of the
/// times written go only once the flush succeeded. On an error, everything
/// not flushed stays stashed and the writer is reset.
fn write_closed<R: Record>(
    stash: &mut Stash<R>,
    f: Time,
    sink: &Gather,
    writer: &mut impl Writer<R>,
) -> Result<(), ComponentError> {
    let mut written: Vec<(Time, Held<R>)> = Vec::new();
    let mut result = Ok(());
    while let Some(entry) = stash.first_entry() {
        if *entry.key() >= f {
            break;
        }
        let (time, (cap, mut batch)) = entry.remove_entry();
        if !sink.resume.writes(time) {
            continue;
        }
        batch.sort_by(R::order);
        result = writer.write(&batch);
        written.push((time, (cap, batch)));
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() && !written.is_empty() {
        result = writer.flush();
    }
    match result {
        Ok(()) => {
            for (_, (_, batch)) in &written {
                add(&sink.stats.sent, batch.len() as u64);
            }
            Ok(())
        }
        Err(error) => {
            writer.reset();
            stash.extend(written);
            Err(error)
        }
    }
}
