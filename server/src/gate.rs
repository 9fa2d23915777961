//! The one gate every HTTP request passes, on `tidemark serve` and on the
//! dashboard of `tidemark run`, before any handler runs:
//!
//! 1. **Host** (without tokens only; not on `/healthz` and `/readyz`): the `Host` header must be an IP
//!    address, `localhost`, or a host of `allowed_origins`, so that a web
//!    page whose name was pointed at this server (DNS rebinding) cannot
//!    call it as its own origin.
//! 2. **Origin**: a browser's request from a page of another origin is
//!    refused unless that origin is in `allowed_origins`. Clients that are
//!    not browsers send no `Origin` and pass.
//! 3. **Token and scope**: the bearer token (or `?token=` on `/ws` and
//!    `/api/v1/live`, which browsers cannot give headers) names a
//!    [`Principal`](crate::auth::Principal); the route's [`Scope`] must be one its role has.
//! 4. **Content type**: a pipeline is applied only as YAML or JSON, so a
//!    page cannot send one as `text/plain` (which needs no CORS preflight).
//!
//! Every refusal is counted by reason (`tidemark_http_refusals_total`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{Auth, Scope};

/// The tenant ingest adds as the `tenant` label (from the principal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(pub String);

/// What the gate checks against.
#[derive(Debug, Default)]
pub struct Gate {
    /// Tokens.
    pub auth: Auth,
    /// Origins (`https://dash.example.com`) whose pages may call the
    /// server, beside its own.
    pub allowed_origins: Vec<String>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

/// The content types a pipeline may be sent as.
const PIPELINE_TYPES: [&str; 5] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
];

impl Gate {
    /// A gate for `auth` and `allowed_origins`.
    pub fn new(auth: Auth, allowed_origins: Vec<String>) -> Gate {
        let allowed_origins = allowed_origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Gate {
            auth,
            allowed_origins,
            refusals: Mutex::default(),
        }
    }

