//! The incident keeper: one per pipeline (worker 0). It is given, in event
//! time, the episodes and the incremental results of the dataflow (each
//! episode's component, named by its earliest member, and the ties between
//! episodes), and keeps the incidents: stable ids, members, explanations,
//! the probable root, and one record per change.
//!
//! Ids: an incident's id is made from its first alert. A component that
//! appears (a new alert, a split, or an incident whose earliest member
//! retired) takes the oldest id its members had that no other incident
//! holds, else a new one; so an incident keeps its id when it grows, and
//! the older one survives a merge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidemark_engine::incident::{Incident, IncidentStatus, Member};
use tidemark_engine::{Sample, Series};

use super::model::{EntityId, EpKey, LabelSet, LiveTopology, Model, Why};

/// An episode the keeper knows.
#[derive(Clone, Debug)]
struct Episode {
    labels: Series,
    entities: Vec<EntityId>,
    causes: Vec<(EntityId, u8)>,
    end: Option<u64>,
    /// Its component (the least key of it), once the dataflow said.
    root: Option<EpKey>,
}

/// An incident the keeper holds.
#[derive(Clone, Debug)]
struct Held {
    root: EpKey,
    opened_at: u64,
    /// The last record sent, to send only changes.
    last: Option<Incident>,
}

/// The keeper's state.
#[derive(Debug)]
pub struct Keeper {
    model: Arc<Model>,
    /// The topology as of the last step (edge samples change it).
    topology: LiveTopology,
    episodes: HashMap<EpKey, Episode>,
    /// Components: root -> members.
    components: BTreeMap<EpKey, BTreeSet<EpKey>>,
    /// Ties between episodes, both ways.
    ties: HashMap<EpKey, BTreeMap<EpKey, Why>>,
    /// Incident id by component root, and the incidents.
    by_root: HashMap<EpKey, String>,
    incidents: HashMap<String, Held>,
    /// The incident each episode belonged to after the last step.
    id_of: HashMap<EpKey, String>,
    /// Roots whose component may have changed since the last step, with
    /// the members they had before it.
    touched: BTreeMap<EpKey, BTreeSet<EpKey>>,
}

impl Keeper {
    /// An empty keeper.
    pub fn new(model: Arc<Model>) -> Keeper {
        Keeper {
            topology: LiveTopology::new(&model.topology),
            model,
            episodes: HashMap::new(),
            components: BTreeMap::new(),
            ties: HashMap::new(),
            by_root: HashMap::new(),
            incidents: HashMap::new(),
            id_of: HashMap::new(),
            touched: BTreeMap::new(),
        }
    }

    fn touch(&mut self, root: EpKey) {
        if !self.touched.contains_key(&root) {
            let before = self.components.get(&root).cloned().unwrap_or_default();
            self.touched.insert(root, before);
        }
    }

    fn touch_member(&mut self, key: EpKey) {
        if let Some(root) = self.episodes.get(&key).and_then(|e| e.root) {
            self.touch(root);
        }
    }

    /// An edge was added (`diff` 1) or taken back (-1); see
    /// [`Self::topology_changed`].
    pub fn edge(&mut self, from: &LabelSet, to: &LabelSet, diff: isize) {
        self.topology.change(from, to, diff);
    }

    /// After the edges of a step: if the topology changed, every
    /// episode's entities and causes are found again, and their incidents
    /// told (their explanations may change even when the members do not).
    pub fn topology_changed(&mut self) {
        if !self.topology.refresh() {
            return;
        }
        let mut roots = Vec::new();
        for e in self.episodes.values_mut() {
            let keys = self.model.keys_in(self.topology.get(), &e.labels);
            if keys.entities != e.entities || keys.causes != e.causes {
                e.entities = keys.entities;
                e.causes = keys.causes;
                roots.extend(e.root);
            }
        }
        for root in roots {
            self.touch(root);
        }
    }

    /// An episode started.
    pub fn started(&mut self, key: EpKey, labels: Series) {
        let keys = self.model.keys_in(self.topology.get(), &labels);
        self.episodes.insert(
            key,
            Episode {
                labels,
                entities: keys.entities,
                causes: keys.causes,
                end: None,
                root: None,
            },
        );
    }

    /// An episode ended.
    pub fn ended(&mut self, key: EpKey, end: u64) {
        if let Some(e) = self.episodes.get_mut(&key) {
            e.end = Some(end);
        }
        self.touch_member(key);
    }

