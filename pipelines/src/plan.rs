//! A compiled pipeline: validated components in an order that can be built.

use tidemark_connectors::blackhole::BlackholeConfig;
use tidemark_connectors::console::ConsoleConfig;
use tidemark_connectors::file::FileSinkConfig;
use tidemark_connectors::generator::Generator;
use tidemark_engine::selector::Selector;
use tidemark_engine::time::Time;
use tidemark_engine::validate::Limits;
use tidemark_operators::labels::Relabel;

use crate::transforms::window::WindowPlan;

/// A validated source.
#[derive(Clone, Debug)]
pub enum SourcePlan {
    /// `generator`.
    Generator(Generator),
    /// `file`.
    File(tidemark_connectors::file::FileSource),
    /// `grpc` (and later `otlp`, `remote_write`): needs `tidemark serve`.
    Network(tidemark_connectors::network::NetworkSource),
    /// `kafka`.
    Kafka(tidemark_connectors::kafka::KafkaSource),
}

/// A validated transform.
#[derive(Clone, Debug)]
pub enum TransformPlan {
    /// `window`.
    Window(WindowPlan),
    /// `filter`.
    Filter(Selector),
    /// `labels`.
    Labels(Vec<Relabel>),
}

/// A validated sink.
#[derive(Clone, Debug)]
pub enum SinkPlan {
    /// `file`.
    File(FileSinkConfig),
    /// `console`.
    Console(ConsoleConfig),
    /// `blackhole`.
    Blackhole(BlackholeConfig),
    /// `kafka`.
    Kafka(tidemark_connectors::kafka::KafkaSink),
    /// `timescaledb`.
    Timescaledb(tidemark_connectors::timescaledb::TimescaleSink),
    /// `redis`.
    Redis(tidemark_connectors::redis::RedisSink),
    /// `parquet`.
    Parquet(tidemark_connectors::parquet::ParquetSink),
    /// `websocket`.
    Websocket(tidemark_connectors::websocket::WebsocketSink),
}

impl SinkPlan {
    /// How far the sink holds output back before it is durable (flow
    /// control lets sources run this far ahead of it).
    pub fn holdback(&self) -> Time {
        match self {
            SinkPlan::Parquet(p) => p.holdback(),
            _ => 0,
        }
    }
}

/// What lies downstream of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downstream {
    /// The most window lateness on any path to a sink (flow control).
    pub holdback: Time,
    /// How far its records reach in timely time (the largest sum of window
    /// sizes on a path; `None` through a session window). See
    /// `tidemark_engine::component::Reach`.
    pub reach: Option<Time>,
}

impl Default for Downstream {
    /// Nothing: a sink right after the source.
    fn default() -> Self {
        Downstream {
            holdback: 0,
            reach: Some(0),
        }
    }
}

/// A compiled pipeline.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// Edge limits for its sources.
    pub limits: Limits,
    /// Sources with what lies downstream of each.
    pub sources: Vec<(String, SourcePlan, Downstream)>,
    /// Transforms in topological order, with their inputs.
    pub transforms: Vec<(String, TransformPlan, Vec<String>)>,
    /// Sinks with their inputs.
    pub sinks: Vec<(String, SinkPlan, Vec<String>)>,
}

impl Plan {
    /// The sources that only `tidemark serve` can feed.
    pub fn network_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, s, _)| matches!(s, SourcePlan::Network(_)))
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// The names of the `websocket` sinks.
    pub fn websocket_sinks(&self) -> Vec<&str> {
        self.sinks
            .iter()
            .filter(|(_, s, _)| matches!(s, SinkPlan::Websocket(_)))
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// Whether every source is finite, so a run ends on its own.
    pub fn is_finite(&self) -> bool {
        self.sources.iter().all(|(_, s, _)| match s {
            SourcePlan::Generator(g) => g.ticks.is_some(),
            SourcePlan::File(_) => true,
            SourcePlan::Network(_) | SourcePlan::Kafka(_) => false,
        })
    }
}
