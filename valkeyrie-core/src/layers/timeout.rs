//! [`TimeoutLayer`]: a deadline for each call.

use std::time::Duration;

use super::{Call, Intercept, Next};
use crate::error::Result;
use crate::raw::deadline;

/// Gives each call at most `timeout` (on tokio's monotonic clock), then fails it with
/// [`Error::Timeout`](crate::Error::Timeout): a read may simply be tried again, a write so
/// cut short may or may not have been applied.
///
/// It bounds single calls and the opening of a watch or a list stream. It does not bound a
/// lock's wait (use `kv.lock(key).timeout(d)`), the lifetime of an open stream, or `close`.
/// Below a [`RetryLayer`](super::RetryLayer) it bounds each attempt; above it, the whole
/// call with its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A deadline of `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl Intercept for TimeoutLayer {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        deadline::within(self.timeout, call.store, call.key, next.run())
            .await
            .map_err(|err| err.in_call(call.name, call.key))
    }
}
