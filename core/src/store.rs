//! Object stores by URL, shared per process.
//!
//! Components name stores in YAML (`file://./data`, `memory://`, a bare path); the registry
//! opens each URL once so that an exporter and the query side given the same URL see the same
//! store (which matters for `memory://`). Remote stores (S3, GCS, Azure) come with compaction.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0:?}: expected file://PATH, a path, or memory://")]
    Unsupported(String),
    #[error("cannot open store {url:?}: {message}")]
    Open { url: String, message: String },
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

#[derive(Clone, Default)]
pub struct StoreRegistry {
    open: Arc<Mutex<HashMap<StoreLocation, Arc<dyn ObjectStore>>>>,
}

impl StoreRegistry {
    /// Makes `url` open `store`: for tests that build components with their default configs
    /// without touching the disk.
    pub fn preset(&self, url: &str, store: Arc<dyn ObjectStore>) -> Result<(), StoreError> {
        let location = StoreLocation::parse(url)?;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(location, store);
        Ok(())
    }

    pub fn open(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
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
    fn memory_stores_are_shared_per_url() {
        let r = StoreRegistry::default();
        let a = r.open("memory://x").unwrap();
        let b = r.open("memory://x").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
