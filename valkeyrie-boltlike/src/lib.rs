//! # valkeyrie-boltlike
//!
//! The embedded valkeyrie store, on [sled](https://docs.rs/sled) 0.34: a database in a
//! local directory, no server. Unlike the Go BoltDB store it implements every call,
//! including `watch`, `watch_tree`, TTLs and locks (with TTL, fencing tokens and a lost
//! signal), within one process: it runs on valkeyrie-core's [local
//! engine](valkeyrie_core::raw::local), which also gives the in-memory store its semantics.
//!
//! * Handles opened on one path in one process share the database (and its watches and
//!   locks); a second process opening the same path gets a clear error, never corruption.
//! * Data survives close and reopen; `sync_writes` makes each write durable before the call
//!   returns. `last_index` comes from sled's persistent id generator, so it never repeats
//!   across restarts (the Go store's counter restarts at 0).
//! * Registered as `boltlike`: `valkeyrie_core::open("boltlike:///var/lib/app/kv.db")`
//!   works once this crate is linked (`use valkeyrie_boltlike as _;`).
//!
//! Layout: [`client`] explains what is written where.
//!
//! ## Example
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_boltlike::BoltlikeConfig;
//! use valkeyrie_core::Kv;
//!
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let kv = Kv::new(BoltlikeConfig::at(dir.path().join("kv.db")).open().await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! kv.close().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod client;
mod config;
mod error;
mod store;

pub use config::BoltlikeConfig;
pub use store::BoltlikeStore;

/// The crate-private config check, for the fuzz targets of `fuzz/` only (feature
/// `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Checks a config as opening does, before touching the disk.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &crate::BoltlikeConfig) -> valkeyrie_core::Result<()> {
        config.validate()
    }
}

/// The registered name of this store.
pub const BOLTLIKE: &str = "boltlike";