    /// An episode retired (its membership is taken back by the dataflow
    /// at the same time).
    pub fn retired(&mut self, key: EpKey) {
        self.touch_member(key);
        self.episodes.remove(&key);
        self.id_of.remove(&key);
    }

    /// A change of an episode's component.
    pub fn member(&mut self, key: EpKey, root: EpKey, diff: isize) {
        self.touch(root);
        let members = self.components.entry(root).or_default();
        if diff > 0 {
            members.insert(key);
            if let Some(e) = self.episodes.get_mut(&key) {
                e.root = Some(root);
            }
        } else {
            members.remove(&key);
            if members.is_empty() {
                self.components.remove(&root);
            }
            if let Some(e) = self.episodes.get_mut(&key)
                && e.root == Some(root)
            {
                e.root = None;
            }
        }
    }

    /// A change of a tie between two episodes.
    pub fn tie(&mut self, a: EpKey, b: EpKey, why: Why, diff: isize) {
        for (x, y) in [(a, b), (b, a)] {
            let map = self.ties.entry(x).or_default();
            if diff > 0 {
                map.insert(y, why);
            } else if map.get(&y) == Some(&why) {
                map.remove(&y);
                if map.is_empty() {
                    self.ties.remove(&x);
                }
            }
        }
        self.touch_member(a);
        self.touch_member(b);
    }

    /// The incident an episode belongs to, as of the last step.
    pub fn incident_of(&self, key: &EpKey) -> Option<&str> {
        self.id_of.get(key).map(String::as_str)
    }

    /// The `ALERTS_INCIDENT` sample for a firing `ALERTS` sample of
    /// episode `key`, as of the last step.
    pub fn label(&self, key: &EpKey, sample: &Sample) -> Option<Sample> {
        let id = self.incident_of(key)?;
        let series = Series::new(
            "ALERTS_INCIDENT",
            sample
                .series
                .tags()
                .filter(|(n, _)| *n != "alertstate" && *n != "incident")
                .chain([("incident", id)]),
        );
        Some(Sample::new(series, sample.timestamp, 1.0))
    }

    /// The components now, each its members in order, ordered by their
    /// earliest member (to compare with the reference).
    pub fn partition(&self) -> Vec<Vec<EpKey>> {
        self.components
            .values()
            .map(|m| m.iter().copied().collect())
            .collect()
    }

    /// How many incidents are held.
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    /// How many episodes are held.
    pub fn episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Its state, for a checkpoint (between steps).
    pub fn snapshot(&self) -> Saved {
        let mut episodes: Vec<_> = self
            .episodes
            .iter()
            .map(|(k, e)| (*k, e.labels.clone(), e.end, e.root))
            .collect();
        episodes.sort_by_key(|e| e.0);
        let mut ties: Vec<_> = self
            .ties
            .iter()
            .flat_map(|(a, m)| m.iter().map(move |(b, why)| (*a, *b, *why)))
            .filter(|(a, b, _)| a < b)
            .collect();
        ties.sort_by_key(|(a, b, _)| (*a, *b));
        let mut incidents: Vec<_> = self
            .incidents
            .iter()
            .map(|(id, h)| {
                // (Records skip absent fields: bincode cannot read them.)
                let last = h.last.as_ref().map(|i| {
                    serde_json::to_string(i).unwrap_or_else(|e| unreachable!("records encode: {e}"))
                });
                (id.clone(), h.root, h.opened_at, last)
            })
            .collect();
        incidents.sort_by(|a, b| a.0.cmp(&b.0));
        let mut id_of: Vec<_> = self.id_of.iter().map(|(k, id)| (*k, id.clone())).collect();
        id_of.sort();
        let mut by_root: Vec<_> = self
            .by_root
            .iter()
            .map(|(k, id)| (*k, id.clone()))
            .collect();
        by_root.sort();
        Saved {
            edges: self.topology.counts(),
            episodes,
            components: self
                .components
                .iter()
                .map(|(r, m)| (*r, m.iter().copied().collect()))
                .collect(),
            ties,
            by_root,
            incidents,
            id_of,
        }
    }

