//! `type: correlate`.

use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::spec::{
    AnyStream, Port, Resource, ResourceKind, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;

use super::model::{LabelSet, Link, Model, Rules, Together, Topology};
use super::operator::{Cuts, Settings, alerts_as_samples, correlate_shown};
use crate::alert::rules::duration_ms;

/// Groups firing alerts (`ALERTS` samples) into incidents.
///
/// ```yaml
/// type: correlate
/// inputs: [rules]
/// topology: {path: topology.jsonl}
/// window: 10m
/// rules:
///   topology: {hops: 2}
///   labels: {by: [cluster]}
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// The dependency graph: `{path: FILE}` (JSON lines, `{"from": {...},
    /// "to": {...}}`: `from` depends on or runs on `to`) or `{edges:
    /// [{from: ..., to: ...}]}`, and with `metric: NAME` edges that
    /// samples on the input add and take back. Default none.
    #[serde(default)]
    pub topology: Option<TopologyField>,
    /// How far apart two alerts' starts may be to be tied. Default `10m`.
    #[serde(default)]
    pub window: Option<String>,
    /// The score that ties two alerts. Default `1`.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The rules and their weights.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Which ties hold an incident together: `strongest` (default), each
    /// alert by its strongest tie upstream, so that an alert two faults
    /// could explain joins one of them; `all`, every tie, so incidents
    /// are the connected groups of tied alerts.
    #[serde(default)]
    pub link: Link,
    /// How long without a firing sample ends an alert's episode. Default
    /// `5m` (Prometheus's lookback).
    #[serde(default)]
    pub resolve_after: Option<String>,
    /// How long an incident whose alerts have all ended is kept (it can
    /// reopen meanwhile). Default `1h`.
    #[serde(default)]
    pub horizon: Option<String>,
    /// How long past a sample's time the watermark waits for it. Default
    /// `0s`.
    #[serde(default)]
    pub lateness: Option<String>,
}

/// `topology:` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopologyField {
    /// A JSON-lines file of edges.
    #[serde(default)]
    pub path: Option<String>,
    /// Edges inline.
    #[serde(default)]
    pub edges: Option<Vec<Edge>>,
    /// Edges from the input: samples of this metric whose `from_*` and
    /// `to_*` labels name an edge add it (any value but 0) and take it
    /// back (0, or a staleness marker) in event time.
    #[serde(default)]
    pub metric: Option<String>,
}

/// One edge: `from` depends on (or runs on) `to`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The dependent entity's labels.
    pub from: LabelSet,
    /// What it depends on.
    pub to: LabelSet,
}

/// `rules:`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Ties through the topology. Default `{hops: 2, weight: 1, decay:
    /// 0.5, max_delay: 2m, lead: 30s}`: one hop ties on its own, two
    /// hops weigh 0.5 and need another rule.
    #[serde(default)]
    pub topology: Option<TopologyRule>,
    /// Ties by equal labels. Default none.
    #[serde(default)]
    pub labels: Option<LabelsRule>,
    /// A bonus for starts close together, for alerts tied by another
    /// rule (`{within: 1m, weight: 0.5}`, say). Default none.
    #[serde(default)]
    pub time: Option<TimeRule>,
    /// Ties between alerts that keep firing together. Default none.
    #[serde(default)]
    pub cooccurrence: Option<CooccurrenceRule>,
}

/// `rules.cooccurrence`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CooccurrenceRule {
    /// How close two alerts' starts must be to count as firing together.
    /// Default `1m`.
    #[serde(default)]
    pub within: Option<String>,
    /// How many times a pair must have fired together. Default 3.
    #[serde(default = "three")]
    pub min_count: u32,
    /// How long a start is remembered. Default `7d`.
    #[serde(default)]
    pub history: Option<String>,
    /// The weight. Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// The labels that make an alert's identity. Default all of them.
    #[serde(default)]
    pub identity: Vec<String>,
}

fn three() -> u32 {
    3
}

/// `rules.topology`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopologyRule {
    /// Most hops between two alerts' entities through a common cause.
    #[serde(default = "default_hops")]
    pub hops: u8,
    /// The weight at 0 or 1 hop.
    #[serde(default = "one")]
    pub weight: f64,
    /// The factor for each further hop.
    #[serde(default = "half")]
    pub decay: f64,
    /// How much later an alert may start than the one it is tied to, per
    /// hop between them. Default `2m`.
    #[serde(default)]
    pub max_delay: Option<String>,
    /// How much earlier an alert may start than the one nearer the common
    /// cause. Default `30s`.
    #[serde(default)]
    pub lead: Option<String>,
}

/// `rules.labels`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelsRule {
    /// Labels both alerts must carry with equal values.
    pub by: Vec<String>,
    /// The weight.
    #[serde(default = "half")]
    pub weight: f64,
}

