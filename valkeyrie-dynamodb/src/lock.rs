//! Locks as leases on the key's own item, like Amazon's DynamoDB lock client, in the layout
//! the Go store uses: the holder's item carries the lock value and an `expiration_time`
//! that a heartbeat pushes forward every third of the TTL.
//!
//! * Acquiring is one conditional write that succeeds only when the item is absent, has no
//!   expiry (a plain value, or a lock released without `delete_on_unlock`) or has expired;
//!   the Go store reads first and writes unconditionally, so two contenders could both win.
//! * The fencing token is the `version` that write set; heartbeats do not change it.
//! * A heartbeat is conditional on that version and an unexpired lease: when it fails, the
//!   record was deleted or taken over (the version moved) or the lease ran out, and the lost
//!   signal says which. Without a successful heartbeat the signal also fires once the TTL
//!   has passed since the last one.
//! * A waiting `lock()` looks at the item every `lock_poll_interval`, and tries when the
//!   lease has run out.
//! * Unlocking deletes the item with `delete_on_unlock`, and otherwise only removes the
//!   expiry, keeping the value; both only if the version is still the token. The Go store
//!   always deletes; its waiters cannot take a lock whose item stays, so use
//!   `delete_on_unlock` for locks shared with Go services.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use valkeyrie_core::{
    holding, Error, Holding, Key, LockGuard, LockOptions, LockRelease, Locker, LostNotifier, LostReason, Releasing,
    Result, Spawner,
};

use crate::client::{DynamoClient, Update};
use crate::item::{expiry, now_secs, number, string, Record, ID};
use crate::store::DynamoDbStore;
use crate::DYNAMODB;

/// A lock on one key.
pub(crate) struct DynamoLocker {
    client: DynamoClient,
    key: Key,
    value: Bytes,
    ttl: Duration,
    delete_on_unlock: bool,
    poll: Duration,
    spawner: Spawner,
}

impl DynamoLocker {
    pub(crate) fn new(client: DynamoClient, key: Key, opts: LockOptions, poll: Duration, spawner: Spawner) -> Self {
        DynamoLocker {
            client,
            key,
            ttl: opts.ttl_or_default(),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            poll,
            spawner,
        }
    }

    fn closed(&self, call: &'static str) -> Error {
        Error::Closed {
            store: DYNAMODB,
            call,
            key: self.key.to_string(),
        }
    }

    /// One conditional write taking the lease; its version, or `None` when someone holds it.
    async fn try_acquire(&self, call: &'static str) -> Result<Option<u64>> {
        let request = DynamoDbStore::write(&self.client, &self.key, &self.value, Some(expiry(self.ttl)))
            .condition_expression(
                "attribute_not_exists(id) OR attribute_not_exists(expiration_time) OR expiration_time <= :now",
            )
            .expression_attribute_values(":now", number(now_secs()));
        match self.client.update(call, self.key.as_str(), request).await? {
            Update::Written(attributes) => {
                DynamoDbStore::written_version(call, &self.key, attributes.as_ref()).map(Some)
            }
            Update::Refused(_) => Ok(None),
        }
    }

    /// How long to wait before trying again: until the current lease runs out, at most one
    /// poll interval.
    async fn until_next_try(&self, call: &'static str) -> Result<Duration> {
        let read = self
            .client
            .sdk
            .get_item()
            .table_name(&self.client.table)
            .key(ID, string(self.key.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.client.error(call, self.key.as_str(), e))?;
        let expires_at = match read.item() {
            Some(item) => Record::decode(call, item)?.expires_at,
            None => None,
        };
        Ok(match expires_at {
            Some(at) if at > now_secs() => self.poll,
            // Free already: someone was quicker, or it just ran out.
            _ => Duration::ZERO,
        })
    }

    async fn attempt(&self, call: &'static str, wait: bool) -> Result<Option<LockGuard>> {
        let closing = self.spawner.token();
        let token = loop {
            if self.spawner.is_closed() {
                return Err(self.closed(call));
            }
            let started = LostNotifier::now_ms();
            if let Some(token) = self.try_acquire(call).await? {
                break (token, started);
            }
            if !wait {
                return Ok(None);
            }
            let pause = self.until_next_try(call).await?.max(Duration::from_millis(10));
            tokio::select! {
                () = closing.cancelled() => return Err(self.closed(call)),
                () = tokio::time::sleep(pause) => {}
            }
        };
        let (token, acquired_at) = token;
        let (holding, releasing, signal) = holding(self.ttl);
        holding.held_for(acquired_at, self.ttl);
        let heartbeat = Heartbeat {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            ttl: self.ttl,
        };
        self.spawner
            .spawn_self_stopping(heartbeat.run(holding, self.spawner.token()));
        let release = DynamoRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            delete_item: self.delete_on_unlock,
            releasing,
        };
        Ok(Some(LockGuard::new(
            DYNAMODB,
            self.key.as_str(),
            token,
            signal,
            Box::new(release),
        )))
    }
}

