//! [`ZookeeperConfig`]: session, timeouts, chroot, digest credentials and limits.

use std::time::Duration;

use serde::Deserialize;
use std::path::PathBuf;

use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::tls::TlsConfig;
use valkeyrie_core::{Error, Result, Secret};
use zookeeper_client::{Acl, Acls, AuthId, Permission};

use crate::ZOOKEEPER;

/// Settings of the ZooKeeper store. The URL form sets the same fields:
/// `zookeeper://user:password@h1:2181,h2:2181/app/chroot?session_timeout=10s`.
///
/// ```
/// use valkeyrie_zookeeper::ZookeeperConfig;
///
/// let config = ZookeeperConfig { password: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZookeeperConfig {
    /// The node under which every key lives (ZooKeeper's chroot), such as `/app`. From the
    /// URL: its path. Default: the root.
    pub chroot: Option<String>,
    /// Session timeout asked of the server (which clamps it to 2–20 ticks). Ephemeral nodes
    /// (keep-alive keys, lock contenders) outlive a dead handle by about this long.
    /// Default 10 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub session_timeout: Duration,
    /// How long connecting may take. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of each request. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// User for digest authentication, with `password`.
    pub username: Option<String>,
    /// Password of `username`. With credentials, every node this store creates (data,
    /// directories, lock and TTL nodes, the chroot) is this user's alone: its ACL is
    /// `digest:<username>:<hash>:cdrwa`, so another user can neither read, change nor
    /// delete it, nor take a lock on it. Without credentials nodes are open to anyone
    /// (`world:anyone`), as there is no identity to restrict them to.
    pub password: Option<Secret>,
    /// Keep the open ACL (`world:anyone:cdrwa`) on the nodes this store creates even with
    /// credentials: for deployments where several users share the keys. Default `false`.
    pub open_acls: bool,
    /// The server's `jute.maxbuffer` (default 1 MiB): values that cannot fit a request are
    /// `ValueTooLarge` before sending (4 KiB are kept for the path and framing).
    pub max_request_bytes: usize,
    /// Requests `list` and `delete_tree` keep in flight at once. Default 16.
    pub concurrency: usize,
    /// Connect over TLS (the server's `secureClientPort`), even without any other TLS
    /// setting; implied by them and by `tcp+tls://` endpoints. Needs the crate's `tls`
    /// feature. Default `false`.
    pub tls: bool,
    /// PEM file of the CA certificates to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, with `key_file` (`ssl.clientAuth=need`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// Not supported: zookeeper-client checks the certificate against the endpoint's host,
    /// and has no setting for another name. Setting it is `InvalidConfiguration`; it is a
    /// field so that the URL parameters are the same on every backend.
    pub server_name: Option<String>,
}

