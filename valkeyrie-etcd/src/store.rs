//! [`EtcdStore`]: the [`Backend`] implementation and the registration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};
use valkeyrie_core::raw::{Backend, Background, Key, Registration, StoreSpec};
use valkeyrie_core::{
    Capabilities, Error, KvPair, LockOptions, Locker, ReadOptions, Result, Store, TxnOutcome, WatchStream, WriteOptions,
};

use crate::client::{prefix_end, EtcdClient};
use crate::config::EtcdConfig;
use crate::lease::{is_lease_gone, Leases, WriteLease};
use crate::lock::{is_bookkeeping, EtcdLocker, IdleLeases};
use crate::{txn, watch, ETCD};

/// A handle on an etcd cluster.
pub struct EtcdStore {
    pub(crate) client: EtcdClient,
    pub(crate) config: EtcdConfig,
    background: Background,
    leases: Leases,
    /// Leases of released locks, for later acquisitions.
    idle_leases: Arc<IdleLeases>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Connects to the cluster at `endpoints` (`host:port`, or URLs with a scheme; default
    /// `127.0.0.1:2379`).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting or unreadable TLS file;
    /// [`Error::NotReachable`] when no endpoint answers within `connect_timeout`.
    pub async fn connect<I, E>(self, endpoints: I) -> Result<EtcdStore>
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        self.validate()?;
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let client = EtcdClient::connect(&endpoints, &self)
            .await
            .map_err(|e| e.in_call("connect", ""))?;
        Ok(EtcdStore {
            client,
            config: self,
            background: Background::new(),
            leases: Leases::default(),
            idle_leases: Arc::default(),
        })
    }
}

/// The pair of an etcd key-value.
pub(crate) fn pair(kv: &KeyValue) -> KvPair {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    KvPair::new(
        key,
        Bytes::copy_from_slice(kv.value()),
        u64::try_from(kv.mod_revision()).unwrap_or(0),
    )
}

fn read_options(opts: &ReadOptions) -> GetOptions {
    if opts.consistent {
        GetOptions::new()
    } else {
        GetOptions::new().with_serializable()
    }
}

