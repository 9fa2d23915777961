//! Components as objects: what every source, transform and sink answers
//! about itself, so that the pipeline compiler asks each question through
//! one trait instead of a `match` over component types.
//!
//! A component's user-facing config (a serde struct with
//! `deny_unknown_fields`) implements [`Validate`], a pure step that checks
//! every field and returns the validated component. The validated component
//! implements [`SourceSpec`], [`TransformSpec`] or [`SinkSpec`]. Every
//! property the compiler needs is a required method with no default, so a
//! new component that forgets one (a transform that delays its output but
//! says nothing of its reach, say) does not compile.
//!
//! ```
//! use std::sync::Arc;
//! use tidemark_engine::component::{ConfigError, Reach};
//! use tidemark_engine::spec::{AnyStream, Port, StreamKind, TransformContext, TransformSpec, Validate};
//! use tidemark_engine::checkpoint::Checkpointed;
//! use tidemark_engine::time::Time;
//!
//! /// `type: pass`: passes samples on unchanged.
//! #[derive(Clone, Debug)]
//! struct Pass;
//!
//! impl Validate<dyn TransformSpec> for Pass {
//!     fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
//!         Ok(Arc::new(self.clone()))
//!     }
//! }
//!
//! impl TransformSpec for Pass {
//!     fn takes(&self) -> &'static [StreamKind] { &[StreamKind::Samples] }
//!     fn outputs(&self) -> Vec<Port> { vec![Port::default_output(StreamKind::Samples)] }
//!     fn holdback(&self) -> Time { 0 }
//!     fn reach(&self) -> Reach { Some(0) }
//!     fn needs_raw_input(&self) -> bool { false }
//!     fn derives_values(&self) -> bool { false }
//!     fn touches(&self) -> Vec<tidemark_engine::spec::Resource> { Vec::new() }
//!     fn checkpointed(&self) -> Checkpointed { Checkpointed::Stateless }
//!     fn build<'s>(&self, input: AnyStream<'s>, _: TransformContext) -> Vec<AnyStream<'s>> {
//!         vec![input]
//!     }
//! }
//! assert_eq!(Pass.validated().unwrap().outputs()[0].kind, StreamKind::Samples);
//! ```

use std::fmt;
use std::sync::Arc;

pub use crate::checkpoint::Checkpointed;
use crate::component::{ConfigError, Reach, SinkContext, SourceContext};
use crate::runtime::{
    AlertStream, IncidentStream, NotificationStream, PipelineScope, ProgressStream, SampleStream,
};
use crate::stats::PipelineStats;
use crate::time::Time;

/// What a stream carries. Every port of every component declares one, and
/// the compiler rejects a connection between ports of different kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamKind {
    /// Samples (series, timestamp, value): what sources read and windows
    /// emit.
    Samples,
    /// Alert state changes (labels, annotations, `startsAt`, `endsAt`,
    /// value): what an `alert` transform's `alerts` output gives and
    /// notifiers take.
    Alerts,
    /// Incidents (opened, updated, merged, resolved; members and an
    /// explanation): what a `correlate` transform's `incidents` output
    /// gives.
    Incidents,
    /// Notifications (one flush of an alert group to a receiver): what a
    /// `route` transform gives and the `notify` sink delivers.
    Notifications,
}

