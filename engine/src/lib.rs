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
//! - [`ingest`]: the hub between network listeners and pipeline sources;
//! - [`live`]: the hub between `websocket` sinks and their subscribers;
//! - [`stats`]: telemetry counters;
//! - [`codec`]: the JSON-lines sample form;
//! - [`component`]: what sources and sinks are given, and config errors;
//! - [`spec`]: components as objects (the traits every source, transform
//!   and sink implements) and stream kinds.
//!
//! `tidemark-operators` and `tidemark-connectors` depend on this crate;
//! `tidemark-pipelines` ties them together.

pub mod codec;
pub mod component;
pub mod flow;
pub mod ingest;
pub mod live;
pub mod runtime;
pub mod selector;
pub mod series;
pub mod spec;
pub mod stats;
pub mod time;
pub mod validate;
pub mod watermark;

pub use series::{Sample, Series, SeriesId};
pub use time::{Millis, Time};
