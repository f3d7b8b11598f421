//! The connection: a fred pool built from the config, one way to run a command or a script
//! with its deadline and error mapping, and the reads of pairs in the configured layout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::{ClusterInterface, KeysInterface, ServerInterface};
use fred::prelude::{Builder, Client, ClientLike, Pool, ReconnectPolicy, Server, ServerConfig};
use fred::types::config::{Config, TlsConnector};
use fred::types::scripts::Script;
use fred::types::ConnectHandle;
use fred::types::MultipleValues;
use fred::util::redis_keyslot;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use valkeyrie_core::raw::{deadline, Backoff, Spawner};
use valkeyrie_core::tls::strip_scheme;
use valkeyrie_core::{Error, KvPair, Result};

use crate::codec;
use crate::config::{RedisConfig, Topology, ValueEncoding};
use crate::error::{map_connect_error, map_error};
use crate::scripts::Scripts;
use crate::REDIS;

/// Keys per SCAN page, MGET and UNLINK.
pub(crate) const BATCH: usize = 500;

/// Batches in flight when a call is split into [batches](RedisClient::batches): on a
/// cluster, thousands of small ones (one per hash slot) for a large directory.
pub(crate) const IN_FLIGHT: usize = 128;

/// A pool of connections to Redis, and what is needed to open more (watch subscribers).
#[derive(Clone)]
pub(crate) struct RedisClient {
    pub(crate) pool: Pool,
    builder_config: Config,
    connect_timeout: Duration,
    request_timeout: Duration,
    pub(crate) cluster: bool,
    pub(crate) database: u8,
    /// The on-server layout, and the scripts that write it.
    pub(crate) encoding: ValueEncoding,
    pub(crate) scripts: &'static Scripts,
    /// `wait_for_replicas`, and how long `WAIT` waits for them.
    replicas: (u32, Duration),
    /// Signalled whenever a lock of this handle is released, so that this handle's own
    /// waiters try again at once instead of at their next poll.
    pub(crate) lock_released: Arc<Notify>,
}

fn server(endpoint: &str, server_name: Option<&str>) -> Result<Server> {
    let endpoint = strip_scheme(endpoint);
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse()
                .map_err(|_| Error::config(REDIS, "endpoints", format!("bad port in {endpoint:?}")))?;
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        None => (endpoint, 6379),
    };
    let mut server = Server::new(host.to_owned(), port);
    server.tls_server_name = server_name.map(Into::into);
    Ok(server)
}

fn fred_config(endpoints: &[String], config: &RedisConfig) -> Result<Config> {
    let tls_config = config.tls_config();
    let use_tls = tls_config.use_tls(REDIS, endpoints)?;
    let server_name = config.server_name.as_deref().filter(|_| use_tls);
    let mut servers = endpoints
        .iter()
        .map(|e| server(e, server_name))
        .collect::<Result<Vec<_>>>()?;
    if servers.is_empty() {
        servers.push(Server::new("127.0.0.1", 6379));
    }
    let server = match config.topology {
        Topology::Standalone => ServerConfig::Centralized {
            server: servers.remove(0),
        },
        Topology::Cluster => ServerConfig::Clustered {
            hosts: servers,
            policy: Default::default(),
        },
        Topology::Sentinel => ServerConfig::Sentinel {
            hosts: servers,
            service_name: config.sentinel_service.clone().unwrap_or_default(),
        },
    };
    let mut fred = Config {
        server,
        username: config.username.clone(),
        password: config.password.as_ref().map(|p| p.expose().to_owned()),
        database: config.database,
        ..Config::default()
    };
    if use_tls {
        // Our own rustls config, on ring named explicitly: fred's `default_rustls` trusts
        // only the system roots and takes the process's default provider.
        let rustls = tls_config.load(REDIS)?.rustls_client_config(REDIS)?;
        fred.tls = Some(TlsConnector::from(rustls).into());
    }
    Ok(fred)
}

