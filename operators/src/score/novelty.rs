//! The `novelty` detector (the default) and its small sibling `light`.
//!
//! A series' values are cut into bins at several resolutions at once (4, 6,
//! 8, 10 and 12 bins across the range the series has shown, or across the
//! range hint). At each resolution the detector remembers which bins it has
//! seen, which bin followed which, and (`novelty`, order 2) which followed
//! which pair: one bit per combination. A sample's score is the share of
//! those views in which it is new: a value never seen, a jump never made,
//! a level held where the series always moved on. A daily pattern is
//! learnt in its first day and stops being new; noise stays inside the bins
//! it has filled. The idea is the contextual novelty of Smirnov's CAD OSE
//! (NAB 2016), re-derived: several resolutions instead of one, so no bin
//! edge decides alone, and the range learnt as the series goes.
//!
//! Without a range hint the range is the one seen so far. A value more
//! than a quarter of it beyond is new at every resolution (it scores 1);
//! the range then grows to take it in and what was learnt is carried over
//! to the new bins (each old bin to the bin of its middle), so nothing is
//! relearnt from history and no values are kept.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{Alarm, Params, Score};

/// Bins across the range, one resolution each.
const BINS: [usize; 5] = [4, 6, 8, 10, 12];
/// Bins kept beyond each end of the range: a quarter of it, rounded up, so
/// a value up to a quarter of the range outside does not grow the range.
const MARGIN: [usize; 5] = margins();
/// Levels (bins) per resolution: the range, the margins and one for a
/// value at the very top.
const LEVELS: [usize; 5] = levels();

const fn margins() -> [usize; 5] {
    let mut m = [0; 5];
    let mut i = 0;
    while i < 5 {
        m[i] = BINS[i].div_ceil(4);
        i += 1;
    }
    m
}

const fn levels() -> [usize; 5] {
    let mut l = [0; 5];
    let mut i = 0;
    while i < 5 {
        l[i] = BINS[i] + 2 * MARGIN[i] + 1;
        i += 1;
    }
    l
}

/// Where each resolution's table for each context length starts, in bits,
/// for a detector of `order` (1 or 2), and the total.
const fn layout(order: usize) -> ([[usize; 3]; 5], usize) {
    let mut at = [[0; 3]; 5];
    let mut bit = 0;
    let mut r = 0;
    while r < 5 {
        let mut o = 0;
        let mut size = LEVELS[r];
        while o <= order {
            at[r][o] = bit;
            bit += size;
            size *= LEVELS[r];
            o += 1;
        }
        r += 1;
    }
    (at, bit)
}

const LAYOUT: [([[usize; 3]; 5], usize); 3] = [layout(0), layout(1), layout(2)];

/// Words of `light`'s tables, kept inline (one allocation fewer, one cache
/// miss fewer per sample with many series); `novelty`'s go to the heap.
const INLINE: usize = LAYOUT[1].1.div_ceil(64);

/// Share of the range a value may fall outside it before the range grows.
const GROW: f64 = 0.25;

/// One series' state for `novelty` (order 2: about 2.2 KB) or `light`
/// (order 1: about 200 bytes): the range, the last two levels at each
/// resolution and the bit tables. Serialisable, so it can be checkpointed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    /// Context length: 2 for `novelty`, 1 for `light`.
    order: u8,
    lo: f64,
    hi: f64,
    /// Samples learnt.
    seen: u64,
    /// The last two levels at each resolution, the latest last.
    recent: [[u8; 2]; 5],
    /// One bit per (context, level) met, every resolution's tables end to
    /// end.
    bits: SmallVec<[u64; INLINE]>,
    alarm: Alarm,
    /// Event time of the last sample scored.
    pub last: i64,
}

impl Novelty {
    /// A model with nothing learnt; `order` is 1 (`light`) or 2.
    pub fn new(order: u8) -> Novelty {
        let order = order.clamp(1, 2);
        let words = LAYOUT[usize::from(order)].1.div_ceil(64);
        Novelty {
            order,
            lo: 0.0,
            hi: 0.0,
            seen: 0,
            recent: [[0; 2]; 5],
            bits: SmallVec::from_elem(0, words),
            alarm: Alarm::default(),
            last: i64::MIN,
        }
    }

    /// Its context length: 1 (`light`) or 2 (`novelty`).
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Bytes the model holds.
    pub fn bytes(&self) -> usize {
        let heap = if self.bits.spilled() {
            8 * self.bits.capacity()
        } else {
            0
        };
        size_of::<Novelty>() + heap
    }

