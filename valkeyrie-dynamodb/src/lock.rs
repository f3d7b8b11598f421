//! Locks as leases on the key's own item, like Amazon's DynamoDB lock client, in the layout
//! the Go store uses: the holder's item carries the lock value and an `expiration_time`
//! that a heartbeat pushes forward every third of the TTL.
//!
//! * Acquiring reads the item, then writes only if it is still as read (same `version`, or
//!   still absent) and free: absent, without expiry (a plain value, or a lock released
//!   without `delete_on_unlock`) or expired. The Go store reads first and writes
//!   unconditionally, so two contenders could both win. A write whose answer was lost (the
//!   SDK retried it and the retry was refused) is recognized as ours by the version,
//!   expiry and value it wrote, so the caller does not wait out its own lease. Versions are
//!   unique within a process; two processes would have to pick the same microsecond, expiry
//!   second and lock value to be confused.
//! * The fencing token is the `version` that write set: past the item's version and past
//!   the clock in microseconds, so it keeps growing when the item was deleted or a Go
//!   holder (counting from 1) came in between. Heartbeats do not change it.
//! * A fence (a transaction's `when_held`, `put_if_held`) holds under the heartbeat's own
//!   condition, checked by DynamoDB in the transaction: the item still has the token as
//!   `version` and an `expiration_time` ahead of now.
//! * A heartbeat is conditional on that version and an unexpired lease: when it fails, the
//!   record was deleted or taken over (the version moved) or the lease ran out, and the lost
//!   signal says which. Without a successful heartbeat the signal also fires once the TTL
//!   has passed since the last one.
//! * A waiting `lock()` reads the item every `lock_poll_interval` and writes only when the
//!   lease has run out (a refused write costs write capacity). The handle's lock-holding
//!   driver sends the heartbeats, each bounded by a third of the TTL; when none succeeded
//!   for a whole TTL the signal reports the lock expired.
//! * Unlocking deletes the item with `delete_on_unlock`, and otherwise only removes the
//!   expiry, keeping the value; both only if the version is still the token. The Go store
//!   always deletes; its waiters cannot take a lock whose item stays, so use
//!   `delete_on_unlock` for locks shared with Go services.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use bytes::Bytes;
use tokio::time::Instant;
use valkeyrie_core::raw::{Acquire, Hold, Key, LockRelease, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, LockGuard, LockOptions, LostReason, Result};

use crate::client::{DynamoClient, Update};
use crate::item::{expiry, now_secs, number, string, unexpired_version, unique_version, Record, ID};
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

    fn closed(&self) -> Error {
        Error::closed(DYNAMODB, self.key.as_str())
    }

    /// The lock's item, read consistently.
    async fn read(&self) -> Result<Option<Record>> {
        let read = self
            .client
            .sdk
            .get_item()
            .table_name(&self.client.table)
            .key(ID, string(self.key.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.client.error(self.key.as_str(), e))?;
        read.item().map(Record::decode).transpose()
    }

    /// Takes a free lease with one write conditional on the item being as `current` shows
    /// it; the new version (the fencing token), or `None` when someone was quicker.
    async fn try_acquire(&self, current: Option<&Record>) -> Result<Option<u64>> {
        // Past every version the key had, whoever wrote it (Go counts from 1), and past the
        // clock, so tokens keep growing across deletes; unique in this process, so a
        // contender never mistakes another's write for its own below.
        let version = unique_version(current.map(|r| r.version));
        let expires_at = expiry(self.ttl);
        let mut request = self
            .client
            .sdk
            .update_item()
            .expression_attribute_values(":version", number(version))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = match current {
            None => request.condition_expression("attribute_not_exists(id)"),
            Some(current) => request
                .condition_expression(
                    "version = :previous AND (attribute_not_exists(expiration_time) OR expiration_time <= :now)",
                )
                .expression_attribute_values(":previous", number(current.version))
                .expression_attribute_values(":now", number(now_secs())),
        };
        let request = DynamoDbStore::write_version(
            &self.client,
            request,
            "version = :version",
            &self.key,
            &self.value,
            Some(expires_at),
        );
        match self.client.update(self.key.as_str(), request).await? {
            Update::Written(_) => Ok(Some(version)),
            // The SDK retried a write whose answer was lost: the item is this attempt's.
            Update::Refused(Some(old))
                if Record::decode(&old).is_ok_and(|r| {
                    r.version == version && r.expires_at == Some(expires_at) && r.value == self.value
                }) =>
            {
                Ok(Some(version))
            }
            Update::Refused(_) => Ok(None),
        }
    }
}

