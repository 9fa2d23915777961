//! Alertmanager: the `alertmanager` sink sends an `alert` transform's
//! alert stream to one or more real Alertmanagers through their API v2
//! (`POST /api/v2/alerts`), as Prometheus's notifier does: firing alerts
//! at once and again every `resend_delay` with an `endsAt` four of those
//! ahead (so Alertmanager keeps them while Tidemark lives and resolves
//! them if it dies), resolutions at once and again for 15 minutes (an
//! Alertmanager that restarted learns them too), at most 64 alerts a
//! request, every Alertmanager of the list sent everything. Under `tidemark
//! serve --data-dir` what it keeps sending survives a crash ([`kept`]).

pub(crate) mod config;
mod kept;
mod sink;

use std::sync::Arc;

pub use config::{AlertmanagerSink, AlertmanagerSinkConfig};

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::spec::{AnyStream, Resource, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

impl Validate<dyn SinkSpec> for AlertmanagerSinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for AlertmanagerSink {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Alerts]
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn touches(&self) -> Vec<Resource> {
        self.urls
            .iter()
            .map(|u| crate::touches::url("url", u, 9093))
            .collect()
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: SinkContext,
    ) -> tidemark_engine::runtime::ProgressStream<'scope> {
        sink::build(self, input.into_alerts(), ctx)
    }
}
