//! Distributed locks: [`Locker`], the [`LockGuard`] a successful `lock()` returns, and its
//! [`LostSignal`].
//!
//! The layering follows etcd's `concurrency` package: a backend holds the lock through a
//! session, lease or TTL record that it renews in the background; losing that (expiry,
//! record deleted, connection gone, store closed) is one clear signal, [`LockGuard::lost`].
//! Each acquisition also gets a *fencing token*, a number that strictly increases with every
//! acquisition of the key, across processes: pass it to the resource you protect so it can
//! refuse a stale holder's writes.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::{LockOptions, MemoryStore, Store};
//!
//! let store = MemoryStore::new();
//! let locker = store.new_lock("jobs/nightly", LockOptions::with_value("node-1")).await?;
//! let guard = locker.lock().await?;
//! println!("holding with fencing token {}", guard.fencing_token());
//! // ... work, racing `guard.lost()` if it may take longer than the TTL ...
//! guard.unlock().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::error::{Error, LostReason, Result};
use crate::txn::Fence;

/// A lock on one key, created by [`Store::new_lock`](crate::Store::new_lock). It holds
/// nothing by itself: each successful [`lock`](Locker::lock) is one acquisition, released
/// through its guard. One `Locker` can lock again after the guard is released.
#[async_trait]
pub trait Locker: Send + Sync {
    /// The normalized key of the lock.
    fn key(&self) -> &str;

    /// Waits until the lock is held and returns its guard.
    ///
    /// Cancel-safe: dropping the future gives up waiting and removes whatever the attempt
    /// left on the server. Calling `lock` again while a guard from this `Locker` is held
    /// waits like any other contender.
    async fn lock(&self) -> Result<LockGuard>;

    /// Takes the lock if it is free right now; `Ok(None)` when someone else holds it.
    async fn try_lock(&self) -> Result<Option<LockGuard>>;

    /// [`lock`](Locker::lock), giving up with [`Error::Timeout`] after `timeout`.
    async fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        match tokio::time::timeout(timeout, self.lock()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                store: self.store_name(),
                call: "lock",
                key: self.key().to_owned(),
                after: timeout,
            }),
        }
    }

    /// The name of the store the lock lives in.
    fn store_name(&self) -> &'static str;
}

/// How a backend takes its lock: one attempt that either waits until the lock is held or
/// gives up when it is busy. Every `Acquire` is a [`Locker`], so backends write the
/// attempt once instead of repeating `lock` and `try_lock` around it.
#[async_trait]
pub trait Acquire: Send + Sync {
    /// The normalized key of the lock.
    fn key(&self) -> &str;

    /// The name of the store the lock lives in.
    fn store_name(&self) -> &'static str;

    /// One acquisition for `call` (`"lock"` or `"try_lock"`, for errors). With `wait`, it
    /// returns once the lock is held (`Some`); without, `None` when someone else holds it.
    /// Cancel-safe, as [`Locker::lock`].
    async fn acquire(&self, call: &'static str, wait: bool) -> Result<Option<LockGuard>>;
}

#[async_trait]
impl<T: Acquire> Locker for T {
    fn key(&self) -> &str {
        Acquire::key(self)
    }

