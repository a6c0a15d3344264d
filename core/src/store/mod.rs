//! Object stores, declared once by id and shared per process.
//!
//! pipeline.yaml declares stores in its `storage` section (`local: { url: file://./data }`)
//! and components refer to them by id (`store: local`). The registry opens each store once,
//! so an exporter and the query API naming the same id share one store (which matters for
//! `memory://`). Without a declaration, the id `local` means `file://./data`, so a config
//! that names no store keeps working. The command line (`flamepipe blocks --store URL`)
//! opens stores by URL ([`StoreRegistry::open_url`]).
//!
//! Every store a component opens is wrapped in [`layers`]: a timeout per attempt and retries
//! for transient failures, then metrics by store id. [`faulty`] is a store that fails on
//! purpose, for tests.

pub mod faulty;
pub mod layers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use serde::Deserialize;

use crate::config::{ConfigIssue, Duration, Validate};
use crate::telemetry::Telemetry;
use layers::{Instrumented, Resilient, RetryPolicy};

/// The store id components use when their config names none.
pub const DEFAULT_STORE: &str = "local";
/// What [`DEFAULT_STORE`] means when `storage` does not declare it.
pub const DEFAULT_STORE_URL: &str = "file://./data";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported store URL {0:?}: expected file://PATH, a path, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or memory://"
    )]
    Unsupported(String),
    #[error("unknown option {key:?} for {scheme}:// stores")]
    UnknownOption { scheme: &'static str, key: String },
    #[error("cannot open store {url:?}: {message}")]
    Open { url: String, message: String },
    #[error("unknown store {0:?}: declare it under storage")]
    Unknown(String),
}

/// An object storage service, by URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// `s3://`: Amazon S3 and S3-compatible servers (MinIO, Ceph, R2; set `endpoint`).
    S3,
    /// `gs://`: Google Cloud Storage.
    Gcs,
    /// `az://`: Azure Blob Storage.
    Azure,
}

impl Cloud {
    fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }
}

/// Where a store URL points, checked without touching anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoreLocation {
    Local(PathBuf),
    Memory(String),
    /// A bucket (or container) of a service, and a prefix within it (may be empty).
    Cloud {
        cloud: Cloud,
        bucket: String,
        prefix: String,
    },
}

impl StoreLocation {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(StoreLocation::Memory(name.to_string()));
        }
        for (scheme, cloud) in [("s3://", Cloud::S3), ("gs://", Cloud::Gcs), ("az://", Cloud::Azure)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StoreError::Unsupported(url.to_string()));
                }
                return Ok(StoreLocation::Cloud {
                    cloud,
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                });
            }
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(StoreError::Unsupported(url.to_string()));
        }
        Ok(StoreLocation::Local(PathBuf::from(path)))
    }
}

/// One entry of the `storage` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `file://PATH` (or a bare path) or `memory://NAME`.
    pub url: String,
    /// Per request attempt. Default `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after a transient failure. Default `3`.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time. Default `100ms`.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: Duration,
    /// For `s3://`, `gs://` and `az://`: the service's settings by their object_store names
    /// (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, ...), over
    /// what the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) says.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration(RetryPolicy::default().timeout)
}

fn default_max_retries() -> u32 {
    RetryPolicy::default().max_retries
}

fn default_retry_backoff() -> Duration {
    Duration(RetryPolicy::default().backoff)
}

impl StorageConfig {
    pub fn url(url: &str) -> Self {
        StorageConfig {
            url: url.to_string(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            retry_backoff: default_retry_backoff(),
            options: BTreeMap::new(),
        }
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.timeout.0,
            max_retries: self.max_retries,
            backoff: self.retry_backoff.0,
        }
    }
}

impl Validate for StorageConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match StoreLocation::parse(&self.url) {
            Err(e) => issues.push(ConfigIssue::new("url", e.to_string())),
            Ok(StoreLocation::Cloud { cloud, .. }) => {
                for key in self.options.keys() {
                    if let Err(e) = check_option(cloud, key) {
                        issues.push(ConfigIssue::new(format!("options.{key}"), e.to_string()));
                    }
                }
            }
            Ok(_) if !self.options.is_empty() => {
                issues.push(ConfigIssue::new(
                    "options",
                    "only s3://, gs:// and az:// stores take options",
                ));
            }
            Ok(_) => {}
        }
        if self.timeout.is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be greater than 0s, got \"0s\""));
        }
        issues
    }
}

