//! The `correlate` dataflow.
//!
//! 1. **Episodes** (timely, by series): firing `ALERTS` samples are put in
//!    event-time order up to the watermark less the lateness, and the
//!    [`Tracker`] turns them into episodes that start, end and retire.
//! 2. **Ties** (differential): each episode is a record in collections
//!    keyed by what it can share with another: every entity it reaches in
//!    the topology (a possible common cause) and its `by` labels, each with
//!    its start's time bucket (the window's width). Joins on those keys,
//!    against the same and the next bucket, give the candidate pairs; a
//!    `reduce` per pair keeps what they have in common and the rules'
//!    verdict. An episode's records are retracted when it retires, so the
//!    arrangements hold what is not retired, compacted as the frontier
//!    advances.
//! 3. **Incidents** (differential): the connected components of the ties,
//!    each named by its earliest episode, by label propagation
//!    (`propagate`: an iterative join and `reduce` to the least label).
//! 4. **The keeper** (timely, worker 0): the changes of components and
//!    ties, in event time, become incidents with stable ids and
//!    explanations, and each firing `ALERTS` sample an `ALERTS_INCIDENT`
//!    sample naming its incident at that time.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::{Broadcast, Filter, Map};
use timely::dataflow::operators::{Concat, Concatenate};

use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::checkpoint::{
    Cut, Entry, Gate, Step, by_key, decode, encode, restore_entries, restore_input, restore_stream,
};
use tidemark_engine::incident::{Incident, IncidentBoard};
use tidemark_engine::runtime::{
    AlertStream, IncidentStream, Operator, SampleStream, frontier_min, raise,
};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;
use tidemark_engine::{Sample, Series};

use super::episodes::{Episode, Kind, Saved, Tracker, is_edge, kind};
use super::keeper::Keeper;
use super::model::{EntityId, EpKey, Link, LiveTopology, Model, Why, edge_of, nearer_is_later};

/// How `correlate` runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The model: topology and rules.
    pub model: Arc<Model>,
    /// How long past a sample's time the watermark waits for it (ms).
    pub lateness: u64,
    /// How long without a firing sample ends an episode (ms).
    pub gap: u64,
    /// How long an ended episode is kept (ms).
    pub horizon: u64,
    /// The metric of edge samples on the input, which add edges to the
    /// topology and take them back while the pipeline runs.
    pub edge_metric: Option<String>,
}

/// Episodes keyed for a join: (key and time bucket, episode).
type Keyed<'scope, K, V> = VecCollection<'scope, Time, (K, V), isize>;

/// Pairs of episodes and what they have in common.
type Pairs<'scope> = VecCollection<'scope, Time, ((EpKey, EpKey), Why), isize>;

/// What the keeper is given, each with its event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Feed {
    Episode(u64, Episode),
    Member(u64, EpKey, EpKey, isize),
    Tie(u64, EpKey, EpKey, Why, isize),
}

impl Feed {
    fn time(&self) -> u64 {
        match self {
            Feed::Episode(t, _) | Feed::Member(t, ..) | Feed::Tie(t, ..) => *t,
        }
    }
}

/// What the keeper gives.
#[derive(Clone, Debug)]
enum Out {
    Sample(Sample),
    Incident(Incident),
}

/// The gap of episodes read from an alert stream: they end when their
/// alert resolves.
pub const NO_GAP: u64 = u64::MAX / 4;

/// An alert stream as `ALERTS` samples: a firing alert as a firing sample
/// at the step it fired, a resolved one as a staleness marker at the step
/// it resolved (pending alerts are left out).
pub fn alerts_as_samples<'scope>(alerts: AlertStream<'scope>) -> SampleStream<'scope> {
    alerts.flat_map(|a: Alert| {
        let value = match a.state {
            AlertState::Firing => 1.0,
            AlertState::Resolved => f64::from_bits(tidemark_promql::STALE_NAN),
            AlertState::Pending => return None,
        };
        let series = Series::new(
            "ALERTS",
            a.labels
                .tags()
                .filter(|(n, _)| *n != "alertstate")
                .chain([("alertstate", "firing")]),
        );
        Some(Sample::new(series, a.at, value))
    })
}

