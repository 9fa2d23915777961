//! The `parquet` sink on a worker: a timely operator that cuts the closed
//! times of its series into epochs of `roll_interval`, and a writer thread
//! (current-thread tokio runtime) that encodes and uploads them.
//!
//! - Series fall into a fixed number of *key groups* (series id modulo the
//!   number of workers of the archive's first run, recorded in its
//!   `layout` object), and samples are exchanged by group, so each group
//!   is in one worker's files whatever the number of workers now. Epoch `e`
//!   holds the samples at timely times `[e, e + roll)`; its files are named
//!   after the epoch, the group (`w<group>`: the worker of the first run)
//!   and a sequence number, in the partition of each sample's event hour.
//!   Every boundary (row group, file, epoch) falls between whole times, so
//!   a replay of the same input, at any number of workers, makes the same
//!   files with the same rows and overwrites them.
//! - The operator holds the capability of an epoch's first time until every
//!   file of the epoch, then a marker object for it, is uploaded: the sink's
//!   frontier is its durable frontier. Flow control counts the epoch as
//!   holdback ([`super::ParquetSink::holdback`]), so sources keep reading
//!   while an epoch fills.
//! - After a restart from a Kafka checkpoint, the first epoch may begin
//!   before the resume frontier: only part of it is read again. If its
//!   marker (one per epoch and group) exists, that group's part of it was
//!   uploaded whole before and is skipped; if not, the earlier run held
//!   its first time, so none of it was before the resume frontier and it
//!   is written whole.
//! - Failed uploads are retried with backoff until they succeed (the file
//!   stays in memory); the frontier waits, and the sources with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use tokio::sync::mpsc;

use tidemark_engine::Sample;
use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::ComponentError;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, SyncActivator, frontier_min,
};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

use super::archive::ParquetArchive;
use super::config::ParquetSink;
use super::encode::{FileBuilder, Format};
use super::service::Store;
use crate::batch::{ByTime, FIRST_BACKOFF, Handoff, MAX_BACKOFF, spawn_writer};

/// What the operator hands the writer, in order.
enum Message {
    /// Closed times of an epoch, oldest first, each with all its samples.
    Times {
        epoch: Time,
        resumed: bool,
        times: Vec<Vec<Sample>>,
    },
    /// No more times of this epoch: upload what is left and its marker.
    Close { epoch: Time },
}

impl ParquetSink {
    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let scope = stream.scope();
        if ctx.worker == 0
            && let Some(archive) = ParquetArchive::open(&self.store, &ctx.pipeline, &ctx.name)
        {
            // Queries read what the sink wrote, past the memory sinks.
            ctx.history
                .archive(&ctx.pipeline, &ctx.name, &ctx.inputs, Arc::new(archive));
        }
        let name = ctx.name.clone();
        let roll = self.roll.max(1);
        let config = self.clone();
        let groups = groups(self, &ctx, scope.peers());
        let by_group = Exchange::new(move |s: &Sample| s.series.id().0 % groups);
        stream
            .unary_frontier::<ProgressBuilder, _, _, _>(by_group, &name, move |_cap, info| {
                let (tx, rx) = mpsc::channel::<(u64, Message)>(1);
                let done = Arc::new(AtomicU64::new(0));
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let writer = Writer {
                    config,
                    format: None,
                    keys: Keys {
                        pipeline: ctx.pipeline.clone(),
                        sink: ctx.name.clone(),
                        groups,
                    },
                    stats: Arc::clone(&ctx.stats),
                    failure: Arc::clone(&ctx.failure),
                    epoch: None,
                };
                let written = Arc::clone(&done);
                spawn_writer(&ctx, scope.index(), move || {
                    writer.run(rx, written, activator)
                });
                let retry = scope.activator_for(std::rc::Rc::clone(&info.address));
                let mut stash = ByTime::default();
                let mut open: Option<(Time, Capability<Time>)> = None;
                // An epoch's capability goes with its `Close`.
                let mut handoff: Handoff<Message, Option<Capability<Time>>> = Handoff::default();
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
                        let time = *cap.time();
                        if !ctx.resume.writes(time) || samples.is_empty() {
                            continue;
                        }
                        let epoch = time - time % roll;
                        if open.as_ref().is_some_and(|(e, _)| *e != epoch)
                            && let Some((e, c)) = open.take()
                        {
                            handoff
                                .ready
                                .push_back((Message::Close { epoch: e }, Some(c)));
                        }
                        if open.is_none() {
                            open = Some((epoch, cap));
                        }
                        match handoff.ready.back_mut() {
                            Some((
                                Message::Times {
                                    epoch: e, times, ..
                                },
                                _,
                            )) if *e == epoch => {
                                times.push(samples);
                            }
                            _ => handoff.ready.push_back((
                                Message::Times {
                                    epoch,
                                    resumed: !ctx.resume.writes(epoch),
                                    times: vec![samples],
                                },
                                None,
                            )),
                        }
                    }
                    if open
                        .as_ref()
                        .is_some_and(|(e, _)| f >= e.saturating_add(roll))
                        && let Some((e, c)) = open.take()
                    {
                        handoff
                            .ready
                            .push_back((Message::Close { epoch: e }, Some(c)));
                    }
                    if handoff.pump(&tx, &done, &ctx) {
                        retry.activate_after(Duration::from_millis(100));
                    }
                }
            })
            .container::<Vec<()>>()
    }
}

