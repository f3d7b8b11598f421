//! Locks as the Go `kvtools/consul` store takes them, so Go and Rust services exclude each
//! other: a session (`Behavior=release`, TTL half the lock's TTL, lock delay 1 ms) acquires
//! the key itself with the lock value and the Go lock flags.
//!
//! Each acquisition has its own session, renewed every quarter of the TTL by the handle's
//! lock-holding driver; Consul invalidates a session twice its TTL after the last renewal, so the lock is
//! held until the lock TTL has passed since the last renewal, which is the held-until
//! deadline of the lost signal. A waiting contender blocks on the key until its holder
//! lets go. Once held, the key is watched: the lost signal fires when the key is deleted,
//! taken by another session, or released because the session ended.
//!
//! The fencing token is the `ModifyIndex` of the acquiring write, not the key's
//! `LockIndex`: `LockIndex` starts again at 1 when the key is deleted (`delete_on_unlock`),
//! while Consul's indexes only grow. The fence's record is the acquisition's session, which
//! a fenced write checks (`check-session`) in its transaction: the check fails once the
//! session no longer holds the key, whether it was released, deleted or expired.
//!
//! Unlocking releases the key (through `rs-consul`, rewriting the lock value as Go does) or,
//! with `delete_on_unlock`, deletes it if the session still holds it. The session is
//! destroyed after the unlock returns (`close` waits for it): the key is free once released,
//! so the next contender does not wait for the destroy's raft write.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rs_consul::CreateOrUpdateKeyRequest;
use tokio::sync::oneshot;
use tokio::time::Instant;
use valkeyrie_core::raw::{Acquire, Backoff, Hold, Key, LockRelease, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, LockGuard, LockOptions, LostReason, LostSignal, Result};

use crate::api::{Blocking, Consistency, KvOp, OwnedSession, SessionSpec, TxnOutcome, LOCK_FLAGS};
use crate::client::{key_path, ConsulClient};
use crate::write::session_ttl;
use crate::CONSUL;

/// The lock delay of lock sessions, as the Go store sets it.
const LOCK_DELAY: Duration = Duration::from_millis(1);

/// A lock on one key.
pub(crate) struct ConsulLocker {
    client: ConsulClient,
    key: Key,
    value: Bytes,
    ttl: Duration,
    delete_on_unlock: bool,
    watch_wait: Duration,
    spawner: Spawner,
}

impl ConsulLocker {
    pub(crate) fn new(
        client: ConsulClient,
        key: Key,
        opts: LockOptions,
        watch_wait: Duration,
        spawner: Spawner,
    ) -> Self {
        ConsulLocker {
            client,
            key,
            ttl: opts.ttl_or_default(),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            watch_wait,
            spawner,
        }
    }

    fn closed(&self) -> Error {
        Error::closed(CONSUL, self.key.as_str())
    }

    /// One acquisition attempt; with `wait`, until held, else `None` when someone holds it.
    async fn attempt(&self, wait: bool) -> Result<Option<LockGuard>> {
        if self.spawner.is_closed() {
            return Err(self.closed());
        }
        let key = self.key.as_str();
        let created_at = Instant::now();
        let spec = SessionSpec {
            behavior: "release",
            ttl: session_ttl(self.ttl),
            lock_delay: LOCK_DELAY,
        };
        // Destroyed if the attempt is abandoned (the `lock` future dropped, or the lock busy)
        // before a guard owns it.
        let mut pending = OwnedSession::create(&self.client, key, &spec).await?;
        let session = pending.id().to_owned();
        let (acquired, acquired_at) = oneshot::channel();
        let lock_session = LockSession {
            client: self.client.clone(),
            key: self.key.clone(),
            session: session.clone(),
            ttl: self.ttl,
        };
        let lost = lost_when_released(lock_session.clone(), acquired_at, self.watch_wait);
        // Renewed while it waits too: a waiting contender's session must not expire.
        let held = self.spawner.hold(
            Hold::new(lock_session, created_at, self.ttl)
                .every(self.ttl / 4)
                .watching(lost),
        );
        let release = ConsulRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            session: session.clone(),
            value: self.value.clone(),
            delete_value: self.delete_on_unlock,
            spawner: self.spawner.clone(),
        };

        let Some(token) = self.acquire(&session, held.lost_signal(), wait).await? else {
            // Busy and not waiting: dropping `pending` destroys the session; dropping
            // `held` stops its renewals.
            return Ok(None);
        };
        pending.arm(false);
        let _ = acquired.send(token);
        // The session names this acquisition: a fenced write checks it still holds the key.
        let guard = LockGuard::new(CONSUL, key, token, held, Box::new(release)).with_fence_record(session);
        Ok(Some(guard))
    }

    /// Acquires the key with `session`, waiting for its holder to let go if `wait`; the
    /// index of the acquiring write, or `None` when busy and not waiting.
    async fn acquire(&self, session: &str, lost: &LostSignal, wait: bool) -> Result<Option<u64>> {
        let key = self.key.as_str();
        let closing = self.spawner.token();
        let acquire = [KvOp::lock(key, session, &self.value)];
        // For a key free but not taken: a lock delay is running, or someone was quicker.
        let mut pause = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            if let TxnOutcome::Committed(entries) = self.client.txn(key, &acquire).await? {
                return Ok(Some(entries.last().map_or(0, |entry| entry.modify_index)));
            }
            if !wait {
                return Ok(None);
            }
            let (entries, index) = self.client.kv_read(key, false, Consistency::Default, None).await?;
            let held = entries.iter().any(|e| e.key == key && e.session.is_some());
            if held {
                pause.reset();
            }
            let blocked = async {
                if held {
                    // Until the key changes (its holder releases it, most likely).
                    let until_changed = Blocking {
                        index: index.max(1),
                        wait: self.watch_wait,
                    };
                    self.client
                        .kv_read(key, false, Consistency::Default, Some(until_changed))
                        .await
                        .map(drop)
                } else {
                    pause.wait().await;
                    Ok(())
                }
            };
            tokio::select! {
                biased;
                () = closing.cancelled() => return Err(self.closed()),
                reason = lost.lost() => return Err(Error::LockLost { store: CONSUL, key: key.to_owned(), reason }),
                result = blocked => result?,
            }
        }
    }
}

