//! The ingest hub: network listeners (the Tidemark ingest service, OTLP,
//! Prometheus remote-write) hand validated samples to the pipeline sources
//! that subscribed to their protocol.
//!
//! Each subscribing source has one bounded queue per process, shared by its
//! instances on this process's workers. An offer reserves room in every
//! matching queue first and enqueues only if all have room, so a request is
//! either delivered to every subscriber or refused as a whole (the sender
//! retries): an acknowledged sample is never dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::Sample;
use crate::runtime::SyncActivator;
use crate::selector::Selector;

/// The label that names a sample's tenant: ingest sets it from the
/// credential, and a tenant's pipelines receive only samples carrying it.
pub const TENANT_LABEL: &str = "tenant";

/// The protocols a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The Tidemark ingest service (gRPC).
    Grpc,
    /// OTLP metrics.
    Otlp,
    /// Prometheus remote-write.
    RemoteWrite,
}

/// Why an offer was refused.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// No running pipeline reads this protocol.
    #[error("no running pipeline reads {0:?} input")]
    NoSubscriber(Protocol),
    /// A subscriber's queue is full: retry later.
    #[error("pipeline {pipeline:?} (source {source_name:?}) is not keeping up; retry later")]
    Full {
        /// The pipeline whose queue is full.
        pipeline: String,
        /// Its source.
        source_name: String,
    },
    /// The write-ahead log refused the record (full, or the disk failed):
    /// retry later.
    #[error(transparent)]
    Log(#[from] crate::wal::WalError),
}

/// One source's queue in this process.
pub struct Subscription {
    /// The protocol it reads.
    pub protocol: Protocol,
    /// Only samples of matching series; `None` for all.
    pub selector: Option<Selector>,
    /// Only samples of this tenant (its `tenant` label): a tenant's
    /// pipeline sees its own data and nothing else.
    pub tenant: Option<String>,
    /// Pipeline name.
    pub pipeline: String,
    /// Source name.
    pub source: String,
    capacity: usize,
    queued: AtomicUsize,
    tx: crossbeam_channel::Sender<Vec<Sample>>,
    rx: crossbeam_channel::Receiver<Vec<Sample>>,
    activators: Mutex<Vec<SyncActivator>>,
    /// Samples delivered into the queue.
    pub delivered: AtomicU64,
    /// With a write-ahead log: where every instance of the source starts
    /// reading it (decided once, when the first instance subscribes).
    pub resumed: Option<crate::wal::Resumed>,
    /// Which installation of the pipeline it belongs to (0 without a log).
    installation: usize,
}

impl Subscription {
    fn reserve(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.capacity || q == 0).then_some(q + n)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Takes the next batch, if any.
    pub fn pop(&self) -> Option<Vec<Sample>> {
        let batch = self.rx.try_recv().ok()?;
        self.release(batch.len());
        Some(batch)
    }

    /// Samples waiting in the queue.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Wakes `activator` whenever samples arrive.
    pub fn wake(&self, activator: SyncActivator) {
        self.activators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(activator);
    }

    fn notify(&self) {
        for a in self
            .activators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = a.activate();
        }
    }
}

/// Every subscription of this process.
#[derive(Default)]
pub struct IngestHub {
    subscriptions: RwLock<Vec<Weak<Subscription>>>,
    wal: Option<Logged>,
}

/// The write-ahead log the network sources read, and how many workers of
/// this process share each source's records.
#[derive(Clone)]
pub struct Logged {
    /// The log.
    pub wal: Arc<crate::wal::Wal>,
    /// Workers in this process.
    pub workers: usize,
}

impl IngestHub {
    /// A hub whose sources read `wal` (shared by `workers` workers of this
    /// process) instead of queues in memory.
    pub fn with_wal(wal: Arc<crate::wal::Wal>, workers: usize) -> IngestHub {
        IngestHub {
            subscriptions: RwLock::default(),
            wal: Some(Logged {
                wal,
                workers: workers.max(1),
            }),
        }
    }

    /// The write-ahead log, if there is one.
    pub fn wal(&self) -> Option<&Logged> {
        self.wal.as_ref()
    }

