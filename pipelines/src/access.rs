//! What a pipeline may touch on `tidemark serve`: the server's `access:`
//! configuration (never the pipeline's) says which directories `file`
//! sources and sinks may use, which hosts sources and sinks may connect
//! to, and which environment variables `*_env` fields may name. Every
//! source and sink declares what it touches ([`SourceSpec::touches`],
//! [`SinkSpec::touches`]); [`Access::check`] refuses a pipeline with one
//! located error for each thing not allowed, naming the setting that would
//! allow it. `tidemark run` checks nothing: it runs with its user's rights.
//!
//! [`SourceSpec::touches`]: tidemark_engine::spec::SourceSpec::touches
//! [`SinkSpec::touches`]: tidemark_engine::spec::SinkSpec::touches

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use tidemark_engine::spec::{Resource, ResourceKind, WriteMode};

use crate::compile::{Diagnostic, DiagnosticKind};
use crate::config::Section;
use crate::plan::Plan;
use crate::yaml;

/// `access:` in the server's configuration. Everything is refused by
/// default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Directories whose files `file` sources may read (and the Kafka and
    /// TimescaleDB clients' certificate files).
    #[serde(default)]
    pub read_dirs: Vec<PathBuf>,
    /// Directories in which `file` and `parquet` sinks may create files
    /// and append to them.
    #[serde(default)]
    pub write_dirs: Vec<PathBuf>,
    /// Directories (also in `write_dirs`) where a `file` sink that says
    /// `append: false` may replace a file that exists.
    #[serde(default)]
    pub replace_dirs: Vec<PathBuf>,
    /// Hosts sources and sinks may connect to: `host:port`, `host` (any
    /// port), `*.example.com`, an address or a network (`10.0.0.0/8`,
    /// `[fd00::/8]:9092`), or `*` for any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Environment variables that `*_env` fields may name.
    #[serde(default)]
    pub env: Vec<String>,
}

/// One entry of [`Access::hosts`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostRule {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    Suffix(String),
    Network(ipnet::IpNet),
    Name(String),
}

impl HostRule {
    fn parse(text: &str) -> Result<HostRule, String> {
        let bad = |why: &str| format!("access.hosts: {text:?}: {why}");
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            (host, after.strip_prefix(':'))
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address or network, without a port.
            (text, None)
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            None | Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| bad("the port is not a number"))?),
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
        } else if let Ok(net) = host.parse::<ipnet::IpNet>() {
            HostPattern::Network(net)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Network(ipnet::IpNet::from(ip))
        } else if host.is_empty() || host.contains(['/', '*', ' ']) {
            return Err(bad(
                "expected host[:port], *.domain, an address or a network",
            ));
        } else {
            HostPattern::Name(host.to_ascii_lowercase())
        };
        Ok(HostRule { host, port })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Network(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            HostPattern::Name(name) => *name == host,
        }
    }
}

impl Access {
    /// Checks the settings themselves (host rules parse).
    pub fn validate(&self) -> Result<(), String> {
        for h in &self.hosts {
            HostRule::parse(h)?;
        }
        Ok(())
    }

    /// Every source and sink of `plan` (compiled from `text`, read from
    /// `file`) against this policy and the largest queue and memory a
    /// component may ask for: one located error per thing not allowed.
    pub fn check(&self, file: &str, text: &str, plan: &Plan, bounds: Bounds) -> Vec<Diagnostic> {
        let hosts: Vec<HostRule> = self
            .hosts
            .iter()
            .filter_map(|h| HostRule::parse(h).ok())
            .collect();
        let touched = plan
            .sources
            .iter()
            .map(|(n, s, _)| (Section::Source, n, s.touches()))
            .chain(
                plan.transforms
                    .iter()
                    .map(|(n, t, _)| (Section::Transform, n, t.touches())),
            )
            .chain(
                plan.sinks
                    .iter()
                    .map(|(n, s, _)| (Section::Sink, n, s.touches())),
            );
        let mut refused = Vec::new();
        for (section, name, resources) in touched {
            for r in resources {
                if let Err(message) = self.allows(&r, &hosts, bounds) {
                    let mut path = vec![section.key().to_owned(), name.clone()];
                    path.extend(r.field.iter().cloned());
                    refused.push((section, name, path, message));
                }
            }
        }
        if refused.is_empty() {
            return Vec::new();
        }
        // The text is parsed again only to locate what was refused.
        let root = yaml::parse(text).ok();
        refused
            .into_iter()
            .map(|(section, name, path, message)| Diagnostic {
                file: file.to_owned(),
                pos: root
                    .as_ref()
                    .map_or(yaml::Pos { line: 1, column: 1 }, |n| n.locate(&path, false)),
                component: Some((section, name.clone())),
                message,
                kind: DiagnosticKind::Access,
            })
            .collect()
    }

