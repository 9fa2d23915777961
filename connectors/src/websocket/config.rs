//! Configuration of the `websocket` sink.

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::live::SlowPolicy;

/// The `websocket` sink: a pipeline output that dashboards subscribe to at
/// `/ws?pipeline=<pipeline>&output=<sink>&match=<selector>`.
///
/// ```yaml
/// type: websocket
/// inputs: [cpu_1m]
/// queue: 10000
/// slow_client: latest
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebsocketSinkConfig {
    /// Values that may wait for one subscriber before `slow_client`
    /// applies.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What happens to a subscriber whose queue is full: `close` (its
    /// connection is closed with code 1008 and a reason; it may reconnect
    /// and start from a fresh snapshot) or `latest` (the backlog is dropped
    /// and only the latest value of each series is kept until it catches
    /// up; it is told how many values it skipped).
    #[serde(default = "default_slow_client")]
    pub slow_client: String,
}

fn default_queue() -> usize {
    10_000
}
fn default_slow_client() -> String {
    "close".into()
}

/// A validated `websocket` sink.
#[derive(Clone, Debug)]
pub struct WebsocketSink {
    /// Per-subscriber queue.
    pub queue: usize,
    /// Slow subscriber policy.
    pub slow_client: SlowPolicy,
}

impl WebsocketSinkConfig {
    /// Checks the fields.
    pub fn validate(&self) -> Result<WebsocketSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if !(1..=1_000_000).contains(&self.queue) {
            errors.push(ConfigError::field(
                "queue",
                "queue must be between 1 and 1000000",
            ));
        }
        let slow_client = match self.slow_client.as_str() {
            "close" => SlowPolicy::Close,
            "latest" => SlowPolicy::Latest,
            other => {
                errors.push(ConfigError::field(
                    "slow_client",
                    format!("unknown policy {other:?}: use close or latest"),
                ));
                SlowPolicy::Close
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(WebsocketSink {
            queue: self.queue,
            slow_client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_validates() {
        let c: WebsocketSinkConfig =
            serde_json::from_value(serde_json::json!({"queue": 10000, "slow_client": "latest"}))
                .unwrap();
        let v = c.validate().unwrap();
        assert_eq!((v.queue, v.slow_client), (10_000, SlowPolicy::Latest));
    }

    #[test]
    fn every_error_at_once() {
        let c: WebsocketSinkConfig =
            serde_json::from_value(serde_json::json!({"queue": 0, "slow_client": "block"}))
                .unwrap();
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        assert_eq!(fields, ["queue", "slow_client"]);
    }
}
