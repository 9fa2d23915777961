//! The object store behind a `parquet` sink: S3 (any compatible endpoint),
//! a local directory or memory, through `object_store`.
//!
//! A file becomes visible only when it is complete: a single `PUT`, or for
//! files above [`MULTIPART_ABOVE`] a multipart upload that is completed last
//! (and aborted on failure). On a local directory `object_store` writes a
//! temporary file and renames it.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::config::{Location, StoreAt};
use tidemark_engine::error::{ComponentError, Fault};

/// Files larger than this are uploaded in parts of this size.
pub(crate) const MULTIPART_ABOVE: usize = 16 << 20;

/// A store and the prefix every key of the sink starts with.
pub(crate) struct Store {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Store {
    /// Opens the store (no request is made yet). What fails here is the
    /// configuration (a missing variable, a directory that cannot be
    /// created, an invalid endpoint), which no retry mends.
    pub fn open(config: &StoreAt) -> Result<Store, ComponentError> {
        let config_error = |message: String| ComponentError::permanent(Fault::Config, message);
        Ok(match &config.location {
            Location::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = config
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let region = config.region.clone().or_else(|| {
                    std::env::var("AWS_REGION")
                        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                        .ok()
                });
                builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
                if let Some(id) = &config.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(var) = &config.secret_access_key_env {
                    let secret = std::env::var(var).map_err(|_| {
                        config_error(format!("environment variable {var} is not set"))
                    })?;
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder
                    .build()
                    .map_err(|e| config_error(format!("invalid S3 settings: {e}")))?;
                Store {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                }
            }
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ComponentError::io(format!("cannot create {}", dir.display()), e)
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| config_error(format!("cannot open {}: {e}", dir.display())))?;
                Store {
                    store: Arc::new(store),
                    prefix: String::new(),
                }
            }
            Location::Memory => Store {
                store: Arc::new(InMemory::new()),
                prefix: String::new(),
            },
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Writes `bytes` at `key` (below the prefix), replacing what is there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ComponentError> {
        let path = self.path(key);
        if bytes.len() <= MULTIPART_ABOVE {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(classify)?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await.map_err(classify)?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, MULTIPART_ABOVE);
        for chunk in bytes.chunks(MULTIPART_ABOVE) {
            parts.write(chunk);
        }
        // Completing is what makes the object visible; an upload that
        // failed part-way is aborted so that its parts do not linger.
        parts.finish().await.map(|_| ()).map_err(classify)
    }

    /// The object at `key` (below the prefix), if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ComponentError> {
        match self.store.get(&self.path(key)).await {
            Ok(got) => got.bytes().await.map(Some).map_err(classify),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The number of key groups the sink's files are named after (see
    /// `sink.rs`): read from the archive's layout object, or, for a new
    /// archive, `workers`, written there.
    pub async fn groups(
        &self,
        pipeline: &str,
        sink: &str,
        workers: u64,
    ) -> Result<u64, ComponentError> {
        let key = format!("_tidemark/pipeline={pipeline}/output={sink}/layout");
        if let Some(bytes) = self.get(&key).await? {
            let text = String::from_utf8_lossy(&bytes);
            return text
                .trim()
                .strip_prefix("groups=")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ComponentError::permanent(
                        Fault::Config,
                        format!("the archive's layout object {key} is damaged ({text:?}; expected groups=N)"),
                    )
                });
        }
        self.put(&key, Bytes::from(format!("groups={workers}\n")))
            .await?;
        Ok(workers)
    }

    /// Every object whose key (below the prefix) starts with `under/`:
    /// its key below the prefix, and its size.
    pub async fn list(&self, under: &str) -> Result<Vec<(String, u64)>, ComponentError> {
        use futures_util::TryStreamExt;
        let base = self.path(under);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(classify)?;
        Ok(listed
            .into_iter()
            .map(|m| (m.location.as_ref()[strip..].to_owned(), m.size))
            .collect())
    }

    /// The bytes `range` of the object at `key` (below the prefix).
    pub async fn range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, ComponentError> {
        self.store
            .get_range(&self.path(key), range)
            .await
            .map_err(classify)
    }

    /// Whether `key` (below the prefix) exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ComponentError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }
}

/// What a retry can mend: refused credentials or permissions and requests
/// the store does not support are the configuration's fault; the rest
/// (connections, throttling, a store that is down) may heal.
fn classify(error: object_store::Error) -> ComponentError {
    let message = error.to_string();
    let classified = match &error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => {
            ComponentError::permanent(Fault::Config, message)
        }
        _ => ComponentError::transient(Fault::External, message),
    };
    classified.caused_by(error)
}
