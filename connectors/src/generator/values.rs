//! The generator's series and values: pure functions of (seed, series, tick)
//! plus a running counter per counter series.

use std::f64::consts::TAU;

use tidemark_engine::Series;
use tidemark_engine::time::Millis;

/// The metrics every host reports, in series order.
pub const METRICS: [&str; 5] = [
    "cpu_usage",
    "memory_usage_bytes",
    "http_requests_total",
    "http_request_duration_seconds",
    "network_receive_bytes_total",
];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const SERVICES: [&str; 4] = ["api", "web", "db", "cache"];
const DAY_MS: f64 = 86_400_000.0;

/// The series with index `i`.
pub fn series_for(i: u64) -> Series {
    let host = i / METRICS.len() as u64;
    Series::new(
        METRICS[(i % METRICS.len() as u64) as usize],
        [
            ("host", format!("host-{host:04}")),
            ("region", REGIONS[(host % 3) as usize].to_owned()),
            ("service", SERVICES[(host % 4) as usize].to_owned()),
        ],
    )
}

/// SplitMix64's finaliser: a fast, well-mixed hash of a u64.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` for (seed, series, tick, salt).
#[inline]
pub(crate) fn unit(seed: u64, series: u64, tick: u64, salt: u64) -> f64 {
    let h = mix(seed ^ mix(series.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(tick ^ (salt << 56))));
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A roughly standard normal number (sum of four uniforms).
#[inline]
fn normal(seed: u64, series: u64, tick: u64) -> f64 {
    let h = mix(seed ^ mix(series.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(tick ^ (7 << 56))));
    let sum: f64 = (0..4)
        .map(|k| ((h >> (k * 16)) & 0xffff) as f64 / 65536.0)
        .sum();
    (sum - 2.0) * 1.732
}

/// A per-series constant in `[0, 1)`.
#[inline]
fn trait_of(seed: u64, series: u64, salt: u64) -> f64 {
    unit(seed, series, u64::MAX, salt)
}

/// The value of series `i` at `tick` (timestamp `ts`). `counter` is the
/// series' running total (used by counters only).
#[inline]
pub fn value(seed: u64, i: u64, tick: u64, ts: Millis, interval: Millis, counter: &mut f64) -> f64 {
    let host = i / METRICS.len() as u64;
    let day = (ts as f64 / DAY_MS * TAU + trait_of(seed, host, 1) * TAU).sin();
    match i % METRICS.len() as u64 {
        0 => {
            let base = 15.0 + 50.0 * trait_of(seed, i, 2);
            let trend = 2.0 * (ts as f64 / 3_600_000.0) * (trait_of(seed, i, 3) - 0.5) % 20.0;
            (base + 15.0 * day + trend + 3.0 * normal(seed, i, tick)).clamp(0.0, 100.0)
        }
        1 => {
            let base = (2.0 + 14.0 * trait_of(seed, i, 2)) * 1_073_741_824.0;
            let growth = 1.0 + 0.01 * ((ts as f64 / 3_600_000.0) % 24.0);
            (base * growth * (1.0 + 0.01 * normal(seed, i, tick))).round()
        }
        2 | 4 => {
            let scale = if i % 5 == 2 { 200.0 } else { 5.0e6 };
            let rate = scale * (0.05 + trait_of(seed, i, 2)) * (1.0 + 0.5 * day);
            if unit(seed, i, tick, 4) < 0.0005 {
                *counter = 0.0;
            }
            let step =
                rate * interval as f64 / 1000.0 * (1.0 + 0.2 * normal(seed, i, tick)).max(0.0);
            *counter += step.round();
            *counter
        }
        _ => {
            let mu = (0.02 + 0.3 * trait_of(seed, host % 4, 5)).ln();
            (mu + 0.4 * normal(seed, i, tick) + 0.2 * day).exp()
        }
    }
}

/// What [`value`] computes for a series from its index alone, computed
/// once: [`Shape::value`] then gives the same values, bit for bit, without
/// hashing the series' constants again at every tick, and computes the
/// daily cycle (a sine) once per host and tick instead of once per series.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    i: u64,
    host: u64,
    /// The host's phase of the daily cycle.
    phase: f64,
    /// The metric's level (its meaning depends on the metric).
    a: f64,
    /// The cpu trend's slope.
    b: f64,
}

