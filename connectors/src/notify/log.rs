//! The notification log, an outbox as well as a record of what was sent:
//! one JSON line per event, `fsync`ed before the pipeline goes on.
//!
//! - When a notification is queued for an integration, a *pending* line
//!   holds it whole (the integration's name and the notification). The
//!   sink lets its input's time pass only once those lines are on disk, so
//!   a checkpoint taken after that time never covers a notification that
//!   exists nowhere but in memory: after `kill -9`, what was queued and not
//!   delivered is read back from here and delivered.
//! - When its delivery ends (delivered, or refused for good), a *done*
//!   line records it. A notification already in the log, pending or done,
//!   is not queued again, so a replay of the same input (a restart that
//!   reads Kafka again, a rerun of a file) pages nobody twice.
//!
//! A notification is identified by its integration, group key, event time
//! and status, which the `route` transform computes deterministically.
//! Entries written longer than [`RETENTION`] ago (by the wall clock, so
//! that a backfill of old data is remembered as long as a live one) are
//! dropped when the log is compacted: when the sink starts, and whenever
//! the file holds many more lines than live entries.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tidemark_engine::notify::{Notification, Status};

/// How long entries are kept after they are written, as Alertmanager
/// keeps its notification log (`--data.retention`, 120 h).
pub(crate) const RETENTION: i64 = 120 * 3_600_000;

/// Lines appended beyond the live entries before the file is compacted
/// (and entries past the retention dropped).
const SLACK: usize = if cfg!(test) { 100 } else { 10_000 };

/// One line of the log.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    /// When the line was written (ms since the epoch).
    at: i64,
    /// Set while the notification is queued: what is to be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// A notification queued for one integration and not yet delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The integration's name (`receiver/webhook[0]`).
    pub(crate) target: String,
    pub(crate) notification: Notification,
}

/// What the log knows of a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logged {
    /// Queued and not yet delivered (by this process or one before it).
    Queued,
    /// Delivered, or refused for good.
    Done,
}

/// A notification's identity for one integration.
pub(crate) fn key(target: &str, n: &Notification) -> String {
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    format!("{target}|{}|{}|{status}", n.group_key, n.at)
}

/// The log: its live entries and the file it appends to.
pub(crate) struct Log {
    /// Done entries: key, when written.
    done: HashMap<String, i64>,
    /// Pending entries, by key, with the order they were queued in and
    /// when.
    pending: HashMap<String, (u64, i64, Pending)>,
    next: u64,
    /// Lines in the file.
    lines: usize,
    file: File,
    path: PathBuf,
}

