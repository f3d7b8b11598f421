//! The [`Store`] an [`Intercept`] makes of the store below it: every call described as a
//! [`Call`] and run through the interceptor, written once for all layers.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt};

use super::{Call, CallKind, Intercept, Next};
use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions};
use crate::list::{ListOptions, ListStream};
use crate::lock::{LockGuard, Locker};
use crate::store::Store;
use crate::txn::{Transaction, TxnOutcome};
use crate::watch::WatchStream;

/// `inner` with every call run through `interceptor`.
pub(super) struct Intercepted<I> {
    inner: Arc<dyn Store>,
    interceptor: I,
}

impl<I: Intercept> Intercepted<I> {
    pub(super) fn new(inner: Arc<dyn Store>, interceptor: I) -> Self {
        Intercepted { inner, interceptor }
    }

    /// Runs one call: `run` starts an attempt on the store below.
    async fn call<'a, T: Send + 'a>(
        &'a self,
        name: &'static str,
        key: &'a str,
        kind: CallKind,
        run: &'a (dyn Fn() -> BoxFuture<'a, Result<T>> + Send + Sync + 'a),
    ) -> Result<T> {
        let call = Call {
            store: self.inner.name(),
            name,
            key,
            kind,
        };
        self.interceptor.intercept(call, Next::new(run)).await
    }
}

#[async_trait]
impl<I: Intercept> Store for Intercepted<I> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, key: &str, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let run = || self.inner.put(key, value.clone(), opts);
        self.call("put", key, CallKind::Write, &run).await
    }

    async fn get(&self, key: &str, opts: &ReadOptions) -> Result<KvPair> {
        let run = || self.inner.get(key, opts);
        self.call("get", key, CallKind::Read, &run).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let run = || self.inner.delete(key);
        self.call("delete", key, CallKind::Write, &run).await
    }

    async fn exists(&self, key: &str, opts: &ReadOptions) -> Result<bool> {
        let run = || self.inner.exists(key, opts);
        self.call("exists", key, CallKind::Read, &run).await
    }

    async fn list(&self, dir: &str, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let run = || self.inner.list(dir, opts);
        self.call("list", dir, CallKind::Read, &run).await
    }

    /// The stream's opening (reading its first item) runs through the interceptor; the
    /// rest of the stream is the inner store's. The directory is checked now, as below.
    fn list_stream(self: Arc<Self>, dir: &str, opts: ListOptions) -> Result<ListStream> {
        drop(Arc::clone(&self.inner).list_stream(dir, opts.clone())?);
        let dir = dir.to_owned();
        let opening = async move {
            let run = || {
                let pages = Arc::clone(&self.inner).list_stream(&dir, opts.clone());
                async move {
                    let mut pages = pages?;
                    match pages.next().await {
                        Some(Err(err)) => Err(err),
                        first => Ok((first, pages)),
                    }
                }
                .boxed()
            };
            match self.call("list_stream", &dir, CallKind::OpenStream, &run).await {
                Ok((Some(first), rest)) => stream::once(async { first }).chain(rest).boxed(),
                Ok((None, _)) => stream::empty().boxed(),
                Err(err) => stream::once(async { Err(err) }).boxed(),
            }
        };
        Ok(opening.flatten_stream().boxed())
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let run = || self.inner.delete_tree(dir);
        self.call("delete_tree", dir, CallKind::Write, &run).await
    }

    async fn watch(&self, key: &str, opts: &ReadOptions) -> Result<WatchStream> {
        let run = || self.inner.watch(key, opts);
        self.call("watch", key, CallKind::OpenStream, &run).await
    }

    async fn watch_tree(&self, dir: &str, opts: &ReadOptions) -> Result<WatchStream> {
        let run = || self.inner.watch_tree(dir, opts);
        self.call("watch_tree", dir, CallKind::OpenStream, &run).await
    }

    async fn watch_from(&self, key: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        let run = || self.inner.watch_from(key, index, opts);
        self.call("watch_from", key, CallKind::OpenStream, &run).await
    }

    async fn watch_tree_from(&self, dir: &str, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        let run = || self.inner.watch_tree_from(dir, index, opts);
        self.call("watch_tree_from", dir, CallKind::OpenStream, &run).await
    }

    async fn new_lock(&self, key: &str, opts: LockOptions) -> Result<Box<dyn Locker>> {
        let run = || self.inner.new_lock(key, opts.clone());
        self.call("new_lock", key, CallKind::NewLock, &run).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let run = || self.inner.atomic_put(key, value.clone(), previous, opts);
        self.call("atomic_put", key, CallKind::Write, &run).await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let run = || self.inner.atomic_delete(key, previous);
        self.call("atomic_delete", key, CallKind::Write, &run).await
    }

    async fn commit(&self, txn: Transaction) -> Result<TxnOutcome> {
        let key = txn.first_key().to_owned();
        let run = || self.inner.commit(txn.clone());
        self.call("commit", &key, CallKind::Write, &run).await
    }

    async fn get_many(&self, keys: &[&str], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        let run = || self.inner.get_many(keys, opts);
        let first = keys.first().copied().unwrap_or_default();
        self.call("get_many", first, CallKind::Read, &run).await
    }

    async fn put_many(&self, pairs: Vec<(String, Bytes)>, opts: &WriteOptions) -> Result<()> {
        let first = pairs.first().map(|(key, _)| key.clone()).unwrap_or_default();
        let run = || self.inner.put_many(pairs.clone(), opts);
        self.call("put_many", &first, CallKind::Write, &run).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<()> {
        let run = || self.inner.delete_many(keys);
        let first = keys.first().copied().unwrap_or_default();
        self.call("delete_many", first, CallKind::Write, &run).await
    }

    async fn put_if_held(&self, guard: &LockGuard, key: &str, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let run = || self.inner.put_if_held(guard, key, value.clone(), opts);
        self.call("put_if_held", key, CallKind::Write, &run).await
    }

    async fn delete_if_held(&self, guard: &LockGuard, key: &str) -> Result<()> {
        let run = || self.inner.delete_if_held(guard, key);
        self.call("delete_if_held", key, CallKind::Write, &run).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn background_tasks(&self) -> usize {
        self.inner.background_tasks()
    }
}
