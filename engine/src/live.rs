//! The hub between `websocket` sinks and their subscribers (dashboards).
//!
//! A sink publishes every sample it receives, and its watermark, to the
//! [`LiveOutput`] of its pipeline and name. The output keeps the latest
//! sample of each series (the snapshot a new subscriber starts from) and a
//! bounded [`Subscription`] per subscriber. Publishing never blocks and
//! never waits for a subscriber: when a subscriber's queue is full, its
//! [`SlowPolicy`] decides (close it with a reason, or keep only the latest
//! value of each series until it catches up).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;

use crate::Sample;
use crate::selector::Selector;
use crate::series::SeriesId;
use crate::time::Time;

/// What to do with a subscriber whose queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Close its connection with a reason; it may reconnect (and gets a
    /// fresh snapshot).
    Close,
    /// Drop the backlog and keep only the latest value of each series
    /// until it catches up; it is told how many values it skipped.
    Latest,
}

/// What a subscriber takes from its queue.
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    /// Samples, in the order published (latest-per-series order after a
    /// skip).
    pub samples: Vec<Sample>,
    /// Values dropped since the last delivery ([`SlowPolicy::Latest`]).
    pub skipped: u64,
    /// Set once the subscription was closed for being slow: the reason.
    pub closed: Option<String>,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<Sample>,
    /// Latest value per series while skipping.
    coalesced: Option<FxHashMap<SeriesId, Sample>>,
    skipped: u64,
    closed: Option<String>,
}

/// One subscriber's bounded queue.
pub struct Subscription {
    selector: Option<Selector>,
    capacity: usize,
    policy: SlowPolicy,
    pending: Mutex<Pending>,
    notify: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Subscription {
    fn wants(&self, sample: &Sample) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|s| s.matches(&sample.series))
    }

    fn offer(&self, samples: &[Sample]) {
        let mut p = lock(&self.pending);
        if p.closed.is_some() {
            return;
        }
        let mut any = false;
        for s in samples.iter().filter(|s| self.wants(s)) {
            any = true;
            if let Some(map) = p.coalesced.as_mut() {
                if map.insert(s.series.id(), s.clone()).is_some() {
                    p.skipped += 1;
                }
                continue;
            }
            if p.queue.len() < self.capacity {
                p.queue.push_back(s.clone());
                continue;
            }
            match self.policy {
                SlowPolicy::Close => {
                    p.queue.clear();
                    p.closed = Some(format!(
                        "too slow: more than {} values waiting",
                        self.capacity
                    ));
                    break;
                }
                SlowPolicy::Latest => {
                    let mut map = FxHashMap::default();
                    let before = p.queue.len() as u64 + 1;
                    for q in p.queue.drain(..).chain(std::iter::once(s.clone())) {
                        map.insert(q.series.id(), q);
                    }
                    p.skipped += before - map.len() as u64;
                    p.coalesced = Some(map);
                }
            }
        }
        drop(p);
        if any {
            self.notify.notify_one();
        }
    }

    /// Waits until there is something to deliver, and takes it.
    pub async fn next(&self) -> Delivery {
        loop {
            let notified = self.notify.notified();
            {
                let mut p = lock(&self.pending);
                let has = !p.queue.is_empty() || p.coalesced.is_some() || p.closed.is_some();
                if has {
                    let mut samples: Vec<Sample> = p.queue.drain(..).collect();
                    if let Some(map) = p.coalesced.take() {
                        let mut latest: Vec<Sample> = map.into_values().collect();
                        latest.sort_by_key(|s| (s.timestamp, s.series.id().0));
                        samples.extend(latest);
                    }
                    return Delivery {
                        samples,
                        skipped: std::mem::take(&mut p.skipped),
                        closed: p.closed.clone(),
                    };
                }
            }
            notified.await;
        }
    }

    /// Wakes a waiting [`Subscription::next`] (to let it see a shutdown).
    fn wake(&self) {
        self.notify.notify_one();
    }
}

/// One `websocket` sink's output in this process.
pub struct LiveOutput {
    queue: usize,
    policy: SlowPolicy,
    latest: Mutex<FxHashMap<SeriesId, Sample>>,
    subscribers: Mutex<Vec<Arc<Subscription>>>,
    watermark: AtomicU64,
    published: AtomicU64,
}