/// Where a `correlate` transform shows its incidents: the process's board,
/// under its pipeline's name.
pub type Shown = (Arc<IncidentBoard>, String);

/// Correlates `ALERTS` samples into incidents: `ALERTS_INCIDENT` samples
/// and the incident stream.
pub fn correlate<'scope>(
    input: SampleStream<'scope>,
    name: &str,
    settings: Settings,
    stats: Arc<ComponentStats>,
) -> (SampleStream<'scope>, IncidentStream<'scope>) {
    correlate_shown(input, name, settings, stats, None, Cuts::default())
}

/// As [`correlate`], recording each change of an incident on `shown`,
/// and with `cuts`, writing its state to checkpoints and starting from
/// the restored one.
pub fn correlate_shown<'scope>(
    input: SampleStream<'scope>,
    name: &str,
    settings: Settings,
    stats: Arc<ComponentStats>,
    shown: Option<Shown>,
    cuts: Cuts,
) -> (SampleStream<'scope>, IncidentStream<'scope>) {
    let tracked = track(input, name, &settings, Arc::clone(&stats), cuts.episodes);
    let model = Arc::clone(&settings.model);
    let window = model.rules.window.max(1);

    let nodes: VecCollection<'scope, Time, (EpKey, EpKey), isize> = tracked
        .clone()
        .flat_map(move |(at, ep)| updates(&ep).map(|(key, _, diff)| ((key, key), at, diff)))
        .as_collection();
    let causes = causes(tracked.clone(), name, &settings);
    let by: Keyed<'scope, (u64, u64), EpKey> = {
        let model = Arc::clone(&model);
        tracked
            .clone()
            .flat_map(move |(at, ep)| {
                updates(&ep).and_then(|(key, labels, diff)| {
                    let h = model.rules.by_key(labels)?;
                    Some((((h, key.0 / window), key), at, diff))
                })
            })
            .as_collection()
    };
    // Each side once more in the next bucket, so that every pair within
    // the window meets in one bucket or the other.
    let close = move |a: &EpKey, b: &EpKey| a != b && a.0.abs_diff(b.0) <= window;
    let through = {
        let rules = model.rules.clone();
        move |a: &EpKey, da: u8, b: &EpKey, db: u8| a != b && rules.through(a, da, b, db)
    };
    let order = |a: EpKey, b: EpKey| if a < b { (a, b) } else { (b, a) };
    let topo_pairs = causes
        .clone()
        .flat_map(|((c, bucket), v)| [((c, bucket), v), ((c, bucket + 1), v)])
        .join_map(causes, move |&(c, _), &(a, da), &(b, db)| {
            (
                order(a, b),
                (da + db, c, nearer_is_later(&a, da, &b, db)),
                through(&a, da, &b, db),
            )
        })
        .filter(move |(_, _, ok)| *ok)
        .map(|(pair, (d, c, reversed), _)| {
            (
                pair,
                Why {
                    topology: Some((d, c)),
                    reversed,
                    ..Why::default()
                },
            )
        });
    let label_pairs = by
        .clone()
        .flat_map(|((h, bucket), key)| [((h, bucket), key), ((h, bucket + 1), key)])
        .join_map(by, move |_, &a, &b| (order(a, b), ()))
        .filter(move |((a, b), ())| close(a, b))
        .map(|(pair, ())| {
            (
                pair,
                Why {
                    labels: true,
                    ..Why::default()
                },
            )
        });
    let mut pairs = topo_pairs.concat(label_pairs);
    if let Some(learned) = together(tracked.clone(), &model) {
        pairs = pairs.concat(learned);
    }
    let rules = model.rules.clone();
    let ties = pairs.reduce(move |pair: &(EpKey, EpKey), found, out| {
        let mut why = Why::default();
        for (w, n) in found {
            if *n <= 0 {
                continue;
            }
            if let Some(t) = w.topology
                && why.topology.is_none_or(|best| t < best)
            {
                why.topology = Some(t);
                why.reversed = w.reversed;
            }
            why.labels |= w.labels;
            why.together = why.together.max(w.together);
        }
        if rules.ties(&why, pair.0.0.abs_diff(pair.1.0)) {
            out.push((why, 1));
        }
    });
    let ties = match model.rules.link {
        Link::All => ties,
        Link::Strongest => strongest(ties, &model),
    };
    let edges = ties.clone().flat_map(|((a, b), _)| [(a, b), (b, a)]);
    let roots = propagate(edges, nodes);

    let feeds = tracked.scope().concatenate::<_, Vec<Feed>>(vec![
        tracked.map(|(at, ep)| Feed::Episode(at, ep)),
        roots
            .inner
            .map(|((key, root), t, diff)| Feed::Member(t, key, root, diff)),
        ties.inner
            .map(|(((a, b), why), t, diff)| Feed::Tie(t, a, b, why, diff)),
    ]);
    let out = keep(feeds, name, model, stats, shown, cuts.incidents);
    let samples = out.clone().flat_map(|o| match o {
        Out::Sample(s) => Some(s),
        Out::Incident(_) => None,
    });
    let incidents = out.flat_map(|o| match o {
        Out::Incident(i) => Some(i),
        Out::Sample(_) => None,
    });
    (samples, incidents)
}

