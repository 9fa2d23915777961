//! # tidemark-connectors
//!
//! Sources and sinks, one directory each with the same files: `mod.rs` (what
//! system, wiring), `config.rs` (the config struct, its pure `validate`
//! step), `source.rs` / `sink.rs` (the runtime). The pipeline crate lists
//! them in one place and builds them on every worker.
//!
//! Sources: [`generator`] (synthetic host and service metrics), [`file`]
//! (JSON lines) and [`network`] (`grpc`, `otlp`, `remote_write`: what the
//! server's listeners receive). Sinks: [`file`], [`console`], [`blackhole`], [`kafka`],
//! [`timescaledb`] and [`redis`] (these two share the batching writer in
//! `batch.rs`), [`parquet`], [`websocket`] and [`memory`] (recent history for the
//! server's query API); for alerts and
//! notifications, [`alertmanager`] and [`notify`] (these two share the
//! delivery thread in `deliver.rs`).

#[macro_use]
mod spec;
mod progress;
mod replay;
mod touches;

pub mod alertmanager;
mod batch;
pub mod blackhole;
pub mod console;
mod deliver;
pub mod file;
mod gather;
pub mod generator;
pub mod kafka;
pub mod memory;
pub mod network;
pub mod notify;
pub mod parquet;
pub mod redis;
pub mod timescaledb;
pub mod websocket;
