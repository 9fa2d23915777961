//! `type: score`.

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::selector::Selector;
use tidemark_engine::spec::{
    AnyStream, Port, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::{Time, parse_duration};

use super::operator::{ScoreSamples, ScoreSpec};
use super::{Detector, Params};
use crate::filter::match_step;

/// Streaming anomaly scoring, per series.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    /// Only score series matching this PromQL selector; others are
    /// dropped. Default: every series.
    #[serde(default, rename = "match")]
    pub selector: Option<String>,
    /// The detector: `novelty` (the default), `light` (the same with
    /// shorter contexts, a few hundred bytes a series) or `robust`.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Bounds the metric keeps to (a percentage: `{min: 0, max: 100}`):
    /// sets the detector's scale and flags values outside.
    #[serde(default)]
    pub range: Option<RangeConfig>,
    /// Scores at or above this are flagged in `<metric>:anomaly`, in
    /// (0, 1]. Default 0.5.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Recent values `robust` compares with, 8 to 4096. Default 256.
    #[serde(default)]
    pub window: Option<usize>,
    /// Samples a series needs before it is scored (0 until then).
    /// Default 300 for `novelty` and `light`, which must meet a series'
    /// usual values and steps first (a day of 5-minute samples), 32 for
    /// `robust`.
    #[serde(default)]
    pub warmup: Option<u64>,
    /// Also write `<metric>:expected`, `:lower` and `:upper`: the band the
    /// detector expected. Default false.
    #[serde(default)]
    pub explain: bool,
    /// Also write each input sample unchanged. Default false.
    #[serde(default)]
    pub passthrough: bool,
    /// A series with no sample for this long (event time) is forgotten.
    /// Default `1h`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

/// The detectors.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetectorConfig {
    /// Contextual novelty at several resolutions (see
    /// `tidemark_operators::score::novelty`).
    #[default]
    Novelty,
    /// `novelty` with contexts of one value: for millions of series.
    Light,
    /// Distance from the recent median in robust deviations, calibrated
    /// per series.
    Robust,
}

/// `range: {min, max}`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// Smallest value the metric takes.
    pub min: f64,
    /// Largest value the metric takes.
    pub max: f64,
}

/// A validated `score`.
#[derive(Clone, Debug)]
pub struct ScoreTransform {
    selector: Option<Selector>,
    spec: ScoreSpec,
}

impl ScoreConfig {
    /// Checks every field; every problem is reported with its field.
    pub fn validate(&self) -> Result<ScoreTransform, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let selector = Selector::parse_match(self.selector.as_deref(), &mut errors);
        let d = Params::default();
        let threshold = self.threshold.unwrap_or(d.threshold);
        if !(threshold > 0.0 && threshold <= 1.0) {
            errors.push(ConfigError::field(
                "threshold",
                format!("threshold is a score in (0, 1], not {threshold}"),
            ));
        }
        let window = self.window.unwrap_or(d.window);
        if self.window.is_some() && self.detector != DetectorConfig::Robust {
            errors.push(ConfigError::field(
                "window",
                "window applies to detector robust only (novelty and light keep no window of values)",
            ));
        } else if !(8..=4096).contains(&window) {
            errors.push(ConfigError::field(
                "window",
                format!("window is 8 to 4096 values, not {window}"),
            ));
        }
        if let Some(r) = self.range
            && !(r.min.is_finite() && r.max.is_finite() && r.min < r.max)
        {
            errors.push(ConfigError::field(
                "range",
                format!(
                    "range needs finite min < max, not min {} and max {}",
                    r.min, r.max
                ),
            ));
        }
        let idle = match &self.idle_timeout {
            Some(t) => match parse_duration(t) {
                Ok(d) if !d.is_zero() => d.as_millis().min(i64::MAX as u128) as i64,
                Ok(_) => {
                    errors.push(ConfigError::field(
                        "idle_timeout",
                        "idle_timeout must be more than 0",
                    ));
                    0
                }
                Err(e) => {
                    errors.push(ConfigError::field("idle_timeout", e.to_string()));
                    0
                }
            },
            None => 3_600_000,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let detector = match self.detector {
            DetectorConfig::Novelty => Detector::Novelty,
            DetectorConfig::Light => Detector::Light,
            DetectorConfig::Robust => Detector::Robust,
        };
        Ok(ScoreTransform {
            selector,
            spec: ScoreSpec {
                params: Params {
                    detector,
                    explain: self.explain,
                    window,
                    warmup: self.warmup.unwrap_or(match detector {
                        Detector::Robust => super::ROBUST_WARMUP,
                        _ => d.warmup,
                    }),
                    threshold,
                    refractory: d.refractory,
                    range: self.range.map(|r| (r.min, r.max)),
                },
                explain: self.explain,
                passthrough: self.passthrough,
                idle_ms: idle,
            },
        })
    }
}

impl Validate<dyn TransformSpec> for ScoreConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|t| Arc::new(t) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for ScoreTransform {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::default_output(StreamKind::Samples)]
    }
    /// Scores are written at their sample's time once the frontier passes
    /// it: nothing held back past the frontier.
    fn holdback(&self) -> Time {
        0
    }
    /// A score is stamped with its sample's event time.
    fn reach(&self) -> Reach {
        Some(0)
    }
    fn needs_raw_input(&self) -> bool {
        false
    }
    fn derives_values(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        Vec::new() // nothing outside the process
    }
    /// Each series' model and the samples waiting for the frontier.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stream = match_step(input.into_samples(), self.selector.as_ref(), &ctx);
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        vec![AnyStream::Samples(stream.score(
            &ctx.name,
            self.spec.clone(),
            stats,
            ctx.checkpoint,
        ))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ScoreSpec {
        let config: ScoreConfig = serde_json::from_str(json).unwrap();
        config.validate().unwrap().spec
    }

    #[test]
    fn each_detector_has_its_warm_up() {
        let novelty = spec(r#"{}"#);
        assert_eq!(novelty.params.detector, Detector::Novelty);
        assert_eq!(novelty.params.warmup, 300);
        assert_eq!(spec(r#"{"detector": "light"}"#).params.warmup, 300);
        let robust = spec(r#"{"detector": "robust"}"#);
        assert_eq!(
            (robust.params.detector, robust.params.warmup),
            (Detector::Robust, 32)
        );
        assert_eq!(
            spec(r#"{"detector": "robust", "warmup": 5}"#).params.warmup,
            5
        );
    }
}
