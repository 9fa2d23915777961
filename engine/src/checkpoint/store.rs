//! Where checkpoints are kept: a local directory (the default,
//! `DIR/checkpoints`) or an S3 bucket (`--checkpoint-store
//! s3://bucket/prefix`, through `object_store`).
//!
//! Either way a checkpoint is a directory (a prefix)
//! `<pipeline>/<cut>-<installation>/` of parts and a `MANIFEST.json`
//! written last: in a directory through a synced temporary file and a
//! rename, in a bucket as one PUT (an object appears whole or not at all),
//! so a checkpoint with a manifest is complete, the discipline of the
//! Parquet sink.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::time::Time;

/// The name of a checkpoint's manifest, written last.
pub const MANIFEST: &str = "MANIFEST.json";

/// Where checkpoints are kept (cheap to clone).
#[derive(Clone)]
pub struct Store(Arc<Inner>);

enum Inner {
    Dir(PathBuf),
    Bucket {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        location: String,
        /// The runtime of a thread of its own that runs the requests:
        /// every call waits for its answer on a channel, so it may come
        /// from any thread (a worker, the writer, or a task of the
        /// server's own runtime), and dropping the store never drops a
        /// runtime inside another.
        runtime: tokio::runtime::Handle,
    },
}

/// A checkpoint found in the store: its cut, its directory's name, and
/// whether its manifest is there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// The cut.
    pub at: Time,
    /// `<cut>-<installation>`.
    pub name: String,
    /// Its manifest was written.
    pub complete: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.describe())
    }
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Checkpoints in a local directory.
    pub fn dir(path: impl Into<PathBuf>) -> Store {
        Store(Arc::new(Inner::Dir(path.into())))
    }

    /// Checkpoints at `location`: `s3://bucket/prefix` (the endpoint,
    /// region and credentials from the environment: `AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...) or
    /// a directory. No request is made yet.
    pub fn open(location: &str) -> Result<Store, String> {
        let Some(rest) = location.strip_prefix("s3://") else {
            if location.contains("://") {
                return Err(format!(
                    "unsupported scheme in {location:?}: give s3://bucket/prefix or a directory"
                ));
            }
            return Ok(Store::dir(location));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("s3:// needs a bucket: s3://bucket/prefix".into());
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let store = builder
            .with_region(region)
            .build()
            .map_err(|e| format!("invalid S3 settings: {e}"))?;
        Store::bucket(Arc::new(store), location, prefix)
    }

    /// Checkpoints in `store` under `prefix` (`location` names it in
    /// messages).
    pub fn bucket(
        store: Arc<dyn ObjectStore>,
        location: &str,
        prefix: &str,
    ) -> Result<Store, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("checkpoint-store".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("cannot start the checkpoint store's thread: {e}"))?;
        let runtime = rx
            .recv()
            .map_err(|_| "the checkpoint store's thread did not start".to_owned())?
            .map_err(|e| format!("cannot start the checkpoint store's runtime: {e}"))?;
        Ok(Store(Arc::new(Inner::Bucket {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            location: location.trim_end_matches('/').to_owned(),
            runtime,
        })))
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match &*self.0 {
            Inner::Dir(dir) => dir.display().to_string(),
            Inner::Bucket { location, .. } => location.clone(),
        }
    }

    /// A directory's path, if the store is one.
    pub fn local(&self) -> Option<&std::path::Path> {
        match &*self.0 {
            Inner::Dir(dir) => Some(dir),
            Inner::Bucket { .. } => None,
        }
    }

    /// Runs a request of the bucket and waits for it.
    fn wait<T: Send + 'static>(
        runtime: &tokio::runtime::Handle,
        request: impl Future<Output = std::io::Result<T>> + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        rx.recv()
            .map_err(|_| other("the checkpoint store's thread is gone"))?
    }

    fn key(prefix: &str, parts: &[&str]) -> Key {
        let mut text = prefix.to_owned();
        for p in parts.iter().filter(|p| !p.is_empty()) {
            if !text.is_empty() {
                text.push('/');
            }
            text.push_str(p);
        }
        Key::from(text)
    }

    /// What is under `pipeline`: each directory (prefix) with whether it
    /// holds a manifest.
    fn children(
        &self,
        pipeline: &str,
    ) -> std::io::Result<std::collections::BTreeMap<String, bool>> {
        let mut out = std::collections::BTreeMap::new();
        match &*self.0 {
            Inner::Dir(dir) => {
                let entries = match std::fs::read_dir(dir.join(pipeline)) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e),
                };
                for e in entries.filter_map(Result::ok) {
                    if let Ok(name) = e.file_name().into_string() {
                        out.insert(name, e.path().join(MANIFEST).exists());
                    }
                }
            }
            Inner::Bucket {
                store,
                prefix,
                runtime,
                ..
            } => {
                let root = Self::key(prefix, &[pipeline]);
                let (store, under) = (Arc::clone(store), root.clone());
                let objects: Vec<Key> = Self::wait(runtime, async move {
                    let list = store.list(Some(&under)).map_ok(|m| m.location);
                    list.try_collect().await.map_err(other)
                })?;
                for key in objects {
                    let Some(rest) = key.prefix_match(&root) else {
                        continue;
                    };
                    let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
                    if let [name, file] = parts.as_slice() {
                        *out.entry(name.clone()).or_default() |= file == MANIFEST;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The checkpoints of `pipeline`, oldest first.
    pub fn listed(&self, pipeline: &str) -> std::io::Result<Vec<Listed>> {
        let parse = |name: &str| -> Option<Time> { name.split_once('-')?.0.parse().ok() };
        let mut out: Vec<Listed> = self
            .children(pipeline)?
            .into_iter()
            .filter_map(|(name, complete)| parse(&name).map(|at| Listed { at, name, complete }))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The hand-over directories of `pipeline` (`handover-<installation>`,
    /// see `Checkpoints::hand_over`).
    pub fn handovers(&self, pipeline: &str) -> std::io::Result<Vec<String>> {
        Ok(self
            .children(pipeline)?
            .into_keys()
            .filter(|n| n.starts_with("handover-"))
            .collect())
    }

    /// A file of a checkpoint.
    pub fn read(&self, pipeline: &str, dir: &str, file: &str) -> std::io::Result<Vec<u8>> {
        match &*self.0 {
            Inner::Dir(root) => std::fs::read(root.join(pipeline).join(dir).join(file)),
            Inner::Bucket {
                store,
                prefix,
                runtime,
                ..
            } => {
                let (store, key) = (Arc::clone(store), Self::key(prefix, &[pipeline, dir, file]));
                Self::wait(runtime, async move {
                    let got = store.get(&key).await.map_err(other)?;
                    Ok(got.bytes().await.map_err(other)?.to_vec())
                })
            }
        }
    }

    /// Writes a part, durably, before it counts as written.
    pub fn write(
        &self,
        pipeline: &str,
        dir: &str,
        file: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        match &*self.0 {
            Inner::Dir(root) => {
                let dir = root.join(pipeline).join(dir);
                std::fs::create_dir_all(&dir)?;
                write_synced(&dir.join(file), bytes)
            }
            Inner::Bucket { .. } => self.put(pipeline, dir, file, bytes),
        }
    }

    fn put(&self, pipeline: &str, dir: &str, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Inner::Bucket {
            store,
            prefix,
            runtime,
            ..
        } = &*self.0
        else {
            unreachable!("only a bucket puts")
        };
        let (store, key) = (Arc::clone(store), Self::key(prefix, &[pipeline, dir, file]));
        let payload = PutPayload::from(bytes.to_vec());
        Self::wait(runtime, async move {
            store.put(&key, payload).await.map(|_| ()).map_err(other)
        })
    }

    /// Writes `file` whole or not at all (the manifest, which completes
    /// the checkpoint, or a process's share of one in a cluster): what was
    /// written before it and it are durable once this returns. Several
    /// processes may write the same file at once.
    pub fn write_whole(
        &self,
        pipeline: &str,
        dir: &str,
        file: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        match &*self.0 {
            Inner::Dir(root) => {
                let dir = root.join(pipeline).join(dir);
                std::fs::create_dir_all(&dir)?;
                sync_dir(&dir)?;
                let tmp = dir.join(format!("{file}.{}.tmp", std::process::id()));
                write_synced(&tmp, bytes)?;
                std::fs::rename(&tmp, dir.join(file))?;
                sync_dir(&dir)
            }
            Inner::Bucket { .. } => self.put(pipeline, dir, file, bytes),
        }
    }

    /// Deletes a checkpoint (`dir`), or every checkpoint of the pipeline
    /// (`None`).
    pub fn remove(&self, pipeline: &str, dir: Option<&str>) -> std::io::Result<()> {
        match &*self.0 {
            Inner::Dir(root) => {
                let path = root.join(pipeline).join(dir.unwrap_or(""));
                match std::fs::remove_dir_all(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r,
                }
            }
            Inner::Bucket {
                store,
                prefix,
                runtime,
                ..
            } => {
                let (store, under) = (
                    Arc::clone(store),
                    Self::key(prefix, &[pipeline, dir.unwrap_or("")]),
                );
                Self::wait(runtime, async move {
                    let keys: Vec<Key> = store
                        .list(Some(&under))
                        .map_ok(|m| m.location)
                        .try_collect()
                        .await
                        .map_err(other)?;
                    for key in keys {
                        store.delete(&key).await.map_err(other)?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// Makes sure the pipeline's checkpoints can be kept (creates its
    /// directory; a bucket needs nothing).
    pub fn prepare(&self, pipeline: &str) -> std::io::Result<()> {
        match &*self.0 {
            Inner::Dir(root) => std::fs::create_dir_all(root.join(pipeline)),
            Inner::Bucket { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_bucket_or_a_directory() {
        assert_eq!(
            Store::open("/var/lib/tidemark/ckpt").unwrap().local(),
            Some(std::path::Path::new("/var/lib/tidemark/ckpt"))
        );
        let bucket = Store::open("s3://metrics/ckpt/").unwrap();
        assert_eq!(
            (bucket.local(), bucket.describe()),
            (None, "s3://metrics/ckpt".to_owned())
        );
        assert!(Store::open("s3://").unwrap_err().contains("needs a bucket"));
        assert!(
            Store::open("gs://b/x")
                .unwrap_err()
                .contains("unsupported scheme")
        );
    }
}
