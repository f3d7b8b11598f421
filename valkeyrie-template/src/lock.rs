//! Locks: acquisition, renewal, the lost signal and release.
//!
//! A real backend acquires through its server's primitive (a lease, a session, an
//! ephemeral node, a conditional write), describes the acquisition as a
//! [`Hold`](valkeyrie_core::raw::Hold) — its renewal step, optionally a future that sees the lock
//! go — and hands it to [`Spawner::hold`](valkeyrie_core::raw::Spawner::hold): the handle's
//! lock-holding driver renews it and reports a loss. The guard's fencing token comes from
//! the server (a revision, a sequence number, a version). The stand-in server's locks
//! already do all that; the guard is re-issued under our store name
//! ([`Held::mirroring`]).

use std::time::Duration;

use async_trait::async_trait;
use valkeyrie_core::raw::{Held, LockRelease, Spawner};
use valkeyrie_core::{LockGuard, Locker, Result};

use crate::error::map_error;
use crate::TEMPLATE;

/// A lock on one key of the template store.
pub(crate) struct TemplateLocker {
    pub(crate) inner: Box<dyn Locker>,
    pub(crate) request_timeout: Duration,
    pub(crate) spawner: Spawner,
}

impl TemplateLocker {
    fn wrap(&self, guard: LockGuard) -> LockGuard {
        let (token, lost) = (guard.fencing_token(), guard.lost_signal());
        LockGuard::new(
            TEMPLATE,
            self.key(),
            token,
            Held::mirroring(lost, self.spawner.clone()),
            Box::new(Release {
                guard,
                timeout: self.request_timeout,
            }),
        )
    }
}

#[async_trait]
impl Locker for TemplateLocker {
    fn key(&self) -> &str {
        self.inner.key()
    }

    fn store_name(&self) -> &'static str {
        TEMPLATE
    }

    async fn lock(&self) -> Result<LockGuard> {
        let guard = self.inner.lock().await.map_err(|e| map_error(self.key(), e))?;
        Ok(self.wrap(guard))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let guard = self.inner.try_lock().await.map_err(|e| map_error(self.key(), e))?;
        Ok(guard.map(|guard| self.wrap(guard)))
    }
}

/// Releases the server-side lock within the request timeout.
struct Release {
    guard: LockGuard,
    timeout: Duration,
}

#[async_trait]
impl LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        let key = self.guard.key().to_owned();
        match tokio::time::timeout(self.timeout, self.guard.unlock()).await {
            Ok(result) => result.map_err(|e| map_error(&key, e)),
            Err(_) => Err(valkeyrie_core::Error::timeout(TEMPLATE, key, self.timeout)),
        }
    }
}