#[async_trait]
impl Acquire for DynamoLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        DYNAMODB
    }

    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        let closing = self.spawner.token();
        let (token, started) = loop {
            if self.spawner.is_closed() {
                return Err(self.closed());
            }
            let started = Instant::now();
            let current = self.read().await?;
            let free = current
                .as_ref()
                .is_none_or(|r| r.expires_at.is_none_or(|at| at <= now_secs()));
            if free {
                if let Some(token) = self.try_acquire(current.as_ref()).await? {
                    break (token, started);
                }
            }
            if !wait {
                return Ok(None);
            }
            // Only reads while the lease runs: a refused write costs write capacity.
            let pause = if free { Duration::from_millis(10) } else { self.poll };
            tokio::select! {
                () = closing.cancelled() => return Err(self.closed()),
                () = tokio::time::sleep(pause) => {}
            }
        };
        let heartbeat = Heartbeat {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            ttl: self.ttl,
            delete_item: self.delete_on_unlock,
        };
        // The lease was counted from before the request went out.
        let held = self.spawner.hold(Hold::new(heartbeat, started, self.ttl));
        let release = DynamoRelease {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            delete_item: self.delete_on_unlock,
        };
        Ok(Some(LockGuard::new(
            DYNAMODB,
            self.key.as_str(),
            token,
            held,
            Box::new(release),
        )))
    }
}

/// Pushes the lease forward, each time the handle's lock-holding driver asks.
struct Heartbeat {
    client: DynamoClient,
    key: Key,
    token: u64,
    ttl: Duration,
    delete_item: bool,
}

#[async_trait]
impl Renew for Heartbeat {
    async fn renew(&self) -> Result<Renewal> {
        let key = self.key.as_str();
        let request = self
            .client
            .sdk
            .update_item()
            .table_name(&self.client.table)
            .key(ID, string(key))
            .update_expression("SET expiration_time = :expires")
            .condition_expression(unexpired_version(":token"))
            .expression_attribute_values(":expires", number(expiry(self.ttl)))
            .expression_attribute_values(":token", number(self.token))
            .expression_attribute_values(":now", number(now_secs()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(match self.client.update(key, request).await? {
            Update::Written(_) => Renewal::Held(self.ttl),
            Update::Refused(old) => {
                let ours = old
                    .as_ref()
                    .and_then(|item| Record::decode(item).ok())
                    .is_some_and(|record| record.version == self.token);
                Renewal::Lost(if ours {
                    LostReason::Expired
                } else {
                    LostReason::RecordDeleted
                })
            }
        })
    }

    async fn release_on_close(&self) {
        // Released as the handle closes, so no other holder waits out the TTL of a lock
        // whose handle is gone.
        let _ = unlock(&self.client, &self.key, self.token, self.delete_item).await;
    }
}

struct DynamoRelease {
    client: DynamoClient,
    key: Key,
    token: u64,
    delete_item: bool,
}

#[async_trait]
impl LockRelease for DynamoRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let DynamoRelease {
            client,
            key,
            token,
            delete_item,
        } = *self;
        unlock(&client, &key, token, delete_item).await
    }
}

/// Ends the hold taken with `token`: deletes the item with `delete_item`, otherwise clears
/// its expiry so the next locker takes it at once.
async fn unlock(client: &DynamoClient, key: &Key, token: u64, delete_item: bool) -> Result<()> {
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
            Err(err) => Err(client.error(name, err)),
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
    match client.update(name, request).await? {
        Update::Written(_) => Ok(()),
        Update::Refused(_) => Err(lost()),
    }
}
