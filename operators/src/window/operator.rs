//! The timely wrapper around [`WindowState`]: exchange by series (group) id,
//! feed samples with their entry watermark, advance on frontier changes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use tidemark_engine::checkpoint::{
    Cut, Gate, Step, by_key, encode, restore_entries, restore_input,
};
use tidemark_engine::runtime::{Capability, Operator, SampleStream, frontier_min, raise};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;
use tidemark_engine::{Sample, Series, SeriesId};
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use super::combine::{Combiner, Piece};
use super::{WindowSpec, WindowState};
use crate::group::Grouping;

/// Windowed aggregation on a stream of samples.
pub trait Window<'scope> {
    /// Aggregates the samples of each group of `spec.grouping` in the
    /// windows of `spec`; the samples of a group meet on one worker. With
    /// `checkpoint`, the state is written at every checkpoint cut and
    /// starts from the restored one (see `tidemark_engine::checkpoint`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemark_operators::window::{Window, WindowKind, WindowSpec, LatePolicy, Partial};
    /// use tidemark_operators::aggregate::{Aggregate, Needs};
    /// use tidemark_operators::group::Grouping;
    /// use tidemark_engine::stats::ComponentStats;
    /// use tidemark_engine::{Sample, Series};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Event};
    ///
    /// let spec = WindowSpec {
    ///     kind: WindowKind::Tumbling { size: 10 },
    ///     label: "10ms".into(),
    ///     lateness: 0,
    ///     late: LatePolicy::Drop,
    ///     aggregates: Arc::from(vec![Aggregate::Sum]),
    ///     needs: Needs::default(),
    ///     grouping: Grouping::Series,
    ///     partial: Partial::Emit,
    ///     combine: true,
    /// };
    /// let out = timely::example(move |scope| {
    ///     let s = Series::new("x", [("a", "1")]);
    ///     (1..=20u64)
    ///         .map(move |t| Sample::new(s.clone(), t as i64, 1.0))
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window("w", spec, Arc::new(ComponentStats::default()), None)
    ///         .capture()
    /// });
    /// let sums: Vec<(i64, f64)> = out.try_iter()
    ///     .flat_map(|e| match e { Event::Messages(_, batch) => batch, _ => vec![] })
    ///     .map(|s| (s.timestamp, s.value))
    ///     .collect();
    /// assert_eq!(sums, vec![(10, 10.0), (20, 10.0)]);
    /// ```
    fn window(
        self,
        name: &str,
        spec: WindowSpec,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> SampleStream<'scope>;
}

impl<'scope> Window<'scope> for SampleStream<'scope> {
    fn window(
        self,
        name: &str,
        spec: WindowSpec,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> SampleStream<'scope> {
        if spec.combines() && checkpoint.is_none() {
            return combined(self, name, spec, stats);
        }
        let holdback = spec.holdback();
        let lateness = holdback - 1;
        let grouping = spec.grouping.clone();
        // Samples go to the worker that owns their group. Groups are computed
        // once per input series on each side and cached.
        let route = {
            let mut owner = owner(grouping.clone());
            Exchange::new(move |s: &Sample| owner(&s.series))
        };
        // Restored state comes to the same worker as its group's samples.
        let restore = restore_input(self.scope(), name, checkpoint.as_ref());
        self.binary_frontier(restore, route, by_key(), name, move |capability, _info| {
            let mut held = Some(capability);
            let mut state = WindowState::new(spec);
            let mut groups: FxHashMap<SeriesId, Series> = FxHashMap::default();
            let mut last_frontier: Option<Option<Time>> = None;
            let mut gate: Gate<Vec<Sample>> = Gate::new(checkpoint);
            let mut insert = move |state: &mut WindowState, data: &[Sample], time: Time| {
                for sample in data {
                    let group = group_of(&grouping, &mut groups, &sample.series);
                    state.insert(sample, group, time);
                }
            };
            move |(input, frontier), (restored, restored_frontier), output| {
                restored.for_each(|_cap, data| {
                    restore_entries(data, &stats, |key, bytes| state.restore(key, bytes));
                });
                if restored_frontier.frontier().is_empty()
                    && let Some(x) = gate.restored()
                    && let Some(cap) = held.as_mut()
                {
                    // What was restored began before this run.
                    state.restored();
                    // Results of restored windows are at or after the cut.
                    let to = x.saturating_sub(lateness);
                    raise(cap, to);
                }
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    add(&stats.received, data.len() as u64);
                    state.saw(time);
                    if !gate.wait(time, data) {
                        insert(&mut state, data, time);
                        data.clear();
                    }
                });
                if gate.restoring() {
                    return;
                }
                let f = frontier_min(frontier);
                if last_frontier != Some(f) || gate.is_waiting() {
                    last_frontier = Some(f);
                    if let Some(f) = f {
                        state.saw(f);
                    }
                    if let Some(cap) = held.as_mut() {
                        let mut sent = 0u64;
                        let mut emit =
                            |cap: &Capability<Time>, time: Time, mut batch: Vec<Sample>| {
                                if batch.is_empty() {
                                    return;
                                }
                                sent += batch.len() as u64;
                                let at = cap.delayed(&time.max(*cap.time()));
                                output.session(&at).give_container(&mut batch);
                            };
                        gate.advance(f, &mut |step| match step {
                            Step::Apply(time, batch) => {
                                insert(&mut state, &batch, time);
                                Vec::new()
                            }
                            Step::Cut(x) => {
                                // Close what the cut closes, then write the
                                // state; later results are at or after
                                // `x - lateness`.
                                state.advance(Some(x), &mut |t, b| emit(cap, t, b));
                                let to = x.saturating_sub(lateness);
                                raise(cap, to);
                                encode(&state.snapshot())
                            }
                        });
                        state.advance(f, &mut |t, b| emit(cap, t, b));
                        add(&stats.sent, sent);
                    }
                    match f {
                        Some(f) => {
                            if let Some(cap) = held.as_mut() {
                                let to = f.saturating_sub(holdback);
                                raise(cap, to);
                            }
                        }
                        None => held = None,
                    }
                }
                report(&mut state, &stats);
            }
        })
        .container::<Vec<Sample>>()
    }
}

