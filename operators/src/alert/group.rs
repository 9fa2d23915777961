//! One rule group evaluated at one step, as Prometheus's rule manager
//! does: rules in order, each seeing the results of those before it;
//! recording rules write their series, alerting rules update their
//! instances and write `ALERTS` and `ALERTS_FOR_STATE`; a series a rule
//! wrote at the previous step and not at this one gets a staleness marker
//! in the store.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashSet;
use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::rules::{AlertSnapshot, GroupSnapshot, RuleSnapshot, RuleType};
use tidemark_engine::{Sample, Series};
use tidemark_promql::{Element, Evaluator, MemStore, STALE_NAN, Value, drop_name, set_label};

use super::rules::{Group, Rule, RuleKind};
use super::template::{Cache, Data};
use super::{Found, Instance, Instances};

/// What every group of a transform shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Lookback delta of instant selectors, ms.
    pub lookback: i64,
    /// `$externalLabels` of templates.
    pub external_labels: Vec<(String, String)>,
    /// `$externalURL` of templates, and the base of generator URLs.
    pub external_url: String,
}

/// What a step produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Recording-rule results, `ALERTS` and `ALERTS_FOR_STATE`.
    pub samples: Vec<Sample>,
    /// Alert state changes.
    pub alerts: Vec<Alert>,
    /// Rule evaluations that failed: the rule and why.
    pub failures: Vec<(String, String)>,
}

/// A group's state: its alert instances, the series each rule wrote at
/// the last step, and how each rule's last evaluation went.
#[derive(Debug)]
pub struct GroupState {
    /// The group.
    pub group: Arc<Group>,
    instances: Vec<Instances>,
    previous: Vec<Vec<Series>>,
    health: Vec<Health>,
    last_step: Option<i64>,
    step_seconds: f64,
}

/// How a rule's last evaluation went.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Health {
    last_error: Option<String>,
    last_evaluation: Option<i64>,
    seconds: f64,
}

/// What a checkpoint keeps of a group's state (the group itself comes
/// from the configuration, which the checkpoint's fingerprint matches).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedGroup {
    instances: Vec<Instances>,
    previous: Vec<Vec<Series>>,
    health: Vec<Health>,
    last_step: Option<i64>,
    step_seconds: f64,
}

