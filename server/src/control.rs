//! The control plane: pipelines applied to a running process reach every
//! worker of every process in the same order, as timely requires.
//!
//! A request is validated where it arrives, then becomes a [`Command`] that
//! this process's first worker pushes into a timely `Sequencer`; every
//! worker of every process reads the same sequence and installs or stops
//! dataflows accordingly. [`Control`] is the process's shared view: one
//! entry per pipeline with its counters and state, read by the HTTP API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tidemark_engine::checkpoint::{CheckpointOptions, Checkpoints, Installation, Store};
use tidemark_engine::component::{Failure, Resume, Shutdown, SourceClock, StdoutWriter};
use tidemark_engine::ingest::IngestHub;
use tidemark_engine::live::LiveHub;
use tidemark_engine::runtime::Worker;
use tidemark_engine::stats::{PipelineStats, Totals};
use tidemark_engine::time::{Millis, Time, now_millis};
use tidemark_engine::validate::{EdgeCheck, SeriesCache};
use timely::synchronization::Sequencer;

use tidemark_pipelines::build::{Built, Env, build};
use tidemark_pipelines::compile;
use tidemark_pipelines::plan::Plan;

/// A command every worker applies, in one order everywhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Install (or replace) a pipeline.
    Apply {
        /// Pipeline name.
        name: String,
        /// Its YAML, already validated.
        yaml: String,
        /// Unique id: (process, counter).
        id: (usize, u64),
        /// The tenant that owns it (`None`: an admin's, or the server's
        /// pipelines directory's).
        owner: Option<String>,
        /// This installation's id in checkpoints, the same in every
        /// process (the applying process's clock, in ns).
        installation: u64,
    },
    /// Stop a pipeline: its sources end, windows flush, then it is dropped.
    Delete {
        /// Pipeline name.
        name: String,
    },
    /// Stop every pipeline and then the workers, in every process: a timely
    /// cluster stops as a whole.
    Shutdown,
    /// A process's counters, so that every process can report the cluster.
    Report {
        /// The reporting process.
        process: usize,
        /// Totals per pipeline (name, id, totals).
        pipelines: Report,
    },
}

/// A process's counters: (pipeline, id, totals).
pub type Report = Vec<(String, (usize, u64), Totals)>;

/// A pipeline's state in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet installed on every local worker.
    Starting,
    /// Running.
    Running,
    /// Its sources ended and everything was written.
    Finished,
    /// Stopping: sources ended early, windows flushing.
    Stopping,
    /// Stopped by a failure that cannot heal (see `error`).
    Failed,
}

impl State {
    /// Every state, for `/metrics`.
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Running,
        State::Finished,
        State::Stopping,
        State::Failed,
    ];
}

struct Entry {
    yaml: String,
    owner: Option<String>,
    id: (usize, u64),
    stats: Arc<PipelineStats>,
    shutdown: Shutdown,
    clock: Arc<SourceClock>,
    resume: Arc<Resume>,
    failure: Arc<Failure>,
    checkpoints: Option<Arc<Checkpoints>>,
    installed: usize,
    finished: usize,
    applied_at: Millis,
    /// Earlier applies of the name that this one replaced (the last few),
    /// so that their requests are answered too.
    replaced: Vec<(usize, u64)>,
}

/// How long a worker may spend in one step before `/readyz` calls it
/// stalled.
pub const STALLED: Duration = Duration::from_secs(10);

/// How many replaced applies an entry remembers.
const REMEMBERED: usize = 64;

/// A pipeline's status as the API reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Name.
    pub name: String,
    /// The tenant that owns it, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// State in this process.
    pub state: State,
    /// When it was applied (ms since the epoch).
    pub applied_at: Millis,
    /// Records read by sources in this process.
    pub samples_in: u64,
    /// Records written by sinks in this process.
    pub samples_out: u64,
    /// Rejected at the edge.
    pub rejected: u64,
    /// Dropped as late.
    pub late: u64,
    /// Late samples applied as corrections.
    pub corrections: u64,
    /// Results of partial windows (emitted, marked or dropped as each
    /// window's `partial` says).
    pub partial_windows: u64,
    /// The watermark (ms since the epoch), if its sources still run.
    pub watermark: Option<Time>,
    /// Watermark lag behind the wall clock, in seconds.
    pub watermark_lag_seconds: Option<f64>,
    /// Per component: received, sent, errors and drops by reason.
    pub components: Vec<ComponentStatus>,
    /// Totals over every process of the cluster (each other process as of
    /// its last report, at most about a second old).
    pub cluster: ClusterTotals,
    /// Why it failed, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its checkpoints of operator state, when it is checkpointed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointStatus>,
    /// The pipeline as applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
}

