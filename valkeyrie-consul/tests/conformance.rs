//! The conformance suite against a real Consul agent: `VALKEYRIE_CONSUL_ENDPOINTS` (set by
//! `cargo xtask test`) names it.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
// Opened by URL only: link the backend so it registers itself.
use valkeyrie_consul as _;

struct ConsulTarget;

#[async_trait]
impl TestTarget for ConsulTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let url = format!("consul://{}", support::endpoints().join(","));
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let agent = support::Agent::new();
        let holder = agent
            .entry(key)
            .await
            .and_then(|entry| entry["Session"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{key} is not held"));
        match how {
            LockRevocation::DeleteRecord => agent.delete(key).await,
            LockRevocation::Expire => agent.destroy_session(&holder).await,
        }
    }
}

valkeyrie_core::conformance_suite!(ConsulTarget);
