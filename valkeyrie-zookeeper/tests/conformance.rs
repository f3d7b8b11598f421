//! The conformance suite against a real ZooKeeper: `VALKEYRIE_ZOOKEEPER_ENDPOINTS` (set by
//! `cargo xtask test`) names it.

use std::sync::Arc;

use async_trait::async_trait;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
use valkeyrie_zookeeper::ZookeeperConfig;

const ENDPOINTS: &str = "VALKEYRIE_ZOOKEEPER_ENDPOINTS";

fn endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS).unwrap_or_else(|_| {
        panic!("{ENDPOINTS} is not set: run `cargo xtask test --backend zookeeper`, or point it at your ensemble")
    });
    value.split(',').map(str::to_owned).collect()
}

struct ZookeeperTarget;

#[async_trait]
impl TestTarget for ZookeeperTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let url = format!("zookeeper://{}", endpoints().join(","));
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    /// ZooKeeper cannot expire another client's session from outside; deleting the holder's
    /// ephemeral contender node is what an expiry does to the lock, so both revocations do it.
    async fn revoke_lock(&self, key: &str, _how: LockRevocation) {
        let store = ZookeeperConfig::default()
            .connect(endpoints())
            .await
            .expect("a ZooKeeper session");
        let client = store.client().expect("an open session");
        let path = format!("/{key}");
        let mut contenders: Vec<String> = client
            .list_children(&path)
            .await
            .expect("list the contenders")
            .into_iter()
            .filter(|name| name.starts_with("_c_") && name.contains("-lock-"))
            .collect();
        contenders.sort_by_key(|name| name.rsplit("-lock-").next().unwrap_or_default().to_owned());
        let holder = contenders.first().unwrap_or_else(|| panic!("{key} is not held"));
        client
            .delete(&format!("{path}/{holder}"), None)
            .await
            .expect("delete the holder's node");
    }

    fn expiry_slack(&self) -> std::time::Duration {
        // TTL nodes and emptied containers are reaped by the server's sweep (500 ms in the
        // harness, one minute by default).
        std::time::Duration::from_secs(4)
    }
}

valkeyrie_core::conformance_suite!(ZookeeperTarget);
