//! Locks in the Go `kvtools/zookeeper` layout (ZooKeeper's lock recipe): each contender
//! creates an ephemeral sequential child `<key>/_c_<32 hex>-lock-<sequence>`; the lowest
//! sequence holds the lock, every other contender watches only the one just before it (no
//! herd). The holder writes the lock value to `<key>`. The lock is lost when the session
//! expires or closes, or when the contender node is deleted; the fencing token is the
//! contender node's creation zxid, which grows across every acquisition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use valkeyrie_core::raw::{Acquire, Backoff, Hold, Key, LockRelease, Renew, Renewal, Spawner};
use valkeyrie_core::{Error, ErrorKind, LockGuard, LockOptions, LostReason, LostSignal, Result};
use zookeeper_client::{CreateMode, EventType, SessionState};

use crate::client::ZkClient;
use crate::error::is_not_empty;
use crate::node::{encode, is_lock_node, path_of};
use crate::ZOOKEEPER;

/// Tells contender names of this process apart.
static NEXT_CONTENDER: AtomicU64 = AtomicU64::new(0);

/// A lock on one key.
pub(crate) struct ZkLocker {
    zk: ZkClient,
    key: Key,
    value: Bytes,
    delete_on_unlock: bool,
    /// How long a holder that cannot reach the server believes it holds the lock: the
    /// lock's TTL or the session timeout, whichever is shorter (see [`ZkLocker::new`]).
    held_for: Duration,
    spawner: Spawner,
}

/// A contender not yet handed to a guard. Armed before the create is sent: if the attempt
/// is abandoned (cancelled, timed out, failed) the node may exist without our knowing its
/// sequence, so the clean-up deletes every child of the key whose name starts with this
/// attempt's unique prefix (the "protected" part of the Go layout's name).
struct Pending {
    zk: ZkClient,
    parent: String,
    name_prefix: String,
    armed: bool,
    spawner: Spawner,
}

impl Pending {
    async fn clean_up(zk: ZkClient, parent: String, name_prefix: String) {
        let Ok(client) = zk.client() else { return };
        let Ok(children) = zk.request(&parent, client.list_children(&parent)).await else {
            return;
        };
        for name in children.iter().filter(|name| name.starts_with(&name_prefix)) {
            let node = format!("{parent}/{name}");
            let _ = zk.request(&node, client.delete(&node, None)).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cleanup = Self::clean_up(self.zk.clone(), self.parent.clone(), self.name_prefix.clone());
        self.spawner.spawn_cleanup(cleanup);
    }
}

/// The sequence number at the end of a contender node's name.
fn sequence(name: &str) -> u64 {
    name.rsplit("-lock-")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

impl ZkLocker {
    /// A lock whose holder's lost signal fires once it has not reached the server for the
    /// lock's TTL or the session timeout, whichever is shorter. The lock itself lives as
    /// long as the session: others take it over once the server expires the session, never
    /// sooner, so a TTL shorter than the session makes the holder give up first (the safe
    /// direction) and a longer one changes nothing.
    pub(crate) fn new(zk: ZkClient, key: Key, opts: LockOptions, session_timeout: Duration, spawner: Spawner) -> Self {
        ZkLocker {
            zk,
            key,
            held_for: opts.ttl_or_default().min(session_timeout),
            value: opts.value,
            delete_on_unlock: opts.delete_on_unlock,
            spawner,
        }
    }

    fn closed(&self) -> Error {
        Error::closed(ZOOKEEPER, self.key.as_str())
    }

    /// Waits until our node has the lowest sequence; `false` if it does not and `wait` is off.
    async fn wait_turn(&self, path: &str, own: &str, session: &LostSignal, wait: bool) -> Result<bool> {
        let closing = self.spawner.token();
        loop {
            let children = self.zk.request(path, self.zk.client()?.list_children(path)).await?;
            let mut contenders: Vec<&String> = children.iter().filter(|name| is_lock_node(name)).collect();
            contenders.sort_by_key(|name| sequence(name));
            let Some(position) = contenders.iter().position(|name| *name == own) else {
                let reason = LostReason::RecordDeleted;
                return Err(Error::LockLost {
                    store: ZOOKEEPER,
                    key: self.key.to_string(),
                    reason,
                });
            };
            let Some(predecessor) = position.checked_sub(1).map(|i| format!("{path}/{}", contenders[i])) else {
                return Ok(true);
            };
            if !wait {
                return Ok(false);
            }
            let (stat, watcher) = self
                .zk
                .request(path, self.zk.client()?.check_and_watch_stat(&predecessor))
                .await?;
            if stat.is_none() {
                continue;
            }
            tokio::select! {
                () = closing.cancelled() => return Err(self.closed()),
                reason = session.lost() => return Err(Error::LockLost { store: ZOOKEEPER, key: self.key.to_string(), reason }),
                _ = watcher.changed() => {}
            }
        }
    }
}

#[async_trait]
impl Acquire for ZkLocker {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn store_name(&self) -> &'static str {
        ZOOKEEPER
    }

    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        if self.spawner.is_closed() {
            return Err(self.closed());
        }
        let key = self.key.as_str();
        let path = path_of(key);
        let session = self.zk.client()?.session_id().0 as u64;
        let unique = NEXT_CONTENDER.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id());
        let name_prefix = format!("_c_{session:016x}{unique:016x}-lock-");
        let prefix = format!("{path}/{name_prefix}");
        let mut pending = Pending {
            zk: self.zk.clone(),
            parent: path.clone(),
            name_prefix,
            armed: true,
            spawner: self.spawner.clone(),
        };
        let options = CreateMode::EphemeralSequential.with_acls(self.zk.acls());
        let started = Instant::now();
        let client = self.zk.client()?;
        // The key's directory node is made only when missing (also when another process
        // cleaned it up between making it and creating under it): make it and retry.
        let mut attempts = 0;
        let (stat, seq) = loop {
            match self.zk.request(key, client.create(&prefix, &[], &options)).await {
                Err(Error::KeyNotFound { .. }) if attempts < 16 => {
                    attempts += 1;
                    self.zk.ensure_parents(&format!("{path}/_")).await?;
                }
                created => break created?,
            }
        };
        let node = format!("{prefix}{seq}");
        let own_name = node.rsplit('/').next().unwrap_or_default().to_owned();

