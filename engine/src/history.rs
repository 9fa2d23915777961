//! The hub between `memory` sinks and the query API: each sink's recent
//! samples in a [`MemStore`], bounded in time (`retention`, counted back
//! from the sink's event-time frontier), in series and in bytes.
//!
//! The sink writes on a timely worker and must never wait for a query, so
//! it takes the store's lock only when it is free ([`History::try_insert`])
//! and keeps its samples until then; queries take the read lock for one
//! evaluation step at a time.
//!
//! Limits, as Prometheus and VictoriaMetrics apply theirs: a sample of a
//! new series past `max_series` is refused and counted (the series already
//! held keep their history); past `max_bytes` the oldest points go first,
//! by shortening the retention actually kept, which grows back to the
//! configured one once there is room. Both are in `/metrics`.
//!
//! Past what a history holds, queries read the archives that sinks write
//! ([`Archive`]: the `parquet` sink's files): a sink registers its archive
//! here with the streams it reads, and a `memory` sink of the same
//! pipeline reading the same streams *covers* the archive from the oldest
//! time it still holds ([`History::covered_from`]), so the archive is read
//! only before that time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use futures_util::future::BoxFuture;
use promql_parser::parser::VectorSelector;

use crate::memstore::{MemStore, Point};
use crate::{Sample, Series};

/// How much a `memory` sink keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Milliseconds of event time kept behind the frontier.
    pub retention: i64,
    /// Series held at most.
    pub max_series: usize,
    /// Bytes held at most (as [`MemStore::bytes`] estimates them).
    pub max_bytes: usize,
}

/// One `memory` sink's recent samples.
#[derive(Debug)]
pub struct History {
    store: RwLock<MemStore>,
    limits: HistoryLimits,
    /// Retention actually kept now (shorter than the limit while memory
    /// is short).
    kept: AtomicI64,
    /// The sink's event-time frontier (`i64::MIN` before any).
    frontier: AtomicI64,
    /// The oldest time of a sample stored since the history began
    /// (`i64::MAX` before any).
    first: AtomicI64,
    /// The newest time of a sample stored (`i64::MIN` before any).
    newest: AtomicI64,
    /// Points forgotten before their retention to stay under `max_bytes`.
    pub evicted: AtomicU64,
    series: AtomicU64,
    points: AtomicU64,
    bytes: AtomicU64,
}

