//! The Tidemark ingest protobuf: `tidemark.ingest.v1.WriteRequest`
//! (`proto/tidemark/ingest/v1/ingest.proto`), sent to the server's gRPC
//! ingest service and read from Kafka with `format: protobuf`.

use prost::Message;

use tidemark_engine::Sample;
use tidemark_engine::validate::{Check, EdgeCheck};

use tidemark_engine::validate::RejectReason;

use crate::wire::{Field, next_field, text};
use crate::{Arrival, Rejects, tenant};

/// Generated protobuf messages (the gRPC service over them is generated
/// in `tidemark-server`).
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tidemark.ingest.v1.rs"));
}

use proto::{Rejection, WriteRequest, WriteResponse};

/// Samples an encoded `WriteRequest` carries, counted without decoding
/// anything, or why the message does not parse: the server charges
/// [`decoded_bytes`] to its budget before it decodes.
pub fn count_points(mut payload: &[u8]) -> Result<usize, String> {
    let mut points = 0;
    while let Some((tag, field)) = next_field(&mut payload, WHAT)? {
        if let (1, Field::Len(mut series)) = (tag, field) {
            while let Some((tag, field)) = next_field(&mut series, WHAT)? {
                points += usize::from(matches!((tag, field), (3, Field::Len(_))));
            }
        }
    }
    Ok(points)
}

/// Memory that decoding a message of `len` bytes with `points` samples
/// holds: the message and the samples built from it ([`decode`] builds
/// nothing else that grows with the message).
pub fn decoded_bytes(len: usize, points: usize) -> usize {
    len + points * size_of::<Sample>()
}

/// Decodes an encoded `WriteRequest` in place, series by series: label
/// strings are borrowed from the payload (no string is built for a series
/// already known), a series with more labels than the limit is rejected
/// without its labels being gathered, and only what the check needs is
/// read. A message that is not a valid `WriteRequest` is rejected whole,
/// as a generated decoder would: nothing of it is kept.
pub fn decode(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    if let Err(message) = try_decode(payload, arrival, check, out, rejects) {
        rejects.add(RejectReason::Malformed, 1, 0, || message);
    }
}

/// [`decode`], but a message that is not a valid `WriteRequest` is the
/// error (why), with nothing of it kept or counted.
pub fn try_decode(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) -> Result<(), String> {
    let start = out.len();
    let mut mine = Rejects::default();
    read(payload, arrival, check, out, &mut mine).inspect_err(|_| out.truncate(start))?;
    rejects.merge(mine);
    Ok(())
}

/// Validates a decoded request (as gRPC hands it over) sample by sample.
pub fn decode_request(
    request: WriteRequest,
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    for (i, series) in request.series.iter().enumerate() {
        accept(
            i,
            &series.name,
            series
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
            series.points.iter().map(|p| (p.timestamp_ms, p.value)),
            arrival,
            check,
            out,
            rejects,
        );
    }
}

/// Validates the `i`th series of a request and takes its points.
#[allow(clippy::too_many_arguments)]
fn accept<'a>(
    i: usize,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    points: impl ExactSizeIterator<Item = (i64, f64)>,
    arrival: Arrival<'a>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let s = match check.check_series(name, tenant::apply(labels, arrival.tenant)) {
        Ok(s) => s,
        Err(reason) => {
            rejects.add(reason, points.len() as u64, i, || {
                format!("{reason} in series {name:?}")
            });
            return;
        }
    };
    for (timestamp_ms, value) in points {
        match check.check_timestamp(timestamp_ms, arrival.now_ms) {
            Ok(ts) => out.push(Sample::new(s.clone(), ts, value)),
            Err(reason) => rejects.add(reason, 1, i, || {
                format!("timestamp {timestamp_ms} in series {s}")
            }),
        }
    }
}

const WHAT: &str = "WriteRequest";

fn wrong_type(message: &str, field: u32) -> String {
    format!("invalid protobuf {WHAT}: field {field} of {message} has the wrong wire type")
}

