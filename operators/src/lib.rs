//! # tidemark-operators
//!
//! Dataflow operators. Each is a plain state machine tested on its own
//! (insert, advance, emit) plus a thin timely wrapper exposed as an extension
//! trait on [`tidemark_engine::runtime::SampleStream`]:
//!
//! - [`window`]: tumbling, hopping and session windows with aggregates;
//! - [`filter`]: PromQL series selectors;
//! - [`labels`]: keep, drop, rename and set labels;
//! - [`score`]: streaming anomaly scoring per series;
//! - [`alert`]: Prometheus recording and alerting rules in event time;
//! - [`correlate`]: alerts grouped into incidents on differential dataflow;
//! - [`notify`]: Alertmanager's routing, grouping and inhibition of alerts;
//! - [`aggregate`] and [`group`]: what windows compute and how they group.

pub mod aggregate;
pub mod alert;
pub mod correlate;
pub mod filter;
pub mod group;
pub mod labels;
pub mod notify;
pub mod score;
pub mod window;
