//! `tidemark.ingest.v1.IngestService`: samples pushed over gRPC, decoded by
//! `tidemark_codecs::ingest`, handed to the pipelines whose sources have
//! `type: grpc`.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use tidemark_codecs::{Arrival, Rejects};
use tidemark_engine::ingest::Protocol;

use crate::control::Control;
use crate::http::Tenant;

/// The generated gRPC service and client, and the messages
/// (`tidemark_codecs::ingest::proto`) they carry.
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    pub use tidemark_codecs::ingest::proto::*;
    tonic::include_proto!("tidemark.ingest.v1");
}

use proto::ingest_service_server::IngestService;
use proto::{WriteRequest, WriteResponse};

/// Largest ingest message accepted (after decompression).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The ingest service.
pub struct Ingest {
    /// The process's control plane (hub and limits).
    pub control: Arc<Control>,
}

impl Ingest {
    /// Decodes, offers and counts one message.
    async fn write_one(
        &self,
        message: WriteRequest,
        tenant: Option<&str>,
    ) -> Result<(u64, Rejects), Status> {
        let status = |r: crate::admit::Refusal| r.status(Protocol::Grpc);
        self.control.accepting(Protocol::Grpc).map_err(status)?;
        let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
        tidemark_codecs::ingest::decode_request(
            message,
            Arrival::now(tenant),
            &self.control.edge,
            &mut samples,
            &mut rejects,
        );
        self.control
            .admit(Protocol::Grpc, tenant, &samples, &rejects)
            .await
            .map_err(status)?;
        Ok((samples.len() as u64, rejects))
    }
}

fn tenant<T>(request: &Request<T>) -> Option<String> {
    request.extensions().get::<Tenant>().map(|t| t.0.clone())
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
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
        request: Request<Streaming<WriteRequest>>,
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