/// Step 2b, with [`Link::Strongest`]: of each episode's ties to the
/// episodes upstream of it, the one [`Rules::strongest`] chooses (a
/// `reduce` by the downstream episode); only those hold incidents
/// together.
///
/// [`Rules::strongest`]: super::model::Rules::strongest
fn strongest<'scope>(ties: Pairs<'scope>, model: &Model) -> Pairs<'scope> {
    let rules = model.rules.clone();
    ties.map(|((a, b), why)| {
        let (up, down) = why.upstream(a, b);
        (down, (up, why))
    })
    .reduce(move |down: &EpKey, found, out| {
        let upstream = found.iter().filter(|(_, n)| *n > 0).map(|(v, _)| **v);
        if let Some(best) = rules.strongest(down, upstream) {
            out.push((best, 1));
        }
    })
    .map(|(down, (up, why))| {
        if up < down {
            ((up, down), why)
        } else {
            ((down, up), why)
        }
    })
}

/// Step 1b: each episode's possible common causes (every entity it
/// reaches in the topology, and in how many hops), keyed by cause and the
/// time bucket of its start, kept as the topology changes. Every worker
/// holds the whole topology (edges are broadcast) and the episodes it
/// tracks; when edges change at `t`, the causes that changed are taken
/// back and given again at `t`, before the episodes that start at `t`.
/// Without edge samples (`topology.metric`) the topology never changes
/// and each start or retirement gives its causes as it comes.
fn causes<'scope>(
    tracked: timely::dataflow::StreamVec<'scope, Time, (u64, Episode)>,
    name: &str,
    settings: &Settings,
) -> Keyed<'scope, (EntityId, u64), (EpKey, u8)> {
    let model = Arc::clone(&settings.model);
    let window = model.rules.window.max(1);
    if settings.edge_metric.is_none() {
        // A topology that never changes: each start and retirement gives
        // its causes as it comes, nothing buffered or held.
        return tracked
            .flat_map(move |(at, ep)| {
                let mut out = Vec::new();
                if let Some((key, labels, diff)) = updates(&ep) {
                    for (c, d) in model.keys(labels).causes {
                        out.push((((c, key.0 / window), (key, d)), at, diff));
                    }
                }
                out
            })
            .as_collection();
    }
    let edges = tracked
        .clone()
        .filter(|(_, ep)| matches!(ep, Episode::Edge { .. }))
        .broadcast();
    let episodes = tracked.filter(|(_, ep)| updates(ep).is_some());
    let give = move |out: &mut Vec<_>, key: EpKey, causes: &[(EntityId, u8)], diff: isize| {
        for &(c, d) in causes {
            out.push((((c, key.0 / window), (key, d)), diff));
        }
    };
    episodes
        .concat(edges)
        .unary_frontier(
            Pipeline,
            &format!("{name}.causes"),
            move |capability, _info| {
                let mut held = Some(capability);
                let mut topology = LiveTopology::new(&model.topology);
                // This worker's episodes and their causes.
                let mut live: FxHashMap<EpKey, (Series, Vec<(EntityId, u8)>)> =
                    FxHashMap::default();
                let mut pending: BTreeMap<u64, Vec<Episode>> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|_cap, data| {
                        for (at, ep) in data.drain(..) {
                            pending.entry(at).or_default().push(ep);
                        }
                    });
                    let Some(cap) = held.as_mut() else {
                        pending.clear();
                        return;
                    };
                    let f = frontier_min(frontier);
                    let limit = f.unwrap_or(u64::MAX);
                    while let Some(entry) = pending.first_entry() {
                        if *entry.key() >= limit {
                            break;
                        }
                        let (t, eps) = entry.remove_entry();
                        let mut out = Vec::new();
                        for ep in &eps {
                            if let Episode::Edge { from, to, diff } = ep {
                                topology.change(from, to, *diff);
                            }
                        }
                        if topology.refresh() {
                            for (key, (labels, causes)) in live.iter_mut() {
                                let now = model.keys_in(topology.get(), labels).causes;
                                if now != *causes {
                                    give(&mut out, *key, causes, -1);
                                    give(&mut out, *key, &now, 1);
                                    *causes = now;
                                }
                            }
                        }
                        for ep in eps {
                            match ep {
                                Episode::Started { key, labels }
                                | Episode::Restored {
                                    key,
                                    labels,
                                    live: true,
                                    ..
                                } => {
                                    let now = model.keys_in(topology.get(), &labels).causes;
                                    give(&mut out, key, &now, 1);
                                    live.insert(key, (labels, now));
                                }
                                Episode::Retired { key, .. } => {
                                    if let Some((_, then)) = live.remove(&key) {
                                        give(&mut out, key, &then, -1);
                                    }
                                }
                                _ => {}
                            }
                        }
                        if !out.is_empty() {
                            let at = cap.delayed(&t.max(*cap.time()));
                            let time = *at.time();
                            let mut session = output.session(&at);
                            for (record, diff) in out {
                                session.give((record, time, diff));
                            }
                        }
                    }
                    match f {
                        Some(f) => {
                            raise(cap, f);
                        }
                        None => held = None,
                    }
                }
            },
        )
        .as_collection()
}