/// The daily cycle last computed: (host, timestamp, value).
pub type DayMemo = Option<(u64, Millis, f64)>;

impl Shape {
    /// The constants of series `i` for `seed`.
    pub fn new(seed: u64, i: u64) -> Shape {
        let host = i / METRICS.len() as u64;
        let (a, b) = match i % METRICS.len() as u64 {
            0 => (
                15.0 + 50.0 * trait_of(seed, i, 2),
                trait_of(seed, i, 3) - 0.5,
            ),
            1 => ((2.0 + 14.0 * trait_of(seed, i, 2)) * 1_073_741_824.0, 0.0),
            2 | 4 => {
                let scale = if i % 5 == 2 { 200.0 } else { 5.0e6 };
                (scale * (0.05 + trait_of(seed, i, 2)), 0.0)
            }
            _ => ((0.02 + 0.3 * trait_of(seed, host % 4, 5)).ln(), 0.0),
        };
        Shape {
            i,
            host,
            phase: trait_of(seed, host, 1) * TAU,
            a,
            b,
        }
    }

    /// [`value`] of this series; `memo` keeps the daily cycle between
    /// consecutive series of one host.
    #[inline]
    pub fn value(
        &self,
        seed: u64,
        tick: u64,
        ts: Millis,
        interval: Millis,
        counter: &mut f64,
        memo: &mut DayMemo,
    ) -> f64 {
        let day = match *memo {
            Some((host, at, day)) if host == self.host && at == ts => day,
            _ => {
                let day = (ts as f64 / DAY_MS * TAU + self.phase).sin();
                *memo = Some((self.host, ts, day));
                day
            }
        };
        let i = self.i;
        match i % METRICS.len() as u64 {
            0 => {
                let trend = 2.0 * (ts as f64 / 3_600_000.0) * self.b % 20.0;
                (self.a + 15.0 * day + trend + 3.0 * normal(seed, i, tick)).clamp(0.0, 100.0)
            }
            1 => {
                let growth = 1.0 + 0.01 * ((ts as f64 / 3_600_000.0) % 24.0);
                (self.a * growth * (1.0 + 0.01 * normal(seed, i, tick))).round()
            }
            2 | 4 => {
                let rate = self.a * (1.0 + 0.5 * day);
                if unit(seed, i, tick, 4) < 0.0005 {
                    *counter = 0.0;
                }
                let step =
                    rate * interval as f64 / 1000.0 * (1.0 + 0.2 * normal(seed, i, tick)).max(0.0);
                *counter += step.round();
                *counter
            }
            _ => (self.a + 0.4 * normal(seed, i, tick) + 0.2 * day).exp(),
        }
    }
}

/// The kinds of anomaly the generator injects (`anomalies:`), by index.
pub const ANOMALY_KINDS: [&str; 5] = ["spike", "level_shift", "variance", "trend", "stuck"];

/// The metric name of the markers of injected anomalies.
pub const MARKER: &str = "tidemark_injected_anomaly";

/// Where the generator injects anomalies: in each block of `every` ticks
/// of a gauge series, with probability `probability`, one anomaly of a kind
/// drawn at random starts at a random tick of the block's first half and
/// lasts one tick (a spike) or a quarter of the block. Counters are left
/// alone (they keep counting).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Injection {
    /// Chance that a block of a gauge series holds an anomaly.
    pub probability: f64,
    /// Ticks per block.
    pub every: u64,
}

impl Injection {
    /// The anomaly of series `i` active at `tick`: its kind (an index into
    /// [`ANOMALY_KINDS`]) and its first tick.
    pub fn active(&self, seed: u64, i: u64, tick: u64) -> Option<(usize, u64)> {
        if matches!(i % METRICS.len() as u64, 2 | 4) {
            return None;
        }
        let every = self.every.max(4);
        let block = tick / every;
        if unit(seed, i, block, 11) >= self.probability {
            return None;
        }
        let start = block * every + (unit(seed, i, block, 12) * (every / 2) as f64) as u64;
        let kind = ((unit(seed, i, block, 13) * ANOMALY_KINDS.len() as f64) as usize)
            .min(ANOMALY_KINDS.len() - 1);
        let length = if kind == 0 { 1 } else { every / 4 };
        (tick >= start && tick < start + length).then_some((kind, start))
    }
}

