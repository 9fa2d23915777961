//! # tidemark-codecs
//!
//! Every wire format Tidemark reads or writes, with one decode shape:
//! bytes and their [`Arrival`] (the clock and the sender's tenant) in,
//! validated samples plus [`Rejects`] counted by a typed
//! [`RejectReason`] out. A bad sample is rejected alone; a payload that
//! cannot be read at all is one `malformed` rejection.
//!
//! - [`json`]: JSON lines, the `file` source's and sink's form;
//! - [`influx`]: InfluxDB line protocol (Telegraf);
//! - [`ingest`]: the Tidemark ingest protobuf (`WriteRequest`);
//! - [`remote_write`]: Prometheus remote-write 1.0 (snappy protobuf);
//! - [`otlp`]: OTLP metrics, mapped as Prometheus maps them;
//! - [`names`]: the one sanitiser of Prometheus names;
//! - [`tenant`]: the one tenant rule.
//!
//! The HTTP and gRPC listeners of `tidemark-server` and the Kafka
//! connector pick a [`Codec`] by name and call [`decode`]; the fuzz
//! targets call the same functions.
//!
//! ```
//! use tidemark_codecs::{Arrival, Codec, Rejects, decode};
//! use tidemark_engine::validate::EdgeCheck;
//!
//! let (mut out, mut rejects) = (Vec::new(), Rejects::default());
//! let payload = b"cpu,host=a usage=0.5 1700000000000000000\n";
//! decode(Codec::Influx, payload, Arrival::at(1_700_000_000_000), &EdgeCheck::default(), &mut out, &mut rejects);
//! assert_eq!(out[0].series.to_string(), "cpu_usage{host=\"a\"}");
//! assert!(rejects.is_empty());
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use tidemark_engine::Sample;
use tidemark_engine::validate::{EdgeCheck, RejectReason};

pub mod fuzzing;
pub mod influx;
pub mod ingest;
pub mod json;
pub mod names;
pub mod otlp;
pub mod remote_write;
pub mod tenant;
mod wire;

/// A wire format, by the name pipelines give it (`format: influx`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// JSON samples, one per line (`{"name", "labels", "timestamp", "value"}`);
    /// a payload may hold several lines.
    #[default]
    Json,
    /// A Tidemark ingest `WriteRequest` (protobuf,
    /// `proto/tidemark/ingest/v1/ingest.proto`).
    Protobuf,
    /// A Prometheus remote-write body: a snappy-compressed `WriteRequest`.
    RemoteWrite,
    /// InfluxDB line protocol (what Telegraf sends): one sample per numeric
    /// field, named `<measurement>_<field>`.
    Influx,
    /// An OTLP `ExportMetricsServiceRequest` (protobuf).
    Otlp,
}

impl Codec {
    /// The name as written in pipelines.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Protobuf => "protobuf",
            Codec::RemoteWrite => "remote_write",
            Codec::Influx => "influx",
            Codec::Otlp => "otlp",
        }
    }

    /// Whether samples can also be written in this format (sinks).
    pub fn encodes(self) -> bool {
        matches!(self, Codec::Json | Codec::Protobuf)
    }
}

/// What a decoder knows of a payload besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    /// When it arrived (ms since the epoch): the clock for time bounds and
    /// the timestamp of samples that carry none (Influx).
    pub now_ms: i64,
    /// The sender's tenant, from its credential: set on every sample as
    /// the `tenant` label, replacing any the sender wrote
    /// ([`tenant::TENANT_LABEL`]).
    pub tenant: Option<&'a str>,
}

impl Arrival<'_> {
    /// Arrived at `now_ms`, from no tenant.
    pub fn at(now_ms: i64) -> Arrival<'static> {
        Arrival {
            now_ms,
            tenant: None,
        }
    }

    /// Arrived now, from `tenant`.
    pub fn now(tenant: Option<&str>) -> Arrival<'_> {
        Arrival {
            now_ms: tidemark_engine::time::now_millis(),
            tenant,
        }
    }
}

/// How many rejections a [`Rejects`] explains one by one.
pub const EXAMPLES: usize = 10;

/// One explained rejection.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The series (or line) in the payload, counted from 0.
    pub index: usize,
    /// Why.
    pub reason: RejectReason,
    /// For the sender.
    pub message: String,
}

/// What a payload's samples lost, counted by reason, with the first
/// [`EXAMPLES`] explained.
#[derive(Clone, Debug, Default)]
pub struct Rejects {
    /// Rejected samples (or lines) by reason.
    pub counts: BTreeMap<RejectReason, u64>,
    /// The first few, explained.
    pub examples: Vec<Rejection>,
}

impl Rejects {
    /// Counts `n` rejections for `reason` of the series or line at `index`;
    /// `message` is asked for only while examples are kept.
    pub fn add(
        &mut self,
        reason: RejectReason,
        n: u64,
        index: usize,
        message: impl FnOnce() -> String,
    ) {
        if n == 0 {
            return;
        }
        *self.counts.entry(reason).or_default() += n;
        if self.examples.len() < EXAMPLES {
            self.examples.push(Rejection {
                index,
                reason,
                message: message(),
            });
        }
    }

    /// Whether anything was rejected.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// How many were rejected.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The first problem as one line (`reason: message`), for logs and
    /// dead-letter headers.
    pub fn first(&self) -> Option<String> {
        self.examples
            .first()
            .map(|e| format!("{}: {}", e.reason, e.message))
    }

