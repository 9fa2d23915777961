//! Alert episodes from `ALERTS` samples: per series, a run of `firing`
//! samples no more than `gap` apart is one episode. It starts at its first
//! sample, ends `gap` after its last one (or at a staleness marker), and
//! retires `horizon` after it ended. Samples must come in event-time order
//! per series (the operator buffers up to the watermark).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use tidemark_engine::{Sample, Series};

use super::model::{EpKey, LabelSet, edge_of};

/// What the tracker tells the rest of the operator, each at its event
/// time `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Episode {
    /// An episode started (`at` is its start).
    Started {
        /// Its key.
        key: EpKey,
        /// The alert's labels (no `__name__`, no `alertstate`).
        labels: Series,
    },
    /// A firing sample of an episode, to be labelled with its incident.
    Sample {
        /// The episode.
        key: EpKey,
        /// The `ALERTS` sample as it came.
        sample: Sample,
    },
    /// It ended at `end`.
    Ended {
        /// Its key.
        key: EpKey,
        /// When it stopped: its staleness marker's time (the step its
        /// alert resolved), or, for one ended by the gap, its last firing
        /// sample.
        end: u64,
    },
    /// It retired: resolved longer than the horizon ago.
    Retired {
        /// Its key.
        key: EpKey,
        /// Its labels (to take back its join keys).
        labels: Series,
    },
    /// An episode's start left the co-occurrence history (`history`
    /// after it started).
    Forgotten {
        /// Its key.
        key: EpKey,
        /// Its labels (to take back its identity's start).
        labels: Series,
    },
    /// An episode the tracker held at the checkpoint it was restored
    /// from, given again (before the restored time) to rebuild what the
    /// rest of the operator derives from episodes.
    Restored {
        /// Its key.
        key: EpKey,
        /// Its labels.
        labels: Series,
        /// It has not retired (it is in the dataflow's collections).
        live: bool,
        /// Its start is in the co-occurrence history.
        remembered: bool,
        /// When it stopped, if it has ended.
        end: Option<u64>,
    },
    /// An edge sample's series added its edge to the topology (`diff` 1)
    /// or took it back (-1).
    Edge {
        /// The dependent entity.
        from: LabelSet,
        /// What it depends on.
        to: LabelSet,
        /// 1 or -1.
        diff: isize,
    },
}

/// An episode that has not ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Open {
    start: u64,
    last: u64,
    labels: Series,
}

/// What a sample is to the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A firing alert's sample.
    Firing,
    /// A staleness marker: the alert's series ended.
    Stale,
    /// Not a firing alert (`pending`, or not an `ALERTS` series).
    Other,
}

/// Whether a sample is a firing `ALERTS` sample.
pub fn kind(sample: &Sample) -> Kind {
    if sample.series.name() != "ALERTS" || sample.series.get("alertstate") != Some("firing") {
        Kind::Other
    } else if sample.value.to_bits() == tidemark_promql::STALE_NAN {
        Kind::Stale
    } else {
        Kind::Firing
    }
}

/// The alert's labels: the sample's without `__name__` and `alertstate`.
pub fn alert_labels(series: &Series) -> Series {
    Series::new("", series.tags().filter(|(n, _)| *n != "alertstate"))
}

/// Whether a sample is an edge sample: of the edge metric, not an alert.
pub fn is_edge(sample: &Sample, metric: Option<&str>) -> bool {
    metric.is_some_and(|m| sample.series.name() == m)
}

/// Whether an edge sample says its edge is there: any value but 0 and
/// the staleness marker.
fn edge_present(value: f64) -> bool {
    value != 0.0 && value.to_bits() != tidemark_promql::STALE_NAN
}

