//! Window aggregates and their accumulator.
//!
//! One [`Accumulator`] per group and window keeps just what the requested
//! aggregates need ([`Needs`]): count, sum, min, max and last always; a
//! Welford mean and M2 for `stddev`; the points themselves for `rate` and
//! `increase` (which need them in time order, and samples may arrive out of
//! order); a DDSketch for quantiles. Accumulators merge, which session
//! windows use.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use tidemark_engine::time::Millis;

/// The relative-error bound of every quantile: a reported `pNN` is within 1%
/// of a value whose rank is that quantile's.
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.01;

/// An aggregate a window computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregate {
    /// Number of samples.
    Count,
    /// Sum of values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean value.
    Avg,
    /// The value with the latest timestamp.
    Last,
    /// Population standard deviation.
    Stddev,
    /// Per-second increase of a counter, as Prometheus' `rate()`.
    Rate,
    /// Increase of a counter, as Prometheus' `increase()`.
    Increase,
    /// A quantile in `[0, 1]`, from a DDSketch.
    Quantile(f64),
}

/// An aggregate name that is not known or is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// Not an aggregate.
    #[error(
        "unknown aggregate {0:?} (expected count, sum, min, max, avg, last, stddev, rate, increase or pNN)"
    )]
    Unknown(String),
    /// A quantile outside `p0..=p100`.
    #[error("quantile {0:?} is out of range: NN in pNN must be between 0 and 100")]
    QuantileOutOfRange(String),
}

impl Aggregate {
    /// Parses `count`, `sum`, ..., or a quantile `pNN` (`p50`, `p99`, `p99.9`).
    pub fn parse(text: &str) -> Result<Aggregate, AggregateError> {
        Ok(match text {
            "count" => Aggregate::Count,
            "sum" => Aggregate::Sum,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "avg" => Aggregate::Avg,
            "last" => Aggregate::Last,
            "stddev" => Aggregate::Stddev,
            "rate" => Aggregate::Rate,
            "increase" => Aggregate::Increase,
            _ => {
                let digits = text
                    .strip_prefix('p')
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                    .ok_or_else(|| AggregateError::Unknown(text.to_owned()))?;
                let pct: f64 = digits
                    .parse()
                    .map_err(|_| AggregateError::Unknown(text.to_owned()))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(AggregateError::QuantileOutOfRange(text.to_owned()));
                }
                Aggregate::Quantile(pct / 100.0)
            }
        })
    }

    /// The name used in output metric names (`p99.9` becomes `p99_9`).
    pub fn name(&self) -> String {
        match self {
            Aggregate::Count => "count".into(),
            Aggregate::Sum => "sum".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Max => "max".into(),
            Aggregate::Avg => "avg".into(),
            Aggregate::Last => "last".into(),
            Aggregate::Stddev => "stddev".into(),
            Aggregate::Rate => "rate".into(),
            Aggregate::Increase => "increase".into(),
            Aggregate::Quantile(q) => format!("p{}", format_pct(q * 100.0)).replace('.', "_"),
        }
    }

    /// Whether the aggregate reads its input as a counter.
    pub fn is_counter_function(&self) -> bool {
        matches!(self, Aggregate::Rate | Aggregate::Increase)
    }
}

fn format_pct(p: f64) -> String {
    let s = format!("{p:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What an accumulator must keep for a set of aggregates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    welford: bool,
    points: bool,
    sketch: bool,
}

impl Needs {
    /// The needs of a list of aggregates.
    pub fn of(aggregates: &[Aggregate]) -> Needs {
        let mut n = Needs::default();
        for a in aggregates {
            match a {
                Aggregate::Stddev => n.welford = true,
                Aggregate::Rate | Aggregate::Increase => n.points = true,
                Aggregate::Quantile(_) => n.sketch = true,
                _ => {}
            }
        }
        n
    }
}

fn new_sketch() -> DDSketch {
    // 2048 bins at alpha = 1% cover values over a ratio of about e^40.
    DDSketch::new(SketchConfig::new(QUANTILE_RELATIVE_ERROR, 2048, 1.0e-9))
}

/// What only some aggregates need, kept out of line so that the common
/// accumulator stays small (one cache line with its map key).
#[derive(Clone, Default, Serialize, Deserialize)]
struct Extra {
    mean: f64,
    m2: f64,
    /// (input series id, timestamp, value), for rate and increase.
    points: Vec<(u64, Millis, f64)>,
    sketch: Option<DDSketch>,
    /// Infinities are counted beside the sketch, which would map them to an
    /// extreme bin and collapse its finite bins to make room.
    neg_inf: u64,
    pos_inf: u64,
}

/// The running state of one window of one group.
#[derive(Clone, Serialize, Deserialize)]
pub struct Accumulator {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last_ts: Millis,
    last: f64,
    extra: Option<Box<Extra>>,
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .finish_non_exhaustive()
    }
}

