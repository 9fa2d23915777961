//! The `notify` sink's delivery: each notification becomes one request
//! per integration of its receiver, queued per integration.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::notify::{Notification, Status};
use tidemark_engine::runtime::{NotificationStream, ProgressStream};
use tidemark_engine::stats::ComponentStats;
use tidemark_engine::time::{Time, now_millis};

use super::config::{Integration, NotifySink, Target};
use super::receivers::{self, PagerdutyFields};
use super::service::{Http, Queue, Request};
use crate::deliver::{Deliverer, Work, deliver_sink};

pub(super) fn build<'scope>(
    sink: &NotifySink,
    notifications: NotificationStream<'scope>,
    ctx: SinkContext,
) -> ProgressStream<'scope> {
    let sink = sink.clone();
    let (failure, name) = (Arc::clone(&ctx.failure), ctx.name.clone());
    deliver_sink(notifications, ctx, move || {
        Notifier::new(sink, &failure, &name)
    })
}

/// An integration with its secret read.
struct Ready {
    target: Target,
    secret: String,
}

struct Notifier {
    sink: NotifySink,
    http: Http,
    ready: Vec<Ready>,
    queues: Vec<Queue<Request>>,
    /// Integrations of each receiver, by index into `ready`.
    by_receiver: HashMap<String, Vec<usize>>,
}

impl Notifier {
    /// Reads every secret; one that cannot be read stops the pipeline
    /// with an error naming where it should be (never its value).
    fn new(sink: NotifySink, failure: &Failure, name: &str) -> Notifier {
        let mut ready = Vec::new();
        for target in &sink.targets {
            let secret = match &target.integration {
                Integration::Webhook { url, .. } | Integration::Slack { url, .. } => url.read(),
                Integration::Pagerduty { routing_key, .. } => routing_key.read(),
            };
            match secret {
                Ok(secret) => ready.push(Ready {
                    target: target.clone(),
                    secret,
                }),
                Err(e) => {
                    let error =
                        ComponentError::permanent(Fault::Config, format!("{}: {e}", target.name()));
                    tracing::error!(sink = name, error = %error.chain(), "Cannot read a receiver's secret; the pipeline stops.");
                    failure.fail(name, &error);
                }
            }
        }
        let mut by_receiver: HashMap<String, Vec<usize>> = HashMap::new();
        let mut queues = Vec::new();
        for (i, r) in ready.iter().enumerate() {
            by_receiver
                .entry(r.target.receiver.clone())
                .or_default()
                .push(i);
            queues.push(Queue::new(
                r.target.name(),
                r.target.receiver.clone(),
                sink.retry_for,
            ));
        }
        Notifier {
            http: Http::new(sink.timeout),
            sink,
            ready,
            queues,
            by_receiver,
        }
    }

    /// The request for one integration, or `None` when it is not told
    /// (only resolved alerts, and it does not send resolutions).
    fn request(&self, r: &Ready, n: &Notification) -> Option<Request> {
        let mut n = n.clone();
        if !r.target.send_resolved {
            n.alerts.retain(|a| a.status == Status::Firing);
            if n.alerts.is_empty() {
                return None;
            }
        }
        let json = ("content-type".to_owned(), "application/json".to_owned());
        let (url, body) = match &r.target.integration {
            Integration::Webhook { max_alerts, .. } => {
                (r.secret.clone(), receivers::webhook(&n, *max_alerts))
            }
            Integration::Slack {
                channel,
                username,
                icon_emoji,
                icon_url,
                ..
            } => (
                r.secret.clone(),
                receivers::slack(
                    &n,
                    channel.as_deref(),
                    username.as_deref(),
                    icon_emoji.as_deref(),
                    icon_url.as_deref(),
                ),
            ),
            Integration::Pagerduty {
                url,
                client,
                client_url,
                severity,
                class,
                component,
                group,
                ..
            } => (
                url.clone(),
                receivers::pagerduty(
                    &n,
                    &PagerdutyFields {
                        routing_key: &r.secret,
                        client: client.as_deref(),
                        client_url: client_url.as_deref(),
                        severity,
                        class: class.as_deref(),
                        component: component.as_deref(),
                        group: group.as_deref(),
                    },
                ),
            ),
        };
        Some(Request {
            url,
            headers: vec![json],
            body: body.to_string(),
        })
    }
}

impl Deliverer<Notification> for Notifier {
    fn accept(&mut self, notifications: Vec<Notification>, _time: Time, stats: &ComponentStats) {
        let now = now_millis();
        for n in notifications {
            if self
                .sink
                .max_age
                .is_some_and(|max| now - n.at > max.as_millis() as i64)
            {
                stats.notified(&n.receiver, "too_old", "", 1);
                continue;
            }
            let Some(targets) = self.by_receiver.get(&n.receiver) else {
                if !self.sink.receivers.contains(&n.receiver) {
                    stats.notified(&n.receiver, "failed", "unknown_receiver", 1);
                    tracing::warn!(receiver = %n.receiver, "A notification names a receiver the notify sink's configuration does not have; it is dropped.");
                }
                continue;
            };
            for &i in targets {
                match self.request(&self.ready[i], &n) {
                    Some(request) => self.queues[i].push(request),
                    None => stats.notified(&n.receiver, "skipped", "resolved_only", 1),
                }
            }
        }
    }

    fn work(&mut self, stats: &ComponentStats) -> Work {
        let mut work = Work::default();
        for q in &mut self.queues {
            if let Some(w) = q.work(stats, |r| self.http.send(r)) {
                work.wait = Some(work.wait.map_or(w, |x: std::time::Duration| x.min(w)));
            }
            work.undelivered += q.len();
        }
        work
    }
}
