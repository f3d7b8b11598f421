//! Redis in `valkeyrie-redis`'s layout: each key holds the Go store's JSON envelope
//! `{"Key":"<key>","Value":"<base64>","LastIndex":<n>}`, and a directory `dir` is the keys
//! matching `dir/*`. The recipes ([`RawRedis`]) are written once over the commands they send
//! ([`Commands`]), which two client crates carry: `fred` ([`Fred`], the raw side, the crate
//! `valkeyrie-redis` is built on, with the backend's pool of 4 connections) and `redis`
//! ([`RedisRs`], redis-rs on one multiplexed connection, a second yardstick), so the report
//! tells the client crate's share of a figure from the library's.
//!
//! Where the backend runs a Lua script for every write (taking `LastIndex` from the
//! server's clock), a user writing by hand sends a plain `SET` with `LastIndex` from the
//! client's clock in microseconds (below 2^53, so Lua reads it exactly). Only the
//! compare-and-set and the lock release need a script: each compares the stored
//! envelope's `LastIndex` and writes (or deletes) in one step. A list SCANs `dir/*` and
//! reads the keys with MGET, 500 at a time, like the backend. A watch subscribes to the
//! key's keyspace notifications and, in a task of its own as the backend does, reads the
//! key again on each. A lock is the key itself, written with `SET NX PX 20000` (the
//! backend's default lock TTL) by a script that takes `LastIndex` from the server's clock
//! first, retried every few milliseconds while held, and released by a compare-and-delete
//! on the `LastIndex` written. (The backend's release keeps the value and drops its expiry,
//! which its lock script reads as free; `SET NX` needs the key gone.)
//!
//! The lock's `LastIndex` is its fencing token, which must grow across clients: taken from
//! each client's own clock, a token from a client whose clock lags would be smaller than
//! the holder's before it, and a resource checking tokens would refuse the new holder (or,
//! the other way round, accept a stale one). So the lock takes it from the server, as the
//! backend does; a plain `SET NX` would skip that round through Lua and measure a lock
//! that gives no fencing guarantee.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, ClientLike, ClusterInterface, Config, ConfigInterface, EventInterface, Key, KeysInterface, Pool,
    PubsubInterface, Server, ServerConfig,
};
use fred::types::scripts::Script;
use fred::types::FromValue;
use fred::util::redis_keyslot;
use futures_util::stream::BoxStream;
use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::driver::{BenchResult, Driver, ValueStream};

/// Connections in the pool: `valkeyrie-redis`'s default `pool_size`.
const POOL_SIZE: usize = 4;

/// Keys per SCAN page and per MGET, as in the backend.
const BATCH: usize = 500;

/// How long a lock outlives a holder that never releases it, in milliseconds.
const LOCK_TTL_MS: i64 = 20_000;

/// How long a lock waiter sleeps between two attempts.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Values buffered between a watch's task and a slow consumer.
const WATCH_BUFFER: usize = 64;

/// What the lock's key holds while it is held.
const LOCK_VALUE: &[u8] = b"bench";

/// The Lua helper both scripts share: the stored envelope's `LastIndex` as decimal text,
/// or nil when the key is missing or holds something else.
const STORED_INDEX: &str = r#"
local function stored_index(key)
  local stored = redis.call('GET', key)
  if not stored then return nil end
  local ok, envelope = pcall(cjson.decode, stored)
  if not ok or type(envelope) ~= 'table' then return nil end
  local index = tonumber(envelope['LastIndex'])
  return index and string.format('%.0f', index)
end
"#;

