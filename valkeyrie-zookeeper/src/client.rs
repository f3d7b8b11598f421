//! The connection and the znode rules: which nodes are keys, how missing parents are made,
//! and one way to run a request with its deadline and error mapping.
//!
//! A key `a/b` is the znode `/a/b` (under the chroot) holding the raw value. Missing
//! parents are created holding the single byte `\x01`, the directory marker old libkv
//! versions wrote (the Go store still recognizes it): such a node is not a key, so a
//! directory that only exists as a prefix behaves as on every other backend, and it is
//! removed again once its last child is deleted. A value that starts with `\x01` is stored
//! with one more `\x01` in front, so no value is ever mistaken for the marker. Lock
//! contender nodes (`_c_<32 hex>-lock-<sequence>`, the Go store's layout) are never keys.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use valkeyrie_core::tls::strip_scheme;
use valkeyrie_core::{Error, Key, KvPair, Result};
use zookeeper_client::{Acl, Acls, Client, Connector, CreateMode, MultiReadResult, SessionState, Stat, StateWatcher};

use crate::config::ZookeeperConfig;
use crate::error::map_error;
use crate::tls::ZkTls;
use crate::ZOOKEEPER;

/// The data of a directory node made for its children, not written as a key.
pub(crate) const DIR_MARKER: &[u8] = &[0x01];

/// A session with a ZooKeeper ensemble. Clones share it; the session ends when
/// [`ZkClient::close`] empties the slot and the requests in flight finish (zookeeper-client
/// closes a session when its last `Client` goes).
///
/// A session the ensemble expires (an outage longer than the session timeout) is replaced
/// by a new one in the background, so the handle works again without reconstruction; what
/// was bound to the old session (locks, `keep_alive` keys, watches) is lost with it and
/// says so through its own lost signal or error item.
#[derive(Clone)]
pub(crate) struct ZkClient {
    slot: Arc<RwLock<Option<Client>>>,
    /// The ACL of every node created (see [`ZookeeperConfig::password`]).
    acls: Arc<[Acl]>,
    request_timeout: Duration,
    closed: CancellationToken,
}

/// How to open a session: what a replacement session needs. Not `Debug`: `auth` holds the
/// password.
struct SessionSpec {
    /// `host:port,…`, each `tcp+tls://host:port` over TLS.
    hosts: String,
    chroot: Option<String>,
    session_timeout: Duration,
    connect_timeout: Duration,
    auth: Option<Vec<u8>>,
    /// The TLS settings, built once, when the endpoints are reached over TLS.
    tls: Option<ZkTls>,
}

impl SessionSpec {
    /// # Errors
    /// [`Error::InvalidConfiguration`] for TLS settings that cannot be used (see
    /// [`crate::tls`]).
    fn from_config(endpoints: &[String], config: &ZookeeperConfig) -> Result<Self> {
        let endpoints = if endpoints.is_empty() {
            vec!["127.0.0.1:2181".to_owned()]
        } else {
            endpoints.to_vec()
        };
        let tls_config = config.tls_config();
        let tls = if tls_config.use_tls(ZOOKEEPER, &endpoints)? {
            Some(ZkTls::new(tls_config.load(ZOOKEEPER)?)?)
        } else {
            None
        };
        let hosts: Vec<String> = match tls {
            Some(_) => endpoints
                .iter()
                .map(|e| format!("tcp+tls://{}", strip_scheme(e)))
                .collect(),
            None => endpoints,
        };
        let auth = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(format!("{user}:{}", password.expose()).into_bytes()),
            _ => None,
        };
        Ok(SessionSpec {
            hosts: hosts.join(","),
            chroot: config.chroot_path(),
            session_timeout: config.session_timeout,
            connect_timeout: config.connect_timeout,
            auth,
            tls,
        })
    }

    /// A connector with the session's timeouts, credentials and TLS settings.
    fn connector(&self) -> Connector {
        let mut connector = Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(self.connect_timeout);
        if let Some(auth) = &self.auth {
            connector = connector.with_auth("digest", auth);
        }
        if let Some(tls) = &self.tls {
            connector = tls.apply(connector);
        }
        connector
    }

    /// Opens a session under the chroot, or at the root with `at_root`, giving up after
    /// the connect timeout (the client would retry until the session timeout).
    async fn open(&self, at_root: bool) -> Result<Client> {
        let mut cluster = self.hosts.clone();
        if let (Some(chroot), false) = (&self.chroot, at_root) {
            cluster.push_str(chroot);
        }
        let limit = self.connect_timeout.max(Duration::from_millis(100));
        match tokio::time::timeout(limit, self.connector().connect(&cluster)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(self.connect_error(map_error("connect", "", err)).await),
            Err(_) => {
                let reason = format!("no session with {} within {limit:?}", self.hosts);
                let err = Error::NotReachable {
                    store: ZOOKEEPER,
                    call: "connect",
                    key: String::new(),
                    source: reason.into(),
                };
                Err(self.connect_error(err).await)
            }
        }
    }

    /// `err`, or the certificate refusal behind it: zookeeper-client reports a TLS
    /// handshake that failed (either side's certificate refused) only as a connection it
    /// could not make, so a second handshake asks the server why.
    async fn connect_error(&self, err: Error) -> Error {
        let Some(tls) = &self.tls else { return err };
        if !err.is_temporary() {
            return err;
        }
        match tls.certificate_refusal(&self.hosts, self.connect_timeout).await {
            Some(refusal) => Error::tls_verification(ZOOKEEPER, "connect", "", refusal),
            None => err,
        }
    }
}