impl SavedGroup {
    /// Its rules' active (pending or firing) alerts.
    pub fn active(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .iter()
            .flat_map(|i| i.all())
            .filter(|a| a.state != AlertState::Resolved)
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl GroupState {
    /// A group with no instances yet.
    pub fn new(group: Arc<Group>) -> GroupState {
        let n = group.rules.len();
        GroupState {
            group,
            instances: vec![Instances::default(); n],
            previous: vec![Vec::new(); n],
            health: vec![Health::default(); n],
            last_step: None,
            step_seconds: 0.0,
        }
    }

    /// Its state, for a checkpoint.
    pub fn save(&self) -> SavedGroup {
        SavedGroup {
            instances: self.instances.clone(),
            previous: self.previous.clone(),
            health: self.health.clone(),
            last_step: self.last_step,
            step_seconds: self.step_seconds,
        }
    }

    /// Takes back the state `save` gave; refused if it is not of a group
    /// with as many rules.
    pub fn restore(&mut self, saved: SavedGroup) -> Result<(), String> {
        let n = self.group.rules.len();
        if [
            saved.instances.len(),
            saved.previous.len(),
            saved.health.len(),
        ] != [n; 3]
        {
            return Err(format!(
                "group `{}` has {n} rules, its saved state {}",
                self.group.name,
                saved.instances.len()
            ));
        }
        self.instances = saved.instances;
        self.previous = saved.previous;
        self.health = saved.health;
        self.last_step = saved.last_step;
        self.step_seconds = saved.step_seconds;
        Ok(())
    }

    /// Carries a group's state saved under another configuration: each
    /// rule whose identity (`old_rules`, in the saved order) is the same
    /// gets back its instances, the series it wrote last and its health;
    /// rules new to the group start empty. Returns the active alerts of
    /// the rules that are gone: nothing will resolve them otherwise.
    pub fn migrate(&mut self, saved: &SavedGroup, old_rules: &[String]) -> Vec<Instance> {
        let mut taken = vec![false; old_rules.len()];
        for (i, rule) in self.group.rules.iter().enumerate() {
            let id = super::unit::rule_identity(rule);
            let Some(k) = (0..old_rules.len()).find(|k| !taken[*k] && old_rules[*k] == id) else {
                continue;
            };
            let (Some(instances), Some(previous), Some(health)) = (
                saved.instances.get(k),
                saved.previous.get(k),
                saved.health.get(k),
            ) else {
                continue;
            };
            taken[k] = true;
            self.instances[i] = instances.clone();
            self.previous[i] = previous.clone();
            self.health[i] = health.clone();
        }
        self.last_step = saved.last_step;
        self.step_seconds = saved.step_seconds;
        taken
            .iter()
            .zip(&saved.instances)
            .filter(|(taken, _)| !**taken)
            .flat_map(|(_, instances)| instances.all())
            .filter(|a| a.state != AlertState::Resolved)
            .cloned()
            .collect()
    }

    /// The instances of each alerting rule (for the rules and alerts APIs).
    pub fn instances(&self) -> impl Iterator<Item = (&Rule, &Instances)> {
        self.group.rules.iter().zip(&self.instances)
    }

    /// Evaluates every rule at `ts` over `store`, writing results into it
    /// (later rules see them) and into `out`.
    pub fn evaluate(
        &mut self,
        store: &mut MemStore,
        ts: i64,
        settings: &Settings,
        cache: &mut Cache,
        out: &mut Output,
    ) {
        let group = Arc::clone(&self.group);
        let step_started = Instant::now();
        for (i, rule) in group.rules.iter().enumerate() {
            let started = Instant::now();
            let result = self.rule_step(i, rule, store, ts, settings, cache, &mut out.alerts);
            let health = &mut self.health[i];
            match result {
                Ok(samples) => {
                    let now: FxHashSet<_> = samples.iter().map(|s| s.series.id()).collect();
                    for gone in self.previous[i].iter().filter(|s| !now.contains(&s.id())) {
                        store.insert(gone, ts, f64::from_bits(STALE_NAN));
                    }
                    self.previous[i] = samples.iter().map(|s| s.series.clone()).collect();
                    for s in &samples {
                        store.insert(&s.series, s.timestamp, s.value);
                    }
                    out.samples.extend(samples);
                    health.last_error = None;
                }
                Err(e) => {
                    out.failures.push((rule.name.clone(), e.clone()));
                    health.last_error = Some(e);
                }
            }
            health.last_evaluation = Some(ts);
            health.seconds = started.elapsed().as_secs_f64();
        }
        self.last_step = Some(ts);
        self.step_seconds = step_started.elapsed().as_secs_f64();
    }

    /// One rule at `ts`: the samples it writes, or why it failed.
    #[allow(clippy::too_many_arguments)]
    fn rule_step(
        &mut self,
        i: usize,
        rule: &Rule,
        store: &MemStore,
        ts: i64,
        settings: &Settings,
        cache: &mut Cache,
        alerts: &mut Vec<Alert>,
    ) -> Result<Vec<Sample>, String> {
        let vector = match Evaluator::new(store)
            .with_lookback(settings.lookback)
            .eval(&rule.expr, ts)
        {
            Ok(Value::Vector(v)) => v,
            Ok(Value::Scalar(v)) => vec![Element {
                series: Series::from_labels(Vec::new()),
                t: ts,
                v,
            }],
            Ok(other) => {
                return Err(format!(
                    "rule result is a {}, not a vector",
                    other.type_name()
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        if self.group.limit > 0 && vector.len() as u64 > self.group.limit {
            return Err(format!(
                "exceeded limit of {} with {} series",
                self.group.limit,
                vector.len()
            ));
        }
        match &rule.kind {
            RuleKind::Record => record(rule, vector, ts),
            RuleKind::Alert {
                hold,
                keep_firing,
                annotations,
            } => {
                let found = found(rule, annotations, vector, settings, cache)?;
                let url = format!(
                    "{}/graph?g0.expr={}&g0.tab=1",
                    settings.external_url.trim_end_matches('/'),
                    query_escape(&rule.text)
                );
                let active = self.instances[i].step(ts, found, *hold, *keep_firing, &mut |a| {
                    alerts.push(alert(a, ts, &url))
                });
                Ok(alerts_series(&active, ts))
            }
        }
    }

    /// The group's state as the rules and alerts APIs show it.
    pub fn snapshot(&self, pipeline: &str, transform: &str) -> GroupSnapshot {
        let rules = self
            .group
            .rules
            .iter()
            .zip(&self.instances)
            .zip(&self.health)
            .map(|((rule, instances), health)| RuleSnapshot {
                name: rule.name.clone(),
                query: rule.text.clone(),
                labels: rule
                    .labels
                    .iter()
                    .map(|(k, t)| (k.clone(), t.text().to_owned()))
                    .collect(),
                kind: match &rule.kind {
                    RuleKind::Record => RuleType::Recording,
                    RuleKind::Alert {
                        hold,
                        keep_firing,
                        annotations,
                    } => RuleType::Alerting {
                        hold: *hold,
                        keep_firing: *keep_firing,
                        annotations: annotations
                            .iter()
                            .map(|(k, t)| (k.clone(), t.text().to_owned()))
                            .collect(),
                        alerts: instances
                            .all()
                            .filter(|a| a.state != AlertState::Resolved)
                            .map(|a| AlertSnapshot {
                                labels: a.labels.clone(),
                                annotations: a.annotations.to_vec(),
                                state: a.state,
                                active_at: a.active_at,
                                value: a.value,
                            })
                            .collect(),
                    },
                },
                last_error: health.last_error.clone(),
                last_evaluation: health.last_evaluation,
                evaluation_seconds: health.seconds,
            })
            .collect();
        GroupSnapshot {
            pipeline: pipeline.to_owned(),
            transform: transform.to_owned(),
            file: self.group.file.clone(),
            name: self.group.name.clone(),
            interval: self.group.interval,
            limit: self.group.limit,
            rules,
            last_evaluation: self.last_step,
            evaluation_seconds: self.step_seconds,
        }
    }
}

/// A recording rule's series: the result renamed, the rule's labels set.
fn record(rule: &Rule, vector: Vec<Element>, ts: i64) -> Result<Vec<Sample>, String> {
    let mut seen = FxHashSet::default();
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let mut series = e.series.with_name(&rule.name);
        for (k, v) in &rule.labels {
            series = set_label(&series, k, v.text());
        }
        if !seen.insert(series.id()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push(Sample::new(series, ts, e.v));
    }
    Ok(out)
}

/// An alerting rule's label sets: the result's labels without the metric
/// name, the rule's labels (expanded), `alertname`; annotations expanded.
fn found(
    rule: &Rule,
    annotations: &[(String, super::template::Template)],
    vector: Vec<Element>,
    settings: &Settings,
    cache: &mut Cache,
) -> Result<Vec<Found>, String> {
    let mut seen = FxHashSet::default();
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let labels: Vec<(String, String)> = e
            .series
            .labels()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data = Data {
            labels: &labels,
            value: e.v,
            external_labels: &settings.external_labels,
            external_url: &settings.external_url,
        };
        let mut series = drop_name(&e.series);
        for (k, t) in &rule.labels {
            let v = t.expand(&data, cache);
            series = set_label(&series, k, &v);
        }
        series = set_label(&series, "alertname", &rule.name);
        if !seen.insert(series.id()) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        let annotations: Vec<(String, String)> = annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(&data, cache)))
            .collect();
        out.push(Found {
            labels: series,
            value: e.v,
            annotations: Arc::from(annotations),
        });
    }
    Ok(out)
}

/// `ALERTS{alertstate=...}` = 1 and `ALERTS_FOR_STATE` = the active time in
/// seconds, for every active instance.
fn alerts_series(active: &[&Instance], ts: i64) -> Vec<Sample> {
    let mut out = Vec::with_capacity(active.len() * 2);
    for a in active {
        let state = set_label(&a.labels, "alertstate", a.state.word());
        out.push(Sample::new(state.with_name("ALERTS"), ts, 1.0));
        out.push(Sample::new(
            a.labels.with_name("ALERTS_FOR_STATE"),
            ts,
            (a.active_at / 1000) as f64,
        ));
    }
    out
}

/// The alert-stream record of a state change.
pub(super) fn alert(a: &Instance, ts: i64, url: &str) -> Alert {
    Alert {
        labels: a.labels.clone(),
        annotations: Arc::clone(&a.annotations),
        state: a.state,
        active_at: a.active_at,
        starts_at: a.fired_at.unwrap_or(a.active_at),
        ends_at: if a.state == AlertState::Resolved {
            a.resolved_at
        } else {
            None
        },
        value: a.value,
        at: ts,
        generator_url: url.to_owned(),
    }
}