    fn span(&self) -> f64 {
        (self.hi - self.lo)
            .max(1e-9 * self.lo.abs().max(self.hi.abs()))
            .max(f64::MIN_POSITIVE)
    }

    /// Where `v` is in the range: 0 at its low end, 1 at its high end.
    fn position(&self, v: f64) -> f64 {
        (v - self.lo) / self.span()
    }

    /// The level (bin index, margin included) at resolution `r` of a value
    /// at `position`.
    fn level(r: usize, position: f64) -> usize {
        // `floor` without the libm call it compiles to on baseline x86-64:
        // truncate, then step down for negatives. NaN cannot reach here; a
        // huge value saturates and clamps to the first or last level.
        let x = position * BINS[r] as f64;
        let t = x as i64;
        let floor = t.saturating_sub(i64::from((t as f64) > x));
        floor
            .saturating_add(MARGIN[r] as i64)
            .clamp(0, LEVELS[r] as i64 - 1) as usize
    }

    fn test_and_set(&mut self, bit: usize) -> bool {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        let had = self.bits[w] & m != 0;
        self.bits[w] |= m;
        had
    }

    /// Scores `value` at event time `t` and learns it. NaN (a stale
    /// marker) scores 0 and teaches nothing; an infinity, or a value
    /// outside the range hint, scores 1 and teaches nothing.
    pub fn update(&mut self, p: &Params, t: i64, value: f64) -> Score {
        self.last = t;
        if let Some((lo, hi)) = p.range {
            (self.lo, self.hi) = (lo, hi);
        }
        let (expected, lower, upper) = if p.explain {
            self.band()
        } else {
            (0.0, 0.0, 0.0)
        };
        let mut s = Score {
            score: 0.0,
            anomaly: false,
            expected,
            lower,
            upper,
        };
        if value.is_nan() {
            return s;
        }
        let outside = p.range.is_some_and(|(lo, hi)| value < lo || value > hi);
        if value.is_infinite() || outside {
            s.score = 1.0;
            s.anomaly = self.alarm.flag(p, 1.0);
            return s;
        }
        if self.seen == 0 && p.range.is_none() {
            (self.lo, self.hi) = (value, value);
        }
        let grows = p.range.is_none() && {
            let margin = GROW * (self.hi - self.lo);
            value < self.lo - margin || value > self.hi + margin
        };
        // A value that grows the range is in bins never met, at every
        // resolution: new in every view. The bins grow to take it in and it
        // is learnt in them.
        let novel = if grows {
            self.grow(value);
            self.learn(value);
            1.0
        } else {
            self.learn(value)
        };
        self.seen += 1;
        let score = if self.seen > p.warmup { novel } else { 0.0 };
        s.score = self.alarm.damped(p, score);
        s.anomaly = self.seen > p.warmup && self.alarm.flag(p, score);
        s
    }

    /// Marks `value`'s level after each context at every resolution;
    /// returns the share of them that were new.
    fn learn(&mut self, value: f64) -> f64 {
        let order = usize::from(self.order);
        let (at, _) = LAYOUT[order];
        let known = (self.seen as usize).min(order);
        let position = self.position(value);
        let mut new = 0u32;
        for r in 0..5 {
            let l = Self::level(r, position);
            let n = LEVELS[r];
            let [a, b] = self.recent[r].map(usize::from);
            let keys = [l, b * n + l, (a * n + b) * n + l];
            for (start, key) in at[r].iter().zip(keys).take(known + 1) {
                new += u32::from(!self.test_and_set(start + key));
            }
            self.recent[r] = [self.recent[r][1], l as u8];
        }
        f64::from(new) / (5 * (known + 1)) as f64
    }

