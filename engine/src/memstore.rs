//! Where a PromQL evaluation reads samples: the [`Storage`] trait and
//! [`MemStore`], the recent samples of each series in memory. The `alert`
//! transform keeps one per rule group; the `memory` sink keeps one for the
//! query API ([`crate::history`]).

use rustc_hash::FxHashMap;
use std::sync::Arc;

use crate::{Series, SeriesId};
use promql_parser::parser::VectorSelector;

/// Prometheus's staleness marker: a NaN with this bit pattern says that
/// a series ended (it was not in the last scrape, or its rule stopped
/// producing it).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a staleness marker.
#[inline]
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// One sample of a series: event time in milliseconds and value.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub t: i64,
    /// The value (a staleness marker included).
    pub v: f64,
}

/// Samples an evaluation can read.
pub trait Storage {
    /// Calls `each` for every series that matches `selector`, with its
    /// points whose time is in `[start, end]`, oldest first (staleness
    /// markers included); series with no point there may be skipped.
    fn select(
        &self,
        selector: &VectorSelector,
        start: i64,
        end: i64,
        each: &mut dyn FnMut(&Series, &[Point]),
    );
}

/// The points of one series, oldest first; `head` points at the first one
/// kept (trimming moves it, and compacts once half the vector is dead).
#[derive(Debug)]
struct Buffer {
    series: Series,
    points: Vec<Point>,
    head: usize,
}

impl Buffer {
    fn live(&self) -> &[Point] {
        &self.points[self.head..]
    }
}

/// The recent samples of every series it was given, with an inverted
/// index from each label pair (`__name__` included) to the series that
/// have it, so that a selector with an equality matcher reads only its
/// candidates. Samples may arrive out of order; each series keeps its
/// points sorted by time (a sample at a time the series already has
/// replaces it).
#[derive(Debug, Default)]
pub struct MemStore {
    series: FxHashMap<SeriesId, Buffer>,
    /// Series by label pair, in the order they came; ids of series since
    /// forgotten stay until `dead` makes a rebuild worth it.
    postings: FxHashMap<(Arc<str>, Arc<str>), Vec<SeriesId>>,
    /// Forgotten series whose ids are still in `postings`.
    dead: rustc_hash::FxHashSet<SeriesId>,
    points: usize,
    /// Bytes the labels of the series held take, with a fixed overhead
    /// per series (see [`MemStore::bytes`]).
    series_bytes: usize,
}

/// What one series costs beside its label text: its buffer, map entries
/// and index postings, roughly.
const SERIES_OVERHEAD: usize = 160;
/// What one label pair costs beside its text (two reference-counted
/// strings and a posting).
const LABEL_OVERHEAD: usize = 48;

fn series_bytes(series: &Series) -> usize {
    SERIES_OVERHEAD
        + series
            .labels()
            .iter()
            .map(|(n, v)| n.len() + v.len() + LABEL_OVERHEAD)
            .sum::<usize>()
}

impl MemStore {
    /// Adds a sample.
    pub fn insert(&mut self, series: &Series, t: i64, v: f64) {
        let id = series.id();
        let dead = &mut self.dead;
        let held = &mut self.series_bytes;
        let buffer = self.series.entry(id).or_insert_with(|| {
            *held += series_bytes(series);
            // A series that comes back is still in the index.
            let indexed = dead.remove(&id);
            for (n, v) in series.labels().iter().filter(|_| !indexed) {
                self.postings
                    .entry((Arc::clone(n), Arc::clone(v)))
                    .or_default()
                    .push(id);
            }
            Buffer {
                series: series.clone(),
                points: Vec::new(),
                head: 0,
            }
        });
        let live = buffer.live();
        match live.last() {
            Some(last) if last.t >= t => {
                let at = live.partition_point(|p| p.t < t) + buffer.head;
                if buffer.points.get(at).is_some_and(|p| p.t == t) {
                    buffer.points[at].v = v;
                    return;
                }
                buffer.points.insert(at, Point { t, v });
            }
            _ => buffer.points.push(Point { t, v }),
        }
        self.points += 1;
    }

    /// Forgets points older than `before`, and series left with none.
    pub fn trim(&mut self, before: i64) {
        let mut dropped = 0usize;
        let mut emptied = Vec::new();
        for (id, buffer) in self.series.iter_mut() {
            let live = buffer.live();
            let old = live.partition_point(|p| p.t < before);
            if old == 0 {
                continue;
            }
            buffer.head += old;
            dropped += old;
            if buffer.head == buffer.points.len() {
                emptied.push(*id);
            } else if buffer.head * 2 >= buffer.points.len() {
                buffer.points.drain(..buffer.head);
                buffer.head = 0;
            }
        }
        self.points -= dropped;
        for id in emptied {
            if let Some(b) = self.series.remove(&id) {
                self.series_bytes -= series_bytes(&b.series);
            }
            self.dead.insert(id);
        }
        if self.dead.len() > 1024 && self.dead.len() > self.series.len() {
            self.rebuild_postings();
        }
    }

    /// Rebuilds the index from the series held (after many were forgotten).
    fn rebuild_postings(&mut self) {
        self.postings.clear();
        let mut ids: Vec<&Buffer> = self.series.values().collect();
        ids.sort_by_key(|b| b.series.id());
        for b in ids {
            for (n, v) in b.series.labels() {
                self.postings
                    .entry((Arc::clone(n), Arc::clone(v)))
                    .or_default()
                    .push(b.series.id());
            }
        }
        self.dead.clear();
    }

