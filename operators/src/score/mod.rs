//! `type: score`: streaming anomaly scoring, per series, in event time.
//!
//! [`Model`] is the plain state machine of one series (`update(t, v) ->
//! Score`), tested without timely; [`operator`] is the thin wrapper that
//! exchanges samples by series, orders each series' samples by event time
//! up to the frontier and writes the output series; [`config`] is the YAML.
//!
//! The default detector, `novelty` ([`novelty`]), scores how new a value
//! is at several resolutions: a value, a step or a sequence of steps the
//! series has never made. `light` is the same with shorter contexts, a few
//! hundred bytes a series. `robust` ([`Robust`]) compares each value with
//! the median of the series' recent values, in units of their median
//! absolute deviation (with a scale floor, so a series that was constant
//! still has a finite scale), and calibrates that distance the way HTM's
//! anomaly likelihood does: the mean of the last few distances is compared
//! with the distribution of distances the series has shown so far. Every
//! detector scores on [0, 1] (0 normal, 1 most anomalous), the same scale
//! for every series, and a sample depends only on earlier samples of its
//! series (no look-ahead).

pub mod config;
pub mod novelty;
pub mod operator;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// What the detector says of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// In [0, 1]: 0 normal, higher more anomalous; one threshold fits every
    /// series.
    pub score: f64,
    /// The detector's own decision (its label-free threshold, warm-up and
    /// de-duplication applied).
    pub anomaly: bool,
    /// The value the model expected (the recent median).
    pub expected: f64,
    /// The band the model expected the value in.
    pub lower: f64,
    /// See `lower`.
    pub upper: f64,
}

/// The detectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detector {
    /// Contextual novelty at several resolutions, contexts of two values
    /// ([`novelty`]).
    #[default]
    Novelty,
    /// The same with contexts of one value: a few hundred bytes a series.
    Light,
    /// Distance from the recent median in robust deviations ([`Robust`]).
    Robust,
}

/// The detector's parameters (one set for every series).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Which detector.
    pub detector: Detector,
    /// Whether `novelty` and `light` work out the band they expected
    /// (`Score::expected`, `lower`, `upper`; 0 when not): only `explain`
    /// writes it, and it is an eighth of their time. `robust` needs its
    /// band to score and always gives it. Default true.
    pub explain: bool,
    /// Recent values the median and deviation are taken over (`robust`).
    pub window: usize,
    /// Samples a series must have before it is scored (its score is 0
    /// until then).
    pub warmup: u64,
    /// Scores at or above this are anomalies (default 0.5).
    pub threshold: f64,
    /// Samples after an anomaly during which no other is flagged (one
    /// event, one alarm).
    pub refractory: u64,
    /// Bounds the user knows the metric keeps to (a percentage, a ratio).
    pub range: Option<(f64, f64)>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            detector: Detector::Novelty,
            explain: true,
            window: 256,
            warmup: 300,
            threshold: 0.5,
            refractory: 150,
            range: None,
        }
    }
}

/// One series' model, of the detector its `Params` name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Model {
    /// `novelty` or `light`.
    Novelty(novelty::Novelty),
    /// `robust`.
    Robust(Robust),
}

impl Model {
    /// A model with nothing learnt, for `p`'s detector.
    pub fn new(p: &Params) -> Model {
        match p.detector {
            Detector::Novelty => Model::Novelty(novelty::Novelty::new(2)),
            Detector::Light => Model::Novelty(novelty::Novelty::new(1)),
            Detector::Robust => Model::Robust(Robust::default()),
        }
    }

    /// Scores `value` at event time `t` and learns it (see each detector).
    pub fn update(&mut self, p: &Params, t: i64, value: f64) -> Score {
        match self {
            Model::Novelty(m) => m.update(p, t, value),
            Model::Robust(m) => m.update(p, t, value),
        }
    }

    /// The detector this model is of.
    pub fn detector(&self) -> Detector {
        match self {
            Model::Novelty(m) if m.order() == 1 => Detector::Light,
            Model::Novelty(_) => Detector::Novelty,
            Model::Robust(_) => Detector::Robust,
        }
    }

    /// Event time of the last sample scored.
    pub fn last(&self) -> i64 {
        match self {
            Model::Novelty(m) => m.last,
            Model::Robust(m) => m.last,
        }
    }

    /// Bytes the model holds.
    pub fn bytes(&self) -> usize {
        match self {
            Model::Novelty(m) => m.bytes(),
            Model::Robust(m) => m.bytes(),
        }
    }
}

/// `robust`'s default warm-up: it needs only a window's median and spread.
pub const ROBUST_WARMUP: u64 = 32;

