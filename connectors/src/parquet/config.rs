//! Configuration of the `parquet` sink.

use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::{Time, parse_duration};

/// The `parquet` sink: an archive of Parquet files in hive-style partitions
/// (`pipeline=/output=/date=/hour=`), for DuckDB, Spark or Athena.
///
/// ```yaml
/// type: parquet
/// inputs: [cpu_1m]
/// path: s3://metrics-archive/tidemark
/// endpoint: http://127.0.0.1:9000
/// region: us-east-1
/// promote: [host, region]
/// roll_interval: 5m
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Where the archive lives: `s3://bucket/prefix` (any S3-compatible
    /// store), a local directory (`/data/archive` or `file:///data/archive`),
    /// or `memory://` (kept in the process, gone when it stops: for
    /// benchmarks).
    pub path: String,
    /// S3 endpoint URL, for stores other than AWS (`http://` is allowed);
    /// default `AWS_ENDPOINT_URL`, else AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; default `AWS_REGION` (or `AWS_DEFAULT_REGION`), else
    /// `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// S3 access key id; default `AWS_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Environment variable holding the S3 secret access key (read when the
    /// sink starts); default `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Labels that also get a column of their own (string, null where a
    /// series lacks the label), for fast filters and statistics. Every
    /// label stays in the `labels` map column too.
    #[serde(default)]
    pub promote: Vec<String>,
    /// Files close, and their output becomes durable, every this much of
    /// event time (the watermark): `5m` closes the files holding
    /// 12:00-12:05 once the watermark passes 12:05.
    #[serde(default = "default_roll_interval")]
    pub roll_interval: String,
    /// A file closes early, and the next one starts, once it holds this many
    /// MiB (compressed). A file is built in memory before it is uploaded.
    #[serde(default = "default_max_file_mb")]
    pub max_file_mb: u64,
    /// Rows per row group (sorted by series and time within it).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// zstd compression level, 1 (fastest) to 22.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

fn default_roll_interval() -> String {
    "5m".into()
}
fn default_max_file_mb() -> u64 {
    128
}
fn default_row_group_rows() -> usize {
    262_144
}
fn default_zstd_level() -> i32 {
    3
}

/// Where the files go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An S3 bucket and a prefix inside it (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix; may be empty.
        prefix: String,
    },
    /// A local directory.
    Local(std::path::PathBuf),
    /// In the process's memory.
    Memory,
}

/// Columns every file has; promoted labels may not take these names, nor
/// those of the partition directories.
pub const RESERVED: [&str; 9] = [
    "time",
    "series_id",
    "metric",
    "labels",
    "value",
    "pipeline",
    "output",
    "date",
    "hour",
];

/// Where an archive is and how to reach it: what the `parquet` sink writes
/// and the `parquet` source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreAt {
    pub(crate) location: Location,
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key_env: Option<String>,
}

impl StoreAt {
    /// Checks the fields an archive's location is given by, adding what is
    /// wrong to `errors`.
    pub(crate) fn validate(
        path: &str,
        endpoint: &Option<String>,
        region: &Option<String>,
        access_key_id: &Option<String>,
        secret_access_key_env: &Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> StoreAt {
        let location = location(path).unwrap_or_else(|e| {
            errors.push(ConfigError::field("path", e));
            Location::Memory
        });
        let s3 = matches!(location, Location::S3 { .. });
        for (field, set) in [
            ("endpoint", endpoint.is_some()),
            ("region", region.is_some()),
            ("access_key_id", access_key_id.is_some()),
            ("secret_access_key_env", secret_access_key_env.is_some()),
        ] {
            if set && !s3 {
                errors.push(ConfigError::field(
                    field,
                    format!("{field} applies only to an s3:// path"),
                ));
            }
        }
        if let Some(e) = endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(ConfigError::field(
                "endpoint",
                "endpoint must be an http:// or https:// URL",
            ));
        }
        if secret_access_key_env.as_deref() == Some("") {
            errors.push(ConfigError::field(
                "secret_access_key_env",
                "secret_access_key_env is empty",
            ));
        }
        StoreAt {
            location,
            endpoint: endpoint.clone(),
            region: region.clone(),
            access_key_id: access_key_id.clone(),
            secret_access_key_env: secret_access_key_env.clone(),
        }
    }