impl Default for ZookeeperConfig {
    fn default() -> Self {
        ZookeeperConfig {
            chroot: None,
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            username: None,
            password: None,
            open_acls: false,
            max_request_bytes: 1024 * 1024,
            concurrency: 16,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

impl BackendConfig for ZookeeperConfig {
    const STORE: &'static str = ZOOKEEPER;
    const URL_PATH_FIELD: Option<&'static str> = Some("chroot");
}

/// Room kept in a request for the path and the framing.
const REQUEST_OVERHEAD: usize = 4096;

impl ZookeeperConfig {
    /// The largest value a request can carry.
    pub(crate) fn max_value_size(&self) -> usize {
        self.max_request_bytes.saturating_sub(REQUEST_OVERHEAD)
    }

    /// The chroot with exactly one leading `/` and none trailing, or `None` for the root.
    pub(crate) fn chroot_path(&self) -> Option<String> {
        let chroot = self.chroot.as_deref()?.trim_matches('/');
        (!chroot.is_empty()).then(|| format!("/{chroot}"))
    }

    /// The ACL of every node this store creates: the user's digest identity alone when it
    /// logs in (and [`open_acls`](Self::open_acls) is off), anyone otherwise.
    ///
    /// Not ZooKeeper's creator ACL (`auth::cdrwa`): that one admits every identity the
    /// creating session holds, and over TLS a session also holds the `x509` identity of its
    /// client certificate, which every client given the same certificate shares.
    pub(crate) fn node_acls(&self) -> Vec<Acl> {
        match (&self.username, &self.password, self.open_acls) {
            (Some(user), Some(password), false) => {
                vec![Acl::new(
                    Permission::ALL,
                    AuthId::new("digest", &digest_id(user, password)),
                )]
            }
            _ => Acls::anyone_all().to_vec(),
        }
    }

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

    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Err(Error::config(ZOOKEEPER, field, reason));
        self.tls_config().validate(ZOOKEEPER)?;
        if self.server_name.is_some() {
            return invalid(
                "server_name",
                "zookeeper-client verifies the certificate against the endpoint's host and cannot be given another name",
            );
        }
        if self.username.is_some() != self.password.is_some() {
            return invalid("password", "username and password go together");
        }
        if self.username.as_deref().is_some_and(|user| user.contains(':')) {
            // ZooKeeper splits `user:password` at its first colon.
            return invalid("username", "must not contain ':'");
        }
        if self.session_timeout < Duration::from_millis(100) {
            return invalid("session_timeout", "must be at least 100 ms");
        }
        // The protocol carries it as an i32 of milliseconds (zookeeper-client casts it
        // with `as`, so a longer one would wrap around); the server clamps it far lower.
        if self.session_timeout > Duration::from_millis(i32::MAX.unsigned_abs().into()) {
            return invalid("session_timeout", "must be at most 2^31 - 1 ms (about 24.8 days)");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than zero");
        }
        for (field, value) in [
            ("session_timeout", self.session_timeout),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            check_duration(ZOOKEEPER, field, value)?;
        }
        if self.max_request_bytes <= REQUEST_OVERHEAD {
            return invalid("max_request_bytes", "must be larger than 4 KiB");
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1");
        }
        if let Some(chroot) = self.chroot_path() {
            if chroot.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..") {
                return invalid("chroot", "must be a plain path such as /app/config");
            }
        }
        Ok(())
    }
}

/// ZooKeeper's digest identity of `user` (`DigestAuthenticationProvider.generateDigest`):
/// `user:` and the base64 of the SHA-1 of `user:password`.
fn digest_id(user: &str, password: &Secret) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};

    let hash = Sha1::digest(format!("{user}:{}", password.expose()));
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::StoreUrl;
    use valkeyrie_core::StoreConfig;

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url = StoreUrl::parse("zookeeper://app:pw@h1:2181,h2:2181/apps/one?session_timeout=4s").unwrap();
        assert_eq!(url.endpoints, ["h1:2181", "h2:2181"]);
        let mut params = url.params;
        params.push(("chroot".into(), url.path.unwrap()));
        let from_url: ZookeeperConfig = StoreConfig::Params(params).resolve().unwrap();
        let typed = ZookeeperConfig {
            chroot: Some("apps/one".into()),
            session_timeout: Duration::from_secs(4),
            username: Some("app".into()),
            password: Some(Secret::new("pw")),
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert_eq!(typed.chroot_path().as_deref(), Some("/apps/one"));
        assert!(!format!("{typed:?}").contains("\"pw\""));
    }

    #[test]
    fn credentials_make_nodes_creator_only_unless_asked_otherwise() {
        let anonymous = ZookeeperConfig::default();
        assert_eq!(anonymous.node_acls(), Acls::anyone_all().to_vec());
        let user = ZookeeperConfig {
            username: Some("super".into()),
            password: Some(Secret::new("test")),
            ..Default::default()
        };
        // The digest ZooKeeper's documentation gives for super:test.
        let only_the_user = vec![Acl::new(
            Permission::ALL,
            AuthId::new("digest", "super:D/InIHSb7yEEbrWz8b9l71RjZJU="),
        )];
        assert_eq!(user.node_acls(), only_the_user);
        let shared = ZookeeperConfig {
            open_acls: true,
            ..user
        };
        assert_eq!(shared.node_acls(), Acls::anyone_all().to_vec());
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<ZookeeperConfig>(
            &[
                ("connect_timeout", false, |config: &ZookeeperConfig| {
                    config.connect_timeout
                }),
                ("request_timeout", false, |config: &ZookeeperConfig| {
                    config.request_timeout
                }),
            ],
            ZookeeperConfig::validate,
        );
    }
}
