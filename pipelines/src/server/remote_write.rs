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

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use tidemark_engine::Sample;
use tidemark_engine::ingest::{OfferError, Protocol};
use tidemark_engine::series::METRIC_NAME_LABEL;
use tidemark_engine::stats::DropReason;
use tidemark_engine::validate::{Check, RejectReason};

use super::control::Control;
use super::http::{TENANT_LABEL, Tenant};

/// Generated protobuf code for `prometheus.WriteRequest`.
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Largest compressed body accepted.
pub const MAX_COMPRESSED: usize = 16 << 20;

/// Largest decompressed body accepted.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// Decodes a body into samples, counting rejections by reason.
pub fn decode(
    body: &[u8],
    control: &impl Check,
    tenant: Option<&str>,
    rejected: &mut BTreeMap<RejectReason, u64>,
) -> Result<Vec<Sample>, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("invalid snappy block: {e}"))?;
    if len > MAX_DECOMPRESSED {
        return Err(format!(
            "decompressed body of {len} bytes is over the limit of {MAX_DECOMPRESSED}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("invalid snappy block: {e}"))?;
    let request = proto::WriteRequest::decode(raw.as_slice())
        .map_err(|e| format!("invalid protobuf WriteRequest: {e}"))?;
    let mut samples = Vec::new();
    let now = tidemark_engine::time::now_millis();
    for ts in request.timeseries {
        let name = ts
            .labels
            .iter()
            .find(|l| l.name == METRIC_NAME_LABEL)
            .map_or("", |l| l.value.as_str());
        let labels = ts
            .labels
            .iter()
            .filter(|l| {
                l.name != METRIC_NAME_LABEL && !(tenant.is_some() && l.name == TENANT_LABEL)
            })
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .chain(tenant.map(|t| (TENANT_LABEL, t)));
        match control.check_series(name, labels) {
            Ok(series) => {
                for s in ts.samples {
                    match control.check_timestamp(s.timestamp, now) {
                        Ok(t) => samples.push(Sample::new(series.clone(), t, s.value)),
                        Err(r) => *rejected.entry(r).or_default() += 1,
                    }
                }
            }
            Err(r) => *rejected.entry(r).or_default() += ts.samples.len() as u64,
        }
    }
    Ok(samples)
}

/// `POST /api/v1/write`.
pub async fn write(
    State(control): State<Arc<Control>>,
    tenant: Option<Extension<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = tenant.map(|Extension(t)| t.0);
    if control.shutdown.is_triggered() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        );
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        control.count_rejects(
            "remote_write",
            &[(DropReason::Rejected(RejectReason::Malformed), 1)],
        );
        return text(
            StatusCode::BAD_REQUEST,
            format!("expected Content-Encoding: snappy, got {encoding:?}"),
        );
    }
    let mut rejected = BTreeMap::new();
    let samples = match decode(&body, &control.edge, tenant.as_deref(), &mut rejected) {
        Ok(s) => s,
        Err(message) => {
            control.count_rejects(
                "remote_write",
                &[(DropReason::Rejected(RejectReason::Malformed), 1)],
            );
            return text(StatusCode::BAD_REQUEST, message);
        }
    };
    if !samples.is_empty() {
        match control.ingest.offer(Protocol::RemoteWrite, &samples) {
            Ok(_) => {}
            Err(e @ (OfferError::Full { .. } | OfferError::NoSubscriber(_))) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!("{e}\n"),
                )
                    .into_response();
            }
        }
    }
    control.count_accepted("remote_write", samples.len() as u64);
    if rejected.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let counts: Vec<(DropReason, u64)> = rejected
        .iter()
        .map(|(r, n)| (DropReason::Rejected(*r), *n))
        .collect();
    control.count_rejects("remote_write", &counts);
    let detail: Vec<String> = rejected
        .iter()
        .map(|(r, n)| format!("{n} {}", r.as_str()))
        .collect();
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "accepted {} samples; rejected {}",
            samples.len(),
            detail.join(", ")
        ),
    )
}
