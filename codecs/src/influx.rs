//! InfluxDB line protocol (nanosecond timestamps, Telegraf's default): each
//! numeric or boolean field of a line becomes a sample named
//! `<measurement>_<field>` with the line's tags as labels, names sanitised
//! by [`crate::names`]. String fields are skipped; a line without a
//! timestamp takes the arrival time.

use tidemark_engine::Sample;
use tidemark_engine::validate::{Check, EdgeCheck, RejectReason};

use crate::{Arrival, Rejects, names, tenant};

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
        tags.push((names::label_name(&unescape(kv[0])), unescape(kv[1])));
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

/// Decodes a payload of lines; a bad line is rejected alone, `#` lines
/// are comments.
pub fn decode(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let Some(text) = crate::utf8(payload, rejects) else {
        return;
    };
    let lines = text.lines().map(str::trim).enumerate();
    for (i, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
        let (measurement, tags, fields, timestamp) = match parse_influx_line(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                rejects.add(RejectReason::Malformed, 1, i, || {
                    format!("line {line:?}: {e}")
                });
                continue;
            }
        };
        let now = arrival.now_ms;
        let timestamp = match check.check_timestamp(timestamp.unwrap_or(now), now) {
            Ok(t) => t,
            Err(reason) => {
                rejects.add(reason, fields.len() as u64, i, || format!("line {line:?}"));
                continue;
            }
        };
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let name = names::metric_name(&format!("{measurement}_{field}"));
            let labels = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            match check.check_series(&name, tenant::apply(labels, arrival.tenant)) {
                Ok(series) => out.push(Sample::new(series, timestamp, value)),
                Err(reason) => rejects.add(reason, 1, i, || format!("series {name:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn influx(text: &str) -> (Vec<Sample>, Rejects) {
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decode(
            text.as_bytes(),
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
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
        assert!(rejects.first().unwrap().contains("cpu usage"));
    }
}