    fn allows(&self, r: &Resource, hosts: &[HostRule], bounds: Bounds) -> Result<(), String> {
        let Bounds {
            max_queue,
            max_memory_mb,
        } = bounds;
        match &r.kind {
            ResourceKind::ReadFile(path) => {
                let real = resolve(path)?;
                if !within(&real, &self.read_dirs) {
                    return Err(format!(
                        "reads {}, outside the directories pipelines may read on this server (the server's access.read_dirs: {})",
                        path.display(),
                        list(&self.read_dirs)
                    ));
                }
                Ok(())
            }
            ResourceKind::WriteFile(path, mode) => {
                let real = resolve(path)?;
                if !within(&real, &self.write_dirs) {
                    return Err(format!(
                        "writes {}, outside the directories pipelines may write on this server (the server's access.write_dirs: {})",
                        path.display(),
                        list(&self.write_dirs)
                    ));
                }
                let exists = real.is_file();
                match mode {
                    WriteMode::Truncate if exists => Err(format!(
                        "{} exists and would be replaced: say `append: true` to add to it, or `append: false` to replace it (where the server's access.replace_dirs allows)",
                        path.display()
                    )),
                    WriteMode::Replace if exists && !within(&real, &self.replace_dirs) => {
                        Err(format!(
                            "{} exists and `append: false` would replace it, outside the directories where files may be replaced (the server's access.replace_dirs: {})",
                            path.display(),
                            list(&self.replace_dirs)
                        ))
                    }
                    _ if real.is_dir() && *mode != WriteMode::NewFiles => {
                        Err(format!("{} is a directory", path.display()))
                    }
                    _ => Ok(()),
                }
            }
            ResourceKind::Connect { host, port } => {
                if hosts.iter().any(|h| h.allows(host, *port)) {
                    return Ok(());
                }
                Err(format!(
                    "connects to {}, which the server's access.hosts does not allow (add \"{}\" to it)",
                    join_host(host, *port),
                    join_host(host, *port)
                ))
            }
            ResourceKind::Env(name) => {
                if self.env.iter().any(|e| e == name) {
                    return Ok(());
                }
                Err(format!(
                    "reads the environment variable {name}, which the server's access.env does not list"
                ))
            }
            ResourceKind::Exec(what) => Err(format!(
                "{what} runs a program or loads a library: not allowed on a server (run such a pipeline with `tidemark run`)"
            )),
            ResourceKind::Queue(n) => {
                if *n <= max_queue {
                    return Ok(());
                }
                Err(format!(
                    "a queue of {n} records is over the server's quota (quotas.max_queue: {max_queue})"
                ))
            }
            ResourceKind::Memory(mb) => {
                if *mb <= max_memory_mb {
                    return Ok(());
                }
                Err(format!(
                    "{mb} MiB of memory is over the server's quota (quotas.max_memory_mb: {max_memory_mb})"
                ))
            }
        }
    }
}

/// The largest sizes a component of a pipeline applied over the API may
/// ask for (the server's `quotas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Records in one queue (`queue:`).
    pub max_queue: usize,
    /// MiB one component may hold (a `memory` sink's `max_mb`).
    pub max_memory_mb: u64,
}

/// A pipeline's text with its secrets masked, for the API to show: values
/// of fields whose name says they hold a secret (`password`, `secret`,
/// `token`, `sasl.password`, ...) and passwords in URLs
/// (`postgres://user:PASSWORD@host`). Everything else is left as written.
pub fn redact(text: &str) -> String {
    let Ok(root) = yaml::parse(text) else {
        return text.to_owned();
    };
    let mut secrets = Vec::new();
    collect_secrets(None, &root.to_json(), &mut secrets);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "*****");
    }
    out
}