    /// Takes the state of a checkpoint ([`Self::snapshot`]) in place of
    /// its own.
    pub fn restore(&mut self, saved: Saved) -> Result<(), String> {
        self.topology.restore(saved.edges);
        self.episodes = saved
            .episodes
            .into_iter()
            .map(|(key, labels, end, root)| {
                let keys = self.model.keys_in(self.topology.get(), &labels);
                let e = Episode {
                    labels,
                    entities: keys.entities,
                    causes: keys.causes,
                    end,
                    root,
                };
                (key, e)
            })
            .collect();
        self.components = saved
            .components
            .into_iter()
            .map(|(r, m)| (r, m.into_iter().collect()))
            .collect();
        self.ties.clear();
        for (a, b, why) in saved.ties {
            self.ties.entry(a).or_default().insert(b, why);
            self.ties.entry(b).or_default().insert(a, why);
        }
        self.by_root = saved.by_root.into_iter().collect();
        self.incidents.clear();
        for (id, root, opened_at, last) in saved.incidents {
            let last = match last {
                Some(text) => Some(serde_json::from_str(&text).map_err(|e| e.to_string())?),
                None => None,
            };
            let held = Held {
                root,
                opened_at,
                last,
            };
            self.incidents.insert(id, held);
        }
        self.id_of = saved.id_of.into_iter().collect();
        self.touched.clear();
        Ok(())
    }

    /// The last record of every incident held, oldest first (to show
    /// them again after a restore).
    pub fn records(&self) -> Vec<Incident> {
        let mut out: Vec<Incident> = self
            .incidents
            .values()
            .filter_map(|h| h.last.clone())
            .collect();
        out.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
        out
    }

    /// Ends the step at `at`: assigns ids to the components that changed
    /// and returns one record per incident that changed.
    pub fn finish_step(&mut self, at: u64) -> Vec<Incident> {
        let touched = std::mem::take(&mut self.touched);
        if touched.is_empty() {
            return Vec::new();
        }
        // Ids held by components that still exist and did not change root.
        let mut freed: Vec<String> = Vec::new();
        for root in touched.keys() {
            if !self.components.contains_key(root)
                && let Some(id) = self.by_root.remove(root)
            {
                freed.push(id);
            }
        }
        let claimed: BTreeSet<String> = self.by_root.values().cloned().collect();
        let mut out = Vec::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        // New incidents, and the incident each split from.
        let mut splits: HashMap<String, Option<String>> = HashMap::new();
        // Components that appeared, earliest first, take the oldest free
        // id their members had.
        for root in touched.keys() {
            let Some(members) = self.components.get(root) else {
                continue;
            };
            if self.by_root.contains_key(root) {
                continue;
            }
            let previous: BTreeSet<&String> =
                members.iter().filter_map(|m| self.id_of.get(m)).collect();
            let inherit = previous
                .iter()
                .filter(|id| !claimed.contains(**id) && !taken.contains(**id))
                .filter_map(|id| {
                    self.incidents
                        .get(*id)
                        .map(|h| (h.opened_at, (*id).clone()))
                })
                .min();
            let (id, split_from) = match inherit {
                Some((_, id)) => (id, None),
                None => {
                    let id = new_id(*root, at);
                    let from = previous
                        .iter()
                        .filter_map(|id| {
                            self.incidents
                                .get(*id)
                                .map(|h| (h.opened_at, (*id).clone()))
                        })
                        .min()
                        .map(|(_, id)| id);
                    (id, from)
                }
            };
            taken.insert(id.clone());
            self.by_root.insert(*root, id.clone());
            let held = self.incidents.entry(id.clone()).or_insert(Held {
                root: *root,
                opened_at: root.0,
                last: None,
            });
            held.root = *root;
            held.opened_at = held.opened_at.min(root.0);
            if held.last.is_none() {
                splits.insert(id, split_from);
            }
        }
        // Freed ids not taken again: merged into where their members went,
        // or retired.
        for id in freed {
            if taken.contains(&id) {
                continue;
            }
            let Some(held) = self.incidents.remove(&id) else {
                continue;
            };
            let before = touched.get(&held.root).cloned().unwrap_or_default();
            let mut into: BTreeMap<String, usize> = BTreeMap::new();
            for m in &before {
                if let Some(root) = self.episodes.get(m).and_then(|e| e.root)
                    && let Some(other) = self.by_root.get(&root)
                {
                    *into.entry(other.clone()).or_default() += 1;
                }
            }
            let merged_into = into
                .into_iter()
                .max_by_key(|(id, n)| (*n, std::cmp::Reverse(id.clone())))
                .map(|(id, _)| id);
            let status = if merged_into.is_some() {
                IncidentStatus::Merged
            } else {
                IncidentStatus::Retired
            };
            out.push(Incident {
                id,
                status,
                merged_into,
                split_from: None,
                opened_at: held.opened_at as i64,
                at: at as i64,
                members: Vec::new(),
                root: String::new(),
                root_reason: String::new(),
                summary: String::new(),
            });
        }
        // Every component that changed: its record, if it differs.
        for root in touched.keys() {
            let Some(id) = self.by_root.get(root).cloned() else {
                continue;
            };
            if let Some(members) = self.components.get(root) {
                for m in members {
                    self.id_of.insert(*m, id.clone());
                }
            }
            let mut record = self.record(&id, at);
            let held = self.incidents.get_mut(&id).expect("held");
            let status = match &held.last {
                None => IncidentStatus::Opened,
                Some(_) if record.status == IncidentStatus::Resolved => IncidentStatus::Resolved,
                Some(_) => IncidentStatus::Updated,
            };
            let changed = held.last.as_ref().is_none_or(|last| {
                last.members != record.members
                    || last.root != record.root
                    || (last.status == IncidentStatus::Resolved)
                        != (status == IncidentStatus::Resolved)
            });
            if changed {
                record.status = status;
                record.split_from = splits.remove(&id).flatten();
                held.last = Some(record.clone());
                out.push(record);
            }
        }
        out
    }

