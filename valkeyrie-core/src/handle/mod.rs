//! [`Kv`], the handle applications use: one cloneable value over any store, whose calls are
//! builders you `.await`.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use std::time::Duration;
//!
//! let kv = valkeyrie_core::open("memory://").await?;
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! assert_eq!(kv.get("config/missing").await?, None);
//!
//! // Options are named methods; compare-and-set is a condition on the put.
//! let created = kv.put("jobs/1", "queued").if_absent().await?;
//! kv.put("jobs/1", "running").if_index(created.last_index).await?;
//! kv.put("nodes/a", "up").ttl(Duration::from_secs(30)).keep_alive().await?;
//!
//! let guard = kv.lock("jobs/compact").value("node-a").await?;
//! guard.unlock().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! [`Kv`] is a thin layer over [`Store`]: every call becomes the `Store` call of its name
//! (`lock` becomes `new_lock`, then the lock's wait; a paged `list`, `list_stream`), with the
//! shared checks and the tracing span of every store. Where a `Store` call signals an absent
//! key with [`Error::KeyNotFound`](crate::Error::KeyNotFound), the handle answers in its type instead (`get` is
//! `None`, `delete` is `false`, `list` is empty). Code that wants the trait object takes
//! [`Kv::store`].

mod calls;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use calls::{
    Delete, DeleteIfHeld, DeleteIfIndex, DeleteMany, DeleteTree, Exists, Get, GetMany, List, Lock, Put, PutIf,
    PutIfHeld, PutMany, TransactionBuilder, TryLock, Watch,
};

use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::layers::Layer;
use crate::store::Store;
use crate::txn::{Transaction, TxnOutcome};

/// A handle on a store: cheap to clone (clones share the connection and its background
/// work), `Send + Sync`, with one builder per call. See the [module docs](self).
///
/// Each call borrows the handle and its key until it is awaited; to run one in a task,
/// move a clone in: `let kv = kv.clone(); tokio::spawn(async move { kv.get("k").await })`.
///
/// # Cancel safety
///
/// A builder sends nothing until it is awaited. Dropping an awaited call behaves as its
/// [`Store`] call does (see the trait's "Cancel safety"): a read leaves nothing behind; a
/// dropped write (`put`, `delete`, their conditional forms) may or may not have been
/// applied, as after [`Error::Timeout`](crate::Error::Timeout), so read the key to learn
/// which; a dropped `commit`, `put_many` or `delete_many` is still all or nothing; a
/// dropped `lock` gives up waiting and leaves nothing held; a dropped [`Kv::close`] is
/// finished by the next `close`.
#[derive(Clone)]
pub struct Kv {
    store: Arc<dyn Store>,
}

impl Kv {
    /// A handle on `store`.
    pub fn new(store: impl Store + 'static) -> Kv {
        Kv { store: Arc::new(store) }
    }

