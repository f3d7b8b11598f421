//! Watches through keyspace notifications on dedicated subscriber connections.
//!
//! Redis publishes a key's notifications only to the clients of the node that holds it, so
//! a watch subscribes where its keys live: on the one server (or the primary Sentinel
//! names), and on a cluster on every primary. The watch subscribes first and reads the
//! current state after, so nothing between the two is missed. Each notification names a
//! key; the key is read again and reported as a `Put` when its index moved or a `Delete`
//! when it is gone (several quick writes may show as one `Put` of the latest value).
//!
//! A fresh `Snapshot` replaces the watcher's view whenever notifications may have been
//! lost, and only then: after a subscriber connection came back (notifications during the
//! outage are gone), when notifications were dropped for a slow watcher, when the read of
//! a changed key failed, and on a cluster when its primaries changed. A watch on a cluster
//! asks the cluster for its primaries every [`TOPOLOGY_PERIOD`]; when they changed (a
//! failover, a node added or removed) it subscribes on the new ones, lets the old ones go,
//! and resyncs, since writes on a new primary before its subscription cannot be ruled out.
//! A slot moving between primaries it already listens to needs none of that in itself: the
//! source publishes `del`, the target `restore`, and the re-read finds the key as it was
//! (a re-read that meets the migration half done can fail, fred not following `ASK`, and
//! that one resyncs). A snapshot read while a slot moves to a node that serves no slot
//! yet misses the keys already there; their notifications bring them as `Put`s after.
//!
//! A failure with a temporary error (a server restarting, a cluster failing over) is
//! retried, as in every backend, for the store's `watch_retry_for`; so is a subscriber
//! connection that is down (fred reconnects it by itself), so that a watch cut off for
//! longer ends with an error rather than waiting in silence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::PoisonError;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ConfigInterface, EventInterface, PubsubInterface};
use fred::prelude::Server;
use fred::types::KeyspaceEvent;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
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

/// How often a watch on a cluster asks the cluster for its primaries.
const TOPOLOGY_PERIOD: Duration = Duration::from_secs(1);

/// Checks that the node `subscriber` reaches publishes the keyspace events a watch needs,
/// turning them on when the config allows. A server that refuses CONFIG (managed Redis)
/// is trusted with a warning.
async fn ensure_notifications(
    client: &RedisClient,
    subscriber: &SubscriberClient,
    key: &Key,
    enable: bool,
) -> Result<()> {
    let read = client
        .request(key.as_str(), subscriber.config_get("notify-keyspace-events"))
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
    if enable {
        let wanted = format!("{flags}Kg$xe");
        let set = subscriber.config_set("notify-keyspace-events", wanted);
        return client.request(key.as_str(), set).await;
    }
    let reason = format!(
        "the server has keyspace notifications off (notify-keyspace-events={flags:?}); watches need K, g, $, x and e: \
         run `CONFIG SET notify-keyspace-events KEA` (or set it in redis.conf; on a cluster, on every primary), or set \
         enable_keyspace_events=true"
    );
    Err(Error::backend(REDIS, key.as_str(), false, reason))
}

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &RedisStore, key: &Key, tree: bool) -> Result<WatchStream> {
    let channel = format!("__keyspace@{}__:{}", store.client.database, glob_escape(key.as_str()));
    let mut subscriptions = Subscriptions {
        client: store.client.clone(),
        key: key.clone(),
        pattern: if tree { format!("{channel}/*") } else { channel },
        enable_keyspace_events: store.config.enable_keyspace_events,
        spawner: store.background().spawner(),
        nodes: BTreeMap::new(),
        new_notices: std::sync::Mutex::new(Vec::new()),
        changed: false,
    };
    subscriptions.follow().await?;
    let notices = subscriptions.take_notices().into_iter().collect();
    let snapshot = read_state(&store.client, key, tree).await?;
    let mut topology = tokio::time::interval(TOPOLOGY_PERIOD);
    topology.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feeder = Feeder {
        client: store.client.clone(),
        subscriptions,
        notices,
        key: key.clone(),
        tree,
        known: snapshot.iter().map(Seen::entry).collect(),
        database: store.client.database,
        topology,
        resubscribe: Vec::new(),
        down: BTreeSet::new(),
        resync: false,
    };
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        feeder,
        store.config.watch_retry_for,
    ))
}

/// A subscriber connection that quits when the watch lets it go, however it ends.
struct Subscriber(SubscriberClient, Spawner);

impl Drop for Subscriber {
    fn drop(&mut self) {
        let subscriber = self.0.clone();
        self.1.spawn_cleanup(async move {
            let _ = subscriber.quit().await;
        });
    }
}

