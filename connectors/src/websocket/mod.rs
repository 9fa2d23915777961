//! WebSocket: the `websocket` sink, which publishes a pipeline's output to
//! subscribers of the server's `/ws` endpoint (dashboards): a snapshot of
//! the latest values, then every new value. The sink gathers its input on
//! worker 0 and hands it to the process's
//! [`LiveHub`](tidemark_engine::live::LiveHub); the server side lives in
//! `tidemark-pipelines` (`server/live.rs`). Best effort: nothing is held
//! for a subscriber, and a slow one is handled by the sink's `slow_client`
//! policy. See `docs/sinks/websocket.md`.

use std::sync::Arc;

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::runtime::ProgressStream;
use tidemark_engine::spec::{AnyStream, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

mod config;
mod sink;

pub use config::{WebsocketSink, WebsocketSinkConfig};

impl Validate<dyn SinkSpec> for WebsocketSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for WebsocketSink {
    fn takes(&self) -> StreamKind {
        StreamKind::Samples
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        true
    }
    fn build<'scope>(&self, input: AnyStream<'scope>, ctx: SinkContext) -> ProgressStream<'scope> {
        self.build(input.into_samples(), ctx)
    }
}
