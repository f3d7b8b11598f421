//! [`Layered`]: a target whose handles carry every layer of [`crate::layers`] and one
//! written the way a user would, so that the whole suite checks that layers keep the
//! semantics of the store below them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::TestTarget;
use crate::error::Result;
use crate::handle::Kv;
use crate::layers::{Call, ConcurrencyLimitLayer, Intercept, MetricsLayer, Next, RetryLayer, TimeoutLayer};
use crate::raw::local::LockRevocation;
use crate::store::Store;

/// `target`'s handles, each wrapped as an application would wrap it: a concurrency limit,
/// a deadline per attempt, retries, metrics, and [`ErrorsNameTheirCall`], a layer written
/// against the public [`Intercept`] trait. Run the suite on it next to the plain one:
///
/// ```ignore
/// mod layered {
///     valkeyrie_core::conformance_suite!(valkeyrie_core::testsuite::Layered(super::Target));
/// }
/// ```
#[derive(Debug)]
pub struct Layered<T>(pub T);

#[async_trait]
impl<T: TestTarget> TestTarget for Layered<T> {
    async fn open(&self) -> Arc<dyn Store> {
        // Generous bounds: the suite's slowest single call (a 10 000-key batch on a remote
        // store) must not time out, and its many concurrent calls must not deadlock.
        Kv::from(self.0.open().await)
            .layer(ConcurrencyLimitLayer::new(256))
            .layer(TimeoutLayer::new(Duration::from_secs(60)))
            .layer(RetryLayer::new())
            .layer(MetricsLayer::new())
            .layer(ErrorsNameTheirCall)
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        self.0.revoke_lock(key, how).await;
    }

    fn expiry_slack(&self) -> Duration {
        self.0.expiry_slack()
    }
}

/// A user's layer: checks that every error reaching the top of the stack names the store
/// it came from, whichever layer or backend produced it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorsNameTheirCall;

impl Intercept for ErrorsNameTheirCall {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        let result = next.run().await;
        if let Err(err) = &result {
            assert_eq!(
                err.store(),
                call.store,
                "{} on {:?} failed with {err}",
                call.name,
                call.key
            );
        }
        result
    }
}