/// `rules.time`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeRule {
    /// How close the starts must be.
    pub within: String,
    /// The weight.
    #[serde(default = "half")]
    pub weight: f64,
}

fn default_hops() -> u8 {
    2
}
fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}

/// A validated `correlate`.
#[derive(Clone, Debug)]
pub struct CorrelateTransform {
    settings: Settings,
    file: Option<String>,
}

impl CorrelateTransform {
    /// The model and settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl CorrelateConfig {
    /// Checks every field and reads the topology.
    pub fn validate(&self) -> Result<CorrelateTransform, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let topology_rule = self.rules.topology.clone().unwrap_or(TopologyRule {
            hops: default_hops(),
            weight: 1.0,
            decay: 0.5,
            max_delay: None,
            lead: None,
        });
        let mut duration = |field: &str, value: &Option<String>, default: i64| match value {
            None => default as u64,
            Some(text) => match duration_ms(text) {
                Ok(ms) if ms >= 0 => ms as u64,
                Ok(_) => {
                    errors.push(ConfigError::field(field, "must not be negative"));
                    default as u64
                }
                Err(e) => {
                    errors.push(ConfigError::field(field, e));
                    default as u64
                }
            },
        };
        let window = duration("window", &self.window, 600_000);
        let gap = duration("resolve_after", &self.resolve_after, 300_000);
        let horizon = duration("horizon", &self.horizon, 3_600_000);
        let lateness = duration("lateness", &self.lateness, 0);
        let max_delay = duration(
            "rules.topology.max_delay",
            &topology_rule.max_delay,
            120_000,
        );
        let lead = duration("rules.topology.lead", &topology_rule.lead, 30_000);
        let within = match &self.rules.time {
            Some(t) => duration("rules.time.within", &Some(t.within.clone()), 60_000),
            None => 0,
        };
        let together = self.rules.cooccurrence.as_ref().map(|c| Together {
            within: duration("rules.cooccurrence.within", &c.within, 60_000),
            min_count: c.min_count,
            history: duration("rules.cooccurrence.history", &c.history, 7 * 86_400_000),
            weight: c.weight,
            identity: c.identity.clone(),
        });
        if window == 0 {
            errors.push(ConfigError::field("window", "must be greater than 0"));
        }
        if gap == 0 {
            errors.push(ConfigError::field(
                "resolve_after",
                "must be greater than 0",
            ));
        }
        if topology_rule.hops > 8 {
            errors.push(field(&["rules", "topology", "hops"], "must be at most 8"));
        }
        let threshold = self.threshold.unwrap_or(1.0);
        let mut weight = |path: &[&str], w: f64| {
            if !w.is_finite() || w < 0.0 {
                errors.push(field(path, "must be a number of at least 0"));
            }
        };
        weight(&["rules", "topology", "weight"], topology_rule.weight);
        weight(&["rules", "topology", "decay"], topology_rule.decay);
        if let Some(l) = &self.rules.labels {
            weight(&["rules", "labels", "weight"], l.weight);
        }
        if let Some(t) = &self.rules.time {
            weight(&["rules", "time", "weight"], t.weight);
        }
        if let Some(c) = &self.rules.cooccurrence {
            weight(&["rules", "cooccurrence", "weight"], c.weight);
        }
        if let Some(t) = &together {
            if t.min_count < 2 {
                errors.push(field(
                    &["rules", "cooccurrence", "min_count"],
                    "must be at least 2 (once is not a pattern)",
                ));
            }
            if t.within == 0 || t.within > window {
                errors.push(field(
                    &["rules", "cooccurrence", "within"],
                    "must be greater than 0 and at most `window`",
                ));
            }
            if t.history < window {
                errors.push(field(
                    &["rules", "cooccurrence", "history"],
                    "must be at least `window`",
                ));
            }
        }
        if !(threshold > 0.0 && threshold.is_finite()) {
            errors.push(field(
                &["threshold"],
                "must be greater than 0 (every alert would be tied to every other)",
            ));
        }
        if let Some(l) = &self.rules.labels
            && l.by.is_empty()
        {
            errors.push(field(
                &["rules", "labels", "by"],
                "must name at least one label",
            ));
        }
        let edges = match &self.topology {
            None => Vec::new(),
            Some(t) => read_topology(t, &mut errors),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let rules = Rules {
            window,
            hops: topology_rule.hops,
            topology_weight: topology_rule.weight,
            decay: topology_rule.decay,
            max_delay,
            lead,
            by: self
                .rules
                .labels
                .as_ref()
                .map(|l| l.by.clone())
                .unwrap_or_default(),
            labels_weight: self.rules.labels.as_ref().map_or(0.0, |l| l.weight),
            within,
            time_weight: self.rules.time.as_ref().map_or(0.0, |t| t.weight),
            together,
            threshold,
            link: self.link,
        };
        let topology = Topology::new(&edges, rules.hops);
        Ok(CorrelateTransform {
            settings: Settings {
                model: Arc::new(Model { topology, rules }),
                lateness,
                gap,
                horizon,
                edge_metric: self.topology.as_ref().and_then(|t| t.metric.clone()),
            },
            file: self.topology.as_ref().and_then(|t| t.path.clone()),
        })
    }
}

