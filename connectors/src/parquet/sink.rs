//! The `parquet` sink on a worker: a timely operator that cuts the closed
//! times of its series into epochs of `roll_interval`, and a writer thread
//! (current-thread tokio runtime) that encodes and uploads them.
//!
//! - Samples are exchanged by series, so each series is in one worker's
//!   files. Epoch `e` holds the samples at timely times `[e, e + roll)`; its
//!   files are named after the epoch, the worker and a sequence number, in
//!   the partition of each sample's event hour. Every boundary (row group,
//!   file, epoch) falls between whole times, so a replay of the same input
//!   makes the same files with the same rows and overwrites them.
//! - The operator holds the capability of an epoch's first time until every
//!   file of the epoch, then a marker object for it, is uploaded: the sink's
//!   frontier is its durable frontier. Flow control counts the epoch as
//!   holdback ([`super::ParquetSink::holdback`]), so sources keep reading
//!   while an epoch fills.
//! - After a restart from a Kafka checkpoint, the first epoch may begin
//!   before the resume frontier: only part of it is read again. If its
//!   marker exists it was uploaded whole before and is skipped; if not, the
//!   earlier run held its first time, so none of it was before the resume
//!   frontier and it is written whole.
//! - Failed uploads are retried with backoff until they succeed (the file
//!   stays in memory); the frontier waits, and the sources with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use timely::dataflow::operators::Capability;
use tokio::sync::mpsc;

use tidemark_engine::Sample;
use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::ComponentError;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, SyncActivator, by_series, frontier_min,
};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

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
        let name = ctx.name.clone();
        let roll = self.roll.max(1);
        let config = self.clone();
        stream
            .unary_frontier::<ProgressBuilder, _, _, _>(by_series(), &name, move |_cap, info| {
                let (tx, rx) = mpsc::channel::<(u64, Message)>(1);
                let done = Arc::new(AtomicU64::new(0));
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let writer = Writer {
                    config,
                    format: None,
                    keys: Keys {
                        pipeline: ctx.pipeline.clone(),
                        sink: ctx.name.clone(),
                        worker: scope.index(),
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

/// Object keys, below the sink's prefix.
struct Keys {
    pipeline: String,
    sink: String,
    worker: usize,
}

impl Keys {
    /// `pipeline=P/output=S/date=YYYY-MM-DD/hour=HH/part-<epoch>-w<worker>-<seq>.parquet`.
    fn file(&self, hour: i64, epoch: Time, seq: u32) -> String {
        let start = chrono::DateTime::from_timestamp_millis(hour.saturating_mul(3_600_000))
            .unwrap_or_default();
        format!(
            "pipeline={}/output={}/{}/part-{epoch:013}-w{:03}-{seq:03}.parquet",
            self.pipeline,
            self.sink,
            start.format("date=%Y-%m-%d/hour=%H"),
            self.worker
        )
    }

    /// The marker that says an epoch's files are all uploaded.
    fn marker(&self, epoch: Time) -> String {
        format!(
            "_tidemark/pipeline={}/output={}/epochs/{epoch:013}-w{:03}",
            self.pipeline, self.sink, self.worker
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
    /// Written whole by an earlier run.
    skip: bool,
    partitions: BTreeMap<i64, Partition>,
    uploaded: Vec<String>,
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
            let store = match Store::open(&self.config) {
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
            let marker = self.keys.marker(epoch);
            let skip = if resumed {
                let Some(exists) = self
                    .retry(rx, "check an epoch's marker", || store.exists(&marker))
                    .await
                else {
                    return false;
                };
                if exists {
                    tracing::info!(sink = %self.keys.sink, epoch, "This epoch was archived whole before the restart; skipping its replay.");
                }
                exists
            } else {
                false
            };
            self.epoch = Some(Epoch {
                epoch,
                skip,
                partitions: BTreeMap::new(),
                uploaded: Vec::new(),
            });
        }
        let Some(format) = self.format.clone() else {
            return false;
        };
        for samples in times {
            let Some(open) = self.epoch.as_mut() else {
                return false;
            };
            if open.skip {
                continue;
            }
            let mut touched: Vec<i64> = Vec::new();
            let mut full: Vec<i64> = Vec::new();
            for sample in samples {
                let hour = sample.timestamp.div_euclid(3_600_000);
                let partition = open
                    .partitions
                    .entry(hour)
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
                if !touched.contains(&hour) {
                    touched.push(hour);
                }
            }
            for hour in touched {
                let Some(file) = open.partitions.get_mut(&hour).and_then(|p| p.file.as_mut())
                else {
                    continue;
                };
                if file.buffered() >= format.row_group_rows
                    && let Err(error) = file.flush(&format)
                {
                    add(&self.stats.errors, 1);
                    tracing::error!(%error, sink = %self.keys.sink, "Cannot encode a row group.");
                }
                if file.bytes() >= self.config.max_file_bytes {
                    full.push(hour);
                }
            }
            for hour in full {
                if !self.upload(store, rx, hour).await {
                    return false;
                }
            }
        }
        true
    }

    /// Uploads the file of `hour` in the open epoch; the next one in that
    /// hour gets the next sequence number.
    async fn upload(
        &mut self,
        store: &Store,
        rx: &mpsc::Receiver<(u64, Message)>,
        hour: i64,
    ) -> bool {
        let (Some(open), Some(format)) = (self.epoch.as_mut(), self.format.as_ref()) else {
            return false;
        };
        let Some(partition) = open.partitions.get_mut(&hour) else {
            return true;
        };
        let Some(file) = partition.file.take() else {
            return true;
        };
        let rows = file.rows();
        let key = self.keys.file(hour, open.epoch, partition.seq);
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
        open.uploaded.push(key.clone());
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
        let hours: Vec<i64> = self
            .epoch
            .as_ref()
            .map(|e| e.partitions.keys().copied().collect())
            .unwrap_or_default();
        for hour in hours {
            if !self.upload(store, rx, hour).await {
                return false;
            }
        }
        let Some(open) = self.epoch.take() else {
            return true;
        };
        if open.skip {
            return true;
        }
        let marker = self.keys.marker(epoch);
        let body = Bytes::from(open.uploaded.join("\n") + "\n");
        self.retry(rx, "write an epoch's marker", || {
            store.put(&marker, body.clone())
        })
        .await
        .is_some()
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
    fn keys_are_hive_partitions_named_after_epoch_worker_and_sequence() {
        let keys = Keys {
            pipeline: "p".into(),
            sink: "archive".into(),
            worker: 1,
        };
        // 2026-11-25T07:00:00Z is hour 494_887 since the epoch.
        let hour = 1_795_590_000_000i64 / 3_600_000;
        assert_eq!(
            keys.file(hour, 1_795_590_300_000, 2),
            "pipeline=p/output=archive/date=2026-11-25/hour=07/part-1795590300000-w001-002.parquet"
        );
        assert_eq!(
            keys.marker(1_795_590_300_000),
            "_tidemark/pipeline=p/output=archive/epochs/1795590300000-w001"
        );
    }
}