/// Reads `payload` and takes its series one at a time; proto3 rules: a
/// field sent twice keeps its last value, a missing one is empty or zero,
/// unknown fields are skipped.
fn read<'a>(
    mut payload: &'a [u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) -> Result<(), String> {
    // One series' labels at a time, never more than the limit allows.
    let mut labels: Vec<(&'a str, &'a str)> = Vec::new();
    let mut i = 0;
    while let Some((tag, field)) = next_field(&mut payload, WHAT)? {
        match (tag, field) {
            (1, Field::Len(bytes)) => {
                let (name, points) = read_series(bytes, check.limits.max_labels, &mut labels)?;
                if labels.len() > check.limits.max_labels {
                    // As the check would say it, without gathering them all.
                    let reason = RejectReason::TooManyLabels;
                    rejects.add(reason, points as u64, i, || {
                        format!("{reason} in series {name:?}")
                    });
                } else {
                    accept(
                        i,
                        name,
                        labels.iter().copied(),
                        Points {
                            bytes,
                            left: points,
                        },
                        arrival,
                        check,
                        out,
                        rejects,
                    );
                }
                i += 1;
            }
            (1, _) => return Err(wrong_type("WriteRequest", 1)),
            _ => {}
        }
    }
    Ok(())
}

/// Checks one encoded series whole and reads its name and labels (at
/// most `max_labels + 1` of them gathered) and how many points it has.
fn read_series<'a>(
    mut bytes: &'a [u8],
    max_labels: usize,
    labels: &mut Vec<(&'a str, &'a str)>,
) -> Result<(&'a str, usize), String> {
    labels.clear();
    let (mut name, mut points) = ("", 0);
    while let Some((tag, field)) = next_field(&mut bytes, WHAT)? {
        match (tag, field) {
            (1, Field::Len(b)) => name = text(b, WHAT)?,
            (2, Field::Len(b)) => {
                let label = label(b)?;
                if labels.len() <= max_labels {
                    labels.push(label);
                }
            }
            (3, Field::Len(b)) => {
                point(b)?;
                points += 1;
            }
            (1..=3, _) => return Err(wrong_type("Series", tag)),
            _ => {}
        }
    }
    Ok((name, points))
}

/// The points of a series already checked by [`read_series`], read again
/// as they are taken.
struct Points<'a> {
    bytes: &'a [u8],
    left: usize,
}