impl Log {
    /// Opens (or creates) the log at `path`, keeping the entries younger
    /// than [`RETENTION`] at `now`; a line that does not parse (a write cut
    /// by a crash) is dropped. Returns it with the notifications still
    /// pending, in the order they were queued.
    pub(crate) fn open(path: &Path, now: i64) -> std::io::Result<(Log, Vec<Pending>)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut log = Log {
            done: HashMap::new(),
            pending: HashMap::new(),
            next: 0,
            lines: 0,
            file: OpenOptions::new().create(true).append(true).open(path)?,
            path: path.to_owned(),
        };
        for entry in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        {
            log.remember(entry);
        }
        log.compact(now)?;
        let mut pending: Vec<_> = log.pending.values().cloned().collect();
        pending.sort_by_key(|(seq, ..)| *seq);
        Ok((log, pending.into_iter().map(|(_, _, p)| p).collect()))
    }

    fn remember(&mut self, entry: Entry) {
        match entry.pending {
            Some(p) if !self.done.contains_key(&entry.key) => {
                self.pending.insert(entry.key, (self.next, entry.at, p));
                self.next += 1;
            }
            Some(_) => {}
            None => {
                self.pending.remove(&entry.key);
                self.done.insert(entry.key, entry.at);
            }
        }
    }

    /// Rewrites the file with the live entries younger than the retention.
    fn compact(&mut self, now: i64) -> std::io::Result<()> {
        let young = |at: &i64| *at + RETENTION > now;
        self.done.retain(|_, at| young(at));
        self.pending.retain(|_, (_, at, _)| young(at));
        let mut pending: Vec<_> = self.pending.iter().collect();
        pending.sort_by_key(|(_, (seq, ..))| *seq);
        let lines = (self.done.iter().map(|(key, at)| line(key, *at, None))).chain(
            pending
                .into_iter()
                .map(|(key, (_, at, p))| line(key, *at, Some(p))),
        );
        self.file = crate::deliver::replace_lines(&self.path, lines)?;
        self.lines = self.done.len() + self.pending.len();
        Ok(())
    }

    /// What the log knows of `key`.
    pub(crate) fn state(&self, key: &str) -> Option<Logged> {
        if self.done.contains_key(key) {
            Some(Logged::Done)
        } else if self.pending.contains_key(key) {
            Some(Logged::Queued)
        } else {
            None
        }
    }

    /// Logs that `p` is queued at `now`; durable only after [`Log::sync`].
    pub(crate) fn queue(&mut self, key: String, p: Pending, now: i64) -> std::io::Result<()> {
        let at = now;
        writeln!(self.file, "{}", line(&key, at, Some(&p)))?;
        self.lines += 1;
        self.pending.insert(key, (self.next, at, p));
        self.next += 1;
        Ok(())
    }

    /// Makes every line written so far durable.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Logs durably that the delivery of `key` ended at `at`; compacts
    /// the file when it holds many more lines than live entries.
    pub(crate) fn add(&mut self, key: String, at: i64) -> std::io::Result<()> {
        writeln!(self.file, "{}", line(&key, at, None))?;
        self.file.sync_data()?;
        self.lines += 1;
        self.pending.remove(&key);
        self.done.insert(key, at);
        if self.lines > self.done.len() + self.pending.len() + SLACK {
            self.compact(at)?;
        }
        Ok(())
    }

    /// Its file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn line(key: &str, at: i64, pending: Option<&Pending>) -> String {
    serde_json::to_string(&Entry {
        key: key.to_owned(),
        at,
        pending: pending.cloned(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(at: i64) -> Notification {
        Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"A\"}".into(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: "team".into(),
            group_labels: Default::default(),
            common_labels: Default::default(),
            common_annotations: Default::default(),
            external_url: String::new(),
            alerts: Vec::new(),
            at,
        }
    }

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidemark-nflog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn entries_survive_reopening_and_old_ones_go() {
        let path = fresh("log.jsonl");
        let (mut log, pending) = Log::open(&path, 0).unwrap();
        assert!(pending.is_empty());
        log.add("a".into(), 10).unwrap();
        log.add("b".into(), RETENTION + 10).unwrap();
        // A line cut by a crash.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"key\":\"c\",")
            .unwrap();
        let (log, _) = Log::open(&path, RETENTION + 20).unwrap();
        assert_eq!(log.state("a"), None, "older than the retention");
        assert_eq!(log.state("b"), Some(Logged::Done));
        assert_eq!(log.state("c"), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn what_was_queued_and_not_done_comes_back_in_order() {
        let path = fresh("outbox.jsonl");
        let (mut log, _) = Log::open(&path, 0).unwrap();
        let pending = |target: &str, at| Pending {
            target: target.into(),
            notification: notification(at),
        };
        log.queue("x".into(), pending("r/webhook[0]", 30), 1)
            .unwrap();
        log.queue("y".into(), pending("r/webhook[0]", 10), 2)
            .unwrap();
        log.queue("z".into(), pending("r/slack[0]", 20), 3).unwrap();
        log.sync().unwrap();
        assert_eq!(log.state("y"), Some(Logged::Queued));
        log.add("y".into(), 4).unwrap();
        assert_eq!(log.state("y"), Some(Logged::Done));
        drop(log);
        let (log, back) = Log::open(&path, 40).unwrap();
        assert_eq!(
            back,
            vec![pending("r/webhook[0]", 30), pending("r/slack[0]", 20)]
        );
        assert_eq!(log.state("x"), Some(Logged::Queued));
        assert_eq!(log.state("y"), Some(Logged::Done));
        // Compacted: one line per live entry, and reopening changes nothing.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        drop(log);
        let (_, again) = Log::open(&path, 40).unwrap();
        assert_eq!(again, back);
    }

    #[test]
    fn a_long_running_log_is_compacted() {
        let path = fresh("compact.jsonl");
        let now = tidemark_engine::time::now_millis();
        let (mut log, _) = Log::open(&path, now).unwrap();
        // Notifications logged longer ago than the retention (of any event
        // time: a backfill's are kept as long), then others now.
        let (old, young) = (2 * SLACK, SLACK + 10);
        for i in 0..old + young {
            let at = if i < old { now - RETENTION - 1 } else { now };
            let p = Pending {
                target: "r/webhook[0]".into(),
                notification: notification(i as i64),
            };
            log.queue(format!("k{i}"), p, at).unwrap();
            log.add(format!("k{i}"), at).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= young + 2 * SLACK,
            "{lines} lines for {young} live entries"
        );
        drop(log);
        let (log, pending) = Log::open(&path, now).unwrap();
        assert!(pending.is_empty());
        assert_eq!(
            log.state(&format!("k{}", old + young - 1)),
            Some(Logged::Done)
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            young
        );
        assert_eq!(log.state("k0"), None);
    }
}
