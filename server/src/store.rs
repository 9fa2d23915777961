//! What `--data-dir` keeps across a restart: the applied pipelines, so
//! that a restarted server runs what it ran before, in the order they were
//! first applied, with the tenants that own them; and the silences
//! ([`SilenceStore`]), so that a restart does not page anyone a silence
//! was muting.
//!
//! The store is one JSON file, `DIR/pipelines.json`: a list of
//! `{"name", "owner", "yaml"}`. Each change rewrites it whole through a
//! temporary file that is synced and renamed over it (and the directory
//! synced), so a crash leaves the old list or the new one, never half of
//! one. The first process of a cluster keeps it, in the order the pipeline
//! commands were sequenced; a file that does not parse stops the server
//! at start with its path and the error, rather than forgetting every
//! pipeline.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One applied pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its name.
    pub name: String,
    /// The tenant that owns it, if one does.
    pub owner: Option<String>,
    /// Its definition, as applied.
    pub yaml: String,
}

/// The applied pipelines on disk.
#[derive(Debug)]
pub struct PipelineStore {
    file: PathBuf,
    list: Mutex<Vec<Stored>>,
}

impl PipelineStore {
    /// Opens the store in `dir` (created if missing) and returns it with
    /// the pipelines it holds, oldest first.
    pub fn open(dir: &Path) -> anyhow::Result<(PipelineStore, Vec<Stored>)> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display())
        })?;
        let file = dir.join("pipelines.json");
        let list: Vec<Stored> =
            read_json(&file, "the pipelines to run at start")?.unwrap_or_default();
        let store = PipelineStore {
            file,
            list: Mutex::new(list.clone()),
        };
        Ok((store, list))
    }

    /// Records that `name` was applied: a new one goes last, a replaced
    /// one keeps its place.
    pub fn put(&self, name: &str, yaml: &str, owner: Option<&str>) -> std::io::Result<()> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let stored = Stored {
            name: name.to_owned(),
            owner: owner.map(str::to_owned),
            yaml: yaml.to_owned(),
        };
        match list.iter_mut().find(|s| s.name == name) {
            Some(s) if *s == stored => return Ok(()),
            Some(s) => *s = stored,
            None => list.push(stored),
        }
        self.write(&list)
    }

    /// Records that `name` was deleted.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        list.retain(|s| s.name != name);
        if list.len() == before {
            return Ok(());
        }
        self.write(&list)
    }

    fn write(&self, list: &[Stored]) -> std::io::Result<()> {
        write_json(&self.file, list)
    }
}

/// Writes `value` as JSON to `file` through a synced temporary file
/// renamed over it, and syncs the directory: a crash leaves the old
/// content or the new, whole.
fn write_json<T: Serialize + ?Sized>(file: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a JSON file the store wrote; a missing file is `None`, one that
/// does not parse an error that names it and says what to do.
fn read_json<T: serde::de::DeserializeOwned>(file: &Path, what: &str) -> anyhow::Result<Option<T>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{} does not parse ({e}): it lists {what}; repair it, or move it away to start with none",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
    }
}

/// The silences on disk (`DIR/silences.json`), rewritten whole after
/// every change made through the silence API.
#[derive(Debug)]
pub struct SilenceStore {
    file: PathBuf,
    /// Writes one at a time, so an older list never lands after a newer.
    writing: Mutex<()>,
}

impl SilenceStore {
    /// Opens the store in `dir` (created if missing) with the silences it
    /// holds.
    pub fn open(
        dir: &Path,
    ) -> anyhow::Result<(SilenceStore, Vec<tidemark_engine::silence::Silence>)> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display())
        })?;
        let file = dir.join("silences.json");
        let list = read_json(&file, "the silences")?.unwrap_or_default();
        Ok((
            SilenceStore {
                file,
                writing: Mutex::new(()),
            },
            list,
        ))
    }

    /// Writes the hub's silences.
    pub fn save(&self, hub: &tidemark_engine::silence::SilenceHub) -> std::io::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        write_json(&self.file, &hub.all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_first_apply_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("tidemark-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, list) = PipelineStore::open(&dir).unwrap();
        assert!(list.is_empty());
        store.put("b", "name: b\n", None).unwrap();
        store.put("a", "name: a\n", Some("acme")).unwrap();
        store.put("b", "name: b # v2\n", None).unwrap();
        store.put("c", "name: c\n", None).unwrap();
        store.remove("c").unwrap();
        store.remove("missing").unwrap();
        let (_, list) = PipelineStore::open(&dir).unwrap();
        let got: Vec<(&str, Option<&str>, &str)> = list
            .iter()
            .map(|s| (s.name.as_str(), s.owner.as_deref(), s.yaml.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("b", None, "name: b # v2\n"),
                ("a", Some("acme"), "name: a\n")
            ]
        );
        // A file that does not parse is an error that names it.
        std::fs::write(dir.join("pipelines.json"), "[{\"name\": ").unwrap();
        let error = PipelineStore::open(&dir).unwrap_err().to_string();
        assert!(error.contains("pipelines.json does not parse"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
