//! The `file` source and sink: samples as JSON lines
//! (`{"name": ..., "labels": {...}, "timestamp": <ms>, "value": <f64>}`),
//! from or to a path, or standard input/output with `path: "-"`.

mod config;
mod sink;
mod source;

pub use config::{FileSinkConfig, FileSource, FileSourceConfig};
