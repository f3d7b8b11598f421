//! # valkeyrie-redis
//!
//! The Redis backend of valkeyrie, on [fred](https://docs.rs/fred). Registered as `redis`
//! (and `rediss` for TLS): `valkeyrie_core::open("redis://user:password@127.0.0.1:6379/0")`
//! once this crate is linked (`use valkeyrie_redis as _;`).
//!
//! * **Layout**: each key holds the Go `kvtools/redis` JSON envelope
//!   `{"Key":"<key>","Value":"<base64>","LastIndex":<n>}`, so Go services using that store's
//!   JSON codec share data and locks with this one. A value written by another client (not
//!   an envelope) reads as its raw bytes with `last_index` 0. For plain values that other
//!   tools `GET`, see [Raw values](#raw-values).
//! * **Indexes and atomic calls** run server-side in Lua scripts (loaded once, `EVALSHA` with
//!   a reload on `NOSCRIPT`), one key each so they also work on a cluster. The client builds
//!   the envelope up to its index and a script reads the stored envelope's last bytes
//!   (`GETRANGE`) for the previous index, so a write costs Lua little beyond its own
//!   arguments (see the README's benchmarks for what a script still costs). `LastIndex` is
//!   `max(server time in µs, previous + 1)`: it grows on every write, also across a delete
//!   and re-create, so a stale pair never matches a newer write.
//! * **Transactions** (`commit`, `put_if_held`, `delete_if_held`) are one Lua script, one
//!   round trip: it checks the compares in order, returns the first that fails, else applies
//!   every operation with the same envelope, index and TTL logic as `put` (so watches see
//!   them), and Redis runs nothing else meanwhile. A fence holds while its lock key exists
//!   with an expiry and the fencing token as `LastIndex`, the check lock renewal makes
//!   (a lock released without `delete_on_unlock` keeps its value but loses its expiry). On a
//!   cluster a script runs on one node, so a transaction whose keys span hash slots is
//!   refused before sending (`InvalidTransaction`, naming a key); hash tags (`{app}/a`,
//!   `{app}/b`) put keys in one slot.
//! * `list` and `delete_tree` SCAN `dir/*` in batches (never KEYS; glob characters escaped),
//!   then MGET or UNLINK in batches. TTLs are `PX`; `keep_alive` refreshes them.
//! * Watches use keyspace notifications on a dedicated subscriber connection (on a cluster,
//!   one per primary), re-read each changed key, and send a fresh snapshot after a
//!   reconnect. With notifications off, they fail saying which setting is needed (or turn it
//!   on with `enable_keyspace_events`).
//! * Locks are the key itself (`SET NX PX` semantics in a script, as in Go), owned by the
//!   envelope's `LastIndex`, renewed and released by index-checked scripts. The fencing
//!   token is that index: it grows with every write of the key and, after the key was
//!   deleted, restarts from the server clock (so it relies on that clock not stepping back).
//!   Go waiters take a lock only with `SET NX`: for locks shared with Go services, set
//!   `delete_on_unlock` (the Go store always deletes on unlock); without it the value stays
//!   after unlock, which frees the lock for valkeyrie contenders but not for Go ones.
//!
//! ## Redis Cluster
//!
//! `redis://n1:6379,n2:6379?topology=cluster` (the endpoints are seeds). Every call works:
//!
//! * Multi-key calls are atomic within one hash slot (`capabilities().atomic_scope` is
//!   [`AtomicScope::OneHashSlot`](valkeyrie_core::AtomicScope)): a transaction, `put_many` or
//!   `delete_many` whose keys span slots is refused before sending, and `get_many` reads one
//!   `MGET` per slot. `list`, `list_stream` and `delete_tree` SCAN every primary.
//! * Watches subscribe on every primary and ask the cluster for its primaries every second;
//!   when they change (a failover, a node added) the watch subscribes on the new ones and
//!   sends a fresh snapshot. A slot moving between primaries needs none.
//! * While a slot migrates, a call on a key its source no longer holds fails with a
//!   temporary error until the slot is done: fred does not follow `ASK` redirections, and
//!   stops the client when it gives up; the store starts the client's connection task again.
//! * Replication is asynchronous, as below; `wait_for_replicas` makes each write wait for
//!   that many replicas (`WAIT`, on the write's connection).
//!
//! ## Sentinel and failover
//!
//! `redis://s1:26379,s2:26379,s3:26379?topology=sentinel&sentinel_service=NAME` reaches the
//! primary through the Sentinels and follows a failover by itself: the fault suite kills the
//! primary and sees calls work again on the same handle within 1.6–3.4 s, watches resume
//! with a snapshot, and (in its runs) every contended `atomic_put` land. Redis replicates
//! asynchronously, though: a write the old primary acknowledged but had not yet sent to
//! the replica is lost with it, and a lock record can be too. The lock's holder learns it at its next renewal
//! (the lost signal); a fenced write (`put_if_held`) is refused at once, since the store
//! checks the lock record itself, while plain writes made in between are not protected.
//! Use fenced writes for what a lock guards, and `wait_for_replicas=N` for writes that must
//! survive a failover: each write then returns once N replicas have it (`WAIT N` on the
//! write's connection), or fails with a timeout error after `replica_wait_timeout`.
//!
//! ## Sharing a store with Go services
//!
//! A Go service on `github.com/kvtools/redis` (v1.2.1) shares this store only through the
//! Go store's JSON codec:
//!
//! ```go
//! kv, err := redis.NewWithCodec(ctx, []string{"10.0.0.1:6379"}, &redis.Config{}, &redis.JSONCodec{})
//! ```
//!
//! not `valkeyrie.NewStore(ctx, "redis", …)`, which picks the raw codec: with it the Go
//! store's own `AtomicPut` fails with a Lua error and its locks are lost after a third of
//! their TTL (then its `Unlock` blocks forever). With the JSON codec the two read each
//! other's values, compare-and-set with each other's indexes (this store keeps them below
//! 2^53, where the Go store's Lua compares them exactly), see each other's writes through
//! watches and each other's TTLs, and exclude each other through one lock provided the
//! Rust side sets `delete_on_unlock` (a Go waiter takes only an absent key). The interop
//! suite (`interop/`) checks all of it against the Go library.
//!
//! ## Raw values
//!
//! `redis://host:6379?value_encoding=raw` ([`ValueEncoding::Raw`]) stores each value's bytes
//! as they are, so `redis-cli GET`, other tools, and Go services opened the default way
//! (`valkeyrie.NewStore`, the raw codec) read them. Every call still works, with the same
//! indexes, compare-and-set, locks, fencing, transactions and watches: each key has an index
//! key beside it, `{<key>}\0valkeyrie-index` (`<key>\0valkeyrie-index` for a key with a
//! hash tag of its own), in its hash slot and with its expiry, which lists, watches and
//! `delete_tree` leave out. What it gives up is on [`ValueEncoding::Raw`]: mainly, another
//! client's write does not change the index, so compare-and-set cannot see it. Against the
//! Go store's raw codec the interop suite checks the data cases both ways (trees with binary
//! values, watches, TTLs), with two Go limits: its `List` leaves out empty values, and its
//! indexes are always 0 (its own compare-and-set and lock renewal do not work on raw
//! values). Every handle on one store must use the same encoding: an envelope store reads
//! raw values as foreign ones, and a raw store reads envelopes as plain bytes.
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::Kv;
//! use valkeyrie_redis::RedisConfig;
//!
//! let kv = Kv::new(RedisConfig::default().connect(["127.0.0.1:6379"]).await?);
//! kv.put("config/mode", "blue").await?;
//! assert_eq!(kv.get("config/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

