//! Edge validation: every sample is checked once, where it enters.
//!
//! A bad sample is rejected alone with a [`RejectReason`]; the caller counts
//! it (see [`crate::stats::Rejections`]) and tells the sender, and the rest of
//! the batch goes on. Names follow Prometheus: metric names match
//! `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`, and label
//! names starting with `__` are reserved.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::series::{Label, METRIC_NAME_LABEL, Series};

/// Why a sample was rejected. The snake-case name is the `reason` label in
/// telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum RejectReason {
    /// The input could not be decoded at all.
    #[error("malformed input")]
    Malformed,
    /// No metric name.
    #[error("missing metric name")]
    MissingMetricName,
    /// The metric name breaks the Prometheus rules.
    #[error("invalid metric name")]
    InvalidMetricName,
    /// A label name breaks the Prometheus rules or is reserved.
    #[error("invalid label name")]
    InvalidLabelName,
    /// The same label name twice.
    #[error("duplicate label name")]
    DuplicateLabelName,
    /// More labels than `max_labels`.
    #[error("too many labels")]
    TooManyLabels,
    /// A label name (or the metric name) longer than `max_label_name_length`.
    #[error("label name too long")]
    LabelNameTooLong,
    /// A label value longer than `max_label_value_length`.
    #[error("label value too long")]
    LabelValueTooLong,
    /// A timestamp before the Unix epoch or after the year 9999
    /// ([`MAX_TIMESTAMP`]).
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    /// A metric kind or temporality Tidemark does not map (OTLP delta sums,
    /// exponential histograms).
    #[error("unsupported metric kind")]
    UnsupportedMetric,
    /// A timestamp further ahead of the receiver's clock than `max_future`.
    #[error("timestamp too far in the future")]
    TimestampTooNew,
    /// A timestamp further behind the receiver's clock than `max_age`.
    #[error("timestamp too old")]
    TimestampTooOld,
}

impl RejectReason {
    /// Every reason, in a fixed order (the index of [`RejectReason::index`]).
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Malformed,
        RejectReason::MissingMetricName,
        RejectReason::InvalidMetricName,
        RejectReason::InvalidLabelName,
        RejectReason::DuplicateLabelName,
        RejectReason::TooManyLabels,
        RejectReason::LabelNameTooLong,
        RejectReason::LabelValueTooLong,
        RejectReason::TimestampOutOfRange,
        RejectReason::UnsupportedMetric,
        RejectReason::TimestampTooNew,
        RejectReason::TimestampTooOld,
    ];

    /// A dense index for counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The snake-case name used in telemetry and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::MissingMetricName => "missing_metric_name",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::InvalidLabelName => "invalid_label_name",
            RejectReason::DuplicateLabelName => "duplicate_label_name",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::LabelNameTooLong => "label_name_too_long",
            RejectReason::LabelValueTooLong => "label_value_too_long",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::UnsupportedMetric => "unsupported_metric",
            RejectReason::TimestampTooNew => "timestamp_too_new",
            RejectReason::TimestampTooOld => "timestamp_too_old",
        }
    }
}

/// Limits applied at the edge. The defaults follow VictoriaMetrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most labels a series may have, not counting the metric name.
    pub max_labels: usize,
    /// Longest metric or label name, in bytes.
    pub max_label_name_length: usize,
    /// Longest label value, in bytes.
    pub max_label_value_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels: 40,
            max_label_name_length: 256,
            max_label_value_length: 4096,
        }
    }
}

/// How far from the receiver's clock a pushed sample's timestamp may be.
/// A timestamp far ahead would move a source's watermark past every honest
/// sender (making their samples late); one far behind can only be late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBounds {
    /// Most milliseconds a timestamp may be ahead of now; `None` for no limit.
    pub max_future_ms: Option<i64>,
    /// Most milliseconds a timestamp may be behind now; `None` for no limit.
    pub max_age_ms: Option<i64>,
}

