//! [`DynamoDbStore`]: the [`Backend`] implementation and the registration.
//!
//! Every write is one `UpdateItem`/`DeleteItem` whose condition expression states what it
//! assumes (the key absent or expired, or its `version`), so nothing is read then written;
//! a transaction is one `TransactWriteItems` of the same expressions (see the `txn` module).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, ReturnValue, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use bytes::Bytes;
use tokio::time::Instant;
use valkeyrie_core::raw::{Backend, Background, Backoff, Hold, Key, Registration, Renew, Renewal, StoreSpec, Txn};
use valkeyrie_core::{
    Capabilities, Error, KvPair, LockOptions, Locker, LostReason, ReadOptions, Result, Store, TxnOutcome, WatchStream,
    WriteOptions,
};

use crate::client::{DynamoClient, Update};
use crate::config::DynamoDbConfig;
use crate::item::{
    exists, expiry, now_secs, number, string, unexpired_version, version_is, ItemWrite, Record, ABSENT, ID, LIVE,
    MAX_VALUE_SIZE,
};
use crate::lock::DynamoLocker;
use crate::{batch, txn, watch, DYNAMODB};

/// A handle on one DynamoDB table.
pub struct DynamoDbStore {
    pub(crate) client: DynamoClient,
    pub(crate) config: DynamoDbConfig,
    background: Background,
}

impl std::fmt::Debug for DynamoDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DynamoDbConfig {
    /// Connects and finds the table (creating it with `create_table`).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting or no region;
    /// [`Error::NotReachable`] when the endpoint does not answer; [`Error::Backend`] when
    /// the table does not exist (and `create_table` is off) or the credentials are refused.
    pub async fn connect(self) -> Result<DynamoDbStore> {
        self.validate()?;
        let client = DynamoClient::connect(&self)
            .await
            .map_err(|e| e.in_call("connect", ""))?;
        Ok(DynamoDbStore {
            client,
            config: self,
            background: Background::new(),
        })
    }
}

/// How a conditional write's failure reads, from the item as it was (`ALL_OLD`).
pub(crate) fn condition_failure(key: &str, old: Option<&HashMap<String, AttributeValue>>) -> Error {
    let live = old
        .and_then(|item| Record::decode(item).ok())
        .is_some_and(|record| record.is_live(now_secs()));
    if live {
        Error::modified(DYNAMODB, key)
    } else {
        Error::not_found(DYNAMODB, key)
    }
}

impl DynamoDbStore {
    /// An `UpdateItem` writing `value` (with `expiration_time` when `expires_at` is set,
    /// without it otherwise) and bumping `version`; the caller adds its condition.
    pub(crate) fn write(
        client: &DynamoClient,
        key: &Key,
        value: &[u8],
        expires_at: Option<u64>,
    ) -> UpdateItemFluentBuilder {
        Self::apply_write(
            client,
            client.sdk.update_item(),
            key,
            ItemWrite::bumped(value, expires_at),
        )
    }

    /// Like [`DynamoDbStore::write`], with `version_set` (a `SET` clause whose values are
    /// already in `request`) instead of the bump.
    pub(crate) fn write_version(
        client: &DynamoClient,
        request: UpdateItemFluentBuilder,
        version_set: &'static str,
        key: &Key,
        value: &[u8],
        expires_at: Option<u64>,
    ) -> UpdateItemFluentBuilder {
        Self::apply_write(client, request, key, ItemWrite::new(version_set, value, expires_at))
    }

    /// `request` as an `UpdateItem` of `key` doing `write`, answering the new attributes.
    fn apply_write(
        client: &DynamoClient,
        request: UpdateItemFluentBuilder,
        key: &Key,
        write: ItemWrite,
    ) -> UpdateItemFluentBuilder {
        let request = request
            .table_name(&client.table)
            .key(ID, string(key.as_str()))
            .return_values(ReturnValue::UpdatedNew)
            .update_expression(write.expression);
        write.values.into_iter().fold(request, |request, (name, value)| {
            request.expression_attribute_values(name, value)
        })
    }

    /// The `version` an `UpdateItem` returned.
    pub(crate) fn written_version(key: &Key, attributes: Option<&HashMap<String, AttributeValue>>) -> Result<u64> {
        match attributes.and_then(|a| a.get("version")) {
            Some(AttributeValue::N(n)) => n
                .parse()
                .map_err(|_| Error::backend(DYNAMODB, key.as_str(), false, "the new version is not a number")),
            _ => Err(Error::backend(
                DYNAMODB,
                key.as_str(),
                false,
                "the write returned no version",
            )),
        }
    }

