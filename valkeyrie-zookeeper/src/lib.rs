//! # valkeyrie-zookeeper
//!
//! The ZooKeeper backend of valkeyrie, on [zookeeper-client](https://docs.rs/zookeeper-client).
//! Registered as `zookeeper`: `valkeyrie_core::open("zookeeper://h1:2181,h2:2181/app?session_timeout=10s")`
//! once this crate is linked (`use valkeyrie_zookeeper as _;`). The URL path is the chroot.
//!
//! * A key `a/b` is the znode `/a/b` holding the raw value, as the Go `kvtools/zookeeper`
//!   store writes it. Missing parents are created holding the one byte `0x01` (the legacy
//!   libkv directory marker): they are not keys, and they are removed with their last
//!   child. A value that starts with `0x01` is stored with one more `0x01` in front (Go
//!   services read that byte as part of the value).
//! * `last_index` is the low 32 bits of the node's creation zxid above its data version.
//!   The Go store uses the bare version, which restarts at 0 when a node is re-created and
//!   so can match a stale pair; the creation half tells incarnations apart. Go passes the
//!   low 32 bits of an index to ZooKeeper as the expected version, so Go and Rust services
//!   compare-and-set with each other's indexes; an index from Go (high half 0) is compared
//!   by version only, as Go does. Atomic calls compare, then write at the node's version;
//!   the one race left is a delete and re-create of the node between the two.
//! * A TTL write makes a TTL node (the server needs `zookeeper.extendedTypesEnabled=true`;
//!   TTL nodes are deleted by the server's container sweep, every
//!   `znode.container.checkIntervalMs`, one minute by default), marked by one ACL-version
//!   bump because ZooKeeper hides the node type in stats; a `keep_alive` write makes an
//!   ephemeral node, which lives exactly as long as the handle's session (the Go store
//!   makes every TTL key ephemeral). A session the ensemble expires is replaced by a new
//!   one in the background, so the same handle works again; what the old session held
//!   (locks, `keep_alive` keys, watches) is lost with it and reported as lost.
//! * `list` walks the tree, `delete_tree` deletes depth-first, both with bounded
//!   concurrency; lock nodes are never listed.
//! * `commit` reads every node it compares or writes in one multi-read, evaluates the
//!   compares on that snapshot, then writes in one `multi` guarded by the versions read (a
//!   create-then-delete guards a node that must stay absent; a lock fence checks the
//!   holder's contender node), starting over if anything moved in between: two round trips,
//!   plus directory nodes for missing parents and TTL marks after a commit.
//! * Watches are persistent (recursive for `watch_tree`) ZooKeeper watches, re-reading each
//!   changed node; a reconnect sends a fresh snapshot; session expiry ends them with an error.
//! * Locks are the Go layout: ephemeral sequential children `<key>/_c_<32 hex>-lock-<seq>`;
//!   the lowest holds, each waiter watches only its predecessor. The lock value is written
//!   to `<key>`. A lock lives as long as the holder's session: others take it over once the
//!   server expires the session, so `capabilities().lock_ttl` is false. A
//!   `LockOptions::ttl` is accepted and honoured in the safe direction: the holder's lost
//!   signal fires once it has not reached the server for the TTL or the session timeout,
//!   whichever is shorter, so code written for every store runs here unchanged. The
//!   fencing token is the contender node's creation zxid.
//!
//! ## Credentials, ACLs and TLS
//!
//! With `username` and `password` (digest authentication) every node this store creates
//! is the user's alone (`digest:USER:HASH:cdrwa`): another user can neither read, change,
//! delete nor lock it; `open_acls` keeps the open ACL instead. A `NoAuth` answer is
//! `PermissionDenied`, an `AuthFailed` one (a server enforcing authentication)
//! `Unauthenticated`.
//!
//! TLS (the server's `secureClientPort`) is behind the crate's `tls` feature. It brings
//! rustls's aws-lc-rs provider (a C build) into the graph, because zookeeper-client's TLS
//! uses rustls's default provider, and installs ring as the process-wide provider when a
//! TLS handle is built and none is installed yet (a program that installs its own first
//! keeps it). Without the
//! feature, TLS settings are `InvalidConfiguration` rather than ignored.
//!
//! ## Sharing a store with Go services
//!
//! A Go service on `github.com/kvtools/zookeeper` (v1.0.2) reads and writes the same
//! nodes, compare-and-sets with this store's indexes (and this store with its), and takes
//! the same locks (checked by the interop suite in `interop/`). Differences to know:
//!
//! * Go creates missing parents empty, and both libraries list those as empty keys;
//!   parents created here hold the `0x01` marker, which Go lists as a one-byte value.
//! * A Go index of 0 (a node created and never rewritten) is `PreviousNotSpecified` for
//!   this store's atomic calls: read the key here first to get its full index.
//! * Go makes every TTL key ephemeral, so it goes when the Go writer's session ends; TTL
//!   keys written here are TTL nodes, which Go reads as ordinary nodes until they expire.
//! * Go's `Lock` ignores its context: a Go waiter cannot give up waiting.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::Kv;
//! use valkeyrie_zookeeper::ZookeeperConfig;
//!
//! let kv = Kv::new(ZookeeperConfig::default().connect(["127.0.0.1:2181"]).await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod lock;
mod node;
mod store;
mod tls;
mod tree;
mod txn;
mod watch;

pub use config::ZookeeperConfig;
pub use store::ZookeeperStore;

/// The crate-private node data codec and the config check, for the fuzz targets of
/// `fuzz/` only (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use valkeyrie_core::{Bytes, Result};

    use crate::ZookeeperConfig;

    /// Checks a config as opening the store does, before connecting.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &ZookeeperConfig) -> Result<()> {
        config.validate()
    }

    /// The value a node's data holds, `None` for a directory node.
    pub fn decode(data: Vec<u8>) -> Option<Bytes> {
        crate::node::decode(data)
    }

    /// The data a node is written with for `value`.
    pub fn encode(value: &[u8]) -> Vec<u8> {
        crate::node::encode(value)
    }
}

/// The registered name of this store, also its URL scheme.
pub const ZOOKEEPER: &str = "zookeeper";
