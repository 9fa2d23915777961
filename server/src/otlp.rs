//! OTLP metrics: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! on the gRPC listener and `POST /v1/metrics` (protobuf) on the HTTP
//! listener, feeding `type: otlp` sources. How points map to series:
//! `tidemark_codecs::otlp` and docs/server.md, "OTLP".

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::{Request, Response, Status};

use tidemark_codecs::{Arrival, Rejects};
use tidemark_engine::ingest::Protocol;

use crate::admit::Refusal;
use crate::control::Control;
use crate::http::Tenant;

/// Decodes, offers and counts one export; the reply's partial success names
/// what was rejected.
pub async fn export(
    control: &Control,
    request: ExportMetricsServiceRequest,
    tenant: Option<&str>,
) -> Result<ExportMetricsServiceResponse, Refusal> {
    control.accepting(Protocol::Otlp)?;
    let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
    tidemark_codecs::otlp::decode_request(
        request,
        Arrival::now(tenant),
        &control.edge,
        &mut samples,
        &mut rejects,
    );
    control
        .admit(Protocol::Otlp, tenant, &samples, &rejects)
        .await?;
    let partial_success = (!rejects.is_empty()).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejects.total() as i64,
        error_message: rejects.summary(),
    });
    Ok(ExportMetricsServiceResponse { partial_success })
}

/// The gRPC service.
pub struct Otlp {
    /// The process's control plane.
    pub control: Arc<Control>,
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = request.extensions().get::<Tenant>().map(|t| t.0.clone());
        export(&self.control, request.into_inner(), tenant.as_deref())
            .await
            .map(Response::new)
            .map_err(|r| r.status(Protocol::Otlp))
    }
}

/// `POST /v1/metrics`: OTLP over HTTP with a protobuf body.
pub async fn http(
    axum::extract::State(control): axum::extract::State<Arc<Control>>,
    tenant: Option<axum::extract::Extension<Tenant>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use prost::Message;
    let tenant = tenant.map(|axum::extract::Extension(t)| t.0);
    let request = match ExportMetricsServiceRequest::decode(body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            control.count_malformed(Protocol::Otlp);
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid ExportMetricsServiceRequest: {e}\n"),
            )
                .into_response();
        }
    };
    match export(&control, request, tenant.as_deref()).await {
        Ok(reply) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            reply.encode_to_vec(),
        )
            .into_response(),
        Err(refusal) => refusal.response(),
    }
}