/// `v` changed by an anomaly of `kind` that started `age` ticks ago;
/// `at_start` is the series' value at its start (what `stuck` repeats) and
/// `noise` a number in [-1, 1].
pub fn inject(kind: usize, v: f64, age: u64, at_start: f64, noise: f64) -> f64 {
    let size = v.abs().max(1.0);
    match kind {
        0 => v + 4.0 * size,
        1 => v + size,
        2 => v + size * noise,
        3 => v * (1.0 + 0.01 * age as f64),
        _ => at_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_give_the_same_values_bit_for_bit() {
        for (seed, n) in [(1, 3), (42, 2_000)] {
            let shapes: Vec<Shape> = (0..n).map(|i| Shape::new(seed, i)).collect();
            let mut counters = vec![(0.0, 0.0); shapes.len()];
            let mut memo = None;
            for tick in 0..200 {
                let ts = 1_767_225_600_000 + tick as i64 * 15_000;
                for (i, shape) in shapes.iter().enumerate() {
                    let (slow, fast) = &mut counters[i];
                    let want = value(seed, i as u64, tick, ts, 15_000, slow);
                    let got = shape.value(seed, tick, ts, 15_000, fast, &mut memo);
                    assert_eq!(want.to_bits(), got.to_bits(), "series {i} tick {tick}");
                }
            }
        }
    }

    #[test]
    fn values_are_deterministic_and_plausible() {
        let (mut c1, mut c2) = (0.0, 0.0);
        for tick in 0..2000 {
            let ts = tick as i64 * 10_000;
            for i in 0..10 {
                let (mut a, mut b) = (c1, c1);
                let v1 = value(42, i, tick, ts, 10_000, &mut a);
                let v2 = value(42, i, tick, ts, 10_000, &mut b);
                assert_eq!(v1.to_bits(), v2.to_bits());
                match i % 5 {
                    0 => assert!((0.0..=100.0).contains(&v1)),
                    1 => assert!(v1 > 1.0e9),
                    3 => assert!(v1 > 0.0 && v1 < 60.0, "{v1}"),
                    _ => assert!(v1 >= 0.0),
                }
            }
            value(42, 2, tick, ts, 10_000, &mut c1);
            value(42, 7, tick, ts, 10_000, &mut c2);
        }
        assert_ne!(
            value(1, 0, 5, 0, 1, &mut 0.0),
            value(2, 0, 5, 0, 1, &mut 0.0),
            "the seed matters"
        );
    }

    #[test]
    fn counters_grow_and_sometimes_reset() {
        let mut c = 0.0;
        let (mut prev, mut resets) = (0.0, 0);
        for tick in 0..20_000 {
            let v = value(7, 2, tick, tick as i64 * 1000, 1000, &mut c);
            if v < prev {
                resets += 1;
            }
            prev = v;
        }
        assert!((1..50).contains(&resets), "{resets} resets");
    }

    #[test]
    fn injected_anomalies_are_deterministic_and_only_in_gauges() {
        let inj = Injection {
            probability: 0.5,
            every: 100,
        };
        let mut episodes = std::collections::BTreeSet::new();
        for i in 0..20 {
            for tick in 0..2_000 {
                let a = inj.active(3, i, tick);
                assert_eq!(a, inj.active(3, i, tick));
                if let Some((kind, start)) = a {
                    assert!(!matches!(i % 5, 2 | 4), "a counter got an anomaly");
                    assert!(start <= tick && kind < ANOMALY_KINDS.len());
                    episodes.insert((i, start, kind));
                }
            }
        }
        // About half of 12 gauges x 20 blocks, of every kind.
        assert!((80..160).contains(&episodes.len()), "{}", episodes.len());
        let kinds: std::collections::BTreeSet<usize> = episodes.iter().map(|e| e.2).collect();
        assert_eq!(kinds.len(), ANOMALY_KINDS.len());
        assert_eq!(inject(0, 10.0, 0, 0.0, 0.0), 50.0);
        assert_eq!(inject(4, 10.0, 3, 7.0, 0.0), 7.0);
    }

    #[test]
    fn series_labels() {
        let s = series_for(7);
        assert_eq!(
            s.to_string(),
            r#"http_requests_total{host="host-0001", region="us-east", service="web"}"#
        );
    }
}
