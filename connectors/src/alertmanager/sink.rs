//! The `alertmanager` sink's delivery: the alerts it keeps sending, and
//! one queue per Alertmanager.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::ComponentError;
use tidemark_engine::notify::{fingerprint, label_map};
use tidemark_engine::runtime::{AlertStream, ProgressStream};
use tidemark_engine::stats::ComponentStats;
use tidemark_engine::time::{Time, format_millis, now_millis};

use super::config::AlertmanagerSink;
use super::kept::{Kept, KeptFile};
use crate::deliver::{Deliverer, Work, deliver_sink};
use crate::notify::service::{Http, Queue, Request};

/// How long a resolved alert is sent again (Prometheus's
/// `resolvedRetention`).
const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most alerts a request carries (Prometheus's `maxBatchSize`).
const MAX_BATCH: usize = 64;

pub(super) fn build<'scope>(
    sink: &AlertmanagerSink,
    alerts: AlertStream<'scope>,
    ctx: SinkContext,
) -> ProgressStream<'scope> {
    let sink = sink.clone();
    // Under `tidemark serve --data-dir`, what the sink keeps sending is
    // kept on disk too.
    // What it kept is sent again only if the alerts' state came back
    // with the checkpoint: otherwise the rules start afresh, and would
    // never resolve a firing alert the file holds.
    let path = ctx.state_dir.as_ref().map(|dir| {
        (
            dir.join(format!("{}.alerts", ctx.name)),
            ctx.inputs_restored,
        )
    });
    let (failure, name) = (Arc::clone(&ctx.failure), ctx.name.clone());
    deliver_sink(alerts, ctx, move || {
        Sender::new(sink, path, &failure, &name)
    })
}

struct Sender {
    sink: AlertmanagerSink,
    http: Arc<Http>,
    /// By fingerprint: firing alerts, and resolved ones for a while (until
    /// the wall-clock time they hold).
    kept: BTreeMap<u64, Kept>,
    /// `kept` on disk, if the pipeline has a state directory.
    file: Option<KeptFile>,
    queues: Vec<Queue<Request>>,
    next_resend: Option<Instant>,
}

impl Sender {
    /// A sender; with `path`, what an earlier process kept sending is read
    /// back from there and sent at once when `resume` says the alerts'
    /// state was restored (else the file is emptied). A file that cannot
    /// be opened stops the pipeline.
    fn new(
        sink: AlertmanagerSink,
        path: Option<(PathBuf, bool)>,
        failure: &Failure,
        name: &str,
    ) -> Sender {
        let queues = sink
            .urls
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let name = format!("alertmanager[{i}]");
                Queue::new(name.clone(), name, sink.retry_for)
            })
            .collect();
        let opened = path.map(|(path, resume)| {
            if !resume {
                tracing::info!(sink = %name, "The alerts' state was not restored from a checkpoint: the alerts this sink kept sending before are not sent again.");
            }
            path.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| KeptFile::open(&path, now_millis(), resume))
                .map_err(|e| {
                    ComponentError::io(
                        format!("cannot open the alerts kept in {}", path.display()),
                        e,
                    )
                })
        });
        let (file, kept) = match opened {
            Some(Ok((file, kept))) => (Some(file), kept),
            Some(Err(error)) => {
                tracing::error!(sink = %name, error = %error.chain(), "Cannot open the alerts kept on disk; the pipeline stops.");
                failure.fail(name, &error);
                (None, BTreeMap::new())
            }
            None => (None, BTreeMap::new()),
        };
        let mut sender = Sender {
            http: Arc::new(Http::new(sink.timeout)),
            sink,
            kept,
            file,
            queues,
            next_resend: None,
        };
        if !sender.kept.is_empty() {
            tracing::info!(sink = %name, alerts = sender.kept.len(), "Sending again the alerts kept before the restart.");
            sender.resend();
            sender.next_resend = Some(Instant::now() + sender.sink.resend_delay);
        }
        sender
    }

    /// Alertmanager's postable alert.
    fn postable(&self, alert: &Alert) -> Value {
        let ends_at = match alert.ends_at {
            Some(e) => e,
            None => now_millis() + 4 * self.sink.resend_delay.as_millis() as i64,
        };
        let annotations: BTreeMap<&str, &str> = alert
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        json!({
            "labels": label_map(&alert.labels),
            "annotations": annotations,
            "startsAt": format_millis(alert.starts_at),
            "endsAt": format_millis(ends_at),
            "generatorURL": alert.generator_url,
        })
    }

    /// Queues `alerts` for every Alertmanager, in requests of at most 64.
    fn queue(&mut self, alerts: &[&Alert]) {
        for chunk in alerts.chunks(MAX_BATCH) {
            let body: Vec<Value> = chunk.iter().map(|a| self.postable(a)).collect();
            let body = Value::Array(body).to_string();
            for (queue, url) in self.queues.iter_mut().zip(&self.sink.urls) {
                queue.push(Request {
                    url: format!("{url}/api/v2/alerts"),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.clone(),
                });
            }
        }
    }

    fn resend(&mut self) {
        let now = now_millis();
        self.kept.retain(|_, k| k.until.is_none_or(|u| u > now));
        let kept: Vec<Alert> = self.kept.values().map(|k| k.alert.clone()).collect();
        let refs: Vec<&Alert> = kept.iter().collect();
        self.queue(&refs);
    }
}

