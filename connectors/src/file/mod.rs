//! The `file` source and sink: samples as JSON lines
//! (`{"name": ..., "labels": {...}, "timestamp": <ms>, "value": <f64>}`),
//! from or to a path, or standard input/output with `path: "-"`.

use std::sync::Arc;

use tidemark_engine::component::{ConfigError, SinkContext, SourceContext};
use tidemark_engine::runtime::{PipelineScope, ProgressStream};
use tidemark_engine::spec::{AnyStream, SinkSpec, SourceSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

mod config;
mod sink;
mod source;

pub use config::{FileSinkConfig, FileSource, FileSourceConfig};

impl Validate<dyn SinkSpec> for FileSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate()?;
        Ok(Arc::new(self.clone()))
    }
}

impl SinkSpec for FileSinkConfig {
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
        let worker = ctx.worker;
        self.build(input.into_samples(), ctx, worker)
    }
}

impl Validate<dyn SourceSpec> for FileSourceConfig {
    fn validated(&self) -> Result<Arc<dyn SourceSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SourceSpec>)
    }
}

impl SourceSpec for FileSource {
    fn emits(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn is_finite(&self) -> bool {
        true
    }
    fn needs_ingest(&self) -> bool {
        false
    }
    fn build<'scope>(&self, scope: PipelineScope<'scope>, ctx: SourceContext) -> AnyStream<'scope> {
        AnyStream::Samples(self.build(scope, ctx))
    }
}
