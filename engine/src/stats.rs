//! Telemetry counters shared by the workers of one process.
//!
//! Components add to these once per batch, never per record. The CLI's
//! progress display and (later) `/metrics` read them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::Time;
use crate::validate::RejectReason;

/// Why a record was dropped inside the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Rejected at the edge.
    Rejected(RejectReason),
    /// Arrived after its window closed (`late: drop`).
    Late,
    /// Arrived after its window's update horizon (`late: update`).
    TooLate,
    /// A NaN value (including Prometheus stale markers), which windows ignore.
    NotANumber,
    /// An alert left out of a notification because an inhibition rule
    /// muted it.
    Inhibited,
    /// An alert left out of a notification because a silence muted it.
    Silenced,
    /// A sample a `correlate` transform was given that is not a firing
    /// alert's (`ALERTS` with `alertstate="firing"`).
    NotAnAlert,
    /// A sample of a new series that a `memory` sink had no room for
    /// (`max_series`).
    SeriesLimit,
    /// An edge sample given to a `correlate` transform (of its
    /// `topology.metric`) whose labels do not name an edge (a `from_*` and
    /// a `to_*` label at least).
    BadEdge,
}

impl DropReason {
    const COUNT: usize = RejectReason::ALL.len() + 8;

    fn index(self) -> usize {
        match self {
            DropReason::Rejected(r) => r.index(),
            DropReason::Late => RejectReason::ALL.len(),
            DropReason::TooLate => RejectReason::ALL.len() + 1,
            DropReason::NotANumber => RejectReason::ALL.len() + 2,
            DropReason::Inhibited => RejectReason::ALL.len() + 3,
            DropReason::Silenced => RejectReason::ALL.len() + 4,
            DropReason::NotAnAlert => RejectReason::ALL.len() + 5,
            DropReason::SeriesLimit => RejectReason::ALL.len() + 6,
            DropReason::BadEdge => RejectReason::ALL.len() + 7,
        }
    }

    fn all() -> impl Iterator<Item = DropReason> {
        RejectReason::ALL
            .into_iter()
            .map(DropReason::Rejected)
            .chain([
                DropReason::Late,
                DropReason::TooLate,
                DropReason::NotANumber,
                DropReason::Inhibited,
                DropReason::Silenced,
                DropReason::NotAnAlert,
                DropReason::SeriesLimit,
                DropReason::BadEdge,
            ])
    }

    /// The snake-case name used in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Rejected(r) => r.as_str(),
            DropReason::Late => "late",
            DropReason::TooLate => "too_late",
            DropReason::NotANumber => "nan",
            DropReason::Inhibited => "inhibited",
            DropReason::Silenced => "silenced",
            DropReason::NotAnAlert => "not_an_alert",
            DropReason::SeriesLimit => "series_limit",
            DropReason::BadEdge => "bad_edge",
        }
    }
}

/// Counters for one component of one pipeline.
#[derive(Debug, Default)]
pub struct ComponentStats {
    /// Records received from inputs (for sources: read from outside).
    pub received: AtomicU64,
    /// Records sent downstream (for sinks: written).
    pub sent: AtomicU64,
    /// Late records applied as corrections (`late: update`).
    pub corrections: AtomicU64,
    /// Results of partial windows (a window's start before the input's,
    /// or its end after the input ended), emitted, marked or dropped.
    pub partial_windows: AtomicU64,
    /// Errors talking to an external system that lost or held back output
    /// (what `tidemark run`'s exit status reports).
    pub errors: AtomicU64,
    /// Writes that failed and were made again (nothing lost; a sink whose
    /// store was briefly away).
    pub retries: AtomicU64,
    /// Queue depth: records a source has sent that the pipeline has not yet
    /// retired, summed over this process's workers (see [`crate::flow`]).
    pub in_flight: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    /// The error the last retry followed (the status API shows it).
    last_error: Mutex<Option<String>>,
    /// Notifier outcomes by (receiver, outcome, reason).
    notifications: Mutex<BTreeMap<NotifyKey, u64>>,
}

/// A notifier counter's labels: the receiver (or Alertmanager), what
/// happened (`sent`, `failed`, `retried`, `too_old`, `silenced`) and why
/// (`rejected`, `gave_up`, `rate_limited`, `server_error`, ...; empty
/// when there is no reason).
pub type NotifyKey = (String, &'static str, &'static str);

