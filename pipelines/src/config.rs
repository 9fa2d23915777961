//! The component registry: every source, transform and sink type, in one
//! explicit, compiler-checked place. Adding a type means adding a variant
//! here and an arm in `compile` and `build`.

use serde::Deserialize;

use tidemark_connectors::blackhole::BlackholeConfig;
use tidemark_connectors::console::ConsoleConfig;
use tidemark_connectors::file::{FileSinkConfig, FileSourceConfig};
use tidemark_connectors::generator::GeneratorConfig;
use tidemark_connectors::kafka::{KafkaSinkConfig, KafkaSourceConfig};
use tidemark_connectors::network::NetworkSourceConfig;
use tidemark_connectors::parquet::ParquetSinkConfig;
use tidemark_connectors::redis::RedisSinkConfig;
use tidemark_connectors::timescaledb::TimescaleSinkConfig;
use tidemark_connectors::websocket::WebsocketSinkConfig;

use crate::transforms::filter::FilterConfig;
use crate::transforms::labels::LabelsConfig;
use crate::transforms::window::WindowConfig;

/// Every source type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Synthetic host and service metrics.
    Generator(GeneratorConfig),
    /// JSON lines from a file or standard input.
    File(FileSourceConfig),
    /// Samples written to the server's Tidemark ingest service (gRPC).
    Grpc(NetworkSourceConfig),
    /// Samples Prometheus remote-writes to the server (`/api/v1/write`).
    RemoteWrite(NetworkSourceConfig),
    /// OTLP metrics sent to the server (gRPC or `/v1/metrics`).
    Otlp(NetworkSourceConfig),
    /// Messages read from Kafka topics.
    Kafka(KafkaSourceConfig),
}

/// Every transform type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransformConfig {
    /// Windowed aggregation.
    Window(WindowConfig),
    /// Keep series matching a selector.
    Filter(FilterConfig),
    /// Rewrite labels.
    Labels(LabelsConfig),
}

/// Every sink type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON lines to a file or standard output.
    File(FileSinkConfig),
    /// Readable lines on standard output.
    Console(ConsoleConfig),
    /// Count and discard.
    Blackhole(BlackholeConfig),
    /// Messages written to a Kafka topic.
    Kafka(KafkaSinkConfig),
    /// Rows upserted into TimescaleDB (or plain PostgreSQL).
    Timescaledb(TimescaleSinkConfig),
    /// Latest values, recent history and pub/sub messages in Redis.
    Redis(RedisSinkConfig),
    /// Parquet files on S3, a local directory or memory.
    Parquet(ParquetSinkConfig),
    /// Live values for subscribers of the server's `/ws`.
    Websocket(WebsocketSinkConfig),
}

/// The three sections of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `sources`.
    Source,
    /// `transforms`.
    Transform,
    /// `sinks`.
    Sink,
}

impl Section {
    /// The YAML key of the section.
    pub fn key(self) -> &'static str {
        match self {
            Section::Source => "sources",
            Section::Transform => "transforms",
            Section::Sink => "sinks",
        }
    }

    /// The word used in messages.
    pub fn word(self) -> &'static str {
        match self {
            Section::Source => "source",
            Section::Transform => "transform",
            Section::Sink => "sink",
        }
    }
}
