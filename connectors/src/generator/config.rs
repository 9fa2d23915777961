//! Configuration of the `generator` source.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::{Millis, millis, parse_duration, parse_rfc3339};

/// `type: generator`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Number of series. Default 1000.
    #[serde(default = "default_series")]
    pub series: u64,
    /// Event-time step between two samples of a series. Default `10s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Event time of the first sample: RFC 3339, or `now` (the default).
    #[serde(default = "default_start")]
    pub start: String,
    /// Samples per series; with neither `samples` nor `duration` the source
    /// runs until the process is stopped.
    #[serde(default)]
    pub samples: Option<u64>,
    /// Event-time span to generate, instead of `samples`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Samples per wall-clock second over all series; 0 (the default) is as
    /// fast as the pipeline takes them.
    #[serde(default)]
    pub rate: f64,
    /// Seed: the same seed gives the same samples. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Fraction of samples (0..1) whose timestamp is moved back by up to
    /// `max_out_of_orderness`: out of order, but on time. Default 0.
    #[serde(default)]
    pub out_of_order: f64,
    /// Fraction of samples (0..1) moved back further than
    /// `max_out_of_orderness` (by up to ten intervals more): late. Default 0.
    #[serde(default)]
    pub late: f64,
    /// The source watermark is the latest generated time minus this.
    /// Default `0s`.
    #[serde(default = "default_ooo")]
    pub max_out_of_orderness: String,
    /// Inject labelled anomalies into the gauge series:
    /// `{probability: 0.2, every: 1000}` gives each block of 1000 samples
    /// of a gauge a 20% chance of one anomaly (spike, level shift, variance
    /// change, trend or stuck value), each marked by a
    /// `tidemark_injected_anomaly` sample. Default: none.
    #[serde(default)]
    pub anomalies: Option<AnomaliesConfig>,
}

/// `anomalies:` of the generator.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesConfig {
    /// Chance, 0 to 1, that a block of a gauge series holds an anomaly.
    pub probability: f64,
    /// Samples per block, at least 4. Default 1000.
    #[serde(default = "default_every")]
    pub every: u64,
}

fn default_every() -> u64 {
    1000
}

fn default_series() -> u64 {
    1000
}
fn default_interval() -> String {
    "10s".into()
}
fn default_start() -> String {
    "now".into()
}
fn default_ooo() -> String {
    "0s".into()
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            series: default_series(),
            interval: default_interval(),
            start: default_start(),
            samples: None,
            duration: None,
            rate: 0.0,
            seed: 0,
            out_of_order: 0.0,
            late: 0.0,
            max_out_of_orderness: default_ooo(),
            anomalies: None,
        }
    }
}

/// A validated generator.
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    /// Number of series.
    pub series: u64,
    /// Interval in milliseconds.
    pub interval: Millis,
    /// First timestamp; `None` means the wall clock when the run starts.
    pub start: Option<Millis>,
    /// Ticks (samples per series); `None` is unbounded.
    pub ticks: Option<u64>,
    /// Samples per second, 0 for unlimited.
    pub rate: f64,
    /// Seed.
    pub seed: u64,
    /// Out-of-order fraction.
    pub out_of_order: f64,
    /// Late fraction.
    pub late: f64,
    /// Watermark delay in milliseconds.
    pub max_out_of_orderness: Millis,
    /// Injected anomalies, if any.
    pub anomalies: Option<super::values::Injection>,
}

impl Generator {
    /// What its positions in checkpoints depend on: every setting that
    /// shapes its samples. `rate` and the number of samples do not: a
    /// restore into a generator that runs faster, or longer, goes on
    /// where the checkpoint left it.
    pub fn identity(&self) -> String {
        format!(
            "{:?}",
            Generator {
                rate: 0.0,
                ticks: None,
                ..self.clone()
            }
        )
    }
}