impl RedisClient {
    /// Builds the pool and connects it within `connect_timeout`, each client's connection
    /// under a [supervisor](supervise) on `spawner`.
    pub(crate) async fn connect(endpoints: &[String], config: &RedisConfig, spawner: &Spawner) -> Result<Self> {
        let builder_config = fred_config(endpoints, config)?;
        let client = RedisClient {
            pool: Self::builder(&builder_config, config.connect_timeout, config.request_timeout)
                .build_pool(config.pool_size)
                .map_err(map_connect_error)?,
            builder_config,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            cluster: config.topology == Topology::Cluster,
            database: config.database.unwrap_or(0),
            encoding: config.value_encoding,
            scripts: Scripts::of(config.value_encoding),
            replicas: (config.wait_for_replicas, config.replica_wait_timeout),
            lock_released: Arc::new(Notify::new()),
        };
        let connecting = client.pool.clients().iter().map(|fred| client.init(fred));
        let tasks = match futures_util::future::try_join_all(connecting).await {
            Ok(tasks) => tasks,
            Err(err) => {
                let _ = client.pool.quit().await;
                return Err(err);
            }
        };
        for (fred, task) in client.pool.clients().iter().zip(tasks) {
            spawner.spawn_service(supervise(fred.clone(), task, spawner.token()));
        }
        Ok(client)
    }

    fn builder(config: &Config, connect_timeout: Duration, request_timeout: Duration) -> Builder {
        let mut builder = Builder::from_config(config.clone());
        builder
            .with_connection_config(|c| c.connection_timeout = connect_timeout)
            .with_performance_config(|p| p.default_command_timeout = request_timeout)
            // Keep reconnecting (0 = no limit) with backoff from 100 ms to 5 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5000, 2));
        builder
    }

    /// Connects `client` within the connect timeout; the task that drives its connection.
    async fn init(&self, client: &impl ClientLike) -> Result<ConnectHandle> {
        match tokio::time::timeout(self.connect_timeout, client.init()).await {
            Ok(Ok(task)) => Ok(task),
            Ok(Err(err)) => Err(map_connect_error(err)),
            Err(_) => {
                let _ = client.quit().await;
                let reason = format!("no answer within {:?}", self.connect_timeout);
                Err(Error::not_reachable(REDIS, "", reason))
            }
        }
    }

    /// A new dedicated subscriber connection, connected: to the deployment as configured,
    /// or with `node` to that one node of a cluster (whose keyspace notifications reach
    /// only its own clients).
    pub(crate) async fn subscriber(&self, node: Option<Server>) -> Result<fred::clients::SubscriberClient> {
        let mut config = self.builder_config.clone();
        if let Some(server) = node {
            config.server = ServerConfig::Centralized { server };
        }
        let subscriber = Self::builder(&config, self.connect_timeout, self.request_timeout)
            .build_subscriber_client()
            .map_err(map_connect_error)?;
        self.init(&subscriber).await?;
        Ok(subscriber)
    }

    /// The cluster's primaries as the cluster says now: the pool refreshes its routing
    /// (`CLUSTER SLOTS`) first, within the request timeout; errors name `key`.
    pub(crate) async fn primaries(&self, key: &str) -> Result<Vec<Server>> {
        let client = self.pool.next();
        self.step(key, client.sync_cluster()).await?;
        client
            .cached_cluster_state()
            .map(|routing| routing.unique_primary_nodes())
            .ok_or_else(|| Error::backend(REDIS, key, true, "the client knows no cluster topology yet"))
    }

