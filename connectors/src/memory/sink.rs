//! The `memory` sink on a worker: every sample goes to worker 0, which
//! writes it into the process's history for this sink (as soon as no query
//! holds the store; until then it keeps the samples, and waits only once
//! it holds [`WAIT_AFTER`] of them) and trims the history as its input
//! frontier moves. It holds no capability: best effort.

use tidemark_engine::Sample;
use tidemark_engine::component::SinkContext;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, frontier_min, to_first_worker,
};
use tidemark_engine::stats::{DropReason, add};

use super::config::MemorySink;

/// Samples kept back while queries hold the store, before the sink waits
/// for them (a bound on its memory, not a rate).
pub const WAIT_AFTER: usize = 100_000;

impl MemorySink {
    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let first = stream.scope().index() == 0;
        let history = first.then(|| {
            ctx.history
                .output(&ctx.pipeline, &ctx.name, &ctx.inputs, self.limits)
        });
        stream
            .unary_frontier::<ProgressBuilder, _, _, _>(
                to_first_worker(),
                &ctx.name,
                move |_cap, _info| {
                    let mut buffer: Vec<Sample> = Vec::new();
                    let mut frontier_seen: Option<u64> = None;
                    move |(input, frontier), _output| {
                        input.for_each(|_cap, data| {
                            add(&ctx.stats.received, data.len() as u64);
                            buffer.append(data);
                        });
                        let Some(history) = history.as_ref() else {
                            buffer.clear();
                            return;
                        };
                        let written = |n: u64, refused: u64| {
                            add(&ctx.stats.sent, n - refused);
                            if refused > 0 {
                                ctx.stats.dropped(DropReason::SeriesLimit, refused);
                            }
                        };
                        if !buffer.is_empty() {
                            let n = buffer.len() as u64;
                            if let Some(refused) = history.try_insert(&mut buffer) {
                                written(n, refused);
                            } else if buffer.len() >= WAIT_AFTER {
                                written(n, history.insert(&mut buffer));
                            }
                        }
                        let now = frontier_min(frontier);
                        if now != frontier_seen {
                            frontier_seen = now;
                            if !buffer.is_empty() {
                                // Everything before the frontier is in
                                // before the history says it got there.
                                let n = buffer.len() as u64;
                                written(n, history.insert(&mut buffer));
                            }
                            // At the end of its input the history keeps the
                            // retention behind its newest sample, for
                            // queries after a finite run.
                            match now {
                                Some(f) => history.advance(i64::try_from(f).unwrap_or(i64::MAX)),
                                None => history.finish(),
                            }
                        }
                    }
                },
            )
            .container::<Vec<()>>()
    }
}