impl ComponentStats {
    /// Counts a write made again after `error`, and keeps the error as
    /// the last one.
    pub fn retried(&self, error: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    /// Counts `n` notifier outcomes for `receiver` (see [`NotifyKey`]).
    pub fn notified(&self, receiver: &str, outcome: &'static str, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        *self
            .notifications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((receiver.to_owned(), outcome, reason))
            .or_default() += n;
    }

    /// Every notifier count so far.
    pub fn notify_counts(&self) -> Vec<(NotifyKey, u64)> {
        self.notifications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    /// The error the last retry followed, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts dropped records.
    #[inline]
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Dropped records for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    /// Every non-zero drop count.
    pub fn drop_counts(&self) -> Vec<(DropReason, u64)> {
        DropReason::all()
            .map(|r| (r, self.drops(r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Adds to a counter.
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What kind of component a set of counters belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A source.
    Source,
    /// A transform.
    Transform,
    /// A sink.
    Sink,
}

impl Role {
    /// `source`, `transform` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Transform => "transform",
            Role::Sink => "sink",
        }
    }
}

/// The counters of one pipeline in this process.
#[derive(Debug)]
pub struct PipelineStats {
    /// The pipeline's name.
    pub name: String,
    components: Mutex<BTreeMap<String, (Role, Arc<ComponentStats>)>>,
    /// The source frontier (watermark) seen by each local worker; `u64::MAX`
    /// once its sources are done.
    watermarks: Vec<AtomicU64>,
}

/// A snapshot of a pipeline's totals.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Records read by sources.
    pub samples_in: u64,
    /// Records written by sinks.
    pub samples_out: u64,
    /// Records rejected at the edge.
    pub rejected: u64,
    /// Records dropped as late or too late.
    pub late: u64,
    /// Late records applied as corrections.
    pub corrections: u64,
    /// Results of partial windows.
    pub partial_windows: u64,
    /// The lowest watermark over local workers, `None` when all are done.
    pub watermark: Option<Time>,
}

impl PipelineStats {
    /// Counters for a pipeline run by `workers` local workers.
    pub fn new(name: &str, workers: usize) -> Arc<PipelineStats> {
        Arc::new(PipelineStats {
            name: name.to_owned(),
            components: Mutex::default(),
            watermarks: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The counters of a component, created on first use.
    pub fn component(&self, name: &str, role: Role) -> Arc<ComponentStats> {
        let mut map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            &map.entry(name.to_owned())
                .or_insert_with(|| (role, Arc::default()))
                .1,
        )
    }

    /// Every component's counters, by name.
    pub fn components(&self) -> Vec<(String, Role, Arc<ComponentStats>)> {
        let map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(n, (r, s))| (n.clone(), *r, Arc::clone(s)))
            .collect()
    }

    /// Records the source frontier a local worker sees (`None`: done).
    pub fn set_watermark(&self, local_worker: usize, frontier: Option<Time>) {
        if let Some(w) = self.watermarks.get(local_worker) {
            w.store(frontier.unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// The pipeline's totals now.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (_, role, s) in self.components() {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            match role {
                Role::Source => t.samples_in += load(&s.received),
                Role::Sink => t.samples_out += load(&s.sent),
                Role::Transform => {}
            }
            for (reason, n) in s.drop_counts() {
                match reason {
                    DropReason::Rejected(_) => t.rejected += n,
                    DropReason::Late | DropReason::TooLate => t.late += n,
                    DropReason::NotANumber
                    | DropReason::Inhibited
                    | DropReason::Silenced
                    | DropReason::NotAnAlert
                    | DropReason::SeriesLimit
                    | DropReason::BadEdge => {}
                }
            }
            t.corrections += load(&s.corrections);
            t.partial_windows += load(&s.partial_windows);
        }
        let min = self
            .watermarks
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        t.watermark = (min != u64::MAX).then_some(min);
        t
    }
}

impl Totals {
    /// Adds another process's totals (the watermark is the minimum).
    pub fn merge(&mut self, other: &Totals) {
        self.samples_in += other.samples_in;
        self.samples_out += other.samples_out;
        self.rejected += other.rejected;
        self.late += other.late;
        self.corrections += other.corrections;
        self.partial_windows += other.partial_windows;
        self.watermark = match (self.watermark, other.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_keep_the_last_error() {
        let stats = ComponentStats::default();
        assert_eq!(stats.last_error(), None);
        stats.retried("connection refused");
        stats.retried("connection reset");
        assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
        assert_eq!(stats.last_error().as_deref(), Some("connection reset"));
    }

    #[test]
    fn totals_add_up_by_role() {
        let stats = PipelineStats::new("p", 2);
        let src = stats.component("in", Role::Source);
        add(&src.received, 10);
        src.dropped(DropReason::Rejected(RejectReason::InvalidLabelName), 2);
        let win = stats.component("w", Role::Transform);
        win.dropped(DropReason::Late, 3);
        let sink = stats.component("out", Role::Sink);
        add(&sink.sent, 4);
        stats.set_watermark(0, Some(100));
        stats.set_watermark(1, Some(50));
        let t = stats.totals();
        assert_eq!(
            (t.samples_in, t.samples_out, t.rejected, t.late),
            (10, 4, 2, 3)
        );
        assert_eq!(t.watermark, Some(50));
        stats.set_watermark(0, None);
        stats.set_watermark(1, None);
        assert_eq!(stats.totals().watermark, None);
    }
}