impl StreamKind {
    /// The word used in messages (`samples`, `alerts`, `incidents`).
    pub fn word(self) -> &'static str {
        match self {
            StreamKind::Samples => "samples",
            StreamKind::Alerts => "alerts",
            StreamKind::Incidents => "incidents",
            StreamKind::Notifications => "notifications",
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A built stream of some kind.
#[derive(Clone)]
pub enum AnyStream<'scope> {
    /// A stream of sample batches.
    Samples(SampleStream<'scope>),
    /// A stream of alert state changes.
    Alerts(AlertStream<'scope>),
    /// A stream of incident changes.
    Incidents(IncidentStream<'scope>),
    /// A stream of notifications.
    Notifications(NotificationStream<'scope>),
}

impl<'scope> AnyStream<'scope> {
    /// What the stream carries.
    pub fn kind(&self) -> StreamKind {
        match self {
            AnyStream::Samples(_) => StreamKind::Samples,
            AnyStream::Alerts(_) => StreamKind::Alerts,
            AnyStream::Incidents(_) => StreamKind::Incidents,
            AnyStream::Notifications(_) => StreamKind::Notifications,
        }
    }

    /// The sample stream inside. The compiler connects only ports of the
    /// same kind, so a component that takes samples is never given
    /// anything else; asking a stream of another kind for samples is a
    /// bug in the compiler, and says so.
    pub fn into_samples(self) -> SampleStream<'scope> {
        match self {
            AnyStream::Samples(s) => s,
            other => other.mismatch(StreamKind::Samples),
        }
    }

    /// The alert stream inside (see [`Self::into_samples`]).
    pub fn into_alerts(self) -> AlertStream<'scope> {
        match self {
            AnyStream::Alerts(s) => s,
            other => other.mismatch(StreamKind::Alerts),
        }
    }

    /// The incident stream inside (see [`Self::into_samples`]).
    pub fn into_incidents(self) -> IncidentStream<'scope> {
        match self {
            AnyStream::Incidents(s) => s,
            other => other.mismatch(StreamKind::Incidents),
        }
    }

    /// The notification stream inside (see [`Self::into_samples`]).
    pub fn into_notifications(self) -> NotificationStream<'scope> {
        match self {
            AnyStream::Notifications(s) => s,
            other => other.mismatch(StreamKind::Notifications),
        }
    }

    fn mismatch(&self, wanted: StreamKind) -> ! {
        panic!(
            "bug: a stream of {} was given where {wanted} were expected",
            self.kind()
        )
    }
}

/// One output of a transform. A transform's first output is its default
/// one, read by naming the transform (`inputs: [rules]`); the others are
/// read as `name.port` (`inputs: [rules.alerts]`), as in Vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// The port's name; empty for the default output.
    pub name: &'static str,
    /// What it carries.
    pub kind: StreamKind,
}

impl Port {
    /// The default output, carrying `kind`.
    pub const fn default_output(kind: StreamKind) -> Port {
        Port { name: "", kind }
    }

    /// A named output.
    pub const fn named(name: &'static str, kind: StreamKind) -> Port {
        Port { name, kind }
    }
}

/// Something outside the process that a source or sink uses, and the
/// field of its config that says so (for located errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Path of the field inside the component (`["path"]`,
    /// `["options", "ssl.key.location"]`).
    pub field: Vec<String>,
    /// What it uses.
    pub kind: ResourceKind,
}

impl Resource {
    /// A resource named by one field.
    pub fn new(field: &str, kind: ResourceKind) -> Resource {
        Resource {
            field: vec![field.to_owned()],
            kind,
        }
    }
}

/// What a [`Resource`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// Reads this file.
    ReadFile(std::path::PathBuf),
    /// Writes this file, or files in this directory.
    WriteFile(std::path::PathBuf, WriteMode),
    /// Connects to this host and port.
    Connect {
        /// A name or an IP address, as the config gives it.
        host: String,
        /// The port.
        port: u16,
    },
    /// Reads this environment variable (a secret, usually).
    Env(String),
    /// Runs a program or loads a library that the config names
    /// (librdkafka's `plugin.library.paths`, say); what it is.
    Exec(String),
    /// Holds up to this many records in memory (a queue or buffer size the
    /// config chooses).
    Queue(usize),
    /// Holds up to this many MiB in memory (a `memory` sink's `max_mb`).
    Memory(u64),
}

/// How a [`ResourceKind::WriteFile`] treats what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// The default: an existing file is replaced (truncated) when the
    /// pipeline starts; the config did not say.
    Truncate,
    /// Replaces an existing file, as the config says explicitly.
    Replace,
    /// Appends to an existing file.
    Append,
    /// Adds new files to a directory, never rewriting one.
    NewFiles,
}

/// The pure validation step of a component's config: checks every field
/// without I/O and returns the validated component (`S` is `dyn
/// SourceSpec`, `dyn TransformSpec` or `dyn SinkSpec`). `tidemark validate`
/// runs only this.
pub trait Validate<S: ?Sized> {
    /// Checks every field; reports every problem at once.
    fn validated(&self) -> Result<Arc<S>, Vec<ConfigError>>;
}

/// A validated source.
pub trait SourceSpec: fmt::Debug + Send + Sync {
    /// What it emits.
    fn emits(&self) -> StreamKind;
    /// Whether it ends on its own (a run then ends when every source has).
    fn is_finite(&self) -> bool;
    /// Whether only `tidemark serve`'s listeners can feed it.
    fn needs_ingest(&self) -> bool;
    /// What outside the process it reads, connects to or holds (files,
    /// hosts, environment variables, queues): `tidemark serve` checks each
    /// against its access policy and quotas before installing a pipeline.
    fn touches(&self) -> Vec<Resource>;
    /// Whether it records its position in checkpoints (see
    /// [`crate::checkpoint`]); a pipeline is checkpointed only if every
    /// source and transform can be.
    fn checkpointed(&self) -> Checkpointed;
    /// What the position it records in checkpoints depends on: a restore
    /// gives the position back while this is unchanged, though other
    /// settings changed (by default the whole configuration, as `Debug`
    /// prints it).
    fn identity(&self) -> String {
        format!("{self:?}")
    }
    /// Builds it on a worker.
    fn build<'scope>(&self, scope: PipelineScope<'scope>, ctx: SourceContext) -> AnyStream<'scope>;
}

