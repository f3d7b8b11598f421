//! A program that installed its own provider (aws-lc-rs here) keeps it: every TLS backend
//! connects, and the ZooKeeper backend does not replace it.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use valkeyrie_security::{app_key, Connection, Secured};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_programs_provider_stays() {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .expect("the first provider installed");
    let own = Arc::clone(CryptoProvider::get_default().expect("the provider just installed"));
    for store in [
        Secured::ZooKeeper,
        Secured::Etcd,
        Secured::Redis,
        Secured::Consul,
        Secured::DynamoDb,
    ] {
        let kv = store.connect(&Connection::app(store)).await;
        let key = app_key("own-provider");
        kv.put(&key, "1")
            .await
            .unwrap_or_else(|err| panic!("{}: put: {err}", store.name()));
        assert!(
            kv.delete(&key).await.expect("delete"),
            "{}: {key} was there to delete",
            store.name()
        );
        kv.close().await.expect("close");
        let installed = CryptoProvider::get_default().expect("a provider is installed");
        assert!(
            Arc::ptr_eq(installed, &own),
            "{} replaced the program's provider",
            store.name()
        );
    }
}
