//! Every TLS backend connects in a graph with both providers and none installed: none
//! panics, only ZooKeeper installs one (ring), and the others leave the process's
//! provider alone.

use rustls::crypto::CryptoProvider;
use valkeyrie_security::{app_key, Connection, Secured};

/// Connects as the app user, writes and deletes a key.
async fn round_trip(store: Secured) {
    let kv = store.connect(&Connection::app(store)).await;
    let key = app_key("providers");
    kv.put(&key, "1")
        .await
        .unwrap_or_else(|err| panic!("{}: put: {err}", store.name()));
    assert!(
        kv.delete(&key)
            .await
            .unwrap_or_else(|err| panic!("{}: delete: {err}", store.name())),
        "{}: {key} was there to delete",
        store.name()
    );
    kv.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_connects_and_only_zookeeper_installs_ring() {
    assert!(
        CryptoProvider::get_default().is_none(),
        "nothing may have installed a provider before the first handle"
    );
    for store in [Secured::Etcd, Secured::Redis, Secured::Consul, Secured::DynamoDb] {
        round_trip(store).await;
        assert!(
            CryptoProvider::get_default().is_none(),
            "{} installed a process-wide provider",
            store.name()
        );
    }
    // Last: it installs the provider the process then keeps.
    round_trip(Secured::ZooKeeper).await;
    let installed = CryptoProvider::get_default().expect("ZooKeeper's TLS handle installed a provider");
    let ring = rustls::crypto::ring::default_provider();
    assert_eq!(
        format!("{:?}", installed.cipher_suites),
        format!("{:?}", ring.cipher_suites),
        "the provider installed is ring"
    );
}
