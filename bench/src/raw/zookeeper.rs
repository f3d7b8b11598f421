//! ZooKeeper through `zookeeper-client`, in `valkeyrie-zookeeper`'s layout: the key `a/b` is
//! the znode `/a/b` holding the value (one `0x01` byte in front of a value that starts with
//! `0x01`); missing parents are created holding the single byte `0x01`, the directory
//! marker, which is not a key. A key's index is the low 32 bits of its creation zxid above
//! its data version; a compare-and-set is a `set_data` expecting the index's low half (the
//! data version, what the Go store compares). A put sets the data in place and creates the
//! node (and its parents) only when it is missing. A listing reads every node below the
//! directory, 16 requests at a time, counting the nodes that are keys (not directory
//! markers, not lock contenders). A watch is a persistent watch set before the first read,
//! each event re-read. A lock is ZooKeeper's recipe in the Go store's layout: an ephemeral
//! sequential child `<key>/_c_<32 hex>-lock-<sequence>`; the lowest sequence holds, every
//! other contender watches the one just before it; the holder writes the lock value at
//! `<key>`; releasing deletes the child.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use zookeeper_client::{
    Acls, AddWatchMode, Client, CreateMode, CreateOptions, CreateSequence, Error, EventType, PersistentWatcher,
    SessionState, Stat,
};

use crate::driver::{BenchResult, Driver, ValueStream};
use crate::target::Target;

/// The data of a directory node, made for its children and not a key.
const DIR_MARKER: &[u8] = &[0x01];

/// What a lock holder writes at the lock's key (what the valkeyrie side writes).
const LOCK_VALUE: &[u8] = b"bench";

/// Requests in flight during a listing (the backend's default `concurrency`).
const CONCURRENCY: usize = 16;

/// How often a put starts over after racing another writer creating the same node.
const ATTEMPTS: usize = 16;

/// Keys and directory nodes.
const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());

/// Lock contender nodes.
const CONTENDER: CreateOptions<'static> = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());

/// A ZooKeeper session.
pub(crate) struct RawZookeeper {
    client: Client,
    /// Tells this session's lock contenders apart.
    contenders: AtomicU64,
}

/// Formats a ZooKeeper error as what failed.
fn failed<'a>(call: &'static str, path: &'a str) -> impl FnOnce(Error) -> String + 'a {
    move |err| format!("zookeeper {call} {path}: {err}")
}

/// The znode path of a key.
fn path_of(key: &str) -> String {
    format!("/{key}")
}

/// A value as stored in a node: with an escape byte when it starts with `0x01`.
fn encode(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    if value.first() == Some(&0x01) {
        data.push(0x01);
    }
    data.extend_from_slice(value);
    data
}

/// The value stored in a node's data; `None` for a directory node.
fn decode(mut data: Vec<u8>) -> Option<Bytes> {
    if data == DIR_MARKER {
        return None;
    }
    if data.first() == Some(&0x01) {
        data.remove(0);
    }
    Some(Bytes::from(data))
}

/// A node's index: the low 32 bits of its creation zxid above its data version.
fn index_of(stat: &Stat) -> u64 {
    (u64::from(stat.czxid as u32) << 32) | u64::from(stat.version as u32)
}

/// Whether a child name is a lock contender node: `_c_<32 hex>-lock-<decimal sequence>`.
fn is_lock_node(name: &str) -> bool {
    let Some((guid, sequence)) = name.strip_prefix("_c_").and_then(|rest| rest.split_once("-lock-")) else {
        return false;
    };
    guid.len() == 32
        && guid.chars().all(|c| c.is_ascii_hexdigit())
        && !sequence.is_empty()
        && sequence.chars().all(|c| c.is_ascii_digit())
}

