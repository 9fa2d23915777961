//! The notification log: what each integration was sent (or refused for
//! good), one JSON line per notification, written and `fsync`ed when its
//! delivery ends. A notification already in the log is not sent again, so
//! a replay of the same input (a restart that reads Kafka again, a rerun
//! of a file) pages nobody twice. A notification is identified by its
//! integration, group key, event time and status, which the `route`
//! transform computes deterministically. Entries whose event time is older
//! than [`RETENTION`] are dropped when the sink starts.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tidemark_engine::notify::{Notification, Status};

/// How long entries are kept (by event time), as Alertmanager keeps its
/// notification log (`--data.retention`, 120 h).
pub(crate) const RETENTION: i64 = 120 * 3_600_000;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    at: i64,
}

/// A notification's identity for one integration.
pub(crate) fn key(target: &str, n: &Notification) -> String {
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    format!("{target}|{}|{}|{status}", n.group_key, n.at)
}

/// The log: the keys it holds and the file it appends to.
pub(crate) struct Log {
    keys: HashSet<String>,
    file: File,
    path: PathBuf,
}

impl Log {
    /// Opens (or creates) the log at `path`, keeping the entries younger
    /// than [`RETENTION`] at `now`; a line that does not parse (a write cut
    /// by a crash) is dropped.
    pub(crate) fn open(path: &Path, now: i64) -> std::io::Result<Log> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let kept: Vec<Entry> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter(|e| e.at + RETENTION > now)
            .collect();
        let tmp = path.with_extension("tmp");
        {
            let mut out = File::create(&tmp)?;
            for e in &kept {
                writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Log {
            keys: kept.into_iter().map(|e| e.key).collect(),
            file,
            path: path.to_owned(),
        })
    }

    /// Whether `key` was logged.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Logs `key` durably.
    pub(crate) fn add(&mut self, key: String, at: i64) -> std::io::Result<()> {
        let line = serde_json::to_string(&Entry {
            key: key.clone(),
            at,
        })
        .unwrap_or_default();
        writeln!(self.file, "{line}")?;
        self.file.sync_data()?;
        self.keys.insert(key);
        Ok(())
    }

    /// Its file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_old_ones_go() {
        let dir = std::env::temp_dir().join(format!("tidemark-nflog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut log = Log::open(&path, 0).unwrap();
        log.add("a".into(), 10).unwrap();
        log.add("b".into(), RETENTION + 10).unwrap();
        // A line cut by a crash.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"key\":\"c\",")
            .unwrap();
        let log = Log::open(&path, RETENTION + 20).unwrap();
        assert!(!log.contains("a"), "older than the retention");
        assert!(log.contains("b"));
        assert!(!log.contains("c"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
