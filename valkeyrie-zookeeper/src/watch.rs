//! Watches through ZooKeeper persistent watches (recursive for a tree), set before the
//! initial read so no change between the two is missed. Each event's node is read again
//! and reported as a `Put` when its index moved, a `Delete` when it is gone or no longer a
//! key. After a reconnect the watch sends a fresh `Snapshot` (events may have been lost
//! while disconnected); an expired or closed session ends it with an error item.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use valkeyrie_core::{Backend, Error, Key, KvPair, Result, WatchEvent, WatchStream};
use zookeeper_client::{AddWatchMode, EventType, PersistentWatcher, SessionState};

use crate::client::{decode, index_of, is_lock_node, key_of, path_of, ZkClient};
use crate::store::ZookeeperStore;
use crate::ZOOKEEPER;

/// Items buffered between the feeder and a slow consumer.
const BUFFER: usize = 64;

/// How long a watch keeps trying to read a fresh snapshot after a reconnect.
const RESYNC_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &ZookeeperStore, key: &Key, tree: bool) -> Result<WatchStream> {
    let path = path_of(key.as_str());
    let mode = if tree {
        AddWatchMode::PersistentRecursive
    } else {
        AddWatchMode::Persistent
    };
    let mut feeder = Feeder {
        zk: store.zk.clone(),
        key: key.clone(),
        path,
        mode,
        tree,
        concurrency: store.config.concurrency,
        known: HashMap::new(),
    };
    let watcher = feeder.set_watch().await?;
    let snapshot = feeder.read().await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    // The channel is new and empty: the snapshot always fits.
    let _ = sender.try_send(Ok(WatchEvent::Snapshot(snapshot)));
    store.background().spawn(feeder.run(watcher, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

struct Feeder {
    zk: ZkClient,
    key: Key,
    /// The watched node, and how (recursive for a tree), to set the watch again.
    path: String,
    mode: AddWatchMode,
    tree: bool,
    concurrency: usize,
    /// The index last reported per existing key.
    known: HashMap<String, u64>,
}

impl Feeder {
    /// The current state, remembered as what the consumer knows.
    async fn read(&mut self) -> Result<Vec<KvPair>> {
        let paths = if self.tree {
            self.zk.walk("watch", &self.key, false, self.concurrency).await?
        } else {
            vec![path_of(self.key.as_str())]
        };
        let pairs = self.zk.read_keys("watch", paths, self.concurrency).await?;
        self.known = pairs.iter().map(|p| (p.key.clone(), p.last_index)).collect();
        Ok(pairs)
    }

    async fn run(mut self, mut watcher: PersistentWatcher, sender: mpsc::Sender<Result<WatchEvent>>) {
        loop {
            let event = tokio::select! {
                () = sender.closed() => return,
                event = watcher.changed() => event,
            };
            let item = match event.event_type {
                EventType::Session => match event.session_state {
                    SessionState::SyncConnected => {
                        // A restarted server has forgotten the watch, and the client does
                        // not always set it again: set it before reading, so no change
                        // falls between the two. The new watcher replaces the old one.
                        // If that fails the old watcher goes on, and the next reconnect
                        // tries again.
                        if let Ok(renewed) = self.set_watch().await {
                            watcher = renewed;
                        }
                        Some(self.resync().await.map(WatchEvent::Snapshot))
                    }
                    state if state.is_terminated() => {
                        let reason = format!("the ZooKeeper session ended ({state:?})");
                        Some(Err(Error::backend(
                            ZOOKEEPER,
                            "watch",
                            self.key.as_str(),
                            false,
                            reason,
                        )))
                    }
                    _ => None,
                },
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                    self.changed(&event.path).await
                }
                _ => None,
            };
            let Some(item) = item else { continue };
            let last = item.is_err();
            if sender.send(item).await.is_err() || last {
                return;
            }
        }
    }

    /// [`Feeder::read`], retried while it fails for a reason that may pass (a connection just
    /// restored, a server still starting), for up to [`RESYNC_FOR`]: the session, and with it
    /// the watch, is alive, so a slow read is no reason to end the watch.
    async fn resync(&mut self) -> Result<Vec<KvPair>> {
        let deadline = tokio::time::Instant::now() + RESYNC_FOR;
        loop {
            match self.read().await {
                Err(err) if err.is_temporary() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Sets the persistent watch on the current session.
    async fn set_watch(&self) -> Result<PersistentWatcher> {
        let client = self.zk.client()?;
        self.zk
            .request("watch", self.key.as_str(), client.watch(&self.path, self.mode))
            .await
    }

    /// The event for a change at `path`, if it changed what the consumer knows.
    async fn changed(&mut self, path: &str) -> Option<Result<WatchEvent>> {
        if path.rsplit('/').next().is_some_and(is_lock_node) {
            return None;
        }
        let key = key_of(path);
        let client = match self.zk.client() {
            Ok(client) => client,
            Err(err) => return Some(Err(err)),
        };
        match self.zk.request("watch", &key, client.get_data(path)).await {
            Ok((data, stat)) => match decode(data) {
                Some(value) => {
                    let index = index_of(&stat);
                    if self.known.get(&key) == Some(&index) {
                        return None;
                    }
                    self.known.insert(key.clone(), index);
                    Some(Ok(WatchEvent::Put(KvPair::new(key, value, index))))
                }
                // A directory node: not (or no longer) a key.
                None => self
                    .known
                    .remove(&key)
                    .map(|last_index| Ok(WatchEvent::Delete { key, last_index })),
            },
            Err(Error::KeyNotFound { .. }) => self
                .known
                .remove(&key)
                .map(|last_index| Ok(WatchEvent::Delete { key, last_index })),
            // The change is known but not its value: start over from a snapshot.
            Err(_) => Some(self.resync().await.map(WatchEvent::Snapshot)),
        }
    }
}
