//! What sources and sinks are given when they are built on a worker, and the
//! error a component's `validate` step reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::dataflow::ProbeHandle;

use crate::stats::ComponentStats;
use crate::time::Time;
use crate::validate::Limits;

/// A problem with one field of a component's configuration, found without
/// I/O. `field` is the path inside the component (`["window", "tumbling"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field inside the component; empty for the whole component.
    pub field: Vec<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl ConfigError {
    /// An error about a field.
    pub fn field(field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: vec![field.to_owned()],
            message: message.into(),
        }
    }
}

/// Set once when the process is asked to stop (Ctrl-C, SIGTERM).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Asks sources to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether stopping was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The largest watermark any source of a pipeline has reached in this
/// process. A source that has been idle for its `idle_timeout` advances its
/// own watermark to this, so that it does not hold windows back while other
/// sources make progress (samples it reads later may then be late).
///
/// It also keeps when the pipeline started in this process, so that every
/// worker's instance of a source means the same by `now`.
#[derive(Debug, Default)]
pub struct SourceClock {
    max: std::sync::atomic::AtomicU64,
    started: std::sync::OnceLock<crate::time::Millis>,
}

impl SourceClock {
    /// Records a source's watermark.
    pub fn publish(&self, watermark: Time) {
        self.max.fetch_max(watermark, Ordering::Relaxed);
    }

    /// The largest watermark published.
    pub fn max(&self) -> Time {
        self.max.load(Ordering::Relaxed)
    }

    /// The wall clock (ms) when a source of the pipeline first asked, in
    /// this process: the same for every worker.
    pub fn started(&self) -> crate::time::Millis {
        *self.started.get_or_init(crate::time::now_millis)
    }
}

/// What a source that resumes from committed positions (Kafka) tells the
/// pipeline's sinks in this process.
///
/// - `from`: outputs at timely times below it were made durable by an
///   earlier run, and some of the input behind them is not read again, so
///   sinks skip them (they would be incomplete);
/// - `abandoned`: the sources stopped without draining (shutdown); windows
///   that close now hold only part of their input, so sinks write nothing
///   more. The input behind them was not acknowledged and is read again on
///   restart.
///
/// Sources set both before they release their capabilities, so no sink can
/// see an output they apply to first.
#[derive(Debug, Default)]
pub struct Resume {
    from: std::sync::atomic::AtomicU64,
    abandoned: AtomicBool,
}

impl Resume {
    /// Raises the resume frontier to `time`.
    pub fn resume_from(&self, time: Time) {
        self.from.fetch_max(time, Ordering::SeqCst);
    }

    /// Marks the pipeline's output from here on as incomplete.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
    }

    /// Whether a sink should write output at `time`.
    pub fn writes(&self, time: Time) -> bool {
        time >= self.from.load(Ordering::SeqCst) && !self.abandoned.load(Ordering::SeqCst)
    }
}

/// The first failure of a pipeline that cannot heal (a write that can
/// never succeed): the pipeline stops, `tidemark run` exits with it and
/// `tidemark serve` reports the pipeline as failed with it. Kept once;
/// later failures are only logged by whoever hit them.
#[derive(Debug, Default)]
pub struct Failure(std::sync::OnceLock<String>);

impl Failure {
    /// Records that `component` failed with `error`; only the first counts.
    pub fn fail(&self, component: &str, error: &crate::error::ComponentError) {
        let _ = self.0.set(format!(
            "{component}: {} ({} error, not retried)",
            error.chain(),
            error.fault
        ));
    }

