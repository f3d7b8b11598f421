//! [`ConcurrencyLimitLayer`]: at most N calls in flight.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Call, Intercept, Next};
use crate::error::{Error, Result};

/// Lets at most `limit` calls (single calls and stream openings) of the handle and its
/// clones run at once; the others wait their turn, in order. An open watch or list stream
/// holds no permit, nor does a lock's wait or a held lock.
///
/// Cancel-safe: a call dropped while it waits for a permit leaves the queue.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimitLayer {
    /// At most `limit` calls in flight (at least 1).
    pub fn new(limit: usize) -> Self {
        ConcurrencyLimitLayer {
            permits: Arc::new(Semaphore::new(limit.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }
}

impl Intercept for ConcurrencyLimitLayer {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        // This layer never closes its semaphore; were it closed, the call is refused.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::closed(call.store, call.key).in_call(call.name, call.key))?;
        next.run().await
    }
}
