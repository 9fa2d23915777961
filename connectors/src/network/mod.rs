//! The `grpc`, `otlp` and `remote_write` sources: a pipeline's share of what
//! the server's shared listeners receive (`engine::ingest`). Each selects
//! what it wants with an optional `match` selector; several pipelines may
//! read the same stream. They need `tidemark serve`.

mod config;
mod source;

pub use config::{NetworkSource, NetworkSourceConfig};
