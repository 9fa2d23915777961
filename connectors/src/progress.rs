//! A replayable log's progress (a Kafka partition, the write-ahead log of
//! network ingest): the timely time each of its samples enters at, and
//! which positions may be committed.
//!
//! A sample enters at its log's watermark after it (`max seen -
//! max_out_of_orderness`), so its time depends only on the log's records
//! before it. With `max seen` stored beside the committed position, a
//! restart gives every record it reads again the time it had before, and
//! windows make the same decisions about it.
//!
//! A position is committed once everything before it can no longer change
//! any sink output that is not yet durable: a sample that entered at `t`
//! with event time `e` affects outputs at times up to `max(t, e + reach)`
//! (see `tidemark_engine::component::Reach`), so it is done when the sinks'
//! durable frontier has passed that. The frontier at commit is stored too:
//! after a restart, sinks skip outputs below the largest stored frontier
//! (they were written, and part of their input is not read again).

use std::collections::VecDeque;

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

    /// Takes note of a record's largest event time without stamping its
    /// samples (a record another worker emits, or whose samples were all
    /// filtered out): the watermark is the log's, whoever reads it.
    pub fn observe(&mut self, e: Millis) {
        self.max_seen = Some(self.max_seen.map_or(e, |m| m.max(e)));
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
        // Done no later than the chunk before it: one chunk for both.
        if let Some(back) = self.chunks.back_mut()
            && reach <= back.reach
        {
            back.next_offset = next_offset;
            back.max_seen = max_seen;
            return;
        }
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
    fn unbounded_reach_is_never_done_early() {
        let mut s = Stamper::new(0, None, None);
        assert_eq!(s.stamp(5).1, Time::MAX);
    }
}
