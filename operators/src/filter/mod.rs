//! The `filter` operator: keeps the samples whose series match a PromQL
//! series selector. Decisions are cached per series id.

mod config;
pub use config::{FilterConfig, FilterTransform};

use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;

use tidemark_engine::runtime::{Operator, SampleStream};
use tidemark_engine::selector::Selector;
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::{Sample, SeriesId};

/// A transform's optional `match` step: with a selector, the samples of
/// other series are dropped by a filter named `<name>.match` (with its own
/// counters); without one, the stream as it is.
pub fn match_step<'scope>(
    stream: SampleStream<'scope>,
    selector: Option<&Selector>,
    ctx: &tidemark_engine::spec::TransformContext,
) -> SampleStream<'scope> {
    let Some(selector) = selector else {
        return stream;
    };
    let step = format!("{}.match", ctx.name);
    let stats = ctx
        .stats
        .component(&step, tidemark_engine::stats::Role::Transform);
    stream.filter_series(&step, selector.clone(), stats)
}

/// Selector-based filtering.
pub trait Filter<'scope> {
    /// Keeps samples whose series match `selector`.
    fn filter_series(
        self,
        name: &str,
        selector: Selector,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope>;
}

impl<'scope> Filter<'scope> for SampleStream<'scope> {
    fn filter_series(
        self,
        name: &str,
        selector: Selector,
        stats: Arc<ComponentStats>,
    ) -> SampleStream<'scope> {
        let mut cache: FxHashMap<SeriesId, bool> = FxHashMap::default();
        self.unary(Pipeline, name, move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let before = data.len();
                    data.retain(|s| {
                        *cache
                            .entry(s.series.id())
                            .or_insert_with(|| selector.matches(&s.series))
                    });
                    add(&stats.received, before as u64);
                    add(&stats.sent, data.len() as u64);
                    if !data.is_empty() {
                        output.session(&cap).give_container(data);
                    }
                });
            }
        })
        .container::<Vec<Sample>>()
    }
}
