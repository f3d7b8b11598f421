//! What backend implementors need, and applications do not: the [`Backend`] trait and the
//! shared mechanics every backend is built from.
//!
//! A backend implements [`Backend`]; the blanket `impl<B: Backend> Store for B` applies the
//! shared checks once for all backends (key rules, value size, TTL bounds, capabilities,
//! closed handles, the `list`/`watch_tree` rules, tracing), so a backend receives a
//! validated [`Key`] and never repeats them. It registers a constructor with
//! [`inventory::submit!`] and a [`Registration`], and builds on:
//!
//! * [`background`]: the handle's tasks and [`Background::close`];
//! * [`hold`]: holding a lock or a `keep_alive` key by renewing it ([`Hold`], [`Renew`]);
//! * [`feed`]: feeding a watch stream from the store's change source;
//! * [`backoff`] and [`deadline`]: the retry schedule and the per-request deadline;
//! * [`local`]: the engine of the memory and embedded stores, on any [`local::Storage`];
//! * [`BackendConfig`] and [`StoreUrl`]: typed configs filled from URL parameters;
//! * [`Txn`], [`TxnOp`] and [`Compare`]: a transaction after the shared checks.
//!
//! The `valkeyrie-template` crate is a complete backend written from these pieces, in the
//! same files every backend crate has.

pub mod background;
pub mod backoff;
pub mod deadline;
pub mod feed;
pub mod hold;
pub mod local;

pub use background::{Background, Spawner, TrackedWork};
pub use backoff::Backoff;
pub use hold::{Held, Hold, Renew, Renewal};
pub use local::{LocalStore, LockRevocation};

pub use crate::config::{check_duration, duration, BackendConfig, StoreUrl, MAX_CONFIG_DURATION};
pub use crate::error::{one_line, Summarized};
pub use crate::key::Key;
pub use crate::kv::Expect;
pub use crate::lock::{Acquire, LockRelease};
pub use crate::registry::{OpenFuture, Registration, StoreSpec};
pub use crate::store::{get_each, Backend};
pub use crate::txn::{Compare, Txn, TxnOp};

/// Re-exported for backend crates' `inventory::submit!`.
pub use inventory;