/// Replaces the session in `slot` whenever the ensemble expires it, until the handle is
/// closed. Holds only a weak reference to the slot, so it ends with the handle too.
async fn renew_expired_sessions(
    slot: std::sync::Weak<RwLock<Option<Client>>>,
    spec: SessionSpec,
    closed: CancellationToken,
    mut state: StateWatcher,
) {
    loop {
        let changed = tokio::select! {
            () = closed.cancelled() => return,
            changed = state.changed() => changed,
        };
        match changed {
            SessionState::Expired => {}
            SessionState::Closed | SessionState::AuthFailed => return,
            _ => continue,
        }
        tracing::warn!(store = ZOOKEEPER, "the session expired; opening a new one");
        let mut backoff = Duration::from_millis(100);
        let client = loop {
            let opened = tokio::select! {
                () = closed.cancelled() => return,
                opened = spec.open(false) => opened,
            };
            match opened {
                Ok(client) => break client,
                Err(err) => {
                    tracing::debug!(store = ZOOKEEPER, error = %err, "no new session yet; retrying");
                    tokio::select! {
                        () = closed.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let Some(slot) = slot.upgrade() else { return };
        state = client.state_watcher();
        let mut current = slot.write().unwrap_or_else(PoisonError::into_inner);
        // Closed meanwhile: the new session is dropped, and so ends, with `client`.
        if current.is_none() {
            return;
        }
        *current = Some(client);
    }
}

impl ZkClient {
    /// Connects to `endpoints` (and the chroot) within the connect timeout.
    pub(crate) async fn connect(endpoints: &[String], config: &ZookeeperConfig) -> Result<Self> {
        let spec = SessionSpec::from_config(endpoints, config)?;
        let client = spec.open(false).await?;
        let acls: Arc<[Acl]> = config.node_acls().into();
        if let Some(chroot) = config.chroot_path() {
            // The chroot node must exist for anything to be created below it; a session of
            // the same user makes it, so it gets the same ACL as the nodes under it.
            if let Ok(root) = spec.open(true).await {
                let options = CreateMode::Persistent.with_acls(Acls::new(&acls));
                let _ = root.mkdir(&chroot, &options).await;
                // Dropping the last handle closes that short session.
                drop(root);
            }
        }
        let state = client.state_watcher();
        let slot = Arc::new(RwLock::new(Some(client)));
        let closed = CancellationToken::new();
        tokio::spawn(renew_expired_sessions(
            Arc::downgrade(&slot),
            spec,
            closed.clone(),
            state,
        ));
        Ok(ZkClient {
            slot,
            acls,
            request_timeout: config.request_timeout,
            closed,
        })
    }

    /// The ACL of every node this handle creates.
    pub(crate) fn acls(&self) -> Acls<'_> {
        Acls::new(&self.acls)
    }

    /// The session's client, for one request; `Closed` after [`ZkClient::close`].
    pub(crate) fn client(&self) -> Result<Client> {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or(Error::Closed {
            store: ZOOKEEPER,
            call: "request",
            key: String::new(),
        })
    }

    /// Lets the session end: no new request gets the client.
    pub(crate) fn close(&self) {
        self.slot.write().unwrap_or_else(PoisonError::into_inner).take();
        self.closed.cancel();
    }

    /// Runs one request within the request timeout, mapping its error.
    pub(crate) async fn request<T, F>(&self, call: &'static str, key: &str, request: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(|e| map_error(call, key, e)),
            Err(_) => Err(Error::Timeout {
                store: ZOOKEEPER,
                call,
                key: key.to_owned(),
                after: self.request_timeout,
            }),
        }
    }

    /// Every node in `paths`, read in one multi-read: one snapshot, one round trip.
    pub(crate) async fn read_nodes(
        &self,
        call: &'static str,
        call_key: &str,
        paths: &[String],
    ) -> Result<HashMap<String, Node>> {
        let client = self.client()?;
        let mut reader = client.new_multi_reader();
        for path in paths {
            reader
                .add_get_data(path)
                .map_err(|e| map_error(call, &key_of(path), e))?;
        }
        let results = self.request(call, call_key, reader.commit()).await?;
        let mut snapshot = HashMap::with_capacity(paths.len());
        for (path, result) in paths.iter().zip(results) {
            let node = match result {
                MultiReadResult::Data { data, stat } => Some((data, stat)),
                MultiReadResult::Error {
                    err: zookeeper_client::Error::NoNode,
                } => None,
                MultiReadResult::Error { err } => return Err(map_error(call, &key_of(path), err)),
                other => {
                    let reason = format!("the multi-read answered a data read with {other:?}");
                    return Err(Error::backend(ZOOKEEPER, call, key_of(path), false, reason));
                }
            };
            snapshot.insert(path.clone(), node);
        }
        Ok(snapshot)
    }

    /// Creates the missing ancestors of `path` as directory nodes.
    pub(crate) async fn ensure_parents(&self, call: &'static str, path: &str) -> Result<()> {
        /// How often to start over when a directory node is removed under our feet.
        const ATTEMPTS: usize = 16;
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        if parent.is_empty() {
            return Ok(());
        }
        let client = self.client()?;
        let options = CreateMode::Persistent.with_acls(self.acls());
        'attempt: for _ in 0..ATTEMPTS {
            let mut prefix = String::new();
            for segment in parent.split('/').skip(1) {
                prefix.push('/');
                prefix.push_str(segment);
                match self
                    .request(call, &prefix, client.create(&prefix, DIR_MARKER, &options))
                    .await
                {
                    Ok(_) | Err(Error::KeyExists { .. }) => {}
                    // An empty directory node above was cleaned up meanwhile: start over.
                    Err(Error::KeyNotFound { .. }) => continue 'attempt,
                    Err(err) => return Err(err),
                }
            }
            return Ok(());
        }
        let reason = format!("directory nodes above {path} kept vanishing");
        Err(Error::backend(ZOOKEEPER, call, path, true, reason))
    }
}

impl ZkClient {
    /// The paths of `dir` and every node below it, parents before children; lock contender
    /// nodes only with `with_locks`. At most `concurrency` requests in flight.
    pub(crate) async fn walk(
        &self,
        call: &'static str,
        dir: &Key,
        with_locks: bool,
        concurrency: usize,
    ) -> Result<Vec<String>> {
        let mut paths = Vec::new();
        let mut level = vec![path_of(dir.as_str())];
        while !level.is_empty() {
            let children: Vec<(String, Vec<String>)> = stream::iter(level.clone())
                .map(|path| async move {
                    match self.request(call, &path, self.client()?.list_children(&path)).await {
                        Ok(children) => Ok((path, children)),
                        Err(Error::KeyNotFound { .. }) => Ok((path, Vec::new())),
                        Err(err) => Err(err),
                    }
                })
                .buffered(concurrency)
                .try_collect()
                .await?;
            paths.append(&mut level);
            for (parent, names) in children {
                for name in names {
                    if with_locks || !is_lock_node(&name) {
                        level.push(format!("{parent}/{name}"));
                    }
                }
            }
        }
        Ok(paths)
    }

    /// The keys below `dir` (and `dir` itself when nothing below is a key: it then decides
    /// whether the listing is empty or not found), lock contender nodes excluded. Each
    /// node's stat, read with its data, says whether it has children to list, so leaves
    /// cost one read. At most `concurrency` requests in flight.
    pub(crate) async fn list_keys(&self, call: &'static str, dir: &Key, concurrency: usize) -> Result<Vec<KvPair>> {
        let root = path_of(dir.as_str());
        let mut pairs = Vec::new();
        let mut parents = vec![root.clone()];
        while !parents.is_empty() {
            let children: Vec<String> = stream::iter(parents)
                .map(|parent| async move {
                    let names = match self.request(call, &parent, self.client()?.list_children(&parent)).await {
                        Ok(names) => names,
                        Err(Error::KeyNotFound { .. }) => Vec::new(),
                        Err(err) => return Err(err),
                    };
                    let names = names.into_iter().filter(|name| !is_lock_node(name));
                    Ok(names.map(|name| format!("{parent}/{name}")).collect::<Vec<_>>())
                })
                .buffer_unordered(concurrency)
                .try_concat()
                .await?;
            let nodes: Vec<Option<(String, Option<KvPair>, bool)>> = stream::iter(children)
                .map(|path| async move {
                    match self.request(call, &path, self.client()?.get_data(&path)).await {
                        Ok((data, stat)) => {
                            let pair = decode(data).map(|value| KvPair::new(key_of(&path), value, index_of(&stat)));
                            Ok(Some((path, pair, stat.num_children > 0)))
                        }
                        Err(Error::KeyNotFound { .. }) => Ok(None),
                        Err(err) => Err(err),
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect()
                .await?;
            parents = Vec::new();
            for (path, pair, has_children) in nodes.into_iter().flatten() {
                if has_children {
                    parents.push(path);
                }
                pairs.extend(pair);
            }
        }
        if pairs.is_empty() {
            return self.read_keys(call, vec![root], concurrency).await;
        }
        Ok(pairs)
    }

    /// The keys at `paths`, skipping nodes that are not keys or are gone.
    pub(crate) async fn read_keys(
        &self,
        call: &'static str,
        paths: Vec<String>,
        concurrency: usize,
    ) -> Result<Vec<KvPair>> {
        let pairs: Vec<Option<KvPair>> = stream::iter(paths)
            .map(|path| async move {
                match self.request(call, &path, self.client()?.get_data(&path)).await {
                    Ok((data, stat)) => {
                        Ok(decode(data).map(|value| KvPair::new(key_of(&path), value, index_of(&stat))))
                    }
                    Err(Error::KeyNotFound { .. }) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(pairs.into_iter().flatten().collect())
    }

    /// After the node at `path` was deleted: removes its ancestors that are directory nodes
    /// with no children left, bottom-up. Best effort: a node that gained a child or a value
    /// meanwhile stays (the delete is conditional on its version and emptiness).
    pub(crate) async fn cleanup_parents(&self, call: &'static str, path: &str) {
        let Ok(client) = self.client() else { return };
        let mut current = path.to_owned();
        while let Some((parent, _)) = current.rsplit_once('/') {
            if parent.is_empty() {
                return;
            }
            let Ok((data, stat)) = self.request(call, parent, client.get_data(parent)).await else {
                return;
            };
            if data != DIR_MARKER || stat.num_children > 0 {
                return;
            }
            if self
                .request(call, parent, client.delete(parent, Some(stat.version)))
                .await
                .is_err()
            {
                return;
            }
            current = parent.to_owned();
        }
    }
}

/// A node as a read found it, data and stat; `None` when there is none.
pub(crate) type Node = Option<(Vec<u8>, Stat)>;

/// The znode path of a normalized key.
pub(crate) fn path_of(key: &str) -> String {
    format!("/{key}")
}

/// The key of a znode path.
pub(crate) fn key_of(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// The value stored in a node's data; `None` for a directory node.
pub(crate) fn decode(data: Vec<u8>) -> Option<bytes::Bytes> {
    match data.first() {
        _ if data == DIR_MARKER => None,
        Some(0x01) => Some(bytes::Bytes::copy_from_slice(&data[1..])),
        _ => Some(bytes::Bytes::from(data)),
    }
}

/// A value as stored in a node's data: with an escape byte when it starts with `\x01`.
pub(crate) fn encode(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    if value.first() == Some(&0x01) {
        data.push(0x01);
    }
    data.extend_from_slice(value);
    data
}

/// The znode path of a key, or `InvalidKey` for a character ZooKeeper refuses in paths
/// (C1 controls, the private use area, U+FFF0–U+FFFF, and anything outside the BMP, which
/// Java would need surrogates for).
pub(crate) fn checked_path(key: &Key) -> Result<String> {
    let refused = key.as_str().chars().find(|&c| {
        matches!(c, '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}') || c > '\u{ffff}'
    });
    match refused {
        Some(_) => Err(Error::InvalidKey {
            store: ZOOKEEPER,
            key: key.to_string(),
            reason: "ZooKeeper cannot store a character of this key in a node path (outside the BMP, C1 control, private use or U+FFF0-U+FFFF)",
        }),
        None => Ok(path_of(key.as_str())),
    }
}

/// Whether a child name is a lock contender node of the Go store's layout:
/// `_c_<32 hex digits>-lock-<decimal sequence>`.
pub(crate) fn is_lock_node(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("_c_") else {
        return false;
    };
    let Some((guid, sequence)) = rest.split_once("-lock-") else {
        return false;
    };
    guid.len() == 32
        && guid.chars().all(|c| c.is_ascii_hexdigit())
        && !sequence.is_empty()
        && sequence.chars().all(|c| c.is_ascii_digit())
}

/// The last index of a node: the low 32 bits of its creation zxid above its data version.
///
/// The Go store's index is the bare data version, which restarts at 0 when a node is
/// re-created, so a stale pair can match a new node; the creation zxid tells incarnations
/// apart (and keeps the index from being 0). The Go store passes `int32(LastIndex)` to
/// ZooKeeper as the expected version, which is exactly the low half: Go services can
/// compare-and-set with indexes this store returned.
pub(crate) fn index_of(stat: &Stat) -> u64 {
    let incarnation = u64::from(stat.czxid as u32);
    let version = u64::from(stat.version as u32);
    (incarnation << 32) | version
}

/// Whether a node is still at `index`. An index with an empty high half came from a Go
/// service (a bare data version): for it, only the version is compared, as Go does.
pub(crate) fn index_matches(stat: &Stat, index: u64) -> bool {
    if index >> 32 == 0 {
        u64::from(stat.version as u32) == index
    } else {
        index_of(stat) == index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_look_like_the_directory_marker() {
        for value in [&b""[..], b"\x01", b"\x01\x01x", b"plain", b"\x00\x01"] {
            assert_eq!(decode(encode(value)).as_deref(), Some(value), "{value:?}");
        }
        assert_eq!(decode(DIR_MARKER.to_vec()), None);
        let emoji = Key::parse("zookeeper", "a/🦀").unwrap();
        assert!(checked_path(&emoji).is_err());
        assert_eq!(checked_path(&Key::parse("zookeeper", "a/é").unwrap()).unwrap(), "/a/é");
    }

    #[test]
    fn indexes_tell_incarnations_apart_and_go_compares_their_low_half() {
        let stat = |czxid: i64, version: i32| Stat {
            czxid,
            mzxid: czxid + i64::from(version),
            pzxid: czxid,
            ctime: 0,
            mtime: 0,
            version,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let node = stat(0x1_0000_0007, 3);
        let index = index_of(&node);
        assert_eq!(index, (7 << 32) | 3);
        assert_eq!(index as i32, 3, "Go's int32(LastIndex) is the data version");
        assert!(index_matches(&node, index));
        assert!(
            !index_matches(&stat(0x1_0000_0009, 3), index),
            "a re-created node is another one"
        );
        assert!(!index_matches(&stat(0x1_0000_0007, 4), index));
        assert!(index_matches(&node, 3), "a Go index: the version alone");
        assert!(!index_matches(&node, 2));
    }

    #[test]
    fn lock_nodes_and_paths() {
        assert!(is_lock_node("_c_0123456789abcdef0123456789abcdef-lock-0000000003"));
        assert!(!is_lock_node("child"));
        assert!(
            !is_lock_node("_c_report-lock-x"),
            "user keys that merely look alike are keys"
        );
        assert_eq!(path_of("a/b"), "/a/b");
        assert_eq!(key_of("/a/b"), "a/b");
    }
}
