//! The conformance suite on the template store. A real backend's version of this file reads
//! its server's address from an environment variable and panics, naming the variable, when
//! it is missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
use valkeyrie_template::TemplateConfig;

/// Handles on one template server, named uniquely per case.
struct TemplateTarget {
    server: String,
}

impl TemplateTarget {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        TemplateTarget {
            server: format!("conformance-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

#[async_trait]
impl TestTarget for TemplateTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let url = format!("template://{}", self.server);
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let store = TemplateConfig::default()
            .connect([self.server.clone()])
            .await
            .expect("connect to the template server");
        let revoked = store.client().server().revoke_lock(key, how).expect("revoke the lock");
        assert!(revoked, "{key} was not held");
    }
}

valkeyrie_core::conformance_suite!(TemplateTarget::new());
