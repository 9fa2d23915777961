//! Tumbling and hopping windows: windows aligned to multiples of their step,
//! so every group shares the same window ends and state is kept per end.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use tidemark_engine::time::{Millis, Time, to_time};
use tidemark_engine::{Sample, Series, SeriesId};

use super::{Counts, LatePolicy, Outputs, WindowSpec};
use crate::aggregate::Accumulator;

struct Slot {
    group: Series,
    acc: Accumulator,
}

type Windows = BTreeMap<Millis, FxHashMap<SeriesId, Slot>>;

/// State of a tumbling (`every == size`) or hopping window operator.
pub struct AlignedWindows {
    spec: WindowSpec,
    size: Millis,
    every: Millis,
    open: Windows,
    closed: Windows,
    pending_late: BTreeMap<Time, Vec<(Millis, Sample, Series)>>,
    outputs: Outputs,
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
            counts: Counts::default(),
        }
    }

    fn close_time(&self, end: Millis) -> Time {
        to_time(end.saturating_add(self.spec.lateness).saturating_add(1))
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
        // Windows are (end - size, end]; the first end at or after ts.
        let mut end = ts.div_euclid(self.every) * self.every;
        if end < ts {
            end += self.every;
        }
        while end - self.size < ts {
            if time < self.close_time(end) {
                let needs = self.spec.needs;
                let slot = self
                    .open
                    .entry(end)
                    .or_default()
                    .entry(group.id())
                    .or_insert_with(|| Slot {
                        group: group.clone(),
                        acc: Accumulator::new(needs),
                    });
                slot.acc
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

    /// Advances to the input frontier (`None` once the input is done):
    /// emits every window the frontier has passed, then applies late samples
    /// whose time has passed and emits the corrected windows.
    ///
    /// `emit(time, batch)` receives outputs at window ends (corrections at
    /// `t - lateness - 1` for late samples that entered at `t`).
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Sample>)) {
        let f = frontier.unwrap_or(Time::MAX);
        while let Some((&end, _)) = self.open.first_key_value() {
            if self.close_time(end) > f {
                break;
            }
            let Some((_, mut slots)) = self.open.pop_first() else {
                break;
            };
            let mut batch = Vec::with_capacity(slots.len() * self.spec.aggregates.len());
            for slot in slots.values_mut() {
                self.outputs
                    .results(&slot.group, &mut slot.acc, end - self.size, end, &mut batch);
            }
            emit(to_time(end), batch);
            if matches!(self.spec.late, LatePolicy::Update { .. }) {
                self.closed.insert(end, slots);
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
                let slot = self
                    .closed
                    .entry(end)
                    .or_default()
                    .entry(group.id())
                    .or_insert_with(|| Slot {
                        group: group.clone(),
                        acc: Accumulator::new(needs),
                    });
                slot.acc
                    .insert(needs, sample.series.id().0, sample.timestamp, sample.value);
                dirty.push((end, group.id()));
                self.counts.corrections += 1;
            }
            dirty.sort_unstable();
            dirty.dedup();
            let mut batch = Vec::new();
            for (end, id) in dirty {
                if let Some(slot) = self.closed.get_mut(&end).and_then(|w| w.get_mut(&id)) {
                    self.outputs.results(
                        &slot.group,
                        &mut slot.acc,
                        end - self.size,
                        end,
                        &mut batch,
                    );
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

    /// Number of open windows (distinct ends) and groups in them.
    pub fn open_groups(&self) -> usize {
        self.open.values().map(|w| w.len()).sum()
    }
}
