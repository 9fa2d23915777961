//! Configuration of the `memory` sink.

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::history::HistoryLimits;
use tidemark_engine::time::{millis, parse_duration};

/// The `memory` sink: recent samples the query API answers from.
///
/// ```yaml
/// type: memory
/// inputs: [cpu_1m]
/// retention: 1h
/// max_series: 100000
/// max_mb: 256
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemorySinkConfig {
    /// Event time kept behind the sink's frontier.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Series held at most; samples of further series are refused and
    /// counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Memory held at most, in MiB; past it the oldest points go first.
    #[serde(default = "default_max_mb")]
    pub max_mb: u64,
}

fn default_retention() -> String {
    "1h".into()
}
fn default_max_series() -> usize {
    100_000
}
fn default_max_mb() -> u64 {
    256
}

/// A validated `memory` sink.
#[derive(Clone, Debug)]
pub struct MemorySink {
    /// What it keeps.
    pub limits: HistoryLimits,
}

impl MemorySinkConfig {
    /// Checks the fields.
    pub fn validate(&self) -> Result<MemorySink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let retention = match parse_duration(&self.retention) {
            Ok(d) if d.as_millis() >= 1000 => millis(d),
            Ok(_) => {
                errors.push(ConfigError::field(
                    "retention",
                    "retention must be at least 1s",
                ));
                0
            }
            Err(e) => {
                errors.push(ConfigError::field("retention", e.to_string()));
                0
            }
        };
        if !(1..=100_000_000).contains(&self.max_series) {
            errors.push(ConfigError::field(
                "max_series",
                "max_series must be between 1 and 100000000",
            ));
        }
        if !(1..=1 << 20).contains(&self.max_mb) {
            errors.push(ConfigError::field(
                "max_mb",
                "max_mb must be between 1 and 1048576 (1 TiB)",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(MemorySink {
            limits: HistoryLimits {
                retention,
                max_series: self.max_series,
                max_bytes: (self.max_mb as usize) << 20,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> MemorySinkConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_and_every_error_at_once() {
        let sink = config(serde_json::json!({})).validate().unwrap();
        assert_eq!(sink.limits.retention, 3_600_000);
        assert_eq!(sink.limits.max_series, 100_000);
        assert_eq!(sink.limits.max_bytes, 256 << 20);
        let errors = config(serde_json::json!({"retention": "10", "max_series": 0, "max_mb": 0}))
            .validate()
            .unwrap_err();
        let fields: Vec<String> = errors.iter().map(|e| e.field.join(".")).collect();
        assert_eq!(fields, ["retention", "max_series", "max_mb"]);
        assert!(errors[0].message.contains("missing unit"), "{errors:?}");
        assert!(
            config(serde_json::json!({"retention": "500ms"}))
                .validate()
                .is_err()
        );
    }
}
