//! `/ws`: WebSocket subscriptions to `websocket` sinks.
//!
//! `GET /ws?pipeline=P[&output=SINK][&match=SELECTOR][&token=T]` upgrades to
//! a WebSocket. The server sends JSON text messages:
//!
//! - `{"type":"snapshot","pipeline","output","watermark","samples":[...]}`
//!   once: the latest value of every selected series;
//! - `{"type":"samples","watermark","samples":[...],"skipped":N}` for new
//!   values (`skipped` only under `slow_client: latest`, when values were
//!   dropped because the client fell behind);
//! - `{"type":"progress","watermark","published"}` once a second while the
//!   watermark or the count moves (dashboards show both).
//!
//! A sample is `{"name","labels","timestamp","value"}`, as in JSON lines.
//! The server pings every 15 s and closes a connection that has sent
//! nothing (not even a pong) for 45 s; a client too slow under
//! `slow_client: close` is closed with code 1008 and the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use tidemark_codecs::json::encode_json;
use tidemark_engine::Sample;
use tidemark_engine::live::{LiveHub, LiveOutput, Subscription};
use tidemark_engine::selector::Selector;

use super::control::Control;
use crate::auth::Principal;

/// What `/ws`, `/api/v1/live` and the dashboard need: the process's live
/// hub, the tokens, and (on `tidemark serve`) the control plane, to tell a
/// pipeline that does not exist from one whose sink runs elsewhere.
#[derive(Clone)]
pub struct LiveState {
    /// The outputs of this process's `websocket` sinks.
    pub hub: Arc<LiveHub>,
    /// The server's pipelines (`None` under `tidemark run`).
    pub control: Option<Arc<Control>>,
}

impl LiveState {
    /// Whether `principal` may see `pipeline`'s outputs: any under `tidemark
    /// run`; its own tenant's on `tidemark serve`.
    fn sees(&self, principal: &Principal, pipeline: &str) -> bool {
        match &self.control {
            None => true,
            Some(control) => control.may_see(principal, pipeline),
        }
    }
}

/// `/ws`, `/api/v1/live` and the dashboard (`/` and its assets).
pub fn router(state: LiveState) -> Router {
    Router::new()
        .route("/ws", get(subscribe))
        .route("/api/v1/live", get(outputs))
        .with_state(state)
        .merge(super::dashboard::router())
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    pipeline: String,
    output: Option<String>,
    #[serde(rename = "match")]
    selector: Option<String>,
}

const PING_EVERY: Duration = Duration::from_secs(15);
const SILENT_FOR: Duration = Duration::from_secs(45);

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// `GET /api/v1/live`: the `websocket` outputs a client can subscribe to
/// here, with their watermark, values published and subscribers.
pub async fn outputs(
    State(state): State<LiveState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let list: Vec<_> = state
        .hub
        .list()
        .into_iter()
        .filter(|(pipeline, _, _)| state.sees(&principal, pipeline))
        .map(|(pipeline, output, o)| {
            json!({
                "pipeline": pipeline,
                "output": output,
                "watermark": o.watermark(),
                "published": o.published(),
                "series": o.series(),
                "subscribers": o.subscribers(),
            })
        })
        .collect();
    axum::Json(json!({"outputs": list})).into_response()
}

/// Checks the request and upgrades it.
pub async fn subscribe(
    State(state): State<LiveState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let selector = match q.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(text) => match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("match: {e}")),
        },
    };
    let here: Vec<(String, Arc<LiveOutput>)> = state
        .hub
        .list()
        .into_iter()
        .filter(|(p, _, _)| *p == q.pipeline && state.sees(&principal, p))
        .map(|(_, s, o)| (s, o))
        .collect();
    let found = match (&q.output, here.as_slice()) {
        (Some(o), _) => here.iter().find(|(n, _)| n == o).cloned(),
        (None, [only]) => Some(only.clone()),
        (None, [_, _, ..]) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the pipeline has several websocket sinks: name one with output=",
            );
        }
        (None, []) => None,
    };
    let Some((name, output)) = found else {
        let message = if state.sees(&principal, &q.pipeline) {
            not_here(&state, &q)
        } else {
            format!("no pipeline {:?}", q.pipeline)
        };
        return error(StatusCode::NOT_FOUND, message);
    };
    let place = match &state.control {
        Some(control) => match control.quotas.subscribe(principal.tenant.as_deref()) {
            Ok(place) => Some(place),
            Err(message) => return error(StatusCode::TOO_MANY_REQUESTS, message),
        },
        None => None,
    };
    let pipeline = q.pipeline.clone();
    upgrade.on_upgrade(move |socket| async move {
        let _place = place;
        let (snapshot, sub) = output.subscribe(selector);
        serve(socket, &output, &sub, snapshot, &pipeline, &name).await;
        output.unsubscribe(&sub);
    })
}

