//! [`RedisStore`]: the [`Backend`] implementation and the registration.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::interfaces::{ClientLike, ClusterInterface, KeysInterface};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;
use valkeyrie_core::raw::{Backend, Background, Hold, Key, Registration, Renew, Renewal, StoreSpec, Txn};
use valkeyrie_core::{
    AtomicScope, Capabilities, Error, KvPair, LockOptions, Locker, LostReason, ReadOptions, Result, Store, TxnOutcome,
    WatchStream, WriteOptions,
};

use crate::client::{glob_escape, index_of, millis, names_of, RedisClient, BATCH, IN_FLIGHT};
use crate::codec::is_index_key;
use crate::config::{RedisConfig, ValueEncoding};
use crate::lock::RedisLocker;
use crate::scripts::write_args;
use crate::{txn, watch, REDIS, REDISS};

/// A handle on a Redis deployment.
pub struct RedisStore {
    pub(crate) client: RedisClient,
    pub(crate) config: RedisConfig,
    background: Background,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Connects to `endpoints` (`host:port`; default `127.0.0.1:6379`): the server, the
    /// cluster's seed nodes or the sentinels, depending on the topology.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting; [`Error::NotReachable`] when the
    /// server does not answer within `connect_timeout`.
    pub async fn connect<I, E>(self, endpoints: I) -> Result<RedisStore>
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        self.validate(&endpoints)?;
        let background = Background::new();
        // Not called through the store handle: its errors are named here, once.
        let client = RedisClient::connect(&endpoints, &self, &background.spawner())
            .await
            .map_err(|e| e.in_call("connect", ""))?;
        Ok(RedisStore {
            client,
            config: self,
            background,
        })
    }
}

fn written(key: &Key, value: Bytes, status: &str) -> Result<KvPair> {
    match index_of(status) {
        Some(index) => Ok(KvPair::new(key.as_str(), value, index)),
        None => Err(Error::backend(
            REDIS,
            key.as_str(),
            false,
            format!("unexpected script answer {status:?}"),
        )),
    }
}

/// Every key strictly below `dir`, from SCAN `dir/*` (deduplicated: SCAN may repeat), without
/// the raw layout's index keys.
pub(crate) async fn keys_below(client: &RedisClient, dir: &Key) -> Result<Vec<String>> {
    let pattern = format!("{}/*", glob_escape(dir.as_str()));
    let node = client.pool.next();
    let count = Some(u32::try_from(BATCH).unwrap_or(u32::MAX));
    let mut keys: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = if client.cluster {
        // The primaries this client knows may be out of date (a node added, slots moved
        // since): a SCAN of those would miss what lives elsewhere now.
        client.step(dir.as_str(), node.sync_cluster()).await?;
        Box::pin(node.scan_cluster_buffered(pattern, count, None))
    } else {
        Box::pin(node.scan_buffered(pattern, count, None))
    };
    let mut found = BTreeSet::new();
    while let Some(key) = client
        .step(dir.as_str(), async { keys.next().await.transpose() })
        .await?
    {
        let key = key.as_str_lossy();
        if !is_index_key(&key) {
            found.insert(key.into_owned());
        }
    }
    Ok(found.into_iter().collect())
}

/// The pairs at `keys`, skipping those deleted meanwhile.
pub(crate) async fn read_many(client: &RedisClient, dir: &Key, keys: &[String]) -> Result<Vec<KvPair>> {
    let pairs = client.read_many(dir.as_str(), keys, BATCH).await?;
    Ok(pairs.into_iter().flatten().collect())
}

/// `dir` and everything below it (with `tree`), or `dir` alone.
pub(crate) async fn read_state(client: &RedisClient, key: &Key, tree: bool) -> Result<Vec<KvPair>> {
    let mut keys = if tree {
        keys_below(client, key).await?
    } else {
        Vec::new()
    };
    keys.push(key.to_string());
    read_many(client, key, &keys).await
}

impl RedisStore {
    /// Keeps a TTL write alive while the handle lives and the key still holds that write.
    fn keep_alive(&self, key: &Key, index: u64, ttl: Duration) {
        let refresh = Refresh {
            client: self.client.clone(),
            key: key.to_string(),
            index,
            ttl,
        };
        let period = (ttl / 3).max(Duration::from_millis(50));
        self.background
            .spawner()
            .keep_alive(Hold::new(refresh, Instant::now(), ttl).every(period));
    }
}

/// A `keep_alive` write, as the handle's driver renews it: only while the key still holds
/// the write's index.
struct Refresh {
    client: RedisClient,
    key: String,
    index: u64,
    ttl: Duration,
}

#[async_trait]
impl Renew for Refresh {
    async fn renew(&self) -> Result<Renewal> {
        let args = vec![self.index.to_string(), millis(self.ttl)];
        let status = self.client.script(&self.key, &self.client.scripts.renew, args).await?;
        Ok(if status == "ok" {
            Renewal::Held(self.ttl)
        } else {
            Renewal::Lost(LostReason::RecordDeleted)
        })
    }
}