impl Iterator for Points<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        while let Ok(Some((tag, field))) = next_field(&mut self.bytes, WHAT) {
            if let (3, Field::Len(b)) = (tag, field) {
                self.left -= 1;
                return point(b).ok();
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Points<'_> {}

fn label(mut bytes: &[u8]) -> Result<(&str, &str), String> {
    let (mut name, mut value) = ("", "");
    while let Some((tag, field)) = next_field(&mut bytes, WHAT)? {
        match (tag, field) {
            (1, Field::Len(b)) => name = text(b, WHAT)?,
            (2, Field::Len(b)) => value = text(b, WHAT)?,
            (1 | 2, _) => return Err(wrong_type("Label", tag)),
            _ => {}
        }
    }
    Ok((name, value))
}

fn point(mut bytes: &[u8]) -> Result<(i64, f64), String> {
    let (mut timestamp, mut value) = (0, 0.0);
    while let Some((tag, field)) = next_field(&mut bytes, WHAT)? {
        match (tag, field) {
            (1, Field::Varint(v)) => timestamp = v as i64,
            (2, Field::Fixed64(bits)) => value = f64::from_bits(bits),
            (1 | 2, _) => return Err(wrong_type("Point", tag)),
            _ => {}
        }
    }
    Ok((timestamp, value))
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
    encode_all(std::slice::from_ref(sample), out);
}

/// Writes samples as one encoded `WriteRequest`, a series of one point
/// each.
pub fn encode_all(samples: &[Sample], out: &mut Vec<u8>) {
    let series = samples
        .iter()
        .map(|sample| proto::Series {
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
        })
        .collect();
    // Encoding into a Vec cannot run out of room.
    let _ = WriteRequest { series }.encode(out);
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

    /// The in-place reader against the generated decoder: random requests
    /// (valid and invalid names and labels, repeats, empty values, bad
    /// timestamps, unknown fields), whole and cut short.
    #[test]
    fn reading_in_place_agrees_with_the_generated_decoder() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let words = ["up", "cpu", "a", "host", "9bad", "tenant", "", "x-y", "é"];
        let check = EdgeCheck::default();
        for round in 0..400 {
            let series = (0..next(5))
                .map(|_| proto::Series {
                    name: words[next(words.len() as u64) as usize].into(),
                    labels: (0..next(4))
                        .map(|_| proto::Label {
                            name: words[next(words.len() as u64) as usize].into(),
                            value: words[next(words.len() as u64) as usize].into(),
                        })
                        .collect(),
                    points: (0..next(4))
                        .map(|_| proto::Point {
                            timestamp_ms: [1_000, -5, 0, i64::MAX][next(4) as usize],
                            value: [1.5, f64::NAN, -0.0, 1e300][next(4) as usize],
                        })
                        .collect(),
                })
                .collect();
            let mut payload = WriteRequest { series }.encode_to_vec();
            if round % 5 == 0 {
                // An unknown field, which both skip.
                payload.extend_from_slice(&[0x28, 0x07]);
            }
            if round % 7 == 0 && !payload.is_empty() {
                payload.truncate(next(payload.len() as u64) as usize);
            }
            let arrival = Arrival {
                now_ms: 10_000,
                tenant: (round % 3 == 0).then_some("acme"),
            };
            let (mut got, mut got_rejects) = (Vec::new(), Rejects::default());
            decode(&payload, arrival, &check, &mut got, &mut got_rejects);
            let (mut want, mut want_rejects) = (Vec::new(), Rejects::default());
            match WriteRequest::decode(payload.as_slice()) {
                Ok(r) => decode_request(r, arrival, &check, &mut want, &mut want_rejects),
                Err(_) => want_rejects.add(RejectReason::Malformed, 1, 0, String::new),
            }
            assert_eq!(got.len(), want.len(), "round {round}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.series, w.series, "round {round}");
                assert_eq!(g.timestamp, w.timestamp, "round {round}");
                assert_eq!(g.value.to_bits(), w.value.to_bits(), "round {round}");
            }
            assert_eq!(got_rejects.counts, want_rejects.counts, "round {round}");
            if want_rejects.counts.contains_key(&RejectReason::Malformed) {
                continue;
            }
            assert_eq!(got_rejects.examples, want_rejects.examples, "round {round}");
        }
    }

    #[test]
    fn a_message_that_is_not_a_write_request_is_rejected_whole() {
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        let arrival = Arrival {
            now_ms: 0,
            tenant: None,
        };
        // Field 1 as a varint where a Series message belongs.
        decode(
            &[0x08, 0x01],
            arrival,
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert!(out.is_empty());
        assert_eq!(rejects.counts[&RejectReason::Malformed], 1);
        assert!(rejects.first().unwrap().contains("wrong wire type"));
        // A string that is not UTF-8.
        let mut rejects = Rejects::default();
        decode(
            &[0x0a, 0x03, 0x0a, 0x01, 0xff],
            arrival,
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert!(
            rejects.first().unwrap().contains("not UTF-8"),
            "{rejects:?}"
        );
    }

    /// Points are counted without decoding; a series with more labels
    /// than the limit is rejected whole, however many it has.
    #[test]
    fn points_are_counted_before_decoding_and_label_floods_are_rejected() {
        let point = |timestamp_ms| proto::Point {
            timestamp_ms,
            value: 1.0,
        };
        let label = |i: usize| proto::Label {
            name: format!("l{i}"),
            value: "v".into(),
        };
        let request = WriteRequest {
            series: vec![
                proto::Series {
                    name: "flood".into(),
                    labels: (0..10_000).map(label).collect(),
                    points: vec![point(1_700_000_000_000), point(1_700_000_001_000)],
                },
                proto::Series {
                    name: "up".into(),
                    labels: vec![label(0)],
                    points: vec![point(1_700_000_000_000)],
                },
            ],
        };
        let payload = request.encode_to_vec();
        assert_eq!(count_points(&payload), Ok(3));
        assert_eq!(
            decoded_bytes(payload.len(), 3),
            payload.len() + 3 * size_of::<Sample>()
        );
        assert!(count_points(&payload[..payload.len() - 1]).is_err());
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decode(
            &payload,
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(rejects.counts[&RejectReason::TooManyLabels], 2);
        assert_eq!(rejects.examples[0].index, 0);
        // A message that breaks after a good series keeps nothing of it.
        let mut broken = WriteRequest {
            series: request.series[1..].to_vec(),
        }
        .encode_to_vec();
        broken.extend([0x0a, 0x02, 0x0a, 0xff]);
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        assert!(
            try_decode(
                &broken,
                Arrival::at(1_700_000_000_000),
                &EdgeCheck::default(),
                &mut out,
                &mut rejects
            )
            .is_err()
        );
        assert!(out.is_empty() && rejects.is_empty());
    }
}