/// What the subscriber connections brought.
enum Notice {
    /// A keyspace notification.
    Event(KeyspaceEvent),
    /// The connection to this node came back (or its reconnections were missed): its
    /// subscriptions are gone.
    Reconnected(String),
    /// The connection to this node failed (fred reconnects by itself).
    Down(String),
    /// Notifications were dropped for this slow watcher.
    Lagged,
    /// The subscriber connection to this node closed for good (the watch let it go, or
    /// it failed).
    Closed(String),
}

/// `receiver` of the connection to `node` as a stream of notices, `notice` making one of
/// each value (`None`: values were dropped), ending after [`Notice::Closed`].
fn notices_of<T>(
    node: &str,
    receiver: broadcast::Receiver<T>,
    notice: impl Fn(Option<T>) -> Notice + Send + 'static,
) -> BoxStream<'static, Notice>
where
    T: Clone + Send + 'static,
{
    let node = node.to_owned();
    futures_util::stream::unfold(Some((receiver, notice, node)), |state| async move {
        let (mut receiver, notice, node) = state?;
        let item = match receiver.recv().await {
            Ok(value) => notice(Some(value)),
            Err(RecvError::Lagged(_)) => notice(None),
            Err(RecvError::Closed) => return Some((Notice::Closed(node), None)),
        };
        Some((item, Some((receiver, notice, node))))
    })
    .boxed()
}

/// Everything the subscriber connection to `node` brings. Taken before it subscribes, so
/// that nothing it reports afterwards (a reconnect, say) is missed.
fn notices(node: &str, subscriber: &SubscriberClient) -> [BoxStream<'static, Notice>; 3] {
    let (reconnected, down) = (node.to_owned(), node.to_owned());
    [
        notices_of(node, subscriber.keyspace_event_rx(), |event| {
            event.map_or(Notice::Lagged, Notice::Event)
        }),
        notices_of(node, subscriber.reconnect_rx(), move |_| {
            Notice::Reconnected(reconnected.clone())
        }),
        notices_of(node, subscriber.error_rx(), move |_| Notice::Down(down.clone())),
    ]
}

/// The subscriber connections of one watch, by node (`""` outside a cluster).
struct Subscriptions {
    client: RedisClient,
    key: Key,
    /// The keyspace channel pattern every node is subscribed to.
    pattern: String,
    enable_keyspace_events: bool,
    spawner: Spawner,
    nodes: BTreeMap<String, Subscriber>,
    /// What the connections subscribed since the last [`Subscriptions::take_notices`]
    /// bring. In a mutex only to make this `Sync` (a stream is not), so that `&self` may be
    /// held across an await; only `&mut self` touches it.
    new_notices: std::sync::Mutex<Vec<BoxStream<'static, Notice>>>,
    /// The nodes changed since `follow` last said so (kept across a failed `follow`).
    changed: bool,
}

impl Subscriptions {
    /// Subscribes on every node the watch needs now (the primaries of a cluster, or the one
    /// server) and lets go of the others; whether anything changed, in which case the
    /// caller [takes](Self::take_notices) the new connections' notices and reads the state
    /// again. The notices of a connection let go end with [`Notice::Closed`].
    async fn follow(&mut self) -> Result<bool> {
        let wanted: Vec<(String, Option<Server>)> = if self.client.cluster {
            let primaries = self.client.primaries(self.key.as_str()).await?;
            primaries
                .into_iter()
                .map(|node| (format!("{}:{}", node.host, node.port), Some(node)))
                .collect()
        } else {
            vec![(String::new(), None)]
        };
        let before = self.nodes.len();
        self.nodes
            .retain(|name, _| wanted.iter().any(|(wanted, _)| wanted == name));
        self.changed |= self.nodes.len() != before;
        for (name, node) in wanted {
            if !self.nodes.contains_key(&name) {
                let (subscriber, notices) = self.subscribe(&name, node).await?;
                self.nodes.insert(name, subscriber);
                self.new_notices
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(notices);
                self.changed = true;
            }
        }
        Ok(std::mem::take(&mut self.changed))
    }

