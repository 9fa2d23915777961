//! The timely wrapper: samples go to the worker that evaluates the groups
//! whose rules select them (a copy for each such worker), are kept in that
//! worker's store, and every group step runs once the watermark has passed
//! it (plus `lateness`).
//!
//! Groups that read what another group records (or `ALERTS`) are
//! evaluated together, on one worker, in file order, so that every
//! worker count gives the same results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::parser::{Expr, VectorSelector};
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;

use tidemark_engine::alert::Alert;
use tidemark_engine::checkpoint::{
    Cut, Entry, Gate, Step, by_key, decode, encode, restore_entries, restore_input,
};
use tidemark_engine::rules::RulesHub;
use tidemark_engine::runtime::{AlertStream, Operator, SampleStream, frontier_min, raise};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;
use tidemark_engine::{Sample, SeriesId};
use tidemark_promql::SelectorIndex;

use super::group::{Output, Settings};
use super::rules::{Group, RuleKind};
use super::unit::{SavedUnit, UnitNames, UnitState, is_late, resolved};

/// Groups evaluated together, and the selectors their rules read.
#[derive(Clone, Debug)]
pub struct Unit {
    /// Indexes into [`AlertSpec::groups`], in file order.
    pub groups: Vec<usize>,
    /// Every selector of every rule of those groups.
    pub selectors: Vec<VectorSelector>,
    /// How far back (ms) the rules read: the longest range plus offset,
    /// plus the lookback delta.
    pub retention: i64,
    /// Decides the worker.
    pub key: u64,
}

/// What the operator evaluates.
#[derive(Clone, Debug)]
pub struct AlertSpec {
    /// The groups.
    pub groups: Vec<Arc<Group>>,
    /// The groups by evaluation unit.
    pub units: Vec<Unit>,
    /// Shared settings.
    pub settings: Settings,
    /// How long after a step's time its inputs may still arrive (ms).
    pub lateness: i64,
}

/// Calls `f` with every selector of `expr`, its range (0 for an instant
/// selector) and its offset, in milliseconds.
pub fn selectors(expr: &Expr, f: &mut impl FnMut(&VectorSelector, i64, i64)) {
    let offset = |vs: &VectorSelector| tidemark_promql_offset(vs);
    match expr {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                selectors(p, f);
            }
            selectors(&a.expr, f);
        }
        Expr::Unary(u) => selectors(&u.expr, f),
        Expr::Binary(b) => {
            selectors(&b.lhs, f);
            selectors(&b.rhs, f);
        }
        Expr::Paren(p) => selectors(&p.expr, f),
        Expr::Subquery(s) => selectors(&s.expr, f),
        Expr::VectorSelector(vs) => f(vs, 0, offset(vs)),
        Expr::MatrixSelector(ms) => f(&ms.vs, ms.range.as_millis() as i64, offset(&ms.vs)),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, f)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The offset of a selector in milliseconds (negative for `offset -5m`).
pub fn tidemark_promql_offset(vs: &VectorSelector) -> i64 {
    use promql_parser::parser::Offset;
    match &vs.offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

/// The metric name a selector fixes, if any.
fn fixed_name(vs: &VectorSelector) -> Option<String> {
    use promql_parser::label::MatchOp;
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

impl AlertSpec {
    /// Groups the groups into units: a group that reads a series another
    /// group writes (a recorded name, `ALERTS`, or anything, for a selector
    /// without a fixed name) is evaluated with it.
    pub fn new(groups: Vec<Arc<Group>>, settings: Settings, lateness: i64) -> AlertSpec {
        let n = groups.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let writes: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                g.rules
                    .iter()
                    .flat_map(|r| match r.kind {
                        RuleKind::Record => vec![r.name.clone()],
                        RuleKind::Alert { .. } => {
                            vec!["ALERTS".to_owned(), "ALERTS_FOR_STATE".to_owned()]
                        }
                    })
                    .collect()
            })
            .collect();
        let mut reads: Vec<Vec<VectorSelector>> = vec![Vec::new(); n];
        let mut reach = vec![0i64; n];
        for (i, g) in groups.iter().enumerate() {
            for r in &g.rules {
                selectors(&r.expr, &mut |vs, range, offset| {
                    reads[i].push(vs.clone());
                    reach[i] = reach[i].max(range + offset.max(0));
                });
            }
        }
        for (i, read) in reads.iter().enumerate() {
            for (j, written) in writes.iter().enumerate() {
                let depends = i != j
                    && read.iter().any(|vs| match fixed_name(vs) {
                        Some(name) => written.contains(&name),
                        None => !written.is_empty(),
                    });
                if depends {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_of: FxHashMap<usize, usize> = FxHashMap::default();
        for i in 0..n {
            let r = root(&mut parent, i);
            let u = *unit_of.entry(r).or_insert_with(|| {
                // A fixed hash (the series identity's XXH3), so that every
                // process of a cluster places the unit on the same worker.
                let key = tidemark_engine::Series::from_labels(vec![
                    ("file".into(), groups[i].file.as_str().into()),
                    ("group".into(), groups[i].name.as_str().into()),
                ])
                .id()
                .0;
                units.push(Unit {
                    groups: Vec::new(),
                    selectors: Vec::new(),
                    retention: settings.lookback,
                    key,
                });
                units.len() - 1
            });
            units[u].groups.push(i);
            units[u].selectors.extend(reads[i].iter().cloned());
            units[u].retention = units[u].retention.max(reach[i] + settings.lookback);
        }
        AlertSpec {
            groups,
            units,
            settings,
            lateness,
        }
    }

    /// The longest group interval (ms).
    pub fn max_interval(&self) -> i64 {
        self.groups.iter().map(|g| g.interval).max().unwrap_or(0)
    }

    /// The longest retention of any unit (ms).
    pub fn max_retention(&self) -> i64 {
        self.units.iter().map(|u| u.retention).max().unwrap_or(0)
    }
}

/// Where the operator shows its groups' state (the server's rules and
/// alerts APIs), and under which pipeline and transform.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The process's hub.
    pub hub: Arc<RulesHub>,
    /// The pipeline's name.
    pub pipeline: String,
}

/// Withdraws an operator's groups from the hub when the operator goes
/// (its pipeline was deleted, replaced or finished).
struct Withdraw(Arc<RulesHub>, u64);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.withdraw(self.1);
    }
}

