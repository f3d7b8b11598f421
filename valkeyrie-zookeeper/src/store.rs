//! [`ZookeeperStore`]: the [`Backend`] implementation and the registration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use valkeyrie_core::raw::{Backend, Background, Expect, Key, Registration, StoreSpec, Txn};
use valkeyrie_core::{
    Capabilities, Error, KvPair, LockOptions, Locker, ReadOptions, Result, Store, TxnOutcome, WatchStream, WriteOptions,
};
use zookeeper_client::{Acls, CreateMode, CreateOptions, MultiWriteResult, Stat};

use crate::client::ZkClient;
use crate::config::ZookeeperConfig;
use crate::error::is_not_empty;
use crate::lock::ZkLocker;
use crate::node::{checked_path, decode, encode, index_matches, index_of, key_of, DIR_MARKER};
use crate::{txn, watch, ZOOKEEPER};

/// How often a write retries after racing another writer on the same node.
pub(crate) const WRITE_ATTEMPTS: usize = 16;

/// How many keys one multi-read of `get_many` reads.
const GET_MANY_CHUNK: usize = 128;

/// A handle (a session) on a ZooKeeper ensemble.
pub struct ZookeeperStore {
    pub(crate) zk: ZkClient,
    pub(crate) config: ZookeeperConfig,
    background: Background,
}

impl std::fmt::Debug for ZookeeperStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ZookeeperConfig {
    /// Opens a session with the ensemble at `endpoints` (`host:port`; default
    /// `127.0.0.1:2181`), under the chroot if one is set.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting; [`Error::NotReachable`] when no
    /// session is established within `connect_timeout`.
    pub async fn connect<I, E>(self, endpoints: I) -> Result<ZookeeperStore>
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        self.validate()?;
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let zk = ZkClient::connect(&endpoints, &self)
            .await
            .map_err(|e| e.in_call("connect", ""))?;
        Ok(ZookeeperStore {
            zk,
            config: self,
            background: Background::new(),
        })
    }
}

/// The longest TTL a TTL node takes: 40 bits of milliseconds, about 34.8 years
/// (ZooKeeper's `EphemeralType.TTL.maxValue()`); the server refuses longer ones.
const MAX_TTL_NODE: Duration = Duration::from_millis(0xFF_FFFF_FFFF);