impl Deliverer<Alert> for Sender {
    fn accept(&mut self, alerts: Vec<Alert>, _time: Time, stats: &ComponentStats) {
        let now = now_millis();
        let mut changed = Vec::new();
        let mut too_old = 0;
        for alert in alerts {
            if alert.state == AlertState::Pending {
                continue;
            }
            if self
                .sink
                .max_age
                .is_some_and(|max| now - alert.at > max.as_millis() as i64)
            {
                too_old += 1;
                continue;
            }
            let fp = fingerprint(&label_map(&alert.labels));
            let until = (alert.state == AlertState::Resolved)
                .then(|| now + RESOLVED_RETENTION.as_millis() as i64);
            let kept = Kept {
                alert: alert.clone(),
                until,
            };
            if let Some(file) = self.file.as_mut()
                && let Err(error) = file.record(fp, &kept)
            {
                tidemark_engine::stats::add(&stats.errors, 1);
                tracing::error!(%error, file = %file.path().display(), "Cannot write the alerts kept on disk; a crash would forget them.");
            }
            self.kept.insert(fp, kept);
            changed.push(alert);
        }
        // Before the sink lets the input's time pass (and a checkpoint
        // cover it): what it keeps sending is on disk.
        if !changed.is_empty()
            && let Some(file) = self.file.as_mut()
            && let Err(error) = file.sync(&self.kept)
        {
            tidemark_engine::stats::add(&stats.errors, 1);
            tracing::error!(%error, file = %file.path().display(), "Cannot write the alerts kept on disk; a crash would forget them.");
        }
        for q in &self.queues {
            stats.notified(&q.receiver, "too_old", "", too_old);
        }
        let refs: Vec<&Alert> = changed.iter().collect();
        self.queue(&refs);
        if self.next_resend.is_none() && !self.kept.is_empty() {
            self.next_resend = Some(Instant::now() + self.sink.resend_delay);
        }
    }

    fn undelivered(&self) -> usize {
        self.queues.iter().map(Queue::len).sum()
    }

    fn work(&mut self, stats: &ComponentStats) -> Work {
        if let Some(due) = self.next_resend
            && due <= Instant::now()
        {
            self.resend();
            self.next_resend =
                (!self.kept.is_empty()).then(|| Instant::now() + self.sink.resend_delay);
        }
        let http = Arc::clone(&self.http);
        let mut wait = self
            .next_resend
            .map(|d| d.saturating_duration_since(Instant::now()));
        let mut undelivered = 0;
        for q in &mut self.queues {
            if let Some(w) = q.work(stats, |r| http.send(r), |_, _| {}) {
                wait = Some(wait.map_or(w, |x| x.min(w)));
            }
            undelivered += q.len();
        }
        Work { wait, undelivered }
    }
}