#[async_trait]
impl Backend for RedisStore {
    fn name(&self) -> &'static str {
        REDIS
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        // One MGET (on a cluster, one per hash slot); a transaction is one script, which a
        // cluster runs on the node of its keys' one slot.
        caps.atomic_get_many = true;
        if self.client.cluster {
            caps.atomic_scope = AtomicScope::OneHashSlot;
        }
        caps.min_ttl = Duration::from_millis(100);
        caps.max_value_size = Some(self.config.max_value_size);
        caps.persistent = true;
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let args = Vec::from(write_args(self.client.encoding, key, &value, opts.ttl));
        let status = self.client.script(key.as_str(), &self.client.scripts.put, args).await?;
        let pair = written(key, value, &status)?;
        if let (Some(ttl), true) = (opts.ttl, opts.keep_alive) {
            self.keep_alive(key, pair.last_index, ttl);
        }
        Ok(())
    }

    async fn get(&self, key: &Key, _opts: &ReadOptions) -> Result<KvPair> {
        self.client
            .read_one(key.as_str())
            .await?
            .ok_or_else(|| Error::not_found(REDIS, key.as_str()))
    }

    async fn get_many(&self, keys: &[Key], _opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        let first = keys.first().map(Key::as_str).unwrap_or_default();
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        // One MGET (per slot on a cluster): one snapshot, as `atomic_get_many` says.
        self.client.read_many(first, &names, usize::MAX).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let deleted = match self.client.encoding {
            ValueEncoding::Envelope => {
                let client = self.client.pool.next();
                let deleted: i64 = self.client.request(key.as_str(), client.del(key.as_str())).await?;
                if deleted > 0 {
                    self.client.replicated(client, key.as_str(), key.as_str()).await?;
                }
                deleted > 0
            }
            // The key and its index key at once: a script.
            ValueEncoding::Raw => {
                let delete = &self.client.scripts.delete;
                self.client.script(key.as_str(), delete, Vec::<String>::new()).await? == "ok"
            }
        };
        if !deleted {
            return Err(Error::not_found(REDIS, key.as_str()));
        }
        Ok(())
    }

    async fn exists(&self, key: &Key, _opts: &ReadOptions) -> Result<bool> {
        let count: i64 = self
            .client
            .request(key.as_str(), self.client.pool.exists(key.as_str()))
            .await?;
        Ok(count > 0)
    }

    async fn list(&self, dir: &Key, _opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let mut keys = keys_below(&self.client, dir).await?;
        keys.push(dir.to_string());
        read_many(&self.client, dir, &keys).await
    }

    async fn list_keys(&self, dir: &Key, _opts: &ReadOptions) -> Result<Vec<String>> {
        // SCAN has no order: `list_stream` sorts these keys and reads pages with MGET.
        keys_below(&self.client, dir).await
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        let mut keys = keys_below(&self.client, dir).await?;
        keys.push(dir.to_string());
        let batches = self
            .client
            .batches(&keys, BATCH)
            .into_iter()
            .map(|batch| names_of(&keys, batch));
        let deleted: i64 = futures_util::stream::iter(batches)
            .map(|batch| self.client.unlink(dir.as_str(), batch))
            .buffered(IN_FLIGHT)
            .try_fold(0, |sum, deleted| async move { Ok(sum + deleted) })
            .await?;
        if deleted == 0 {
            return Err(Error::not_found(REDIS, dir.as_str()));
        }
        Ok(())
    }

    async fn watch(&self, key: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, key, false).await
    }

    async fn watch_tree(&self, dir: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, dir, true).await
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        Ok(Box::new(RedisLocker::new(
            self.client.clone(),
            key.clone(),
            opts,
            self.background.spawner(),
        )))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let mut args = Vec::from(write_args(self.client.encoding, key, &value, opts.ttl));
        let scripts = self.client.scripts;
        let script = match previous {
            None => &scripts.create,
            Some(previous) => {
                args.push(previous.last_index.to_string().into());
                &scripts.cas
            }
        };
        let status = self.client.script(key.as_str(), script, args).await?;
        match status.as_str() {
            "exists" => Err(Error::exists(REDIS, key.as_str())),
            "notfound" => Err(Error::not_found(REDIS, key.as_str())),
            "modified" => Err(Error::modified(REDIS, key.as_str())),
            _ => {
                let pair = written(key, value, &status)?;
                if let (Some(ttl), true) = (opts.ttl, opts.keep_alive) {
                    self.keep_alive(key, pair.last_index, ttl);
                }
                Ok(pair)
            }
        }
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let args = vec![previous.last_index.to_string()];
        match self
            .client
            .script(key.as_str(), &self.client.scripts.cad, args)
            .await?
            .as_str()
        {
            "ok" => Ok(()),
            "notfound" => Err(Error::not_found(REDIS, key.as_str())),
            _ => Err(Error::modified(REDIS, key.as_str())),
        }
    }

    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        txn::commit(&self.client, txn).await
    }

    async fn close(&self) -> Result<()> {
        self.client.request("", self.client.pool.quit()).await
    }
}

async fn open(spec: StoreSpec, tls: bool) -> Result<Arc<dyn Store>> {
    let mut config: RedisConfig = spec.config.resolve()?;
    config.tls |= tls;
    Ok(Arc::new(config.connect(spec.endpoints).await?))
}

inventory::submit! { Registration::new(REDIS, Some("database"), |spec| Box::pin(open(spec, false))) }
inventory::submit! { Registration::new(REDISS, Some("database"), |spec| Box::pin(open(spec, true))) }
