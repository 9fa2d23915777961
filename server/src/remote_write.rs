//! The Prometheus remote-write 1.0 receiver: `POST /api/v1/write` with a
//! snappy-compressed (block format) protobuf `WriteRequest`.
//!
//! Answers, following what Prometheus does with them:
//! - `204` when every sample was accepted;
//! - `400` when the body does not decode (not retried), or when some samples
//!   were rejected (the body says which and why; the rest was accepted, so
//!   not retrying is right);
//! - `503` with `Retry-After` when a pipeline is not keeping up, or when no
//!   pipeline reads remote-write yet (Prometheus retries 5xx and keeps the
//!   data); nothing of the request was queued.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use tidemark_codecs::{Arrival, Rejects};
use tidemark_engine::ingest::Protocol;

use crate::control::Control;
use crate::http::Tenant;

pub use tidemark_codecs::remote_write::{MAX_DECOMPRESSED, proto};

/// Largest compressed body accepted.
pub const MAX_COMPRESSED: usize = 16 << 20;

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// `POST /api/v1/write`.
pub async fn write(
    State(control): State<Arc<Control>>,
    tenant: Option<Extension<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = tenant.map(|Extension(t)| t.0);
    if let Err(refusal) = control.accepting() {
        return refusal.response();
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        control.count_malformed(Protocol::RemoteWrite);
        return text(
            StatusCode::BAD_REQUEST,
            format!("expected Content-Encoding: snappy, got {encoding:?}"),
        );
    }
    let request = match tidemark_codecs::remote_write::parse(&body) {
        Ok(request) => request,
        Err(message) => {
            control.count_malformed(Protocol::RemoteWrite);
            return text(StatusCode::BAD_REQUEST, message);
        }
    };
    let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
    tidemark_codecs::remote_write::decode_request(
        request,
        Arrival::now(tenant.as_deref()),
        &control.edge,
        &mut samples,
        &mut rejects,
    );
    if let Err(refusal) = control.admit(Protocol::RemoteWrite, &samples, &rejects) {
        return refusal.response();
    }
    if rejects.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "accepted {} samples; rejected {}",
            samples.len(),
            rejects.summary()
        ),
    )
}