#[async_trait]
impl Acquire for ConsulLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        CONSUL
    }

    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        loop {
            match self.attempt(wait).await {
                // The waiting session ended (renewals failed for a whole TTL, or it was
                // destroyed) before the lock was ours: wait again with a new one.
                Err(Error::LockLost { reason, .. }) if wait => {
                    tracing::debug!(store = CONSUL, key = self.key.as_str(), %reason, "waiting session lost; starting over");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                outcome => return outcome,
            }
        }
    }
}

/// The session of one acquisition, as the handle's lock-holding driver renews it.
#[derive(Clone)]
struct LockSession {
    client: ConsulClient,
    key: Key,
    session: String,
    ttl: Duration,
}

#[async_trait]
impl Renew for LockSession {
    async fn renew(&self) -> Result<Renewal> {
        Ok(if self.client.session_renew(self.key.as_str(), &self.session).await? {
            Renewal::Held(self.ttl)
        } else {
            Renewal::Lost(LostReason::Expired)
        })
    }

    async fn give_up(&self) {
        // Destroying the session releases the key at once, rather than letting a late
        // renewal keep it for a holder that has let go.
        let _ = self.client.session_destroy(self.key.as_str(), &self.session).await;
    }

    async fn release_on_close(&self) {
        let _ = self.client.session_destroy(self.key.as_str(), &self.session).await;
    }
}

/// Once the key is acquired (at the index `acquired` delivers), follows it with blocking
/// queries and resolves when it is deleted, taken by another session, or released because
/// the session ended. Pending forever if the acquisition is abandoned.
async fn lost_when_released(lock: LockSession, acquired: oneshot::Receiver<u64>, wait: Duration) -> LostReason {
    let Ok(mut index) = acquired.await else {
        return std::future::pending().await;
    };
    let key = lock.key.as_str();
    loop {
        let blocking = Blocking {
            index: index.max(1),
            wait,
        };
        let answer = lock
            .client
            .kv_read(key, false, Consistency::Default, Some(blocking))
            .await;
        let (entries, next) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!(store = CONSUL, key, error = %err, "lock watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                index = 0;
                continue;
            }
        };
        match entries.iter().find(|e| e.key == key).map(|e| e.session.as_deref()) {
            Some(Some(session)) if session == lock.session => index = next,
            None => return LostReason::RecordDeleted,
            // Released: our session ended (expired, destroyed), or someone released it for
            // us and may have taken it since.
            Some(_) => {
                let alive = lock.client.session_renew(key, &lock.session).await;
                return match alive {
                    Ok(false) => LostReason::Expired,
                    _ => LostReason::RecordDeleted,
                };
            }
        }
    }
}

struct ConsulRelease {
    client: ConsulClient,
    key: Key,
    session: String,
    value: Bytes,
    delete_value: bool,
    /// Destroys the session once the release is done.
    spawner: Spawner,
}

#[async_trait]
impl LockRelease for ConsulRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let ConsulRelease {
            client,
            key,
            session,
            value,
            delete_value,
            spawner,
        } = *self;
        let name = key.as_str();
        let released = if delete_value {
            let ops = [KvOp::check_session(name, &session), KvOp::delete(name)];
            client
                .txn(name, &ops)
                .await
                .map(|outcome| matches!(outcome, TxnOutcome::Committed(_)))
        } else {
            let path = key_path(name);
            client
                .with_consul(name, |consul| {
                    let request = CreateOrUpdateKeyRequest {
                        key: &path,
                        datacenter: client.datacenter(),
                        flags: LOCK_FLAGS,
                        release: &session,
                        ..Default::default()
                    };
                    consul.create_or_update_key(request, value.to_vec())
                })
                .await
                .map(|(released, _)| released)
        };
        // Ending the session releases whatever it still holds; it is done either way. A
        // session whose destroy fails expires by its TTL, unrenewed.
        let name = key.to_string();
        spawner.spawn_cleanup(async move {
            if let Err(err) = client.session_destroy(&name, &session).await {
                tracing::debug!(error = %err, "destroying a released lock's session failed");
            }
        });
        if !released? {
            return Err(Error::LockLost {
                store: CONSUL,
                key: key.to_string(),
                reason: LostReason::RecordDeleted,
            });
        }
        Ok(())
    }
}