    /// With `keep_alive`, has the handle's driver push the expiry of a TTL write forward
    /// every third of its TTL while the item still has the version written (without bumping
    /// it).
    fn keep_alive_after_write(&self, key: &Key, version: u64, opts: &WriteOptions) {
        let (Some(ttl), true) = (opts.ttl, opts.keep_alive) else {
            return;
        };
        let refresh = Refresh {
            client: self.client.clone(),
            key: key.clone(),
            version,
            ttl,
        };
        let period = (ttl / 3).max(Duration::from_millis(500));
        self.background
            .spawner()
            .keep_alive(Hold::new(refresh, Instant::now(), ttl).every(period));
    }

    /// Every live item whose key starts with `prefix`, page after page.
    pub(crate) async fn scan_prefix(
        client: &DynamoClient,
        prefix: &Key,
        consistent: bool,
        keys_only: bool,
    ) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut scan = client
                .sdk
                .scan()
                .table_name(&client.table)
                .consistent_read(consistent)
                .filter_expression(format!("begins_with(id, :prefix) AND {LIVE}"))
                .expression_attribute_values(":prefix", string(prefix.as_str()))
                .expression_attribute_values(":now", number(now_secs()))
                .set_exclusive_start_key(start.take());
            if keys_only {
                scan = scan.projection_expression("id, expiration_time");
            }
            let page = scan.send().await.map_err(|e| client.error(prefix.as_str(), e))?;
            for item in page.items() {
                let record = Record::decode(item)?;
                if record.key == prefix.as_str() || prefix.contains(&record.key) {
                    records.push(record);
                }
            }
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => return Ok(records),
            }
        }
    }

    /// Deletes `keys` in batches of 25, retrying unprocessed items with backoff.
    async fn delete_batches(&self, dir: &Key, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = batch
                .iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .key(ID, string(key.as_str()))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(|e| Error::backend(DYNAMODB, key.as_str(), false, e))
                })
                .collect::<Result<_>>()?;
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            for attempt in 0.. {
                let written = self
                    .client
                    .sdk
                    .batch_write_item()
                    .request_items(&self.client.table, requests)
                    .send()
                    .await
                    .map_err(|e| self.client.error(dir.as_str(), e))?;
                requests = written
                    .unprocessed_items()
                    .and_then(|unprocessed| unprocessed.get(&self.client.table))
                    .cloned()
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt == 10 {
                    let reason = format!("{} deletes still unprocessed after {attempt} retries", requests.len());
                    return Err(Error::backend(DYNAMODB, dir.as_str(), true, reason));
                }
                backoff.wait().await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for DynamoDbStore {
    fn name(&self) -> &'static str {
        DYNAMODB
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        // Watches read the table's stream, which needs new and old images.
        caps.watch = self.client.stream_arn.is_some();
        caps.watch_tree = caps.watch;
        // `expiration_time` counts whole seconds.
        caps.min_ttl = Duration::from_secs(1);
        caps.max_value_size = Some(MAX_VALUE_SIZE);
        caps.consistent_reads = true;
        caps.persistent = true;
        // One `TransactWriteItems`, whose action limit bounds compares plus operations
        // (compares on a written key share its action, so this is conservative).
        caps.max_transaction_ops = Some(txn::MAX_ACTIONS);
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let request = Self::write(&self.client, key, &value, opts.ttl.map(expiry));
        let written = request.send().await.map_err(|e| self.client.error(key.as_str(), e))?;
        let version = Self::written_version(key, written.attributes())?;
        self.keep_alive_after_write(key, version, opts);
        Ok(())
    }

    async fn get(&self, key: &Key, opts: &ReadOptions) -> Result<KvPair> {
        let read = self
            .client
            .sdk
            .get_item()
            .table_name(&self.client.table)
            .key(ID, string(key.as_str()))
            .consistent_read(opts.consistent)
            .send()
            .await
            .map_err(|e| self.client.error(key.as_str(), e))?;
        read.item()
            .map(|item| Record::decode_live(item, now_secs()))
            .transpose()?
            .flatten()
            .map(Record::into_pair)
            .ok_or_else(|| Error::not_found(DYNAMODB, key.as_str()))
    }

    async fn get_many(&self, keys: &[Key], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        batch::get_many(&self.client, keys, opts.consistent).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let deleted = self
            .client
            .sdk
            .delete_item()
            .table_name(&self.client.table)
            .key(ID, string(key.as_str()))
            .condition_expression(exists())
            .expression_attribute_values(":now", number(now_secs()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Err(Error::not_found(DYNAMODB, key.as_str()))
            }
            Err(err) => Err(self.client.error(key.as_str(), err)),
        }
    }

    async fn list(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let records = Self::scan_prefix(&self.client, dir, opts.consistent, false).await?;
        Ok(records.into_iter().map(Record::into_pair).collect())
    }

    // Keys only: `list_stream` then reads the values page by page with `get_many`.
    async fn list_keys(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<String>> {
        let records = Self::scan_prefix(&self.client, dir, opts.consistent, true).await?;
        Ok(records.into_iter().map(|record| record.key).collect())
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        let records = Self::scan_prefix(&self.client, dir, true, true).await?;
        if records.is_empty() {
            return Err(Error::not_found(DYNAMODB, dir.as_str()));
        }
        self.delete_batches(dir, records.into_iter().map(|r| r.key).collect())
            .await
    }

    // Watches read their snapshot consistently whatever the options say (see `watch`).
    async fn watch(&self, key: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, key, false).await
    }

    async fn watch_tree(&self, dir: &Key, _opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, dir, true).await
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        Ok(Box::new(DynamoLocker::new(
            self.client.clone(),
            key.clone(),
            opts,
            self.config.lock_poll_interval,
            self.background.spawner(),
        )))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let mut request = Self::write(&self.client, key, &value, opts.ttl.map(expiry))
            .expression_attribute_values(":now", number(now_secs()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = match previous {
            // An expired item counts as absent.
            None => request.condition_expression(ABSENT),
            Some(previous) => request
                .condition_expression(version_is(":previous"))
                .expression_attribute_values(":previous", number(previous.last_index)),
        };
        let attributes = match self.client.update(key.as_str(), request).await? {
            Update::Written(attributes) => attributes,
            Update::Refused(_) if previous.is_none() => return Err(Error::exists(DYNAMODB, key.as_str())),
            Update::Refused(old) => return Err(condition_failure(key.as_str(), old.as_ref())),
        };
        let version = Self::written_version(key, attributes.as_ref())?;
        self.keep_alive_after_write(key, version, opts);
        Ok(KvPair::new(key.as_str(), value, version))
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let deleted = self
            .client
            .sdk
            .delete_item()
            .table_name(&self.client.table)
            .key(ID, string(key.as_str()))
            .condition_expression(version_is(":previous"))
            .expression_attribute_values(":previous", number(previous.last_index))
            .expression_attribute_values(":now", number(now_secs()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(failed)) => {
                    Err(condition_failure(key.as_str(), failed.item()))
                }
                _ => Err(self.client.error(key.as_str(), err)),
            },
        }
    }

    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        txn::commit(&self.client, txn).await
    }

    async fn close(&self) -> Result<()> {
        // The SDK's connections close with the last clone of the client.
        Ok(())
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    let mut config: DynamoDbConfig = spec.config.resolve()?;
    // `dynamodb://TABLE?…`: the URL's host is the table.
    match spec.endpoints.as_slice() {
        [] => {}
        [table] if config.table.is_empty() => config.table.clone_from(table),
        [table] if *table == config.table => {}
        _ => {
            return Err(Error::config(
                DYNAMODB,
                "table",
                "name one table, as the URL's host or the `table` setting",
            ))
        }
    }
    Ok(Arc::new(config.connect().await?))
}

inventory::submit! { Registration::new(DYNAMODB, None, |spec| Box::pin(open(spec))) }

/// A `keep_alive` write, as the handle's driver renews it.
struct Refresh {
    client: DynamoClient,
    key: Key,
    version: u64,
    ttl: Duration,
}

#[async_trait]
impl Renew for Refresh {
    async fn renew(&self) -> Result<Renewal> {
        let client = &self.client;
        let request = client
            .sdk
            .update_item()
            .table_name(&client.table)
            .key(ID, string(self.key.as_str()))
            .update_expression("SET expiration_time = :expires")
            // Never brings back a key that readers already saw expire.
            .condition_expression(unexpired_version(":version"))
            .expression_attribute_values(":now", number(now_secs()))
            .expression_attribute_values(":expires", number(expiry(self.ttl)))
            .expression_attribute_values(":version", number(self.version));
        Ok(match client.update(self.key.as_str(), request).await? {
            Update::Written(_) => Renewal::Held(self.ttl),
            // Rewritten, deleted or already expired: nothing left to keep alive.
            Update::Refused(_) => Renewal::Lost(LostReason::RecordDeleted),
        })
    }
}
