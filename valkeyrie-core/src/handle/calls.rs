//! The builders [`Kv`]'s calls return. Each holds the call's arguments and options, sends
//! nothing until awaited (`IntoFuture`), and becomes the [`Store`](crate::Store) call of its
//! name (`lock` becomes `new_lock`, then the [`Locker`]'s wait).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{stream, TryStreamExt};

use super::Kv;
use crate::error::{Error, Result};
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions};
use crate::list::{ListOptions, ListStream};
use crate::lock::{LockGuard, Locker};
use crate::txn::{Check, Fence, Transaction, TxnOutcome};
use crate::watch::WatchStream;

/// `Ok(None)` for [`Error::KeyNotFound`]: the handle answers absence in its types.
fn found<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::KeyNotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Implements `IntoFuture` for a builder: `$run` turns the builder into the call.
macro_rules! into_future {
    ($builder:ident -> $output:ty, |$this:ident| $run:expr) => {
        impl<'a> IntoFuture for $builder<'a> {
            type Output = Result<$output>;
            type IntoFuture = BoxFuture<'a, Result<$output>>;

            fn into_future(self) -> Self::IntoFuture {
                let $this = self;
                Box::pin(async move { $run })
            }
        }
    };
}

/// Read options shared by the read builders: `.stale()` and `.options(…)`.
macro_rules! read_options {
    ($builder:ident) => {
        impl $builder<'_> {
            /// Allows a possibly stale read, served by any replica
            /// ([`ReadOptions::consistent`]).
            pub fn stale(mut self) -> Self {
                self.read.consistent = false;
                self
            }

            /// Replaces the read options as a whole.
            pub fn options(mut self, read: ReadOptions) -> Self {
                self.read = read;
                self
            }
        }
    };
}

/// Write options shared by the write builders: `.ttl(…)`, `.keep_alive()`, `.options(…)`.
macro_rules! write_options {
    ($builder:ident) => {
        impl $builder<'_> {
            /// The key expires this long after the write ([`WriteOptions::ttl`]).
            pub fn ttl(mut self, ttl: Duration) -> Self {
                self.write.ttl = Some(ttl);
                self
            }

            /// Keeps the TTL key alive for as long as the store is open
            /// ([`WriteOptions::keep_alive`]); it needs a [`ttl`](Self::ttl).
            pub fn keep_alive(mut self) -> Self {
                self.write.keep_alive = true;
                self
            }

            /// Replaces the write options as a whole.
            pub fn options(mut self, write: WriteOptions) -> Self {
                self.write = write;
                self
            }
        }
    };
}

/// [`Kv::get`]: resolves to `Some(pair)`, or `None` when the key does not exist.
#[must_use = "a call does nothing until it is awaited"]
pub struct Get<'a> {
    kv: &'a Kv,
    key: &'a str,
    read: ReadOptions,
}

impl<'a> Get<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str) -> Self {
        Get {
            kv,
            key,
            read: ReadOptions::default(),
        }
    }
}

read_options!(Get);
into_future!(Get -> Option<KvPair>, |call| found(call.kv.store.get(call.key, &call.read).await));

/// [`Kv::exists`]: resolves to whether the key exists.
#[must_use = "a call does nothing until it is awaited"]
pub struct Exists<'a> {
    kv: &'a Kv,
    key: &'a str,
    read: ReadOptions,
}

impl<'a> Exists<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str) -> Self {
        Exists {
            kv,
            key,
            read: ReadOptions::default(),
        }
    }
}

read_options!(Exists);
into_future!(Exists -> bool, |call| call.kv.store.exists(call.key, &call.read).await);

/// [`Kv::get_many`]: resolves to one `Option` per key, in order.
#[must_use = "a call does nothing until it is awaited"]
pub struct GetMany<'a> {
    kv: &'a Kv,
    keys: &'a [&'a str],
    read: ReadOptions,
}

