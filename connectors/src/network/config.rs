//! Configuration of the network sources.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::ingest::Protocol;
use tidemark_engine::selector::Selector;
use tidemark_engine::time::parse_duration;

/// `type: grpc`, `type: otlp` or `type: remote_write`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSourceConfig {
    /// Only samples of series matching this PromQL selector. Default: all.
    #[serde(default, rename = "match")]
    pub selector: Option<String>,
    /// The watermark is the largest timestamp received minus this.
    /// Default `0s`.
    #[serde(default = "zero")]
    pub max_out_of_orderness: String,
    /// After this long without samples the source stops holding the
    /// pipeline's watermark back. Default `5s`.
    #[serde(default = "five_seconds")]
    pub idle_timeout: String,
    /// Samples the source may have queued in this process before senders are
    /// told to retry (RESOURCE_EXHAUSTED, HTTP 429). Default 100000.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn zero() -> String {
    "0s".into()
}
fn five_seconds() -> String {
    "5s".into()
}
fn default_queue() -> usize {
    100_000
}

/// A validated network source.
#[derive(Clone, Debug)]
pub struct NetworkSource {
    pub(crate) protocol: Protocol,
    pub(crate) selector: Option<Selector>,
    pub(crate) max_out_of_orderness: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) queue: usize,
}

impl NetworkSourceConfig {
    /// Checks the fields.
    pub fn validate(&self, protocol: Protocol) -> Result<NetworkSource, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let selector = Selector::parse_match(self.selector.as_deref(), &mut errors);
        let ooo = parse_duration(&self.max_out_of_orderness)
            .map_err(|e| errors.push(ConfigError::field("max_out_of_orderness", e.to_string())))
            .unwrap_or_default();
        let idle = parse_duration(&self.idle_timeout)
            .map_err(|e| errors.push(ConfigError::field("idle_timeout", e.to_string())))
            .unwrap_or_default();
        if self.queue == 0 {
            errors.push(ConfigError::field(
                "queue",
                "queue must hold at least 1 sample",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NetworkSource {
            protocol,
            selector,
            max_out_of_orderness: ooo,
            idle_timeout: idle.max(Duration::from_millis(1)),
            queue: self.queue,
        })
    }
}
