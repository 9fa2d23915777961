//! Message payloads: decoding what the source reads, encoding what the sink
//! writes. JSON lines and Influx line protocol are read here; the protobuf
//! formats are decoded by the pipeline crate, which owns their generated
//! code, and handed to the source as a [`Decode`].

use std::collections::BTreeMap;

use tidemark_engine::Sample;
use tidemark_engine::codec::{decode_json_checked, encode_json};
use tidemark_engine::validate::{Check, EdgeCheck, RejectReason};

/// What one message's samples lost, by reason, and the first explanation.
#[derive(Debug, Default)]
pub struct Rejects {
    /// Rejected samples (or lines) by reason.
    pub counts: BTreeMap<RejectReason, u64>,
    /// The first problem, for the dead-letter copy and the log.
    pub first: Option<String>,
}

impl Rejects {
    /// Counts `n` rejections for `reason`.
    pub fn add(&mut self, reason: RejectReason, n: u64, detail: impl FnOnce() -> String) {
        *self.counts.entry(reason).or_default() += n;
        if self.first.is_none() {
            self.first = Some(format!("{reason}: {}", detail()));
        }
    }

    /// Whether anything was rejected.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Decodes one message payload, appending the accepted samples to `out`.
/// A payload that cannot be read at all is one `malformed` rejection.
pub trait Decode: Send + Sync {
    /// Decodes `payload`; `now_ms` is the clock for time bounds.
    fn decode(&self, payload: &[u8], now_ms: i64, out: &mut Vec<Sample>, rejects: &mut Rejects);
}

/// JSON samples, one per line.
pub struct JsonLines(pub EdgeCheck);

impl Decode for JsonLines {
    fn decode(&self, payload: &[u8], now_ms: i64, out: &mut Vec<Sample>, rejects: &mut Rejects) {
        let Ok(text) = std::str::from_utf8(payload) else {
            rejects.add(RejectReason::Malformed, 1, || "payload is not UTF-8".into());
            return;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match decode_json_checked(line, &self.0, now_ms) {
                Ok(sample) => out.push(sample),
                Err(e) => rejects.add(e.reason, 1, || e.to_string()),
            }
        }
    }
}

/// InfluxDB line protocol (nanosecond timestamps, Telegraf's default): each
/// numeric or boolean field of a line becomes a sample named
/// `<measurement>_<field>` with the line's tags as labels; characters that
/// Prometheus names do not allow become `_`. String fields are skipped.
pub struct Influx(pub EdgeCheck);

fn sanitize(name: &str, first_digit_ok: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || c == '_';
        let ok = ok && (first_digit_ok || i > 0 || !c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
    out
}

/// Splits `text` at unescaped `sep` outside double quotes.
fn split_unescaped(text: &str, sep: u8) -> Vec<&str> {
    let bytes = text.as_bytes();
    let (mut parts, mut start, mut quoted, mut i) = (Vec::new(), 0, false, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field_value(text: &str) -> Option<f64> {
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if text.starts_with('"') {
        return None;
    }
    let number = text.strip_suffix(['i', 'u']).unwrap_or(text);
    number.parse().ok()
}

type InfluxLine = (
    String,
    Vec<(String, String)>,
    Vec<(String, Option<f64>)>,
    Option<i64>,
);

fn parse_influx_line(line: &str) -> Result<InfluxLine, String> {
    let parts = split_unescaped(line, b' ');
    let parts: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err("expected `measurement[,tags] fields [timestamp]`".into());
    }
    let head = split_unescaped(parts[0], b',');
    let measurement = unescape(head[0]);
    if measurement.is_empty() {
        return Err("empty measurement".into());
    }
    let mut tags = Vec::new();
    for tag in &head[1..] {
        let kv = split_unescaped(tag, b'=');
        if kv.len() != 2 || kv[0].is_empty() {
            return Err(format!("tag {tag:?} is not key=value"));
        }
        tags.push((sanitize(&unescape(kv[0]), false), unescape(kv[1])));
    }
    let mut fields = Vec::new();
    for field in split_unescaped(parts[1], b',') {
        let kv = split_unescaped(field, b'=');
        if kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty() {
            return Err(format!("field {field:?} is not key=value"));
        }
        let value = field_value(kv[1]);
        if value.is_none() && !kv[1].starts_with('"') {
            return Err(format!(
                "field value {:?} is not a number or boolean",
                kv[1]
            ));
        }
        fields.push((unescape(kv[0]), value));
    }
    let timestamp = match parts.get(2) {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("timestamp {t:?} is not an integer (nanoseconds)"))?
                .div_euclid(1_000_000),
        ),
        None => None,
    };
    Ok((measurement, tags, fields, timestamp))
}

impl Decode for Influx {
    fn decode(&self, payload: &[u8], now_ms: i64, out: &mut Vec<Sample>, rejects: &mut Rejects) {
        let Ok(text) = std::str::from_utf8(payload) else {
            rejects.add(RejectReason::Malformed, 1, || "payload is not UTF-8".into());
            return;
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (measurement, tags, fields, timestamp) = match parse_influx_line(line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    rejects.add(RejectReason::Malformed, 1, || format!("line {line:?}: {e}"));
                    continue;
                }
            };
            let timestamp = match self.0.check_timestamp(timestamp.unwrap_or(now_ms), now_ms) {
                Ok(t) => t,
                Err(reason) => {
                    rejects.add(reason, fields.len() as u64, || format!("line {line:?}"));
                    continue;
                }
            };
            for (field, value) in fields {
                let Some(value) = value else { continue };
                let name = sanitize(&format!("{measurement}_{field}"), false);
                match self
                    .0
                    .check_series(&name, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                {
                    Ok(series) => out.push(Sample::new(series, timestamp, value)),
                    Err(reason) => rejects.add(reason, 1, || format!("series {name:?}")),
                }
            }
        }
    }
}

/// Encodes one sample as a message payload.
pub trait Encode: Send + Sync {
    /// Writes the payload of `sample` to `out` (cleared by the caller).
    fn encode(&self, sample: &Sample, out: &mut Vec<u8>);
}

/// The JSON form of a sample, as the `file` sink writes it, without the
/// newline.
pub struct JsonSample;

impl Encode for JsonSample {
    fn encode(&self, sample: &Sample, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = encode_json(sample, out);
        if out.last() == Some(&b'\n') {
            out.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn influx(text: &str) -> (Vec<Sample>, Rejects) {
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        Influx(EdgeCheck::default()).decode(
            text.as_bytes(),
            1_700_000_000_000,
            &mut out,
            &mut rejects,
        );
        (out, rejects)
    }

    #[test]
    fn influx_lines_become_one_sample_per_field() {
        let (out, rejects) = influx(
            "cpu,host=a,region=eu\\ west usage_user=1.5,usage_idle=97i,up=true,note=\"x y\" 1699999999000000000\n\
             # a comment\n\
             mem.used,host=b value=2u\n",
        );
        assert!(rejects.is_empty(), "{rejects:?}");
        let got: Vec<String> = out
            .iter()
            .map(|s| format!("{} {} {}", s.series, s.timestamp, s.value))
            .collect();
        assert_eq!(
            got,
            [
                "cpu_usage_user{host=\"a\", region=\"eu west\"} 1699999999000 1.5",
                "cpu_usage_idle{host=\"a\", region=\"eu west\"} 1699999999000 97",
                "cpu_up{host=\"a\", region=\"eu west\"} 1699999999000 1",
                "mem_used_value{host=\"b\"} 1700000000000 2",
            ]
        );
    }

    #[test]
    fn influx_bad_lines_are_counted_and_the_rest_is_read() {
        let (out, rejects) = influx(
            "cpu usage\ncpu value=abc\ncpu value=1 notatime\nok value=3 1699999999000000000\n",
        );
        assert_eq!(out.len(), 1);
        assert_eq!(rejects.counts[&RejectReason::Malformed], 3);
        assert!(rejects.first.unwrap().contains("cpu usage"));
    }

    #[test]
    fn json_lines_reject_bad_lines_alone() {
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        let payload = b"{\"name\":\"a\",\"labels\":{},\"timestamp\":1,\"value\":2}\nnot json\n{\"name\":\"a\",\"labels\":{},\"timestamp\":99999999999999,\"value\":2}";
        JsonLines(EdgeCheck::default()).decode(payload, 1_700_000_000_000, &mut out, &mut rejects);
        assert_eq!(out.len(), 1);
        assert_eq!(rejects.counts[&RejectReason::Malformed], 1);
        assert_eq!(rejects.counts[&RejectReason::TimestampTooNew], 1);
        let mut encoded = Vec::new();
        JsonSample.encode(&out[0], &mut encoded);
        assert_eq!(
            encoded,
            br#"{"name":"a","labels":{},"timestamp":1,"value":2.0}"#
        );
    }
}
