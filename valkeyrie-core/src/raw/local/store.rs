//! [`LocalStore`]: one handle on a local engine, implementing [`Backend`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::engine::Engine;
use super::lock::LocalLocker;
use super::{watch, Storage};
use crate::capabilities::Capabilities;
use crate::error::{Error, LostReason, Result};
use crate::key::Key;
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions};
use crate::lock::Locker;
use crate::raw::background::Background;
use crate::raw::hold::{Hold, Renew, Renewal};
use crate::store::Backend;
use crate::txn::{Txn, TxnOp, TxnOutcome};
use crate::watch::WatchStream;

/// How [`LocalStore::revoke_lock`] takes a lock away from its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRevocation {
    /// Delete the lock record, as an operator clearing a stuck lock would.
    DeleteRecord,
    /// End the holder's TTL now, as if it had stopped renewing.
    Expire,
}

/// One handle on a local engine. Handles made by [`LocalStore::handle`] share the data, the
/// watches and the locks; keep-alives and lock renewals belong to the handle that started
/// them.
pub struct LocalStore<S: Storage> {
    engine: Arc<Engine<S>>,
    background: Background,
    sync_writes: bool,
}

impl<S: Storage> std::fmt::Debug for LocalStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("store", &self.engine.store())
            .field("background_tasks", &self.background.len())
            .field("sync_writes", &self.sync_writes)
            .finish()
    }
}

impl<S: Storage> LocalStore<S> {
    /// A handle on `engine`; with `sync_writes`, every write is flushed to durable storage
    /// before the call returns.
    pub fn from_engine(engine: Arc<Engine<S>>, sync_writes: bool) -> Self {
        LocalStore {
            engine,
            background: Background::new(),
            sync_writes,
        }
    }

    /// Another handle on the same engine, with its own background tasks.
    pub fn handle(&self) -> Self {
        LocalStore::from_engine(Arc::clone(&self.engine), self.sync_writes)
    }

    /// The engine behind this handle.
    pub fn engine(&self) -> &Arc<Engine<S>> {
        &self.engine
    }

    /// Takes the lock on `key` away from whoever holds it; their guard's lost signal fires
    /// and the next contender can take it. Returns whether someone held it.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a bad key.
    pub fn revoke_lock(&self, key: &str, how: LockRevocation) -> Result<bool> {
        let key = Key::parse(self.engine.store(), key)?;
        Ok(self.engine.revoke(&key, how == LockRevocation::Expire))
    }

    async fn durable(&self, key: &Key) -> Result<()> {
        if !self.sync_writes {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let key_text = key.to_string();
        let store = self.engine.store();
        tokio::task::spawn_blocking(move || engine.flush(&key_text))
            .await
            .map_err(|e| Error::backend(store, key.as_str(), false, e))?
    }

    /// Starts the sweeper for a TTL write and, with `keep_alive`, has the handle's driver
    /// refresh it.
    fn after_ttl_write(&self, pair: &KvPair, opts: &WriteOptions) {
        let Some(ttl) = opts.ttl else { return };
        self.engine.ensure_sweeper();
        if !opts.keep_alive {
            return;
        }
        let refresh = Refresh {
            engine: Arc::clone(&self.engine),
            key: pair.key.clone(),
            index: pair.last_index,
            ttl,
        };
        let period = (ttl / 3).max(Duration::from_millis(10));
        self.background
            .spawner()
            .keep_alive(Hold::new(refresh, Instant::now(), ttl).every(period));
    }
}

/// A `keep_alive` write, as the handle's driver refreshes it.
struct Refresh<S: Storage> {
    engine: Arc<Engine<S>>,
    key: String,
    index: u64,
    ttl: Duration,
}

#[async_trait]
impl<S: Storage> Renew for Refresh<S> {
    async fn renew(&self) -> Result<Renewal> {
        Ok(if self.engine.refresh(&self.key, self.index, self.ttl)? {
            Renewal::Held(self.ttl)
        } else {
            Renewal::Lost(LostReason::RecordDeleted)
        })
    }
}

#[async_trait]
impl<S: Storage> Backend for LocalStore<S> {
    fn name(&self) -> &'static str {
        self.engine.store()
    }

    fn capabilities(&self) -> Capabilities {
        let options = self.engine.options();
        let mut caps = Capabilities::all();
        // Renewals run every third of a TTL: below 100 ms a busy runtime could miss them.
        caps.min_ttl = Duration::from_millis(100);
        caps.max_value_size = options.max_value_size;
        caps.persistent = options.persistent;
        caps.atomic_get_many = true;
        caps.native_list_paging = true;
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let pair = self.engine.put(key, value, opts.ttl)?;
        self.after_ttl_write(&pair, opts);
        self.durable(key).await
    }

    async fn get(&self, key: &Key, _opts: &ReadOptions) -> Result<KvPair> {
        self.engine.get(key)
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.engine.delete(key)?;
        self.durable(key).await
    }

    async fn get_many(&self, keys: &[Key], _opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        self.engine.get_many(keys)
    }

    async fn exists(&self, key: &Key, _opts: &ReadOptions) -> Result<bool> {
        self.engine.exists(key)
    }

    async fn list(&self, dir: &Key, _opts: &ReadOptions) -> Result<Vec<KvPair>> {
        self.engine.list(dir)
    }

    async fn list_page(
        &self,
        dir: &Key,
        after: Option<&str>,
        limit: usize,
        _opts: &ReadOptions,
    ) -> Result<Vec<KvPair>> {
        self.engine.list_page(dir, after, limit)
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        self.engine.delete_tree(dir)?;
        self.durable(dir).await
    }

    async fn watch(&self, key: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        self.engine.ensure_sweeper();
        watch::watch(&self.engine, key, false, &self.background)
    }

    async fn watch_tree(&self, dir: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        self.engine.ensure_sweeper();
        watch::watch(&self.engine, dir, true, &self.background)
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        Ok(Box::new(LocalLocker {
            engine: Arc::clone(&self.engine),
            key: key.clone(),
            ttl: opts.ttl_or_default(),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            sync_writes: self.sync_writes,
            spawner: self.background.spawner(),
        }))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let pair = self.engine.atomic_put(key, value, previous, opts.ttl)?;
        self.after_ttl_write(&pair, opts);
        self.durable(key).await?;
        Ok(pair)
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        self.engine.atomic_delete(key, previous)?;
        self.durable(key).await
    }

    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let outcome = self.engine.commit(txn)?;
        if outcome.is_committed() {
            if txn
                .ops
                .iter()
                .any(|op| matches!(op, TxnOp::Put { opts, .. } if opts.ttl.is_some()))
            {
                self.engine.ensure_sweeper();
            }
            if let Some(op) = txn.ops.first() {
                self.durable(op.key()).await?;
            }
        }
        Ok(outcome)
    }

    async fn close(&self) -> Result<()> {
        let engine = Arc::clone(&self.engine);
        let store = engine.store();
        tokio::task::spawn_blocking(move || engine.flush(""))
            .await
            .map_err(|e| Error::backend(store, "", false, e))?
    }
}
