//! `type: correlate`: alerts grouped into incidents, incrementally, on
//! differential dataflow.
//!
//! An alert *episode* is a run of firing `ALERTS` samples of one series
//! ([`episodes`]). Two episodes whose starts are at most `window` apart are
//! *tied* when the weights of the rules they meet reach the threshold
//! ([`model`]): a common cause in the topology within `hops`, equal `by`
//! labels, and a bonus for starts close together. Incidents are the
//! connected groups of tied episodes, kept by differential dataflow as
//! alerts start and retire ([`operator`]); the [`keeper`] gives them stable
//! ids and explanations. [`model::reference_partition`] computes the same
//! incidents from scratch; the tests hold the operator to it.

pub mod config;
pub mod episodes;
pub mod keeper;
pub mod model;
pub mod operator;
#[cfg(test)]
mod tests;

pub use config::{CorrelateConfig, CorrelateTransform};