impl<'a> GetMany<'a> {
    pub(super) fn new(kv: &'a Kv, keys: &'a [&'a str]) -> Self {
        GetMany {
            kv,
            keys,
            read: ReadOptions::default(),
        }
    }
}

read_options!(GetMany);
into_future!(GetMany -> Vec<Option<KvPair>>, |call| call.kv.store.get_many(call.keys, &call.read).await);

/// [`Kv::put`]: an unconditional write, or a conditional one after `.if_absent()`,
/// `.if_index(i)` or `.if_held(&guard)`.
#[must_use = "a call does nothing until it is awaited"]
pub struct Put<'a> {
    kv: &'a Kv,
    key: &'a str,
    value: Bytes,
    write: WriteOptions,
}

impl<'a> Put<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str, value: Bytes) -> Self {
        Put {
            kv,
            key,
            value,
            write: WriteOptions::default(),
        }
    }

    /// Writes only if the key does not exist ([`Store::atomic_put`](crate::Store::atomic_put) without a previous
    /// pair): [`Error::KeyExists`] otherwise. Resolves to the new pair.
    pub fn if_absent(self) -> PutIf<'a> {
        self.condition(None)
    }

    /// Writes only if the key's [`last_index`](KvPair::last_index) is still `index`
    /// (compare-and-set, [`Store::atomic_put`](crate::Store::atomic_put)): [`Error::KeyModified`] otherwise,
    /// [`Error::KeyNotFound`] if the key is gone. Resolves to the new pair.
    pub fn if_index(self, index: u64) -> PutIf<'a> {
        self.condition(Some(index))
    }

    /// Writes only while the acquisition behind `guard` holds its lock, as the store checks
    /// in the same step ([`Store::put_if_held`](crate::Store::put_if_held)): [`Error::LockNotHeld`] otherwise.
    pub fn if_held(self, guard: &'a LockGuard) -> PutIfHeld<'a> {
        PutIfHeld {
            kv: self.kv,
            key: self.key,
            value: self.value,
            write: self.write,
            guard,
        }
    }

    fn condition(self, index: Option<u64>) -> PutIf<'a> {
        PutIf {
            kv: self.kv,
            key: self.key,
            value: self.value,
            write: self.write,
            index,
        }
    }
}

write_options!(Put);
into_future!(Put -> (), |call| call.kv.store.put(call.key, call.value, &call.write).await);

/// [`Put::if_absent`] and [`Put::if_index`]: resolves to the new pair.
#[must_use = "a call does nothing until it is awaited"]
pub struct PutIf<'a> {
    kv: &'a Kv,
    key: &'a str,
    value: Bytes,
    write: WriteOptions,
    /// `None`: only if absent.
    index: Option<u64>,
}

write_options!(PutIf);
into_future!(PutIf -> KvPair, |call| {
    // Backends compare the index alone; the previous value is not read.
    let previous = call.index.map(|index| KvPair::new(call.key, Bytes::new(), index));
    call.kv
        .store
        .atomic_put(call.key, call.value, previous.as_ref(), &call.write)
        .await
});

/// [`Put::if_held`]: a write fenced by a held lock.
#[must_use = "a call does nothing until it is awaited"]
pub struct PutIfHeld<'a> {
    kv: &'a Kv,
    key: &'a str,
    value: Bytes,
    write: WriteOptions,
    guard: &'a LockGuard,
}

write_options!(PutIfHeld);
into_future!(PutIfHeld -> (), |call| {
    call.kv
        .store
        .put_if_held(call.guard, call.key, call.value, &call.write)
        .await
});

/// [`Kv::delete`]: resolves to whether the key existed.
#[must_use = "a call does nothing until it is awaited"]
pub struct Delete<'a> {
    kv: &'a Kv,
    key: &'a str,
}

