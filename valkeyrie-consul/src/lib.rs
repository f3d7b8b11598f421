//! # valkeyrie-consul
//!
//! The Consul backend of valkeyrie, on [`rs-consul`](https://docs.rs/rs-consul) and its HTTP
//! stack (hyper, rustls on ring). Registered as `consul`:
//! `valkeyrie_core::open("consul://10.0.0.1:8500?datacenter=dc1")` once this crate is linked
//! (`use valkeyrie_consul as _;`).
//!
//! * Values are stored raw under the normalized key with the Go store's flags
//!   (`0x2ddccbc058a50c18`), as `kvtools/consul` writes them; `last_index` is the key's
//!   `ModifyIndex`.
//! * Every write is a transaction stating what it assumes about the key, so `atomic_put`,
//!   `atomic_delete` and `delete` are atomic and return exact indexes (failures are
//!   `KeyExists`, `KeyModified` or `KeyNotFound`). A transaction carries values in base64,
//!   so values are limited to about 383 KiB with Consul's default `txn_max_req_len`
//!   (see [`ConsulConfig::txn_max_req_len`]); larger ones are `ValueTooLarge` before sending.
//! * `consistent` reads use `?consistent`, others Consul's default mode. `list` and
//!   `watch_tree` read the prefix recursively and keep `dir` and what is below it.
//! * `list_stream` lists the keys once (`?keys`, recursive, no values, consistent as
//!   `list`), then reads each page's values with `get_many`: only the keys and one page of
//!   values are held. `get_many` is concurrent `get`s (16 in flight), not one snapshot:
//!   a `/v1/txn` `get` rolls the whole transaction back on a missing key, and `get-tree`
//!   would read every key sharing the prefix.
//! * A TTL is a session (`Behavior=delete`) holding the key, half the TTL long as in the Go
//!   store (Consul ends a session twice its TTL after the last renewal). Sessions cannot be
//!   shorter than the server's `session_ttl_min` (10 s by default), so TTLs below twice that
//!   are raised to it: `capabilities().min_ttl` says how far. A write without TTL clears a
//!   key's TTL. `keep_alive` writes of one TTL share one session per handle, which the
//!   handle renews with one request per period while it lives; after a close the keys go
//!   one TTL later.
//! * Transactions (`commit`, and the fenced `put_if_held` and `delete_if_held`) are one
//!   `/v1/txn` request: one round trip, or two with value compares (their keys are read
//!   first and the index read is checked), plus a session created per distinct TTL of its
//!   puts, as `put` does. Each compare and operation is one txn op, so a transaction has at
//!   most 64 of them, Consul 1.8's limit. A fence is checked by `check-session`: the lock's
//!   session must still hold its key. A put writes what `put` writes; when a session
//!   already holds a key it writes, those keys are read and the transaction sent again.
//! * Watches are blocking queries; changes between two answers are coalesced (each key's
//!   latest state is reported, in index order), and a reset index gives a fresh `Snapshot`.
//! * Locks are the Go store's: a `Behavior=release` session acquires the key itself, so Go
//!   and Rust services exclude each other. The fencing token is the acquiring write's
//!   `ModifyIndex`. `delete_on_unlock` is honoured (the Go store ignores it).
//!
//! `rs-consul` 0.15 is used for what it does right (releasing a lock through the KV API)
//! and its HTTP client is shared with a thin module for the rest: it decodes values as UTF-8
//! (binary values fail), its KV writes return no index, its CAS index on delete is a `u32`,
//! and it has no transactions, sessions API or per-request deadline.
//!
//! ## Sharing a store with Go services
//!
//! A Go service on `github.com/kvtools/consul` (v1.0.2) reads and writes the same keys,
//! values and indexes, sees the same TTL keys expire and takes the same locks (checked by
//! the interop suite in `interop/`). The Go store never destroys the sessions it creates
//! (they linger until their TTL runs out unrenewed) and ignores `delete_on_unlock`; this
//! store destroys each session it created once its lock is released or its handle
//! closed, and honours `delete_on_unlock`, without changing what Go sees on the server.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_consul::ConsulConfig;
//! use valkeyrie_core::Kv;
//!
//! let kv = Kv::new(ConsulConfig::default().connect(["127.0.0.1:8500"]).await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

mod api;
mod client;
mod config;
mod error;
mod keep_alive;
mod lock;
mod store;
mod txn;
mod watch;
mod write;

pub use config::ConsulConfig;
pub use store::ConsulStore;

/// The crate-private decoders of the agent's answers and the config check, for the fuzz
/// targets of `fuzz/` only (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use valkeyrie_core::{Bytes, Result};

    use crate::ConsulConfig;

    /// Checks a config opened on `endpoints` as opening the store does, before sending.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &ConsulConfig, endpoints: &[String]) -> Result<()> {
        config.validate()?;
        crate::client::ConsulClient::new(endpoints, config, valkeyrie_core::raw::Background::new().spawner()).map(drop)
    }

    /// The entries of a KV answer: each key, value and `ModifyIndex`.
    ///
    /// # Errors
    /// A backend error for an answer of another shape, or a value that is no base64.
    pub fn kv_entries(body: &[u8]) -> Result<Vec<(String, Bytes, u64)>> {
        let entries = crate::api::kv_entries("", Bytes::copy_from_slice(body))?;
        Ok(entries.into_iter().map(|e| (e.key, e.value, e.modify_index)).collect())
    }

    /// A transaction's answer: the entries it returned, or `None` for a rollback.
    ///
    /// # Errors
    /// `PermissionDenied`, or a backend error for an answer of another shape.
    pub fn txn_outcome(body: &[u8]) -> Result<Option<Vec<(String, Bytes, u64)>>> {
        Ok(match crate::api::txn_outcome("", body)? {
            crate::api::TxnOutcome::Committed(entries) => {
                Some(entries.into_iter().map(|e| (e.key, e.value, e.modify_index)).collect())
            }
            crate::api::TxnOutcome::RolledBack(_) => None,
        })
    }
}

/// The registered name of this store, also its URL scheme.
pub const CONSUL: &str = "consul";
