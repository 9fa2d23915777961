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
