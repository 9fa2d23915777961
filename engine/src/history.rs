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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::Sample;
use crate::memstore::MemStore;

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

/// Every `memory` sink of the process, by pipeline and sink.
#[derive(Debug, Default)]
pub struct Histories {
    outputs: Mutex<HashMap<(String, String), Arc<History>>>,
}

impl Histories {
    /// The history of a sink, created on first use; a sink whose limits
    /// changed (its pipeline was replaced) starts a new one.
    pub fn output(&self, pipeline: &str, sink: &str, limits: HistoryLimits) -> Arc<History> {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (pipeline.to_owned(), sink.to_owned());
        match outputs.get(&key) {
            Some(h) if h.limits == limits => Arc::clone(h),
            _ => {
                let h = Arc::new(History::new(limits));
                outputs.insert(key, Arc::clone(&h));
                h
            }
        }
    }

    /// Every history: (pipeline, sink, history), sorted.
    pub fn list(&self) -> Vec<(String, String, Arc<History>)> {
        let outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = outputs
            .iter()
            .map(|((p, s), h)| (p.clone(), s.clone(), Arc::clone(h)))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Forgets a pipeline's histories (when it is deleted).
    pub fn remove_pipeline(&self, pipeline: &str) {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _), _| p != pipeline);
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
        let a = hub.output("p", "m", limits(10, 1000));
        assert!(Arc::ptr_eq(&a, &hub.output("p", "m", limits(10, 1000))));
        assert!(!Arc::ptr_eq(&a, &hub.output("p", "m", limits(11, 1000))));
        hub.remove_pipeline("p");
        assert!(hub.list().is_empty());
    }
}