    /// What the connections subscribed since the last call bring.
    fn take_notices(&mut self) -> Vec<BoxStream<'static, Notice>> {
        std::mem::take(self.new_notices.get_mut().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the watch still listens to `node`.
    fn listens_to(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// A subscriber connection on `node` (`None`: as configured) named `name`, subscribed
    /// to the pattern, and what it brings.
    async fn subscribe(
        &self,
        name: &str,
        node: Option<Server>,
    ) -> Result<(Subscriber, [BoxStream<'static, Notice>; 3])> {
        let subscriber = Subscriber(self.client.subscriber(node).await?, self.spawner.clone());
        let notices = notices(name, &subscriber.0);
        ensure_notifications(&self.client, &subscriber.0, &self.key, self.enable_keyspace_events).await?;
        let subscribe = subscriber.0.psubscribe(self.pattern.clone());
        self.client.request(self.key.as_str(), subscribe).await?;
        Ok((subscriber, notices))
    }

    /// Whether the watch listens to `node` and its connection is down.
    fn is_down(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|subscriber| !subscriber.0.is_connected())
    }

    /// Subscribes again on `node` after its connection came back (gone from the watch's
    /// nodes: nothing to do).
    async fn resubscribe(&self, node: &str) -> Result<()> {
        match self.nodes.get(node) {
            Some(subscriber) => {
                let resubscribe = subscriber.0.resubscribe_all();
                self.client.request(self.key.as_str(), resubscribe).await
            }
            None => Ok(()),
        }
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

/// One watch's subscriptions and what it has reported.
struct Feeder {
    client: RedisClient,
    subscriptions: Subscriptions,
    notices: SelectAll<BoxStream<'static, Notice>>,
    key: Key,
    tree: bool,
    /// What was last reported per existing key.
    known: HashMap<String, Seen>,
    database: u8,
    /// When a watch on a cluster next asks for its primaries.
    topology: tokio::time::Interval,
    /// Nodes whose connection came back: subscribe there again, then resync.
    resubscribe: Vec<String>,
    /// Nodes whose connection failed: until each is back (or, on a cluster, no longer
    /// a primary), each attempt fails with a temporary error, so that a watch cut off for
    /// longer than `watch_retry_for` ends.
    down: BTreeSet<String>,
    /// Notifications may have been lost: read everything again.
    resync: bool,
}

#[async_trait]
impl Feed for Feeder {
    async fn next(&mut self) -> Result<Batch> {
        loop {
            if !self.down.is_empty() {
                if self.client.cluster {
                    self.follow().await?;
                }
                let subscriptions = &self.subscriptions;
                self.down.retain(|node| subscriptions.is_down(node));
                if let Some(node) = self.down.first() {
                    let reason = match node.as_str() {
                        "" => "the subscriber connection is down; reconnecting".to_owned(),
                        node => format!("the subscriber connection to {node} is down; reconnecting"),
                    };
                    return Err(Error::backend(REDIS, self.key.as_str(), true, reason));
                }
            }
            // Subscribe again first, then read, so no change falls between. A failure
            // keeps the node listed, for the retry.
            while let Some(node) = self.resubscribe.last() {
                self.subscriptions.resubscribe(node).await?;
                self.resubscribe.pop();
                self.resync = true;
            }
            if self.resync {
                let pairs = read_state(&self.client, &self.key, self.tree).await?;
                self.known = pairs.iter().map(Seen::entry).collect();
                self.resync = false;
                return Ok(Batch::Resync(pairs));
            }
            let cluster = self.client.cluster;
            tokio::select! {
                notice = self.notices.next() => match notice {
                    Some(Notice::Event(event)) if event.db == self.database => {
                        let key = event.key.as_str_lossy().into_owned();
                        if let Some(event) = self.changed(&key).await {
                            return Ok(Batch::Events(vec![event]));
                        }
                    }
                    Some(Notice::Event(_)) => {}
                    Some(Notice::Reconnected(node)) => self.resubscribe.push(node),
                    Some(Notice::Down(node)) => {
                        self.down.insert(node);
                    }
                    Some(Notice::Lagged) => self.resync = true,
                    // A connection the watch let go ends so; any other is an error.
                    Some(Notice::Closed(node)) if !self.subscriptions.listens_to(&node) => {}
                    Some(Notice::Closed(_)) | None => return Err(self.closed()),
                },
                _ = self.topology.tick(), if cluster => self.follow().await?,
            }
        }
    }
}

impl Feeder {
    /// Follows the cluster's primaries: the new connections' notices join the others, and
    /// a change means a resync (writes on a new primary before its subscription cannot be
    /// ruled out).
    async fn follow(&mut self) -> Result<()> {
        let changed = self.subscriptions.follow().await;
        // Also after a failure: what did subscribe brings notices all the same.
        self.notices.extend(self.subscriptions.take_notices());
        self.resync |= changed?;
        Ok(())
    }

    fn closed(&self) -> Error {
        let reason = "the subscriber connection closed for good";
        Error::backend(REDIS, self.key.as_str(), false, reason)
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
