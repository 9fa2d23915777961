//! Builds the `timescaledb` sink on a worker (see [`crate::batch`]).

use tidemark_engine::component::SinkContext;
use tidemark_engine::runtime::{ProgressStream, SampleStream};

use std::sync::Arc;

use super::archive::TimescaleArchive;
use super::config::TimescaleSink;
use super::service::Writer;
use crate::batch::batch_sink;

impl TimescaleSink {
    /// Builds the sink on a worker: its writer thread connects on the first
    /// batch, and keeps retrying (holding its input) while it cannot.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        if ctx.worker == 0 {
            // Queries read what the sink wrote, past the memory sinks.
            let archive = TimescaleArchive::new(self, &ctx.pipeline, &ctx.name);
            ctx.history
                .archive(&ctx.pipeline, &ctx.name, &ctx.inputs, Arc::new(archive));
        }
        let config = self.clone();
        batch_sink(stream, ctx, self.batch_size, move || Writer::new(config))
    }
}
