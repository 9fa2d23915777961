//! `type: window`.

use std::sync::Arc;

use serde::Deserialize;

use crate::aggregate::{Aggregate, Needs};
use crate::filter::match_step;
use crate::group::Grouping;
use crate::window::{LatePolicy, Partial, Window, WindowKind, WindowSpec};
use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::selector::Selector;
use tidemark_engine::spec::{
    AnyStream, Port, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;
use tidemark_engine::time::{Millis, millis, parse_duration};
use tidemark_engine::validate::is_label_name;

/// Windowed aggregation.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Only aggregate series matching this PromQL selector; others are
    /// dropped. Default: every series.
    #[serde(default, rename = "match")]
    pub selector: Option<String>,
    /// The window shape: `{tumbling: 1m}`, `{hopping: 5m, every: 1m}` or
    /// `{session: 30s}`.
    pub window: ShapeConfig,
    /// Group by these labels (the metric name is always kept).
    #[serde(default)]
    pub by: Option<Vec<String>>,
    /// Group by every label except these.
    #[serde(default)]
    pub without: Option<Vec<String>>,
    /// What to compute: `count`, `sum`, `min`, `max`, `avg`, `last`,
    /// `stddev`, `rate`, `increase` and quantiles `pNN` (`p50`, `p99.9`).
    pub aggregates: Vec<String>,
    /// How long past its end a window waits for the watermark. Default `0s`.
    #[serde(default = "zero")]
    pub lateness: String,
    /// Late samples: `drop` (counted; the default) or `update` (re-emit the
    /// corrected window).
    #[serde(default)]
    pub late: LateConfig,
    /// With `late: update`, how long after closing a window still accepts
    /// corrections. Default `1h`.
    #[serde(default)]
    pub update_horizon: Option<String>,
    /// Partial windows (begun before the input, or closed by its end):
    /// `emit` (the default), `mark` (label `partial="true"`) or `drop`.
    #[serde(default)]
    pub partial: Partial,
    /// Fold samples on each worker before they are sent to the worker
    /// that owns their group, and send one partial aggregate per group and
    /// window instead: `true`, `false`, or `auto` (the default: in a
    /// cluster of several processes). Applies to tumbling and hopping
    /// windows of `count`, `sum`, `min`, `max`, `avg` and `last` in
    /// pipelines without checkpoints; elsewhere samples are sent as they
    /// are.
    #[serde(default)]
    pub pre_aggregate: Option<PreAggregateConfig>,
}

/// `pre_aggregate` as written: `true`, `false` or `auto`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PreAggregateConfig {
    /// `true` or `false`.
    Flag(bool),
    /// `auto`.
    Word(String),
}

/// When a window pre-aggregates ([`crate::window::combine`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreAggregate {
    /// In a cluster of several processes, where records that change
    /// worker cross the network (in one process, moving a sample to
    /// another worker costs less than folding it twice).
    #[default]
    Auto,
    /// Always, where the window allows it.
    Always,
    /// Never: every sample goes to its group's worker.
    Never,
}

impl PreAggregate {
    /// Whether to pre-aggregate in a pipeline on `processes` processes.
    pub fn applies(self, processes: usize) -> bool {
        match self {
            PreAggregate::Auto => processes > 1,
            PreAggregate::Always => true,
            PreAggregate::Never => false,
        }
    }
}

/// The window shape as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShapeConfig {
    /// Tumbling window length.
    #[serde(default)]
    pub tumbling: Option<String>,
    /// Hopping window length (with `every`).
    #[serde(default)]
    pub hopping: Option<String>,
    /// Hopping window step.
    #[serde(default)]
    pub every: Option<String>,
    /// Session inactivity gap.
    #[serde(default)]
    pub session: Option<String>,
}

/// Late sample policy as written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LateConfig {
    /// Drop and count.
    #[default]
    Drop,
    /// Re-emit corrected windows.
    Update,
}

fn zero() -> String {
    "0s".into()
}

/// A validated window transform.
#[derive(Clone, Debug)]
pub struct WindowPlan {
    /// Optional pre-filter.
    pub selector: Option<Selector>,
    /// The operator spec (`combine` is set when it is built, from
    /// `pre_aggregate` and the processes the pipeline runs on).
    pub spec: WindowSpec,
    /// When it pre-aggregates.
    pub pre_aggregate: PreAggregate,
}

