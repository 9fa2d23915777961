//! The JSON-lines form of a sample, read by the `file` source and written by
//! the `file` sink:
//!
//! ```json
//! {"name": "cpu_usage", "labels": {"host": "a"}, "timestamp": 1700000000000, "value": 0.5}
//! ```
//!
//! JSON has no NaN or infinities, so those values are written as the strings
//! `"NaN"`, `"+Inf"` and `"-Inf"` (as Prometheus writes them) and read back
//! from the same strings.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use tidemark_engine::Sample;
use tidemark_engine::validate::{Check, EdgeCheck, Limits, RejectReason};

use crate::{Arrival, Rejects, tenant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSample<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    labels: Labels<'a>,
    timestamp: i64,
    #[serde(borrow)]
    value: JsonValue<'a>,
}

/// A string borrowed from the line unless it has escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The labels object, sorted by name; of a name given twice the last
/// value counts (as a map would keep it). A list, not a tree: no
/// allocation per label.
#[derive(Default)]
struct Labels<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut labels: Vec<(Cow<'de, str>, Cow<'de, str>)> = Vec::new();
                while let Some((Text(n), Text(v))) = map.next_entry()? {
                    labels.push((n, v));
                }
                // Stable: of equal names, the last sent stays last, and
                // its value is kept in the place of the first.
                labels.sort_by(|a, b| a.0.cmp(&b.0));
                labels.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        std::mem::swap(&mut later.1, &mut kept.1);
                    }
                    same
                });
                Ok(Labels(labels))
            }
        }
        d.deserialize_map(V)
    }
}

/// A value: a number, or the text of NaN or an infinity.
enum JsonValue<'a> {
    Number(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, \"NaN\", \"+Inf\" or \"-Inf\"")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonValue::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonValue::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonValue::Number(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A line that could not be turned into a sample.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// The counted reason.
    pub reason: RejectReason,
    /// A human explanation.
    pub detail: String,
}

/// Parses a line without validating it.
fn parse(line: &str) -> Result<(JsonSample<'_>, f64), DecodeError> {
    let raw: JsonSample<'_> = serde_json::from_str(line).map_err(|e| DecodeError {
        reason: RejectReason::Malformed,
        detail: e.to_string(),
    })?;
    let value = match &raw.value {
        JsonValue::Number(v) => *v,
        JsonValue::Text(t) => match t.as_ref() {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => {
                return Err(DecodeError {
                    reason: RejectReason::Malformed,
                    detail: format!(
                        "value {other:?} is not a number, \"NaN\", \"+Inf\" or \"-Inf\""
                    ),
                });
            }
        },
    };
    Ok((raw, value))
}

/// Decodes and validates one JSON line.
pub fn decode_json(line: &str, limits: &Limits) -> Result<Sample, DecodeError> {
    let (raw, value) = parse(line)?;
    let series = limits
        .check(
            &raw.name,
            raw.labels.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        )
        .map_err(|reason| series_error(reason, &raw.name))?;
    let timestamp = limits
        .check_timestamp(raw.timestamp)
        .map_err(|reason| timestamp_error(reason, raw.timestamp))?;
    Ok(Sample::new(series, timestamp, value))
}

/// Decodes one JSON line, validating with `check` (a series cache, time
/// bounds around `now_ms`): for sources that read many samples of the same
/// series.
pub fn decode_json_checked(
    line: &str,
    check: &impl Check,
    arrival: Arrival<'_>,
) -> Result<Sample, DecodeError> {
    let (raw, value) = parse(line)?;
    let labels = raw.labels.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    let series = check
        .check_series(&raw.name, tenant::apply(labels, arrival.tenant))
        .map_err(|reason| series_error(reason, &raw.name))?;
    let timestamp = check
        .check_timestamp(raw.timestamp, arrival.now_ms)
        .map_err(|reason| timestamp_error(reason, raw.timestamp))?;
    Ok(Sample::new(series, timestamp, value))
}

/// Decodes a payload of JSON lines (blank lines skipped); a bad line is
/// rejected alone.
pub fn decode_lines(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let Some(text) = crate::utf8(payload, rejects) else {
        return;
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match decode_json_checked(line, check, arrival) {
            Ok(sample) => out.push(sample),
            Err(e) => rejects.add(e.reason, 1, i, || format!("line {}: {e}", i + 1)),
        }
    }
}

fn series_error(reason: RejectReason, name: &str) -> DecodeError {
    DecodeError {
        reason,
        detail: format!("series {name:?}"),
    }
}

fn timestamp_error(reason: RejectReason, timestamp: i64) -> DecodeError {
    DecodeError {
        reason,
        detail: format!("timestamp {timestamp}"),
    }
}

