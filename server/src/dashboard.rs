//! The live dashboard at `/`: one static page (HTML, CSS and JavaScript in
//! `dashboard/`, built into the binary, no build step) that lists the
//! `websocket` outputs (`/api/v1/live`), subscribes to one over `/ws` and
//! draws its series with uPlot (vendored, MIT, `dashboard/vendor/`). See
//! `docs/dashboard.md`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const UPLOT_JS: &str = include_str!("dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("dashboard/vendor/uPlot.min.css");

/// Scripts and styles from this server only; sockets and fetches back to it.
const POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// Path, content type and body of every file of the page.
const FILES: [(&str, &str, &str); 5] = [
    ("/", "text/html; charset=utf-8", INDEX),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        APP_JS,
    ),
    ("/dashboard/app.css", "text/css; charset=utf-8", APP_CSS),
    (
        "/dashboard/uPlot.min.js",
        "text/javascript; charset=utf-8",
        UPLOT_JS,
    ),
    (
        "/dashboard/uPlot.min.css",
        "text/css; charset=utf-8",
        UPLOT_CSS,
    ),
];

/// `/` and `/dashboard/*`. The page itself needs no token: it holds no
/// data, and asks for one when `/api/v1/live` answers 401.
pub fn router() -> Router {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}
