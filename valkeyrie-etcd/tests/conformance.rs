//! The conformance suite against a real etcd: `VALKEYRIE_ETCD_ENDPOINTS` (set by
//! `cargo xtask test`) names it.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions, SortOrder, SortTarget};
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
// Opened by URL only: link the backend so it registers itself.
use valkeyrie_etcd as _;

const ENDPOINTS: &str = "VALKEYRIE_ETCD_ENDPOINTS";

fn endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS).unwrap_or_else(|_| {
        panic!("{ENDPOINTS} is not set: run `cargo xtask test --backend etcd`, or point it at your etcd (host:port,…)")
    });
    value.split(',').map(str::to_owned).collect()
}

struct EtcdTarget;

#[async_trait]
impl TestTarget for EtcdTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let url = format!("etcd://{}", endpoints().join(","));
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let urls: Vec<String> = endpoints().iter().map(|e| format!("http://{e}")).collect();
        let mut client = Client::connect(&urls, None).await.expect("a raw etcd client");
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let holder = client
            .get(format!("{key}___lock/"), Some(oldest))
            .await
            .expect("read the contenders");
        let holder = holder.kvs().first().unwrap_or_else(|| panic!("{key} is not held"));
        match how {
            LockRevocation::DeleteRecord => {
                client
                    .delete(holder.key(), None)
                    .await
                    .expect("delete the holder's key");
            }
            LockRevocation::Expire => {
                client
                    .lease_revoke(holder.lease())
                    .await
                    .expect("revoke the holder's lease");
            }
        }
    }
}

valkeyrie_core::conformance_suite!(EtcdTarget);

/// The same suite through every layer an application may add (`testsuite::Layered`): on
/// one real backend, as on the memory store.
mod layered {
    use super::*;

    valkeyrie_core::conformance_suite!(valkeyrie_core::testsuite::Layered(EtcdTarget));
}
