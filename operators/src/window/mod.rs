//! The `window` operator: event-time windows per series or group.
//!
//! Windows are `(end - size, end]`, left-open and right-closed as Prometheus
//! range selectors, so a window's result, stamped with its end, falls in the
//! windows of a chained window that cover it. A window closes when the input
//! frontier (the watermark) passes `end + lateness`; a sample is late for a
//! window if the watermark at which it *entered the dataflow* had already
//! passed that point. Lateness is thus a property of the record and its
//! timely time, not of arrival order, and results are identical for any
//! number of workers, processes or runs.
//!
//! The operator holds its output capability at `frontier - lateness - 1`, so
//! a window's result is emitted at timely time `end`: its output watermark is
//! its input watermark minus lateness, and chained windows see results on
//! time.

mod config;
pub use config::{
    LateConfig, PreAggregate, PreAggregateConfig, ShapeConfig, WindowConfig, WindowPlan,
};

mod aligned;
pub mod combine;
mod operator;
mod session;

use std::sync::Arc;

pub use aligned::AlignedWindows;
pub use operator::Window;
pub use session::SessionWindows;

use tidemark_engine::time::{Millis, Time, to_time};
use tidemark_engine::{Sample, Series};

use crate::aggregate::{Accumulator, Aggregate, Needs};
use crate::group::Grouping;

/// The shape of the windows.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    Tumbling {
        /// Window length in milliseconds.
        size: Millis,
    },
    /// Windows of `size` starting every `every`.
    Hopping {
        /// Window length in milliseconds.
        size: Millis,
        /// Step in milliseconds; divides `size`.
        every: Millis,
    },
    /// Per-group sessions that end after `gap` without samples.
    Session {
        /// Inactivity gap in milliseconds.
        gap: Millis,
    },
}

/// What happens to a sample that arrives after its window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatePolicy {
    /// Drop and count it.
    Drop,
    /// Apply it and re-emit the corrected window, for `horizon` after the
    /// window closed; later samples are dropped and counted as too late.
    Update {
        /// How long closed windows are kept, in milliseconds.
        horizon: Millis,
    },
}

/// What happens to a partial window: one that the run's input does not
/// cover whole, because it began before the input did (its start before
/// the input's first watermark; for a session, within `gap` of it) or the
/// end of the input closed it before the watermark passed its end (a stop,
/// the end of a file). Partial windows are counted whatever the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partial {
    /// Emitted as any other window (the default).
    #[default]
    Emit,
    /// Emitted with the label `partial="true"` ([`PARTIAL_LABEL`]).
    Mark,
    /// Not emitted.
    Drop,
}

/// The label that marks the results of a partial window (`partial: mark`).
pub const PARTIAL_LABEL: &str = "partial";

/// Everything the window operator needs to know.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Window shape.
    pub kind: WindowKind,
    /// The window as written in the pipeline (`1m`), used in output names.
    pub label: String,
    /// How far past a window's end the watermark must go before it closes.
    pub lateness: Millis,
    /// Late sample policy.
    pub late: LatePolicy,
    /// Aggregates, one output series each.
    pub aggregates: Arc<[Aggregate]>,
    /// What the accumulators keep.
    pub needs: Needs,
    /// How series are grouped (used for output names).
    pub grouping: Grouping,
    /// What happens to partial windows.
    pub partial: Partial,
    /// Pre-aggregate on each worker before the exchange where the window
    /// allows it ([`WindowSpec::combines`]; `pre_aggregate` in a pipeline).
    pub combine: bool,
}

impl WindowSpec {
    /// How far the operator holds its output back behind its input frontier.
    pub fn holdback(&self) -> Time {
        self.lateness.max(0) as Time + 1
    }

    /// Whether samples are pre-aggregated on each worker before the
    /// exchange ([`combine`]): asked for, an aligned window, and aggregates
    /// that merge exactly (`count`, `sum`, `min`, `max`, `avg`, `last`).
    /// The operator also leaves it off in checkpointed pipelines.
    pub fn combines(&self) -> bool {
        self.combine
            && !matches!(self.kind, WindowKind::Session { .. })
            && self.needs == Needs::default()
    }

    /// How far past a sample's event time its results can be stamped: the
    /// window size for aligned windows (a result is stamped with its window's
    /// end); `None` for sessions, which can grow without bound.
    pub fn reach(&self) -> Option<Time> {
        match self.kind {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => {
                Some(size.max(0) as Time)
            }
            WindowKind::Session { .. } => None,
        }
    }
}

/// The end of the first aligned window, of windows starting every `every`,
/// that holds a sample at `ts`: windows are `(end - size, end]`, so the
/// first end at or after `ts`.
#[inline]
pub(crate) fn first_end(ts: Millis, every: Millis) -> Millis {
    let end = ts.div_euclid(every) * every;
    if end < ts { end + every } else { end }
}

