//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz, libFuzzer):
//! every decoder of bytes a sender controls. Each takes arbitrary bytes and
//! must return without panicking, however malformed they are; each also
//! checks what it can of the result: every accepted sample has a valid
//! series, the sender's tenant and an allowed timestamp, and nothing is
//! lost uncounted.
//!
//! The same functions run in `cargo test` over seed inputs and
//! [`mutations`] of them (see the tests below), so the targets keep
//! compiling and the cheap cases are covered without a nightly toolchain.
//! How to run the fuzzers: `docs/testing.md`.

use tidemark_engine::Sample;
use tidemark_engine::validate::{EdgeCheck, Limits, is_label_name, is_metric_name};

use crate::json::{decode_json, encode_json};
use crate::{Arrival, Codec, Rejects, decode};

fn check(samples: &[Sample], tenant: Option<&str>) {
    for s in samples {
        assert!(is_metric_name(s.series.name()), "{}", s.series);
        assert!(
            s.series
                .tags()
                .all(|(n, v)| is_label_name(n) && !n.starts_with("__") && !v.is_empty()),
            "{}",
            s.series
        );
        assert!(s.timestamp >= 0);
        if tenant.is_some() {
            assert_eq!(s.series.get(crate::tenant::TENANT_LABEL), tenant);
        }
    }
}

/// Decodes `data` in `codec` as tenant `fuzz` and checks the result.
pub fn codec(codec: Codec, data: &[u8]) {
    let (mut out, mut rejects) = (Vec::new(), Rejects::default());
    let arrival = Arrival {
        now_ms: 1_700_000_000_000,
        tenant: Some("fuzz"),
    };
    decode(
        codec,
        data,
        arrival,
        &EdgeCheck::default(),
        &mut out,
        &mut rejects,
    );
    check(&out, arrival.tenant);
    assert!(rejects.examples.len() <= crate::EXAMPLES);
    assert_eq!(rejects.is_empty(), rejects.examples.is_empty());
}

/// A Prometheus remote-write body (snappy block + protobuf).
pub fn remote_write(data: &[u8]) {
    codec(Codec::RemoteWrite, data);
}

/// An OTLP `ExportMetricsServiceRequest` (protobuf).
pub fn otlp(data: &[u8]) {
    codec(Codec::Otlp, data);
}

/// A Tidemark ingest `WriteRequest` (protobuf): every point is accepted or
/// counted.
pub fn ingest(data: &[u8]) {
    use prost::Message;
    codec(Codec::Protobuf, data);
    if let Ok(request) = crate::ingest::proto::WriteRequest::decode(data) {
        let points: usize = request.series.iter().map(|s| s.points.len()).sum();
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        crate::ingest::decode_request(
            request,
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len() as u64 + rejects.total(), points as u64);
    }
}

/// InfluxDB line protocol.
pub fn influx(data: &[u8]) {
    codec(Codec::Influx, data);
}

/// A JSON-lines sample, as the `file` source reads it: what the sink writes
/// reads back as the same sample.
pub fn json_line(data: &[u8]) {
    codec(Codec::Json, data);
    if let Ok(line) = std::str::from_utf8(data)
        && let Ok(sample) = decode_json(line, &Limits::default())
    {
        check(std::slice::from_ref(&sample), None);
        let mut out = Vec::new();
        encode_json(&sample, &mut out).unwrap();
        let again = decode_json(std::str::from_utf8(&out).unwrap(), &Limits::default()).unwrap();
        assert_eq!(again.series, sample.series);
        assert_eq!(again.timestamp, sample.timestamp);
        assert!(
            again.value.total_cmp(&sample.value).is_eq()
                || (again.value.is_nan() && sample.value.is_nan())
        );
    }
}

/// `count` deterministic byte-level mutations of `seed` (flips, cuts,
/// insertions, repeats), for tests that run the fuzz entry points.
pub fn mutations(seed: &[u8], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    // xorshift64*: small, seeded, and good enough to pick mutations.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |below: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % below.max(1)
    };
    (0..count).map(move |_| {
        let mut data = seed.to_vec();
        for _ in 0..1 + next(7) {
            let len = data.len();
            match next(4) {
                0 if len > 0 => data[next(len)] = next(256) as u8,
                1 if len > 0 => data.truncate(next(len)),
                2 => data.insert(next(len + 1), next(256) as u8),
                _ => {
                    let i = next(len + 1);
                    let j = i + next(len - i + 1);
                    let copy = data[i..j].to_vec();
                    data.extend_from_slice(&copy);
                }
            }
        }
        data
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn survive(seeds: &[Vec<u8>], target: fn(&[u8])) {
        for seed in seeds {
            target(seed);
            mutations(seed, 300).for_each(|data| target(&data));
        }
    }

    fn ingest_seed() -> Vec<u8> {
        use crate::ingest::proto::{Label, Point, Series, WriteRequest};
        let point = |timestamp_ms, value| Point {
            timestamp_ms,
            value,
        };
        WriteRequest {
            series: vec![Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "host".into(),
                    value: "a".into(),
                }],
                points: vec![point(1000, 1.5), point(-1, f64::NAN)],
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn remote_write_survives_mutations() {
        use crate::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
        let label = |name: &str, value: &str| Label {
            name: name.into(),
            value: value.into(),
        };
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "a")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        survive(&[body, b"not snappy".to_vec(), Vec::new()], remote_write);
    }

    #[test]
    fn otlp_survives_mutations() {
        survive(&[ingest_seed(), vec![0x0a, 0x02, 0x12, 0x00]], otlp);
    }

    #[test]
    fn ingest_survives_mutations() {
        survive(&[ingest_seed()], ingest);
    }

    #[test]
    fn influx_survives_mutations() {
        survive(
            &[b"cpu,host=a,dc=eu\\ 1 usage=1.5,up=t,n=\"s\" 1699999999000000000\n".to_vec()],
            influx,
        );
    }

    #[test]
    fn json_lines_survive_mutations() {
        survive(
            &[
                br#"{"name":"cpu","labels":{"host":"a"},"timestamp":1000,"value":"+Inf"}"#.to_vec(),
                br#"{"name":"m","timestamp":5,"value":0.25}"#.to_vec(),
            ],
            json_line,
        );
    }

    #[test]
    fn mutations_are_deterministic_and_differ() {
        let a: Vec<_> = mutations(b"hello world", 50).collect();
        let b: Vec<_> = mutations(b"hello world", 50).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|m| m.as_slice() != b"hello world").count() > 40);
    }
}
