//! `type: filter`.

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
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