impl<'a> Delete<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str) -> Self {
        Delete { kv, key }
    }

    /// Deletes only if the key's [`last_index`](KvPair::last_index) is still `index`
    /// ([`Store::atomic_delete`](crate::Store::atomic_delete)): [`Error::KeyModified`] otherwise; `false` if the key is
    /// already gone.
    pub fn if_index(self, index: u64) -> DeleteIfIndex<'a> {
        DeleteIfIndex {
            kv: self.kv,
            key: self.key,
            index,
        }
    }

    /// Deletes only while the acquisition behind `guard` holds its lock
    /// ([`Store::delete_if_held`](crate::Store::delete_if_held)): [`Error::LockNotHeld`] otherwise; `false` if the lock
    /// is held and the key absent.
    pub fn if_held(self, guard: &'a LockGuard) -> DeleteIfHeld<'a> {
        DeleteIfHeld {
            kv: self.kv,
            key: self.key,
            guard,
        }
    }
}

into_future!(Delete -> bool, |call| Ok(found(call.kv.store.delete(call.key).await)?.is_some()));

/// [`Delete::if_index`]: resolves to whether the key was deleted.
#[must_use = "a call does nothing until it is awaited"]
pub struct DeleteIfIndex<'a> {
    kv: &'a Kv,
    key: &'a str,
    index: u64,
}

into_future!(DeleteIfIndex -> bool, |call| {
    let previous = KvPair::new(call.key, Bytes::new(), call.index);
    Ok(found(call.kv.store.atomic_delete(call.key, &previous).await)?.is_some())
});

/// [`Delete::if_held`]: resolves to whether the key existed.
#[must_use = "a call does nothing until it is awaited"]
pub struct DeleteIfHeld<'a> {
    kv: &'a Kv,
    key: &'a str,
    guard: &'a LockGuard,
}

into_future!(DeleteIfHeld -> bool, |call| {
    Ok(found(call.kv.store.delete_if_held(call.guard, call.key).await)?.is_some())
});

/// [`Kv::delete_tree`]: resolves to whether anything existed.
#[must_use = "a call does nothing until it is awaited"]
pub struct DeleteTree<'a> {
    kv: &'a Kv,
    dir: &'a str,
}

impl<'a> DeleteTree<'a> {
    pub(super) fn new(kv: &'a Kv, dir: &'a str) -> Self {
        DeleteTree { kv, dir }
    }
}

into_future!(DeleteTree -> bool, |call| Ok(found(call.kv.store.delete_tree(call.dir).await)?.is_some()));

/// [`Kv::put_many`]: all or none.
#[must_use = "a call does nothing until it is awaited"]
pub struct PutMany<'a> {
    kv: &'a Kv,
    pairs: Vec<(String, Bytes)>,
    write: WriteOptions,
}

impl<'a> PutMany<'a> {
    pub(super) fn new(kv: &'a Kv, pairs: Vec<(String, Bytes)>) -> Self {
        PutMany {
            kv,
            pairs,
            write: WriteOptions::default(),
        }
    }

    /// Every key expires this long after the write.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.write.ttl = Some(ttl);
        self
    }
}

into_future!(PutMany -> (), |call| call.kv.store.put_many(call.pairs, &call.write).await);

/// [`Kv::delete_many`]: all or none.
#[must_use = "a call does nothing until it is awaited"]
pub struct DeleteMany<'a> {
    kv: &'a Kv,
    keys: &'a [&'a str],
}

impl<'a> DeleteMany<'a> {
    pub(super) fn new(kv: &'a Kv, keys: &'a [&'a str]) -> Self {
        DeleteMany { kv, keys }
    }
}

into_future!(DeleteMany -> (), |call| call.kv.store.delete_many(call.keys).await);

/// [`Kv::list`]: awaited, every pair below the directory; [`List::stream`], the same read
/// page by page.
#[must_use = "a call does nothing until it is awaited or streamed"]
pub struct List<'a> {
    kv: &'a Kv,
    dir: &'a str,
    opts: ListOptions,
}

impl<'a> List<'a> {
    pub(super) fn new(kv: &'a Kv, dir: &'a str) -> Self {
        List {
            kv,
            dir,
            opts: ListOptions::default(),
        }
    }

