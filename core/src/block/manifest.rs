//! The tenant manifest: which compacted blocks are live, which blocks were retired, and the
//! compaction jobs in progress (the protocol is in docs/storage.md).
//!
//! Version `n` of a tenant's manifest is the object `manifests/<tenant>/<n:020>.json`,
//! written once with a create-if-absent put: of two writers racing for the next version, one
//! gets [`ManifestError::Conflict`] and must read the new latest version and decide again.
//! Level-0 blocks are live from the moment they are written; [`live_blocks`] combines the
//! latest manifest with a listing of the tenant's blocks into what a query reads.

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::BlockError;
use super::paths::{BlockRef, list_blocks, parse_block_path};

pub const MANIFESTS_PREFIX: &str = "manifests";
const SUFFIX: &str = ".json";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Another process wrote this version first.
    #[error("manifest version {version} of tenant {tenant} was written by another process")]
    Conflict { tenant: String, version: u64 },
    #[error("manifest {path}: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("manifest of tenant {tenant}: {source}")]
    Store {
        tenant: String,
        source: object_store::Error,
    },
    #[error(transparent)]
    Blocks(#[from] BlockError),
}

pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// One version of a tenant's manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its own number; 0 for a tenant that has none yet (never written).
    pub version: u64,
    /// The live compacted blocks (level 1 and up).
    #[serde(default)]
    pub compacted: Vec<CompactedBlock>,
    /// Blocks no longer live (compaction inputs, blocks past retention), until deleted.
    #[serde(default)]
    pub retired: Vec<Retired>,
    /// Compaction jobs in progress.
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// A live compacted block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedBlock {
    pub path: String,
    pub level: u32,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub size: u64,
    pub profiles: u64,
}

/// A block that is no longer live, when it stopped being live, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub path: String,
    pub at_ms: i64,
    /// `compacted` (merged into another block) or `retention` (its data expired).
    #[serde(default = "compacted")]
    pub why: String,
}

fn compacted() -> String {
    "compacted".to_string()
}

/// A compaction job: who holds it, under which token, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The block it writes.
    pub output: String,
    pub level: u32,
    pub inputs: Vec<String>,
    /// The compactor process holding the lease.
    pub owner: String,
    /// The manifest version that granted the lease: a compactor commits only if the job
    /// still carries the token it was given.
    pub token: u64,
    pub expires_at_ms: i64,
}

impl Manifest {
    pub fn is_retired(&self, path: &str) -> bool {
        self.retired.iter().any(|r| r.path == path)
    }

    pub fn is_compacted(&self, path: &str) -> bool {
        self.compacted.iter().any(|c| c.path == path)
    }

    /// The job that writes `output`, if one is in progress.
    pub fn job(&self, output: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.output == output)
    }

    /// The next version to write on top of this one: the same content, numbered one up.
    pub fn next(&self) -> Manifest {
        Manifest {
            version: self.version + 1,
            ..self.clone()
        }
    }
}

pub fn manifest_path(tenant: &str, version: u64) -> Path {
    Path::from(format!("{MANIFESTS_PREFIX}/{tenant}/{version:020}{SUFFIX}"))
}

fn store_error(tenant: &str) -> impl FnOnce(object_store::Error) -> ManifestError + '_ {
    move |source| ManifestError::Store {
        tenant: tenant.to_string(),
        source,
    }
}

/// The versions of `tenant`'s manifest in the store, with their keys, oldest first.
pub async fn list_versions(store: &dyn ObjectStore, tenant: &str) -> Result<Vec<(u64, Path, i64)>> {
    let prefix = Path::from(format!("{MANIFESTS_PREFIX}/{tenant}"));
    let objects: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(store_error(tenant))?;
    let mut versions: Vec<(u64, Path, i64)> = objects
        .into_iter()
        .filter_map(|o| {
            let name = o.location.filename()?;
            let version = name.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((version, o.location, o.last_modified.timestamp_millis()))
        })
        .collect();
    versions.sort_by_key(|(v, _, _)| *v);
    Ok(versions)
}

