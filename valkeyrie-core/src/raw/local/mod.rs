//! An in-process engine that implements every call over a simple [`Storage`].
//!
//! The in-memory store ([`MemoryStore`]), the embedded `boltlike` backend (on sled) and the
//! template backend all run on it; a storage only has to get, insert, remove and scan
//! records. The engine adds what makes them a full store: one writer at a time (so atomic
//! calls and index bumps cannot race), a persistent index that never repeats, TTL expiry
//! with delete events, keep-alives, watches that never miss a change (a lagging watcher gets
//! a fresh snapshot), and locks with TTL, fencing tokens and a lost signal.
//!
//! Several [`LocalStore`] handles can share one engine (as several connections share one
//! server): data, watches and locks are shared; keep-alives and lock renewals belong to the
//! handle that started them and stop when it is closed or dropped.

mod engine;
mod lock;
mod memory;
mod store;
mod watch;

use bytes::Bytes;

use crate::error::BoxError;

pub use engine::{Engine, EngineOptions};
pub use memory::{MemoryConfig, MemoryStorage, MemoryStore, MEMORY};
pub use store::{LocalStore, LockRevocation};

/// A stored value with its index and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The modification index, never 0.
    pub index: u64,
    /// Expiry as Unix time in milliseconds; `None` never expires.
    pub expires_at: Option<u64>,
    /// The value.
    pub value: Bytes,
}

/// Where the engine keeps records. Calls are made one writer at a time by the engine, so a
/// storage needs no transactions; reads may run concurrently with a write.
pub trait Storage: Send + Sync + 'static {
    /// The record at `key`, expired or not.
    fn get(&self, key: &str) -> Result<Option<Record>, BoxError>;
    /// Writes the record at `key`, returning the expiry of the record it replaced (`None`
    /// when there was none or it had no expiry), so the engine need not read it first.
    fn insert(&self, key: &str, record: &Record) -> Result<Option<u64>, BoxError>;
    /// Removes `key`, returning what was there.
    fn remove(&self, key: &str) -> Result<Option<Record>, BoxError>;
    /// Applies every write of a transaction at once (`None` removes the key): a reader sees
    /// all of them or none, and a crash keeps all or none.
    fn apply(&self, writes: &[(&str, Option<&Record>)]) -> Result<(), BoxError>;
    /// Every record whose key starts with `prefix`, sorted by key (bytewise).
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Record)>, BoxError>;
    /// Up to `limit` records whose key starts with `prefix` and sorts after `after` (from
    /// the start of the prefix when `None`), sorted by key (bytewise).
    fn scan_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, Record)>, BoxError>;
    /// A number larger than every one returned before, never 0; persistent storages keep
    /// this across restarts.
    fn next_index(&self) -> Result<u64, BoxError>;
    /// Makes the writes so far durable; a no-op for volatile storages.
    fn flush(&self) -> Result<(), BoxError>;
}
