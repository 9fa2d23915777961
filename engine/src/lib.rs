//! # tidemark-engine
//!
//! The core every other Tidemark crate builds on:
//!
//! - [`series`]: the Prometheus data model (series, samples, stable ids);
//! - [`validate`]: edge validation with counted reject reasons;
//! - [`selector`]: PromQL series selectors;
//! - [`time`] and [`watermark`]: event time and source watermarks;
//! - [`runtime`]: the timely-dataflow runtime (workers, cluster mode,
//!   exchange), wrapped so that timely's API touches only this crate;
//! - [`flow`]: probe-based flow control for sources;
//! - [`ingest`]: the hub between network listeners and pipeline sources,
//!   and [`wal`]: its write-ahead log (`tidemark serve --data-dir`);
//! - [`live`]: the hub between `websocket` sinks and their subscribers;
//! - [`memstore`]: recent samples per series, as PromQL reads them; and
//!   [`history`]: the hub between `memory` sinks and the query API;
//! - [`alert`], [`incident`] and [`notify`]: the records of alert,
//!   incident and notification streams; [`silence`]: silences the `route` transform applies;
//! - [`stats`]: telemetry counters;
//! - [`component`]: what sources and sinks are given, and config errors;
//! - [`error`]: errors where I/O happens, with whose fault and whether a
//!   retry can help;
//! - [`spec`]: components as objects (the traits every source, transform
//!   and sink implements) and stream kinds.
//!
//! `tidemark-codecs`, `tidemark-operators` and `tidemark-connectors`
//! depend on this crate;
//! `tidemark-pipelines` ties them together; `tidemark-server` and
//! `tidemark-cli` sit on top.

pub mod alert;
pub mod checkpoint;
pub mod component;
mod connect;
pub mod error;
pub mod flow;
pub mod history;
pub mod incident;
pub mod ingest;
pub mod live;
pub mod memstore;
pub mod notify;
pub mod rules;
pub mod runtime;
pub mod selector;
pub mod series;
pub mod silence;
pub mod spec;
pub mod stats;
pub mod time;
pub mod validate;
pub mod wal;
pub mod watermark;
pub mod yaml;

pub use series::{Sample, Series, SeriesId};
pub use time::{Millis, Time};