fn field(path: &[&str], message: &str) -> ConfigError {
    ConfigError {
        field: path.iter().map(|s| (*s).to_owned()).collect(),
        message: message.to_owned(),
    }
}

/// The edges of `topology:`; a file's errors name its line.
fn read_topology(t: &TopologyField, errors: &mut Vec<ConfigError>) -> Vec<(LabelSet, LabelSet)> {
    let mut edges = Vec::new();
    let mut empty = Vec::new();
    let mut check = |e: Edge, at: &dyn Fn() -> ConfigError| {
        if e.from.is_empty() || e.to.is_empty() {
            let mut err = at();
            err.message = format!(
                "{}an edge's `from` and `to` need at least one label",
                err.message
            );
            empty.push(err);
        } else {
            edges.push((e.from, e.to));
        }
    };
    if let Some(metric) = &t.metric
        && !tidemark_engine::validate::is_metric_name(metric)
    {
        errors.push(field(
            &["topology", "metric"],
            &format!("{metric:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
        ));
    }
    match (&t.path, &t.edges) {
        (Some(_), Some(_)) => {
            errors.push(field(&["topology"], "give either `path` or `edges`"));
        }
        (None, None) if t.metric.is_none() => {
            errors.push(field(
                &["topology"],
                "give `path`, `edges` or `metric` (edges from the input)",
            ));
        }
        (None, None) => {}
        (None, Some(list)) => {
            for (i, e) in list.iter().enumerate() {
                check(e.clone(), &|| ConfigError {
                    field: vec!["topology".into(), "edges".into(), i.to_string()],
                    message: String::new(),
                });
            }
        }
        (Some(path), None) => match std::fs::read_to_string(path) {
            Err(e) => errors.push(field(
                &["topology", "path"],
                &format!("cannot read {path}: {}", e.kind()),
            )),
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let at = |msg: &str| {
                        field(&["topology", "path"], &format!("{path}:{}: {msg}", i + 1))
                    };
                    match serde_json::from_str::<Edge>(line) {
                        Ok(e) => check(e, &|| at("")),
                        Err(e) => {
                            let msg = e.to_string();
                            let msg = msg.split(" at line").next().unwrap_or(&msg);
                            errors.push(at(&format!(
                                "not an edge ({msg}); write {{\"from\": {{...}}, \"to\": {{...}}}}"
                            )));
                        }
                    }
                }
            }
        },
    }
    errors.extend(empty);
    edges
}

impl Validate<dyn TransformSpec> for CorrelateConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|t| Arc::new(t) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for CorrelateTransform {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples, StreamKind::Alerts]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::default_output(StreamKind::Samples),
            Port::named("incidents", StreamKind::Incidents),
        ]
    }
    fn holdback(&self) -> Time {
        self.settings.lateness + 1
    }
    /// An incident changes when an alert ends (`resolve_after` after its
    /// last sample) and when it retires (`horizon` after that).
    fn reach(&self) -> Reach {
        Some(self.settings.gap + self.settings.horizon)
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
            .map(|f| Resource {
                field: vec!["topology".into(), "path".into()],
                kind: ResourceKind::ReadFile(f.into()),
            })
            .collect()
    }
    /// The tracker's episodes and the keeper's incidents are kept; the
    /// differential arrangements are rebuilt from the episodes at a
    /// restore.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    /// The keeper cuts `lateness` behind the tracker.
    fn later_stages(&self) -> Vec<(&'static str, Time)> {
        vec![("incidents", self.settings.lateness)]
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        let shown = Some((Arc::clone(&ctx.incidents), ctx.pipeline.clone()));
        let cuts = Cuts {
            episodes: ctx.checkpoint,
            incidents: ctx.later.into_iter().next(),
        };
        let (samples, incidents) = match input {
            AnyStream::Alerts(alerts) => {
                // State changes: an episode ends when its alert resolves,
                // not after a gap without samples.
                let settings = Settings {
                    gap: super::operator::NO_GAP,
                    ..self.settings.clone()
                };
                let alerts = alerts_as_samples(alerts);
                correlate_shown(alerts, &ctx.name, settings, stats, shown, cuts)
            }
            other => correlate_shown(
                other.into_samples(),
                &ctx.name,
                self.settings.clone(),
                stats,
                shown,
                cuts,
            ),
        };
        vec![AnyStream::Samples(samples), AnyStream::Incidents(incidents)]
    }
}