/// The archive's key groups (see the module's documentation), read as the
/// sink is built on a worker: from its `layout` object, or `workers` for a
/// new archive. A store that cannot say fails the pipeline: no file is
/// written under a guessed layout.
fn groups(config: &ParquetSink, ctx: &SinkContext, workers: usize) -> u64 {
    let read = || -> Result<u64, ComponentError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                ComponentError::io("cannot start a runtime to read the archive's layout", e)
            })?;
        runtime.block_on(async {
            Store::open(&config.store)?
                .groups(&ctx.pipeline, &ctx.name, workers as u64)
                .await
        })
    };
    match read() {
        Ok(groups) => groups,
        Err(error) => {
            add(&ctx.stats.errors, 1);
            tracing::error!(error = %error.chain(), sink = %ctx.name, "Cannot read the archive's layout; the pipeline stops.");
            ctx.failure.fail(&ctx.name, &error);
            workers.max(1) as u64
        }
    }
}

/// Object keys, below the sink's prefix.
struct Keys {
    pipeline: String,
    sink: String,
    /// The archive's key groups.
    groups: u64,
}

impl Keys {
    /// The key group of a sample's series.
    fn group(&self, sample: &Sample) -> u64 {
        sample.series.id().0 % self.groups.max(1)
    }

    /// `pipeline=P/output=S/date=YYYY-MM-DD/hour=HH/part-<epoch>-w<group>-<seq>.parquet`.
    fn file(&self, group: u64, hour: i64, epoch: Time, seq: u32) -> String {
        let start = chrono::DateTime::from_timestamp_millis(hour.saturating_mul(3_600_000))
            .unwrap_or_default();
        format!(
            "pipeline={}/output={}/{}/part-{epoch:013}-w{:03}-{seq:03}.parquet",
            self.pipeline,
            self.sink,
            start.format("date=%Y-%m-%d/hour=%H"),
            group
        )
    }

    /// The marker that says a group's files of an epoch are all uploaded.
    fn marker(&self, epoch: Time, group: u64) -> String {
        format!(
            "_tidemark/pipeline={}/output={}/epochs/{epoch:013}-w{group:03}",
            self.pipeline, self.sink
        )
    }
}

/// The file of one event hour in the open epoch.
struct Partition {
    seq: u32,
    file: Option<FileBuilder>,
}

/// The epoch being written.
struct Epoch {
    epoch: Time,
    /// It began before the resume frontier: its groups' markers are
    /// checked.
    resumed: bool,
    /// The groups seen in it, each with whether an earlier run wrote it
    /// whole (its samples are then skipped).
    groups: BTreeMap<u64, bool>,
    /// Open files by group and event hour.
    partitions: BTreeMap<(u64, i64), Partition>,
    /// Files uploaded, by group.
    uploaded: BTreeMap<u64, Vec<String>>,
}

struct Writer {
    config: ParquetSink,
    format: Option<Format>,
    keys: Keys,
    stats: Arc<ComponentStats>,
    failure: Arc<Failure>,
    epoch: Option<Epoch>,
}