/// The episodes of the series of one worker, and the edges of its edge
/// series.
#[derive(Debug)]
pub struct Tracker {
    gap: u64,
    horizon: u64,
    /// The metric of edge samples, if the topology comes from the input.
    edge_metric: Option<String>,
    /// Edge series whose edge is there.
    edges: FxHashMap<u64, (LabelSet, LabelSet)>,
    /// How long starts are remembered for the co-occurrence rule, if on.
    history: Option<u64>,
    /// Starts remembered, by when they are forgotten.
    remembered: BTreeMap<u64, Vec<(EpKey, Series)>>,
    open: FxHashMap<u64, Open>,
    /// Episodes that ended, by when they retire: (series, key, labels,
    /// when it stopped).
    ending: BTreeMap<u64, Vec<(u64, EpKey, Series, u64)>>,
    /// The time up to which everything was applied.
    done: u64,
}

impl Tracker {
    /// A tracker with these durations (ms).
    pub fn new(gap: u64, horizon: u64) -> Tracker {
        Tracker {
            gap,
            horizon,
            edge_metric: None,
            edges: FxHashMap::default(),
            history: None,
            remembered: BTreeMap::new(),
            open: FxHashMap::default(),
            ending: BTreeMap::new(),
            done: 0,
        }
    }

    /// Also reads edge samples: samples of `metric` whose `from_*` and
    /// `to_*` labels name an edge (see [`edge_of`]).
    pub fn with_edges(mut self, metric: Option<String>) -> Tracker {
        self.edge_metric = metric;
        self
    }

    /// Also remembers every start for `history` and says when it is
    /// forgotten ([`Episode::Forgotten`]), for the co-occurrence rule.
    pub fn with_history(mut self, history: Option<u64>) -> Tracker {
        self.history = history;
        self
    }

    /// Applies everything due before `t` (episodes that ended or retired),
    /// then the samples at `t`: firing alerts and edges. `t` never goes
    /// back.
    pub fn step(&mut self, t: u64, samples: &[Sample], out: &mut Vec<(u64, Episode)>) {
        self.advance(t, out);
        // What is due at `t` happens before the samples of `t`, whether
        // this worker has samples at `t` or not (and however the input
        // came in batches).
        self.retire(t + 1, out);
        self.forget(t + 1, out);
        for sample in samples {
            let id = sample.series.id().0;
            if is_edge(sample, self.edge_metric.as_deref()) {
                self.edge(t, id, sample, out);
                continue;
            }
            match kind(sample) {
                Kind::Other => {}
                Kind::Stale => {
                    if let Some(open) = self.open.remove(&id) {
                        self.end(id, open, t, t, out);
                    }
                }
                Kind::Firing => match self.open.get_mut(&id) {
                    Some(open) => {
                        open.last = t;
                        out.push((
                            t,
                            Episode::Sample {
                                key: (open.start, id),
                                sample: sample.clone(),
                            },
                        ));
                    }
                    None => {
                        let labels = alert_labels(&sample.series);
                        let key = (t, id);
                        if let Some(h) = self.history {
                            self.remembered
                                .entry(t.saturating_add(h.max(1)))
                                .or_default()
                                .push((key, labels.clone()));
                        }
                        out.push((
                            t,
                            Episode::Started {
                                key,
                                labels: labels.clone(),
                            },
                        ));
                        out.push((
                            t,
                            Episode::Sample {
                                key,
                                sample: sample.clone(),
                            },
                        ));
                        self.open.insert(
                            id,
                            Open {
                                start: t,
                                last: t,
                                labels,
                            },
                        );
                    }
                },
            }
        }
    }

    /// An edge sample: its edge is added when its series says it is
    /// there and was not, taken back when the series says it is not (a
    /// 0 or a staleness marker) and was.
    fn edge(&mut self, t: u64, id: u64, sample: &Sample, out: &mut Vec<(u64, Episode)>) {
        let present = edge_present(sample.value);
        match (self.edges.contains_key(&id), present) {
            (false, true) => {
                if let Some((from, to)) = edge_of(&sample.series) {
                    out.push((
                        t,
                        Episode::Edge {
                            from: from.clone(),
                            to: to.clone(),
                            diff: 1,
                        },
                    ));
                    self.edges.insert(id, (from, to));
                }
            }
            (true, false) => {
                if let Some((from, to)) = self.edges.remove(&id) {
                    out.push((t, Episode::Edge { from, to, diff: -1 }));
                }
            }
            _ => {}
        }
    }