    /// The failure, if there was one.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// How far a source's records can reach downstream, in timely time: a
/// record that entered at `t` with event time `e` can affect sink output at
/// times up to `max(t, e + reach)` (each window on the way stamps its
/// results with a window end at most its size after the sample). `None`: no
/// bound (session windows), so such input is never acknowledged early.
pub type Reach = Option<Time>;

/// Everything a source needs on a worker.
pub struct SourceContext {
    /// The component's name.
    pub name: String,
    /// Its counters.
    pub stats: Arc<ComponentStats>,
    /// Sees the end of the pipeline, for flow control.
    pub probe: ProbeHandle<Time>,
    /// How far windows downstream hold output back (see [`crate::flow`]).
    pub holdback: Time,
    /// Records a worker may have in flight.
    pub max_in_flight: u64,
    /// Stop request.
    pub shutdown: Shutdown,
    /// Edge limits.
    pub limits: Limits,
    /// The pipeline's source clock in this process.
    pub clock: Arc<SourceClock>,
    /// The pipeline's name.
    pub pipeline: String,
    /// The process's ingest hub, in `tidemark serve` (network sources need it).
    pub ingest: Option<Arc<crate::ingest::IngestHub>>,
    /// How far its records reach downstream (see [`Reach`]).
    pub reach: Reach,
    /// Shared with the pipeline's sinks in this process.
    pub resume: Arc<Resume>,
    /// The tenant that owns the pipeline, if one does: its network sources
    /// then receive only that tenant's samples.
    pub tenant: Option<String>,
    /// Where it records its position for checkpoints (in a checkpointed
    /// pipeline; see [`crate::checkpoint`]).
    pub checkpoint: Option<crate::checkpoint::Cut>,
    /// The pipeline's failure: a source that can never go on (the file a
    /// checkpoint was cut in changed) stops the pipeline with it.
    pub failure: Arc<Failure>,
}

impl SourceContext {
    /// Where a checkpointed source starts when its pipeline was restored:
    /// its output at the checkpoint's cut, on every worker, and its
    /// position as `decode` reads it from the parts the checkpoint holds
    /// (every worker takes them, so that they are let go). `Ok(None)`: not
    /// restored, or a source an update added, which starts from the
    /// beginning. `Err`: the position does not decode, and the source must
    /// stop the pipeline with this explanation.
    pub fn restore<P, E: std::fmt::Display>(
        &self,
        capability: &mut timely::dataflow::operators::Capability<Time>,
        decode: impl FnOnce(Vec<crate::checkpoint::Part>) -> Result<Option<P>, E>,
    ) -> Result<Option<P>, String> {
        let Some(cut) = &self.checkpoint else {
            return Ok(None);
        };
        let Some(at) = cut.restored_at() else {
            return Ok(None);
        };
        self.resume.resume_from(at);
        crate::runtime::raise(capability, at);
        match cut.restored().map(decode).transpose() {
            Ok(position) => Ok(position.flatten()),
            Err(error) => Err(format!(
                "Its position in the checkpoint does not decode ({error}); it cannot go on where the checkpoint left it."
            )),
        }
    }
}

/// Writes a line to the process's standard output, coordinating with any
/// progress display.
pub type StdoutWriter = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Everything a sink needs on a worker.
pub struct SinkContext {
    /// The component's name.
    pub name: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The streams it reads, as its `inputs` name them.
    pub inputs: Vec<String>,
    /// Its counters.
    pub stats: Arc<ComponentStats>,
    /// Standard output.
    pub stdout: StdoutWriter,
    /// Which outputs to skip (see [`Resume`]).
    pub resume: Arc<Resume>,
    /// The process's live subscriptions (the `websocket` sink).
    pub live: Arc<crate::live::LiveHub>,
    /// The process's recent notification deliveries (the `notify` sink
    /// records, the dashboard shows).
    pub notifications: Arc<crate::notify::Recent>,
    /// The process's recent history for the query API (the `memory`
    /// sink).
    pub history: Arc<crate::history::Histories>,
    /// This worker's index.
    pub worker: usize,
    /// Set when a write can never succeed: the pipeline stops with it.
    pub failure: Arc<Failure>,
    /// Where the pipeline keeps state of its own on local disk
    /// (`tidemark serve --data-dir`: `<data-dir>/state/<pipeline>`);
    /// `None` when there is no data directory.
    pub state_dir: Option<std::path::PathBuf>,
    /// Whether the pipeline resumed from a checkpoint that restored the
    /// components this sink reads (none of them started empty): what the
    /// sink kept in `state_dir` beside that checkpoint then agrees with
    /// its input.
    pub inputs_restored: bool,
}
