//! Whether a partition holds the watermark back: idleness is the
//! consumer thread's call (the stamps and commits every replayable log
//! shares are in `crate::progress`).

use std::time::{Duration, Instant};

/// Whether a partition holds the watermark back (consumer side).
///
/// A partition is idle once it has delivered nothing for `timeout` **and**
/// the broker says nothing is left to read in it. A partition with messages
/// waiting (held back by backpressure, or not fetched yet while the
/// consumer serves other partitions) is never idle, so waiting never makes
/// its samples late: quiet time counts only while the consumer fetches
/// (not while it is paused for backpressure). Once idle, its next message
/// makes it active again.
#[derive(Clone, Debug)]
pub struct Idleness {
    timeout: Duration,
    last_message: Instant,
    last_check: Option<Instant>,
    idle: bool,
    paused: bool,
}

/// How often a quiet partition asks the broker whether it is at its end.
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Idleness {
    /// A partition taken on at `now`.
    pub fn new(timeout: Duration, now: Instant) -> Idleness {
        Idleness {
            timeout,
            last_message: now,
            last_check: None,
            idle: false,
            paused: false,
        }
    }

    /// The consumer paused its partitions for backpressure: nothing can
    /// arrive, so quiet says nothing until it resumes.
    pub fn paused(&mut self) {
        self.paused = true;
    }

    /// The consumer resumed fetching at `now`: quiet time counts from here.
    pub fn resumed(&mut self, now: Instant) {
        self.paused = false;
        if !self.idle {
            self.last_message = self.last_message.max(now);
            self.last_check = None;
        }
    }

    /// A message of the partition was read at `now`.
    pub fn message(&mut self, now: Instant) {
        self.last_message = now;
        self.last_check = None;
        self.idle = false;
    }

    /// Whether to ask the broker now whether the partition is at its end.
    pub fn due(&self, now: Instant) -> bool {
        !self.idle
            && !self.paused
            && now.saturating_duration_since(self.last_message) >= self.timeout
            && self
                .last_check
                .is_none_or(|c| now.saturating_duration_since(c) >= CHECK_EVERY.min(self.timeout))
    }

    /// The broker's answer at `now` (`at_end`); true when the partition
    /// has just become idle.
    pub fn checked(&mut self, now: Instant, at_end: bool) -> bool {
        self.last_check = Some(now);
        if self.idle || self.paused || !at_end {
            return false;
        }
        self.idle = true;
        true
    }
}

/// Whether a partition has nothing left to read: the next offset to read
/// (`None` before the first message, when the start was not an offset)
/// against the broker's low and high watermarks.
pub fn at_end(next: Option<i64>, low: i64, high: i64) -> bool {
    match next {
        Some(n) => n >= high,
        None => low >= high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_idle_only_when_quiet_and_at_its_end() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut i = Idleness::new(3 * s, t0);
        assert!(!i.due(t0 + 2 * s), "quiet for less than the timeout");
        assert!(i.due(t0 + 3 * s));
        // Paused for backpressure: never idle, even where the broker says
        // it is at its end (tansu 0.6 reports the end early).
        i.paused();
        assert!(!i.due(t0 + 4 * s));
        assert!(!i.checked(t0 + 4 * s, true));
        // Resumed: the quiet time counts from the resume.
        i.resumed(t0 + 4 * s);
        assert!(!i.due(t0 + 6 * s));
        assert!(i.due(t0 + 7 * s));
        // Messages left: not idle, asked again a second later.
        assert!(!i.checked(t0 + 7 * s, false));
        assert!(!i.due(t0 + 7 * s + s / 2));
        assert!(i.checked(t0 + 8 * s, true), "at its end");
        assert!(!i.due(t0 + 10 * s), "idle: nothing to ask");
        assert!(!i.checked(t0 + 10 * s, true), "already idle");
        i.resumed(t0 + 10 * s);
        assert!(
            !i.due(t0 + 20 * s),
            "a resume leaves an idle partition idle"
        );
        // A message makes it active; the timeout counts from it.
        i.message(t0 + 21 * s);
        assert!(!i.due(t0 + 23 * s));
        assert!(i.due(t0 + 24 * s));
    }

    #[test]
    fn the_end_is_the_high_watermark() {
        assert!(at_end(Some(10), 0, 10));
        assert!(!at_end(Some(9), 0, 10));
        // Nothing read yet from the beginning: at the end only if empty
        // (retention may have removed everything before `low`).
        assert!(at_end(None, 7, 7));
        assert!(!at_end(None, 0, 7));
    }
}
