//! etcd through `etcd-client`, in `valkeyrie-etcd`'s layout: a key's value is stored raw at
//! the key and its index is the key's mod revision; a compare-and-set is a transaction on
//! that revision; a directory `dir` is the keys starting with `dir/`, listed in pages of
//! 1000 at one revision. A watch reads the key, then watches it from the next revision.
//! A lock is etcd's `concurrency.Mutex` recipe, as `valkeyrie-etcd` writes it: a 20 s lease,
//! the contender key `<key>___lock/<lease id in hex>` bound to it, the oldest contender
//! holds; the holder writes the lock value at `<key>`. Contender keys are never listed.
//! Unlike the backend, a lock cycle runs no keep-alive or watch on its own key in the
//! background: a cycle ends long before its lease would.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures_util::{stream, StreamExt};

use crate::driver::{BenchResult, Driver, ValueStream};
use crate::target::Target;

/// The lease TTL of a lock contender, in seconds (valkeyrie's default lock TTL).
const LOCK_TTL_SECONDS: i64 = 20;

/// Appended to a lock's key to make the prefix of its contender keys.
const LOCK_SUFFIX: &str = "___lock/";

/// What a lock holder writes at the lock's key (what the valkeyrie side writes).
const LOCK_VALUE: &str = "bench";

/// Keys per page of a listing (the backend's default `list_page_size`).
const PAGE_SIZE: i64 = 1000;

/// How long connecting and each request may take (the backend's defaults).
const TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd client.
pub(crate) struct RawEtcd {
    client: Client,
}

/// Formats an etcd error as what failed.
fn failed<'a>(call: &'static str, key: &'a str) -> impl FnOnce(etcd_client::Error) -> String + 'a {
    move |err| format!("etcd {call} {key}: {err}")
}

/// Whether `key` is a lock contender key, which a listing skips.
fn is_contender(key: &[u8]) -> bool {
    key.windows(LOCK_SUFFIX.len())
        .any(|window| window == LOCK_SUFFIX.as_bytes())
}

impl RawEtcd {
    /// Connects to the cluster at `target`'s endpoints.
    pub(crate) async fn connect(target: &Target) -> BenchResult<Self> {
        let endpoints: Vec<String> = target.endpoints.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_timeout(TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(failed("connect", ""))?;
        Ok(RawEtcd { client })
    }

    /// The key-value at `key`.
    async fn read(&self, key: &str) -> BenchResult<KeyValue> {
        let mut response = self.client.clone().get(key, None).await.map_err(failed("get", key))?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .ok_or_else(|| format!("etcd get {key}: no such key"))
    }

    /// Contends for the lock at `key` with the contender bound to `lease`, holds it (writing
    /// the lock value) and releases it by deleting the contender if it is still ours.
    async fn hold_once(&self, key: &str, lease: i64) -> BenchResult<()> {
        let mut client = self.client.clone();
        let prefix = format!("{key}{LOCK_SUFFIX}");
        let contender = format!("{prefix}{lease:x}");
        let create = Txn::new()
            .when([Compare::create_revision(contender.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                contender.as_str(),
                "",
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(contender.as_str(), None)]);
        let created = client.txn(create).await.map_err(failed("lock", key))?;
        let own_revision = if created.succeeded() {
            created.header().map_or(0, |h| h.revision())
        } else {
            created
                .op_responses()
                .iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(KeyValue::create_revision),
                    _ => None,
                })
                .unwrap_or(0)
        };
        if own_revision <= 0 {
            return Err(format!("etcd lock {key}: no create revision for {contender}"));
        }

        self.wait_turn(key, &prefix, own_revision).await?;
        client.put(key, LOCK_VALUE, None).await.map_err(failed("lock", key))?;

        let still_ours = Compare::create_revision(contender.as_str(), CompareOp::Equal, own_revision);
        let release = Txn::new()
            .when([still_ours])
            .and_then([TxnOp::delete(contender.as_str(), None)]);
        let released = client.txn(release).await.map_err(failed("unlock", key))?;
        if !released.succeeded() {
            return Err(format!("etcd unlock {key}: the contender key was deleted while held"));
        }
        Ok(())
    }