fn collect_secrets(key: Option<&str>, value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_secrets(Some(k), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                collect_secrets(key, v, out);
            }
        }
        serde_json::Value::String(text) => {
            let key = key.unwrap_or_default().to_ascii_lowercase();
            let named = ["password", "secret", "token", "credential", "private"]
                .iter()
                .any(|w| key.contains(w))
                && !key.ends_with("_env")
                && !key.ends_with("location")
                && !key.ends_with("_file");
            if named {
                out.push(text.clone());
            } else if let Some((_, rest)) = text.split_once("://")
                && let Some((userinfo, _)) = rest.split_once('@')
                && let Some((_, password)) = userinfo.split_once(':')
            {
                out.push(password.to_owned());
            } else if text.contains("password=") {
                // libpq's key=value form.
                for part in text.split_whitespace() {
                    if let Some(p) = part.strip_prefix("password=") {
                        out.push(p.trim_matches('\'').to_owned());
                    }
                }
            }
        }
        _ => {}
    }
}

fn join_host(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with("unix:") {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    names.join(", ")
}

/// The path as the file system will see it: absolute (relative to the
/// server's working directory), with symbolic links in the part that
/// exists resolved. A path with `..` is refused: after a symbolic link it
/// does not mean what it says.
fn resolve(path: &Path) -> Result<PathBuf, String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{}: paths with `..` are not allowed on a server",
            path.display()
        ));
    }
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?
            .join(path)
    };
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_owned()),
            None => break,
        }
        existing.pop();
    }
    let mut real = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        real.push(name);
    }
    Ok(real)
}

fn within(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        let d = d.canonicalize().unwrap_or_else(|_| d.clone());
        path.starts_with(&d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_match_names_suffixes_networks_and_ports() {
        let rule = |t: &str| HostRule::parse(t).unwrap();
        assert!(rule("kafka:9092").allows("KAFKA", 9092));
        assert!(!rule("kafka:9092").allows("kafka", 9093));
        assert!(rule("kafka").allows("kafka", 1));
        assert!(rule("*.internal").allows("db.internal", 5432));
        assert!(!rule("*.internal").allows("internal", 5432));
        assert!(!rule("*.internal").allows("db.internal.evil.com", 5432));
        assert!(rule("10.0.0.0/8:5432").allows("10.1.2.3", 5432));
        assert!(!rule("10.0.0.0/8:5432").allows("11.1.2.3", 5432));
        assert!(!rule("10.0.0.0/8").allows("ten.internal", 5432));
        assert!(rule("[::1]:6379").allows("::1", 6379));
        assert!(rule("fd00::/8").allows("fd00::5", 1));
        assert!(rule("*").allows("anything", 1));
        assert!(rule("*:443").allows("anything", 443));
        for bad in ["kafka:x", "a/b", "[::1", ""] {
            assert!(HostRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_masked_and_the_rest_is_kept() {
        let text = "name: p\nsinks:\n  db: {type: timescaledb, url: \"postgres://u:hunter2@db/m\", password_env: PGPASS}\n  k: {type: kafka, brokers: b:9092, topic: t, options: {sasl.password: s3cr3t, sasl.username: bob}}\n  kv: {type: timescaledb, url: \"host=db password=pa55 user=u\"}\n";
        let shown = redact(text);
        for secret in ["hunter2", "s3cr3t", "pa55"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        for kept in ["postgres://u:*****@db/m", "PGPASS", "bob", "b:9092"] {
            assert!(shown.contains(kept), "{kept}: {shown}");
        }
        assert_eq!(redact("name: p\n"), "name: p\n");
    }

    #[test]
    fn paths_are_resolved_before_they_are_checked() {
        let dir = std::env::temp_dir().join(format!("tidemark-access-{}", std::process::id()));
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(&allowed).unwrap();
        let outside = dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let link = allowed.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let dirs = vec![allowed.clone()];
        assert!(within(
            &resolve(&allowed.join("new/out.jsonl")).unwrap(),
            &dirs
        ));
        assert!(!within(&resolve(&link.join("out.jsonl")).unwrap(), &dirs));
        assert!(resolve(&allowed.join("../outside/x")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