impl History {
    /// An empty history with these limits.
    pub fn new(limits: HistoryLimits) -> History {
        History {
            store: RwLock::new(MemStore::default()),
            limits,
            kept: AtomicI64::new(limits.retention),
            frontier: AtomicI64::new(i64::MIN),
            first: AtomicI64::new(i64::MAX),
            newest: AtomicI64::new(i64::MIN),
            evicted: AtomicU64::new(0),
            series: AtomicU64::new(0),
            points: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Its limits.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Adds `samples` if the store is free now, and then empties the
    /// vector; leaves it as it is (for a later try) if a query holds the
    /// store. Returns how many were refused for `max_series`, or `None`
    /// when nothing was added.
    pub fn try_insert(&self, samples: &mut Vec<Sample>) -> Option<u64> {
        match self.store.try_write() {
            Ok(mut store) => Some(self.insert_into(&mut store, samples)),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                Some(self.insert_into(&mut p.into_inner(), samples))
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Adds `samples`, waiting for the store if a query holds it, and
    /// empties the vector. Returns how many were refused for `max_series`.
    pub fn insert(&self, samples: &mut Vec<Sample>) -> u64 {
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        self.insert_into(&mut store, samples)
    }

    fn insert_into(&self, store: &mut MemStore, samples: &mut Vec<Sample>) -> u64 {
        let mut refused = 0u64;
        let floor = self
            .frontier
            .load(Ordering::Relaxed)
            .saturating_sub(self.kept.load(Ordering::Relaxed));
        for s in samples.drain(..) {
            if s.timestamp < floor {
                // Already past the retention: it would be trimmed at once.
                continue;
            }
            if store.series_count() >= self.limits.max_series && !store.contains(&s.series) {
                refused += 1;
                continue;
            }
            self.first.fetch_min(s.timestamp, Ordering::Relaxed);
            self.newest.fetch_max(s.timestamp, Ordering::Relaxed);
            store.insert(&s.series, s.timestamp, s.value);
        }
        self.publish(store);
        refused
    }

    /// The sink's frontier moved to `frontier`: forgets what is older
    /// than the retention, and more while over `max_bytes`. Waits for
    /// queries (it runs once per frontier change, not per batch).
    pub fn advance(&self, frontier: i64) {
        self.frontier.store(frontier, Ordering::Relaxed);
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.kept.load(Ordering::Relaxed);
        store.trim(frontier.saturating_sub(kept));
        // Over the byte limit: keep three quarters of the time, until under.
        while store.bytes() > self.limits.max_bytes && kept > 1000 {
            kept = kept * 3 / 4;
            let before = store.point_count();
            store.trim(frontier.saturating_sub(kept));
            self.evicted
                .fetch_add((before - store.point_count()) as u64, Ordering::Relaxed);
        }
        // Room again: let the retention grow back.
        if kept < self.limits.retention && store.bytes() < self.limits.max_bytes / 2 {
            kept = (kept * 5 / 4 + 1).min(self.limits.retention);
        }
        self.kept.store(kept, Ordering::Relaxed);
        self.publish(&store);
    }

    /// The sink's input ended: the history keeps the retention behind its
    /// newest sample (as if the frontier were just past it), for queries
    /// after a finite run.
    pub fn finish(&self) {
        let newest = self.newest.load(Ordering::Relaxed);
        if newest != i64::MIN {
            self.advance(newest.saturating_add(1));
        }
    }

    fn publish(&self, store: &MemStore) {
        self.series
            .store(store.series_count() as u64, Ordering::Relaxed);
        self.points
            .store(store.point_count() as u64, Ordering::Relaxed);
        self.bytes.store(store.bytes() as u64, Ordering::Relaxed);
    }

    /// Reads the store (queries); hold it briefly, the sink waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, MemStore> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The sink's event-time frontier, if it has one.
    pub fn frontier(&self) -> Option<i64> {
        Some(self.frontier.load(Ordering::Relaxed)).filter(|&f| f != i64::MIN)
    }

    /// The oldest time from which the history holds every sample its sink
    /// was given: the later of the first sample it stored and the
    /// retention kept behind the frontier. `None` before any sample.
    pub fn covered_from(&self) -> Option<i64> {
        let first = self.first.load(Ordering::Relaxed);
        if first == i64::MAX {
            return None;
        }
        let kept_from = self
            .frontier()
            .map_or(i64::MIN, |f| f.saturating_sub(self.retention_kept()));
        Some(first.max(kept_from))
    }

    /// Milliseconds of retention kept now.
    pub fn retention_kept(&self) -> i64 {
        self.kept.load(Ordering::Relaxed)
    }

    /// Series held (as of the last write).
    pub fn series(&self) -> u64 {
        self.series.load(Ordering::Relaxed)
    }

    /// Points held (as of the last write).
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::Relaxed)
    }

    /// Estimated bytes held (as of the last write).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One selection an archive is asked for: the series `selector` picks,
/// with their points in `[start, end]`.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// Which series.
    pub selector: VectorSelector,
    /// The first time wanted, in milliseconds.
    pub start: i64,
    /// The last time wanted (inclusive).
    pub end: i64,
}

/// Series with their points, oldest first, one entry per series.
pub type Found = Vec<(Series, Vec<Point>)>;

/// Why an archive gave no answer; each message names the archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The selection holds more points than it may.
    #[error("{0}")]
    TooMany(String),
    /// The store could not be read (unreachable, a damaged file).
    #[error("{0}")]
    Unreadable(String),
}

/// Samples a sink wrote somewhere the query API can read them back: the
/// tier past a `memory` sink's retention.
pub trait Archive: Send + Sync {
    /// Every series some `wanted` entry selects, with its points in that
    /// entry's range (the union over the entries that select it), one
    /// entry per series, points oldest first and one per time. More than
    /// `max_points` points in all is an error, as is a store that cannot
    /// be read; both say which archive and why.
    fn select<'a>(
        &'a self,
        wanted: &'a [Wanted],
        max_points: usize,
    ) -> BoxFuture<'a, Result<Found, ArchiveError>>;

    /// Where it is, for messages (`file:///data/archive`, `s3://bucket/x`).
    fn describe(&self) -> String;
}

/// An archive as the query API reads it.
#[derive(Clone)]
pub struct ArchiveTier {
    /// The pipeline whose sink writes it.
    pub pipeline: String,
    /// The sink.
    pub sink: String,
    /// The archive.
    pub archive: Arc<dyn Archive>,
    /// Times from this one on are held by a `memory` sink of the same
    /// pipeline reading the same streams: the archive is read only
    /// before it. `None`: no such sink (or it holds nothing yet).
    pub covered_from: Option<i64>,
}

impl std::fmt::Debug for ArchiveTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveTier")
            .field("pipeline", &self.pipeline)
            .field("sink", &self.sink)
            .field("archive", &self.archive.describe())
            .field("covered_from", &self.covered_from)
            .finish()
    }
}

/// A `memory` sink's history and the streams it reads, by pipeline and
/// sink.
type Outputs = HashMap<(String, String), (Arc<History>, Vec<String>)>;

/// A registered archive and the streams its sink reads.
struct Archived {
    archive: Arc<dyn Archive>,
    inputs: Vec<String>,
}