    async fn lock(&self) -> Result<LockGuard> {
        match self.acquire("lock", true).await? {
            Some(guard) => Ok(guard),
            // `acquire` with `wait` returns only once the lock is held; a backend breaking
            // that gets an error naming the lock rather than a panic.
            None => Err(Error::CannotLock {
                store: Acquire::store_name(self),
                key: Acquire::key(self).to_owned(),
                reason: "the backend gave up waiting".into(),
            }),
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.acquire("try_lock", false).await
    }

    fn store_name(&self) -> &'static str {
        Acquire::store_name(self)
    }
}

/// Resolves when a held lock is no longer held, with the reason. Cloneable; every clone
/// sees the same reason.
///
/// Besides the reason the backend reports, the signal knows until when the lock is surely
/// held (the last confirmed renewal plus the TTL): past that moment it reports
/// [`LostReason::Expired`] even if the renewal task has not run, so a starved process never
/// believes it still holds a lock that someone else may have taken. The loss is final: a
/// renewal answered after the deadline (a server resuming from a pause) does not undo it.
#[derive(Debug, Clone)]
pub struct LostSignal {
    receiver: watch::Receiver<Option<LostReason>>,
    held_until: Arc<AtomicU64>,
}

/// The backend's side of a [`LostSignal`]: it reports the loss once and extends the
/// held-until deadline after each confirmed renewal. Dropping it without reporting means the
/// lock was released normally ([`LostReason::Released`]).
#[derive(Debug)]
pub struct LostNotifier {
    sender: watch::Sender<Option<LostReason>>,
    held_until: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A connected notifier and signal for one acquisition; the lock is held for `ttl` from now
/// unless the notifier extends it.
pub fn lost_signal(ttl: Duration) -> (LostNotifier, LostSignal) {
    let (sender, receiver) = watch::channel(None);
    let held_until = Arc::new(AtomicU64::new(0));
    let notifier = LostNotifier {
        sender,
        held_until: Arc::clone(&held_until),
    };
    notifier.extend(now_ms(), ttl);
    (notifier, LostSignal { receiver, held_until })
}

impl LostNotifier {
    /// Reports the loss; only the first reason is kept.
    pub fn notify(&self, reason: LostReason) {
        self.sender.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Records a confirmed renewal: the lock is held for `ttl` after `confirmed_at_ms` (Unix
    /// milliseconds, taken *before* the renewal request was sent). Returns `false`, and
    /// reports [`LostReason::Expired`], when the held-until deadline had already passed: the
    /// guard may have seen the loss, and the server may have let someone else in, so a late
    /// renewal (one answered after a pause, say) never makes the lock held again.
    pub fn held_for(&self, confirmed_at_ms: u64, ttl: Duration) -> bool {
        if self.extend(confirmed_at_ms, ttl) {
            true
        } else {
            self.notify(LostReason::Expired);
            false
        }
    }

    /// Moves the deadline to `ttl` after `confirmed_at_ms` unless it already passed.
    fn extend(&self, confirmed_at_ms: u64, ttl: Duration) -> bool {
        let until = confirmed_at_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut current = self.held_until.load(Ordering::Acquire);
        loop {
            // 0: the first deadline, set at acquisition.
            if current != 0 && now_ms() >= current {
                return false;
            }
            if until <= current {
                return true;
            }
            match self
                .held_until
                .compare_exchange_weak(current, until, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether the held-until deadline passed: the lock counts as lost whatever a renewal
    /// answers later, and the holder task should stop renewing it.
    pub fn past_deadline(&self) -> bool {
        now_ms() >= self.held_until.load(Ordering::Acquire)
    }

    /// The current Unix time in milliseconds, to pass to [`LostNotifier::held_for`].
    pub fn now_ms() -> u64 {
        now_ms()
    }

    /// Whether a loss was already reported.
    pub fn is_lost(&self) -> bool {
        self.sender.borrow().is_some()
    }
}

impl Drop for LostNotifier {
    fn drop(&mut self) {
        self.notify(LostReason::Released);
    }
}

impl LostSignal {
    /// Waits until the lock is lost or released and returns why. Cancel-safe.
    pub async fn lost(&self) -> LostReason {
        let mut receiver = self.receiver.clone();
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            let left = self.held_until.load(Ordering::Acquire).saturating_sub(now_ms()).max(1);
            tokio::select! {
                changed = receiver.changed() => {
                    if changed.is_err() {
                        // The notifier is gone; its drop stored a reason unless it was never used.
                        return self.reason().unwrap_or(LostReason::Released);
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(left)) => {}
            }
        }
    }

    /// The reason, if the lock is already lost or released, or its held-until deadline passed.
    pub fn reason(&self) -> Option<LostReason> {
        if let Some(reason) = self.receiver.borrow().clone() {
            return Some(reason);
        }
        (now_ms() >= self.held_until.load(Ordering::Acquire)).then_some(LostReason::Expired)
    }
}

/// The holder side of one acquisition, owned by the backend's renewal (or monitoring) task:
/// it extends the held-until deadline, reports a loss — unless a release has begun, so a
/// release is never mistaken for a loss — and learns when to stop.
#[derive(Debug)]
pub struct Holding {
    lost: LostNotifier,
    releasing: Arc<AtomicBool>,
    stopped: oneshot::Receiver<()>,
}

/// The release side of one acquisition, owned by the backend's [`LockRelease`]: beginning
/// the release stops the holder task and silences its loss reports.
#[derive(Debug)]
pub struct Releasing {
    releasing: Arc<AtomicBool>,
    stop: oneshot::Sender<()>,
}

/// The three parts of one acquisition: the holder task's [`Holding`], the release's
/// [`Releasing`], and the guard's [`LostSignal`]. The lock counts as held for `ttl` from now.
pub fn holding(ttl: Duration) -> (Holding, Releasing, LostSignal) {
    let (lost, signal) = lost_signal(ttl);
    let releasing = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel();
    let holding = Holding {
        lost,
        releasing: Arc::clone(&releasing),
        stopped,
    };
    (holding, Releasing { releasing, stop }, signal)
}

impl Holding {
    /// Reports the loss, unless a release has begun.
    pub fn lose(&self, reason: LostReason) {
        if !self.releasing.load(Ordering::Acquire) {
            self.lost.notify(reason);
        }
    }

    /// Records a confirmed renewal; `false` when it came too late to count (the deadline had
    /// passed: the loss is reported and the holder task should give the lock up). See
    /// [`LostNotifier::held_for`].
    pub fn held_for(&self, confirmed_at_ms: u64, ttl: Duration) -> bool {
        if self.lost.extend(confirmed_at_ms, ttl) {
            true
        } else {
            self.lose(LostReason::Expired);
            false
        }
    }

    /// Whether the held-until deadline passed with no renewal confirmed in time: the lock is
    /// lost (this reports it) and the holder task should stop renewing and give it up, so
    /// that a server that comes back late never keeps it for a holder that has let go.
    pub fn expired(&self) -> bool {
        if self.lost.past_deadline() {
            self.lose(LostReason::Expired);
            true
        } else {
            false
        }
    }

    /// Resolves when the release began (or the release was dropped). Cancel-safe.
    pub async fn stopped(&mut self) {
        let _ = (&mut self.stopped).await;
    }
}

impl Releasing {
    /// Begins the release: from now on the holder task reports no loss, and it stops.
    pub fn begin(self) {
        self.releasing.store(true, Ordering::Release);
        let _ = self.stop.send(());
    }
}

/// How a backend releases one acquisition; called once, by [`LockGuard::unlock`] or in the
/// background when the guard is dropped.
#[async_trait]
pub trait LockRelease: Send + 'static {
    /// Releases the lock (and deletes its value when `delete_on_unlock` was set).
    async fn release(self: Box<Self>) -> Result<()>;
}

/// Proof that a lock is held. Release it with [`unlock`](LockGuard::unlock); dropping the
/// guard releases it in the background (errors are then only logged).
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    store: &'static str,
    key: String,
    fencing_token: u64,
    lost: LostSignal,
    fence_record: Option<String>,
    /// Behind a mutex only so the guard is `Sync` (fenced writes borrow it across an
    /// await); it is taken once, by `unlock` or `drop`, both with `&mut self`.
    release: std::sync::Mutex<Option<Box<dyn LockRelease>>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.lost.reason())
            .finish()
    }
}

impl LockGuard {
    /// Builds the guard of one acquisition; for backends.
    pub fn new(
        store: &'static str,
        key: impl Into<String>,
        fencing_token: u64,
        lost: LostSignal,
        release: Box<dyn LockRelease>,
    ) -> Self {
        LockGuard {
            store,
            key: key.into(),
            fencing_token,
            lost,
            fence_record: None,
            release: std::sync::Mutex::new(Some(release)),
        }
    }