    /// The directory (used as `local`: read or written), or the S3
    /// endpoint it connects to (AWS's own when none is given), and the
    /// secret key's variable.
    pub(crate) fn touches(
        &self,
        local: impl FnOnce(std::path::PathBuf) -> tidemark_engine::spec::ResourceKind,
    ) -> Vec<tidemark_engine::spec::Resource> {
        use tidemark_engine::spec::{Resource, ResourceKind};
        let mut out = Vec::new();
        match &self.location {
            Location::Local(dir) => out.push(Resource::new("path", local(dir.clone()))),
            Location::S3 { .. } => match &self.endpoint {
                Some(endpoint) => out.push(crate::touches::url("endpoint", endpoint, 443)),
                None => {
                    let host = match &self.region {
                        Some(region) => format!("s3.{region}.amazonaws.com"),
                        None => "s3.amazonaws.com".to_owned(),
                    };
                    out.push(Resource::new(
                        "path",
                        ResourceKind::Connect { host, port: 443 },
                    ));
                }
            },
            Location::Memory => {}
        }
        if let Some(name) = &self.secret_access_key_env {
            out.push(Resource::new(
                "secret_access_key_env",
                ResourceKind::Env(name.clone()),
            ));
        }
        out
    }
}

/// A validated `parquet` sink.
#[derive(Clone, Debug)]
pub struct ParquetSink {
    pub(crate) store: StoreAt,
    pub(crate) promote: Vec<String>,
    pub(crate) roll: Time,
    pub(crate) max_file_bytes: usize,
    pub(crate) row_group_rows: usize,
    pub(crate) zstd_level: i32,
}

impl ParquetSink {
    /// How long (in timely time) the sink holds output before it is
    /// durable: flow control lets sources run this far ahead of it.
    pub fn holdback(&self) -> Time {
        self.roll
    }
}

fn location(path: &str) -> Result<Location, String> {
    if let Some(rest) = path.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("s3:// needs a bucket: s3://bucket/prefix".into());
        }
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    if path == "memory://" || path.starts_with("memory://") {
        return Ok(Location::Memory);
    }
    let local = path.strip_prefix("file://").unwrap_or(path);
    if local.is_empty() {
        return Err("path is empty".into());
    }
    if local.contains("://") {
        return Err(format!(
            "unsupported scheme in {path:?}: use s3://, file://, memory:// or a directory"
        ));
    }
    Ok(Location::Local(local.into()))
}