    /// Series held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Points held.
    pub fn point_count(&self) -> usize {
        self.points
    }

    /// Whether the store holds `series`.
    pub fn contains(&self, series: &Series) -> bool {
        self.series.contains_key(&series.id())
    }

    /// An estimate of the memory held: 16 bytes per point, and each
    /// series' labels with a fixed overhead. Label strings shared with
    /// the rest of the process are counted here too, so this errs high.
    pub fn bytes(&self) -> usize {
        self.points * size_of::<Point>() + self.series_bytes
    }

    /// The latest point of a series, if it has one.
    pub fn last(&self, id: SeriesId) -> Option<Point> {
        self.series.get(&id).and_then(|b| b.live().last().copied())
    }

    /// Every series held with its points, oldest first, in the order of
    /// the series' ids (for checkpoints: inserting them into an empty
    /// store gives back one that answers every selection the same).
    pub fn export(&self) -> Vec<(Series, Vec<Point>)> {
        let mut out: Vec<(Series, Vec<Point>)> = self
            .series
            .values()
            .filter(|b| !b.live().is_empty())
            .map(|b| (b.series.clone(), b.live().to_vec()))
            .collect();
        out.sort_by_key(|(s, _)| s.id());
        out
    }
}

/// Whether `series` matches every matcher of `selector` (or one of its
/// `or` groups); the metric name is a matcher like any other.
pub fn selects(selector: &VectorSelector, series: &Series) -> bool {
    use promql_parser::label::Matcher;
    if selector
        .name
        .as_ref()
        .is_some_and(|name| series.name() != name)
    {
        return false;
    }
    let all = |ms: &[Matcher]| {
        ms.iter()
            .all(|m| m.is_match(series.get(&m.name).unwrap_or("")))
    };
    let m = &selector.matchers;
    if m.or_matchers.is_empty() {
        all(&m.matchers)
    } else {
        m.or_matchers.iter().any(|group| all(group))
    }
}

impl Storage for MemStore {
    fn select(
        &self,
        selector: &VectorSelector,
        start: i64,
        end: i64,
        each: &mut dyn FnMut(&Series, &[Point]),
    ) {
        let mut visit = |buffer: &Buffer| {
            if !selects(selector, &buffer.series) {
                return;
            }
            let live = buffer.live();
            let from = live.partition_point(|p| p.t < start);
            let to = live.partition_point(|p| p.t <= end);
            if from < to {
                each(&buffer.series, &live[from..to]);
            }
        };
        match self.candidates(selector) {
            Some(ids) => {
                for id in ids {
                    if let Some(buffer) = self.series.get(id) {
                        visit(buffer);
                    }
                }
            }
            None => self.series.values().for_each(visit),
        }
    }
}

impl MemStore {
    /// The shortest posting list among the selector's equality matchers
    /// with a non-empty value (the metric name included); `None` when it
    /// has none, and then every series is a candidate.
    fn candidates(&self, selector: &VectorSelector) -> Option<&[SeriesId]> {
        use promql_parser::label::MatchOp;
        if !selector.matchers.or_matchers.is_empty() {
            return None;
        }
        let lookup = |name: &str, value: &str| -> &[SeriesId] {
            self.postings
                .get(&(Arc::from(name), Arc::from(value)))
                .map_or(&[][..], |v| v.as_slice())
        };
        let mut best: Option<&[SeriesId]> = selector
            .name
            .as_deref()
            .map(|n| lookup(crate::series::METRIC_NAME_LABEL, n));
        for m in &selector.matchers.matchers {
            if m.op == MatchOp::Equal && !m.value.is_empty() {
                let ids = lookup(&m.name, &m.value);
                if best.is_none_or(|b| ids.len() < b.len()) {
                    best = Some(ids);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(text: &str) -> VectorSelector {
        match promql_parser::parser::parse(text).unwrap() {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            other => panic!("{other:?}"),
        }
    }

    fn collect(store: &MemStore, sel: &str, start: i64, end: i64) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        store.select(&selector(sel), start, end, &mut |s, ps| {
            out.push((s.to_string(), ps.iter().map(|p| p.t).collect()))
        });
        out.sort();
        out
    }

    #[test]
    fn keeps_points_sorted_and_selects_closed_ranges() {
        let mut store = MemStore::default();
        let a = Series::new("a", [("x", "1")]);
        for t in [10, 30, 20, 40, 30] {
            store.insert(&a, t, t as f64);
        }
        assert_eq!(store.point_count(), 4);
        assert_eq!(
            collect(&store, "a", 20, 30),
            vec![("a{x=\"1\"}".into(), vec![20, 30])]
        );
        assert!(collect(&store, r#"a{x="2"}"#, 0, 100).is_empty());
        assert_eq!(collect(&store, r#"{__name__=~"a|b"}"#, 0, 100).len(), 1);
        store.trim(25);
        assert_eq!(store.point_count(), 2);
        assert_eq!(collect(&store, "a", 0, 100)[0].1, vec![30, 40]);
        store.trim(100);
        assert_eq!(store.series_count(), 0);
        assert!(collect(&store, "a", 0, 1000).is_empty());
        // A series that comes back is found once.
        store.insert(&a, 200, 1.0);
        assert_eq!(collect(&store, r#"a{x="1"}"#, 0, 1000).len(), 1);
        assert_eq!(collect(&store, "a", 0, 1000).len(), 1);
    }

    #[test]
    fn stale_markers_are_recognised() {
        assert!(is_stale(f64::from_bits(STALE_NAN)));
        assert!(!is_stale(f64::NAN));
    }
}
