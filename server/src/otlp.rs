//! OTLP metrics: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! on the gRPC listener and `POST /v1/metrics` (protobuf) on the HTTP
//! listener, feeding `type: otlp` sources. How points map to series:
//! `tidemark_codecs::otlp` and docs/server.md, "OTLP".

use std::sync::Arc;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use tidemark_codecs::{Arrival, Rejects, otlp};
use tidemark_engine::ingest::Protocol;

use crate::admit::Refusal;
use crate::codec::Encoded;
use crate::control::Control;
use crate::http::Tenant;

/// Why an export was not taken.
pub enum Failed {
    /// The request cannot be read, or is larger than the server decodes:
    /// the sender's error, not retried (counted as `malformed`).
    Malformed(String),
    /// Not now: the server is stopping or busy, or no pipeline reads OTLP.
    Refused(Refusal),
}

impl Failed {
    fn status(&self) -> Status {
        match self {
            Failed::Malformed(message) => Status::invalid_argument(message.clone()),
            Failed::Refused(refusal) => refusal.status(Protocol::Otlp),
        }
    }

    fn response(&self) -> axum::response::Response {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        match self {
            Failed::Malformed(message) => {
                (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
            }
            Failed::Refused(refusal) => refusal.response(),
        }
    }
}

/// Measures, decodes, offers and counts one encoded export; the reply's
/// partial success names what was rejected. What the generated structs
/// may take is bounded from the message's wire shape and charged to the
/// server's decoding budget before it is decoded, and the samples once
/// they are counted (as for remote-write).
pub async fn export(
    control: &Arc<Control>,
    payload: Bytes,
    tenant: Option<&str>,
) -> Result<ExportMetricsServiceResponse, Failed> {
    control.accepting(Protocol::Otlp).map_err(Failed::Refused)?;
    let malformed = |message: String| {
        control.count_malformed(Protocol::Otlp);
        Failed::Malformed(message)
    };
    let bound = otlp::decoded_bound(&payload)
        .map_err(malformed)?
        .saturating_add(payload.len());
    let mut held = match control.reserve_decode(bound).await {
        Some(Ok(permit)) => permit,
        Some(Err(refusal)) => return Err(Failed::Refused(refusal)),
        None => return Err(malformed(control.over_decode_budget(bound))),
    };
    let inline = payload.len() < crate::ingest::DECODE_INLINE;
    let request = on_blocking(inline, move || ExportMetricsServiceRequest::decode(payload))
        .await
        .map_err(|e| malformed(format!("invalid {WHAT}: {e}")))?;
    let samples = otlp::samples_in(&request).saturating_mul(size_of::<tidemark_engine::Sample>());
    match control.reserve_decode(samples).await {
        Some(Ok(more)) => held.merge(more),
        Some(Err(refusal)) => return Err(Failed::Refused(refusal)),
        None => return Err(malformed(control.over_decode_budget(bound + samples))),
    }
    let (samples, rejects) = {
        let tenant = tenant.map(str::to_owned);
        let control = Arc::clone(control);
        on_blocking(inline, move || {
            let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
            otlp::decode_request(
                request,
                Arrival::now(tenant.as_deref()),
                &control.edge,
                &mut samples,
                &mut rejects,
            );
            Ok::<_, String>((samples, rejects))
        })
        .await
        .map_err(malformed)?
    };
    control
        .admit(Protocol::Otlp, tenant, &samples, &rejects)
        .await
        .map_err(Failed::Refused)?;
    drop(held);
    let partial_success = (!rejects.is_empty()).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejects.total() as i64,
        error_message: rejects.summary(),
    });
    Ok(ExportMetricsServiceResponse { partial_success })
}

const WHAT: &str = "ExportMetricsServiceRequest";

/// Runs `work` here when it is small, else on a blocking thread.
async fn on_blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    if inline {
        return work().map_err(|e| e.to_string());
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(e) => Err(format!("decoding failed: {e}")),
    }
}

/// The gRPC service.
pub struct Otlp {
    /// The process's control plane.
    pub control: Arc<Control>,
}

/// OTLP's metrics service, taking requests encoded (`crate::codec`,
/// `build.rs`).
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod service {
    include!(concat!(
        env!("OUT_DIR"),
        "/opentelemetry.proto.collector.metrics.v1.MetricsService.rs"
    ));
}

#[tonic::async_trait]
impl service::metrics_service_server::MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<Encoded>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = request.extensions().get::<Tenant>().map(|t| t.0.clone());
        export(&self.control, request.into_inner().0, tenant.as_deref())
            .await
            .map(Response::new)
            .map_err(|f| f.status())
    }
}

/// `POST /v1/metrics`: OTLP over HTTP with a protobuf body.
pub async fn http(
    axum::extract::State(control): axum::extract::State<Arc<Control>>,
    tenant: Option<axum::extract::Extension<Tenant>>,
    body: Bytes,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let tenant = tenant.map(|axum::extract::Extension(t)| t.0);
    match export(&control, body, tenant.as_deref()).await {
        Ok(reply) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            reply.encode_to_vec(),
        )
            .into_response(),
        Err(failed) => failed.response(),
    }
}