impl Default for TimeBounds {
    /// Ten minutes ahead (clock skew between hosts); no age limit, since
    /// backfills are legitimate and each pipeline counts what is late for it.
    fn default() -> Self {
        TimeBounds {
            max_future_ms: Some(10 * 60 * 1000),
            max_age_ms: None,
        }
    }
}

impl TimeBounds {
    /// Checks a timestamp (already known not to be before the epoch) against
    /// the receiver's clock `now_ms`.
    pub fn check(&self, timestamp: i64, now_ms: i64) -> Result<i64, RejectReason> {
        if self
            .max_future_ms
            .is_some_and(|f| timestamp > now_ms.saturating_add(f))
        {
            return Err(RejectReason::TimestampTooNew);
        }
        if self
            .max_age_ms
            .is_some_and(|a| timestamp < now_ms.saturating_sub(a))
        {
            return Err(RejectReason::TimestampTooOld);
        }
        Ok(timestamp)
    }
}

/// Series already validated at the edge, found again by a hash of the labels
/// as they arrived, so that a sender repeating its series (every collector
/// does) costs a lookup instead of a validation and a fresh allocation, and
/// every sample of a series shares one [`Series`].
///
/// Sharded by hash and bounded in bytes (what the series hold, counted by
/// [`Series::heap_bytes`], and the map's own entries): a shard that reaches
/// its share of the budget is emptied and refills with what is current (as
/// VictoriaMetrics rotates its caches). A hit is checked against the
/// labels, so a hash collision costs a rebuild, never a wrong series.
pub struct SeriesCache {
    shards: Box<[std::sync::Mutex<CacheShard>]>,
    bytes_per_shard: usize,
}

#[derive(Default)]
struct CacheShard {
    series: rustc_hash::FxHashMap<u64, Series>,
    bytes: usize,
}

impl Default for SeriesCache {
    /// 128 MiB: about a million series of a few short labels.
    fn default() -> Self {
        SeriesCache::new(128 << 20)
    }
}

impl SeriesCache {
    const SHARDS: usize = 16;
    /// What one map entry costs besides its series: key, pointer, control
    /// byte, and the table's spare room.
    const ENTRY: usize = 32;

    /// A cache of at most about `bytes` bytes.
    pub fn new(bytes: usize) -> SeriesCache {
        SeriesCache {
            shards: (0..Self::SHARDS).map(|_| Default::default()).collect(),
            bytes_per_shard: (bytes / Self::SHARDS).max(1),
        }
    }

    /// Bytes held now, by the count of [`Series::heap_bytes`].
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }

    /// The series of `name` and `labels` as [`Limits::check`] builds it,
    /// from the cache when it has been seen.
    pub fn check<'a, I>(
        &self,
        limits: &Limits,
        name: &str,
        labels: I,
    ) -> Result<Series, RejectReason>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone,
    {
        let labels = labels.into_iter();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(name.as_bytes());
        for (n, v) in labels.clone() {
            hasher.update(&[0xff]);
            hasher.update(n.as_bytes());
            hasher.update(&[0xfe]);
            hasher.update(v.as_bytes());
        }
        let key = hasher.digest();
        let shard = &self.shards[(key >> 60) as usize % Self::SHARDS];
        let cached = shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series
            .get(&key)
            .cloned();
        if let Some(series) = cached
            && matches(&series, name, labels.clone())
        {
            return Ok(series);
        }
        let series = limits.check(name, labels)?;
        let cost = series.heap_bytes() + Self::ENTRY;
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if shard.bytes + cost > self.bytes_per_shard {
            // Emptied, and the table's memory returned too.
            *shard = CacheShard::default();
        }
        if let Some(old) = shard.series.insert(key, series.clone()) {
            shard.bytes -= old.heap_bytes() + Self::ENTRY;
        }
        shard.bytes += cost;
        Ok(series)
    }
}

/// What a decoder checks received series and timestamps with: the server's
/// control plane, or an [`EdgeCheck`] of a source's own.
pub trait Check: Send + Sync {
    /// Validates a received series.
    fn check_series<'a, I>(&self, name: &str, labels: I) -> Result<Series, RejectReason>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone;

