//! `tidemark.ingest.v1.IngestService`: samples pushed over gRPC, validated
//! one by one, handed to the pipelines whose sources have `type: grpc`.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use tidemark_engine::Sample;
use tidemark_engine::ingest::{OfferError, Protocol};
use tidemark_engine::stats::DropReason;
use tidemark_engine::validate::{Check, RejectReason};

use super::control::Control;
use super::http::{TENANT_LABEL, Tenant};

/// Generated protobuf and gRPC code.
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    tonic::include_proto!("tidemark.ingest.v1");
}

use proto::ingest_service_server::IngestService;
use proto::{Rejection, WriteRequest, WriteResponse};

/// Largest ingest message accepted (after decompression).
pub const MAX_MESSAGE: usize = 16 << 20;

/// How many rejections a reply lists.
const EXAMPLES: usize = 10;

/// The ingest service.
pub struct Ingest {
    /// The process's control plane (hub and limits).
    pub control: Arc<Control>,
}

/// Validates a request sample by sample, filling the reply with what was
/// rejected and why; returns the accepted samples.
pub fn decode(
    request: WriteRequest,
    control: &impl Check,
    tenant: Option<&str>,
    reply: &mut WriteResponse,
) -> Vec<Sample> {
    let now = tidemark_engine::time::now_millis();
    let mut samples = Vec::new();
    for (i, series) in request.series.into_iter().enumerate() {
        let reject = |reason: &str, message: String, n: u64, reply: &mut WriteResponse| {
            reply.rejected += n;
            *reply
                .rejected_by_reason
                .entry(reason.to_owned())
                .or_default() += n;
            if reply.examples.len() < EXAMPLES {
                reply.examples.push(Rejection {
                    series_index: i as u32,
                    reason: reason.to_owned(),
                    message,
                });
            }
        };
        let checked = control.check_series(
            &series.name,
            series
                .labels
                .iter()
                .filter(|l| !(tenant.is_some() && l.name == TENANT_LABEL))
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .chain(tenant.map(|t| (TENANT_LABEL, t))),
        );
        let s = match checked {
            Ok(s) => s,
            Err(reason) => {
                reject(
                    reason.as_str(),
                    format!("{reason} in series {:?}", series.name),
                    series.points.len() as u64,
                    reply,
                );
                continue;
            }
        };
        for p in series.points {
            match control.check_timestamp(p.timestamp_ms, now) {
                Ok(ts) => samples.push(Sample::new(s.clone(), ts, p.value)),
                Err(reason) => reject(
                    reason.as_str(),
                    format!("timestamp {} in series {s}", p.timestamp_ms),
                    1,
                    reply,
                ),
            }
        }
    }
    samples
}

fn offer(control: &Control, samples: &[Sample]) -> Result<(), Status> {
    if samples.is_empty() {
        return Ok(());
    }
    match control.ingest.offer(Protocol::Grpc, samples) {
        Ok(_) => Ok(()),
        Err(e @ OfferError::Full { .. }) => Err(Status::resource_exhausted(e.to_string())),
        Err(e @ OfferError::NoSubscriber(_)) => Err(Status::failed_precondition(format!(
            "{e}: apply a pipeline with a `type: grpc` source"
        ))),
    }
}

fn count(control: &Control, reply: &WriteResponse) {
    control.count_accepted("grpc", reply.accepted);
    let counts: Vec<_> = RejectReason::ALL
        .iter()
        .filter_map(|r| {
            reply
                .rejected_by_reason
                .get(r.as_str())
                .map(|n| (DropReason::Rejected(*r), *n))
        })
        .collect();
    control.count_rejects("grpc", &counts);
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        if self.control.shutdown.is_triggered() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let mut reply = WriteResponse::default();
        let tenant = request.extensions().get::<Tenant>().map(|t| t.0.clone());
        let samples = decode(
            request.into_inner(),
            &self.control.edge,
            tenant.as_deref(),
            &mut reply,
        );
        offer(&self.control, &samples)?;
        reply.accepted = samples.len() as u64;
        count(&self.control, &reply);
        Ok(Response::new(reply))
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let tenant = request.extensions().get::<Tenant>().map(|t| t.0.clone());
        let mut stream = request.into_inner();
        let mut total = WriteResponse::default();
        while let Some(message) = stream.message().await? {
            if self.control.shutdown.is_triggered() {
                return Err(Status::unavailable("the server is shutting down"));
            }
            let mut reply = WriteResponse::default();
            let samples = decode(message, &self.control.edge, tenant.as_deref(), &mut reply);
            offer(&self.control, &samples).map_err(|s| {
                Status::new(
                    s.code(),
                    format!(
                        "{} ({} samples accepted before this message)",
                        s.message(),
                        total.accepted
                    ),
                )
            })?;
            reply.accepted = samples.len() as u64;
            count(&self.control, &reply);
            total.accepted += samples.len() as u64;
            total.rejected += reply.rejected;
            for (k, v) in reply.rejected_by_reason {
                *total.rejected_by_reason.entry(k).or_default() += v;
            }
            for e in reply.examples {
                if total.examples.len() < EXAMPLES {
                    total.examples.push(e);
                }
            }
        }
        Ok(Response::new(total))
    }
}