impl Writer {
    fn run(
        mut self,
        mut rx: mpsc::Receiver<(u64, Message)>,
        done: Arc<AtomicU64>,
        activator: SyncActivator,
    ) {
        let name = self.keys.sink.clone();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(error) => {
                add(&self.stats.errors, 1);
                tracing::error!(%error, sink = %name, "Cannot start the sink's runtime; it holds its input.");
                return;
            }
        };
        runtime.block_on(async move {
            let store = match Store::open(&self.config.store) {
                Ok(s) => s,
                Err(error) => {
                    add(&self.stats.errors, 1);
                    tracing::error!(error = %error.chain(), sink = %name, "Cannot open the object store; the pipeline stops.");
                    self.failure.fail(&name, &error);
                    return;
                }
            };
            self.format = Some(Format::new(
                &self.config.promote,
                self.config.row_group_rows,
                self.config.zstd_level,
            ));
            while let Some((seq, message)) = rx.recv().await {
                let _ = activator.activate();
                let ok = match message {
                    Message::Times {
                        epoch,
                        resumed,
                        times,
                    } => self.times(&store, &rx, epoch, resumed, times).await,
                    Message::Close { epoch } => self.close(&store, &rx, epoch).await,
                };
                if !ok {
                    return;
                }
                done.store(seq, Ordering::Release);
                let _ = activator.activate();
            }
        });
    }

    /// Adds closed times to the epoch's files, closing a file once it is
    /// full. Returns false if the pipeline stopped while an upload failed.
    async fn times(
        &mut self,
        store: &Store,
        rx: &mpsc::Receiver<(u64, Message)>,
        epoch: Time,
        resumed: bool,
        times: Vec<Vec<Sample>>,
    ) -> bool {
        if self.epoch.as_ref().is_none_or(|e| e.epoch != epoch) {
            self.epoch = Some(Epoch {
                epoch,
                resumed,
                groups: BTreeMap::new(),
                partitions: BTreeMap::new(),
                uploaded: BTreeMap::new(),
            });
        }
        let Some(format) = self.format.clone() else {
            return false;
        };
        for samples in times {
            // Groups new to the epoch: in a resumed one, was each written
            // whole before?
            let mut new: Vec<u64> = samples.iter().map(|s| self.keys.group(s)).collect();
            new.sort_unstable();
            new.dedup();
            for group in new {
                let Some(open) = self.epoch.as_ref() else {
                    return false;
                };
                if open.groups.contains_key(&group) {
                    continue;
                }
                let skip = if open.resumed {
                    let marker = self.keys.marker(epoch, group);
                    let Some(exists) = self
                        .retry(rx, "check an epoch's marker", || store.exists(&marker))
                        .await
                    else {
                        return false;
                    };
                    if exists {
                        tracing::info!(sink = %self.keys.sink, epoch, group, "This epoch's group was archived whole before the restart; skipping its replay.");
                    }
                    exists
                } else {
                    false
                };
                if let Some(open) = self.epoch.as_mut() {
                    open.groups.insert(group, skip);
                }
            }
            let Some(open) = self.epoch.as_mut() else {
                return false;
            };
            let mut touched: Vec<(u64, i64)> = Vec::new();
            let mut full: Vec<(u64, i64)> = Vec::new();
            for sample in samples {
                let group = self.keys.group(&sample);
                if open.groups.get(&group).copied().unwrap_or(false) {
                    continue;
                }
                let at = (group, sample.timestamp.div_euclid(3_600_000));
                let partition = open
                    .partitions
                    .entry(at)
                    .or_insert(Partition { seq: 0, file: None });
                if partition.file.is_none() {
                    match FileBuilder::new(&format) {
                        Ok(f) => partition.file = Some(f),
                        Err(error) => {
                            add(&self.stats.errors, 1);
                            tracing::error!(%error, sink = %self.keys.sink, "Cannot start a Parquet file; its samples are lost.");
                            continue;
                        }
                    }
                }
                if let Some(file) = partition.file.as_mut() {
                    file.push([sample]);
                }
                if !touched.contains(&at) {
                    touched.push(at);
                }
            }
            for at in touched {
                let Some(file) = open.partitions.get_mut(&at).and_then(|p| p.file.as_mut()) else {
                    continue;
                };
                if file.buffered() >= format.row_group_rows
                    && let Err(error) = file.flush(&format)
                {
                    add(&self.stats.errors, 1);
                    tracing::error!(%error, sink = %self.keys.sink, "Cannot encode a row group.");
                }
                if file.bytes() >= self.config.max_file_bytes {
                    full.push(at);
                }
            }
            for at in full {
                if !self.upload(store, rx, at).await {
                    return false;
                }
            }
        }
        true
    }

    /// Uploads the file of group `at.0` and hour `at.1` in the open epoch;
    /// the next one there gets the next sequence number.
    async fn upload(
        &mut self,
        store: &Store,
        rx: &mpsc::Receiver<(u64, Message)>,
        at: (u64, i64),
    ) -> bool {
        let (Some(open), Some(format)) = (self.epoch.as_mut(), self.format.as_ref()) else {
            return false;
        };
        let Some(partition) = open.partitions.get_mut(&at) else {
            return true;
        };
        let Some(file) = partition.file.take() else {
            return true;
        };
        let rows = file.rows();
        let key = self.keys.file(at.0, at.1, open.epoch, partition.seq);
        partition.seq += 1;
        let bytes = match file.finish(format) {
            Ok(b) => Bytes::from(b),
            Err(error) => {
                add(&self.stats.errors, 1);
                tracing::error!(%error, sink = %self.keys.sink, key, "Cannot encode a Parquet file; its samples are lost.");
                return true;
            }
        };
        let size = bytes.len();
        open.uploaded.entry(at.0).or_default().push(key.clone());
        let put = self
            .retry(rx, "upload a file", || store.put(&key, bytes.clone()))
            .await;
        if put.is_none() {
            return false;
        }
        add(&self.stats.sent, rows as u64);
        tracing::debug!(sink = %self.keys.sink, key, rows, bytes = size, "Uploaded a Parquet file.");
        true
    }

    /// Uploads the epoch's remaining files and its marker.
    async fn close(
        &mut self,
        store: &Store,
        rx: &mpsc::Receiver<(u64, Message)>,
        epoch: Time,
    ) -> bool {
        if self.epoch.as_ref().is_none_or(|e| e.epoch != epoch) {
            return true;
        }
        let open: Vec<(u64, i64)> = self
            .epoch
            .as_ref()
            .map(|e| e.partitions.keys().copied().collect())
            .unwrap_or_default();
        for at in open {
            if !self.upload(store, rx, at).await {
                return false;
            }
        }
        let Some(open) = self.epoch.take() else {
            return true;
        };
        // A marker for each group written (not skipped) in it.
        for (group, skipped) in &open.groups {
            if *skipped {
                continue;
            }
            let marker = self.keys.marker(epoch, *group);
            let files = open.uploaded.get(group).cloned().unwrap_or_default();
            let body = Bytes::from(files.join("\n") + "\n");
            let put = self
                .retry(rx, "write an epoch's marker", || {
                    store.put(&marker, body.clone())
                })
                .await;
            if put.is_none() {
                return false;
            }
        }
        true
    }

    /// Runs `op` until it succeeds, with backoff; `None` if the pipeline
    /// has stopped meanwhile (the output is then lost, and counted), or if
    /// the error says no retry can help (the pipeline then fails with it).
    async fn retry<T, F>(
        &self,
        rx: &mpsc::Receiver<(u64, Message)>,
        what: &str,
        mut op: impl FnMut() -> F,
    ) -> Option<T>
    where
        F: Future<Output = Result<T, ComponentError>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(error) if !error.retryable => {
                    add(&self.stats.errors, 1);
                    tracing::error!(error = %error.chain(), fault = %error.fault, sink = %self.keys.sink, "Failed to {what}, and retrying cannot help; the pipeline stops.");
                    self.failure.fail(&self.keys.sink, &error);
                    return None;
                }
                Err(error) => {
                    let error = error.chain();
                    self.stats.retried(&error);
                    if rx.is_closed() {
                        add(&self.stats.errors, 1);
                        tracing::warn!(%error, sink = %self.keys.sink, "Failed to {what}, and the pipeline has stopped; giving up.");
                        return None;
                    }
                    tracing::warn!(%error, sink = %self.keys.sink, retry_in = ?backoff, "Failed to {what}; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hive_partitions_named_after_epoch_group_and_sequence() {
        let keys = Keys {
            pipeline: "p".into(),
            sink: "archive".into(),
            groups: 4,
        };
        // 2026-11-25T07:00:00Z is hour 494_887 since the epoch.
        let hour = 1_795_590_000_000i64 / 3_600_000;
        assert_eq!(
            keys.file(1, hour, 1_795_590_300_000, 2),
            "pipeline=p/output=archive/date=2026-11-25/hour=07/part-1795590300000-w001-002.parquet"
        );
        assert_eq!(
            keys.marker(1_795_590_300_000, 1),
            "_tidemark/pipeline=p/output=archive/epochs/1795590300000-w001"
        );
    }
}