    /// Applies everything due before `t` without samples: an episode
    /// whose last sample is more than `gap` before `t` has ended, one that
    /// retires before `t` has retired.
    pub fn advance(&mut self, t: u64, out: &mut Vec<(u64, Episode)>) {
        if t < self.done {
            return;
        }
        self.done = t;
        let ended: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.last.saturating_add(self.gap) < t)
            .map(|(&id, _)| id)
            .collect();
        let mut ended: Vec<(u64, Open)> = ended
            .into_iter()
            .filter_map(|id| self.open.remove(&id).map(|o| (id, o)))
            .collect();
        ended.sort_by_key(|(id, o)| (o.last, *id));
        for (id, open) in ended {
            let (at, last) = (open.last + self.gap, open.last);
            self.end(id, open, at, last, out);
        }
        self.retire(t, out);
        self.forget(t, out);
    }

    /// Retires the episodes due before `t`: one that retires at `r` is
    /// held while the time is before `r`.
    fn retire(&mut self, t: u64, out: &mut Vec<(u64, Episode)>) {
        while let Some(entry) = self.ending.first_entry() {
            if *entry.key() >= t {
                break;
            }
            let (at, list) = entry.remove_entry();
            for (_, key, labels, _) in list {
                out.push((at, Episode::Retired { key, labels }));
            }
        }
    }

    /// Forgets the starts remembered until before `t`: a start is in
    /// the history from its time `s` while the time is before `s +
    /// history`.
    fn forget(&mut self, t: u64, out: &mut Vec<(u64, Episode)>) {
        while let Some(entry) = self.remembered.first_entry() {
            if *entry.key() >= t {
                break;
            }
            let (at, list) = entry.remove_entry();
            for (key, labels) in list {
                out.push((at, Episode::Forgotten { key, labels }));
            }
        }
    }

    /// Ends `open` at `at` (the event), having stopped at `end`.
    fn end(&mut self, id: u64, open: Open, at: u64, end: u64, out: &mut Vec<(u64, Episode)>) {
        let key = (open.start, id);
        out.push((at, Episode::Ended { key, end }));
        self.ending
            .entry(at.saturating_add(self.horizon).max(at + 1))
            .or_default()
            .push((id, key, open.labels, end));
    }

    /// The earliest time something is due without new samples.
    pub fn next_due(&self) -> Option<u64> {
        let ends = self.open.values().map(|o| o.last + self.gap + 1).min();
        let retires = self.ending.keys().next().copied();
        let forgets = self.remembered.keys().next().copied();
        ends.into_iter().chain(retires).chain(forgets).min()
    }

    /// Episodes not yet retired (open or ended).
    pub fn len(&self) -> usize {
        self.open.len() + self.ending.values().map(Vec::len).sum::<usize>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every series' state, for a checkpoint: its open episode, its ended
    /// ones, its starts in the history and its edge, by series id.
    pub fn snapshot(&self) -> FxHashMap<u64, Saved> {
        let mut saved: FxHashMap<u64, Saved> = FxHashMap::default();
        for (id, open) in &self.open {
            saved.entry(*id).or_default().open = Some(open.clone());
        }
        for (at, list) in &self.ending {
            for (id, key, labels, end) in list {
                let e = (*at, *key, labels.clone(), *end);
                saved.entry(*id).or_default().ending.push(e);
            }
        }
        for (at, list) in &self.remembered {
            for (key, labels) in list {
                let r = (*at, *key, labels.clone());
                saved.entry(key.1).or_default().remembered.push(r);
            }
        }
        for (id, edge) in &self.edges {
            saved.entry(*id).or_default().edge = Some(edge.clone());
        }
        saved
    }

    /// Adds one series' state from a checkpoint.
    pub fn restore(&mut self, id: u64, saved: Saved) {
        if let Some(open) = saved.open {
            self.open.insert(id, open);
        }
        for (at, key, labels, end) in saved.ending {
            self.ending
                .entry(at)
                .or_default()
                .push((id, key, labels, end));
        }
        for (at, key, labels) in saved.remembered {
            self.remembered.entry(at).or_default().push((key, labels));
        }
        if let Some(edge) = saved.edge {
            self.edges.insert(id, edge);
        }
    }

    /// After a restore, everything up to `done` is applied: the episodes
    /// and edges held, as [`Episode::Restored`] and [`Episode::Edge`]
    /// events, in a fixed order.
    pub fn restored(&mut self, done: u64) -> Vec<Episode> {
        self.done = done;
        let remembered: FxHashMap<EpKey, &Series> = self
            .remembered
            .values()
            .flatten()
            .map(|(k, l)| (*k, l))
            .collect();
        let mut out = Vec::new();
        let mut live = Vec::new();
        for (id, o) in &self.open {
            live.push(((o.start, *id), &o.labels, None));
        }
        for (_, key, labels, end) in self.ending.values().flatten() {
            live.push((*key, labels, Some(*end)));
        }
        live.sort_by_key(|(key, ..)| *key);
        for (key, labels, end) in &live {
            out.push(Episode::Restored {
                key: *key,
                labels: (*labels).clone(),
                live: true,
                remembered: remembered.contains_key(key),
                end: *end,
            });
        }
        let held: std::collections::BTreeSet<EpKey> = live.iter().map(|(k, ..)| *k).collect();
        let mut past: Vec<(EpKey, &Series)> = remembered
            .iter()
            .filter(|(k, _)| !held.contains(k))
            .map(|(k, l)| (*k, *l))
            .collect();
        past.sort_by_key(|(key, _)| *key);
        for (key, labels) in past {
            out.push(Episode::Restored {
                key,
                labels: labels.clone(),
                live: false,
                remembered: true,
                end: None,
            });
        }
        let mut edges: Vec<_> = self.edges.iter().collect();
        edges.sort_by_key(|(id, _)| **id);
        for (_, (from, to)) in edges {
            out.push(Episode::Edge {
                from: from.clone(),
                to: to.clone(),
                diff: 1,
            });
        }
        out
    }
}

