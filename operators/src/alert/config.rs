//! `type: alert`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use tidemark_engine::component::{ConfigError, Reach};
use tidemark_engine::spec::{
    AnyStream, Port, Resource, ResourceKind, StreamKind, TransformContext, TransformSpec, Validate,
};
use tidemark_engine::stats::Role;
use tidemark_engine::time::Time;

use super::group::Settings;
use super::operator::{AlertSpec, Alerting, Publish, selectors};
use super::rules::{self, Group, RuleKind, duration_ms};

/// Prometheus recording and alerting rules, evaluated in event time.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// A Prometheus rule file (path relative to the working directory), a
    /// list of them, or the same structure inline (`{groups: [...]}`).
    pub rules: RulesField,
    /// Evaluation interval of groups that set none. Default `1m`.
    #[serde(default)]
    pub interval: Option<String>,
    /// How far back an instant selector looks for a series' latest sample
    /// (Prometheus's lookback delta). Default `5m`.
    #[serde(default)]
    pub lookback: Option<String>,
    /// How long after a step's time its samples may still arrive: a step
    /// runs once the watermark is past its time plus this. Default `0s`
    /// (the sources' `max_out_of_orderness` is the usual slack).
    #[serde(default)]
    pub lateness: Option<String>,
    /// `$externalLabels` in templates.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL` in templates and the base of each alert's generator
    /// URL. Default empty.
    #[serde(default)]
    pub external_url: String,
}

/// `rules:` as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RulesField {
    /// One rule file.
    File(String),
    /// Several rule files.
    Files(Vec<String>),
    /// Rules inline.
    Inline(serde_json::Value),
}

/// A validated `alert`.
#[derive(Clone, Debug)]
pub struct AlertTransform {
    spec: Arc<AlertSpec>,
    files: Vec<String>,
    /// How far past an input's time outputs can be stamped (ms).
    reach: i64,
}

impl AlertTransform {
    /// The groups and settings.
    pub fn spec(&self) -> &Arc<AlertSpec> {
        &self.spec
    }
}

impl AlertConfig {
    /// Reads and checks every rule file (their own errors carry their file,
    /// line and column), and every setting.
    pub fn validate(&self) -> Result<AlertTransform, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut duration = |field: &str, value: &Option<String>, default: i64| match value {
            None => default,
            Some(text) => duration_ms(text).unwrap_or_else(|e| {
                errors.push(ConfigError::field(field, e));
                default
            }),
        };
        let interval = duration("interval", &self.interval, 60_000);
        let lookback = duration(
            "lookback",
            &self.lookback,
            tidemark_promql::DEFAULT_LOOKBACK,
        );
        let lateness = duration("lateness", &self.lateness, 0);
        if interval <= 0 {
            errors.push(ConfigError::field("interval", "must be greater than 0"));
        }
        let interval = interval.max(1);
        let (groups, files) = match &self.rules {
            RulesField::Inline(json) => {
                let groups = rules::from_json(json, interval, "inline").unwrap_or_else(|e| {
                    errors.extend(e.into_iter().map(|mut e| {
                        e.field.insert(0, "rules".into());
                        e
                    }));
                    Vec::new()
                });
                (groups, Vec::new())
            }
            RulesField::File(f) => (
                read(std::slice::from_ref(f), interval, &mut errors),
                vec![f.clone()],
            ),
            RulesField::Files(fs) => (read(fs, interval, &mut errors), fs.clone()),
        };
        for g in &groups {
            for r in &g.rules {
                let mut negative = false;
                selectors(&r.expr, &mut |_, _, offset| negative |= offset < 0);
                if negative {
                    errors.push(ConfigError::field(
                        "rules",
                        format!(
                            "{}: group {:?}, rule {:?}: negative offsets read the future, which \
                             event-time evaluation cannot",
                            g.file, g.name, r.name
                        ),
                    ));
                }
            }
        }
        if groups.is_empty() && errors.is_empty() {
            errors.push(ConfigError::field("rules", "no rule groups"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let reach = reach(&groups, lookback);
        let settings = Settings {
            lookback,
            external_labels: self.external_labels.clone().into_iter().collect(),
            external_url: self.external_url.clone(),
        };
        let spec = AlertSpec::new(
            groups.into_iter().map(Arc::new).collect(),
            settings,
            lateness,
        );
        Ok(AlertTransform {
            spec: Arc::new(spec),
            files,
            reach,
        })
    }
}

/// Reads rule files; their errors name the file, line and column (no
/// content of the file is repeated, so that a refused file tells nothing).
fn read(files: &[String], interval: i64, errors: &mut Vec<ConfigError>) -> Vec<Group> {
    let mut groups = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => match rules::parse_file(f, &text, interval) {
                Ok(g) => groups.extend(g),
                Err(e) => errors.extend(e.into_iter().map(|m| ConfigError::field("rules", m))),
            },
            Err(e) => errors.push(ConfigError::field(
                "rules",
                format!("cannot read rule file {f}: {}", e.kind()),
            )),
        }
    }
    groups
}

/// How far past a sample's time it can still change an output: the
/// longest range plus offset it is read through, the lookback, the
/// longest `for` and `keep_firing_for`, and one interval.
fn reach(groups: &[Group], lookback: i64) -> i64 {
    let mut longest = 0i64;
    for g in groups {
        for r in &g.rules {
            let mut read = 0i64;
            selectors(&r.expr, &mut |_, range, offset| {
                read = read.max(range + offset)
            });
            let hold = match r.kind {
                RuleKind::Alert {
                    hold, keep_firing, ..
                } => hold + keep_firing,
                RuleKind::Record => 0,
            };
            longest = longest.max(read + lookback + hold + g.interval);
        }
    }
    longest
}

impl Validate<dyn TransformSpec> for AlertConfig {
    fn validated(&self) -> Result<Arc<dyn TransformSpec>, Vec<ConfigError>> {
        self.validate()
            .map(|t| Arc::new(t) as Arc<dyn TransformSpec>)
    }
}

impl TransformSpec for AlertTransform {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Samples]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::default_output(StreamKind::Samples),
            Port::named("alerts", StreamKind::Alerts),
        ]
    }
    fn holdback(&self) -> Time {
        (self.spec.lateness + 1) as Time
    }
    fn reach(&self) -> Reach {
        Some(self.reach as Time)
    }
    fn needs_raw_input(&self) -> bool {
        false
    }
    fn derives_values(&self) -> bool {
        true
    }
    fn touches(&self) -> Vec<Resource> {
        self.files
            .iter()
            .map(|f| Resource::new("rules", ResourceKind::ReadFile(f.into())))
            .collect()
    }
    /// Its units (samples, alert instances, next steps) are kept.
    fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
        tidemark_engine::checkpoint::Checkpointed::Kept
    }
    /// What its state depends on, beyond its rules: their state is carried
    /// group by group and rule by rule into changed rules (see
    /// `UnitState::migrate`).
    fn identity(&self) -> String {
        format!(
            "alert {:?} lateness {}",
            self.spec.settings, self.spec.lateness
        )
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: TransformContext,
    ) -> Vec<AnyStream<'scope>> {
        let stats = ctx.stats.component(&ctx.name, Role::Transform);
        let publish = Publish {
            hub: Arc::clone(&ctx.rules),
            pipeline: ctx.pipeline.clone(),
        };
        let (samples, alerts) = input.into_samples().alert_rules(
            &ctx.name,
            Arc::clone(&self.spec),
            stats,
            publish,
            ctx.checkpoint,
        );
        vec![AnyStream::Samples(samples), AnyStream::Alerts(alerts)]
    }
}