/// How often (wall clock) a unit's groups are published at most.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What the evaluation operator gives, split into the two outputs after.
#[derive(Clone, Debug)]
enum Out {
    Sample(Sample),
    Alert(Box<Alert>),
}

/// Alert and recording rules on a stream of samples.
pub trait Alerting<'scope> {
    /// Evaluates `spec`'s groups in event time; returns the samples
    /// (recording rules, `ALERTS`, `ALERTS_FOR_STATE`) and the alert state
    /// changes. Group states are shown on `publish`'s hub as they step.
    /// With a `checkpoint`, every unit (its samples, instances and next
    /// steps) is written at every checkpoint cut and starts from the
    /// restored one (see `tidemark_engine::checkpoint`).
    fn alert_rules(
        self,
        name: &str,
        spec: Arc<AlertSpec>,
        stats: Arc<ComponentStats>,
        publish: Publish,
        checkpoint: Option<Cut>,
    ) -> (SampleStream<'scope>, AlertStream<'scope>);
}

impl<'scope> Alerting<'scope> for SampleStream<'scope> {
    fn alert_rules(
        self,
        name: &str,
        spec: Arc<AlertSpec>,
        stats: Arc<ComponentStats>,
        publish: Publish,
        checkpoint: Option<Cut>,
    ) -> (SampleStream<'scope>, AlertStream<'scope>) {
        let transform = name.to_owned();
        let peers = self.scope().peers() as u64;
        let index = self.scope().index() as u64;
        let routed = route(self, name, Arc::clone(&spec), peers);
        let lateness = spec.lateness.max(0) as Time;
        // Restored units come to the worker that evaluates them.
        let restore = restore_input(routed.scope(), name, checkpoint.as_ref());
        let evaluated = routed
            .binary_frontier(
                restore,
                Exchange::new(|(w, _): &(u64, Sample)| *w),
                by_key(),
                name,
                move |capability, _info| {
                    let mut held = Some(capability);
                    let units: Vec<usize> = (0..spec.units.len())
                        .filter(|u| spec.units[*u].key % peers == index)
                        .collect();
                    let mut locals: Vec<UnitState> =
                        units.iter().map(|u| UnitState::new(&spec, *u)).collect();
                    let mut matches: FxHashMap<SeriesId, Vec<usize>> = FxHashMap::default();
                    let by_selector = SelectorIndex::new(
                        units
                            .iter()
                            .enumerate()
                            .flat_map(|(i, u)| {
                                spec.units[*u]
                                    .selectors
                                    .iter()
                                    .map(move |vs| (vs.clone(), i))
                            })
                            .collect(),
                    );
                    let mut last_frontier: Option<Option<Time>> = None;
                    let publisher = publish.hub.publisher();
                    let _withdraw = Withdraw(Arc::clone(&publish.hub), publisher);
                    let mut published: Vec<Option<Instant>> = vec![None; locals.len()];
                    let mut dirty = vec![false; locals.len()];
                    let mut warned = rustc_hash::FxHashSet::default();
                    let mut gate: Gate<Vec<(u64, Sample)>> = Gate::new(checkpoint);
                    // Active alerts of restored groups that no unit here
                    // goes on with, resolved once the restore is in.
                    let mut orphaned: Vec<super::Instance> = Vec::new();
                    // Keeps the samples that are not late; returns how many are.
                    let late_after = spec.lateness;
                    let mut insert = move |locals: &mut [UnitState],
                                           data: &[(u64, Sample)],
                                           time: Time| {
                        let mut late = 0u64;
                        for (_, sample) in data {
                            if is_late(sample, time, late_after) {
                                late += 1;
                                continue;
                            }
                            let targets = matches.entry(sample.series.id()).or_insert_with(|| {
                                let mut t: Vec<usize> =
                                    by_selector.matching(&sample.series).copied().collect();
                                t.sort_unstable();
                                t.dedup();
                                t
                            });
                            for &i in targets.iter() {
                                locals[i].insert(sample);
                            }
                        }
                        late
                    };
                    move |(input, frontier), (restored, restored_frontier), output| {
                        restored.for_each(|_cap, data| {
                            restore_entries(data, &stats, |_key, bytes| {
                                // (Checkpoints before rule identities hold
                                // the unit and its state only.)
                                let (unit, saved, names) =
                                    match decode::<(u64, SavedUnit, UnitNames)>(bytes) {
                                        Ok((u, s, n)) => (u, s, Some(n)),
                                        Err(_) => {
                                            let (u, s): (u64, SavedUnit) = decode(bytes)?;
                                            (u, s, None)
                                        }
                                    };
                                let same = units.iter().position(|u| *u as u64 == unit).filter(|i| {
                                    names.as_ref().is_none_or(|n| *n == locals[*i].names())
                                });
                                if let Some(i) = same {
                                    locals[i].restore(saved)?;
                                    dirty[i] = true;
                                    return Ok(());
                                }
                                let names = names.ok_or_else(|| format!("unit {unit} is not evaluated on this worker"))?;
                                // Saved under another configuration (the
                                // rules changed): each group goes on in
                                // the unit here that evaluates it.
                                for (i, l) in locals.iter_mut().enumerate() {
                                    if l.migrate(&saved, &names) > 0 {
                                        dirty[i] = true;
                                    }
                                }
                                for (g, (file, group)) in names.groups().enumerate() {
                                    let here = locals.iter().any(|l| l.has_group(file, group));
                                    if here {
                                        continue;
                                    }
                                    // Gone, or evaluated elsewhere with
                                    // empty state: nothing would resolve
                                    // its active alerts.
                                    orphaned.extend(saved.active(g));
                                    let kept = spec.groups.iter().any(|g| g.file == file && g.name == group);
                                    if kept {
                                        add(&stats.errors, 1);
                                        tracing::warn!(file, group, "The changed rules put this group in a unit evaluated on another worker: its alert state starts empty.");
                                    }
                                }
                                Ok(())
                            });
                        });
                        if restored_frontier.frontier().is_empty()
                            && let Some(x) = gate.restored()
                            && let Some(cap) = held.as_mut()
                        {
                            // Steps after the restored state are at or
                            // after the cut.
                            let to = x.saturating_sub(lateness);
                            raise(cap, to);
                            // Rules an update removed: their active alerts
                            // are resolved at the cut.
                            let at = to.min(i64::MAX as Time) as i64;
                            let url = &spec.settings.external_url;
                            let mut retired: Vec<_> = locals
                                .iter_mut()
                                .flat_map(|l| l.take_retired(at, url))
                                .collect();
                            retired.extend(orphaned.drain(..).map(|a| resolved(a, at, url)));
                            if !retired.is_empty() {
                                tracing::info!(transform = %transform, alerts = retired.len(), "Resolved the active alerts of rules the update removed.");
                                let out = Output {
                                    alerts: retired,
                                    ..Output::default()
                                };
                                let batch = outputs(out, &stats, &mut warned);
                                output.session(&*cap).give_iterator(batch.into_iter());
                            }
                        }
                        let mut late = 0u64;
                        input.for_each(|cap, data| {
                            let Some(&time) = cap.least() else { return };
                            add(&stats.received, data.len() as u64);
                            if !gate.wait(time, data) {
                                late += insert(&mut locals, data, time);
                                data.clear();
                            }
                        });
                        if gate.restoring() {
                            stats.dropped(DropReason::Late, late);
                            return;
                        }
                        let f = frontier_min(frontier);
                        if last_frontier == Some(f) && !gate.is_waiting() {
                            stats.dropped(DropReason::Late, late);
                            return;
                        }
                        last_frontier = Some(f);
                        if let Some(cap) = held.as_mut() {
                            let mut sent = 0u64;
                            let mut step =
                                |cap: &Capability<Time>,
                                 locals: &mut [UnitState],
                                 f: Option<Time>| {
                                    for (i, l) in locals.iter_mut().enumerate() {
                                        dirty[i] |= l.advance(f, &spec, &mut |t, out| {
                                            let batch = outputs(out, &stats, &mut warned);
                                            if !batch.is_empty() {
                                                sent += batch.len() as u64;
                                                let at = cap
                                                    .delayed(&(t.max(0) as Time).max(*cap.time()));
                                                output
                                                    .session(&at)
                                                    .give_iterator(batch.into_iter());
                                            }
                                        });
                                    }
                                };
                            gate.advance(f, &mut |s| match s {
                                Step::Apply(time, batch) => {
                                    late += insert(&mut locals, &batch, time);
                                    Vec::new()
                                }
                                Step::Cut(x) => {
                                    // Run the steps the cut passes, then
                                    // write the units; later steps are at
                                    // or after `x - lateness`.
                                    step(cap, &mut locals, Some(x));
                                    let to = x.saturating_sub(lateness);
                                    raise(cap, to);
                                    let entries: Vec<Entry> = units
                                        .iter()
                                        .zip(&locals)
                                        .map(|(u, l)| {
                                            (spec.units[*u].key, encode(&(*u as u64, l.save(), l.names())))
                                        })
                                        .collect();
                                    encode(&entries)
                                }
                            });
                            step(cap, &mut locals, f);
                            add(&stats.sent, sent);
                            for (i, l) in locals.iter().enumerate() {
                                let due = f.is_none()
                                    || published[i].is_none_or(|p| p.elapsed() >= PUBLISH_EVERY);
                                if dirty[i] && due {
                                    for g in l.groups() {
                                        publish.hub.publish(
                                            publisher,
                                            g.snapshot(&publish.pipeline, &transform),
                                        );
                                    }
                                    published[i] = Some(Instant::now());
                                    dirty[i] = false;
                                }
                            }
                        }
                        stats.dropped(DropReason::Late, late);
                        match f {
                            Some(f) => {
                                if let Some(cap) = held.as_mut() {
                                    let to = f.saturating_sub(lateness);
                                    raise(cap, to);
                                }
                            }
                            None => held = None,
                        }
                    }
                },
            )
            .container::<Vec<Out>>();
        let samples = evaluated
            .clone()
            .unary(Pipeline, "alert.samples", |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        session.give_iterator(data.drain(..).filter_map(|o| match o {
                            Out::Sample(s) => Some(s),
                            Out::Alert(_) => None,
                        }));
                    });
                }
            })
            .container::<Vec<Sample>>();
        let alerts = evaluated
            .unary(Pipeline, "alert.alerts", |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        session.give_iterator(data.drain(..).filter_map(|o| match o {
                            Out::Alert(a) => Some(*a),
                            Out::Sample(_) => None,
                        }));
                    });
                }
            })
            .container::<Vec<Alert>>();
        (samples, alerts)
    }
}

