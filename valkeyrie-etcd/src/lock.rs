//! Locks in the Go `kvtools/etcdv3` layout, so Go and Rust services exclude each other.
//!
//! Each acquisition is a session: a lease kept alive in the background, and the contender
//! key `<key>___lock/<lease id in hex>` bound to it (etcd's `concurrency.Mutex` recipe). The
//! contender whose key has the lowest create revision holds the lock; the others wait for
//! the deletion of the newest key older than theirs. When held, the lock value is written
//! to `<key>` (bound to the lease with `delete_on_unlock`, so it also goes if the holder
//! dies). The fencing token is the contender key's create revision.
//!
//! The handle's lock-holding driver keeps the lease alive. The lost signal fires when the
//! lease cannot be renewed or has expired, or when the contender key is deleted behind the
//! holder's back (a watch on it). Releasing deletes the contender key
//! (and the value with `delete_on_unlock`) only if it is still ours.
//!
//! A released acquisition's lease is kept for the next acquisition of the same TTL on the
//! handle ([`IdleLeases`]), as etcd's `concurrency` package serves many mutexes from one
//! session: a lock cycle then costs three raft writes (create, value, release) instead of
//! five (grant and revoke too). Each lease serves one acquisition at a time, so two
//! acquisitions never share a contender key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::time::Instant;
use valkeyrie_core::raw::{Acquire, Backoff, Hold, Key, LockRelease, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, LockGuard, LockOptions, LostReason, LostSignal, Result};

use crate::client::{lease_seconds, EtcdClient, KeptLease};
use crate::lease::is_lease_gone;
use crate::ETCD;

/// A lock on one key.
pub(crate) struct EtcdLocker {
    client: EtcdClient,
    key: Key,
    value: Bytes,
    ttl: Duration,
    delete_on_unlock: bool,
    spawner: Spawner,
    idle: Arc<IdleLeases>,
}

/// How many released leases of one TTL a handle keeps for later acquisitions; more are
/// revoked. Enough for the locks one handle takes at the same time in practice.
const IDLE_LEASES_PER_TTL: usize = 16;

/// A lease no acquisition uses, and the instant its last renewal (or grant) was sent.
#[derive(Debug, Clone, Copy)]
struct IdleLease {
    id: i64,
    confirmed_at: Instant,
}

/// The leases of a handle's released locks, by TTL, each waiting for one later acquisition.
///
/// Idle leases are not renewed: one idle for a third of its TTL is revoked rather than taken
/// (an acquisition renews its lease a third of the TTL after the last confirmation, so a
/// taken lease has as much time left as a new one at its first renewal), and
/// [`IdleLeases::drain`] hands the rest to `close`. Nothing is bound to an idle lease: the
/// release deleted the contender key and the value.
#[derive(Debug, Default)]
pub(crate) struct IdleLeases {
    by_ttl: Mutex<HashMap<Duration, Vec<IdleLease>>>,
}

impl IdleLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Duration, Vec<IdleLease>>> {
        // The map is consistent after every statement: a panic elsewhere cannot tear it.
        self.by_ttl.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The freshest idle lease of `ttl` still worth taking; the stale ones it passed over
    /// are left in `stale` for the caller to revoke.
    fn take(&self, ttl: Duration, stale: &mut Vec<i64>) -> Option<IdleLease> {
        let now = Instant::now();
        let mut by_ttl = self.lock();
        let idle = by_ttl.get_mut(&ttl)?;
        while let Some(lease) = idle.pop() {
            if lease.confirmed_at + ttl / 3 > now {
                return Some(lease);
            }
            stale.push(lease.id);
        }
        None
    }

    /// Keeps `lease` for a later acquisition of `ttl`; the lease to revoke instead when the
    /// handle keeps enough of them.
    fn keep(&self, ttl: Duration, lease: IdleLease) -> Option<i64> {
        let mut by_ttl = self.lock();
        let idle = by_ttl.entry(ttl).or_default();
        if idle.len() >= IDLE_LEASES_PER_TTL {
            return Some(lease.id);
        }
        idle.push(lease);
        None
    }