/// The declared stores, opened on first use and shared.
#[derive(Clone, Default)]
pub struct StoreRegistry {
    declared: Arc<BTreeMap<String, StorageConfig>>,
    /// The stores as opened, by where they point.
    open: Arc<Mutex<HashMap<StoreLocation, Arc<dyn ObjectStore>>>>,
    /// The same with their layers, by id.
    layered: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    telemetry: Option<Arc<Telemetry>>,
}

impl StoreRegistry {
    pub fn new(declared: BTreeMap<String, StorageConfig>) -> Self {
        StoreRegistry {
            declared: Arc::new(declared),
            ..StoreRegistry::default()
        }
    }

    /// Counts every request of the stores it opens by id into `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Whether `id` names a store: declared, or the implicit [`DEFAULT_STORE`].
    pub fn knows(&self, id: &str) -> bool {
        self.declared.contains_key(id) || id == DEFAULT_STORE
    }

    /// The URL store `id` opens.
    pub fn url(&self, id: &str) -> Result<&str, StoreError> {
        match self.declared.get(id) {
            Some(config) => Ok(&config.url),
            None if id == DEFAULT_STORE => Ok(DEFAULT_STORE_URL),
            None => Err(StoreError::Unknown(id.to_string())),
        }
    }

    /// Opens store `id` with its layers (once per process; later calls share it).
    pub fn open(&self, id: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut layered = self.layered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = layered.get(id) {
            return Ok(Arc::clone(store));
        }
        let config = match self.declared.get(id) {
            Some(config) => config.clone(),
            None if id == DEFAULT_STORE => StorageConfig::url(DEFAULT_STORE_URL),
            None => return Err(StoreError::Unknown(id.to_string())),
        };
        let raw = self.open_raw(&config.url, &config.options)?;
        let mut store: Arc<dyn ObjectStore> =
            Arc::new(Resilient::new(raw, config.policy(), id, self.telemetry.clone()));
        if let Some(telemetry) = &self.telemetry {
            store = Arc::new(Instrumented::new(store, id, Arc::clone(telemetry)));
        }
        layered.insert(id.to_string(), Arc::clone(&store));
        Ok(store)
    }

    /// Makes store `id` be `store`: for tests that build components with their default
    /// configs without touching the disk.
    pub fn preset(&self, id: &str, store: Arc<dyn ObjectStore>) -> Result<(), StoreError> {
        let location = StoreLocation::parse(self.url(id)?)?;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(location, store);
        Ok(())
    }

    /// Opens a store by URL, as the command line names them, with retries and timeouts.
    pub fn open_url(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let raw = self.open_raw(url, &BTreeMap::new())?;
        Ok(Arc::new(Resilient::new(raw, RetryPolicy::default(), url, None)))
    }

