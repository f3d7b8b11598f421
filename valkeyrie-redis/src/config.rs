//! [`RedisConfig`]: topology, credentials, TLS, pool and limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::tls::TlsConfig;
use valkeyrie_core::{Error, Result, Secret};

use crate::REDIS;

/// The largest `pool_size`: Redis's default `maxclients`. A larger pool could never connect,
/// and the client would allocate a slot for each connection up front.
const MAX_POOL_SIZE: usize = 10_000;

/// How the servers are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// One server (the first endpoint).
    #[default]
    Standalone,
    /// A Redis Cluster; the endpoints are seed nodes.
    Cluster,
    /// Servers found through Sentinel; the endpoints are sentinels.
    Sentinel,
}

/// How a pair is laid out on the server.
///
/// ```
/// use valkeyrie_redis::{RedisConfig, ValueEncoding};
///
/// let raw = RedisConfig { value_encoding: ValueEncoding::Raw, ..Default::default() };
/// assert_eq!(raw.value_encoding, ValueEncoding::Raw);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// The Go store's JSON envelope `{"Key":…,"Value":"<base64>","LastIndex":<n>}`, in one
    /// key: what Go services on `redis.NewWithCodec(…, &redis.JSONCodec{})` read and write,
    /// compare-and-set and locks included.
    #[default]
    Envelope,
    /// The value's bytes as they are, so other tools read them with a plain `GET` (and Go
    /// services on the Go store's default raw codec, `valkeyrie.NewStore`, share plain
    /// values). Every call still works: the index lives in a second key beside each key,
    /// `{<key>}\0valkeyrie-index` (or `<key>\0valkeyrie-index` when the key has a hash tag
    /// of its own), in the same hash slot and with the same expiry. What this gives up:
    ///
    /// - Twice the keys, and a few more bytes per key.
    /// - Writes by other clients do not change the index: a compare-and-set (or a watch
    ///   deciding whether a key changed) cannot tell a value another tool rewrote from the
    ///   one it read, and a key another tool deleted leaves its index key behind (harmless:
    ///   never listed, overwritten by the next write).
    /// - Values and locks are not readable by Go services on the JSON codec, and the Go
    ///   store's raw codec has no working compare-and-set or lock renewal of its own.
    ///   A raw lock still excludes a Go lock on the same key (both are the key with an
    ///   expiry) for as long as the Go store keeps its lock.
    Raw,
}

/// Settings of the Redis store. The URL form sets the same fields:
/// `redis://user:password@host:6379/2?pool_size=8` (the path is the database index;
/// `rediss://` turns TLS on).
///
/// Every duration is at most a year
/// ([`MAX_CONFIG_DURATION`](valkeyrie_core::config::MAX_CONFIG_DURATION)); a longer one is
/// `InvalidConfiguration` naming the field when the store is opened.
///
/// ```
/// use valkeyrie_redis::RedisConfig;
///
/// let config = RedisConfig { password: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Standalone (default), cluster or sentinel.
    pub topology: Topology,
    /// The master's name, required with the sentinel topology.
    pub sentinel_service: Option<String>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (of the ACL user, or `requirepass`).
    pub password: Option<Secret>,
    /// Database index (standalone and sentinel). From the URL: its path.
    pub database: Option<u8>,
    /// Connect over TLS. Implied by any other TLS field and by a `rediss://` URL. Without
    /// `ca_file`, the public web roots are trusted. Default `false`.
    pub tls: bool,
    /// PEM file of the CA certificates that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, with `key_file` (`tls-auth-clients yes`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to check the server's certificate against, when it is not the endpoint's
    /// host. It applies to the configured endpoints; cluster nodes and Sentinel-named
    /// primaries are checked against the address they are reached at.
    pub server_name: Option<String>,
    /// Connections in the command pool. Default 4.
    pub pool_size: usize,
    /// How long connecting may take. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of each command. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// Largest value accepted, in bytes. The envelope stores it in base64 (4/3 larger) and
    /// Redis strings hold at most 512 MiB, so the default is 384 MiB minus 64 KiB.
    pub max_value_size: usize,
    /// Replicas that must have each write before the call returns: after every write, `WAIT`
    /// on the same connection (on a cluster, to the key's primary). Default 0: a write
    /// returns once the primary has it, and Redis replicates asynchronously, so a failover
    /// before the primary passed it on loses it. A write the replicas did not acknowledge
    /// within `replica_wait_timeout` fails with a timeout error: the primary applied it,
    /// and a failover could still lose it.
    pub wait_for_replicas: u32,
    /// How long a write waits for `wait_for_replicas` replicas. Default 1 s; from 1 ms, and
    /// shorter than `request_timeout`. `WAIT` blocks the connection it is sent on, so the
    /// pool's other commands on it wait behind it for as long.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub replica_wait_timeout: Duration,
    /// How long a watch keeps retrying what fails with a temporary error (a server restarting,
    /// a cluster failing over) before it ends with an error item. Default 60 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_retry_for: Duration,
    /// Let watches turn keyspace notifications on (`CONFIG SET notify-keyspace-events`)
    /// when the server has them off. Default `false`: the watch fails, naming the setting.
    pub enable_keyspace_events: bool,
    /// The on-server layout: `envelope` (default, shared with Go's JSON codec) or `raw`.
    /// See [`ValueEncoding`] for what `raw` gives up. Every handle on a store must agree.
    pub value_encoding: ValueEncoding,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            topology: Topology::Standalone,
            sentinel_service: None,
            username: None,
            password: None,
            database: None,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_value_size: 384 * 1024 * 1024 - 64 * 1024,
            wait_for_replicas: 0,
            replica_wait_timeout: Duration::from_secs(1),
            watch_retry_for: valkeyrie_core::raw::feed::DEFAULT_RETRY_FOR,
            enable_keyspace_events: false,
            value_encoding: ValueEncoding::Envelope,
        }
    }
}

