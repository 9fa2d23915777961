//! Configuration of the `timescaledb` sink.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::parse_duration;

use crate::parquet::TimeBound;

/// Whether to use the TimescaleDB extension.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Extension {
    /// Use TimescaleDB where it is installed or can be created; otherwise
    /// fall back to PostgreSQL's native range partitioning (logged).
    #[default]
    Auto,
    /// Fail (and keep retrying, holding input) unless TimescaleDB is there.
    Required,
    /// Plain PostgreSQL partitioning even where TimescaleDB is installed.
    Disabled,
}

/// How rows are sent to the server.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Binary `COPY` into a temporary table, then one upsert from it.
    #[default]
    Copy,
    /// One `INSERT ... SELECT FROM unnest(...)` upsert per batch, with the
    /// columns as binary array parameters (for servers without `COPY FROM
    /// STDIN`, such as PGlite).
    Insert,
}

/// The `timescaledb` sink: samples into a TimescaleDB hypertable (or a
/// natively partitioned PostgreSQL table), upserted by series and time.
///
/// ```yaml
/// type: timescaledb
/// inputs: [cpu_1m]
/// url: postgresql://tidemark@db.internal:5432/metrics
/// password_env: TIDEMARK_DB_PASSWORD
/// chunk_interval: 1d
/// compress_after: 7d
/// retention: 90d
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimescaleSinkConfig {
    /// Connection string, as libpq takes it: a URL
    /// (`postgresql://user@host:5432/db`) or `key=value` pairs.
    pub url: String,
    /// Environment variable holding the password (read when the sink
    /// starts), so that it stays out of the pipeline file.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificate(s) (PEM) to verify the server with: TLS is then
    /// required and the server's certificate and host name are checked.
    /// Without it, TLS follows the URL's `sslmode` as libpq's `prefer` and
    /// `require` do: encrypted where offered (or required), not verified.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Schema of the tables (created if missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The samples table: `(time, series_id, value)`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The series table: `(series_id, metric, labels)`; shared by every
    /// pipeline writing to the schema (series ids are global).
    #[serde(default = "default_series_table")]
    pub series_table: String,
    /// `auto`, `required` or `disabled`.
    #[serde(default)]
    pub timescaledb: Extension,
    /// Time range of one hypertable chunk (or native partition).
    #[serde(default = "default_chunk_interval")]
    pub chunk_interval: String,
    /// Compress chunks older than this (TimescaleDB only, segmented by
    /// series); `off` leaves chunks uncompressed.
    #[serde(default = "default_compress_after")]
    pub compress_after: String,
    /// Drop data older than this (TimescaleDB's retention policy; on plain
    /// PostgreSQL the sink drops whole partitions); `off` keeps everything.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Most samples per write.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `copy` (binary COPY, the default) or `insert`.
    #[serde(default)]
    pub method: Method,
}

fn default_schema() -> String {
    "public".into()
}
fn default_table() -> String {
    "tidemark_samples".into()
}
fn default_series_table() -> String {
    "tidemark_series".into()
}
fn default_chunk_interval() -> String {
    "1d".into()
}
fn default_compress_after() -> String {
    "7d".into()
}
fn default_retention() -> String {
    "off".into()
}
fn default_batch_size() -> usize {
    10_000
}

/// A validated `timescaledb` sink.
#[derive(Clone, Debug)]
pub struct TimescaleSink {
    pub(crate) url: String,
    pub(crate) password_env: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) series_table: String,
    pub(crate) extension: Extension,
    pub(crate) chunk_interval: Duration,
    pub(crate) compress_after: Option<Duration>,
    pub(crate) retention: Option<Duration>,
    pub(crate) batch_size: usize,
    pub(crate) method: Method,
}

/// PostgreSQL identifiers Tidemark creates: plain lowercase names, so they
/// need no quoting in the SQL users write (at most 40 bytes, leaving room
/// for the suffixes of partitions and indexes).
fn identifier(errors: &mut Vec<ConfigError>, field: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        errors.push(ConfigError::field(
            field,
            format!("{name:?} is not a plain identifier (lowercase letters, digits and _, at most 40 bytes)"),
        ));
    }
}