/// How a key's node is created: with `acls`, a TTL or bound to the session.
pub(crate) fn create_options(acls: Acls<'_>, ttl: Option<Duration>, ephemeral: bool) -> CreateOptions<'_> {
    if ephemeral {
        return CreateMode::Ephemeral.with_acls(acls);
    }
    let options = CreateMode::Persistent.with_acls(acls);
    match ttl {
        Some(ttl) => options.with_ttl(ttl),
        None => options,
    }
}

/// Whether the node is neither ephemeral nor TTL. ZooKeeper hides a node's type in its stat
/// (0 for TTL and container nodes): this store marks the TTL nodes it makes by bumping their
/// ACL version once.
pub(crate) fn is_plain_node(stat: &Stat) -> bool {
    stat.ephemeral_owner == 0 && stat.aversion <= 0
}

impl ZookeeperStore {
    /// The session's client, for what the `Store` API does not cover.
    ///
    /// # Errors
    /// [`Error::Closed`] once the handle is closed.
    pub fn client(&self) -> Result<zookeeper_client::Client> {
        self.zk.client()
    }

    /// The node's data and stat, `None` when there is no node.
    async fn read(&self, key: &Key, path: &str) -> Result<Option<(Vec<u8>, Stat)>> {
        match self.zk.request(key.as_str(), self.zk.client()?.get_data(path)).await {
            Ok(found) => Ok(Some(found)),
            Err(Error::KeyNotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes `key` as `expected` allows. A plain write on a plain node sets its data in
    /// place; a write that changes the node's type (to or from TTL or ephemeral) replaces a
    /// childless node in one transaction (delete at its version, create with the new type).
    async fn write(&self, key: &Key, value: &[u8], opts: &WriteOptions, expected: Expect) -> Result<KvPair> {
        let path = checked_path(key)?;
        let data = encode(value);
        let ephemeral = opts.keep_alive && opts.ttl.is_some();
        let ttl = opts.ttl.filter(|_| !ephemeral);
        let options = create_options(self.zk.acls(), ttl, ephemeral);
        if matches!(expected, Expect::Anything) && ttl.is_none() && !ephemeral {
            if let Some(index) = self.put_plain(key, &path, &data, &options).await? {
                return Ok(KvPair::new(key.as_str(), Bytes::copy_from_slice(value), index));
            }
        }
        let client = self.zk.client()?;
        for _ in 0..WRITE_ATTEMPTS {
            let Some((current, stat)) = self.read(key, &path).await? else {
                if let Expect::Index(_) = expected {
                    return Err(Error::not_found(ZOOKEEPER, key.as_str()));
                }
                self.zk.ensure_parents(&path).await?;
                let client = self.zk.client()?;
                match self
                    .zk
                    .request(key.as_str(), client.create(&path, &data, &options))
                    .await
                {
                    Ok((stat, _)) => {
                        if ttl.is_some() {
                            self.mark_ttl(key, &path).await?;
                        }
                        return Ok(KvPair::new(
                            key.as_str(),
                            Bytes::copy_from_slice(value),
                            index_of(&stat),
                        ));
                    }
                    // Created meanwhile, or a parent was removed meanwhile: look again.
                    Err(Error::KeyExists { .. } | Error::KeyNotFound { .. }) => continue,
                    Err(err) => return Err(err),
                }
            };
            let visible = decode(current).is_some();
            match expected {
                Expect::Absent if visible => return Err(Error::exists(ZOOKEEPER, key.as_str())),
                Expect::Index(_) if !visible => return Err(Error::not_found(ZOOKEEPER, key.as_str())),
                Expect::Index(index) if !index_matches(&stat, index) => {
                    return Err(Error::modified(ZOOKEEPER, key.as_str()))
                }
                _ => {}
            }
            let wants_plain = ttl.is_none() && !ephemeral;
            let outcome = if wants_plain && (stat.num_children > 0 || is_plain_node(&stat)) {
                // In place, so the node's version keeps growing and checks on it stay exact.
                let set = client.set_data(&path, &data, Some(stat.version));
                self.zk.request(key.as_str(), set).await.map(|stat| index_of(&stat))
            } else if stat.num_children == 0 {
                self.replace(key, &path, &data, &options, stat.version).await
            } else {
                let reason =
                    "a key with keys below it cannot take a TTL or keep-alive on ZooKeeper (its node must stay)";
                return Err(Error::backend(ZOOKEEPER, key.as_str(), false, reason));
            };
            if outcome.is_ok() && ttl.is_some() {
                self.mark_ttl(key, &path).await?;
            }
            match outcome {
                Ok(index) => return Ok(KvPair::new(key.as_str(), Bytes::copy_from_slice(value), index)),
                Err(Error::KeyModified { .. } | Error::KeyNotFound { .. }) if matches!(expected, Expect::Index(_)) => {
                    return Err(Error::modified(ZOOKEEPER, key.as_str()));
                }
                // Someone wrote in between: look again.
                Err(Error::KeyModified { .. } | Error::KeyNotFound { .. } | Error::KeyExists { .. }) => continue,
                Err(err) if is_not_empty(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        let reason = format!("gave up after {WRITE_ATTEMPTS} attempts racing other writers");
        Err(Error::gave_up(ZOOKEEPER, key.as_str(), reason))
    }

    /// A plain put without reading the node first: sets its data in place, or creates it
    /// (its parents only when they are missing). `None` when the read-then-write path must
    /// decide: the node is a TTL or ephemeral one (now holding the new data) that a plain
    /// node must replace, or it was created or removed meanwhile.
    async fn put_plain(&self, key: &Key, path: &str, data: &[u8], options: &CreateOptions<'_>) -> Result<Option<u64>> {
        let client = self.zk.client()?;
        match self.zk.request(key.as_str(), client.set_data(path, data, None)).await {
            // As `write` decides: a node with children stays, a plain node is set in place.
            Ok(stat) if stat.num_children > 0 || is_plain_node(&stat) => return Ok(Some(index_of(&stat))),
            Ok(_) => return Ok(None),
            Err(Error::KeyNotFound { .. }) => {}
            Err(err) => return Err(err),
        }
        let mut made_parents = false;
        loop {
            match self.zk.request(key.as_str(), client.create(path, data, options)).await {
                Ok((stat, _)) => return Ok(Some(index_of(&stat))),
                Err(Error::KeyNotFound { .. }) if !made_parents => {
                    made_parents = true;
                    self.zk.ensure_parents(path).await?;
                }
                Err(Error::KeyExists { .. } | Error::KeyNotFound { .. }) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
    }

    /// Marks a TTL node this store created (see `write`).
    pub(crate) async fn mark_ttl(&self, key: &Key, path: &str) -> Result<()> {
        // The node's own ACL, set again: only its version changes.
        let acls = self.zk.acls();
        let client = self.zk.client()?;
        match self
            .zk
            .request(key.as_str(), client.set_acl(path, &acls, Some(0)))
            .await
        {
            // Rewritten or deleted meanwhile: the newer write decides the node's type.
            Ok(_) | Err(Error::KeyModified { .. } | Error::KeyNotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Deletes the node at `version` and creates it again with `options`, in one transaction.
    async fn replace(
        &self,
        key: &Key,
        path: &str,
        data: &[u8],
        options: &CreateOptions<'_>,
        version: i32,
    ) -> Result<u64> {
        let client = self.zk.client()?;
        let mut writer = client.new_multi_writer();
        // The stat of a create inside a multi is empty on 3.8 (ZOOKEEPER-4026): a set_data
        // of the same data in the same transaction returns a valid one.
        let staged = writer
            .add_delete(path, Some(version))
            .and_then(|()| writer.add_create(path, data, options))
            .and_then(|()| writer.add_set_data(path, data, Some(0)));
        staged.map_err(|e| crate::error::map_error(key.as_str(), e))?;
        let commit = async { writer.commit().await.map_err(zookeeper_client::Error::from) };
        let results = self.zk.request(key.as_str(), commit).await?;
        let written = results.iter().find_map(|result| match result {
            MultiWriteResult::SetData { stat } => Some(index_of(stat)),
            _ => None,
        });
        written.ok_or_else(|| {
            Error::backend(
                ZOOKEEPER,
                key.as_str(),
                false,
                format!("the transaction returned no stat: {results:?}"),
            )
        })
    }

    /// Removes the key whose node has `stat`, at its version: a childless node is deleted
    /// (with directory nodes left empty above it); a node with children stays for them and
    /// becomes a directory node again.
    async fn remove_key(&self, key: &Key, path: &str, stat: &Stat) -> Result<()> {
        let client = self.zk.client()?;
        if stat.num_children > 0 {
            let set = client.set_data(path, DIR_MARKER, Some(stat.version));
            return self.zk.request(key.as_str(), set).await.map(drop);
        }
        self.zk
            .request(key.as_str(), client.delete(path, Some(stat.version)))
            .await?;
        self.zk.cleanup_parents(path).await;
        Ok(())
    }
}

#[async_trait]
impl Backend for ZookeeperStore {
    fn name(&self) -> &'static str {
        ZOOKEEPER
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        // A lock lives as long as the session that holds it: the session timeout, not a
        // per-lock TTL, bounds how long a dead holder keeps it.
        caps.lock_ttl = false;
        // TTL nodes are removed by the server's periodic sweep; shorter TTLs are raised.
        caps.min_ttl = Duration::from_secs(1);
        caps.max_ttl = Some(MAX_TTL_NODE);
        caps.max_value_size = Some(self.config.max_value_size());
        caps.persistent = true;
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        self.write(key, &value, opts, Expect::Anything).await.map(drop)
    }

    async fn get(&self, key: &Key, _opts: &ReadOptions) -> Result<KvPair> {
        let path = checked_path(key)?;
        let found = self.read(key, &path).await?;
        let pair =
            found.and_then(|(data, stat)| decode(data).map(|value| KvPair::new(key.as_str(), value, index_of(&stat))));
        pair.ok_or_else(|| Error::not_found(ZOOKEEPER, key.as_str()))
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let path = checked_path(key)?;
        for _ in 0..WRITE_ATTEMPTS {
            let Some((data, stat)) = self.read(key, &path).await? else {
                return Err(Error::not_found(ZOOKEEPER, key.as_str()));
            };
            if decode(data).is_none() {
                return Err(Error::not_found(ZOOKEEPER, key.as_str()));
            }
            match self.remove_key(key, &path, &stat).await {
                // Written, given a child or removed in between: look again.
                Err(Error::KeyModified { .. } | Error::KeyNotFound { .. }) => continue,
                Err(err) if is_not_empty(&err) => continue,
                outcome => return outcome,
            }
        }
        let reason = format!("gave up after {WRITE_ATTEMPTS} attempts racing other writers");
        Err(Error::gave_up(ZOOKEEPER, key.as_str(), reason))
    }

    async fn get_many(&self, keys: &[Key], _opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        // One multi-read per `GET_MANY_CHUNK` keys, so an answer stays far below the
        // server's `jute.maxbuffer`; each chunk is one snapshot.
        let mut pairs = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let paths = chunk.iter().map(checked_path).collect::<Result<Vec<_>>>()?;
            let first = chunk.first().map_or("", Key::as_str);
            let nodes = self.zk.read_nodes(first, &paths).await?;
            pairs.extend(chunk.iter().zip(&paths).map(|(key, path)| {
                let (data, stat) = nodes.get(path).cloned().flatten()?;
                decode(data).map(|value| KvPair::new(key.as_str(), value, index_of(&stat)))
            }));
        }
        Ok(pairs)
    }

    async fn exists(&self, key: &Key, _opts: &ReadOptions) -> Result<bool> {
        let path = checked_path(key)?;
        Ok(self
            .read(key, &path)
            .await?
            .is_some_and(|(data, _)| decode(data).is_some()))
    }

    async fn list(&self, dir: &Key, _opts: &ReadOptions) -> Result<Vec<KvPair>> {
        checked_path(dir)?;
        self.zk.list_keys(dir, self.config.concurrency).await
    }

    async fn list_keys(&self, dir: &Key, _opts: &ReadOptions) -> Result<Vec<String>> {
        // The tree walk reads children only; directory nodes among them are not keys, and
        // `list_stream` skips them when their values are read.
        checked_path(dir)?;
        let paths = self.zk.walk(dir, false, self.config.concurrency).await?;
        Ok(paths.iter().map(|path| key_of(path)).collect())
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        let path = checked_path(dir)?;
        let concurrency = self.config.concurrency;
        let paths = self.zk.walk(dir, true, concurrency).await?;
        let existed = !self.zk.read_keys(paths.clone(), concurrency).await?.is_empty();
        // Parents come before children in the walk: delete in reverse.
        let client = self.zk.client()?;
        for node in paths.iter().rev() {
            match self.zk.request(node, client.delete(node, None)).await {
                Ok(()) | Err(Error::KeyNotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        self.zk.cleanup_parents(&path).await;
        if existed {
            Ok(())
        } else {
            Err(Error::not_found(ZOOKEEPER, dir.as_str()))
        }
    }

    async fn watch(&self, key: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        checked_path(key)?;
        watch::watch(self, key, false).await
    }

    async fn watch_tree(&self, dir: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        checked_path(dir)?;
        watch::watch(self, dir, true).await
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        checked_path(key)?;
        let locker = ZkLocker::new(
            self.zk.clone(),
            key.clone(),
            opts,
            self.config.session_timeout,
            self.background.spawner(),
        );
        Ok(Box::new(locker))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let expected = Expect::previous(previous);
        self.write(key, &value, opts, expected).await
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let path = checked_path(key)?;
        let found = self.read(key, &path).await?;
        let Some((_, stat)) = found.filter(|(data, _)| data != DIR_MARKER) else {
            return Err(Error::not_found(ZOOKEEPER, key.as_str()));
        };
        if !index_matches(&stat, previous.last_index) {
            return Err(Error::modified(ZOOKEEPER, key.as_str()));
        }
        match self.remove_key(key, &path, &stat).await {
            Ok(()) => Ok(()),
            Err(Error::KeyModified { .. }) => Err(Error::modified(ZOOKEEPER, key.as_str())),
            Err(Error::KeyNotFound { .. }) => Err(Error::not_found(ZOOKEEPER, key.as_str())),
            Err(err) if is_not_empty(&err) => Err(Error::modified(ZOOKEEPER, key.as_str())),
            Err(err) => Err(err),
        }
    }

    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        txn::commit(self, txn).await
    }

    async fn close(&self) -> Result<()> {
        // The session ends once no request holds it: its ephemeral nodes (keep-alive keys,
        // lock contenders) go with it.
        self.zk.close();
        Ok(())
    }
}

impl Drop for ZookeeperStore {
    fn drop(&mut self) {
        // Lockers and guards hold clones of the session: let it end with the store anyway.
        self.zk.close();
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    let config: ZookeeperConfig = spec.config.resolve()?;
    Ok(Arc::new(config.connect(spec.endpoints).await?))
}

inventory::submit! { Registration::new(ZOOKEEPER, Some("chroot"), |spec| Box::pin(open(spec))) }
