//! What the `alert` transforms of a process show the server's rules and
//! alerts APIs: a snapshot of each rule group they evaluate, published as
//! the groups step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::alert::AlertState;
use crate::series::Series;

/// An active alert instance, as the APIs show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertSnapshot {
    /// Its labels.
    pub labels: Series,
    /// Its annotations at the last step.
    pub annotations: Vec<(String, String)>,
    /// Pending or firing.
    pub state: AlertState,
    /// When its condition started to hold (ms).
    pub active_at: i64,
    /// Its value at the last step.
    pub value: f64,
}

/// What kind of rule, and what only alerting rules have.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum RuleType {
    /// A recording rule.
    Recording,
    /// An alerting rule.
    Alerting {
        /// `for`, ms.
        hold: i64,
        /// `keep_firing_for`, ms.
        keep_firing: i64,
        /// Annotation templates as written.
        annotations: Vec<(String, String)>,
        /// Its active instances.
        alerts: Vec<AlertSnapshot>,
    },
}

/// One rule's last evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleSnapshot {
    /// Recorded name or alert name.
    pub name: String,
    /// The expression as written.
    pub query: String,
    /// Its labels as written.
    pub labels: Vec<(String, String)>,
    /// What kind.
    pub kind: RuleType,
    /// The error of its last evaluation, if it failed.
    pub last_error: Option<String>,
    /// Event time of its last evaluation (ms), if it ran.
    pub last_evaluation: Option<i64>,
    /// Wall-clock seconds its last evaluation took.
    pub evaluation_seconds: f64,
}

/// One group's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupSnapshot {
    /// The pipeline.
    pub pipeline: String,
    /// The transform.
    pub transform: String,
    /// The rule file (`inline` for rules in the pipeline).
    pub file: String,
    /// The group's name.
    pub name: String,
    /// Interval, ms.
    pub interval: i64,
    /// Series limit per rule (0: none).
    pub limit: u64,
    /// Its rules, in order.
    pub rules: Vec<RuleSnapshot>,
    /// Event time of its last step (ms), if it ran.
    pub last_evaluation: Option<i64>,
    /// Wall-clock seconds its last step took.
    pub evaluation_seconds: f64,
}

type Key = (String, String, String, String);

/// The groups of every `alert` transform of the process.
#[derive(Debug, Default)]
pub struct RulesHub {
    groups: Mutex<BTreeMap<Key, (u64, GroupSnapshot)>>,
    next: AtomicU64,
}

impl RulesHub {
    /// A token that identifies one publisher (an operator instance), so that
    /// a replaced pipeline's operator, dropped after its successor
    /// published, removes only its own groups.
    pub fn publisher(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes a group's state.
    pub fn publish(&self, publisher: u64, group: GroupSnapshot) {
        let key = (
            group.pipeline.clone(),
            group.transform.clone(),
            group.file.clone(),
            group.name.clone(),
        );
        self.lock().insert(key, (publisher, group));
    }

    /// Removes what `publisher` published.
    pub fn withdraw(&self, publisher: u64) {
        self.lock().retain(|_, (p, _)| *p != publisher);
    }

    /// Every group, by pipeline, transform, file and name.
    pub fn groups(&self) -> Vec<GroupSnapshot> {
        self.lock().values().map(|(_, g)| g.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, (u64, GroupSnapshot)>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(pipeline: &str, name: &str) -> GroupSnapshot {
        GroupSnapshot {
            pipeline: pipeline.into(),
            transform: "rules".into(),
            file: "inline".into(),
            name: name.into(),
            interval: 60_000,
            limit: 0,
            rules: Vec::new(),
            last_evaluation: None,
            evaluation_seconds: 0.0,
        }
    }

    #[test]
    fn a_replaced_publisher_removes_only_its_own_groups() {
        let hub = RulesHub::default();
        let (old, new) = (hub.publisher(), hub.publisher());
        hub.publish(old, group("p", "a"));
        hub.publish(old, group("p", "b"));
        hub.publish(new, group("p", "a"));
        hub.withdraw(old);
        let names: Vec<String> = hub.groups().into_iter().map(|g| g.name).collect();
        assert_eq!(names, vec!["a"]);
    }
}
