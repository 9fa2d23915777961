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

use tidemark_codecs::remote_write;
pub use tidemark_codecs::remote_write::{MAX_DECOMPRESSED, MAX_SAMPLES, proto};

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
    let quota_tenant = tenant.clone();
    if let Err(refusal) = control.accepting(Protocol::RemoteWrite) {
        return refusal.response();
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return malformed(
            &control,
            format!("expected Content-Encoding: snappy, got {encoding:?}"),
        );
    }
    // The uncompressed body is charged to the decoding budget before it
    // is uncompressed, and the samples it holds once they are counted.
    let len = match remote_write::decompressed_len(&body) {
        Ok(len) => len,
        Err(message) => return malformed(&control, message),
    };
    let mut held = match control.reserve_decode(len).await {
        Some(Ok(permit)) => permit,
        Some(Err(refusal)) => return refusal.response(),
        None => return over_budget(&control, len),
    };
    let decoded = tokio::task::spawn_blocking(move || remote_write::uncompress(&body)).await;
    let decoded = match decoded {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(message)) => return malformed(&control, message),
        Err(e) => return malformed(&control, format!("the request could not be decoded: {e}")),
    };
    match control.reserve_decode(decoded.decoded_bytes() - len).await {
        Some(Ok(more)) => held.merge(more),
        Some(Err(refusal)) => return refusal.response(),
        None => return over_budget(&control, decoded.decoded_bytes()),
    }
    let for_decoding = Arc::clone(&control);
    let decoded = tokio::task::spawn_blocking(move || {
        let (mut samples, mut rejects) = (Vec::new(), Rejects::default());
        decoded.decode(
            Arrival::now(tenant.as_deref()),
            &for_decoding.edge,
            &mut samples,
            &mut rejects,
        );
        (samples, rejects)
    })
    .await;
    let Ok((samples, rejects)) = decoded else {
        return malformed(&control, "the request could not be decoded".to_owned());
    };
    if let Err(refusal) = control
        .admit(
            Protocol::RemoteWrite,
            quota_tenant.as_deref(),
            &samples,
            &rejects,
        )
        .await
    {
        return refusal.response();
    }
    drop(held);
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

/// A body that cannot be read: counted, and answered 400 (not retried).
fn malformed(control: &Control, message: String) -> Response {
    control.count_malformed(Protocol::RemoteWrite);
    text(StatusCode::BAD_REQUEST, message)
}

/// A request that alone needs more than the whole decoding budget.
fn over_budget(control: &Control, bytes: usize) -> Response {
    malformed(control, control.over_decode_budget(bytes))
}
