//! The valkeyrie side of every comparison: the operations through `Arc<dyn Store>`, the way
//! a user's code calls them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use valkeyrie::{Error, KvPair, LockOptions, ReadOptions, Store, WatchEvent, WriteOptions};

use crate::driver::{BenchResult, Driver, ValueStream};

/// A store opened through valkeyrie's registry.
pub(crate) struct Valkeyrie {
    store: Arc<dyn Store>,
}

impl Valkeyrie {
    /// Opens `url` through the registry.
    pub(crate) async fn open(url: &str) -> BenchResult<Self> {
        let kv = valkeyrie::open(url).await.map_err(|e| format!("open {url}: {e}"))?;
        Ok(Valkeyrie { store: kv.into() })
    }

    /// The store handle, for setting up and cleaning up data.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

fn text(err: Error) -> String {
    err.to_string()
}

#[async_trait]
impl Driver for Valkeyrie {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        self.store.put(key, value, &WriteOptions::default()).await.map_err(text)
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.store.get(key, &ReadOptions::default()).await.map_err(text)?.value)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let pair = self.store.get(key, &ReadOptions::default()).await.map_err(text)?;
        Ok((pair.value, pair.last_index))
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        let previous = KvPair::new(key, Bytes::new(), index);
        match self
            .store
            .atomic_put(key, value, Some(&previous), &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::KeyModified { .. }) => Ok(false),
            Err(err) => Err(err.to_string()),
        }
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        Ok(self.store.list(dir, &ReadOptions::default()).await.map_err(text)?.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let events = self.store.watch(key, &ReadOptions::default()).await.map_err(text)?;
        let values = events.filter_map(|event| async move {
            match event {
                Ok(WatchEvent::Put(pair)) => Some(Ok(pair.value)),
                Ok(WatchEvent::Snapshot(pairs)) => pairs.into_iter().next().map(|pair| Ok(pair.value)),
                Ok(_) => None,
                Err(err) => Some(Err(err.to_string())),
            }
        });
        Ok(Box::pin(values))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let locker = self
            .store
            .new_lock(key, LockOptions::with_value("bench"))
            .await
            .map_err(text)?;
        let guard = locker.lock().await.map_err(text)?;
        guard.unlock().await.map_err(text)
    }
}