    /// Checks a received timestamp against the clock `now_ms`.
    fn check_timestamp(&self, timestamp: i64, now_ms: i64) -> Result<i64, RejectReason>;
}

/// Limits, time bounds and a series cache: the edge checks of a source that
/// reads on its own (Kafka).
#[derive(Default)]
pub struct EdgeCheck {
    /// Label limits.
    pub limits: Limits,
    /// Time bounds around the clock.
    pub bounds: TimeBounds,
    /// Validated series, found again by their labels.
    pub series: SeriesCache,
}

impl Check for EdgeCheck {
    fn check_series<'a, I>(&self, name: &str, labels: I) -> Result<Series, RejectReason>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone,
    {
        self.series.check(&self.limits, name, labels)
    }

    fn check_timestamp(&self, timestamp: i64, now_ms: i64) -> Result<i64, RejectReason> {
        self.limits
            .check_timestamp(timestamp)
            .and_then(|t| self.bounds.check(t, now_ms))
    }
}

/// Whether `series` is what `name` and `labels` (as received) build.
fn matches<'a>(
    series: &Series,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> bool {
    if series.name() != name {
        return false;
    }
    // Most senders send labels sorted by name, as the series holds them:
    // one walk in step. Any other order is looked up label by label.
    let mut mine = series
        .labels()
        .iter()
        .filter(|(n, _)| n.as_ref() != METRIC_NAME_LABEL);
    let mut in_step = true;
    for (n, v) in labels.clone().filter(|(_, v)| !v.is_empty()) {
        match mine.next() {
            Some((m, w)) if m.as_ref() == n && w.as_ref() == v => {}
            _ => {
                in_step = false;
                break;
            }
        }
    }
    if in_step {
        return mine.next().is_none();
    }
    let mut count = 1;
    for (n, v) in labels {
        if v.is_empty() {
            continue;
        }
        if n == METRIC_NAME_LABEL || series.get(n) != Some(v) {
            return false;
        }
        count += 1;
    }
    series.labels().len() == count
}

/// Whether `name` is a valid Prometheus metric name.
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `name` is a valid Prometheus label name.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Limits {
    /// Validates a metric name and labels as they arrived and builds the
    /// series. Labels with empty values are dropped, as in Prometheus.
    pub fn check<'a>(
        &self,
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Series, RejectReason> {
        if name.is_empty() {
            return Err(RejectReason::MissingMetricName);
        }
        if name.len() > self.max_label_name_length {
            return Err(RejectReason::LabelNameTooLong);
        }
        if !is_metric_name(name) {
            return Err(RejectReason::InvalidMetricName);
        }
        let mut all: Vec<Label> = Vec::with_capacity(8);
        all.push((Arc::from(METRIC_NAME_LABEL), Arc::from(name)));
        let mut count = 0;
        for (n, v) in labels {
            if n.len() > self.max_label_name_length {
                return Err(RejectReason::LabelNameTooLong);
            }
            if !is_label_name(n) || n.starts_with("__") {
                return Err(RejectReason::InvalidLabelName);
            }
            if v.len() > self.max_label_value_length {
                return Err(RejectReason::LabelValueTooLong);
            }
            if v.is_empty() {
                continue;
            }
            count += 1;
            if count > self.max_labels {
                return Err(RejectReason::TooManyLabels);
            }
            all.push((Arc::from(n), Arc::from(v)));
        }
        let unique = {
            let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_ref()).collect();
            names.sort_unstable();
            names.windows(2).all(|w| w[0] != w[1])
        };
        if !unique {
            return Err(RejectReason::DuplicateLabelName);
        }
        Ok(Series::from_labels(all))
    }

    /// Validates a timestamp: from the epoch to [`MAX_TIMESTAMP`], so that
    /// window arithmetic (an end plus lateness and size) never overflows.
    pub fn check_timestamp(&self, timestamp: i64) -> Result<i64, RejectReason> {
        if !(0..=MAX_TIMESTAMP).contains(&timestamp) {
            Err(RejectReason::TimestampOutOfRange)
        } else {
            Ok(timestamp)
        }
    }
}