impl Accumulator {
    /// Bytes held out of line (the extra state of stddev, rate, increase
    /// and quantiles; a sketch counted by its bins).
    pub fn extra_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| {
            size_of::<Extra>()
                + e.points.capacity() * size_of::<(u64, Millis, f64)>()
                + e.sketch
                    .as_ref()
                    .map_or(0, |s| s.length() * size_of::<u64>())
        })
    }

    /// An empty accumulator.
    pub fn new(needs: Needs) -> Accumulator {
        let extra = (needs.welford || needs.points || needs.sketch).then(|| {
            Box::new(Extra {
                sketch: needs.sketch.then(new_sketch),
                ..Extra::default()
            })
        });
        Accumulator {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last_ts: Millis::MIN,
            last: f64::NAN,
            extra,
        }
    }

    /// Adds a (non-NaN) value of input series `series` (its id).
    #[inline]
    pub fn insert(&mut self, needs: Needs, series: u64, ts: Millis, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ts > self.last_ts || (ts == self.last_ts && v > self.last) {
            self.last_ts = ts;
            self.last = v;
        }
        if let Some(x) = self.extra.as_deref_mut() {
            if needs.welford {
                let delta = v - x.mean;
                x.mean += delta / self.count as f64;
                x.m2 += delta * (v - x.mean);
            }
            if needs.points {
                x.points.push((series, ts, v));
            }
            if let Some(s) = x.sketch.as_mut() {
                if v == f64::INFINITY {
                    x.pos_inf += 1;
                } else if v == f64::NEG_INFINITY {
                    x.neg_inf += 1;
                } else {
                    s.add(v);
                }
            }
        }
    }

    /// Merges another accumulator of the same needs into this one.
    pub fn merge(&mut self, other: &Accumulator) {
        if other.count == 0 {
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        if let (Some(a), Some(b)) = (self.extra.as_deref_mut(), other.extra.as_deref()) {
            let delta = b.mean - a.mean;
            let n = n1 + n2;
            a.mean += delta * n2 / n;
            a.m2 += b.m2 + delta * delta * n1 * n2 / n;
            a.points.extend_from_slice(&b.points);
            if let (Some(x), Some(y)) = (a.sketch.as_mut(), b.sketch.as_ref()) {
                // Both sketches share one configuration, so merging cannot fail.
                let _ = x.merge(y);
            }
            a.neg_inf += b.neg_inf;
            a.pos_inf += b.pos_inf;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_ts > self.last_ts || (other.last_ts == self.last_ts && other.last > self.last)
        {
            self.last_ts = other.last_ts;
            self.last = other.last;
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The aggregate's value over the window `(start, end]`, or `None` when
    /// it is undefined (no samples; fewer than two points for a rate).
    pub fn result(&mut self, aggregate: Aggregate, start: Millis, end: Millis) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        match aggregate {
            Aggregate::Count => Some(n),
            Aggregate::Sum => Some(self.sum),
            Aggregate::Min => Some(self.min),
            Aggregate::Max => Some(self.max),
            Aggregate::Avg => Some(self.sum / n),
            Aggregate::Last => Some(self.last),
            Aggregate::Stddev => self.extra.as_ref().map(|x| (x.m2 / n).max(0.0).sqrt()),
            Aggregate::Rate | Aggregate::Increase => {
                // Per input series, then summed over the group, as
                // `sum by (...) (rate(...))`.
                let points = &mut self.extra.as_mut()?.points;
                points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
                let rate = aggregate == Aggregate::Rate;
                let mut total: Option<f64> = None;
                let mut scratch: Vec<(Millis, f64)> = Vec::new();
                for run in points.chunk_by(|a, b| a.0 == b.0) {
                    scratch.clear();
                    scratch.extend(run.iter().map(|p| (p.1, p.2)));
                    if let Some(r) = extrapolated_rate(&scratch, start, end, rate) {
                        total = Some(total.unwrap_or(0.0) + r);
                    }
                }
                total
            }
            Aggregate::Quantile(q) => {
                // The sketch's rank rule (q * (n - 1)), with the infinities
                // placed at either end of the finite values.
                let x = self.extra.as_ref()?;
                let rank = q * (n - 1.0);
                let finite = self.count - x.neg_inf - x.pos_inf;
                if rank < x.neg_inf as f64 {
                    Some(f64::NEG_INFINITY)
                } else if rank > (x.neg_inf + finite) as f64 - 1.0 {
                    Some(f64::INFINITY)
                } else {
                    let within = if finite > 1 {
                        (rank - x.neg_inf as f64) / (finite - 1) as f64
                    } else {
                        0.0
                    };
                    x.sketch
                        .as_ref()?
                        .quantile(within.clamp(0.0, 1.0))
                        .ok()
                        .flatten()
                }
            }
        }
    }
}

/// Prometheus' `extrapolatedRate` for counters: the increase between the
/// first and last point (adding back every counter reset), extrapolated
/// towards the window's edges by at most half an average sample interval
/// (or to where the counter would have been zero), per second when `rate`.
/// `points` is sorted by time; the window is `(start, end]`.
pub fn extrapolated_rate(
    points: &[(Millis, f64)],
    start: Millis,
    end: Millis,
    rate: bool,
) -> Option<f64> {
    let (&(first_t, first_v), &(last_t, last_v)) = (points.first()?, points.last()?);
    if points.len() < 2 || last_t == first_t {
        return None;
    }
    let mut result = last_v - first_v;
    let mut prev = first_v;
    for &(_, v) in &points[1..] {
        if v < prev {
            result += prev;
        }
        prev = v;
    }
    let secs = |ms: Millis| ms as f64 / 1000.0;
    let sampled = secs(last_t - first_t);
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    let mut to_start = secs(first_t - start);
    let mut to_end = secs(end - last_t);
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= secs(end - start);
    }
    Some(result * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_quantiles() {
        assert_eq!(Aggregate::parse("avg"), Ok(Aggregate::Avg));
        assert_eq!(Aggregate::parse("p99"), Ok(Aggregate::Quantile(0.99)));
        assert_eq!(Aggregate::parse("p99.9").unwrap().name(), "p99_9");
        assert_eq!(Aggregate::parse("p50").unwrap().name(), "p50");
        assert_eq!(Aggregate::parse("p100"), Ok(Aggregate::Quantile(1.0)));
        assert!(matches!(
            Aggregate::parse("p101"),
            Err(AggregateError::QuantileOutOfRange(_))
        ));
        assert!(matches!(
            Aggregate::parse("median"),
            Err(AggregateError::Unknown(_))
        ));
        assert!(matches!(
            Aggregate::parse("p"),
            Err(AggregateError::Unknown(_))
        ));
        assert!(matches!(
            Aggregate::parse("p9x"),
            Err(AggregateError::Unknown(_))
        ));
    }

    #[test]
    fn infinities_sit_at_the_ends_of_quantiles() {
        let aggregates = [
            Aggregate::Quantile(0.0),
            Aggregate::Quantile(0.5),
            Aggregate::Quantile(1.0),
            Aggregate::Sum,
            Aggregate::Max,
            Aggregate::Min,
        ];
        let mut acc = Accumulator::new(Needs::of(&aggregates));
        for (i, v) in [f64::NEG_INFINITY, 1.0, 2.0, 3.0, f64::INFINITY]
            .into_iter()
            .enumerate()
        {
            acc.insert(Needs::of(&aggregates), 1, i as Millis, v);
        }
        let r: Vec<f64> = aggregates
            .iter()
            .map(|a| acc.result(*a, 0, 10).unwrap())
            .collect();
        assert_eq!(r[0], f64::NEG_INFINITY);
        assert!((r[1] - 2.0).abs() <= 0.02 * 2.0, "p50 {}", r[1]);
        assert_eq!(r[2], f64::INFINITY);
        assert!(
            r[3].is_nan(),
            "+Inf + -Inf is NaN, as in IEEE 754 and PromQL"
        );
        assert_eq!((r[4], r[5]), (f64::INFINITY, f64::NEG_INFINITY));
        // Only infinities: every quantile is one of them.
        let mut acc = Accumulator::new(Needs::of(&aggregates));
        acc.insert(Needs::of(&aggregates), 1, 0, f64::INFINITY);
        assert_eq!(
            acc.result(Aggregate::Quantile(0.5), 0, 10),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn basic_aggregates() {
        let aggs = [Aggregate::Stddev, Aggregate::Quantile(0.5)];
        let needs = Needs::of(&aggs);
        let mut acc = Accumulator::new(needs);
        for (t, v) in [(3, 4.0), (1, 2.0), (2, 9.0), (4, 5.0)] {
            acc.insert(needs, 1, t, v);
        }
        assert_eq!(acc.result(Aggregate::Count, 0, 10), Some(4.0));
        assert_eq!(acc.result(Aggregate::Sum, 0, 10), Some(20.0));
        assert_eq!(acc.result(Aggregate::Min, 0, 10), Some(2.0));
        assert_eq!(acc.result(Aggregate::Max, 0, 10), Some(9.0));
        assert_eq!(acc.result(Aggregate::Avg, 0, 10), Some(5.0));
        assert_eq!(
            acc.result(Aggregate::Last, 0, 10),
            Some(5.0),
            "latest timestamp wins, not latest arrival"
        );
        // Population stddev of 2, 4, 5, 9 is sqrt(6.5).
        assert!((acc.result(Aggregate::Stddev, 0, 10).unwrap() - 6.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn merge_equals_inserting_everything() {
        let needs = Needs::of(&[Aggregate::Stddev, Aggregate::Rate, Aggregate::Quantile(0.9)]);
        let (mut a, mut b, mut all) = (
            Accumulator::new(needs),
            Accumulator::new(needs),
            Accumulator::new(needs),
        );
        for i in 0..100i64 {
            let v = ((i * 37) % 17) as f64;
            if i % 3 == 0 {
                a.insert(needs, 1, i, v)
            } else {
                b.insert(needs, 1, i, v)
            }
            all.insert(needs, 1, i, v);
        }
        a.merge(&b);
        for agg in [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Last,
            Aggregate::Stddev,
            Aggregate::Rate,
            Aggregate::Quantile(0.9),
        ] {
            let (x, y) = (
                a.result(agg, 0, 100).unwrap(),
                all.result(agg, 0, 100).unwrap(),
            );
            assert!((x - y).abs() < 1e-9, "{agg:?}: {x} != {y}");
        }
    }

    #[test]
    fn rate_matches_prometheus_examples() {
        // A counter growing 1/s, sampled every 10s at 15..55 inside (0, 60]:
        // extrapolated by half an interval at the start (limited to where it
        // would reach zero) and 5s at the end.
        let points: Vec<(Millis, f64)> = (0..5)
            .map(|i| (15_000 + i * 10_000, 115.0 + 10.0 * i as f64))
            .collect();
        let inc = extrapolated_rate(&points, 0, 60_000, false).unwrap();
        assert!((inc - 40.0 * 50.0 / 40.0).abs() < 1e-9, "{inc}");
        let rate = extrapolated_rate(&points, 0, 60_000, true).unwrap();
        assert!((rate - inc / 60.0).abs() < 1e-12);
        // A reset adds the value before it back.
        let reset = [
            (10_000, 10.0),
            (20_000, 20.0),
            (30_000, 5.0),
            (40_000, 15.0),
        ];
        let inc = extrapolated_rate(&reset, 5_000, 45_000, false).unwrap();
        // raw increase 15 - 10 + 20 = 25 over 30s, extrapolated 5s each side.
        assert!((inc - 25.0 * 40.0 / 30.0).abs() < 1e-9, "{inc}");
        // Extrapolation toward the start stops where the counter would be zero.
        let young = [(10_000, 1.0), (20_000, 11.0), (30_000, 21.0)];
        let inc = extrapolated_rate(&young, 0, 30_000, false).unwrap();
        assert!((inc - 20.0 * 21.0 / 20.0).abs() < 1e-9, "{inc}");
        assert_eq!(extrapolated_rate(&[(1, 1.0)], 0, 10, true), None);
    }

    #[test]
    fn grouped_rates_are_per_series_then_summed() {
        let needs = Needs::of(&[Aggregate::Increase]);
        let mut acc = Accumulator::new(needs);
        // Two counters in one group: a single series view would see resets.
        for i in 0..5i64 {
            acc.insert(needs, 1, i * 10_000, 1000.0 + 10.0 * i as f64);
            acc.insert(needs, 2, i * 10_000 + 1, 5.0 * i as f64);
        }
        let each =
            |pts: Vec<(Millis, f64)>| extrapolated_rate(&pts, -5_000, 45_000, false).unwrap();
        let want = each(
            (0..5)
                .map(|i| (i * 10_000, 1000.0 + 10.0 * i as f64))
                .collect(),
        ) + each((0..5).map(|i| (i * 10_000 + 1, 5.0 * i as f64)).collect());
        let got = acc.result(Aggregate::Increase, -5_000, 45_000).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
}
