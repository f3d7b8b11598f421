//! The [`Store`] trait users call, and the [`Backend`] trait backends implement.
//!
//! Backends implement [`Backend`], which receives keys already validated and normalized
//! ([`Key`]). Every `Backend` is a [`Store`] through one blanket implementation that does,
//! once for all backends and before any I/O: the key rules, the value size limit, the
//! TTL bounds ([`MAX_TTL`], [`Capabilities::max_ttl`]), the capability check (`CallNotSupported`), the `last_index == 0` check of atomic calls, the
//! refusal of calls on a closed handle, the shared `list`/`watch_tree` semantics (directory
//! key excluded, sorted, `KeyNotFound` only when nothing exists), and a `tracing` span per
//! call carrying the store, the call and the key (never the value).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions, MAX_TTL};
use crate::list::{self, ListOptions, ListStream};
use crate::lock::{LockGuard, Locker};
use crate::raw::background::Background;
use crate::txn::{Check, Compare, RawOp, Transaction, Txn, TxnOp, TxnOutcome};
use crate::watch::{tree_view, WatchStream};

/// One async API over a key/value store. Use it as `Arc<dyn Store>`.
///
/// Every call validates its key first ([`crate::key`]); a bad key is
/// [`Error::InvalidKey`] and nothing is sent.
///
/// # Cancel safety
///
/// Every call may be dropped at any `.await` (a timeout around it, a `select!` that chose
/// another branch):
/// - a read (`get`, `exists`, `list`, `get_many`, opening a watch) leaves nothing behind;
/// - a dropped write (`put`, `delete`, `atomic_put`, `atomic_delete`, `put_if_held`,
///   `delete_if_held`) may or may not have been applied, as after [`Error::Timeout`]: read
///   the key to learn which;
/// - a dropped `commit`, `put_many` or `delete_many` is still all or nothing;
/// - a dropped `delete_tree` may have deleted part of the tree where the store deletes it
///   in several steps (Redis, ZooKeeper, DynamoDB; etcd and Consul delete it in one);
/// - `new_lock` sends nothing, and [`Locker::lock`] says what a dropped acquisition leaves;
/// - [`Store::close`] dropped halfway is finished by the next `close`.
#[async_trait]
pub trait Store: Send + Sync {
    /// The registered name of the backend, such as `"etcd"`.
    fn name(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Writes `value` at `key`, creating it if needed.
    async fn put(&self, key: &str, value: Bytes, opts: &WriteOptions) -> Result<()>;

    /// Reads `key`; [`Error::KeyNotFound`] when absent.
    async fn get(&self, key: &str, opts: &ReadOptions) -> Result<KvPair>;

    /// Deletes `key` (not what is below it); [`Error::KeyNotFound`] when absent.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether `key` exists.
    async fn exists(&self, key: &str, opts: &ReadOptions) -> Result<bool>;

    /// Every key strictly below `dir`, recursively, sorted by key, without `dir` itself and
    /// without lock bookkeeping. An existing key with nothing below lists as empty; when
    /// neither `dir` nor anything below exists, [`Error::KeyNotFound`].
    async fn list(&self, dir: &str, opts: &ReadOptions) -> Result<Vec<KvPair>>;

    /// The pairs of [`Store::list`], streamed page by page so that at most one page of values
    /// is held, optionally resuming after a key; see [`crate::list`]. An empty or missing
    /// directory is an empty stream. The directory is validated now, the pages are read as
    /// the stream is polled. The stream owns a share of the handle (`self: Arc<Self>`), so
    /// it may move into a task; after [`Store::close`], its next page is [`Error::Closed`].
    fn list_stream(self: Arc<Self>, dir: &str, opts: ListOptions) -> Result<ListStream>;

    /// Deletes `dir` and everything below it; [`Error::KeyNotFound`] when nothing existed.
    async fn delete_tree(&self, dir: &str) -> Result<()>;

    /// Streams the changes of `key`, starting with a snapshot of its current value
    /// ([`crate::watch`]). Dropping the stream ends the watch.
    async fn watch(&self, key: &str, opts: &ReadOptions) -> Result<WatchStream>;

    /// Streams the changes below `dir` (not `dir` itself), starting with a snapshot of
    /// everything below it.
    async fn watch_tree(&self, dir: &str, opts: &ReadOptions) -> Result<WatchStream>;

    /// [`Store::watch`], resuming after `index` (the `last_index` of the last change a
    /// consumer handled): every change of `key` with a larger index, in order, with no
    /// snapshot first; or, where the store cannot replay that far back (no history, or
    /// history compacted), a [`WatchEvent::Snapshot`](crate::WatchEvent::Snapshot) first, as
    /// `watch` starts. Never a silent gap. [`Capabilities::watch_replay`] says which.
    async fn watch_from(&self, key: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream>;

    /// [`Store::watch_tree`], resuming after `index` as [`Store::watch_from`] does.
    async fn watch_tree_from(&self, dir: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream>;

    /// Creates an unheld lock on `key`; see [`Locker`].
    async fn new_lock(&self, key: &str, opts: LockOptions) -> Result<Box<dyn Locker>>;

    /// Compare-and-set. With `previous = None`, creates the key only if absent
    /// ([`Error::KeyExists`] otherwise). With `Some(prev)`, writes only if the key's index is
    /// still `prev.last_index` ([`Error::KeyModified`] otherwise, [`Error::KeyNotFound`] if
    /// the key is gone). Returns the new pair.
    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair>;

    /// Compare-and-delete: deletes only if the key's index is still `previous.last_index`
    /// ([`Error::KeyModified`] otherwise, [`Error::KeyNotFound`] if already gone).
    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()>;

    /// Commits `txn` all-or-nothing: every operation is applied if every compare holds,
    /// nothing otherwise, and the outcome names the first compare that failed. See
    /// [`crate::txn`] for the rules checked before sending ([`Error::InvalidTransaction`]).
    async fn commit(&self, txn: Transaction) -> Result<TxnOutcome>;

    /// Reads every key of `keys`, in order, `None` where a key does not exist: in the fewest
    /// round trips the store allows, from one snapshot where it reads several keys
    /// atomically (see [`Capabilities::atomic_get_many`]). Every key is validated first.
    async fn get_many(&self, keys: &[&str], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>>;

    /// Writes every pair, all or none, in one transaction ([`Store::commit`]): one round trip
    /// on every backend. At most
    /// [`Capabilities::max_transaction_ops`] pairs; a larger batch is
    /// [`Error::InvalidTransaction`] before anything is sent (split it, knowing each part is
    /// atomic on its own).
    async fn put_many(&self, pairs: Vec<(String, Bytes)>, opts: &WriteOptions) -> Result<()> {
        let txn = pairs.into_iter().fold(Transaction::new(), |txn, (key, value)| {
            txn.put_with(key, value, opts.clone())
        });
        self.commit(txn).await.map(drop)
    }

    /// Deletes every key that exists among `keys` (only those keys, not what is below them),
    /// all or none, in one transaction, as [`Store::put_many`]. Missing keys are not an error.
    async fn delete_many(&self, keys: &[&str]) -> Result<()> {
        let txn = keys.iter().fold(Transaction::new(), |txn, key| txn.delete(*key));
        self.commit(txn).await.map(drop)
    }

    /// Writes `value` at `key` only if the acquisition behind `guard` still holds its lock,
    /// as the store itself checks in the same atomic step: a deposed holder's write is
    /// refused even if it has not noticed its loss yet. [`Error::LockNotHeld`] when refused,
    /// [`Error::LockLost`] without a round trip when the guard already knows.
    async fn put_if_held(&self, guard: &LockGuard, key: &str, value: Bytes, opts: &WriteOptions) -> Result<()> {
        guard.ensure_held()?;
        let fence = guard.fence();
        let txn = Transaction::new().when_held(&fence).put_with(key, value, opts.clone());
        match self.commit(txn).await? {
            TxnOutcome::Committed => Ok(()),
            TxnOutcome::Failed { .. } => Err(Error::LockNotHeld {
                store: self.name(),
                key: key.to_owned(),
                lock: fence.key().to_owned(),
            }),
        }
    }

    /// Deletes `key` only if the acquisition behind `guard` still holds its lock, as
    /// [`Store::put_if_held`]; [`Error::KeyNotFound`] when the lock is held and `key` absent.
    async fn delete_if_held(&self, guard: &LockGuard, key: &str) -> Result<()> {
        guard.ensure_held()?;
        let fence = guard.fence();
        let txn = Transaction::new().when_held(&fence).when_exists(key).delete(key);
        match self.commit(txn).await? {
            TxnOutcome::Committed => Ok(()),
            TxnOutcome::Failed { compare: 0 } => Err(Error::LockNotHeld {
                store: self.name(),
                key: key.to_owned(),
                lock: fence.key().to_owned(),
            }),
            TxnOutcome::Failed { .. } => Err(Error::not_found(self.name(), Key::parse(self.name(), key)?.as_str())),
        }
    }

    /// Closes the handle: stops keep-alives, lock renewals and watches it started, then
    /// releases the connection. Later calls return [`Error::Closed`]; a later `close`
    /// returns `Ok(())`.
    ///
    /// Cancel-safe: the handle refuses calls from the first poll on, and a `close` dropped
    /// halfway (a timeout around it, say) leaves the rest to the next `close`, which
    /// finishes the shutdown and releases the connection.
    async fn close(&self) -> Result<()>;

    /// Background work this handle holds now: tasks (keep-alives, renewals, watch feeders)
    /// and live watch streams. For diagnostics and leak tests: it returns to its earlier
    /// value once watches are dropped and locks released.
    fn background_tasks(&self) -> usize;
}

/// What a backend implements. Keys arrive validated and normalized, values within the size
/// limit, and calls only when [`Backend::capabilities`] claims them; see the module docs.
///
/// The methods have the names of [`Store`]'s, which every `Backend` also is. In a file that
/// imports both traits, call one explicitly: `Backend::get(self, &key, opts)`, or reach
/// another store through `&dyn Store`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The registered name, such as `"etcd"`.
    fn name(&self) -> &'static str;
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;
    /// The tasks of this handle; [`Store::close`] shuts them down (renewals report
    /// `StoreClosed`, locks still held are released, watches end) *before* it calls
    /// [`Backend::close`], so nothing runs on a half-closed client.
    fn background(&self) -> &Background;

    /// See [`Store::put`].
    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()>;
    /// See [`Store::get`].
    async fn get(&self, key: &Key, opts: &ReadOptions) -> Result<KvPair>;
    /// See [`Store::delete`].
    async fn delete(&self, key: &Key) -> Result<()>;
    /// See [`Store::exists`]. By default a [`Backend::get`] that tells found from not found;
    /// backends with a cheaper existence check override it.
    async fn exists(&self, key: &Key, opts: &ReadOptions) -> Result<bool> {
        match Backend::get(self, key, opts).await {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }
    /// See [`Store::get_many`]; the keys arrive validated. By default concurrent
    /// [`Backend::get`]s, at most 16 in flight; backends with a multi-key read override it.
    async fn get_many(&self, keys: &[Key], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        get_each(self, keys, opts).await
    }
    /// Every pair whose key is `dir` or below it (bookkeeping excluded), in any order, and
    /// an empty vector when there is none; the caller applies the shared list rules.
    async fn list(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<KvPair>>;
    /// One page of [`Store::list_stream`], for backends that claim
    /// [`Capabilities::native_list_paging`]: up to `limit` pairs strictly below `dir` whose
    /// keys sort after `after`, sorted, bookkeeping excluded; fewer than `limit` only when
    /// no more follow.
    async fn list_page(&self, dir: &Key, after: Option<&str>, limit: usize, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let _ = (after, limit, opts);
        Err(Error::CallNotSupported {
            store: self.name(),
            call: "list_stream",
            key: dir.to_string(),
        })
    }
    /// The keys at or below `dir` (bookkeeping excluded, any order), for
    /// [`Store::list_stream`] on backends without native paging. By default from
    /// [`Backend::list`], whose values are dropped at once; backends override it with a
    /// keys-only listing.
    async fn list_keys(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<String>> {
        Ok(Backend::list(self, dir, opts)
            .await?
            .into_iter()
            .map(|pair| pair.key)
            .collect())
    }
    /// See [`Store::delete_tree`].
    async fn delete_tree(&self, dir: &Key) -> Result<()>;
    /// See [`Store::watch`].
    async fn watch(&self, key: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        let _ = opts;
        Err(Error::CallNotSupported {
            store: self.name(),
            call: "watch",
            key: key.to_string(),
        })
    }
    /// Like [`Store::watch_tree`], but may also report `dir` itself and unsorted snapshots.
    async fn watch_tree(&self, dir: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        let _ = opts;
        Err(Error::CallNotSupported {
            store: self.name(),
            call: "watch_tree",
            key: dir.to_string(),
        })
    }
    /// See [`Store::watch_from`] and [`Store::watch_tree_from`] (`tree`). By default a new
    /// watch, which starts with a snapshot; backends that keep history override it and claim
    /// [`Capabilities::watch_replay`].
    async fn watch_from(&self, key: &Key, tree: bool, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        let _ = index;
        if tree {
            Backend::watch_tree(self, key, opts).await
        } else {
            Backend::watch(self, key, opts).await
        }
    }
    /// See [`Store::new_lock`].
    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        let _ = opts;
        Err(Error::CallNotSupported {
            store: self.name(),
            call: "new_lock",
            key: key.to_string(),
        })
    }
    /// See [`Store::atomic_put`]; `previous.last_index` is never 0 here.
    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair>;
    /// See [`Store::atomic_delete`]; `previous.last_index` is never 0 here.
    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()>;
    /// See [`Store::commit`]; `txn` passed the shared checks, is not empty, and every
    /// [`Check::HeldBy`] fence names this store.
    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        Err(Error::CallNotSupported {
            store: self.name(),
            call: "commit",
            key: txn.first_key().map(Key::to_string).unwrap_or_default(),
        })
    }
    /// Releases the connection; the handle's background work was shut down just before.
    /// Runs once, unless a `close` was dropped while it ran: then the next `close` runs it
    /// again from the start, so it must tolerate an earlier run that did not finish.
    async fn close(&self) -> Result<()>;
}

/// Runs one call inside its span: validates the key, refuses the call on a closed handle,
/// then runs `body` with the normalized key.
async fn call<B, T, F, Fut>(backend: &B, call: &'static str, raw_key: &str, body: F) -> Result<T>
where
    B: Backend + ?Sized,
    F: FnOnce(Key) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let span = tracing::info_span!("valkeyrie", store = backend.name(), call, key = raw_key);
    async move {
        let result = match Key::parse(backend.name(), raw_key) {
            Err(err) => Err(err),
            Ok(_) if backend.background().is_closed() => Err(Error::Closed {
                store: backend.name(),
                call,
                key: raw_key.to_owned(),
            }),
            Ok(key) => body(key).await.map_err(|e| e.in_call(call, raw_key)),
        };
        if let Err(err) = &result {
            tracing::debug!(error = %err, "call failed");
        }
        result
    }
    .instrument(span)
    .await
}

/// `get_many` as concurrent [`Backend::get`]s, at most 16 in flight: the default, and the
/// fallback of backends whose multi-key read does not always apply.
pub async fn get_each<B: Backend + ?Sized>(
    backend: &B,
    keys: &[Key],
    opts: &ReadOptions,
) -> Result<Vec<Option<KvPair>>> {
    // Collected first: a lazy iterator's closure in the future trips the `Send` check.
    let reads: Vec<_> = keys.iter().map(|key| Backend::get(backend, key, opts)).collect();
    futures_util::stream::iter(reads)
        .buffered(16)
        .map(|read| match read {
            Ok(pair) => Ok(Some(pair)),
            Err(Error::KeyNotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        })
        .try_collect()
        .await
}

/// Runs one call on several keys inside its span (named after `first_key`, with the
/// number of keys), refusing it on a closed handle; `body` validates the keys.
async fn many_call<B, T, F, Fut>(backend: &B, call: &'static str, first_key: &str, size: usize, body: F) -> Result<T>
where
    B: Backend + ?Sized,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let span = tracing::info_span!("valkeyrie", store = backend.name(), call, key = first_key, size);
    async move {
        let result = if backend.background().is_closed() {
            Err(Error::Closed {
                store: backend.name(),
                call,
                key: first_key.to_owned(),
            })
        } else {
            body().await.map_err(|e| e.in_call(call, first_key))
        };
        if let Err(err) = &result {
            tracing::debug!(error = %err, "call failed");
        }
        result
    }
    .instrument(span)
    .await
}

fn check_value<B: Backend + ?Sized>(backend: &B, key: &Key, value: &Bytes) -> Result<()> {
    match backend.capabilities().max_value_size {
        Some(limit) if value.len() > limit => Err(Error::ValueTooLarge {
            store: backend.name(),
            key: key.to_string(),
            size: value.len(),
            limit,
        }),
        _ => Ok(()),
    }
}

/// Checks that the backend supports the options, refuses a TTL over the longest one it
/// honours and raises one below its minimum to it (as [`WriteOptions::ttl`] promises).
fn write_options<B: Backend + ?Sized>(
    backend: &B,
    key: &Key,
    call: &'static str,
    opts: &WriteOptions,
) -> Result<WriteOptions> {
    let caps = backend.capabilities();
    let unsupported = (opts.ttl.is_some() && !caps.ttl) || (opts.keep_alive && !caps.keep_alive);
    if unsupported {
        return Err(Error::CallNotSupported {
            store: backend.name(),
            call,
            key: key.to_string(),
        });
    }
    let ttl = opts
        .ttl
        .map(|ttl| bounded_ttl(backend.name(), &caps, key, ttl))
        .transpose()?;
    Ok(WriteOptions {
        ttl,
        keep_alive: opts.keep_alive,
    })
}

/// `ttl` raised to the backend's minimum, or [`Error::InvalidConfiguration`] (field `ttl`,
/// naming the key) when it is over [`MAX_TTL`] or the backend's own maximum: every backend
/// adds a TTL to a clock, which overflows.
fn bounded_ttl(store: &'static str, caps: &Capabilities, key: &Key, ttl: Duration) -> Result<Duration> {
    let max = caps.max_ttl.map_or(MAX_TTL, |max| max.min(MAX_TTL));
    if ttl > max {
        return Err(Error::config(
            store,
            "ttl",
            format!(
                "the TTL {ttl:?} for key {:?} is longer than the longest {store} honours, {max:?}",
                key.as_str()
            ),
        ));
    }
    Ok(ttl.max(caps.min_ttl))
}

fn check_previous<B: Backend + ?Sized>(backend: &B, key: &Key, previous: &KvPair) -> Result<()> {
    if previous.last_index == 0 {
        return Err(Error::PreviousNotSpecified {
            store: backend.name(),
            key: key.to_string(),
        });
    }
    Ok(())
}

fn require<B: Backend + ?Sized>(backend: &B, key: &Key, call: &'static str, supported: bool) -> Result<()> {
    if supported {
        Ok(())
    } else {
        Err(Error::CallNotSupported {
            store: backend.name(),
            call,
            key: key.to_string(),
        })
    }
}

/// The shared checks of a transaction (see [`crate::txn`]), turning it into what backends
/// receive.
fn validate_txn<B: Backend + ?Sized>(backend: &B, txn: Transaction) -> Result<Txn> {
    let store = backend.name();
    let caps = backend.capabilities();
    let first_key = txn.first_key().to_owned();
    let invalid = |key: &str, reason: String| Error::InvalidTransaction {
        store,
        key: key.to_owned(),
        reason,
    };
    if let Some(limit) = caps.max_transaction_ops.filter(|&limit| txn.len() > limit) {
        return Err(invalid(
            &first_key,
            format!(
                "{} compares and operations, over this backend's limit of {limit}",
                txn.len()
            ),
        ));
    }
    let mut compares = Vec::with_capacity(txn.compares.len());
    for (raw, check) in txn.compares {
        let key = Key::parse(store, &raw)?;
        match &check {
            Check::IndexIs(0) => return Err(Error::PreviousNotSpecified { store, key: raw }),
            Check::HeldBy(fence) if fence.store() != store => {
                return Err(invalid(
                    &raw,
                    format!("the fence is of a lock in store {:?}", fence.store()),
                ))
            }
            _ => {}
        }
        compares.push(Compare { key, check });
    }
    let mut ops = Vec::with_capacity(txn.ops.len());
    let mut written = std::collections::HashSet::with_capacity(txn.ops.len());
    for raw in txn.ops {
        let key = Key::parse(store, raw.key())?;
        if !written.insert(key.clone()) {
            return Err(invalid(key.as_str(), "two operations on the same key".to_owned()));
        }
        ops.push(match raw {
            RawOp::Put { value, opts, .. } => {
                check_value(backend, &key, &value)?;
                if opts.keep_alive {
                    return Err(invalid(
                        key.as_str(),
                        "keep_alive is for a single put, not a transaction".to_owned(),
                    ));
                }
                let opts = write_options(backend, &key, "commit", &opts)?;
                TxnOp::Put { key, value, opts }
            }
            RawOp::Delete { .. } => TxnOp::Delete { key },
        });
    }
    Ok(Txn { compares, ops })
}

#[async_trait]
impl<B: Backend> Store for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }

    fn capabilities(&self) -> Capabilities {
        Backend::capabilities(self)
    }

    async fn put(&self, key: &str, value: Bytes, opts: &WriteOptions) -> Result<()> {
        call(self, "put", key, |key| async move {
            check_value(self, &key, &value)?;
            let opts = write_options(self, &key, "put", opts)?;
            Backend::put(self, &key, value, &opts).await
        })
        .await
    }

    async fn get(&self, key: &str, opts: &ReadOptions) -> Result<KvPair> {
        call(
            self,
            "get",
            key,
            |key| async move { Backend::get(self, &key, opts).await },
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        call(
            self,
            "delete",
            key,
            |key| async move { Backend::delete(self, &key).await },
        )
        .await
    }

    async fn exists(&self, key: &str, opts: &ReadOptions) -> Result<bool> {
        call(self, "exists", key, |key| async move {
            Backend::exists(self, &key, opts).await
        })
        .await
    }

    async fn list(&self, dir: &str, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        call(self, "list", dir, |dir| async move {
            let mut pairs = Backend::list(self, &dir, opts).await?;
            // Siblings sharing the prefix (`dir2/…`) do not make `dir` exist.
            pairs.retain(|pair| pair.key == dir.as_str() || dir.contains(&pair.key));
            if pairs.is_empty() {
                return Err(Error::not_found(Backend::name(self), dir.as_str()));
            }
            pairs.retain(|pair| dir.contains(&pair.key));
            pairs.sort_by(|a, b| a.key.cmp(&b.key));
            pairs.dedup_by(|a, b| a.key == b.key);
            Ok(pairs)
        })
        .await
    }

    fn list_stream(self: Arc<Self>, dir: &str, opts: ListOptions) -> Result<ListStream> {
        let dir = Key::parse(Backend::name(&*self), dir)?;
        if self.background().is_closed() {
            return Err(Error::Closed {
                store: Backend::name(&*self),
                call: "list_stream",
                key: dir.to_string(),
            });
        }
        let name = dir.to_string();
        let pages = if Backend::capabilities(&*self).native_list_paging {
            list::native_pages(self, dir, opts)
        } else {
            list::key_pages(self, dir, opts)
        };
        Ok(Box::pin(pages.map_err(move |e| e.in_call("list_stream", &name))))
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        call(self, "delete_tree", dir, |dir| async move {
            Backend::delete_tree(self, &dir).await
        })
        .await
    }

    async fn watch(&self, key: &str, opts: &ReadOptions) -> Result<WatchStream> {
        call(self, "watch", key, |key| async move {
            require(self, &key, "watch", Backend::capabilities(self).watch)?;
            Backend::watch(self, &key, opts).await
        })
        .await
    }

    async fn watch_tree(&self, dir: &str, opts: &ReadOptions) -> Result<WatchStream> {
        call(self, "watch_tree", dir, |dir| async move {
            require(self, &dir, "watch_tree", Backend::capabilities(self).watch_tree)?;
            let stream = Backend::watch_tree(self, &dir, opts).await?;
            Ok(tree_view(dir, stream))
        })
        .await
    }

    async fn watch_from(&self, key: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        call(self, "watch_from", key, |key| async move {
            require(self, &key, "watch_from", Backend::capabilities(self).watch)?;
            Backend::watch_from(self, &key, false, index, opts).await
        })
        .await
    }

    async fn watch_tree_from(&self, dir: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        call(self, "watch_tree_from", dir, |dir| async move {
            require(self, &dir, "watch_tree_from", Backend::capabilities(self).watch_tree)?;
            let stream = Backend::watch_from(self, &dir, true, index, opts).await?;
            Ok(tree_view(dir, stream))
        })
        .await
    }

    async fn new_lock(&self, key: &str, opts: LockOptions) -> Result<Box<dyn Locker>> {
        call(self, "new_lock", key, |key| async move {
            let caps = Backend::capabilities(self);
            require(self, &key, "new_lock", caps.lock)?;
            check_value(self, &key, &opts.value)?;
            // A TTL below the backend's minimum would let renewal fall behind expiry.
            let ttl = Some(bounded_ttl(Backend::name(self), &caps, &key, opts.ttl_or_default())?);
            let inner = Backend::new_lock(self, &key, LockOptions { ttl, ..opts }).await?;
            Ok(Box::new(TracedLocker { inner }) as Box<dyn Locker>)
        })
        .await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        call(self, "atomic_put", key, |key| async move {
            check_value(self, &key, &value)?;
            let opts = write_options(self, &key, "atomic_put", opts)?;
            if let Some(previous) = previous {
                check_previous(self, &key, previous)?;
            }
            Backend::atomic_put(self, &key, value, previous, &opts).await
        })
        .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        call(self, "atomic_delete", key, |key| async move {
            check_previous(self, &key, previous)?;
            Backend::atomic_delete(self, &key, previous).await
        })
        .await
    }

    async fn commit(&self, txn: Transaction) -> Result<TxnOutcome> {
        let first_key = txn.first_key().to_owned();
        let size = txn.len();
        many_call(self, "commit", &first_key, size, || async {
            if !Backend::capabilities(self).transactions {
                return Err(Error::CallNotSupported {
                    store: Backend::name(self),
                    call: "commit",
                    key: first_key.clone(),
                });
            }
            let txn = validate_txn(self, txn)?;
            if txn.compares.is_empty() && txn.ops.is_empty() {
                return Ok(TxnOutcome::Committed);
            }
            Backend::commit(self, &txn).await
        })
        .await
    }

    async fn get_many(&self, keys: &[&str], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        let first_key = keys.first().copied().unwrap_or_default();
        many_call(self, "get_many", first_key, keys.len(), || async move {
            let keys = keys
                .iter()
                .map(|key| Key::parse(Backend::name(self), key))
                .collect::<Result<Vec<_>>>()?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            Backend::get_many(self, &keys, opts).await
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        let span = tracing::info_span!("valkeyrie", store = Backend::name(self), call = "close");
        // Background work first (renewals report `StoreClosed`, watches end), then the
        // connection: nothing runs on a half-closed client.
        let release = || async { Backend::close(self).await.map_err(|e| e.in_call("close", "")) };
        self.background().close(release).instrument(span).await
    }

    fn background_tasks(&self) -> usize {
        self.background().len()
    }
}

/// Gives `lock` and `try_lock` a span like every other call, and stamps their errors.
struct TracedLocker {
    inner: Box<dyn Locker>,
}

#[async_trait]
impl Locker for TracedLocker {
    fn key(&self) -> &str {
        self.inner.key()
    }

    fn store_name(&self) -> &'static str {
        self.inner.store_name()
    }

    async fn lock(&self) -> Result<LockGuard> {
        let span = tracing::info_span!("valkeyrie", store = self.store_name(), call = "lock", key = self.key());
        let locked = self.inner.lock().instrument(span).await;
        locked.map_err(|e| e.in_call("lock", self.key()))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let span = tracing::info_span!(
            "valkeyrie",
            store = self.store_name(),
            call = "try_lock",
            key = self.key()
        );
        let locked = self.inner.try_lock().instrument(span).await;
        locked.map_err(|e| e.in_call("try_lock", self.key()))
    }
}