/// The timely time at which the input frontier closes the aligned window
/// that ends at `end`: past `end + lateness`.
#[inline]
pub(crate) fn close_time(end: Millis, lateness: Millis) -> Time {
    to_time(end.saturating_add(lateness).saturating_add(1))
}

/// Counters a window state accumulates until the caller takes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sample-window assignments dropped as late.
    pub late: u64,
    /// Late samples past the update horizon.
    pub too_late: u64,
    /// NaN values ignored.
    pub nan: u64,
    /// Late samples applied as corrections.
    pub corrections: u64,
    /// Results of partial windows (one per group and window), emitted,
    /// marked or dropped as [`Partial`] says.
    pub partial: u64,
}

/// The groups a window has seen recently and their output series names,
/// cached per group: `<metric>:<window>[_by_<labels>|_without_<labels>]_<aggregate>`,
/// keeping the group's labels. Window state refers to groups by id only.
/// A group not used for a while is forgotten ([`Outputs::sweep`]), so series
/// that come and go (pods replaced) do not make the window grow forever.
struct Group {
    series: Series,
    /// Its output series, once needed.
    names: Option<Box<[Series]>>,
    /// The latest window end it was registered for or emitted at.
    used: Millis,
}

pub(crate) struct Outputs {
    suffix: String,
    aggregates: Arc<[Aggregate]>,
    groups: rustc_hash::FxHashMap<tidemark_engine::SeriesId, Group>,
    /// When the groups were last swept.
    swept: Millis,
    partial: Partial,
    /// The earliest time (watermark or record) above zero this run's input
    /// reached: windows that began before it are partial. `Some(0)` once
    /// state was restored from a checkpoint.
    began: Option<Time>,
    /// The furthest time the input reached before it ended: windows the
    /// end closes that end at or after it are partial.
    reached: Time,
    /// Partial window results since the state last took them.
    partials: u64,
}

impl Outputs {
    pub(crate) fn new(spec: &WindowSpec) -> Outputs {
        Outputs {
            suffix: format!(":{}{}", spec.label, spec.grouping.name_suffix()),
            aggregates: Arc::clone(&spec.aggregates),
            groups: Default::default(),
            swept: Millis::MIN,
            partial: spec.partial,
            began: None,
            reached: 0,
            partials: 0,
        }
    }

    /// Notes that the input reached `time` (a frontier or a record's time).
    #[inline]
    pub(crate) fn saw(&mut self, time: Time) {
        if time > 0 {
            self.began = Some(self.began.map_or(time, |b| b.min(time)));
        }
        self.reached = self.reached.max(time);
    }

    /// The state came from a checkpoint: what it holds began before this
    /// run, so no window is partial at its start.
    pub(crate) fn restored(&mut self) {
        self.began = Some(0);
    }

    /// Whether the window `(start, end]` is partial (see [`Partial`]);
    /// `done` once the input has ended.
    pub(crate) fn is_partial(&self, start: Millis, end: Millis, done: bool) -> bool {
        self.began.is_some_and(|b| to_time(start) < b) || (done && self.reached <= to_time(end))
    }

    /// Takes the count of partial window results.
    pub(crate) fn take_partials(&mut self) -> u64 {
        std::mem::take(&mut self.partials)
    }

    /// Remembers a group (called when it first appears in the window that
    /// ends at `end`).
    #[inline]
    pub(crate) fn register(&mut self, group: &Series, end: Millis) {
        let g = self.groups.entry(group.id()).or_insert_with(|| Group {
            series: group.clone(),
            names: None,
            used: end,
        });
        g.used = g.used.max(end);
    }

    /// Forgets the groups last used more than `keep` before the frontier
    /// `f` (they are in no open window, and are registered again if they
    /// come back), at most once per `period` of progress, also while no
    /// window closes. Returns whether it swept.
    pub(crate) fn sweep(&mut self, f: Time, period: Millis, keep: Millis) -> bool {
        let now = f.min(Millis::MAX as Time) as Millis;
        if now.saturating_sub(self.swept) < period {
            return false;
        }
        self.swept = now;
        let before = now.saturating_sub(keep);
        self.groups.retain(|_, g| g.used >= before);
        // The table shrinks when far fewer groups remain.
        let len = self.groups.len();
        if self.groups.capacity() > 2 * len.max(1024) {
            self.groups.shrink_to(len);
        }
        true
    }

    /// A remembered group's labels and when it was last used.
    pub(crate) fn group(&self, id: tidemark_engine::SeriesId) -> Option<(&Series, Millis)> {
        self.groups.get(&id).map(|g| (&g.series, g.used))
    }

