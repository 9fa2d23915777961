//! The timely wrapper around [`WindowState`]: exchange by series (group) id,
//! feed samples with their entry watermark, advance on frontier changes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use tidemark_engine::runtime::{Operator, SampleStream, frontier_min};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;
use tidemark_engine::{Sample, Series, SeriesId};
use timely::dataflow::channels::pact::Exchange;

use super::{WindowSpec, WindowState};
use crate::group::Grouping;

/// Windowed aggregation on a stream of samples.
pub trait Window<'scope> {
    /// Aggregates the samples of each group of `spec.grouping` in the
    /// windows of `spec`; the samples of a group meet on one worker.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemark_operators::window::{Window, WindowKind, WindowSpec, LatePolicy};
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
    /// };
    /// let out = timely::example(move |scope| {
    ///     let s = Series::new("x", [("a", "1")]);
    ///     (1..=20u64)
    ///         .map(move |t| Sample::new(s.clone(), t as i64, 1.0))
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window("w", spec, Arc::new(ComponentStats::default()))
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
    ) -> SampleStream<'scope>;
}

impl<'scope> Window<'scope> for SampleStream<'scope> {
    fn window(
        self,
        name: &str,
        spec: WindowSpec,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope> {
        let holdback = spec.holdback();
        let grouping = spec.grouping.clone();
        // Samples go to the worker that owns their group. Groups are computed
        // once per input series on each side and cached.
        let route = {
            let grouping = grouping.clone();
            let mut cache: FxHashMap<SeriesId, u64> = FxHashMap::default();
            Exchange::new(move |s: &Sample| match grouping {
                Grouping::Series => s.series.id().0,
                _ => *cache
                    .entry(s.series.id())
                    .or_insert_with(|| grouping.project(&s.series).id().0),
            })
        };
        self.unary_frontier(route, name, move |capability, _info| {
            let mut held = Some(capability);
            let mut state = WindowState::new(spec);
            let mut groups: FxHashMap<SeriesId, Series> = FxHashMap::default();
            let mut last_frontier: Option<Option<Time>> = None;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    add(&stats.received, data.len() as u64);
                    if matches!(grouping, Grouping::Series) {
                        for sample in data.iter() {
                            state.insert(sample, &sample.series, time);
                        }
                    } else {
                        for sample in data.iter() {
                            let group = groups
                                .entry(sample.series.id())
                                .or_insert_with(|| grouping.project(&sample.series));
                            state.insert(sample, group, time);
                        }
                    }
                    data.clear();
                });
                let f = frontier_min(frontier);
                if last_frontier != Some(f) {
                    last_frontier = Some(f);
                    if let Some(cap) = held.as_ref() {
                        let mut sent = 0u64;
                        state.advance(f, &mut |time, mut batch| {
                            if batch.is_empty() {
                                return;
                            }
                            sent += batch.len() as u64;
                            let at = cap.delayed(&time.max(*cap.time()));
                            output.session(&at).give_container(&mut batch);
                        });
                        add(&stats.sent, sent);
                    }
                    match f {
                        Some(f) => {
                            if let Some(cap) = held.as_mut() {
                                let to = f.saturating_sub(holdback);
                                if to > *cap.time() {
                                    cap.downgrade(&to);
                                }
                            }
                        }
                        None => held = None,
                    }
                }
                let counts = state.take_counts();
                stats.dropped(DropReason::Late, counts.late);
                stats.dropped(DropReason::TooLate, counts.too_late);
                stats.dropped(DropReason::NotANumber, counts.nan);
                add(&stats.corrections, counts.corrections);
            }
        })
        .container::<Vec<Sample>>()
    }
}
