//! Delivery over HTTP with retries that can be trusted, shared by the
//! `notify` and `alertmanager` sinks.
//!
//! Every answer is classified as the receivers document theirs: a 2xx is
//! delivered; 408, 429 and 5xx, a timeout or a refused connection are
//! retried with exponential backoff (1 s doubling up to 5 min, or the
//! answer's `Retry-After` when it asks for longer) until `retry_for` has
//! passed since the record was queued, then given up (counted, logged);
//! any other 4xx is permanent: logged with (the start of) the answer's
//! body, counted, not retried. Each target is a FIFO queue, so a
//! resolution never overtakes the notification it resolves. Logs and
//! errors name the target, never its URL (a Slack webhook's URL is its
//! secret).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tidemark_engine::stats::ComponentStats;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most requests one target sends per call of [`Queue::work`].
const BURST: usize = 100;

/// An HTTP request ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

/// How one attempt went.
#[derive(Debug, PartialEq)]
pub(crate) enum Attempt {
    Delivered,
    /// Worth trying again (after at least `after`, when the answer said).
    Retry {
        reason: &'static str,
        detail: String,
        after: Option<Duration>,
    },
    /// A retry cannot help.
    Rejected {
        status: u16,
        body: String,
    },
}

/// Sends requests; one per sink.
pub(crate) struct Http {
    agent: ureq::Agent,
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Http { agent }
    }

    pub(crate) fn send(&self, request: &Request) -> Attempt {
        let mut builder = self.agent.post(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        match builder.send(request.body.as_bytes()) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                classify(status, after, body)
            }
            Err(error) => Attempt::Retry {
                reason: "unreachable",
                detail: transport_error(&error),
                after: None,
            },
        }
    }
}

/// The class of an HTTP answer.
pub(crate) fn classify(status: u16, after: Option<Duration>, body: String) -> Attempt {
    let detail = || format!("HTTP {status}: {}", shorten(&body));
    match status {
        200..=299 => Attempt::Delivered,
        408 => Attempt::Retry {
            reason: "timeout",
            detail: detail(),
            after,
        },
        429 => Attempt::Retry {
            reason: "rate_limited",
            detail: detail(),
            after,
        },
        500..=599 => Attempt::Retry {
            reason: "server_error",
            detail: detail(),
            after,
        },
        _ => Attempt::Rejected {
            status,
            body: shorten(&body),
        },
    }
}

fn shorten(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &body[..at]),
        None => body.to_owned(),
    }
}

/// What went wrong below HTTP, without the URL.
fn transport_error(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(e) => format!("i/o error: {}", e.kind()),
        ureq::Error::Tls(_) => "TLS error".into(),
        _ => "request failed".into(),
    }
}

struct Item<P> {
    payload: P,
    queued: Instant,
    attempts: u32,
}

/// A target's FIFO queue and its retry schedule.
pub(crate) struct Queue<P> {
    /// Named in logs and metrics (`receiver/webhook[0]`).
    pub(crate) name: String,
    /// The receiver counted in metrics.
    pub(crate) receiver: String,
    items: VecDeque<Item<P>>,
    next: Option<Instant>,
    backoff: Duration,
    retry_for: Duration,
    /// At most this many sends a minute (0: no limit).
    per_minute: u32,
    /// When the sends of the last minute were made.
    sent: VecDeque<Instant>,
}

impl<P> Queue<P> {
    pub(crate) fn new(name: String, receiver: String, retry_for: Duration) -> Queue<P> {
        Queue {
            name,
            receiver,
            items: VecDeque::new(),
            next: None,
            backoff: FIRST_BACKOFF,
            retry_for,
            per_minute: 0,
            sent: VecDeque::new(),
        }
    }

    /// Limits sends to `per_minute` a minute (0: no limit); what is over
    /// waits its turn (counted as `throttled`), nothing is dropped.
    pub(crate) fn with_rate_limit(mut self, per_minute: u32) -> Queue<P> {
        self.per_minute = per_minute;
        self
    }

