//! Checkpoints of operator state (`tidemark serve --data-dir`).
//!
//! **Cuts.** A checkpoint is cut at a point `B` of timely time (the
//! watermark): sources record their position where their output first
//! reaches `B` (everything before it entered at times below `B`), and an
//! operator whose input is `offset` behind the sources (the holdback of
//! the operators before it) writes its state once its input frontier
//! reaches `B - offset`, before applying anything at or after it; input
//! that arrives early waits (`Cut::holds`). Cuts are taken only at
//! multiples of [`STEP`], and only at those the first component to reach
//! one *decides* to (the first one, then once `interval` of wall-clock
//! time has passed since the last; every one while a source's log is more
//! than half full): every component of the process asks the same
//! [`Checkpoints`], so all agree without talking to each other.
//!
//! **Complete.** A checkpoint is complete when every part (each kept
//! component on each worker) is written and synced, and the sinks' durable
//! frontier has passed `B`: after a restore, sinks skip output below `B`,
//! which was durable, and everything at or after it is recomputed from the
//! restored state and the input after the sources' positions. Its manifest
//! (the parts with their sizes and CRC-32s, and each component's
//! configuration fingerprint) is then written through a synced temporary
//! file; older checkpoints beyond `keep` are deleted.
//!
//! **Restore.** At start the newest checkpoint whose manifest and parts
//! read back intact is used (a damaged one is reported and the one before
//! it tried). A component whose configuration changed, or that is new,
//! starts empty at the checkpoint; the others get their state back. State
//! is written per key (series or group id), and a restored operator reads
//! it through the same exchange as its input, so a restore at another
//! number of workers gives each key to its new owner.
//!
//! **Clusters.** In a cluster of several processes every process keeps its
//! own `Checkpoints` over one store that all of them see (a bucket, or a
//! shared directory), and none talks to another: a cut is a checkpoint
//! when it is a multiple of the interval in event time (so every process
//! decides the same cuts), each process writes its parts and then a
//! process file (`PROCESS.<p>.json`, its parts' list) once its sinks are
//! durable past the cut (the probe's frontier is the whole cluster's),
//! and whichever process finds every process file there merges them into
//! `MANIFEST.json`. The others see that manifest appear. A restore reads
//! the merged manifest, whose parts are named by global worker index, so a
//! cluster restores at another number of processes or workers as one
//! process does.
//!
//! Files: `DIR/checkpoints/<pipeline>/<B:020>-<nonce>/`, one file per part
//! (`<component index>.<worker>`) and `MANIFEST.json`. The nonce tells
//! apart the installations of a pipeline (a replaced one may still be
//! draining while the new one starts); in a cluster it comes with the
//! sequenced command that installed it, so every process writes into the
//! same directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use bincode::Options as _;
use serde::{Deserialize, Serialize};

use timely::dataflow::channels::pact::Exchange;

use crate::runtime::{PipelineScope, Stream, source};
use crate::time::Time;

mod store;

pub use store::{Listed, MANIFEST, Store};

/// The step of timely time (ms) at whose multiples checkpoints are cut.
pub const STEP: Time = 1_000;

/// How long a checkpoint under way holds the next one back.
const STALE: Duration = Duration::from_secs(60);

/// How often a process of a cluster looks for the other processes' files
/// of a checkpoint it has written its own of.
const MERGE_POLL: Duration = Duration::from_millis(200);

/// How many checkpoints a process of a cluster has under way at most.
const UNDER_WAY: usize = 4;

/// How checkpoints are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// Wall-clock time between checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept (the newest; at least 1).
    pub keep: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            interval: Duration::from_secs(10),
            keep: 2,
        }
    }
}

/// An installation of a pipeline in this process, as its checkpoints see
/// it: this process of how many, with how many workers each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installation {
    /// This process's index in its cluster.
    pub process: usize,
    /// Processes in the cluster (1: no cluster).
    pub processes: usize,
    /// Workers of this process (every process has as many).
    pub workers: usize,
    /// Its id, the same in every process (in a cluster: the sequenced
    /// command's); `None` picks one from the clock.
    pub id: Option<u64>,
    /// Its state is tied to the processes (network sources read each
    /// process's own write-ahead log): a checkpoint written by another
    /// number of processes is not restored.
    pub per_process: bool,
}

impl Installation {
    /// One process of `workers` workers.
    pub fn single(workers: usize) -> Installation {
        Installation {
            process: 0,
            processes: 1,
            workers,
            id: None,
            per_process: false,
        }
    }
}

/// What a component keeps in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpointed {
    /// Nothing to keep (`filter`, `labels`, sinks).
    Stateless,
    /// Its state (a source: its position) is written at every checkpoint
    /// and restored.
    Kept,
    /// Not supported yet: a pipeline with it is not checkpointed.
    NotYet,
}

/// The fingerprint of a component's configuration (its validated spec,
/// as `Debug` prints it): XXH3 of the text.
pub fn fingerprint(config: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(config.as_bytes())
}

/// A component whose state is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name in the pipeline.
    pub name: String,
    /// A hash of its configuration: state is restored as it is into the
    /// same.
    pub fingerprint: u64,
    /// A hash of what its state depends on (`SourceSpec::identity`,
    /// `TransformSpec::identity`): state is carried over into a changed
    /// configuration with the same identity (migrated: a window that gained
    /// an aggregate its accumulators already keep, a Kafka source that
    /// reads another topic too).
    pub identity: u64,
    /// How far its input is behind the sources (the holdback before it).
    pub offset: Time,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartInfo {
    component: String,
    worker: usize,
    file: String,
    bytes: u64,
    crc32: u32,
}

