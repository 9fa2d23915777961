//! Reading a series that travelled as its label pairs (between the
//! processes of a cluster, in the write-ahead log, in checkpoints) without
//! building it again when this thread has seen it recently.
//!
//! Building a series costs an allocation per label string, a sort and a
//! hash; a worker that receives another process's samples would pay that
//! for every sample. Instead the label pairs are copied into a reusable
//! buffer in their canonical encoding (each name and value followed by a
//! `0xff` byte, the bytes [`super::series_id`] hashes), hashed in one pass,
//! and looked up in a small per-thread cache of series. A hit is checked
//! byte for byte against the cached series' labels, so a collision or
//! labels that came in another order cannot return the wrong series; a
//! miss builds the series as before ([`Series::from_labels`]) and caches it.
//!
//! The cache keeps at most two generations of [`GENERATION`] series each:
//! when the current one is full, it becomes the previous one and the old
//! previous one is dropped; a hit in the previous generation moves the
//! series back into the current one. What it holds is bounded, and series
//! that stop arriving are let go after two generations.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::{Label, Series};

/// Series per generation of a thread's cache.
pub(super) const GENERATION: usize = 1 << 16;

/// What a thread keeps between reads: the label buffer and the cache.
#[derive(Default)]
struct Reader {
    /// The labels of the series being read, canonically encoded.
    text: Vec<u8>,
    current: FxHashMap<u64, Series>,
    previous: FxHashMap<u64, Series>,
}

thread_local! {
    static READER: RefCell<Reader> = RefCell::default();
}

/// Reads a series from a sequence of `(name, value)` pairs.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Series, D::Error> {
    // Taken out of the thread's slot for the read, so that nothing a
    // deserializer does can find it borrowed.
    let mut reader = READER.with(|r| std::mem::take(&mut *r.borrow_mut()));
    reader.text.clear();
    let read = deserializer.deserialize_seq(Pairs(&mut reader.text));
    let series = read.and_then(|()| reader.series().map_err(de::Error::custom));
    READER.with(|r| *r.borrow_mut() = reader);
    series
}

impl Reader {
    /// The series whose labels are in `text`, from the cache or built.
    fn series(&mut self) -> Result<Series, std::str::Utf8Error> {
        let key = xxhash_rust::xxh3::xxh3_64(&self.text);
        if let Some(s) = self.current.get(&key)
            && encodes(s, &self.text)
        {
            return Ok(s.clone());
        }
        if let Some(s) = self.previous.remove(&key)
            && encodes(&s, &self.text)
        {
            self.insert(key, s.clone());
            return Ok(s);
        }
        let mut labels: Vec<Label> = Vec::new();
        let mut parts = self.text.split(|&b| b == 0xff);
        while let (Some(n), Some(v)) = (parts.next(), parts.next()) {
            labels.push((
                Arc::from(std::str::from_utf8(n)?),
                Arc::from(std::str::from_utf8(v)?),
            ));
        }
        let s = Series::from_labels(labels);
        self.insert(key, s.clone());
        Ok(s)
    }

    fn insert(&mut self, key: u64, series: Series) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, series);
    }
}

/// Whether `text` is exactly the canonical encoding of `series`' labels.
fn encodes(series: &Series, mut text: &[u8]) -> bool {
    for (n, v) in series.labels() {
        for part in [n.as_bytes(), v.as_bytes()] {
            match text.split_at_checked(part.len()) {
                Some((head, [0xff, rest @ ..])) if head == part => text = rest,
                _ => return false,
            }
        }
    }
    text.is_empty()
}

/// The sequence of label pairs, appended to the buffer.
struct Pairs<'a>(&'a mut Vec<u8>);

impl<'de> Visitor<'de> for Pairs<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of label name and value pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Pair(self.0))?.is_some() {}
        Ok(())
    }
}

/// One `(name, value)` pair.
struct Pair<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Pair<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for Pair<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label name and value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for what in ["a label name", "a label value"] {
            if seq.next_element_seed(Text(self.0))?.is_none() {
                return Err(de::Error::custom(format_args!("missing {what}")));
            }
        }
        Ok(())
    }
}

/// One string, appended with its `0xff` terminator.
struct Text<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0xff);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &Series) -> Series {
        let bytes = bincode::serialize(s).unwrap();
        bincode::deserialize(&bytes).unwrap()
    }

    #[test]
    fn a_series_read_back_is_the_same_and_a_repeat_is_shared() {
        let a = Series::new("cpu", [("host", "a"), ("zone", "x")]);
        let b = roundtrip(&a);
        assert_eq!(b, a);
        assert_eq!(b.id(), a.id());
        // The second read of the same labels is the cached series.
        assert!(Arc::ptr_eq(&roundtrip(&a).0, &b.0));
        let json: Series = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&json.0, &b.0));
    }

    #[test]
    fn labels_out_of_order_or_empty_are_made_canonical_every_time() {
        // Not what a series writes, but what a hand-made record might hold.
        let raw = r#"[["zone","x"],["__name__","cpu"],["host","a"],["empty",""]]"#;
        let want = Series::new("cpu", [("host", "a"), ("zone", "x")]);
        for _ in 0..2 {
            let s: Series = serde_json::from_str(raw).unwrap();
            assert_eq!(s, want);
            assert_eq!(s.id(), want.id());
        }
        // The canonical form read after them is still right.
        assert_eq!(roundtrip(&want), want);
    }

    #[test]
    fn a_hit_is_checked_against_the_labels() {
        let a = Series::new("cpu", [("host", "a")]);
        let b = Series::new("cpu", [("host", "b")]);
        let key = {
            let mut text = Vec::new();
            for (n, v) in a.labels() {
                text.extend_from_slice(n.as_bytes());
                text.push(0xff);
                text.extend_from_slice(v.as_bytes());
                text.push(0xff);
            }
            xxhash_rust::xxh3::xxh3_64(&text)
        };
        // A cache whose entry for a's key holds another series (as a
        // collision would): reading a must not return b.
        READER.with(|r| r.borrow_mut().current.insert(key, b.clone()));
        assert_eq!(roundtrip(&a), a);
        assert!(encodes(&a, b"__name__\xffcpu\xffhost\xffa\xff"));
        assert!(!encodes(&a, b"__name__\xffcpu\xffhost\xffa\xffx"));
        assert!(!encodes(&a, b"__name__\xffcpu\xffhost\xffab\xff"));
        assert!(!encodes(&a, b"__name__\xffcpu\xffhost\xff"));
    }

    #[test]
    fn the_cache_keeps_two_generations() {
        let series: Vec<Series> = (0..GENERATION + 10)
            .map(|i| Series::new("m", [("i", i.to_string())]))
            .collect();
        let first = roundtrip(&series[0]);
        for s in &series[1..] {
            assert_eq!(&roundtrip(s), s);
        }
        READER.with(|r| {
            let r = r.borrow();
            assert!(r.current.len() <= GENERATION);
            assert!(r.current.len() + r.previous.len() <= 2 * GENERATION);
        });
        // The first series went to the previous generation and is still
        // found there.
        assert!(Arc::ptr_eq(&roundtrip(&series[0]).0, &first.0));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            r#"[["a"]]"#,
            r#"[["a","b","c"]]"#,
            r#"[[1,"b"]]"#,
            r#"{"a":"b"}"#,
        ] {
            assert!(serde_json::from_str::<Series>(bad).is_err(), "{bad}");
        }
    }
}