fn label_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ParquetSinkConfig {
    /// Checks the fields without touching the store.
    pub fn validate(&self) -> Result<ParquetSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let store = StoreAt::validate(
            &self.path,
            &self.endpoint,
            &self.region,
            &self.access_key_id,
            &self.secret_access_key_env,
            &mut errors,
        );
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.promote {
            if !label_name_ok(name) {
                errors.push(ConfigError::field(
                    "promote",
                    format!("{name:?} is not a label name"),
                ));
            } else if RESERVED.contains(&name.as_str()) {
                errors.push(ConfigError::field(
                    "promote",
                    format!("{name:?} is already a column or partition of every file"),
                ));
            } else if !seen.insert(name) {
                errors.push(ConfigError::field(
                    "promote",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        let roll = match parse_duration(&self.roll_interval) {
            Ok(d) if d < Duration::from_secs(1) => {
                errors.push(ConfigError::field(
                    "roll_interval",
                    "roll_interval must be at least 1s",
                ));
                0
            }
            Ok(d) => d.as_millis() as Time,
            Err(e) => {
                errors.push(ConfigError::field("roll_interval", e.to_string()));
                0
            }
        };
        if !(1..=4096).contains(&self.max_file_mb) {
            errors.push(ConfigError::field(
                "max_file_mb",
                "max_file_mb must be between 1 and 4096",
            ));
        }
        if !(1..=10_000_000).contains(&self.row_group_rows) {
            errors.push(ConfigError::field(
                "row_group_rows",
                "row_group_rows must be between 1 and 10000000",
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            errors.push(ConfigError::field(
                "zstd_level",
                "zstd_level must be between 1 and 22",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ParquetSink {
            store,
            promote: self.promote.clone(),
            roll,
            max_file_bytes: (self.max_file_mb as usize) << 20,
            row_group_rows: self.row_group_rows,
            zstd_level: self.zstd_level,
        })
    }
}

impl ParquetSink {
    /// The directory it writes, or the S3 endpoint it connects to, and the
    /// secret key's variable.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        use tidemark_engine::spec::{ResourceKind, WriteMode};
        self.store
            .touches(|dir| ResourceKind::WriteFile(dir, WriteMode::NewFiles))
    }
}

/// The `parquet` source: replays what a `parquet` sink archived, in event
/// time order, for backtests (`tidemark backtest`) and reprocessing.
///
/// ```yaml
/// type: parquet
/// path: s3://metrics-archive/tidemark
/// pipeline: ingest
/// output: raw
/// from: 2026-11-24T00:00:00Z
/// to: 2026-11-25T00:00:00Z
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// The archive, as the sink's `path`: `s3://bucket/prefix` or a local
    /// directory (`/data/archive`, `file:///data/archive`).
    pub path: String,
    /// The pipeline that wrote it (its `pipeline=` partition).
    pub pipeline: String,
    /// The sink that wrote it (its `output=` partition).
    pub output: String,
    /// The first event time read (RFC 3339, or milliseconds since the
    /// epoch); default the archive's start.
    #[serde(default)]
    pub from: Option<TimeBound>,
    /// The event time reading stops before (exclusive); default the
    /// archive's end.
    #[serde(default)]
    pub to: Option<TimeBound>,
    /// S3 endpoint URL, as the sink's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region, as the sink's.
    #[serde(default)]
    pub region: Option<String>,
    /// S3 access key id, as the sink's.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Environment variable holding the S3 secret access key, as the sink's.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
}

/// An event time in a config: RFC 3339 text or milliseconds since the epoch.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TimeBound {
    /// Milliseconds since the epoch.
    Millis(i64),
    /// RFC 3339 (`2026-11-24T00:00:00Z`).
    Text(String),
}

impl TimeBound {
    /// A replay source's `[from, to)` (unbounded where not given); what
    /// is wrong goes to `errors`, under the field's name.
    pub fn range(
        from: &Option<TimeBound>,
        to: &Option<TimeBound>,
        errors: &mut Vec<ConfigError>,
    ) -> (i64, i64) {
        let mut bound = |field: &str, value: &Option<TimeBound>, default: i64| match value {
            None => default,
            Some(b) => b.millis().unwrap_or_else(|e| {
                errors.push(ConfigError::field(field, e));
                default
            }),
        };
        let (from, to) = (bound("from", from, i64::MIN), bound("to", to, i64::MAX));
        if from >= to {
            errors.push(ConfigError::field(
                "to",
                "to must be after from (the range is [from, to))",
            ));
        }
        (from, to)
    }

    /// Milliseconds since the epoch.
    pub fn millis(&self) -> Result<i64, String> {
        match self {
            TimeBound::Millis(ms) => Ok(*ms),
            TimeBound::Text(text) => text
                .trim()
                .parse::<i64>()
                .or_else(|_| tidemark_engine::time::parse_rfc3339(text.trim())),
        }
    }
}

/// A validated `parquet` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetSource {
    pub(crate) store: StoreAt,
    pub(crate) pipeline: String,
    pub(crate) output: String,
    /// Event times `[from, to)` are read.
    pub(crate) from: i64,
    pub(crate) to: i64,
}

/// A name that can be a hive partition value as the sink writes it.
fn partition_value_ok(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '='])
}

impl ParquetSourceConfig {
    /// Checks the fields without touching the store.
    pub fn validate(&self) -> Result<ParquetSource, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let store = StoreAt::validate(
            &self.path,
            &self.endpoint,
            &self.region,
            &self.access_key_id,
            &self.secret_access_key_env,
            &mut errors,
        );
        if store.location == Location::Memory {
            errors.push(ConfigError::field(
                "path",
                "a memory:// archive lives only in the process that wrote it and cannot be read back",
            ));
        }
        for (field, value) in [("pipeline", &self.pipeline), ("output", &self.output)] {
            if !partition_value_ok(value) {
                errors.push(ConfigError::field(
                    field,
                    format!("{field} must be the name of a pipeline or sink (not empty, no `/` or `=`), got {value:?}"),
                ));
            }
        }
        let (from, to) = TimeBound::range(&self.from, &self.to, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ParquetSource {
            store,
            pipeline: self.pipeline.clone(),
            output: self.output.clone(),
            from,
            to,
        })
    }
}