impl GeneratorConfig {
    /// Checks every field; reports all problems.
    pub fn validate(&self) -> Result<Generator, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut duration = |field: &str, text: &str| -> Duration {
            parse_duration(text)
                .map_err(|e| errors.push(ConfigError::field(field, e.to_string())))
                .unwrap_or_default()
        };
        let interval = millis(duration("interval", &self.interval));
        let ooo = millis(duration("max_out_of_orderness", &self.max_out_of_orderness));
        let span = self
            .duration
            .as_ref()
            .map(|d| millis(duration("duration", d)));
        if self.series == 0 {
            errors.push(ConfigError::field("series", "series must be at least 1"));
        }
        if interval <= 0 && errors.iter().all(|e| e.field != ["interval"]) {
            errors.push(ConfigError::field(
                "interval",
                "interval must be at least 1ms",
            ));
        }
        let start = if self.start == "now" {
            None
        } else {
            match parse_rfc3339(&self.start) {
                Ok(ms) if ms >= 0 => Some(ms),
                Ok(_) => {
                    errors.push(ConfigError::field("start", "start must not be before 1970"));
                    None
                }
                Err(e) => {
                    errors.push(ConfigError::field("start", format!("{e}, or \"now\"")));
                    None
                }
            }
        };
        if self.samples.is_some() && self.duration.is_some() {
            errors.push(ConfigError::field(
                "duration",
                "set samples or duration, not both",
            ));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            errors.push(ConfigError::field(
                "rate",
                "rate must be a number of samples per second, 0 or more",
            ));
        }
        for (field, f) in [("out_of_order", self.out_of_order), ("late", self.late)] {
            if !(0.0..=1.0).contains(&f) {
                errors.push(ConfigError::field(
                    field,
                    format!("{field} is a fraction between 0 and 1, not {f}"),
                ));
            }
        }
        if self.out_of_order + self.late > 1.0 {
            errors.push(ConfigError::field(
                "late",
                "out_of_order plus late must not exceed 1",
            ));
        }
        if let Some(a) = self.anomalies {
            if !(0.0..=1.0).contains(&a.probability) {
                errors.push(ConfigError {
                    field: vec!["anomalies".into(), "probability".into()],
                    message: format!("probability is between 0 and 1, not {}", a.probability),
                });
            }
            if a.every < 4 {
                errors.push(ConfigError {
                    field: vec!["anomalies".into(), "every".into()],
                    message: format!("every is at least 4 samples, not {}", a.every),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ticks = self
            .samples
            .or_else(|| span.map(|s| (s / interval.max(1)) as u64));
        Ok(Generator {
            series: self.series,
            interval,
            start,
            ticks,
            rate: self.rate,
            seed: self.seed,
            out_of_order: self.out_of_order,
            late: self.late,
            max_out_of_orderness: ooo,
            anomalies: self.anomalies.map(|a| super::values::Injection {
                probability: a.probability,
                every: a.every,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses() {
        let c: GeneratorConfig = serde_json::from_str(
            r#"{"series": 1000, "interval": "1s", "seed": 42, "start": "2026-01-01T00:00:00Z", "duration": "1h"}"#,
        )
        .unwrap();
        let g = c.validate().unwrap();
        assert_eq!((g.series, g.interval, g.ticks), (1000, 1000, Some(3600)));
        assert_eq!(g.start, Some(1_767_225_600_000));
    }

    /// Its positions are kept when only its pace or its length changes.
    #[test]
    fn identity_leaves_out_rate_and_length() {
        let base = GeneratorConfig {
            samples: Some(100),
            ..GeneratorConfig::default()
        };
        let identity = |c: GeneratorConfig| c.validate().unwrap().identity();
        let same = [
            GeneratorConfig {
                rate: 500.0,
                ..base.clone()
            },
            GeneratorConfig {
                samples: None,
                duration: Some("1h".into()),
                ..base.clone()
            },
        ];
        for c in same {
            assert_eq!(identity(c.clone()), identity(base.clone()), "{c:?}");
        }
        let other = [
            GeneratorConfig {
                seed: 1,
                ..base.clone()
            },
            GeneratorConfig {
                series: 10,
                ..base.clone()
            },
            GeneratorConfig {
                start: "2026-01-01T00:00:00Z".into(),
                ..base.clone()
            },
        ];
        for c in other {
            assert_ne!(identity(c.clone()), identity(base.clone()), "{c:?}");
        }
    }

    #[test]
    fn reports_every_bad_field() {
        let c = GeneratorConfig {
            series: 0,
            interval: "soon".into(),
            start: "yesterday".into(),
            out_of_order: 2.0,
            rate: -1.0,
            ..GeneratorConfig::default()
        };
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        for f in ["series", "interval", "start", "out_of_order", "rate"] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }
}
