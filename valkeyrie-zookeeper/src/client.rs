//! The connection: one session with the ensemble, replaced when the ensemble expires it,
//! and one way to run a request with its deadline and error mapping. The node rules are in
//! [`node`](crate::node), walks over a subtree in [`tree`](crate::tree).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use valkeyrie_core::raw::{deadline, Backoff};
use valkeyrie_core::tls::strip_scheme;
use valkeyrie_core::{Error, Result};
use zookeeper_client::{Acl, Acls, Client, Connector, CreateMode, MultiReadResult, SessionState, StateWatcher};

use crate::config::ZookeeperConfig;
use crate::error::{map_connect_error, map_error, map_request_error};
use crate::node::{key_of, Node, DIR_MARKER};
use crate::tls::ZkTls;
use crate::ZOOKEEPER;

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
            Ok(Err(err)) => Err(self.connect_error(map_connect_error(err)).await),
            Err(_) => {
                let reason = format!("no session with {} within {limit:?}", self.hosts);
                Err(self.connect_error(Error::not_reachable(ZOOKEEPER, "", reason)).await)
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
            Some(refusal) => Error::tls_verification(ZOOKEEPER, "", refusal),
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
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                        () = backoff.wait() => {}
                    }
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
        slot.clone().ok_or_else(|| Error::closed(ZOOKEEPER, ""))
    }

    /// Lets the session end: no new request gets the client.
    pub(crate) fn close(&self) {
        self.slot.write().unwrap_or_else(PoisonError::into_inner).take();
        self.closed.cancel();
    }

    /// Runs one request on `key` within the request timeout, mapping its error.
    pub(crate) async fn request<T, F>(&self, key: &str, request: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let started = tokio::time::Instant::now();
        let request = async { request.await.map_err(|e| map_request_error(key, started.elapsed(), e)) };
        deadline::within(self.request_timeout, ZOOKEEPER, key, request).await
    }

    /// Every node in `paths`, read in one multi-read: one snapshot, one round trip. An
    /// error of the whole read names `call_key`, one of a node names its key.
    pub(crate) async fn read_nodes(&self, call_key: &str, paths: &[String]) -> Result<HashMap<String, Node>> {
        let client = self.client()?;
        let mut reader = client.new_multi_reader();
        for path in paths {
            reader.add_get_data(path).map_err(|e| map_error(&key_of(path), e))?;
        }
        let results = self.request(call_key, reader.commit()).await?;
        let mut snapshot = HashMap::with_capacity(paths.len());
        for (path, result) in paths.iter().zip(results) {
            let node = match result {
                MultiReadResult::Data { data, stat } => Some((data, stat)),
                MultiReadResult::Error {
                    err: zookeeper_client::Error::NoNode,
                } => None,
                MultiReadResult::Error { err } => return Err(map_error(&key_of(path), err)),
                other => {
                    let reason = format!("the multi-read answered a data read with {other:?}");
                    return Err(Error::backend(ZOOKEEPER, key_of(path), false, reason));
                }
            };
            snapshot.insert(path.clone(), node);
        }
        Ok(snapshot)
    }

    /// Creates the missing ancestors of `path` as directory nodes.
    pub(crate) async fn ensure_parents(&self, path: &str) -> Result<()> {
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
                    .request(&prefix, client.create(&prefix, DIR_MARKER, &options))
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
        Err(Error::backend(ZOOKEEPER, path, true, reason))
    }
}