    /// Every idle lease, removed: the handle is closing.
    pub(crate) fn drain(&self) -> Vec<i64> {
        self.lock()
            .drain()
            .flat_map(|(_, idle)| idle)
            .map(|lease| lease.id)
            .collect()
    }
}

/// Revokes `lease` after the current call returns (which `close` waits for).
fn revoke_later(client: &EtcdClient, spawner: &Spawner, lease: i64) {
    let client = client.clone();
    spawner.spawn_cleanup(async move { client.revoke("", [lease]).await });
}

/// The suffix the Go store appends to a lock's key to make its contenders' prefix.
const LOCK_SUFFIX: &str = "___lock";

/// Whether `key` is a lock contender key (lock bookkeeping, never listed or watched).
pub(crate) fn is_bookkeeping(key: &[u8]) -> bool {
    let marker = b"___lock/";
    key.windows(marker.len()).any(|window| window == marker)
}

/// The prefix under which the contenders for `key` live.
pub(crate) fn contenders_prefix(key: &str) -> String {
    format!("{key}{LOCK_SUFFIX}/")
}

/// A lease granted for an attempt; revoked in the background if the attempt is abandoned
/// (the `lock` future dropped) before it is handed to a guard.
struct Pending {
    client: EtcdClient,
    lease: i64,
    armed: bool,
    spawner: Spawner,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed {
            revoke_later(&self.client, &self.spawner, self.lease);
        }
    }
}

impl EtcdLocker {
    pub(crate) fn new(
        client: EtcdClient,
        key: Key,
        opts: LockOptions,
        spawner: Spawner,
        idle: Arc<IdleLeases>,
    ) -> Self {
        EtcdLocker {
            client,
            key,
            ttl: opts.ttl_or_default(),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            spawner,
            idle,
        }
    }

    /// A lease for one acquisition (with the instant it was last confirmed): an idle one of
    /// the handle's, then `true`, or a new one.
    async fn lease(&self) -> Result<(IdleLease, bool)> {
        let mut stale = Vec::new();
        let reused = self.idle.take(self.ttl, &mut stale);
        for lease in stale {
            revoke_later(&self.client, &self.spawner, lease);
        }
        if let Some(lease) = reused {
            return Ok((lease, true));
        }
        let mut raw = self.client.raw();
        let confirmed_at = Instant::now();
        let granted = self
            .client
            .request(self.key.as_str(), raw.lease_grant(lease_seconds(self.ttl), None))
            .await?;
        Ok((
            IdleLease {
                id: granted.id(),
                confirmed_at,
            },
            false,
        ))
    }

    fn closed(&self) -> Error {
        Error::closed(ETCD, self.key.as_str())
    }

