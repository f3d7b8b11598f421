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
//! let kv = valkeyrie_core::open("memory://").await?;
//! let guard = kv.lock("jobs/nightly").value("node-1").await?;
//! println!("holding with fencing token {}", guard.fencing_token());
//! // ... work, racing `guard.lost()` if it may take longer than the TTL ...
//! guard.unlock().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, LostReason, Result};
use crate::raw::background::Spawner;
use crate::raw::hold::{Held, Releasing};
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
            Err(_) => Err(Error::timeout(self.store_name(), self.key(), timeout).in_call("lock", self.key())),
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

    /// One acquisition. With `wait`, it returns once the lock is held (`Some`); without,
    /// `None` when someone else holds it. Its errors need not name the call: the store
    /// handle's `lock` or `try_lock` stamps them ([`Error::in_call`]). Cancel-safe, as [`Locker::lock`].
    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>>;
}

#[async_trait]
impl<T: Acquire> Locker for T {
    fn key(&self) -> &str {
        Acquire::key(self)
    }

    async fn lock(&self) -> Result<LockGuard> {
        match self.acquire(true).await? {
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
        self.acquire(false).await
    }

    fn store_name(&self) -> &'static str {
        Acquire::store_name(self)
    }
}

/// Resolves when a held lock is no longer held, with the reason. Cloneable; every clone
/// sees the same reason.
///
/// Besides the reason the backend reports, the signal knows until when the lock is surely
/// held (the last confirmed renewal plus the TTL, on tokio's monotonic clock): past that
/// moment it reports [`LostReason::Expired`] even if the renewal has not run, so a starved
/// process never believes it still holds a lock that someone else may have taken, and a
/// wall-clock step changes nothing. The loss is final: a renewal answered after the
/// deadline (a server resuming from a pause) does not undo it.
#[derive(Debug, Clone)]
pub struct LostSignal {
    receiver: watch::Receiver<Option<LostReason>>,
    held_until: Arc<Deadline>,
}

/// The holder's side of a [`LostSignal`]: it reports the loss once and extends the
/// held-until deadline after each confirmed renewal. Dropping it without reporting means the
/// lock was released normally ([`LostReason::Released`]).
#[derive(Debug)]
pub(crate) struct LostNotifier {
    sender: watch::Sender<Option<LostReason>>,
    held_until: Arc<Deadline>,
}

/// A moment on tokio's monotonic clock that only moves later, shared without a lock: kept
/// as nanoseconds after a base instant.
#[derive(Debug)]
struct Deadline {
    base: Instant,
    nanos: AtomicU64,
}

impl Deadline {
    /// The deadline `ttl` after `since`.
    fn new(since: Instant, ttl: Duration) -> Self {
        Deadline {
            base: since,
            nanos: AtomicU64::new(nanos(ttl)),
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    fn passed(&self) -> bool {
        self.now() >= self.nanos.load(Ordering::Acquire)
    }

    fn left(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire).saturating_sub(self.now()))
    }

