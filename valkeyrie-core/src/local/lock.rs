//! Locks of the local engine: a lock record per key with owner, TTL and fencing token; the
//! holder's handle renews it every third of the TTL and reports a loss through the guard.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::engine::{now_ms, Acquire, Engine};
use super::Storage;
use crate::background::Spawner;
use crate::error::{Error, LostReason, Result};
use crate::key::Key;
use crate::lock::{lost_signal, LockGuard, LockRelease, Locker, LostNotifier};

/// A lock on one key of a local engine.
pub(crate) struct LocalLocker<S: Storage> {
    pub(crate) engine: Arc<Engine<S>>,
    pub(crate) key: Key,
    pub(crate) value: Bytes,
    pub(crate) ttl: Duration,
    pub(crate) delete_on_unlock: bool,
    pub(crate) spawner: Spawner,
}

impl<S: Storage> LocalLocker<S> {
    fn closed(&self, call: &'static str) -> Error {
        Error::Closed {
            store: self.engine.store(),
            call,
            key: self.key.to_string(),
        }
    }

    fn attempt(&self, call: &'static str) -> Result<std::result::Result<LockGuard, u64>> {
        if self.spawner.is_closed() {
            return Err(self.closed(call));
        }
        let owner =
            self.engine.storage.next_index().map_err(|e| {
                Error::backend(self.engine.store(), call, self.key.as_str(), false, e)
            })?;
        match self
            .engine
            .acquire(&self.key, owner, self.ttl, &self.value)?
        {
            Acquire::Busy(until) => Ok(Err(until)),
            Acquire::Acquired(token) => Ok(Ok(self.hold(owner, token))),
        }
    }

    /// Starts renewing the acquisition and wraps it in a guard.
    fn hold(&self, owner: u64, token: u64) -> LockGuard {
        let (notifier, signal) = lost_signal();
        let (stop, stopped) = oneshot::channel();
        let renewal = renew(
            Arc::clone(&self.engine),
            self.key.clone(),
            owner,
            self.ttl,
            notifier,
            stopped,
            self.spawner.token(),
        );
        self.spawner.spawn_self_stopping(renewal);
        let release = LocalRelease {
            engine: Arc::clone(&self.engine),
            key: self.key.clone(),
            owner,
            delete_value: self.delete_on_unlock,
            stop,
        };
        LockGuard::new(
            self.engine.store(),
            self.key.as_str(),
            token,
            signal,
            Box::new(release),
        )
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
            let until = match self.attempt("lock")? {
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
        Ok(self.attempt("try_lock")?.ok())
    }
}

/// Renews every third of the TTL, and checks at once when any lock changes, until released.
async fn renew<S: Storage>(
    engine: Arc<Engine<S>>,
    key: Key,
    owner: u64,
    ttl: Duration,
    lost: LostNotifier,
    mut stopped: oneshot::Receiver<()>,
    closing: tokio_util::sync::CancellationToken,
) {
    let period = ttl / 3;
    loop {
        let changed = engine.lock_changed.notified();
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            () = closing.cancelled() => {
                lost.notify(LostReason::StoreClosed);
                return;
            }
            () = changed => {}
            () = tokio::time::sleep(period) => {}
        }
        match engine.renew(&key, owner, ttl) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                lost.notify(reason);
                return;
            }
            Err(err) => {
                lost.notify(LostReason::RenewalFailed(err.to_string()));
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
    stop: oneshot::Sender<()>,
}

#[async_trait]
impl<S: Storage> LockRelease for LocalRelease<S> {
    async fn release(self: Box<Self>) -> Result<()> {
        let LocalRelease {
            engine,
            key,
            owner,
            delete_value,
            stop,
        } = *self;
        // The renewal task may already have ended after a loss; that is fine.
        let _ = stop.send(());
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