        let contender = Contender {
            zk: self.zk.clone(),
            client: client.clone(),
            node: node.clone(),
            held_for: self.held_for,
        };
        let lost = lost_when_gone(contender.zk.clone(), client.clone(), node.clone());
        let held = self.spawner.hold(
            Hold::new(contender, started, self.held_for)
                .every(self.held_for / 3)
                .watching(lost),
        );
        if !self.wait_turn(&path, &own_name, held.lost_signal(), wait).await? {
            // Busy and not waiting: dropping `pending` deletes the node; dropping `held`
            // stops following it.
            return Ok(None);
        }
        let written = self
            .zk
            .request(key, self.zk.client()?.set_data(&path, &encode(&self.value), None))
            .await?;
        pending.armed = false;
        let release = ZkRelease {
            zk: self.zk.clone(),
            path,
            node: node.clone(),
            value_version: written.version,
            delete_value: self.delete_on_unlock,
        };
        let token = u64::try_from(stat.czxid).unwrap_or(0);
        // The store checks a fence on the contender node: it exists, with this creation
        // zxid, exactly as long as this acquisition holds the lock.
        Ok(Some(
            LockGuard::new(ZOOKEEPER, key, token, held, Box::new(release)).with_fence_record(node),
        ))
    }
}

/// The next change of the contender node.
type NodeChange = std::pin::Pin<Box<dyn std::future::Future<Output = zookeeper_client::WatchedEvent> + Send>>;

/// A held contender node, as the handle's lock-holding driver proves its session alive.
struct Contender {
    zk: ZkClient,
    /// Its own handle on the session the node belongs to; dropped (letting the session go)
    /// when the lock is.
    client: zookeeper_client::Client,
    node: String,
    /// The lock's TTL, when shorter than the session timeout.
    held_for: Duration,
}

#[async_trait]
impl Renew for Contender {
    /// Only an answer from the server proves the session alive: held for the negotiated
    /// session timeout (or the lock's shorter TTL) after the request was sent.
    async fn renew(&self) -> Result<Renewal> {
        let stat = self.zk.request(&self.node, self.client.check_stat(&self.node)).await?;
        Ok(match stat {
            Some(_) => Renewal::Held(self.client.session_timeout().min(self.held_for)),
            None => Renewal::Lost(LostReason::RecordDeleted),
        })
    }

    /// After the deadline passed without a proof of life: deletes our contender node, so a
    /// session the server revives (a client reconnecting to a server that was frozen past
    /// the session timeout) does not keep the lock for a holder that has let it go.
    async fn give_up(&self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            match self.zk.request(&self.node, self.client.delete(&self.node, None)).await {
                Err(err) if err.is_temporary() => backoff.wait().await,
                // Deleted, already gone, or the session is over (its nodes with it).
                _ => return,
            }
        }
    }
}

