//! The valkeyrie side of every comparison: the operations through the [`Kv`] handle, the
//! way a user's code calls them.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use valkeyrie::{Error, Kv, WatchEvent};

use crate::driver::{BenchResult, Driver, ValueStream};

/// A store opened through valkeyrie's registry.
pub(crate) struct Valkeyrie {
    kv: Kv,
}

impl Valkeyrie {
    /// Opens `url` through the registry.
    pub(crate) async fn open(url: &str) -> BenchResult<Self> {
        let kv = valkeyrie::open(url).await.map_err(|e| format!("open {url}: {e}"))?;
        Ok(Valkeyrie { kv })
    }

    /// The store handle, for setting up and cleaning up data.
    pub(crate) fn kv(&self) -> &Kv {
        &self.kv
    }
}

fn text(err: Error) -> String {
    err.to_string()
}

#[async_trait]
impl Driver for Valkeyrie {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        self.kv.put(key, value).await.map_err(text)
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.get_indexed(key).await?.0)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        match self.kv.get(key).await.map_err(text)? {
            Some(pair) => Ok((pair.value, pair.last_index)),
            None => Err(format!("{key} is missing")),
        }
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        match self.kv.put(key, value).if_index(index).await {
            Ok(_) => Ok(true),
            Err(Error::KeyModified { .. }) => Ok(false),
            Err(err) => Err(err.to_string()),
        }
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        Ok(self.kv.list(dir).await.map_err(text)?.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let events = self.kv.watch(key).await.map_err(text)?;
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
        let guard = self.kv.lock(key).value("bench").await.map_err(text)?;
        guard.unlock().await.map_err(text)
    }
}
