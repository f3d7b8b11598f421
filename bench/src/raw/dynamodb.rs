//! DynamoDB through `aws-sdk-dynamodb`, on the HTTP client the backend builds (smithy's
//! hyper 1 client on rustls with ring, static credentials, the endpoint override, the same
//! retries and timeouts), in `valkeyrie-dynamodb`'s layout (the Go store's): one item per
//! key in the benchmark table, `id` (S) the key, `encoded_value` (S) the value in base64,
//! `version` (N) its index, `expiration_time` (N, Unix seconds) the end of a lease. An item
//! whose `expiration_time` has passed counts as absent. Reads are consistent, as the
//! backend reads by default.
//!
//! A put is one `UpdateItem` setting the value, bumping the version from
//! `if_not_exists(version, <now in µs>)` and removing any expiry; a compare-and-set is the
//! same conditional on the version (and the item being live). A directory `dir` is a
//! consistent `Scan` of the items whose `id` begins with `dir/`, page after page, as the
//! backend lists. A lock is the backend's lease: read the item; while it is free (absent,
//! without expiry, or expired) write the lock value, a new version and an expiry 20 s out
//! (valkeyrie's default lock TTL), conditional on the item being as read; while it is held,
//! read again after 100 ms (the backend's `lock_poll_interval`). Releasing removes the
//! expiry, conditional on the version written, as the backend does without
//! `delete_on_unlock`. Unlike the backend, a cycle runs no heartbeat: it ends long before
//! its lease would.
//!
//! A watch **polls**: the backend reads the table's DynamoDB Stream, whose client
//! (`aws-sdk-dynamodbstreams`) is not a dependency here, so this side does what a user
//! without streams does: a background task reads the item every 15 ms and sends its value
//! whenever its version changes, the current value first. The valkeyrie side reads its
//! stream at the same cadence (`target::DYNAMODB_WATCH_POLL`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::Provider;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use crate::driver::{BenchResult, Driver, ValueStream};
use crate::target::{Target, DYNAMODB_TABLE, DYNAMODB_WATCH_POLL};

/// A condition that holds while the item has not expired.
const LIVE: &str = "(attribute_not_exists(expiration_time) OR expiration_time > :now)";

/// What a lock holder writes at the lock's key (what the valkeyrie side writes).
const LOCK_VALUE: &[u8] = b"bench";

/// The lease of a lock holder, in seconds (valkeyrie's default lock TTL).
const LOCK_TTL_SECONDS: u64 = 20;

/// How long a contender waits before reading a held lock again (the backend's default).
const LOCK_POLL: Duration = Duration::from_millis(100);

/// How long a contender waits after losing a race for a free lock (as the backend does).
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Values buffered between a watch's polling task and its consumer.
const WATCH_BUFFER: usize = 64;

/// A DynamoDB client on the benchmark table. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RawDynamoDb {
    client: Client,
}

/// One item, decoded.
struct Item {
    value: Bytes,
    version: u64,
    expires_at: Option<u64>,
}

impl Item {
    /// Decodes the item of `key`.
    fn decode(key: &str, item: &HashMap<String, AttributeValue>) -> BenchResult<Item> {
        let number = |name: &str| match item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse()
                .map(Some)
                .map_err(|_| format!("dynamodb {key}: `{name}` is {n}")),
            Some(other) => Err(format!("dynamodb {key}: `{name}` is {other:?}")),
        };
        let value = match item.get("encoded_value") {
            None => Bytes::new(),
            Some(AttributeValue::S(encoded)) => BASE64
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|e| format!("dynamodb {key}: `encoded_value` is not base64: {e}"))?,
            Some(other) => return Err(format!("dynamodb {key}: `encoded_value` is {other:?}")),
        };
        Ok(Item {
            value,
            version: number("version")?.unwrap_or(0),
            expires_at: number("expiration_time")?,
        })
    }

    /// Whether no lease runs on the item (none was taken, it was released, or it expired).
    fn is_free(&self) -> bool {
        self.expires_at.is_none_or(|at| at <= now_secs())
    }
}

/// Formats an SDK error as what failed.
fn failed<'a, E, R>(call: &'static str, key: &'a str) -> impl FnOnce(SdkError<E, R>) -> String + 'a
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |err| format!("dynamodb {call} {key}: {}", DisplayErrorContext(err))
}

/// Time since the Unix epoch.
fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Unix time in seconds, the unit of `expiration_time`.
fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// The clock in microseconds: where a new item's version starts.
fn now_micros() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX / 2)
}

/// A number attribute.
fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A string attribute.
fn string(s: &str) -> AttributeValue {
    AttributeValue::S(s.to_owned())
}

