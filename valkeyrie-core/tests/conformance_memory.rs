//! The conformance suite on the in-memory store.

use std::sync::Arc;

use async_trait::async_trait;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::{MemoryStore, Store};

/// Handles on one private in-memory store.
struct MemoryTarget {
    first: MemoryStore,
}

#[async_trait]
impl TestTarget for MemoryTarget {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.first.handle())
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let revoked = self
            .first
            .revoke_lock(key, how)
            .unwrap_or_else(|e| panic!("revoke {key}: {e}"));
        assert!(revoked, "{key} was not held");
    }
}

valkeyrie_core::conformance_suite!(MemoryTarget {
    first: MemoryStore::new()
});

/// The same suite through every layer (`testsuite::Layered`).
mod layered {
    use super::*;

    valkeyrie_core::conformance_suite!(valkeyrie_core::testsuite::Layered(MemoryTarget {
        first: MemoryStore::new()
    }));
}
