//! What an `alertmanager` sink keeps sending, on disk (under `tidemark
//! serve --data-dir`): every firing alert, and every resolved one until
//! its resolution stops being sent, one JSON line per change, the last
//! line of an alert winning. The sink writes the changes of an event time
//! and `fsync`s them before it lets that time pass, so a checkpoint never
//! covers an alert only memory knew: after `kill -9` the restarted sink
//! sends its firing alerts again at once (Alertmanager would otherwise
//! resolve them four `resend_delay`s after the last send, though they
//! still fire) and its recent resolutions too (one queued and not
//! delivered when the process died is not lost).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tidemark_engine::alert::Alert;

/// Lines written beyond the live alerts before the file is compacted.
const SLACK: usize = if cfg!(test) { 50 } else { 10_000 };

/// An alert kept: what Alertmanager is told, and for a resolved one until
/// when (ms since the epoch, wall clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Kept {
    pub(super) alert: Alert,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) until: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    fingerprint: u64,
    #[serde(flatten)]
    kept: Kept,
}

/// The file.
pub(super) struct KeptFile {
    file: File,
    path: PathBuf,
    lines: usize,
}

impl KeptFile {
    /// Opens (or creates) the file at `path` and, with `resume`, reads back
    /// the alerts it keeps at `now`: resolved ones whose time is up are
    /// left out, and so is a line cut by a crash. The file is rewritten
    /// with them (emptied without `resume`).
    pub(super) fn open(
        path: &Path,
        now: i64,
        resume: bool,
    ) -> std::io::Result<(KeptFile, BTreeMap<u64, Kept>)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut kept = BTreeMap::new();
        for line in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        {
            kept.insert(line.fingerprint, line.kept);
        }
        kept.retain(|_, k: &mut Kept| resume && k.until.is_none_or(|u| u > now));
        let mut file = KeptFile {
            file: OpenOptions::new().create(true).append(true).open(path)?,
            path: path.to_owned(),
            lines: 0,
        };
        file.compact(&kept)?;
        Ok((file, kept))
    }

    /// Records a change; durable only after [`KeptFile::sync`].
    pub(super) fn record(&mut self, fingerprint: u64, kept: &Kept) -> std::io::Result<()> {
        let line = serde_json::to_string(&Line {
            fingerprint,
            kept: kept.clone(),
        })
        .unwrap_or_default();
        writeln!(self.file, "{line}")?;
        self.lines += 1;
        Ok(())
    }

    /// Makes the changes recorded durable, and compacts the file when it
    /// holds many more lines than `kept`.
    pub(super) fn sync(&mut self, kept: &BTreeMap<u64, Kept>) -> std::io::Result<()> {
        self.file.sync_data()?;
        if self.lines > kept.len() + SLACK {
            self.compact(kept)?;
        }
        Ok(())
    }

    fn compact(&mut self, kept: &BTreeMap<u64, Kept>) -> std::io::Result<()> {
        let lines = kept.iter().map(|(fingerprint, k)| {
            serde_json::to_string(&Line {
                fingerprint: *fingerprint,
                kept: k.clone(),
            })
            .unwrap_or_default()
        });
        self.file = crate::deliver::replace_lines(&self.path, lines)?;
        self.lines = kept.len();
        Ok(())
    }

    /// Its file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::alert::AlertState;

    fn alert(name: &str, state: AlertState) -> Alert {
        Alert {
            labels: tidemark_engine::series::Series::from_labels(vec![(
                "alertname".into(),
                name.into(),
            )]),
            annotations: std::sync::Arc::from(vec![]),
            state,
            active_at: 1,
            starts_at: 2,
            ends_at: (state == AlertState::Resolved).then_some(3),
            value: 1.0,
            at: 3,
            generator_url: String::new(),
        }
    }

    #[test]
    fn the_last_change_of_each_alert_comes_back() {
        let dir = std::env::temp_dir().join(format!("tidemark-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("am.alerts");
        let _ = std::fs::remove_file(&path);
        let (mut file, kept) = KeptFile::open(&path, 0, true).unwrap();
        assert!(kept.is_empty());
        let firing = |name| Kept {
            alert: alert(name, AlertState::Firing),
            until: None,
        };
        let resolved = |name, until| Kept {
            alert: alert(name, AlertState::Resolved),
            until: Some(until),
        };
        let mut live = BTreeMap::new();
        for (fp, k) in [
            (1, firing("a")),
            (2, firing("b")),
            (3, firing("c")),
            (1, resolved("a", 1_000)),
            (3, resolved("c", 10)),
        ] {
            file.record(fp, &k).unwrap();
            live.insert(fp, k);
        }
        file.sync(&live).unwrap();
        // A line cut by a crash.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"fingerprint\":2,")
            .unwrap();
        drop(file);
        let (mut file, back) = KeptFile::open(&path, 100, true).unwrap();
        assert_eq!(
            back,
            BTreeMap::from([(1, resolved("a", 1_000)), (2, firing("b"))]),
            "c's resolution is no longer sent at 100"
        );
        // Many changes of one alert: the file is compacted.
        for _ in 0..3 * SLACK {
            file.record(2, &firing("b")).unwrap();
            file.sync(&back).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= back.len() + SLACK + 1, "{lines} lines");
        drop(file);
        assert_eq!(KeptFile::open(&path, 100, true).unwrap().1, back);
        // Not resumed: nothing comes back, and the file is emptied.
        assert!(KeptFile::open(&path, 100, false).unwrap().1.is_empty());
        assert!(KeptFile::open(&path, 100, true).unwrap().1.is_empty());
    }
}
