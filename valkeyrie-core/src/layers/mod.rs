//! Layers: behaviour wrapped around every call of a handle, composed by the user with
//! [`Kv::layer`](crate::Kv::layer).
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use std::time::Duration;
//! use valkeyrie_core::layers::{ConcurrencyLimitLayer, RetryLayer, TimeoutLayer};
//!
//! let kv = valkeyrie_core::open("memory://")
//!     .await?
//!     .layer(ConcurrencyLimitLayer::new(64))
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .layer(RetryLayer::new());
//! kv.put("config/mode", "blue").await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! The layer added last is the outermost: above, a call takes a concurrency permit, then
//! each attempt of the retry gets its own 2 s deadline. That order (limit, timeout, retry,
//! then metrics outermost) is the one to start from.
//!
//! # What a layer sees
//!
//! A layer wraps the single calls of [`Store`] ([`CallKind::Read`], [`CallKind::Write`]),
//! the opening of a watch or a list stream ([`CallKind::OpenStream`]: until the watch is
//! established or the first page is read, not the stream's lifetime) and `new_lock`
//! ([`CallKind::NewLock`]). It does not see a lock's wait ([`Locker::lock`](crate::Locker)
//! waits by design and has its own timeout), stream items after the first, or `close`.
//! The shared checks and the tracing span of every call stay below all layers: an invalid
//! key is refused before any layer's attempt reaches a server, and each retry is its own
//! span.
//!
//! # Writing a layer
//!
//! Most layers are an [`Intercept`]: one generic method that gets the call's description
//! and a [`Next`] that runs the rest of the stack (as often as the layer likes):
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use valkeyrie_core::layers::{Call, Intercept, Next};
//!
//! /// Counts the writes.
//! #[derive(Clone, Default)]
//! struct CountWrites(Arc<AtomicU64>);
//!
//! impl Intercept for CountWrites {
//!     async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>)
//!         -> valkeyrie_core::Result<T> {
//!         if call.kind.is_write() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!         next.run().await
//!     }
//! }
//!
//! let writes = CountWrites::default();
//! let kv = valkeyrie_core::open("memory://").await?.layer(writes.clone());
//! kv.put("a", "1").await?;
//! kv.get("a").await?;
//! assert_eq!(writes.0.load(Ordering::Relaxed), 1);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! A layer that needs more (a different store underneath, say) implements [`Layer`]
//! directly: it gets the `Arc<dyn Store>` below it and returns the one above.

mod concurrency_limit;
mod intercepted;
#[cfg(feature = "metrics")]
mod metrics;
mod retry;
mod timeout;

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use concurrency_limit::ConcurrencyLimitLayer;
#[cfg(feature = "metrics")]
pub use metrics::MetricsLayer;
pub use retry::RetryLayer;
pub use timeout::TimeoutLayer;

use crate::error::Result;
use crate::store::Store;

/// Wraps a store in another: what [`Kv::layer`](crate::Kv::layer) applies. Every
/// [`Intercept`] that is `Clone` is a `Layer`.
pub trait Layer: Send + Sync + 'static {
    /// The store above `inner`.
    fn layer(&self, inner: Arc<dyn Store>) -> Arc<dyn Store>;
}

impl<I: Intercept + Clone> Layer for I {
    fn layer(&self, inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(intercepted::Intercepted::new(inner, self.clone()))
    }
}

/// A layer written as one method around every call it sees; see the [module docs](self).
pub trait Intercept: Send + Sync + 'static {
    /// Runs `call`: usually some work around `next.run().await`, which runs the rest of the
    /// stack and may be run again (a retry) or not at all (a refusal). Implement it as an
    /// `async fn` returning `Result<T>`; its future must be `Send`.
    ///
    /// Cancel safety: the returned future is dropped when the caller drops the call; it
    /// must leave nothing behind that outlives it.
    fn intercept<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> impl Future<Output = Result<T>> + Send + 'a;
}

/// The call a layer intercepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Call<'a> {
    /// The store's registered name, such as `"etcd"`.
    pub store: &'static str,
    /// The [`Store`] method, such as `"get"` or `"watch_tree"`.
    pub name: &'static str,
    /// The key, directory or first key the call concerns, as the caller gave it (empty
    /// for a call on no key). For logs; metrics must not use it as a label.
    pub key: &'a str,
    /// What sort of call it is.
    pub kind: CallKind,
}

/// What sort of call a layer sees, which decides, for example, whether a retry is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// A read: `get`, `exists`, `list`, `get_many`. Running it again is harmless.
    Read,
    /// A write: `put`, `delete`, `delete_tree`, `atomic_put`, `atomic_delete`, `commit`,
    /// `put_many`, `delete_many`, `put_if_held`, `delete_if_held`. A write that failed
    /// after it was sent may have been applied.
    Write,
    /// Opening a watch (until it is established) or a list stream (until its first page is
    /// read). Running it again opens a new stream.
    OpenStream,
    /// `new_lock`, which sends nothing; the lock's wait is not a call layers see.
    NewLock,
}

impl CallKind {
    /// Whether the call writes.
    pub fn is_write(self) -> bool {
        self == CallKind::Write
    }
}

/// The rest of the stack below a layer, for one call.
pub struct Next<'a, T> {
    run: &'a (dyn Fn() -> BoxFuture<'a, Result<T>> + Send + Sync + 'a),
}

impl<'a, T> Next<'a, T> {
    pub(crate) fn new(run: &'a (dyn Fn() -> BoxFuture<'a, Result<T>> + Send + Sync + 'a)) -> Self {
        Next { run }
    }

    /// Runs the call through the rest of the stack; each run is a new attempt.
    pub fn run(&self) -> BoxFuture<'a, Result<T>> {
        (self.run)()
    }
}

impl<T> Clone for Next<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Next<'_, T> {}

impl<T> std::fmt::Debug for Next<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

#[cfg(test)]
mod tests;