/// What a checkpointed pipeline started from and has written.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointStatus {
    /// The cut (ms of event time) of the checkpoint it started from.
    pub restored_from: Option<Time>,
    /// Components whose state came back from it.
    pub restored: Vec<String>,
    /// Those of them whose configuration changed in ways their state does
    /// not depend on (a window's new aggregate its accumulators already
    /// keep, a Kafka source's topics): their state was carried over.
    pub migrated: Vec<String>,
    /// Components that started empty (new, or changed in what their state
    /// depends on).
    pub fresh: Vec<String>,
    /// The cut of its newest complete checkpoint.
    pub newest: Option<Time>,
}

/// A pipeline's totals over the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterTotals {
    /// Processes counted (this one included).
    pub processes: usize,
    /// Sum of samples read.
    pub samples_in: u64,
    /// Sum of samples written.
    pub samples_out: u64,
    /// Sum of rejected samples.
    pub rejected: u64,
    /// Sum of late samples.
    pub late: u64,
    /// The lowest watermark.
    pub watermark: Option<Time>,
}

/// One component's counters.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    /// Name.
    pub name: String,
    /// `source`, `transform` or `sink`.
    pub role: &'static str,
    /// Records in.
    pub received: u64,
    /// Records out.
    pub sent: u64,
    /// Errors with external systems.
    pub errors: u64,
    /// Writes made again after a failure.
    pub retries: u64,
    /// The error the last retry followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Queue depth (sources): records sent and not yet through the pipeline.
    pub in_flight: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

/// This process's control plane.
pub struct Control {
    /// This process's index.
    pub process: usize,
    /// Worker threads in this process.
    pub workers: usize,
    entries: Mutex<BTreeMap<String, Entry>>,
    tx: Mutex<Sender<Command>>,
    rx: Mutex<Option<Receiver<Command>>>,
    next_id: AtomicU64,
    /// Stop request for the whole process.
    pub shutdown: Shutdown,
    /// Set once every local worker runs.
    pub ready: AtomicBool,
    started: AtomicU64,
    /// Processes in the cluster.
    pub processes: usize,
    reports: Mutex<BTreeMap<usize, Report>>,
    stdout: StdoutWriter,
    max_in_flight: u64,
    /// The hub between the listeners and network sources.
    pub ingest: Arc<IngestHub>,
    /// Live subscriptions to `websocket` sinks, served at `/ws`.
    pub live: Arc<LiveHub>,
    /// The rule groups of this process's `alert` transforms.
    pub rules: Arc<tidemark_engine::rules::RulesHub>,
    /// Silences (the silence API writes them, `route` transforms apply
    /// them).
    pub silences: Arc<tidemark_engine::silence::SilenceHub>,
    /// Recent deliveries of `notify` sinks (the dashboard shows them).
    pub notifications: Arc<tidemark_engine::notify::Recent>,
    /// The incidents of `correlate` transforms (the incidents API).
    pub incidents: Arc<tidemark_engine::incident::IncidentBoard>,
    /// Recent history of `memory` sinks (the query API reads it).
    pub history: Arc<tidemark_engine::history::Histories>,
    /// Slots for queries evaluated at once (see [`crate::query`]).
    pub(crate) query_slots: tokio::sync::Semaphore,
    /// The applied pipelines on disk (`--data-dir`, first process only).
    store: Option<crate::store::PipelineStore>,
    /// The silences on disk (`--data-dir`).
    silence_store: Option<crate::store::SilenceStore>,
    /// The listeners' edge checks: label limits, how far from this
    /// server's clock a received timestamp may be, and the series already
    /// validated, found again by their labels.
    pub edge: EdgeCheck,
    /// Counters of the network listeners (received, rejected by reason).
    pub listeners: Arc<PipelineStats>,
    /// Every HTTP request's gate: tokens, origins, refusals.
    pub gate: Arc<crate::gate::Gate>,
    /// Quotas per tenant.
    pub quotas: crate::quota::Quotas,
    /// What pipelines applied over the API may touch.
    pub access: tidemark_pipelines::access::Access,
    /// Memory, in KiB, that requests being decoded may hold together.
    pub(crate) decode_budget: tokio::sync::Semaphore,
    pub(crate) decode_budget_kib: u64,
    /// When each local worker last went round its loop (ms since the
    /// epoch): a worker stuck in one operator (a sink blocked on a full
    /// pipe) stops updating it, and `/readyz` says so.
    heartbeats: Box<[AtomicU64]>,
    /// The position in the command sequence of the last apply or delete
    /// of each name, as the first local worker to get there saw it.
    positions: Mutex<BTreeMap<String, u64>>,
    /// Where and how operator state is checkpointed (`--data-dir`; in a
    /// cluster only to a `--checkpoint-store` every process sees).
    checkpoints: Option<(Store, CheckpointOptions)>,
    /// Where pipelines keep state of their own (`--data-dir`: its
    /// `state` directory, one directory per pipeline).
    state_dir: Option<PathBuf>,
}

