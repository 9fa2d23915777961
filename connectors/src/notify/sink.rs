//! The `notify` sink's delivery: each notification becomes one request
//! per integration of its receiver, queued per integration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::notify::{Delivery, Notification, Recent, Status};
use tidemark_engine::runtime::{NotificationStream, ProgressStream};
use tidemark_engine::stats::ComponentStats;
use tidemark_engine::time::{Time, now_millis};

use super::config::{Integration, NotifySink, Target};
use super::email;
use super::log::{self, Log, Logged, Pending};
use super::receivers::{self, PagerdutyFields};
use super::service::{Attempt, Http, Queue, Request};
use super::template::Text;
use crate::deliver::{Deliverer, Work, deliver_sink};
use lettre::{Message, SmtpTransport};

pub(super) fn build<'scope>(
    sink: &NotifySink,
    notifications: NotificationStream<'scope>,
    ctx: SinkContext,
) -> ProgressStream<'scope> {
    let sink = sink.clone();
    let failure = Arc::clone(&ctx.failure);
    let names = (ctx.pipeline.clone(), ctx.name.clone());
    let recent = Arc::clone(&ctx.notifications);
    // Under `tidemark serve --data-dir`, a sink without a log of its own
    // keeps one in the pipeline's state directory.
    let log = sink.log.as_ref().map(PathBuf::from).or_else(|| {
        ctx.state_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.nflog", ctx.name)))
    });
    deliver_sink(notifications, ctx, move || {
        Notifier::new(sink, log, &failure, names, recent)
    })
}

/// An integration with its secret read.
struct Ready {
    target: Target,
    secret: String,
    /// An email integration's connection settings.
    smtp: Option<SmtpTransport>,
}

/// What one integration is sent, how the dashboard will list it, and
/// its key in the notification log.
struct Payload {
    body: Body,
    note: Delivery,
    key: String,
}

enum Body {
    Http(Request),
    Email(Box<Message>),
}

struct Notifier {
    sink: NotifySink,
    http: Http,
    ready: Vec<Ready>,
    queues: Vec<Queue<Payload>>,
    /// Integrations of each receiver, by index into `ready`.
    by_receiver: HashMap<String, Vec<usize>>,
    /// Where deliveries are recorded for the dashboard.
    recent: Arc<Recent>,
    pipeline: String,
    name: String,
    log: Option<Log>,
    /// Notifications the log held queued and undelivered when the sink
    /// started: queued again on the first round of work.
    restored: Vec<Pending>,
}

