//! Quotas per tenant (a token without a tenant counts as the tenant `""`):
//! how many pipelines it may run, how many `/ws` subscribers it may hold,
//! how large a queue and how much memory a pipeline may ask for, and how
//! many samples a second it may send. Each refusal is counted by quota
//! (`/metrics`: `tidemark_quota_refusals_total`) and explained to the
//! caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;

/// `quotas:` in the server's configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Pipelines a tenant may run at once. Default 100.
    pub pipelines: Option<usize>,
    /// `/ws` subscribers a tenant may hold open at once. Default 100.
    pub subscribers: Option<usize>,
    /// The largest queue (records) a source or sink may ask for (`queue:`
    /// of `websocket`, `kafka`, `grpc`, `otlp`, `remote_write`). Default
    /// 1048576.
    pub max_queue: Option<usize>,
    /// The most memory, in MiB, one component may ask for (`max_mb` of a
    /// `memory` sink). Default 1024.
    pub max_memory_mb: Option<u64>,
    /// Samples a second a tenant may send, over one second's burst; `0`
    /// (the default) for no limit.
    pub ingest_rate: Option<u64>,
}

/// The defaults of [`QuotaConfig`].
pub const DEFAULT_PIPELINES: usize = 100;
/// See [`QuotaConfig::subscribers`].
pub const DEFAULT_SUBSCRIBERS: usize = 100;
/// See [`QuotaConfig::max_queue`].
pub const DEFAULT_MAX_QUEUE: usize = 1 << 20;
/// See [`QuotaConfig::max_memory_mb`].
pub const DEFAULT_MAX_MEMORY_MB: u64 = 1024;

/// The quotas in force, with their counters.
#[derive(Debug)]
pub struct Quotas {
    /// Pipelines per tenant.
    pub pipelines: usize,
    /// Subscribers per tenant.
    pub subscribers: usize,
    /// Largest queue.
    pub max_queue: usize,
    /// Largest memory per component, in MiB.
    pub max_memory_mb: u64,
    /// Samples a second per tenant; 0 for no limit.
    pub ingest_rate: u64,
    open_subscribers: Arc<Mutex<HashMap<String, usize>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas::new(&QuotaConfig::default())
    }
}

impl Quotas {
    /// Quotas as configured.
    pub fn new(config: &QuotaConfig) -> Quotas {
        Quotas {
            pipelines: config.pipelines.unwrap_or(DEFAULT_PIPELINES),
            subscribers: config.subscribers.unwrap_or(DEFAULT_SUBSCRIBERS),
            max_queue: config.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
            max_memory_mb: config.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB),
            ingest_rate: config.ingest_rate.unwrap_or(0),
            open_subscribers: Arc::default(),
            buckets: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    /// The sizes a pipeline's components may ask for.
    pub fn bounds(&self) -> tidemark_pipelines::access::Bounds {
        tidemark_pipelines::access::Bounds {
            max_queue: self.max_queue,
            max_memory_mb: self.max_memory_mb,
        }
    }

    /// Counts a refusal by quota.
    pub fn refused(&self, quota: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(quota)
            .or_default() += 1;
    }

    /// Refusals so far, by quota.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a subscriber place for `tenant`, released when the returned
    /// guard drops; an error says why not.
    pub fn subscribe(&self, tenant: Option<&str>) -> Result<SubscriberPlace, String> {
        let key = tenant.unwrap_or_default().to_owned();
        let mut open = self
            .open_subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_default();
        if *n >= self.subscribers {
            drop(open);
            self.refused("subscribers");
            return Err(format!(
                "{} already holds {} subscriptions, its quota (quotas.subscribers); close one first",
                who(tenant),
                self.subscribers
            ));
        }
        *n += 1;
        Ok(SubscriberPlace {
            open: Arc::clone(&self.open_subscribers),
            key,
        })
    }

    /// Takes `samples` from `tenant`'s ingest allowance (a token bucket
    /// holding one second of `ingest_rate`); an error says how long to wait.
    pub fn ingest(&self, tenant: Option<&str>, samples: usize) -> Result<(), String> {
        if self.ingest_rate == 0 || samples == 0 {
            return Ok(());
        }
        let rate = self.ingest_rate as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(tenant.unwrap_or_default().to_owned())
            .or_insert(Bucket {
                tokens: rate,
                at: now,
            });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        let want = samples as f64;
        // A request larger than a whole second's allowance passes when the
        // bucket is full, so that no request size is refused forever.
        if bucket.tokens >= want || bucket.tokens >= rate {
            bucket.tokens -= want;
            return Ok(());
        }
        drop(buckets);
        self.refused("ingest_rate");
        Err(format!(
            "{} is over its ingest quota of {} samples a second (quotas.ingest_rate); send again later",
            who(tenant),
            self.ingest_rate
        ))
    }
}

fn who(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("tenant {t}"),
        None => "this token".to_owned(),
    }
}

/// A `/ws` subscriber's place in its tenant's quota.
#[derive(Debug)]
pub struct SubscriberPlace {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for SubscriberPlace {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_counted_per_tenant_and_released() {
        let q = Quotas::new(&QuotaConfig {
            subscribers: Some(2),
            ..QuotaConfig::default()
        });
        let a = q.subscribe(Some("a")).unwrap();
        let _b = q.subscribe(Some("a")).unwrap();
        assert!(
            q.subscribe(Some("a"))
                .unwrap_err()
                .contains("tenant a already holds 2")
        );
        let _other = q.subscribe(Some("b")).unwrap();
        drop(a);
        assert!(q.subscribe(Some("a")).is_ok());
        assert_eq!(q.refusals().get("subscribers"), Some(&1));
    }

    #[test]
    fn ingest_is_limited_to_a_second_of_the_rate() {
        let q = Quotas::new(&QuotaConfig {
            ingest_rate: Some(1000),
            ..QuotaConfig::default()
        });
        assert!(q.ingest(Some("a"), 600).is_ok());
        assert!(q.ingest(Some("a"), 300).is_ok());
        assert!(q.ingest(Some("a"), 300).is_err());
        assert!(q.ingest(Some("b"), 1000).is_ok(), "each tenant has its own");
        assert!(
            Quotas::default().ingest(None, 1 << 30).is_ok(),
            "no limit by default"
        );
        assert_eq!(q.refusals().get("ingest_rate"), Some(&1));
    }
}