/// Resolves when the session ends or the contender node is deleted.
async fn lost_when_gone(zk: ZkClient, client: zookeeper_client::Client, node: String) -> LostReason {
    let mut states = client.state_watcher();
    let mut node_changed = match zk.request(&node, client.check_and_watch_stat(&node)).await {
        Ok((Some(_), watcher)) => Box::pin(watcher.changed()) as NodeChange,
        _ => return LostReason::RecordDeleted,
    };
    loop {
        tokio::select! {
            state = states.changed() => {
                if state.is_terminated() {
                    return if state == SessionState::Closed { LostReason::StoreClosed } else { LostReason::Expired };
                }
            }
            event = &mut node_changed => {
                if event.event_type == EventType::NodeDeleted {
                    return LostReason::RecordDeleted;
                }
                // Any other event (a session change): watch the node again.
                match zk.request(&node, client.check_and_watch_stat(&node)).await {
                    Ok((Some(_), watcher)) => node_changed = Box::pin(watcher.changed()),
                    Ok((None, _)) => return LostReason::RecordDeleted,
                    Err(_) => node_changed = Box::pin(std::future::pending()),
                }
            }
        }
    }
}

struct ZkRelease {
    zk: ZkClient,
    path: String,
    node: String,
    /// The version of the key's node after the lock value was written.
    value_version: i32,
    delete_value: bool,
}

/// What the one-`multi` release did.
enum Untouched {
    /// Deleted the contender node.
    Released,
    /// Deleted nothing: the key changed meanwhile, or the request failed with an answer or
    /// before it was sent.
    Kept,
    /// Unknown: the request failed after it may have reached the server, which may have
    /// applied it unanswered.
    Unknown,
}

impl ZkRelease {
    /// Deletes the contender node if the key's node still has the lock value's version, in
    /// one `multi`: the key then holds a value, not a bare directory node, so nothing above
    /// the contender needs cleaning up, and the unlock is one round trip.
    async fn release_untouched(&self, key: &str) -> Untouched {
        let Ok(client) = self.zk.client() else {
            return Untouched::Kept;
        };
        let mut writer = client.new_multi_writer();
        let staged = writer
            .add_delete(&self.node, None)
            .and_then(|()| writer.add_check_version(&self.path, self.value_version));
        if staged.is_err() {
            return Untouched::Kept;
        }
        let commit = async { writer.commit().await.map_err(zookeeper_client::Error::from) };
        match self.zk.request(key, commit).await {
            Ok(_) => Untouched::Released,
            Err(err) if err.kind() == ErrorKind::Timeout => Untouched::Unknown,
            Err(_) => Untouched::Kept,
        }
    }
}

#[async_trait]
impl LockRelease for ZkRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let key = self.path.trim_start_matches('/').to_owned();
        // Whether an earlier request of this release may have deleted the contender node
        // unanswered (its outcome unknown): then a node found gone was deleted by us.
        let mut maybe_deleted = false;
        if !self.delete_value {
            match self.release_untouched(&key).await {
                Untouched::Released => return Ok(()),
                Untouched::Kept => {}
                Untouched::Unknown => maybe_deleted = true,
            }
        }
        let ZkRelease {
            zk,
            path,
            node,
            delete_value,
            ..
        } = *self;
        let client = zk.client()?;
        // A node left by a failed unlock would hold the lock for the whole session: retry
        // what may be passing trouble.
        let mut attempt = 0;
        loop {
            match zk.request(&key, client.delete(&node, None)).await {
                Ok(()) => break,
                // Gone after a request of ours that may have deleted it unanswered: released
                // by us, most likely, rather than lost.
                Err(Error::KeyNotFound { .. }) if maybe_deleted => break,
                Err(Error::KeyNotFound { .. }) => {
                    return Err(Error::LockLost {
                        store: ZOOKEEPER,
                        key,
                        reason: LostReason::RecordDeleted,
                    });
                }
                Err(err) if err.is_temporary() && attempt < 5 => {
                    maybe_deleted |= err.kind() == ErrorKind::Timeout;
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
        if delete_value {
            // Other contenders' nodes keep the key's node alive: then the value stays.
            match zk.request(&key, client.delete(&path, None)).await {
                Ok(()) => zk.cleanup_parents(&path).await,
                Err(Error::KeyNotFound { .. }) => {}
                Err(err) if is_not_empty(&err) => {}
                Err(err) => return Err(err),
            }
            return Ok(());
        }
        zk.cleanup_parents(&node).await;
        Ok(())
    }
}
