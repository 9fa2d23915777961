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

/// Why a request was not taken; nothing of it was queued, so the sender
/// may send it again.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A pipeline is not keeping up, or none reads this protocol.
    #[error(transparent)]
    Offer(#[from] OfferError),
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
    /// Refuses at once while the server is stopping.
    pub fn accepting(&self) -> Result<(), Refusal> {
        if self.shutdown.is_triggered() {
            return Err(Refusal::ShuttingDown);
        }
        Ok(())
    }

    /// Offers `samples` and counts them with `rejects`; on a refusal
    /// nothing is counted (the sender sends the request again).
    pub fn admit(
        &self,
        protocol: Protocol,
        samples: &[Sample],
        rejects: &Rejects,
    ) -> Result<(), Refusal> {
        self.accepting()?;
        if !samples.is_empty() {
            self.ingest.offer(protocol, samples)?;
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
            Refusal::Offer(OfferError::Full { .. }) => {
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
    /// OTLP exporters retry.
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
            Refusal::Offer(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!("{self}\n"),
            )
                .into_response(),
        }
    }
}
