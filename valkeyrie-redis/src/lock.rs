//! Locks as the Go store makes them: the lock is the key itself, holding the envelope of
//! the lock value with an expiry. The holder is whoever wrote the envelope's `LastIndex`,
//! which is also the fencing token (it grows with every write of the key). Renewal and
//! release are scripts that act only while that index is still there; a waiter polls the
//! lock script, sleeping until the holder's expiry at most 100 ms at a time, and is woken
//! at once when a lock of its own handle is released (waiters in other processes, Go ones
//! included, find the lock free at their next poll).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use valkeyrie_core::raw::{Hold, Key, LockRelease, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, LockGuard, LockOptions, Locker, LostReason, Result};

use crate::client::{index_of, millis, RedisClient};
use crate::scripts::write_args;
use crate::REDIS;

/// The longest a waiter sleeps between two attempts.
const POLL: Duration = Duration::from_millis(100);

/// A lock on one key.
pub(crate) struct RedisLocker {
    client: RedisClient,
    key: Key,
    value: Bytes,
    ttl: Duration,
    delete_on_unlock: bool,
    spawner: Spawner,
}

impl RedisLocker {
    pub(crate) fn new(client: RedisClient, key: Key, opts: LockOptions, spawner: Spawner) -> Self {
        RedisLocker {
            client,
            key,
            ttl: opts.ttl_or_default(),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            spawner,
        }
    }

    fn closed(&self) -> Error {
        Error::closed(REDIS, self.key.as_str())
    }

    /// One attempt: the guard, or how long the current holder's expiry is away.
    async fn attempt(&self) -> Result<std::result::Result<LockGuard, Duration>> {
        if self.spawner.is_closed() {
            return Err(self.closed());
        }
        let started = Instant::now();
        let status = self.run_lock_script().await?;
        if let Some(left) = status.strip_prefix("busy:") {
            return Ok(Err(Duration::from_millis(left.parse().unwrap_or(0))));
        }
        let Some(index) = index_of(&status) else {
            let reason = format!("unexpected lock script answer {status:?}");
            return Err(Error::backend(REDIS, self.key.as_str(), false, reason));
        };
        let acquisition = Acquisition {
            client: self.client.clone(),
            key: self.key.clone(),
            index,
            ttl: self.ttl,
            delete_value: self.delete_on_unlock,
        };
        let release = RedisRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            index,
            delete_value: self.delete_on_unlock,
        };
        let held = self.spawner.hold(Hold::new(acquisition, started, self.ttl));
        Ok(Ok(LockGuard::new(
            REDIS,
            self.key.as_str(),
            index,
            held,
            Box::new(release),
        )))
    }
}

impl RedisLocker {
    /// Runs the lock script. Dropping `lock()` (a timeout, a cancelled caller) mid-request
    /// must not leave an acquisition nobody holds: the request then finishes in the
    /// background ([`Unanswered`]), which releases what it took.
    async fn run_lock_script(&self) -> Result<String> {
        let client = self.client.clone();
        let key = self.key.clone();
        let args = Vec::from(write_args(self.client.encoding, &self.key, &self.value, Some(self.ttl)));
        let delete_value = self.delete_on_unlock;
        let request = async move {
            let keys = vec![key.to_string()];
            let (status, replicated) = client
                .eval_replicated(key.as_str(), &client.scripts.lock, keys, args)
                .await?;
            if let Err(err) = replicated {
                // Taken but maybe not replicated: give it back rather than leave a lock
                // nobody holds until its TTL.
                if let Some(index) = index_of(&status) {
                    let _ = unlock(&client, &key, index, delete_value).await;
                }
                return Err(err);
            }
            Ok(status)
        };
        let mut unanswered = Unanswered {
            request: Some(Box::pin(request)),
            client: self.client.clone(),
            key: self.key.clone(),
            delete_value: self.delete_on_unlock,
            spawner: self.spawner.clone(),
        };
        let request = unanswered.request.as_mut().map(|request| request.as_mut());
        let status = match request {
            Some(request) => request.await,
            // Set just above.
            None => return Err(Error::backend(REDIS, self.key.as_str(), true, "no lock request")),
        };
        unanswered.request = None;
        status
    }
}

/// A lock script sent and not answered yet. Dropped before the answer (the caller gave up),
/// it lets the request finish in the background and releases the lock if it was taken.
struct Unanswered {
    request: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + Send>>>,
    client: RedisClient,
    key: Key,
    delete_value: bool,
    spawner: Spawner,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        let (client, key, delete_value) = (self.client.clone(), self.key.clone(), self.delete_value);
        self.spawner.spawn_cleanup(async move {
            if let Some(index) = request.await.ok().as_deref().and_then(index_of) {
                let _ = unlock(&client, &key, index, delete_value).await;
            }
        });
    }
}

#[async_trait]
impl Locker for RedisLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        REDIS
    }

    async fn lock(&self) -> Result<LockGuard> {
        let closing = self.spawner.token();
        loop {
            // Registered before the attempt, so a release between the attempt and the
            // sleep still wakes this waiter.
            let released = self.client.lock_released.notified();
            let wait = match self.attempt().await? {
                Ok(guard) => return Ok(guard),
                Err(left) => left.clamp(Duration::from_millis(5), POLL),
            };
            tokio::select! {
                () = closing.cancelled() => return Err(self.closed()),
                () = released => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        Ok(self.attempt().await?.ok())
    }
}

/// One held acquisition, as the handle's lock-holding driver renews it.
struct Acquisition {
    client: RedisClient,
    key: Key,
    index: u64,
    ttl: Duration,
    /// What a release on close does with the value, as the guard's release would.
    delete_value: bool,
}

#[async_trait]
impl Renew for Acquisition {
    async fn renew(&self) -> Result<Renewal> {
        let args = vec![self.index.to_string(), millis(self.ttl)];
        let status = self
            .client
            .script(self.key.as_str(), &self.client.scripts.renew, args)
            .await?;
        Ok(match status.as_str() {
            "ok" => Renewal::Held(self.ttl),
            "taken" => Renewal::Lost(LostReason::RecordDeleted),
            _ => Renewal::Lost(LostReason::Expired),
        })
    }

    async fn release_on_close(&self) {
        let _ = unlock(&self.client, &self.key, self.index, self.delete_value).await;
    }
}

/// Deletes the lock record taken at `index` if it is still ours (and its value with
/// `delete_value`) and wakes this handle's waiters; the script's status.
async fn unlock(client: &RedisClient, key: &Key, index: u64, delete_value: bool) -> Result<String> {
    let args = vec![index.to_string(), if delete_value { "1" } else { "0" }.to_owned()];
    let status = client.script(key.as_str(), &client.scripts.unlock, args).await;
    client.lock_released.notify_waiters();
    status
}

struct RedisRelease {
    client: RedisClient,
    key: Key,
    index: u64,
    delete_value: bool,
}

#[async_trait]
impl LockRelease for RedisRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let RedisRelease {
            client,
            key,
            index,
            delete_value,
        } = *self;
        match unlock(&client, &key, index, delete_value).await?.as_str() {
            "ok" => Ok(()),
            "taken" => Err(Error::LockLost {
                store: REDIS,
                key: key.to_string(),
                reason: LostReason::RecordDeleted,
            }),
            _ => Err(Error::LockLost {
                store: REDIS,
                key: key.to_string(),
                reason: LostReason::Expired,
            }),
        }
    }
}