    /// The queue of (`pipeline`, `source`), created on first use; every
    /// worker's instance of the source shares it. The subscription ends when
    /// the last holder drops it.
    pub fn subscribe(
        &self,
        protocol: Protocol,
        selector: Option<Selector>,
        tenant: Option<&str>,
        pipeline: &str,
        source: &str,
        capacity: usize,
    ) -> Arc<Subscription> {
        self.subscribe_as(protocol, selector, tenant, pipeline, source, capacity, 0)
    }

    /// With a write-ahead log: the subscription of (`pipeline`, `source`)
    /// in this installation of the pipeline (`installation`, the same on
    /// every worker of the process: its `Resume`'s address), created on
    /// first use with where the log is to be read from. A replaced
    /// pipeline's new installation reads the stored positions anew rather
    /// than share the old one's, which is still stopping.
    pub fn subscribe_logged(
        &self,
        protocol: Protocol,
        tenant: Option<&str>,
        pipeline: &str,
        source: &str,
        installation: usize,
    ) -> Arc<Subscription> {
        self.subscribe_as(protocol, None, tenant, pipeline, source, 1, installation)
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe_as(
        &self,
        protocol: Protocol,
        selector: Option<Selector>,
        tenant: Option<&str>,
        pipeline: &str,
        source: &str,
        capacity: usize,
        installation: usize,
    ) -> Arc<Subscription> {
        let mut subs = self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        if let Some(s) = subs.iter().filter_map(Weak::upgrade).find(|s| {
            s.pipeline == pipeline && s.source == source && s.installation == installation
        }) {
            return s;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let resumed = self.wal.as_ref().map(|l| {
            let r = l.wal.subscribe(pipeline, source).unwrap_or_else(|error| {
                tracing::error!(%pipeline, %source, %error, "Cannot store where this source starts reading the write-ahead log; it reads from the end.");
                crate::wal::Resumed {
                    offset: l.wal.end(),
                    max_seen: None,
                    durable: 0,
                }
            });
            tracing::info!(%pipeline, %source, offset = r.offset, end = l.wal.end(), "The source reads the write-ahead log from here.");
            r
        });
        let s = Arc::new(Subscription {
            protocol,
            selector,
            tenant: tenant.map(str::to_owned),
            pipeline: pipeline.to_owned(),
            source: source.to_owned(),
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
            tx,
            rx,
            activators: Mutex::default(),
            delivered: AtomicU64::new(0),
            resumed,
            installation,
        });
        subs.push(Arc::downgrade(&s));
        s
    }

    /// Whether a source reads `protocol` now: a listener asks before it
    /// decodes, so that nothing of a request no one would take is kept.
    pub fn subscribed(&self, protocol: Protocol) -> bool {
        self.subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .any(|s| s.protocol == protocol)
    }

    /// Takes validated samples sent by `tenant`: with a write-ahead log,
    /// appends them as one record and returns its offset (acknowledge once
    /// [`crate::wal::Wal::durable`] says so); without, offers them to the
    /// queues ([`IngestHub::offer`]).
    pub fn take(
        &self,
        protocol: Protocol,
        tenant: Option<&str>,
        samples: &[Sample],
    ) -> Result<Option<u64>, OfferError> {
        let Some(logged) = &self.wal else {
            return self.offer(protocol, samples).map(|_| None);
        };
        if !self.subscribed(protocol) {
            return Err(OfferError::NoSubscriber(protocol));
        }
        Ok(Some(logged.wal.append(protocol, tenant, samples)?))
    }

    /// Offers validated samples to every subscriber of `protocol`. Returns
    /// how many subscribers took them; refuses the whole offer if any
    /// matching queue is full.
    pub fn offer(&self, protocol: Protocol, samples: &[Sample]) -> Result<usize, OfferError> {
        let subs: Vec<Arc<Subscription>> = self
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.protocol == protocol)
            .collect();
        if subs.is_empty() {
            return Err(OfferError::NoSubscriber(protocol));
        }
        let batches: Vec<Vec<Sample>> = subs
            .iter()
            .map(|s| match (&s.selector, &s.tenant) {
                (None, None) => samples.to_vec(),
                (selector, tenant) => samples
                    .iter()
                    .filter(|x| {
                        tenant
                            .as_deref()
                            .is_none_or(|t| x.series.get(TENANT_LABEL) == Some(t))
                            && selector.as_ref().is_none_or(|sel| sel.matches(&x.series))
                    })
                    .cloned()
                    .collect(),
            })
            .collect();
        for (i, (s, b)) in subs.iter().zip(&batches).enumerate() {
            if !b.is_empty() && !s.reserve(b.len()) {
                for (s, b) in subs.iter().zip(&batches).take(i) {
                    if !b.is_empty() {
                        s.release(b.len());
                    }
                }
                return Err(OfferError::Full {
                    pipeline: s.pipeline.clone(),
                    source_name: s.source.clone(),
                });
            }
        }
        for (s, b) in subs.iter().zip(batches) {
            if b.is_empty() {
                continue;
            }
            s.delivered.fetch_add(b.len() as u64, Ordering::Relaxed);
            let n = b.len();
            if s.tx.send(b).is_err() {
                s.release(n);
            }
            s.notify();
        }
        Ok(subs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample::new(Series::new("m", [("i", i.to_string())]), 1, 1.0))
            .collect()
    }

    #[test]
    fn all_or_nothing_and_bounded() {
        let hub = IngestHub::default();
        assert!(matches!(
            hub.offer(Protocol::Grpc, &samples(1)),
            Err(OfferError::NoSubscriber(Protocol::Grpc))
        ));
        let a = hub.subscribe(Protocol::Grpc, None, None, "p", "a", 10);
        let b = hub.subscribe(Protocol::Grpc, None, None, "q", "b", 4);
        assert!(
            Arc::ptr_eq(&a, &hub.subscribe(Protocol::Grpc, None, None, "p", "a", 10)),
            "workers share one queue"
        );
        assert_eq!(hub.offer(Protocol::Grpc, &samples(3)).unwrap(), 2);
        // b has room for 1 more: the whole offer is refused, a is untouched.
        assert!(matches!(
            hub.offer(Protocol::Grpc, &samples(3)),
            Err(OfferError::Full { .. })
        ));
        assert_eq!((a.depth(), b.depth()), (3, 3));
        assert_eq!(b.pop().map(|x| x.len()), Some(3));
        assert_eq!(hub.offer(Protocol::Grpc, &samples(3)).unwrap(), 2);
        assert_eq!(a.depth(), 6);
        drop(b);
        // Gone with its last holder.
        assert_eq!(hub.offer(Protocol::Grpc, &samples(1)).unwrap(), 1);
    }

    #[test]
    fn selectors_filter_per_subscriber() {
        let hub = IngestHub::default();
        let sel = Selector::parse(r#"m{i="1"}"#).unwrap();
        let a = hub.subscribe(Protocol::RemoteWrite, Some(sel), None, "p", "a", 100);
        assert_eq!(hub.offer(Protocol::RemoteWrite, &samples(3)).unwrap(), 1);
        assert_eq!(a.pop().map(|x| x.len()), Some(1));
    }

    #[test]
    fn a_tenants_subscription_sees_only_its_tenants_samples() {
        let hub = IngestHub::default();
        let acme = hub.subscribe(Protocol::Otlp, None, Some("acme"), "p", "a", 100);
        let all = hub.subscribe(Protocol::Otlp, None, None, "q", "a", 100);
        let mut batch = samples(2);
        batch.push(Sample::new(Series::new("m", [("tenant", "acme")]), 1, 1.0));
        batch.push(Sample::new(
            Series::new("m", [("tenant", "globex")]),
            1,
            1.0,
        ));
        assert_eq!(hub.offer(Protocol::Otlp, &batch).unwrap(), 2);
        let seen = acme.pop().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].series.get(TENANT_LABEL), Some("acme"));
        assert_eq!(all.pop().map(|x| x.len()), Some(4));
    }
}