#[async_trait]
impl Locker for DynamoLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        DYNAMODB
    }

    async fn lock(&self) -> Result<LockGuard> {
        match self.attempt("lock", true).await? {
            Some(guard) => Ok(guard),
            None => Err(Error::CannotLock {
                store: DYNAMODB,
                key: self.key.to_string(),
                reason: "gave up waiting".into(),
            }),
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.attempt("try_lock", false).await
    }
}

/// Pushes the lease forward every third of the TTL while the lock is held.
struct Heartbeat {
    client: DynamoClient,
    key: Key,
    token: u64,
    ttl: Duration,
}

impl Heartbeat {
    async fn run(self, mut holding: Holding, closing: CancellationToken) {
        let key = self.key.as_str();
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                () = holding.stopped() => return,
                () = closing.cancelled() => {
                    holding.lose(LostReason::StoreClosed);
                    return;
                }
                _ = tick.tick() => {}
            }
            let started = LostNotifier::now_ms();
            let request = self
                .client
                .sdk
                .update_item()
                .table_name(&self.client.table)
                .key(ID, string(key))
                .update_expression("SET expiration_time = :expires")
                .condition_expression("version = :token AND expiration_time > :now")
                .expression_attribute_values(":expires", number(expiry(self.ttl)))
                .expression_attribute_values(":token", number(self.token))
                .expression_attribute_values(":now", number(now_secs()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            match self.client.update("lock", key, request).await {
                Ok(Update::Written(_)) => holding.held_for(started, self.ttl),
                Ok(Update::Refused(old)) => {
                    let ours = old
                        .as_ref()
                        .and_then(|item| Record::decode("lock", item).ok())
                        .is_some_and(|record| record.version == self.token);
                    holding.lose(if ours {
                        LostReason::Expired
                    } else {
                        LostReason::RecordDeleted
                    });
                    return;
                }
                Err(err) => {
                    tracing::debug!(store = DYNAMODB, key, error = %err, "lock heartbeat failed; retrying");
                }
            }
        }
    }
}

struct DynamoRelease {
    client: DynamoClient,
    key: Key,
    token: u64,
    delete_item: bool,
    releasing: Releasing,
}

#[async_trait]
impl LockRelease for DynamoRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let DynamoRelease {
            client,
            key,
            token,
            delete_item,
            releasing,
        } = *self;
        releasing.begin();
        let name = key.as_str();
        let lost = || Error::LockLost {
            store: DYNAMODB,
            key: name.to_owned(),
            reason: LostReason::RecordDeleted,
        };
        if delete_item {
            let deleted = client
                .sdk
                .delete_item()
                .table_name(&client.table)
                .key(ID, string(name))
                .condition_expression("version = :token")
                .expression_attribute_values(":token", number(token))
                .send()
                .await;
            return match deleted {
                Ok(_) => Ok(()),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
                {
                    Err(lost())
                }
                Err(err) => Err(client.error("unlock", name, err)),
            };
        }
        let request = client
            .sdk
            .update_item()
            .table_name(&client.table)
            .key(ID, string(name))
            .update_expression("REMOVE expiration_time")
            .condition_expression("version = :token")
            .expression_attribute_values(":token", number(token));
        match client.update("unlock", name, request).await? {
            Update::Written(_) => Ok(()),
            Update::Refused(_) => Err(lost()),
        }
    }
}
