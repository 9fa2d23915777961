//! Redis: the `redis` sink, for live state that applications read in a
//! millisecond: the latest value of every series, its recent values, and a
//! pub/sub channel per sink (key layout in [`service`] and
//! `docs/sinks/redis.md`).

use std::sync::Arc;

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::runtime::ProgressStream;
use tidemark_engine::spec::{AnyStream, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

mod config;
mod service;
mod sink;

pub use config::{RedisSink, RedisSinkConfig};

impl Validate<dyn SinkSpec> for RedisSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for RedisSink {
    fn takes(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope> {
        self.build(input.into_samples(), ctx)
    }
}
