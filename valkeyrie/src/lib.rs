//! # valkeyrie
//!
//! One async API over distributed key/value stores — Consul, etcd, ZooKeeper, Redis,
//! DynamoDB and an embedded store — so service discovery, configuration, leader election
//! and locking code runs unchanged on whichever store an operator has. The Rust counterpart
//! of Go's `kvtools/valkeyrie`.
//!
//! This crate is the one dependency line: it re-exports [`valkeyrie_core`]'s API and brings
//! in one backend per feature, linked so that [`open`] finds it by name (a backend crate a
//! program depends on but never names would otherwise be missing from the registry):
//!
//! | feature | store | URL | typed config |
//! |---|---|---|---|
//! | `boltlike` (default) | embedded, on sled | `boltlike:///path/to/db` | `boltlike::BoltlikeConfig` |
//! | `consul` | Consul | `consul://h1:8500?datacenter=dc1` | `consul::ConsulConfig` |
//! | `dynamodb` | DynamoDB | `dynamodb://TABLE?region=…` | `dynamodb::DynamoDbConfig` |
//! | `etcd` | etcd v3 (building needs `protoc`) | `etcd://h1:2379,h2:2379` | `etcd::EtcdConfig` |
//! | `redis` | Redis | `redis://h:6379/0` | `redis::RedisConfig` |
//! | `zookeeper` | ZooKeeper | `zookeeper://h1:2181/chroot` | `zookeeper::ZookeeperConfig` |
//! | `zookeeper-tls` | ZooKeeper, also over TLS (brings rustls's aws-lc-rs provider; see `valkeyrie_zookeeper`'s docs) | `zookeeper://h1:2281/chroot?ca_file=…` | `zookeeper::ZookeeperConfig` |
//! | `all` | every one above but `zookeeper-tls` | | |
//!
//! The in-memory store (`memory://`) is always there. Each backend crate also works on its
//! own, with `valkeyrie-core` and a `use valkeyrie_etcd as _;` line to link it.
//!
//! ```toml
//! [dependencies]
//! valkeyrie = { version = "0.1", features = ["etcd"] }
//! ```
//!
//! ## Example
//!
//! ```
//! # async fn demo() -> valkeyrie::Result<()> {
//! // `memory://` is in every build; with feature `boltlike` (the default), for example
//! // `valkeyrie::open("boltlike:///var/lib/app/kv.db")`.
//! let kv = valkeyrie::open("memory://").await?;
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub use valkeyrie_core::*;

#[cfg(feature = "boltlike")]
pub use valkeyrie_boltlike as boltlike;
#[cfg(feature = "consul")]
pub use valkeyrie_consul as consul;
#[cfg(feature = "dynamodb")]
pub use valkeyrie_dynamodb as dynamodb;
#[cfg(feature = "etcd")]
pub use valkeyrie_etcd as etcd;
#[cfg(feature = "redis")]
pub use valkeyrie_redis as redis;
#[cfg(feature = "zookeeper")]
pub use valkeyrie_zookeeper as zookeeper;

/// The names of the stores this build enables, besides `memory` which is always there.
pub const ENABLED: &[&str] = &[
    #[cfg(feature = "boltlike")]
    valkeyrie_boltlike::BOLTLIKE,
    #[cfg(feature = "consul")]
    valkeyrie_consul::CONSUL,
    #[cfg(feature = "dynamodb")]
    valkeyrie_dynamodb::DYNAMODB,
    #[cfg(feature = "etcd")]
    valkeyrie_etcd::ETCD,
    #[cfg(feature = "redis")]
    valkeyrie_redis::REDIS,
    #[cfg(feature = "redis")]
    valkeyrie_redis::REDISS,
    #[cfg(feature = "zookeeper")]
    valkeyrie_zookeeper::ZOOKEEPER,
];

/// Names every enabled backend crate, so each stays in the program's crate graph and its
/// `inventory` registration is linked even when the program names none of them; the entry
/// points below call it (the facade's tests check the registry from outside).
fn link_backends() {
    #[cfg(feature = "boltlike")]
    std::hint::black_box(std::any::type_name::<valkeyrie_boltlike::BoltlikeStore>());
    #[cfg(feature = "consul")]
    std::hint::black_box(std::any::type_name::<valkeyrie_consul::ConsulStore>());
    #[cfg(feature = "dynamodb")]
    std::hint::black_box(std::any::type_name::<valkeyrie_dynamodb::DynamoDbStore>());
    #[cfg(feature = "etcd")]
    std::hint::black_box(std::any::type_name::<valkeyrie_etcd::EtcdStore>());
    #[cfg(feature = "redis")]
    std::hint::black_box(std::any::type_name::<valkeyrie_redis::RedisStore>());
    #[cfg(feature = "zookeeper")]
    std::hint::black_box(std::any::type_name::<valkeyrie_zookeeper::ZookeeperStore>());
}

/// Opens a store by URL, such as `etcd://10.0.0.1:2379?request_timeout=2s`, and returns a
/// handle on it; see [`valkeyrie_core::open`]. Cancel safety as there.
///
/// # Errors
/// As [`valkeyrie_core::open`]: an unknown scheme lists the stores this build has.
pub async fn open(url: &str) -> Result<Kv> {
    link_backends();
    valkeyrie_core::open(url).await
}

/// Opens the store registered as `name` on `endpoints` with `config` (typed or parameters),
/// and returns a handle on it; see [`valkeyrie_core::new_store`]. Cancel safety as there.
///
/// # Errors
/// As [`valkeyrie_core::new_store`].
pub async fn new_store<I, E>(name: &str, endpoints: I, config: impl Into<StoreConfig>) -> Result<Kv>
where
    I: IntoIterator<Item = E>,
    E: Into<String>,
{
    link_backends();
    valkeyrie_core::new_store(name, endpoints, config).await
}

/// The registered store names, sorted: `memory` and the enabled features' stores.
pub fn constructors() -> Vec<&'static str> {
    link_backends();
    valkeyrie_core::constructors()
}