    /// Runs one fred command on `key` (empty when it concerns none), mapping its error. fred
    /// bounds it by the request timeout (its `default_command_timeout`), also while it waits
    /// in fred's queue for a connection that is down; a timer of our own on top cost a
    /// measurable share of throughput at high concurrency.
    pub(crate) async fn request<T, F>(&self, key: &str, request: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, fred::error::Error>>,
    {
        let started = tokio::time::Instant::now();
        match request.await {
            Err(err) if *err.kind() == fred::error::ErrorKind::Timeout => Err(self.timeout(key)),
            result => result.map_err(|e| map_error(key, started.elapsed(), e)),
        }
    }

    /// Polls a step of a fred stream (a SCAN page) within the request timeout: unlike a
    /// command, the stream waits forever on a dead server.
    pub(crate) async fn step<T, F>(&self, key: &str, step: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, fred::error::Error>>,
    {
        deadline::within(self.request_timeout, REDIS, key, self.request(key, step)).await
    }

    fn timeout(&self, key: &str) -> Error {
        Error::timeout(REDIS, key, self.request_timeout)
    }

    /// Runs a script on `key` with `args`; returns its status string.
    pub(crate) async fn script<V>(&self, key: &str, script: &Script, args: V) -> Result<String>
    where
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        self.eval(key, script, vec![key.to_owned()], args).await
    }

    /// Runs a script on `keys` with `args`, errors naming `key`; returns its status string.
    /// With `wait_for_replicas`, a script that wrote (a status starting with `ok`) returns
    /// once the replicas have it, or fails ([`RedisClient::replicated`]).
    pub(crate) async fn eval<V>(&self, key: &str, script: &Script, keys: Vec<String>, args: V) -> Result<String>
    where
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let (status, replicated) = self.eval_replicated(key, script, keys, args).await?;
        replicated?;
        Ok(status)
    }

    /// [`RedisClient::eval`], with the replicas' answer apart from the script's status, for
    /// a caller that must undo what the script did when the replicas fall short (a lock
    /// acquisition, which nobody would hold otherwise).
    pub(crate) async fn eval_replicated<V>(
        &self,
        key: &str,
        script: &Script,
        keys: Vec<String>,
        args: V,
    ) -> Result<(String, Result<()>)>
    where
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        for key in &keys {
            self.check_key(key)?;
        }
        let client = self.pool.next();
        let routing = keys.first().cloned().unwrap_or_default();
        let status = self
            .request(key, script.evalsha_with_reload::<String, _, _>(client, keys, args))
            .await?;
        let replicated = if status.starts_with("ok") {
            self.replicated(client, key, &routing).await
        } else {
            Ok(())
        };
        Ok((status, replicated))
    }

    /// After a write on `client`, with `wait_for_replicas`: `WAIT` on the same connection
    /// (on a cluster, the one to the primary of `routing`'s slot) until that many replicas
    /// have it, errors naming `key`. Without the setting, nothing. The write is applied
    /// whatever happens here, so every failure is a timeout error (outcome unknown: a
    /// failover could lose the write). `WAIT` blocks its connection, and fred queues the
    /// pool's other commands for it behind; a connection that reconnected between the
    /// write and the `WAIT` counts replicas for no write of its own (the write was lost
    /// with the old connection's outcome, or replicated long ago).
    pub(crate) async fn replicated(&self, client: &Client, key: &str, routing: &str) -> Result<()> {
        let (wanted, within) = self.replicas;
        if wanted == 0 {
            return Ok(());
        }
        // At least 1 ms: `WAIT n 0` waits forever.
        let timeout_ms = i64::try_from(within.as_millis().max(1)).unwrap_or(i64::MAX);
        let started = tokio::time::Instant::now();
        let unknown = |reason: String| Error::outcome_unknown(REDIS, key, started.elapsed(), reason);
        let waited: std::result::Result<i64, fred::error::Error> = if self.cluster {
            let slot = redis_keyslot(routing.as_bytes());
            let Some(node) = client
                .cached_cluster_state()
                .and_then(|routing| routing.get_server(slot).cloned())
            else {
                return Err(unknown(
                    "the client knows no primary for the key's slot to WAIT on".to_owned(),
                ));
            };
            client.with_cluster_node(node).wait(i64::from(wanted), timeout_ms).await
        } else {
            client.wait(i64::from(wanted), timeout_ms).await
        };
        match waited {
            Err(err) => Err(unknown(format!("the write was applied, but its WAIT failed: {err}"))),
            Ok(acknowledged) if acknowledged < i64::from(wanted) => Err(unknown(format!(
                "the primary applied the write, but {acknowledged} of the {wanted} replicas asked for \
                 (wait_for_replicas) acknowledged it within {within:?}: a failover could still lose it"
            ))),
            Ok(_) => Ok(()),
        }
    }
}

