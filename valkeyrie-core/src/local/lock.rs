//! Locks of the local engine: a lock record per key with owner, TTL and fencing token; the
//! holder's handle renews it every third of the TTL, checks it whenever any lock changes,
//! and reports a loss through the guard.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::engine::{now_ms, Acquire, Engine};
use super::Storage;
use crate::background::Spawner;
use crate::error::{Error, LostReason, Result};
use crate::key::Key;
use crate::kv::MAX_TTL;
use crate::lock::{holding, Holding, LockGuard, LockRelease, Locker, LostNotifier, Releasing};

/// A lock on one key of a local engine.
pub(crate) struct LocalLocker<S: Storage> {
    pub(crate) engine: Arc<Engine<S>>,
    pub(crate) key: Key,
    pub(crate) value: Bytes,
    pub(crate) ttl: Duration,
    pub(crate) delete_on_unlock: bool,
    pub(crate) sync_writes: bool,
    pub(crate) spawner: Spawner,
}

/// One acquisition as the renewal task sees it.
struct Hold<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    owner: u64,
    ttl: Duration,
    delete_value: bool,
}

impl<S: Storage> LocalLocker<S> {
    fn closed(&self, call: &'static str) -> Error {
        Error::Closed {
            store: self.engine.store(),
            call,
            key: self.key.to_string(),
        }
    }

    async fn attempt(&self, call: &'static str) -> Result<std::result::Result<LockGuard, u64>> {
        if self.spawner.is_closed() {
            return Err(self.closed(call));
        }
        let store = self.engine.store();
        let owner = self
            .engine
            .storage
            .next_index()
            .map_err(|e| Error::backend(store, call, self.key.as_str(), false, e))?;
        let acquired_at = LostNotifier::now_ms();
        let token = match self.engine.acquire(&self.key, owner, self.ttl, &self.value)? {
            Acquire::Busy(until) => return Ok(Err(until)),
            Acquire::Acquired(token) => token,
        };
        let hold = Hold {
            engine: Arc::clone(&self.engine),
            key: self.key.clone(),
            owner,
            ttl: self.ttl,
            delete_value: self.delete_on_unlock,
        };
        let guard = self.hold(hold, token, acquired_at);
        if self.sync_writes {
            let engine = Arc::clone(&self.engine);
            let key = self.key.to_string();
            tokio::task::spawn_blocking(move || engine.flush(&key))
                .await
                .map_err(|e| Error::backend(store, call, self.key.as_str(), false, e))??;
        }
        Ok(Ok(guard))
    }

    /// Starts renewing the acquisition and wraps it in a guard.
    fn hold(&self, hold: Hold<S>, token: u64, acquired_at: u64) -> LockGuard {
        let (holding, releasing, signal) = holding(self.ttl);
        holding.held_for(acquired_at, self.ttl);
        let release = LocalRelease {
            engine: Arc::clone(&hold.engine),
            key: hold.key.clone(),
            owner: hold.owner,
            delete_value: hold.delete_value,
            releasing,
        };
        self.spawner
            .spawn_self_stopping(renew(hold, holding, self.spawner.token()));
        LockGuard::new(self.engine.store(), self.key.as_str(), token, signal, Box::new(release))
    }
}

#[async_trait]
impl<S: Storage> Locker for LocalLocker<S> {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        self.engine.store()
    }

    async fn lock(&self) -> Result<LockGuard> {
        let closing = self.spawner.token();
        loop {
            // Register for wake-ups before trying, so a release in between is not missed.
            let changed = self.engine.lock_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let until = match self.attempt("lock").await? {
                Ok(guard) => return Ok(guard),
                Err(until) => until,
            };
            let wait = Duration::from_millis(until.saturating_sub(now_ms()).max(1));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(wait) => {}
                () = closing.cancelled() => return Err(self.closed("lock")),
            }
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        Ok(self.attempt("try_lock").await?.ok())
    }
}

/// Renews every third of the TTL and checks ownership whenever any lock changes, until the
/// lock is released, lost, or the handle closes.
async fn renew<S: Storage>(hold: Hold<S>, mut holding: Holding, closing: CancellationToken) {
    // `Store::new_lock` refuses TTLs over `MAX_TTL`; the bound also keeps a direct
    // `Backend::new_lock` call with a huge TTL from overflowing the `Instant` below.
    let period = hold.ttl.min(MAX_TTL) / 3;
    let mut next_renewal = tokio::time::Instant::now() + period;
    loop {
        let changed = hold.engine.lock_changed.notified();
        let due = tokio::select! {
            biased;
            () = holding.stopped() => return,
            () = closing.cancelled() => {
                holding.lose(LostReason::StoreClosed);
                // Released as the handle closes, so another handle on the database does not
                // wait out the TTL of a lock whose holder is gone.
                let _ = hold.engine.release(&hold.key, hold.owner, hold.delete_value);
                return;
            }
            () = changed => false,
            () = tokio::time::sleep_until(next_renewal) => true,
        };
        // A starved process may wake past the deadline: the lock is lost then, and the
        // record expires by itself.
        if holding.expired() {
            return;
        }
        let started = LostNotifier::now_ms();
        let outcome = if due {
            next_renewal = tokio::time::Instant::now() + period;
            hold.engine.renew(&hold.key, hold.owner, hold.ttl)
        } else {
            hold.engine.check(&hold.key, hold.owner)
        };
        match outcome {
            Ok(Ok(())) if due => {
                if !holding.held_for(started, hold.ttl) {
                    return;
                }
            }
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                holding.lose(reason);
                return;
            }
            Err(err) => {
                holding.lose(LostReason::RenewalFailed(err.to_string()));
                return;
            }
        }
    }
}

struct LocalRelease<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    owner: u64,
    delete_value: bool,
    releasing: Releasing,
}

#[async_trait]
impl<S: Storage> LockRelease for LocalRelease<S> {
    async fn release(self: Box<Self>) -> Result<()> {
        let LocalRelease {
            engine,
            key,
            owner,
            delete_value,
            releasing,
        } = *self;
        releasing.begin();
        match engine.release(&key, owner, delete_value)? {
            Ok(()) => Ok(()),
            Err(reason) => Err(Error::LockLost {
                store: engine.store(),
                key: key.to_string(),
                reason,
            }),
        }
    }
}
