//! [`EtcdConfig`]: connection, timeouts, TLS, credentials and limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::tls::TlsConfig;
use valkeyrie_core::{Error, Result, Secret};

use crate::ETCD;

/// Settings of the etcd store. The URL form sets the same fields as query parameters:
/// `etcd://user:password@h1:2379,h2:2379?connect_timeout=5s&ca_file=/etc/etcd/ca.pem`.
///
/// Every duration is at most a year
/// ([`MAX_CONFIG_DURATION`](valkeyrie_core::config::MAX_CONFIG_DURATION)); a longer one is
/// `InvalidConfiguration` naming the field when the store is opened.
///
/// The TLS fields are every network backend's ([`valkeyrie_core::tls`]): an endpoint
/// written `https://h:2379` turns TLS on too, and one written `http://` with TLS settings is
/// refused. With credentials, the handle logs in when it connects and logs in again by
/// itself whenever the server says its token expired (a simple token lasts
/// `--auth-token-ttl`, 300 s by default, and dies with a member restart), so an idle
/// handle, a watch and a lease renewal outlive any number of tokens.
///
/// ```
/// use valkeyrie_etcd::EtcdConfig;
///
/// let config = EtcdConfig { username: Some("app".into()), password: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// How long connecting (and the first request proving the connection) may take. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of each request. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// User for etcd's authentication, with `password`.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<Secret>,
    /// Connect over TLS. Implied by any other TLS field and by `https://` endpoints.
    /// Without `ca_file`, the public web roots are trusted. Default `false`.
    pub tls: bool,
    /// PEM file of the CA certificates that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, with `key_file` (etcd's `--client-cert-auth`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to check the servers' certificates against, when it is not the endpoint host.
    pub server_name: Option<String>,
    /// The server's `--max-request-bytes` (default 1.5 MiB): values that cannot fit in a
    /// request are `ValueTooLarge` before sending (4 KiB are kept for the key and framing).
    pub max_request_bytes: usize,
    /// Keys fetched per request by `list`. Default 1000.
    pub list_page_size: u32,
    /// How long a watch keeps trying to resume after a lost connection before it ends with
    /// an error item. Default 60 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_retry_for: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            username: None,
            password: None,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            max_request_bytes: 1_572_864,
            list_page_size: 1000,
            watch_retry_for: valkeyrie_core::raw::feed::DEFAULT_RETRY_FOR,
        }
    }
}

impl BackendConfig for EtcdConfig {
    const STORE: &'static str = ETCD;
}

/// Room kept in a request for the key and the protobuf framing.
const REQUEST_OVERHEAD: usize = 4096;

impl EtcdConfig {
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

    /// The largest value a request can carry.
    pub(crate) fn max_value_size(&self) -> usize {
        self.max_request_bytes.saturating_sub(REQUEST_OVERHEAD)
    }

    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Err(Error::config(ETCD, field, reason));
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than zero");
        }
        check_duration(ETCD, "connect_timeout", self.connect_timeout)?;
        check_duration(ETCD, "request_timeout", self.request_timeout)?;
        check_duration(ETCD, "watch_retry_for", self.watch_retry_for)?;
        if self.username.is_some() != self.password.is_some() {
            return invalid("password", "username and password go together");
        }
        self.tls_config().validate(ETCD)?;
        if self.max_request_bytes <= REQUEST_OVERHEAD {
            return invalid("max_request_bytes", "must be larger than 4 KiB");
        }
        if self.list_page_size == 0 {
            return invalid("list_page_size", "must be at least 1");
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
            "etcd://app:p%40ss@h1:2379,h2:2379/?connect_timeout=2s&request_timeout=750ms&ca_file=/ca.pem&max_request_bytes=2097152",
        )
        .unwrap();
        assert_eq!(url.endpoints, ["h1:2379", "h2:2379"]);
        let from_url: EtcdConfig = StoreConfig::Params(url.params).resolve().unwrap();
        let typed = EtcdConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(750),
            username: Some("app".into()),
            password: Some(Secret::new("p@ss")),
            ca_file: Some("/ca.pem".into()),
            max_request_bytes: 2_097_152,
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert!(typed.tls_config().is_enabled());
        assert!(!format!("{typed:?}").contains("p@ss"));
    }

    #[test]
    fn half_credentials_are_rejected_naming_the_field() {
        let config = EtcdConfig {
            username: Some("app".into()),
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("password"));
        let config = EtcdConfig {
            cert_file: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("key_file"));
        let config = EtcdConfig {
            key_file: Some("/k.pem".into()),
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("cert_file"));
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<EtcdConfig>(
            &[
                ("connect_timeout", false, |config: &EtcdConfig| config.connect_timeout),
                ("request_timeout", false, |config: &EtcdConfig| config.request_timeout),
                ("watch_retry_for", true, |config: &EtcdConfig| config.watch_retry_for),
            ],
            EtcdConfig::validate,
        );
    }
}
