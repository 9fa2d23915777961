//! `type: route`.

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::spec::{
    AnyStream, Port, Resource, ResourceKind, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;

use super::amconfig::{self, Routing};
use super::operator::Route;
use crate::alert::rules::located;

/// Alertmanager's routing, grouping and inhibition over an alert stream,
/// in event time, read from an Alertmanager configuration file.
///
/// ```yaml
/// type: route
/// inputs: [rules.alerts]
/// config: alertmanager.yml
/// external_url: http://tidemark.example:8080
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// An Alertmanager configuration file (path relative to the working
    /// directory), or the same structure inline (`{route: ..., receivers:
    /// [...]}`). Its `route` and `inhibit_rules` are used here; its
    /// `receivers` by the `notify` sink.
    pub config: ConfigField,
    /// `externalURL` of every notification: where links back go (the
    /// dashboard). Default empty.
    #[serde(default)]
    pub external_url: String,
}

/// `config:` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ConfigField {
    /// A file.
    File(String),
    /// Inline.
    Inline(serde_json::Value),
}

impl ConfigField {
    /// Reads and checks the configuration; a file's errors carry its
    /// line and column, inline ones their path under `config`.
    pub fn load<T>(
        &self,
        check: impl FnOnce(&serde_json::Value) -> Result<T, Vec<ConfigError>>,
    ) -> Result<T, Vec<ConfigError>> {
        match self {
            ConfigField::Inline(json) => check(json).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|mut e| {
                        e.field.insert(0, "config".into());
                        e
                    })
                    .collect()
            }),
            ConfigField::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    vec![ConfigError::field(
                        "config",
                        format!("cannot read {path}: {}", e.kind()),
                    )]
                })?;
                located(path, &text, check).map_err(|errors| {
                    errors
                        .into_iter()
                        .map(|m| ConfigError::field("config", m))
                        .collect()
                })
            }
        }
    }

    /// The file it reads, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            ConfigField::File(path) => Some(path),
            ConfigField::Inline(_) => None,
        }
    }
}

/// A validated `route`.
#[derive(Clone, Debug)]
pub struct RouteTransform {
    routing: Arc<Routing>,
    external_url: String,
    file: Option<String>,
}

impl RouteConfig {
    /// Reads and checks the configuration.
    pub fn validate(&self) -> Result<RouteTransform, Vec<ConfigError>> {
        let routing = self.config.load(amconfig::from_json)?;
        Ok(RouteTransform {
            routing: Arc::new(routing),
            external_url: self.external_url.clone(),
            file: self.config.file().map(str::to_owned),
        })
    }
}

impl Validate<dyn TransformSpec> for RouteConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|t| Arc::new(t) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for RouteTransform {
    /// Alerts, or a `correlate` transform's incidents, each routed as
    /// one alert (`Incident::as_alert`): one page per incident.
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Alerts, StreamKind::Incidents]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::default_output(StreamKind::Notifications)]
    }
    fn holdback(&self) -> Time {
        0
    }
    /// A group that keeps firing is notified again every
    /// `repeat_interval` for as long as it fires: no bound.
    fn reach(&self) -> Reach {
        None
    }
    fn needs_raw_input(&self) -> bool {
        false
    }
    fn derives_values(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<Resource> {
        self.file
            .iter()
            .map(|f| Resource::new("config", ResourceKind::ReadFile(f.into())))
            .collect()
    }
    /// The dispatcher's groups (what each last told, its next flush) and
    /// the firing inhibition sources.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        let alerts = match input {
            AnyStream::Incidents(incidents) => {
                use timely::dataflow::operators::vec::Map;
                incidents.flat_map(|i: tidemark_engine::incident::Incident| i.as_alert())
            }
            other => other.into_alerts(),
        };
        let routed = alerts.route_alerts(
            &ctx.name,
            Arc::clone(&self.routing),
            &self.external_url,
            Arc::clone(&ctx.silences),
            stats,
            ctx.checkpoint,
        );
        vec![AnyStream::Notifications(routed)]
    }
}