/// The co-occurrence rule's pairs, if it is on. History: every
/// start, by identity, until it is forgotten. Two starts of different
/// identities at most `within` apart are a co-start (a join on the time
/// bucket, each pair once), counted per pair of identities; pairs counted
/// `min_count` times or more are learned. Live episodes of a learned pair
/// whose starts are within the window are tied, with the count as
/// evidence.
fn together<'scope>(
    tracked: timely::dataflow::StreamVec<'scope, Time, (u64, Episode)>,
    model: &Arc<Model>,
) -> Option<Pairs<'scope>> {
    let rule = model.rules.together.clone()?;
    let within = rule.within.max(1);
    let window = model.rules.window.max(1);
    let starts = {
        let model = Arc::clone(model);
        tracked
            .clone()
            .flat_map(move |(at, ep)| {
                let (key, labels, diff) = match &ep {
                    Episode::Started { key, labels } => (*key, labels, 1isize),
                    Episode::Forgotten { key, labels } => (*key, labels, -1),
                    Episode::Restored {
                        key,
                        labels,
                        remembered: true,
                        ..
                    } => (*key, labels, 1),
                    _ => return None,
                };
                let identity = model.rules.identity(labels);
                Some(((key.0 / within, (identity, key)), at, diff))
            })
            .as_collection()
    };
    let counts = starts
        .clone()
        .flat_map(|(b, v)| [(b, (v, false)), (b + 1, (v, true))])
        .join_map(starts, move |_, &((ia, a), shifted), &(ib, b)| {
            // A pair in one bucket meets twice: keep one.
            let once = shifted || (ia, a) < (ib, b);
            let close = a.0.abs_diff(b.0) <= within;
            (once && close && ia != ib).then_some((ia.min(ib), ia.max(ib)))
        })
        .flat_map(|pair| pair)
        .count();
    let min = isize::try_from(rule.min_count).unwrap_or(isize::MAX);
    let learned = counts
        .filter(move |(_, n)| *n >= min)
        .flat_map(|((a, b), n)| {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            [(a, (b, n)), (b, (a, n))]
        });
    let live = {
        let model = Arc::clone(model);
        tracked
            .flat_map(move |(at, ep)| {
                updates(&ep)
                    .map(|(key, labels, diff)| ((model.rules.identity(labels), key), at, diff))
            })
            .as_collection()
    };
    let pairs = live
        .clone()
        .join_map(learned, |_, &a, &(ib, n)| (ib, (a, n)))
        .join_map(live, |_, &(a, n), &b| (a, b, n))
        .filter(move |(a, b, _)| a < b && a.0.abs_diff(b.0) <= window)
        .map(|(a, b, n)| {
            (
                (a, b),
                Why {
                    together: n,
                    ..Why::default()
                },
            )
        });
    Some(pairs)
}

