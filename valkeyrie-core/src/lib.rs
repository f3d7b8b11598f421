//! # valkeyrie-core
//!
//! One async API over distributed key/value stores (Consul, etcd, ZooKeeper, Redis,
//! DynamoDB, an embedded store), the Rust counterpart of Go's `kvtools/valkeyrie`. Code
//! written against [`Kv`] runs unchanged on whichever store an operator has: service
//! discovery, configuration, leader election, locks.
//!
//! This crate holds what every backend shares:
//!
//! * [`Kv`], the handle applications use: cloneable, with one builder per call
//!   (`kv.put("k", v).ttl(d).await?`, `kv.get("k").await?` → `Option`), over
//! * the [`Store`] trait (`Arc<dyn Store>`, for code written against a trait object) and,
//!   in [`raw`], the [`raw::Backend`] trait backends implement, with the shared
//!   checks applied once between them, and the mechanics backends share;
//! * [`KvPair`] and the per-call options, [`Capabilities`], and one [`Error`] enum whose
//!   variants name the store and the key;
//! * the [key rules](key), [watch streams](watch) and [locks](lock) with a lost signal and
//!   fencing tokens;
//! * [transactions](txn): compares and writes on several keys committed all-or-nothing,
//!   and writes fenced by a held lock that the store itself refuses once the lock is gone;
//! * the registry: [`open`]`("etcd://h1:2379?connect_timeout=5s")`,
//!   [`new_store`]`(name, endpoints, typed_config)`, [`constructors`];
//! * [`MemoryStore`] (`memory://`), a complete store without a server for unit tests, built on
//!   the [local engine](raw::local) that the embedded backend also uses;
//! * [leader election](leadership): [`Candidate`](leadership::Candidate) and
//!   [`Follower`](leadership::Follower), on any store with locks and watch;
//! * with feature `tls`, the [TLS settings](tls) every network backend shares;
//! * with feature `testsuite`, the conformance suite every backend runs against its real
//!   server.
//!
//! Every call is a `tracing` span named `valkeyrie` with the fields `store`, `call` and `key`
//! (never values or secrets).
//!
//! ## Example
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! let kv = valkeyrie_core::open("memory://").await?;
//! kv.put("services/web/1", "10.0.0.1:80").await?;
//! kv.put("services/web/2", "10.0.0.2:80").await?;
//! let web = kv.list("services/web").await?;
//! assert_eq!(web.len(), 2);
//!
//! // Compare-and-set: only one of two racing writers wins.
//! let index = web[0].last_index;
//! kv.put("services/web/1", "10.0.0.9:80").if_index(index).await?;
//! assert!(kv.put("services/web/1", "x").if_index(index).await.is_err());
//!
//! // A lock with a fencing token.
//! let guard = kv.lock("jobs/compact").value("node-a").await?;
//! assert!(guard.fencing_token() > 0);
//! guard.unlock().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod capabilities;
pub mod config;
pub mod error;
pub mod handle;
pub mod key;
pub mod kv;
pub mod layers;
pub mod leadership;
pub mod list;
pub mod lock;
pub mod raw;
mod registry;
mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;
#[cfg(feature = "tls")]
pub mod tls;
pub mod txn;
pub mod watch;

pub use bytes::Bytes;
pub use capabilities::{AtomicScope, Capabilities};
pub use config::{Secret, StoreConfig};
pub use error::{BoxError, Error, ErrorKind, ErrorStatus, LostReason, Result};
pub use handle::Kv;
pub use kv::{KvPair, LockOptions, ReadOptions, WriteOptions, MAX_TTL};
pub use list::{ListOptions, ListStream};
pub use lock::{LockGuard, Locker, LostSignal};
pub use raw::local::{MemoryConfig, MemoryStore};
pub use registry::{constructors, new_store, open};
pub use store::Store;
pub use txn::{Check, Fence, Transaction, TxnOutcome};
pub use watch::{WatchEvent, WatchStream};