/// Every `memory` sink of the process, by pipeline and sink, with the
/// streams each reads; and the archives sinks registered for queries.
#[derive(Default)]
pub struct Histories {
    outputs: Mutex<Outputs>,
    archives: Mutex<HashMap<(String, String), Archived>>,
}

impl std::fmt::Debug for Histories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histories")
            .field("outputs", &self.list().len())
            .field("archives", &self.archives().len())
            .finish()
    }
}

/// Input names in one order, so that sinks reading the same streams
/// compare equal.
fn sorted(inputs: &[String]) -> Vec<String> {
    let mut inputs = inputs.to_vec();
    inputs.sort();
    inputs.dedup();
    inputs
}

impl Histories {
    /// The history of a sink reading `inputs`, created on first use; a
    /// sink whose limits changed (its pipeline was replaced) starts a new
    /// one.
    pub fn output(
        &self,
        pipeline: &str,
        sink: &str,
        inputs: &[String],
        limits: HistoryLimits,
    ) -> Arc<History> {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (pipeline.to_owned(), sink.to_owned());
        let inputs = sorted(inputs);
        match outputs.get_mut(&key) {
            Some((h, held)) if h.limits == limits => {
                *held = inputs;
                Arc::clone(h)
            }
            _ => {
                let h = Arc::new(History::new(limits));
                outputs.insert(key, (Arc::clone(&h), inputs));
                h
            }
        }
    }