impl Notifier {
    /// Reads every secret; one that cannot be read stops the pipeline
    /// with an error naming where it should be (never its value).
    fn new(
        sink: NotifySink,
        log: Option<PathBuf>,
        failure: &Failure,
        (pipeline, name): (String, String),
        recent: Arc<Recent>,
    ) -> Notifier {
        let mut ready = Vec::new();
        for target in &sink.targets {
            let secret = match &target.integration {
                Integration::Webhook { url, .. } | Integration::Slack { url, .. } => {
                    url.read().map(|s| (s, None))
                }
                Integration::Pagerduty { routing_key, .. } => routing_key.read().map(|s| (s, None)),
                Integration::Email(e) => e
                    .password
                    .as_ref()
                    .map(|p| p.read())
                    .transpose()
                    .and_then(|p| email::transport(e, p, sink.timeout))
                    .map(|t| (String::new(), Some(t))),
            };
            match secret {
                Ok((secret, smtp)) => ready.push(Ready {
                    target: target.clone(),
                    secret,
                    smtp,
                }),
                Err(e) => {
                    let error =
                        ComponentError::permanent(Fault::Config, format!("{}: {e}", target.name()));
                    tracing::error!(sink = %name, error = %error.chain(), "Cannot read a receiver's secret; the pipeline stops.");
                    failure.fail(&name, &error);
                }
            }
        }
        let opened = log.and_then(|path| {
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| Log::open(&path, now_millis()));
            match opened {
                Ok(opened) => Some(opened),
                Err(e) => {
                    let error = ComponentError::io(
                        format!("cannot open the notification log {}", path.display()),
                        e,
                    );
                    tracing::error!(sink = %name, error = %error.chain(), "Cannot open the notification log; the pipeline stops.");
                    failure.fail(&name, &error);
                    None
                }
            }
        });
        let (log, restored) = match opened {
            Some((log, restored)) => {
                if !restored.is_empty() {
                    tracing::info!(sink = %name, notifications = restored.len(), "Delivering what was queued and not delivered before the restart.");
                }
                (Some(log), restored)
            }
            None => (None, Vec::new()),
        };
        let mut by_receiver: HashMap<String, Vec<usize>> = HashMap::new();
        let mut queues = Vec::new();
        for (i, r) in ready.iter().enumerate() {
            by_receiver
                .entry(r.target.receiver.clone())
                .or_default()
                .push(i);
            queues.push(
                Queue::new(r.target.name(), r.target.receiver.clone(), sink.retry_for)
                    .with_rate_limit(sink.max_per_minute),
            );
        }
        Notifier {
            http: Http::new(sink.timeout),
            sink,
            ready,
            queues,
            by_receiver,
            recent,
            pipeline,
            name,
            log,
            restored,
        }
    }

    /// Whether `n` is older than `max_age` (counted, not sent).
    fn too_old(&self, n: &Notification, now: i64, stats: &ComponentStats) -> bool {
        let old = self
            .sink
            .max_age
            .is_some_and(|max| now - n.at > max.as_millis() as i64);
        if old {
            stats.notified(&n.receiver, "too_old", "", 1);
        }
        old
    }

    /// Builds what integration `i` is sent for `n` and queues it; `true`
    /// when it was queued.
    fn enqueue(&mut self, i: usize, n: &Notification, stats: &ComponentStats) -> bool {
        match self.payload(&self.ready[i], n, stats) {
            Ok(Some(payload)) => {
                self.queues[i].push(payload);
                true
            }
            Ok(None) => {
                stats.notified(&n.receiver, "skipped", "resolved_only", 1);
                false
            }
            Err(error) => {
                stats.notified(&n.receiver, "failed", "unbuildable", 1);
                tidemark_engine::stats::add(&stats.errors, 1);
                tracing::error!(target_name = %self.ready[i].target.name(), %error, "Cannot build a notification; it is dropped.");
                false
            }
        }
    }

    /// Queues again what the log held undelivered at the start; what can
    /// no longer be delivered (too old, or for an integration the
    /// configuration no longer has) is logged as done.
    fn requeue_restored(&mut self, stats: &ComponentStats) {
        let now = now_millis();
        for p in std::mem::take(&mut self.restored) {
            let n = &p.notification;
            let key = log::key(&p.target, n);
            let target = self.ready.iter().position(|r| r.target.name() == p.target);
            let queued = match target {
                _ if self.too_old(n, now, stats) => false,
                Some(i) => self.enqueue(i, n, stats),
                None => {
                    stats.notified(&n.receiver, "failed", "unknown_receiver", 1);
                    tracing::warn!(target_name = %p.target, "A notification queued before the restart is for an integration the configuration no longer has; it is dropped.");
                    false
                }
            };
            if !queued {
                self.log_done(key, now, stats);
            }
        }
    }

    fn log_done(&mut self, key: String, now: i64, stats: &ComponentStats) {
        if let Some(log) = self.log.as_mut()
            && let Err(error) = log.add(key, now)
        {
            tidemark_engine::stats::add(&stats.errors, 1);
            tracing::error!(%error, file = %log.path().display(), "Cannot write the notification log; a replay may notify again.");
        }
    }

    /// What one integration is sent, or `None` when it is not told (only
    /// resolved alerts, and it does not send resolutions); an email that
    /// cannot be built is an error.
    fn payload(
        &self,
        r: &Ready,
        n: &Notification,
        stats: &ComponentStats,
    ) -> Result<Option<Payload>, String> {
        let mut n = n.clone();
        if !r.target.send_resolved {
            n.alerts.retain(|a| a.status == Status::Firing);
            if n.alerts.is_empty() {
                return Ok(None);
            }
        }
        // A receiver's own template; one that does not render is counted,
        // and the default text is sent instead.
        let render = |t: &Option<Text>, field: &str| -> Option<String> {
            let t = t.as_ref()?;
            t.render(&n)
                .map_err(|error| {
                    tidemark_engine::stats::add(&stats.errors, 1);
                    tracing::warn!(target_name = %r.target.name(), field, %error, "A template does not render; the default text is sent.");
                })
                .ok()
        };
        let json = ("content-type".to_owned(), "application/json".to_owned());
        let (url, body) = match &r.target.integration {
            Integration::Email(e) => {
                let own = email::Own {
                    subject: render(&e.subject, "headers.Subject"),
                    text: render(&e.text, "text"),
                    html: render(&e.html, "html"),
                };
                return email::message(e, &n, own)
                    .map(|m| Some(self.payload_of(r, &n, Body::Email(Box::new(m)))));
            }
            Integration::Webhook { max_alerts, .. } => {
                (r.secret.clone(), receivers::webhook(&n, *max_alerts))
            }
            Integration::Slack {
                channel,
                username,
                icon_emoji,
                icon_url,
                title,
                text,
                ..
            } => (
                r.secret.clone(),
                receivers::slack(
                    &n,
                    channel.as_deref(),
                    username.as_deref(),
                    icon_emoji.as_deref(),
                    icon_url.as_deref(),
                    (render(title, "title"), render(text, "text")),
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
                description,
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
                        description: render(description, "description"),
                    },
                ),
            ),
        };
        let request = Request {
            url,
            headers: vec![json],
            body: body.to_string(),
        };
        Ok(Some(self.payload_of(r, &n, Body::Http(request))))
    }

    fn payload_of(&self, r: &Ready, n: &Notification, body: Body) -> Payload {
        Payload {
            body,
            note: Delivery {
                pipeline: self.pipeline.clone(),
                sink: self.name.clone(),
                receiver: n.receiver.clone(),
                target: r.target.name(),
                status: n.status,
                title: receivers::subject(n),
                alerts: n.alerts.len(),
                at: n.at,
                done_at: 0,
                outcome: "",
            },
            key: log::key(&r.target.name(), n),
        }
    }
}