    /// Moves the deadline to `ttl` after `since` unless it already passed; `false` if it had.
    fn extend(&self, since: Instant, ttl: Duration) -> bool {
        let until = nanos(since.saturating_duration_since(self.base)).saturating_add(nanos(ttl));
        let mut current = self.nanos.load(Ordering::Acquire);
        loop {
            if self.now() >= current {
                return false;
            }
            if until <= current {
                return true;
            }
            match self
                .nanos
                .compare_exchange_weak(current, until, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A connected notifier and signal for one acquisition, held for `ttl` after `since`.
pub(crate) fn lost_signal(since: Instant, ttl: Duration) -> (LostNotifier, LostSignal) {
    let (sender, receiver) = watch::channel(None);
    let held_until = Arc::new(Deadline::new(since, ttl));
    let notifier = LostNotifier {
        sender,
        held_until: Arc::clone(&held_until),
    };
    (notifier, LostSignal { receiver, held_until })
}

impl LostNotifier {
    /// Reports the loss; only the first reason is kept.
    pub(crate) fn notify(&self, reason: LostReason) {
        self.sender.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Records a confirmed renewal: the lock is held for `ttl` after `since` (taken *before*
    /// the renewal request was sent). `false` when the deadline had already passed: the
    /// guard may have seen the loss and the server may have let someone else in, so a late
    /// renewal never makes the lock held again.
    pub(crate) fn extend(&self, since: Instant, ttl: Duration) -> bool {
        self.held_until.extend(since, ttl)
    }

    /// Whether the held-until deadline passed: the lock counts as lost whatever a renewal
    /// answers later.
    pub(crate) fn past_deadline(&self) -> bool {
        self.held_until.passed()
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
            let left = self.held_until.left().max(Duration::from_millis(1));
            tokio::select! {
                changed = receiver.changed() => {
                    if changed.is_err() {
                        // The notifier is gone; its drop stored a reason unless it was never used.
                        return self.reason().unwrap_or(LostReason::Released);
                    }
                }
                () = tokio::time::sleep(left) => {}
            }
        }
    }

    /// The reason, if the lock is already lost or released, or its held-until deadline passed.
    pub fn reason(&self) -> Option<LostReason> {
        if let Some(reason) = self.receiver.borrow().clone() {
            return Some(reason);
        }
        self.held_until.passed().then_some(LostReason::Expired)
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
/// guard releases it in the background (errors are then only logged; `close` waits for it).
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    store: &'static str,
    key: String,
    fencing_token: u64,
    lost: LostSignal,
    fence_record: Option<String>,
    spawner: Spawner,
    /// Behind a mutex only so the guard is `Sync` (fenced writes borrow it across an
    /// await); it is taken once, by `unlock` or `drop`, both with `&mut self`.
    release: std::sync::Mutex<Option<(Releasing, Box<dyn LockRelease>)>>,
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
    /// Builds the guard of one acquisition the handle's driver holds; for backends. The
    /// guard begins the release (stopping the renewals, so the release is not reported as a
    /// loss) before it calls `release`.
    pub fn new(
        store: &'static str,
        key: impl Into<String>,
        fencing_token: u64,
        held: Held,
        release: Box<dyn LockRelease>,
    ) -> Self {
        let Held {
            signal,
            releasing,
            spawner,
        } = held;
        LockGuard {
            store,
            key: key.into(),
            fencing_token,
            lost: signal,
            fence_record: None,
            spawner,
            release: std::sync::Mutex::new(Some((releasing, release))),
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

    /// Begins the release (the renewals stop) and hands out the backend's release step.
    fn begin_release(&mut self) -> Option<Box<dyn LockRelease>> {
        let (releasing, release) = self
            .release
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        releasing.begin();
        Some(release)
    }

    /// Releases the lock and reports the outcome.
    ///
    /// Not cancel-safe in the sense of "nothing happened": the renewals stop at once, so
    /// dropping the future halfway leaves the lock to its TTL if the release request did not
    /// reach the server.
    pub async fn unlock(mut self) -> Result<()> {
        match self.begin_release() {
            Some(release) => release.release().await.map_err(|e| e.in_call("unlock", &self.key)),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(release) = self.begin_release() else {
            return;
        };
        let (store, key) = (self.store, self.key.clone());
        self.spawner.spawn_cleanup(async move {
            if let Err(err) = release.release().await.map_err(|e| e.in_call("unlock", &key)) {
                tracing::warn!(store, key, error = %err, "releasing a dropped lock guard failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(ttl: Duration) -> (LostNotifier, LostSignal) {
        lost_signal(Instant::now(), ttl)
    }

    #[tokio::test]
    async fn first_reason_wins_and_drop_means_released() {
        let ttl = Duration::from_secs(60);
        let (notifier, lost) = signal(ttl);
        assert_eq!(lost.reason(), None);
        notifier.notify(LostReason::RecordDeleted);
        notifier.notify(LostReason::Expired);
        assert_eq!(lost.lost().await, LostReason::RecordDeleted);

        let (notifier, lost) = signal(ttl);
        drop(notifier);
        assert_eq!(lost.lost().await, LostReason::Released);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrenewed_lock_counts_as_expired_even_if_nobody_says_so() {
        let (notifier, lost) = signal(Duration::from_millis(100));
        assert_eq!(lost.reason(), None);
        assert_eq!(
            lost.lost().await,
            LostReason::Expired,
            "lost() resolves at the deadline"
        );
        assert!(
            !notifier.extend(Instant::now(), Duration::from_secs(60)),
            "a renewal confirmed after the deadline does not count"
        );
        assert_eq!(
            lost.reason(),
            Some(LostReason::Expired),
            "once past its deadline a lock stays lost, whatever a late renewal answers"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_in_time_extends_the_deadline() {
        let (notifier, lost) = signal(Duration::from_millis(300));
        assert!(notifier.extend(Instant::now(), Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(lost.reason(), None, "held past the first deadline after a renewal");
        assert!(!notifier.past_deadline());
    }

    /// The deadline lives on tokio's clock: with time paused, the wall clock moving on (a
    /// step forward or backward) changes nothing, and only tokio's clock expires the lock.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_monotonic_clock_not_the_wall_clock() {
        let (_notifier, lost) = signal(Duration::from_secs(10));
        let wall = std::time::SystemTime::now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(wall.elapsed().is_ok_and(|d| d >= Duration::from_millis(20)));
        assert_eq!(lost.reason(), None, "wall time passing does not expire the lock");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(lost.reason(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(lost.reason(), Some(LostReason::Expired));
    }
}