    /// Allows possibly stale pages, served by any replica.
    pub fn stale(mut self) -> Self {
        self.opts.read.consistent = false;
        self
    }

    /// Pairs per page read from the store ([`ListOptions::page_size`]).
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.opts.page_size = page_size;
        self
    }

    /// Only keys after `key` ([`ListOptions::start_after`]), to resume a listing.
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.opts.start_after = Some(key.into());
        self
    }

    /// Replaces the list options as a whole.
    pub fn options(mut self, opts: ListOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The pairs as a stream read page by page, holding at most one page of values
    /// ([`crate::list`]). It owns a clone of the handle, so it can move into a task. An
    /// invalid directory is the stream's only item, an error.
    pub fn stream(self) -> ListStream {
        match Arc::clone(&self.kv.store).list_stream(self.dir, self.opts) {
            Ok(pages) => pages,
            Err(err) => Box::pin(stream::once(std::future::ready(Err(err)))),
        }
    }
}

impl<'a> IntoFuture for List<'a> {
    type Output = Result<Vec<KvPair>>;
    type IntoFuture = BoxFuture<'a, Result<Vec<KvPair>>>;

    /// One [`Store::list`](crate::Store::list) call; with `.page_size` or `.start_after`, the stream's pages,
    /// collected.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let paged = self.opts.start_after.is_some() || self.opts.page_size != ListOptions::default().page_size;
            if paged {
                return self.stream().try_collect().await;
            }
            Ok(found(self.kv.store.list(self.dir, &self.opts.read).await)?.unwrap_or_default())
        })
    }
}

/// [`Kv::watch`] and [`Kv::watch_tree`]: resolves to the watch stream.
#[must_use = "a call does nothing until it is awaited"]
pub struct Watch<'a> {
    kv: &'a Kv,
    key: &'a str,
    tree: bool,
    from: Option<u64>,
    read: ReadOptions,
}

impl<'a> Watch<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str, tree: bool) -> Self {
        Watch {
            kv,
            key,
            tree,
            from: None,
            read: ReadOptions::default(),
        }
    }

    /// Resumes after `index`, the `last_index` of the last change handled: every later
    /// change, or a snapshot first where the store cannot replay that far
    /// ([`Store::watch_from`](crate::Store::watch_from)).
    pub fn from(mut self, index: u64) -> Self {
        self.from = Some(index);
        self
    }
}

read_options!(Watch);

impl<'a> IntoFuture for Watch<'a> {
    type Output = Result<WatchStream>;
    type IntoFuture = BoxFuture<'a, Result<WatchStream>>;

    fn into_future(self) -> Self::IntoFuture {
        let Watch {
            kv,
            key,
            tree,
            from,
            read,
        } = self;
        Box::pin(async move {
            let store = &kv.store;
            match (tree, from) {
                (false, None) => store.watch(key, &read).await,
                (true, None) => store.watch_tree(key, &read).await,
                (false, Some(index)) => store.watch_from(key, index, &read).await,
                (true, Some(index)) => store.watch_tree_from(key, index, &read).await,
            }
        })
    }
}

/// [`Kv::lock`]: resolves to the guard once the lock is held.
#[must_use = "a call does nothing until it is awaited"]
pub struct Lock<'a> {
    kv: &'a Kv,
    key: &'a str,
    opts: LockOptions,
    timeout: Option<Duration>,
}

impl<'a> Lock<'a> {
    pub(super) fn new(kv: &'a Kv, key: &'a str) -> Self {
        Lock {
            kv,
            key,
            opts: LockOptions::default(),
            timeout: None,
        }
    }

