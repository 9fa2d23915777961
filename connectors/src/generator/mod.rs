//! The `generator` source: realistic host and service metrics, deterministic
//! for a seed.
//!
//! Series `i` is one of five metrics (`i % 5`) of host `i / 5`:
//!
//! | metric | kind | shape |
//! |---|---|---|
//! | `cpu_usage` | gauge, percent | per-host base, daily seasonality, slow trend, noise |
//! | `memory_usage_bytes` | gauge | base of 2-16 GiB, slow growth, small noise |
//! | `http_requests_total` | counter | per-host rate with daily seasonality; rare resets |
//! | `http_request_duration_seconds` | gauge | log-normal around a per-service latency |
//! | `network_receive_bytes_total` | counter | like requests, larger; rare resets |
//!
//! Labels: `host` (`host-0001`), `region` and `service`. Every value is a
//! pure function of (seed, series, tick) except counters, which accumulate
//! per series in tick order, so the output does not depend on how series
//! are spread over workers.
//!
//! In a checkpointed pipeline each worker records, at every checkpoint,
//! where each of its series is (the next tick, the counter's total) and
//! the run's start; a restore, at any number of workers, goes on from
//! there, with the start of the run that wrote it (`start: now` is not
//! taken again).

mod config;
mod source;
mod values;

pub use config::{Generator, GeneratorConfig};
pub use values::{DayMemo, METRICS, Shape, series_for};

// Finite when `ticks` is set.
samples_source!(GeneratorConfig => Generator, finite: |g| g.ticks.is_some(), needs_ingest: false, touches: |_| Vec::new(), positions: |g| Some(g.identity()));