/// The sequence number at the end of a contender node's name.
fn sequence(name: &str) -> u64 {
    name.rsplit("-lock-")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

impl RawZookeeper {
    /// Opens a session with the ensemble at `target`'s endpoints.
    pub(crate) async fn connect(target: &Target) -> BenchResult<Self> {
        let cluster = target.endpoints.join(",");
        let client = Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_connection_timeout(Duration::from_secs(5))
            .connect(&cluster)
            .await
            .map_err(failed("connect", &cluster))?;
        Ok(RawZookeeper {
            client,
            contenders: AtomicU64::new(0),
        })
    }

    /// The value and stat of the key at `path`.
    async fn read(&self, path: &str) -> BenchResult<(Bytes, Stat)> {
        let (data, stat) = self.client.get_data(path).await.map_err(failed("get", path))?;
        let value = decode(data).ok_or_else(|| format!("zookeeper get {path}: a directory, not a key"))?;
        Ok((value, stat))
    }

    /// Creates the node at `path` (its sequence number for a sequential `options`), making
    /// its missing ancestors as directory nodes first if needed.
    async fn create(&self, path: &str, data: &[u8], options: &CreateOptions<'_>) -> Result<CreateSequence, Error> {
        let mut made_parents = false;
        loop {
            match self.client.create(path, data, options).await {
                Ok((_, sequence)) => return Ok(sequence),
                Err(Error::NoNode) if !made_parents => {
                    made_parents = true;
                    // Top-down: each ancestor of `path` below the root.
                    for (end, _) in path.match_indices('/').skip(1) {
                        match self.client.create(&path[..end], DIR_MARKER, &PERSISTENT).await {
                            Ok(_) | Err(Error::NodeExists) => {}
                            Err(err) => return Err(err),
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits until the contender `own` has the lowest sequence among the children of the
    /// lock node `path`, watching the one just before it each time.
    async fn wait_turn(&self, path: &str, own: &str) -> BenchResult<()> {
        loop {
            let children = self.client.list_children(path).await.map_err(failed("lock", path))?;
            let mut contenders: Vec<&String> = children.iter().filter(|name| is_lock_node(name)).collect();
            contenders.sort_by_key(|name| sequence(name));
            let position = contenders
                .iter()
                .position(|name| *name == own)
                .ok_or_else(|| format!("zookeeper lock {path}: our contender {own} is gone"))?;
            let Some(before) = position.checked_sub(1) else {
                return Ok(());
            };
            let predecessor = format!("{path}/{}", contenders[before]);
            let (stat, watcher) = self
                .client
                .check_and_watch_stat(&predecessor)
                .await
                .map_err(failed("lock", &predecessor))?;
            if stat.is_some() {
                watcher.changed().await;
            }
        }
    }

    /// The nodes below `dir` that are keys, with their values.
    async fn walk(&self, dir: &str) -> BenchResult<Vec<(String, Bytes)>> {
        let mut pairs = Vec::new();
        let mut parents = vec![path_of(dir)];
        while !parents.is_empty() {
            let children: Vec<String> = stream::iter(parents)
                .map(|parent| async move {
                    let names = match self.client.list_children(&parent).await {
                        Ok(names) => names,
                        Err(Error::NoNode) => Vec::new(),
                        Err(err) => return Err(failed("list", &parent)(err)),
                    };
                    let children = names.into_iter().filter(|name| !is_lock_node(name));
                    Ok(children.map(|name| format!("{parent}/{name}")).collect::<Vec<_>>())
                })
                .buffer_unordered(CONCURRENCY)
                .try_concat()
                .await?;
            // The stat read with each node's data says whether it has children to list.
            let nodes: Vec<Option<(String, Option<Bytes>, bool)>> = stream::iter(children)
                .map(|path| async move {
                    match self.client.get_data(&path).await {
                        Ok((data, stat)) => Ok(Some((path, decode(data), stat.num_children > 0))),
                        Err(Error::NoNode) => Ok(None),
                        Err(err) => Err(failed("list", &path)(err)),
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            parents = Vec::new();
            for (path, value, has_children) in nodes.into_iter().flatten() {
                if has_children {
                    parents.push(path.clone());
                }
                if let Some(value) = value {
                    pairs.push((path, value));
                }
            }
        }
        Ok(pairs)
    }
}

/// What a watch stream carries from one value to the next; `None` once it has ended.
type Following = Option<(Client, String, PersistentWatcher)>;

/// The next value of the watched node, or `None` once the watch has ended.
async fn next_value(following: Following) -> Option<(BenchResult<Bytes>, Following)> {
    let (client, path, mut watcher) = following?;
    loop {
        let event = watcher.changed().await;
        match (event.event_type, event.session_state) {
            (EventType::Session, state) if state.is_terminated() => {
                return Some((Err(format!("zookeeper watch {path}: session {state:?}")), None));
            }
            // Reconnected (events may have been lost meanwhile), created or written: read it.
            (EventType::Session, SessionState::SyncConnected)
            | (EventType::NodeCreated | EventType::NodeDataChanged, _) => match client.get_data(&path).await {
                Ok((data, _)) => {
                    if let Some(value) = decode(data) {
                        return Some((Ok(value), Some((client, path, watcher))));
                    }
                }
                Err(Error::NoNode) => {}
                Err(err) => {
                    let failure = failed("watch", &path)(err);
                    return Some((Err(failure), Some((client, path, watcher))));
                }
            },
            _ => {}
        }
    }
}

#[async_trait]
impl Driver for RawZookeeper {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        let path = path_of(key);
        let data = encode(&value);
        for _ in 0..ATTEMPTS {
            match self.client.set_data(&path, &data, None).await {
                Err(Error::NoNode) => {}
                written => return written.map(drop).map_err(failed("put", &path)),
            }
            match self.create(&path, &data, &PERSISTENT).await {
                // Created by another writer meanwhile: set it.
                Err(Error::NodeExists) => {}
                created => return created.map(drop).map_err(failed("put", &path)),
            }
        }
        Err(format!("zookeeper put {path}: gave up racing other writers"))
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.read(&path_of(key)).await?.0)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let (value, stat) = self.read(&path_of(key)).await?;
        Ok((value, index_of(&stat)))
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        let path = path_of(key);
        let version = index as u32 as i32;
        match self.client.set_data(&path, &encode(&value), Some(version)).await {
            Ok(_) => Ok(true),
            Err(Error::BadVersion) => Ok(false),
            Err(err) => Err(failed("compare_and_set", &path)(err)),
        }
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        Ok(self.walk(dir).await?.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let path = path_of(key);
        // Set before the first read, so no change in between is missed.
        let watcher = self
            .client
            .watch(&path, AddWatchMode::Persistent)
            .await
            .map_err(failed("watch", &path))?;
        let (current, _) = self.read(&path).await?;
        let changes = stream::unfold(Some((self.client.clone(), path, watcher)), next_value);
        Ok(Box::pin(stream::once(async { Ok(current) }).chain(changes)))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let path = path_of(key);
        let session = self.client.session_id().0 as u64;
        let unique = self.contenders.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{path}/_c_{session:016x}{unique:016x}-lock-");
        let sequence = self
            .create(&prefix, &[], &CONTENDER)
            .await
            .map_err(failed("lock", &prefix))?;
        let node = format!("{prefix}{sequence}");
        let own = node.rsplit('/').next().unwrap_or_default();
        let held = async {
            self.wait_turn(&path, own).await?;
            self.client
                .set_data(&path, &encode(LOCK_VALUE), None)
                .await
                .map_err(failed("lock", &path))
        };
        let held = held.await;
        // Released whatever happened while contending, so no other contender waits on it.
        let released = self.client.delete(&node, None).await.map_err(failed("unlock", &node));
        held?;
        released
    }
}