impl ParquetSource {
    /// The directory it reads, or the S3 endpoint it connects to, and the
    /// secret key's variable.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        self.store
            .touches(tidemark_engine::spec::ResourceKind::ReadFile)
    }

    /// What its positions in checkpoints (event times: see
    /// `crate::replay`) depend on: the archive, not the range, so a
    /// restored replay with a changed `from` or `to` reads on.
    pub fn identity(&self) -> String {
        format!(
            "parquet {:?} pipeline={} output={}",
            self.store.location, self.pipeline, self.output
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_validates() {
        let c: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "path": "s3://metrics-archive/tidemark",
            "endpoint": "http://127.0.0.1:9000",
            "region": "us-east-1",
            "promote": ["host", "region"],
            "roll_interval": "5m"
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(
            v.store.location,
            Location::S3 {
                bucket: "metrics-archive".into(),
                prefix: "tidemark".into()
            }
        );
        assert_eq!(v.roll, 300_000);
        assert_eq!(v.max_file_bytes, 128 << 20);
    }

    #[test]
    fn paths() {
        assert_eq!(location("/data/a"), Ok(Location::Local("/data/a".into())));
        assert_eq!(
            location("file:///data/a"),
            Ok(Location::Local("/data/a".into()))
        );
        assert_eq!(location("memory://"), Ok(Location::Memory));
        assert_eq!(
            location("s3://b"),
            Ok(Location::S3 {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert!(location("s3:///x").is_err());
        assert!(location("gs://b/x").is_err());
    }

    #[test]
    fn every_error_at_once() {
        let c: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "path": "/tmp/archive",
            "endpoint": "http://127.0.0.1:9000",
            "promote": ["host", "value", "1x", "host"],
            "roll_interval": "10ms",
            "max_file_mb": 0,
            "row_group_rows": 0,
            "zstd_level": 30
        }))
        .unwrap();
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        assert_eq!(
            fields,
            [
                "endpoint",
                "promote",
                "promote",
                "promote",
                "roll_interval",
                "max_file_mb",
                "row_group_rows",
                "zstd_level"
            ]
        );
    }

    #[test]
    fn a_replay_source_checks_its_range_and_names() {
        let c: ParquetSourceConfig = serde_json::from_value(serde_json::json!({
            "path": "s3://metrics-archive/tidemark",
            "pipeline": "ingest",
            "output": "raw",
            "from": "2026-11-24T00:00:00Z",
            "to": 1_795_564_800_000i64
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!((v.from, v.to), (1_795_478_400_000, 1_795_564_800_000));
        let open: ParquetSourceConfig = serde_json::from_value(serde_json::json!({
            "path": "/data/archive", "pipeline": "p", "output": "o"
        }))
        .unwrap();
        assert_eq!(open.validate().unwrap().from, i64::MIN);
        let bad: ParquetSourceConfig = serde_json::from_value(serde_json::json!({
            "path": "memory://",
            "pipeline": "a/b",
            "output": "",
            "from": "yesterday",
            "to": 0,
            "region": "eu-west-1"
        }))
        .unwrap();
        let fields: Vec<String> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        assert_eq!(fields, ["region", "path", "pipeline", "output", "from"]);
        let backwards = ParquetSourceConfig {
            from: Some(TimeBound::Millis(5)),
            to: Some(TimeBound::Millis(5)),
            ..open
        };
        let errors = backwards.validate().unwrap_err();
        assert_eq!(errors[0].field, ["to"]);
    }
}