    /// Waits until no contender older than ours remains; `false` if one does and `wait` is off.
    async fn wait_turn(&self, prefix: &str, own_revision: i64, session: &LostSignal, wait: bool) -> Result<bool> {
        let key = self.key.as_str();
        let closing = self.spawner.token();
        loop {
            let mut raw = self.client.raw();
            let older = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(own_revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let response = self.client.request(key, raw.get(prefix, Some(older))).await?;
            let Some(predecessor) = response.kvs().first() else {
                return Ok(true);
            };
            if !wait {
                return Ok(false);
            }
            let after = response.header().map_or(0, |h| h.revision()).saturating_add(1);
            let options = WatchOptions::new().with_start_revision(after);
            let mut deletion = self
                .client
                .request(key, raw.watch(predecessor.key().to_vec(), Some(options)))
                .await?;
            loop {
                tokio::select! {
                    () = closing.cancelled() => return Err(self.closed()),
                    reason = session.lost() => return Err(Error::LockLost { store: ETCD, key: key.to_owned(), reason }),
                    message = deletion.message() => match message {
                        Ok(Some(response)) => {
                            if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                                break;
                            }
                            if response.canceled() {
                                break;
                            }
                        }
                        // The watch broke: look again.
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
    }
}

#[async_trait]
impl Acquire for EtcdLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        ETCD
    }

    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        if self.spawner.is_closed() {
            return Err(self.closed());
        }
        let key = self.key.as_str();
        let mut raw = self.client.raw();
        let prefix = contenders_prefix(key);
        // The oldest contender comes back with the creation: when it is ours, the lock is
        // held without another round trip.
        let oldest = || {
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1);
            TxnOp::get(prefix.as_str(), Some(options))
        };
        let (lease, contender, created, mut pending) = loop {
            let (lease, reused) = self.lease().await?;
            let mut pending = Pending {
                client: self.client.clone(),
                lease: lease.id,
                armed: true,
                spawner: self.spawner.clone(),
            };
            let contender = format!("{prefix}{:x}", lease.id);
            let create = Txn::new()
                .when([Compare::create_revision(contender.as_str(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(contender.as_str(), "", Some(PutOptions::new().with_lease(lease.id))),
                    oldest(),
                ])
                .or_else([TxnOp::get(contender.as_str(), None), oldest()]);
            match self.client.request(key, raw.txn(create)).await {
                // An idle lease expired or was revoked meanwhile: take a new one.
                Err(err) if reused && is_lease_gone(&err) => pending.armed = false,
                created => break (lease, contender, created?, pending),
            }
        };
        let gets: Vec<Option<i64>> = created
            .op_responses()
            .iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.create_revision())),
                _ => None,
            })
            .collect();
        let own_revision = if created.succeeded() {
            created.header().map_or(0, |h| h.revision())
        } else {
            gets.first().copied().flatten().unwrap_or(0)
        };
        let first_in_line = gets.last().copied().flatten() == Some(own_revision);

        if own_revision <= 0 {
            let reason = format!("no create revision for {contender}");
            return Err(Error::backend(ETCD, key, true, reason));
        }
        let confirmed_at = Arc::new(Mutex::new(lease.confirmed_at));
        let session = Session {
            client: self.client.clone(),
            contender: contender.clone(),
            lease: KeptLease::new(lease.id),
            ttl: self.ttl,
            confirmed_at: Arc::clone(&confirmed_at),
        };
        let deleted = lost_when_deleted(self.client.clone(), contender.clone(), own_revision);
        let held = self
            .spawner
            .hold(Hold::new(session, lease.confirmed_at, self.ttl).watching(deleted));
        let release = EtcdRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            contender: contender.clone(),
            own_revision,
            lease: lease.id,
            ttl: self.ttl,
            confirmed_at,
            delete_value: self.delete_on_unlock,
            spawner: self.spawner.clone(),
            idle: Arc::clone(&self.idle),
        };

        if !first_in_line && !self.wait_turn(&prefix, own_revision, held.lost_signal(), wait).await? {
            // Busy and not waiting: dropping `pending` revokes the lease, which deletes the
            // contender key; dropping `held` stops the renewals.
            return Ok(None);
        }
        let value_options = self.delete_on_unlock.then(|| PutOptions::new().with_lease(lease.id));
        self.client
            .request(key, raw.put(key, self.value.to_vec(), value_options))
            .await?;
        pending.armed = false;
        let token = u64::try_from(own_revision).unwrap_or(0);
        // The store checks a fence on the contender key: it exists with this create revision
        // exactly as long as this acquisition holds the lock.
        Ok(Some(
            LockGuard::new(ETCD, key, token, held, Box::new(release)).with_fence_record(contender),
        ))
    }
}

/// The lease of one acquisition, as the handle's lock-holding driver keeps it alive.
struct Session {
    client: EtcdClient,
    contender: String,
    lease: KeptLease,
    ttl: Duration,
    /// When the last confirmed renewal (or the grant) was sent: the lease's age once idle.
    confirmed_at: Arc<Mutex<Instant>>,
}

