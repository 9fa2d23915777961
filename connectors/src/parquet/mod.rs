//! Parquet: the `parquet` sink, an archive for DuckDB and other analytical
//! engines, on S3 (any compatible store), a local directory or memory.
//!
//! Files sit in hive-style partitions
//! `pipeline=<pipeline>/output=<sink>/date=<YYYY-MM-DD>/hour=<HH>/` by each
//! sample's event time, hold sorted, zstd-compressed row groups
//! ([`encode`]), appear only when complete ([`service`]) and have names that
//! a replay reproduces, so it overwrites rather than duplicates ([`sink`]).
//! See `docs/sinks/parquet.md`.

use std::sync::Arc;

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::runtime::ProgressStream;
use tidemark_engine::spec::{AnyStream, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

mod config;
mod encode;
mod service;
mod sink;

pub use config::{Location, ParquetSink, ParquetSinkConfig};

impl Validate<dyn SinkSpec> for ParquetSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for ParquetSink {
    fn takes(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn holdback(&self) -> Time {
        ParquetSink::holdback(self)
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope> {
        self.build(input.into_samples(), ctx)
    }
}