fn one() -> usize {
    1
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    pipeline: String,
    at: Time,
    /// Workers of every process.
    workers: usize,
    /// Processes that wrote it (each with `workers / processes` workers).
    #[serde(default = "one")]
    processes: usize,
    /// Component name to fingerprint (hex).
    components: BTreeMap<String, String>,
    /// Component name to identity (hex; absent in checkpoints written
    /// before identities: only unchanged components are restored from
    /// those).
    #[serde(default)]
    identities: BTreeMap<String, String>,
    parts: Vec<PartInfo>,
}

/// A checkpoint read back at start.
#[derive(Debug)]
pub struct Restored {
    /// Its cut.
    pub at: Time,
    /// Workers of the run that wrote it (of all its processes).
    pub workers: usize,
    /// Processes of the run that wrote it.
    pub processes: usize,
    /// Restored components' parts, in the order of the workers that wrote
    /// them, with how many of this run's instances have taken them.
    parts: Mutex<HashMap<String, (Vec<Part>, usize)>>,
    /// Kept components whose state starts empty: new, or changed in what
    /// their state depends on.
    pub fresh: Vec<String>,
    /// Restored components whose configuration changed in ways their state
    /// does not depend on: their state is carried over.
    pub migrated: Vec<String>,
}

impl Restored {
    /// The parts of `component`, if its state was restored; once each of
    /// `takers` instances has taken them, they are let go.
    pub fn take(&self, component: &str, takers: usize) -> Option<Vec<Part>> {
        let mut parts = lock(&self.parts);
        let (p, taken) = parts.get_mut(component)?;
        *taken += 1;
        let out = p.clone();
        if *taken >= takers {
            parts.remove(component);
        }
        Some(out)
    }

    /// Whether `component`'s state was restored (and not all taken yet).
    pub fn has(&self, component: &str) -> bool {
        lock(&self.parts).contains_key(component)
    }
}

struct State {
    /// Every multiple of [`STEP`] up to it is decided.
    decided: Time,
    /// The decided cuts that are checkpoints.
    yes: BTreeSet<Time>,
    /// In a cluster: those not sealed here yet, with when they were
    /// decided.
    under_way: BTreeMap<Time, Instant>,
    /// When the last checkpoint was decided (`None`: none yet, the first
    /// cut is one).
    last_yes: Option<Instant>,
    /// Every cut is a checkpoint while set (the log is filling up).
    hurry: bool,
    /// Parts written, per checkpoint.
    written: BTreeMap<Time, Vec<PartInfo>>,
    /// Checkpoints that can no longer complete (a write failed).
    failed: BTreeSet<Time>,
    /// Complete checkpoints kept, oldest first.
    complete: Vec<Time>,
    /// Every cut up to it was abandoned (see [`Checkpoints::abandon`]).
    abandoned: Option<Time>,
    /// The newest checkpoint whose manifest was handed to the writer.
    sealed: Time,
    /// The pipeline was deleted: nothing more is written.
    closed: bool,
    /// Source instances whose output is complete: their part of every
    /// checkpoint cut after it.
    finished: Vec<Finished>,
}

/// A source instance that emits nothing more (see [`Cut::finish`]).
struct Finished {
    component: usize,
    worker: usize,
    /// Its output is complete after this time.
    after: Time,
    bytes: Vec<u8>,
}

/// A process's share of a checkpoint in a cluster: its parts.
#[derive(Debug, Serialize, Deserialize)]
struct ProcessFile {
    process: usize,
    parts: Vec<PartInfo>,
}

/// The name of process `p`'s file in a checkpoint of a cluster.
fn process_file(p: usize) -> String {
    format!("PROCESS.{p}.json")
}

enum Job {
    Part {
        at: Time,
        component: usize,
        worker: usize,
        bytes: Vec<u8>,
    },
    Manifest {
        at: Time,
        parts: Vec<PartInfo>,
    },
}

/// The checkpoints of one installation of a pipeline in this process.
pub struct Checkpoints {
    store: Store,
    pipeline: String,
    /// Held while parts or manifests are written, checkpoints abandoned
    /// or writing closed.
    io: Arc<Mutex<()>>,
    /// This process's workers.
    workers: usize,
    /// This process's index in the cluster.
    process: usize,
    /// Processes in the cluster: with more than one, cuts are decided by
    /// event time alone (see the module's documentation).
    processes: usize,
    /// The installation's part of checkpoint directories' names.
    nonce: String,
    options: CheckpointOptions,
    members: Vec<Member>,
    state: Arc<Mutex<State>>,
    jobs: Mutex<mpsc::Sender<Job>>,
    restored: Option<Restored>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_varint_encoding()
}

/// Encodes a value for a part (bincode with variable-length integers, as
/// the write-ahead log).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec()
        .serialize(value)
        .unwrap_or_else(|e| unreachable!("state always encodes: {e}"))
}

/// Decodes what [`encode`] wrote.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    codec().deserialize(bytes).map_err(|e| e.to_string())
}

