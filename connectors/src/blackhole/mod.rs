//! The `blackhole` sink: counts what it receives and discards it. For
//! benchmarks and for trying pipelines out.

use serde::Deserialize;
use timely::dataflow::channels::pact::Pipeline;

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::runtime::{Operator, ProgressBuilder, ProgressStream, SampleStream};
use tidemark_engine::stats::add;

/// `type: blackhole` has no fields besides `inputs`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

impl BlackholeConfig {
    /// Nothing to check.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        Ok(())
    }

    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let stats = ctx.stats;
        stream
            .unary::<ProgressBuilder, _, _, _>(Pipeline, &ctx.name, move |_cap, _info| {
                move |input, _output| {
                    input.for_each(|_cap, data| {
                        add(&stats.received, data.len() as u64);
                        add(&stats.sent, data.len() as u64);
                        data.clear();
                    });
                }
            })
            .container::<Vec<()>>()
    }
}

samples_sink!(BlackholeConfig => self, holdback: |_| 0, serves_live: false, touches: |_| Vec::new());
