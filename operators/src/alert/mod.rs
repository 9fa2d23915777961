//! `type: alert`: Prometheus recording and alerting rules, evaluated in
//! event time as the data arrives.
//!
//! [`rules`] reads rule files (Prometheus's format, errors located like
//! `promtool check rules`); [`template`] expands annotations; [`Instances`]
//! is the plain state machine of one alerting rule's instances (pending,
//! firing, resolved, `for`, `keep_firing_for`), as Prometheus's rule
//! manager keeps them; [`group`] evaluates a group at one step over a
//! [`tidemark_promql::MemStore`]; [`unit`] holds the groups evaluated
//! together and runs their steps as the watermark passes them; [`operator`] is the thin timely wrapper
//! that routes samples to the worker that evaluates each group and runs
//! every step once the watermark has passed it; [`config`] is the YAML.

pub mod config;
pub mod group;
pub mod operator;
pub mod rules;
pub mod template;
pub mod unit;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidemark_engine::alert::AlertState;
use tidemark_engine::{Series, SeriesId};

/// How long a resolved alert is kept (and reported) after it resolved,
/// as Prometheus keeps it for Alertmanager.
pub const RESOLVED_RETENTION: i64 = 15 * 60 * 1000;

/// One alert instance: a label set of an alerting rule's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Its labels (`alertname` and the rule's labels included).
    pub labels: Series,
    /// Annotations expanded at the last step it was active.
    pub annotations: Arc<[(String, String)]>,
    /// Pending or firing while active; resolved once it stopped.
    pub state: AlertState,
    /// When its condition started to hold.
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// When it was resolved.
    pub resolved_at: Option<i64>,
    /// Since when it has been kept firing by `keep_firing_for`.
    pub keep_firing_since: Option<i64>,
    /// The expression's value for it at the last step it was in the result.
    pub value: f64,
}

/// What one step found for one label set.
#[derive(Clone, Debug)]
pub struct Found {
    /// The instance's labels.
    pub labels: Series,
    /// The expression's value.
    pub value: f64,
    /// Expanded annotations.
    pub annotations: Arc<[(String, String)]>,
}

/// The instances of one alerting rule, keyed by label set; serialisable so
/// that the durable-state work can checkpoint it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Instances {
    active: BTreeMap<SeriesId, Instance>,
}

impl Instances {
    /// Applies one evaluation at `ts` whose result is `found` (label sets
    /// unique), with the rule's `for` (`hold`) and `keep_firing_for`; calls
    /// `change` for every instance that became pending, firing or
    /// resolved, and returns the instances active after the step (pending
    /// or firing), in label order, for the `ALERTS` series.
    pub fn step(
        &mut self,
        ts: i64,
        found: Vec<Found>,
        hold: i64,
        keep_firing: i64,
        change: &mut impl FnMut(&Instance),
    ) -> Vec<&Instance> {
        let mut current = rustc_hash::FxHashSet::default();
        for f in found {
            let id = f.labels.id();
            current.insert(id);
            match self.active.get_mut(&id) {
                Some(a) if a.state != AlertState::Resolved => {
                    a.value = f.value;
                    a.annotations = f.annotations;
                }
                _ => {
                    let instance = Instance {
                        labels: f.labels,
                        annotations: f.annotations,
                        state: AlertState::Pending,
                        active_at: ts,
                        fired_at: None,
                        resolved_at: None,
                        keep_firing_since: None,
                        value: f.value,
                    };
                    change(&instance);
                    self.active.insert(id, instance);
                }
            }
        }
        let mut drop = Vec::new();
        for (id, a) in self.active.iter_mut() {
            if !current.contains(id) {
                let mut keep = false;
                if a.state == AlertState::Firing && keep_firing > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep = ts - since < keep_firing;
                }
                if a.state == AlertState::Pending
                    || a.resolved_at.is_some_and(|r| ts - r > RESOLVED_RETENTION)
                {
                    drop.push(*id);
                }
                if a.state != AlertState::Resolved && !keep {
                    let was_firing = a.state == AlertState::Firing;
                    a.state = AlertState::Resolved;
                    a.resolved_at = Some(ts);
                    if was_firing {
                        change(a);
                    }
                }
                if !keep {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            if a.state == AlertState::Pending && ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
                change(a);
            }
        }
        for id in drop {
            self.active.remove(&id);
        }
        self.active
            .values()
            .filter(|a| a.state != AlertState::Resolved)
            .collect()
    }

    /// Every instance kept (resolved ones for 15 minutes).
    pub fn all(&self) -> impl Iterator<Item = &Instance> {
        self.active.values()
    }
}

#[cfg(test)]
mod tests;
