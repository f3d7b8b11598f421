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
//! use valkeyrie_core::{ReadOptions, Store, WriteOptions};
//! use valkeyrie_dynamodb::DynamoDbConfig;
//!
//! let store = DynamoDbConfig {
//!     table: "valkeyrie".into(),
//!     region: Some("eu-west-1".into()),
//!     ..Default::default()
//! }
//! .connect()
//! .await?;
//! store.put("config/mode", "blue".into(), &WriteOptions::default()).await?;
//! assert_eq!(store.get("config/mode", &ReadOptions::default()).await?.value, "blue");
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

/// The registered name of this store, also its URL scheme.
pub const DYNAMODB: &str = "dynamodb";