    /// Written to the lock's key while held ([`LockOptions::value`]).
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.opts.value = value.into();
        self
    }

    /// How long the lock outlives a holder that stops renewing it ([`LockOptions::ttl`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.opts.ttl = Some(ttl);
        self
    }

    /// Deletes the lock's key on unlock ([`LockOptions::delete_on_unlock`]).
    pub fn delete_on_unlock(mut self) -> Self {
        self.opts.delete_on_unlock = true;
        self
    }

    /// Replaces the lock options as a whole.
    pub fn options(mut self, opts: LockOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Gives up waiting after `timeout`, with [`Error::Timeout`]
    /// ([`Locker::lock_timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Takes the lock only if it is free now: resolves to `None` when someone holds it.
    pub fn try_lock(self) -> TryLock<'a> {
        TryLock { lock: self }
    }

    /// The [`Locker`] itself, which can take the lock again after each release.
    ///
    /// Cancel-safe: it sends nothing.
    pub async fn locker(self) -> Result<Box<dyn Locker>> {
        self.kv.store.new_lock(self.key, self.opts).await
    }
}

into_future!(Lock -> LockGuard, |call| {
    let timeout = call.timeout;
    let locker = call.locker().await?;
    match timeout {
        Some(timeout) => locker.lock_timeout(timeout).await,
        None => locker.lock().await,
    }
});

/// [`Lock::try_lock`]: resolves to the guard, or `None` when the lock is taken.
#[must_use = "a call does nothing until it is awaited"]
pub struct TryLock<'a> {
    lock: Lock<'a>,
}

into_future!(TryLock -> Option<LockGuard>, |call| call.lock.locker().await?.try_lock().await);

/// [`Kv::transaction`]: the [`Transaction`] builder's methods, bound to a handle, ending
/// in [`commit`](TransactionBuilder::commit).
#[must_use = "a transaction does nothing until it is committed"]
pub struct TransactionBuilder<'a> {
    kv: &'a Kv,
    txn: Transaction,
}

impl<'a> TransactionBuilder<'a> {
    pub(super) fn new(kv: &'a Kv, txn: Transaction) -> Self {
        TransactionBuilder { kv, txn }
    }

    fn map(self, f: impl FnOnce(Transaction) -> Transaction) -> Self {
        TransactionBuilder {
            kv: self.kv,
            txn: f(self.txn),
        }
    }

    /// Requires `key` to exist ([`Transaction::when_exists`]).
    pub fn when_exists(self, key: impl Into<String>) -> Self {
        self.map(|txn| txn.when_exists(key))
    }

    /// Requires `key` to be absent ([`Transaction::when_absent`]).
    pub fn when_absent(self, key: impl Into<String>) -> Self {
        self.map(|txn| txn.when_absent(key))
    }

    /// Requires `key` at `index` ([`Transaction::when_index`]).
    pub fn when_index(self, key: impl Into<String>, index: u64) -> Self {
        self.map(|txn| txn.when_index(key, index))
    }

    /// Requires `key` to hold exactly `value` ([`Transaction::when_value`]).
    pub fn when_value(self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.map(|txn| txn.when_value(key, value))
    }

    /// Requires the acquisition behind `fence` to hold its lock ([`Transaction::when_held`]).
    pub fn when_held(self, fence: &Fence) -> Self {
        self.map(|txn| txn.when_held(fence))
    }

    /// Adds a compare ([`Transaction::when`]).
    pub fn when(self, key: impl Into<String>, check: Check) -> Self {
        self.map(|txn| txn.when(key, check))
    }

    /// Writes `value` at `key` ([`Transaction::put`]).
    pub fn put(self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.map(|txn| txn.put(key, value))
    }

    /// Writes `value` at `key` with `opts` ([`Transaction::put_with`]).
    pub fn put_with(self, key: impl Into<String>, value: impl Into<Bytes>, opts: WriteOptions) -> Self {
        self.map(|txn| txn.put_with(key, value, opts))
    }

    /// Deletes `key` if it exists ([`Transaction::delete`]).
    pub fn delete(self, key: impl Into<String>) -> Self {
        self.map(|txn| txn.delete(key))
    }

    /// Commits all or nothing ([`Store::commit`](crate::Store::commit)).
    ///
    /// Cancel safety: a dropped `commit` is still all or nothing.
    pub async fn commit(self) -> Result<TxnOutcome> {
        self.kv.store.commit(self.txn).await
    }
}