    /// Groups remembered.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Memory held, in bytes: the table, and the output series (their label
    /// strings are shared with the input series, which the sources hold).
    pub(crate) fn heap_bytes(&self) -> usize {
        table_bytes::<tidemark_engine::SeriesId, Group>(self.groups.capacity())
            + self
                .groups
                .values()
                .filter_map(|g| g.names.as_ref())
                .map(|names| {
                    names.len() * size_of::<Series>()
                        + names.iter().map(Series::own_bytes).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Appends one sample per defined aggregate of `acc` for a registered
    /// group; `range` is the window `(start, end]`, `stamp` the output time.
    ///
    /// A `partial` window's results are emitted, marked or dropped as the
    /// spec says, and counted.
    pub(crate) fn results(
        &mut self,
        group: tidemark_engine::SeriesId,
        acc: &mut Accumulator,
        range: (Millis, Millis),
        stamp: Millis,
        partial: bool,
        out: &mut Vec<Sample>,
    ) {
        if partial {
            self.partials += 1;
            if self.partial == Partial::Drop {
                return;
            }
        }
        let mark = partial && self.partial == Partial::Mark;
        let Some(Group {
            series,
            names,
            used,
        }) = self.groups.get_mut(&group)
        else {
            return;
        };
        *used = (*used).max(stamp);
        let names = names.get_or_insert_with(|| {
            self.aggregates
                .iter()
                .map(|a| {
                    series.with_name(&format!("{}{}_{}", series.name(), self.suffix, a.name()))
                })
                .collect()
        });
        for (aggregate, name) in self.aggregates.iter().zip(names.iter()) {
            if let Some(v) = acc.result(*aggregate, range.0, range.1) {
                let name = if mark {
                    name.with_label(PARTIAL_LABEL, "true")
                } else {
                    name.clone()
                };
                out.push(Sample::new(name, stamp, v));
            }
        }
    }
}

/// Bytes a hash table of `capacity` entries of `(K, V)` takes (hashbrown:
/// the entries plus one control byte each; the capacity is at most 7/8 of
/// the buckets).
pub(crate) fn table_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (size_of::<(K, V)>() + 1)
}

/// What a window operator holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Groups with at least one open window (or session).
    pub open_groups: usize,
    /// Groups whose output names are cached, open or recently closed.
    pub known_groups: usize,
    /// Bytes held: accumulators, tables and cached output series.
    pub bytes: usize,
}

/// The state of any window operator.
pub enum WindowState {
    /// Tumbling or hopping.
    Aligned(AlignedWindows),
    /// Sessions.
    Session(SessionWindows),
}

impl WindowState {
    /// Empty state for a spec.
    pub fn new(spec: WindowSpec) -> WindowState {
        match spec.kind {
            WindowKind::Tumbling { size } => {
                WindowState::Aligned(AlignedWindows::new(spec, size, size))
            }
            WindowKind::Hopping { size, every } => {
                WindowState::Aligned(AlignedWindows::new(spec, size, every))
            }
            WindowKind::Session { gap } => WindowState::Session(SessionWindows::new(spec, gap)),
        }
    }

    /// Adds a sample of `group` (see [`Grouping::project`]) that entered at
    /// watermark `time`.
    #[inline]
    pub fn insert(&mut self, sample: &Sample, group: &Series, time: Time) {
        match self {
            WindowState::Aligned(w) => w.insert(sample, group, time),
            WindowState::Session(w) => w.insert(sample, group, time),
        }
    }

    /// Adds a worker's partial aggregate ([`combine::Part`]). Sessions are
    /// never combined; a part given to one is counted as late.
    pub fn merge(&mut self, part: combine::Part) {
        match self {
            WindowState::Aligned(w) => {
                w.outputs.saw(part.seen);
                w.merge(&part.group, part.end, part.acc, part.entered);
            }
            WindowState::Session(w) => w.counts.late += part.acc.count(),
        }
    }

