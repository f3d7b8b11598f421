//! What the Redis test binaries share: the conformance target, and a plain fred client on
//! the same deployment for what the store's API cannot do (take a lock away, read the
//! layout). A target is named by a store URL: `redis://host:port` for a single server,
//! `redis://h1:p1,h2:p2?topology=cluster` for a Redis Cluster.

use std::sync::Arc;

use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, Config, KeysInterface, Server, ServerConfig};
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;

/// The URL in the environment variable `name`, set by `cargo xtask test`.
pub(crate) fn url_from(name: &str, backend: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `cargo xtask test --backend {backend}`, or point it at your Redis")
    })
}

/// Whether `url` names a Redis Cluster.
pub(crate) fn is_cluster(url: &str) -> bool {
    url.contains("topology=cluster")
}

/// `url` with `value_encoding=raw` added.
pub(crate) fn with_raw_values(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}value_encoding=raw")
}

/// A connected fred client on the deployment `url` names, outside the store.
pub(crate) async fn plain_client(url: &str) -> Client {
    let config = if is_cluster(url) {
        let endpoints = url.trim_start_matches("redis://").split('?').next().unwrap_or_default();
        let hosts = endpoints
            .split(',')
            .map(|endpoint| {
                let (host, port) = endpoint.rsplit_once(':').expect("host:port");
                Server::new(host, port.parse::<u16>().expect("a port"))
            })
            .collect();
        Config {
            server: ServerConfig::Clustered {
                hosts,
                policy: Default::default(),
            },
            ..Config::default()
        }
    } else {
        Config::from_url(url).expect("a redis URL")
    };
    let client = Client::new(config, None, None, None);
    client.init().await.expect("a plain redis client");
    client
}

/// Opens stores at `url`; on a cluster, each case's keys share a hash tag.
pub(crate) struct RedisTarget {
    pub(crate) url: String,
}

#[async_trait]
impl TestTarget for RedisTarget {
    async fn open(&self) -> Arc<dyn Store> {
        valkeyrie_core::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let client = plain_client(&self.url).await;
        match how {
            LockRevocation::DeleteRecord => client.del::<i64, _>(key).await.expect("delete the lock key"),
            LockRevocation::Expire => client
                .pexpire::<i64, _>(key, 1, None)
                .await
                .expect("expire the lock key"),
        };
        client.quit().await.expect("quit");
    }

    fn case_prefix(&self, unique: &str) -> String {
        if is_cluster(&self.url) {
            format!("{{vk-conformance/{unique}}}")
        } else {
            format!("vk-conformance/{unique}")
        }
    }
}
