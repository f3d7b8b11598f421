//! Watches through keyspace notifications on a dedicated subscriber connection.
//!
//! The watch subscribes first and reads the current state after, so nothing between the
//! two is missed. Each notification names a key; the key is read again and reported as a
//! `Put` when its index moved or a `Delete` when it is gone (several quick writes may show
//! as one `Put` of the latest value). After a reconnect the watch subscribes again, then
//! sends a fresh `Snapshot`, since notifications during the outage are lost; a failed read
//! of one key also ends in a fresh `Snapshot` rather than a gap.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ConfigInterface, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Backend, Key, Spawner};
use valkeyrie_core::{Error, KvPair, Result, WatchEvent, WatchStream};

use crate::client::{glob_escape, RedisClient};
use crate::codec::is_index_key;
use crate::store::{read_state, RedisStore};
use crate::REDIS;

/// The event classes a watch needs: keyspace (`K`), generic (`g`: del, rename, persist),
/// string (`$`: set), expired (`x`) and evicted (`e`).
const NEEDED: [char; 4] = ['g', '$', 'x', 'e'];

/// Checks that the server publishes the keyspace events a watch needs, turning them on when
/// the config allows. A server that refuses CONFIG (managed Redis) is trusted with a warning.
async fn ensure_notifications(store: &RedisStore, key: &Key) -> Result<()> {
    let client = &store.client;
    let read = client
        .request(key.as_str(), client.pool.config_get("notify-keyspace-events"))
        .await;
    let current: HashMap<String, String> = match read {
        Ok(current) => current,
        Err(err) => {
            tracing::warn!(store = REDIS, error = %err, "cannot read notify-keyspace-events; assuming it is set");
            return Ok(());
        }
    };
    let flags = current.get("notify-keyspace-events").cloned().unwrap_or_default();
    let enough = flags.contains('K') && (flags.contains('A') || NEEDED.iter().all(|f| flags.contains(*f)));
    if enough {
        return Ok(());
    }
    if store.config.enable_keyspace_events {
        let wanted = format!("{flags}Kg$xe");
        let set = client.pool.config_set("notify-keyspace-events", wanted);
        return client.request(key.as_str(), set).await;
    }
    let reason = format!(
        "the server has keyspace notifications off (notify-keyspace-events={flags:?}); watches need K, g, $, x and e: \
         run `CONFIG SET notify-keyspace-events KEA` (or set it in redis.conf), or set enable_keyspace_events=true"
    );
    Err(Error::backend(REDIS, key.as_str(), false, reason))
}

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &RedisStore, key: &Key, tree: bool) -> Result<WatchStream> {
    ensure_notifications(store, key).await?;
    let subscriber = Subscriber(store.client.subscriber().await?, store.background().spawner());
    let channel = format!("__keyspace@{}__:{}", store.client.database, glob_escape(key.as_str()));
    let pattern = if tree { format!("{channel}/*") } else { channel };
    let events = subscriber.0.keyspace_event_rx();
    let reconnects = subscriber.0.reconnect_rx();
    store
        .client
        .request(key.as_str(), subscriber.0.psubscribe(pattern))
        .await?;
    let snapshot = read_state(&store.client, key, tree).await?;
    let feeder = Feeder {
        client: store.client.clone(),
        subscriber,
        key: key.clone(),
        tree,
        known: snapshot.iter().map(Seen::entry).collect(),
        database: store.client.database,
        events,
        reconnects,
        resubscribe: false,
        resync: false,
    };
    // Every failure ends the watch: there is nothing to resume from but a new subscription.
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        feeder,
        std::time::Duration::ZERO,
    ))
}

/// Quits the subscriber connection when the watch ends, however it ends.
struct Subscriber(SubscriberClient, Spawner);

impl Drop for Subscriber {
    fn drop(&mut self) {
        let subscriber = self.0.clone();
        self.1.spawn_cleanup(async move {
            let _ = subscriber.quit().await;
        });
    }
}

/// What a watcher last reported of a key: its index and a digest of its value. One write
/// can notify more than once (a `SET … PX` sends `set` and `expire`); the index tells this
/// store's writes apart, the digest those of other clients, which leave the index as it was
/// (0 for a value not in an envelope, unchanged beside a raw value).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    index: u64,
    digest: u64,
}

impl Seen {
    fn of(pair: &KvPair) -> Seen {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        pair.value.hash(&mut hasher);
        Seen {
            index: pair.last_index,
            digest: hasher.finish(),
        }
    }

    fn entry(pair: &KvPair) -> (String, Seen) {
        (pair.key.clone(), Seen::of(pair))
    }
}

/// One watch's subscription and what it has reported.
struct Feeder {
    client: RedisClient,
    subscriber: Subscriber,
    key: Key,
    tree: bool,
    /// What was last reported per existing key.
    known: HashMap<String, Seen>,
    database: u8,
    events: broadcast::Receiver<fred::types::KeyspaceEvent>,
    reconnects: broadcast::Receiver<fred::types::config::Server>,
    /// After a reconnect: subscribe again, then resync.
    resubscribe: bool,
    /// Notifications may have been lost: read everything again.
    resync: bool,
}

#[async_trait]
impl Feed for Feeder {
    async fn next(&mut self) -> Result<Batch> {
        loop {
            if self.resubscribe {
                // Subscribe again first, then read, so no change falls between.
                self.client
                    .request(self.key.as_str(), self.subscriber.0.resubscribe_all())
                    .await?;
                self.resubscribe = false;
                self.resync = true;
            }
            if self.resync {
                let pairs = read_state(&self.client, &self.key, self.tree).await?;
                self.known = pairs.iter().map(Seen::entry).collect();
                self.resync = false;
                return Ok(Batch::Resync(pairs));
            }
            tokio::select! {
                reconnected = self.reconnects.recv() => match reconnected {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.resubscribe = true,
                    Err(RecvError::Closed) => return Err(self.closed()),
                },
                event = self.events.recv() => match event {
                    Ok(event) if event.db == self.database => {
                        let key = event.key.as_str_lossy().into_owned();
                        if let Some(event) = self.changed(&key).await {
                            return Ok(Batch::Events(vec![event]));
                        }
                    }
                    Ok(_) => {}
                    // Notifications were dropped for this slow watcher: read everything again.
                    Err(RecvError::Lagged(_)) => self.resync = true,
                    Err(RecvError::Closed) => return Err(self.closed()),
                },
            }
        }
    }

    fn retryable(&self, _err: &Error) -> bool {
        false
    }
}

impl Feeder {
    fn closed(&self) -> Error {
        let reason = "the subscriber connection closed";
        Error::backend(REDIS, self.key.as_str(), true, reason)
    }

    /// The event for a notification on `key`, if it changed what the consumer knows.
    async fn changed(&mut self, key: &str) -> Option<WatchEvent> {
        // The raw layout's index key changes with its key, whose own notification counts.
        if (!self.tree && key != self.key.as_str()) || is_index_key(key) {
            return None;
        }
        match self.client.read_one(key).await {
            // The change is known but its value is not: start over from a snapshot.
            Err(_) => {
                self.resync = true;
                None
            }
            Ok(Some(pair)) => {
                let seen = Seen::of(&pair);
                let newer = self.known.get(key) != Some(&seen);
                newer.then(|| {
                    self.known.insert(pair.key.clone(), seen);
                    WatchEvent::Put(pair)
                })
            }
            Ok(None) => self.known.remove(key).map(|seen| WatchEvent::Delete {
                key: key.to_owned(),
                last_index: seen.index,
            }),
        }
    }
}