/// Writes one sample as a JSON line (with the newline).
pub fn encode_json(sample: &Sample, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(b"{\"name\":")?;
    serde_json::to_writer(&mut *out, sample.series.name())?;
    out.write_all(b",\"labels\":{")?;
    for (i, (n, v)) in sample.series.tags().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, n)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, v)?;
    }
    write!(out, "}},\"timestamp\":{},\"value\":", sample.timestamp)?;
    let v = sample.value;
    if v.is_nan() {
        out.write_all(b"\"NaN\"")?;
    } else if v.is_infinite() {
        out.write_all(if v > 0.0 { b"\"+Inf\"" } else { b"\"-Inf\"" })?;
    } else {
        serde_json::to_writer(&mut *out, &v)?;
    }
    out.write_all(b"}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let line = r#"{"name": "cpu", "labels": {"host": "a", "dc": "x"}, "timestamp": 1000, "value": 0.25}"#;
        let s = decode_json(line, &Limits::default()).unwrap();
        let mut out = Vec::new();
        encode_json(&s, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"name\":\"cpu\",\"labels\":{\"dc\":\"x\",\"host\":\"a\"},\"timestamp\":1000,\"value\":0.25}\n"
        );
    }

    #[test]
    fn values_read_back_to_the_same_bits() {
        // serde_json's default float parser can be one unit in the last
        // place off; the workspace enables its exact parser.
        for v in [480.20000000000005, 0.1 + 0.2, 1e-310, f64::MAX] {
            let mut line = Vec::new();
            encode_json(
                &Sample::new(tidemark_engine::Series::new("x", [("a", "b")]), 1, v),
                &mut line,
            )
            .unwrap();
            let back =
                decode_json(std::str::from_utf8(&line).unwrap(), &Limits::default()).unwrap();
            assert_eq!(back.value.to_bits(), v.to_bits(), "{v}");
        }
    }

    #[test]
    fn special_values() {
        for (text, check) in [
            ("\"NaN\"", f64::is_nan as fn(f64) -> bool),
            ("\"+Inf\"", |v| v == f64::INFINITY),
        ] {
            let line = format!(r#"{{"name": "m", "timestamp": 1, "value": {text}}}"#);
            let s = decode_json(&line, &Limits::default()).unwrap();
            assert!(check(s.value));
            let mut out = Vec::new();
            encode_json(&s, &mut out).unwrap();
            assert!(String::from_utf8(out).unwrap().contains(text));
        }
    }

    #[test]
    fn lines_are_rejected_alone_and_tenants_replace_labels() {
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        let payload = b"{\"name\":\"a\",\"labels\":{\"tenant\":\"x\"},\"timestamp\":1,\"value\":2}\nnot json\n\n{\"name\":\"a\",\"labels\":{},\"timestamp\":99999999999999,\"value\":2}";
        let arrival = Arrival {
            now_ms: 1_700_000_000_000,
            tenant: Some("acme"),
        };
        decode_lines(
            payload,
            arrival,
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].series.to_string(), "a{tenant=\"acme\"}");
        assert_eq!(rejects.counts[&RejectReason::Malformed], 1);
        assert_eq!(rejects.counts[&RejectReason::TimestampTooNew], 1);
        assert!(rejects.first().unwrap().contains("line 2"));
    }

    #[test]
    fn labels_in_any_order_escapes_and_repeats_read_as_a_map_would() {
        let limits = Limits::default();
        let read = |l: &str| decode_json(l, &limits).unwrap();
        let sorted =
            read(r#"{"name":"m","labels":{"a":"1","b":"x\"y","c":"3"},"timestamp":1,"value":2}"#);
        assert_eq!(sorted.series.get("b"), Some("x\"y"));
        // The same series from any order; an escaped name is the same name.
        for line in [
            r#"{"name":"m","labels":{"c":"3","b":"x\"y","a":"1"},"timestamp":1,"value":2}"#,
            r#"{"value":2,"timestamp":1,"labels":{"b":"x\"y","\u0061":"1","c":"3"},"name":"m"}"#,
            // A name given twice: the last value counts.
            r#"{"name":"m","labels":{"a":"0","c":"3","b":"x\"y","a":"1"},"timestamp":1,"value":2}"#,
        ] {
            let s = read(line);
            assert_eq!(s.series, sorted.series, "{line}");
            assert_eq!(s.series.id(), sorted.series.id(), "{line}");
        }
        // Integers, large and negative, read as floats do.
        assert_eq!(read(r#"{"name":"m","timestamp":1,"value":-3}"#).value, -3.0);
        assert_eq!(
            read(r#"{"name":"m","timestamp":1,"value":18446744073709551615}"#).value,
            u64::MAX as f64
        );
        let reason = |l: &str| decode_json(l, &limits).unwrap_err();
        for bad in [
            r#"{"name":"m","labels":{"a":1},"timestamp":1,"value":2}"#,
            r#"{"name":"m","labels":[],"timestamp":1,"value":2}"#,
            r#"{"name":"m","timestamp":1,"value":{}}"#,
            r#"{"name":"m","timestamp":1,"value":null}"#,
        ] {
            assert_eq!(reason(bad).reason, RejectReason::Malformed, "{bad}");
        }
        assert!(
            reason(r#"{"name":"m","timestamp":1,"value":[1]}"#)
                .detail
                .contains("a number, \"NaN\", \"+Inf\" or \"-Inf\""),
        );
    }

    #[test]
    fn rejects_with_reasons() {
        let limits = Limits::default();
        let reason = |l: &str| decode_json(l, &limits).unwrap_err().reason;
        assert_eq!(reason("not json"), RejectReason::Malformed);
        assert_eq!(
            reason(r#"{"name": "m", "timestamp": 1}"#),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(r#"{"name": "m", "timestamp": 1, "value": 1, "extra": 2}"#),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(r#"{"name": "m", "timestamp": 1, "value": "x"}"#),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(r#"{"name": "9m", "timestamp": 1, "value": 1}"#),
            RejectReason::InvalidMetricName
        );
        assert_eq!(
            reason(r#"{"name": "m", "labels": {"a-b": "1"}, "timestamp": 1, "value": 1}"#),
            RejectReason::InvalidLabelName
        );
        assert_eq!(
            reason(r#"{"name": "m", "timestamp": -1, "value": 1}"#),
            RejectReason::TimestampOutOfRange
        );
    }
}
