//! The one path every ingest listener takes with what it decoded: refuse
//! while shutting down, offer the samples to the pipelines' sources,
//! map a refusal to what the protocol says, and count what was accepted
//! and rejected per listener. The listeners ([`crate::ingest`],
//! [`crate::remote_write`], [`crate::otlp`]) are thin adapters over
//! `tidemark_codecs` and this.

use tidemark_codecs::Rejects;
use tidemark_engine::Sample;
use tidemark_engine::ingest::{OfferError, Protocol};
use tidemark_engine::stats::DropReason;
use tidemark_engine::validate::RejectReason;

use crate::control::Control;

/// How long a request waits for room in the decoding budget before it is
/// refused as [`Refusal::Busy`].
pub const DECODE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a request was not taken; nothing of it was queued, so the sender
/// may send it again.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Other requests hold the server's memory budget for decoding.
    #[error(
        "the server is decoding other requests with all of its decoding memory ({0} MiB); send this one again"
    )]
    Busy(u64),
    /// A pipeline is not keeping up, or none reads this protocol.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// The sender's tenant is over its ingest quota.
    #[error("{0}")]
    OverQuota(String),
}

/// The listener's name in `/metrics`.
pub fn listener(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Otlp => "otlp",
        Protocol::RemoteWrite => "remote_write",
    }
}

/// The source type a pipeline needs to read `protocol`.
fn source_type(protocol: Protocol) -> &'static str {
    listener(protocol)
}

impl Control {
    /// Refuses at once while the server is stopping, or when no pipeline
    /// reads `protocol`: before anything of the request is decoded, so
    /// that a refused request leaves nothing behind (not even its series
    /// in the edge cache).
    pub fn accepting(&self, protocol: Protocol) -> Result<(), Refusal> {
        if self.shutdown.is_triggered() {
            return Err(Refusal::ShuttingDown);
        }
        if !self.ingest.subscribed(protocol) {
            return Err(Refusal::Offer(OfferError::NoSubscriber(protocol)));
        }
        Ok(())
    }

    /// Bytes of the decoding budget held now.
    pub fn decoding_bytes(&self) -> u64 {
        let free = self.decode_budget.available_permits() as u64;
        self.decode_budget_kib.saturating_sub(free) * 1024
    }

    /// Holds `bytes` of the server's memory budget for decoding
    /// (`limits.max_decode_mb`) until the permit is dropped, waiting up to
    /// [`DECODE_WAIT`] for other requests to finish; `None` when the
    /// request alone is over the whole budget.
    pub async fn reserve_decode(
        &self,
        bytes: usize,
    ) -> Option<Result<tokio::sync::SemaphorePermit<'_>, Refusal>> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if u64::from(kib) > self.decode_budget_kib {
            return None;
        }
        let busy = || Refusal::Busy(self.decode_budget_kib / 1024);
        Some(
            match tokio::time::timeout(DECODE_WAIT, self.decode_budget.acquire_many(kib)).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(busy()),
            },
        )
    }

    /// Offers `samples`, sent by `tenant`, and counts them with
    /// `rejects`; on a refusal nothing is counted (the sender sends the
    /// request again). With a write-ahead log it returns once the samples
    /// are in the log as durably as its `fsync` policy makes them.
    pub async fn admit(
        &self,
        protocol: Protocol,
        tenant: Option<&str>,
        samples: &[Sample],
        rejects: &Rejects,
    ) -> Result<(), Refusal> {
        if self.shutdown.is_triggered() {
            return Err(Refusal::ShuttingDown);
        }
        self.quotas
            .ingest(tenant, samples.len())
            .map_err(Refusal::OverQuota)?;
        if !samples.is_empty()
            && let Some(offset) = self.ingest.take(protocol, tenant, samples)?
            && let Some(logged) = self.ingest.wal()
        {
            logged.wal.durable(offset).await;
        }
        self.count_accepted(listener(protocol), samples.len() as u64);
        let counts: Vec<(DropReason, u64)> = rejects
            .counts
            .iter()
            .map(|(r, n)| (DropReason::Rejected(*r), *n))
            .collect();
        self.count_rejects(listener(protocol), &counts);
        Ok(())
    }

    /// Why a request that alone needs `bytes`, more than the whole
    /// decoding budget, is refused.
    pub fn over_decode_budget(&self, bytes: usize) -> String {
        format!(
            "decoding this request takes {} MiB, more than the server's limit of {} MiB \
             (limits.max_decode_mb); send fewer samples per request",
            bytes.div_ceil(1 << 20),
            self.decode_budget_kib / 1024
        )
    }

    /// Counts one request that could not be read at all.
    pub fn count_malformed(&self, protocol: Protocol) {
        self.count_rejects(
            listener(protocol),
            &[(DropReason::Rejected(RejectReason::Malformed), 1)],
        );
    }
}

impl Refusal {
    /// The gRPC status: `UNAVAILABLE` while stopping,
    /// `RESOURCE_EXHAUSTED` when a pipeline is behind; with no pipeline
    /// reading, `FAILED_PRECONDITION` for Tidemark's own service and
    /// `UNAVAILABLE` for OTLP, whose exporters retry only that.
    pub fn status(&self, protocol: Protocol) -> tonic::Status {
        let hint = || {
            format!(
                "{self}: apply a pipeline with a `type: {}` source",
                source_type(protocol)
            )
        };
        match self {
            Refusal::ShuttingDown => tonic::Status::unavailable(self.to_string()),
            Refusal::Busy(_) | Refusal::OverQuota(_) => {
                tonic::Status::resource_exhausted(self.to_string())
            }
            Refusal::Offer(OfferError::Full { .. } | OfferError::Log(_)) => {
                tonic::Status::resource_exhausted(self.to_string())
            }
            Refusal::Offer(OfferError::NoSubscriber(_)) if protocol == Protocol::Otlp => {
                tonic::Status::unavailable(hint())
            }
            Refusal::Offer(OfferError::NoSubscriber(_)) => {
                tonic::Status::failed_precondition(hint())
            }
        }
    }

    /// The HTTP answer: `503` with `Retry-After`, which Prometheus and
    /// OTLP exporters retry (`429` over a tenant's ingest quota, which they
    /// retry too).
    pub fn response(&self) -> axum::response::Response {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        match self {
            Refusal::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{self}\n"),
            )
                .into_response(),
            Refusal::OverQuota(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                format!("{self}\n"),
            )
                .into_response(),
            Refusal::Offer(_) | Refusal::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!("{self}\n"),
            )
                .into_response(),
        }
    }
}
