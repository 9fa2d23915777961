//! The `websocket` sink on a worker: every sample goes to worker 0, which
//! publishes it to the process's live hub as soon as it arrives (window
//! results are final when emitted) and records its input frontier as the
//! output's watermark. It holds no capability: best effort.

use tidemark_engine::Sample;
use tidemark_engine::component::SinkContext;
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, frontier_min, to_first_worker,
};
use tidemark_engine::stats::add;

use super::config::WebsocketSink;

impl WebsocketSink {
    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let first = stream.scope().index() == 0;
        // Only worker 0 receives anything; only it registers the output,
        // so subscribers of other processes are told where to go.
        let output = first.then(|| {
            ctx.live
                .output(&ctx.pipeline, &ctx.name, self.queue, self.slow_client)
        });
        stream
            .unary_frontier::<ProgressBuilder, _, _, _>(
                to_first_worker(),
                &ctx.name,
                move |_cap, _info| {
                    let mut buffer: Vec<Sample> = Vec::new();
                    move |(input, frontier), _output| {
                        input.for_each(|_cap, data| {
                            add(&ctx.stats.received, data.len() as u64);
                            buffer.append(data);
                        });
                        let Some(out) = output.as_ref() else {
                            buffer.clear();
                            return;
                        };
                        if !buffer.is_empty() {
                            out.publish(&buffer);
                            add(&ctx.stats.sent, buffer.len() as u64);
                            buffer.clear();
                        }
                        if let Some(f) = frontier_min(frontier) {
                            out.advance(f);
                        }
                    }
                },
            )
            .container::<Vec<()>>()
    }
}
