//! The gRPC listener (tonic): `tidemark.control.v1.PipelineService`, the
//! twin of the REST control API (`proto/tidemark/control/v1/control.proto`).
//! The ingest and OTLP services will share this listener.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::control::{self, Control};
use crate::auth::{Auth, Principal, Scope};

/// Generated protobuf and gRPC code.
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    tonic::include_proto!("tidemark.control.v1");
}

use proto::pipeline_service_server::{PipelineService, PipelineServiceServer};
use proto::{
    ApplyRequest, ApplyResponse, ClusterTotals, DeleteRequest, DeleteResponse, GetRequest,
    ListRequest, ListResponse, PipelineStatus,
};

/// The control service.
pub struct ControlService {
    control: Arc<Control>,
}

fn to_proto(s: control::Status) -> PipelineStatus {
    PipelineStatus {
        name: s.name,
        state: serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        applied_at_ms: s.applied_at,
        samples_in: s.samples_in,
        samples_out: s.samples_out,
        rejected: s.rejected,
        late: s.late,
        corrections: s.corrections,
        partial_windows: s.partial_windows,
        watermark_ms: s.watermark.map(|w| w as i64),
        definition: s.yaml.unwrap_or_default(),
        cluster: Some(ClusterTotals {
            processes: s.cluster.processes as u32,
            samples_in: s.cluster.samples_in,
            samples_out: s.cluster.samples_out,
            rejected: s.cluster.rejected,
            late: s.cluster.late,
            watermark_ms: s.cluster.watermark.map(|w| w as i64),
        }),
    }
}

#[tonic::async_trait]
impl PipelineService for ControlService {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let principal = allowed(&request, Scope::Control)?;
        let text = request.into_inner().definition;
        // CPU work, off the async threads (as the HTTP API does it).
        let owned = text.clone();
        let checking = Arc::clone(&self.control);
        let plan = tokio::task::spawn_blocking(move || checking.compile_request(&owned))
            .await
            .map_err(|e| Status::internal(format!("validation failed: {e}")))?
            .map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Status::invalid_argument(lines.join("\n"))
            })?;
        if self.control.shutdown.is_triggered() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let owner =
            self.control
                .may_apply(&principal, &plan.name)
                .map_err(|(conflict, message)| {
                    if conflict {
                        Status::already_exists(message)
                    } else {
                        Status::resource_exhausted(message)
                    }
                })?;
        let created = self.control.get(&plan.name).is_none();
        let id = self.control.apply(&plan.name, &text, owner.as_deref());
        let name = plan.name.clone();
        if !self
            .control
            .wait_for(Duration::from_secs(30), |c| c.is_installed(&name, id))
            .await
        {
            return Err(Status::deadline_exceeded(
                "the pipeline was accepted but is not running on every worker yet",
            ));
        }
        let status = self
            .control
            .get(&name)
            .ok_or_else(|| Status::internal("the pipeline disappeared"))?;
        Ok(Response::new(ApplyResponse {
            created,
            status: Some(to_proto(status)),
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let principal = allowed(&request, Scope::Read)?;
        Ok(Response::new(ListResponse {
            pipelines: self
                .control
                .list_for(&principal)
                .into_iter()
                .map(to_proto)
                .collect(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<PipelineStatus>, Status> {
        let principal = allowed(&request, Scope::Read)?;
        let name = request.into_inner().name;
        match self.control.get_for(&principal, &name) {
            Some(s) => Ok(Response::new(to_proto(s))),
            None => Err(Status::not_found(format!("no pipeline named {name:?}"))),
        }
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let principal = allowed(&request, Scope::Control)?;
        let name = request.into_inner().name;
        if !self.control.may_see(&principal, &name) || !self.control.delete(&name) {
            return Err(Status::not_found(format!("no pipeline named {name:?}")));
        }
        let n = name.clone();
        self.control
            .wait_for(Duration::from_secs(10), |c| c.is_gone(&n))
            .await;
        Ok(Response::new(DeleteResponse {}))
    }
}

/// The caller of a control method, if its role grants `scope`.
fn allowed<T>(request: &Request<T>, scope: Scope) -> Result<Principal, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::local_admin);
    principal
        .require(scope)
        .map_err(Status::permission_denied)?;
    Ok(principal)
}

/// Serves gRPC on `listener` until `control` is shutting down.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    auth: Auth,
    tls: Option<tonic::transport::Identity>,
    connections: crate::conn::Connections,
) -> anyhow::Result<()> {
    let service = ControlService {
        control: Arc::clone(&control),
    };
    let auth = Arc::new(auth);
    let gate = Arc::clone(&control.gate);
    // The control service checks each method's scope itself; the ingest
    // services need `ingest`.
    let check = |scope: Option<Scope>| {
        let auth = Arc::clone(&auth);
        let gate = Arc::clone(&gate);
        move |mut request: Request<()>| -> Result<Request<()>, Status> {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let Some(principal) = auth.check(header) else {
                gate.count("unauthenticated");
                return Err(Status::unauthenticated("missing or invalid bearer token"));
            };
            if let Some(scope) = scope
                && let Err(message) = principal.require(scope)
            {
                gate.count("forbidden");
                return Err(Status::permission_denied(message));
            }
            if let Some(t) = &principal.tenant {
                request
                    .extensions_mut()
                    .insert(crate::gate::Tenant(t.clone()));
            }
            request.extensions_mut().insert(principal);
            Ok(request)
        }
    };
    let ingest = super::ingest::Ingest {
        control: Arc::clone(&control),
    };
    let otlp = super::otlp::Otlp {
        control: Arc::clone(&control),
    };
    let stopping = async move {
        while !control.shutdown.is_triggered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Keep-alive pings close connections whose peer went away.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(identity) = tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .add_service(tonic::service::interceptor::InterceptedService::new(
            PipelineServiceServer::new(service).max_decoding_message_size(super::http::MAX_BODY),
            check(None),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            super::ingest::proto::ingest_service_server::IngestServiceServer::new(ingest)
                .max_decoding_message_size(super::ingest::MAX_MESSAGE)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            check(Some(Scope::Ingest)),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            super::otlp::service::metrics_service_server::MetricsServiceServer::new(otlp)
                .max_decoding_message_size(super::ingest::MAX_MESSAGE)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            check(Some(Scope::Ingest)),
        ))
        .serve_with_incoming_shutdown(counted(listener, connections), stopping)
        .await?;
    Ok(())
}

/// Accepted connections, each counted against the shared budget (waiting
/// for room when it is used up).
fn counted(
    listener: tokio::net::TcpListener,
    connections: crate::conn::Connections,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::conn::Counted>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).then(move |accepted| {
        let connections = connections.clone();
        async move { connections.admit(accepted?).await }
    })
}
