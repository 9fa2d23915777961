//! Silences, in Alertmanager's API v2 shapes: matchers and a time range
//! during which matching alerts are not notified. The server's silence API
//! writes them to the process's [`SilenceHub`]; `route` transforms read it
//! and mute, at each flush's event time, the alerts a silence active then
//! matches.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One matcher of a silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    /// The label's name.
    pub name: String,
    /// The value, or a regular expression (anchored).
    pub value: String,
    /// Whether `value` is a regular expression.
    pub is_regex: bool,
    /// `false` negates the matcher (`!=`, `!~`).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Its identity.
    pub id: String,
    /// Every matcher must match.
    pub matchers: Vec<SilenceMatcher>,
    /// From (ms, wall clock).
    pub starts_at: i64,
    /// Until (ms, wall clock); moved to now when it is expired.
    pub ends_at: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was last changed (ms).
    pub updated_at: i64,
}

impl Silence {
    /// `pending`, `active` or `expired` at `now`, as Alertmanager says.
    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }
}

/// How long an expired silence stays listed (Alertmanager's default
/// `--data.retention`).
pub const EXPIRED_RETENTION: i64 = 120 * 3_600_000;

/// The silences of a process.
#[derive(Debug, Default)]
pub struct SilenceHub {
    silences: RwLock<BTreeMap<String, Silence>>,
    version: AtomicU64,
    next: AtomicU64,
}

impl SilenceHub {
    /// Stores a silence; a new one (empty or unknown `id`) gets an id.
    /// Returns its id.
    pub fn put(&self, mut silence: Silence) -> String {
        let mut all = self.silences.write().unwrap_or_else(|e| e.into_inner());
        if silence.id.is_empty() || !all.contains_key(&silence.id) {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            silence.id = format!(
                "{:016x}-{n:08x}",
                crate::time::now_millis() as u64 ^ (std::process::id() as u64) << 32
            );
        }
        let id = silence.id.clone();
        all.insert(id.clone(), silence);
        self.version.fetch_add(1, Ordering::Release);
        id
    }

    /// Every silence (expired ones until their retention ends).
    pub fn list(&self, now: i64) -> Vec<Silence> {
        let mut all = self.silences.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| s.ends_at + EXPIRED_RETENTION > now);
        all.values().cloned().collect()
    }

    /// One silence.
    pub fn get(&self, id: &str) -> Option<Silence> {
        self.silences
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Ends a silence now; false if there is none by that id or it has
    /// already ended.
    pub fn expire(&self, id: &str, now: i64) -> bool {
        let mut all = self.silences.write().unwrap_or_else(|e| e.into_inner());
        match all.get_mut(id) {
            Some(s) if s.ends_at > now => {
                s.ends_at = now.max(s.starts_at);
                s.updated_at = now;
                self.version.fetch_add(1, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Every silence held, expired ones included (to be kept on disk).
    pub fn all(&self) -> Vec<Silence> {
        self.silences
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Puts back silences kept on disk, with their ids.
    pub fn restore(&self, silences: Vec<Silence>) {
        let mut all = self.silences.write().unwrap_or_else(|e| e.into_inner());
        for s in silences {
            all.insert(s.id.clone(), s);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes with every put and expiry, so readers know when to look
    /// again.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: &str, start: i64, end: i64) -> Silence {
        Silence {
            id: id.into(),
            matchers: vec![SilenceMatcher {
                name: "a".into(),
                value: "b".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: start,
            ends_at: end,
            created_by: "me".into(),
            comment: "why".into(),
            updated_at: 0,
        }
    }

    #[test]
    fn silences_are_stored_expired_and_forgotten() {
        let hub = SilenceHub::default();
        let v0 = hub.version();
        let id = hub.put(silence("", 0, 1000));
        assert!(!id.is_empty());
        assert!(hub.version() > v0);
        assert_eq!(hub.get(&id).unwrap().state(500), "active");
        // An update of a known id keeps it.
        assert_eq!(hub.put(silence(&id, 0, 2000)), id);
        assert!(hub.expire(&id, 600));
        assert!(!hub.expire(&id, 700));
        assert_eq!(hub.get(&id).unwrap().state(700), "expired");
        assert_eq!(hub.list(700).len(), 1);
        assert!(hub.list(600 + EXPIRED_RETENTION).is_empty());
        assert!(!hub.expire("nope", 0));
    }
}
