//! # tidemark-bench
//!
//! Tidemark's benchmarks and its load generator, in a crate of their own so
//! that what only they need (hdrhistogram, plotters, a WebSocket client)
//! stays out of the server and the language crates. The `tidemark` binary
//! runs them as `tidemark bench ...` and `tidemark load`; every benchmark
//! prints its figures and rewrites its section of `docs/benchmarks.md`.
//!
//! - [`window`]: engine throughput (generator, window, discard);
//! - [`alert`]: rule evaluation throughput (generator, alert rules, discard);
//! - [`correlate`]: incident correlation quality and speed on generated
//!   scenarios with ground truth;
//! - [`sinks`]: the database and archive sinks against real services;
//! - [`kafka`]: reading and writing a real broker;
//! - [`latency`]: ingest latency under offered load, driving [`loadgen`];
//! - [`websocket`]: live fan-out to many subscribers;
//! - [`query`]: the Prometheus query API's latency and what it costs ingest.

pub mod alert;
pub mod alert_latency;
pub mod anomaly;
pub mod backtest;
pub mod checkpoint;
pub mod cluster;
pub mod correlate;
pub mod kafka;
pub mod latency;
pub mod loadgen;
pub mod query;
pub mod sinks;
pub mod wal;
pub mod websocket;
pub mod window;
pub mod window_loop;

pub use window::{BenchOptions, window, write_section};
