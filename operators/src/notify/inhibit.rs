//! Inhibition: an alert that matches a rule's target matchers is muted
//! while an alert that matches its source matchers fires with the same
//! values of the rule's `equal` labels. As in Alertmanager, when the muted
//! alert matches the source matchers too, sources that also match the
//! target matchers do not count (an alert never mutes itself, and two such
//! alerts do not mute each other).
//!
//! The state is the set of firing sources per rule at the current event
//! time, so a decision depends only on what fired up to that time, never
//! on the order alerts arrived in (Alertmanager decides on arrival, and a
//! source that arrives a few milliseconds after its target fails to mute
//! it).

use std::collections::{BTreeMap, HashMap};

use tidemark_engine::notify::LabelMap;

use super::amconfig::InhibitRule;
use super::matcher::all_match;

/// A rule's firing sources: `equal` values -> source fingerprint ->
/// whether that source matches the rule's target matchers too.
pub type Sources = HashMap<Vec<String>, BTreeMap<u64, bool>>;

/// Firing sources of each rule, indexed by their `equal` label values.
#[derive(Debug, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
    /// Per rule.
    sources: Vec<Sources>,
}

impl Inhibitor {
    /// An inhibitor for `rules`.
    pub fn new(rules: Vec<InhibitRule>) -> Inhibitor {
        let sources = vec![HashMap::new(); rules.len()];
        Inhibitor { rules, sources }
    }

    fn key(rule: &InhibitRule, labels: &LabelMap) -> Vec<String> {
        rule.equal
            .iter()
            .map(|n| labels.get(n).cloned().unwrap_or_default())
            .collect()
    }

    /// Records that the alert `fp` with `labels` fires (`true`) or no
    /// longer does.
    pub fn set(&mut self, fp: u64, labels: &LabelMap, firing: bool) {
        for (rule, sources) in self.rules.iter().zip(&mut self.sources) {
            if !all_match(&rule.source, labels) {
                continue;
            }
            let key = Self::key(rule, labels);
            if firing {
                let both = all_match(&rule.target, labels);
                sources.entry(key).or_default().insert(fp, both);
            } else if let Some(set) = sources.get_mut(&key) {
                set.remove(&fp);
                if set.is_empty() {
                    sources.remove(&key);
                }
            }
        }
    }

    /// The firing sources, for a checkpoint.
    pub fn sources(&self) -> &[Sources] {
        &self.sources
    }

    /// Takes back the firing sources a checkpoint held (rule by rule; the
    /// rules are the same, or the route's state would not be restored).
    pub fn restore(&mut self, sources: Vec<Sources>) {
        if sources.len() == self.rules.len() {
            self.sources = sources;
        }
    }

    /// Whether an alert with `labels` is muted now.
    pub fn mutes(&self, labels: &LabelMap) -> bool {
        self.rules.iter().zip(&self.sources).any(|(rule, sources)| {
            if !all_match(&rule.target, labels) {
                return false;
            }
            let two_sided = all_match(&rule.source, labels);
            sources
                .get(&Self::key(rule, labels))
                .is_some_and(|set| set.values().any(|both| !(two_sided && *both)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::matcher::parse;
    use tidemark_engine::notify::labels;

    #[test]
    fn mutes_targets_with_equal_labels_while_the_source_fires() {
        let rule = InhibitRule {
            source: parse(r#"severity="critical""#).unwrap(),
            target: parse(r#"severity="warning""#).unwrap(),
            equal: vec!["cluster".into()],
        };
        let mut ih = Inhibitor::new(vec![rule]);
        let critical = labels(&[("severity", "critical"), ("cluster", "a")]);
        let warning_a = labels(&[("severity", "warning"), ("cluster", "a")]);
        let warning_b = labels(&[("severity", "warning"), ("cluster", "b")]);
        assert!(!ih.mutes(&warning_a));
        ih.set(1, &critical, true);
        assert!(ih.mutes(&warning_a));
        assert!(!ih.mutes(&warning_b));
        assert!(!ih.mutes(&critical));
        ih.set(1, &critical, false);
        assert!(!ih.mutes(&warning_a));
    }

    #[test]
    fn an_alert_matching_both_sides_does_not_mute_its_kind() {
        let rule = InhibitRule {
            source: parse(r#"alertname="Down""#).unwrap(),
            target: parse(r#"alertname=~"Down|Slow""#).unwrap(),
            equal: vec![],
        };
        let mut ih = Inhibitor::new(vec![rule]);
        let down = labels(&[("alertname", "Down"), ("host", "1")]);
        ih.set(1, &down, true);
        assert!(!ih.mutes(&down));
        assert!(!ih.mutes(&labels(&[("alertname", "Down"), ("host", "2")])));
        assert!(ih.mutes(&labels(&[("alertname", "Slow")])));
    }
}