impl WindowConfig {
    /// Checks every field and builds the operator spec.
    pub fn validate(&self) -> Result<WindowPlan, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let duration =
            |errors: &mut Vec<ConfigError>, field: &[&str], text: &str| dur(errors, field, text);
        let w = &self.window;
        let shapes = [
            w.tumbling.is_some(),
            w.hopping.is_some(),
            w.session.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let mut kind = None;
        let mut label = String::new();
        if shapes != 1 {
            errors.push(ConfigError::field(
                "window",
                "give exactly one of tumbling, hopping (with every) or session",
            ));
        } else if let Some(t) = &w.tumbling {
            label = t.clone();
            kind = duration(&mut errors, &["window", "tumbling"], t)
                .map(|size| WindowKind::Tumbling { size });
        } else if let Some(h) = &w.hopping {
            label = h.clone();
            let size = duration(&mut errors, &["window", "hopping"], h);
            let every = match &w.every {
                Some(e) => duration(&mut errors, &["window", "every"], e),
                None => {
                    errors.push(ConfigError {
                        field: vec!["window".into(), "hopping".into()],
                        message: "hopping windows need every".into(),
                    });
                    None
                }
            };
            if let (Some(size), Some(every)) = (size, every) {
                if size % every != 0 {
                    errors.push(ConfigError {
                        field: vec!["window".into(), "every".into()],
                        message: format!(
                            "every ({}) must divide the window length ({h})",
                            w.every.clone().unwrap_or_default()
                        ),
                    });
                } else {
                    kind = Some(WindowKind::Hopping { size, every });
                }
            }
        } else if let Some(s) = &w.session {
            label = format!("session_{s}");
            kind = duration(&mut errors, &["window", "session"], s)
                .map(|gap| WindowKind::Session { gap });
        }
        if w.every.is_some() && w.hopping.is_none() {
            errors.push(ConfigError {
                field: vec!["window".into(), "every".into()],
                message: "every only applies to hopping windows".into(),
            });
        }
        let lateness = duration(&mut errors, &["lateness"], &self.lateness).unwrap_or(0);
        let horizon = self
            .update_horizon
            .as_deref()
            .map(|h| duration(&mut errors, &["update_horizon"], h).unwrap_or(0));
        let late = match self.late {
            LateConfig::Drop => {
                if self.update_horizon.is_some() {
                    errors.push(ConfigError::field(
                        "update_horizon",
                        "update_horizon only applies with late: update",
                    ));
                }
                LatePolicy::Drop
            }
            LateConfig::Update => {
                if matches!(kind, Some(WindowKind::Session { .. })) {
                    errors.push(ConfigError::field(
                        "late",
                        "session windows support only late: drop",
                    ));
                }
                LatePolicy::Update {
                    horizon: horizon.unwrap_or(3_600_000),
                }
            }
        };
        if self.by.is_some() && self.without.is_some() {
            errors.push(ConfigError::field(
                "without",
                "give by or without, not both",
            ));
        }
        for (field, list) in [("by", &self.by), ("without", &self.without)] {
            for (i, name) in list.iter().flatten().enumerate() {
                if !is_label_name(name) || name.starts_with("__") {
                    errors.push(ConfigError {
                        field: vec![field.into(), i.to_string()],
                        message: format!("{name:?} is not a valid label name"),
                    });
                }
            }
        }
        let mut aggregates = Vec::new();
        if self.aggregates.is_empty() {
            errors.push(ConfigError::field(
                "aggregates",
                "give at least one aggregate",
            ));
        }
        for (i, a) in self.aggregates.iter().enumerate() {
            match Aggregate::parse(a) {
                Ok(agg) if aggregates.contains(&agg) => errors.push(ConfigError {
                    field: vec!["aggregates".into(), i.to_string()],
                    message: format!("aggregate {a:?} is listed twice"),
                }),
                Ok(agg) => aggregates.push(agg),
                Err(e) => errors.push(ConfigError {
                    field: vec!["aggregates".into(), i.to_string()],
                    message: e.to_string(),
                }),
            }
        }
        let selector = Selector::parse_match(self.selector.as_deref(), &mut errors);
        let pre_aggregate = match &self.pre_aggregate {
            None => PreAggregate::Auto,
            Some(PreAggregateConfig::Flag(true)) => PreAggregate::Always,
            Some(PreAggregateConfig::Flag(false)) => PreAggregate::Never,
            Some(PreAggregateConfig::Word(w)) if w == "auto" => PreAggregate::Auto,
            Some(PreAggregateConfig::Word(w)) => {
                errors.push(ConfigError::field(
                    "pre_aggregate",
                    format!("{w:?} is not one of true, false or auto"),
                ));
                PreAggregate::Auto
            }
        };
        match (kind, errors.is_empty()) {
            (Some(kind), true) => Ok(WindowPlan {
                selector,
                spec: WindowSpec {
                    kind,
                    label,
                    lateness,
                    late,
                    needs: Needs::of(&aggregates),
                    aggregates: Arc::from(aggregates),
                    grouping: Grouping::new(self.by.clone(), self.without.clone()),
                    partial: self.partial,
                    combine: false,
                },
                pre_aggregate,
            }),
            _ => Err(errors),
        }
    }
}