/// `KEYS[1]`, `ARGV[1]` = expected index, `ARGV[2]` = new envelope → 1 if written, else 0.
const COMPARE_AND_SET: &str = r#"
if stored_index(KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// `KEYS[1]`, `ARGV[1]` = the envelope up to its `LastIndex`, `ARGV[2]` = TTL in ms → the
/// index taken from the server's clock if the key was absent and is now locked, else nil.
const LOCK: &str = r#"
local time = redis.call('TIME')
local index = string.format('%.0f', tonumber(time[1]) * 1000000 + tonumber(time[2]))
if not redis.call('SET', KEYS[1], ARGV[1] .. index .. '}', 'NX', 'PX', ARGV[2]) then return false end
return index
"#;

/// `KEYS[1]`, `ARGV[1]` = expected index → 1 if deleted, else 0.
const COMPARE_AND_DELETE: &str = r#"
if stored_index(KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// The Go store's envelope around a value.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    /// The key the envelope is stored at.
    key: String,
    /// The value, base64-encoded (`null` for an empty value in the Go store).
    value: Option<String>,
    /// The modification index.
    last_index: u64,
}

/// The envelope of `value` at `key` with index `index`, as JSON.
fn encode(key: &str, value: &[u8], index: u64) -> BenchResult<String> {
    let envelope = Envelope {
        key: key.to_owned(),
        value: Some(STANDARD.encode(value)),
        last_index: index,
    };
    serde_json::to_string(&envelope).map_err(|e| format!("encode {key}: {e}"))
}

/// The value and index in the envelope `stored` at `key`.
fn decode(key: &str, stored: &[u8]) -> BenchResult<(Bytes, u64)> {
    let envelope: Envelope = serde_json::from_slice(stored).map_err(|e| format!("decode {key}: {e}"))?;
    let value = STANDARD
        .decode(envelope.value.unwrap_or_default())
        .map_err(|e| format!("decode the value of {key}: {e}"))?;
    Ok((Bytes::from(value), envelope.last_index))
}

/// Microseconds since the Unix epoch: the index of a write.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `key` with the glob characters of SCAN MATCH escaped.
fn glob_escape(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The recipes' scripts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Recipe {
    /// [`COMPARE_AND_SET`]: `expected index, envelope` → 1 if written, else 0.
    CompareAndSet,
    /// [`LOCK`]: `envelope up to its index, TTL in ms` → the index, or nil when held.
    Lock,
    /// [`COMPARE_AND_DELETE`]: `expected index` → 1 if deleted, else 0.
    CompareAndDelete,
}

impl Recipe {
    const ALL: [Recipe; 3] = [Recipe::CompareAndSet, Recipe::Lock, Recipe::CompareAndDelete];

    /// The script's Lua text.
    fn lua(self) -> String {
        match self {
            Recipe::CompareAndSet => format!("{STORED_INDEX}{COMPARE_AND_SET}"),
            Recipe::Lock => LOCK.to_owned(),
            Recipe::CompareAndDelete => format!("{STORED_INDEX}{COMPARE_AND_DELETE}"),
        }
    }
}

/// Notifications on a subscribed channel: one item per message, ending when the
/// subscriber connection closes (which dropping the stream does).
pub(crate) type Notifications = BoxStream<'static, ()>;

/// The commands the recipes send, through one client crate. Each call is one request (a
/// script by its SHA, loaded first if the server lacks it).
#[async_trait]
pub(crate) trait Commands: Send + Sync + 'static {
    /// `SET key value`.
    async fn set(&self, key: &str, value: String) -> BenchResult<()>;
    /// `GET key`.
    async fn get(&self, key: &str) -> BenchResult<Option<Bytes>>;
    /// Runs `recipe` on `key` with `args`; its integer reply.
    async fn eval_int(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<i64>;
    /// Runs `recipe` on `key` with `args`; its text reply, `None` for nil.
    async fn eval_text(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<Option<String>>;
    /// Every key matching `pattern`, by `SCAN … COUNT` [`BATCH`] (a key SCAN returns twice
    /// counts once).
    async fn scan(&self, pattern: &str) -> BenchResult<HashSet<String>>;
    /// `MGET keys…` (on a cluster, one per hash slot).
    async fn mget(&self, keys: &[String]) -> BenchResult<Vec<Option<Bytes>>>;
    /// Subscribes to `key`'s keyspace notifications on a connection of its own (on a
    /// cluster, to the node that holds the key).
    async fn subscribe(&self, key: &str) -> BenchResult<Notifications>;
}

/// Turns a client error into text saying what failed on which key.
fn failed<'a, E: std::fmt::Display>(what: &'a str, key: &'a str) -> impl FnOnce(E) -> String + 'a {
    move |err| format!("{what} {key}: {err}")
}

/// `fred`: a pool of connections, a subscriber connection per watch; on one server or on a
/// Redis Cluster.
pub(crate) struct Fred {
    /// The command connections.
    pool: Pool,
    /// What the pool was built from, for the watches' subscriber connections.
    config: Config,
    /// A Redis Cluster: SCAN every primary, MGET per slot, subscribe on the key's node.
    cluster: bool,
    /// The recipes' scripts, in [`Recipe::ALL`] order.
    scripts: [Script; 3],
}

impl Fred {
    /// Connects a pool to `endpoint` (`host:port`).
    pub(crate) async fn connect(endpoint: &str) -> BenchResult<Self> {
        let config =
            Config::from_url(&format!("redis://{endpoint}")).map_err(|e| format!("redis://{endpoint}: {e}"))?;
        let fred = Fred::build(config, false, endpoint).await?;
        fred.pool
            .config_set::<_, _>("notify-keyspace-events", "KEA")
            .await
            .map_err(failed("turn keyspace notifications on at", endpoint))?;
        Ok(fred)
    }

    /// Connects a pool to the Redis Cluster of which `endpoints` (`host:port`) are nodes
    /// (the harness starts them with keyspace notifications on).
    pub(crate) async fn connect_cluster(endpoints: &[String]) -> BenchResult<Self> {
        let hosts = endpoints
            .iter()
            .map(|endpoint| {
                let (host, port) = endpoint
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{endpoint}: not host:port"))?;
                let port = port.parse().map_err(|_| format!("{endpoint}: bad port"))?;
                Ok(Server::new(host, port))
            })
            .collect::<BenchResult<Vec<_>>>()?;
        let config = Config {
            server: ServerConfig::Clustered {
                hosts,
                policy: Default::default(),
            },
            ..Config::default()
        };
        Fred::build(config, true, &endpoints.join(",")).await
    }

    async fn build(config: Config, cluster: bool, endpoints: &str) -> BenchResult<Self> {
        let pool = Builder::from_config(config.clone())
            .build_pool(POOL_SIZE)
            .map_err(failed("build a pool for", endpoints))?;
        pool.init().await.map_err(failed("connect to", endpoints))?;
        Ok(Fred {
            pool,
            config,
            cluster,
            scripts: Recipe::ALL.map(|recipe| Script::from_lua(recipe.lua())),
        })
    }

    async fn eval<R: FromValue>(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<R> {
        self.scripts[recipe as usize]
            .evalsha_with_reload(self.pool.next(), key, args)
            .await
            .map_err(failed("a script on", key))
    }
}

#[async_trait]
impl Commands for Fred {
    async fn set(&self, key: &str, value: String) -> BenchResult<()> {
        self.pool
            .set::<(), _, _>(key, value, None, None, false)
            .await
            .map_err(failed("set", key))
    }

    async fn get(&self, key: &str) -> BenchResult<Option<Bytes>> {
        self.pool.get(key).await.map_err(failed("get", key))
    }

    async fn eval_int(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<i64> {
        self.eval(recipe, key, args).await
    }

    async fn eval_text(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<Option<String>> {
        self.eval(recipe, key, args).await
    }

    async fn scan(&self, pattern: &str) -> BenchResult<HashSet<String>> {
        let mut keys = HashSet::new();
        let client = self.pool.next();
        let count = Some(BATCH as u32);
        let mut scan = if self.cluster {
            client.scan_cluster_buffered(pattern.to_owned(), count, None).boxed()
        } else {
            client.scan_buffered(pattern.to_owned(), count, None).boxed()
        };
        while let Some(key) = scan.next().await {
            keys.insert(key.map_err(failed("scan", pattern))?.as_str_lossy().into_owned());
        }
        Ok(keys)
    }

    async fn mget(&self, keys: &[String]) -> BenchResult<Vec<Option<Bytes>>> {
        if !self.cluster {
            let keys: Vec<Key> = keys.iter().map(|key| Key::from(key.as_str())).collect();
            return self.pool.mget(keys).await.map_err(failed("mget", "a batch"));
        }
        let mut slots: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (at, key) in keys.iter().enumerate() {
            slots.entry(redis_keyslot(key.as_bytes())).or_default().push(at);
        }
        let reads = slots.values().map(|group| {
            let names: Vec<Key> = group.iter().map(|&at| Key::from(keys[at].as_str())).collect();
            self.pool.mget::<Vec<Option<Bytes>>, _>(names)
        });
        let found = futures_util::future::try_join_all(reads)
            .await
            .map_err(failed("mget", "a batch"))?;
        let mut values = vec![None; keys.len()];
        for (group, found) in slots.values().zip(found) {
            for (&at, value) in group.iter().zip(found) {
                values[at] = value;
            }
        }
        Ok(values)
    }

    async fn subscribe(&self, key: &str) -> BenchResult<Notifications> {
        let channel = format!("__keyspace@0__:{key}");
        let mut config = self.config.clone();
        if self.cluster {
            let routing = self.pool.next().cached_cluster_state();
            let node = routing
                .and_then(|routing| routing.get_server(redis_keyslot(key.as_bytes())).cloned())
                .ok_or_else(|| format!("no cluster node known for {key}"))?;
            config.server = ServerConfig::Centralized { server: node };
        }
        let subscriber = Builder::from_config(config)
            .build_subscriber_client()
            .map_err(failed("a subscriber for", &channel))?;
        subscriber
            .init()
            .await
            .map_err(failed("connect a subscriber for", &channel))?;
        let subscription = Subscription(subscriber);
        let events = subscription.0.keyspace_event_rx();
        subscription
            .0
            .subscribe(channel.as_str())
            .await
            .map_err(failed("subscribe to", &channel))?;
        // The subscription lives in the stream's state: dropping the stream quits it.
        Ok(
            stream::unfold((events, subscription), |(mut events, subscription)| async move {
                match events.recv().await {
                    // After missing some, the key is read again all the same.
                    Ok(_) | Err(RecvError::Lagged(_)) => Some(((), (events, subscription))),
                    Err(RecvError::Closed) => None,
                }
            })
            .boxed(),
        )
    }
}

/// A fred subscriber connection, quit when the watch using it is dropped.
struct Subscription(SubscriberClient);

impl Drop for Subscription {
    fn drop(&mut self) {
        let subscriber = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// redis-rs: one multiplexed connection (cloned per request, as its docs advise), a
/// pub/sub connection per watch.
pub(crate) struct RedisRs {
    client: redis::Client,
    connection: redis::aio::MultiplexedConnection,
    /// The recipes' scripts, in [`Recipe::ALL`] order.
    scripts: [redis::Script; 3],
}

impl RedisRs {
    /// Connects to `endpoint` (`host:port`).
    pub(crate) async fn connect(endpoint: &str) -> BenchResult<Self> {
        let client = redis::Client::open(format!("redis://{endpoint}")).map_err(failed("redis-rs for", endpoint))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed("connect redis-rs to", endpoint))?;
        Ok(RedisRs {
            client,
            connection,
            scripts: Recipe::ALL.map(|recipe| redis::Script::new(&recipe.lua())),
        })
    }

    async fn eval<T: redis::FromRedisValue>(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<T> {
        let mut invocation = self.scripts[recipe as usize].key(key);
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(failed("a script on", key))
    }
}

#[async_trait]
impl Commands for RedisRs {
    async fn set(&self, key: &str, value: String) -> BenchResult<()> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(failed("set", key))
    }

    async fn get(&self, key: &str) -> BenchResult<Option<Bytes>> {
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(failed("get", key))?;
        Ok(stored.map(Bytes::from))
    }

    async fn eval_int(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<i64> {
        self.eval(recipe, key, args).await
    }

    async fn eval_text(&self, recipe: Recipe, key: &str, args: Vec<String>) -> BenchResult<Option<String>> {
        self.eval(recipe, key, args).await
    }

    async fn scan(&self, pattern: &str) -> BenchResult<HashSet<String>> {
        let mut keys = HashSet::new();
        let mut cursor = 0_u64;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed("scan", pattern))?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn mget(&self, keys: &[String]) -> BenchResult<Vec<Option<Bytes>>> {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(failed("mget", "a batch"))?;
        Ok(values.into_iter().map(|value| value.map(Bytes::from)).collect())
    }

    async fn subscribe(&self, key: &str) -> BenchResult<Notifications> {
        let channel = format!("__keyspace@0__:{key}");
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(failed("a subscriber for", &channel))?;
        pubsub
            .subscribe(&channel)
            .await
            .map_err(failed("subscribe to", &channel))?;
        Ok(pubsub.into_on_message().map(drop).boxed())
    }
}

/// The raw recipes over one client crate's commands.
pub(crate) struct RawRedis<C> {
    commands: std::sync::Arc<C>,
}

impl<C: Commands> RawRedis<C> {
    /// The recipes over `commands`.
    pub(crate) fn new(commands: C) -> Self {
        RawRedis {
            commands: std::sync::Arc::new(commands),
        }
    }

    /// The value and index at `key`, which exists.
    async fn read_existing(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        read(self.commands.as_ref(), key)
            .await?
            .ok_or_else(|| format!("{key} not found"))
    }
}

/// GET `key` and decode its envelope.
async fn read(commands: &impl Commands, key: &str) -> BenchResult<Option<(Bytes, u64)>> {
    let stored = commands.get(key).await?;
    stored.map(|stored| decode(key, &stored)).transpose()
}

#[async_trait]
impl<C: Commands> Driver for RawRedis<C> {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        let envelope = encode(key, &value, now_micros())?;
        self.commands.set(key, envelope).await
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.read_existing(key).await?.0)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        self.read_existing(key).await
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        // Strictly above the expected index, so the next compare-and-set sees a change.
        let envelope = encode(key, &value, now_micros().max(index + 1))?;
        let written = self
            .commands
            .eval_int(Recipe::CompareAndSet, key, vec![index.to_string(), envelope])
            .await?;
        Ok(written == 1)
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        let keys: Vec<String> = self
            .commands
            .scan(&format!("{}/*", glob_escape(dir)))
            .await?
            .into_iter()
            .collect();
        let mut pairs = Vec::with_capacity(keys.len());
        for batch in keys.chunks(BATCH) {
            let values = self.commands.mget(batch).await?;
            for (key, stored) in batch.iter().zip(values) {
                // A key deleted between SCAN and MGET is skipped.
                if let Some(stored) = stored {
                    let (value, _) = decode(key, &stored)?;
                    pairs.push((key.as_str(), value));
                }
            }
        }
        Ok(pairs.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let notifications = self.commands.subscribe(key).await?;
        // Read after subscribing, so no change falls between the two.
        let (current, index) = self.read_existing(key).await?;
        let watch = Watch {
            commands: std::sync::Arc::clone(&self.commands),
            key: key.to_owned(),
            notifications,
            last_index: index,
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        // The channel is new and empty: the current value fits.
        let _ = sender.try_send(Ok(current));
        tokio::spawn(watch.feed(sender));
        Ok(Box::pin(stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let envelope = encode(key, LOCK_VALUE, 0)?;
        // The envelope up to its index: `LastIndex` is its last field.
        let prefix = envelope
            .strip_suffix("0}")
            .ok_or_else(|| format!("unexpected envelope {envelope}"))?
            .to_owned();
        let index = loop {
            let args = vec![prefix.clone(), LOCK_TTL_MS.to_string()];
            if let Some(index) = self.commands.eval_text(Recipe::Lock, key, args).await? {
                break index;
            }
            tokio::time::sleep(LOCK_RETRY).await;
        };
        let released = self
            .commands
            .eval_int(Recipe::CompareAndDelete, key, vec![index])
            .await?;
        if released == 1 {
            Ok(())
        } else {
            Err(format!("the lock on {key} was lost before its release"))
        }
    }
}

/// The task behind one watch stream.
struct Watch<C> {
    /// Where the key is read again on each notification.
    commands: std::sync::Arc<C>,
    /// The watched key.
    key: String,
    /// The key's keyspace notifications.
    notifications: Notifications,
    /// The index of the value last delivered.
    last_index: u64,
}

impl<C: Commands> Watch<C> {
    /// Sends each new value of the key to `sender`, until the stream is dropped, the
    /// subscriber connection closes or a read fails.
    async fn feed(mut self, sender: mpsc::Sender<BenchResult<Bytes>>) {
        loop {
            let item = tokio::select! {
                () = sender.closed() => return,
                item = self.next() => item,
            };
            let Some(item) = item else { return };
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return;
            }
        }
    }

    /// The next value; `None` once the subscriber connection is gone.
    async fn next(&mut self) -> Option<BenchResult<Bytes>> {
        loop {
            self.notifications.next().await?;
            match read(self.commands.as_ref(), &self.key).await {
                Ok(Some((value, index))) if index != self.last_index => {
                    self.last_index = index;
                    return Some(Ok(value));
                }
                // Deleted, or a notification of a value already delivered.
                Ok(_) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }
}
