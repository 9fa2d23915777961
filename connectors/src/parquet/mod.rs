//! Parquet: the `parquet` sink, an archive for DuckDB and other analytical
//! engines, on S3 (any compatible store), a local directory or memory; and
//! the `parquet` source, which replays such an archive in event time
//! ([`source`], for `tidemark backtest`); and the archive read back by the
//! query API past what the `memory` sinks hold ([`archive`]).
//!
//! Files sit in hive-style partitions
//! `pipeline=<pipeline>/output=<sink>/date=<YYYY-MM-DD>/hour=<HH>/` by each
//! sample's event time, hold sorted, zstd-compressed row groups
//! ([`encode`]), appear only when complete ([`service`]) and have names that
//! a replay reproduces, so it overwrites rather than duplicates ([`sink`]).
//! See `docs/sinks/parquet.md`.

mod archive;
mod config;
mod encode;
mod service;
mod sink;
mod source;

pub use archive::ParquetArchive;
pub use config::{
    Location, ParquetSink, ParquetSinkConfig, ParquetSource, ParquetSourceConfig, TimeBound,
};

// The open epoch is held back (flow control lets sources run past it).
samples_sink!(ParquetSinkConfig => ParquetSink, holdback: ParquetSink::holdback, serves_live: false, touches: ParquetSink::touches);

// A replay ends; its position in checkpoints is an event time per worker
// (`crate::replay`).
samples_source!(ParquetSourceConfig => ParquetSource, finite: |_| true, needs_ingest: false, touches: ParquetSource::touches, positions: |p| Some(p.identity()));
