//! Background work owned by one store handle.
//!
//! Keep-alives, lock renewals and watch feeders run as tasks tied to the handle that
//! started them: [`Background::shutdown`] (called by `close`) and dropping the handle cancel
//! them all, so nothing outlives the store. [`Background::len`] counts live work (tasks,
//! held locks, open watch streams, cleanups under way), which the conformance suite uses to
//! prove that dropped watches and released locks leak nothing.
//!
//! Besides plain tasks, a handle has one lock-holding driver ([`Spawner::hold`], see
//! [`hold`](crate::raw::hold)) that keeps all of its locks, and cleanups a `Drop` starts
//! ([`Spawner::spawn_cleanup`]), which `close` waits for.

use std::future::Future;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use tokio_util::task::TaskTracker;

use crate::raw::hold::{start_holding, start_keeping, Driver, Held, Hold};

/// The tasks of one store handle, cancelled together.
#[derive(Debug, Default)]
pub struct Background {
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Per-handle service tasks (the lock-holding driver): waited for, not counted.
    services: TaskTracker,
    driver: Arc<OnceLock<Driver>>,
    closing: AtomicBool,
    /// How far closing the handle got; held by the one `close` running.
    close_phase: tokio::sync::Mutex<ClosePhase>,
    /// Live work that is not a task (watch streams, held locks): counted, never waited for.
    tracked: Arc<AtomicUsize>,
}

/// How far closing a handle got: a `close` dropped halfway leaves the rest to the next one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ClosePhase {
    /// Nothing shut down yet (or a shutdown was interrupted).
    #[default]
    Open,
    /// The background work ended; the connection is not released yet.
    Drained,
    /// The connection was released (or its release ran to an error).
    Closed,
}

impl Background {
    /// An empty set of tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` on the current Tokio runtime; it is dropped at its next `.await`
    /// when the handle closes. Must be called from within a runtime.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawner().spawn(task);
    }

    /// A cloneable way to spawn onto this set, for lockers and streams that outlive the call
    /// that created them. Unlike the `Background` itself, dropping a spawner cancels nothing.
    pub fn spawner(&self) -> Spawner {
        Spawner {
            cancel: self.cancel.clone(),
            tracker: self.tracker.clone(),
            services: self.services.clone(),
            driver: Arc::clone(&self.driver),
            tracked: Arc::clone(&self.tracked),
        }
    }

    /// Resolves when the handle is closing; for tasks that must clean up before ending.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// A token cancelled when the handle closes, for tasks that own their state.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Closes the handle: from now on [`is_closed`](Background::is_closed) is true, then
    /// [`shutdown`](Background::shutdown) ends the background work, then `release` (the
    /// backend's own close) runs once, and its outcome is returned. A later close returns
    /// `Ok(())` without running anything.
    ///
    /// Cancel-safe: a close dropped halfway leaves the handle refusing calls, and the next
    /// close finishes what it did not (the shutdown, or `release`, again from its start, so
    /// `release` must tolerate a run that was dropped before it ended). Concurrent closes
    /// run one after the other.
    pub async fn close<F, Fut>(&self, release: F) -> crate::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = crate::Result<()>>,
    {
        self.closing.store(true, Ordering::Release);
        let mut phase = self.close_phase.lock().await;
        if *phase == ClosePhase::Open {
            self.shutdown().await;
            *phase = ClosePhase::Drained;
        }
        if *phase == ClosePhase::Closed {
            return Ok(());
        }
        let released = release().await;
        *phase = ClosePhase::Closed;
        released
    }

    /// Whether the handle is closing or closed (or dropped).
    pub fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire) || self.cancel.is_cancelled()
    }

    /// Number of tasks still running, plus tracked work (see [`Spawner::track`]).
    pub fn len(&self) -> usize {
        self.tracker.len() + self.tracked.load(Ordering::Acquire)
    }

    /// Whether no task runs and no tracked work is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels every task and waits until they have ended, including cleanups under way
    /// and the lock-holding driver's releases of the locks still held.
    ///
    /// Cancel-safe: dropping the future leaves the tasks cancelled; they end by themselves.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.services.close();
        self.tracker.wait().await;
        self.services.wait().await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Spawns tasks into a [`Background`] without owning it.
