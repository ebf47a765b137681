//! Where segments and manifests live: local disk by default, S3, GCS or Azure by config.
//! The WAL always stays on local disk (it is fsynced per write).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::prefix::PrefixStore;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
#[cfg(feature = "cloud")]
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
#[cfg(feature = "cloud")]
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
#[cfg(feature = "cloud")]
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use serde::Deserialize;
use url::Url;

use crate::StorageError;

/// A cloud store's settings that its builder refused.
#[cfg(feature = "cloud")]
fn bad(e: object_store::Error) -> StorageError {
    StorageError::Config(format!("storage.object_store: {e}"))
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A directory: `path`, or `data_dir/segments` (several nodes share one through a shared
    /// file system).
    #[default]
    Local,
    S3,
    Gcs,
    Azure,
}

/// `storage.object_store` in the configuration. Credentials come from the environment the
/// way each cloud's SDKs read it (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`,
/// `AZURE_STORAGE_ACCOUNT_NAME`, ...) or from `options`, never from a logged field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    pub kind: StoreKind,
    /// Bucket (S3, GCS) or container (Azure).
    pub bucket: Option<String>,
    /// Key prefix inside the bucket, so that one bucket can hold several deployments.
    pub prefix: Option<String>,
    /// The directory of a local store.
    pub path: Option<PathBuf>,
    /// S3-compatible endpoint (MinIO, moto, R2, ...); virtual-hosted style is off for one.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints (test servers).
    pub allow_http: bool,
    /// Further settings by the `object_store` crate's own key names (`aws_session_token`,
    /// `google_service_account`, `azure_storage_account_key`, ...).
    pub options: BTreeMap<String, String>,
}

impl ObjectStoreConfig {
    /// True when segments leave the machine (or its default directory): another node may
    /// read them.
    pub fn is_shared(&self) -> bool {
        self.kind != StoreKind::Local || self.path.is_some()
    }

    fn bucket(&self) -> Result<&str, StorageError> {
        self.bucket.as_deref().filter(|b| !b.is_empty()).ok_or_else(|| {
            StorageError::Config(format!("storage.object_store.bucket is required for kind {:?}", self.kind))
        })
    }

    fn local_dir(&self, data_dir: &FsPath) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join("segments"))
    }

    /// Whether this build can open the configured kind (`vigil validate` asks before start).
    pub fn check_supported(&self) -> Result<(), StorageError> {
        if cfg!(feature = "cloud") || self.kind == StoreKind::Local { Ok(()) } else { Err(self.unsupported()) }
    }

    /// A cloud kind in a build without the `cloud` feature.
    fn unsupported(&self) -> StorageError {
        StorageError::Config(format!(
            "storage.object_store.kind {:?} needs a build with the `cloud` feature (on by default); this one was built without it",
            self.kind
        ))
    }

    /// Opens the store (creating a local directory). Nothing is read yet: a wrong bucket or
    /// credential shows at the first manifest read, which `Storage::open` does.
    pub fn build(&self, data_dir: &FsPath) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let store: Arc<dyn ObjectStore> = match self.kind {
            StoreKind::Local => {
                let dir = self.local_dir(data_dir);
                std::fs::create_dir_all(&dir)?;
                Arc::new(crate::local_store::LocalStore::new(LocalFileSystem::new_with_prefix(&dir)?))
            }
            #[cfg(not(feature = "cloud"))]
            StoreKind::S3 | StoreKind::Gcs | StoreKind::Azure => return Err(self.unsupported()),
            #[cfg(feature = "cloud")]
            StoreKind::S3 => {
                let mut builder =
                    AmazonS3Builder::from_env().with_bucket_name(self.bucket()?).with_allow_http(self.allow_http);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &self.region {
                    builder = builder.with_region(region);
                }
                for (key, value) in &self.options {
                    builder = builder.with_config(key.parse::<AmazonS3ConfigKey>().map_err(bad)?, value);
                }
                Arc::new(builder.build().map_err(bad)?)
            }
            #[cfg(feature = "cloud")]
            StoreKind::Gcs => {
                let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(self.bucket()?);
                for (key, value) in &self.options {
                    builder = builder.with_config(key.parse::<GoogleConfigKey>().map_err(bad)?, value);
                }
                Arc::new(builder.build().map_err(bad)?)
            }
            #[cfg(feature = "cloud")]
            StoreKind::Azure => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_container_name(self.bucket()?)
                    .with_allow_http(self.allow_http);
                for (key, value) in &self.options {
                    builder = builder.with_config(key.parse::<AzureConfigKey>().map_err(bad)?, value);
                }
                Arc::new(builder.build().map_err(bad)?)
            }
        };
        Ok(match self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(prefix) => Arc::new(PrefixStore::new(store, prefix.to_string())),
            None => store,
        })
    }

    /// The URL under which other engines (Ballista executors) find the store's objects:
    /// `file:///dir/`, `s3://bucket/prefix/`, `gs://...`, `az://...`, always ending in `/`.
    pub fn base_url(&self, data_dir: &FsPath) -> Result<Url, StorageError> {
        let url = match self.kind {
            StoreKind::Local => {
                let dir = std::path::absolute(self.local_dir(data_dir))?;
                Url::from_directory_path(&dir)
                    .map_err(|()| StorageError::Config(format!("{} is not an absolute directory", dir.display())))?
            }
            kind => {
                let scheme = match kind {
                    StoreKind::S3 => "s3",
                    StoreKind::Gcs => "gs",
                    _ => "az",
                };
                let prefix = self.prefix.as_deref().map(|p| p.trim_matches('/')).unwrap_or("");
                let path = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
                Url::parse(&format!("{scheme}://{}/{path}", self.bucket()?))
                    .map_err(|e| StorageError::Config(format!("storage.object_store: {e}")))?
            }
        };
        Ok(url)
    }
}

/// Reads a JSON object of the store; `None` when there is none.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<T>, StorageError> {
    match store.get(path).await {
        Ok(result) => {
            let bytes = result.bytes().await?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageError::Manifest(format!("{path}: {e}")))
        }
        Err(datafusion::object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A value as the JSON body of an object.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Manifest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_other_engines() {
        let s3 = ObjectStoreConfig {
            kind: StoreKind::S3,
            bucket: Some("b".into()),
            prefix: Some("/vigil/prod/".into()),
            ..Default::default()
        };
        assert_eq!(s3.base_url(FsPath::new("/d")).unwrap().as_str(), "s3://b/vigil/prod/");
        let local = ObjectStoreConfig::default();
        assert_eq!(local.base_url(FsPath::new("/d")).unwrap().as_str(), "file:///d/segments/");
        assert!(!local.is_shared());
    }

    #[test]
    fn a_cloud_store_needs_a_bucket_and_known_option_names() {
        let no_bucket = ObjectStoreConfig { kind: StoreKind::Gcs, ..Default::default() };
        assert!(matches!(no_bucket.build(FsPath::new("/tmp")), Err(StorageError::Config(m)) if m.contains("bucket")));
        let typo = ObjectStoreConfig {
            kind: StoreKind::S3,
            bucket: Some("b".into()),
            options: [("aws_sekret".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(typo.build(FsPath::new("/tmp")), Err(StorageError::Config(m)) if m.contains("aws_sekret")));
    }
}
