//! WebSocket: the `websocket` sink, which publishes a pipeline's output to
//! subscribers of the server's `/ws` endpoint (dashboards): a snapshot of
//! the latest values, then every new value. The sink gathers its input on
//! worker 0 and hands it to the process's
//! [`LiveHub`](tidemark_engine::live::LiveHub); the server side lives in
//! `tidemark-server` (`server/src/live.rs`). Best effort: nothing is held
//! for a subscriber, and a slow one is handled by the sink's `slow_client`
//! policy. See `docs/sinks/websocket.md`.

mod config;
mod sink;

pub use config::{WebsocketSink, WebsocketSinkConfig};

// Serves `/ws`; holds nothing back (best effort).
samples_sink!(WebsocketSinkConfig => WebsocketSink, holdback: |_| 0, serves_live: true, touches: |s| vec![tidemark_engine::spec::Resource::new("queue", tidemark_engine::spec::ResourceKind::Queue(s.queue))]);
