//! One rule group evaluated at one step, as Prometheus's rule manager
//! does: rules in order, each seeing the results of those before it;
//! recording rules write their series, alerting rules update their
//! instances and write `ALERTS` and `ALERTS_FOR_STATE`; a series a rule
//! wrote at the previous step and not at this one gets a staleness marker
//! in the store.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::series::{Label, METRIC_NAME_LABEL};
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

/// A group's state: its alert instances and the series each rule wrote
/// at the last step.
#[derive(Debug)]
pub struct GroupState {
    /// The group.
    pub group: Arc<Group>,
    instances: Vec<Instances>,
    previous: Vec<Vec<Series>>,
}

fn with_name(series: &Series, name: &str) -> Series {
    let mut labels: Vec<Label> = series.labels().to_vec();
    labels.retain(|(n, _)| n.as_ref() != METRIC_NAME_LABEL);
    labels.push((Arc::from(METRIC_NAME_LABEL), Arc::from(name)));
    Series::from_labels(labels)
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
        }
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
        for (i, rule) in group.rules.iter().enumerate() {
            let result = Evaluator::new(store)
                .with_lookback(settings.lookback)
                .eval(&rule.expr, ts);
            let vector = match result {
                Ok(Value::Vector(v)) => v,
                Ok(Value::Scalar(v)) => vec![Element {
                    series: Series::from_labels(Vec::new()),
                    t: ts,
                    v,
                }],
                Ok(other) => {
                    let e = format!("rule result is a {}, not a vector", other.type_name());
                    out.failures.push((rule.name.clone(), e));
                    continue;
                }
                Err(e) => {
                    out.failures.push((rule.name.clone(), e.to_string()));
                    continue;
                }
            };
            if group.limit > 0 && vector.len() as u64 > group.limit {
                let e = format!(
                    "exceeded limit of {} with {} series",
                    group.limit,
                    vector.len()
                );
                out.failures.push((rule.name.clone(), e));
                continue;
            }
            let written = match &rule.kind {
                RuleKind::Record => record(rule, vector, ts),
                RuleKind::Alert {
                    hold,
                    keep_firing,
                    annotations,
                } => {
                    let found = match found(rule, annotations, vector, settings, cache) {
                        Ok(found) => found,
                        Err(e) => {
                            out.failures.push((rule.name.clone(), e));
                            continue;
                        }
                    };
                    let url = format!(
                        "{}/graph?g0.expr={}&g0.tab=1",
                        settings.external_url.trim_end_matches('/'),
                        query_escape(&rule.text)
                    );
                    let mut changes = Vec::new();
                    let active = self.instances[i].step(ts, found, *hold, *keep_firing, &mut |a| {
                        changes.push(alert(a, ts, &url))
                    });
                    out.alerts.extend(changes);
                    Ok(alerts_series(&active, ts))
                }
            };
            let samples = match written {
                Ok(samples) => samples,
                Err(e) => {
                    out.failures.push((rule.name.clone(), e));
                    continue;
                }
            };
            let now: FxHashSet<_> = samples.iter().map(|s| s.series.id()).collect();
            for gone in self.previous[i].iter().filter(|s| !now.contains(&s.id())) {
                store.insert(gone, ts, f64::from_bits(STALE_NAN));
            }
            self.previous[i] = samples.iter().map(|s| s.series.clone()).collect();
            for s in &samples {
                store.insert(&s.series, s.timestamp, s.value);
            }
            out.samples.extend(samples);
        }
    }
}

/// A recording rule's series: the result renamed, the rule's labels set.
fn record(rule: &Rule, vector: Vec<Element>, ts: i64) -> Result<Vec<Sample>, String> {
    let mut seen = FxHashSet::default();
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let mut series = with_name(&e.series, &rule.name);
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
        out.push(Sample::new(with_name(&state, "ALERTS"), ts, 1.0));
        out.push(Sample::new(
            with_name(&a.labels, "ALERTS_FOR_STATE"),
            ts,
            (a.active_at / 1000) as f64,
        ));
    }
    out
}

/// The alert-stream record of a state change.
fn alert(a: &Instance, ts: i64, url: &str) -> Alert {
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