    /// Registers the archive a sink of `pipeline` writes from `inputs`,
    /// replacing the one it had.
    pub fn archive(
        &self,
        pipeline: &str,
        sink: &str,
        inputs: &[String],
        archive: Arc<dyn Archive>,
    ) {
        self.archives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (pipeline.to_owned(), sink.to_owned()),
                Archived {
                    archive,
                    inputs: sorted(inputs),
                },
            );
    }

    /// Forgets a pipeline's archives (when it is replaced: its new sinks
    /// register theirs as they are built).
    pub fn forget_archives(&self, pipeline: &str) {
        self.archives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _), _| p != pipeline);
    }

    /// Every archive, sorted by pipeline and sink, each with the time a
    /// `memory` sink covers it from.
    pub fn archives(&self) -> Vec<ArchiveTier> {
        let archives = self.archives.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<ArchiveTier> = archives
            .iter()
            .map(|((pipeline, sink), a)| ArchiveTier {
                pipeline: pipeline.clone(),
                sink: sink.clone(),
                archive: Arc::clone(&a.archive),
                covered_from: outputs
                    .iter()
                    .filter(|((p, _), (_, inputs))| p == pipeline && *inputs == a.inputs)
                    .filter_map(|(_, (h, _))| h.covered_from())
                    .min(),
            })
            .collect();
        all.sort_by(|a, b| (&a.pipeline, &a.sink).cmp(&(&b.pipeline, &b.sink)));
        all
    }

    /// Every history: (pipeline, sink, history), sorted.
    pub fn list(&self) -> Vec<(String, String, Arc<History>)> {
        let outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = outputs
            .iter()
            .map(|((p, s), (h, _))| (p.clone(), s.clone(), Arc::clone(h)))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Forgets a pipeline's histories and archives (when it is deleted).
    pub fn remove_pipeline(&self, pipeline: &str) {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _), _| p != pipeline);
        self.forget_archives(pipeline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    fn limits(max_series: usize, max_bytes: usize) -> HistoryLimits {
        HistoryLimits {
            retention: 60_000,
            max_series,
            max_bytes,
        }
    }

    fn samples(hosts: usize, t: i64) -> Vec<Sample> {
        (0..hosts)
            .map(|h| Sample::new(Series::new("cpu", [("host", h.to_string())]), t, 1.0))
            .collect()
    }

    #[test]
    fn keeps_the_retention_behind_the_frontier() {
        let h = History::new(limits(100, 1 << 30));
        for t in (0..=120_000).step_by(10_000) {
            assert_eq!(h.try_insert(&mut samples(3, t)), Some(0));
            h.advance(t + 1);
        }
        // Points at 70 s..=120 s are within 60 s of the frontier 120.001 s.
        assert_eq!(h.points(), 3 * 6);
        assert_eq!(h.series(), 3);
        // A sample older than what is kept is not stored.
        h.insert(&mut samples(1, 0));
        assert_eq!(h.points(), 18);
    }

    #[test]
    fn refuses_new_series_past_the_limit_and_counts_them() {
        let h = History::new(limits(2, 1 << 30));
        assert_eq!(h.insert(&mut samples(3, 0)), 1);
        assert_eq!(h.series(), 2);
        // The series held still take new points.
        assert_eq!(h.insert(&mut samples(2, 1000)), 0);
        assert_eq!(h.points(), 4);
    }

    #[test]
    fn shortens_retention_while_over_the_byte_limit_then_grows_back() {
        let h = History::new(limits(1000, 8_000));
        for t in (0..60_000).step_by(1000) {
            h.insert(&mut samples(10, t));
        }
        let before = h.bytes();
        assert!(before > 8_000, "{before}");
        h.advance(60_000);
        assert!(h.bytes() <= 8_000, "{}", h.bytes());
        assert!(h.evicted.load(Ordering::Relaxed) > 0);
        assert!(h.retention_kept() < 60_000);
        // The newest points are the ones kept.
        assert_eq!(
            h.read().last(samples(1, 0)[0].series.id()).map(|p| p.t),
            Some(59_000)
        );
        // Everything gone (the frontier moved on): the retention comes back.
        for _ in 0..40 {
            h.advance(1_000_000);
        }
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.retention_kept(), 60_000);
    }

    #[test]
    fn a_query_holding_the_store_makes_the_sink_keep_its_samples() {
        let h = History::new(limits(100, 1 << 30));
        let mut batch = samples(2, 0);
        {
            let _reading = h.read();
            assert_eq!(h.try_insert(&mut batch), None);
            assert_eq!(batch.len(), 2);
        }
        assert_eq!(h.try_insert(&mut batch), Some(0));
        assert!(batch.is_empty());
        assert_eq!(h.points(), 2);
    }

    #[test]
    fn a_replaced_sink_with_other_limits_starts_afresh() {
        let hub = Histories::default();
        let inputs = ["w".to_owned()];
        let a = hub.output("p", "m", &inputs, limits(10, 1000));
        assert!(Arc::ptr_eq(
            &a,
            &hub.output("p", "m", &inputs, limits(10, 1000))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &hub.output("p", "m", &inputs, limits(11, 1000))
        ));
        hub.remove_pipeline("p");
        assert!(hub.list().is_empty());
    }

    #[test]
    fn at_the_end_keeps_the_retention_behind_the_newest_sample() {
        let h = History::new(limits(100, 1 << 30));
        h.finish();
        for t in (0..=300_000).step_by(10_000) {
            h.insert(&mut samples(1, t));
        }
        assert_eq!(h.points(), 31);
        h.finish();
        // 60 s behind 300.001 s: 250 s..=300 s.
        assert_eq!(h.points(), 6);
        assert_eq!(h.covered_from(), Some(240_001));
    }

    #[test]
    fn covers_from_the_first_sample_or_the_retention_whichever_is_later() {
        let h = History::new(limits(100, 1 << 30));
        assert_eq!(h.covered_from(), None);
        h.insert(&mut samples(2, 50_000));
        h.insert(&mut samples(2, 40_000));
        // No frontier yet: from the oldest sample stored.
        assert_eq!(h.covered_from(), Some(40_000));
        h.advance(90_000);
        assert_eq!(h.covered_from(), Some(40_000));
        // 60 s of retention behind 200 s.
        h.advance(200_000);
        assert_eq!(h.covered_from(), Some(140_000));
    }

    struct Nothing;

    impl Archive for Nothing {
        fn select<'a>(
            &'a self,
            _wanted: &'a [Wanted],
            _max_points: usize,
        ) -> BoxFuture<'a, Result<Found, ArchiveError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn describe(&self) -> String {
            "nothing".into()
        }
    }

    #[test]
    fn an_archive_is_covered_by_a_memory_sink_of_its_pipeline_reading_the_same_streams() {
        let hub = Histories::default();
        let (w, raw) = (vec!["w".to_owned()], vec!["raw".to_owned()]);
        hub.archive("p", "archive", &w, Arc::new(Nothing));
        hub.archive("q", "archive", &w, Arc::new(Nothing));
        let covered = |hub: &Histories| -> Vec<(String, Option<i64>)> {
            hub.archives()
                .into_iter()
                .map(|a| (a.pipeline, a.covered_from))
                .collect()
        };
        // Another stream's memory sink does not cover it, nor another
        // pipeline's, nor one that holds nothing yet.
        hub.output("p", "raw", &raw, limits(10, 1 << 20))
            .insert(&mut samples(1, 5_000));
        hub.output("q", "recent", &w, limits(10, 1 << 20))
            .insert(&mut samples(1, 7_000));
        let recent = hub.output("p", "recent", &w, limits(10, 1 << 20));
        assert_eq!(
            covered(&hub),
            [("p".to_owned(), None), ("q".to_owned(), Some(7_000))]
        );
        recent.insert(&mut samples(1, 9_000));
        assert_eq!(
            covered(&hub),
            [("p".to_owned(), Some(9_000)), ("q".to_owned(), Some(7_000))]
        );
        hub.forget_archives("q");
        assert_eq!(covered(&hub), [("p".to_owned(), Some(9_000))]);
        hub.remove_pipeline("p");
        assert!(hub.archives().is_empty());
    }
}
