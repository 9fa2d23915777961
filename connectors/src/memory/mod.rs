//! Memory: the `memory` sink, which keeps a pipeline's recent output in
//! the process for the server's Prometheus query API (`/api/v1/query`,
//! `/api/v1/query_range`, remote read). The sink gathers its input on
//! worker 0 and writes it into the process's
//! [`Histories`](tidemark_engine::history::Histories), bounded by
//! `retention`, `max_series` and `max_mb`; the server side lives in
//! `tidemark-server` (`server/src/query.rs`). Best effort: it holds no
//! output back and keeps nothing across a restart. See
//! `docs/sinks/memory.md`.

mod config;
mod sink;

pub use config::{MemorySink, MemorySinkConfig};

// Serves queries; holds nothing back. Its memory is bounded by max_mb,
// which the server's quota bounds in turn.
samples_sink!(MemorySinkConfig => MemorySink, holdback: |_| 0, serves_live: false, touches: |s| vec![tidemark_engine::spec::Resource::new("max_mb", tidemark_engine::spec::ResourceKind::Memory((s.limits.max_bytes >> 20) as u64))]);
