//! The conformance suite on the embedded store, each case on its own database directory.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use valkeyrie_boltlike::BoltlikeConfig;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;

/// Handles opened on one database path, as separate parts of a program would open them.
struct BoltlikeTarget {
    dir: tempfile::TempDir,
}

impl BoltlikeTarget {
    fn new() -> Self {
        BoltlikeTarget {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("kv.db")
    }
}

#[async_trait]
impl TestTarget for BoltlikeTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let path = self.path();
        let url = format!("boltlike://{}", path.display());
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let store = BoltlikeConfig::at(self.path())
            .open()
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        let revoked = store
            .revoke_lock(key, how)
            .unwrap_or_else(|e| panic!("revoke {key}: {e}"));
        assert!(revoked, "{key} was not held");
    }
}

valkeyrie_core::conformance_suite!(BoltlikeTarget::new());