    /// The store at `url` as opened, without layers (once per process).
    fn open_raw(&self, url: &str, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let location = StoreLocation::parse(url)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = open.get(&location) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = match &location {
            StoreLocation::Memory(_) => Arc::new(InMemory::new()),
            StoreLocation::Local(path) => {
                std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
                let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| StoreError::Open {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
                // Durable acknowledgement means the data survives a power cut, not just a crash.
                Arc::new(fs.with_fsync(true))
            }
            StoreLocation::Cloud { cloud, bucket, prefix } => {
                let store = open_cloud(*cloud, bucket, options).map_err(|e| StoreError::Open {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
                if prefix.is_empty() {
                    store
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix.as_str()))
                }
            }
        };
        open.insert(location, Arc::clone(&store));
        Ok(store)
    }
}

/// Whether `key` is a setting of `cloud`'s stores.
fn check_option(cloud: Cloud, key: &str) -> Result<(), StoreError> {
    use std::str::FromStr;
    let known = match cloud {
        Cloud::S3 => object_store::aws::AmazonS3ConfigKey::from_str(key).is_ok(),
        Cloud::Gcs => object_store::gcp::GoogleConfigKey::from_str(key).is_ok(),
        Cloud::Azure => object_store::azure::AzureConfigKey::from_str(key).is_ok(),
    };
    if known {
        Ok(())
    } else {
        Err(StoreError::UnknownOption {
            scheme: cloud.scheme(),
            key: key.to_string(),
        })
    }
}

/// A bucket of `cloud`, configured from the environment, then `options`. Create-if-absent
/// puts (which the manifest needs) are S3's conditional puts, on by default.
fn open_cloud(
    cloud: Cloud,
    bucket: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, Box<dyn std::error::Error>> {
    use std::str::FromStr;
    Ok(match cloud {
        Cloud::S3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                b = b.with_config(object_store::aws::AmazonS3ConfigKey::from_str(key)?, value);
            }
            Arc::new(b.build()?)
        }
        Cloud::Gcs => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                b = b.with_config(object_store::gcp::GoogleConfigKey::from_str(key)?, value);
            }
            Arc::new(b.build()?)
        }
        Cloud::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(bucket);
            for (key, value) in options {
                b = b.with_config(object_store::azure::AzureConfigKey::from_str(key)?, value);
            }
            Arc::new(b.build()?)
        }
    })
}

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 32 << 20;

/// Writes `bytes` to `path`: in one put, or in parts of 16 MiB above [`MULTIPART_THRESHOLD`]
/// (S3 refuses single puts over 5 GiB, and parts retry alone).
pub async fn put_object(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    bytes: bytes::Bytes,
) -> object_store::Result<()> {
    use object_store::ObjectStoreExt;
    if bytes.len() <= MULTIPART_THRESHOLD {
        store.put(path, bytes.into()).await?;
        return Ok(());
    }
    let upload = store.put_multipart(path).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 16 << 20);
    writer.put(bytes);
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            StoreLocation::parse("file://./data").unwrap(),
            StoreLocation::Local("./data".into())
        );
        assert_eq!(
            StoreLocation::parse("/var/x").unwrap(),
            StoreLocation::Local("/var/x".into())
        );
        assert_eq!(
            StoreLocation::parse("memory://").unwrap(),
            StoreLocation::Memory(String::new())
        );
        assert!(StoreLocation::parse("s4://bucket").is_err());
        assert_eq!(
            StoreLocation::parse("s3://profiles/team-a/").unwrap(),
            StoreLocation::Cloud {
                cloud: Cloud::S3,
                bucket: "profiles".into(),
                prefix: "team-a".into()
            }
        );
        assert!(StoreLocation::parse("gs://").is_err());
        let mut s3 = StorageConfig::url("s3://b");
        s3.options.insert("endpoint".into(), "http://127.0.0.1:9000".into());
        s3.options.insert("allow_http".into(), "true".into());
        assert!(s3.validate().is_empty(), "{:?}", s3.validate());
        s3.options.insert("colour".into(), "blue".into());
        assert_eq!(s3.validate().len(), 1);
    }

    #[tokio::test]
    async fn stores_are_shared_per_id_and_url() {
        use object_store::ObjectStoreExt;
        let r = StoreRegistry::new(BTreeMap::from([
            ("a".to_string(), StorageConfig::url("memory://x")),
            ("b".to_string(), StorageConfig::url("memory://x")),
        ]));
        let a = r.open("a").unwrap();
        assert!(Arc::ptr_eq(&a, &r.open("a").unwrap()));
        // One store behind both ids and the URL.
        let path = object_store::path::Path::from("x");
        a.put(&path, "data".into()).await.unwrap();
        assert!(r.open("b").unwrap().head(&path).await.is_ok());
        assert!(r.open_url("memory://x").unwrap().head(&path).await.is_ok());
        assert!(matches!(r.open("c"), Err(StoreError::Unknown(_))));
        assert_eq!(r.url(DEFAULT_STORE).unwrap(), DEFAULT_STORE_URL);
    }
}
