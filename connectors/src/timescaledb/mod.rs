//! TimescaleDB (and plain PostgreSQL): the `timescaledb` sink.
//!
//! Samples go to a samples table `(time, series_id, value)` keyed by series
//! and time, and each series once to a series table `(series_id, metric,
//! labels jsonb)`. The sink creates and migrates both ([`schema`]): a
//! hypertable with compression and retention policies where TimescaleDB is
//! available, native range partitions otherwise. Writes are upserts of
//! de-duplicated batches (binary `COPY` into a staging table, or one
//! `INSERT ... FROM unnest(...)`), so a replay or a late correction leaves
//! exactly one row per series and time. See `docs/sinks/timescaledb.md`.

use std::sync::Arc;

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::runtime::ProgressStream;
use tidemark_engine::spec::{AnyStream, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

mod config;
mod schema;
mod service;
mod sink;

pub use config::{Extension, Method, TimescaleSink, TimescaleSinkConfig};

impl Validate<dyn SinkSpec> for TimescaleSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for TimescaleSink {
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
        self.build(input.into_samples(), ctx)
    }
}
