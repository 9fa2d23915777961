//! The `file` source and sink: samples as JSON lines
//! (`{"name": ..., "labels": {...}, "timestamp": <ms>, "value": <f64>}`),
//! from or to a path, or standard input/output with `path: "-"`.

mod config;
mod sink;
mod source;

pub use config::{FileSinkConfig, FileSource, FileSourceConfig};

samples_sink!(FileSinkConfig => self, holdback: |_| 0, serves_live: false, touches: FileSinkConfig::touches);

samples_source!(FileSourceConfig => FileSource, finite: |_| true, needs_ingest: false, touches: FileSource::touches);