impl RawDynamoDb {
    /// Builds the client for `target`'s endpoint and checks that the table is there.
    pub(crate) async fn connect(target: &Target) -> BenchResult<Self> {
        let endpoint = super::endpoint(target)?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(10))
            .build();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(timeouts)
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .load()
            .await;
        let client = Client::new(&config);
        client
            .describe_table()
            .table_name(DYNAMODB_TABLE)
            .send()
            .await
            .map_err(failed("connect", DYNAMODB_TABLE))?;
        Ok(RawDynamoDb { client })
    }

    /// The item at `key`, read consistently, expired or not; `None` when absent.
    async fn read(&self, key: &str) -> BenchResult<Option<Item>> {
        let read = self
            .client
            .get_item()
            .table_name(DYNAMODB_TABLE)
            .key("id", string(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(failed("get", key))?;
        read.item().map(|item| Item::decode(key, item)).transpose()
    }

    /// The item at `key`, which exists and has not expired.
    async fn existing(&self, key: &str) -> BenchResult<Item> {
        self.read(key)
            .await?
            .filter(|item| item.expires_at.is_none_or(|at| at > now_secs()))
            .ok_or_else(|| format!("dynamodb get {key}: no such key"))
    }

    /// Takes the free lease on `key` with one write conditional on the item being as
    /// `current` shows it; the version written, or `None` when someone was quicker.
    async fn try_acquire(&self, key: &str, current: Option<&Item>) -> BenchResult<Option<u64>> {
        let version = current.map_or(0, |item| item.version + 1).max(now_micros());
        // Whole seconds, rounded up so the lease never ends early.
        let expires_at = now_secs() + LOCK_TTL_SECONDS + 1;
        let request = self
            .client
            .update_item()
            .table_name(DYNAMODB_TABLE)
            .key("id", string(key))
            .update_expression("SET version = :version, encoded_value = :value, expiration_time = :expires")
            .expression_attribute_values(":version", number(version))
            .expression_attribute_values(":value", AttributeValue::S(BASE64.encode(LOCK_VALUE)))
            .expression_attribute_values(":expires", number(expires_at));
        let request = match current {
            None => request.condition_expression("attribute_not_exists(id)"),
            Some(current) => request
                .condition_expression(
                    "version = :previous AND (attribute_not_exists(expiration_time) OR expiration_time <= :now)",
                )
                .expression_attribute_values(":previous", number(current.version))
                .expression_attribute_values(":now", number(now_secs())),
        };
        match request.send().await {
            Ok(_) => Ok(Some(version)),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(failed("lock", key)(err)),
        }
    }

    /// Sends each new value of `key` after `version` to `values`, reading every
    /// [`DYNAMODB_WATCH_POLL`], until the consumer goes away or a read fails.
    async fn poll(self, key: String, mut version: u64, values: mpsc::Sender<BenchResult<Bytes>>) {
        let mut tick = tokio::time::interval(DYNAMODB_WATCH_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let answer = tokio::select! {
                () = values.closed() => return,
                _ = tick.tick() => self.read(&key).await,
            };
            let changed = match answer {
                Ok(item) => item.filter(|item| item.version != version),
                Err(err) => {
                    let _ = values.send(Err(err)).await;
                    return;
                }
            };
            if let Some(item) = changed {
                version = item.version;
                if values.send(Ok(item.value)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Driver for RawDynamoDb {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        self.client
            .update_item()
            .table_name(DYNAMODB_TABLE)
            .key("id", string(key))
            .update_expression(
                "SET version = if_not_exists(version, :base) + :one, encoded_value = :value REMOVE expiration_time",
            )
            .expression_attribute_values(":base", number(now_micros()))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":value", AttributeValue::S(BASE64.encode(&value)))
            .send()
            .await
            .map(drop)
            .map_err(failed("put", key))
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.existing(key).await?.value)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let item = self.existing(key).await?;
        Ok((item.value, item.version))
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        let written = self
            .client
            .update_item()
            .table_name(DYNAMODB_TABLE)
            .key("id", string(key))
            .update_expression("SET version = version + :one, encoded_value = :value REMOVE expiration_time")
            .condition_expression(format!("version = :previous AND {LIVE}"))
            .expression_attribute_values(":previous", number(index))
            .expression_attribute_values(":now", number(now_secs()))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":value", AttributeValue::S(BASE64.encode(&value)))
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(failed("compare_and_set", key)(err)),
        }
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        let prefix = format!("{dir}/");
        let mut items = self
            .client
            .scan()
            .table_name(DYNAMODB_TABLE)
            .consistent_read(true)
            .filter_expression(format!("begins_with(id, :prefix) AND {LIVE}"))
            .expression_attribute_values(":prefix", string(&prefix))
            .expression_attribute_values(":now", number(now_secs()))
            .into_paginator()
            .items()
            .send();
        let mut count = 0;
        while let Some(item) = items.next().await {
            Item::decode(dir, &item.map_err(failed("list", dir))?)?;
            count += 1;
        }
        Ok(count)
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let current = self.existing(key).await?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        // The channel is new and empty: the current value always fits.
        let _ = sender.try_send(Ok(current.value));
        tokio::spawn(self.clone().poll(key.to_owned(), current.version, sender));
        let values = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|value| (value, receiver))
        });
        Ok(Box::pin(values))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let token = loop {
            let current = self.read(key).await?;
            let free = current.as_ref().is_none_or(Item::is_free);
            if free {
                if let Some(token) = self.try_acquire(key, current.as_ref()).await? {
                    break token;
                }
            }
            tokio::time::sleep(if free { LOCK_RETRY } else { LOCK_POLL }).await;
        };
        let released = self
            .client
            .update_item()
            .table_name(DYNAMODB_TABLE)
            .key("id", string(key))
            .update_expression("REMOVE expiration_time")
            .condition_expression("version = :token")
            .expression_attribute_values(":token", number(token))
            .send()
            .await;
        match released {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(format!("dynamodb unlock {key}: the lock was taken over while held"))
            }
            Err(err) => Err(failed("unlock", key)(err)),
        }
    }
}
