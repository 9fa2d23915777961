//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz, libFuzzer):
//! every decoder of bytes a sender controls. Each takes arbitrary bytes and
//! must return without panicking, however malformed they are; each also
//! checks what it can of the result (every accepted sample has a valid
//! series and an allowed timestamp).
//!
//! The same functions run in `cargo test` over seed inputs and random
//! mutations of them (see the tests below), so the targets keep compiling
//! and the cheap cases are covered without a nightly toolchain. How to run
//! the fuzzers: `docs/testing.md`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prost::Message;

use tidemark_engine::Sample;
use tidemark_engine::validate::{Limits, TimeBounds, is_label_name, is_metric_name};

use crate::server::control::Control;

fn control() -> &'static Control {
    static CONTROL: OnceLock<Arc<Control>> = OnceLock::new();
    CONTROL.get_or_init(|| {
        Control::new(
            0,
            1,
            1,
            Arc::new(|_: &[u8]| {}),
            1 << 20,
            Limits::default(),
            TimeBounds::default(),
        )
    })
}

fn check(samples: &[Sample]) {
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
    }
}

/// A Prometheus remote-write body (snappy block + protobuf).
pub fn remote_write(data: &[u8]) {
    let mut rejected = BTreeMap::new();
    if let Ok(samples) =
        crate::server::remote_write::decode(data, &control().edge, Some("fuzz"), &mut rejected)
    {
        check(&samples);
        assert!(
            samples
                .iter()
                .all(|s| s.series.get("tenant") == Some("fuzz"))
        );
    }
}

/// An OTLP `ExportMetricsServiceRequest` (protobuf).
pub fn otlp(data: &[u8]) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    if let Ok(request) = ExportMetricsServiceRequest::decode(data) {
        let mut rejected = BTreeMap::new();
        let samples = crate::server::otlp::decode(request, &control().edge, None, &mut rejected);
        check(&samples);
    }
}

/// A Tidemark ingest `WriteRequest` (protobuf).
pub fn ingest(data: &[u8]) {
    use crate::server::ingest::proto::{WriteRequest, WriteResponse};
    if let Ok(request) = WriteRequest::decode(data) {
        let points: usize = request.series.iter().map(|s| s.points.len()).sum();
        let mut reply = WriteResponse::default();
        let samples = crate::server::ingest::decode(request, &control().edge, None, &mut reply);
        check(&samples);
        assert_eq!(samples.len() + reply.rejected as usize, points);
    }
}

/// A JSON-lines sample, as the `file` source reads it.
pub fn json_line(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data)
        && let Ok(sample) = tidemark_engine::codec::decode_json(line, &Limits::default())
    {
        check(std::slice::from_ref(&sample));
        // What the sink writes reads back as the same sample.
        let mut out = Vec::new();
        tidemark_engine::codec::encode_json(&sample, &mut out).unwrap();
        let again = tidemark_engine::codec::decode_json(
            std::str::from_utf8(&out).unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(again.series, sample.series);
        assert_eq!(again.timestamp, sample.timestamp);
        assert!(
            again.value.total_cmp(&sample.value).is_eq()
                || (again.value.is_nan() && sample.value.is_nan())
        );
    }
}

/// A pipeline definition (YAML), as `validate` and the API read it.
pub fn pipeline(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(errors) = crate::compile("fuzz.yaml", text)
    {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e.pos.line >= 1 && e.pos.column >= 1, "{e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Seeds and random byte-level mutations of them, deterministically.
    fn mutate(seeds: &[Vec<u8>], target: fn(&[u8])) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for seed in seeds {
            target(seed);
            for _ in 0..300 {
                let mut data = seed.clone();
                for _ in 0..rng.random_range(1..8) {
                    match rng.random_range(0..4) {
                        0 if !data.is_empty() => {
                            let i = rng.random_range(0..data.len());
                            data[i] = rng.random();
                        }
                        1 if !data.is_empty() => {
                            let i = rng.random_range(0..data.len());
                            data.truncate(i);
                        }
                        2 => {
                            let i = rng.random_range(0..=data.len());
                            data.insert(i, rng.random());
                        }
                        _ => {
                            let i = rng.random_range(0..=data.len());
                            let j = rng.random_range(i..=data.len());
                            let copy = data[i..j].to_vec();
                            data.extend_from_slice(&copy);
                        }
                    }
                }
                target(&data);
            }
        }
    }

    fn ingest_seed() -> Vec<u8> {
        use crate::server::ingest::proto::{Label, Point, Series, WriteRequest};
        WriteRequest {
            series: vec![Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "host".into(),
                    value: "a".into(),
                }],
                points: vec![
                    Point {
                        timestamp_ms: 1000,
                        value: 1.5,
                    },
                    Point {
                        timestamp_ms: -1,
                        value: f64::NAN,
                    },
                ],
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn remote_write_survives_mutations() {
        use crate::server::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "job".into(),
                        value: "a".into(),
                    },
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        mutate(&[body, b"not snappy".to_vec(), Vec::new()], remote_write);
    }

    #[test]
    fn otlp_survives_mutations() {
        mutate(&[ingest_seed(), vec![0x0a, 0x02, 0x12, 0x00]], otlp);
    }

    #[test]
    fn ingest_survives_mutations() {
        mutate(&[ingest_seed()], ingest);
    }

    #[test]
    fn json_lines_survive_mutations() {
        mutate(
            &[
                br#"{"name":"cpu","labels":{"host":"a"},"timestamp":1000,"value":"+Inf"}"#.to_vec(),
                br#"{"name":"m","timestamp":5,"value":0.25}"#.to_vec(),
            ],
            json_line,
        );
    }

    #[test]
    fn pipelines_survive_mutations() {
        mutate(
            &[std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/pipelines/quickstart.yaml"
            ))
            .unwrap()],
            pipeline,
        );
    }
}
