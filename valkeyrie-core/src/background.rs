//! Background work owned by one store handle.
//!
//! Keep-alives, lock renewals and watch feeders run as tasks tied to the handle that
//! started them: [`Background::shutdown`] (called by `close`) and dropping the handle cancel
//! them all, so nothing outlives the store. [`Background::len`] counts live tasks, which the
//! conformance suite uses to prove that dropped watches and released locks leak nothing.

use std::future::Future;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use tokio_util::task::TaskTracker;

/// The tasks of one store handle, cancelled together.
#[derive(Debug, Default)]
pub struct Background {
    cancel: CancellationToken,
    tracker: TaskTracker,
    closing: AtomicBool,
    /// Live work that is not a task (watch streams): counted, never waited for.
    tracked: Arc<AtomicUsize>,
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

    /// Marks the handle as closing; `true` only for the first caller, who then shuts down.
    pub fn begin_close(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
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

    /// Cancels every task and waits until they have ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
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

    /// Spawns `task` without cancelling it on close: the task must watch [`Spawner::token`]
    /// and end by itself, for tasks that report the close (a lock's lost signal) first.
    pub fn spawn_self_stopping<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
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
