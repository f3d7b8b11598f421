//! [`ConsulConfig`]: agent addresses, timeouts, TLS, ACL token and the server's limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::tls::TlsConfig;
use valkeyrie_core::{Error, Result, Secret};

use crate::CONSUL;

/// Settings of the Consul store. The URL form sets the same fields as query parameters:
/// `consul://10.0.0.1:8500?datacenter=dc1&token=…`, or with the token as the URL's password
/// (`consul://:TOKEN@10.0.0.1:8500`). Timeouts are at most a year
/// ([`MAX_CONFIG_DURATION`](valkeyrie_core::config::MAX_CONFIG_DURATION)). TLS takes the parameters every network backend
/// shares (`tls`, `ca_file`, `cert_file`, `key_file`, `server_name`; see
/// [`valkeyrie_core::tls`]): `consul://:TOKEN@10.0.0.1:8501?ca_file=/etc/consul/ca.pem`.
/// An endpoint written `http://` together with TLS settings is refused, so that the token
/// never travels in clear.
///
/// ```
/// use valkeyrie_consul::ConsulConfig;
///
/// let config = ConsulConfig { token: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsulConfig {
    /// How long opening a TCP (and TLS) connection to an agent may take. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of each request (a blocking query gets its wait time on top). Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// ACL token sent with every request (`X-Consul-Token`).
    #[serde(alias = "password")]
    pub token: Option<Secret>,
    /// Datacenter to address; the agent's own when unset.
    pub datacenter: Option<String>,
    /// Talk HTTPS. Implied by any other TLS field and by an `https://` endpoint. Default `false`.
    pub tls: bool,
    /// PEM file of the CA that signed the agents' certificates; the public web roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, with `key_file` (for `verify_incoming` agents).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to check the agents' certificates against, when it is not the endpoint host
    /// (Consul's own certificates name `server.<datacenter>.<domain>`). Also read as
    /// `tls_server_name`, its earlier name.
    #[serde(alias = "tls_server_name")]
    pub server_name: Option<String>,
    /// How long one blocking query of a watch or a waiting lock may wait at the server
    /// before it is renewed (Consul caps it at 10 min). Default 60 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_wait: Duration,
    /// How long a watch keeps retrying failed queries before it ends with an error item.
    /// Default 60 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_retry_for: Duration,
    /// The server's `session_ttl_min` (default 10 s). A TTL is carried by a session of half
    /// its length, as the Go store does, so TTLs shorter than twice this are raised to it.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub session_ttl_min: Duration,
    /// The server's `kv_max_value_size` (default 512 KiB).
    pub kv_max_value_size: usize,
    /// The server's `txn_max_req_len` (default 512 KiB). Every write is a transaction
    /// carrying its value in base64, so this also bounds values (to about 383 KiB).
    pub txn_max_req_len: usize,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            token: None,
            datacenter: None,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            watch_wait: Duration::from_secs(60),
            watch_retry_for: valkeyrie_core::raw::feed::DEFAULT_RETRY_FOR,
            session_ttl_min: Duration::from_secs(10),
            kv_max_value_size: 512 * 1024,
            txn_max_req_len: 512 * 1024,
        }
    }
}

impl BackendConfig for ConsulConfig {
    const STORE: &'static str = CONSUL;
}

/// Room kept in a transaction body for its operations, keys and JSON framing.
pub(crate) const TXN_OVERHEAD: usize = 4096;

/// Consul's longest session TTL.
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

impl ConsulConfig {
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

    /// The largest value one write can carry: base64 in a transaction body, and within
    /// Consul's value limit.
    pub(crate) fn max_value_size(&self) -> usize {
        let in_txn = self.txn_max_req_len.saturating_sub(TXN_OVERHEAD) / 4 * 3;
        in_txn.min(self.kv_max_value_size)
    }

    /// The shortest TTL a write or lock can have: its session, half as long, must be at
    /// least `session_ttl_min`.
    pub(crate) fn min_ttl(&self) -> Duration {
        self.session_ttl_min * 2
    }

    /// The longest TTL: its session may last at most 24 h.
    pub(crate) fn max_ttl(&self) -> Duration {
        SESSION_TTL_MAX * 2
    }

    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Err(Error::config(CONSUL, field, reason));
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than zero");
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("watch_retry_for", self.watch_retry_for),
        ] {
            check_duration(CONSUL, field, value)?;
        }
        if self.watch_wait < Duration::from_secs(1) || self.watch_wait > Duration::from_secs(600) {
            return invalid("watch_wait", "must be between 1 s and 10 min (Consul's range)");
        }
        if self.session_ttl_min < Duration::from_secs(1) || self.session_ttl_min > SESSION_TTL_MAX {
            return invalid("session_ttl_min", "must be between 1 s and 24 h");
        }
        self.tls_config().validate(CONSUL)?;
        if self.txn_max_req_len <= TXN_OVERHEAD {
            return invalid("txn_max_req_len", "must be larger than 4 KiB");
        }
        if self.kv_max_value_size == 0 {
            return invalid("kv_max_value_size", "must be at least 1");
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
        let url = StoreUrl::parse(
            "consul://:t%40ken@h1:8500,h2:8500/?datacenter=dc2&request_timeout=750ms&ca_file=/ca.pem&watch_wait=15s",
        )
        .unwrap();
        assert_eq!(url.endpoints, ["h1:8500", "h2:8500"]);
        let from_url: ConsulConfig = StoreConfig::Params(url.params).resolve().unwrap();
        let typed = ConsulConfig {
            request_timeout: Duration::from_millis(750),
            token: Some(Secret::new("t@ken")),
            datacenter: Some("dc2".into()),
            ca_file: Some("/ca.pem".into()),
            watch_wait: Duration::from_secs(15),
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert!(typed.tls_config().is_enabled());
        assert!(!format!("{typed:?}").contains("t@ken"));
    }

    #[test]
    fn limits_follow_the_server_settings() {
        let config = ConsulConfig::default();
        assert_eq!(config.min_ttl(), Duration::from_secs(20));
        assert_eq!(config.max_value_size(), (512 * 1024 - TXN_OVERHEAD) / 4 * 3);
        let raised = ConsulConfig {
            txn_max_req_len: 4 * 1024 * 1024,
            session_ttl_min: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(raised.max_value_size(), 512 * 1024, "then the KV limit binds");
        assert_eq!(raised.min_ttl(), Duration::from_secs(2));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let config = ConsulConfig {
            cert_file: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("key_file"));
        let renamed: ConsulConfig =
            StoreConfig::Params([("tls_server_name".to_owned(), "consul.dc1".to_owned())].into())
                .resolve()
                .unwrap();
        assert_eq!(renamed.server_name.as_deref(), Some("consul.dc1"));
        let config = ConsulConfig {
            watch_wait: Duration::from_secs(3600),
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("watch_wait"));
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<ConsulConfig>(
            &[
                ("connect_timeout", false, |config: &ConsulConfig| config.connect_timeout),
                ("request_timeout", false, |config: &ConsulConfig| config.request_timeout),
                ("watch_retry_for", true, |config: &ConsulConfig| config.watch_retry_for),
            ],
            ConsulConfig::validate,
        );
    }
}