/// An episode's records: added when it starts, taken back when it retires.
fn updates(ep: &Episode) -> Option<(EpKey, &Series, isize)> {
    match ep {
        Episode::Started { key, labels } => Some((*key, labels, 1)),
        Episode::Retired { key, labels } => Some((*key, labels, -1)),
        Episode::Restored {
            key,
            labels,
            live: true,
            ..
        } => Some((*key, labels, 1)),
        Episode::Restored { .. }
        | Episode::Sample { .. }
        | Episode::Ended { .. }
        | Episode::Forgotten { .. }
        | Episode::Edge { .. } => None,
    }
}

/// Counts of samples the tracker drops, by reason.
#[derive(Default)]
struct Dropped {
    late: u64,
    other: u64,
    bad_edge: u64,
}

/// Takes one sample into `pending`, unless it is dropped.
fn intake(
    sample: Sample,
    done: u64,
    edge_metric: Option<&str>,
    pending: &mut BTreeMap<u64, Vec<Sample>>,
    dropped: &mut Dropped,
) {
    if is_edge(&sample, edge_metric) {
        if edge_of(&sample.series).is_none() {
            dropped.bad_edge += 1;
            return;
        }
    } else if kind(&sample) == Kind::Other {
        dropped.other += 1;
        return;
    }
    let t = sample.timestamp.max(0) as u64;
    if t < done {
        dropped.late += 1;
        return;
    }
    pending.entry(t).or_default().push(sample);
}

/// Applies the samples pending before `limit`, then everything due
/// before it (`done` is then at least `limit`).
fn track_until(
    tracker: &mut Tracker,
    pending: &mut BTreeMap<u64, Vec<Sample>>,
    done: &mut u64,
    limit: u64,
    events: &mut Vec<(u64, Episode)>,
) {
    while let Some(entry) = pending.first_entry() {
        if *entry.key() >= limit {
            break;
        }
        let (t, samples) = entry.remove_entry();
        tracker.step(t, &samples, events);
        *done = t + 1;
    }
    // When the input ends (`limit` is the end of time), every episode
    // ends and retires at its own time: what the watermark passing would
    // have done, the same on any number of workers (a worker that has no
    // more samples of its own would otherwise keep its episodes open).
    if limit > *done {
        tracker.advance(limit, events);
        *done = limit;
    }
}

/// Every series' state and waiting samples, for a checkpoint.
fn track_snapshot(tracker: &Tracker, pending: &BTreeMap<u64, Vec<Sample>>) -> Vec<Entry> {
    let mut saved = tracker.snapshot();
    for s in pending.values().flatten() {
        saved
            .entry(s.series.id().0)
            .or_default()
            .waiting
            .push(s.clone());
    }
    saved.into_iter().map(|(id, s)| (id, encode(&s))).collect()
}

