//! Message formats of the Kafka connectors: the protobuf ones are decoded
//! and encoded here, with the same code the server's gRPC and remote-write
//! receivers use; JSON lines and Influx line protocol live beside the
//! connector. Because the decoders live here, so do the Kafka components'
//! registry entries ([`KafkaSourceEntry`], [`KafkaSinkEntry`]): they hand
//! the connector its decoder or encoder when it is built.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use serde::Deserialize;

use tidemark_connectors::kafka::{
    Decode, Encode, Format, Influx, JsonLines, JsonSample, KafkaSink, KafkaSinkConfig, KafkaSource,
    KafkaSourceConfig, Rejects,
};
use tidemark_engine::Sample;
use tidemark_engine::component::{ConfigError, SinkContext, SourceContext};
use tidemark_engine::runtime::{PipelineScope, ProgressStream};
use tidemark_engine::spec::{AnyStream, SinkSpec, SourceSpec, StreamKind, Validate};
use tidemark_engine::time::Time;
use tidemark_engine::validate::{EdgeCheck, Limits, RejectReason};

use crate::server::{ingest, remote_write};

/// The edge checks of a pipeline's Kafka source: its label limits, and the
/// default time bounds (ten minutes ahead; no age limit, since a topic's
/// backlog is legitimately old).
fn check(limits: &Limits) -> EdgeCheck {
    EdgeCheck {
        limits: limits.clone(),
        ..EdgeCheck::default()
    }
}

struct Protobuf(EdgeCheck);

impl Decode for Protobuf {
    fn decode(&self, payload: &[u8], _now_ms: i64, out: &mut Vec<Sample>, rejects: &mut Rejects) {
        let request = match ingest::proto::WriteRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                rejects.add(RejectReason::Malformed, 1, || {
                    format!("invalid protobuf WriteRequest: {e}")
                });
                return;
            }
        };
        let mut reply = ingest::proto::WriteResponse::default();
        out.extend(ingest::decode(request, &self.0, None, &mut reply));
        for (reason, n) in reply.rejected_by_reason {
            let reason = RejectReason::ALL
                .into_iter()
                .find(|r| r.as_str() == reason)
                .unwrap_or(RejectReason::Malformed);
            let example = reply
                .examples
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            rejects.add(reason, n, || example);
        }
    }
}

struct RemoteWrite(EdgeCheck);

impl Decode for RemoteWrite {
    fn decode(&self, payload: &[u8], _now_ms: i64, out: &mut Vec<Sample>, rejects: &mut Rejects) {
        let mut counts = BTreeMap::new();
        match remote_write::decode(payload, &self.0, None, &mut counts) {
            Ok(samples) => out.extend(samples),
            Err(e) => rejects.add(RejectReason::Malformed, 1, || e),
        }
        for (reason, n) in counts {
            rejects.add(reason, n, || format!("{reason} in a remote-write series"));
        }
    }
}

/// The decoder of a source's `format`.
pub fn decoder(format: Format, limits: &Limits) -> Arc<dyn Decode> {
    let check = check(limits);
    match format {
        Format::Json => Arc::new(JsonLines(check)),
        Format::Influx => Arc::new(Influx(check)),
        Format::Protobuf => Arc::new(Protobuf(check)),
        Format::RemoteWrite => Arc::new(RemoteWrite(check)),
    }
}

struct ProtobufSample;

impl Encode for ProtobufSample {
    fn encode(&self, sample: &Sample, out: &mut Vec<u8>) {
        let series = ingest::proto::Series {
            name: sample.series.name().to_owned(),
            labels: sample
                .series
                .tags()
                .map(|(name, value)| ingest::proto::Label {
                    name: name.to_owned(),
                    value: value.to_owned(),
                })
                .collect(),
            points: vec![ingest::proto::Point {
                timestamp_ms: sample.timestamp,
                value: sample.value,
            }],
        };
        let request = ingest::proto::WriteRequest {
            series: vec![series],
        };
        // Encoding into a Vec cannot run out of room.
        let _ = request.encode(out);
    }
}

/// The encoder of a sink's `format` (the sink's validation allows only
/// `json` and `protobuf`).
pub fn encoder(format: Format) -> Arc<dyn Encode> {
    match format {
        Format::Protobuf => Arc::new(ProtobufSample),
        _ => Arc::new(JsonSample),
    }
}

/// `type: kafka` as a source.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct KafkaSourceEntry(pub KafkaSourceConfig);

/// A validated Kafka source with its pipeline's edge limits.
#[derive(Clone, Debug)]
pub struct KafkaSourceSpec(pub KafkaSource);

impl Validate<dyn SourceSpec> for KafkaSourceEntry {
    fn validated(&self) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
        self.0
            .validate()
            .map(|k| Arc::new(KafkaSourceSpec(k)) as Arc<dyn SourceSpec>)
    }
}

impl SourceSpec for KafkaSourceSpec {
    fn emits(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn is_finite(&self) -> bool {
        false
    }
    fn needs_ingest(&self) -> bool {
        false
    }
    fn build<'scope>(&self, scope: PipelineScope<'scope>, ctx: SourceContext) -> AnyStream<'scope> {
        let decoder = decoder(self.0.format(), &ctx.limits);
        AnyStream::Samples(self.0.build(scope, ctx, decoder))
    }
}

/// `type: kafka` as a sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct KafkaSinkEntry(pub KafkaSinkConfig);

/// A validated Kafka sink.
#[derive(Clone, Debug)]
pub struct KafkaSinkSpec(pub KafkaSink);

impl Validate<dyn SinkSpec> for KafkaSinkEntry {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.0
            .validate()
            .map(|k| Arc::new(KafkaSinkSpec(k)) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for KafkaSinkSpec {
    fn takes(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope> {
        self.0
            .build(input.into_samples(), ctx, encoder(self.0.format()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::Series;

    #[test]
    fn protobuf_samples_read_back() {
        let sample = Sample::new(Series::new("up", [("job", "a")]), 1_700_000_000_000, 1.5);
        let mut payload = Vec::new();
        encoder(Format::Protobuf).encode(&sample, &mut payload);
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decoder(Format::Protobuf, &Limits::default()).decode(
            &payload,
            1_700_000_000_000,
            &mut out,
            &mut rejects,
        );
        assert!(rejects.is_empty());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].series, sample.series);
        assert_eq!(
            (out[0].timestamp, out[0].value),
            (sample.timestamp, sample.value)
        );
        decoder(Format::Protobuf, &Limits::default()).decode(
            b"\xff\xff",
            0,
            &mut out,
            &mut rejects,
        );
        assert_eq!(rejects.counts[&RejectReason::Malformed], 1);
    }

    #[test]
    fn remote_write_payloads_decode() {
        let request = remote_write::proto::WriteRequest {
            timeseries: vec![
                remote_write::proto::TimeSeries {
                    labels: vec![
                        remote_write::proto::Label {
                            name: "__name__".into(),
                            value: "up".into(),
                        },
                        remote_write::proto::Label {
                            name: "bad-label".into(),
                            value: "x".into(),
                        },
                    ],
                    samples: vec![remote_write::proto::Sample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                },
                remote_write::proto::TimeSeries {
                    labels: vec![remote_write::proto::Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    }],
                    samples: vec![remote_write::proto::Sample {
                        value: 2.0,
                        timestamp: 6,
                    }],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decoder(Format::RemoteWrite, &Limits::default()).decode(
            &body,
            1_700_000_000_000,
            &mut out,
            &mut rejects,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(rejects.counts[&RejectReason::InvalidLabelName], 1);
    }
}
