//! # valkeyrie-etcd
//!
//! The etcd v3 backend of valkeyrie, on [`etcd-client`](https://docs.rs/etcd-client).
//! Registered as `etcd`: `valkeyrie_core::open("etcd://10.0.0.1:2379,10.0.0.2:2379?request_timeout=2s")`
//! once this crate is linked (`use valkeyrie_etcd as _;`).
//!
//! * Values are stored raw under the normalized key, as the Go `kvtools/etcdv3` store does;
//!   `last_index` is the key's mod revision.
//! * `consistent` reads are linearizable, others serializable. `list` reads `dir` and the
//!   range `dir/…` at one revision, in pages.
//! * A TTL write gets its own lease (whole seconds, at least etcd's 2 s minimum).
//!   `keep_alive` writes of one TTL share one lease per handle, which the handle's driver
//!   keeps alive with one request per period however many keys use it, and revokes once no
//!   key does.
//! * `atomic_put`/`atomic_delete` are transactions on `mod_revision` (or `create_revision == 0`
//!   to create); failures are `KeyExists`, `KeyModified` or `KeyNotFound`.
//! * `commit` is one etcd `Txn`: compares on version, mod revision, value, and for lock
//!   fences the create revision of the holder's contender key; the failure branch reads the
//!   compared keys, so the failed compare is named without a second round trip. A TTL put
//!   adds one lease grant per distinct TTL. At most 128 compares plus operations (etcd's
//!   default `--max-txn-ops`).
//! * Watches start at the revision of their initial read and resume after a dropped
//!   connection from the last revision seen; when that revision was compacted they send a
//!   fresh snapshot instead of a gap. `watch_from`/`watch_tree_from` replay from the revision
//!   after the given index (`capabilities().watch_replay`), with the same snapshot fallback.
//! * `get_many` is one `Txn` of reads per 128 keys, all at the first one's revision;
//!   `list_stream` pages are range reads with a limit.
//! * Locks use the Go layout — a lease-bound key `<key>___lock/<lease id in hex>` per
//!   contender, ordered by create revision, and the lock value at `<key>` — so Go and Rust
//!   services exclude each other. The fencing token is the lock key's create revision.
//!
//! ## Sharing a store with Go services
//!
//! A Go service on `github.com/kvtools/etcdv3` (v1.0.3) reads and writes the same keys,
//! values and indexes, sees the same TTL leases and takes the same locks (checked by the
//! interop suite in `interop/`). Where the Go store's layout carries a bug, this store
//! keeps the layout but not the bug:
//!
//! * Go keeps one session lease per `NewLock` alive forever, also for a waiter that gave
//!   up, and never revokes it; here each acquisition has its own lease, revoked on unlock
//!   and when an attempt is abandoned.
//! * Go writes the lock value without a lease, so it outlives a holder that died; here,
//!   with `delete_on_unlock`, the value is bound to the lock's lease and goes with it.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::Kv;
//! use valkeyrie_etcd::EtcdConfig;
//!
//! let kv = Kv::new(EtcdConfig::default().connect(["127.0.0.1:2379"]).await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod lease;
mod lock;
mod store;
mod txn;
mod watch;

pub use config::EtcdConfig;
pub use store::EtcdStore;

/// The crate-private config check, for the fuzz targets of `fuzz/` only (feature
/// `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Checks a config as connecting does, before any connection.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &crate::EtcdConfig) -> valkeyrie_core::Result<()> {
        config.validate()
    }
}

/// The registered name of this store, also its URL scheme.
pub const ETCD: &str = "etcd";