    /// Widens the range to take `value` in, carrying every bit (and the
    /// last levels) to the bins of the old bins' middles.
    fn grow(&mut self, value: f64) {
        let (old_lo, old_span) = (self.lo, self.span());
        self.lo = self.lo.min(value);
        self.hi = self.hi.max(value);
        let order = usize::from(self.order);
        let (at, total) = LAYOUT[order];
        // Each resolution's old levels to new ones.
        let mut maps = [[0u8; LEVELS[4]]; 5];
        for (r, map) in maps.iter_mut().enumerate() {
            for (i, to) in map.iter_mut().enumerate().take(LEVELS[r]) {
                let middle =
                    old_lo + (i as f64 - MARGIN[r] as f64 + 0.5) * old_span / BINS[r] as f64;
                *to = Self::level(r, self.position(middle)) as u8;
            }
        }
        // The tables in the order they are laid out: (resolution, context
        // length, first bit past the table).
        let mut tables = Vec::with_capacity(15);
        for (r, starts) in at.iter().enumerate() {
            for (o, &start) in starts.iter().enumerate().take(order + 1) {
                tables.push((r, o, start + LEVELS[r].pow(o as u32 + 1)));
            }
        }
        let mut bits: SmallVec<[u64; INLINE]> = SmallVec::from_elem(0, total.div_ceil(64));
        let mut table = 0;
        // Only the bits set (a few hundred at most) are visited.
        for (w, &word) in self.bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let bit = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                while bit >= tables[table].2 {
                    table += 1;
                }
                let (r, o, _) = tables[table];
                let (n, start) = (LEVELS[r], at[r][o]);
                // The key's levels, latest first, each carried over.
                let (mut k, mut moved, mut scale) = (bit - start, 0, 1);
                for _ in 0..=o {
                    moved += usize::from(maps[r][k % n]) * scale;
                    k /= n;
                    scale *= n;
                }
                let to = start + moved;
                bits[to / 64] |= 1 << (to % 64);
            }
        }
        for (recent, map) in self.recent.iter_mut().zip(&maps) {
            *recent = recent.map(|l| map[usize::from(l)]);
        }
        self.bits = bits;
    }

    /// The band the model expects the next value in: the bins (finest
    /// resolution) that have followed the last one, or every bin seen.
    fn band(&self) -> (f64, f64, f64) {
        if self.seen == 0 {
            return (0.0, 0.0, 0.0);
        }
        let r = 4;
        let (at, _) = LAYOUT[usize::from(self.order)];
        let n = LEVELS[r];
        // The row's n bits (n < 64) from `start`, as the low bits of a word.
        let row = |start: usize| -> Option<(usize, usize)> {
            let (w, shift) = (start / 64, start % 64);
            let mut word = self.bits[w] >> shift;
            if shift + n > 64 {
                word |= self.bits[w + 1] << (64 - shift);
            }
            let word = word & ((1u64 << n) - 1);
            (word != 0).then(|| {
                (
                    word.trailing_zeros() as usize,
                    63 - word.leading_zeros() as usize,
                )
            })
        };
        let last = usize::from(self.recent[r][1]);
        let Some((first, end)) = row(at[r][1] + last * n).or_else(|| row(at[r][0])) else {
            return (0.0, 0.0, 0.0);
        };
        let width = self.span() / BINS[r] as f64;
        let lower = self.lo + (first as f64 - MARGIN[r] as f64) * width;
        let upper = self.lo + (end as f64 - MARGIN[r] as f64 + 1.0) * width;
        ((lower + upper) / 2.0, lower, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::tests::noise;

    #[test]
    fn levels_are_floored_as_floor_does() {
        let reference = |r: usize, position: f64| {
            let x = (position * BINS[r] as f64).floor() + MARGIN[r] as f64;
            x.clamp(0.0, (LEVELS[r] - 1) as f64) as usize
        };
        let mut positions: Vec<f64> = (-400..=400).map(|i| f64::from(i) / 160.0).collect();
        positions.extend([-1e300, -1e19, -0.0, 1e-300, 0.999_999_999, 1e19, 1e300]);
        for r in 0..5 {
            for &p in &positions {
                assert_eq!(Novelty::level(r, p), reference(r, p), "r={r} p={p}");
            }
        }
    }

    /// The defaults, but a short warm-up: these tests are of what the
    /// model learns, not of how long it waits.
    fn params() -> Params {
        Params {
            warmup: 32,
            ..Params::default()
        }
    }

    fn run(m: &mut Novelty, p: &Params, values: &[f64]) -> Vec<Score> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| m.update(p, i as i64 * 1000, *v))
            .collect()
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(LEVELS, [7, 11, 13, 17, 19]);
        assert_eq!(
            LAYOUT[1].1,
            7 + 49 + 11 + 121 + 13 + 169 + 17 + 289 + 19 + 361
        );
        assert!(
            Novelty::new(1).bytes() <= 256,
            "{}",
            Novelty::new(1).bytes()
        );
        assert!(
            Novelty::new(2).bytes() <= 2304,
            "{}",
            Novelty::new(2).bytes()
        );
    }

    #[test]
    fn a_spike_is_flagged_once_and_noise_is_not() {
        for order in [1, 2] {
            let mut v = noise(2000, 7);
            v[1500] = 200.0;
            let mut m = Novelty::new(order);
            let s = run(&mut m, &params(), &v);
            assert!(s.iter().all(|s| (0.0..=1.0).contains(&s.score)));
            let flagged: Vec<usize> = (0..v.len()).filter(|&i| s[i].anomaly).collect();
            // Noise fills its bins within the first few hundred samples.
            assert_eq!(flagged.last(), Some(&1500), "order {order}: {flagged:?}");
            assert!(flagged.iter().all(|&i| i < 400 || i == 1500), "{flagged:?}");
            assert_eq!(s[1500].score, 1.0, "new at every resolution");
            assert!(s[..32].iter().all(|s| s.score == 0.0 && !s.anomaly));
        }
    }

    #[test]
    fn a_daily_pattern_is_learnt_and_a_broken_day_flagged() {
        // 288 samples a day: low at night, high by day.
        let day = |i: usize| if (i % 288) < 144 { 20.0 } else { 80.0 };
        let mut v: Vec<f64> = (0..288 * 8).map(|i| day(i) + (i % 3) as f64).collect();
        // Day 6 peaks at 50 instead.
        for x in &mut v[288 * 6 + 144..288 * 7] {
            *x -= 30.0;
        }
        let mut m = Novelty::new(2);
        let s = run(&mut m, &params(), &v);
        let flagged: Vec<usize> = (0..v.len()).filter(|&i| s[i].anomaly).collect();
        assert!(
            flagged.iter().all(|i| !(288..288 * 6 + 144).contains(i)),
            "days 2 to 6 are normal: {flagged:?}"
        );
        assert_eq!(
            flagged.iter().filter(|&&i| i >= 288).count(),
            1,
            "the low peak, once: {flagged:?}"
        );
        assert!(flagged.contains(&(288 * 6 + 144)), "{flagged:?}");
    }

    #[test]
    fn constant_series_nan_infinities_and_huge_values() {
        let p = params();
        let mut v = vec![5.0; 200];
        v[150] = 5.5;
        let mut m = Novelty::new(2);
        let s = run(&mut m, &p, &v);
        assert!(
            s[..150].iter().all(|s| s.score == 0.0),
            "a constant is normal"
        );
        assert!(s[150].anomaly, "a change after a constant is an anomaly");
        let before = m.clone();
        let nan = m.update(&p, 1000, f64::NAN);
        assert_eq!((nan.score, nan.anomaly), (0.0, false));
        let inf = m.update(&p, 1001, f64::INFINITY);
        assert_eq!(inf.score, 1.0);
        assert_eq!(m.bits, before.bits, "nothing learnt from them");
        let mut fresh = Novelty::new(2);
        run(&mut fresh, &p, &[1.0; 100]);
        let huge = fresh.update(&p, 1002, 1e300);
        assert_eq!((huge.score, huge.anomaly), (1.0, true));
        let tiny = fresh.update(&p, 1003, -1e300);
        assert!(tiny.score.is_finite() && (0.0..=1.0).contains(&tiny.score));
        assert!(tiny.expected.is_finite() && tiny.lower <= tiny.upper);
        // Right after an alarm, scores come back gradually.
        let after = fresh.update(&p, 1004, 1e299);
        assert!(after.score < 0.1 && !after.anomaly, "{after:?}");
    }

    #[test]
    fn growing_the_range_keeps_what_was_learnt() {
        // Values alternate between two levels; a far value grows the range
        // tenfold; the two levels, now one bin, stay known.
        let p = params();
        let mut m = Novelty::new(2);
        let v: Vec<f64> = (0..300).map(|i| 10.0 + (i % 2) as f64 * 10.0).collect();
        run(&mut m, &p, &v);
        assert_eq!((m.lo, m.hi), (10.0, 20.0));
        m.update(&p, 10_000, 110.0);
        assert_eq!((m.lo, m.hi), (10.0, 110.0));
        let mut after = Vec::new();
        for i in 0..200 {
            after.push(m.update(&p, 20_000 + i, 10.0 + (i % 2) as f64 * 10.0).score);
        }
        // Only the step down from 110, and the pair after it, are new.
        assert!(after[2..].iter().all(|s| *s == 0.0), "{after:?}");
    }

    /// Every key of every table visited, each carried over: what `grow`
    /// does visiting only the bits set.
    fn carried_densely(m: &Novelty, maps: &[Vec<usize>; 5]) -> Vec<u64> {
        let order = usize::from(m.order);
        let (at, total) = LAYOUT[order];
        let mut bits = vec![0u64; total.div_ceil(64)];
        for r in 0..5 {
            let n = LEVELS[r];
            for (o, start) in at[r].iter().enumerate().take(order + 1) {
                for key in 0..n.pow(o as u32 + 1) {
                    let bit = start + key;
                    if m.bits[bit / 64] & (1 << (bit % 64)) == 0 {
                        continue;
                    }
                    let (mut k, mut moved, mut scale) = (key, 0, 1);
                    for _ in 0..=o {
                        moved += maps[r][k % n] * scale;
                        k /= n;
                        scale *= n;
                    }
                    let to = start + moved;
                    bits[to / 64] |= 1 << (to % 64);
                }
            }
        }
        bits
    }

    #[test]
    fn growing_visits_the_set_bits_as_a_dense_pass_would() {
        let p = params();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for order in [1, 2] {
            let mut m = Novelty::new(order);
            let mut grown = 0;
            for i in 0..3000i64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Noise whose spread doubles every 300 samples, and now
                // and then a value far below.
                let noise = (x % 1000) as f64 / 100.0 * 2f64.powi((i / 300) as i32);
                let v = if i % 700 == 699 { -3.0 * noise } else { noise };
                let (lo, span) = (m.lo, m.span());
                let margin = GROW * (m.hi - m.lo);
                if m.seen > 0 && (v < m.lo - margin || v > m.hi + margin) {
                    let maps: [Vec<usize>; 5] = std::array::from_fn(|r| {
                        let mut after = m.clone();
                        (after.lo, after.hi) = (after.lo.min(v), after.hi.max(v));
                        (0..LEVELS[r])
                            .map(|i| {
                                let middle = lo
                                    + (i as f64 - MARGIN[r] as f64 + 0.5) * span / BINS[r] as f64;
                                Novelty::level(r, after.position(middle))
                            })
                            .collect()
                    });
                    let want = carried_densely(&m, &maps);
                    let mut got = m.clone();
                    got.grow(v);
                    assert_eq!(
                        got.bits.as_slice(),
                        want.as_slice(),
                        "order {order}, at {i}"
                    );
                    grown += 1;
                }
                m.update(&p, i, v);
            }
            assert!(grown >= 8, "the range grew {grown} times");
        }
    }

    #[test]
    fn the_range_hint_fixes_the_bins_and_flags_values_outside() {
        let p = Params {
            range: Some((0.0, 100.0)),
            ..params()
        };
        let mut m = Novelty::new(2);
        let s = run(&mut m, &p, &noise(300, 11));
        assert!(s[100..].iter().all(|s| s.score < 0.5));
        // Noise within 50..60 is within the bins of 50 to 58.3 and 58.3
        // to 66.7 at the finest resolution.
        let last = s.last().unwrap();
        assert!(last.lower >= 41.0 && last.upper <= 67.0, "{last:?}");
        assert!(last.lower < last.expected && last.expected < last.upper);
        assert_eq!(m.update(&p, 1_000_000, 101.0).score, 1.0);
        assert_eq!((m.lo, m.hi), (0.0, 100.0));
    }

    #[test]
    fn the_band_is_worked_out_only_when_asked_for() {
        let quiet = Params {
            explain: false,
            ..params()
        };
        let (mut a, mut b) = (Novelty::new(2), Novelty::new(2));
        let mut v = noise(500, 13);
        v[400] = 90.0;
        for (i, x) in v.into_iter().enumerate() {
            let (with, without) = (
                a.update(&params(), i as i64, x),
                b.update(&quiet, i as i64, x),
            );
            assert_eq!((with.score, with.anomaly), (without.score, without.anomaly));
            assert_eq!(
                (without.expected, without.lower, without.upper),
                (0.0, 0.0, 0.0)
            );
            if i > 0 {
                assert!(with.lower < with.upper, "{with:?}");
            }
        }
        assert_eq!(a, b);
    }

    #[test]
    fn state_is_small_and_serialisable() {
        let p = params();
        for order in [1, 2] {
            let mut m = Novelty::new(order);
            run(&mut m, &p, &noise(1000, 5));
            let text = serde_json::to_string(&m).unwrap();
            let mut back: Novelty = serde_json::from_str(&text).unwrap();
            assert_eq!(back, m);
            for (i, v) in noise(300, 9).into_iter().enumerate() {
                let t = 1000 + i as i64;
                assert_eq!(back.update(&p, t, v), m.update(&p, t, v));
            }
        }
    }
}
