//! # valkeyrie-dynamodb
//!
//! The DynamoDB backend of valkeyrie, on [`aws-sdk-dynamodb`](https://docs.rs/aws-sdk-dynamodb)
//! over rustls with ring (not the SDK's legacy HTTP stack), and
//! [`aws-sdk-dynamodbstreams`](https://docs.rs/aws-sdk-dynamodbstreams) for watches. Registered as `dynamodb`, with
//! the table as the URL's host: `valkeyrie_core::open("dynamodb://valkeyrie?region=eu-west-1")`
//! once this crate is linked (`use valkeyrie_dynamodb as _;`).
//!
//! * Items have the Go `kvtools/dynamodb` layout (`id`, `version`, `encoded_value`,
//!   `expiration_time`; see the `item` module), so Go and Rust services share a table.
//!   `last_index` is `version`, which starts at the current time in microseconds for a new
//!   item so it keeps growing across a delete and a re-creation.
//! * Every write is one conditional `UpdateItem`/`DeleteItem`: `atomic_put`,
//!   `atomic_delete` and `delete` never read first. An empty value clears the old one and a
//!   write without TTL clears the expiry (the Go store keeps both).
//! * TTLs are whole seconds in `expiration_time`; DynamoDB deletes expired items lazily, so
//!   every read hides them. `keep_alive` pushes the expiry forward while the handle lives.
//! * `list` and `delete_tree` scan the table with `begins_with` on the key, page by page;
//!   `delete_tree` deletes in batches of 25 and retries unprocessed items with backoff.
//! * `get_many` is `BatchGetItem`: one request per 100 distinct keys (a key asked twice is
//!   read once), up to 4 in flight, unprocessed keys sent again after a jittered pause;
//!   not one snapshot (`atomic_get_many` is false), expired items absent as for `get`.
//!   `list_stream` scans the prefix once for keys only (`id` and `expiration_time`
//!   projected, `list`'s filter), then reads each page's values with `get_many`: only the
//!   keys and one page of values are held.
//! * Watches read the table's DynamoDB Stream (new and old images; `create_table` enables
//!   it), start with the current state, report every change by version, and report expiries
//!   when they pass (see the `watch` module). On a table without such a stream,
//!   `capabilities().watch` is false.
//! * Locks are leases on the key's item (see the `lock` module); the fencing token is the
//!   item's `version`.
//! * Transactions are one `TransactWriteItems` (see the `txn` module): one action per item,
//!   each operation's condition carrying the compares on its key and a `ConditionCheck` per
//!   key only compared, so compares plus operations are limited to its 100 actions
//!   (`max_transaction_ops`), and the items written to its 4 MB. A fence holds while the
//!   lock's item has the fencing token as `version` and an unexpired `expiration_time`, the
//!   heartbeat's own condition, checked in the same transaction; `put_if_held` is one round
//!   trip. A transaction cancelled by a concurrent one is sent again a few times after a
//!   jittered pause, then reported as a temporary error.
//! * Values are stored base64 in an item of at most 400 KB, so they are limited to about
//!   298 KiB; larger ones are `ValueTooLarge` before sending.
//! * Throttling and transient errors are retried by the SDK (standard mode, `max_attempts`).
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::Kv;
//! use valkeyrie_dynamodb::DynamoDbConfig;
//!
//! let config = DynamoDbConfig {
//!     table: "valkeyrie".into(),
//!     region: Some("eu-west-1".into()),
//!     ..Default::default()
//! };
//! let kv = Kv::new(config.connect().await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

mod batch;
mod client;
mod config;
mod error;
mod item;
mod lock;
mod store;
mod txn;
mod watch;

pub use config::DynamoDbConfig;
pub use store::DynamoDbStore;

/// The crate-private decoders of server answers and the config check, for the fuzz targets
/// of `fuzz/` only (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodbstreams::types::{
        AttributeValue as StreamValue, OperationType, Record as StreamRecord, StreamRecord as Change,
    };
    use valkeyrie_core::raw::Key;
    use valkeyrie_core::{KvPair, Result, WatchEvent};

    use crate::item::{Record, ID};

    /// One attribute of an item or a stream image: name, whether it is a number (`N`, else
    /// a string `S`), and its text.
    pub type Attribute = (String, bool, String);

    /// One stream record as plain data.
    #[derive(Debug, Clone)]
    pub struct StreamInput {
        /// `INSERT`, `MODIFY`, `REMOVE`, or any other text.
        pub event_name: String,
        /// The `id` key attribute; `None` for a record without one.
        pub key: Option<String>,
        /// The image before the change.
        pub old_image: Option<Vec<Attribute>>,
        /// The image after the change.
        pub new_image: Option<Vec<Attribute>>,
    }

    /// Checks a config as opening the store does, before any connection.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &crate::DynamoDbConfig) -> Result<()> {
        config.validate()
    }

    /// Decodes an item of `attributes` as every read does: its pair, or a permanent
    /// `Backend` error naming the key.
    ///
    /// # Errors
    /// When the item is not one of the table's.
    pub fn decode_item(attributes: &[Attribute]) -> Result<KvPair> {
        let item: HashMap<String, AttributeValue> = attributes
            .iter()
            .map(|(name, number, text)| {
                let value = if *number {
                    AttributeValue::N(text.clone())
                } else {
                    AttributeValue::S(text.clone())
                };
                (name.clone(), value)
            })
            .collect();
        Record::decode(&item).map(Record::into_pair)
    }

    /// The events a watch of `key` (with `tree`, below it) reports for `records` read at
    /// `now` (Unix seconds), starting from an empty table.
    pub fn stream_events(key: &Key, tree: bool, records: &[StreamInput], now: u64) -> Vec<WatchEvent> {
        let image = |attributes: &[Attribute]| -> HashMap<String, StreamValue> {
            attributes
                .iter()
                .map(|(name, number, text)| {
                    let value = if *number {
                        StreamValue::N(text.clone())
                    } else {
                        StreamValue::S(text.clone())
                    };
                    (name.clone(), value)
                })
                .collect()
        };
        let records: Vec<StreamRecord> = records
            .iter()
            .map(|input| {
                let mut change = Change::builder();
                if let Some(key) = &input.key {
                    change = change.keys(ID, StreamValue::S(key.clone()));
                }
                change = change
                    .set_old_image(input.old_image.as_deref().map(image))
                    .set_new_image(input.new_image.as_deref().map(image));
                StreamRecord::builder()
                    .event_name(OperationType::from(input.event_name.as_str()))
                    .dynamodb(change.build())
                    .build()
            })
            .collect();
        crate::watch::replay(key, tree, &records, now)
    }
}

/// The registered name of this store, also its URL scheme.
pub const DYNAMODB: &str = "dynamodb";