/// One event, one alarm: after a flag, a series' scores come back
/// gradually over `refractory` samples and no other flag is raised in
/// that time, so an anomaly that lasts is not counted again and again.
/// Part of every detector's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    since_flag: u64,
    flagged_once: bool,
}

impl Alarm {
    /// `score`, scaled down while the last flag is recent.
    pub fn damped(&self, p: &Params, score: f64) -> f64 {
        if !self.flagged_once {
            return score;
        }
        score * (self.since_flag as f64 / p.refractory.max(1) as f64).min(1.0)
    }

    /// Whether a score flags an anomaly, at most one per `refractory`;
    /// called once per sample scored.
    pub fn flag(&mut self, p: &Params, score: f64) -> bool {
        self.since_flag = self.since_flag.saturating_add(1);
        if score >= p.threshold && (!self.flagged_once || self.since_flag > p.refractory) {
            self.since_flag = 0;
            self.flagged_once = true;
            return true;
        }
        false
    }
}

/// Distances averaged for the short-term side of the calibration.
const RECENT: usize = 8;
/// Weight of a new distance in the long-term mean and variance.
const LEARN: f64 = 1.0 / 256.0;
/// Smallest long-term deviation of the distances.
const MIN_SPREAD: f64 = 0.1;
/// Half-width of the expected band, in deviations.
const BAND: f64 = 4.0;

/// One series' state: bounded (`window` values twice, in arrival order
/// and sorted, `RECENT` distances and a few numbers: about
/// 8 × (2 × window + RECENT) + 130 bytes, 4.3 KB by default) and
/// serialisable, so that it can be checkpointed (the sorted copy is
/// rebuilt, not written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Robust {
    values: VecDeque<f64>,
    /// `values` in order (`f64::total_cmp`), for the median and the MAD
    /// without a selection per sample; rebuilt from `values` after a
    /// restore.
    #[serde(skip)]
    sorted: Sorted,
    recent: VecDeque<f64>,
    seen: u64,
    alarm: Alarm,
    mean: f64,
    var: f64,
    /// Event time of the last sample scored.
    pub last: i64,
}

/// The score of a standardised distance `d`: its upper tail probability
/// on a log scale, as HTM scales its anomaly likelihood, so that 0.5 is a
/// tail of 1e-5 (`d` = 4.26) and 1 a tail of 1e-10 or less; an ordinary
/// value (`d` = 0) scores 0.03.
fn calibrated(d: f64) -> f64 {
    let tail = 0.5 * libm::erfc(d / std::f64::consts::SQRT_2);
    ((tail + 1e-10).ln() / 1e-10f64.ln()).clamp(0.0, 1.0)
}

/// A model's recent values in order: a cache of `Robust::values`, equal
/// whatever it holds (it is derived state).
#[derive(Clone, Debug, Default)]
struct Sorted(Vec<f64>);

impl PartialEq for Sorted {
    fn eq(&self, _: &Sorted) -> bool {
        true
    }
}

impl Sorted {
    fn insert(&mut self, v: f64) {
        let at = self.0.partition_point(|x| x.total_cmp(&v).is_lt());
        self.0.insert(at, v);
    }

    fn remove(&mut self, v: f64) {
        let at = self.0.partition_point(|x| x.total_cmp(&v).is_lt());
        if self.0.get(at).is_some_and(|x| x.total_cmp(&v).is_eq()) {
            self.0.remove(at);
        }
    }

    /// The median of the values; not empty.
    fn median(&self) -> f64 {
        let (v, n) = (&self.0, self.0.len());
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// The median of `|x - m|` over the values; not empty. The deviations
    /// below `m`, read downwards, and those from `m` up are two ascending
    /// runs: their k-th smallest is found by bisection, in log time.
    fn mad(&self, m: f64) -> f64 {
        let v = &self.0;
        let n = v.len();
        let split = v.partition_point(|x| *x < m);
        let below = |i: usize| (v[split - 1 - i] - m).abs();
        let above = |i: usize| (v[split + i] - m).abs();
        let (la, lb) = (split, n - split);
        // The k-th smallest (from 0) of the two runs.
        let kth = |k: usize| -> f64 {
            let (mut lo, mut hi) = ((k + 1).saturating_sub(lb), (k + 1).min(la));
            loop {
                let i = (lo + hi) / 2;
                let j = k + 1 - i;
                if i < hi && j > 0 && above(j - 1) > below(i) {
                    lo = i + 1;
                } else if i > lo && j < lb && below(i - 1) > above(j) {
                    hi = i - 1;
                } else {
                    let a = if i > 0 {
                        below(i - 1)
                    } else {
                        f64::NEG_INFINITY
                    };
                    let b = if j > 0 {
                        above(j - 1)
                    } else {
                        f64::NEG_INFINITY
                    };
                    return a.max(b);
                }
            }
        };
        if n % 2 == 1 {
            kth(n / 2)
        } else {
            (kth(n / 2 - 1) + kth(n / 2)) / 2.0
        }
    }
}

impl Robust {
    /// Bytes the model holds (its buffers at capacity included).
    pub fn bytes(&self) -> usize {
        size_of::<Robust>()
            + 8 * (self.values.capacity() + self.sorted.0.capacity() + self.recent.capacity())
    }

