//! [`Backoff`]: how long to wait before trying again, for every retry loop of the library
//! (watch feeders, lock waiters, renewals of a broken watch, write retries).
//!
//! Delays double from a first delay up to a ceiling, with random jitter so that many clients
//! failing together (a server restart) do not come back in step. The schedule itself is
//! [`backon`]'s exponential backoff; this type only fixes the shape every loop here uses and
//! sleeps on tokio's clock, so tests can pause time.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// An exponential backoff with jitter, without a limit on the number of attempts (the
/// caller bounds the total time, for example with a `retry_for` setting).
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use valkeyrie_core::raw::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
/// backoff.wait().await; // about 200 ms (give or take the jitter)
/// backoff.reset(); // after a success: the next failure waits the first delay again
/// # }
/// ```
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    ceiling: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling up to `ceiling`; each gets a random jitter of up to one
    /// more delay of the same size, so the waits stay between `first` and twice `ceiling`.
    pub fn new(first: Duration, ceiling: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(ceiling.max(first))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            ceiling: ceiling.max(first),
        }
    }

    /// The next delay of the schedule.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the schedule never ends; the ceiling stands in if it
        // ever did.
        self.delays.next().unwrap_or(self.ceiling)
    }

    /// Sleeps for the next delay. Cancel-safe: dropping the future skips that delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts the schedule again from the first delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_with_jitter() {
        let (first, ceiling) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut backoff = Backoff::new(first, ceiling);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for delay in &delays {
            assert!(*delay >= first && *delay <= ceiling * 2, "{delay:?} out of bounds");
        }
        assert!(delays[7] >= ceiling, "reaches the ceiling: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= first * 2, "starts again after a reset");
    }
}