impl Deliverer<Notification> for Notifier {
    fn accept(&mut self, notifications: Vec<Notification>, _time: Time, stats: &ComponentStats) {
        let now = now_millis();
        for n in notifications {
            if self.too_old(&n, now, stats) {
                continue;
            }
            let Some(targets) = self.by_receiver.get(&n.receiver).cloned() else {
                if !self.sink.receivers.contains(&n.receiver) {
                    stats.notified(&n.receiver, "failed", "unknown_receiver", 1);
                    tracing::warn!(receiver = %n.receiver, "A notification names a receiver the notify sink's configuration does not have; it is dropped.");
                }
                continue;
            };
            for i in targets {
                let target = self.ready[i].target.name();
                let key = log::key(&target, &n);
                match self.log.as_ref().and_then(|l| l.state(&key)) {
                    Some(Logged::Done) => {
                        stats.notified(&n.receiver, "skipped", "already_sent", 1);
                        continue;
                    }
                    Some(Logged::Queued) => {
                        stats.notified(&n.receiver, "skipped", "already_queued", 1);
                        continue;
                    }
                    None => {}
                }
                if self.enqueue(i, &n, stats)
                    && let Some(log) = self.log.as_mut()
                    && let Err(error) = log.queue(
                        key,
                        Pending {
                            target,
                            notification: n.clone(),
                        },
                        now,
                    )
                {
                    tidemark_engine::stats::add(&stats.errors, 1);
                    tracing::error!(%error, file = %log.path().display(), "Cannot write the notification log; a crash before delivery would lose a notification.");
                }
            }
        }
        // Before the sink lets the input's time pass (and a checkpoint
        // cover it): what was queued is on disk.
        if let Some(log) = self.log.as_mut()
            && let Err(error) = log.sync()
        {
            tidemark_engine::stats::add(&stats.errors, 1);
            tracing::error!(%error, file = %log.path().display(), "Cannot write the notification log; a crash before delivery would lose a notification.");
        }
    }

    fn undelivered(&self) -> usize {
        self.queues.iter().map(Queue::len).sum()
    }

    fn work(&mut self, stats: &ComponentStats) -> Work {
        if !self.restored.is_empty() {
            self.requeue_restored(stats);
        }
        let mut work = Work::default();
        let (http, ready) = (&self.http, &self.ready);
        for (q, r) in self.queues.iter_mut().zip(ready) {
            let recent = &self.recent;
            let log = &mut self.log;
            let sent = q.work(
                stats,
                |p| match (&p.body, &r.smtp) {
                    (Body::Http(request), _) => http.send(request),
                    (Body::Email(message), Some(smtp)) => email::send(smtp, message),
                    (Body::Email(_), None) => Attempt::Rejected {
                        status: 0,
                        body: "no SMTP connection settings".into(),
                    },
                },
                |p, outcome| {
                    // A refusal is final too: sending it again after a
                    // restart would be refused again. One given up stays
                    // pending: the next start tries it again.
                    if let Some(log) = log.as_mut()
                        && outcome != "gave_up"
                        && let Err(error) = log.add(p.key.clone(), now_millis())
                    {
                        tidemark_engine::stats::add(&stats.errors, 1);
                        tracing::error!(%error, file = %log.path().display(), "Cannot write the notification log; a replay may notify again.");
                    }
                    recent.record(Delivery {
                        done_at: now_millis(),
                        outcome,
                        ..p.note.clone()
                    })
                },
            );
            if let Some(w) = sent {
                work.wait = Some(work.wait.map_or(w, |x: std::time::Duration| x.min(w)));
            }
            work.undelivered += q.len();
        }
        work
    }
}
