//! What flamepipe stored: every profile of every live block (what a query reads: segments
//! not yet replaced by compaction, and the compacted blocks the manifest lists), read with
//! the block reader.

use std::path::Path;
use std::sync::Arc;

use flamepipe_core::Profile;
use flamepipe_core::block::{BlockReader, list_blocks, live_blocks};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

/// A stored profile with the tenant it belongs to.
pub struct StoredProfile {
    pub tenant: String,
    pub profile: Profile,
}

pub fn read_store(dir: &Path) -> Vec<StoredProfile> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if !dir.exists() {
            return Vec::new();
        }
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).expect("store dir"));
        read_live(store).await
    })
}

/// Every profile of every live block of `store`, every tenant.
pub async fn read_live(store: Arc<dyn ObjectStore>) -> Vec<StoredProfile> {
    let mut tenants: Vec<String> = list_blocks(store.as_ref(), None)
        .await
        .expect("list blocks")
        .into_iter()
        .map(|b| b.tenant)
        .collect();
    tenants.sort();
    tenants.dedup();
    let mut out = Vec::new();
    for tenant in tenants {
        for block in live_blocks(store.as_ref(), &tenant).await.expect("live blocks") {
            let reader = BlockReader::open(Arc::clone(&store), block.path.clone())
                .await
                .expect("open block");
            for ds in &reader.meta().datasets {
                for profile in reader.profiles(ds).await.expect("read dataset") {
                    out.push(StoredProfile {
                        tenant: block.tenant.clone(),
                        profile,
                    });
                }
            }
        }
    }
    out
}

/// Reads the store until `done` holds for what is there, or `timeout` passes. SDKs that
/// upload at exit do not all wait for the answer, so their last upload may land after
/// they exit.
pub fn read_store_until(
    dir: &Path,
    timeout: std::time::Duration,
    done: impl Fn(&[StoredProfile]) -> bool,
) -> Vec<StoredProfile> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let stored = read_store(dir);
        if done(&stored) || std::time::Instant::now() >= deadline {
            return stored;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
