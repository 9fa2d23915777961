//! `type: labels`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{Labels, Relabel};
use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::series::METRIC_NAME_LABEL;
use tidemark_engine::spec::{
    AnyStream, Port, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;
use tidemark_engine::validate::{is_label_name, is_metric_name};

/// Rewrites labels, in this order: `keep`, `drop`, `rename`, `set`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    /// Keep only these labels (the metric name always stays).
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    /// Drop these labels.
    #[serde(default)]
    pub drop: Option<Vec<String>>,
    /// Rename labels, `old: new`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Set labels to values, `name: value`; an empty value removes the label,
    /// and `__name__` sets the metric name.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

impl LabelsConfig {
    /// Checks names and builds the rewrite rules.
    pub fn validate(&self) -> Result<Vec<Relabel>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut check = |field: &str, name: &str| {
            if !is_label_name(name) || name.starts_with("__") {
                errors.push(ConfigError::field(
                    field,
                    format!("{name:?} is not a valid label name"),
                ));
            }
        };
        for n in self.keep.iter().flatten() {
            check("keep", n);
        }
        for n in self.drop.iter().flatten() {
            check("drop", n);
        }
        for (from, to) in &self.rename {
            check("rename", from);
            check("rename", to);
        }
        for name in self.set.keys() {
            if name != METRIC_NAME_LABEL {
                check("set", name);
            }
        }
        if let Some(name) = self.set.get(METRIC_NAME_LABEL)
            && !is_metric_name(name)
        {
            errors.push(ConfigError::field(
                "set",
                format!("{name:?} is not a valid metric name"),
            ));
        }
        let mut rules = Vec::new();
        if let Some(k) = &self.keep {
            rules.push(Relabel::Keep(k.clone()));
        }
        if let Some(d) = &self.drop {
            rules.push(Relabel::Drop(d.clone()));
        }
        if !self.rename.is_empty() {
            rules.push(Relabel::Rename(self.rename.clone().into_iter().collect()));
        }
        if !self.set.is_empty() {
            rules.push(Relabel::Set(self.set.clone().into_iter().collect()));
        }
        if rules.is_empty() {
            errors.push(ConfigError {
                field: vec![],
                message: "nothing to do: give keep, drop, rename or set".into(),
            });
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }
}

/// A validated `labels` transform: its rewrite rules, in order.
#[derive(Clone, Debug)]
pub struct LabelsTransform(pub Vec<Relabel>);

impl Validate<dyn TransformSpec> for LabelsConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|r| Arc::new(LabelsTransform(r)) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for LabelsTransform {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::default_output(StreamKind::Samples)]
    }
    fn holdback(&self) -> Time {
        0
    }
    fn reach(&self) -> Reach {
        Some(0)
    }
    fn needs_raw_input(&self) -> bool {
        false
    }
    fn derives_values(&self) -> bool {
        false
    }
    fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        Vec::new() // nothing outside the process
    }
    /// Nothing kept but caches.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Stateless
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        let out = input
            .into_samples()
            .relabel(&ctx.name, self.0.clone(), stats);
        vec![AnyStream::Samples(out)]
    }
}
