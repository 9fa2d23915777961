//! The `file` source and sink: samples as JSON lines
//! (`{"name": ..., "labels": {...}, "timestamp": <ms>, "value": <f64>}`),
//! from or to a path, or standard input/output with `path: "-"`. The sink
//! also writes alerts, incidents and notifications, one JSON record a line.

mod config;
mod sink;
mod source;

pub use config::{FileSinkConfig, FileSource, FileSourceConfig};

validated!(FileSinkConfig, SinkSpec, |c| {
    c.validate()?;
    Ok(std::sync::Arc::new(c.clone()))
});

impl tidemark_engine::spec::SinkSpec for FileSinkConfig {
    fn takes(&self) -> &'static [tidemark_engine::spec::StreamKind] {
        use tidemark_engine::spec::StreamKind;
        &[
            StreamKind::Samples,
            StreamKind::Alerts,
            StreamKind::Incidents,
            StreamKind::Notifications,
        ]
    }
    fn holdback(&self) -> tidemark_engine::time::Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        FileSinkConfig::touches(self)
    }
    fn build<'scope>(
        &self,
        input: tidemark_engine::spec::AnyStream<'scope>,
        ctx: tidemark_engine::component::SinkContext,
    ) -> tidemark_engine::runtime::ProgressStream<'scope> {
        FileSinkConfig::build(self, input, ctx)
    }
}

samples_source!(FileSourceConfig => FileSource, finite: |_| true, needs_ingest: false, touches: FileSource::touches, positions: FileSource::identity);
