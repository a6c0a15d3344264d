//! Object stores, declared once by id and shared per process.
//!
//! pipeline.yaml declares stores in its `storage` section (`local: { url: file://./data }`)
//! and components refer to them by id (`store: local`). The registry opens each store once,
//! so an exporter and the query API naming the same id share one store (which matters for
//! `memory://`). Without a declaration, the id `local` means `file://./data`, so a config
//! that names no store keeps working. The command line (`flamepipe blocks --store URL`)
//! opens stores by URL ([`StoreRegistry::open_url`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use serde::Deserialize;

use crate::config::{ConfigIssue, Validate};

/// The store id components use when their config names none.
pub const DEFAULT_STORE: &str = "local";
/// What [`DEFAULT_STORE`] means when `storage` does not declare it.
pub const DEFAULT_STORE_URL: &str = "file://./data";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0:?}: expected file://PATH, a path, or memory://")]
    Unsupported(String),
    #[error("cannot open store {url:?}: {message}")]
    Open { url: String, message: String },
    #[error("unknown store {0:?}: declare it under storage")]
    Unknown(String),
}

/// Where a store URL points, checked without touching anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoreLocation {
    Local(PathBuf),
    Memory(String),
}

impl StoreLocation {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(StoreLocation::Memory(name.to_string()));
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
}

impl Validate for StorageConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        match StoreLocation::parse(&self.url) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigIssue::new("url", e.to_string())],
        }
    }
}

/// The declared stores, opened on first use and shared.
#[derive(Clone, Default)]
pub struct StoreRegistry {
    declared: Arc<BTreeMap<String, StorageConfig>>,
    open: Arc<Mutex<HashMap<StoreLocation, Arc<dyn ObjectStore>>>>,
}

impl StoreRegistry {
    pub fn new(declared: BTreeMap<String, StorageConfig>) -> Self {
        StoreRegistry {
            declared: Arc::new(declared),
            open: Arc::default(),
        }
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

    /// Opens store `id` (once per process; later calls share it).
    pub fn open(&self, id: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let url = self.url(id)?.to_string();
        self.open_url(&url)
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

    /// Opens a store by URL, as the command line names them.
    pub fn open_url(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
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
        };
        open.insert(location, Arc::clone(&store));
        Ok(store)
    }
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
    }

    #[test]
    fn stores_are_shared_per_id_and_url() {
        let r = StoreRegistry::new(BTreeMap::from([
            (
                "a".to_string(),
                StorageConfig {
                    url: "memory://x".into(),
                },
            ),
            (
                "b".to_string(),
                StorageConfig {
                    url: "memory://x".into(),
                },
            ),
        ]));
        let a = r.open("a").unwrap();
        assert!(Arc::ptr_eq(&a, &r.open("a").unwrap()));
        assert!(Arc::ptr_eq(&a, &r.open("b").unwrap()));
        assert!(Arc::ptr_eq(&a, &r.open_url("memory://x").unwrap()));
        assert!(matches!(r.open("c"), Err(StoreError::Unknown(_))));
        assert_eq!(r.url(DEFAULT_STORE).unwrap(), DEFAULT_STORE_URL);
    }
}
