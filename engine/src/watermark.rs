//! Source watermarks.
//!
//! Each partition of a source (a Kafka partition, a connection, a file)
//! tracks the largest event time it has seen; its watermark is that minus the
//! source's `max_out_of_orderness`. The source's watermark is the minimum over
//! partitions that are not idle, never moves backwards, and becomes the timely
//! time of the records the source emits, so the timely frontier *is* the
//! watermark (see `docs/ARCHITECTURE.md`).

use std::time::{Duration, Instant};

use crate::time::{Millis, Time, to_time};

#[derive(Clone, Debug)]
struct Partition {
    max_seen: Option<Millis>,
    last_active: Instant,
    finished: bool,
}

/// Watermark tracking for one source instance.
#[derive(Clone, Debug)]
pub struct Watermarks {
    max_out_of_orderness: Millis,
    idle_timeout: Option<Duration>,
    partitions: Vec<Partition>,
    current: Time,
}

impl Watermarks {
    /// A tracker with `partitions` partitions.
    ///
    /// A partition that has produced nothing for `idle_timeout` stops holding
    /// the watermark back until it produces again.
    pub fn new(
        partitions: usize,
        max_out_of_orderness: Duration,
        idle_timeout: Option<Duration>,
    ) -> Watermarks {
        let now = Instant::now();
        Watermarks {
            max_out_of_orderness: crate::time::millis(max_out_of_orderness),
            idle_timeout,
            partitions: vec![
                Partition {
                    max_seen: None,
                    last_active: now,
                    finished: false
                };
                partitions
            ],
            current: 0,
        }
    }

    /// Records an event time seen on a partition.
    #[inline]
    pub fn observe(&mut self, partition: usize, timestamp: Millis, now: Instant) {
        let p = &mut self.partitions[partition];
        p.max_seen = Some(p.max_seen.map_or(timestamp, |m| m.max(timestamp)));
        p.last_active = now;
    }

    /// Marks a partition as finished: it no longer holds the watermark back.
    pub fn finish(&mut self, partition: usize) {
        self.partitions[partition].finished = true;
    }

    /// Recomputes the watermark: the minimum over active partitions of
    /// `max_seen - max_out_of_orderness`, never lower than before. A partition
    /// that has seen nothing yet holds the watermark at its current value
    /// until it is idle.
    pub fn advance(&mut self, now: Instant) -> Time {
        let mut min: Option<Time> = None;
        for p in &self.partitions {
            let idle = self
                .idle_timeout
                .is_some_and(|t| now.saturating_duration_since(p.last_active) >= t);
            if p.finished || idle {
                continue;
            }
            let w = match p.max_seen {
                Some(m) => to_time(m.saturating_sub(self.max_out_of_orderness)),
                None => self.current,
            };
            min = Some(min.map_or(w, |x| x.min(w)));
        }
        if let Some(w) = min {
            self.current = self.current.max(w);
        }
        self.current
    }

    /// The watermark as last computed.
    pub fn current(&self) -> Time {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_out_of_orderness_and_never_regresses() {
        let now = Instant::now();
        let mut w = Watermarks::new(1, Duration::from_secs(5), None);
        w.observe(0, 20_000, now);
        assert_eq!(w.advance(now), 15_000);
        w.observe(0, 10_000, now);
        assert_eq!(w.advance(now), 15_000);
    }

    #[test]
    fn minimum_over_partitions_and_idle_ones_do_not_hold_it_back() {
        let start = Instant::now();
        let mut w = Watermarks::new(2, Duration::ZERO, Some(Duration::from_secs(10)));
        w.observe(0, 1_000, start);
        w.observe(1, 50_000, start);
        assert_eq!(w.advance(start), 1_000);
        // Partition 0 goes quiet; partition 1 goes on.
        let later = start + Duration::from_secs(11);
        w.observe(1, 60_000, later);
        assert_eq!(w.advance(later), 60_000);
        // When partition 0 comes back behind, the watermark does not regress.
        w.observe(0, 2_000, later);
        assert_eq!(w.advance(later), 60_000);
    }

    #[test]
    fn finished_partitions_release_the_watermark() {
        let now = Instant::now();
        let mut w = Watermarks::new(2, Duration::ZERO, None);
        w.observe(0, 1_000, now);
        w.observe(1, 9_000, now);
        assert_eq!(w.advance(now), 1_000);
        w.finish(0);
        assert_eq!(w.advance(now), 9_000);
    }
}