    /// Advances to the input frontier (`None`: input done) and emits what
    /// closed as `(timely time, batch)`.
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Sample>)) {
        match self {
            WindowState::Aligned(w) => w.advance(frontier, emit),
            WindowState::Session(w) => w.advance(frontier, emit),
        }
    }

    /// Notes that the input reached `time` (a frontier or the time of a
    /// batch of records), to tell partial windows.
    #[inline]
    pub fn saw(&mut self, time: Time) {
        self.outputs_mut().saw(time);
    }

    /// Notes that the state was restored from a checkpoint.
    pub fn restored(&mut self) {
        self.outputs_mut().restored();
    }

    fn outputs_mut(&mut self) -> &mut Outputs {
        match self {
            WindowState::Aligned(w) => &mut w.outputs,
            WindowState::Session(w) => &mut w.outputs,
        }
    }

    /// What the state holds now.
    pub fn footprint(&self) -> Footprint {
        match self {
            WindowState::Aligned(w) => w.footprint(),
            WindowState::Session(w) => w.footprint(),
        }
    }

    /// The state per group, for a checkpoint: `(group id, encoded state)`.
    /// Taken at a cut, after [`WindowState::advance`] to it, when nothing
    /// waits for the frontier.
    pub fn snapshot(&self) -> Vec<(u64, Vec<u8>)> {
        match self {
            WindowState::Aligned(w) => w.snapshot(),
            WindowState::Session(w) => w.snapshot(),
        }
    }

    /// Adds a group's state from a checkpoint.
    pub fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), String> {
        match self {
            WindowState::Aligned(w) => w.restore(key, bytes),
            WindowState::Session(w) => w.restore(key, bytes),
        }
    }

    /// Takes the counters accumulated so far.
    pub fn take_counts(&mut self) -> Counts {
        let partial = self.outputs_mut().take_partials();
        let counts = match self {
            WindowState::Aligned(w) => std::mem::take(&mut w.counts),
            WindowState::Session(w) => std::mem::take(&mut w.counts),
        };
        Counts { partial, ..counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: WindowKind, partial: Partial) -> WindowSpec {
        WindowSpec {
            kind,
            label: "10ms".into(),
            lateness: 0,
            late: LatePolicy::Drop,
            aggregates: Arc::from(vec![Aggregate::Count]),
            needs: Needs::default(),
            grouping: Grouping::Series,
            partial,
            combine: false,
        }
    }

    /// Feeds samples at 16..=34 entering at their own time after a first
    /// frontier of 15, then ends the input; returns what was emitted as
    /// (window end, marked, count) and the partial count.
    fn run(kind: WindowKind, partial: Partial, restored: bool) -> (Vec<(i64, bool, f64)>, u64) {
        let mut state = WindowState::new(spec(kind, partial));
        if restored {
            state.restored();
        }
        let series = Series::new("x", [("a", "1")]);
        let mut out = Vec::new();
        let mut emit = |_t: Time, batch: Vec<Sample>| {
            for s in batch {
                let marked = s.series.get(PARTIAL_LABEL) == Some("true");
                out.push((s.timestamp, marked, s.value));
            }
        };
        state.saw(15);
        state.advance(Some(15), &mut emit);
        for ts in 16..=34 {
            state.saw(ts as Time);
            state.insert(&Sample::new(series.clone(), ts, 1.0), &series, ts as Time);
            state.advance(Some(ts as Time), &mut emit);
        }
        state.advance(None, &mut emit);
        (out, state.take_counts().partial)
    }

    #[test]
    fn windows_begun_before_the_input_or_closed_by_its_end_are_partial() {
        let tumbling = WindowKind::Tumbling { size: 10 };
        // (10, 20] began before the input (15); (30, 40] was closed by the
        // end of the input at 34.
        let (out, partial) = run(tumbling.clone(), Partial::Mark, false);
        assert_eq!(
            out,
            vec![(20, true, 5.0), (30, false, 10.0), (40, true, 4.0)]
        );
        assert_eq!(partial, 2);
        let (out, partial) = run(tumbling.clone(), Partial::Drop, false);
        assert_eq!(out, vec![(30, false, 10.0)]);
        assert_eq!(partial, 2);
        let (out, partial) = run(tumbling.clone(), Partial::Emit, false);
        assert_eq!(
            out,
            vec![(20, false, 5.0), (30, false, 10.0), (40, false, 4.0)]
        );
        assert_eq!(partial, 2);
        // Restored state began before this run: only the end is partial.
        let (out, _) = run(tumbling, Partial::Mark, true);
        assert_eq!(
            out,
            vec![(20, false, 5.0), (30, false, 10.0), (40, true, 4.0)]
        );
        // Hopping windows: every window that reaches before 15 or past 34.
        let (out, _) = run(
            WindowKind::Hopping { size: 10, every: 5 },
            Partial::Mark,
            false,
        );
        let marked: Vec<(i64, bool)> = out.iter().map(|o| (o.0, o.1)).collect();
        assert_eq!(
            marked,
            vec![(20, true), (25, false), (30, false), (35, true), (40, true)]
        );
        // One session, from 16 (within a gap of the input's start) to the
        // end of the input.
        let (out, partial) = run(WindowKind::Session { gap: 3 }, Partial::Mark, false);
        assert_eq!(out, vec![(37, true, 19.0)]);
        assert_eq!(partial, 1);
    }
}
