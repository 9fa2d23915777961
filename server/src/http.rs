//! The HTTP listener (axum): the pipeline control API under
//! `/api/v1/pipelines`, `/metrics`, `/healthz` and `/readyz`, ingest
//! (remote-write, OTLP/HTTP), and the live routes (`/ws`, `/api/v1/live`,
//! the dashboard at `/`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::control::Control;
use super::metrics;
use tidemark_pipelines::compile::Diagnostic;

/// Largest pipeline body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Bearer tokens and what they protect.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Accepted tokens; empty means no authentication.
    pub tokens: Vec<String>,
    /// The tenant of each token (same order), if the file names one.
    pub tenants: Vec<Option<String>>,
    /// Also require a token for `/metrics` (health checks stay open).
    pub protect_metrics: bool,
}

impl Auth {
    /// Reads tokens from a file, one a line, optionally followed by a
    /// tenant (`TOKEN TENANT`); blank lines and `#` comments are ignored.
    /// Tokens are never logged.
    pub fn from_file(path: &std::path::Path, protect_metrics: bool) -> anyhow::Result<Auth> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
        let mut tokens = Vec::new();
        let mut tenants = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.split_whitespace();
            tokens.push(parts.next().unwrap_or_default().to_owned());
            tenants.push(parts.next().map(str::to_owned));
        }
        anyhow::ensure!(
            !tokens.is_empty(),
            "the token file {} has no tokens",
            path.display()
        );
        Ok(Auth {
            tokens,
            tenants,
            protect_metrics,
        })
    }

    /// Whether an `Authorization` header value carries an accepted token.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        self.check(header).is_some()
    }

    /// The credential's tenant: `None` if refused, `Some(None)` for a token
    /// without a tenant.
    pub fn check(&self, header: Option<&str>) -> Option<Option<Tenant>> {
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let (scheme, token) = header?.trim_start().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = token.trim().as_bytes();
        // Compare every token in full so timing reveals nothing.
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if constant_time_eq(t.as_bytes(), given) {
                found = Some(i);
            }
        }
        found.map(|i| self.tenants.get(i).cloned().flatten().map(Tenant))
    }
}

pub use tidemark_codecs::tenant::TENANT_LABEL;

/// The tenant a credential belongs to; ingest adds it as the `tenant`
/// label, replacing any the sender set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(pub String);

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(tenant) = auth.check(header) {
        if let Some(t) = tenant {
            request.extensions_mut().insert(t);
        }
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "missing or invalid bearer token"})),
        )
            .into_response()
    }
}

/// The router.
pub fn router(control: Arc<Control>, auth: Auth) -> Router {
    let auth = Arc::new(auth);
    let mut api = Router::new()
        .route("/api/v1/pipelines", get(list).post(apply))
        .route("/api/v1/pipelines/{name}", get(get_one).delete(delete));
    let mut ingest = Router::new()
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
    let mut metrics = Router::new().route("/metrics", get(metrics_handler));
    if !auth.tokens.is_empty() {
        api = api.layer(middleware::from_fn_with_state(
            Arc::clone(&auth),
            require_token,
        ));
        ingest = ingest.layer(middleware::from_fn_with_state(
            Arc::clone(&auth),
            require_token,
        ));
        if auth.protect_metrics {
            metrics = metrics.layer(middleware::from_fn_with_state(
                Arc::clone(&auth),
                require_token,
            ));
        }
    }
    let live = super::live::router(super::live::LiveState {
        hub: Arc::clone(&control.live),
        auth: Arc::clone(&auth),
        control: Some(Arc::clone(&control)),
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(metrics)
        // A declared Content-Length over the limit is refused (413) before
        // any of the body is read, so the sender learns at once.
        .merge(
            api.layer(DefaultBodyLimit::max(MAX_BODY))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY)),
        )
        .merge(ingest)
        .with_state(control)
        .merge(live)
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

async fn list(State(control): State<Arc<Control>>) -> Response {
    axum::Json(json!({"pipelines": control.list()})).into_response()
}

async fn get_one(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    match control.get(&name) {
        Some(s) => axum::Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no pipeline named {name:?}")),
    }
}

/// Applies a pipeline (YAML, or JSON, which is YAML too): creates it, or
/// replaces the one of the same name. Answers once every local worker runs it.
async fn apply(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    // Parsing and validation are CPU work: off the async threads, so one
    // large body does not stall `/healthz` or ingest.
    let owned = text.to_owned();
    let compiled =
        tokio::task::spawn_blocking(move || tidemark_pipelines::compile("request", &owned)).await;
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
    let replaced = control.get(&plan.name).is_some();
    let id = control.apply(&plan.name, text);
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
async fn delete(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    if !control.delete(&name) {
        return error(StatusCode::NOT_FOUND, format!("no pipeline named {name:?}"));
    }
    let n = name.clone();
    control
        .wait_for(Duration::from_secs(10), |c| c.is_gone(&n))
        .await;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_tokens_are_exact() {
        let auth = Auth {
            tokens: vec!["s3cret".into(), "t0ken".into()],
            tenants: vec![None, Some("acme".into())],
            protect_metrics: false,
        };
        for header in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            assert_eq!(auth.check(Some(header)), Some(None), "{header}");
        }
        assert_eq!(
            auth.check(Some("bearer t0ken")),
            Some(Some(Tenant("acme".into())))
        );
        for header in ["Basic s3cret", "Bearer s3cre", "Bearers3cret", "s3cret", ""] {
            assert_eq!(auth.check(Some(header)), None, "{header}");
        }
        assert_eq!(auth.check(None), None);
    }
}