fn duration(errors: &mut Vec<ConfigError>, field: &str, text: &str, off: bool) -> Option<Duration> {
    if off && text == "off" {
        return None;
    }
    match parse_duration(text) {
        Ok(d) if d.as_secs() < 1 => {
            errors.push(ConfigError::field(
                field,
                format!("{field} must be at least 1s"),
            ));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(ConfigError::field(field, e.to_string()));
            None
        }
    }
}

impl TimescaleSinkConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<TimescaleSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            errors.push(ConfigError::field(
                "url",
                format!("not a connection string: {e}"),
            ));
        }
        identifier(&mut errors, "schema", &self.schema);
        identifier(&mut errors, "table", &self.table);
        identifier(&mut errors, "series_table", &self.series_table);
        if self.table == self.series_table {
            errors.push(ConfigError::field(
                "series_table",
                "series_table and table must differ",
            ));
        }
        if self.password_env.as_deref().is_some_and(str::is_empty) {
            errors.push(ConfigError::field("password_env", "password_env is empty"));
        }
        if self.ca_file.as_deref().is_some_and(str::is_empty) {
            errors.push(ConfigError::field("ca_file", "ca_file is empty"));
        }
        let chunk_interval = duration(&mut errors, "chunk_interval", &self.chunk_interval, false);
        let compress_after = duration(&mut errors, "compress_after", &self.compress_after, true);
        let retention = duration(&mut errors, "retention", &self.retention, true);
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            errors.push(ConfigError::field(
                "batch_size",
                "batch_size must be between 1 and 1000000",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(TimescaleSink {
            url: self.url.clone(),
            password_env: self.password_env.clone(),
            ca_file: self.ca_file.clone(),
            schema: self.schema.clone(),
            table: self.table.clone(),
            series_table: self.series_table.clone(),
            extension: self.timescaledb,
            chunk_interval: chunk_interval.unwrap_or(Duration::from_secs(86_400)),
            compress_after,
            retention,
            batch_size: self.batch_size,
            method: self.method,
        })
    }
}

impl TimescaleSink {
    /// The database hosts it connects to, the password variable and the CA
    /// file it reads.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        use tidemark_engine::spec::{Resource, ResourceKind};
        let mut out = Vec::new();
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(config) => {
                let ports = config.get_ports();
                for (i, host) in config.get_hosts().iter().enumerate() {
                    let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                    let host = match host {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(path) => {
                            format!("unix:{}", path.display())
                        }
                    };
                    out.push(Resource::new("url", ResourceKind::Connect { host, port }));
                }
                if config.get_hosts().is_empty() {
                    // libpq's default: the local socket.
                    let host = "unix:/var/run/postgresql".to_owned();
                    out.push(Resource::new(
                        "url",
                        ResourceKind::Connect { host, port: 5432 },
                    ));
                }
            }
            Err(_) => out.push(crate::touches::url("url", &self.url, 5432)),
        }
        if let Some(name) = &self.password_env {
            out.push(Resource::new(
                "password_env",
                ResourceKind::Env(name.clone()),
            ));
        }
        if let Some(file) = &self.ca_file {
            out.push(Resource::new(
                "ca_file",
                ResourceKind::ReadFile(file.into()),
            ));
        }
        out
    }
}

/// The `timescaledb` source: replays what a `timescaledb` sink wrote, in
/// event-time order, for backtests (`tidemark backtest`) and reprocessing.
///
/// ```yaml
/// type: timescaledb
/// url: postgresql://tidemark@db.internal:5432/metrics
/// password_env: TIDEMARK_DB_PASSWORD
/// table: tidemark_samples
/// from: 2026-11-24T00:00:00Z
/// to: 2026-11-25T00:00:00Z
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimescaleSourceConfig {
    /// Connection string, as the sink's.
    pub url: String,
    /// Environment variable holding the password, as the sink's.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificate(s) (PEM) to verify the server with, as the sink's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Schema of the tables, as the sink's.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The samples table the sink wrote.
    #[serde(default = "default_table")]
    pub table: String,
    /// The series table the sink wrote.
    #[serde(default = "default_series_table")]
    pub series_table: String,
    /// The first event time read (RFC 3339, or milliseconds since the
    /// epoch); default the table's start.
    #[serde(default)]
    pub from: Option<TimeBound>,
    /// The event time reading stops before (exclusive); default the
    /// table's end.
    #[serde(default)]
    pub to: Option<TimeBound>,
    /// Rows read per query.
    #[serde(default = "default_page_rows")]
    pub page_rows: usize,
}

