//! One evaluation unit (groups evaluated together) as a plain state
//! machine: samples in with the watermark they entered at, steps out once
//! the watermark has passed them. The operator is a thin wrapper around
//! it; tests drive it directly.

use tidemark_engine::Sample;
use tidemark_engine::Series;
use tidemark_engine::time::Time;
use tidemark_promql::{MemStore, Point};

use tidemark_engine::alert::{Alert, AlertState};

use super::Instance;
use super::group::{GroupState, Output, SavedGroup};
use super::operator::AlertSpec;
use super::template::Cache;

/// A unit's groups, the samples they can still read, and each group's
/// next step.
pub struct UnitState {
    store: MemStore,
    groups: Vec<GroupState>,
    next: Vec<Option<i64>>,
    first: Option<i64>,
    last: i64,
    retention: i64,
    cache: Cache,
    /// Active alerts of rules a migration removed, to be resolved.
    retired: Vec<Instance>,
}

/// What a checkpoint keeps of a unit: the samples its rules can still
/// read, its groups' state and their next steps.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedUnit {
    store: Vec<(Series, Vec<Point>)>,
    groups: Vec<SavedGroup>,
    next: Vec<Option<i64>>,
    first: Option<i64>,
    last: i64,
}

/// Which groups a saved unit held, each with its rules' identities (see
/// [`rule_identity`]): what lets its state be carried into a changed
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitNames {
    /// `(file, group, rule identities)`, in the unit's order.
    groups: Vec<(String, String, Vec<String>)>,
}

impl UnitNames {
    /// The groups, as `(file, name)`.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str)> {
        self.groups.iter().map(|(f, n, _)| (f.as_str(), n.as_str()))
    }
}

impl SavedUnit {
    /// The active alerts of its `g`th group.
    pub fn active(&self, g: usize) -> Vec<Instance> {
        self.groups
            .get(g)
            .map(|group| group.active().cloned().collect())
            .unwrap_or_default()
    }
}

/// An alert that was active, resolved at `at` (its rule or its group's
/// state is gone).
pub fn resolved(mut a: Instance, at: i64, external_url: &str) -> Alert {
    a.state = AlertState::Resolved;
    a.resolved_at = Some(at);
    super::group::alert(&a, at, external_url)
}

/// What carries a rule's state into a changed configuration, as
/// Prometheus's rule manager does on a reload: its kind, its name and its
/// labels (an edited expression, `for` or annotation keeps its state).
pub fn rule_identity(rule: &super::rules::Rule) -> String {
    let kind = match rule.kind {
        super::rules::RuleKind::Record => "record",
        super::rules::RuleKind::Alert { .. } => "alert",
    };
    format!("{kind} {} {:?}", rule.name, rule.labels)
}

/// Whether a sample that entered at watermark `time` comes too late for
/// the steps it belongs to: its time plus `lateness` is behind the
/// watermark, so those steps may have run.
pub fn is_late(sample: &Sample, time: Time, lateness: i64) -> bool {
    sample.timestamp.saturating_add(lateness) < time.min(i64::MAX as Time) as i64
}

impl UnitState {
    /// Unit `unit` of `spec`, with no samples yet.
    pub fn new(spec: &AlertSpec, unit: usize) -> UnitState {
        let u = &spec.units[unit];
        UnitState {
            store: MemStore::default(),
            groups: u
                .groups
                .iter()
                .map(|g| GroupState::new(std::sync::Arc::clone(&spec.groups[*g])))
                .collect(),
            next: vec![None; u.groups.len()],
            first: None,
            last: i64::MIN,
            retention: u.retention,
            cache: Cache::default(),
            retired: Vec::new(),
        }
    }

    /// Keeps a sample (one that is not late).
    pub fn insert(&mut self, sample: &Sample) {
        self.store
            .insert(&sample.series, sample.timestamp, sample.value);
        self.first = Some(
            self.first
                .map_or(sample.timestamp, |f| f.min(sample.timestamp)),
        );
        self.last = self.last.max(sample.timestamp);
    }

    /// Its state, for a checkpoint.
    pub fn save(&self) -> SavedUnit {
        SavedUnit {
            store: self.store.export(),
            groups: self.groups.iter().map(GroupState::save).collect(),
            next: self.next.clone(),
            first: self.first,
            last: self.last,
        }
    }

