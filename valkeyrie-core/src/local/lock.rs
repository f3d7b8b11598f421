//! Locks of the local engine: a lock record per key with owner, TTL and fencing token; the
//! holder's handle renews it every third of the TTL, checks it whenever any lock changes,
//! and reports a loss through the guard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

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
    pub(crate) sync_writes: bool,
    pub(crate) spawner: Spawner,
}

/// One acquisition as the renewal task and the release see it.
struct Hold<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    owner: u64,
    ttl: Duration,
    /// Set by the release before it clears the record, so the renewal task does not take
    /// the release for a loss.
    releasing: Arc<AtomicBool>,
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
            releasing: Arc::new(AtomicBool::new(false)),
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
        let (notifier, signal) = lost_signal(self.ttl);
        notifier.held_for(acquired_at, self.ttl);
        let (stop, stopped) = oneshot::channel();
        let release = LocalRelease {
            engine: Arc::clone(&hold.engine),
            key: hold.key.clone(),
            owner: hold.owner,
            delete_value: self.delete_on_unlock,
            releasing: Arc::clone(&hold.releasing),
            stop,
        };
        self.spawner
            .spawn_self_stopping(renew(hold, notifier, stopped, self.spawner.token()));
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
async fn renew<S: Storage>(
    hold: Hold<S>,
    lost: LostNotifier,
    mut stopped: oneshot::Receiver<()>,
    closing: CancellationToken,
) {
    let period = hold.ttl / 3;
    let mut next_renewal = tokio::time::Instant::now() + period;
    loop {
        let changed = hold.engine.lock_changed.notified();
        let due = tokio::select! {
            biased;
            _ = &mut stopped => return,
            () = closing.cancelled() => {
                lost.notify(LostReason::StoreClosed);
                return;
            }
            () = changed => false,
            () = tokio::time::sleep_until(next_renewal) => true,
        };
        let started = LostNotifier::now_ms();
        let outcome = if due {
            next_renewal = tokio::time::Instant::now() + period;
            hold.engine.renew(&hold.key, hold.owner, hold.ttl)
        } else {
            hold.engine.check(&hold.key, hold.owner)
        };
        match outcome {
            Ok(Ok(())) if due => lost.held_for(started, hold.ttl),
            Ok(Ok(())) => {}
            // A release in progress cleared the record: that is no loss.
            _ if hold.releasing.load(Ordering::Acquire) => return,
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
    releasing: Arc<AtomicBool>,
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
            releasing,
            stop,
        } = *self;
        releasing.store(true, Ordering::Release);
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
