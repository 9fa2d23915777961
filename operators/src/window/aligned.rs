//! Tumbling and hopping windows: windows aligned to multiples of their step,
//! so every group shares the same window ends and state is kept per end:
//! `BTreeMap<end, FxHashMap<group id, Accumulator>>`. An accumulator and its
//! key fill one cache line; groups' labels live once in [`Outputs`]; the
//! maps of closed windows are recycled, pre-sized, for the next ones.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use tidemark_engine::time::{Millis, Time, to_time};
use tidemark_engine::{Sample, Series, SeriesId};

use super::{Counts, Footprint, LatePolicy, Outputs, WindowSpec, table_bytes};
use crate::aggregate::Accumulator;

type Groups = FxHashMap<SeriesId, Accumulator>;

/// One group's state in a checkpoint.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// Its labels and last use (`None`: already forgotten by the table of
    /// output names; registered again when a late sample comes).
    series: Option<(Series, Millis)>,
    /// Accumulators of its open windows, by end.
    open: Vec<(Millis, Accumulator)>,
    /// Of closed windows kept for corrections.
    closed: Vec<(Millis, Accumulator)>,
}

/// State of a tumbling (`every == size`) or hopping window operator.
pub struct AlignedWindows {
    spec: WindowSpec,
    size: Millis,
    every: Millis,
    open: BTreeMap<Millis, Groups>,
    closed: BTreeMap<Millis, Groups>,
    pending_late: BTreeMap<Time, Vec<(Millis, Sample, Series)>>,
    pub(super) outputs: Outputs,
    spare: Vec<Groups>,
    /// Groups in the last window closed: the size to pre-allocate.
    last_len: usize,
    /// Counters since the caller last took them.
    pub counts: Counts,
}

impl AlignedWindows {
    /// Empty state.
    pub fn new(spec: WindowSpec, size: Millis, every: Millis) -> AlignedWindows {
        AlignedWindows {
            outputs: Outputs::new(&spec),
            spec,
            size,
            every,
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            pending_late: BTreeMap::new(),
            spare: Vec::new(),
            last_len: 0,
            counts: Counts::default(),
        }
    }

    fn close_time(&self, end: Millis) -> Time {
        super::close_time(end, self.spec.lateness)
    }