    /// How long until the rate limit allows another send.
    fn throttle(&mut self, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let minute = Duration::from_secs(60);
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            self.sent.pop_front();
        }
        (self.sent.len() >= self.per_minute as usize).then(|| {
            self.sent
                .front()
                .map_or(Duration::ZERO, |t| minute - now.duration_since(*t))
        })
    }

    pub(crate) fn push(&mut self, payload: P) {
        self.items.push_back(Item {
            payload,
            queued: Instant::now(),
            attempts: 0,
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Sends what is due through `send`; `ended` hears of each record
    /// that leaves the queue (`sent`, `rejected`, `gave_up`). Returns how
    /// long until the next attempt is due, if anything is left.
    pub(crate) fn work(
        &mut self,
        stats: &ComponentStats,
        mut send: impl FnMut(&P) -> Attempt,
        mut ended: impl FnMut(&P, &'static str),
    ) -> Option<Duration> {
        let now = Instant::now();
        if let Some(next) = self.next
            && next > now
        {
            return Some(next - now);
        }
        self.next = None;
        for _ in 0..BURST {
            if self.items.is_empty() {
                return None;
            }
            if let Some(wait) = self.throttle(now) {
                stats.notified(&self.receiver, "throttled", "rate_limit", 1);
                self.next = Some(now + wait);
                return Some(wait);
            }
            if self.per_minute > 0 {
                self.sent.push_back(now);
            }
            let item = self.items.front_mut()?;
            item.attempts += 1;
            match send(&item.payload) {
                Attempt::Delivered => {
                    stats.notified(&self.receiver, "sent", "", 1);
                    ended(&item.payload, "sent");
                    self.items.pop_front();
                    self.backoff = FIRST_BACKOFF;
                }
                Attempt::Rejected { status, body } => {
                    stats.notified(&self.receiver, "failed", "rejected", 1);
                    tidemark_engine::stats::add(&stats.errors, 1);
                    tracing::error!(target_name = %self.name, status, %body, "The receiver refused a notification, and retrying cannot help; it is dropped.");
                    ended(&item.payload, "rejected");
                    self.items.pop_front();
                }
                Attempt::Retry {
                    reason,
                    detail,
                    after,
                } => {
                    if item.queued.elapsed() >= self.retry_for {
                        stats.notified(&self.receiver, "failed", "gave_up", 1);
                        tidemark_engine::stats::add(&stats.errors, 1);
                        tracing::error!(target_name = %self.name, error = %detail, attempts = item.attempts, "Giving up on a notification after retrying for retry_for.");
                        ended(&item.payload, "gave_up");
                        self.items.pop_front();
                        continue;
                    }
                    stats.notified(&self.receiver, "retried", reason, 1);
                    stats.retried(&format!("{}: {detail}", self.name));
                    let wait = after.map_or(self.backoff, |a| a.max(self.backoff));
                    if item.attempts == 1 {
                        tracing::warn!(target_name = %self.name, error = %detail, retry_in = ?wait, "Failed to deliver a notification; retrying.");
                    }
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.next = Some(now + wait);
                    return Some(wait);
                }
            }
        }
        (!self.items.is_empty()).then_some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_delays_and_drops_nothing() {
        let stats = ComponentStats::default();
        let mut q: Queue<u32> =
            Queue::new("r/slack[0]".into(), "r".into(), Duration::from_secs(60)).with_rate_limit(2);
        for i in 0..3 {
            q.push(i);
        }
        let mut sent = Vec::new();
        let wait = q.work(
            &stats,
            |p| {
                sent.push(*p);
                Attempt::Delivered
            },
            |_, _| {},
        );
        assert_eq!(sent, [0, 1]);
        assert!(wait.unwrap() > Duration::from_secs(59), "{wait:?}");
        assert_eq!(q.len(), 1);
        assert!(
            stats
                .notify_counts()
                .contains(&(("r".into(), "throttled", "rate_limit"), 1))
        );
    }

    #[test]
    fn answers_are_classified_as_receivers_document_them() {
        assert_eq!(classify(200, None, String::new()), Attempt::Delivered);
        assert_eq!(classify(202, None, String::new()), Attempt::Delivered);
        for (status, reason) in [
            (408, "timeout"),
            (429, "rate_limited"),
            (503, "server_error"),
        ] {
            assert!(
                matches!(classify(status, None, String::new()), Attempt::Retry { reason: r, .. } if r == reason),
                "{status}"
            );
        }
        assert!(matches!(
            classify(400, None, "invalid_payload".into()),
            Attempt::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(404, None, String::new()),
            Attempt::Rejected { .. }
        ));
    }

    #[test]
    fn a_queue_keeps_order_retries_and_gives_up() {
        let stats = ComponentStats::default();
        let mut q: Queue<u32> = Queue::new("r/webhook[0]".into(), "r".into(), Duration::ZERO);
        q.push(1);
        q.push(2);
        let mut seen = Vec::new();
        // retry_for 0: the first failure gives up, the next is sent.
        let mut ends = Vec::new();
        let left = q.work(
            &stats,
            |p| {
                seen.push(*p);
                if *p == 1 {
                    Attempt::Retry {
                        reason: "server_error",
                        detail: String::new(),
                        after: None,
                    }
                } else {
                    Attempt::Delivered
                }
            },
            |p, outcome| ends.push((*p, outcome)),
        );
        assert_eq!(ends, [(1, "gave_up"), (2, "sent")]);
        assert_eq!(left, None);
        assert_eq!(seen, [1, 2]);
        let counts = stats.notify_counts();
        assert!(counts.contains(&(("r".into(), "failed", "gave_up"), 1)));
        assert!(counts.contains(&(("r".into(), "sent", ""), 1)));

        let mut q: Queue<u32> =
            Queue::new("r/webhook[0]".into(), "r".into(), Duration::from_secs(60));
        q.push(1);
        q.push(2);
        let wait = q.work(
            &stats,
            |_| Attempt::Retry {
                reason: "rate_limited",
                detail: String::new(),
                after: Some(Duration::from_secs(7)),
            },
            |_, _| {},
        );
        assert!(wait.unwrap() >= Duration::from_secs(6), "{wait:?}");
        assert_eq!(q.len(), 2);
        // Not due yet: nothing is sent.
        let again = q.work(&stats, |_| panic!("sent before Retry-After"), |_, _| {});
        assert!(again.is_some());
    }
}
