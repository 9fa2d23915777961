//! Prometheus remote-write 1.0: a snappy-compressed (block format)
//! protobuf `prometheus.WriteRequest` (`proto/prometheus/remote.proto`).
//!
//! A body is decoded within limits, so that a small request cannot take a
//! large amount of memory: the snappy header's length is checked before
//! anything is uncompressed ([`MAX_DECOMPRESSED`]); the protobuf is then
//! walked without allocating to count its series and samples
//! ([`MAX_SAMPLES`] per request); and each series is decoded alone, after
//! its labels are counted, so that one with more labels than the limits
//! allow is rejected without being built. What a decoded request holds is
//! [`Body::decoded_bytes`], which the server charges to its budget for
//! decoding before it decodes.

use crate::wire::{self, Field};
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

/// Most samples one request may carry (Prometheus sends at most
/// `max_samples_per_send`, 2 000 by default).
pub const MAX_SAMPLES: usize = 1 << 20;

/// The decompressed length a body's snappy header claims, refused over
/// [`MAX_DECOMPRESSED`] before anything is uncompressed.
pub fn decompressed_len(body: &[u8]) -> Result<usize, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("invalid snappy block: {e}"))?;
    if len > MAX_DECOMPRESSED {
        return Err(format!(
            "decompressed body of {len} bytes is over the limit of {MAX_DECOMPRESSED}"
        ));
    }
    Ok(len)
}

/// An uncompressed `WriteRequest` whose shape has been counted and found
/// within the limits, not yet decoded.
pub struct Body {
    raw: Vec<u8>,
    /// Series in the request.
    pub series: usize,
    /// Samples in the request.
    pub samples: usize,
}

/// The next field of a `WriteRequest` or a part of it.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Option<(u32, Field<'a>)>, String> {
    wire::next_field(buf, "WriteRequest")
}

/// Counts the labels and samples of one encoded `TimeSeries`.
fn count_series(mut series: &[u8]) -> Result<(usize, usize), String> {
    let (mut labels, mut samples) = (0, 0);
    while let Some((tag, field)) = next_field(&mut series)? {
        match (tag, field) {
            (1, Field::Len(_)) => labels += 1,
            (2, Field::Len(_)) => samples += 1,
            _ => {}
        }
    }
    Ok((labels, samples))
}

/// Uncompresses a body and counts its series and samples; the error, for
/// the sender, says which limit a body is over or why it does not parse.
pub fn uncompress(body: &[u8]) -> Result<Body, String> {
    decompressed_len(body)?;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("invalid snappy block: {e}"))?;
    let (mut series, mut samples) = (0, 0);
    let mut rest = raw.as_slice();
    while let Some((tag, field)) = next_field(&mut rest)? {
        if let (1, Field::Len(bytes)) = (tag, field) {
            series += 1;
            samples += count_series(bytes)?.1;
            if samples > MAX_SAMPLES {
                return Err(format!(
                    "more than {MAX_SAMPLES} samples in one request; send them in several"
                ));
            }
        }
    }
    Ok(Body {
        raw,
        series,
        samples,
    })
}

impl Body {
    /// Memory the request takes while it is decoded: the uncompressed body
    /// and the samples built from it.
    pub fn decoded_bytes(&self) -> usize {
        self.raw.len() + self.samples * size_of::<Sample>()
    }

    /// Validates the request series by series: a series with too many
    /// labels, an invalid name or label, or a bad timestamp is rejected
    /// alone (the index in a rejection is the series').
    pub fn decode(
        &self,
        arrival: Arrival<'_>,
        check: &EdgeCheck,
        out: &mut Vec<Sample>,
        rejects: &mut Rejects,
    ) {
        out.reserve(self.samples);
        let mut rest = self.raw.as_slice();
        let mut i = 0;
        // The body parsed when it was counted, so the walk cannot fail here.
        while let Ok(Some((tag, field))) = next_field(&mut rest) {
            let (1, Field::Len(bytes)) = (tag, field) else {
                continue;
            };
            decode_series(bytes, i, arrival, check, out, rejects);
            i += 1;
        }
    }
}

/// Decodes a body; one that does not uncompress or parse, or is over a
/// limit, is one `malformed` rejection.
pub fn decode(
    body: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    match uncompress(body) {
        Ok(body) => body.decode(arrival, check, out, rejects),
        Err(message) => rejects.add(RejectReason::Malformed, 1, 0, || message),
    }
}

/// Validates one encoded series, the `i`th of its request.
fn decode_series(
    bytes: &[u8],
    i: usize,
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let Ok((labels, samples)) = count_series(bytes) else {
        return;
    };
    // The metric name is one label more than the limit counts.
    if labels > check.limits.max_labels + 1 {
        rejects.add(RejectReason::TooManyLabels, samples as u64, i, || {
            format!(
                "{labels} labels in one series, over the limit of {}",
                check.limits.max_labels
            )
        });
        return;
    }
    let ts = match proto::TimeSeries::decode(bytes) {
        Ok(ts) => ts,
        Err(e) => {
            rejects.add(RejectReason::Malformed, samples as u64, i, || {
                format!("invalid protobuf TimeSeries: {e}")
            });
            return;
        }
    };
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
        let Err(error) = uncompress(&body) else {
            panic!("a body over the limit was taken")
        };
        assert!(error.contains("over the limit"), "{error}");
    }

    fn compress(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).unwrap()
    }

    /// A series field (tag 1) wrapping `inner`.
    fn series_field(inner: &[u8]) -> Vec<u8> {
        let mut out = vec![0x0a];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn a_series_of_millions_of_empty_labels_is_rejected_without_being_built() {
        // 8 M empty labels (2 bytes each on the wire, 48 bytes each if
        // decoded): 16 MiB uncompressed, a few hundred KiB compressed.
        let mut labels = [0x0a, 0x00].repeat(8 << 20);
        labels.extend([0x12, 0x00]); // and one sample
        let mut raw = series_field(&labels);
        let good = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![label("__name__", "up")],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
            }],
        };
        raw.extend(good.encode_to_vec());
        let body = compress(&raw);
        let decoded = uncompress(&body).ok().unwrap();
        assert_eq!((decoded.series, decoded.samples), (2, 2));
        assert!(decoded.decoded_bytes() < raw.len() + 128);
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decoded.decode(
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1, "the good series is kept");
        assert_eq!(rejects.counts[&RejectReason::TooManyLabels], 1);
        assert_eq!(rejects.examples[0].index, 0);
        assert!(
            rejects.examples[0].message.contains("8388608 labels"),
            "{}",
            rejects.examples[0].message
        );
    }

    #[test]
    fn too_many_samples_and_truncated_bodies_are_refused_whole() {
        // MAX_SAMPLES + 1 empty samples (field 2, length 0).
        let raw = series_field(&[0x12, 0x00].repeat(MAX_SAMPLES + 1));
        let Err(error) = uncompress(&compress(&raw)) else {
            panic!("too many samples were taken")
        };
        assert!(error.contains("more than 1048576 samples"), "{error}");
        let mut raw = series_field(&[0x12, 0x00, 0x12, 0x00]);
        raw.truncate(raw.len() - 1);
        let Err(error) = uncompress(&compress(&raw)) else {
            panic!("a truncated body was taken")
        };
        assert!(error.contains("runs past the end"), "{error}");
    }
}
