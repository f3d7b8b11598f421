//! Locks as the Go `kvtools/consul` store takes them, so Go and Rust services exclude each
//! other: a session (`Behavior=release`, TTL half the lock's TTL, lock delay 1 ms) acquires
//! the key itself with the lock value and the Go lock flags.
//!
//! Each acquisition has its own session, renewed in the background every quarter of the
//! TTL; Consul invalidates a session twice its TTL after the last renewal, so the lock is
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
//! with `delete_on_unlock`, deletes it if the session still holds it; then the session is
//! destroyed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rs_consul::CreateOrUpdateKeyRequest;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use valkeyrie_core::{
    holding, Acquire, Error, Holding, Key, LockGuard, LockOptions, LockRelease, LostNotifier, LostReason, LostSignal,
    Releasing, Result, Spawner,
};

use crate::api::{Blocking, Consistency, Entry, KvOp, OwnedSession, SessionSpec, TxnOutcome, LOCK_FLAGS};
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

    fn closed(&self, call: &'static str) -> Error {
        Error::Closed {
            store: CONSUL,
            call,
            key: self.key.to_string(),
        }
    }

    /// One acquisition attempt; with `wait`, until held, else `None` when someone holds it.
    async fn attempt(&self, call: &'static str, wait: bool) -> Result<Option<LockGuard>> {
        if self.spawner.is_closed() {
            return Err(self.closed(call));
        }
        let key = self.key.as_str();
        let created_at = LostNotifier::now_ms();
        let spec = SessionSpec {
            behavior: "release",
            ttl: session_ttl(self.ttl),
            lock_delay: LOCK_DELAY,
        };
        // Destroyed if the attempt is abandoned (the `lock` future dropped, or the lock busy)
        // before a guard owns it.
        let mut pending = OwnedSession::create(&self.client, call, key, &spec).await?;
        let session = pending.id().to_owned();
        let (holding, releasing, signal) = holding(self.ttl);
        holding.held_for(created_at, self.ttl);
        let (acquired, acquired_at) = oneshot::channel();
        let keeper = SessionKeeper {
            client: self.client.clone(),
            key: self.key.clone(),
            session: session.clone(),
            ttl: self.ttl,
            watch_wait: self.watch_wait,
        };
        self.spawner
            .spawn_self_stopping(keeper.run(holding, acquired_at, self.spawner.token()));
        let release = ConsulRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            session: session.clone(),
            value: self.value.clone(),
            delete_value: self.delete_on_unlock,
            releasing,
        };

        let Some(token) = self.acquire(call, &session, &signal, wait).await? else {
            // Busy and not waiting: dropping `pending` destroys the session; dropping
            // `release` stops its keeper.
            drop(release);
            return Ok(None);
        };
        pending.arm(false);
        let _ = acquired.send(token);
        // The session names this acquisition: a fenced write checks it still holds the key.
        let guard = LockGuard::new(CONSUL, key, token, signal, Box::new(release)).with_fence_record(session);
        Ok(Some(guard))
    }

    /// Acquires the key with `session`, waiting for its holder to let go if `wait`; the
    /// index of the acquiring write, or `None` when busy and not waiting.
    async fn acquire(&self, call: &'static str, session: &str, lost: &LostSignal, wait: bool) -> Result<Option<u64>> {
        let key = self.key.as_str();
        let closing = self.spawner.token();
        let acquire = [KvOp::lock(key, session, &self.value)];
        // For a key free but not taken: a lock delay is running, or someone was quicker.
        let mut pause = Duration::from_millis(20);
        loop {
            if let TxnOutcome::Committed(entries) = self.client.txn(call, key, &acquire).await? {
                return Ok(Some(entries.last().map_or(0, |entry| entry.modify_index)));
            }
            if !wait {
                return Ok(None);
            }
            let (entries, index) = self
                .client
                .kv_read(call, key, false, Consistency::Default, None)
                .await?;
            let held = entries.iter().any(|e| e.key == key && e.session.is_some());
            if held {
                pause = Duration::from_millis(20);
            }
            let wait_free = pause;
            let blocked = async {
                if held {
                    // Until the key changes (its holder releases it, most likely).
                    let until_changed = Blocking {
                        index: index.max(1),
                        wait: self.watch_wait,
                    };
                    self.client
                        .kv_read(call, key, false, Consistency::Default, Some(until_changed))
                        .await
                        .map(drop)
                } else {
                    tokio::time::sleep(wait_free).await;
                    Ok(())
                }
            };
            if !held {
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            tokio::select! {
                biased;
                () = closing.cancelled() => return Err(self.closed(call)),
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

    async fn acquire(&self, call: &'static str, wait: bool) -> Result<Option<LockGuard>> {
        loop {
            match self.attempt(call, wait).await {
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

type Query = Pin<Box<dyn Future<Output = Result<(Vec<Entry>, u64)>> + Send>>;

/// The background half of an acquisition: renews the session and, once the key is held,
/// watches it, reporting a loss.
struct SessionKeeper {
    client: ConsulClient,
    key: Key,
    session: String,
    ttl: Duration,
    watch_wait: Duration,
}

impl SessionKeeper {
    /// A blocking query on the key from `index`, after `delay`.
    fn query(&self, index: u64, delay: Duration) -> Query {
        let (client, key, wait) = (self.client.clone(), self.key.clone(), self.watch_wait);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let blocking = Blocking {
                index: index.max(1),
                wait,
            };
            client
                .kv_read("lock", key.as_str(), false, Consistency::Default, Some(blocking))
                .await
        })
    }

    async fn run(self, mut holding: Holding, mut acquired: oneshot::Receiver<u64>, closing: CancellationToken) {
        let key = self.key.as_str();
        let mut tick = tokio::time::interval(self.ttl / 4);
        tick.tick().await;
        let mut monitor: Option<Query> = None;
        let mut waiting_for_acquisition = true;
        loop {
            let next_answer = async {
                match monitor.as_mut() {
                    Some(query) => query.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = holding.stopped() => return,
                () = closing.cancelled() => {
                    holding.lose(LostReason::StoreClosed);
                    let _ = self.client.session_destroy("unlock", key, &self.session).await;
                    return;
                }
                index = &mut acquired, if waiting_for_acquisition => {
                    waiting_for_acquisition = false;
                    if let Ok(index) = index {
                        monitor = Some(self.query(index, Duration::ZERO));
                    }
                }
                answer = next_answer => match answer {
                    Ok((entries, index)) => {
                        let holder = entries.iter().find(|e| e.key == key).map(|e| e.session.as_deref());
                        match holder {
                            Some(Some(session)) if session == self.session => {
                                monitor = Some(self.query(index, Duration::ZERO));
                            }
                            None => {
                                holding.lose(LostReason::RecordDeleted);
                                return;
                            }
                            // Released: our session ended (expired, destroyed), or someone
                            // released it for us and may have taken it since.
                            Some(_) => {
                                let alive = self.client.session_renew("lock", key, &self.session).await;
                                holding.lose(match alive {
                                    Ok(false) => LostReason::Expired,
                                    _ => LostReason::RecordDeleted,
                                });
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        tracing::debug!(store = CONSUL, key, error = %err, "lock watch failed; retrying");
                        monitor = Some(self.query(0, Duration::from_millis(500)));
                    }
                },
                _ = tick.tick() => {
                    // Past the deadline the lock counts as lost: give it up (destroying the
                    // session releases it at once) rather than let a late renewal keep it.
                    if holding.expired() {
                        let _ = self.client.session_destroy("lock", key, &self.session).await;
                        return;
                    }
                    let started = LostNotifier::now_ms();
                    match self.client.session_renew("lock", key, &self.session).await {
                        Ok(true) => {
                            if !holding.held_for(started, self.ttl) {
                                let _ = self.client.session_destroy("lock", key, &self.session).await;
                                return;
                            }
                        }
                        Ok(false) => {
                            holding.lose(LostReason::Expired);
                            return;
                        }
                        Err(err) => {
                            tracing::debug!(store = CONSUL, key, error = %err, "session renewal failed; retrying");
                        }
                    }
                }
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
    releasing: Releasing,
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
            releasing,
        } = *self;
        releasing.begin();
        let name = key.as_str();
        let released = if delete_value {
            let ops = [KvOp::check_session(name, &session), KvOp::delete(name)];
            client
                .txn("unlock", name, &ops)
                .await
                .map(|outcome| matches!(outcome, TxnOutcome::Committed(_)))
        } else {
            let path = key_path(name);
            client
                .with_consul("unlock", name, |consul| {
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
        // Ending the session releases whatever it still holds; it is done either way.
        let destroyed = client.session_destroy("unlock", name, &session).await;
        if !released? {
            return Err(Error::LockLost {
                store: CONSUL,
                key: key.to_string(),
                reason: LostReason::RecordDeleted,
            });
        }
        destroyed
    }
}
