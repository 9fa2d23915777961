//! Pre-aggregation before the exchange: each worker folds the samples its
//! sources produce into one partial accumulator per group and window, and
//! sends the partials to the window when the window closes, instead of
//! every sample. With ten samples of a series in a window, a tenth of the
//! records change worker, or cross the network between processes.
//!
//! It applies to tumbling and hopping windows whose aggregates merge
//! exactly (`count`, `sum`, `min`, `max`, `avg`, `last`) in pipelines
//! without checkpoints ([`super::WindowSpec::combines`]).
//!
//! What the window decides about a sample stays with the window: a sample
//! late for any of its windows, and a NaN, is passed on unchanged. A
//! partial carries the latest watermark at which its samples entered, so
//! the window judges it on time exactly as it would have judged them, and
//! the furthest watermark the worker had seen, so the window knows how far
//! its input reached when the input ends (partial windows). The worker
//! holds its output frontier at the last moment before the oldest window
//! it holds closes (`end + lateness`), so no window closes before its
//! partials reach it, while until then the frontier moves on as the input's
//! does: what comes after sees the same progress as without the combiner,
//! and a source's flow control counts the samples folded here as taken (it
//! would otherwise wait for a window that cannot close until it sends
//! more).
//!
//! Results are the same bits as without pre-aggregation when a group's
//! samples all come from one worker (a series read by one source worker:
//! from a file, a Kafka partition, a generator): its partial is folded in
//! the order the window would have folded the samples, and merging a lone
//! partial into an empty accumulator keeps its bits. When a group's samples come from several
//! workers, the window adds their partials in arrival order, as it added
//! their samples before: count, min, max and last are the same, a sum can
//! differ in its last bits from one run to the next, as it could before.
//! Checkpointed pipelines do not combine: a cut inside a window would split
//! a partial in two, and the sum would depend on where the cut fell.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use tidemark_engine::time::{Millis, Time};
use tidemark_engine::{Sample, Series, SeriesId};

use super::{WindowKind, WindowSpec, table_bytes};
use crate::aggregate::{Accumulator, Needs};

/// What crosses the exchange into a combined window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Piece {
    /// A sample the worker did not combine (late for one of its windows,
    /// or NaN): the window treats it as any sample.
    Sample(Sample),
    /// A worker's partial aggregate of one group in one window.
    Part(Part),
}

/// One worker's partial aggregate of a group in a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    /// The group (its labels name the window's outputs).
    pub group: Series,
    /// The window's end.
    pub end: Millis,
    /// Its samples, folded in the order the worker received them.
    pub acc: Accumulator,
    /// The latest watermark at which one of its samples entered: before
    /// the window's close, as every sample was.
    pub entered: Time,
    /// The furthest watermark the worker had seen when it sent the part.
    pub seen: Time,
}

/// One window's partials on one worker.
struct Open {
    /// The latest watermark at which one of its samples entered.
    last: Time,
    parts: Parts,
}

/// A partial and its group, by group id: 72 bytes with the key.
type Parts = FxHashMap<SeriesId, (Series, Accumulator)>;

/// One worker's partials of aligned windows, by window end.
pub struct Combiner {
    size: Millis,
    every: Millis,
    lateness: Millis,
    needs: Needs,
    open: BTreeMap<Millis, Open>,
    /// Tables of sent windows, emptied, for the next ones.
    spare: Vec<Parts>,
    /// Groups in the last window sent: the size to pre-allocate.
    last_len: usize,
    /// The end of the last window sent.
    last_end: Millis,
    /// The furthest watermark seen.
    seen: Time,
}

