//! Probe-based flow control for sources.
//!
//! Timely has no backpressure between workers: a source that runs ahead fills
//! the exchange queues without limit. A source therefore counts the records
//! it has sent per timestamp and stops sending while more than
//! `max_in_flight` of them have not yet been retired at the end of the
//! pipeline (the probe on its sinks). Records at the source's own current
//! time do not count: they cannot retire until the source moves on. Window operators hold their output back
//! by their lateness, so a record at time `t` counts as retired once the probe
//! frontier passes `t - holdback`.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use timely::dataflow::ProbeHandle;

use crate::stats::ComponentStats;

use crate::time::Time;

/// The default number of records a source may have in flight per worker.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 1 << 20;

/// Flow control for one source instance.
pub struct FlowControl {
    probe: ProbeHandle<Time>,
    holdback: Time,
    max_in_flight: u64,
    /// Records sent and not retired, by time (a Kafka source sends at
    /// several times at once, one per partition, in no order).
    sent: BTreeMap<Time, u64>,
    in_flight: u64,
    reported: u64,
    gauge: Option<Arc<ComponentStats>>,
}

impl Drop for FlowControl {
    fn drop(&mut self) {
        self.in_flight = 0;
        self.report();
    }
}

impl FlowControl {
    /// Flow control against `probe`, which sees the end of the pipeline.
    pub fn new(probe: ProbeHandle<Time>, holdback: Time, max_in_flight: u64) -> FlowControl {
        FlowControl {
            probe,
            holdback,
            max_in_flight: max_in_flight.max(1),
            sent: BTreeMap::new(),
            in_flight: 0,
            reported: 0,
            gauge: None,
        }
    }

    /// Records that `n` records were sent at `time`.
    #[inline]
    pub fn sent(&mut self, time: Time, n: u64) {
        *self.sent.entry(time).or_default() += n;
        self.in_flight += n;
    }

    /// Whether the source may send more now.
    ///
    /// `current` is the source's own capability time: records sent at it or
    /// later cannot retire before the source moves on, so they do not count
    /// against the budget (waiting for them would never end). The budget
    /// therefore bounds records at earlier times; one time step of a source
    /// (a generator tick, a run of one watermark) is not divided.
    pub fn may_send(&mut self, current: Time) -> bool {
        let done_below = self
            .probe
            .with_frontier(|f| f.iter().min().map(|m| m.saturating_add(self.holdback)))
            .unwrap_or(Time::MAX);
        while let Some(entry) = self.sent.first_entry() {
            if *entry.key() >= done_below {
                break;
            }
            self.in_flight -= entry.remove();
        }
        self.report();
        // Records at or after the source's own time cannot retire before it
        // moves on: a source whose partitions run ahead of its slowest one
        // (Kafka) must still be able to take the slowest one's records.
        let at_current: u64 = self.sent.range(current..).map(|(_, n)| n).sum();
        self.in_flight - at_current < self.max_in_flight
    }

    /// Publishes the in-flight count to the component's queue-depth gauge.
    fn report(&mut self) {
        let Some(stats) = &self.gauge else { return };
        let now = self.in_flight;
        if now > self.reported {
            stats
                .in_flight
                .fetch_add(now - self.reported, Ordering::Relaxed);
        } else {
            stats
                .in_flight
                .fetch_sub(self.reported - now, Ordering::Relaxed);
        }
        self.reported = now;
    }

    /// Counts this instance's records in the gauge of `stats` (summed over
    /// the process's workers).
    pub fn with_gauge(mut self, stats: Arc<ComponentStats>) -> FlowControl {
        self.gauge = Some(stats);
        self
    }

    /// Records sent and not yet retired.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }
}
