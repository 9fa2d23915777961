//! The `grpc`, `otlp` and `remote_write` sources: a pipeline's share of what
//! the server's shared listeners receive (`engine::ingest`). Each selects
//! what it wants with an optional `match` selector; several pipelines may
//! read the same stream. They need `tidemark serve`.

mod config;
mod logged;
mod source;

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, SourceContext};
use tidemark_engine::ingest::Protocol;
use tidemark_engine::runtime::PipelineScope;
use tidemark_engine::spec::{AnyStream, SourceSpec, StreamKind, Validate};

pub use config::{NetworkSource, NetworkSourceConfig};

/// `type: grpc`: samples written to the server's Tidemark ingest service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct GrpcSourceConfig(pub NetworkSourceConfig);

/// `type: remote_write`: samples Prometheus remote-writes to the server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct RemoteWriteSourceConfig(pub NetworkSourceConfig);

/// `type: otlp`: OTLP metrics sent to the server (gRPC or `/v1/metrics`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct OtlpSourceConfig(pub NetworkSourceConfig);

fn validated(
    config: &NetworkSourceConfig,
    protocol: Protocol,
) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
    config
        .validate(protocol)
        .map(|s| Arc::new(s) as Arc<dyn SourceSpec>)
}

impl Validate<dyn SourceSpec> for GrpcSourceConfig {
    fn validated(&self) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
        validated(&self.0, Protocol::Grpc)
    }
}

impl Validate<dyn SourceSpec> for RemoteWriteSourceConfig {
    fn validated(&self) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
        validated(&self.0, Protocol::RemoteWrite)
    }
}

impl Validate<dyn SourceSpec> for OtlpSourceConfig {
    fn validated(&self) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
        validated(&self.0, Protocol::Otlp)
    }
}

impl SourceSpec for NetworkSource {
    fn emits(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn is_finite(&self) -> bool {
        false
    }
    fn needs_ingest(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        vec![tidemark_engine::spec::Resource::new(
            "queue",
            tidemark_engine::spec::ResourceKind::Queue(self.queue),
        )]
    }
    /// Its position in the write-ahead log (`tidemark serve --data-dir`).
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    fn build<'scope>(&self, scope: PipelineScope<'scope>, ctx: SourceContext) -> AnyStream<'scope> {
        AnyStream::Samples(self.build(scope, ctx))
    }
}
