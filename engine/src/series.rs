//! Series and samples: the Prometheus data model.
//!
//! A [`Series`] is a metric name plus a set of labels, stored once and shared
//! by reference-counted pointer, so that a [`Sample`] is three words and moving
//! one never allocates. Every series has a stable 64-bit [`SeriesId`]: the
//! XXH3 hash (seed 0) of its canonical encoding, the sorted label pairs with
//! the metric name as the label `__name__`, each name and value followed by a
//! `0xff` byte. XXH3 is a fixed, published algorithm, so the identity is the
//! same in every process, after restarts and across versions.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod decode;

/// The label that holds a series' metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// The stable 64-bit identity of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesId(pub u64);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A label name and value.
pub type Label = (Arc<str>, Arc<str>);

#[derive(Debug, PartialEq, Eq)]
struct SeriesInner {
    id: SeriesId,
    /// Sorted by name, unique names, `__name__` included.
    labels: Box<[Label]>,
}

/// A metric name plus labels, immutable and cheap to clone.
///
/// Build one with [`Series::new`] (which sorts and does not validate) or
/// through [`crate::validate::Limits::check`] at the edge.
#[derive(Clone, PartialEq, Eq)]
pub struct Series(Arc<SeriesInner>);

impl Series {
    /// A series from its metric name and other labels, in any order.
    ///
    /// Labels named `__name__` in `labels` are ignored in favour of `name`;
    /// labels with an empty value are dropped, as Prometheus does. Duplicate
    /// names keep the last value. Validation is [`crate::validate`]'s job.
    pub fn new<N, V>(name: &str, labels: impl IntoIterator<Item = (N, V)>) -> Series
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut all: Vec<Label> = vec![(Arc::from(METRIC_NAME_LABEL), Arc::from(name))];
        for (n, v) in labels {
            let (n, v) = (n.as_ref(), v.as_ref());
            if n != METRIC_NAME_LABEL && !v.is_empty() {
                all.push((Arc::from(n), Arc::from(v)));
            }
        }
        Series::from_labels(all)
    }

    /// A series from a full label set that includes `__name__`.
    pub fn from_labels(mut labels: Vec<Label>) -> Series {
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last of equal names, as a map would.
        labels.reverse();
        labels.dedup_by(|a, b| a.0 == b.0);
        labels.reverse();
        labels.retain(|(_, v)| !v.is_empty());
        let id = series_id(&labels);
        Series(Arc::new(SeriesInner {
            id,
            labels: labels.into_boxed_slice(),
        }))
    }

    /// The stable identity.
    #[inline]
    pub fn id(&self) -> SeriesId {
        self.0.id
    }

    /// The metric name (`__name__`), empty if there is none.
    pub fn name(&self) -> &str {
        self.get(METRIC_NAME_LABEL).unwrap_or("")
    }

    /// The value of a label, `__name__` included.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .labels
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| self.0.labels[i].1.as_ref())
    }

    /// Memory the series holds, in bytes: its labels' text and the
    /// allocations around them (what a cache of series counts).
    pub fn heap_bytes(&self) -> usize {
        const ARC_HEADER: usize = 2 * size_of::<usize>();
        size_of::<SeriesInner>()
            + ARC_HEADER
            + self
                .0
                .labels
                .iter()
                .map(|(n, v)| size_of::<Label>() + 2 * ARC_HEADER + n.len() + v.len())
                .sum::<usize>()
    }

    /// All labels sorted by name, `__name__` included.
    pub fn labels(&self) -> &[Label] {
        &self.0.labels
    }

    /// The labels other than `__name__`, sorted by name.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .labels
            .iter()
            .filter(|(n, _)| n.as_ref() != METRIC_NAME_LABEL)
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The same labels under another metric name (an empty one removes
    /// it); see [`Series::with_label`].
    pub fn with_name(&self, name: &str) -> Series {
        self.with_label(METRIC_NAME_LABEL, name)
    }

    /// The same labels with `name` set to `value` (an empty value removes
    /// it, as in Prometheus). The other label strings are shared with
    /// `self`, not copied: what a window's or a detector's output series
    /// cost beside their input is their own label table and the new text
    /// ([`Series::own_bytes`]).
    pub fn with_label(&self, name: &str, value: &str) -> Series {
        let mut labels: Vec<Label> = self
            .labels()
            .iter()
            .filter(|(n, _)| n.as_ref() != name)
            .cloned()
            .collect();
        if !value.is_empty() {
            let at = labels.partition_point(|(n, _)| n.as_ref() < name);
            labels.insert(at, (Arc::from(name), Arc::from(value)));
        }
        let id = series_id(&labels);
        Series(Arc::new(SeriesInner {
            id,
            labels: labels.into_boxed_slice(),
        }))
    }

    /// Memory the series holds beside label strings it shares (see
    /// [`Series::with_name`]): its record, its label table and its metric
    /// name's text.
    pub fn own_bytes(&self) -> usize {
        const ARC_HEADER: usize = 2 * size_of::<usize>();
        size_of::<SeriesInner>()
            + ARC_HEADER
            + self.0.labels.len() * size_of::<Label>()
            + ARC_HEADER
            + self.name().len()
    }
}

