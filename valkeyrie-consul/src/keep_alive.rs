//! The sessions `keep_alive` writes share. A plain TTL write gets a session of its own, as
//! the Go store does (`write.rs`); `keep_alive` writes of one TTL share one session per
//! handle instead, which the handle's lock-holding driver renews with one request per
//! period, however many keys it holds. Each key is still held by a `Behavior=delete`
//! session half its TTL long, so Go services see the layout they expect.
//!
//! Consul cannot tell which keys a session holds without reading them all, so a shared
//! session is renewed until its handle closes (it ends one TTL later, and every key it
//! still holds with it), or until Consul no longer knows it. A handle keeps at most one per
//! distinct `keep_alive` TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;
use valkeyrie_core::raw::{Hold, Renew, Renewal, Spawner};
use valkeyrie_core::{LostReason, Result};

use crate::client::ConsulClient;
use crate::write::ttl_session;

/// Shared session IDs by TTL; a tokio mutex, held while the first write of a TTL creates
/// its session, so concurrent writes do not create two.
type ByTtl = Arc<Mutex<HashMap<Duration, Arc<str>>>>;

/// The shared `keep_alive` sessions of one handle.
#[derive(Debug, Default)]
pub(crate) struct KeepAliveSessions {
    by_ttl: ByTtl,
}

impl KeepAliveSessions {
    /// The session for a `keep_alive` write of `ttl` (on `key`, which its errors name): the
    /// handle's shared one, created and handed to the driver through `spawner` by the first
    /// such write.
    ///
    /// Cancel-safe: dropped while creating, no session is shared (the one created, if any,
    /// holds nothing and ends unrenewed).
    pub(crate) async fn session(
        &self,
        client: &ConsulClient,
        spawner: &Spawner,
        key: &str,
        ttl: Duration,
    ) -> Result<Arc<str>> {
        let mut by_ttl = self.by_ttl.lock().await;
        if let Some(id) = by_ttl.get(&ttl) {
            return Ok(Arc::clone(id));
        }
        let id: Arc<str> = client.session_create(key, &ttl_session(ttl)).await?.into();
        by_ttl.insert(ttl, Arc::clone(&id));
        let renewal = SharedRenewal {
            client: client.clone(),
            by_ttl: Arc::clone(&self.by_ttl),
            ttl,
            id: Arc::clone(&id),
        };
        let period = (ttl / 4).max(Duration::from_millis(500));
        spawner.keep_alive(Hold::new(renewal, Instant::now(), ttl).every(period));
        Ok(id)
    }

    /// After a write found the shared session `id` of `ttl` gone (it ended while Consul
    /// was away): the next write of that TTL creates a new one.
    pub(crate) async fn forget(&self, ttl: Duration, id: &str) {
        forget(&self.by_ttl, ttl, id).await;
    }
}

/// Removes the shared session of `ttl` if it is still `id`.
async fn forget(by_ttl: &ByTtl, ttl: Duration, id: &str) {
    let mut by_ttl = by_ttl.lock().await;
    if by_ttl.get(&ttl).is_some_and(|shared| &**shared == id) {
        by_ttl.remove(&ttl);
    }
}

/// A shared session as the handle's driver renews it.
struct SharedRenewal {
    client: ConsulClient,
    by_ttl: ByTtl,
    ttl: Duration,
    id: Arc<str>,
}

#[async_trait]
impl Renew for SharedRenewal {
    async fn renew(&self) -> Result<Renewal> {
        if self.client.session_renew("", &self.id).await? {
            Ok(Renewal::Held(self.ttl))
        } else {
            // Ended already: its keys went with it.
            forget(&self.by_ttl, self.ttl, &self.id).await;
            Ok(Renewal::Lost(LostReason::Expired))
        }
    }

    /// No renewal was confirmed in time (or one failed for good): the next `keep_alive`
    /// write of this TTL gets a new session rather than one nobody renews.
    async fn give_up(&self) {
        forget(&self.by_ttl, self.ttl, &self.id).await;
    }
}