/// One series' state in a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    open: Option<Open>,
    /// (retires at, key, labels, stopped at).
    ending: Vec<(u64, EpKey, Series, u64)>,
    /// (forgotten at, key, labels).
    remembered: Vec<(u64, EpKey, Series)>,
    edge: Option<(LabelSet, LabelSet)>,
    /// Its samples not applied yet (after the cut less the lateness).
    pub waiting: Vec<Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing(host: &str, t: i64) -> Sample {
        let series = Series::new(
            "ALERTS",
            [
                ("alertname", "Down"),
                ("host", host),
                ("alertstate", "firing"),
            ],
        );
        Sample::new(series, t, 1.0)
    }

    /// An episode that a staleness marker ends stopped then (the step its
    /// alert resolved: one from an alert stream has a single firing
    /// sample); one the gap ends stopped at its last firing sample.
    #[test]
    fn an_episode_stops_at_its_marker_or_its_last_sample() {
        let mut tracker = Tracker::new(60_000, 3_600_000);
        let mut out = Vec::new();
        tracker.step(0, &[firing("a", 0), firing("b", 0)], &mut out);
        tracker.step(10_000, &[firing("b", 10_000)], &mut out);
        let mut stale = firing("a", 30_000);
        stale.value = f64::from_bits(tidemark_promql::STALE_NAN);
        tracker.step(30_000, &[stale], &mut out);
        tracker.advance(100_000, &mut out);
        let ends: Vec<(u64, u64)> = out
            .iter()
            .filter_map(|(at, e)| match e {
                Episode::Ended { end, .. } => Some((*at, *end)),
                _ => None,
            })
            .collect();
        assert_eq!(ends, [(30_000, 30_000), (70_000, 10_000)]);
    }
}