/// Step 1: episodes, per series. With `checkpoint`, every series' state
/// (and its samples waiting for the lateness) is written at each cut
/// `x`, as applied up to `x - lateness`; a restored tracker gives the
/// episodes and edges it holds again, just before that time, so that the
/// dataflow after it rebuilds what it derives from them.
fn track<'scope>(
    input: SampleStream<'scope>,
    name: &str,
    settings: &Settings,
    stats: Arc<ComponentStats>,
    checkpoint: Option<Cut>,
) -> timely::dataflow::StreamVec<'scope, Time, (u64, Episode)> {
    let lateness = settings.lateness;
    let (gap, horizon) = (settings.gap, settings.horizon);
    let edge_metric = settings.edge_metric.clone();
    let history = settings.model.rules.together.as_ref().map(|t| t.history);
    let name = format!("{name}.episodes");
    let restore = restore_input(input.scope(), &name, checkpoint.as_ref());
    input.binary_frontier(
        restore,
        Exchange::new(|s: &Sample| s.series.id().0),
        by_key(),
        &name,
        move |capability, _info| {
            let mut held = Some(capability);
            let mut tracker = Tracker::new(gap, horizon)
                .with_edges(edge_metric.clone())
                .with_history(history);
            let mut pending: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
            // Everything before this time has been applied.
            let mut done: u64 = 0;
            let mut gate: Gate<Vec<Sample>> = Gate::new(checkpoint);
            move |(input, frontier), (restored, restored_frontier), output| {
                restored.for_each(|_cap, data| {
                    restore_entries(data, &stats, |id, bytes| {
                        let mut saved: Saved = decode(bytes)?;
                        for s in std::mem::take(&mut saved.waiting) {
                            pending
                                .entry(s.timestamp.max(0) as u64)
                                .or_default()
                                .push(s);
                        }
                        tracker.restore(id, saved);
                        Ok(())
                    });
                });
                if restored_frontier.frontier().is_empty()
                    && let Some(x) = gate.restored()
                    && let Some(cap) = held.as_mut()
                {
                    done = x.saturating_sub(lateness);
                    let rebuilt = tracker.restored(done);
                    if !rebuilt.is_empty() {
                        let at = cap.delayed(&done.saturating_sub(1).max(*cap.time()));
                        let time = *at.time();
                        let mut session = output.session(&at);
                        for ep in rebuilt {
                            session.give((time, ep));
                        }
                    }
                    raise(cap, done);
                }
                let mut dropped = Dropped::default();
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    add(&stats.received, data.len() as u64);
                    if !gate.wait(time, data) {
                        for sample in data.drain(..) {
                            let metric = edge_metric.as_deref();
                            intake(sample, done, metric, &mut pending, &mut dropped);
                        }
                    }
                });
                let report = |dropped: &mut Dropped| {
                    let d = std::mem::take(dropped);
                    stats.dropped(DropReason::Late, d.late);
                    stats.dropped(DropReason::NotAnAlert, d.other);
                    stats.dropped(DropReason::BadEdge, d.bad_edge);
                };
                report(&mut dropped);
                let Some(cap) = held.as_mut() else {
                    pending.clear();
                    return;
                };
                if gate.restoring() {
                    return;
                }
                let f = frontier_min(frontier);
                let mut events = Vec::new();
                gate.advance(f, &mut |step| match step {
                    Step::Apply(_, batch) => {
                        for sample in batch {
                            let metric = edge_metric.as_deref();
                            intake(sample, done, metric, &mut pending, &mut dropped);
                        }
                        Vec::new()
                    }
                    Step::Cut(x) => {
                        let limit = x.saturating_sub(lateness);
                        track_until(&mut tracker, &mut pending, &mut done, limit, &mut events);
                        encode(&track_snapshot(&tracker, &pending))
                    }
                });
                let limit = match f {
                    Some(f) => f.saturating_sub(lateness),
                    None => u64::MAX,
                };
                track_until(&mut tracker, &mut pending, &mut done, limit, &mut events);
                report(&mut dropped);
                for (at, ep) in events {
                    let at = cap.delayed(&at.max(*cap.time()));
                    let time = *at.time();
                    output.session(&at).give((time, ep));
                }
                match f {
                    Some(_) => {
                        raise(cap, done);
                    }
                    None => held = None,
                }
            }
        },
    )
}