fn default_page_rows() -> usize {
    50_000
}

/// A validated `timescaledb` source.
#[derive(Clone, Debug)]
pub struct TimescaleSource {
    /// The tables, as the sink that wrote them names them (its connection
    /// settings; the rest is the sink's defaults, unused).
    pub(crate) tables: TimescaleSink,
    /// Event times `[from, to)` are read.
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) page_rows: usize,
}

impl TimescaleSourceConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<TimescaleSource, Vec<ConfigError>> {
        let tables = TimescaleSinkConfig {
            url: self.url.clone(),
            password_env: self.password_env.clone(),
            ca_file: self.ca_file.clone(),
            schema: self.schema.clone(),
            table: self.table.clone(),
            series_table: self.series_table.clone(),
            timescaledb: Extension::Auto,
            chunk_interval: default_chunk_interval(),
            compress_after: default_compress_after(),
            retention: default_retention(),
            batch_size: default_batch_size(),
            method: Method::Copy,
        }
        .validate();
        let mut errors = Vec::new();
        let tables = tables.map_err(|e| errors.extend(e)).ok();
        let (from, to) = TimeBound::range(&self.from, &self.to, &mut errors);
        if !(1..=1_000_000).contains(&self.page_rows) {
            errors.push(ConfigError::field(
                "page_rows",
                "page_rows must be between 1 and 1000000",
            ));
        }
        match tables {
            Some(tables) if errors.is_empty() => Ok(TimescaleSource {
                tables,
                from,
                to,
                page_rows: self.page_rows,
            }),
            _ => Err(errors),
        }
    }
}

/// Where a connection string points (`host:port/database`), without its
/// user or password, for logs and summaries.
pub fn location(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "(not a connection string)".into();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

impl TimescaleSource {
    /// The database hosts it connects to, the password variable and the CA
    /// file it reads.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        self.tables.touches()
    }

    /// What its positions in checkpoints (event times: see
    /// `crate::replay`) depend on: the tables, not the range. (Hashed
    /// before it is kept.)
    pub fn identity(&self) -> String {
        let t = &self.tables;
        format!(
            "timescaledb {} {}.{} {}",
            t.url, t.schema, t.table, t.series_table
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_validates() {
        let c: TimescaleSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "postgresql://tidemark@db.internal:5432/metrics",
            "password_env": "TIDEMARK_DB_PASSWORD",
            "chunk_interval": "1d",
            "compress_after": "7d",
            "retention": "90d"
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.chunk_interval, Duration::from_secs(86_400));
        assert_eq!(v.compress_after, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(v.retention, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(v.table, "tidemark_samples");
        assert_eq!(v.method, Method::Copy);
    }

    #[test]
    fn every_error_at_once() {
        let c: TimescaleSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "postgresql://x:notaport/",
            "table": "Samples",
            "series_table": "x-y",
            "chunk_interval": "0s",
            "retention": "soon",
            "compress_after": "off",
            "batch_size": 0
        }))
        .unwrap();
        let errors = c.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field[0].as_str()).collect();
        assert_eq!(
            fields,
            [
                "url",
                "table",
                "series_table",
                "chunk_interval",
                "retention",
                "batch_size"
            ]
        );
    }

    #[test]
    fn the_source_checks_what_the_sink_checks_and_its_range() {
        let c: TimescaleSourceConfig = serde_json::from_value(serde_json::json!({
            "url": "postgresql://tidemark@db.internal:5432/metrics",
            "table": "cpu_samples",
            "from": "2026-11-24T00:00:00Z",
            "to": 1_795_564_800_000i64
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.tables.table, "cpu_samples");
        assert_eq!(v.tables.series_table, "tidemark_series");
        assert_eq!((v.from, v.to), (1_795_478_400_000, 1_795_564_800_000));
        assert_eq!(v.page_rows, 50_000);
        let bad: TimescaleSourceConfig = serde_json::from_value(serde_json::json!({
            "url": "postgresql://x:notaport/",
            "table": "Samples",
            "from": "tomorrow",
            "to": 0,
            "page_rows": 0
        }))
        .unwrap();
        let errors = bad.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field[0].as_str()).collect();
        assert_eq!(fields, ["url", "table", "from", "page_rows"]);
    }
}