impl Control {
    /// A control plane for this process's workers, as `options` say.
    pub fn new(
        options: &crate::ServeOptions,
        stdout: StdoutWriter,
        store: Option<crate::store::PipelineStore>,
        silence_store: Option<crate::store::SilenceStore>,
        wal: Option<Arc<tidemark_engine::wal::Wal>>,
    ) -> Arc<Control> {
        let cluster = &options.cluster;
        let (process, processes, workers) = (cluster.process, cluster.processes(), cluster.workers);
        let decode_budget_kib = options
            .max_decode_mb
            .saturating_mul(1024)
            .clamp(1, u64::from(u32::MAX) / 2);
        let (tx, rx) = channel();
        Arc::new(Control {
            process,
            workers,
            entries: Mutex::default(),
            tx: Mutex::new(tx),
            rx: Mutex::new(Some(rx)),
            next_id: AtomicU64::new(0),
            shutdown: Shutdown::default(),
            ready: AtomicBool::new(false),
            started: AtomicU64::new(0),
            processes,
            reports: Mutex::default(),
            stdout,
            max_in_flight: options.max_in_flight,
            ingest: Arc::new(match wal {
                Some(wal) => IngestHub::with_wal(wal, workers),
                None => IngestHub::default(),
            }),
            live: Arc::default(),
            rules: Arc::default(),
            silences: Arc::default(),
            incidents: Arc::default(),
            notifications: Arc::default(),
            history: Arc::default(),
            query_slots: tokio::sync::Semaphore::new(crate::query::CONCURRENT),
            store,
            silence_store,
            edge: EdgeCheck {
                limits: options.limits.clone(),
                bounds: options.time_bounds,
                series: SeriesCache::default(),
            },
            listeners: PipelineStats::new("listeners", 1),
            gate: Arc::new(crate::gate::Gate::new(
                options.auth.clone(),
                options.allowed_origins.clone(),
            )),
            quotas: crate::quota::Quotas::new(&options.quotas),
            access: options.access.clone(),
            decode_budget: tokio::sync::Semaphore::new(decode_budget_kib as usize),
            decode_budget_kib,
            positions: Mutex::default(),
            checkpoints: match (
                &options.data_dir,
                options.checkpoints,
                &options.checkpoint_store,
            ) {
                (Some(_), Some(c), Some(store)) => Some((store.clone(), c)),
                (Some(dir), Some(c), None) if processes == 1 => {
                    Some((Store::dir(dir.join("checkpoints")), c))
                }
                (Some(_), Some(_), None) => {
                    tracing::warn!(
                        "Operator state is not checkpointed: in a cluster checkpoints need a store every process sees (--checkpoint-store s3://bucket/prefix, or a directory they share). A restart recomputes state from the sources."
                    );
                    None
                }
                _ => None,
            },
            heartbeats: (0..workers)
                .map(|_| AtomicU64::new(now_millis() as u64))
                .collect(),
            state_dir: options.data_dir.as_ref().map(|dir| dir.join("state")),
        })
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, command: Command) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(command);
    }

    /// Writes the silences to the data directory, if there is one, off the
    /// async threads; a failure is logged (the silence is in force, but a
    /// restart would lose it).
    pub async fn save_silences(self: &Arc<Self>) {
        if self.silence_store.is_none() {
            return;
        }
        let control = Arc::clone(self);
        let saved = tokio::task::spawn_blocking(move || match &control.silence_store {
            Some(store) => store.save(&control.silences),
            None => Ok(()),
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "Cannot save the silences to the data directory: they are in force, but a restart would lose the latest change.")
            }
            Err(error) => tracing::error!(%error, "Saving the silences failed."),
        }
    }

    /// Submits a validated pipeline; returns the id to wait for.
    pub fn apply(&self, name: &str, yaml: &str, owner: Option<&str>) -> (usize, u64) {
        let id = (self.process, self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send(Command::Apply {
            name: name.to_owned(),
            yaml: yaml.to_owned(),
            id,
            owner: owner.map(str::to_owned),
            installation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        });
        id
    }

    /// The owner of a pipeline: `None` if there is no such pipeline,
    /// `Some(None)` if no tenant owns it.
    pub fn owner(&self, name: &str) -> Option<Option<String>> {
        self.entries().get(name).map(|e| e.owner.clone())
    }

    /// How many pipelines `owner` runs (for its quota).
    pub fn owned_by(&self, owner: Option<&str>) -> usize {
        self.entries()
            .values()
            .filter(|e| e.owner.as_deref() == owner)
            .count()
    }

    /// The names of a pipeline's `websocket` sinks; `None` if there is no
    /// such pipeline.
    pub fn websocket_outputs(&self, name: &str) -> Option<Vec<String>> {
        let yaml = self.entries().get(name)?.yaml.clone();
        let plan = compile(name, &yaml).ok()?;
        Some(
            plan.websocket_sinks()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Submits a delete; false if there is no such pipeline here.
    pub fn delete(&self, name: &str) -> bool {
        if !self.entries().contains_key(name) {
            return false;
        }
        self.send(Command::Delete {
            name: name.to_owned(),
        });
        true
    }

    /// Counts samples a listener rejected, by reason.
    pub fn count_rejects(
        &self,
        listener: &str,
        counts: &[(tidemark_engine::stats::DropReason, u64)],
    ) {
        let stats = self
            .listeners
            .component(listener, tidemark_engine::stats::Role::Source);
        for (reason, n) in counts {
            stats.dropped(*reason, *n);
        }
    }

    /// Counts samples a listener accepted.
    pub fn count_accepted(&self, listener: &str, n: u64) {
        let stats = self
            .listeners
            .component(listener, tidemark_engine::stats::Role::Source);
        tidemark_engine::stats::add(&stats.received, n);
    }

    /// Asks the whole cluster to stop: this process stops accepting requests
    /// at once, and every worker of every process stops once it sees the
    /// sequenced command (pipelines drain first).
    pub fn request_shutdown(&self) {
        self.shutdown.trigger();
        self.send(Command::Shutdown);
    }

    /// The local workers that have not gone round their loop for `STALLED`
    /// or longer, with how long (seconds).
    pub fn stalled_workers(&self) -> Vec<(usize, u64)> {
        let now = now_millis() as u64;
        self.heartbeats
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let age = now.saturating_sub(h.load(Ordering::Relaxed));
                (age >= STALLED.as_millis() as u64).then_some((i, age / 1000))
            })
            .collect()
    }

    /// Whether pipeline `name` with `id` is installed on every local worker.
    pub fn is_installed(&self, name: &str, id: (usize, u64)) -> bool {
        self.entries().get(name).is_some_and(|e| {
            (e.id == id || e.replaced.contains(&id)) && e.installed >= self.workers
        })
    }

    /// Whether an apply of `name` (the one that returned `id`) is over:
    /// installed on every local worker, or failed. No entry yet is the
    /// command not taken yet, not a pipeline gone: at start, which is what
    /// waits for this, nothing deletes one (a compile that fails on the
    /// worker leaves the wait to its timeout).
    pub fn is_settled(&self, name: &str, id: (usize, u64)) -> bool {
        self.entries().get(name).is_some_and(|e| {
            (e.id == id || e.replaced.contains(&id))
                && (e.installed >= self.workers || e.failure.get().is_some())
        })
    }

    /// Whether `name` is gone from this process.
    pub fn is_gone(&self, name: &str) -> bool {
        !self.entries().contains_key(name)
    }

    /// Waits (polling) until `check` holds or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&Control) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check(self)
    }

    fn status_of(&self, name: &str, e: &Entry, with_yaml: bool) -> Status {
        let t: Totals = e.stats.totals();
        let state = if e.failure.get().is_some() {
            State::Failed
        } else if e.installed < self.workers {
            State::Starting
        } else if e.finished >= self.workers {
            State::Finished
        } else if e.shutdown.is_triggered() {
            State::Stopping
        } else {
            State::Running
        };
        let components = e
            .stats
            .components()
            .into_iter()
            .map(|(name, r, s)| ComponentStatus {
                name,
                role: r.as_str(),
                received: s.received.load(Ordering::Relaxed),
                sent: s.sent.load(Ordering::Relaxed),
                errors: s.errors.load(Ordering::Relaxed),
                retries: s.retries.load(Ordering::Relaxed),
                last_error: s.last_error(),
                in_flight: s.in_flight.load(Ordering::Relaxed),
                dropped: s
                    .drop_counts()
                    .into_iter()
                    .map(|(r, n)| (r.as_str(), n))
                    .collect(),
            })
            .collect();
        Status {
            name: name.to_owned(),
            tenant: e.owner.clone(),
            state,
            applied_at: e.applied_at,
            samples_in: t.samples_in,
            samples_out: t.samples_out,
            rejected: t.rejected,
            late: t.late,
            corrections: t.corrections,
            partial_windows: t.partial_windows,
            watermark: t.watermark,
            watermark_lag_seconds: t
                .watermark
                .map(|w| (now_millis() - w as Millis) as f64 / 1000.0),
            cluster: self.cluster_totals(name, e.id, &t),
            components,
            error: e.failure.get().map(str::to_owned),
            checkpoints: e.checkpoints.as_ref().map(|c| {
                let (restored_from, fresh, migrated) = match c.restored() {
                    Some(r) => (Some(r.at), r.fresh.clone(), r.migrated.clone()),
                    None => (None, c.members(), Vec::new()),
                };
                CheckpointStatus {
                    restored_from,
                    restored: c
                        .members()
                        .into_iter()
                        .filter(|m| !fresh.contains(m))
                        .collect(),
                    migrated,
                    fresh,
                    newest: c.newest(),
                }
            }),
            yaml: with_yaml.then(|| tidemark_pipelines::access::redact(&e.yaml)),
        }
    }

    fn cluster_totals(&self, name: &str, id: (usize, u64), own: &Totals) -> ClusterTotals {
        let mut sum = own.clone();
        let mut processes = 1;
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        for (process, pipelines) in reports.iter() {
            if *process == self.process {
                continue;
            }
            if let Some((_, _, t)) = pipelines.iter().find(|(n, i, _)| n == name && *i == id) {
                sum.merge(t);
                processes += 1;
            }
        }
        ClusterTotals {
            processes,
            samples_in: sum.samples_in,
            samples_out: sum.samples_out,
            rejected: sum.rejected,
            late: sum.late,
            watermark: sum.watermark,
        }
    }

    fn report(&self) -> Command {
        let pipelines = self
            .entries()
            .iter()
            .map(|(n, e)| (n.clone(), e.id, e.stats.totals()))
            .collect();
        Command::Report {
            process: self.process,
            pipelines,
        }
    }

    /// Every pipeline's status.
    pub fn list(&self) -> Vec<Status> {
        self.entries()
            .iter()
            .map(|(n, e)| self.status_of(n, e, false))
            .collect()
    }

    /// One pipeline's status, with its YAML.
    pub fn get(&self, name: &str) -> Option<Status> {
        self.entries()
            .get(name)
            .map(|e| self.status_of(name, e, true))
    }

    /// Every pipeline's counters, for `/metrics`.
    pub fn stats(&self) -> Vec<(String, State, Arc<PipelineStats>)> {
        self.list()
            .into_iter()
            .filter_map(|s| {
                self.entries()
                    .get(&s.name)
                    .map(|e| (s.name.clone(), s.state, Arc::clone(&e.stats)))
            })
            .collect()
    }

    /// The shared parts of a pipeline for a worker installing `id`, the
    /// command at `position` of the sequence: the first local worker to
    /// get there replaces (and stops) an older entry of the same name. A
    /// worker that lags behind another, and gets to an apply that a later
    /// command already replaced or deleted, must still build its dataflow
    /// (timely needs every worker to build the same dataflows in the same
    /// order), but gets parts of its own, already stopped, and leaves the
    /// newer entry alone.
    fn entry_for(
        &self,
        plan: &Plan,
        yaml: &str,
        owner: Option<&str>,
        id: (usize, u64),
        position: u64,
        installation: u64,
    ) -> Env {
        let name = plan.name.as_str();
        let mut entries = self.entries();
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let newest = positions.get(name).copied();
        if newest.is_some_and(|p| p > position) {
            let shutdown = Shutdown::default();
            shutdown.trigger();
            return Env {
                stats: PipelineStats::new(name, self.workers),
                shutdown,
                stdout: Arc::clone(&self.stdout),
                max_in_flight: self.max_in_flight,
                clock: Arc::default(),
                resume: Arc::default(),
                ingest: Some(Arc::clone(&self.ingest)),
                live: Arc::clone(&self.live),
                rules: Arc::clone(&self.rules),
                silences: Arc::clone(&self.silences),
                incidents: Arc::clone(&self.incidents),
                notifications: Arc::clone(&self.notifications),
                history: Arc::clone(&self.history),
                failure: Arc::default(),
                tenant: owner.map(str::to_owned),
                checkpoints: None,
                state_dir: None,
                processes: self.processes,
            };
        }
        if newest != Some(position) {
            positions.insert(name.to_owned(), position);
            let mut replaced = Vec::new();
            if let Some(old) = entries.get(name) {
                old.shutdown.trigger();
                // In a cluster every process must restore the same
                // checkpoint: none of the old version's may complete
                // after one process has looked for the newest.
                if self.processes > 1
                    && let Some(c) = &old.checkpoints
                {
                    c.hand_over();
                }
                replaced = old.replaced.clone();
                replaced.push(old.id);
                if replaced.len() > REMEMBERED {
                    replaced.remove(0);
                }
            }
            entries.insert(
                name.to_owned(),
                Entry {
                    yaml: yaml.to_owned(),
                    owner: owner.map(str::to_owned),
                    id,
                    stats: PipelineStats::new(name, self.workers),
                    shutdown: Shutdown::default(),
                    clock: Arc::default(),
                    resume: Arc::default(),
                    failure: Arc::default(),
                    checkpoints: self.open_checkpoints(plan, installation),
                    installed: 0,
                    finished: 0,
                    applied_at: now_millis(),
                    replaced,
                },
            );
        }
        let e = entries
            .get(name)
            .unwrap_or_else(|| unreachable!("inserted above"));
        Env {
            stats: Arc::clone(&e.stats),
            shutdown: e.shutdown.clone(),
            stdout: Arc::clone(&self.stdout),
            max_in_flight: self.max_in_flight,
            clock: Arc::clone(&e.clock),
            resume: Arc::clone(&e.resume),
            ingest: Some(Arc::clone(&self.ingest)),
            live: Arc::clone(&self.live),
            rules: Arc::clone(&self.rules),
            silences: Arc::clone(&self.silences),
            incidents: Arc::clone(&self.incidents),
            notifications: Arc::clone(&self.notifications),
            history: Arc::clone(&self.history),
            failure: Arc::clone(&e.failure),
            tenant: e.owner.clone(),
            checkpoints: e.checkpoints.clone(),
            state_dir: self.state_dir.as_ref().map(|dir| dir.join(name)),
            processes: self.processes,
        }
    }

    /// The checkpoints of a new installation of `plan`, restoring from the
    /// newest intact one, if the pipeline can be checkpointed.
    fn open_checkpoints(&self, plan: &Plan, installation: u64) -> Option<Arc<Checkpoints>> {
        let (store, options) = self.checkpoints.as_ref()?;
        let members = match plan.checkpoint_members() {
            Ok(m) if !m.is_empty() => m,
            Ok(_) => return None,
            Err(why) => {
                tracing::info!(pipeline = %plan.name, "Not checkpointed: {why}; a restart recomputes its state from the write-ahead log.");
                return None;
            }
        };
        let installation = Installation {
            process: self.process,
            processes: self.processes,
            workers: self.workers,
            id: Some(installation),
            per_process: !plan.network_sources().is_empty(),
        };
        match Checkpoints::open_as(store, &plan.name, installation, members, *options) {
            Ok(c) => {
                if let Some(r) = c.restored() {
                    tracing::info!(pipeline = %plan.name, checkpoint = r.at, workers_then = r.workers, migrated = ?r.migrated, fresh = ?r.fresh, "State restored from a checkpoint.");
                }
                Some(c)
            }
            Err(error) => {
                tracing::error!(pipeline = %plan.name, store = %store.describe(), %error, "Cannot open the pipeline's checkpoints; it runs without them.");
                None
            }
        }
    }

    /// Deletes a deleted pipeline's checkpoints.
    fn forget_checkpoints(&self, name: &str) {
        if let Some((store, _)) = &self.checkpoints
            && let Err(error) = store.remove(name, None)
        {
            tracing::error!(pipeline = %name, store = %store.describe(), %error, "Cannot delete the deleted pipeline's checkpoints.");
        }
    }

    fn update(&self, name: &str, id: (usize, u64), f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.entries().get_mut(name).filter(|e| e.id == id) {
            f(e);
        }
    }

    /// Deletes `name`, the command at `position` of the sequence.
    fn stop(&self, name: &str, position: u64) {
        let mut entries = self.entries();
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), position);
        if let Some(e) = entries.remove(name) {
            e.shutdown.trigger();
            // A deleted pipeline's checkpoints are deleted: nothing more
            // is written while it drains.
            if let Some(c) = &e.checkpoints {
                c.close();
            }
        }
    }

    fn stop_all(&self) {
        for e in self.entries().values() {
            e.shutdown.trigger();
        }
    }
}

