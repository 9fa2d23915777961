//! A compiled pipeline: validated components in an order that can be built.

use std::sync::Arc;

use tidemark_engine::spec::{SinkSpec, SourceSpec, TransformSpec};
use tidemark_engine::time::Time;
use tidemark_engine::validate::Limits;

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
    pub sources: Vec<(String, Arc<dyn SourceSpec>, Downstream)>,
    /// Transforms in topological order, with their inputs (`name` or
    /// `name.port`).
    pub transforms: Vec<(String, Arc<dyn TransformSpec>, Vec<String>)>,
    /// Sinks with their inputs.
    pub sinks: Vec<(String, Arc<dyn SinkSpec>, Vec<String>)>,
}

impl Plan {
    /// The sources that only `tidemark serve` can feed.
    pub fn network_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, s, _)| s.needs_ingest())
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// The names of the sinks that serve live subscribers (`websocket`).
    pub fn websocket_sinks(&self) -> Vec<&str> {
        self.sinks
            .iter()
            .filter(|(_, s, _)| s.serves_live())
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// Whether every source is finite, so a run ends on its own.
    pub fn is_finite(&self) -> bool {
        self.sources.iter().all(|(_, s, _)| s.is_finite())
    }
}
