//! `type: filter`.

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::spec::{
    AnyStream, Port, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;

use super::Filter;
use tidemark_engine::selector::Selector;

/// Keeps the samples whose series match a selector.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// PromQL series selector, such as `cpu_usage{host=~"web-.*"}`.
    #[serde(rename = "match")]
    pub selector: String,
}

impl FilterConfig {
    /// Parses the selector.
    pub fn validate(&self) -> Result<Selector, Vec<ConfigError>> {
        Selector::parse(&self.selector)
            .map_err(|e| vec![ConfigError::field("match", e.to_string())])
    }
}

/// A validated `filter`: the selector.
#[derive(Clone, Debug)]
pub struct FilterTransform(pub Selector);

impl Validate<dyn TransformSpec> for FilterConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|s| Arc::new(FilterTransform(s)) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for FilterTransform {
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
            .filter_series(&ctx.name, self.0.clone(), stats);
        vec![AnyStream::Samples(out)]
    }
}
