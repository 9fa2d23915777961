//! `tidemark.yaml`, the server's configuration file (`--config`). Every
//! field can also be given as a flag or an environment variable; a flag or
//! variable wins over the file, and the file over the defaults. See
//! `docs/configuration.md`.

use std::path::PathBuf;

use serde::Deserialize;

use tidemark_pipelines::compile::Diagnostic;
use tidemark_pipelines::yaml::{self, Pos};

/// The configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP listen address (control API, /metrics, /healthz). Default
    /// `0.0.0.0:8080` with a token file, `127.0.0.1:8080` without.
    pub http: Option<std::net::SocketAddr>,
    /// gRPC listen address (control service, ingest, OTLP). Default
    /// `0.0.0.0:4317` with a token file, `127.0.0.1:4317` without.
    pub grpc: Option<std::net::SocketAddr>,
    /// Listen beyond loopback without a token file. Default false.
    pub allow_unauthenticated: Option<bool>,
    /// Origins (`https://grafana.example.com`) whose pages may call the
    /// server, beside its own.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// What pipelines applied over the API may touch.
    #[serde(default)]
    pub access: tidemark_pipelines::access::Access,
    /// Quotas per tenant.
    #[serde(default)]
    pub quotas: crate::quota::QuotaConfig,
    /// Worker threads in this process. Default 1.
    pub workers: Option<usize>,
    /// Cluster host file (one `host:port` a line); with `process`.
    pub hostfile: Option<PathBuf>,
    /// This process's index in the host file.
    pub process: Option<usize>,
    /// Apply every `*.yaml` in this directory at start.
    pub pipelines: Option<PathBuf>,
    /// Keep the applied pipelines, silences and the write-ahead log of
    /// network ingest here; apply and replay them at start.
    pub data_dir: Option<PathBuf>,
    /// When the write-ahead log syncs: `always`, an interval, or `never`.
    /// Default `always`.
    pub wal_fsync: Option<String>,
    /// The most the write-ahead log may hold, in MiB. Default 2048.
    pub wal_max_mb: Option<u64>,
    /// Time between checkpoints of operator state, or `off`. Default 10s.
    pub checkpoint_interval: Option<String>,
    /// Where checkpoints are kept: `s3://bucket/prefix` or a directory.
    /// Default `data_dir/checkpoints`.
    pub checkpoint_store: Option<String>,
    /// File of bearer tokens required by the control API.
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for both listeners; with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require a token for `/metrics` too. Default true with a token file.
    pub protect_metrics: Option<bool>,
    /// How long a graceful stop may take, such as `30s`. Default `30s`.
    pub shutdown_timeout: Option<String>,
    /// Records each source instance may have in flight. Default 1048576.
    pub max_in_flight: Option<u64>,
    /// Threads serving HTTP and gRPC (and decoding ingest). Default 2.
    pub io_threads: Option<usize>,
    /// Limits on samples received over the network.
    #[serde(default)]
    pub limits: EdgeLimits,
}

/// `limits:` in the configuration file: what a received sample may be.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeLimits {
    /// Most labels a series may have. Default 40.
    pub max_labels: Option<usize>,
    /// Longest metric or label name, in bytes. Default 256.
    pub max_label_name_length: Option<usize>,
    /// Longest label value, in bytes. Default 4096.
    pub max_label_value_length: Option<usize>,
    /// How far ahead of the server's clock a timestamp may be: a duration or
    /// `off`. Default `10m`.
    pub max_future: Option<String>,
    /// How far behind the server's clock a timestamp may be: a duration or
    /// `off`. Default `off`.
    pub max_age: Option<String>,
    /// Memory, in MiB, that remote-write requests being decoded may hold
    /// together; a request waits up to 5 s for room, then is answered 503.
    /// Default 256.
    pub max_decode_mb: Option<u64>,
    /// Connections both listeners may hold open together; more wait.
    /// Default 10000.
    pub max_connections: Option<usize>,
    /// How long an HTTP client may take to send a request's headers, and
    /// how long a keep-alive connection may stay idle, such as `30s`.
    /// Default `30s`.
    pub header_timeout: Option<String>,
}