/// Where `correlate` cuts its state for checkpoints: the tracker at the
/// transform's input, the keeper `lateness` behind it.
#[derive(Default)]
pub struct Cuts {
    /// The tracker's (`{name}`).
    pub episodes: Option<Cut>,
    /// The keeper's (`{name}/incidents`).
    pub incidents: Option<Cut>,
}

/// The keeper's output of one step.
type Made = Vec<(u64, Vec<Out>)>;

/// Applies the keeper's feeds pending before `limit`, a step per time.
fn keep_until(
    keeper: &mut Keeper,
    pending: &mut BTreeMap<u64, Vec<Feed>>,
    limit: u64,
    shown: Option<(&IncidentBoard, u64, &str, &str)>,
    made: &mut Made,
) {
    while let Some(entry) = pending.first_entry() {
        if *entry.key() >= limit {
            break;
        }
        let (t, feeds) = entry.remove_entry();
        let mut out = Vec::new();
        let (samples, incidents) = keeper_step(keeper, t, feeds);
        for (key, sample) in &samples {
            if let Some(s) = keeper.label(key, sample) {
                out.push(Out::Sample(s));
            }
        }
        if let Some((board, publisher, pipeline, component)) = shown {
            for i in &incidents {
                board.record(publisher, pipeline, component, i);
            }
        }
        out.extend(incidents.into_iter().map(Out::Incident));
        if !out.is_empty() {
            made.push((t, out));
        }
    }
}

/// One step of the keeper at `t`: returns the firing samples to label
/// and the incidents that changed.
fn keeper_step(
    keeper: &mut Keeper,
    t: u64,
    feeds: Vec<Feed>,
) -> (Vec<(EpKey, Sample)>, Vec<Incident>) {
    let mut samples = Vec::new();
    let (mut ended, mut retired) = (Vec::new(), Vec::new());
    // Starts first, then the dataflow's changes, then ends and
    // retirements (which need the components).
    let mut later = Vec::new();
    for feed in &feeds {
        if let Feed::Episode(_, Episode::Edge { from, to, diff }) = feed {
            keeper.edge(from, to, *diff);
        }
    }
    keeper.topology_changed();
    for feed in feeds {
        match feed {
            Feed::Episode(_, Episode::Started { key, labels }) => keeper.started(key, labels),
            // A keeper that starts empty where the tracker was restored.
            Feed::Episode(
                _,
                Episode::Restored {
                    key,
                    labels,
                    live: true,
                    end,
                    ..
                },
            ) => {
                keeper.started(key, labels);
                ended.extend(end.map(|e| (key, e)));
            }
            Feed::Episode(_, Episode::Sample { key, sample }) => samples.push((key, sample)),
            Feed::Episode(_, Episode::Ended { key, end }) => ended.push((key, end)),
            Feed::Episode(_, Episode::Retired { key, .. }) => retired.push(key),
            Feed::Episode(
                _,
                Episode::Edge { .. } | Episode::Forgotten { .. } | Episode::Restored { .. },
            ) => {}
            other => later.push(other),
        }
    }
    // The dataflow's changes at `t` may come in several batches that
    // cancel out: apply the net of each.
    let mut members: BTreeMap<(EpKey, EpKey), isize> = BTreeMap::new();
    let mut ties: BTreeMap<(EpKey, EpKey, Why), isize> = BTreeMap::new();
    for feed in later {
        match feed {
            Feed::Member(_, key, root, diff) => *members.entry((key, root)).or_default() += diff,
            Feed::Tie(_, a, b, why, diff) => *ties.entry((a, b, why)).or_default() += diff,
            Feed::Episode(..) => {}
        }
    }
    // Removals first, so a member that moves is never in two components.
    for positive in [false, true] {
        for (&(key, root), &diff) in &members {
            if diff != 0 && (diff > 0) == positive {
                keeper.member(key, root, diff);
            }
        }
        for (&(a, b, why), &diff) in &ties {
            if diff != 0 && (diff > 0) == positive {
                keeper.tie(a, b, why, diff);
            }
        }
    }
    for (key, end) in ended {
        keeper.ended(key, end);
    }
    for key in retired {
        keeper.retired(key);
    }
    (samples, keeper.finish_step(t))
}