impl BackendConfig for RedisConfig {
    const STORE: &'static str = REDIS;
    const URL_PATH_FIELD: Option<&'static str> = Some("database");
}

impl RedisConfig {
    /// The TLS fields, gathered.
    pub(crate) fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            enabled: self.tls,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
        }
    }

    /// Checks what needs no server, with the endpoints the store is opened on.
    pub(crate) fn validate(&self, endpoints: &[String]) -> Result<()> {
        self.tls_config().validate(REDIS)?;
        if self.topology == Topology::Standalone && endpoints.len() > 1 {
            let reason =
                "a standalone server takes one endpoint; set topology=cluster or topology=sentinel for several";
            return Err(Error::config(REDIS, "endpoints", reason));
        }
        let invalid = |field: &str, reason: &str| Err(Error::config(REDIS, field, reason));
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.pool_size > MAX_POOL_SIZE {
            return invalid("pool_size", "must be at most 10000 (Redis's default maxclients)");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than zero");
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("replica_wait_timeout", self.replica_wait_timeout),
            ("watch_retry_for", self.watch_retry_for),
        ] {
            check_duration(REDIS, field, value)?;
        }
        if self.wait_for_replicas > 0 && self.replica_wait_timeout >= self.request_timeout {
            return invalid(
                "replica_wait_timeout",
                "must be shorter than request_timeout, which bounds the WAIT too",
            );
        }
        if self.wait_for_replicas > 0 && self.replica_wait_timeout < Duration::from_millis(1) {
            return invalid(
                "replica_wait_timeout",
                "must be at least 1 ms (WAIT counts milliseconds, and WAIT 0 waits forever)",
            );
        }
        if self.topology == Topology::Sentinel && self.sentinel_service.is_none() {
            return invalid("sentinel_service", "the sentinel topology needs the master's name");
        }
        if self.topology == Topology::Cluster && self.database.is_some_and(|db| db != 0) {
            return invalid("database", "a cluster has only database 0");
        }
        if self.max_value_size == 0 {
            return invalid("max_value_size", "must be at least 1 byte");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::StoreUrl;
    use valkeyrie_core::StoreConfig;

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url = StoreUrl::parse("redis://app:s%3Acret@h1:6379/2?pool_size=8&request_timeout=250ms").unwrap();
        let mut params = url.params;
        params.push(("database".into(), url.path.unwrap()));
        params.push(("value_encoding".into(), "raw".into()));
        let from_url: RedisConfig = StoreConfig::Params(params).resolve().unwrap();
        let typed = RedisConfig {
            username: Some("app".into()),
            password: Some(Secret::new("s:cret")),
            database: Some(2),
            pool_size: 8,
            request_timeout: Duration::from_millis(250),
            value_encoding: ValueEncoding::Raw,
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert!(!format!("{typed:?}").contains("s:cret"));
    }

    #[test]
    fn a_standalone_server_takes_one_endpoint() {
        let err = RedisConfig::default()
            .validate(&["h1:6379".into(), "h2:6379".into()])
            .unwrap_err();
        assert!(err.to_string().contains("endpoints"), "{err}");
        let cluster = RedisConfig {
            topology: Topology::Cluster,
            ..Default::default()
        };
        assert!(cluster.validate(&["h1:6379".into(), "h2:6379".into()]).is_ok());
    }

    #[test]
    fn sentinel_needs_a_service_name() {
        let config = RedisConfig {
            topology: Topology::Sentinel,
            ..Default::default()
        };
        assert!(config
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("sentinel_service"));
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<RedisConfig>(
            &[
                ("connect_timeout", false, |config: &RedisConfig| config.connect_timeout),
                ("request_timeout", false, |config: &RedisConfig| config.request_timeout),
                ("replica_wait_timeout", true, |config: &RedisConfig| {
                    config.replica_wait_timeout
                }),
                ("watch_retry_for", true, |config: &RedisConfig| config.watch_retry_for),
            ],
            |config: &RedisConfig| config.validate(&[]),
        );
    }
}