fn dir_name(at: Time, nonce: &str) -> String {
    format!("{at:020}-{nonce}")
}

/// The checkpoints of `pipeline` in `store` (none where it cannot be
/// listed, which is reported).
fn listed(store: &Store, pipeline: &str) -> Vec<Listed> {
    store.listed(pipeline).unwrap_or_else(|error| {
        tracing::error!(pipeline, store = %store.describe(), %error, "Cannot list the pipeline's checkpoints.");
        Vec::new()
    })
}

/// A part's bytes, shared by the workers that read it.
pub type Part = Arc<Vec<u8>>;

/// Reads the checkpoint `name` of `pipeline` back, checking every part.
fn read_checkpoint(
    store: &Store,
    pipeline: &str,
    name: &str,
) -> Result<(Manifest, HashMap<String, Vec<Part>>), String> {
    let text = store
        .read(pipeline, name, MANIFEST)
        .map_err(|e| format!("its manifest cannot be read ({e})"))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("its manifest is damaged ({e})"))?;
    let mut parts: HashMap<String, Vec<(usize, Part)>> = HashMap::new();
    for p in &manifest.parts {
        let bytes = store
            .read(pipeline, name, &p.file)
            .map_err(|e| format!("part {} cannot be read ({e})", p.file))?;
        if bytes.len() as u64 != p.bytes || crc32fast::hash(&bytes) != p.crc32 {
            return Err(format!(
                "part {} is damaged ({} bytes, {} expected, or a checksum mismatch)",
                p.file,
                bytes.len(),
                p.bytes
            ));
        }
        parts
            .entry(p.component.clone())
            .or_default()
            .push((p.worker, Arc::new(bytes)));
    }
    let parts = parts
        .into_iter()
        .map(|(c, mut v)| {
            v.sort_by_key(|(w, _)| *w);
            (c, v.into_iter().map(|(_, b)| b).collect())
        })
        .collect();
    Ok((manifest, parts))
}

impl Checkpoints {
    /// Opens the checkpoints of `pipeline` in `store` (`DIR/checkpoints`,
    /// or a bucket), restoring from the newest intact one, and starts the
    /// thread that writes them.
    pub fn open(
        store: &Store,
        pipeline: &str,
        workers: usize,
        members: Vec<Member>,
        options: CheckpointOptions,
    ) -> std::io::Result<Arc<Checkpoints>> {
        Checkpoints::open_as(
            store,
            pipeline,
            Installation::single(workers),
            members,
            options,
        )
    }

