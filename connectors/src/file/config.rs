//! Configuration of the `file` source and sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use tidemark_engine::component::ConfigError;
use tidemark_engine::spec::{Resource, ResourceKind, WriteMode};
use tidemark_engine::time::parse_duration;

/// `type: file` as a source.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// File to read, one JSON sample per line; `-` reads standard input.
    pub path: String,
    /// How far behind the largest timestamp seen a sample may be and still
    /// count as on time: the watermark is `max seen - max_out_of_orderness`.
    /// Default `0s`.
    #[serde(default = "zero")]
    pub max_out_of_orderness: String,
    /// After this long without new lines (standard input, a pipe), the
    /// source stops holding the watermark back: it advances to the largest
    /// watermark of the pipeline's other sources, and samples it reads later
    /// may be late. Default: never idle.
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

/// `type: file` as a sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File to write (created with its directories); `-` writes standard
    /// output.
    pub path: String,
    /// `true` appends to the file instead of truncating it when the run
    /// starts: for pipelines that resume (a `kafka` source), so a restart
    /// keeps what the earlier run wrote. `false` replaces an existing file.
    /// Unset, the file is replaced under `tidemark run`; `tidemark serve`
    /// refuses a pipeline that would replace an existing file unless it says
    /// `append: false` and the server's `access.replace_dirs` allows it.
    #[serde(default)]
    pub append: Option<bool>,
}

impl FileSinkConfig {
    /// The file it writes, and how.
    pub fn touches(&self) -> Vec<Resource> {
        if self.path == "-" {
            return Vec::new();
        }
        let mode = match self.append {
            None => WriteMode::Truncate,
            Some(true) => WriteMode::Append,
            Some(false) => WriteMode::Replace,
        };
        vec![Resource::new(
            "path",
            ResourceKind::WriteFile(PathBuf::from(&self.path), mode),
        )]
    }
}

impl FileSource {
    /// The file it reads.
    pub fn touches(&self) -> Vec<Resource> {
        self.path
            .iter()
            .map(|p| Resource::new("path", ResourceKind::ReadFile(p.clone())))
            .collect()
    }

    /// What its positions in checkpoints depend on: the file it reads
    /// (standard input has none: such a pipeline is not checkpointed).
    pub fn identity(&self) -> Option<String> {
        let path = self.path.as_ref()?;
        Some(format!("file {}", path.display()))
    }
}

fn zero() -> String {
    "0s".into()
}

/// A validated `file` source.
#[derive(Clone, Debug)]
pub struct FileSource {
    pub(crate) path: Option<PathBuf>,
    pub(crate) max_out_of_orderness: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

impl FileSourceConfig {
    /// Checks the fields without touching the file system.
    pub fn validate(&self) -> Result<FileSource, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.path.is_empty() {
            errors.push(ConfigError::field(
                "path",
                "path is empty (use \"-\" for standard input)",
            ));
        }
        let ooo = parse_duration(&self.max_out_of_orderness)
            .map_err(|e| errors.push(ConfigError::field("max_out_of_orderness", e.to_string())))
            .unwrap_or_default();
        let idle_timeout = match &self.idle_timeout {
            None => None,
            Some(text) => match parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    errors.push(ConfigError::field(
                        "idle_timeout",
                        "idle_timeout must be longer than 0",
                    ));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(ConfigError::field("idle_timeout", e.to_string()));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let path = (self.path != "-").then(|| PathBuf::from(&self.path));
        Ok(FileSource {
            path,
            max_out_of_orderness: ooo,
            idle_timeout,
        })
    }
}

impl FileSinkConfig {
    /// Checks the fields without touching the file system.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        if self.path.is_empty() {
            return Err(vec![ConfigError::field(
                "path",
                "path is empty (use \"-\" for standard output)",
            )]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses() {
        let c: FileSourceConfig =
            serde_json::from_str(r#"{"path": "in.jsonl", "max_out_of_orderness": "5s"}"#).unwrap();
        assert_eq!(
            c.validate().unwrap().max_out_of_orderness,
            Duration::from_secs(5)
        );
        let bad: FileSourceConfig =
            serde_json::from_str(r#"{"path": "", "max_out_of_orderness": "5"}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().len(), 2);
        assert!(
            serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "format": "csv"}"#).is_err()
        );
    }
}