impl RedisClient {
    /// The pair at `key`, if any: one GET (an envelope), or one MGET of the key and its index
    /// key (raw).
    pub(crate) async fn read_one(&self, key: &str) -> Result<Option<KvPair>> {
        self.check_key(key)?;
        match self.encoding {
            ValueEncoding::Envelope => {
                let stored: Option<Bytes> = self.request(key, self.pool.get(key)).await?;
                Ok(stored.map(|stored| codec::decode(key, &stored)))
            }
            ValueEncoding::Raw => Ok(self.mget(key, vec![key.to_owned()]).await?.pop().flatten()),
        }
    }

    /// The positions of `keys` in batches a multi-key command takes: `limit` keys at most,
    /// and on a cluster the keys of one hash slot each (a cluster refuses a command whose
    /// keys span slots). Outside a cluster the batches follow the keys' order.
    pub(crate) fn batches<K: AsRef<str>>(&self, keys: &[K], limit: usize) -> Vec<Vec<usize>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (at, key) in keys.iter().enumerate() {
            let slot = if self.cluster {
                redis_keyslot(key.as_ref().as_bytes())
            } else {
                0
            };
            groups.entry(slot).or_default().push(at);
        }
        groups
            .into_values()
            .flat_map(|group| group.chunks(limit).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
    }

    /// The pairs at `keys` (`None` where missing), errors naming `name`: an MGET per
    /// [batch](Self::batches) of at most `limit` keys, each one snapshot, [`IN_FLIGHT`] at a
    /// time. `usize::MAX` reads every key from one snapshot (on a cluster, each slot's).
    pub(crate) async fn read_many<K: AsRef<str>>(
        &self,
        name: &str,
        keys: &[K],
        limit: usize,
    ) -> Result<Vec<Option<KvPair>>> {
        let batches = self.batches(keys, limit);
        // Each batch's names and read are made as the stream reaches it: a cluster's list
        // has thousands of small batches.
        let names = batches.clone().into_iter().map(|batch| names_of(keys, batch));
        let found: Vec<Vec<Option<KvPair>>> = futures_util::stream::iter(names)
            .map(|batch| self.mget(name, batch))
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut pairs = vec![None; keys.len()];
        for (batch, found) in batches.iter().zip(found) {
            for (&at, pair) in batch.iter().zip(found) {
                pairs[at] = pair;
            }
        }
        Ok(pairs)
    }

    /// Unlinks the keys of `batch` (one [batch](Self::batches)) and, raw, their index keys;
    /// how many keys were there (index keys not counted: one left by another client's
    /// delete is no key). Errors name `name`.
    pub(crate) async fn unlink(&self, name: &str, batch: Vec<String>) -> Result<i64> {
        let client = self.pool.next();
        let indexes: Option<Vec<String>> =
            (self.encoding == ValueEncoding::Raw).then(|| batch.iter().map(|key| codec::index_key(key)).collect());
        // Every batch has a key: `batches` makes no empty one.
        let routing = batch.first().cloned().unwrap_or_default();
        let deleted = self.request(name, client.unlink::<i64, _>(batch)).await?;
        if let Some(indexes) = indexes {
            self.request(name, client.unlink::<i64, _>(indexes)).await?;
        }
        self.replicated(client, name, &routing).await?;
        Ok(deleted)
    }

    /// The pairs at `batch` from one MGET (with their index keys, raw).
    async fn mget(&self, name: &str, batch: Vec<String>) -> Result<Vec<Option<KvPair>>> {
        let names: Vec<String> = match self.encoding {
            ValueEncoding::Envelope => batch.clone(),
            ValueEncoding::Raw => batch
                .iter()
                .flat_map(|key| [key.clone(), codec::index_key(key)])
                .collect(),
        };
        let stored: Vec<Option<Bytes>> = self.request(name, self.pool.mget(names)).await?;
        Ok(self.decode(&batch, stored))
    }