    /// Scores `value` at event time `t` and learns it. NaN (a stale
    /// marker) scores 0 and teaches nothing; an infinity, or a value
    /// outside the range hint, scores 1 and teaches nothing.
    pub fn update(&mut self, p: &Params, t: i64, value: f64) -> Score {
        self.last = t;
        if self.sorted.0.len() != self.values.len() {
            // Restored from a checkpoint, which does not keep the cache.
            self.sorted.0 = self.values.iter().copied().collect();
            self.sorted.0.sort_by(f64::total_cmp);
        }
        let (expected, scale) = self.center_and_scale(p);
        let band = |s: f64| Score {
            score: s,
            anomaly: false,
            expected,
            lower: expected - BAND * scale,
            upper: expected + BAND * scale,
        };
        if value.is_nan() {
            return band(0.0);
        }
        let outside = p.range.is_some_and(|(lo, hi)| value < lo || value > hi);
        if value.is_infinite() || outside {
            let mut s = band(1.0);
            s.anomaly = self.alarm.flag(p, 1.0);
            return s;
        }
        self.seen += 1;
        let mut score = 0.0;
        if !self.values.is_empty() {
            let distance = ((value - expected).abs() / scale).min(1e6);
            let raw = distance.ln_1p();
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(raw);
            let n = self.recent.len() as f64;
            let short = self.recent.iter().sum::<f64>() / n;
            let spread = self.var.sqrt().max(MIN_SPREAD);
            // How unusual this distance is, and how unusual the recent
            // ones are together (their mean varies √n times less): a spike
            // shows in the first, a shift or a noisier stretch in both.
            let d = ((raw - self.mean) / spread).max((short - self.mean) * n.sqrt() / spread);
            if self.seen > p.warmup {
                score = calibrated(d);
            }
            // Learn the distance after scoring it.
            let delta = raw - self.mean;
            let learn = if self.seen <= p.warmup {
                1.0 / self.seen as f64
            } else {
                LEARN
            };
            self.mean += learn * delta;
            self.var = (1.0 - learn) * (self.var + learn * delta * delta);
        }
        if self.values.len() == p.window
            && let Some(old) = self.values.pop_front()
        {
            self.sorted.remove(old);
        }
        self.values.push_back(value);
        self.sorted.insert(value);
        // One event, one alarm: after a flag, scores come back gradually
        // over `refractory` samples, so an anomaly that lasts is not
        // counted again and again.
        let score = self.alarm.damped(p, score);
        let mut s = band(score);
        s.anomaly = self.seen > p.warmup && self.alarm.flag(p, score);
        s
    }

    /// The recent median and deviation (1.4826 × MAD, floored).
    fn center_and_scale(&self, p: &Params) -> (f64, f64) {
        if self.values.is_empty() {
            return (0.0, 1.0);
        }
        let m = self.sorted.median();
        let mad = self.sorted.mad(m);
        let floor = match p.range {
            Some((lo, hi)) => 0.001 * (hi - lo),
            None => 1e-3 * m.abs(),
        }
        .max(1e-9);
        (m, (1.4826 * mad).max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robust() -> Params {
        Params {
            detector: Detector::Robust,
            warmup: ROBUST_WARMUP,
            ..Params::default()
        }
    }

    /// The median by selection, as the detector computed it before it kept
    /// its window sorted.
    fn selected_median(v: &mut [f64]) -> f64 {
        let n = v.len();
        let (left, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
        let upper = *mid;
        if n % 2 == 1 {
            return upper;
        }
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }

    #[test]
    fn the_sorted_window_gives_the_selected_median_and_mad_exactly() {
        let mut x: u64 = 88172645463325252;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let n = 1 + (next() % 40) as usize;
            // Few distinct values in some rounds (ties around the median),
            // close ones in others, spread ones in the rest.
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    let r = next();
                    match round % 3 {
                        0 => (r % 5) as f64,
                        1 => (r % 100) as f64 / 7.0,
                        _ => (r % 100_000) as f64 / 7.0 - 5000.0,
                    }
                })
                .collect();
            let mut sorted = Sorted::default();
            for v in &values {
                sorted.insert(*v);
            }
            let mut copy = values.clone();
            let m = selected_median(&mut copy);
            for d in copy.iter_mut() {
                *d = (*d - m).abs();
            }
            let mad = selected_median(&mut copy);
            assert_eq!(sorted.median().to_bits(), m.to_bits(), "{values:?}");
            assert_eq!(sorted.mad(m).to_bits(), mad.to_bits(), "{values:?}");
            sorted.remove(values[0]);
            assert_eq!(sorted.0.len(), n - 1);
            assert!(sorted.0.is_sorted_by(|a, b| a.total_cmp(b).is_le()));
        }
    }

