//! Watches through ZooKeeper persistent watches (recursive for a tree), set before the
//! initial read so no change between the two is missed. Each event's node is read again
//! and reported as a `Put` when its index moved, a `Delete` when it is gone or no longer a
//! key. After a reconnect the watch sends a fresh `Snapshot` (events may have been lost
//! while disconnected), retrying the read for up to 30 s; an expired or closed session ends
//! it with an error item.

use std::collections::HashMap;

use async_trait::async_trait;
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Backend, Key};
use valkeyrie_core::{Error, KvPair, Result, WatchEvent, WatchStream};
use zookeeper_client::{AddWatchMode, EventType, PersistentWatcher, SessionState};

use crate::client::ZkClient;
use crate::node::{decode, index_of, is_lock_node, key_of, path_of};
use crate::store::ZookeeperStore;
use crate::ZOOKEEPER;

/// How long a watch keeps trying to read a fresh snapshot after a reconnect: the session,
/// and with it the watch, is alive, so a slow read is no reason to end the watch.
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
        watcher: None,
        resync: false,
    };
    feeder.watcher = Some(feeder.set_watch().await?);
    let snapshot = feeder.read().await?;
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        feeder,
        RESYNC_FOR,
    ))
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
    /// The persistent watch; always set once the watch started.
    watcher: Option<PersistentWatcher>,
    /// Events may have been lost: read everything again.
    resync: bool,
}

impl Feeder {
    /// The current state, remembered as what the consumer knows.
    async fn read(&mut self) -> Result<Vec<KvPair>> {
        let paths = if self.tree {
            self.zk.walk(&self.key, false, self.concurrency).await?
        } else {
            vec![path_of(self.key.as_str())]
        };
        let pairs = self.zk.read_keys(paths, self.concurrency).await?;
        self.known = pairs.iter().map(|p| (p.key.clone(), p.last_index)).collect();
        Ok(pairs)
    }

    /// Sets the persistent watch on the current session.
    async fn set_watch(&self) -> Result<PersistentWatcher> {
        let client = self.zk.client()?;
        self.zk
            .request(self.key.as_str(), client.watch(&self.path, self.mode))
            .await
    }

    /// The event for a change at `path`, if it changed what the consumer knows.
    async fn changed(&mut self, path: &str) -> Result<Option<WatchEvent>> {
        if path.rsplit('/').next().is_some_and(is_lock_node) {
            return Ok(None);
        }
        let key = key_of(path);
        let client = match self.zk.client() {
            Ok(client) => client,
            Err(err) => {
                // The change is known but not its value: a retry starts from a snapshot.
                self.resync = true;
                return Err(err);
            }
        };
        Ok(match self.zk.request(&key, client.get_data(path)).await {
            Ok((data, stat)) => match decode(data) {
                Some(value) => {
                    let index = index_of(&stat);
                    if self.known.get(&key) == Some(&index) {
                        return Ok(None);
                    }
                    self.known.insert(key.clone(), index);
                    Some(WatchEvent::Put(KvPair::new(key, value, index)))
                }
                // A directory node: not (or no longer) a key.
                None => self
                    .known
                    .remove(&key)
                    .map(|last_index| WatchEvent::Delete { key, last_index }),
            },
            Err(Error::KeyNotFound { .. }) => self
                .known
                .remove(&key)
                .map(|last_index| WatchEvent::Delete { key, last_index }),
            // The change is known but not its value: start over from a snapshot.
            Err(_) => {
                self.resync = true;
                None
            }
        })
    }
}

#[async_trait]
impl Feed for Feeder {
    async fn next(&mut self) -> Result<Batch> {
        loop {
            if self.resync {
                let pairs = self.read().await?;
                self.resync = false;
                return Ok(Batch::Resync(pairs));
            }
            let Some(watcher) = self.watcher.as_mut() else {
                let reason = "the watch was never set";
                return Err(Error::backend(ZOOKEEPER, self.key.as_str(), false, reason));
            };
            let event = watcher.changed().await;
            match event.event_type {
                EventType::Session => match event.session_state {
                    SessionState::SyncConnected => {
                        // A restarted server has forgotten the watch, and the client does
                        // not always set it again: set it before reading, so no change
                        // falls between the two. The new watcher replaces the old one.
                        // If that fails the old watcher goes on, and the next reconnect
                        // tries again.
                        if let Ok(renewed) = self.set_watch().await {
                            self.watcher = Some(renewed);
                        }
                        self.resync = true;
                    }
                    state if state.is_terminated() => {
                        let reason = format!("the ZooKeeper session ended ({state:?})");
                        return Err(Error::backend(ZOOKEEPER, self.key.as_str(), false, reason));
                    }
                    _ => {}
                },
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                    if let Some(event) = self.changed(&event.path).await? {
                        return Ok(Batch::Events(vec![event]));
                    }
                }
                _ => {}
            }
        }
    }
}
