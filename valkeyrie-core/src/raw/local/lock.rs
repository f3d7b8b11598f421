//! Locks of the local engine: a lock record per key with fencing token and TTL; the
//! handle's lock-holding driver renews it every third of the TTL, the holder checks it
//! whenever any lock changes, and a loss is reported through the guard.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::engine::{now_ms, Acquire, Engine};
use super::Storage;
use crate::error::{Error, LostReason, Result};
use crate::key::Key;
use crate::lock::{LockGuard, LockRelease, Locker};
use crate::raw::background::Spawner;
use crate::raw::hold::{Hold, Renew, Renewal};

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

/// One acquisition as the lock-holding driver sees it.
struct LocalHold<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    token: u64,
    ttl: Duration,
    delete_value: bool,
}

impl<S: Storage> LocalLocker<S> {
    fn closed(&self) -> Error {
        Error::closed(self.engine.store(), self.key.as_str())
    }

    async fn attempt(&self) -> Result<std::result::Result<LockGuard, u64>> {
        if self.spawner.is_closed() {
            return Err(self.closed());
        }
        let store = self.engine.store();
        let acquired_at = Instant::now();
        let token = match self.engine.acquire(&self.key, self.ttl, &self.value)? {
            Acquire::Busy(until) => return Ok(Err(until)),
            Acquire::Acquired(token) => token,
        };
        let hold = LocalHold {
            engine: Arc::clone(&self.engine),
            key: self.key.clone(),
            token,
            ttl: self.ttl,
            delete_value: self.delete_on_unlock,
        };
        let guard = self.hold(hold, acquired_at);
        if self.sync_writes {
            let engine = Arc::clone(&self.engine);
            let key = self.key.to_string();
            tokio::task::spawn_blocking(move || engine.flush(&key))
                .await
                .map_err(|e| Error::backend(store, self.key.as_str(), false, e))??;
        }
        Ok(Ok(guard))
    }

    /// Hands the acquisition to the handle's lock-holding driver and wraps it in a guard.
    fn hold(&self, hold: LocalHold<S>, acquired_at: Instant) -> LockGuard {
        let token = hold.token;
        let release = LocalRelease {
            engine: Arc::clone(&hold.engine),
            key: hold.key.clone(),
            token,
            delete_value: hold.delete_value,
        };
        let lost = lost_when_changed(Arc::clone(&hold.engine), hold.key.clone(), hold.token);
        let held = self.spawner.hold(Hold::new(hold, acquired_at, self.ttl).watching(lost));
        LockGuard::new(self.engine.store(), self.key.as_str(), token, held, Box::new(release))
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
            let until = match self.attempt().await? {
                Ok(guard) => return Ok(guard),
                Err(until) => until,
            };
            let wait = Duration::from_millis(until.saturating_sub(now_ms()).max(1));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(wait) => {}
                () = closing.cancelled() => return Err(self.closed()),
            }
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        Ok(self.attempt().await?.ok())
    }
}

#[async_trait]
impl<S: Storage> Renew for LocalHold<S> {
    async fn renew(&self) -> Result<Renewal> {
        Ok(match self.engine.renew(&self.key, self.token, self.ttl) {
            Ok(()) => Renewal::Held(self.ttl),
            Err(reason) => Renewal::Lost(reason),
        })
    }

    async fn release_on_close(&self) {
        // Released as the handle closes, so another handle on the database does not wait
        // out the TTL of a lock whose holder is gone.
        let _ = self.engine.release(&self.key, self.token, self.delete_value);
    }
}

/// Resolves when the lock record of acquisition `token` is gone or taken, checked whenever
/// any lock of the engine changes.
async fn lost_when_changed<S: Storage>(engine: Arc<Engine<S>>, key: Key, token: u64) -> LostReason {
    loop {
        // Registered before the check, so a change in between is not missed.
        let changed = engine.lock_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match engine.check(&key, token) {
            Ok(()) => changed.await,
            Err(reason) => return reason,
        }
    }
}

struct LocalRelease<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    token: u64,
    delete_value: bool,
}

#[async_trait]
impl<S: Storage> LockRelease for LocalRelease<S> {
    async fn release(self: Box<Self>) -> Result<()> {
        let LocalRelease {
            engine,
            key,
            token,
            delete_value,
        } = *self;
        match engine.release(&key, token, delete_value)? {
            Ok(()) => Ok(()),
            Err(reason) => Err(Error::LockLost {
                store: engine.store(),
                key: key.to_string(),
                reason,
            }),
        }
    }
}
