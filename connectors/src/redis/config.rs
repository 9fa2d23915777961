//! Configuration of the `redis` sink.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::parse_duration;

/// The `redis` sink: the latest value of every series, its recent values,
/// and a pub/sub channel carrying every value written.
///
/// ```yaml
/// type: redis
/// inputs: [cpu_1m]
/// url: redis://127.0.0.1:6379/0
/// history: 60
/// ttl: 1h
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user@]host:port/db` (TLS, `rediss://`, is not supported
    /// yet).
    pub url: String,
    /// Environment variable holding the password (read when the sink
    /// starts).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Start of every key; default `tidemark:<pipeline>`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Recent values kept per series (newest first when read with
    /// `ZREVRANGE`); 0 keeps no history.
    #[serde(default = "default_history")]
    pub history: u32,
    /// Keys of a series expire this long after its last write (`off`:
    /// never).
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// Channel every batch of values is published on (JSON lines);
    /// default `<key_prefix>:<sink name>`, `off` publishes nothing.
    #[serde(default)]
    pub channel: Option<String>,
    /// Most samples per pipelined round trip.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_history() -> u32 {
    100
}
fn default_ttl() -> String {
    "off".into()
}
fn default_batch_size() -> usize {
    1000
}

/// A validated `redis` sink.
#[derive(Clone, Debug)]
pub struct RedisSink {
    pub(crate) url: String,
    pub(crate) password_env: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) history: u32,
    pub(crate) ttl: Option<Duration>,
    pub(crate) channel: Option<String>,
    pub(crate) batch_size: usize,
}

impl RedisSinkConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<RedisSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        match redis::IntoConnectionInfo::into_connection_info(self.url.as_str()) {
            Ok(_) if self.url.starts_with("rediss") => errors.push(ConfigError::field(
                "url",
                "TLS (rediss://) is not supported yet; connect through a local TLS proxy",
            )),
            Ok(_) => {}
            Err(e) => errors.push(ConfigError::field("url", format!("not a Redis URL: {e}"))),
        }
        if self.password_env.as_deref().is_some_and(str::is_empty) {
            errors.push(ConfigError::field("password_env", "password_env is empty"));
        }
        if self
            .key_prefix
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.contains(['{', '}']))
        {
            errors.push(ConfigError::field(
                "key_prefix",
                "key_prefix must be non-empty and hold no { or } (the series id is the key's hash tag)",
            ));
        }
        let ttl = match self.ttl.as_str() {
            "off" => None,
            text => match parse_duration(text) {
                Ok(d) if d.as_millis() == 0 => {
                    errors.push(ConfigError::field(
                        "ttl",
                        "ttl must be longer than 0 (or off)",
                    ));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(ConfigError::field("ttl", e.to_string()));
                    None
                }
            },
        };
        if self.channel.as_deref() == Some("") {
            errors.push(ConfigError::field(
                "channel",
                "channel is empty (use off for none)",
            ));
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            errors.push(ConfigError::field(
                "batch_size",
                "batch_size must be between 1 and 100000",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RedisSink {
            url: self.url.clone(),
            password_env: self.password_env.clone(),
            key_prefix: self.key_prefix.clone(),
            history: self.history,
            ttl,
            channel: self.channel.clone(),
            batch_size: self.batch_size,
        })
    }
}

impl RedisSink {
    /// The server it connects to and the password variable it reads.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        use tidemark_engine::spec::{Resource, ResourceKind};
        let mut out = vec![crate::touches::url("url", &self.url, 6379)];
        if let Some(name) = &self.password_env {
            out.push(Resource::new(
                "password_env",
                ResourceKind::Env(name.clone()),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_validates() {
        let c: RedisSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "redis://127.0.0.1:6379/0",
            "history": 60,
            "ttl": "1h"
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(v.history, 60);
        assert_eq!(v.channel, None);
    }

    #[test]
    fn every_error_at_once() {
        let c: RedisSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "http://x",
            "key_prefix": "a{b}",
            "ttl": "0s",
            "channel": "",
            "batch_size": 0
        }))
        .unwrap();
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        assert_eq!(
            fields,
            ["url", "key_prefix", "ttl", "channel", "batch_size"]
        );
    }
}