/// Tags each sample with the worker of every unit whose selectors match
/// it (once per worker); samples no rule reads go nowhere.
fn route<'scope>(
    stream: SampleStream<'scope>,
    name: &str,
    spec: Arc<AlertSpec>,
    peers: u64,
) -> timely::dataflow::Stream<'scope, Time, Vec<(u64, Sample)>> {
    let mut cache: FxHashMap<SeriesId, Vec<u64>> = FxHashMap::default();
    let index = SelectorIndex::new(
        spec.units
            .iter()
            .flat_map(|u| {
                u.selectors
                    .iter()
                    .map(move |vs| (vs.clone(), u.key % peers))
            })
            .collect(),
    );
    stream
        .unary(Pipeline, &format!("{name}.route"), move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for sample in data.drain(..) {
                        let workers = cache.entry(sample.series.id()).or_insert_with(|| {
                            let mut w: Vec<u64> = index.matching(&sample.series).copied().collect();
                            w.sort_unstable();
                            w.dedup();
                            w
                        });
                        for &w in workers.iter() {
                            session.give((w, sample.clone()));
                        }
                    }
                });
            }
        })
        .container::<Vec<(u64, Sample)>>()
}

/// A step's output as the operator's records; failures counted and
/// logged.
fn outputs(
    out: Output,
    stats: &ComponentStats,
    warned: &mut rustc_hash::FxHashSet<String>,
) -> Vec<Out> {
    if !out.failures.is_empty() {
        add(&stats.errors, out.failures.len() as u64);
        for (rule, error) in &out.failures {
            // Warned once per rule; every failure is counted, and the last
            // one is in /api/v1/rules (`lastError`).
            if warned.insert(rule.clone()) {
                tracing::warn!(%error, rule, "Rule evaluation failed; later failures of this rule are counted, not logged.");
            } else {
                tracing::debug!(%error, rule, "Rule evaluation failed.");
            }
        }
    }
    let mut batch: Vec<Out> = out.samples.into_iter().map(Out::Sample).collect();
    batch.extend(out.alerts.into_iter().map(|a| Out::Alert(Box::new(a))));
    batch
}
