//! The component registry: every source, transform and sink type, in one
//! explicit, compiler-checked place. A type is one line here, naming its
//! config struct; the config implements
//! [`Validate`](tidemark_engine::spec::Validate) and its validated form
//! answers every question the compiler asks through
//! [`SourceSpec`], [`TransformSpec`] or [`SinkSpec`].

use std::sync::Arc;

use serde::Deserialize;

use tidemark_connectors::alertmanager::AlertmanagerSinkConfig;
use tidemark_connectors::blackhole::BlackholeConfig;
use tidemark_connectors::console::ConsoleConfig;
use tidemark_connectors::file::{FileSinkConfig, FileSourceConfig};
use tidemark_connectors::generator::GeneratorConfig;
use tidemark_connectors::kafka::{KafkaSinkConfig, KafkaSourceConfig};
use tidemark_connectors::memory::MemorySinkConfig;
use tidemark_connectors::network::{GrpcSourceConfig, OtlpSourceConfig, RemoteWriteSourceConfig};
use tidemark_connectors::notify::NotifySinkConfig;
use tidemark_connectors::parquet::{ParquetSinkConfig, ParquetSourceConfig};
use tidemark_connectors::redis::RedisSinkConfig;
use tidemark_connectors::timescaledb::{TimescaleSinkConfig, TimescaleSourceConfig};
use tidemark_connectors::websocket::WebsocketSinkConfig;
use tidemark_engine::component::ConfigError;
use tidemark_engine::spec::{SinkSpec, SourceSpec, TransformSpec, Validate};
use tidemark_operators::alert::config::AlertConfig;
use tidemark_operators::correlate::CorrelateConfig;
use tidemark_operators::filter::FilterConfig;
use tidemark_operators::labels::LabelsConfig;
use tidemark_operators::notify::RouteConfig;
use tidemark_operators::score::config::ScoreConfig;
use tidemark_operators::window::WindowConfig;

use crate::compile::{TypeErrors, typed};
use crate::yaml::Node;

/// Declares a serde-tagged enum of component configs (the `type` field
/// picks the variant) and its `validate`, which hands each variant to its
/// config's [`Validate`]. One line per component type.
macro_rules! registry {
    ($(#[$meta:meta])* $name:ident => $spec:ty {
        $($(#[$vmeta:meta])* $variant:ident($config:ty),)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant($config),)*
        }

        impl $name {
            /// Checks every field, without I/O.
            pub fn validate(&self) -> Result<Arc<$spec>, Vec<ConfigError>> {
                match self {
                    $($name::$variant(config) => Validate::<$spec>::validated(config),)*
                }
            }

            /// Reads a component's config: `type` picks the config struct,
            /// which is then read on its own, so that each error names the
            /// field it is about (serde loses the path inside a tagged
            /// enum), and every field with an error is reported.
            pub fn from_node(
                node: &Node,
                mut value: serde_json::Value,
            ) -> Result<Self, TypeErrors> {
                #[derive(Deserialize)]
                #[serde(rename_all = "snake_case")]
                enum Kind {
                    $($variant,)*
                }
                let Some(kind) = value.as_object_mut().and_then(|m| m.remove("type")) else {
                    return Err(vec![(node.locate(&[], false), "missing field `type`".to_owned())]);
                };
                let kind: Kind = serde_json::from_value(kind).map_err(|e| {
                    let message = e
                        .to_string()
                        .replace("unknown variant", "unknown type")
                        .replace("variant identifier", "type");
                    vec![(node.locate(&["type".to_owned()], false), message)]
                })?;
                match kind {
                    $(Kind::$variant => typed::<$config>(node, value).map($name::$variant),)*
                }
            }
        }
    };
}

registry! {
    /// Every source type.
    SourceConfig => dyn SourceSpec {
        /// Synthetic host and service metrics.
        Generator(GeneratorConfig),
        /// JSON lines from a file or standard input.
        File(FileSourceConfig),
        /// Samples written to the server's Tidemark ingest service (gRPC).
        Grpc(GrpcSourceConfig),
        /// Samples Prometheus remote-writes to the server (`/api/v1/write`).
        RemoteWrite(RemoteWriteSourceConfig),
        /// OTLP metrics sent to the server (gRPC or `/v1/metrics`).
        Otlp(OtlpSourceConfig),
        /// Messages read from Kafka topics.
        Kafka(KafkaSourceConfig),
        /// A `parquet` sink's archive, replayed in event time.
        Parquet(ParquetSourceConfig),
        /// A `timescaledb` sink's tables, replayed in event time.
        Timescaledb(TimescaleSourceConfig),
    }
}

registry! {
    /// Every transform type.
    TransformConfig => dyn TransformSpec {
        /// Windowed aggregation.
        Window(WindowConfig),
        /// Keep series matching a selector.
        Filter(FilterConfig),
        /// Rewrite labels.
        Labels(LabelsConfig),
        /// Streaming anomaly scores per series.
        Score(ScoreConfig),
        /// Prometheus recording and alerting rules in event time.
        Alert(AlertConfig),
        /// Alertmanager's routing, grouping and inhibition of alerts.
        Route(RouteConfig),
        /// Alerts grouped into incidents.
        Correlate(CorrelateConfig),
    }
}

registry! {
    /// Every sink type.
    SinkConfig => dyn SinkSpec {
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
        /// Recent history for the server's Prometheus query API.
        Memory(MemorySinkConfig),
        /// Alerts to Alertmanager's API v2.
        Alertmanager(AlertmanagerSinkConfig),
        /// Notifications to the receivers of an Alertmanager configuration.
        Notify(NotifySinkConfig),
    }
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