    /// The incident `id` as it is now (status `opened`, or `resolved` when
    /// every member has ended).
    fn record(&self, id: &str, at: u64) -> Incident {
        let held = &self.incidents[id];
        let members: Vec<EpKey> = self
            .components
            .get(&held.root)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        let topology = self.topology.get();
        let mut list = Vec::with_capacity(members.len());
        let (mut listed, mut partners) = (Vec::new(), Vec::new());
        let mut all_ended = true;
        for key in &members {
            let Some(e) = self.episodes.get(key) else {
                continue;
            };
            all_ended &= e.end.is_some();
            let (tied_by, partner) = self.tied_by(key, e, &members);
            listed.push(*key);
            partners.push(partner);
            list.push(Member {
                labels: e
                    .labels
                    .tags()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
                starts_at: key.0 as i64,
                ends_at: e.end.map(|t| t as i64),
                entity: e.entities.first().map(|&x| topology.name(x).to_owned()),
                tied_by,
                tied_to: None,
            });
        }
        for (m, partner) in list.iter_mut().zip(partners) {
            m.tied_to = partner.and_then(|p| listed.iter().position(|k| *k == p));
        }
        let (root, root_reason) = self.root(&members);
        let entities: BTreeSet<&str> = list.iter().filter_map(|m| m.entity.as_deref()).collect();
        let summary = format!(
            "{} alert{} on {} entit{} since {}; probable root {} ({})",
            list.len(),
            if list.len() == 1 { "" } else { "s" },
            entities.len(),
            if entities.len() == 1 { "y" } else { "ies" },
            rfc3339(held.opened_at),
            root,
            root_reason,
        );
        Incident {
            id: id.to_owned(),
            status: if all_ended && !list.is_empty() {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Opened
            },
            merged_into: None,
            split_from: None,
            opened_at: held.opened_at as i64,
            at: at as i64,
            members: list,
            root,
            root_reason,
            summary,
        }
    }