mod client;
mod codec;
mod config;
mod error;
mod lock;
mod scripts;
mod store;
mod txn;
mod watch;

pub use config::{RedisConfig, Topology, ValueEncoding};
pub use store::RedisStore;

/// The crate-private value decoders and the config check, for the fuzz targets of `fuzz/`
/// only (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use valkeyrie_core::{Bytes, KvPair, Result};

    use crate::{RedisConfig, ValueEncoding};

    /// Checks a config opened on `endpoints` as opening the store does, before connecting.
    ///
    /// # Errors
    /// `InvalidConfiguration` naming the field.
    pub fn validate(config: &RedisConfig, endpoints: &[String]) -> Result<()> {
        config.validate(endpoints)
    }

    /// The pair a read finds in the stored bytes of `key` (the envelope layout).
    pub fn decode(key: &str, stored: &[u8]) -> KvPair {
        crate::codec::decode(key, stored)
    }

    /// The pair a read finds in the raw layout: the value and its index key's bytes.
    pub fn decode_raw(key: &str, value: Bytes, index: Option<&[u8]>) -> KvPair {
        crate::codec::decode_raw(key, value, index)
    }

    /// What the scripts store for `value` at `key` once they assign `index` (the raw
    /// layout stores the index apart).
    pub fn stored(encoding: ValueEncoding, key: &str, value: &Bytes, index: u64) -> Vec<u8> {
        let payload = crate::codec::payload(encoding, key, value);
        match encoding {
            ValueEncoding::Envelope => crate::codec::with_index(&payload, index),
            ValueEncoding::Raw => payload.to_vec(),
        }
    }
}

/// The registered name of this store, also its URL scheme.
pub const REDIS: &str = "redis";
/// The registered name for TLS connections (`rediss://`).
pub const REDISS: &str = "rediss";
