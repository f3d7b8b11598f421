//! The in-memory store (`memory://`): every call, including watch, TTL and locks, with no
//! server, so programs can unit-test their own code against the real semantics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use serde::Deserialize;

use super::{Engine, EngineOptions, LocalStore, Record, Storage};
use crate::config::BackendConfig;
use crate::error::{BoxError, Error, Result};
use crate::registry::{Registration, StoreSpec};

/// The registered name of the in-memory store.
pub const MEMORY: &str = "memory";

/// Records in a sorted map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    data: RwLock<BTreeMap<String, Record>>,
    index: AtomicU64,
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Record>, BoxError> {
        Ok(self
            .data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }

    fn insert(&self, key: &str, record: &Record) -> Result<Option<u64>, BoxError> {
        let previous = self
            .data
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), record.clone());
        Ok(previous.and_then(|r| r.expires_at))
    }

    fn remove(&self, key: &str) -> Result<Option<Record>, BoxError> {
        Ok(self.data.write().unwrap_or_else(PoisonError::into_inner).remove(key))
    }

    fn apply(&self, writes: &[(&str, Option<&Record>)]) -> Result<(), BoxError> {
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        for (key, record) in writes {
            match record {
                Some(record) => data.insert((*key).to_owned(), (*record).clone()),
                None => data.remove(*key),
            };
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Record)>, BoxError> {
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        Ok(data
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect())
    }

    fn scan_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, Record)>, BoxError> {
        use std::ops::Bound;
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(data
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect())
    }

    fn next_index(&self) -> Result<u64, BoxError> {
        Ok(self.index.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn flush(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Settings of the in-memory store (`memory://NAME?max_value_size=…`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Opening the same name again in this process gives a handle on the same data; `None`
    /// makes a private store. From the URL: `memory://NAME`.
    pub name: Option<String>,
    /// Largest value accepted, in bytes (default 1 MiB, etcd's default request limit, so
    /// code tested here fits a real server).
    pub max_value_size: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            name: None,
            max_value_size: 1024 * 1024,
        }
    }
}

impl BackendConfig for MemoryConfig {
    const STORE: &'static str = MEMORY;
}

/// The in-memory store.
///
/// ```
/// # async fn demo() -> valkeyrie_core::Result<()> {
/// use valkeyrie_core::{Kv, MemoryStore};
///
/// let store = MemoryStore::new();
/// let other = Kv::new(store.handle()); // a second handle on the same data
/// let kv = Kv::new(store);
/// kv.put("a/b", "1").await?;
/// assert_eq!(other.get("a/b").await?.map(|pair| pair.value), Some("1".into()));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub type MemoryStore = LocalStore<MemoryStorage>;

/// Named in-memory engines of this process, held weakly: a name lives while a handle does.
static NAMED: Mutex<BTreeMap<String, Weak<Engine<MemoryStorage>>>> = Mutex::new(BTreeMap::new());

impl LocalStore<MemoryStorage> {
    /// A new, private in-memory store with the default settings.
    pub fn new() -> MemoryStore {
        LocalStore::from_engine(Self::new_engine(MemoryConfig::default().max_value_size), false)
    }

    fn new_engine(max_value_size: usize) -> Arc<Engine<MemoryStorage>> {
        let options = EngineOptions {
            store: MEMORY,
            max_value_size: Some(max_value_size),
            persistent: false,
        };
        // An empty memory storage scans without error: there is nothing to fail on.
        Engine::new(MemoryStorage::default(), options).unwrap_or_else(|_| unreachable!("memory storage cannot fail"))
    }

    /// An in-memory store with `config`; with a name, a handle on that name's data.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] when the name is already open in this process with
    /// another `max_value_size`.
    pub fn with_config(config: MemoryConfig) -> Result<MemoryStore> {
        let Some(name) = &config.name else {
            return Ok(LocalStore::from_engine(Self::new_engine(config.max_value_size), false));
        };
        let mut named = NAMED.lock().unwrap_or_else(PoisonError::into_inner);
        named.retain(|_, engine| engine.strong_count() > 0);
        let engine = match named.get(name).and_then(Weak::upgrade) {
            Some(engine) if engine.options().max_value_size != Some(config.max_value_size) => {
                let reason = format!(
                    "memory store {name:?} is already open with max_value_size {:?}",
                    engine.options().max_value_size
                );
                return Err(Error::config(MEMORY, "max_value_size", reason));
            }
            Some(engine) => engine,
            None => {
                let engine = Self::new_engine(config.max_value_size);
                named.insert(name.clone(), Arc::downgrade(&engine));
                engine
            }
        };
        Ok(LocalStore::from_engine(engine, false))
    }
}

impl Default for LocalStore<MemoryStorage> {
    fn default() -> Self {
        Self::new()
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn crate::Store>> {
    let mut config: MemoryConfig = spec.config.resolve()?;
    match spec.endpoints.as_slice() {
        [] => {}
        [name] => config.name = Some(name.clone()),
        _ => return Err(Error::config(MEMORY, "endpoints", "at most one name: memory://NAME")),
    }
    Ok(Arc::new(MemoryStore::with_config(config)?))
}

inventory::submit! { Registration::new(MEMORY, None, |spec| Box::pin(open(spec))) }

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn a_named_store_reopened_with_other_limits_is_refused() {
        let config = MemoryConfig {
            name: Some("limits-test".into()),
            max_value_size: 10,
        };
        let first = MemoryStore::with_config(config.clone()).unwrap();
        let err = MemoryStore::with_config(MemoryConfig {
            max_value_size: 20,
            ..config.clone()
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
        assert!(err.to_string().contains("max_value_size"), "{err}");
        assert!(
            MemoryStore::with_config(config).is_ok(),
            "the same limits share the store"
        );
        drop(first);
    }

    #[tokio::test]
    async fn closing_a_handle_releases_its_locks_at_once() {
        use crate::{LockOptions, Store};
        let config = MemoryConfig {
            name: Some("close-releases-test".into()),
            ..MemoryConfig::default()
        };
        let first = MemoryStore::with_config(config.clone()).unwrap();
        let second = MemoryStore::with_config(config).unwrap();
        let options = LockOptions {
            ttl: Some(std::time::Duration::from_secs(60)),
            ..LockOptions::default()
        };
        let held = first
            .new_lock("leader", options.clone())
            .await
            .unwrap()
            .lock()
            .await
            .unwrap();
        let other = second.new_lock("leader", options).await.unwrap();
        assert!(other.try_lock().await.unwrap().is_none(), "held by the first handle");
        first.close().await.unwrap();
        assert!(held.ensure_held().is_err(), "a closed handle's lock says held");
        let taken = other.try_lock().await.unwrap();
        assert!(taken.is_some(), "the closed handle's lock waits out its 60 s TTL");
    }
}