    /// Refuses, on a cluster with raw values, a key whose index key falls in another hash
    /// slot (`codec::index_key`): scripts and MGET could not touch both.
    fn check_key(&self, key: &str) -> Result<()> {
        if self.cluster && self.encoding == ValueEncoding::Raw && !codec::has_index_key_in_its_slot(key) {
            return Err(Error::InvalidKey {
                store: REDIS,
                key: key.to_owned(),
                reason: "on a cluster with value_encoding=raw, a key holding `}` needs a hash tag \
                         such as {app}/… so that its index key shares its slot",
            });
        }
        Ok(())
    }

    /// The pairs of `keys` from what an MGET of their names returned.
    fn decode<K: AsRef<str>>(&self, keys: &[K], stored: Vec<Option<Bytes>>) -> Vec<Option<KvPair>> {
        let mut stored = stored.into_iter();
        let mut next = || stored.next().flatten();
        keys.iter()
            .map(|key| {
                let key = key.as_ref();
                match self.encoding {
                    ValueEncoding::Envelope => next().map(|stored| codec::decode(key, &stored)),
                    ValueEncoding::Raw => {
                        let (value, index) = (next(), next());
                        value.map(|value| codec::decode_raw(key, value, index.as_deref()))
                    }
                }
            })
            .collect()
    }
}

/// The keys of `keys` at the positions of `batch`.
pub(crate) fn names_of<K: AsRef<str>>(keys: &[K], batch: Vec<usize>) -> Vec<String> {
    batch.into_iter().map(|at| keys[at].as_ref().to_owned()).collect()
}

/// How long a supervisor waits before starting a connection task fred ended: at first,
/// and at most (doubling while each new task ends at once, as it does while the server
/// is unreachable: fred gives up on a failed connect at once).
const RESTART_DELAY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// How long a connection task must have run for its end to count as a first failure.
const RESTART_SETTLED: Duration = Duration::from_secs(10);

/// Keeps `client`'s connection task running until the handle closes (`token`) or the
/// client quits. fred ends the task for good on some routing errors, and every later
/// command on the client would then wait for its timeout: fred 10.1 sends a command that
/// met an `ASK` redirection (its hash slot migrating) back to the slot's old owner after
/// the `ASKING`, until its attempts run out, and then stops the client. That command fails
/// (a temporary error: nothing ran); the supervisor starts the task again.
async fn supervise(client: Client, mut task: ConnectHandle, token: CancellationToken) {
    let mut backoff = Backoff::new(RESTART_DELAY.0, RESTART_DELAY.1);
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::select! {
            () = token.cancelled() => return,
            ended = &mut task => ended,
        };
        match ended {
            Ok(Ok(())) => return,
            Ok(Err(err)) if err.is_canceled() => return,
            Ok(Err(err)) => tracing::warn!(store = REDIS, error = %err, "the connection task ended; starting it again"),
            Err(join) => tracing::warn!(store = REDIS, error = %join, "the connection task failed; starting it again"),
        }
        if started.elapsed() >= RESTART_SETTLED {
            backoff.reset();
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = backoff.wait() => {}
        }
        task = client.connect();
    }
}

/// A status `ok:<index>` → the index.
pub(crate) fn index_of(status: &str) -> Option<u64> {
    status.strip_prefix("ok:").and_then(|index| index.parse().ok())
}

/// `key` with the glob characters of SCAN MATCH escaped.
pub(crate) fn glob_escape(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Milliseconds for `PX`, at least 1.
pub(crate) fn millis(ttl: Duration) -> String {
    ttl.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(index_of("ok:1700000000000001"), Some(1_700_000_000_000_001));
        assert_eq!(index_of("exists"), None);
        assert_eq!(millis(Duration::from_micros(10)), "1");
    }
}