/// Step 4: the keeper, on worker 0. With `checkpoint`, its state is
/// written at each cut (on the other workers, an empty part); a restored
/// keeper skips what comes before its cut (the rebuild of what it holds)
/// and shows its incidents again.
fn keep<'scope>(
    feeds: timely::dataflow::StreamVec<'scope, Time, Feed>,
    name: &str,
    model: Arc<Model>,
    stats: Arc<ComponentStats>,
    shown: Option<Shown>,
    checkpoint: Option<Cut>,
) -> timely::dataflow::StreamVec<'scope, Time, Out> {
    let component = name.to_owned();
    let name = format!("{name}.incidents");
    let parts = checkpoint.as_ref().and_then(Cut::restored);
    let kept = parts.is_some();
    let restore = restore_stream(feeds.scope(), &name, parts.unwrap_or_default());
    let first = feeds.scope().index() == 0;
    feeds.binary_frontier(
        restore,
        Exchange::new(|_: &Feed| 0u64),
        Exchange::new(|_: &Entry| 0u64),
        &name,
        move |capability, _info| {
            let mut held = Some(capability);
            let mut keeper = Keeper::new(model);
            // The board forgets this instance's incidents when it is
            // dropped (the pipeline deleted or replaced).
            let shown = shown.map(|(board, pipeline)| {
                let publisher = board.publisher();
                (Withdraw(board, publisher), pipeline)
            });
            let mut pending: BTreeMap<u64, Vec<Feed>> = BTreeMap::new();
            let mut gate: Gate<Vec<Feed>> = Gate::new(checkpoint);
            // Feeds before it are the rebuild of what a restored keeper
            // holds.
            let mut skip_below: u64 = 0;
            move |(input, frontier), (restored, restored_frontier), output| {
                restored.for_each(|_cap, data| {
                    restore_entries(data, &stats, |_, bytes| keeper.restore(decode(bytes)?));
                });
                if restored_frontier.frontier().is_empty()
                    && let Some(y) = gate.restored()
                    && kept
                {
                    skip_below = y;
                    if let Some((Withdraw(board, publisher), pipeline)) = &shown {
                        for i in keeper.records() {
                            board.record(*publisher, pipeline, &component, &i);
                        }
                    }
                }
                let take = |batch: &mut Vec<Feed>, pending: &mut BTreeMap<u64, Vec<Feed>>| {
                    for feed in batch.drain(..) {
                        if feed.time() >= skip_below {
                            pending.entry(feed.time()).or_default().push(feed);
                        }
                    }
                };
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    if !gate.wait(time, data) {
                        take(data, &mut pending);
                    }
                });
                let Some(cap) = held.as_mut() else {
                    pending.clear();
                    return;
                };
                if gate.restoring() {
                    return;
                }
                let f = frontier_min(frontier);
                let board = shown.as_ref().map(|(Withdraw(b, p), pipeline)| {
                    (&**b, *p, pipeline.as_str(), component.as_str())
                });
                let mut made = Made::new();
                gate.advance(f, &mut |step| match step {
                    Step::Apply(_, mut batch) => {
                        take(&mut batch, &mut pending);
                        Vec::new()
                    }
                    Step::Cut(y) => {
                        keep_until(&mut keeper, &mut pending, y, board, &mut made);
                        let entries: Vec<Entry> = if first {
                            vec![(0, encode(&keeper.snapshot()))]
                        } else {
                            Vec::new()
                        };
                        encode(&entries)
                    }
                });
                keep_until(
                    &mut keeper,
                    &mut pending,
                    f.unwrap_or(u64::MAX),
                    board,
                    &mut made,
                );
                let mut sent = 0u64;
                for (t, out) in made {
                    sent += out.len() as u64;
                    let at = cap.delayed(&t.max(*cap.time()));
                    output.session(&at).give_iterator(out.into_iter());
                }
                add(&stats.sent, sent);
                match f {
                    Some(f) => {
                        raise(cap, f);
                    }
                    None => held = None,
                }
            }
        },
    )
}

/// Withdraws a publisher's incidents from the board when dropped.
struct Withdraw(Arc<IncidentBoard>, u64);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.withdraw(self.1);
    }
}