    /// Why `key` belongs: its strongest tie to a member upstream of it
    /// (see [`Why::upstream`]), or for the first of a chain its strongest
    /// to any member, in words, and that member.
    fn tied_by(&self, key: &EpKey, e: &Episode, members: &[EpKey]) -> (String, Option<EpKey>) {
        let Some(ties) = self.ties.get(key) else {
            return (String::new(), None);
        };
        let rules = &self.model.rules;
        let best = ties
            .iter()
            .filter(|(other, _)| members.binary_search(other).is_ok())
            .map(|(other, why)| {
                let dt = key.0.abs_diff(other.0);
                let upstream = why.upstream(*key, *other).0 == *other;
                (
                    upstream,
                    rules.score(why, dt),
                    std::cmp::Reverse(*other),
                    *why,
                )
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        let Some((_, score, std::cmp::Reverse(other), why)) = best else {
            return (String::new(), None);
        };
        let Some(o) = self.episodes.get(&other) else {
            return (String::new(), None);
        };
        let mut reasons = Vec::new();
        if let Some((d, via)) = why.topology {
            let topology = self.topology.get();
            let hops = format!("{d} hop{}", plural(d));
            let mine = e.entities.first().map(|&x| topology.name(x));
            let theirs = o.entities.first().map(|&x| topology.name(x));
            let via = topology.name(via);
            reasons.push(if d == 0 {
                format!("same entity {via}")
            } else if mine == Some(via) {
                format!("{} depends on it ({hops})", theirs.unwrap_or("?"))
            } else if theirs == Some(via) {
                format!("depends on {via} ({hops})")
            } else {
                format!("common cause {via} ({hops})")
            });
        }
        if why.labels {
            reasons.push(format!("same {}", rules.by.join(",")));
        }
        if let Some(t) = &rules.together
            && why.together >= t.min_count
        {
            reasons.push(format!(
                "fired together {} times in {}",
                why.together,
                short_duration(t.history)
            ));
        }
        let dt = key.0.abs_diff(other.0);
        let when = if key.0 >= other.0 { "after" } else { "before" };
        let text = format!(
            "tied to {}: {}; started {} {when} (score {:.2})",
            alert_text(&o.labels),
            reasons.join(" and "),
            short_duration(dt),
            score
        );
        (text, Some(other))
    }

    /// The probable root: the entity that most members are on or depend
    /// on (the most downstream one on a tie, then the earliest alert's);
    /// without topology, the earliest alert.
    fn root(&self, members: &[EpKey]) -> (String, String) {
        let topology = self.topology.get();
        let mut candidates: BTreeMap<EntityId, (usize, usize, u64)> = BTreeMap::new();
        for key in members {
            let Some(e) = self.episodes.get(key) else {
                continue;
            };
            for &(c, _) in &e.causes {
                let entry = candidates.entry(c).or_insert((0, 0, u64::MAX));
                entry.0 += 1;
                if e.entities.contains(&c) {
                    entry.1 += 1;
                    entry.2 = entry.2.min(key.0);
                }
            }
        }
        // Only entities some member is on.
        let best = candidates
            .iter()
            .filter(|(_, (_, on, _))| *on > 0)
            .max_by(|a, b| {
                (a.1.0, std::cmp::Reverse(a.1.2), std::cmp::Reverse(*a.0)).cmp(&(
                    b.1.0,
                    std::cmp::Reverse(b.1.2),
                    std::cmp::Reverse(*b.0),
                ))
            });
        match best {
            Some((&c, &(n, _, _))) if members.len() > 1 => (
                topology.name(c).to_owned(),
                format!("{n} of {} alerts are on it or depend on it", members.len()),
            ),
            _ => match members.first().and_then(|k| self.episodes.get(k)) {
                Some(e) => (alert_text(&e.labels), "the earliest alert".to_owned()),
                None => (String::new(), String::new()),
            },
        }
    }
}

/// A new incident's id, from its first alert and when it appeared (a
/// part that splits off later gets an id of its own): 16 hex digits.
/// The keeper's state in a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    /// The topology's edges with their counts.
    edges: Vec<(LabelSet, LabelSet, isize)>,
    /// (key, labels, when it stopped, component root).
    episodes: Vec<(EpKey, Series, Option<u64>, Option<EpKey>)>,
    /// Component root and members.
    components: Vec<(EpKey, Vec<EpKey>)>,
    /// Each tie once (`a < b`).
    ties: Vec<(EpKey, EpKey, Why)>,
    /// Incident id by component root.
    by_root: Vec<(EpKey, String)>,
    /// (id, root, opened at, last record sent as JSON).
    incidents: Vec<(String, EpKey, u64, Option<String>)>,
    id_of: Vec<(EpKey, String)>,
}

fn new_id(root: EpKey, at: u64) -> String {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&root.0.to_le_bytes());
    bytes[8..16].copy_from_slice(&root.1.to_le_bytes());
    bytes[16..].copy_from_slice(&at.to_le_bytes());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// `alertname{label="value",...}` of an alert's labels.
pub fn alert_text(labels: &Series) -> String {
    let name = labels.get("alertname").unwrap_or("");
    let rest: Vec<String> = labels
        .tags()
        .filter(|(n, _)| *n != "alertname")
        .map(|(n, v)| format!("{n}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

fn plural(n: u8) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `40s`, `3m20s`, `1h2m`.
fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