    /// The counts as one line: `3 invalid_label_name, 1 malformed`.
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|(r, n)| format!("{n} {}", r.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds another payload's rejections (a stream of messages).
    pub fn merge(&mut self, other: Rejects) {
        for (reason, n) in other.counts {
            *self.counts.entry(reason).or_default() += n;
        }
        let room = EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }
}

/// Decodes `payload` in `codec`, validating every sample with `check` and
/// appending the accepted ones to `out`.
pub fn decode(
    codec: Codec,
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    match codec {
        Codec::Json => json::decode_lines(payload, arrival, check, out, rejects),
        Codec::Influx => influx::decode(payload, arrival, check, out, rejects),
        Codec::Protobuf => ingest::decode(payload, arrival, check, out, rejects),
        Codec::RemoteWrite => remote_write::decode(payload, arrival, check, out, rejects),
        Codec::Otlp => otlp::decode(payload, arrival, check, out, rejects),
    }
}

/// Writes one sample as a payload in `codec` (`json` without the newline,
/// or `protobuf`) to `out`, which the caller clears. A format that only
/// decodes writes JSON; sinks allow only [`Codec::encodes`] formats.
pub fn encode(codec: Codec, sample: &Sample, out: &mut Vec<u8>) {
    match codec {
        Codec::Protobuf => ingest::encode(sample, out),
        _ => {
            // Writing to a Vec cannot fail.
            let _ = json::encode_json(sample, out);
            if out.last() == Some(&b'\n') {
                out.pop();
            }
        }
    }
}

/// The payload as text, or one `malformed` rejection.
fn utf8<'a>(payload: &'a [u8], rejects: &mut Rejects) -> Option<&'a str> {
    let text = std::str::from_utf8(payload).ok();
    if text.is_none() {
        rejects.add(RejectReason::Malformed, 1, 0, || {
            "payload is not UTF-8".into()
        });
    }
    text
}

/// The payload as protobuf message `M` (named `what` in the error), or one
/// `malformed` rejection.
fn message<M: prost::Message + Default>(
    payload: &[u8],
    what: &str,
    rejects: &mut Rejects,
) -> Option<M> {
    M::decode(payload)
        .map_err(|e| {
            rejects.add(RejectReason::Malformed, 1, 0, || {
                format!("invalid protobuf {what}: {e}")
            })
        })
        .ok()
}

/// A [`Codec`] with its edge checks, for a source that decodes on its own
/// (Kafka).
pub struct Decoder {
    /// The format.
    pub codec: Codec,
    /// Label limits, time bounds and the series cache.
    pub check: EdgeCheck,
}

impl Decoder {
    /// Decodes one payload that arrived at `now_ms`.
    pub fn decode(
        &self,
        payload: &[u8],
        now_ms: i64,
        out: &mut Vec<Sample>,
        rejects: &mut Rejects,
    ) {
        decode(
            self.codec,
            payload,
            Arrival::at(now_ms),
            &self.check,
            out,
            rejects,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::Series;

    #[test]
    fn every_encodable_codec_reads_its_own_output_back() {
        let sample = Sample::new(Series::new("up", [("job", "a")]), 1_700_000_000_000, 1.5);
        for codec in [Codec::Json, Codec::Protobuf] {
            assert!(codec.encodes());
            let mut payload = Vec::new();
            encode(codec, &sample, &mut payload);
            let (mut out, mut rejects) = (Vec::new(), Rejects::default());
            Decoder {
                codec,
                check: EdgeCheck::default(),
            }
            .decode(&payload, 1_700_000_000_000, &mut out, &mut rejects);
            assert!(rejects.is_empty(), "{codec:?}: {rejects:?}");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].series, sample.series);
            assert_eq!(
                (out[0].timestamp, out[0].value),
                (sample.timestamp, sample.value)
            );
        }
    }

    #[test]
    fn unreadable_payloads_are_one_malformed_rejection_in_every_codec() {
        for codec in [
            Codec::Json,
            Codec::Protobuf,
            Codec::RemoteWrite,
            Codec::Influx,
            Codec::Otlp,
        ] {
            let (mut out, mut rejects) = (Vec::new(), Rejects::default());
            decode(
                codec,
                b"\xff\xff\xff",
                Arrival::at(0),
                &EdgeCheck::default(),
                &mut out,
                &mut rejects,
            );
            assert!(out.is_empty(), "{codec:?}");
            assert_eq!(rejects.counts[&RejectReason::Malformed], 1, "{codec:?}");
            assert!(rejects.first().is_some());
        }
    }

    #[test]
    fn rejects_keep_a_few_examples_and_merge() {
        let mut a = Rejects::default();
        for i in 0..15 {
            a.add(RejectReason::Malformed, 2, i, || format!("line {i}"));
        }
        a.add(RejectReason::InvalidLabelName, 0, 99, || unreachable!());
        assert_eq!(a.total(), 30);
        assert_eq!(a.examples.len(), EXAMPLES);
        let mut b = Rejects::default();
        b.add(RejectReason::InvalidLabelName, 1, 0, || "x".into());
        b.merge(a);
        assert_eq!(b.summary(), "30 malformed, 1 invalid_label_name");
        assert_eq!(b.examples.len(), EXAMPLES);
        assert_eq!(b.first().unwrap(), "invalid label name: x");
    }
}