    fn run(values: &[f64], p: &Params) -> Vec<Score> {
        let mut m = Robust::default();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| m.update(p, i as i64 * 1000, *v))
            .collect()
    }

    /// A deterministic noisy series around 50 (the novelty tests' too).
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                50.0 + (x % 1000) as f64 / 100.0
            })
            .collect()
    }

    #[test]
    fn a_spike_is_flagged_once_and_noise_is_not() {
        let mut v = noise(600, 7);
        v[400] = 200.0;
        let s = run(&v, &robust());
        assert!(s.iter().all(|s| (0.0..=1.0).contains(&s.score)));
        let flagged: Vec<usize> = (0..v.len()).filter(|&i| s[i].anomaly).collect();
        assert_eq!(flagged, vec![400], "{:?}", &s[395..405]);
        assert!(s[400].score > 0.5, "{:?}", s[400]);
        assert!(s[400].upper < 200.0 && s[400].lower < 60.0);
        // Warm-up scores 0.
        assert!(s[..32].iter().all(|s| s.score == 0.0 && !s.anomaly));
    }

    #[test]
    fn a_level_shift_alarms_once() {
        let mut v = noise(800, 3);
        for x in &mut v[500..] {
            *x += 40.0;
        }
        let s = run(&v, &robust());
        let flagged: Vec<usize> = (0..v.len()).filter(|&i| s[i].anomaly).collect();
        assert_eq!(flagged.first(), Some(&500), "{flagged:?}");
        assert!(flagged.len() <= 2, "{flagged:?}");
    }

    #[test]
    fn constant_series_nan_and_infinities() {
        let mut v = vec![5.0; 200];
        v[150] = 5.5;
        let s = run(&v, &robust());
        assert!(
            s[..150].iter().all(|s| s.score < 0.5),
            "a constant is normal"
        );
        assert!(s[150].anomaly, "a change after a constant is an anomaly");
        let p = robust();
        let mut m = Robust::default();
        for i in 0..100 {
            m.update(&p, i, 1.0);
        }
        let before = m.clone();
        let nan = m.update(&p, 100, f64::NAN);
        assert_eq!((nan.score, nan.anomaly), (0.0, false));
        let inf = m.update(&p, 101, f64::INFINITY);
        assert_eq!((inf.score, inf.anomaly), (1.0, true));
        assert_eq!(m.values, before.values, "nothing learnt from them");
        // A huge value (in a model that has flagged nothing yet).
        let mut fresh = before.clone();
        let huge = fresh.update(&p, 102, 1e300);
        assert!(huge.score.is_finite() && huge.score > 0.99, "{huge:?}");
        assert!(huge.anomaly);
        // Right after an alarm, scores come back gradually (one event,
        // one alarm).
        let after = fresh.update(&p, 103, 1e300);
        assert!(after.score < 0.1 && !after.anomaly, "{after:?}");
    }

    #[test]
    fn the_range_hint_sets_the_scale_and_flags_values_outside() {
        let p = Params {
            range: Some((0.0, 100.0)),
            ..robust()
        };
        let s = run(&[50.0; 100], &p);
        assert!((s[99].upper - s[99].lower - 2.0 * BAND * 0.1).abs() < 1e-9);
        let mut m = Robust::default();
        assert!(m.update(&p, 0, 101.0).score == 1.0);
    }

    #[test]
    fn state_is_small_and_serialisable() {
        let mut m = Robust::default();
        let p = robust();
        for (i, v) in noise(1000, 5).into_iter().enumerate() {
            m.update(&p, i as i64, v);
        }
        // The window twice (in arrival order and sorted), a few numbers.
        assert!(m.bytes() <= 4608, "{}", m.bytes());
        let text = serde_json::to_string(&m).unwrap();
        let mut back: Robust = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert!(back.sorted.0.is_empty(), "the sorted copy is not written");
        // Restored, it scores on exactly as the original.
        for (i, v) in noise(300, 9).into_iter().enumerate() {
            let t = 1000 + i as i64;
            assert_eq!(back.update(&p, t, v), m.update(&p, t, v));
        }
    }
}
