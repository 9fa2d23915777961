//! The HTTP listener (axum): the pipeline control API under
//! `/api/v1/pipelines`, `/metrics`, `/healthz` and `/readyz`, ingest
//! (remote-write, OTLP/HTTP), Prometheus's query API and remote read, and
//! the live routes (`/ws`, `/api/v1/live`, the dashboard at `/`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::control::Control;
use super::metrics;
use crate::auth::Principal;
use tidemark_pipelines::compile::Diagnostic;

/// Largest pipeline body accepted.
pub const MAX_BODY: usize = 1 << 20;

pub use crate::auth::Auth;
pub use crate::gate::Tenant;
pub use tidemark_codecs::tenant::TENANT_LABEL;

/// The router, behind the [`gate`](crate::gate).
pub fn router(control: Arc<Control>) -> Router {
    let api = Router::new()
        .route("/api/v1/pipelines", get(list).post(apply))
        .route("/api/v1/pipelines/{name}", get(get_one).delete(delete))
        .route("/api/v1/rules", get(super::rules::rules))
        .route("/api/v1/alerts", get(super::rules::alerts))
        .route("/api/v1/notifications", get(super::notifier::notifications))
        .route("/api/v1/incidents", get(super::notifier::incidents))
        .route(
            "/api/v2/silences",
            get(super::notifier::list).post(super::notifier::post),
        )
        .route(
            "/api/v2/silence/{id}",
            get(super::notifier::get_one).delete(super::notifier::expire),
        )
        .route(
            "/api/v1/query",
            get(super::query::instant).post(super::query::instant),
        )
        .route(
            "/api/v1/query_range",
            get(super::query::range).post(super::query::range),
        )
        .route(
            "/api/v1/series",
            get(super::query::series).post(super::query::series),
        )
        .route(
            "/api/v1/labels",
            get(super::query::labels).post(super::query::labels),
        )
        .route(
            "/api/v1/label/{name}/values",
            get(super::query::label_values),
        )
        .route("/api/v1/metadata", get(super::query::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(super::query::exemplars).post(super::query::exemplars),
        )
        .route("/api/v1/status/buildinfo", get(super::query::buildinfo))
        .route(
            "/api/v1/read",
            axum::routing::post(super::remote_read::read),
        );
    let ingest = Router::new()
        .route(
            "/api/v1/write",
            axum::routing::post(super::remote_write::write),
        )
        .route(
            "/v1/metrics",
            // OTLP/HTTP senders may gzip (or zstd) the body; the size limit
            // below then applies to the decompressed bytes, so a small
            // compressed bomb cannot make the server hold more than that.
            axum::routing::post(super::otlp::http)
                .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        )
        .layer(DefaultBodyLimit::max(super::remote_write::MAX_COMPRESSED));
    let live = super::live::router(super::live::LiveState {
        hub: Arc::clone(&control.live),
        control: Some(Arc::clone(&control)),
    });
    let gate = Arc::clone(&control.gate);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_handler))
        // A declared Content-Length over the limit is refused (413) before
        // any of the body is read, so the sender learns at once.
        .merge(
            api.layer(DefaultBodyLimit::max(MAX_BODY))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY)),
        )
        .merge(ingest)
        .with_state(control)
        .merge(live)
        .layer(middleware::from_fn_with_state(gate, crate::gate::check))
}

/// A located error as JSON.
pub fn diagnostic_json(d: &Diagnostic) -> serde_json::Value {
    json!({
        "file": d.file,
        "line": d.pos.line,
        "column": d.pos.column,
        "component": d.component.as_ref().map(|(s, n)| json!({"kind": s.word(), "name": n})),
        "message": d.message,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn ready(State(control): State<Arc<Control>>) -> Response {
    if !control.ready.load(Ordering::SeqCst) || control.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    let stalled = control.stalled_workers();
    if !stalled.is_empty() {
        let list: Vec<String> = stalled
            .iter()
            .map(|(w, s)| format!("worker {w} for {s} s"))
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: stalled in one step ({}); a sink or source is blocking it (a full pipe, a call that does not return)\n",
                list.join(", ")
            ),
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics_handler(State(control): State<Arc<Control>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&control),
    )
        .into_response()
}

async fn list(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    axum::Json(json!({"pipelines": control.list_for(&principal)})).into_response()
}

async fn get_one(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    match control.get_for(&principal, &name) {
        Some(s) => axum::Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no pipeline named {name:?}")),
    }
}

/// Applies a pipeline (YAML, or JSON, which is YAML too): creates it, or
/// replaces the one of the same name. Answers once every local worker runs it.
async fn apply(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    // Parsing, validation and the access check are CPU and file-system
    // work: off the async threads, so one large body does not stall
    // `/healthz` or ingest.
    let owned = text.to_owned();
    let checking = Arc::clone(&control);
    let compiled = tokio::task::spawn_blocking(move || checking.compile_request(&owned)).await;
    let plan = match compiled {
        Ok(Ok(p)) => p,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("validation failed: {e}"),
            );
        }
        Ok(Err(errors)) => {
            let list: Vec<_> = errors.iter().map(diagnostic_json).collect();
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": list}))).into_response();
        }
    };
    if control.shutdown.is_triggered() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    }
    let owner = match control.may_apply(&principal, &plan.name) {
        Ok(owner) => owner,
        Err((conflict, message)) => {
            let status = if conflict {
                StatusCode::CONFLICT
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            return error(status, message);
        }
    };
    let replaced = control.get(&plan.name).is_some();
    let id = control.apply(&plan.name, text, owner.as_deref());
    let name = plan.name.clone();
    let installed = control
        .wait_for(Duration::from_secs(30), |c| c.is_installed(&name, id))
        .await;
    if !installed {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "the pipeline was accepted but is not running on every worker yet",
        );
    }
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    match control.get(&name) {
        Some(s) => (status, axum::Json(s)).into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the pipeline disappeared",
        ),
    }
}

/// Stops a pipeline: sources end, open windows flush, sinks drain.
async fn delete(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    if !control.may_see(&principal, &name) || !control.delete(&name) {
        return error(StatusCode::NOT_FOUND, format!("no pipeline named {name:?}"));
    }
    let n = name.clone();
    control
        .wait_for(Duration::from_secs(10), |c| c.is_gone(&n))
        .await;
    StatusCode::NO_CONTENT.into_response()
}
