//! Apache Kafka: the `kafka` source and sink (librdkafka through `rdkafka`).
//!
//! The source reads its share of a topic's partitions on every worker of
//! every process (each partition has one owner, chosen by a stable hash),
//! stamps every sample with its partition's watermark, and commits offsets
//! to its consumer group only once every sink has made the output they feed
//! durable; the partition's watermark and the sinks' frontier are stored
//! beside it in a checkpoint topic, so a restart replays exactly what is needed and
//! re-emits only complete windows (see `docs/guarantees.md`). The sink
//! writes samples keyed by series with the idempotent producer and holds
//! each timely time until the broker has acknowledged it.

mod checkpoint;
mod config;
mod progress;
mod service;
mod sink;
mod source;

pub use config::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, Start, Topics};

samples_source!(KafkaSourceConfig => KafkaSource, finite: |_| false, needs_ingest: false, touches: KafkaSource::touches, positions: |k| Some(k.identity()));

samples_sink!(KafkaSinkConfig => KafkaSink, holdback: |_| 0, serves_live: false, touches: KafkaSink::touches);