/// A pipeline's dataflow on one worker.
struct Installed {
    dataflow: usize,
    id: (usize, u64),
    name: String,
    stats: Arc<PipelineStats>,
    finished: bool,
    built: Built,
}

/// The loop every worker of `tidemark serve` runs until the process stops.
pub fn worker_loop(worker: &mut Worker, control: &Control) {
    let local = worker.index() % control.workers;
    let leader = local == 0;
    let rx = if leader {
        control.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    } else {
        None
    };
    let timer = worker.timer().unwrap_or_else(Instant::now);
    let mut sequencer: Sequencer<Command> = Sequencer::new(worker, timer);
    let mut running: BTreeMap<String, Installed> = BTreeMap::new();
    let mut draining: Vec<Installed> = Vec::new();
    let mut stopping = false;
    let mut last_report = Instant::now();
    let mut position: u64 = 0;
    if control.started.fetch_add(1, Ordering::SeqCst) + 1 == control.workers as u64 {
        control.ready.store(true, Ordering::SeqCst);
    }
    loop {
        control.heartbeats[local].store(now_millis() as u64, Ordering::Relaxed);
        if let Some(rx) = &rx {
            while let Ok(command) = rx.try_recv() {
                sequencer.push(command);
            }
            // In a cluster, share this process's counters once a second.
            if control.processes > 1 && last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                sequencer.push(control.report());
            }
        }
        for command in sequencer.by_ref() {
            // Every worker reads the same sequence, so positions agree.
            position += 1;
            match command {
                Command::Apply {
                    name,
                    yaml,
                    id,
                    owner,
                    installation,
                } => {
                    let plan = match compile(&name, &yaml) {
                        Ok(p) => p,
                        Err(errors) => {
                            tracing::error!(pipeline = %name, errors = errors.len(), "A sequenced pipeline does not compile here; skipped.");
                            continue;
                        }
                    };
                    if worker.index() == 0
                        && let Some(store) = &control.store
                        && let Err(error) = store.put(&name, &yaml, owner.as_deref())
                    {
                        tracing::error!(pipeline = %name, %error, "Cannot record the applied pipeline in the data directory: it runs, but a restart will not bring it back.");
                    }
                    if let Some(old) = running.remove(&name) {
                        draining.push(old);
                    }
                    // Worker 0 holds the websocket outputs: subscribers of
                    // the replaced pipeline are closed. Its archives are
                    // registered again by the sinks the new one builds.
                    if worker.index() == 0 {
                        control.live.remove_pipeline(&name);
                        control.history.forget_archives(&name);
                    }
                    let env = control.entry_for(
                        &plan,
                        &yaml,
                        owner.as_deref(),
                        id,
                        position,
                        installation,
                    );
                    let stats = Arc::clone(&env.stats);
                    let dataflow = worker.next_dataflow_index();
                    let built = build(worker, &plan, &env);
                    if leader {
                        tracing::info!(pipeline = %name, process = control.process, "Pipeline installed.");
                    }
                    running.insert(
                        name.clone(),
                        Installed {
                            dataflow,
                            id,
                            name: name.clone(),
                            stats,
                            finished: false,
                            built,
                        },
                    );
                    control.update(&name, id, |e| e.installed += 1);
                }
                Command::Report { process, pipelines } => {
                    if leader {
                        control
                            .reports
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(process, pipelines);
                    }
                }
                Command::Shutdown => {
                    stopping = true;
                    control.shutdown.trigger();
                    control.stop_all();
                }
                Command::Delete { name } => {
                    if let Some(old) = running.remove(&name) {
                        draining.push(old);
                    }
                    control.stop(&name, position);
                    if worker.index() == 0
                        && let Some(store) = &control.store
                        && let Err(error) = store.remove(&name)
                    {
                        tracing::error!(pipeline = %name, %error, "Cannot record the deletion in the data directory: a restart will bring the pipeline back.");
                    }
                    if leader
                        && let Some(logged) = control.ingest.wal()
                        && let Err(error) = logged.wal.forget(&name)
                    {
                        tracing::error!(pipeline = %name, %error, "Cannot forget the deleted pipeline's positions in the write-ahead log: its records are kept until it is applied and deleted again.");
                    }
                    if worker.index() == 0 {
                        control.live.remove_pipeline(&name);
                        control.history.remove_pipeline(&name);
                        control.forget_checkpoints(&name);
                    }
                    if leader {
                        tracing::info!(pipeline = %name, "Pipeline stopping.");
                    }
                }
            }
        }
        // A failed pipeline stops here with what it holds (nothing of it
        // was acknowledged); its entry reports the failure.
        running.retain(|name, p| {
            let Some(error) = p.built.failure.get() else {
                return true;
            };
            if leader {
                tracing::error!(pipeline = %name, %error, "Pipeline failed; stopped.");
            }
            control.update(name, p.id, |e| e.shutdown.trigger());
            worker.drop_dataflow(p.dataflow);
            false
        });
        for p in running.values_mut() {
            let w = p.built.sources.with_frontier(|f| f.iter().min().copied());
            p.stats.set_watermark(local, w);
            p.built.poll_checkpoints();
            if !p.finished && p.built.sinks.done() {
                p.finished = true;
                control.update(&p.name, p.id, |e| e.finished += 1);
            }
        }
        draining.retain(|p| {
            if p.built.over() {
                worker.drop_dataflow(p.dataflow);
                false
            } else {
                true
            }
        });
        // Leave only once the sequenced shutdown arrived, so that every
        // process leaves: a timely cluster finishes together.
        if stopping {
            control.stop_all();
            if running.values().all(|p| p.built.over()) && draining.is_empty() {
                break;
            }
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}
