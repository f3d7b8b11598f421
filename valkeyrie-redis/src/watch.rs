//! Watches through keyspace notifications on a dedicated subscriber connection.
//!
//! The watch subscribes first and reads the current state after, so nothing between the
//! two is missed. Each notification names a key; the key is read again and reported as a
//! `Put` when its index moved or a `Delete` when it is gone (several quick writes may show
//! as one `Put` of the latest value). After a reconnect fred re-subscribes, and the watch
//! sends a fresh `Snapshot`, since notifications during the outage are lost.

use std::collections::HashMap;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ConfigInterface, EventInterface, KeysInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use valkeyrie_core::{Backend, Error, Key, KvPair, Result, WatchEvent, WatchStream};

use crate::client::{glob_escape, RedisClient};
use crate::store::{read_state, RedisStore};
use crate::REDIS;

/// Items buffered between the feeder and a slow consumer.
const BUFFER: usize = 64;

/// Checks that the server publishes keyspace events for the commands the store uses (`K`
/// plus generic, string and expiry events), turning them on when the config allows.
async fn ensure_notifications(store: &RedisStore, key: &Key) -> Result<()> {
    let client = &store.client;
    let current: HashMap<String, String> = client
        .request("watch", key.as_str(), client.pool.config_get("notify-keyspace-events"))
        .await?;
    let flags = current.get("notify-keyspace-events").cloned().unwrap_or_default();
    let enough = flags.contains('K') && (flags.contains('A') || ["g", "$", "x"].iter().all(|f| flags.contains(f)));
    if enough {
        return Ok(());
    }
    if store.config.enable_keyspace_events {
        let wanted = format!("{flags}Kg$x");
        return client
            .request(
                "watch",
                key.as_str(),
                client.pool.config_set("notify-keyspace-events", wanted),
            )
            .await;
    }
    let reason = format!(
        "the server has keyspace notifications off (notify-keyspace-events={flags:?}); watches need K, g, $ and x: \
         run `CONFIG SET notify-keyspace-events KEA` (or set it in redis.conf), or set enable_keyspace_events=true"
    );
    Err(Error::backend(REDIS, "watch", key.as_str(), false, reason))
}

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &RedisStore, key: &Key, tree: bool) -> Result<WatchStream> {
    ensure_notifications(store, key).await?;
    let subscriber = Subscriber(store.client.subscriber().await?);
    let prefix = format!("__keyspace@{}__:", store.client.database);
    let pattern = if tree {
        format!("{prefix}{}/*", glob_escape(key.as_str()))
    } else {
        format!("{prefix}{}", glob_escape(key.as_str()))
    };
    let events = subscriber.0.keyspace_event_rx();
    let reconnects = subscriber.0.reconnect_rx();
    let resubscriber = subscriber.0.manage_subscriptions();
    store
        .client
        .request("watch", key.as_str(), subscriber.0.psubscribe(pattern))
        .await?;
    let snapshot = read_state(&store.client, key, tree).await?;
    let known = snapshot.iter().map(|p| (p.key.clone(), p.last_index)).collect();
    let (sender, receiver) = mpsc::channel(BUFFER);
    // The channel is new and empty: the snapshot always fits.
    let _ = sender.try_send(Ok(WatchEvent::Snapshot(snapshot)));
    let feeder = Feeder {
        client: store.client.clone(),
        key: key.clone(),
        tree,
        database: store.client.database,
        known,
    };
    store.background().spawn(async move {
        let _subscriber = subscriber;
        feeder.run(events, reconnects, sender).await;
        resubscriber.abort();
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Quits the subscriber connection when the watch ends.
struct Subscriber(SubscriberClient);

impl Drop for Subscriber {
    fn drop(&mut self) {
        let subscriber = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

struct Feeder {
    client: RedisClient,
    key: Key,
    tree: bool,
    database: u8,
    /// The index last reported per existing key.
    known: HashMap<String, u64>,
}

type Sender = mpsc::Sender<Result<WatchEvent>>;

impl Feeder {
    async fn run(
        mut self,
        mut events: tokio::sync::broadcast::Receiver<fred::types::KeyspaceEvent>,
        mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
        sender: Sender,
    ) {
        loop {
            let item = tokio::select! {
                () = sender.closed() => return,
                reconnected = reconnects.recv() => match reconnected {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.resync().await,
                    Err(RecvError::Closed) => return,
                },
                event = events.recv() => match event {
                    Ok(event) if event.db == self.database => {
                        let key = event.key.as_str_lossy().into_owned();
                        self.changed(&key).await
                    }
                    Ok(_) => continue,
                    // Notifications were dropped for this slow watcher: read everything again.
                    Err(RecvError::Lagged(_)) => self.resync().await,
                    Err(RecvError::Closed) => {
                        let reason = "the subscriber connection closed";
                        Some(Err(Error::backend(REDIS, "watch", self.key.as_str(), true, reason)))
                    }
                },
            };
            let Some(item) = item else { continue };
            let last = item.is_err();
            if sender.send(item).await.is_err() || last {
                return;
            }
        }
    }

    /// The event for a notification on `key`, if it changed what the consumer knows.
    async fn changed(&mut self, key: &str) -> Option<Result<WatchEvent>> {
        if !self.tree && key != self.key.as_str() {
            return None;
        }
        let read = self
            .client
            .request("watch", key, self.client.pool.get::<Option<Bytes>, _>(key))
            .await;
        match read {
            Err(err) => Some(Err(err)),
            Ok(Some(stored)) => {
                let pair = crate::codec::decode(key, &stored);
                let newer = self
                    .known
                    .get(key)
                    .is_none_or(|&index| index != pair.last_index || index == 0);
                newer.then(|| {
                    self.known.insert(pair.key.clone(), pair.last_index);
                    Ok(WatchEvent::Put(pair))
                })
            }
            Ok(None) => self.known.remove(key).map(|last_index| {
                Ok(WatchEvent::Delete {
                    key: key.to_owned(),
                    last_index,
                })
            }),
        }
    }

    /// A fresh snapshot, after notifications may have been lost.
    async fn resync(&mut self) -> Option<Result<WatchEvent>> {
        match read_state(&self.client, &self.key, self.tree).await {
            Ok(pairs) => {
                self.known = pairs.iter().map(|p: &KvPair| (p.key.clone(), p.last_index)).collect();
                Some(Ok(WatchEvent::Snapshot(pairs)))
            }
            Err(err) => Some(Err(err)),
        }
    }
}