impl LiveOutput {
    fn new(queue: usize, policy: SlowPolicy) -> LiveOutput {
        LiveOutput {
            queue: queue.max(1),
            policy,
            latest: Mutex::new(FxHashMap::default()),
            subscribers: Mutex::new(Vec::new()),
            watermark: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }

    /// Publishes samples: they become the latest values and go to every
    /// subscriber that selects them.
    pub fn publish(&self, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        {
            let mut latest = lock(&self.latest);
            for s in samples {
                match latest.get(&s.series.id()) {
                    Some(old) if old.timestamp > s.timestamp => {}
                    _ => {
                        latest.insert(s.series.id(), s.clone());
                    }
                }
            }
        }
        self.published
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        let subscribers = lock(&self.subscribers);
        for sub in subscribers.iter() {
            sub.offer(samples);
        }
    }

    /// Records the sink's input frontier (event time, ms).
    pub fn advance(&self, watermark: Time) {
        self.watermark.fetch_max(watermark, Ordering::Relaxed);
    }

    /// The sink's watermark: every value before it has been published.
    pub fn watermark(&self) -> Time {
        self.watermark.load(Ordering::Relaxed)
    }

    /// Values published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Subscribes: returns the snapshot (the latest value of every selected
    /// series, oldest first) and the subscription that delivers what
    /// follows. Nothing is lost or repeated between the two.
    pub fn subscribe(&self, selector: Option<Selector>) -> (Vec<Sample>, Arc<Subscription>) {
        let sub = Arc::new(Subscription {
            selector,
            capacity: self.queue,
            policy: self.policy,
            pending: Mutex::new(Pending::default()),
            notify: tokio::sync::Notify::new(),
        });
        // Holding `latest` while registering orders this against publish:
        // a batch is either in the snapshot or delivered, not both.
        let latest = lock(&self.latest);
        let mut snapshot: Vec<Sample> = latest.values().filter(|s| sub.wants(s)).cloned().collect();
        lock(&self.subscribers).push(Arc::clone(&sub));
        drop(latest);
        snapshot.sort_by_key(|s| (s.timestamp, s.series.id().0));
        (snapshot, sub)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, sub: &Arc<Subscription>) {
        lock(&self.subscribers).retain(|s| !Arc::ptr_eq(s, sub));
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// Series with a latest value.
    pub fn series(&self) -> usize {
        lock(&self.latest).len()
    }
}

/// Every `websocket` sink output of the process, by pipeline and sink.
#[derive(Default)]
pub struct LiveHub {
    outputs: Mutex<HashMap<(String, String), Arc<LiveOutput>>>,
}

impl LiveHub {
    /// The output of a sink, created on first use (by the sink, or by a
    /// subscriber that comes before it).
    pub fn output(
        &self,
        pipeline: &str,
        sink: &str,
        queue: usize,
        policy: SlowPolicy,
    ) -> Arc<LiveOutput> {
        let mut outputs = lock(&self.outputs);
        Arc::clone(
            outputs
                .entry((pipeline.to_owned(), sink.to_owned()))
                .or_insert_with(|| Arc::new(LiveOutput::new(queue, policy))),
        )
    }

    /// Every output in this process: (pipeline, sink, output), sorted.
    pub fn list(&self) -> Vec<(String, String, Arc<LiveOutput>)> {
        let mut all: Vec<_> = lock(&self.outputs)
            .iter()
            .map(|((p, s), o)| (p.clone(), s.clone(), Arc::clone(o)))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Forgets a pipeline's outputs (when it is deleted or replaced);
    /// their subscribers are closed.
    pub fn remove_pipeline(&self, pipeline: &str) {
        let removed: Vec<Arc<LiveOutput>> = {
            let mut outputs = lock(&self.outputs);
            let keys: Vec<_> = outputs
                .keys()
                .filter(|(p, _)| p == pipeline)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| outputs.remove(&k))
                .collect()
        };
        for output in removed {
            for sub in lock(&output.subscribers).drain(..) {
                lock(&sub.pending).closed = Some("the pipeline was removed".into());
                sub.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    fn sample(host: &str, t: i64) -> Sample {
        Sample::new(Series::new("cpu", [("host", host)]), t, t as f64)
    }

    fn now(sub: &Subscription) -> Delivery {
        futures_lite(sub.next())
    }

    /// Polls a future that is ready.
    fn futures_lite<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn snapshot_then_deltas_filtered_by_selector() {
        let out = LiveOutput::new(10, SlowPolicy::Close);
        out.publish(&[sample("a", 1), sample("b", 1), sample("a", 2)]);
        let selector = Selector::parse(r#"{host="a"}"#).unwrap();
        let (snapshot, sub) = out.subscribe(Some(selector));
        assert_eq!(snapshot, vec![sample("a", 2)]);
        out.publish(&[sample("b", 3), sample("a", 3)]);
        assert_eq!(now(&sub).samples, vec![sample("a", 3)]);
    }

    #[test]
    fn a_full_queue_closes_with_a_reason_under_close() {
        let out = LiveOutput::new(2, SlowPolicy::Close);
        let (_, sub) = out.subscribe(None);
        out.publish(&[sample("a", 1), sample("a", 2), sample("a", 3)]);
        let d = now(&sub);
        assert!(d.samples.is_empty());
        assert_eq!(
            d.closed.as_deref(),
            Some("too slow: more than 2 values waiting")
        );
    }

    #[test]
    fn a_full_queue_keeps_the_latest_per_series_under_latest() {
        let out = LiveOutput::new(2, SlowPolicy::Latest);
        let (_, sub) = out.subscribe(None);
        out.publish(&[
            sample("a", 1),
            sample("b", 1),
            sample("a", 2),
            sample("a", 3),
        ]);
        let d = now(&sub);
        assert_eq!(d.samples, vec![sample("b", 1), sample("a", 3)]);
        assert_eq!((d.skipped, d.closed), (2, None));
        // Caught up: queued again.
        out.publish(&[sample("b", 4)]);
        assert_eq!(now(&sub).samples, vec![sample("b", 4)]);
    }
}
