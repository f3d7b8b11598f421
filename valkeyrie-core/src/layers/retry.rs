//! [`RetryLayer`]: retries temporary failures with jittered backoff.

use std::time::Duration;

use tokio::time::Instant;

use super::{Call, CallKind, Intercept, Next};
use crate::error::{ErrorKind, Result};
use crate::raw::backoff::Backoff;

/// Retries a call that failed with a [temporary](crate::ErrorStatus::Temporary) error,
/// waiting a jittered, doubling delay between attempts, at most
/// [`max_attempts`](RetryLayer::max_attempts) attempts and
/// [`max_elapsed`](RetryLayer::max_elapsed) in all. An error it gives up on is returned
/// [persistent](crate::ErrorStatus::Persistent), saying how long it retried.
///
/// What it retries:
/// - reads, the opening of a watch or a list stream, and `new_lock`: on any temporary
///   error;
/// - writes: only on [`NotReachable`](crate::Error::NotReachable), which backends return
///   only when the request was never sent, so nothing was applied. A write that fails with
///   [`Timeout`](crate::Error::Timeout) or another temporary error may have been applied:
///   it is **returned as is**, never sent again. Settling it is the caller's to do, because
///   only the caller knows what "applied" means: read the key back (`kv.get`), and for a
///   compare-and-set, compare the index the put returned with the one read. A re-read inside
///   the layer could not tell a write of its own from a concurrent one of the same value.
///
/// It never retries a lock's wait (which waits by design), the items of an open stream, or
/// `close`. Place it inside a [`TimeoutLayer`](super::TimeoutLayer) of the whole call, or
/// outside one of each attempt; see the [module docs](super).
///
/// Delays start at 100 ms and double up to 2 s, with jitter; the clock is tokio's
/// monotonic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLayer {
    max_attempts: u32,
    max_elapsed: Duration,
    first_delay: Duration,
    max_delay: Duration,
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer {
            max_attempts: 4,
            max_elapsed: Duration::from_secs(10),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryLayer {
    /// At most 4 attempts within 10 s, delays from 100 ms up to 2 s.
    pub fn new() -> Self {
        RetryLayer::default()
    }

    /// At most `attempts` attempts in all, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// No new attempt starts later than `elapsed` after the first one started.
    #[must_use]
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// The first delay, doubling after each attempt up to `max` (plus jitter).
    #[must_use]
    pub fn delays(mut self, first: Duration, max: Duration) -> Self {
        self.first_delay = first;
        self.max_delay = max.max(first);
        self
    }

    /// Whether an error of this call may be retried.
    fn retries(call: &Call<'_>, kind: ErrorKind, temporary: bool) -> bool {
        match call.kind {
            CallKind::Write => kind == ErrorKind::NotReachable,
            _ => temporary,
        }
    }
}

impl Intercept for RetryLayer {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        let started = Instant::now();
        // Built at the first failure: most calls succeed at once and need no schedule.
        let mut backoff = None;
        let mut attempts = 1;
        loop {
            let err = match next.run().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !Self::retries(&call, err.kind(), err.is_temporary()) {
                return Err(err);
            }
            let delay = backoff
                .get_or_insert_with(|| Backoff::new(self.first_delay, self.max_delay))
                .next_delay();
            if attempts >= self.max_attempts || started.elapsed() + delay > self.max_elapsed {
                return Err(err.persisted(started.elapsed()));
            }
            tracing::debug!(store = call.store, call = call.name, key = call.key, error = %err, ?delay, "retrying");
            tokio::time::sleep(delay).await;
            attempts += 1;
        }
    }
}