/// The canonical hash of a sorted label set.
pub fn series_id(sorted: &[Label]) -> SeriesId {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (n, v) in sorted {
        hasher.update(n.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(v.as_bytes());
        hasher.update(&[0xff]);
    }
    SeriesId(hasher.digest())
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The PromQL form: `name{a="1", b="2"}`.
impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let mut tags = self.tags().peekable();
        if tags.peek().is_some() {
            f.write_str("{")?;
            let mut first = true;
            for (n, v) in tags {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                write!(f, "{n}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl std::hash::Hash for Series {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders by label set, so sorted output is readable and deterministic.
impl Ord for Series {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name()
            .cmp(other.name())
            .then_with(|| self.0.labels.cmp(&other.0.labels))
    }
}

/// A series as a JSON object of its labels (`{"alertname": "A", ...}`;
/// `__name__` only when the name is not empty), for records that people
/// and other tools read: `#[serde(with = "tidemark_engine::series::as_map")]`.
pub mod as_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Series;

    /// Writes the labels as an object.
    pub fn serialize<S: Serializer>(series: &Series, serializer: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &str> = series
            .labels()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (&**n, &**v))
            .collect();
        map.serialize(serializer)
    }

    /// Reads an object of labels.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Series, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        let name = map
            .get(super::METRIC_NAME_LABEL)
            .cloned()
            .unwrap_or_default();
        Ok(Series::new(&name, map))
    }
}

// Across processes a series travels as its label pairs; the id is recomputed
// (or the series found again in the reading thread's cache, see `decode`).
impl Serialize for Series {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.labels.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        decode::deserialize(deserializer)
    }
}

/// One observation of a series: timestamp in milliseconds since the Unix
/// epoch and a 64-bit float value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The series observed.
    pub series: Series,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A sample.
    pub fn new(series: Series, timestamp: i64, value: f64) -> Sample {
        Sample {
            series,
            timestamp,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_shares_the_labels_and_keeps_the_identity_rules() {
        let a = Series::new("cpu", [("host", "a"), ("Zone", "x")]);
        let b = a.with_name("cpu:10s_avg");
        assert_eq!(
            b,
            Series::new("cpu:10s_avg", [("host", "a"), ("Zone", "x")])
        );
        assert_eq!(
            b.id(),
            Series::new("cpu:10s_avg", [("Zone", "x"), ("host", "a")]).id()
        );
        let host = |s: &Series| Arc::clone(&s.labels().iter().find(|l| &*l.0 == "host").unwrap().1);
        assert!(Arc::ptr_eq(&host(&a), &host(&b)));
        assert_eq!(a.with_name("").name(), "");
        assert!(b.own_bytes() < b.heap_bytes());
        // Set between others, replaced, removed: sorted as if built anew.
        let c = a.with_label("a", "1").with_label("host", "b");
        assert_eq!(
            c,
            Series::new("cpu", [("a", "1"), ("host", "b"), ("Zone", "x")])
        );
        assert_eq!(
            c.with_label("a", ""),
            Series::new("cpu", [("host", "b"), ("Zone", "x")])
        );
    }

    #[test]
    fn identity_ignores_label_order_and_empty_values() {
        let a = Series::new("cpu", [("host", "a"), ("dc", "x")]);
        let b = Series::new("cpu", [("dc", "x"), ("host", "a"), ("zone", "")]);
        assert_eq!(a.id(), b.id());
        assert_eq!(a, b);
        assert_ne!(
            a.id(),
            Series::new("cpu", [("host", "b"), ("dc", "x")]).id()
        );
        assert_ne!(
            a.id(),
            Series::new("mem", [("host", "a"), ("dc", "x")]).id()
        );
    }

    #[test]
    fn identity_is_stable_across_versions() {
        // This value keys sharding and checkpoints: it must never change.
        // It is XXH3-64 (seed 0) of "__name__\xffcpu\xffhost\xffa\xff".
        let s = Series::new("cpu", [("host", "a")]);
        let mut bytes = Vec::new();
        for part in ["__name__", "cpu", "host", "a"] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0xff);
        }
        assert_eq!(s.id().0, xxhash_rust::xxh3::xxh3_64(&bytes));
        assert_eq!(
            s.id().0,
            0x1ac1_f825_78d0_56b7,
            "series id changed: {}",
            s.id()
        );
    }

    #[test]
    fn separators_prevent_ambiguous_encodings() {
        let a = Series::new("m", [("ab", "c")]);
        let b = Series::new("m", [("a", "bc")]);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn display_is_promql() {
        let s = Series::new("cpu", [("host", "a\"b"), ("dc", "x")]);
        assert_eq!(s.to_string(), r#"cpu{dc="x", host="a\"b"}"#);
        assert_eq!(
            Series::new("up", Vec::<(&str, &str)>::new()).to_string(),
            "up"
        );
    }

    #[test]
    fn serde_round_trip_keeps_identity() {
        let s = Sample::new(Series::new("cpu", [("host", "a")]), 5, 1.5);
        let json = serde_json::to_string(&s).unwrap();
        let back: Sample = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.series.id(), s.series.id());
    }
}