/// Parses a time bound: a duration such as `10m`, or `off` for no limit.
pub fn parse_bound(text: &str) -> Result<Option<i64>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    tidemark_engine::time::parse_duration(text)
        .map(|d| Some(d.as_millis().min(i64::MAX as u128) as i64))
        .map_err(|e| format!("{e} (or `off`)"))
}

impl EdgeLimits {
    /// The label limits, with defaults for what is not set.
    pub fn labels(&self) -> tidemark_engine::validate::Limits {
        let d = tidemark_engine::validate::Limits::default();
        tidemark_engine::validate::Limits {
            max_labels: self.max_labels.unwrap_or(d.max_labels),
            max_label_name_length: self
                .max_label_name_length
                .unwrap_or(d.max_label_name_length),
            max_label_value_length: self
                .max_label_value_length
                .unwrap_or(d.max_label_value_length),
        }
    }
}

impl ServerConfig {
    /// Reads and checks a configuration file; errors are located.
    pub fn load(path: &std::path::Path) -> Result<ServerConfig, Vec<Diagnostic>> {
        let file = path.display().to_string();
        let located = |pos: Pos, message: String| {
            vec![Diagnostic {
                file: file.clone(),
                pos,
                component: None,
                message,
                kind: tidemark_pipelines::DiagnosticKind::Config,
            }]
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| located(Pos { line: 1, column: 1 }, format!("cannot read: {e}")))?;
        let node = yaml::parse(&text)
            .map_err(|e| located(e.pos, format!("invalid YAML: {}", e.message)))?;
        let config: ServerConfig = tidemark_pipelines::compile::typed(&node, node.to_json())
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(pos, m)| located(pos, m))
                    .collect::<Vec<_>>()
            })?;
        if let Some(t) = &config.shutdown_timeout
            && let Err(e) = tidemark_engine::time::parse_duration(t)
        {
            let pos = node.locate(&["shutdown_timeout".to_owned()], false);
            return Err(located(pos, e.to_string()));
        }
        if let Some(t) = &config.limits.header_timeout
            && let Err(e) = tidemark_engine::time::parse_duration(t)
        {
            let pos = node.locate(&["limits".to_owned(), "header_timeout".to_owned()], false);
            return Err(located(pos, e.to_string()));
        }
        if let Err(e) = config.access.validate() {
            let pos = node.locate(&["access".to_owned(), "hosts".to_owned()], false);
            return Err(located(pos, e));
        }
        for (key, value) in [
            ("max_future", &config.limits.max_future),
            ("max_age", &config.limits.max_age),
        ] {
            if let Some(text) = value
                && let Err(e) = parse_bound(text)
            {
                let pos = node.locate(&["limits".to_owned(), key.to_owned()], false);
                return Err(located(pos, e));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_and_errors_are_located() {
        let dir = std::env::temp_dir().join(format!("tidemark-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("tidemark.yaml");
        std::fs::write(&good, "http: 127.0.0.1:9000\nworkers: 2\npipelines: /etc/tidemark/pipelines\nshutdown_timeout: 10s\n").unwrap();
        let c = ServerConfig::load(&good).unwrap();
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.http, Some("127.0.0.1:9000".parse().unwrap()));
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "http: 127.0.0.1:9000\nworkerz: 2\n").unwrap();
        let e = ServerConfig::load(&bad).unwrap_err();
        assert_eq!((e[0].pos.line, e[0].pos.column), (2, 1));
        assert!(e[0].message.contains("unknown field `workerz`"));
        let limits = dir.join("limits.yaml");
        std::fs::write(&limits, "limits:\n  max_labels: 10\n  max_age: 1h\n").unwrap();
        let c = ServerConfig::load(&limits).unwrap();
        assert_eq!(c.limits.labels().max_labels, 10);
        assert_eq!(
            parse_bound(c.limits.max_age.as_deref().unwrap()),
            Ok(Some(3_600_000))
        );
        assert_eq!(parse_bound("off"), Ok(None));
        std::fs::write(&limits, "limits:\n  max_future: soon\n").unwrap();
        let e = ServerConfig::load(&limits).unwrap_err();
        assert_eq!((e[0].pos.line, e[0].pos.column), (2, 15), "{e:?}");
    }
}
