//! A partition's progress: the timely time each of its samples enters at,
//! and which offsets may be committed.
//!
//! A sample enters at its partition's watermark after it (`max seen -
//! max_out_of_orderness`), so its time depends only on the partition's
//! messages before it. With the partition's `max seen` stored beside its
//! committed offset, a restart gives every message it reads again the time
//! it had before, and windows make the same decisions about it.
//!
//! An offset is committed once everything before it can no longer change
//! any sink output that is not yet durable: a sample that entered at `t`
//! with event time `e` affects outputs at times up to `max(t, e + reach)`
//! (see `tidemark_engine::component::Reach`), so it is done when the sinks'
//! durable frontier has passed that. The frontier at commit is stored too:
//! after a restart, sinks skip outputs below the largest stored frontier
//! (they were written, and part of their input is not read again).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tidemark_engine::component::Reach;
use tidemark_engine::time::{Millis, Time, to_time};

/// What is stored beside a committed offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The largest event time of the messages before the offset.
    pub max_seen: Option<Millis>,
    /// The sinks' durable frontier when the offset was committed.
    pub durable: Time,
}

const PREFIX: &str = "tidemark/1";

impl Checkpoint {
    /// The commit metadata string.
    pub fn encode(&self) -> String {
        match self.max_seen {
            Some(m) => format!("{PREFIX} max_seen={m} durable={}", self.durable),
            None => format!("{PREFIX} max_seen=- durable={}", self.durable),
        }
    }

    /// Reads commit metadata; `None` if it is not Tidemark's (another
    /// consumer committed, or nothing was).
    pub fn decode(text: &str) -> Option<Checkpoint> {
        let mut parts = text.split(' ');
        if parts.next()? != PREFIX {
            return None;
        }
        let max_seen = match parts.next()?.strip_prefix("max_seen=")? {
            "-" => None,
            m => Some(m.parse().ok()?),
        };
        let durable = parts.next()?.strip_prefix("durable=")?.parse().ok()?;
        Some(Checkpoint { max_seen, durable })
    }
}

/// Stamps a partition's samples with their entry time (consumer side).
#[derive(Clone, Debug)]
pub struct Stamper {
    max_out_of_orderness: Millis,
    max_seen: Option<Millis>,
    reach: Reach,
}

impl Stamper {
    /// Starts from a restored `max_seen`.
    pub fn new(max_out_of_orderness: Millis, max_seen: Option<Millis>, reach: Reach) -> Stamper {
        Stamper {
            max_out_of_orderness,
            max_seen,
            reach,
        }
    }

    /// The entry time of a sample with event time `e`, and how far it
    /// reaches downstream.
    #[inline]
    pub fn stamp(&mut self, e: Millis) -> (Time, Time) {
        let m = self.max_seen.map_or(e, |m| m.max(e));
        self.max_seen = Some(m);
        let t = to_time(m.saturating_sub(self.max_out_of_orderness));
        let reach = match self.reach {
            Some(r) => t.max(to_time(e).saturating_add(r)),
            None => Time::MAX,
        };
        (t, reach)
    }

    /// The partition's watermark, if it has seen anything.
    pub fn watermark(&self) -> Option<Time> {
        self.max_seen
            .map(|m| to_time(m.saturating_sub(self.max_out_of_orderness)))
    }

    /// The largest event time seen.
    pub fn max_seen(&self) -> Option<Millis> {
        self.max_seen
    }
}

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

#[derive(Clone, Copy, Debug)]
struct Chunk {
    next_offset: i64,
    reach: Time,
    max_seen: Option<Millis>,
}

/// The offsets of a partition not yet committed (operator side).
#[derive(Debug, Default)]
pub struct Uncommitted {
    chunks: VecDeque<Chunk>,
}

impl Uncommitted {
    /// Records that the messages up to `next_offset` were emitted, reaching
    /// at most `reach`, leaving the partition at `max_seen`.
    pub fn push(&mut self, next_offset: i64, reach: Time, max_seen: Option<Millis>) {
        self.chunks.push_back(Chunk {
            next_offset,
            reach,
            max_seen,
        });
    }

    /// The offset to commit now that the sinks are durable below `durable`,
    /// with its checkpoint; `None` if nothing new is done.
    pub fn commit(&mut self, durable: Time) -> Option<(i64, Checkpoint)> {
        let mut done = None;
        while let Some(c) = self.chunks.front() {
            if c.reach >= durable {
                break;
            }
            done = Some((
                c.next_offset,
                Checkpoint {
                    max_seen: c.max_seen,
                    durable,
                },
            ));
            self.chunks.pop_front();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_back() {
        for c in [
            Checkpoint {
                max_seen: Some(-5),
                durable: 7,
            },
            Checkpoint {
                max_seen: None,
                durable: 0,
            },
        ] {
            assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        }
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(Checkpoint::decode("tidemark/1 max_seen=x durable=1"), None);
    }

    #[test]
    fn a_restored_partition_stamps_as_before() {
        let events = [1_000, 5_000, 3_000, 9_000, 8_000];
        let mut first = Stamper::new(2_000, None, Some(10_000));
        let times: Vec<(Time, Time)> = events.iter().map(|&e| first.stamp(e)).collect();
        assert_eq!(times[2], (3_000, 13_000));
        // Resume after the second message, from what was stored with it.
        let mut again = Stamper::new(2_000, Some(5_000), Some(10_000));
        let replay: Vec<(Time, Time)> = events[2..].iter().map(|&e| again.stamp(e)).collect();
        assert_eq!(replay, times[2..]);
    }

    #[test]
    fn offsets_are_committed_once_their_reach_is_durable() {
        let mut u = Uncommitted::default();
        u.push(10, 20_000, Some(1));
        u.push(20, 15_000, Some(2));
        u.push(30, 40_000, Some(3));
        assert_eq!(u.commit(15_000), None);
        // The second chunk is done, but the first is not: offsets are a prefix.
        assert_eq!(
            u.commit(20_001),
            Some((
                20,
                Checkpoint {
                    max_seen: Some(2),
                    durable: 20_001
                }
            ))
        );
        assert_eq!(u.commit(30_000), None);
        assert_eq!(u.commit(Time::MAX).map(|c| c.0), Some(30));
    }

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

    #[test]
    fn unbounded_reach_is_never_done_early() {
        let mut s = Stamper::new(0, None, None);
        assert_eq!(s.stamp(5).1, Time::MAX);
    }
}