/// Why a subscription found no output in this process.
fn not_here(state: &LiveState, q: &WsQuery) -> String {
    let pipeline = &q.pipeline;
    let Some(control) = &state.control else {
        return match &q.output {
            Some(o) => format!("no websocket sink {o:?} in pipeline {pipeline:?}"),
            None => format!("no pipeline {pipeline:?} with a websocket sink"),
        };
    };
    match control.websocket_outputs(pipeline) {
        None => format!("no pipeline {pipeline:?}"),
        Some(sinks) => match &q.output {
            Some(o) if !sinks.contains(o) => {
                format!("pipeline {pipeline:?} has no websocket sink {o:?}")
            }
            None if sinks.is_empty() => format!("pipeline {pipeline:?} has no websocket sink"),
            _ => "the websocket sink runs on process 0 of the cluster: subscribe there".into(),
        },
    }
}

fn samples_json(samples: &[Sample]) -> String {
    let mut out = Vec::with_capacity(samples.len() * 96 + 2);
    out.push(b'[');
    for (i, s) in samples.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = encode_json(s, &mut out);
        if out.last() == Some(&b'\n') {
            out.pop();
        }
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Sends a message; false if the connection is gone, or if the client has
/// not taken it within [`SILENT_FOR`] (it stopped reading: its queue has
/// filled and been dealt with meanwhile, but the socket would stay open).
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SILENT_FOR, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// The closing handshake: sends a close frame with the reason, then reads
/// (and drops) what the client still sends until its close frame, for at
/// most 10 s. Dropping the connection at once would make the kernel answer
/// the client's next frame (a pong, say) with a reset, and the client could
/// lose the close frame, and its reason, still in its buffer.
async fn close(mut socket: WebSocket, code: u16, reason: String) {
    let handshake = async {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), handshake).await;
}

async fn serve(
    mut socket: WebSocket,
    output: &LiveOutput,
    sub: &Subscription,
    snapshot: Vec<Sample>,
    pipeline: &str,
    name: &str,
) {
    let first = format!(
        "{{\"type\":\"snapshot\",\"pipeline\":{},\"output\":{},\"watermark\":{},\"samples\":{}}}",
        json!(pipeline),
        json!(name),
        output.watermark(),
        samples_json(&snapshot)
    );
    if !send(&mut socket, text(first)).await {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut heard = Instant::now();
    let mut reported = (output.watermark(), output.published());
    loop {
        tokio::select! {
            delivery = sub.next() => {
                if let Some(reason) = delivery.closed {
                    close(socket, axum::extract::ws::close_code::POLICY, reason).await;
                    return;
                }
                let mut message = format!(
                    "{{\"type\":\"samples\",\"watermark\":{},\"samples\":{}",
                    output.watermark(),
                    samples_json(&delivery.samples)
                );
                if delivery.skipped > 0 {
                    message.push_str(&format!(",\"skipped\":{}", delivery.skipped));
                }
                message.push('}');
                if !send(&mut socket, text(message)).await {
                    return;
                }
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() > SILENT_FOR {
                    close(socket, axum::extract::ws::close_code::AWAY, "no pong".into()).await;
                    return;
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
            _ = progress.tick() => {
                let now = (output.watermark(), output.published());
                if now != reported {
                    reported = now;
                    let message = format!(
                        "{{\"type\":\"progress\",\"watermark\":{},\"published\":{}}}",
                        now.0, now.1
                    );
                    if !send(&mut socket, text(message)).await {
                        return;
                    }
                }
            }
        }
    }
}

/// The HTTP listener of `tidemark run` for a pipeline with `websocket`
/// sinks: the dashboard, `/api/v1/live` and `/ws`, behind the same
/// [`gate`](crate::gate) as `tidemark serve`'s, with a token made for this
/// run: the dashboard's address, with the token, is logged (`Dashboard:
/// http://127.0.0.1:8080/?token=...`). It stops when what it returns is
/// dropped. This is the run's [`tidemark_pipelines::run::ServeLive`].
pub fn serve_dashboard(
    addr: std::net::SocketAddr,
    hub: Arc<LiveHub>,
) -> anyhow::Result<Box<dyn Send>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tidemark-http")
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot serve the dashboard on {addr}: {e} (choose another address with --http, e.g. --http 127.0.0.1:0)"
            )
        })?;
    let bound = listener.local_addr()?;
    let token = crate::auth::random_token()?;
    tracing::info!(http = %bound, "Listening.");
    tracing::info!("Dashboard: http://{bound}/?token={token}");
    let gate = Arc::new(crate::gate::Gate::new(
        crate::auth::Auth::single(token),
        Vec::new(),
    ));
    let app = router(LiveState { hub, control: None }).layer(axum::middleware::from_fn_with_state(
        gate,
        crate::gate::check,
    ));
    // The same connection limits as `tidemark serve`'s listener: a head
    // within the header timeout.
    let mut server = {
        let _entered = runtime.enter();
        axum_server::from_tcp(listener)?
    };
    crate::configure_http(server.http_builder(), crate::conn::DEFAULT_HEADER_TIMEOUT);
    runtime.spawn(async move {
        if let Err(error) = server.serve(app.into_make_service()).await {
            tracing::warn!(%error, "The dashboard listener stopped.");
        }
    });
    Ok(Box::new(RunListener(Some(runtime))))
}

/// Keeps the dashboard's runtime until the run ends.
struct RunListener(Option<tokio::runtime::Runtime>);

impl Drop for RunListener {
    fn drop(&mut self) {
        // Open subscriptions end with the process; do not wait for them.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
