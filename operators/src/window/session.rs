//! Session windows: per group, samples closer than `gap` to each other form
//! one session, which closes once the watermark passes its last sample plus
//! `gap` plus lateness.
//!
//! Samples are applied in the order of the watermark at which they entered
//! (when the frontier passes it), so sessions are the same whatever the
//! arrival order, worker count or run.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use tidemark_engine::time::{Millis, Time, to_time};
use tidemark_engine::{Sample, Series, SeriesId};

use super::{Counts, Footprint, Outputs, WindowSpec, table_bytes};
use crate::aggregate::Accumulator;

#[derive(Serialize, Deserialize)]
struct Session {
    start: Millis,
    last: Millis,
    acc: Accumulator,
}

/// One group's state in a checkpoint (written from references).
#[derive(Serialize)]
struct SavedRef<'a> {
    series: &'a Series,
    sessions: &'a [Session],
}

/// One group's state read back from a checkpoint.
#[derive(Deserialize)]
struct Saved {
    series: Series,
    sessions: Vec<Session>,
}

struct Group {
    series: Series,
    sessions: Vec<Session>,
}

/// State of a session window operator.
pub struct SessionWindows {
    spec: WindowSpec,
    gap: Millis,
    pending: BTreeMap<Time, Vec<(Sample, Series)>>,
    groups: FxHashMap<SeriesId, Group>,
    /// (close time, group, session start) of every open session.
    by_close: BTreeSet<(Time, SeriesId, Millis)>,
    pub(super) outputs: Outputs,
    /// Counters since the caller last took them.
    pub counts: Counts,
}

impl SessionWindows {
    /// Empty state.
    pub fn new(spec: WindowSpec, gap: Millis) -> SessionWindows {
        SessionWindows {
            outputs: Outputs::new(&spec),
            spec,
            gap,
            pending: BTreeMap::new(),
            groups: FxHashMap::default(),
            by_close: BTreeSet::new(),
            counts: Counts::default(),
        }
    }

    fn close_time(&self, last: Millis) -> Time {
        to_time(
            last.saturating_add(self.gap)
                .saturating_add(self.spec.lateness)
                .saturating_add(1),
        )
    }

    /// Stashes a sample of `group` that entered at watermark `time`.
    pub fn insert(&mut self, sample: &Sample, group: &Series, time: Time) {
        if sample.value.is_nan() {
            self.counts.nan += 1;
            return;
        }
        self.pending
            .entry(time)
            .or_default()
            .push((sample.clone(), group.clone()));
    }

    fn close_until(&mut self, limit: Time, done: bool, out: &mut BTreeMap<Time, Vec<Sample>>) {
        while let Some(&(close, id, start)) = self.by_close.first() {
            if close > limit {
                break;
            }
            self.by_close.pop_first();
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            if let Some(i) = group.sessions.iter().position(|s| s.start == start) {
                let mut s = group.sessions.remove(i);
                let end = s.last + self.gap;
                let batch = out.entry(to_time(end)).or_default();
                // Rates over a session span its samples, without extrapolation.
                self.outputs.register(&group.series, end);
                // A session that starts within a gap of the input's start
                // may have begun before it.
                let partial = self
                    .outputs
                    .is_partial(s.start.saturating_sub(self.gap), end, done);
                self.outputs
                    .results(id, &mut s.acc, (s.start, s.last), end, partial, batch);
            }
            if group.sessions.is_empty() {
                self.groups.remove(&id);
            }
        }
    }

    fn apply(&mut self, sample: Sample, group_series: Series, time: Time) {
        let ts = sample.timestamp;
        if self.close_time(ts) <= time {
            self.counts.late += 1;
            return;
        }
        let needs = self.spec.needs;
        let gap = self.gap;
        let id = group_series.id();
        let group = self.groups.entry(id).or_insert_with(|| Group {
            series: group_series,
            sessions: Vec::new(),
        });
        let mut merged = Session {
            start: ts,
            last: ts,
            acc: Accumulator::new(needs),
        };
        merged
            .acc
            .insert(needs, sample.series.id().0, ts, sample.value);
        let mut i = 0;
        while i < group.sessions.len() {
            let s = &group.sessions[i];
            if s.start - gap <= ts && ts <= s.last + gap {
                let s = group.sessions.swap_remove(i);
                let close = to_time(
                    s.last
                        .saturating_add(gap)
                        .saturating_add(self.spec.lateness)
                        .saturating_add(1),
                );
                self.by_close.remove(&(close, id, s.start));
                merged.start = merged.start.min(s.start);
                merged.last = merged.last.max(s.last);
                merged.acc.merge(&s.acc);
            } else {
                i += 1;
            }
        }
        let close = to_time(
            merged
                .last
                .saturating_add(gap)
                .saturating_add(self.spec.lateness)
                .saturating_add(1),
        );
        self.by_close.insert((close, id, merged.start));
        group.sessions.push(merged);
    }

    /// Every group's open sessions (see
    /// [`super::WindowState::snapshot`]): taken at a cut, after advancing
    /// to it, so nothing is pending.
    pub fn snapshot(&self) -> Vec<(u64, Vec<u8>)> {
        self.groups
            .iter()
            .map(|(id, g)| {
                let saved = SavedRef {
                    series: &g.series,
                    sessions: &g.sessions,
                };
                (id.0, tidemark_engine::checkpoint::encode(&saved))
            })
            .collect()
    }

    /// Adds one group's sessions from a checkpoint.
    pub fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = tidemark_engine::checkpoint::decode(bytes)?;
        let id = SeriesId(key);
        for s in &saved.sessions {
            self.by_close.insert((self.close_time(s.last), id, s.start));
        }
        let group = self.groups.entry(id).or_insert_with(|| Group {
            series: saved.series,
            sessions: Vec::new(),
        });
        group.sessions.extend(saved.sessions);
        Ok(())
    }

    /// What the state holds now.
    pub fn footprint(&self) -> Footprint {
        let sessions: usize = self
            .groups
            .values()
            .map(|g| {
                g.sessions.capacity() * size_of::<Session>()
                    + g.sessions
                        .iter()
                        .map(|s| s.acc.extra_bytes())
                        .sum::<usize>()
            })
            .sum();
        let pending: usize = self
            .pending
            .values()
            .map(|v| v.capacity() * size_of::<(Sample, Series)>())
            .sum();
        Footprint {
            open_groups: self.groups.len(),
            known_groups: self.outputs.len(),
            bytes: table_bytes::<SeriesId, Group>(self.groups.capacity())
                + sessions
                + pending
                + self.by_close.len() * size_of::<(Time, SeriesId, Millis)>()
                + self.outputs.heap_bytes(),
        }
    }

    /// Applies stashed samples whose time the frontier has passed, in time
    /// order, and emits every session whose close time the frontier passed.
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Sample>)) {
        let f = frontier.unwrap_or(Time::MAX);
        let mut out = BTreeMap::new();
        while let Some(entry) = self.pending.first_entry() {
            let time = *entry.key();
            if time >= f {
                break;
            }
            let samples = entry.remove();
            self.close_until(time, false, &mut out);
            for (s, g) in samples {
                self.apply(s, g, time);
            }
        }
        self.close_until(f, frontier.is_none(), &mut out);
        // Groups whose last session closed more than two gaps ago are
        // forgotten (they are registered again if they come back).
        let keep = self
            .gap
            .saturating_mul(2)
            .saturating_add(self.spec.lateness);
        self.outputs.sweep(f, self.gap, keep);
        for (time, batch) in out {
            emit(time, batch);
        }
    }
}