    /// The accumulator of `group` in the open window that ends at `end`,
    /// new (and the group registered) if it has none yet.
    #[inline]
    fn slot(&mut self, end: Millis, group: &Series) -> &mut Accumulator {
        let needs = self.spec.needs;
        let (spare, last_len) = (&mut self.spare, self.last_len);
        let groups = self
            .open
            .entry(end)
            .or_insert_with(|| Self::new_groups(spare, last_len));
        match groups.entry(group.id()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.outputs.register(group, end);
                e.insert(Accumulator::new(needs))
            }
        }
    }

    fn new_groups(spare: &mut Vec<Groups>, last_len: usize) -> Groups {
        spare
            .pop()
            .unwrap_or_else(|| FxHashMap::with_capacity_and_hasher(last_len, Default::default()))
    }

    /// Adds a sample of `group` that entered the dataflow at watermark
    /// `time`. It is late for a window if `time` has passed the window's end
    /// plus lateness.
    #[inline]
    pub fn insert(&mut self, sample: &Sample, group: &Series, time: Time) {
        if sample.value.is_nan() {
            self.counts.nan += 1;
            return;
        }
        let ts = sample.timestamp;
        let mut end = super::first_end(ts, self.every);
        while end - self.size < ts {
            if time < self.close_time(end) {
                let needs = self.spec.needs;
                self.slot(end, group)
                    .insert(needs, sample.series.id().0, ts, sample.value);
            } else {
                match self.spec.late {
                    LatePolicy::Drop => self.counts.late += 1,
                    LatePolicy::Update { horizon } => {
                        if time
                            <= to_time(
                                end.saturating_add(self.spec.lateness)
                                    .saturating_add(horizon),
                            )
                        {
                            self.pending_late.entry(time).or_default().push((
                                end,
                                sample.clone(),
                                group.clone(),
                            ));
                        } else {
                            self.counts.too_late += 1;
                        }
                    }
                }
            }
            end += self.every;
        }
    }

    /// Adds `acc`, one worker's partial aggregate of `group` for the window
    /// that ends at `end` ([`super::combine`]), whose samples entered by
    /// watermark `time`. A worker combines only samples on time for every
    /// window they fall in and holds its output back until it has sent
    /// them, so a partial is never late; if one were, its samples would be
    /// counted as late.
    pub fn merge(&mut self, group: &Series, end: Millis, acc: Accumulator, time: Time) {
        if time >= self.close_time(end) {
            self.counts.late += acc.count();
            return;
        }
        // Merged into an empty accumulator, the first part of a group
        // keeps its bits: the same as its samples added here one by one.
        self.slot(end, group).merge(&acc);
    }

    /// Advances to the input frontier (`None` once the input is done):
    /// emits every window the frontier has passed, then applies late samples
    /// whose time has passed and emits the corrected windows.
    ///
    /// `emit(time, batch)` receives outputs at window ends (corrections at
    /// `t - lateness - 1` for late samples that entered at `t`).
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Sample>)) {
        let f = frontier.unwrap_or(Time::MAX);
        let keep_closed = matches!(self.spec.late, LatePolicy::Update { .. });
        while let Some((&end, _)) = self.open.first_key_value() {
            if self.close_time(end) > f {
                break;
            }
            let Some((_, mut groups)) = self.open.pop_first() else {
                break;
            };
            self.last_len = groups.len();
            let mut batch = Vec::with_capacity(groups.len() * self.spec.aggregates.len());
            let start = end - self.size;
            let partial = self.outputs.is_partial(start, end, frontier.is_none());
            for (id, acc) in groups.iter_mut() {
                self.outputs
                    .results(*id, acc, (start, end), end, partial, &mut batch);
            }
            emit(to_time(end), batch);
            if keep_closed {
                self.closed.insert(end, groups);
            } else {
                groups.clear();
                self.spare.push(groups);
            }
        }
        // Groups in no window of the last two sizes are forgotten; the
        // others keep their cached output names.
        let keep = self
            .size
            .saturating_mul(2)
            .saturating_add(self.spec.lateness);
        if self.outputs.sweep(f, self.every, keep) {
            // Recycled tables shrink when far fewer groups remain.
            let known = self.outputs.len();
            for groups in &mut self.spare {
                if groups.capacity() > 2 * known.max(1024) {
                    groups.shrink_to(known);
                }
            }
        }
        while let Some(entry) = self.pending_late.first_entry() {
            let time = *entry.key();
            if time >= f {
                break;
            }
            let late = entry.remove();
            let mut dirty: Vec<(Millis, SeriesId)> = Vec::new();
            let needs = self.spec.needs;
            for (end, sample, group) in late {
                self.outputs.register(&group, end);
                let acc = self
                    .closed
                    .entry(end)
                    .or_default()
                    .entry(group.id())
                    .or_insert_with(|| Accumulator::new(needs));
                acc.insert(needs, sample.series.id().0, sample.timestamp, sample.value);
                dirty.push((end, group.id()));
                self.counts.corrections += 1;
            }
            dirty.sort_unstable();
            dirty.dedup();
            let mut batch = Vec::new();
            for (end, id) in dirty {
                if let Some(acc) = self.closed.get_mut(&end).and_then(|w| w.get_mut(&id)) {
                    let start = end - self.size;
                    let partial = self.outputs.is_partial(start, end, frontier.is_none());
                    self.outputs
                        .results(id, acc, (start, end), end, partial, &mut batch);
                }
            }
            let lateness = to_time(self.spec.lateness.saturating_add(1));
            emit(time.saturating_sub(lateness), batch);
        }
        if let LatePolicy::Update { horizon } = self.spec.late {
            let keep = |end: Millis| {
                to_time(
                    end.saturating_add(self.spec.lateness)
                        .saturating_add(horizon),
                ) >= f
            };
            while let Some(entry) = self.closed.first_entry() {
                if keep(*entry.key()) {
                    break;
                }
                entry.remove();
            }
        }
    }

    /// Every group's state (see [`super::WindowState::snapshot`]).
    pub fn snapshot(&self) -> Vec<(u64, Vec<u8>)> {
        let mut saved: FxHashMap<SeriesId, Saved> = FxHashMap::default();
        for (&end, groups) in &self.open {
            for (id, acc) in groups {
                saved.entry(*id).or_default().open.push((end, acc.clone()));
            }
        }
        for (&end, groups) in &self.closed {
            for (id, acc) in groups {
                saved
                    .entry(*id)
                    .or_default()
                    .closed
                    .push((end, acc.clone()));
            }
        }
        saved
            .into_iter()
            .map(|(id, mut s)| {
                s.series = self.outputs.group(id).map(|(g, used)| (g.clone(), used));
                (id.0, tidemark_engine::checkpoint::encode(&s))
            })
            .collect()
    }

    /// Adds one group's state from a checkpoint.
    pub fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = tidemark_engine::checkpoint::decode(bytes)?;
        let id = SeriesId(key);
        if let Some((series, used)) = &saved.series {
            self.outputs.register(series, *used);
        }
        for (end, acc) in saved.open {
            let (spare, last_len) = (&mut self.spare, self.last_len);
            self.open
                .entry(end)
                .or_insert_with(|| Self::new_groups(spare, last_len))
                .insert(id, acc);
        }
        for (end, acc) in saved.closed {
            self.closed.entry(end).or_default().insert(id, acc);
        }
        Ok(())
    }

    /// Number of groups in open windows.
    pub fn open_groups(&self) -> usize {
        self.open.values().map(|w| w.len()).sum()
    }

    /// What the state holds now.
    pub fn footprint(&self) -> Footprint {
        let tables = |maps: &BTreeMap<Millis, Groups>| -> usize {
            maps.values()
                .map(|g| {
                    table_bytes::<SeriesId, Accumulator>(g.capacity())
                        + g.values().map(Accumulator::extra_bytes).sum::<usize>()
                })
                .sum()
        };
        let spare: usize = self
            .spare
            .iter()
            .map(|g| table_bytes::<SeriesId, Accumulator>(g.capacity()))
            .sum();
        let open_groups = match self.open.len() {
            0 => 0,
            1 => self.open_groups(),
            _ => {
                let mut ids: rustc_hash::FxHashSet<SeriesId> = Default::default();
                for w in self.open.values() {
                    ids.extend(w.keys().copied());
                }
                ids.len()
            }
        };
        Footprint {
            open_groups,
            known_groups: self.outputs.len(),
            bytes: tables(&self.open) + tables(&self.closed) + spare + self.outputs.heap_bytes(),
        }
    }
}