/// The latest version of `tenant`'s manifest (an empty version 0 when there is none).
pub async fn read_latest(store: &dyn ObjectStore, tenant: &str) -> Result<Manifest> {
    // A version deleted by garbage collection between the listing and the read: list again.
    for _ in 0..3 {
        let Some((version, path, _)) = list_versions(store, tenant).await?.pop() else {
            return Ok(Manifest::default());
        };
        match read_version(store, &path).await {
            Ok(manifest) if manifest.version == version => return Ok(manifest),
            Ok(manifest) => {
                return Err(ManifestError::Corrupt {
                    path: path.to_string(),
                    detail: format!("it says it is version {}", manifest.version),
                });
            }
            Err(ManifestError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ManifestError::Corrupt {
        path: format!("{MANIFESTS_PREFIX}/{tenant}"),
        detail: "the latest version kept disappearing while being read".into(),
    })
}

async fn read_version(store: &dyn ObjectStore, path: &Path) -> Result<Manifest> {
    let bytes = store
        .get(path)
        .await
        .map_err(|source| ManifestError::Store {
            tenant: path.to_string(),
            source,
        })?
        .bytes()
        .await
        .map_err(|source| ManifestError::Store {
            tenant: path.to_string(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Corrupt {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

/// Writes `manifest` as its version of `tenant`'s manifest, only if that version does not
/// exist yet. A version that exists with this very content was written by an earlier attempt
/// of this call (its answer was lost, the store layer retried): that is success.
pub async fn write_version(store: &dyn ObjectStore, tenant: &str, manifest: &Manifest) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(
            &manifest_path(tenant, manifest.version),
            PutPayload::from(bytes),
            options,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let path = manifest_path(tenant, manifest.version);
            match read_version(store, &path).await {
                Ok(existing) if existing == *manifest => Ok(()),
                _ => Err(ManifestError::Conflict {
                    tenant: tenant.to_string(),
                    version: manifest.version,
                }),
            }
        }
        Err(source) => Err(store_error(tenant)(source)),
    }
}

/// The blocks a query of `tenant` reads: level-0 blocks not retired, and the compacted blocks
/// the latest manifest lists, oldest first. The manifest is read before the listing, so a
/// compaction committed in between is seen as not yet done: its inputs are still in place
/// (deleted only a grace period after they were retired) and its output not yet counted.
pub async fn live_blocks(store: &dyn ObjectStore, tenant: &str) -> Result<Vec<BlockRef>> {
    let manifest = read_latest(store, tenant).await?;
    live_blocks_of(store, tenant, &manifest).await
}

/// The live blocks of `tenant` by `manifest` (read before this call), as [`live_blocks`].
pub async fn live_blocks_of(store: &dyn ObjectStore, tenant: &str, manifest: &Manifest) -> Result<Vec<BlockRef>> {
    let listed = list_blocks(store, Some(tenant)).await?;
    let retired: HashSet<&str> = manifest.retired.iter().map(|r| r.path.as_str()).collect();
    let compacted: HashSet<&str> = manifest.compacted.iter().map(|c| c.path.as_str()).collect();
    let mut live: Vec<BlockRef> = Vec::with_capacity(listed.len());
    let mut seen: HashSet<String> = HashSet::new();
    for block in listed {
        let path = block.path.as_ref();
        let is_live = if block.level == 0 {
            !retired.contains(path)
        } else {
            compacted.contains(path)
        };
        if is_live {
            seen.insert(path.to_string());
            live.push(block);
        }
    }
    // A listed compacted block that is not in the store: reading it reports it missing,
    // rather than a query quietly answering without it.
    for c in &manifest.compacted {
        if seen.contains(&c.path) {
            continue;
        }
        let path = Path::from(c.path.as_str());
        if let Some(key) = parse_block_path(&path) {
            live.push(BlockRef {
                tenant: key.tenant,
                level: key.level,
                id: key.id,
                path,
                size: c.size,
                modified_ms: 0,
            });
        }
    }
    live.sort_by_key(|b| (b.id, b.level));
    Ok(live)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use ulid::Ulid;

    use super::*;
    use crate::block::paths::{block_path, level_path};

    #[tokio::test]
    async fn versions_are_written_once_and_the_latest_is_read() {
        let store = InMemory::new();
        assert_eq!(read_latest(&store, "t").await.unwrap(), Manifest::default());
        let first = Manifest::default().next();
        write_version(&store, "t", &first).await.unwrap();
        // A second writer of version 1 loses.
        let mut rival = Manifest::default().next();
        rival.retired.push(Retired {
            path: "x".into(),
            at_ms: 1,
            why: compacted(),
        });
        assert!(matches!(
            write_version(&store, "t", &rival).await,
            Err(ManifestError::Conflict { version: 1, .. })
        ));
        let mut second = read_latest(&store, "t").await.unwrap().next();
        second.retired.push(Retired {
            path: "y".into(),
            at_ms: 2,
            why: compacted(),
        });
        write_version(&store, "t", &second).await.unwrap();
        assert_eq!(read_latest(&store, "t").await.unwrap(), second);
        // Other tenants are apart.
        assert_eq!(read_latest(&store, "u").await.unwrap().version, 0);
        assert_eq!(list_versions(&store, "t").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn live_blocks_are_level_zero_not_retired_plus_the_compacted_ones() {
        let store = Arc::new(InMemory::new());
        let put = |path: Path| {
            let store = Arc::clone(&store);
            async move { store.put(&path, PutPayload::from_static(b"x")).await.unwrap() }
        };
        let (a, b, c, orphan) = (Ulid::new(), Ulid::new(), Ulid::new(), Ulid::new());
        for p in [
            block_path("t", a),
            block_path("t", b),
            level_path("t", 1, c),
            level_path("t", 1, orphan),
        ] {
            put(p).await;
        }
        let gone = Ulid::new();
        let mut m = Manifest::default().next();
        m.retired.push(Retired {
            path: block_path("t", a).to_string(),
            at_ms: 0,
            why: compacted(),
        });
        for id in [c, gone] {
            m.compacted.push(CompactedBlock {
                path: level_path("t", 1, id).to_string(),
                level: 1,
                min_time_ns: 0,
                max_time_ns: 0,
                size: 1,
                profiles: 1,
            });
        }
        write_version(store.as_ref(), "t", &m).await.unwrap();
        let live: Vec<String> = live_blocks(store.as_ref(), "t")
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.path.to_string())
            .collect();
        let mut expected = vec![
            block_path("t", b).to_string(),
            level_path("t", 1, c).to_string(),
            // Listed by the manifest but not in the store: kept, so a query reports it.
            level_path("t", 1, gone).to_string(),
        ];
        expected.sort_by_key(|p| parse_block_path(&Path::from(p.as_str())).unwrap().id);
        assert_eq!(live, expected);
    }
}