impl Combiner {
    /// An empty combiner for an aligned window (`None` for sessions).
    pub fn new(spec: &WindowSpec) -> Option<Combiner> {
        let (size, every) = match spec.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Hopping { size, every } => (size, every),
            WindowKind::Session { .. } => return None,
        };
        Some(Combiner {
            size,
            every,
            lateness: spec.lateness,
            needs: spec.needs,
            open: BTreeMap::new(),
            spare: Vec::new(),
            last_len: 0,
            last_end: Millis::MIN,
            seen: 0,
        })
    }

    /// When the window reading a sample that entered at `time` would close
    /// the window that ends at `end` (as [`super::AlignedWindows`] does).
    fn close_time(&self, end: Millis) -> Time {
        super::close_time(end, self.lateness)
    }

    /// Folds `sample` of `group`, which entered at watermark `time`, into
    /// the partials of its windows. Returns `false`, folding nothing, for a
    /// sample the window must see itself: NaN, or late for any of its
    /// windows.
    #[inline]
    pub fn insert(&mut self, sample: &Sample, group: &Series, time: Time) -> bool {
        if sample.value.is_nan() {
            return false;
        }
        let ts = sample.timestamp;
        // The first of its windows is the first to close.
        let mut end = super::first_end(ts, self.every);
        if time >= self.close_time(end) {
            return false;
        }
        while end - self.size < ts {
            let (spare, last_len) = (&mut self.spare, self.last_len);
            let open = self.open.entry(end).or_insert_with(|| Open {
                last: time,
                parts: spare.pop().unwrap_or_else(|| {
                    FxHashMap::with_capacity_and_hasher(last_len, Default::default())
                }),
            });
            open.last = open.last.max(time);
            let needs = self.needs;
            let (_, acc) = open
                .parts
                .entry(group.id())
                .or_insert_with(|| (group.clone(), Accumulator::new(needs)));
            acc.insert(needs, sample.series.id().0, ts, sample.value);
            end += self.every;
        }
        true
    }

    /// Sends the partials of every window the frontier `frontier` (`None`:
    /// the input is done) closes, as `emit(time, parts)`: one batch per
    /// window, at the last moment before it closes (`end + lateness`) or at
    /// the furthest the input reached if that is earlier (the end of the
    /// input), whichever is later than the operator's capability.
    pub fn flush(&mut self, frontier: Option<Time>, emit: &mut impl FnMut(Time, Vec<Piece>)) {
        if let Some(f) = frontier {
            self.seen = self.seen.max(f);
        }
        let f = frontier.unwrap_or(Time::MAX);
        while let Some((&end, _)) = self.open.first_key_value() {
            if self.close_time(end) > f {
                break;
            }
            let Some((_, mut open)) = self.open.pop_first() else {
                break;
            };
            self.last_len = open.parts.len();
            let seen = self.seen.max(open.last);
            let batch = open
                .parts
                .drain()
                .map(|(_, (group, acc))| {
                    Piece::Part(Part {
                        group,
                        end,
                        acc,
                        entered: open.last,
                        seen,
                    })
                })
                .collect();
            emit(self.holding(end).min(seen), batch);
            // A table that grew for an earlier, larger window shrinks.
            if open.parts.capacity() > 2 * self.last_len.max(1024) {
                open.parts.shrink_to(self.last_len);
            }
            self.spare.push(open.parts);
            self.last_end = end;
        }
        // Two window sizes without a sample: the tables go too, as the
        // window forgets its idle groups.
        let idle = self.last_end.saturating_add(self.size.saturating_mul(2));
        if self.open.is_empty() && !self.spare.is_empty() && self.close_time(idle) <= f {
            self.spare = Vec::new();
        }
    }

    /// Where the worker holds its output: the last moment before the oldest
    /// window it holds closes.
    pub fn holds(&self) -> Option<Time> {
        self.open
            .first_key_value()
            .map(|(&end, _)| self.holding(end))
    }

    /// The last timely time before the window that ends at `end` closes.
    fn holding(&self, end: Millis) -> Time {
        self.close_time(end).saturating_sub(1)
    }

    /// Partials held, over all windows.
    pub fn len(&self) -> usize {
        self.open.values().map(|o| o.parts.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Bytes held: the tables, open and spare (group labels are shared
    /// with the input series).
    pub fn bytes(&self) -> usize {
        let table = |p: &Parts| table_bytes::<SeriesId, (Series, Accumulator)>(p.capacity());
        self.open.values().map(|o| table(&o.parts)).sum::<usize>()
            + self.spare.iter().map(table).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::Aggregate;
    use crate::group::Grouping;
    use crate::window::{LatePolicy, Partial, WindowState};

    fn spec(kind: WindowKind, lateness: Millis) -> WindowSpec {
        let aggregates = vec![
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Avg,
            Aggregate::Last,
        ];
        WindowSpec {
            kind,
            label: "10ms".into(),
            lateness,
            late: LatePolicy::Drop,
            needs: Needs::of(&aggregates),
            aggregates: Arc::from(aggregates),
            grouping: Grouping::Series,
            partial: Partial::Mark,
            combine: true,
        }
    }

    /// Feeds `(series, ts, value, entry time)` with a frontier step after
    /// each, into the window alone and through a combiner into the window;
    /// returns both outputs as (timely time, name, labels, ts, value bits).
    fn both(
        spec: WindowSpec,
        input: &[(usize, i64, f64, Time)],
    ) -> [Vec<(Time, String, i64, u64)>; 2] {
        let series: Vec<Series> = (0..3)
            .map(|i| Series::new("x", [("s", i.to_string())]))
            .collect();
        let key =
            |t: Time, s: Sample| (t, format!("{:?}", s.series), s.timestamp, s.value.to_bits());
        let mut plain = WindowState::new(spec.clone());
        let mut combined = WindowState::new(spec.clone());
        let mut combiner = Combiner::new(&spec).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (step, &(i, ts, v, time)) in input.iter().enumerate() {
            let sample = Sample::new(series[i].clone(), ts, v);
            plain.saw(time);
            plain.insert(&sample, &sample.series, time);
            if !combiner.insert(&sample, &sample.series, time) {
                combined.saw(time);
                combined.insert(&sample, &sample.series, time);
            }
            // The frontier: the next sample's entry time, or the end.
            let f = input.get(step + 1).map(|n| n.3);
            if let Some(f) = f {
                plain.saw(f);
            }
            plain.advance(f, &mut |t, batch| {
                a.extend(batch.into_iter().map(|s| key(t, s)))
            });
            let mut parts = Vec::new();
            combiner.flush(f, &mut |t, batch| parts.push((t, batch)));
            for (t, batch) in parts {
                combined.saw(t);
                for piece in batch {
                    match piece {
                        Piece::Part(p) => combined.merge(p),
                        Piece::Sample(s) => combined.insert(&s, &s.series, t),
                    }
                }
            }
            // The window sees the combiner's output frontier.
            let held = f.map(|f| combiner.holds().map_or(f, |h| h.min(f)));
            if let Some(h) = held {
                combined.saw(h);
            }
            combined.advance(held, &mut |t, batch| {
                b.extend(batch.into_iter().map(|s| key(t, s)))
            });
        }
        a.sort();
        b.sort();
        [a, b]
    }

    #[test]
    fn combined_windows_are_the_same_bits() {
        // Sums that depend on their order; a late sample; a NaN; three
        // series; the input ends inside a window (partial).
        let mut input = Vec::new();
        let mut time = 5;
        for k in 0..40i64 {
            let ts = 5 + k;
            time = time.max(ts as Time - 2);
            input.push((
                (k % 3) as usize,
                ts,
                0.1 * k as f64 + 1e-17 * (k * k) as f64,
                time,
            ));
        }
        input.push((1, 3, 7.0, time)); // late
        input.push((2, 44, f64::NAN, time));
        input.push((0, 44, 1e16, time));
        input.push((0, 45, 1.0, time));
        for kind in [
            WindowKind::Tumbling { size: 10 },
            WindowKind::Hopping { size: 10, every: 5 },
        ] {
            for lateness in [0, 3] {
                let [a, b] = both(spec(kind.clone(), lateness), &input);
                assert!(!a.is_empty());
                assert_eq!(a, b, "{kind:?}, lateness {lateness}");
            }
        }
    }

    #[test]
    fn late_and_nan_samples_are_passed_on_and_the_output_is_held() {
        let mut c = Combiner::new(&spec(WindowKind::Tumbling { size: 10 }, 0)).unwrap();
        let s = Series::new("x", [("s", "0")]);
        let at = |ts, v| Sample::new(s.clone(), ts, v);
        assert!(c.insert(&at(12, 1.0), &s, 11));
        assert!(c.insert(&at(15, 2.0), &s, 14));
        // (0, 10] closes at 11: a sample of it entering at 11 is late.
        assert!(!c.insert(&at(9, 1.0), &s, 11));
        assert!(!c.insert(&at(13, f64::NAN), &s, 14));
        // Held until (10, 20] closes at 21.
        assert_eq!(c.holds(), Some(20));
        assert_eq!(c.len(), 1);
        let mut sent = Vec::new();
        c.flush(Some(20), &mut |t, batch| sent.push((t, batch)));
        assert!(sent.is_empty(), "(10, 20] closes at 21");
        c.flush(Some(21), &mut |t, batch| sent.push((t, batch)));
        assert_eq!(sent.len(), 1);
        let (t, batch) = &sent[0];
        assert_eq!(*t, 20);
        let [Piece::Part(p)] = batch.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!((p.end, p.entered, p.seen, p.acc.count()), (20, 14, 21, 2));
        assert!(c.is_empty());
        assert_eq!(c.holds(), None);
    }

    #[test]
    fn sessions_do_not_combine() {
        assert!(Combiner::new(&spec(WindowKind::Session { gap: 5 }, 0)).is_none());
    }
}