    /// As [`Checkpoints::open`], for `installation`, which may be one
    /// process of a cluster: `store` must then be one every process of
    /// the cluster sees.
    pub fn open_as(
        store: &Store,
        pipeline: &str,
        installation: Installation,
        members: Vec<Member>,
        options: CheckpointOptions,
    ) -> std::io::Result<Arc<Checkpoints>> {
        let Installation {
            process,
            processes,
            workers,
            id,
            per_process,
        } = installation;
        let processes = processes.max(1);
        store.prepare(pipeline)?;
        let found = store.listed(pipeline)?;
        let mut restored = None;
        for l in found.iter().rev().filter(|l| l.complete) {
            let at = l.at;
            match read_checkpoint(store, pipeline, &l.name) {
                Ok((manifest, _)) if per_process && manifest.processes.max(1) != processes => {
                    tracing::error!(pipeline, checkpoint = %l.name, processes_then = manifest.processes, processes, "The checkpoint was written by another number of processes, and this pipeline's network sources read each process's own write-ahead log: its state starts empty, and each process reads its log from its stored position.");
                    break;
                }
                Ok((manifest, mut parts)) => {
                    let (mut fresh, mut migrated) = (Vec::new(), Vec::new());
                    let mut kept = HashMap::new();
                    for m in &members {
                        let hex = |h: u64| format!("{h:016x}");
                        let same = manifest.components.get(&m.name) == Some(&hex(m.fingerprint));
                        let alike = manifest.identities.get(&m.name) == Some(&hex(m.identity));
                        match parts.remove(&m.name) {
                            Some(p) if same || alike => {
                                if !same {
                                    migrated.push(m.name.clone());
                                }
                                kept.insert(m.name.clone(), (p, 0));
                            }
                            _ => fresh.push(m.name.clone()),
                        }
                    }
                    restored = Some(Restored {
                        at,
                        workers: manifest.workers.max(1),
                        processes: manifest.processes.max(1),
                        parts: Mutex::new(kept),
                        fresh,
                        migrated,
                    });
                    break;
                }
                Err(why) => {
                    tracing::error!(pipeline, checkpoint = %l.name, store = %store.describe(), "A checkpoint cannot be used: {why}. The one before it is tried.");
                }
            }
        }
        // What no checkpoint can use any more: incomplete or damaged
        // directories at or before the one restored.
        if let Some(r) = &restored {
            for l in found.iter().filter(|l| l.at < r.at && !l.complete) {
                let _ = store.remove(pipeline, Some(&l.name));
            }
        }
        let state = Arc::new(Mutex::new(State {
            decided: restored.as_ref().map_or(0, |r| r.at),
            yes: BTreeSet::new(),
            under_way: BTreeMap::new(),
            last_yes: None,
            hurry: false,
            written: BTreeMap::new(),
            failed: BTreeSet::new(),
            complete: restored.as_ref().map(|r| r.at).into_iter().collect(),
            abandoned: None,
            sealed: 0,
            closed: false,
            finished: Vec::new(),
        }));
        let io = Arc::new(Mutex::new(()));
        let nonce = format!(
            "{:016x}",
            id.unwrap_or_else(|| std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64))
        );
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            pipeline: pipeline.to_owned(),
            store: store.clone(),
            nonce: nonce.clone(),
            workers: workers * processes,
            process,
            processes,
            keep: options.keep.max(1),
            components: members
                .iter()
                .map(|m| (m.name.clone(), format!("{:016x}", m.fingerprint)))
                .collect(),
            identities: members
                .iter()
                .map(|m| (m.name.clone(), format!("{:016x}", m.identity)))
                .collect(),
            state: Arc::clone(&state),
            io: Arc::clone(&io),
        };
        std::thread::Builder::new()
            .name(format!("checkpoint-{pipeline}"))
            .spawn(move || writer.run(&rx))?;
        Ok(Arc::new(Checkpoints {
            store: store.clone(),
            pipeline: pipeline.to_owned(),
            io,
            workers,
            process,
            processes,
            nonce,
            options,
            members,
            state,
            jobs: Mutex::new(tx),
            restored,
        }))
    }

    /// The checkpoint this installation started from, if any.
    pub fn restored(&self) -> Option<&Restored> {
        self.restored.as_ref()
    }

    /// The names of the components whose state is kept.
    pub fn members(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// The index of a kept component.
    pub fn member(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Decides every cut up to `t` not decided yet: the last of them is a
    /// checkpoint if `interval` has passed since the last one (or the log
    /// is filling up) and no other checkpoint is under way (one at a time,
    /// so that a hurry does not fill the disk with checkpoints that wait
    /// for their sinks).
    fn decide_through(&self, s: &mut State, t: Time) {
        let b = t / STEP * STEP;
        if b <= s.decided {
            return;
        }
        let old = s.decided;
        s.decided = b;
        // A cut is taken by every kept component at `b - offset`, after
        // the time it starts at: an earlier one could never complete.
        if self.members.iter().any(|m| m.offset >= b) {
            return;
        }
        if self.processes > 1 {
            // A cluster: the last multiple of the interval up to `b` that
            // was not decided yet, as every process decides it (a process
            // whose output jumps over several takes only the last; one
            // the others did not take never completes, and is deleted).
            let every = (self.options.interval.as_millis() as Time)
                .div_ceil(STEP)
                .max(1)
                .saturating_mul(STEP);
            let last = b / every * every;
            // Parts of checkpoints whose sinks are not durable yet pile up
            // in the store: a few at most are under way here (one that a
            // minute has not sealed no longer counts).
            let sealed = s.complete.last().copied().unwrap_or(0).max(s.sealed);
            let failed = std::mem::take(&mut s.failed);
            s.under_way
                .retain(|b, at| *b > sealed && !failed.contains(b) && at.elapsed() < STALE);
            s.failed = failed;
            if last > old
                && !self.members.iter().any(|m| m.offset >= last)
                && s.under_way.len() < UNDER_WAY
            {
                s.yes.insert(last);
                self.submit_finished(s, last);
                s.under_way.insert(last, Instant::now());
                s.last_yes = Some(Instant::now());
            }
            return;
        }
        let newest = s.complete.last().copied().unwrap_or(0).max(s.sealed);
        // (One that has not completed for a minute no longer holds the
        // next back: it may wait for a sink that cannot write.)
        let under_way = s
            .yes
            .range(newest.saturating_add(1)..)
            .any(|b| !s.failed.contains(b))
            && s.last_yes.is_some_and(|t| t.elapsed() < STALE);
        if !under_way
            && (s.hurry
                || s.last_yes
                    .is_none_or(|t| t.elapsed() >= self.options.interval))
        {
            s.yes.insert(b);
            self.submit_finished(s, b);
            s.last_yes = Some(Instant::now());
        }
    }

    /// Hands the parts of the finished source instances to the writer for
    /// checkpoint `at`, just decided.
    fn submit_finished(&self, s: &State, at: Time) {
        for f in s.finished.iter().filter(|f| f.after < at) {
            self.submit(at, f.component, f.worker, f.bytes.clone());
        }
    }

    /// Source instance `component` on `worker` emits nothing after `after`:
    /// `bytes` is its part of every checkpoint cut after it, decided
    /// already or not (see [`Cut::finish`]).
    fn finish(&self, component: usize, worker: usize, after: Time, bytes: Vec<u8>) {
        let mut s = lock(&self.state);
        for at in s.yes.range(after.saturating_add(1)..) {
            self.submit(*at, component, worker, bytes.clone());
        }
        s.finished.push(Finished {
            component,
            worker,
            after,
            bytes,
        });
    }

    /// The checkpoints in `(from, to]`, deciding the cuts up to `to`: a
    /// source whose output moves from `from` to `to` records its position
    /// for each.
    pub fn crossed(&self, from: Time, to: Time) -> Vec<Time> {
        // No cut in between (the common case, asked per record): nothing
        // to decide either, since reaching `from` decided up to it.
        if to / STEP * STEP <= from {
            return Vec::new();
        }
        let mut s = lock(&self.state);
        self.decide_through(&mut s, to);
        s.yes.range(from + 1..=to).copied().collect()
    }

    /// The first checkpoint after `taken` whose cut (`B - offset`) is at or
    /// before `t`, if any, else the cut below which input is free to apply.
    fn next(&self, taken: Time, t: Time, offset: Time) -> Result<Time, Time> {
        let mut s = lock(&self.state);
        self.decide_through(&mut s, t.saturating_add(offset));
        let known = s.decided.saturating_add(STEP).saturating_sub(offset);
        match s.yes.range(taken.saturating_add(offset) + 1..).next() {
            Some(&b) if b.saturating_sub(offset) <= t => Ok(b.saturating_sub(offset)),
            Some(&b) => Err(b.saturating_sub(offset).min(known)),
            None => Err(known),
        }
    }

    /// Hands a part of checkpoint `at` to the writer.
    pub fn submit(&self, at: Time, component: usize, worker: usize, bytes: Vec<u8>) {
        let _ = lock(&self.jobs).send(Job::Part {
            at,
            component,
            worker,
            bytes,
        });
    }

    /// Completes every checkpoint whose parts are all written once the
    /// sinks are durable below `durable` (its manifest is written by the
    /// writer thread).
    pub fn poll(&self, durable: Time) {
        let expected = self.members.len() * self.workers;
        let mut s = lock(&self.state);
        let ready: Vec<Time> = s
            .written
            .iter()
            .filter(|(at, parts)| parts.len() == expected && **at <= durable)
            .map(|(at, _)| *at)
            .collect();
        for at in ready {
            if let Some(parts) = s.written.remove(&at) {
                // Older ones that never completed never will.
                s.written.retain(|a, _| *a > at);
                s.sealed = s.sealed.max(at);
                let _ = lock(&self.jobs).send(Job::Manifest { at, parts });
            }
        }
    }

    /// The newest complete checkpoint: a source stores its position for
    /// it, so the log keeps what a restore from it reads.
    pub fn newest(&self) -> Option<Time> {
        lock(&self.state).complete.last().copied()
    }

    /// Gives up every checkpoint, complete or under way, and deletes them:
    /// a source whose log is full and cannot cut another (its event time
    /// stands still while ingest is refused) then stores the positions a
    /// restart with empty state needs, which lets the log delete segments.
    /// Later cuts are checkpoints as before.
    pub fn abandon(&self) {
        let _io = lock(&self.io);
        {
            let mut s = lock(&self.state);
            let pending: Vec<Time> = s.yes.iter().chain(s.written.keys()).copied().collect();
            s.failed.extend(pending);
            s.yes.clear();
            s.written.clear();
            s.complete.clear();
            s.abandoned = Some(s.decided);
        }
        let through = lock(&self.state).abandoned.unwrap_or(0);
        for l in listed(&self.store, &self.pipeline)
            .into_iter()
            .filter(|l| l.at <= through)
        {
            if let Err(error) = self.store.remove(&self.pipeline, Some(&l.name)) {
                tracing::warn!(pipeline = %self.pipeline, checkpoint = %l.name, %error, "Cannot delete an abandoned checkpoint.");
            }
        }
    }

    /// Stops writing (the pipeline is deleted, and its checkpoints with
    /// it): parts and manifests still queued are dropped.
    /// Once it returns, no write is under way.
    pub fn close(&self) {
        let _io = lock(&self.io);
        lock(&self.state).closed = true;
    }

    /// Hands over to a new version of the pipeline in a cluster: stops
    /// writing here (as [`Checkpoints::close`], keeping what is written),
    /// then says so in the store and waits until every process has. After
    /// it no checkpoint of this installation can complete, so every
    /// process opening the new version finds the same newest one. (A
    /// process stuck for good stops the whole cluster, timely's way; the
    /// wait logs every 10 s whom it waits for.)
    pub fn hand_over(&self) {
        self.close();
        if self.processes <= 1 {
            return;
        }
        let dir = format!("handover-{}", self.nonce);
        let start = Instant::now();
        let mut told = Instant::now();
        loop {
            let missing: Vec<usize> = (0..self.processes)
                .filter(|p| {
                    self.store
                        .read(&self.pipeline, &dir, &p.to_string())
                        .is_err()
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            // Its own file, again if writing it failed.
            let mut error = None;
            if missing.contains(&self.process) {
                error = self
                    .store
                    .write_whole(&self.pipeline, &dir, &self.process.to_string(), b"")
                    .err();
            }
            if told.elapsed() >= Duration::from_secs(10) {
                told = Instant::now();
                tracing::warn!(pipeline = %self.pipeline, ?missing, ?error, waited_s = start.elapsed().as_secs(), "A new version waits for these processes to stop the old version's checkpoints.");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // (Its files are deleted once the new version completes a
        // checkpoint: every process is past this hand-over then.)
    }

    /// Every cut up to it was abandoned, if any was.
    pub fn abandoned(&self) -> Option<Time> {
        lock(&self.state).abandoned
    }

    /// Cuts a checkpoint at every step while `on` (a source's log is
    /// filling up: its positions move only with checkpoints), else every
    /// `interval`.
    pub fn hurry(&self, on: bool) {
        lock(&self.state).hurry = on;
    }

    /// A handle for an operator's instance on `worker`.
    pub fn cut(self: &Arc<Self>, component: usize, worker: usize) -> Cut {
        let offset = self.members.get(component).map_or(0, |m| m.offset);
        let taken = self
            .restored
            .as_ref()
            .map_or(0, |r| r.at.saturating_sub(offset));
        Cut {
            checkpoints: Arc::clone(self),
            component,
            worker,
            offset,
            taken,
            free_below: 0,
        }
    }
}

/// Writes parts and manifests off the workers' threads.
struct Writer {
    pipeline: String,
    store: Store,
    nonce: String,
    /// Workers of the whole cluster.
    workers: usize,
    process: usize,
    processes: usize,
    keep: usize,
    components: Vec<(String, String)>,
    identities: BTreeMap<String, String>,
    state: Arc<Mutex<State>>,
    io: Arc<Mutex<()>>,
}

impl Writer {
    fn run(&self, rx: &mpsc::Receiver<Job>) {
        // In a cluster: the checkpoints whose process file is written,
        // waiting for the other processes' files (or the manifest).
        let mut waiting: BTreeSet<Time> = BTreeSet::new();
        let (mut looked, mut look_now) = (Instant::now(), false);
        loop {
            let job = if waiting.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(MERGE_POLL) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            match job {
                None if waiting.is_empty() => return,
                None => {}
                Some(Job::Part {
                    at,
                    component,
                    worker,
                    bytes,
                }) => {
                    let _io = lock(&self.io);
                    let s = lock(&self.state);
                    if s.closed || s.failed.contains(&at) {
                        continue;
                    }
                    drop(s);
                    match self.write_part(at, component, worker, &bytes) {
                        Ok(info) => lock(&self.state).written.entry(at).or_default().push(info),
                        Err(error) => {
                            lock(&self.state).failed.insert(at);
                            tracing::error!(pipeline = %self.pipeline, checkpoint = at, %error, "Cannot write a checkpoint part; this checkpoint is abandoned and the next one tried.");
                        }
                    }
                }
                Some(Job::Manifest { at, parts }) => {
                    let _io = lock(&self.io);
                    let s = lock(&self.state);
                    if s.closed || s.failed.contains(&at) {
                        continue;
                    }
                    drop(s);
                    let written = if self.processes > 1 {
                        self.write_process_file(at, parts).map(|()| {
                            waiting.insert(at);
                            // (Its own file may be the last one.)
                            look_now = true;
                        })
                    } else {
                        self.write_manifest(at, parts).map(|()| self.retain(at))
                    };
                    if let Err(error) = written {
                        tracing::error!(pipeline = %self.pipeline, checkpoint = at, %error, "Cannot write a checkpoint's manifest; this checkpoint is abandoned and the next one tried.");
                    }
                }
            }
            if !waiting.is_empty() && (look_now || looked.elapsed() >= MERGE_POLL) {
                self.merge(&mut waiting);
                (looked, look_now) = (Instant::now(), false);
            }
        }
    }

    /// A cluster's checkpoints that wait for other processes: the newest
    /// whose every process file is there is merged into its manifest (or
    /// has one, merged by another process) and completes; older ones are
    /// let go.
    fn merge(&self, waiting: &mut BTreeSet<Time>) {
        let _io = lock(&self.io);
        if lock(&self.state).closed {
            waiting.clear();
            return;
        }
        // A process that stopped for good leaves them waiting: the newest
        // few are enough.
        while waiting.len() > 16 {
            waiting.pop_first();
        }
        let done = waiting.iter().rev().copied().find(|at| match self.merged(*at) {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(pipeline = %self.pipeline, checkpoint = at, %error, "Cannot write a checkpoint's manifest; the next one is tried.");
                false
            }
        });
        if let Some(at) = done {
            waiting.retain(|w| *w > at);
            self.retain(at);
        }
    }

    /// Whether checkpoint `at` of a cluster is complete: its manifest is
    /// there, or every process's file is and the manifest has now been
    /// written from them.
    fn merged(&self, at: Time) -> std::io::Result<bool> {
        let name = self.name(at);
        if self.store.read(&self.pipeline, &name, MANIFEST).is_ok() {
            return Ok(true);
        }
        let mut parts = Vec::new();
        for p in 0..self.processes {
            // Not there yet (or not readable yet): asked again later.
            let Ok(bytes) = self.store.read(&self.pipeline, &name, &process_file(p)) else {
                return Ok(false);
            };
            let file: ProcessFile = serde_json::from_slice(&bytes)?;
            parts.extend(file.parts);
        }
        parts.sort_by(|a, b| (&a.component, a.worker).cmp(&(&b.component, b.worker)));
        self.write_manifest(at, parts)?;
        Ok(true)
    }

    /// This process's share of a cluster's checkpoint, written once its
    /// parts are.
    fn write_process_file(&self, at: Time, parts: Vec<PartInfo>) -> std::io::Result<()> {
        let file = ProcessFile {
            process: self.process,
            parts,
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        self.store.write_whole(
            &self.pipeline,
            &self.name(at),
            &process_file(self.process),
            &bytes,
        )
    }

    fn name(&self, at: Time) -> String {
        dir_name(at, &self.nonce)
    }

    fn write_part(
        &self,
        at: Time,
        component: usize,
        worker: usize,
        bytes: &[u8],
    ) -> std::io::Result<PartInfo> {
        let file = format!("{component}.{worker}");
        self.store
            .write(&self.pipeline, &self.name(at), &file, bytes)?;
        let name = self
            .components
            .get(component)
            .map_or_else(String::new, |(n, _)| n.clone());
        Ok(PartInfo {
            component: name,
            worker,
            file,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        })
    }

    fn write_manifest(&self, at: Time, parts: Vec<PartInfo>) -> std::io::Result<()> {
        let manifest = Manifest {
            pipeline: self.pipeline.clone(),
            at,
            workers: self.workers,
            processes: self.processes,
            components: self.components.iter().cloned().collect(),
            identities: self.identities.clone(),
            parts,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)?;
        self.store
            .write_whole(&self.pipeline, &self.name(at), MANIFEST, &bytes)
    }

    /// Keeps the newest `keep` complete checkpoints; deletes everything
    /// older.
    fn retain(&self, at: Time) {
        let oldest = {
            let mut s = lock(&self.state);
            s.complete.push(at);
            s.complete.sort_unstable();
            s.complete.dedup();
            let drop = s.complete.len().saturating_sub(self.keep);
            s.complete.drain(..drop);
            // Decisions before the newest complete one are no longer asked.
            let newest = s.complete.last().copied().unwrap_or(0);
            s.yes.retain(|b| *b >= newest);
            s.failed.retain(|b| *b > newest);
            s.complete.first().copied().unwrap_or(at)
        };
        for l in listed(&self.store, &self.pipeline) {
            if l.at < oldest
                && let Err(error) = self.store.remove(&self.pipeline, Some(&l.name))
            {
                tracing::warn!(pipeline = %self.pipeline, checkpoint = %l.name, %error, "Cannot delete an old checkpoint.");
            }
        }
        // Every process wrote parts of this installation, so each is past
        // the hand-over into it (and those before); only the one out of
        // it may be under way.
        if self.processes > 1 {
            let current = format!("handover-{}", self.nonce);
            for h in self.store.handovers(&self.pipeline).unwrap_or_default() {
                if h != current {
                    let _ = self.store.remove(&self.pipeline, Some(&h));
                }
            }
        }
    }
}

/// Where one operator instance cuts its state (see the module's
/// documentation): input at or after the next checkpoint's cut waits
/// until the state is written.
pub struct Cut {
    checkpoints: Arc<Checkpoints>,
    component: usize,
    worker: usize,
    offset: Time,
    /// The last cut written (or restored).
    taken: Time,
    /// Input below it applies at once.
    free_below: Time,
}

impl Cut {
    /// Whether input at `t` must wait for a cut.
    #[inline]
    pub fn holds(&mut self, t: Time) -> bool {
        if t < self.free_below {
            return false;
        }
        match self.checkpoints.next(self.taken, t, self.offset) {
            Ok(x) => {
                self.free_below = x;
                true
            }
            Err(free) => {
                self.free_below = free;
                false
            }
        }
    }

    /// The next cut the input frontier `f` has reached, if any: all input
    /// below it is in, none after it applied.
    pub fn due(&mut self, f: Time) -> Option<Time> {
        self.checkpoints.next(self.taken, f, self.offset).ok()
    }

    /// Hands the state at cut `x` to the writer.
    pub fn write(&mut self, x: Time, bytes: Vec<u8>) {
        self.checkpoints.submit(
            x.saturating_add(self.offset),
            self.component,
            self.worker,
            bytes,
        );
        self.taken = x;
        self.free_below = 0;
    }

    /// The cut restored from, or the last one written (0: none).
    pub fn taken(&self) -> Time {
        self.taken
    }

    /// The restored state of this component, part by part, if it was
    /// restored.
    /// (Each instance takes them once.)
    pub fn restored(&self) -> Option<Vec<Part>> {
        let name = &self.checkpoints.members.get(self.component)?.name;
        self.checkpoints
            .restored
            .as_ref()?
            .take(name, self.checkpoints.workers)
    }

    /// The restored parts of this component that process `process` of
    /// the run that wrote them wrote (its workers' parts; none if that run
    /// had fewer processes), if it was restored: a source reading a log
    /// of this process's own takes those.
    /// (Each instance takes them once.)
    pub fn restored_of_process(&self, process: usize) -> Option<Vec<Part>> {
        let parts = self.restored()?;
        let r = self.checkpoints.restored.as_ref()?;
        let per = r.workers / r.processes.max(1);
        Some(
            parts
                .into_iter()
                .skip(process * per)
                .take(if process < r.processes { per } else { 0 })
                .collect(),
        )
    }

    /// The checkpoint restored from, if any.
    pub fn restored_at(&self) -> Option<Time> {
        self.checkpoints.restored.as_ref().map(|r| r.at)
    }

    /// The checkpoints in `(from, to]` (a source's output moving there).
    pub fn crossed(&self, from: Time, to: Time) -> Vec<Time> {
        self.checkpoints.crossed(from, to)
    }

    /// Hands this instance's part of checkpoint `at` to the writer (a
    /// source's position).
    pub fn write_at(&self, at: Time, bytes: Vec<u8>) {
        self.checkpoints
            .submit(at, self.component, self.worker, bytes);
    }

    /// This instance of a source emits nothing after `after` (its output
    /// is complete there: it dropped its capability): `bytes` is its part
    /// of every checkpoint cut after it, so that those still complete.
    /// (Cuts up to `after` it wrote with [`Cut::write_at`] as its output
    /// crossed them.)
    pub fn finish(&self, after: Time, bytes: Vec<u8>) {
        self.checkpoints
            .finish(self.component, self.worker, after, bytes);
    }

    /// The checkpoints of the installation.
    pub fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.checkpoints
    }
}

/// What [`Gate::advance`] asks of its operator.
pub enum Step<D> {
    /// Advance the state to this cut and return it, encoded.
    Cut(Time),
    /// Apply this input, which entered at this time.
    Apply(Time, D),
}

/// The input of a checkpointed operator: what arrives at or after a cut
/// not yet written (or before the restored state is in) waits here.
pub struct Gate<D> {
    cut: Option<Cut>,
    restoring: bool,
    waiting: BTreeMap<Time, Vec<D>>,
}

impl<D> Gate<D> {
    /// A gate for an operator cutting at `cut` (`None`: not checkpointed),
    /// waiting for its restored state first.
    pub fn new(cut: Option<Cut>) -> Gate<D> {
        Gate {
            cut,
            restoring: true,
            waiting: BTreeMap::new(),
        }
    }

    /// Records that the restored state is all in (its stream's frontier
    /// is empty); returns the cut restored from, the first time, if any.
    pub fn restored(&mut self) -> Option<Time> {
        if !self.restoring {
            return None;
        }
        self.restoring = false;
        self.cut
            .as_ref()
            .filter(|c| c.restored_at().is_some())
            .map(Cut::taken)
    }

    /// Whether the restored state is still coming.
    pub fn restoring(&self) -> bool {
        self.restoring
    }

    /// Takes `data`, which entered at `time`, if it must wait: for the
    /// restored state, for a cut, or behind input that waits (so that
    /// input of one time is applied in the order it came).
    #[inline]
    pub fn wait(&mut self, time: Time, data: &mut D) -> bool
    where
        D: Default,
    {
        if self.restoring
            || !self.waiting.is_empty()
            || self.cut.as_mut().is_some_and(|c| c.holds(time))
        {
            self.waiting
                .entry(time)
                .or_default()
                .push(std::mem::take(data));
            return true;
        }
        false
    }

    /// Whether input waits.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// With the input frontier at `f` (`None`: input done): applies the
    /// waiting input that no cut holds, and for every cut the frontier
    /// reached, in order, has the state written and then lets in what
    /// waited for it.
    pub fn advance(&mut self, f: Option<Time>, on: &mut impl FnMut(Step<D>) -> Vec<u8>) {
        if self.restoring {
            return;
        }
        loop {
            while let Some(entry) = self.waiting.first_entry() {
                let held = match (self.cut.as_mut(), f) {
                    (Some(c), Some(_)) => c.holds(*entry.key()),
                    _ => false,
                };
                if held {
                    break;
                }
                let (time, batches) = entry.remove_entry();
                for batch in batches {
                    on(Step::Apply(time, batch));
                }
            }
            let (Some(c), Some(f)) = (self.cut.as_mut(), f) else {
                return;
            };
            let Some(x) = c.due(f) else { return };
            let bytes = on(Step::Cut(x));
            c.write(x, bytes);
        }
    }
}

/// An entry of restored state: a key (group or series id) and its state.
pub type Entry = (u64, Vec<u8>);

/// The restored state of an operator cutting at `checkpoint` (empty
/// without one): the operator's second input, read through [`by_key`].
pub fn restore_input<'s>(
    scope: PipelineScope<'s>,
    name: &str,
    checkpoint: Option<&Cut>,
) -> Stream<'s, Time, Vec<Entry>> {
    let parts = checkpoint.and_then(Cut::restored).unwrap_or_default();
    restore_stream(scope, name, parts)
}

/// The exchange contract that brings each restored entry to the worker
/// that owns its key (as the operator's input contract does its samples).
pub fn by_key() -> Exchange<Entry, impl FnMut(&Entry) -> u64 + 'static> {
    Exchange::new(|(key, _): &Entry| *key)
}

/// Applies restored entries with `apply`; one that does not decode is
/// counted as an error of `stats` and its key starts empty.
pub fn restore_entries(
    entries: &mut Vec<Entry>,
    stats: &crate::stats::ComponentStats,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), String>,
) {
    for (key, bytes) in entries.drain(..) {
        if let Err(error) = apply(key, &bytes) {
            crate::stats::add(&stats.errors, 1);
            tracing::error!(key, %error, "Checkpointed state does not decode; that key starts empty.");
        }
    }
}

/// The keyed entries of a restored operator's parts, each worker emitting
/// those of the parts `i % peers == index` at time 0; the operator reads
/// them through an exchange on the key, as its input.
pub fn restore_stream<'s>(
    scope: PipelineScope<'s>,
    name: &str,
    parts: Vec<Part>,
) -> Stream<'s, Time, Vec<Entry>> {
    let (index, peers) = (scope.index(), scope.peers());
    let name = name.to_owned();
    source(
        scope,
        &format!("{name} restore"),
        move |capability, _info| {
            let mut cap = Some(capability);
            move |output| {
                let Some(c) = cap.take() else { return };
                for part in parts.iter().skip(index).step_by(peers.max(1)) {
                    match decode::<Vec<Entry>>(part) {
                        Ok(mut entries) => output.session(&c).give_container(&mut entries),
                        Err(error) => {
                            tracing::error!(component = %name, %error, "A checkpoint part does not decode; its state is lost.");
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests;