    /// The store under the handle, for code written against `dyn Store`.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registered name of the backend, such as `"etcd"`.
    pub fn name(&self) -> &'static str {
        self.store.name()
    }

    /// What the store supports.
    pub fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    /// Reads `key`: `Some(pair)`, or `None` when it does not exist. `.stale()` allows a
    /// replica's possibly older answer.
    pub fn get<'a>(&'a self, key: &'a str) -> Get<'a> {
        Get::new(self, key)
    }

    /// Whether `key` exists; `.stale()` as for [`Kv::get`].
    pub fn exists<'a>(&'a self, key: &'a str) -> Exists<'a> {
        Exists::new(self, key)
    }

    /// Reads every key of `keys`, in order, `None` where a key does not exist, in the
    /// fewest round trips the store allows ([`Store::get_many`]).
    pub fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> GetMany<'a> {
        GetMany::new(self, keys)
    }

    /// Writes `value` at `key`. Set a TTL with `.ttl(d)`, keep it alive with
    /// `.keep_alive()`, or make it conditional: `.if_absent()`, `.if_index(i)` (both
    /// returning the new pair) or `.if_held(&guard)`.
    pub fn put<'a>(&'a self, key: &'a str, value: impl Into<Bytes>) -> Put<'a> {
        Put::new(self, key, value.into())
    }

    /// Deletes `key` (not what is below it): `true` if it existed. Conditional forms:
    /// `.if_index(i)` and `.if_held(&guard)`.
    pub fn delete<'a>(&'a self, key: &'a str) -> Delete<'a> {
        Delete::new(self, key)
    }

    /// Deletes `dir` and everything below it: `true` if anything existed.
    pub fn delete_tree<'a>(&'a self, dir: &'a str) -> DeleteTree<'a> {
        DeleteTree::new(self, dir)
    }

    /// Writes every pair, all or none, in one transaction ([`Store::put_many`]).
    pub fn put_many<K, V>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> PutMany<'_>
    where
        K: Into<String>,
        V: Into<Bytes>,
    {
        let pairs = pairs
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        PutMany::new(self, pairs)
    }

    /// Deletes the keys of `keys` that exist, all or none ([`Store::delete_many`]).
    pub fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> DeleteMany<'a> {
        DeleteMany::new(self, keys)
    }

    /// Lists every key strictly below `dir`, sorted; empty when there is none. Await it for
    /// a `Vec`, or call `.stream()` for a stream read page by page (`.page_size(n)`,
    /// `.start_after(key)`).
    pub fn list<'a>(&'a self, dir: &'a str) -> List<'a> {
        List::new(self, dir)
    }

    /// Watches `key`: a stream that starts with a snapshot of its value, then one event per
    /// change ([`crate::watch`]). `.from(index)` resumes after a change already handled.
    pub fn watch<'a>(&'a self, key: &'a str) -> Watch<'a> {
        Watch::new(self, key, false)
    }

    /// Watches everything below `dir`, as [`Kv::watch`] does one key.
    pub fn watch_tree<'a>(&'a self, dir: &'a str) -> Watch<'a> {
        Watch::new(self, dir, true)
    }

    /// Takes the lock on `key`, waiting while someone else holds it, and returns its
    /// guard: `.value(v)` is written to the key while held, `.ttl(d)`,
    /// `.delete_on_unlock()`, `.timeout(d)` to give up waiting. `.try_lock()` does not wait;
    /// `.locker()` gives the [`Locker`](crate::Locker) itself, to lock again and again.
    pub fn lock<'a>(&'a self, key: &'a str) -> Lock<'a> {
        Lock::new(self, key)
    }

    /// A transaction to build and then `.commit()`: compares and writes on several keys,
    /// all or nothing ([`crate::txn`]).
    pub fn transaction(&self) -> TransactionBuilder<'_> {
        TransactionBuilder::new(self, Transaction::new())
    }

    /// Commits a transaction built on its own ([`Store::commit`]).
    ///
    /// Cancel safety: a dropped `commit` is still all or nothing.
    pub async fn commit(&self, txn: Transaction) -> Result<TxnOutcome> {
        self.store.commit(txn).await
    }

    /// Closes the store for every clone of this handle: stops keep-alives, lock renewals
    /// and watches, then releases the connection. Later calls return
    /// [`Error::Closed`](crate::Error::Closed); a later `close` returns `Ok(())`.
    ///
    /// Cancel-safe: a `close` dropped halfway leaves the rest to the next `close`.
    pub async fn close(&self) -> Result<()> {
        self.store.close().await
    }

    /// This handle with `layer` wrapped around its store: calls through the result go
    /// through the layer, then through the layers added before it ([`crate::layers`]).
    /// Other clones of this handle keep their own stack; all share the store underneath.
    pub fn layer(self, layer: impl Layer) -> Kv {
        Kv {
            store: layer.layer(self.store),
        }
    }

    /// Background work the store holds now ([`Store::background_tasks`]).
    pub fn background_tasks(&self) -> usize {
        self.store.background_tasks()
    }
}

impl From<Arc<dyn Store>> for Kv {
    fn from(store: Arc<dyn Store>) -> Kv {
        Kv { store }
    }
}

impl From<Kv> for Arc<dyn Store> {
    fn from(kv: Kv) -> Arc<dyn Store> {
        kv.store
    }
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kv").field("store", &self.store.name()).finish()
    }
}

#[cfg(test)]
mod tests;