/// The last millisecond any source accepts: 9999-12-31T23:59:59.999Z, as
/// in Prometheus' time parser and PostgreSQL's `timestamptz` range.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999;

/// Refuses a Go template whose last action is not closed (`{{` with no
/// `}}` after it): `gtmpl` 0.7 never returns from parsing some of those
/// (`"{{ .x "`, whitespace before the end), so templates from users are
/// checked with this first.
pub fn template_actions_closed(text: &str) -> Result<(), String> {
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        match text[open + 2..].find("}}") {
            Some(close) => from = open + 2 + close + 2,
            None => {
                return Err(format!("the action at byte {open} is not closed with }}}}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, labels: &[(&str, &str)]) -> Result<Series, RejectReason> {
        Limits::default().check(name, labels.iter().copied())
    }

    #[test]
    fn accepts_prometheus_names() {
        let s = check("node_cpu:rate5m", &[("host", "a"), ("_x1", "b")]).unwrap();
        assert_eq!(s.name(), "node_cpu:rate5m");
        assert_eq!(s.get("host"), Some("a"));
    }

    #[test]
    fn rejects_each_bad_input_with_its_reason() {
        use RejectReason::*;
        assert_eq!(check("", &[]), Err(MissingMetricName));
        assert_eq!(check("1cpu", &[]), Err(InvalidMetricName));
        assert_eq!(check("cpu-usage", &[]), Err(InvalidMetricName));
        assert_eq!(check("cpu", &[("host-name", "a")]), Err(InvalidLabelName));
        assert_eq!(check("cpu", &[("__reserved", "a")]), Err(InvalidLabelName));
        assert_eq!(
            check("cpu", &[("h", "a"), ("h", "b")]),
            Err(DuplicateLabelName)
        );
        let long = "x".repeat(300);
        assert_eq!(check("cpu", &[(long.as_str(), "a")]), Err(LabelNameTooLong));
        let value = "v".repeat(5000);
        assert_eq!(
            check("cpu", &[("h", value.as_str())]),
            Err(LabelValueTooLong)
        );
        let names: Vec<String> = (0..41).map(|i| format!("l{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert_eq!(check("cpu", &many), Err(TooManyLabels));
        for bad in [-1, MAX_TIMESTAMP + 1, i64::MAX] {
            assert_eq!(
                Limits::default().check_timestamp(bad),
                Err(TimestampOutOfRange),
                "{bad}"
            );
        }
        assert_eq!(
            Limits::default().check_timestamp(MAX_TIMESTAMP),
            Ok(MAX_TIMESTAMP)
        );
    }

    #[test]
    fn time_bounds_reject_far_future_and_too_old() {
        let now = 1_000_000_000;
        let default = TimeBounds::default();
        assert_eq!(default.check(now + 600_000, now), Ok(now + 600_000));
        assert_eq!(
            default.check(now + 600_001, now),
            Err(RejectReason::TimestampTooNew)
        );
        assert_eq!(default.check(0, now), Ok(0), "no age limit by default");
        let bounded = TimeBounds {
            max_future_ms: None,
            max_age_ms: Some(1000),
        };
        assert_eq!(bounded.check(i64::MAX, now), Ok(i64::MAX));
        assert_eq!(bounded.check(now - 1000, now), Ok(now - 1000));
        assert_eq!(
            bounded.check(now - 1001, now),
            Err(RejectReason::TimestampTooOld)
        );
    }

    #[test]
    fn the_series_cache_is_bounded_in_bytes() {
        let cache = SeriesCache::new(1 << 20);
        let limits = Limits::default();
        let long = "v".repeat(4000);
        for i in 0..10_000 {
            let s = cache
                .check(&limits, "m", [("i", i.to_string().as_str()), ("x", &long)])
                .unwrap();
            assert!(s.heap_bytes() > 4000);
            // Each shard may go one series over its share.
            assert!(cache.bytes() <= (1 << 20) + 16 * 4200, "{}", cache.bytes());
        }
        // Filled, not merely emptied every time.
        assert!(cache.bytes() > (1 << 19), "{}", cache.bytes());
    }

    #[test]
    fn the_series_cache_agrees_with_check_and_shares_series() {
        let cache = SeriesCache::new(32);
        let limits = Limits::default();
        let a = cache
            .check(&limits, "cpu", [("host", "a"), ("dc", "x")])
            .unwrap();
        let b = cache
            .check(&limits, "cpu", [("host", "a"), ("dc", "x")])
            .unwrap();
        assert!(std::ptr::eq(a.labels(), b.labels()), "one shared series");
        assert_eq!(
            a,
            limits.check("cpu", [("dc", "x"), ("host", "a")]).unwrap()
        );
        // Other orders, empty values and invalid input behave as check does.
        assert_eq!(
            cache.check(&limits, "cpu", [("dc", "x"), ("host", "a"), ("z", "")]),
            Ok(a)
        );
        assert_eq!(
            cache.check(&limits, "cpu", [("host", "a"), ("host", "a")]),
            Err(RejectReason::DuplicateLabelName)
        );
        assert_eq!(
            cache.check(&limits, "cpu", [("bad-name", "a")]),
            Err(RejectReason::InvalidLabelName)
        );
        // Past its capacity it keeps working.
        for i in 0..1000 {
            let v = i.to_string();
            let s = cache.check(&limits, "m", [("i", v.as_str())]).unwrap();
            assert_eq!(s.get("i"), Some(v.as_str()));
        }
    }

    #[test]
    fn a_cached_series_matches_exactly_its_labels_in_any_order() {
        let s = Series::new("cpu", [("dc", "x"), ("host", "a")]);
        let m = |name: &str, labels: &[(&'static str, &'static str)]| {
            matches(&s, name, labels.iter().copied())
        };
        assert!(m("cpu", &[("dc", "x"), ("host", "a")]));
        assert!(m("cpu", &[("host", "a"), ("dc", "x")]));
        assert!(m(
            "cpu",
            &[("a", ""), ("dc", "x"), ("host", "a"), ("z", "")]
        ));
        assert!(!m("mem", &[("dc", "x"), ("host", "a")]));
        assert!(!m("cpu", &[("dc", "x")]));
        assert!(!m("cpu", &[("host", "a")]));
        assert!(!m("cpu", &[("dc", "x"), ("host", "b")]));
        assert!(!m("cpu", &[("dc", "x"), ("host", "a"), ("z", "1")]));
        assert!(!m("cpu", &[("dc", "x"), ("dc", "x"), ("host", "a")]));
        assert!(!m(
            "cpu",
            &[("__name__", "cpu"), ("dc", "x"), ("host", "a")]
        ));
        assert!(!m("cpu", &[("host", "a"), ("dc", "x"), ("host", "a")]));
    }

    #[test]
    fn limits_are_configurable() {
        let limits = Limits {
            max_labels: 1,
            ..Limits::default()
        };
        assert!(limits.check("cpu", [("a", "1")]).is_ok());
        assert_eq!(
            limits.check("cpu", [("a", "1"), ("b", "2")]),
            Err(RejectReason::TooManyLabels)
        );
        // Empty values are absent labels and do not count.
        assert!(limits.check("cpu", [("a", "1"), ("b", "")]).is_ok());
    }

    #[test]
    fn an_unclosed_template_action_is_refused() {
        assert!(template_actions_closed("plain").is_ok());
        assert!(template_actions_closed("{{ .a }} and {{ \"}}\" }}").is_ok());
        let why = template_actions_closed("{{ .a }} {{ .b ").unwrap_err();
        assert!(why.contains("byte 9"), "{why}");
        assert!(template_actions_closed("{{").is_err());
    }

    #[test]
    fn reason_indexes_are_dense() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