    /// Requests refused so far, by reason.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a refusal (also the gRPC listener's).
    pub fn count(&self, reason: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn refuse(&self, reason: &'static str, status: StatusCode, message: String) -> Response {
        self.count(reason);
        let mut response = (status, axum::Json(json!({"error": message}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }

    /// The scope a route needs; `None` for the open ones (health, the
    /// dashboard's static files, `/metrics` unless protected).
    fn scope(&self, method: &Method, path: &str) -> Option<Scope> {
        match path {
            "/healthz" | "/readyz" | "/" => None,
            p if p.starts_with("/dashboard/") => None,
            "/metrics" => self.auth.protect_metrics.then_some(Scope::Metrics),
            "/api/v1/write" | "/v1/metrics" => Some(Scope::Ingest),
            p if p == "/api/v1/pipelines"
                || p.starts_with("/api/v1/pipelines/")
                || p == "/api/v2/silences"
                || p.starts_with("/api/v2/silence/") =>
            {
                Some(if *method == Method::GET || *method == Method::HEAD {
                    Scope::Read
                } else {
                    Scope::Control
                })
            }
            _ => Some(Scope::Read),
        }
    }

    /// Checks `Host` (without tokens) and `Origin`. `authority` is the
    /// request URI's, which HTTP/2 clients send instead of `Host`.
    fn browser(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !self.auth.enabled() && !host.is_empty() && !self.trusted_host(&host) {
            return Err((
                "host",
                format!(
                    "Host {host:?} is not this server's: without tokens the server answers only requests addressed to an IP address, localhost or a host of allowed_origins"
                ),
            ));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .unwrap_or("null")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host);
        if same || self.allowed_origins.contains(&origin) {
            return Ok(());
        }
        Err((
            "origin",
            format!(
                "a page of {origin} may not call this server (add the origin to allowed_origins to allow it)"
            ),
        ))
    }

    fn trusted_host(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(rest) => {
                return rest
                    .split(']')
                    .next()
                    .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(n, _)| n),
        };
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed_origins.iter().any(|o| {
                o.split_once("://")
                    .map(|(_, a)| a.rsplit_once(':').map_or(a, |(n, _)| n))
                    == Some(name)
            })
    }
}

/// The middleware: refuses what the gate does not let through, else
/// passes the request on with its [`Principal`](crate::auth::Principal)
/// (and [`Tenant`]).
pub async fn check(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    // Orchestrators' probes pass whatever their Host.
    let probe = path == "/healthz" || path == "/readyz";
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if !probe && let Err((reason, message)) = gate.browser(request.headers(), authority.as_deref())
    {
        return gate.refuse(reason, StatusCode::FORBIDDEN, message);
    }
    let scope = gate.scope(request.method(), &path);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            // Browsers cannot set headers on a WebSocket: `?token=`.
            (path == "/ws" || path == "/api/v1/live")
                .then(|| query_token(request.uri().query()))
                .flatten()
                .map(|t| format!("Bearer {t}"))
        });
    let principal = match gate.auth.check(header.as_deref()) {
        Some(p) => p,
        None if scope.is_none() => {
            return next.run(request).await;
        }
        None => {
            let message = if header.is_some() {
                "invalid bearer token"
            } else {
                "missing bearer token (send Authorization: Bearer TOKEN)"
            };
            return gate.refuse("unauthenticated", StatusCode::UNAUTHORIZED, message.into());
        }
    };
    if let Some(scope) = scope
        && let Err(message) = principal.require(scope)
    {
        return gate.refuse("forbidden", StatusCode::FORBIDDEN, message);
    }
    if request.method() == Method::POST && path == "/api/v1/pipelines" {
        let given = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = given
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !PIPELINE_TYPES.contains(&essence.as_str()) {
            return gate.refuse(
                "content_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "send the pipeline as Content-Type: application/yaml (or application/json), not {given:?}"
                ),
            );
        }
    }
    if let Some(t) = &principal.tenant {
        request.extensions_mut().insert(Tenant(t.clone()));
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn without_tokens_only_local_hosts_and_own_origins_pass() {
        let gate = Gate::new(Auth::default(), vec!["https://dash.example.com".into()]);
        for ok in [
            vec![("host", "127.0.0.1:8080")],
            vec![
                ("host", "localhost:8080"),
                ("origin", "http://localhost:8080"),
            ],
            vec![("host", "[::1]:8080")],
            vec![
                ("host", "dash.example.com"),
                ("origin", "https://dash.example.com"),
            ],
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "https://dash.example.com/"),
            ],
        ] {
            assert!(gate.browser(&headers(&ok), None).is_ok(), "{ok:?}");
        }
        for (bad, reason) in [
            (vec![("host", "evil.example:8080")], "host"),
            (
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://evil.example"),
                ],
                "origin",
            ),
            (
                vec![("host", "127.0.0.1:8080"), ("origin", "null")],
                "origin",
            ),
            (
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:9999"),
                ],
                "origin",
            ),
        ] {
            assert_eq!(
                gate.browser(&headers(&bad), None).unwrap_err().0,
                reason,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn with_tokens_any_host_but_still_only_own_origins() {
        let gate = Gate::new(Auth::single("0123456789abcdef0".into()), Vec::new());
        assert!(
            gate.browser(&headers(&[("host", "tidemark.internal:8080")]), None)
                .is_ok()
        );
        assert!(
            gate.browser(
                &headers(&[("origin", "https://tidemark.internal:8080")]),
                Some("tidemark.internal:8080")
            )
            .is_ok()
        );
        assert!(
            gate.browser(
                &headers(&[
                    ("host", "tidemark.internal:8080"),
                    ("origin", "https://tidemark.internal.evil.example")
                ]),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn tokens_in_queries_are_decoded() {
        assert_eq!(
            query_token(Some("pipeline=p&token=a%2Bb+c")),
            Some("a+b c".into())
        );
        assert_eq!(query_token(Some("pipeline=p")), None);
        assert_eq!(percent_decode("%zz%4%é"), "%zz%4%é");
    }
}