/// The etcd revision (an i64) of a `last_index`. An index past `i64::MAX` is clamped to
/// `i64::MAX`, a revision no key has, so an atomic call or compare on it fails as modified
/// rather than wrapping to a negative revision.
pub(crate) fn revision(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// Reads `dir` and every key below it (lock bookkeeping excluded) at one revision, in pages
/// of `page_size`; returns the pairs and that revision.
pub(crate) async fn list_at(
    client: &EtcdClient,
    page_size: u32,
    dir: &Key,
    opts: &ReadOptions,
) -> Result<(Vec<KvPair>, i64)> {
    let mut raw = client.raw();
    let own = client
        .request(dir.as_str(), raw.get(dir.as_str(), Some(read_options(opts))))
        .await?;
    let revision = own.header().map_or(0, |h| h.revision());
    let mut pairs: Vec<KvPair> = own.kvs().iter().map(pair).collect();
    let prefix = dir.dir_prefix().into_bytes();
    let end = prefix_end(&prefix);
    let mut start = prefix;
    loop {
        let page = read_options(opts)
            .with_range(end.clone())
            .with_limit(i64::from(page_size))
            .with_revision(revision);
        let response = client.request(dir.as_str(), raw.get(start.clone(), Some(page))).await?;
        pairs.extend(response.kvs().iter().filter(|kv| !is_bookkeeping(kv.key())).map(pair));
        match response.kvs().last() {
            Some(last) if response.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok((pairs, revision))
}

/// `key` alone, with the revision it was read at.
pub(crate) async fn get_at(client: &EtcdClient, key: &Key) -> Result<(Vec<KvPair>, i64)> {
    let mut raw = client.raw();
    let response = client.request(key.as_str(), raw.get(key.as_str(), None)).await?;
    let revision = response.header().map_or(0, |h| h.revision());
    Ok((response.kvs().iter().map(pair).collect(), revision))
}

impl EtcdStore {
    /// The lease for a write with `opts`; see [`Leases::for_write`].
    async fn lease_for(&self, key: &Key, opts: &WriteOptions) -> Result<Option<WriteLease>> {
        let spawner = self.background.spawner();
        self.leases.for_write(&self.client, &spawner, key, opts).await
    }

    /// Runs `write` with the lease for `opts`; a shared lease found gone (it expired while
    /// the server was away) is replaced once.
    async fn with_lease<T, F, Fut>(&self, key: &Key, opts: &WriteOptions, write: F) -> Result<T>
    where
        F: Fn(Option<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let lease = self.lease_for(key, opts).await?;
        match write(lease.as_ref().map(|l| l.id)).await {
            Err(err) if lease.as_ref().is_some_and(WriteLease::is_shared) && is_lease_gone(&err) => {
                if let Some(lease) = &lease {
                    self.leases.forget(lease).await;
                }
                drop(lease);
                let lease = self.lease_for(key, opts).await?;
                write(lease.as_ref().map(|l| l.id)).await
            }
            outcome => outcome,
        }
    }
}

#[async_trait]
impl Backend for EtcdStore {
    fn name(&self) -> &'static str {
        ETCD
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        // etcd's minimum lease TTL (1.5 × the election timeout) rounds up to 2 s.
        caps.min_ttl = Duration::from_secs(2);
        caps.max_value_size = Some(self.config.max_value_size());
        caps.consistent_reads = true;
        caps.persistent = true;
        caps.max_transaction_ops = Some(txn::MAX_TXN_OPS);
        caps.atomic_get_many = true;
        caps.native_list_paging = true;
        caps.watch_replay = true;
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        self.with_lease(key, opts, |lease| {
            let value = value.clone();
            async move {
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                let mut client = self.client.raw();
                self.client
                    .request(key.as_str(), client.put(key.as_str(), value.to_vec(), options))
                    .await
                    .map(drop)
            }
        })
        .await
    }

    async fn get(&self, key: &Key, opts: &ReadOptions) -> Result<KvPair> {
        let mut client = self.client.raw();
        let response = self
            .client
            .request(key.as_str(), client.get(key.as_str(), Some(read_options(opts))))
            .await?;
        response
            .kvs()
            .first()
            .map(pair)
            .ok_or_else(|| Error::not_found(ETCD, key.as_str()))
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let mut client = self.client.raw();
        let response = self
            .client
            .request(key.as_str(), client.delete(key.as_str(), None))
            .await?;
        if response.deleted() == 0 {
            return Err(Error::not_found(ETCD, key.as_str()));
        }
        Ok(())
    }

    async fn get_many(&self, keys: &[Key], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        // One Txn of reads per `MAX_TXN_OPS` keys; every chunk after the first reads at the
        // first one's revision, so all keys come from one snapshot.
        let mut found: HashMap<String, KvPair> = HashMap::with_capacity(keys.len());
        let mut at_revision = None;
        let mut raw = self.client.raw();
        for chunk in keys.chunks(txn::MAX_TXN_OPS) {
            let options = match at_revision {
                Some(revision) => read_options(opts).with_revision(revision),
                None => read_options(opts),
            };
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(key.as_str(), Some(options.clone())))
                .collect();
            let first = chunk.first().map_or("", Key::as_str);
            let response = self.client.request(first, raw.txn(Txn::new().and_then(reads))).await?;
            at_revision = at_revision.or_else(|| response.header().map(|h| h.revision()));
            for op in response.op_responses() {
                if let TxnOpResponse::Get(get) = op {
                    found.extend(get.kvs().iter().map(|kv| {
                        let pair = pair(kv);
                        (pair.key.clone(), pair)
                    }));
                }
            }
        }
        Ok(keys.iter().map(|key| found.get(key.as_str()).cloned()).collect())
    }

    async fn exists(&self, key: &Key, opts: &ReadOptions) -> Result<bool> {
        let mut client = self.client.raw();
        let options = read_options(opts).with_count_only();
        let response = self
            .client
            .request(key.as_str(), client.get(key.as_str(), Some(options)))
            .await?;
        Ok(response.count() > 0)
    }

    async fn list(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        Ok(list_at(&self.client, self.config.list_page_size, dir, opts).await?.0)
    }

    async fn list_page(&self, dir: &Key, after: Option<&str>, limit: usize, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let prefix = dir.dir_prefix().into_bytes();
        let end = prefix_end(&prefix);
        let mut start = match after {
            Some(after) if after.as_bytes() >= prefix.as_slice() => [after.as_bytes(), b"\0"].concat(),
            _ => prefix,
        };
        let mut pairs = Vec::with_capacity(limit.min(1024));
        let mut raw = self.client.raw();
        // Lock bookkeeping is skipped, so a range may yield less than a page: read on.
        while pairs.len() < limit {
            let wanted = i64::try_from(limit - pairs.len()).unwrap_or(i64::MAX);
            let range = read_options(opts).with_range(end.clone()).with_limit(wanted);
            let response = self
                .client
                .request(dir.as_str(), raw.get(start.clone(), Some(range)))
                .await?;
            pairs.extend(response.kvs().iter().filter(|kv| !is_bookkeeping(kv.key())).map(pair));
            match response.kvs().last() {
                Some(last) if response.more() => start = [last.key(), b"\0"].concat(),
                _ => break,
            }
        }
        Ok(pairs)
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        let prefix = dir.dir_prefix();
        let txn = Txn::new().and_then([
            TxnOp::delete(dir.as_str(), None),
            TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
        ]);
        let mut client = self.client.raw();
        let response = self.client.request(dir.as_str(), client.txn(txn)).await?;
        let deleted: i64 = response
            .op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Delete(delete) => delete.deleted(),
                _ => 0,
            })
            .sum();
        if deleted == 0 {
            return Err(Error::not_found(ETCD, dir.as_str()));
        }
        Ok(())
    }

    async fn watch(&self, key: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, key, false, opts).await
    }

    async fn watch_tree(&self, dir: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, dir, true, opts).await
    }

    async fn watch_from(&self, key: &Key, tree: bool, index: u64, opts: &ReadOptions) -> Result<WatchStream> {
        Ok(watch::watch_from(self, key, tree, index, opts))
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        Ok(Box::new(EtcdLocker::new(
            self.client.clone(),
            key.clone(),
            opts,
            self.background.spawner(),
            Arc::clone(&self.idle_leases),
        )))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let condition = match previous {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(previous) => Compare::mod_revision(key.as_str(), CompareOp::Equal, revision(previous.last_index)),
        };
        self.with_lease(key, opts, |lease| {
            let (condition, value) = (condition.clone(), value.clone());
            async move {
                let put = TxnOp::put(
                    key.as_str(),
                    value.to_vec(),
                    lease.map(|id| PutOptions::new().with_lease(id)),
                );
                let txn = Txn::new()
                    .when([condition])
                    .and_then([put])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let mut client = self.client.raw();
                let response = self.client.request(key.as_str(), client.txn(txn)).await?;
                if response.succeeded() {
                    let index = response.header().map_or(0, |h| h.revision());
                    return Ok(KvPair::new(key.as_str(), value, u64::try_from(index).unwrap_or(0)));
                }
                // A lease granted for this write alone goes with it; a shared one stays.
                if let Some(lease) = lease.filter(|_| !opts.keep_alive) {
                    self.client.revoke(key.as_str(), [lease]).await;
                }
                let current_exists = response
                    .op_responses()
                    .iter()
                    .any(|op| matches!(op, TxnOpResponse::Get(get) if !get.kvs().is_empty()));
                Err(match (previous, current_exists) {
                    (None, _) => Error::exists(ETCD, key.as_str()),
                    (Some(_), false) => Error::not_found(ETCD, key.as_str()),
                    (Some(_), true) => Error::modified(ETCD, key.as_str()),
                })
            }
        })
        .await
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let condition = Compare::mod_revision(key.as_str(), CompareOp::Equal, revision(previous.last_index));
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::delete(key.as_str(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut client = self.client.raw();
        let response = self.client.request(key.as_str(), client.txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        let current_exists = response
            .op_responses()
            .iter()
            .any(|op| matches!(op, TxnOpResponse::Get(get) if !get.kvs().is_empty()));
        Err(if current_exists {
            Error::modified(ETCD, key.as_str())
        } else {
            Error::not_found(ETCD, key.as_str())
        })
    }

    async fn commit(&self, txn: &valkeyrie_core::raw::Txn) -> Result<TxnOutcome> {
        txn::commit(&self.client, txn).await
    }

    async fn close(&self) -> Result<()> {
        // Background work (keep-alives, watch feeders, lock sessions) already stopped. The
        // leases released locks left idle go now rather than at their expiry; the channel
        // closes when the last clone of the client is dropped.
        self.client.revoke("", self.idle_leases.drain()).await;
        Ok(())
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    let config: EtcdConfig = spec.config.resolve()?;
    Ok(Arc::new(config.connect(spec.endpoints).await?))
}

inventory::submit! { Registration::new(ETCD, None, |spec| Box::pin(open(spec))) }