#[async_trait]
impl Renew for Session {
    async fn renew(&self) -> Result<Renewal> {
        let sent = Instant::now();
        Ok(if self.lease.renew(&self.client, &self.contender).await? {
            *self.confirmed_at.lock().unwrap_or_else(PoisonError::into_inner) = sent;
            Renewal::Held(self.ttl)
        } else {
            // etcd refuses to renew an expired lease.
            Renewal::Lost(LostReason::Expired)
        })
    }

    async fn release_on_close(&self) {
        // Revoked as the handle closes (deleting the contender key, and the value bound with
        // `delete_on_unlock`), so the next contender does not wait out the TTL of a lock
        // whose handle is gone.
        self.client.revoke(&self.contender, [self.lease.id()]).await;
    }
}

/// Resolves when the contender key (created at `own_revision`) is deleted: a watch from just
/// after its creation, opened again after it breaks once a read shows the key still ours.
async fn lost_when_deleted(client: EtcdClient, contender: String, own_revision: i64) -> LostReason {
    let mut from = own_revision.saturating_add(1);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut raw = client.raw();
        let options = WatchOptions::new().with_start_revision(from);
        if let Ok(mut deletions) = raw.watch(contender.as_str(), Some(options)).await {
            loop {
                match deletions.message().await {
                    Ok(Some(response)) if response.events().iter().any(|e| e.event_type() == EventType::Delete) => {
                        return LostReason::RecordDeleted;
                    }
                    // A cancelled watch (its start revision compacted, say) is a broken one.
                    Ok(Some(response)) if response.canceled() => break,
                    Ok(Some(_)) => {}
                    // The watch broke; the keep-alive still guards the lease.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        backoff.wait().await;
        // Watch again from the revision a read shows the key still ours at.
        let current = client.request(&contender, raw.get(contender.as_str(), None)).await;
        if let Ok(current) = current {
            if current
                .kvs()
                .first()
                .is_none_or(|kv| kv.create_revision() != own_revision)
            {
                return LostReason::RecordDeleted;
            }
            from = current.header().map_or(from, |h| h.revision().saturating_add(1));
            backoff.reset();
        }
    }
}

struct EtcdRelease {
    client: EtcdClient,
    key: Key,
    contender: String,
    own_revision: i64,
    lease: i64,
    ttl: Duration,
    confirmed_at: Arc<Mutex<Instant>>,
    delete_value: bool,
    /// Revokes the lease when it cannot be kept for a later acquisition.
    spawner: Spawner,
    idle: Arc<IdleLeases>,
}

#[async_trait]
impl LockRelease for EtcdRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let EtcdRelease {
            client,
            key,
            contender,
            own_revision,
            lease,
            ttl,
            confirmed_at,
            delete_value,
            spawner,
            idle,
        } = *self;
        let mut deletes = vec![TxnOp::delete(contender.as_str(), None)];
        if delete_value {
            deletes.push(TxnOp::delete(key.as_str(), None));
        }
        let still_ours = Compare::create_revision(contender.as_str(), CompareOp::Equal, own_revision);
        let mut raw = client.raw();
        let released = client
            .request(key.as_str(), raw.txn(Txn::new().when([still_ours]).and_then(deletes)))
            .await;
        // A lease whose contender key this release deleted serves a later acquisition; any
        // other (the release failed, or the key was not ours any more) is revoked, which
        // deletes whatever is still bound to it.
        let confirmed_at = *confirmed_at.lock().unwrap_or_else(PoisonError::into_inner);
        let revoke = match &released {
            Ok(response) if response.succeeded() => idle.keep(
                ttl,
                IdleLease {
                    id: lease,
                    confirmed_at,
                },
            ),
            _ => Some(lease),
        };
        if let Some(lease) = revoke {
            revoke_later(&client, &spawner, lease);
        }
        if !released?.succeeded() {
            return Err(Error::LockLost {
                store: ETCD,
                key: key.to_string(),
                reason: LostReason::RecordDeleted,
            });
        }
        Ok(())
    }
}