#[derive(Debug, Clone)]
pub struct Spawner {
    cancel: CancellationToken,
    tracker: TaskTracker,
    services: TaskTracker,
    driver: Arc<OnceLock<Driver>>,
    tracked: Arc<AtomicUsize>,
}

/// One unit of tracked work (see [`Spawner::track`]); dropping it ends it.
#[derive(Debug)]
pub struct TrackedWork {
    tracked: Arc<AtomicUsize>,
}

impl Drop for TrackedWork {
    fn drop(&mut self) {
        self.tracked.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Spawner {
    /// Spawns `task`; it is dropped at its next `.await` when the handle closes.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs `cleanup` in the background for a value being dropped (a released guard, an
    /// abandoned attempt): counted in [`Background::len`], not cancelled by close, which
    /// waits for it — so a cleanup must be bounded by a request deadline. Without a runtime
    /// (the program is shutting down) it does not run, and what it would have removed is
    /// left to expire by its TTL.
    pub fn spawn_cleanup<F>(&self, cleanup: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tracker.spawn(cleanup);
        }
    }

    /// Keeps the acquisition `hold` describes held, on the handle's one lock-holding driver
    /// (started by the first call); see [`hold`](crate::raw::hold). Must be called from within a
    /// runtime. On a closed handle the returned lock is already lost
    /// ([`LostReason::StoreClosed`](crate::LostReason::StoreClosed)).
    pub fn hold(&self, hold: Hold) -> Held {
        let driver = self.driver.get_or_init(|| Driver::start(self));
        start_holding(self, driver, hold)
    }

    /// Renews the `keep_alive` write `hold` describes on the handle's lock-holding driver
    /// until its renewal answers [`Renewal::Lost`](crate::raw::Renewal::Lost) (the key was
    /// rewritten or deleted), fails for good, or the handle closes; see
    /// [`hold`](crate::raw::hold). Must be called from within a runtime.
    pub fn keep_alive(&self, hold: Hold) {
        let driver = self.driver.get_or_init(|| Driver::start(self));
        start_keeping(self, driver, hold);
    }

    /// Spawns a per-handle service task (the lock-holding driver, a backend's connection
    /// supervisor): waited for by `shutdown`, not counted in [`Background::len`]; it must
    /// watch [`Spawner::token`] and end by itself.
    pub fn spawn_service<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.services.spawn(task);
    }

    /// A token cancelled when the handle closes.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Counts as one unit of background work until dropped, for work that is not a task (a
    /// live watch stream), so [`Background::len`] shows it. `shutdown` does not wait for it:
    /// the owner of the stream decides when it goes.
    pub fn track(&self) -> TrackedWork {
        self.tracked.fetch_add(1, Ordering::AcqRel);
        TrackedWork {
            tracked: Arc::clone(&self.tracked),
        }
    }

    /// Whether the handle is closed.
    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A close dropped while the background work winds down, or while the connection is
    /// being released, leaves the handle closed to calls; the next close finishes the job,
    /// releasing the connection exactly once.
    #[tokio::test(start_paused = true)]
    async fn a_close_dropped_halfway_is_finished_by_the_next() {
        let background = Background::new();
        let released = AtomicUsize::new(0);
        let slow_release = AtomicBool::new(true);
        let release = || async {
            if slow_release.swap(false, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            released.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        // A cleanup that takes 2 s to end: the shutdown waits for it.
        background
            .spawner()
            .spawn_cleanup(tokio::time::sleep(Duration::from_secs(2)));

        let during_shutdown = tokio::time::timeout(Duration::from_secs(1), background.close(release)).await;
        assert!(during_shutdown.is_err(), "dropped while the cleanup runs");
        assert!(background.is_closed(), "calls are refused from the first close on");
        assert_eq!(background.len(), 1, "the cleanup is still winding down");

        let during_release = tokio::time::timeout(Duration::from_secs(3), background.close(release)).await;
        assert!(during_release.is_err(), "dropped while the connection is released");
        assert_eq!(background.len(), 0, "the second close finished the shutdown");
        assert_eq!(released.load(Ordering::SeqCst), 0);

        background.close(release).await.unwrap();
        assert_eq!(
            released.load(Ordering::SeqCst),
            1,
            "the third close releases the connection"
        );
        background.close(release).await.unwrap();
        assert_eq!(released.load(Ordering::SeqCst), 1, "once");
    }
}