/// What a transform is given when it is built on a worker.
pub struct TransformContext {
    /// The component's name.
    pub name: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Where `alert` transforms show their groups' state (the server's
    /// rules and alerts APIs read it).
    pub rules: Arc<crate::rules::RulesHub>,
    /// The process's silences (`route` transforms apply them).
    pub silences: Arc<crate::silence::SilenceHub>,
    /// Where `correlate` transforms show their incidents (the server's
    /// incidents API reads it).
    pub incidents: Arc<crate::incident::IncidentBoard>,
    /// The pipeline's counters in this process (a transform may register
    /// parts of itself, such as a window's `match` step).
    pub stats: Arc<PipelineStats>,
    /// Where it cuts its state for checkpoints, and what was restored
    /// (only for a transform whose state is [`Checkpointed::Kept`], in a
    /// checkpointed pipeline).
    pub checkpoint: Option<crate::checkpoint::Cut>,
    /// Where its later stages cut theirs, in the order of
    /// [`TransformSpec::later_stages`] (empty when not checkpointed).
    pub later: Vec<crate::checkpoint::Cut>,
    /// Processes the pipeline runs on (1 in one process).
    pub processes: usize,
}

/// A validated transform.
pub trait TransformSpec: fmt::Debug + Send + Sync {
    /// What its checkpointed state depends on: a restore carries the
    /// state over into a changed configuration while this is unchanged
    /// (by default the whole configuration, as `Debug` prints it, so any
    /// change starts it empty).
    fn identity(&self) -> String {
        format!("{self:?}")
    }
    /// What its inputs may carry (every input the same kind): most
    /// transforms take one kind; `correlate` takes `ALERTS` samples or an
    /// alert stream.
    fn takes(&self) -> &'static [StreamKind];
    /// Its outputs, the default one first.
    fn outputs(&self) -> Vec<Port>;
    /// How far it holds output back behind its input frontier (a window's
    /// lateness plus one, an alert's `for`): flow control lets sources run
    /// this far ahead.
    fn holdback(&self) -> Time;
    /// How far past a record's event time its outputs can be stamped (a
    /// window's size); `None` when there is no bound (sessions). Kafka
    /// offsets are committed only once the sinks have passed this.
    fn reach(&self) -> Reach;
    /// Whether its input must be raw samples as they came in (`rate` and
    /// `increase` need counters, not window results).
    fn needs_raw_input(&self) -> bool;
    /// Whether its output values are derived (window results) rather than
    /// its input passed on.
    fn derives_values(&self) -> bool;
    /// What outside the process it reads (an `alert` transform's rule
    /// files); `tidemark serve` checks each like a source's (see
    /// [`SourceSpec::touches`]).
    fn touches(&self) -> Vec<Resource>;
    /// Whether its state is written to checkpoints and restored (see
    /// [`crate::checkpoint`]).
    fn checkpointed(&self) -> Checkpointed;
    /// Operators of a kept transform that cut their state later than its
    /// input does (behind a holdback inside it), each its name (the
    /// checkpoint member `{transform}/{name}`) and how far behind the
    /// transform's input it is. None by default.
    fn later_stages(&self) -> Vec<(&'static str, Time)> {
        Vec::new()
    }
    /// Builds it on a worker: one stream for each of [`Self::outputs`], in
    /// that order.
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>>;
}

/// A validated sink.
pub trait SinkSpec: fmt::Debug + Send + Sync {
    /// What its inputs may carry (the `file` sink takes every kind; the
    /// others one).
    fn takes(&self) -> &'static [StreamKind];
    /// How far it holds output back before it is durable (a Parquet
    /// epoch): flow control lets sources run this far ahead of it.
    fn holdback(&self) -> Time;
    /// Whether it serves live subscribers at `/ws` (the server lists it).
    fn serves_live(&self) -> bool;
    /// What outside the process it writes, connects to or holds (see
    /// [`SourceSpec::touches`]).
    fn touches(&self) -> Vec<Resource>;
    /// Builds it on a worker; the returned stream's frontier is the
    /// sink's durable frontier.
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope>;
}
