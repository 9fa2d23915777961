//! Notifications: the `notify` sink delivers a `route` transform's
//! notifications to the receivers of an Alertmanager configuration file:
//! `webhook_configs` (Alertmanager's webhook JSON, so existing receivers
//! work unchanged), `slack_configs` (incoming webhooks, Alertmanager's
//! default layout), `pagerduty_configs` (Events API v2, one `dedup_key`
//! per group) and `email_configs` (SMTP with STARTTLS or TLS and
//! authentication, plain-text and HTML bodies). Delivery classifies every
//! answer, retries what a retry can mend and never logs a secret
//! ([`service`]); an optional notification log ([`log`]) makes a replay
//! notify once.

pub(crate) mod config;
mod email;
mod log;
mod receivers;
pub(crate) mod service;
mod sink;
mod template;

use std::sync::Arc;

pub use config::{NotifySink, NotifySinkConfig};

use tidemark_engine::component::{ConfigError, SinkContext};
use tidemark_engine::spec::{AnyStream, Resource, ResourceKind, SinkSpec, StreamKind, Validate};
use tidemark_engine::time::Time;

use config::{Integration, Secret};

impl Validate<dyn SinkSpec> for NotifySinkConfig {
    fn validated(&self) -> Result<Arc<dyn SinkSpec>, Vec<ConfigError>> {
        self.validate().map(|s| Arc::new(s) as Arc<dyn SinkSpec>)
    }
}

impl SinkSpec for NotifySink {
    fn takes(&self) -> &'static [StreamKind] {
        &[StreamKind::Notifications]
    }
    fn holdback(&self) -> Time {
        0
    }
    fn serves_live(&self) -> bool {
        false
    }
    fn touches(&self) -> Vec<Resource> {
        let mut out = vec![Resource::new(
            "config",
            ResourceKind::ReadFile(self.file.clone().into()),
        )];
        if let Some(log) = &self.log {
            out.push(Resource::new(
                "log",
                ResourceKind::WriteFile(log.into(), tidemark_engine::spec::WriteMode::Append),
            ));
        }
        for t in &self.targets {
            let secret = match &t.integration {
                Integration::Email(e) => {
                    out.push(crate::touches::url(
                        "config",
                        &format!("smtp://{}:{}", e.host, e.port),
                        25,
                    ));
                    for f in e.ca_file.iter() {
                        out.push(Resource::new("config", ResourceKind::ReadFile(f.into())));
                    }
                    match &e.password {
                        Some(p) => p,
                        None => continue,
                    }
                }
                Integration::Webhook { url, .. } | Integration::Slack { url, .. } => url,
                Integration::Pagerduty {
                    routing_key, url, ..
                } => {
                    out.push(crate::touches::url("config", url, 443));
                    routing_key
                }
            };
            match secret {
                Secret::Inline(u)
                    if matches!(
                        t.integration,
                        Integration::Webhook { .. } | Integration::Slack { .. }
                    ) =>
                {
                    out.push(crate::touches::url("config", u, 443))
                }
                Secret::Inline(_) => {}
                Secret::File(f) => {
                    out.push(Resource::new("config", ResourceKind::ReadFile(f.into())))
                }
                Secret::Env(e) => out.push(Resource::new("config", ResourceKind::Env(e.clone()))),
            }
        }
        out
    }
    fn build<'scope>(
        &self,
        input: AnyStream<'scope>,
        ctx: SinkContext,
    ) -> tidemark_engine::runtime::ProgressStream<'scope> {
        sink::build(self, input.into_notifications(), ctx)
    }
}
