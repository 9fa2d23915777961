//! `tidemark.ingest.v1.IngestService`: samples pushed over gRPC, decoded by
//! `tidemark_codecs::ingest`, handed to the pipelines whose sources have
//! `type: grpc`.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use tidemark_codecs::{Arrival, Rejects};
use tidemark_engine::ingest::Protocol;

use crate::codec::Encoded;
use tidemark_codecs::remote_write::MAX_SAMPLES;

use crate::control::Control;
use crate::http::Tenant;

/// The ingest service's client and messages (the messages are
/// `tidemark_codecs::ingest::proto`'s), and its server, which takes
/// requests encoded (`crate::codec`, `build.rs`).
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    pub use tidemark_codecs::ingest::proto::*;
    tonic::include_proto!("tidemark.ingest.v1");
    include!(concat!(
        env!("OUT_DIR"),
        "/tidemark.ingest.v1.IngestService.rs"
    ));
}

use proto::WriteResponse;
use proto::ingest_service_server::IngestService;

/// Largest ingest message accepted (after decompression).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Messages smaller than this (encoded) are decoded on the request's task;
/// larger ones on a blocking thread, so that no async thread is held for
/// long. A typical batch of 1 000 samples (about 40 KB) stays inline: a
/// blocking thread for each cost 5% of the throughput at saturation.
pub const DECODE_INLINE: usize = 256 << 10;

/// The ingest service.
pub struct Ingest {
    /// The process's control plane (hub and limits).
    pub control: Arc<Control>,
}

impl Ingest {
    /// Measures, decodes, offers and counts one message: its samples are
    /// counted without decoding it, what decoding holds is charged to the
    /// server's decoding budget, and only then is it decoded (in place).
    async fn write_one(
        &self,
        message: Encoded,
        tenant: Option<&str>,
    ) -> Result<(u64, Rejects), Status> {
        let control = &self.control;
        let status = |r: crate::admit::Refusal| r.status(Protocol::Grpc);
        control.accepting(Protocol::Grpc).map_err(status)?;
        let payload = message.0;
        let malformed = |message: String| {
            control.count_malformed(Protocol::Grpc);
            Status::invalid_argument(message)
        };
        let points = tidemark_codecs::ingest::count_points(&payload).map_err(|e| {
            malformed(format!(
                "the message is not a valid protobuf WriteRequest ({e})"
            ))
        })?;
        if points > MAX_SAMPLES {
            return Err(malformed(format!(
                "more than {MAX_SAMPLES} samples in one message; send them in several"
            )));
        }
        let bytes = tidemark_codecs::ingest::decoded_bytes(payload.len(), points);
        let held = match control.reserve_decode(bytes).await {
            Some(Ok(permit)) => permit,
            Some(Err(refusal)) => return Err(status(refusal)),
            None => return Err(malformed(control.over_decode_budget(bytes))),
        };
        let inline = payload.len() < DECODE_INLINE;
        let decode = {
            let tenant = tenant.map(str::to_owned);
            let control = Arc::clone(control);
            move || {
                let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
                tidemark_codecs::ingest::try_decode(
                    &payload,
                    Arrival::now(tenant.as_deref()),
                    &control.edge,
                    &mut samples,
                    &mut rejects,
                )
                .map(|()| (samples, rejects))
            }
        };
        let decoded = if inline {
            decode()
        } else {
            tokio::task::spawn_blocking(decode)
                .await
                .map_err(|e| Status::internal(format!("decoding failed: {e}")))?
        };
        let (samples, rejects) = decoded.map_err(|e| {
            malformed(format!(
                "the message is not a valid protobuf WriteRequest ({e})"
            ))
        })?;
        control
            .admit(Protocol::Grpc, tenant, &samples, &rejects)
            .await
            .map_err(status)?;
        drop(held);
        Ok((samples.len() as u64, rejects))
    }
}

fn tenant<T>(request: &Request<T>) -> Option<String> {
    request.extensions().get::<Tenant>().map(|t| t.0.clone())
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn write(&self, request: Request<Encoded>) -> Result<Response<WriteResponse>, Status> {
        let tenant = tenant(&request);
        let (accepted, rejects) = self
            .write_one(request.into_inner(), tenant.as_deref())
            .await?;
        Ok(Response::new(tidemark_codecs::ingest::response(
            accepted, &rejects,
        )))
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<Encoded>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let tenant = tenant(&request);
        let mut stream = request.into_inner();
        let (mut accepted, mut rejected) = (0, Rejects::default());
        while let Some(message) = stream.message().await? {
            let (n, rejects) = self
                .write_one(message, tenant.as_deref())
                .await
                .map_err(|s| {
                    Status::new(
                        s.code(),
                        format!(
                            "{} ({accepted} samples accepted before this message)",
                            s.message()
                        ),
                    )
                })?;
            accepted += n;
            rejected.merge(rejects);
        }
        Ok(Response::new(tidemark_codecs::ingest::response(
            accepted, &rejected,
        )))
    }
}