    /// Its groups and their rules' identities, saved beside its state.
    pub fn names(&self) -> UnitNames {
        UnitNames {
            groups: self
                .groups
                .iter()
                .map(|g| {
                    (
                        g.group.file.clone(),
                        g.group.name.clone(),
                        g.group.rules.iter().map(rule_identity).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Whether it evaluates a group of `file` named `name`.
    pub fn has_group(&self, file: &str, name: &str) -> bool {
        self.groups
            .iter()
            .any(|g| g.group.file == file && g.group.name == name)
    }

    /// Carries the state of a unit of another configuration (`names` says
    /// what it held) into this one: each of its groups that this unit
    /// evaluates too (same file and name) gets back its next step and the
    /// state of every rule of the same identity; its samples are kept
    /// whole (rules new to the unit read what the old ones kept, the rest
    /// from now on). A group new to the unit takes its first step at the
    /// carried groups' next one. Returns how many groups were carried.
    pub fn migrate(&mut self, saved: &SavedUnit, names: &UnitNames) -> usize {
        let mut carried = 0;
        for ((file, name, rules), (group, next)) in names
            .groups
            .iter()
            .zip(saved.groups.iter().zip(&saved.next))
        {
            let Some(g) = self
                .groups
                .iter()
                .position(|g| g.group.file == *file && g.group.name == *name)
            else {
                continue;
            };
            let retired = self.groups[g].migrate(group, rules);
            self.retired.extend(retired);
            self.next[g] = *next;
            carried += 1;
        }
        if carried == 0 {
            return 0;
        }
        for (series, points) in &saved.store {
            for p in points {
                self.store.insert(series, p.t, p.v);
            }
        }
        self.first = match (self.first, saved.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(saved.last);
        if let Some(due) = self.next.iter().flatten().min().copied() {
            for (g, next) in self.next.iter_mut().enumerate() {
                if next.is_none() {
                    let interval = self.groups[g].group.interval;
                    *next = Some(
                        due.div_euclid(interval) * interval
                            + interval * i64::from(due.rem_euclid(interval) != 0),
                    );
                }
            }
        }
        carried
    }

    /// The alerts of rules a migration removed that were active, resolved
    /// at `at`: they are sent once, so that nothing downstream (an
    /// Alertmanager sink that keeps sending what fires) holds them.
    pub fn take_retired(&mut self, at: i64, external_url: &str) -> Vec<Alert> {
        self.retired
            .drain(..)
            .map(|a| resolved(a, at, external_url))
            .collect()
    }

    /// Takes back the state `save` gave (into a unit of the same
    /// configuration, with no samples yet).
    pub fn restore(&mut self, saved: SavedUnit) -> Result<(), String> {
        if saved.groups.len() != self.groups.len() || saved.next.len() != self.groups.len() {
            return Err(format!(
                "the unit has {} groups, its saved state {}",
                self.groups.len(),
                saved.groups.len()
            ));
        }
        for (g, s) in self.groups.iter_mut().zip(saved.groups) {
            g.restore(s)?;
        }
        for (series, points) in &saved.store {
            for p in points {
                self.store.insert(series, p.t, p.v);
            }
        }
        self.next = saved.next;
        self.first = saved.first;
        self.last = saved.last;
        Ok(())
    }

    /// The groups and their state.
    pub fn groups(&self) -> &[GroupState] {
        &self.groups
    }

    /// Runs every step the watermark `frontier` has passed (`lateness`
    /// after it; all remaining steps up to the last sample when the input
    /// ended, `None`), in time order and file order within a step, handing
    /// each step's output to `emit`; then forgets samples no later step
    /// reads. Says whether any step ran.
    pub fn advance(
        &mut self,
        frontier: Option<Time>,
        spec: &AlertSpec,
        emit: &mut impl FnMut(i64, Output),
    ) -> bool {
        let bound = match frontier {
            Some(f) => (f.min(i64::MAX as Time) as i64).saturating_sub(spec.lateness + 1),
            None => self.last,
        };
        let Some(first) = self.first else {
            return false;
        };
        // A group's first step is the first multiple of its interval at or
        // after the earliest sample. It is fixed only once the watermark
        // has passed it: every on-time sample stamped before it has then
        // arrived, so the earliest one is known whatever order the input
        // came in.
        for (g, next) in self.next.iter_mut().enumerate() {
            if next.is_none() {
                let interval = self.groups[g].group.interval;
                let start = first.div_euclid(interval) * interval;
                let start = if start < first {
                    start + interval
                } else {
                    start
                };
                if start <= bound {
                    *next = Some(start);
                }
            }
        }
        let mut stepped = false;
        while let Some((g, t)) = self
            .next
            .iter()
            .enumerate()
            .filter_map(|(g, n)| n.map(|t| (g, t)))
            .filter(|(_, t)| *t <= bound)
            .min_by_key(|(g, t)| (*t, *g))
        {
            let mut out = Output::default();
            self.groups[g].evaluate(
                &mut self.store,
                t,
                &spec.settings,
                &mut self.cache,
                &mut out,
            );
            emit(t, out);
            self.next[g] = Some(t + self.groups[g].group.interval);
            stepped = true;
        }
        let oldest_next = self.next.iter().flatten().min().copied().unwrap_or(bound);
        self.store.trim(oldest_next.saturating_sub(self.retention));
        stepped
    }
}