impl Validate<dyn TransformSpec> for WindowConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|w| Arc::new(w) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for WindowPlan {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::default_output(StreamKind::Samples)]
    }
    fn holdback(&self) -> Time {
        self.spec.holdback()
    }
    fn reach(&self) -> Reach {
        self.spec.reach()
    }
    /// `rate` and `increase` read their input as counters.
    fn needs_raw_input(&self) -> bool {
        self.spec
            .aggregates
            .iter()
            .any(|a| matches!(a, Aggregate::Rate | Aggregate::Increase))
    }
    fn derives_values(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        Vec::new() // nothing outside the process
    }
    /// Open (and recently closed) windows, per group.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    /// Everything but the list of aggregates: an accumulator keeps count,
    /// sum, min, max and last whatever the list, and what else it keeps
    /// (`needs`: for stddev, rate and increase, quantiles) is part of the
    /// identity. So `avg` added to `[count, sum]`, or a second quantile,
    /// keeps the open windows whole; `stddev` added to them cannot.
    fn identity(&self) -> String {
        let s = &self.spec;
        format!(
            "window {:?} {:?} {} {} {:?} {:?} {:?}",
            self.selector, s.kind, s.label, s.lateness, s.late, s.needs, s.grouping
        )
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stream = match_step(input.into_samples(), self.selector.as_ref(), &ctx);
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        let spec = WindowSpec {
            combine: self.pre_aggregate.applies(ctx.processes),
            ..self.spec.clone()
        };
        vec![AnyStream::Samples(stream.window(
            &ctx.name,
            spec,
            stats,
            ctx.checkpoint,
        ))]
    }
}

fn dur(errors: &mut Vec<ConfigError>, field: &[&str], text: &str) -> Option<Millis> {
    let path = || field.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match parse_duration(text) {
        Ok(d) if d.is_zero() && field[0] == "window" => {
            errors.push(ConfigError {
                field: path(),
                message: "must be longer than 0".into(),
            });
            None
        }
        Ok(d) => Some(millis(d)),
        Err(e) => {
            errors.push(ConfigError {
                field: path(),
                message: e.to_string(),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Result<WindowPlan, Vec<ConfigError>> {
        let text = format!(r#"{{"window": {{"tumbling": "1m"}}, "aggregates": ["count"]{extra}}}"#);
        let config: WindowConfig = serde_json::from_str(&text).unwrap();
        config.validate()
    }

    #[test]
    fn pre_aggregate_is_auto_true_or_false() {
        let auto = plan("").unwrap().pre_aggregate;
        assert_eq!(auto, PreAggregate::Auto);
        assert!(!auto.applies(1) && auto.applies(2));
        assert_eq!(
            plan(r#", "pre_aggregate": "auto""#).unwrap().pre_aggregate,
            PreAggregate::Auto
        );
        let always = plan(r#", "pre_aggregate": true"#).unwrap().pre_aggregate;
        assert!(always.applies(1) && always.applies(3));
        let never = plan(r#", "pre_aggregate": false"#).unwrap().pre_aggregate;
        assert!(!never.applies(1) && !never.applies(3));
        let errors = plan(r#", "pre_aggregate": "sometimes""#).unwrap_err();
        assert_eq!(errors[0].field, vec!["pre_aggregate".to_owned()]);
        assert!(
            errors[0].message.contains("true, false or auto"),
            "{errors:?}"
        );
    }
}