    /// Names the backend's own record of this acquisition, carried by [`LockGuard::fence`],
    /// for backends whose lock key and fencing token alone do not identify it.
    pub fn with_fence_record(mut self, record: impl Into<String>) -> Self {
        self.fence_record = Some(record.into());
        self
    }

    /// What the store checks to accept a write only while this acquisition holds the lock:
    /// see [`Transaction::when_held`](crate::Transaction::when_held) and
    /// [`Store::put_if_held`](crate::Store::put_if_held).
    pub fn fence(&self) -> Fence {
        Fence::new(
            self.store,
            self.key.clone(),
            self.fencing_token,
            self.fence_record.clone(),
        )
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A number that strictly increases with every acquisition of this key, across
    /// processes and store handles.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The signal that resolves when this lock is lost; clone it into the task doing the work.
    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    /// Waits until the lock is lost and returns why. Cancel-safe.
    pub async fn lost(&self) -> LostReason {
        self.lost.lost().await
    }

    /// [`Error::LockLost`] if the lock was lost, so work can check before a critical step.
    pub fn ensure_held(&self) -> Result<()> {
        match self.lost.reason() {
            None => Ok(()),
            Some(reason) => Err(Error::LockLost {
                store: self.store,
                key: self.key.clone(),
                reason,
            }),
        }
    }

    fn take_release(&mut self) -> Option<Box<dyn LockRelease>> {
        self.release
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Releases the lock and reports the outcome.
    pub async fn unlock(mut self) -> Result<()> {
        match self.take_release() {
            Some(release) => release.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(release) = self.take_release() else {
            return;
        };
        // Without a runtime (the program is shutting down) the lock is left to expire by TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key) = (self.store, self.key.clone());
            runtime.spawn(async move {
                if let Err(err) = release.release().await {
                    tracing::warn!(store, key, error = %err, "releasing a dropped lock guard failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_drop_means_released() {
        let ttl = Duration::from_secs(60);
        let (notifier, signal) = lost_signal(ttl);
        assert_eq!(signal.reason(), None);
        notifier.notify(LostReason::RecordDeleted);
        notifier.notify(LostReason::Expired);
        assert_eq!(signal.lost().await, LostReason::RecordDeleted);

        let (notifier, signal) = lost_signal(ttl);
        drop(notifier);
        assert_eq!(signal.lost().await, LostReason::Released);
    }

    #[tokio::test]
    async fn an_unrenewed_lock_counts_as_expired_even_if_nobody_says_so() {
        let (notifier, signal) = lost_signal(Duration::from_millis(100));
        assert_eq!(signal.reason(), None);
        let reason = tokio::time::timeout(Duration::from_secs(2), signal.lost()).await;
        assert_eq!(
            reason.ok(),
            Some(LostReason::Expired),
            "lost() resolves at the deadline"
        );
        assert!(
            !notifier.held_for(LostNotifier::now_ms(), Duration::from_secs(60)),
            "a renewal confirmed after the deadline does not count"
        );
        assert_eq!(
            signal.reason(),
            Some(LostReason::Expired),
            "once past its deadline a lock stays lost, whatever a late renewal answers"
        );
    }

    #[tokio::test]
    async fn a_renewal_in_time_extends_the_deadline() {
        let (holding, _releasing, signal) = holding(Duration::from_millis(300));
        assert!(holding.held_for(LostNotifier::now_ms(), Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(signal.reason(), None, "held past the first deadline after a renewal");
        assert!(!holding.expired());
    }

    #[tokio::test]
    async fn the_holder_learns_the_deadline_passed() {
        let (holding, _releasing, signal) = holding(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(holding.expired(), "the holder task sees the deadline pass and gives up");
        assert_eq!(signal.lost().await, LostReason::Expired);
    }
}
