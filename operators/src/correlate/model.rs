//! The correlation model, without timely: the topology and what can be
//! reached from each entity, the rules that tie two alert episodes and
//! their score, and [`reference_partition`], a from-scratch computation of
//! the incidents that the incremental operator must always equal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use tidemark_engine::Series;

/// An alert episode: when it started firing (event time, ms) and its
/// series id. Ordered by start, so the least key of an incident is its
/// earliest alert.
pub type EpKey = (u64, u64);

/// A topology entity's id: the XXH3 hash of its sorted `name=value` pairs.
pub type EntityId = u64;

/// A label set naming an entity (`{service: checkout}`).
pub type LabelSet = BTreeMap<String, String>;

/// The id of a label set.
pub fn entity_id(labels: &LabelSet) -> EntityId {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (n, v) in labels {
        hasher.update(n.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(v.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

/// How a label set is written in explanations: `service=checkout`.
pub fn entity_text(labels: &LabelSet) -> String {
    labels
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The dependency graph: `from` depends on (or runs on) `to`. A fault
/// spreads against the edges, from `to` to what depends on it.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// The edges it was made of.
    edges: Vec<(LabelSet, LabelSet)>,
    /// How far reach goes.
    hops: u8,
    /// Entity ids and how they are written.
    names: HashMap<EntityId, String>,
    /// The label names that entities use, each set once (`[service]`,
    /// `[host]`): an alert is projected on each to find its entities.
    shapes: Vec<Vec<String>>,
    /// For each entity, what it reaches along the edges within `hops`,
    /// itself at 0 included: (entity, hops), nearest first.
    reach: HashMap<EntityId, Vec<(EntityId, u8)>>,
}

impl Topology {
    /// The topology of these edges, with reach computed up to `hops`.
    pub fn new(edges: &[(LabelSet, LabelSet)], hops: u8) -> Topology {
        let mut names = HashMap::new();
        let mut shapes: Vec<Vec<String>> = Vec::new();
        let mut out: HashMap<EntityId, Vec<EntityId>> = HashMap::new();
        for (from, to) in edges {
            for e in [from, to] {
                names.entry(entity_id(e)).or_insert_with(|| entity_text(e));
                let shape: Vec<String> = e.keys().cloned().collect();
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
            let targets = out.entry(entity_id(from)).or_default();
            if !targets.contains(&entity_id(to)) {
                targets.push(entity_id(to));
            }
        }
        shapes.sort();
        let mut reach = HashMap::new();
        for &start in names.keys() {
            let mut seen: HashMap<EntityId, u8> = HashMap::from([(start, 0)]);
            let mut queue = VecDeque::from([(start, 0u8)]);
            while let Some((e, d)) = queue.pop_front() {
                if d == hops {
                    continue;
                }
                for &next in out.get(&e).into_iter().flatten() {
                    if let std::collections::hash_map::Entry::Vacant(v) = seen.entry(next) {
                        v.insert(d + 1);
                        queue.push_back((next, d + 1));
                    }
                }
            }
            let mut list: Vec<(EntityId, u8)> = seen.into_iter().collect();
            list.sort_by_key(|&(e, d)| (d, e));
            reach.insert(start, list);
        }
        Topology {
            edges: edges.to_vec(),
            hops,
            names,
            shapes,
            reach,
        }
    }

    /// The edges it was made of.
    pub fn edges(&self) -> &[(LabelSet, LabelSet)] {
        &self.edges
    }

    /// The entities an alert's labels name: every topology entity whose
    /// labels the alert carries with the same values.
    pub fn entities_of(&self, labels: &Series) -> Vec<EntityId> {
        let mut found = Vec::new();
        for shape in &self.shapes {
            let mut projected = LabelSet::new();
            for name in shape {
                match labels.get(name) {
                    Some(v) => {
                        projected.insert(name.clone(), v.to_owned());
                    }
                    None => break,
                }
            }
            if projected.len() == shape.len() {
                let id = entity_id(&projected);
                if self.names.contains_key(&id) {
                    found.push(id);
                }
            }
        }
        found
    }

    /// What `entity` reaches within the hops, itself included.
    pub fn reach(&self, entity: EntityId) -> &[(EntityId, u8)] {
        self.reach.get(&entity).map(Vec::as_slice).unwrap_or(&[])
    }

    /// How an entity is written.
    pub fn name(&self, entity: EntityId) -> &str {
        self.names.get(&entity).map(String::as_str).unwrap_or("?")
    }

    /// How many entities it has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The label-name prefixes of an edge sample's two entities.
pub const FROM_PREFIX: &str = "from_";
/// See [`FROM_PREFIX`].
pub const TO_PREFIX: &str = "to_";

/// The edge an edge sample names: its `from_*` labels (without the
/// prefix) depend on its `to_*` labels; other labels are ignored. `None`
/// when either side has no label.
pub fn edge_of(series: &Series) -> Option<(LabelSet, LabelSet)> {
    let (mut from, mut to) = (LabelSet::new(), LabelSet::new());
    for (n, v) in series.tags() {
        if let Some(n) = n.strip_prefix(FROM_PREFIX) {
            from.insert(n.to_owned(), v.to_owned());
        } else if let Some(n) = n.strip_prefix(TO_PREFIX) {
            to.insert(n.to_owned(), v.to_owned());
        }
    }
    (!from.contains_key("") && !to.contains_key("") && !from.is_empty() && !to.is_empty())
        .then_some((from, to))
}

/// The topology as it changes while the pipeline runs: the edges given at
/// start, plus those edge samples add and take back. Each edge is counted
/// (two series may name one edge); it is in the topology while its count
/// is above zero.
#[derive(Clone, Debug)]
pub struct LiveTopology {
    counts: BTreeMap<(EntityId, EntityId), (LabelSet, LabelSet, isize)>,
    current: Topology,
    dirty: bool,
}

impl LiveTopology {
    /// Starts from `initial`.
    pub fn new(initial: &Topology) -> LiveTopology {
        let mut counts = BTreeMap::new();
        for (from, to) in initial.edges() {
            let slot = counts
                .entry((entity_id(from), entity_id(to)))
                .or_insert_with(|| (from.clone(), to.clone(), 0));
            slot.2 += 1;
        }
        LiveTopology {
            counts,
            current: initial.clone(),
            dirty: false,
        }
    }

    /// Adds (`diff` 1) or takes back (-1) an edge; the topology is made
    /// again at the next [`Self::refresh`] if the set of edges changed.
    pub fn change(&mut self, from: &LabelSet, to: &LabelSet, diff: isize) {
        let key = (entity_id(from), entity_id(to));
        let slot = self
            .counts
            .entry(key)
            .or_insert_with(|| (from.clone(), to.clone(), 0));
        let was = slot.2 > 0;
        slot.2 += diff;
        if was != (slot.2 > 0) {
            self.dirty = true;
        }
        if slot.2 == 0 {
            self.counts.remove(&key);
        }
    }

    /// Makes the topology again if its edges changed; says whether they
    /// did.
    pub fn refresh(&mut self) -> bool {
        if !std::mem::take(&mut self.dirty) {
            return false;
        }
        let edges: Vec<(LabelSet, LabelSet)> = self
            .counts
            .values()
            .filter(|(_, _, n)| *n > 0)
            .map(|(f, t, _)| (f.clone(), t.clone()))
            .collect();
        self.current = Topology::new(&edges, self.current.hops);
        true
    }

    /// The topology as of the last refresh.
    pub fn get(&self) -> &Topology {
        &self.current
    }

    /// Every edge with its count, for a checkpoint.
    pub fn counts(&self) -> Vec<(LabelSet, LabelSet, isize)> {
        self.counts.values().cloned().collect()
    }

    /// Takes the edges and counts of a checkpoint ([`Self::counts`]) in
    /// place of its own, refreshed.
    pub fn restore(&mut self, counts: Vec<(LabelSet, LabelSet, isize)>) {
        self.counts = counts
            .into_iter()
            .map(|(f, t, n)| ((entity_id(&f), entity_id(&t)), (f, t, n)))
            .collect();
        self.dirty = true;
        self.refresh();
    }
}

/// Which ties hold an incident together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// Each episode by its strongest tie upstream (see
    /// [`Rules::strongest`]): an incident is a tree that grows from its
    /// first alert, and an alert that two faults could explain joins one
    /// of them instead of merging them.
    #[default]
    Strongest,
    /// Every tie: incidents are the connected groups of tied episodes.
    All,
}

/// The rules that tie two episodes, with their weights. Two episodes
/// whose starts are at most `window` apart are tied when the sum of the
/// weights of the rules they meet reaches `threshold`; incidents are the
/// groups that the ties `link` chooses hold together.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// How far apart two starts may be (ms).
    pub window: u64,
    /// Topology: a common cause within `hops` (one episode's entity
    /// reaches the other's, or both reach a third, in `d` hops in all).
    pub hops: u8,
    /// Its weight at 0 or 1 hop.
    pub topology_weight: f64,
    /// The factor per further hop.
    pub decay: f64,
    /// How much later an alert may start than the one it is tied to
    /// through the topology, per hop between them (ms): a fault spreads
    /// hop by hop.
    pub max_delay: u64,
    /// How much earlier an alert may start than the one nearer the common
    /// cause it is tied to (ms): a fault spreads from the cause, so the
    /// cause's alert comes first, give or take evaluation jitter.
    pub lead: u64,
    /// Shared labels: both carry every label of `by` with equal values.
    pub by: Vec<String>,
    /// Its weight.
    pub labels_weight: f64,
    /// Time: starts at most `within` apart (ms), for episodes already
    /// tied by another rule.
    pub within: u64,
    /// Its weight.
    pub time_weight: f64,
    /// Co-occurrence learned from history, if on.
    pub together: Option<Together>,
    /// The score that ties two episodes.
    pub threshold: f64,
    /// Which ties hold incidents together.
    pub link: Link,
}

/// The co-occurrence rule: two alerts whose identities have started
/// together (within `within`) at least `min_count` times in the last
/// `history` are tied by `weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct Together {
    /// How close two starts must be to count as firing together (ms).
    pub within: u64,
    /// How many times a pair must have started together.
    pub min_count: u32,
    /// How long a start is remembered (ms).
    pub history: u64,
    /// The weight.
    pub weight: f64,
    /// The labels that make an alert's identity (empty: all of them).
    pub identity: Vec<String>,
}

/// What two episodes have in common, from the keyed rules.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Why {
    /// The topology distance and the common cause, if within the hops.
    pub topology: Option<(u8, EntityId)>,
    /// Whether the `by` labels are equal.
    pub labels: bool,
    /// How many times their identities started together within the
    /// history (0 without the co-occurrence rule).
    pub together: u32,
    /// Whether the later of the two (by [`EpKey`]) is upstream: nearer
    /// the common cause in `topology`. See [`Why::upstream`].
    pub reversed: bool,
}

impl Why {
    /// Of two tied episodes, (upstream, downstream): the one nearer their
    /// common cause in the topology is upstream, as a fault spreads from
    /// it; at equal distances, or tied by other rules alone, the one that
    /// started first.
    pub fn upstream(&self, a: EpKey, b: EpKey) -> (EpKey, EpKey) {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        if self.reversed {
            (second, first)
        } else {
            (first, second)
        }
    }
}

impl Rules {
    /// The score of two episodes with this much in common, their starts
    /// `dt` apart.
    pub fn score(&self, why: &Why, dt: u64) -> f64 {
        if dt > self.window {
            return 0.0;
        }
        let mut score = 0.0;
        if let Some((d, _)) = why.topology {
            score += self.topology_weight * self.decay.powi(i32::from(d.max(1)) - 1);
        }
        if why.labels {
            score += self.labels_weight;
        }
        if let Some(t) = &self.together
            && why.together >= t.min_count
        {
            score += t.weight;
        }
        if score > 0.0 && dt <= self.within {
            score += self.time_weight;
        }
        score
    }

    /// Whether they are tied.
    pub fn ties(&self, why: &Why, dt: u64) -> bool {
        self.score(why, dt) >= self.threshold - 1e-9
    }

    /// Of the ties of episode `down` to the episodes upstream of it, the
    /// one that holds it in its incident with [`Link::Strongest`]: the
    /// highest score, then the fewest hops to the common cause, then the
    /// earliest episode. Choosing the earliest keeps the choice when
    /// later alerts start, so incidents do not flip between two faults.
    pub fn strongest(
        &self,
        down: &EpKey,
        upstream: impl IntoIterator<Item = (EpKey, Why)>,
    ) -> Option<(EpKey, Why)> {
        let rank = |up: &EpKey, why: &Why| {
            (
                self.score(why, up.0.abs_diff(down.0)),
                std::cmp::Reverse(why.topology.map_or(u8::MAX, |(d, _)| d)),
                std::cmp::Reverse(*up),
            )
        };
        upstream.into_iter().max_by(|(ua, wa), (ub, wb)| {
            let (sa, da, ka) = rank(ua, wa);
            let (sb, db, kb) = rank(ub, wb);
            sa.total_cmp(&sb).then(da.cmp(&db)).then(ka.cmp(&kb))
        })
    }

    /// Whether episodes `a` and `b`, `da` and `db` hops from a common
    /// cause, are tied through it: within the hops, started at most
    /// `max_delay` a hop apart, and the one nearer the cause first (up to
    /// `lead`), as a fault spreads from the cause to what depends on it.
    pub fn through(&self, a: &EpKey, da: u8, b: &EpKey, db: u8) -> bool {
        let d = da.saturating_add(db);
        if d > self.hops || a.0.abs_diff(b.0) > self.max_delay * u64::from(d.max(1)) {
            return false;
        }
        let (near, far) = match da.cmp(&db) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => return true,
        };
        near.0 <= far.0.saturating_add(self.lead)
    }

    /// An alert's identity for the co-occurrence rule: the hash of its
    /// `identity` labels (a missing one counts as empty), or of all its
    /// labels.
    pub fn identity(&self, labels: &Series) -> u64 {
        match &self.together {
            Some(t) if !t.identity.is_empty() => {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                for name in &t.identity {
                    hasher.update(labels.get(name).unwrap_or("").as_bytes());
                    hasher.update(&[0xff]);
                }
                hasher.digest()
            }
            _ => labels.id().0,
        }
    }

    /// The hash of an episode's `by` labels, if it has them all.
    pub fn by_key(&self, labels: &Series) -> Option<u64> {
        if self.by.is_empty() {
            return None;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for name in &self.by {
            hasher.update(labels.get(name)?.as_bytes());
            hasher.update(&[0xff]);
        }
        Some(hasher.digest())
    }
}

/// Everything correlation needs, shared by the workers.
#[derive(Debug)]
pub struct Model {
    /// The dependency graph.
    pub topology: Topology,
    /// The rules.
    pub rules: Rules,
}

/// The keys an episode is joined on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Keys {
    /// Its own entities.
    pub entities: Vec<EntityId>,
    /// Every entity it reaches (a possible common cause) and in how many
    /// hops, the least for each.
    pub causes: Vec<(EntityId, u8)>,
    /// Its `by` labels' hash.
    pub by: Option<u64>,
    /// Its identity for the co-occurrence rule.
    pub identity: u64,
}

impl Model {
    /// The join keys of an episode with these labels.
    pub fn keys(&self, labels: &Series) -> Keys {
        self.keys_in(&self.topology, labels)
    }

    /// [`Self::keys`] in another topology (one that changed since start).
    pub fn keys_in(&self, topology: &Topology, labels: &Series) -> Keys {
        let entities = topology.entities_of(labels);
        let mut best: HashMap<EntityId, u8> = HashMap::new();
        for &e in &entities {
            for &(c, d) in topology.reach(e) {
                let slot = best.entry(c).or_insert(d);
                *slot = (*slot).min(d);
            }
        }
        let mut causes: Vec<(EntityId, u8)> = best.into_iter().collect();
        causes.sort_unstable();
        Keys {
            entities,
            causes,
            by: self.rules.by_key(labels),
            identity: self.rules.identity(labels),
        }
    }

    /// What episodes `ka` and `kb` have in common (the topology part: the
    /// nearest common cause they are tied through, the least id among
    /// equals).
    pub fn why(&self, ka: &EpKey, a: &Keys, kb: &EpKey, b: &Keys) -> Why {
        let mut topology: Option<(u8, EntityId)> = None;
        let mut reversed = false;
        for &(c, da) in &a.causes {
            if let Ok(i) = b.causes.binary_search_by_key(&c, |&(e, _)| e) {
                let db = b.causes[i].1;
                let d = da + db;
                if self.rules.through(ka, da, kb, db) && topology.is_none_or(|t| (d, c) < t) {
                    topology = Some((d, c));
                    reversed = nearer_is_later(ka, da, kb, db);
                }
            }
        }
        Why {
            topology,
            labels: a.by.is_some() && a.by == b.by,
            together: 0,
            reversed,
        }
    }
}

/// Whether, of episodes `a` and `b`, `da` and `db` hops from their common
/// cause, the one nearer it is the later by [`EpKey`] ([`Why::reversed`]).
pub fn nearer_is_later(a: &EpKey, da: u8, b: &EpKey, db: u8) -> bool {
    match da.cmp(&db) {
        std::cmp::Ordering::Less => a > b,
        std::cmp::Ordering::Greater => b > a,
        std::cmp::Ordering::Equal => false,
    }
}

/// The incidents of these episodes computed from scratch: every pair
/// compared, and the ties that [`Rules::link`] chooses joined
/// (union-find). Each incident is its members
/// in order, and incidents are ordered by their earliest member.
pub fn reference_partition(model: &Model, episodes: &[(EpKey, Arc<Keys>)]) -> Vec<Vec<EpKey>> {
    reference_partition_with(model, episodes, &|_, _| 0)
}

/// [`reference_partition`] with co-occurrence: `together(a, b)` is how
/// many times identities `a` and `b` started together in the history.
pub fn reference_partition_with(
    model: &Model,
    episodes: &[(EpKey, Arc<Keys>)],
    together: &dyn Fn(u64, u64) -> u32,
) -> Vec<Vec<EpKey>> {
    let mut parent: Vec<usize> = (0..episodes.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let index: HashMap<EpKey, usize> = episodes
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (*key, i))
        .collect();
    let mut joined: Vec<(usize, usize)> = Vec::new();
    // Each episode's ties to those upstream of it.
    let mut upstream: HashMap<EpKey, Vec<(EpKey, Why)>> = HashMap::new();
    for i in 0..episodes.len() {
        for j in i + 1..episodes.len() {
            let (a, b) = (&episodes[i], &episodes[j]);
            let dt = a.0.0.abs_diff(b.0.0);
            let mut why = model.why(&a.0, &a.1, &b.0, &b.1);
            if a.1.identity != b.1.identity {
                why.together = together(a.1.identity, b.1.identity);
            }
            if model.rules.ties(&why, dt) {
                match model.rules.link {
                    Link::All => joined.push((i, j)),
                    Link::Strongest => {
                        let (up, down) = why.upstream(a.0, b.0);
                        upstream.entry(down).or_default().push((up, why));
                    }
                }
            }
        }
    }
    for (down, ups) in upstream {
        if let Some((up, _)) = model.rules.strongest(&down, ups) {
            joined.push((index[&down], index[&up]));
        }
    }
    for (i, j) in joined {
        let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
        parent[ri.max(rj)] = ri.min(rj);
    }
    let mut groups: BTreeMap<usize, Vec<EpKey>> = BTreeMap::new();
    for (i, (key, _)) in episodes.iter().enumerate() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(*key);
    }
    let mut out: Vec<Vec<EpKey>> = groups
        .into_values()
        .map(|mut g| {
            g.sort_unstable();
            g
        })
        .collect();
    out.sort();
    out
}
