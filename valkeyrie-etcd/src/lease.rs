//! Leases of TTL writes. A plain TTL write gets a lease of its own, granted with it, which
//! expires with the key. `keep_alive` writes of one TTL share one lease per handle: the
//! handle's lock-holding driver keeps it alive with one request per period, whatever the
//! number of keys on it, and revokes it once no key and no write in flight uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::LeaseTimeToLiveOptions;
use tokio::sync::Mutex;
use tokio::time::Instant;
use valkeyrie_core::raw::{Hold, Key, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, LostReason, Result, WriteOptions};

use crate::client::{lease_seconds, EtcdClient, KeptLease};

/// The shared leases of a handle, by TTL.
type ByTtl = Arc<Mutex<HashMap<Duration, Arc<SharedLease>>>>;

/// A lease `keep_alive` writes of one TTL share.
#[derive(Debug)]
struct SharedLease {
    id: i64,
    /// Writes that took the lease and have not finished: it is not revoked under them.
    writes: AtomicUsize,
}

/// The shared leases of one handle.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    by_ttl: ByTtl,
}

/// The lease one TTL write goes out with.
#[derive(Debug)]
pub(crate) struct WriteLease {
    /// The lease's ID.
    pub(crate) id: i64,
    ttl: Duration,
    shared: Option<Arc<SharedLease>>,
}

impl WriteLease {
    /// Whether other keys share the lease (a `keep_alive` write's): it is never revoked for
    /// one write.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

impl Drop for WriteLease {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.writes.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Whether `err` says the lease a write named no longer exists.
pub(crate) fn is_lease_gone(err: &Error) -> bool {
    err.to_string().contains("requested lease not found")
}

impl Leases {
    /// The lease for a write with `opts` on `key`: none without a TTL, a new one for a
    /// plain TTL write, the handle's shared one for a `keep_alive` write of that TTL (made,
    /// and handed to the driver through `spawner`, by the first such write).
    pub(crate) async fn for_write(
        &self,
        client: &EtcdClient,
        spawner: &Spawner,
        key: &Key,
        opts: &WriteOptions,
    ) -> Result<Option<WriteLease>> {
        let Some(ttl) = opts.ttl else { return Ok(None) };
        if !opts.keep_alive {
            let id = grant(client, key, ttl).await?;
            return Ok(Some(WriteLease { id, ttl, shared: None }));
        }
        let mut by_ttl = self.by_ttl.lock().await;
        let shared = match by_ttl.get(&ttl) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared = Arc::new(SharedLease {
                    id: grant(client, key, ttl).await?,
                    writes: AtomicUsize::new(0),
                });
                by_ttl.insert(ttl, Arc::clone(&shared));
                let refresh = SharedRefresh {
                    client: client.clone(),
                    by_ttl: Arc::clone(&self.by_ttl),
                    ttl,
                    kept: KeptLease::new(shared.id),
                    lease: Arc::clone(&shared),
                };
                let period = (ttl / 3).max(Duration::from_millis(500));
                spawner.keep_alive(Hold::new(refresh, Instant::now(), ttl).every(period));
                shared
            }
        };
        shared.writes.fetch_add(1, Ordering::AcqRel);
        Ok(Some(WriteLease {
            id: shared.id,
            ttl,
            shared: Some(shared),
        }))
    }

    /// After a write found `lease` gone (expired while the server was away): the next
    /// `keep_alive` write of its TTL gets a new one.
    pub(crate) async fn forget(&self, lease: &WriteLease) {
        forget(&self.by_ttl, lease.ttl, lease.id).await;
    }
}

async fn grant(client: &EtcdClient, key: &Key, ttl: Duration) -> Result<i64> {
    let mut raw = client.raw();
    let granted = client
        .request(key.as_str(), raw.lease_grant(lease_seconds(ttl), None))
        .await?;
    Ok(granted.id())
}

/// Removes the shared lease of `ttl` if it is still `id`.
async fn forget(by_ttl: &ByTtl, ttl: Duration, id: i64) {
    let mut by_ttl = by_ttl.lock().await;
    if by_ttl.get(&ttl).is_some_and(|shared| shared.id == id) {
        by_ttl.remove(&ttl);
    }
}

/// A shared lease as the handle's driver keeps it alive.
struct SharedRefresh {
    client: EtcdClient,
    by_ttl: ByTtl,
    ttl: Duration,
    lease: Arc<SharedLease>,
    kept: KeptLease,
}

#[async_trait]
impl Renew for SharedRefresh {
    async fn renew(&self) -> Result<Renewal> {
        if !self.kept.renew(&self.client, "").await? {
            // Expired while renewals failed: the keys went with it.
            forget(&self.by_ttl, self.ttl, self.lease.id).await;
            return Ok(Renewal::Lost(LostReason::Expired));
        }
        // Renewed first: the keep-alive never waits for this check.
        if self.unused().await {
            return Ok(Renewal::Lost(LostReason::RecordDeleted));
        }
        Ok(Renewal::Held(self.ttl))
    }

    /// No renewal was confirmed in time (or one failed for good): the next `keep_alive`
    /// write of this TTL gets a new lease rather than one nobody keeps alive.
    async fn give_up(&self) {
        forget(&self.by_ttl, self.ttl, self.lease.id).await;
    }
}

impl SharedRefresh {
    /// Whether no key and no write uses the lease any more; it is then forgotten (no new
    /// write takes it: they wait on the same lock) and revoked. In doubt (the map is busy,
    /// the check fails), the lease counts as used until the next period.
    async fn unused(&self) -> bool {
        // A write of any TTL holds the map while it grants a lease (a raft write, slow on a
        // slow disk): the check skips a period rather than wait for it.
        let Ok(mut by_ttl) = self.by_ttl.try_lock() else {
            return false;
        };
        if self.lease.writes.load(Ordering::Acquire) > 0 {
            return false;
        }
        let mut raw = self.client.raw();
        let options = LeaseTimeToLiveOptions::new().with_keys();
        let live = match self
            .client
            .request("", raw.lease_time_to_live(self.lease.id, Some(options)))
            .await
        {
            Ok(live) => live,
            Err(err) => {
                tracing::debug!(error = %err, lease = self.lease.id, "checking a shared lease's keys failed");
                return false;
            }
        };
        if !live.keys().is_empty() && live.ttl() > 0 {
            return false;
        }
        if by_ttl.get(&self.ttl).is_some_and(|shared| shared.id == self.lease.id) {
            by_ttl.remove(&self.ttl);
        }
        drop(by_ttl);
        self.client.revoke("", [self.lease.id]).await;
        true
    }
}
