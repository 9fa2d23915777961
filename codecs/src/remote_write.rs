//! Prometheus remote-write 1.0: a snappy-compressed (block format)
//! protobuf `prometheus.WriteRequest` (`proto/prometheus/remote.proto`).

use prost::Message;

use tidemark_engine::Sample;
use tidemark_engine::series::METRIC_NAME_LABEL;
use tidemark_engine::validate::{Check, EdgeCheck, RejectReason};

use crate::{Arrival, Rejects, tenant};

/// Generated protobuf messages.
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Largest decompressed body accepted.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Uncompresses and parses a body; the error is for the sender.
pub fn parse(body: &[u8]) -> Result<proto::WriteRequest, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("invalid snappy block: {e}"))?;
    if len > MAX_DECOMPRESSED {
        return Err(format!(
            "decompressed body of {len} bytes is over the limit of {MAX_DECOMPRESSED}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("invalid snappy block: {e}"))?;
    proto::WriteRequest::decode(raw.as_slice())
        .map_err(|e| format!("invalid protobuf WriteRequest: {e}"))
}

/// Decodes a body; one that does not uncompress or parse is one
/// `malformed` rejection.
pub fn decode(
    body: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    match parse(body) {
        Ok(request) => decode_request(request, arrival, check, out, rejects),
        Err(message) => rejects.add(RejectReason::Malformed, 1, 0, || message),
    }
}

/// Validates a parsed request sample by sample.
pub fn decode_request(
    request: proto::WriteRequest,
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    for (i, ts) in request.timeseries.into_iter().enumerate() {
        let name = ts
            .labels
            .iter()
            .find(|l| l.name == METRIC_NAME_LABEL)
            .map_or("", |l| l.value.as_str());
        let labels = ts
            .labels
            .iter()
            .filter(|l| l.name != METRIC_NAME_LABEL)
            .map(|l| (l.name.as_str(), l.value.as_str()));
        match check.check_series(name, tenant::apply(labels, arrival.tenant)) {
            Ok(series) => {
                for s in ts.samples {
                    match check.check_timestamp(s.timestamp, arrival.now_ms) {
                        Ok(t) => out.push(Sample::new(series.clone(), t, s.value)),
                        Err(r) => rejects.add(r, 1, i, || {
                            format!("timestamp {} in series {series}", s.timestamp)
                        }),
                    }
                }
            }
            Err(r) => rejects.add(r, ts.samples.len() as u64, i, || {
                format!("{r} in a series named {name:?}")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn bad_series_are_rejected_alone() {
        let sample = |timestamp| proto::Sample {
            value: 1.0,
            timestamp,
        };
        let request = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    labels: vec![label("__name__", "up"), label("bad-label", "x")],
                    samples: vec![sample(5)],
                },
                proto::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "a")],
                    samples: vec![sample(6), sample(-1)],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decode(
            &body,
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].series.to_string(), "up{job=\"a\"}");
        assert_eq!(rejects.counts[&RejectReason::InvalidLabelName], 1);
        assert_eq!(rejects.counts[&RejectReason::TimestampOutOfRange], 1);
        assert_eq!(rejects.examples[1].index, 1);
    }

    #[test]
    fn bodies_over_the_limit_are_refused_before_uncompressing() {
        // A snappy header claiming more than the limit.
        let mut body = Vec::new();
        let mut n = MAX_DECOMPRESSED as u64 + 1;
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        let error = parse(&body).unwrap_err();
        assert!(error.contains("over the limit"), "{error}");
    }
}
