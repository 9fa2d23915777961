//! The Tidemark ingest protobuf: `tidemark.ingest.v1.WriteRequest`
//! (`proto/tidemark/ingest/v1/ingest.proto`), sent to the server's gRPC
//! ingest service and read from Kafka with `format: protobuf`.

use prost::Message;

use tidemark_engine::Sample;
use tidemark_engine::validate::{Check, EdgeCheck};

use crate::{Arrival, Rejects, tenant};

/// Generated protobuf messages (the gRPC service over them is generated
/// in `tidemark-server`).
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tidemark.ingest.v1.rs"));
}

use proto::{Rejection, WriteRequest, WriteResponse};

/// Decodes an encoded `WriteRequest`.
pub fn decode(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    if let Some(request) = crate::message::<WriteRequest>(payload, "WriteRequest", rejects) {
        decode_request(request, arrival, check, out, rejects);
    }
}

/// Validates a decoded request (as gRPC hands it over) sample by sample.
pub fn decode_request(
    request: WriteRequest,
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    for (i, series) in request.series.into_iter().enumerate() {
        let labels = series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()));
        let s = match check.check_series(&series.name, tenant::apply(labels, arrival.tenant)) {
            Ok(s) => s,
            Err(reason) => {
                rejects.add(reason, series.points.len() as u64, i, || {
                    format!("{reason} in series {:?}", series.name)
                });
                continue;
            }
        };
        for p in series.points {
            match check.check_timestamp(p.timestamp_ms, arrival.now_ms) {
                Ok(ts) => out.push(Sample::new(s.clone(), ts, p.value)),
                Err(reason) => rejects.add(reason, 1, i, || {
                    format!("timestamp {} in series {s}", p.timestamp_ms)
                }),
            }
        }
    }
}

/// The reply to a write: what was accepted, and what was rejected and why.
pub fn response(accepted: u64, rejects: &Rejects) -> WriteResponse {
    WriteResponse {
        accepted,
        rejected: rejects.total(),
        rejected_by_reason: rejects
            .counts
            .iter()
            .map(|(r, n)| (r.as_str().to_owned(), *n))
            .collect(),
        examples: rejects
            .examples
            .iter()
            .map(|e| Rejection {
                series_index: e.index as u32,
                reason: e.reason.as_str().to_owned(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

/// Writes one sample as an encoded `WriteRequest`.
pub fn encode(sample: &Sample, out: &mut Vec<u8>) {
    let series = proto::Series {
        name: sample.series.name().to_owned(),
        labels: sample
            .series
            .tags()
            .map(|(name, value)| proto::Label {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect(),
        points: vec![proto::Point {
            timestamp_ms: sample.timestamp,
            value: sample.value,
        }],
    };
    // Encoding into a Vec cannot run out of room.
    let _ = WriteRequest {
        series: vec![series],
    }
    .encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_series_and_timestamps_are_rejected_alone_and_explained() {
        let label = |name: &str, value: &str| proto::Label {
            name: name.into(),
            value: value.into(),
        };
        let point = |timestamp_ms| proto::Point {
            timestamp_ms,
            value: 1.0,
        };
        let request = WriteRequest {
            series: vec![
                proto::Series {
                    name: "up".into(),
                    labels: vec![label("tenant", "forged")],
                    points: vec![point(1_000), point(-5)],
                },
                proto::Series {
                    name: "up".into(),
                    labels: vec![label("bad-label", "x")],
                    points: vec![point(1_000), point(2_000)],
                },
            ],
        };
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        let arrival = Arrival {
            now_ms: 10_000,
            tenant: Some("acme"),
        };
        decode_request(
            request,
            arrival,
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].series.to_string(), "up{tenant=\"acme\"}");
        let reply = response(out.len() as u64, &rejects);
        assert_eq!((reply.accepted, reply.rejected), (1, 3));
        assert_eq!(reply.rejected_by_reason["invalid_label_name"], 2);
        assert_eq!(reply.rejected_by_reason["timestamp_out_of_range"], 1);
        assert_eq!(reply.examples[0].series_index, 0);
        assert_eq!(reply.examples[1].series_index, 1);
    }
}