/// Counts what the state dropped, corrected and found partial.
fn report(state: &mut WindowState, stats: &ComponentStats) {
    let counts = state.take_counts();
    stats.dropped(DropReason::Late, counts.late);
    stats.dropped(DropReason::TooLate, counts.too_late);
    stats.dropped(DropReason::NotANumber, counts.nan);
    add(&stats.corrections, counts.corrections);
    add(&stats.partial_windows, counts.partial);
}

/// Which worker a series' samples go to: the hash of its group (the
/// samples of a group meet on one worker), computed once per input series.
fn owner(grouping: Grouping) -> impl FnMut(&Series) -> u64 {
    let mut cache: FxHashMap<SeriesId, u64> = FxHashMap::default();
    move |series| match grouping {
        Grouping::Series => series.id().0,
        _ => *cache
            .entry(series.id())
            .or_insert_with(|| grouping.project(series).id().0),
    }
}

/// The group a sample belongs to, its projection cached per input series.
fn group_of<'a>(
    grouping: &Grouping,
    groups: &'a mut FxHashMap<SeriesId, Series>,
    series: &'a Series,
) -> &'a Series {
    match grouping {
        Grouping::Series => series,
        _ => groups
            .entry(series.id())
            .or_insert_with(|| grouping.project(series)),
    }
}

/// The window with pre-aggregation ([`super::combine`]): a combiner on each
/// worker before the exchange, then the window, which merges the partials
/// and treats the samples passed on as any sample. Used without
/// checkpoints only, so there is no state to restore or write.
fn combined<'scope>(
    input: SampleStream<'scope>,
    name: &str,
    spec: WindowSpec,
    stats: Arc<ComponentStats>,
) -> SampleStream<'scope> {
    let holdback = spec.holdback();
    let grouping = spec.grouping.clone();
    let combine_spec = spec.clone();
    let received = Arc::clone(&stats);
    let parts = input
        .unary_frontier(
            Pipeline,
            &format!("{name} (combine)"),
            move |capability, _info| {
                let mut held = Some(capability);
                let mut combiner = Combiner::new(&combine_spec);
                let mut groups: FxHashMap<SeriesId, Series> = FxHashMap::default();
                let grouping = combine_spec.grouping.clone();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        // The window's samples in are counted here, once
                        // (a sample of hopping windows is in several parts).
                        add(&received.received, data.len() as u64);
                        let (Some(cap), Some(combiner)) = (held.as_ref(), combiner.as_mut()) else {
                            return;
                        };
                        let mut pass: Vec<Piece> = Vec::new();
                        for sample in data.drain(..) {
                            let group = group_of(&grouping, &mut groups, &sample.series);
                            if !combiner.insert(&sample, group, time) {
                                pass.push(Piece::Sample(sample));
                            }
                        }
                        if !pass.is_empty() {
                            output
                                .session(&cap.delayed(&time))
                                .give_container(&mut pass);
                        }
                    });
                    let f = frontier_min(frontier);
                    if let (Some(cap), Some(combiner)) = (held.as_mut(), combiner.as_mut()) {
                        let at: &Capability<Time> = cap;
                        combiner.flush(f, &mut |time, mut batch| {
                            output
                                .session(&at.delayed(&time.max(*at.time())))
                                .give_container(&mut batch);
                        });
                        if let Some(f) = f {
                            raise(cap, combiner.holds().map_or(f, |h| h.min(f)));
                        }
                    }
                    if f.is_none() {
                        held = None;
                    }
                }
            },
        )
        .container::<Vec<Piece>>();
    let route = {
        let mut owner = owner(grouping);
        Exchange::new(move |piece: &Piece| match piece {
            Piece::Part(part) => part.group.id().0,
            Piece::Sample(s) => owner(&s.series),
        })
    };
    parts
        .unary_frontier(route, name, move |capability, _info| {
            let mut held = Some(capability);
            let grouping = spec.grouping.clone();
            let mut state = WindowState::new(spec);
            let mut groups: FxHashMap<SeriesId, Series> = FxHashMap::default();
            let mut last_frontier: Option<Option<Time>> = None;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    state.saw(time);
                    for piece in data.drain(..) {
                        match piece {
                            Piece::Sample(sample) => {
                                let group = group_of(&grouping, &mut groups, &sample.series);
                                state.insert(&sample, group, time);
                            }
                            Piece::Part(part) => state.merge(part),
                        }
                    }
                });
                let f = frontier_min(frontier);
                if last_frontier != Some(f) {
                    last_frontier = Some(f);
                    if let Some(f) = f {
                        state.saw(f);
                    }
                    if let Some(cap) = held.as_mut() {
                        let mut sent = 0u64;
                        let at: &Capability<Time> = cap;
                        state.advance(f, &mut |time, mut batch| {
                            if batch.is_empty() {
                                return;
                            }
                            sent += batch.len() as u64;
                            let at = at.delayed(&time.max(*at.time()));
                            output.session(&at).give_container(&mut batch);
                        });
                        add(&stats.sent, sent);
                        match f {
                            Some(f) => raise(cap, f.saturating_sub(holdback)),
                            None => held = None,
                        }
                    }
                }
                report(&mut state, &stats);
            }
        })
        .container::<Vec<Sample>>()
}
