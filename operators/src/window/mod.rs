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
pub use config::{LateConfig, ShapeConfig, WindowConfig, WindowPlan};

mod aligned;
mod operator;
mod session;

use std::sync::Arc;

pub use aligned::AlignedWindows;
pub use operator::Window;
pub use session::SessionWindows;

use tidemark_engine::time::{Millis, Time};
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
}

impl WindowSpec {
    /// How far the operator holds its output back behind its input frontier.
    pub fn holdback(&self) -> Time {
        self.lateness.max(0) as Time + 1
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
}

/// The groups a window has seen and their output series names, cached per
/// group: `<metric>:<window>[_by_<labels>|_without_<labels>]_<aggregate>`,
/// keeping the group's labels. Window state refers to groups by id only.
/// A group's series and, once needed, its output series.
type Group = (Series, Option<Box<[Series]>>);

pub(crate) struct Outputs {
    suffix: String,
    aggregates: Arc<[Aggregate]>,
    groups: rustc_hash::FxHashMap<tidemark_engine::SeriesId, Group>,
}

impl Outputs {
    pub(crate) fn new(spec: &WindowSpec) -> Outputs {
        Outputs {
            suffix: format!(":{}{}", spec.label, spec.grouping.name_suffix()),
            aggregates: Arc::clone(&spec.aggregates),
            groups: Default::default(),
        }
    }

    /// Remembers a group (called when it first appears in a window).
    #[inline]
    pub(crate) fn register(&mut self, group: &Series) {
        self.groups
            .entry(group.id())
            .or_insert_with(|| (group.clone(), None));
    }

    /// Appends one sample per defined aggregate of `acc` for a registered
    /// group; `range` is the window `(start, end]`, `stamp` the output time.
    pub(crate) fn results(
        &mut self,
        group: tidemark_engine::SeriesId,
        acc: &mut Accumulator,
        range: (Millis, Millis),
        stamp: Millis,
        out: &mut Vec<Sample>,
    ) {
        let Some((series, names)) = self.groups.get_mut(&group) else {
            return;
        };
        let names = names.get_or_insert_with(|| {
            let tags: Vec<(&str, &str)> = series.tags().collect();
            self.aggregates
                .iter()
                .map(|a| {
                    Series::new(
                        &format!("{}{}_{}", series.name(), self.suffix, a.name()),
                        tags.iter().copied(),
                    )
                })
                .collect()
        });
        for (aggregate, name) in self.aggregates.iter().zip(names.iter()) {
            if let Some(v) = acc.result(*aggregate, range.0, range.1) {
                out.push(Sample::new(name.clone(), stamp, v));
            }
        }
    }
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

    /// Advances to the input frontier (`None`: input done) and emits what
    /// closed as `(timely time, batch)`.
    pub fn advance(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Sample>)) {
        match self {
            WindowState::Aligned(w) => w.advance(frontier, emit),
            WindowState::Session(w) => w.advance(frontier, emit),
        }
    }

    /// Takes the counters accumulated so far.
    pub fn take_counts(&mut self) -> Counts {
        match self {
            WindowState::Aligned(w) => std::mem::take(&mut w.counts),
            WindowState::Session(w) => std::mem::take(&mut w.counts),
        }
    }
}