    /// Waits until no contender under `prefix` is older than `own_revision`, watching the
    /// deletion of the newest older one each time.
    async fn wait_turn(&self, key: &str, prefix: &str, own_revision: i64) -> BenchResult<()> {
        let mut client = self.client.clone();
        loop {
            let older = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(own_revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let response = client.get(prefix, Some(older)).await.map_err(failed("lock", key))?;
            let Some(predecessor) = response.kvs().first() else {
                return Ok(());
            };
            let after = response.header().map_or(0, |h| h.revision()) + 1;
            let options = WatchOptions::new().with_start_revision(after);
            let mut deletion = client
                .watch(predecessor.key(), Some(options))
                .await
                .map_err(failed("lock", key))?;
            loop {
                match deletion.message().await {
                    Ok(Some(response))
                        if response.canceled()
                            || response.events().iter().any(|e| e.event_type() == EventType::Delete) =>
                    {
                        break
                    }
                    Ok(Some(_)) => {}
                    // The watch broke: look again.
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

#[async_trait]
impl Driver for RawEtcd {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        self.client
            .clone()
            .put(key, value.to_vec(), None)
            .await
            .map(drop)
            .map_err(failed("put", key))
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        let (_, value) = self.read(key).await?.into_key_value();
        Ok(Bytes::from(value))
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let kv = self.read(key).await?;
        let index = u64::try_from(kv.mod_revision()).unwrap_or(0);
        let (_, value) = kv.into_key_value();
        Ok((Bytes::from(value), index))
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        let revision = i64::try_from(index).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(failed("compare_and_set", key))?;
        Ok(response.succeeded())
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        let mut client = self.client.clone();
        let mut start = format!("{dir}/").into_bytes();
        // The range end of the prefix `dir/`: `/` plus one is `0`.
        let end = format!("{dir}0");
        let mut revision = 0;
        let mut pairs: Vec<KeyValue> = Vec::new();
        loop {
            let page = GetOptions::new()
                .with_range(end.as_str())
                .with_limit(PAGE_SIZE)
                .with_revision(revision);
            let mut response = client
                .get(start.clone(), Some(page))
                .await
                .map_err(failed("list", dir))?;
            if revision == 0 {
                // Every later page at the first one's revision: one consistent listing.
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            if let Some(last) = kvs.last() {
                // The next page starts just after the last key of this one.
                start = last.key().to_vec();
                start.push(0);
            }
            pairs.extend(kvs.into_iter().filter(|kv| !is_contender(kv.key())));
            if !more {
                return Ok(pairs.len());
            }
        }
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let mut client = self.client.clone();
        let mut current = client.get(key, None).await.map_err(failed("watch", key))?;
        let after = current.header().map_or(0, |h| h.revision()) + 1;
        let current: Vec<BenchResult<Bytes>> = current
            .take_kvs()
            .into_iter()
            .map(|kv| Ok(Bytes::from(kv.into_key_value().1)))
            .collect();
        let options = WatchOptions::new().with_start_revision(after);
        let changes = client.watch(key, Some(options)).await.map_err(failed("watch", key))?;
        let values = changes.flat_map(|message| {
            let values: Vec<BenchResult<Bytes>> = match message {
                Ok(response) if response.canceled() => {
                    vec![Err(format!("etcd watch: cancelled: {}", response.cancel_reason()))]
                }
                Ok(response) => response
                    .events()
                    .iter()
                    .filter(|event| event.event_type() == EventType::Put)
                    .filter_map(|event| event.kv())
                    .map(|kv| Ok(Bytes::copy_from_slice(kv.value())))
                    .collect(),
                Err(err) => vec![Err(format!("etcd watch: {err}"))],
            };
            stream::iter(values)
        });
        Ok(Box::pin(stream::iter(current).chain(values)))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let mut client = self.client.clone();
        let lease = client
            .lease_grant(LOCK_TTL_SECONDS, None)
            .await
            .map_err(failed("lock", key))?
            .id();
        let cycle = self.hold_once(key, lease).await;
        // Revoking the lease deletes whatever is still bound to it, whatever the cycle did.
        let revoked = client.lease_revoke(lease).await.map_err(failed("unlock", key));
        cycle?;
        revoked.map(drop)
    }
}
