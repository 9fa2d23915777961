//! `type: route`: Alertmanager's routing tree, grouping (`group_wait`,
//! `group_interval`, `repeat_interval`) and inhibition over an alert
//! stream, in event time, read from an unchanged `alertmanager.yml`. Its
//! output is notifications, which the `notify` sink delivers to the
//! configuration's receivers.
//!
//! - [`matcher`]: Alertmanager's label matchers;
//! - [`amconfig`]: the route tree and inhibition rules of a configuration
//!   file, checked as Alertmanager checks them;
//! - [`inhibit`]: which alerts are muted at an event time;
//! - [`interval`]: time intervals, in which routes are muted or active;
//! - [`dispatch`]: groups, flushes and deduplication, a plain state
//!   machine;
//! - [`operator`]: the thin timely wrapper;
//! - [`config`]: the transform's configuration.

pub mod amconfig;
pub mod config;
pub mod dispatch;
pub mod inhibit;
pub mod interval;
pub mod matcher;
pub mod operator;

#[cfg(test)]
mod tests;

pub use config::{ConfigField, RouteConfig, RouteTransform};
pub use dispatch::Dispatcher;
