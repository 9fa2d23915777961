//! TimescaleDB (and plain PostgreSQL): the `timescaledb` sink, and the
//! `timescaledb` source that replays what it wrote in event time
//! ([`source`], for `tidemark backtest`).
//!
//! Samples go to a samples table `(time, series_id, value)` keyed by series
//! and time, and each series once to a series table `(series_id, metric,
//! labels jsonb)`. The sink creates and migrates both ([`schema`]): a
//! hypertable with compression and retention policies where TimescaleDB is
//! available, native range partitions otherwise. Writes are upserts of
//! de-duplicated batches (binary `COPY` into a staging table, or one
//! `INSERT ... FROM unnest(...)`), so a replay or a late correction leaves
//! exactly one row per series and time. The query API reads the tables
//! back past what the `memory` sinks hold ([`archive`]). See
//! `docs/sinks/timescaledb.md`.

mod archive;
mod config;
mod schema;
mod service;
mod sink;
mod source;

pub use archive::TimescaleArchive;
pub use config::{
    Extension, Method, TimescaleSink, TimescaleSinkConfig, TimescaleSource, TimescaleSourceConfig,
    location,
};

samples_sink!(TimescaleSinkConfig => TimescaleSink, holdback: |_| 0, serves_live: false, touches: TimescaleSink::touches);

// A replay ends; its position in checkpoints is an event time per worker
// (`crate::replay`).
samples_source!(TimescaleSourceConfig => TimescaleSource, finite: |_| true, needs_ingest: false, touches: TimescaleSource::touches, positions: |t| Some(t.identity()));
